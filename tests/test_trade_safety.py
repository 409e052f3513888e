"""The trading session's use of the exchange's reference data and safety endpoints, against the embedded venue:
leverage brackets cap the risk book's position limit, commission rates check every fill's fee, the dead-man
countdown is armed while the session runs and disarmed when it stops, and candles start warm from klines."""
from __future__ import annotations

import time

import numpy as np
import pytest

from aegis.binance.client import BinanceClient, endpoints
from aegis.brain import candles
from aegis.core.records import SIDE_BUY
from aegis.trade.risk import S_LIM_POS_NOTIONAL
from aegis.venue import start_venue

from tests.trade_rig import KeyPool, Rig, venue_config, wait_for

pytestmark = [pytest.mark.time_limit(60), pytest.mark.usefixtures("compiled_order_path")]


@pytest.fixture(scope="module")
def venue():
    with start_venue(venue_config()) as v:
        yield v


@pytest.fixture(scope="module")
def pool():
    return KeyPool()


@pytest.fixture
def rig(venue, pool, tmp_path):
    rigs = []

    def make(k=None, **kw):
        r = Rig(venue, k or pool.take(), tmp_path / f"journal{len(rigs)}.jsonl", **kw).start()
        rigs.append(r)
        return r
    yield make
    for r in rigs:
        r.stop()


def test_position_limit_is_capped_by_the_bracket_of_the_accounts_leverage(venue, pool, rig):
    k = pool.take()
    venue.exchange.set_leverage(k.key.reveal(), {"symbol": "ETHUSDT", "leverage": "50"})
    r = rig(k, risk_cfg={"max_position_notional": 1e12})
    i_btc, i_eth = r.symbols.index("BTCUSDT"), r.symbols.index("ETHUSDT")
    # leverage 20 (default): the largest bracket still allowing 20x; 50x: a smaller one
    assert r.book.sym[i_btc, S_LIM_POS_NOTIONAL] == 100_000_000
    assert r.book.sym[i_eth, S_LIM_POS_NOTIONAL] == 12_000_000
    # a configured limit below the cap is kept
    r2 = rig(risk_cfg={"max_position_notional": 5_000})
    assert r2.book.sym[i_btc, S_LIM_POS_NOTIONAL] == 5_000


def test_fees_are_checked_against_the_commission_rate(rig):
    r = rig()
    assert r.ts.userstream.fee_rates == {"BTCUSDT": (0.0002, 0.0005), "ETHUSDT": (0.0002, 0.0005)}
    r.market("BTCUSDT", SIDE_BUY, 0.003)
    assert wait_for(lambda: r.ts.userstream.stats.get("fee_checked", 0) >= 1)
    assert r.ts.userstream.stats.get("fee_mismatch", 0) == 0
    r.ts.userstream.fee_rates["ETHUSDT"] = (0.0002, 0.0001)      # as if the account's tier had changed
    r.market("ETHUSDT", SIDE_BUY, 0.01)
    assert wait_for(lambda: r.ts.userstream.stats.get("fee_mismatch", 0) >= 1)


def test_the_session_keeps_the_dead_man_switch_armed_and_disarms_it_on_stop(venue, pool, rig):
    k = pool.take()
    r = rig(k, trade_cfg={"deadman_s": 4.0})      # 2 symbols within the weight budget: re-armed every 2 s
    key = k.key.reveal()
    assert all(venue.exchange.countdown_deadline(key, s) is not None for s in r.symbols)
    first = venue.exchange.countdown_deadline(key, "BTCUSDT")
    deadline = time.monotonic() + 10.0
    while (now := venue.exchange.countdown_deadline(key, "BTCUSDT")) == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert now is not None and now > first          # re-armed before it fired (a fired one reads None)
    r.stop()
    assert all(venue.exchange.countdown_deadline(key, s) is None for s in r.symbols)


def test_candles_start_warm_from_the_exchanges_klines(venue):
    from aegis.binance import keys
    client = BinanceClient(endpoints("embedded", embedded=venue), keys.from_strings("trade-key-0", "trade-secret-0"))
    # the venue's own trading would rewrite the open kline between reading it and warming up from it
    venue.pause_market()
    time.sleep(0.2)
    try:
        book = candles.CandleBook(2, [candles.parse_interval("1m"), candles.parse_interval("1s")], depth=8)
        row = client.klines("ETHUSDT", "1m", limit=1)["klines"][-1]
        # the open kline counts as closed when "now" is past its close time; 1s has no Binance kline
        now = int(row[6]) + 1
        n = candles.warm_up(book, client, ["BTCUSDT", "ETHUSDT"], now_ms=now)
        # every kline closed before "now" (the venue's age decides how many; at most depth + 1 are asked for)
        closed = {s: [k for k in client.klines(s, "1m", limit=9)["klines"] if int(k[6]) < now]
                  for s in ("BTCUSDT", "ETHUSDT")}
        assert n == sum(map(len, closed.values())) >= 2
        assert book.closed_count(1, 0) == len(closed["ETHUSDT"]) and book.closed_count(1, 1) == 0
        bar = book.closed(1, 0)
        assert bar["open_ts"] == row[0] * 1_000_000 and bar["close_ts"] == (row[0] + 60_000) * 1_000_000
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == tuple(float(x) for x in row[1:5])
        assert bar["trades"] == row[8] and bar["closed"] == 1
        # a second warm-up adds nothing: bars are never rewritten
        assert candles.warm_up(book, client, ["BTCUSDT", "ETHUSDT"], now_ms=int(row[6]) + 1) == 0
        # nothing newer than "now" is taken
        fresh = candles.CandleBook(2, [candles.parse_interval("1m")], depth=8)
        oldest = min(int(k[0]) for s in ("BTCUSDT", "ETHUSDT") for k in client.klines(s, "1m", limit=9)["klines"])
        assert candles.warm_up(fresh, client, ["BTCUSDT", "ETHUSDT"], now_ms=oldest) == 0
        assert np.all(fresh.hist_n == 0)
    finally:
        venue.resume_market()
        client.close()
