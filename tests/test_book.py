"""Futures order-book sync of aegis.feed.book (Binance docs: "How to manage a local order book correctly"), driven
through the real parser."""
from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from aegis.feed import book as B
from aegis.feed import parse as P
from aegis.core.records import FLAG_LAST_IN_EVENT, FLAG_RESYNC, FLAG_SNAPSHOT, KIND_BOOK, KIND_DEPTH, KIND_STATUS
from aegis.binance.symbols import SymbolTable

SYM = "BTCUSDT"


@pytest.fixture(scope="module", autouse=True)
def _compiled(compiled_feed):
    """The Feed's kernels, compiled before any test's clock started (tests/conftest.py)."""


def depth(U, u, pu, bids=(), asks=(), sym=SYM):
    return orjson.dumps({"stream": sym.lower() + "@depth@100ms",
                         "data": {"e": "depthUpdate", "E": 1780563845145, "T": 1780563845143, "s": sym,
                                  "U": U, "u": u, "pu": pu, "b": [list(x) for x in bids],
                                  "a": [list(x) for x in asks]}})


class Harness:
    def __init__(self, emit_levels=False, cap=1024):
        self.table = SymbolTable.build([(SYM, "0.10", "0.001"), ("ETHUSDT", "0.01", "0.001")])
        self.books = B.BookState(len(self.table), cap, pool_events=64, pool_levels=512)
        self.parser = P.Parser(self.table, self.books, emit_levels=emit_levels)
        self.sid = self.table.id_of(SYM)
        self.records = []

    def feed(self, *msgs):
        j, _ = self.parser.parse_bytes(list(msgs), 7)
        self.records += list(self.parser.out[:j].copy())
        return self.parser.out[:j].copy()

    def snapshot(self, last_id, bids, asks, sid=None):
        b = self.books
        out = np.zeros(b.records_bound(len(bids) + len(asks)) + 8, P.MARKET_DTYPE)
        bid_a = np.array(bids, np.float64).reshape(-1, 2)
        ask_a = np.array(asks, np.float64).reshape(-1, 2)
        if b.state(self.sid if sid is None else sid) == B.ST_BUFFERING:
            b.st[self.sid if sid is None else sid, B.S_STATE] = B.ST_WAIT_SNAPSHOT
        n = B.apply_snapshot(b.st, b.px, b.qty, b.pend_hdr, b.pend_lv, b.pend_ctl, self.sid if sid is None else sid,
                             last_id, bid_a, ask_a, 0, 9, out, 0, self.parser.params[P.PR_EMIT_LEVELS] != 0)
        self.records += list(out[:n].copy())
        return out[:n].copy()

    @property
    def state(self):
        return self.books.state(self.sid)


def test_events_before_the_snapshot_are_buffered_then_replayed_from_the_first_straddling_event():
    h = Harness()
    h.feed(depth(100, 110, 95, bids=[("10.0", "1")]),
           depth(111, 120, 110, bids=[("10.1", "2")], asks=[("10.5", "1")]),
           depth(125, 130, 120, asks=[("10.4", "3")]))
    assert h.state == B.ST_BUFFERING and list(h.books.needs_snapshot()) == [h.sid]
    out = h.snapshot(115, [("10.0", "5"), ("9.9", "1")], [("10.6", "1")])
    assert h.state == B.ST_LIVE and h.books.st[h.sid, B.S_LAST_U] == 130
    assert h.books.bids(h.sid) == [(10.1, 2.0), (10.0, 5.0), (9.9, 1.0)]   # event 1 (u < L) dropped
    assert h.books.asks(h.sid) == [(10.4, 3.0), (10.5, 1.0), (10.6, 1.0)]
    assert out["kind"].tolist() == [KIND_BOOK] * 3 and out[0]["flags"] & FLAG_SNAPSHOT
    last = out[-1]
    assert (last["bid_px"], last["ask_px"], last["first_id"], last["last_id"], last["prev_id"]) == \
        (10.1, 10.4, 125, 130, 120)


