"""Logging for events that can repeat thousands of times a second (malformed frames, exchange rejects): one line
per kind per interval, so an operator sees each kind at once and the log cannot flood the disk or the hot thread."""
from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """One line per key per interval, with the number of occurrences folded in."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.log = logger
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.interval:
            self._last[key] = now
            return True
        return False

    def warning(self, key: str, msg: str, *args) -> None:
        if self.due(key):
            self.log.warning(msg, *args)
