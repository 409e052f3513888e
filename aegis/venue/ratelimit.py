"""Binance-style rate limits: request weight per IP per minute, order counts per account per 10 s and per minute.

Windows are fixed (aligned to the clock), like the counters Binance reports in X-MBX-USED-WEIGHT-1M. A request that
breaks the weight limit gets HTTP 429 (-1003) with Retry-After until the window ends; an IP that keeps sending
while limited is banned (HTTP 418) for ban_s, doubling on every further ban (Binance: 2 minutes to 3 days).
Order limits answer 429 -1015 without Retry-After. All limits are constructor arguments so tests trip them fast.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from aegis.venue.exchange import VenueError

MAX_BAN_S = 3 * 24 * 3600


@dataclass(frozen=True)
class RateLimitConfig:
    weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    requests_over_limit_before_ban: int = 5
    ban_s: float = 120.0
    weight_window_s: float = 60.0      # shortened in tests; headers keep Binance's names
    orders_short_window_s: float = 10.0
    orders_long_window_s: float = 60.0

    def rate_limits_json(self) -> list[dict]:
        return [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_per_minute},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.orders_per_minute},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.orders_per_10s}]


class _Window:
    __slots__ = ("start", "count")

    def __init__(self) -> None:
        self.start = 0.0
        self.count = 0

    def roll(self, now: float, length: float) -> bool:
        start = now - (now % length)
        if start != self.start:
            self.start = start
            self.count = 0
            return True
        return False


class _IpState:
    __slots__ = ("weight", "over", "banned_until", "bans")

    def __init__(self) -> None:
        self.weight = _Window()
        self.over = 0               # requests sent while already limited in this window
        self.banned_until = 0.0
        self.bans = 0


class RateLimiter:
    def __init__(self, cfg: RateLimitConfig | None = None, clock_s: Callable[[], float] | None = None):
        self.cfg = cfg or RateLimitConfig()
        self.clock_s = clock_s or time.time
        self._lock = threading.Lock()
        self._ips: dict[str, _IpState] = {}
        self._orders: dict[str, tuple[_Window, _Window]] = {}

    def charge_weight(self, ip: str, weight: int) -> int:
        """Count `weight` for `ip`; returns the used weight of the window, raises the 429/418 VenueError."""
        cfg = self.cfg
        with self._lock:
            now = self.clock_s()
            st = self._ips.get(ip)
            if st is None:
                st = self._ips[ip] = _IpState()
            if st.weight.roll(now, cfg.weight_window_s):
                st.over = 0
            if st.banned_until > now:
                raise self._banned(st, now)
            st.weight.count += weight
            used = st.weight.count
            if used > cfg.weight_per_minute:
                st.over += 1
                if st.over > cfg.requests_over_limit_before_ban:
                    st.bans += 1
                    st.banned_until = now + min(cfg.ban_s * (2 ** (st.bans - 1)), MAX_BAN_S)
                    st.over = 0
                    raise self._banned(st, now, used)
                retry = max(1, int(st.weight.start + cfg.weight_window_s - now + 0.999))
                raise VenueError(-1003, f"Too many requests; current limit is {cfg.weight_per_minute} requests per "
                                        "minute. Please use the websocket for live updates to avoid polling the "
                                        "API.", 429, {"Retry-After": str(retry),
                                                      "X-MBX-USED-WEIGHT-1M": str(used)})
            return used

    def _banned(self, st: _IpState, now: float, used: int | None = None) -> VenueError:
        until_ms = int(st.banned_until * 1000)
        retry = max(1, int(st.banned_until - now + 0.999))
        used = st.weight.count if used is None else used
        return VenueError(-1003, f"Way too many requests; IP banned until {until_ms}. Please use the websocket for "
                                 "live updates to avoid bans.", 418,
                          {"Retry-After": str(retry), "X-MBX-USED-WEIGHT-1M": str(used)})

    def used_weight(self, ip: str) -> int:
        with self._lock:
            st = self._ips.get(ip)
            if st is None:
                return 0
            st.weight.roll(self.clock_s(), self.cfg.weight_window_s)
            return st.weight.count

    def charge_order(self, account: str) -> tuple[int, int]:
        """Count one new order; returns (count_10s, count_1m) or raises 429 -1015."""
        cfg = self.cfg
        with self._lock:
            now = self.clock_s()
            w = self._orders.get(account)
            if w is None:
                w = self._orders[account] = (_Window(), _Window())
            short, long_ = w
            short.roll(now, cfg.orders_short_window_s)
            long_.roll(now, cfg.orders_long_window_s)
            if short.count + 1 > cfg.orders_per_10s:
                raise VenueError(-1015, f"Too many new orders; current limit is {cfg.orders_per_10s} orders per "
                                        "10 SECOND.", 429)
            if long_.count + 1 > cfg.orders_per_minute:
                raise VenueError(-1015, f"Too many new orders; current limit is {cfg.orders_per_minute} orders per "
                                        "1 MINUTE.", 429)
            short.count += 1
            long_.count += 1
            return short.count, long_.count

    def order_counts(self, account: str) -> tuple[int, int]:
        with self._lock:
            w = self._orders.get(account)
            if w is None:
                return 0, 0
            now = self.clock_s()
            w[0].roll(now, self.cfg.orders_short_window_s)
            w[1].roll(now, self.cfg.orders_long_window_s)
            return w[0].count, w[1].count

    def rate_limits_status(self, ip: str, account: str | None) -> list[dict]:
        """ws-fapi `rateLimits` array with current counts."""
        c10, c1m = self.order_counts(account) if account else (0, 0)
        cfg = self.cfg
        return [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": cfg.weight_per_minute, "count": self.used_weight(ip)},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": cfg.orders_per_10s,
                 "count": c10},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": cfg.orders_per_minute,
                 "count": c1m}]