def test_live_book_follows_the_futures_pu_chain_even_when_U_jumps_far_past_the_previous_u():
    h = Harness()
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [("100", "1")], [("101", "1")])
    out = h.feed(depth(77, 90, 20, bids=[("100", "2")]), depth(200, 260, 90, asks=[("101", "0.000")]))
    assert out["kind"].tolist() == [KIND_BOOK, KIND_BOOK]
    assert h.state == B.ST_LIVE and h.parser.stats[P.ST_RESYNCS] == 0
    assert h.books.asks(h.sid) == [] and h.books.bids(h.sid) == [(100.0, 2.0)]


def test_gap_in_the_pu_chain_discards_the_book_and_asks_for_a_new_snapshot():
    h = Harness()
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [("100", "1")], [("101", "1")])
    out = h.feed(depth(30, 40, 25, bids=[("99", "1")]))     # pu 25 != 20: a message was lost
    assert out["kind"].tolist() == [KIND_STATUS] and out[0]["flags"] & FLAG_RESYNC
    assert h.state == B.ST_BUFFERING and h.parser.stats[P.ST_RESYNCS] == 1
    assert list(h.books.needs_snapshot()) == [h.sid]
    h.feed(depth(41, 50, 40, bids=[("98", "1")]))
    h.snapshot(45, [("97", "1")], [("101", "1")])
    assert h.state == B.ST_LIVE and h.books.bids(h.sid) == [(98.0, 1.0), (97.0, 1.0)]


def test_duplicate_event_is_skipped_without_a_resync():
    h = Harness()
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [("100", "1")], [("101", "1")])
    e = depth(21, 30, 20, bids=[("100", "3")])
    out = h.feed(e, e, depth(31, 40, 30, bids=[("100", "4")]))
    assert out["kind"].tolist() == [KIND_BOOK, KIND_BOOK]
    assert h.parser.stats[P.ST_BOOK_DUPS] == 1 and h.parser.stats[P.ST_RESYNCS] == 0
    assert h.books.bids(h.sid) == [(100.0, 4.0)]


def test_reordered_events_are_a_gap_and_the_book_recovers_after_resync():
    h = Harness()
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [("100", "1")], [("101", "1")])
    e2, e3 = depth(21, 30, 20, bids=[("100", "2")]), depth(31, 40, 30, bids=[("100", "3")])
    h.feed(e3, e2)        # e3 first: pu 30 != 20 -> resync; e2 is then buffered too
    assert h.state == B.ST_BUFFERING and h.parser.stats[P.ST_RESYNCS] == 1
    h.feed(depth(41, 50, 40, bids=[("100", "5")]))
    h.snapshot(45, [("100", "4")], [("101", "1")])
    assert h.state == B.ST_LIVE and h.books.bids(h.sid) == [(100.0, 5.0)]


def test_event_directly_after_the_snapshot_is_accepted_by_pu_equal_to_last_update_id():
    h = Harness()
    h.feed(depth(1, 5, 0))
    h.snapshot(20, [("100", "1")], [("101", "1")])      # every buffered event is older: SYNCING
    assert h.state == B.ST_SYNCING
    h.feed(depth(31, 40, 20, bids=[("100", "2")]))
    assert h.state == B.ST_LIVE and h.books.bids(h.sid) == [(100.0, 2.0)]


def test_snapshot_older_than_the_buffered_events_is_refetched_and_events_are_kept():
    h = Harness()
    h.feed(depth(50, 60, 40, bids=[("100", "7")]), depth(61, 70, 60))
    out = h.snapshot(30, [("100", "1")], [("101", "1")])
    assert h.state == B.ST_BUFFERING and out[-1]["kind"] == KIND_STATUS
    assert list(h.books.needs_snapshot()) == [h.sid]
    h.snapshot(55, [("100", "1")], [("101", "1")])
    assert h.state == B.ST_LIVE and h.books.bids(h.sid) == [(100.0, 7.0)]


