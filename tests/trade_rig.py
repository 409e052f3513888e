"""Shared helpers for the trade tests against the embedded venue (not a test module)."""
from __future__ import annotations

import time

import numpy as np

from aegis.brain import pipeline, strategy
from aegis.brain.process import Brain, BrainConfig
from aegis.binance import keys
from aegis.trade import risk
from aegis.trade import sender as trade
from aegis.binance.client import endpoints
from aegis.core.records import ACTION_CANCEL, ACTION_NEW, ORDER_LIMIT, ORDER_MARKET, ORDER_REQUEST_DTYPE, TIF_GTC

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


def brain_for(order_path, n_symbols: int) -> Brain:
    """A real Brain on an order path (anything with .risk, .queue, .fills, .flags, as aegis.trade.sender.OrderPath):
    tests drive its order loop (aegis.brain.pipeline) directly instead of through the market ring."""
    return Brain(BrainConfig(candle_intervals=()), strategy.resolve("ema_cross"), n_symbols, order_path)


def request(symbol=0, side=1, qty=1.0, price=0.0, otype=ORDER_LIMIT, ro=0, action=ACTION_NEW, target=0):
    r = np.zeros(1, ORDER_REQUEST_DTYPE)
    r[0]["symbol"], r[0]["side"], r[0]["qty"], r[0]["price"] = symbol, side, qty, price
    r[0]["order_type"], r[0]["reduce_only"], r[0]["action"], r[0]["target_id"] = otype, ro, action, target
    r[0]["tif"] = TIF_GTC if otype == ORDER_LIMIT else 0
    return r


class Rig:
    """A TradeSession driven by a real Brain's order loop (quotes -> risk, send, service)."""

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
        self.brain = None

    def start(self):
        self.ts.start()
        self.brain = brain_for(trade.OrderPath(self.ts), len(self.symbols))
        return self

    @property
    def book(self):
        return self.ts.book

    def quotes(self):
        now = time.monotonic_ns()
        for i, s in enumerate(self.symbols):
            bid, _, ask, _ = self.venue.market.best(s)
            risk.on_quote(self.book.rk, i, bid, ask, now)

    def pump(self):
        """The start of one Brain loop iteration: fills, then kill switch / halt follow-up."""
        return pipeline.service(self.brain.bs, self.brain.sink, self.ts.flags, time.monotonic_ns())

    def send(self, r):
        """One request through the order loop's risk check and hand-off; 1 if it was handed to the sender."""
        return int(pipeline.send(self.brain.bs, self.brain.sink, r[0], time.monotonic_ns()) == 0)

    def order(self, symbol, side, qty, price=0.0, otype=ORDER_LIMIT, ro=0):
        self.quotes()
        r = request(self.symbols.index(symbol), side, qty, price, otype, ro)
        return self.send(r), r[0]

    def market(self, symbol, side, qty):
        return self.order(symbol, side, qty, 0.0, ORDER_MARKET)

    def cancel(self, client_id):
        return self.send(request(action=ACTION_CANCEL, target=client_id))

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
