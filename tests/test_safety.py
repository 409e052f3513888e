"""Safety under faults, on the trade path (in-process sessions against the embedded venue, plus a real process
killed with SIGKILL): one Brain per journal, a dead Brain's orders cancelled at the next start, a kill switch that
escalates and flattens whole positions, the truth about what remains, and fail-safe on a journal that cannot be
written."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from aegis.core import lockfile
from aegis.core.records import ORDER_LIMIT, SIDE_BUY, SIDE_SELL
from aegis.trade import sender as trade
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
def rigs():
    made = []
    yield made
    for r in made:
        try:
            r.stop()
        except Exception:
            pass


def _rig(rigs, venue, k, path, **kw):
    r = Rig(venue, k, path, trade_cfg={"journal": str(path)}, **kw).start()
    rigs.append(r)
    return r


# ------------------------------------------------------------------------------------------ one Brain per journal
def test_a_second_brain_on_the_same_journal_refuses_to_start(venue, pool, tmp_path, rigs):
    k = pool.take()
    _rig(rigs, venue, k, tmp_path / "j.jsonl")
    with pytest.raises(trade.TradeSetupError, match=r"another engine \(pid \d+\) is trading on journal"):
        Rig(venue, k, tmp_path / "j.jsonl", trade_cfg={"journal": str(tmp_path / "j.jsonl")}).start()


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from aegis.binance.client import Endpoints
    from aegis.core.records import ACTION_NEW, ORDER_LIMIT, ORDER_REQUEST_DTYPE, SIDE_BUY, TIF_GTC
    from aegis.binance import keys
    from aegis.brain import pipeline
    from aegis.trade import risk, sender as trade
    from tests.trade_rig import brain_for
    rest, wsm, wsa, key, secret, journal, bid, ask = sys.argv[1:]
    ts = trade.TradeSession(trade.TradeConfig.from_section({"fsync": "never", "journal": journal}),
                            risk.RiskConfig(max_md_age_ms=0, price_band_bps=0.0, max_order_notional=1e6,
                                            max_position_notional=1e6, max_gross_notional=1e6),
                            Endpoints("embedded", rest, wsm, wsa), keys.from_strings(key, secret), ["BTCUSDT"],
                            journal_path=journal).start()
    risk.on_quote(ts.book.rk, 0, float(bid), float(ask), time.monotonic_ns())
    brain = brain_for(trade.OrderPath(ts), 1)
    r = np.zeros(2, ORDER_REQUEST_DTYPE)
    for i in range(2):
        r[i]["symbol"], r[i]["side"], r[i]["qty"], r[i]["price"] = 0, SIDE_BUY, 0.002, float(bid) * (0.97 - 0.01 * i)
        r[i]["order_type"], r[i]["tif"], r[i]["action"] = ORDER_LIMIT, TIF_GTC, ACTION_NEW
    for i in range(2):
        pipeline.send(brain.bs, brain.sink, r[i], time.monotonic_ns())
    print("placed", flush=True)
    time.sleep(60)
""")


