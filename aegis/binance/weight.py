"""REST request weight that outlives a process: restarts stay within Binance's per-IP limit.

Binance counts request weight per IP in fixed one-minute windows (2400 on USD-M futures) and tells the count so far
in every answer's X-MBX-USED-WEIGHT-1M header; an IP that keeps going past the limit gets 429, then a 418 ban that
grows from minutes to days. Every engine process starts with a fresh client, so a crash loop would spend the
start-up weight (symbol discovery, depth snapshots, reconciliation) again and again within one window. The ledger
is a small file per REST host: each process records the latest header value, and before spending start-up weight
asks how much of the current window is left, waiting for the next window when it is not enough.

Also here: a disk cache of exchangeInfo with an age limit, so a restart does not fetch it again (the symbol
filters change rarely; a stale one costs an exchange reject, never a wrong order: risk rounds to the filters, and
the exchange checks them again).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from urllib.parse import urlsplit

WINDOW_S = 60.0
LIMIT = 2400                 # Binance USD-M REQUEST_WEIGHT per minute per IP
EXCHANGE_INFO_MAX_AGE_S = 600.0


def state_dir() -> str:
    """Where the ledgers and caches live: $AEGIS_STATE_DIR, else ~/.cache/aegis."""
    d = os.environ.get("AEGIS_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "aegis")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _host_key(rest_url: str) -> str:
    u = urlsplit(rest_url)
    return f"{u.hostname or 'local'}-{u.port or (443 if u.scheme == 'https' else 80)}"


def _window(now: float) -> int:
    return int(now // WINDOW_S)


def _write_json(path: str, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)       # readers see the old file or the new one, never half of one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class WeightLedger:
    """Used REST weight of the current window for one host, shared through a file by every process."""

    def __init__(self, rest_url: str, limit: int | None = None, directory: str | None = None):
        self.path = os.path.join(directory or state_dir(), f"weight-{_host_key(rest_url)}.json")
        self._limit = limit

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                d = json.load(f)
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def limit(self) -> int:
        """The venue's REQUEST_WEIGHT per minute as its exchangeInfo said (set_limit), else Binance's."""
        if self._limit is None:
            try:
                self._limit = int(self._read().get("limit") or LIMIT)
            except (TypeError, ValueError):
                self._limit = LIMIT
        return self._limit

    def set_limit(self, exchange_info: dict) -> None:
        for r in (exchange_info or {}).get("rateLimits", ()):
            if r.get("rateLimitType") == "REQUEST_WEIGHT" and r.get("interval") == "MINUTE":
                self._limit = int(r["limit"]) // max(1, int(r.get("intervalNum", 1)))
                self.note(self.used())

    def used(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        d = self._read()
        try:
            return int(d["used"]) if int(d["window"]) == _window(now) else 0
        except (KeyError, TypeError, ValueError):
            return 0

    def note(self, used_header, now: float | None = None) -> None:
        """Record an X-MBX-USED-WEIGHT-1M value seen now (the header counts this window so far)."""
        try:
            used = int(used_header)
        except (TypeError, ValueError):
            return
        now = time.time() if now is None else now
        try:
            _write_json(self.path, {"window": _window(now), "used": max(used, self.used(now)), "limit": self.limit,
                                    "pid": os.getpid()})
        except OSError:
            pass    # the ledger is a courtesy to the next start; never a reason to fail this one

    def note_response(self, response) -> None:
        """note() from a requests.Response (or anything with .headers)."""
        h = getattr(response, "headers", None) or {}
        v = h.get("X-MBX-USED-WEIGHT-1M") or h.get("x-mbx-used-weight-1m")
        if v is not None:
            self.note(v)

    def wait_for(self, weight: float, share: float = 1.0, out=None, stop=None, now=time.time,
                 sleep=time.sleep) -> float:
        """Block until `weight` fits within `share` of the limit in the current window (the next window always
        has room); returns the seconds waited. `stop()` true ends the wait early."""
        waited = 0.0
        said = False
        while True:
            t = now()
            used = self.used(t)
            if used + weight <= self.limit * share:
                return waited
            left = WINDOW_S - (t % WINDOW_S) + 0.05
            if out is not None and not said:
                print(f"aegis: REST weight {used}/{self.limit} already used this minute (earlier runs); waiting "
                      f"{left:.0f}s for the next minute before spending {weight:.0f} more", file=out, flush=True)
                said = True
            step = min(left, 0.5)
            sleep(step)
            waited += step
            if stop is not None and stop():
                return waited


def ledger_for(rest_url: str, self_started_venue: bool) -> WeightLedger | None:
    """The ledger of a REST host this machine shares across runs; None for an embedded venue the run started
    itself (a fresh venue process with fresh limits every run)."""
    if self_started_venue or not rest_url:
        return None
    return WeightLedger(rest_url)


def cached_exchange_info(rest_url: str, fetch, max_age_s: float = EXCHANGE_INFO_MAX_AGE_S,
                         directory: str | None = None):
    """exchangeInfo from a disk cache younger than max_age_s, else `fetch()` (returns the parsed JSON, or None on
    failure: nothing is cached then)."""
    path = os.path.join(directory or state_dir(), f"exchangeinfo-{_host_key(rest_url)}.json")
    try:
        if time.time() - os.stat(path).st_mtime < max_age_s:
            with open(path) as f:
                return json.load(f)
    except (OSError, ValueError):
        pass
    data = fetch()
    if data is not None:
        try:
            _write_json(path, data)
        except OSError:
            pass
    return data
