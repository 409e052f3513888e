"""Simulated execution: market/limit fills, latency, fees, PnL accounting, cancels, latency histograms."""
from __future__ import annotations

import numpy as np
import pytest

from aegis.core import latency as L
from aegis.replay import simexec as X
from aegis.core.records import (ACTION_CANCEL, ACTION_NEW, KIND_QUOTE, KIND_TRADE, MARKET_DTYPE, ORDER_LIMIT,
                           ORDER_MARKET, ORDER_REQUEST_DTYPE, SIDE_BUY, SIDE_SELL, STATUS_CANCELED, STATUS_EXPIRED,
                           TIF_GTC, TIF_GTX, TIF_IOC)

S = 1_000_000_000


class Sim:
    """Tiny driver: one symbol, quotes/trades by hand, requests by hand."""

    def __init__(self, **kw):
        self.x = X.SimExchange(2, X.SimConfig(**kw))
        self.cid = 0
        self.fills = []

    def quote(self, t, bid, ask):
        r = np.zeros(1, MARKET_DTYPE)[0]
        r["recv_ts"], r["kind"], r["bid_px"], r["ask_px"], r["bid_qty"], r["ask_qty"] = t, KIND_QUOTE, bid, ask, 1, 1
        X.on_market(r, self.x.sx)
        self._drain()

    def trade(self, t, px):
        r = np.zeros(1, MARKET_DTYPE)[0]
        r["recv_ts"], r["kind"], r["px"], r["qty"] = t, KIND_TRADE, px, 1.0
        X.on_market(r, self.x.sx)
        self._drain()

    def send(self, t, side, qty, price=0.0, order_type=ORDER_MARKET, tif=0, action=ACTION_NEW, target=0):
        self.cid += 1
        q = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
        q["client_id"], q["symbol"], q["side"], q["qty"], q["price"] = self.cid, 0, side, qty, price
        q["order_type"], q["tif"], q["action"], q["target_id"] = order_type, tif, action, target
        X.submit(q, t, self.x.sx)
        self._drain()
        return self.cid

    def _drain(self):
        self.fills.extend(self.x.drain_fills().tolist())

    def trades(self):
        """(client_id, price, qty, maker, fee) of fills with a quantity."""
        return [(f[0], f[5], f[6], f[14], f[8]) for f in self.fills if f[6] > 0]

    def statuses(self):
        return [(f[0], f[13]) for f in self.fills]

    @property
    def pos(self):
        return self.x.acct[0, X.A_POS]


def test_market_buy_fills_at_the_ask_plus_slippage_with_taker_fee():
    s = Sim(slippage_bps=10.0, taker_fee=0.001)
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 2.0)
    (cid, px, qty, maker, fee), = s.trades()
    assert px == pytest.approx(100.0 * 1.001) and qty == 2.0 and maker == 0
    assert fee == pytest.approx(px * 2.0 * 0.001)
    assert s.pos == 2.0


def test_market_sell_fills_at_the_bid_minus_slippage():
    s = Sim(slippage_bps=50.0)
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_SELL, 1.0)
    assert s.trades()[0][1] == pytest.approx(99.0 * (1 - 0.005))


def test_market_order_on_trades_only_data_fills_at_the_last_trade_price():
    s = Sim(slippage_bps=10.0)
    s.trade(1 * S, 50.0)
    s.send(1 * S, SIDE_SELL, 1.0)
    assert s.trades()[0][1] == pytest.approx(50.0 * 0.999)


def test_market_order_without_a_quote_expires():
    s = Sim()
    s.send(1 * S, SIDE_BUY, 1.0)
    assert s.trades() == [] and s.statuses() == [(1, STATUS_EXPIRED)]


def test_order_latency_fills_against_the_book_at_arrival_time():
    s = Sim(latency_ns=2 * S)
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 1.0)          # arrives at 3 s
    s.quote(2 * S, 100.0, 101.0)           # still in flight
    assert s.trades() == []
    s.quote(3 * S, 104.0, 105.0)           # arrives before this record is applied: book of 2 s
    assert s.trades()[0][1] == 101.0
    assert s.fills[0][3] == 3 * S          # fill time = arrival time


def test_resting_limit_buy_fills_as_maker_when_the_ask_reaches_it_not_on_a_trade_at_its_price():
    s = Sim(maker_fee=0.0002)
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 1.0, 98.0, ORDER_LIMIT, TIF_GTC)
    s.quote(2 * S, 98.5, 99.0)
    s.trade(3 * S, 98.0)                   # at the price: queue position unknown -> no fill
    assert s.trades() == []
    s.quote(4 * S, 97.0, 98.0)             # the ask reaches 98 -> filled at our price, maker
    (cid, px, qty, maker, fee), = s.trades()
    assert (px, qty, maker) == (98.0, 1.0, 1) and fee == pytest.approx(98.0 * 0.0002)