def test_orders_of_a_brain_killed_with_its_supervisor_are_cancelled_at_the_next_start(venue, pool, tmp_path, rigs,
                                                                                        caplog):
    k = pool.take()
    path = tmp_path / "j.jsonl"
    bid, _, ask, _ = venue.market.best("BTCUSDT")
    child = subprocess.Popen([sys.executable, "-c", CHILD, venue.rest_url, venue.ws_market_url, venue.ws_api_url,
                              k.key.reveal(), k.secret.reveal(), str(path), str(bid), str(ask)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert child.stdout.readline().strip() == "placed"
        from aegis.binance.client import BinanceClient, endpoints
        client = BinanceClient(endpoints("embedded", embedded=venue), k)
        assert wait_for(lambda: len(client.open_orders()["orders"]) == 2, 10)
        assert lockfile.holder(trade.brain_lock_path(str(path))) == child.pid
    finally:
        child.send_signal(signal.SIGKILL)       # the Brain dies, and nobody cancels for it
        child.wait(10)
    assert lockfile.read(trade.brain_lock_path(str(path))) == (child.pid, trade.LOCK_TRADING)
    assert len(client.open_orders()["orders"]) == 2
    caplog.set_level(logging.ERROR, "aegis.trade.sender")
    r = _rig(rigs, venue, k, path, symbols=["BTCUSDT"])
    assert client.open_orders()["orders"] == []
    assert r.ts.orphans_cancelled == {"BTCUSDT": True}
    assert f"the previous engine on this journal (pid {child.pid}) died while trading" in caplog.text
    r.stop()
    rigs.remove(r)
    assert lockfile.read(trade.brain_lock_path(str(path)))[1] == trade.LOCK_STOPPED
    # an orderly stop leaves nothing to clean up: the next start cancels nothing
    r2 = _rig(rigs, venue, k, path, symbols=["BTCUSDT"])
    assert r2.ts.orphans_cancelled is None


# ------------------------------------------------------------------------------------------ kill switch
def _long_with_resting_exit(r, qty=0.004, exit_qty=0.002):
    r.market("BTCUSDT", SIDE_BUY, qty)
    assert r.wait_position("BTCUSDT", qty)
    ask = r.venue.market.best("BTCUSDT")[2]
    queued, _ = r.order("BTCUSDT", SIDE_SELL, exit_qty, ask * 1.02, ORDER_LIMIT, ro=1)   # a take-profit exit
    assert queued == 1
    assert wait_for(lambda: len(r.exchange_open("BTCUSDT")) == 1)


def test_flatten_closes_the_whole_position_even_with_a_resting_reduce_only_exit(venue, pool, tmp_path, rigs):
    r = _rig(rigs, venue, pool.take(), tmp_path / "j.jsonl")
    _long_with_resting_exit(r)
    r.ts.kill(flatten=True)
    assert r.wait_position("BTCUSDT", 0.0)
    assert wait_for(lambda: r.exchange_position("BTCUSDT") == 0.0)
    assert r.exchange_open() == []


def test_kill_then_kill_with_flatten_escalates_and_flattens(venue, pool, tmp_path, rigs):
    r = _rig(rigs, venue, pool.take(), tmp_path / "j.jsonl")
    _long_with_resting_exit(r)
    r.ts.kill()                                      # USR1: halt and cancel, keep the position
    assert wait_for(lambda: (r.pump(), r.book.state == "HALTED")[1])
    assert wait_for(lambda: r.exchange_open() == [])
    assert r.exchange_position("BTCUSDT") == pytest.approx(0.004)
    r.ts.kill(flatten=True)                          # USR2 afterwards: now flatten
    assert r.wait_position("BTCUSDT", 0.0)
    assert wait_for(lambda: r.exchange_position("BTCUSDT") == 0.0)


def test_a_halt_kept_from_an_earlier_run_still_flattens_on_request(venue, pool, tmp_path, rigs):
    k = pool.take()
    a = _rig(rigs, venue, k, tmp_path / "j.jsonl")
    a.market("BTCUSDT", SIDE_BUY, 0.004)
    assert a.wait_position("BTCUSDT", 0.004)
    a.ts.kill()
    assert wait_for(lambda: (a.pump(), a.book.state == "HALTED")[1])
    a.stop()
    rigs.remove(a)
    b = _rig(rigs, venue, k, tmp_path / "j.jsonl")
    assert b.book.state == "HALTED"
    assert b.wait_position("BTCUSDT", 0.004)          # the exchange's position, adopted at the start
    b.quotes()                                        # a market order needs a reference price
    b.ts.kill(flatten=True)
    assert b.wait_position("BTCUSDT", 0.0)
    assert wait_for(lambda: b.exchange_position("BTCUSDT") == 0.0)


def test_the_end_says_which_positions_remain_and_why_as_the_exchange_shows_them(venue, pool, tmp_path, rigs,
                                                                                caplog):
    r = _rig(rigs, venue, pool.take(), tmp_path / "j.jsonl")
    r.market("BTCUSDT", SIDE_SELL, 0.003)
    assert r.wait_position("BTCUSDT", -0.003)
    r.market("ETHUSDT", SIDE_BUY, 0.01)
    assert r.wait_position("ETHUSDT", 0.01)
    caplog.set_level(logging.WARNING, "aegis.trade.sender")
    r.stop()
    rigs.remove(r)
    assert r.ts.remaining == {"BTCUSDT": pytest.approx(-0.003), "ETHUSDT": pytest.approx(0.01)}
    from aegis.binance.client import BinanceClient
    pr = BinanceClient(r.ts.client.ep, r.ts.keys).position_risk()["positions"]
    assert {p["symbol"]: float(p["positionAmt"]) for p in pr if float(p["positionAmt"])} == r.ts.remaining
    line = next(x for x in caplog.text.splitlines() if "positions at the end" in x)
    # the reason once, after the positions it explains
    assert "as the exchange shows them: 2 open: BTCUSDT -0.003, ETHUSDT +0.01 (kept:" in line and line.count("kept") == 1


# ------------------------------------------------------------------------------------------ journal failure
@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("fsync", ["interval", "always"])     # a ring journal (the default), one that write(2)s
def test_a_journal_that_cannot_be_written_halts_and_cancels_without_it(venue, pool, tmp_path, rigs, caplog,
                                                                      fast_path, fsync, monkeypatch):
    r = Rig(venue, pool.take(), tmp_path / "j.jsonl", trade_cfg={"fast_path": fast_path, "fsync": fsync}).start()
    rigs.append(r)
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    r.order("ETHUSDT", SIDE_BUY, 0.01, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: len(r.exchange_open()) == 2)
    caplog.set_level(logging.CRITICAL, "aegis.trade.sender")
    if r.ts.journal.mapped:
        # the disk is full: copying the ring into the file fails with ENOSPC, and the ring has no room left
        from aegis.trade import journal

        def enospc(*args):
            raise OSError(28, os.strerror(28))
        monkeypatch.setattr(journal.os, "pwrite", enospc)
        r.ts.journal.map_cursor[journal.JC_CAP] = r.ts.journal.map_cursor[journal.JC_POS]
    else:
        # the disk is full: every write(2) of the journal's descriptor now fails with ENOSPC, as on a full filesystem
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, r.ts.journal.fd)
        os.close(full)
    queued, _ = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert queued == 1
    assert wait_for(lambda: r.ts.failsafe is not None, 10)
    assert "No space left on device" in r.ts.failsafe or "disk full" in r.ts.failsafe
    assert wait_for(lambda: r.exchange_open() == [], 10)        # cancelled although nothing can be journaled
    assert wait_for(lambda: (r.pump(), r.book.state == "HALTED")[1])
    assert "ORDER JOURNAL CANNOT BE WRITTEN" in caplog.text
    assert len(r.ts.client.open_orders()["orders"]) == 0


# ------------------------------------------------------------------------------------------ small pieces
def test_feed_health_shows_on_the_status_line_only_once_something_happened():
    from aegis.app.supervisor import feed_fields
    from aegis.core import control
    ctl = control.new_block()
    assert feed_fields(ctl) == ""
    b = control.base(control.ROLE_FEED)
    ctl[b + control.R_FEED_RECONNECTS], ctl[b + control.R_FEED_STALLS] = 3, 1
    ctl[b + control.R_FEED_RESYNCS], ctl[b + control.R_FEED_BAD] = 2, 7
    assert feed_fields(ctl) == " | feed reconnects 3 stalls 1 resyncs 2 malformed 7"


def test_per_order_samples_keep_the_latest_rows_in_fixed_memory():
    s = trade.Samples(4, 2)
    for i in range(10):
        s.append((i, -i))
    assert len(s) == 4 and s.rows().tolist() == [[6, -6], [7, -7], [8, -8], [9, -9]]
    one = trade.Samples(3)
    for i in range(5):
        one.append(i)
    assert one[0] == 2 and [int(x) for x in np.asarray(one)] == [2, 3, 4]


# ------------------------------------------------------------------------------------------ hedge-mode accounts
def test_an_account_in_hedge_mode_is_refused_at_start_before_any_order(venue, pool, tmp_path, rigs):
    """The engine trades one-way positions: on a hedge-mode account every order would be refused (-4061). It says
    so in one line (a ConfigError: exit 2) instead of starting."""
    k = pool.take()
    acc_key = k.key.reveal()
    venue.exchange.set_position_mode(acc_key, {"dualSidePosition": "true"})
    try:
        with pytest.raises(trade.TradeSetupError, match=r"hedge mode .* one-way") as e:
            _rig(rigs, venue, k, tmp_path / "j.jsonl")
        assert "\n" not in str(e.value)
        assert venue.exchange.all_orders(acc_key, {"symbol": "BTCUSDT"}) == []
    finally:
        venue.exchange.set_position_mode(acc_key, {"dualSidePosition": "false"})
    _rig(rigs, venue, k, tmp_path / "j2.jsonl")      # the same account in one-way mode starts