def test_removing_an_absent_level_is_normal_and_zero_written_as_0_000_removes():
    h = Harness()
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [("100", "1"), ("99", "1")], [("101", "1")])
    h.feed(depth(21, 30, 20, bids=[("98.5", "0"), ("99", "0.000"), ("100.00", "0.5")]))
    assert h.books.bids(h.sid) == [(100.0, 0.5)] and h.state == B.ST_LIVE


def test_depth_level_records_mark_the_last_level_of_each_event():
    h = Harness(emit_levels=True)
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [("100", "1")], [("101", "1")])
    out = h.feed(depth(21, 30, 20, bids=[("100", "2"), ("99", "1")], asks=[("102", "1")]))
    assert out["kind"].tolist() == [KIND_BOOK, KIND_DEPTH, KIND_DEPTH, KIND_DEPTH]
    assert [bool(f & FLAG_LAST_IN_EVENT) for f in out["flags"][1:]] == [False, False, True]
    assert out["side"][1:].tolist() == [1, 1, -1] and out["px"][1:].tolist() == [100.0, 99.0, 102.0]


def test_books_of_different_symbols_are_independent():
    h = Harness()
    eth = h.table.id_of("ETHUSDT")
    h.feed(depth(10, 20, 5), depth(1000, 1010, 999, sym="ETHUSDT"))
    h.snapshot(15, [("100", "1")], [("101", "1")])
    assert h.state == B.ST_LIVE and h.books.state(eth) == B.ST_BUFFERING
    h.snapshot(1005, [("3000", "1")], [("3001", "1")], sid=eth)
    assert h.books.state(eth) == B.ST_LIVE and h.books.bids(eth) == [(3000.0, 1.0)]


def test_pool_overflow_is_counted_and_the_book_still_recovers():
    h = Harness()
    for k in range(100):      # pool holds 64 events
        h.feed(depth(10 * k + 1, 10 * k + 10, 10 * k))
    assert h.parser.stats[P.ST_POOL_FULL] > 0
    h.snapshot(995, [("100", "1")], [("101", "1")])
    h.feed(depth(1001, 1010, 1000))
    # either synced from what was kept or asking for a new snapshot: never a wrong LIVE book
    assert h.state in (B.ST_LIVE, B.ST_BUFFERING)
    if h.state == B.ST_LIVE:
        assert h.books.st[h.sid, B.S_LAST_U] == 1010


def test_level_capacity_keeps_the_levels_nearest_the_top():
    h = Harness(cap=8)
    h.feed(depth(10, 20, 5))
    h.snapshot(15, [(str(100 - k), "1") for k in range(8)], [("101", "1")])
    h.feed(depth(21, 30, 20, bids=[("100.5", "1"), ("50", "1")]))
    px = [p for p, _ in h.books.bids(h.sid)]
    assert px == [100.5, 100, 99, 98, 97, 96, 95, 94]


@settings(max_examples=40, deadline=None)
@given(hst.lists(hst.lists(hst.tuples(hst.booleans(), hst.integers(1, 40), hst.integers(0, 3)), max_size=6),
                 min_size=1, max_size=30))
def test_live_book_equals_a_dict_model_after_any_sequence_of_level_updates(events):
    h = Harness()
    h.feed(depth(1, 10, 0))
    h.snapshot(5, [], [])
    model = {True: {}, False: {}}
    u = 10
    msgs = []
    for ev in events:
        bids, asks = [], []
        for is_bid, tick, q in ev:
            px = f"{100 + tick * 0.1:.1f}" if not is_bid else f"{100 - tick * 0.1:.1f}"
            (bids if is_bid else asks).append((px, str(q)))
            if q == 0:
                model[is_bid].pop(float(px), None)
            else:
                model[is_bid][float(px)] = float(q)
        msgs.append(depth(u + 3, u + 7, u, bids, asks))
        u += 7
    h.feed(*msgs)
    assert h.state == B.ST_LIVE
    assert h.books.bids(h.sid) == sorted(model[True].items(), reverse=True)
    assert h.books.asks(h.sid) == sorted(model[False].items())
