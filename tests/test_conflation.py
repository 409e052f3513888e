"""Conflation buffer of aegis.feed.conflation: quotes conflate per symbol, trades and book records are never lost."""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from aegis.core import ring as R
from aegis.feed.conflation import ConflationBuffer
from aegis.core.records import FLAG_CONFLATED, KIND_BOOK, KIND_MARK, KIND_QUOTE, KIND_TRADE, MARKET_DTYPE
from aegis.core.wait import SLEEP

CAP = R.MIN_CAPACITY


@pytest.fixture(scope="module", autouse=True)
def _compiled(compiled_feed):
    """The Feed's kernels, compiled before any test's clock started (tests/conftest.py)."""


@pytest.fixture()
def rg():
    r = R.Ring.create("aegis-test-cf-" + uuid.uuid4().hex[:10], CAP)
    yield r
    r.close()
    r.unlink()


def recs(kinds_syms_ids):
    a = np.zeros(len(kinds_syms_ids), MARKET_DTYPE)
    for i, (k, s, lid) in enumerate(kinds_syms_ids):
        a[i]["kind"], a[i]["symbol"], a[i]["last_id"] = k, s, lid
    return a


def read_all(rg):
    dst = np.zeros(CAP, MARKET_DTYPE)
    n = R.read_batch(rg.header, rg.records, dst, CAP)
    return dst[:n].copy()


def fill_ring(rg, cb):
    filler = recs([(KIND_TRADE, 9, i) for i in range(CAP)])
    assert cb.push(rg.header, rg.records, filler, CAP, SLEEP) == CAP


def test_records_go_straight_to_the_ring_in_order_with_consecutive_seq(rg):
    cb = ConflationBuffer(4, 1024)
    src = recs([(KIND_QUOTE, 0, 1), (KIND_TRADE, 0, 2), (KIND_BOOK, 1, 3)])
    assert cb.push(rg.header, rg.records, src, 3, SLEEP) == 3
    out = read_all(rg)
    assert out["last_id"].tolist() == [1, 2, 3] and out["seq"].tolist() == [0, 1, 2]
    assert (out["pub_ts"] > 0).all() and cb.pending == 0


def test_full_ring_conflates_quotes_per_symbol_and_keeps_every_trade(rg):
    cb = ConflationBuffer(4, 1024)
    fill_ring(rg, cb)
    burst = recs([(KIND_QUOTE, 0, 100), (KIND_TRADE, 0, 101), (KIND_QUOTE, 1, 102), (KIND_QUOTE, 0, 103),
                  (KIND_BOOK, 1, 104), (KIND_QUOTE, 0, 105), (KIND_MARK, 2, 106), (KIND_MARK, 2, 107)])
    assert cb.push(rg.header, rg.records, burst, len(burst), SLEEP) == 0
    assert rg.header[R.H_CONFLATED] == 3 and cb.pending == 5
    read_all(rg)                                   # the reader catches up
    cb.drain(rg.header, rg.records)
    out = read_all(rg)
    # arrival order of the survivors; the quotes of symbol 0 collapsed into the latest one
    assert out["last_id"].tolist() == [101, 102, 104, 105, 107]
    flagged = {int(r["last_id"]) for r in out if r["flags"] & FLAG_CONFLATED}
    assert flagged == {105, 107}
    assert out["seq"].tolist() == list(range(CAP, CAP + 5))     # conflation leaves no hole in seq


def test_trades_beyond_the_pending_capacity_wait_for_the_reader_instead_of_being_dropped(rg):
    cb = ConflationBuffer(2, 1024)
    fill_ring(rg, cb)
    trades = recs([(KIND_TRADE, 1, 10_000 + i) for i in range(3000)])
    seen = []
    done = threading.Event()

    def reader():
        end = time.monotonic() + 10
        # start reading only once the writer waits on the full ring: the behaviour under test
        while rg.header[R.H_FULL_WAITS] == 0 and time.monotonic() < end:
            time.sleep(0.001)
        while time.monotonic() < end and (not done.is_set() or R.available(rg.header)):
            seen.extend(read_all(rg)["last_id"].tolist())
            time.sleep(0.002)

    t = threading.Thread(target=reader)
    t.start()
    cb.push(rg.header, rg.records, trades, len(trades), SLEEP)
    while cb.pending:
        cb.drain(rg.header, rg.records)
        time.sleep(0.001)
    done.set()
    t.join()
    assert seen[CAP:] == list(range(10_000, 13_000))
    assert rg.header[R.H_CONFLATED] == 0 and cb.stats()["blocked"] >= 1 and rg.header[R.H_FULL_WAITS] >= 1


def test_blocked_writer_returns_when_the_ring_is_aborted(rg):
    cb = ConflationBuffer(2, 1024)
    fill_ring(rg, cb)
    trades = recs([(KIND_TRADE, 1, i) for i in range(2000)])
    threading.Timer(0.2, rg.abort).start()
    t0 = time.monotonic()
    cb.push(rg.header, rg.records, trades, len(trades), SLEEP)
    assert time.monotonic() - t0 < 5


def test_many_quotes_of_one_symbol_in_a_long_stall_keep_only_the_latest(rg):
    cb = ConflationBuffer(3, 1024)
    fill_ring(rg, cb)
    for k in range(20):   # 20 x 500 quotes: the FIFO compacts its dead entries instead of growing
        cb.push(rg.header, rg.records, recs([(KIND_QUOTE, 1, k * 500 + i) for i in range(500)]), 500, SLEEP)
    assert cb.pending == 1 and rg.header[R.H_CONFLATED] == 10_000 - 1
    read_all(rg)
    cb.drain(rg.header, rg.records)
    out = read_all(rg)
    assert out["last_id"].tolist() == [9_999] and out[0]["flags"] & FLAG_CONFLATED


def test_blocked_writer_keeps_beating_and_stops_on_a_stop_request(rg):
    from aegis.core import control
    ctl = control.new_block()
    cb = ConflationBuffer(2, 1024, ctl, control.ROLE_FEED)
    fill_ring(rg, cb)
    trades = recs([(KIND_TRADE, 1, i) for i in range(2000)])
    beats = []

    def watch():
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            beats.append(int(ctl[control.base(control.ROLE_FEED) + control.R_HEARTBEAT]))
            time.sleep(0.05)
        control.request_stop(ctl)

    t = threading.Thread(target=watch)
    t.start()
    t0 = time.monotonic()
    cb.push(rg.header, rg.records, trades, len(trades), SLEEP)
    t.join()
    assert time.monotonic() - t0 < 5
    assert len(set(b for b in beats if b)) >= 3      # the heartbeat moved while the writer waited
