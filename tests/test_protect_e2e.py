"""Exchange-side safety end to end: the engine trades on an embedded venue that runs in THIS process ([venue] url),
so the venue outlives the engine and what it does without the engine can be watched.

  * kill -9 the supervisor and every engine process, move the venue's market through the protective stop: the venue
    closes the position by itself;
  * freeze every engine process with SIGSTOP: the venue's countdown (the dead-man switch the engine kept armed)
    cancels the account's open orders.
"""
from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import pytest

from aegis.core import shm
from aegis.trade.protect import PREFIX, stop_price
from aegis.venue import DEFAULT_API_KEY as KEY, VenueConfig, start_venue
from tests.enginerun import EngineRun

pytestmark = [pytest.mark.time_limit(240), pytest.mark.usefixtures("compiled_order_path")]
SYM = "DOTUSDT"
TICK = Decimal("0.001")


@pytest.fixture
def venue():
    with start_venue(VenueConfig(rate=2000.0, seed=29)) as v:
        yield v


def _engine(tmp_path, venue, trade: str, *args) -> EngineRun:
    cfg = tmp_path / "aegis.toml"
    cfg.write_text(f'[venue]\nurl = "{venue.rest_url}"\n\n[trade]\n{trade}\n')
    return EngineRun("--config", str(cfg), "--out", str(tmp_path), "--symbols", SYM, "--status-interval", "0.5",
                     *args, env={"AEGIS_API_KEY": "", "AEGIS_API_SECRET": ""})


def _cleanup(run: EngineRun) -> None:
    if run.proc.poll() is None:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(10)
    run.release()
    if run.run_id:
        for name in shm.list_segments(run.run_id):     # a killed supervisor could not unlink its segments
            shm.unlink(name)


def _position(venue) -> Decimal:
    (row,) = venue.exchange.position_risk(KEY, {"symbol": SYM}, version=3) or [{"positionAmt": "0"}]
    return Decimal(row["positionAmt"])


def _entry(venue) -> Decimal:
    return Decimal(venue.exchange.position_risk(KEY, {"symbol": SYM}, version=3)[0]["entryPrice"])


def _stops(venue) -> list[dict]:
    return [o for o in venue.exchange.algo.open_orders(KEY, {"symbol": SYM}) if o["clientAlgoId"].startswith(PREFIX)]


def _protected(venue, distance: float) -> bool:
    """One protective stop, on the side that closes the position, at `distance` from its entry."""
    amt = _position(venue)
    stops = _stops(venue)
    if amt == 0 or len(stops) != 1:
        return False
    s = stops[0]
    want = stop_price(_entry(venue), amt > 0, distance, TICK)
    return s["side"] == ("SELL" if amt > 0 else "BUY") and Decimal(s["triggerPrice"]) == want and s["closePosition"]


def test_a_killed_engine_leaves_a_protective_stop_that_closes_the_position(tmp_path, venue):
    # a slow EMA cross on DOT (10 DOT ~ 25 USDT an order): it is always in a position, and flips now and then
    run = _engine(tmp_path, venue, 'protect = "0.5%"', "--param", "fast=20", "--param", "slow=200",
                  "--param", "unit=10")
    try:
        run.wait_running(120)
        end = time.monotonic() + 90
        streak = 0
        while time.monotonic() < end and streak < 3:      # protected, and steadily so
            streak = streak + 1 if _protected(venue, 0.005) else 0
            time.sleep(0.2)
        assert streak >= 3, "no steady protective stop:\n" + run.output
        os.killpg(run.proc.pid, signal.SIGKILL)           # the supervisor, the Feed and the Brain at once
        run.proc.wait(10)
        time.sleep(0.5)
        amt = _position(venue)
        assert amt != 0 and _protected(venue, 0.005), "the last order raced the kill; position and stop differ"
        (stop,) = _stops(venue)
        # nobody is left to act: move the market through the stop
        venue.drive(SYM, -1 if amt > 0 else +1)
        end = time.monotonic() + 30
        while time.monotonic() < end and _position(venue) != 0:
            time.sleep(0.1)
        venue.drive(SYM, None)
        assert _position(venue) == 0, "the venue did not close the position"
        q = venue.exchange.algo.query(KEY, {"algoId": str(stop["algoId"])})
        assert q["algoStatus"] == "FINISHED" and q["actualOrderId"]
        closing = venue.exchange.query_order(KEY, {"symbol": SYM, "orderId": q["actualOrderId"]})
        assert closing["status"] == "FILLED" and closing["reduceOnly"] and Decimal(closing["executedQty"]) == abs(amt)
    finally:
        _cleanup(run)


def test_frozen_engine_processes_have_their_orders_cancelled_by_the_venue_countdown(tmp_path, venue):
    # 4 s, re-armed every second: a loaded 2-core box may stall the engine's Python threads for a second or two
    run = _engine(tmp_path, venue, "deadman_s = 4.0", "--param", "fast=20", "--param", "slow=200",
                  "--param", "unit=10")
    try:
        run.wait_running(120)
        end = time.monotonic() + 30
        while time.monotonic() < end and venue.exchange.countdown_deadline(KEY, SYM) is None:
            time.sleep(0.1)
        assert venue.exchange.countdown_deadline(KEY, SYM) is not None, run.output
        # a resting order of the engine's account, far from the market
        bid = Decimal(venue.market.book_ticker(SYM)["bidPrice"])
        o = venue.exchange.place_order(KEY, {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                             "quantity": "10", "price": str(bid * Decimal("0.97"))[:5]})
        time.sleep(5.0)      # longer than the countdown: the running engine's heartbeats keep it armed
        assert venue.exchange.query_order(KEY, {"symbol": SYM, "orderId": str(o["orderId"])})["status"] == "NEW"
        os.killpg(run.proc.pid, signal.SIGSTOP)            # every engine process frozen, sockets left open
        try:
            t_frozen = time.monotonic()
            end = t_frozen + 10
            while time.monotonic() < end and venue.exchange.open_orders(KEY, {"symbol": SYM}):
                time.sleep(0.1)
            assert venue.exchange.open_orders(KEY, {"symbol": SYM}) == []
            assert time.monotonic() - t_frozen <= 4.5       # within the countdown of the last heartbeat
            assert venue.exchange.query_order(KEY, {"symbol": SYM, "orderId": str(o["orderId"])})["status"] == \
                "CANCELED"
            assert venue.exchange.countdown_deadline(KEY, SYM) is None      # it fired
        finally:
            os.killpg(run.proc.pid, signal.SIGCONT)
        os.killpg(run.proc.pid, signal.SIGTERM)
        assert run.finish(60) == 0, run.output
        # an orderly stop disarms the countdown it kept armed
        assert venue.exchange.countdown_deadline(KEY, SYM) is None
    finally:
        _cleanup(run)
