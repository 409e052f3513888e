"""The embedded venue counts request weight and orders in windows aligned to the wall clock (a minute, ten
seconds, or a test's shorter window), as Binance does: a test that counts within one window must not straddle its
end."""
from __future__ import annotations

import time


def fresh_window(length_s: float = 60.0, need_s: float = 5.0) -> None:
    """Return at once when at least `need_s` seconds of the current `length_s` window are left, else just after
    the window ends."""
    left = length_s - time.time() % length_s
    if left < need_s:
        time.sleep(left + 0.05)