def test_resting_limit_sell_fills_on_a_trade_through_its_price():
    s = Sim()
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_SELL, 1.0, 101.0, ORDER_LIMIT, TIF_GTC)
    s.trade(2 * S, 101.0)
    assert s.trades() == []
    s.trade(3 * S, 101.5)
    assert s.trades()[0][1:4] == (101.0, 1.0, 1) and s.pos == -1.0


def test_marketable_limit_takes_at_the_quote_and_post_only_expires():
    s = Sim()
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 1.0, 100.5, ORDER_LIMIT, TIF_GTC)
    assert s.trades()[0][1:4] == (100.0, 1.0, 0)
    s.send(1 * S, SIDE_BUY, 1.0, 100.5, ORDER_LIMIT, TIF_GTX)
    assert s.statuses()[-1] == (2, STATUS_EXPIRED) and len(s.trades()) == 1


def test_ioc_limit_that_cannot_take_expires():
    s = Sim()
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 1.0, 99.5, ORDER_LIMIT, TIF_IOC)
    assert s.statuses() == [(1, STATUS_EXPIRED)]
    log_i, _ = s.x.drain_log()
    assert log_i[0, X.I_REASON] == X.WHY_NOT_MARKETABLE


def test_cancel_arriving_before_the_fill_cancels_the_resting_order():
    s = Sim(latency_ns=S)
    s.quote(1 * S, 99.0, 100.0)
    cid = s.send(1 * S, SIDE_BUY, 1.0, 98.0, ORDER_LIMIT, TIF_GTC)   # rests from 2 s
    s.quote(2 * S, 99.0, 100.0)
    s.send(2 * S, SIDE_BUY, 0.0, action=ACTION_CANCEL, target=cid)    # arrives at 3 s
    s.quote(3 * S, 97.0, 97.5)                                       # cancel first, then this quote
    assert s.trades() == [] and s.statuses() == [(cid, STATUS_CANCELED)]


def test_position_average_price_and_realized_pnl_of_a_reversal():
    s = Sim(taker_fee=0.0)
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 1.0)           # long 1 @ 100
    s.quote(2 * S, 110.0, 111.0)
    s.send(2 * S, SIDE_SELL, 3.0)          # sell 3 @ 110: +10 realized, short 2 @ 110
    a = s.x.acct[0]
    assert a[X.A_REALIZED] == 10.0 and a[X.A_POS] == -2.0 and a[X.A_AVG] == 110.0
    assert s.fills[-1][9] == 10.0          # realized_pnl of that fill
    s.quote(3 * S, 104.0, 106.0)
    assert X.equity(s.x.book, s.x.acct) == pytest.approx(10.0 + (-2.0) * (105.0 - 110.0))


def test_open_orders_at_end_of_data_are_logged_as_canceled():
    s = Sim()
    s.quote(1 * S, 99.0, 100.0)
    s.send(1 * S, SIDE_BUY, 1.0, 90.0, ORDER_LIMIT, TIF_GTC)
    X.finish_open(s.x.sx)
    s._drain()
    assert s.statuses() == [(1, STATUS_CANCELED)]
    log_i, _ = s.x.drain_log()
    assert log_i[0, X.I_REASON] == X.WHY_END_OF_DATA


def hist_of(values):
    h = L.new_histogram()
    for v in values:
        L.record(h, v)
    return h


def test_latency_draws_from_a_histogram_are_seeded_and_stay_in_recorded_buckets():
    h = hist_of([1000] * 50 + [50_000] * 50)
    draws = []
    for seed in (3, 3, 4):
        x = X.SimExchange(1, X.SimConfig(latency_hist=h, seed=seed))
        draws.append([X.draw_latency(x.ctr, x.lat_cum, x.lat_lo, x.lat_hi, x.rng) for _ in range(400)])
    assert draws[0] == draws[1] and draws[0] != draws[2]
    d = np.array(draws[0])
    for v, part in ((1000, d[d < 10_000]), (50_000, d[d >= 10_000])):
        lo = max(L.lowest_equivalent(L.bucket_index(v)), 1000)
        hi = min(L.highest_equivalent(L.bucket_index(v)), 50_000)
        assert ((part >= lo) & (part <= hi)).all()
        assert 120 < len(part) < 280      # about half from each bucket


def test_constant_latency_is_used_without_a_histogram():
    x = X.SimExchange(1, X.SimConfig(latency_ns=1234))
    assert X.draw_latency(x.ctr, x.lat_cum, x.lat_lo, x.lat_hi, x.rng) == 1234
    with pytest.raises(ValueError):
        X.SimConfig(latency_hist=L.new_histogram())
