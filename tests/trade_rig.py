"""Shared helpers for the trade tests against the embedded venue (not a test module)."""
from __future__ import annotations

import time

import numpy as np

from aegis.trade import keys
from aegis.trade import risk
from aegis.trade import sender as trade
from aegis.binance.client import endpoints
from aegis.core.records import ACTION_CANCEL, ACTION_NEW, FILL_DTYPE, ORDER_LIMIT, ORDER_MARKET, ORDER_REQUEST_DTYPE, TIF_GTC

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
N_KEYS = 40


def venue_config(**kw):
    """A venue for many short-lived test accounts on one IP: Binance's 2400 weight/min would throttle the suite
    (every start/stop reconciles with GET openOrders, weight 40), so the weight limit is raised; the order-rate
    and weight limits themselves are tested with their own venues."""
    from aegis.venue import VenueConfig
    from aegis.venue.ratelimit import RateLimitConfig
    return VenueConfig(rate=50, api_keys=venue_keys(), rate_limits=RateLimitConfig(weight_per_minute=1_000_000),
                       **kw)


def venue_keys():
    return {f"trade-key-{i}": f"trade-secret-{i}" for i in range(N_KEYS)}


class KeyPool:
    """One venue account per test: accounts do not share positions or orders."""
    def __init__(self):
        self.i = 0

    def take(self):
        self.i += 1
        return keys.from_strings(f"trade-key-{self.i}", f"trade-secret-{self.i}")


def wait_for(cond, timeout=10.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


class Rig:
    """A TradeSession plus the few Brain duties a test needs (quotes -> risk, submit, drain events)."""

    def __init__(self, venue, k, journal_path, risk_cfg=None, trade_cfg=None, symbols=SYMBOLS, resume=False):
        rc = risk_cfg or {}
        base = dict(max_position_notional=1e6, max_gross_notional=1e6, max_order_notional=1e6, daily_loss_limit=0.0,
                    max_md_age_ms=0, price_band_bps=0.0)
        base.update(rc)
        tc = {"fsync": "never", "timeout_s": 2.0, "recv_window_ms": 1000}
        tc.update(trade_cfg or {})
        self.venue = venue
        self.ts = trade.TradeSession(trade.TradeConfig.from_section(tc), risk.RiskConfig(**base),
                                     endpoints("embedded", embedded=venue), k, symbols,
                                     journal_path=str(journal_path), resume=resume)
        self.symbols = symbols
        self.scratch_f = np.zeros(256, FILL_DTYPE)
        self.scratch_r = np.zeros(16, ORDER_REQUEST_DTYPE)

    def start(self):
        self.ts.start()
        return self

    @property
    def book(self):
        return self.ts.book

    def quotes(self):
        now = time.monotonic_ns()
        for i, s in enumerate(self.symbols):
            bid, _, ask, _ = self.venue.market.best(s)
            risk.on_quote(*self.book.arrays, i, bid, ask, now)

    def pump(self):
        """One Brain iteration: events first, then kill switch / halt follow-up."""
        b, q = self.book, self.ts.queue
        n = trade.apply_events(*b.arrays, self.ts.fills.header, self.ts.fills.records,
                               self.scratch_f, time.monotonic_ns())
        trade.service(*b.arrays, self.ts.flags, q.header, q.records, self.scratch_r, time.monotonic_ns())
        return n

    def order(self, symbol, side, qty, price=0.0, otype=ORDER_LIMIT, ro=0):
        self.quotes()
        r = np.zeros(1, ORDER_REQUEST_DTYPE)
        r[0]["symbol"], r[0]["side"], r[0]["qty"], r[0]["price"] = self.symbols.index(symbol), side, qty, price
        r[0]["order_type"], r[0]["tif"], r[0]["reduce_only"], r[0]["action"] = otype, TIF_GTC, ro, ACTION_NEW
        r[0]["tif"] = TIF_GTC if otype == ORDER_LIMIT else 0
        b, q = self.book, self.ts.queue
        queued = trade.submit(*b.arrays, q.header, q.records, r, 1, time.monotonic_ns())
        return queued, r[0]

    def market(self, symbol, side, qty):
        return self.order(symbol, side, qty, 0.0, ORDER_MARKET)

    def cancel(self, client_id):
        r = np.zeros(1, ORDER_REQUEST_DTYPE)
        r[0]["action"], r[0]["target_id"] = ACTION_CANCEL, client_id
        b, q = self.book, self.ts.queue
        return trade.submit(*b.arrays, q.header, q.records, r, 1, time.monotonic_ns())

    def below_bid(self, symbol, pct=0.02):
        return self.venue.market.best(symbol)[0] * (1 - pct)

    def exchange_open(self, symbol=None):
        r = self.ts.client.open_orders(symbol)
        assert r["ok"], r
        return r["orders"]

    def exchange_position(self, symbol):
        r = self.ts.client.position_risk()
        assert r["ok"], r
        return sum(float(p["positionAmt"]) for p in r["positions"] if p["symbol"] == symbol)

    def wait_position(self, symbol, qty, timeout=10.0):
        return wait_for(lambda: (self.pump(), abs(self.book.position(symbol) - qty) < 1e-9)[1], timeout)

    def stop(self, cancel=True):
        return self.ts.stop(cancel)
