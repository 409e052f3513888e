"""FeedEngine.ingest (one fused jitted call per read) against the general path (FeedEngine.read_general).

Twin engines get the same bytes, delivered the way FrameReader.read() delivers them, with the same receive stamps;
one ingests, the other runs the general path. Everything they publish and count must be identical; only pub_ts
(stamped when a record is written) and the latency values may differ.
"""
from __future__ import annotations

import logging
import select
import socket
import struct

import numpy as np
import orjson
import pytest

from aegis.feed import book as B
from aegis.core import latency as L
from aegis.core import ring as R
from aegis.feed.conflation import C_PENDING
from aegis.feed.process import FeedConfig, FeedEngine
from aegis.feed.parse import ST_BAD_VALUE, ST_BUFFERED, ST_CONTROL, ST_DEPTH, ST_FRAMES, ST_MALFORMED, ST_QUOTES, \
    ST_RESYNCS, ST_SLOW, ST_TRADES, ST_UNKNOWN_EVENT, ST_UNKNOWN_SYMBOL
from aegis.core.records import FLAG_CONFLATED, FLAG_RESYNC, KIND_BOOK, KIND_DEPTH, KIND_MARK, KIND_QUOTE, KIND_STATUS, \
    KIND_TRADE, MARKET_DTYPE
from aegis.feed.recording import read_recording
from aegis.binance.symbols import SymbolTable
from aegis.core.wait import SLEEP
from aegis.core.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, encode_frame
from aegis.feed.wsframes import ConnectionClosed, FrameReader

SYMBOLS = (("BTCUSDT", "0.10", "0.001"), ("ETHUSDT", "0.01", "0.001"), ("SOLUSDT", "0.01", "1"))
STREAMS = ("bookTicker", "aggTrade", "markPrice")   # no "depth": no snapshot thread; tests load snapshots


@pytest.fixture(scope="module", autouse=True)
def _compiled(compiled_feed):
    """The Feed's kernels, compiled before any test's clock started (tests/conftest.py)."""


# ------------------------------------------------------------------------------------------------ payloads
def quote(sym="BTCUSDT", u=1, bid="100.5", ask="100.6", e=1_700_000_000_000, wrapped=True):
    d = (b'{"e":"bookTicker","u":%d,"s":"%s","b":"%s","B":"1.25","a":"%s","A":"2.5","T":%d,"E":%d}'
         % (u, sym.encode(), bid.encode(), ask.encode(), e, e))
    return b'{"stream":"%s@bookTicker","data":%s}' % (sym.lower().encode(), d) if wrapped else d


def trade(sym="BTCUSDT", a=1, p="100.5", q="0.5", m=True, e=1_700_000_000_000):
    return (b'{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%s","q":"%s","f":1,"l":2,"T":%d,"m":%s}'
            % (e, sym.encode(), a, p.encode(), q.encode(), e, b"true" if m else b"false"))


def mark(sym="BTCUSDT", e=1_700_000_000_000, p="100.55"):
    return (b'{"e":"markPriceUpdate","E":%d,"s":"%s","p":"%s","i":"100.5","P":"100.6","r":"0.0001","T":1}'
            % (e, sym.encode(), p.encode()))


def depth(sym="BTCUSDT", first=10, last=12, prev=9, bids=(("100.5", "1"),), asks=(("100.6", "0"),),
          e=1_700_000_000_000):
    lv = lambda rows: b"[" + b",".join(b'["%s","%s"]' % (p.encode(), q.encode()) for p, q in rows) + b"]"  # noqa
    return (b'{"stream":"%s@depth@0ms","data":{"e":"depthUpdate","E":%d,"T":%d,"s":"%s","U":%d,"u":%d,"pu":%d,'
            b'"b":%s,"a":%s}}' % (sym.lower().encode(), e, e, sym.encode(), first, last, prev, lv(bids), lv(asks)))


def text(payload: bytes) -> bytes:
    return encode_frame(OP_TEXT, payload, masked=False)


def fragmented(payload: bytes, pieces: int = 3) -> bytes:
    k = max(1, len(payload) // pieces)
    parts = [payload[i:i + k] for i in range(0, len(payload), k)]
    out = encode_frame(OP_TEXT, parts[0], masked=False, fin=len(parts) == 1)
    for n, part in enumerate(parts[1:], 2):
        out += encode_frame(OP_CONT, part, masked=False, fin=n == len(parts))
    return out


def ping(payload: bytes = b"hb") -> bytes:
    return encode_frame(OP_PING, payload, masked=False)


def market_stream(n: int, seed: int = 1, u0: int = 1) -> list[bytes]:
    """n data frames of the three hot payloads, several symbols, a few repeats (dedupe) mixed in."""
    rng = np.random.default_rng(seed)
    names = [s for s, _, _ in SYMBOLS]
    frames = []
    for i in range(n):
        sym = names[int(rng.integers(len(names)))]
        u = u0 + i - (1 if rng.random() < 0.05 else 0)           # now and then a repeat of the previous id
        kind = rng.random()
        bid = f"{100 + int(rng.integers(50)) / 10:.1f}"
        if kind < 0.6:
            frames.append(text(quote(sym, u, bid, f"{float(bid) + 0.1:.1f}", wrapped=rng.random() < 0.7)))
        elif kind < 0.9:
            frames.append(text(trade(sym, u, bid, "0.25", bool(rng.random() < 0.5))))
        else:
            frames.append(text(mark(sym, 1_700_000_000_000 + u, bid)))
    return frames


# ---------------------------------------------------------------------------------------------- the twins
class Side:
    """One engine with its ring, reader (over a socketpair: PONGs are really sent) and collected output."""

    def __init__(self, table, cfg, fused: bool, ring_capacity: int, record_dir=None, max_frames=64,
                 buffer_size=1 << 16):
        self.fused = fused
        self.header = np.zeros(R.HEADER_SLOTS, np.int64)
        R.init_header(self.header, ring_capacity, MARKET_DTYPE.itemsize)
        self.records = np.zeros(ring_capacity, MARKET_DTYPE)
        self.lat = L.new_set()
        self.eng = FeedEngine(table, cfg, self.header, self.records, "http://127.0.0.1:9", "ws://127.0.0.1:9",
                              SLEEP, record_dir, None, self.lat)
        self.sock, self.peer = socket.socketpair()
        self.peer.settimeout(2.0)
        self.reader = FrameReader(self.sock, buffer_size=buffer_size, max_frames=max_frames)
        self.out: list[np.ndarray] = []
        self.frames = 0
        self.closed_with = None
        self._dst = np.zeros(ring_capacity, MARKET_DTYPE)

    def recv_into(self, data: bytes, pos: int) -> int:
        """What FrameReader.read() does with bytes from the socket: same buffer handling, bytes supplied."""
        r = self.reader
        if r.head == r.tail:
            r.head = r.tail = 0
        elif len(r.buf) - r.tail < 65536:
            r._make_room()
        k = min(len(r.buf) - r.tail, len(data) - pos)
        r.buf[r.tail:r.tail + k] = np.frombuffer(data, np.uint8, k, pos)
        r.tail += k
        r.bytes_in += k
        return k

    def handle(self, recv: int) -> None:
        try:
            if self.fused:
                self.frames += self.eng.ingest(self.reader, recv)
            else:
                self.frames += self.eng.read_general(self.reader, recv)
        except ConnectionClosed as e:
            self.closed_with = str(e)

    def consume(self, limit: int | None = None) -> None:
        n = R.read_batch(self.header, self.records, self._dst, len(self._dst) if limit is None else limit)
        if n:
            self.out.append(self._dst[:n].copy())

    def published(self) -> np.ndarray:
        recs = np.concatenate(self.out) if self.out else np.zeros(0, MARKET_DTYPE)
        recs = recs.copy()
        recs["pub_ts"] = 0      # stamped at write time: the only field allowed to differ
        return recs

    def pongs(self) -> list[bytes]:
        """Payloads of the PONG / CLOSE frames the reader sent back (client frames are masked)."""
        self.peer.setblocking(False)
        data = b""
        try:
            while True:
                chunk = self.peer.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except BlockingIOError:
            pass
        out = []
        while data:
            op, ln, h = data[0] & 15, data[1] & 127, 2
            if ln == 126:
                ln, h = struct.unpack(">H", data[2:4])[0], 4
            key = data[h:h + 4]
            h += 4
            out.append(bytes([op]) + bytes(c ^ key[i % 4] for i, c in enumerate(data[h:h + ln])))
            data = data[h + ln:]
        return out

    def state(self) -> dict:
        e = self.eng
        b = e.books
        cb = e.conflation
        return {"stats": e.parser.stats.copy(), "last_ids": e.parser.last_ids.copy(), "book_st": b.st.copy(),
                "book_px": b.px.copy(), "book_qty": b.qty.copy(), "pend_hdr": b.pend_hdr.copy(),
                "pend_lv": b.pend_lv.copy(), "pend_ctl": b.pend_ctl.copy(), "conflation_ctl": cb.ctl.copy(),
                "conflation_slots": cb.slots.copy(),
                "ring_header": self.header[[R.H_WRITE, R.H_READ, R.H_DROPPED, R.H_FULL_WAITS, R.H_CONFLATED]],
                "reader": self.reader.pos.copy(), "j": e.j, "frames": self.frames, "closed": self.closed_with,
                "bad": e.bad_count(), "stats_dict": e.stats(), "latency_count": L.count(self.lat[L.STAGE_FEED]),
                "bytes_in": self.reader.bytes_in}

    def close(self):
        self.eng.close()
        self.reader.close()
        self.peer.close()


class Twins:
    def __init__(self, cfg: FeedConfig | None = None, ring_capacity: int = 1 << 14, record_dirs=(None, None),
                 **reader_kw):
        self.table = SymbolTable.build(SYMBOLS)
        cfg = cfg or FeedConfig(streams=STREAMS)
        self.fused = Side(self.table, cfg, True, ring_capacity, record_dirs[0], **reader_kw)
        self.general = Side(self.table, cfg, False, ring_capacity, record_dirs[1], **reader_kw)
        self.recv = 1_000_000
        self.pongs: list[bytes] = []

    @property
    def sides(self):
        return self.fused, self.general

    def feed(self, data: bytes, read_sizes=None) -> None:
        """Deliver data in reads of the given sizes (default: as much as the buffer takes), each read handled
        with its own receive stamp, identically on both sides."""
        sizes = iter(read_sizes or ())
        pos = 0
        while pos < len(data):
            want = next(sizes, None)
            end = len(data) if want is None else min(len(data), pos + want)
            k = 0
            for side in self.sides:
                k = side.recv_into(data[:end], pos)
            pos += k
            self.recv += 1000
            for side in self.sides:
                side.handle(self.recv)

    def consume(self, limit=None):
        for side in self.sides:
            side.consume(limit)

    def load_snapshot(self, sym: int, last_id: int, bids, asks) -> None:
        """What FeedEngine._snapshots does with a REST answer, on both sides."""
        for side in self.sides:
            e = side.eng
            e.flush()
            b = e.books
            bids_a, asks_a = np.array(bids, np.float64).reshape(-1, 2), np.array(asks, np.float64).reshape(-1, 2)
            out = np.zeros(b.records_bound(len(bids_a) + len(asks_a)), MARKET_DTYPE)
            n = B.apply_snapshot(b.st, b.px, b.qty, b.pend_hdr, b.pend_lv, b.pend_ctl, sym, last_id, bids_a, asks_a,
                                 5, 6, out, 0, e.cfg.depth_levels)
            e._publish(out, n, measure=False)

    def assert_identical(self) -> np.ndarray:
        self.consume()
        a, b = self.fused.published(), self.general.published()
        assert len(a) == len(b)
        assert a.tobytes() == b.tobytes()
        sa, sb = self.fused.state(), self.general.state()
        assert sa.keys() == sb.keys()
        for k in sa:
            va, vb = sa[k], sb[k]
            if isinstance(va, np.ndarray):
                assert np.array_equal(va, vb), k
            else:
                assert va == vb, k
        self.pongs = self.fused.pongs()
        assert self.pongs == self.general.pongs()
        return a

    def close(self):
        for side in self.sides:
            side.close()


@pytest.fixture()
def twins():
    t = Twins()
    yield t
    t.close()


# ---------------------------------------------------------------------------------------------------- tests
def test_plain_market_frames_are_published_by_the_kernel_alone(twins, monkeypatch):
    def no_python(*a):
        raise AssertionError("the general path ran for plain data frames")
    monkeypatch.setattr(twins.fused.eng, "_ingest_general", no_python)
    twins.feed(b"".join(market_stream(40)))
    recs = twins.assert_identical()
    assert twins.fused.frames == 40 and len(recs) > 30
    assert {KIND_QUOTE, KIND_TRADE, KIND_MARK} <= set(recs["kind"].tolist())
    assert (np.diff(recs["seq"]) == 1).all()
    assert L.count(twins.fused.lat[L.STAGE_FEED]) == len(recs)    # one recv -> publish value per record


def test_one_read_per_frame_gives_the_same_records_counters_and_histogram_counts(twins):
    frames = market_stream(300, seed=2)
    for f in frames:
        twins.feed(f)
    recs = twins.assert_identical()
    assert twins.fused.eng.parser.stats[ST_FRAMES] == 300
    assert twins.fused.eng.parser.stats[ST_QUOTES] + twins.fused.eng.parser.stats[ST_TRADES] > 200
    assert len(set(recs["recv_ts"].tolist())) == len(recs)     # each record carries its own read's stamp


def test_frames_cut_at_every_read_boundary_are_completed_by_later_reads(twins):
    data = b"".join(market_stream(120, seed=3))
    sizes = list(np.random.default_rng(4).integers(1, 300, 2000))
    twins.feed(data, read_sizes=sizes)
    twins.assert_identical()
    assert twins.fused.eng.parser.stats[ST_FRAMES] == 120
    assert twins.fused.reader.head == twins.fused.reader.tail


def test_reads_holding_more_frames_than_the_frame_table_loop_in_batches():
    t = Twins(max_frames=8)
    try:
        t.feed(b"".join(market_stream(203, seed=5)))
        t.assert_identical()
        assert t.fused.frames == 203 and t.fused.eng.parser.stats[ST_FRAMES] == 203
    finally:
        t.close()


def test_pings_are_answered_identically_and_data_around_them_published(twins):
    frames = market_stream(30, seed=6)
    data = b"".join(frames[:10]) + ping(b"p1") + b"".join(frames[10:20]) + ping(b"") + \
        encode_frame(OP_PONG, b"unsolicited", masked=False) + b"".join(frames[20:])
    twins.feed(data)
    twins.feed(ping(b"alone"))
    recs = twins.assert_identical()
    assert len(recs) > 20
    assert twins.pongs == [bytes([OP_PONG]) + p for p in (b"p1", b"", b"alone")]


def test_ping_payloads_come_back_as_pongs_on_the_fused_path(twins):
    twins.feed(b"".join(market_stream(5, seed=7)) + ping(b"abc") + ping(b"xyz"))
    assert twins.fused.pongs() == [bytes([OP_PONG]) + b"abc", bytes([OP_PONG]) + b"xyz"]


def test_fragmented_messages_are_reassembled_and_published_in_the_same_order(twins):
    frames = market_stream(12, seed=8)
    data = b"".join(frames[:4]) + fragmented(quote("ETHUSDT", 10_000, "3000.5", "3000.6"), 4) + \
        b"".join(frames[4:8]) + fragmented(trade("SOLUSDT", 10_001), 2) + b"".join(frames[8:])
    twins.feed(data)
    twins.feed(fragmented(mark("BTCUSDT", 1_800_000_000_000), 3), read_sizes=[7, 30, 5])
    recs = twins.assert_identical()
    assert 10_000 in recs["last_id"].tolist() and 10_001 in recs["last_id"].tolist()


def test_slow_path_payloads_control_replies_and_bad_messages_give_the_same_counters(twins, caplog):
    arr = orjson.dumps({"stream": "!markPrice@arr", "data": [orjson.loads(mark("BTCUSDT", 1_750_000_000_000)),
                                                             orjson.loads(mark("ETHUSDT", 1_750_000_000_001))]})
    escaped = quote("BTCUSDT", 20_000).replace(b'"s":"BTCUSDT"', b'"s":"\\u0042TCUSDT"')
    odd = [b'{"result":null,"id":1}', b'{"error":{"code":2,"msg":"bad"},"id":2}', arr, escaped,
           b'{"e":"bookTicker","u":,"s":"BTCUSDT"}', b"not json", quote("NOPEUSDT", 5), quote(bid="-1"),
           b'{"e":"kline","s":"BTCUSDT","E":1}', trade(q="1e999"), b"[1,2]", b'{"data":7}', b"\xff\xfe"]
    frames = market_stream(len(odd) * 3, seed=9, u0=100)
    data = b"".join(frames[k] + text(odd[k // 3]) if k % 3 == 0 else frames[k] for k in range(len(frames)))
    with caplog.at_level(logging.WARNING, logger="aegis.feed.process"):
        twins.feed(data, read_sizes=[257] * 40)
    twins.assert_identical()
    st = twins.fused.eng.parser.stats
    for cat in (ST_MALFORMED, ST_UNKNOWN_SYMBOL, ST_BAD_VALUE, ST_UNKNOWN_EVENT, ST_CONTROL, ST_SLOW):
        assert st[cat] > 0, cat
    assert 20_000 in twins.fused.published()["last_id"].tolist()    # the \\u-escaped symbol went via orjson
    lines = [r.getMessage() for r in caplog.records]
    assert sum("malformed message skipped" in ln for ln in lines) >= 2     # both engines reported


def test_problem_log_lines_of_the_fused_path_match_the_general_path(caplog):
    lines = {}
    for fused in (True, False):
        t = Twins()
        side = t.fused if fused else t.general
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aegis.feed.process"):
            data = b"".join(market_stream(5, seed=10)) + text(b'{"e":"bookTicker","u":,"s":"X"}') + \
                text(quote("NOPEUSDT", 3)) + b"".join(market_stream(5, seed=11, u0=50))
            side.recv_into(data, 0)
            side.handle(7)
        lines[fused] = [r.getMessage() for r in caplog.records]
        t.close()
    assert lines[True] == lines[False]
    assert len(lines[True]) == 2 and '"u":,' in lines[True][0] and "NOPEUSDT" in lines[True][1]


def test_depth_updates_buffer_sync_apply_and_resync_identically():
    t = Twins(FeedConfig(streams=STREAMS, depth_levels=True))
    try:
        # buffered before the snapshot, replayed by it, then live; a gap resyncs; a duplicate is skipped
        t.feed(text(depth(first=95, last=101, prev=90)) + text(depth(first=102, last=105, prev=101)))
        t.load_snapshot(0, 100, [(100.5, 1.0), (100.4, 2.0)], [(100.6, 1.0), (100.7, 3.0)])
        data = text(depth(first=106, last=110, prev=105, bids=(("100.5", "0"), ("100.45", "4")))) + \
            b"".join(market_stream(6, seed=12)) + \
            text(depth(first=111, last=111, prev=110, asks=(("100.6", "2"),))) + \
            text(depth(first=108, last=111, prev=105)) + \
            text(depth(first=120, last=125, prev=119)) + \
            text(depth(sym="ETHUSDT", first=1, last=2, prev=0))
        t.feed(data)
        recs = t.assert_identical()
        st = t.fused.eng.parser.stats
        assert st[ST_DEPTH] == 7 and st[ST_RESYNCS] == 1 and st[ST_BUFFERED] >= 3
        kinds = recs["kind"].tolist()
        assert KIND_BOOK in kinds and KIND_DEPTH in kinds and KIND_STATUS in kinds
        assert (recs[recs["kind"] == KIND_STATUS]["flags"] & FLAG_RESYNC).all()
        assert t.fused.eng.books.state(0) == B.ST_BUFFERING
        t.load_snapshot(0, 124, [(100.5, 1.0)], [(100.6, 1.0)])
        t.feed(text(depth(first=126, last=127, prev=125)))
        t.assert_identical()
        assert t.fused.eng.books.state(0) == B.ST_LIVE
    finally:
        t.close()


def test_full_ring_conflates_quotes_keeps_trades_and_drains_in_order():
    t = Twins(ring_capacity=R.MIN_CAPACITY)
    try:
        # nobody reads: the ring fills and the FIFO conflates quotes (and holds fewer trades than its capacity,
        # so the Feed never blocks here)
        frames = market_stream(R.MIN_CAPACITY + 1500, seed=13)
        for k in range(0, len(frames), 97):
            t.feed(b"".join(frames[k:k + 97]))
        st = t.fused.state()
        assert st["conflation_ctl"][C_PENDING] > 0 and st["ring_header"][4] > 0     # pending, H_CONFLATED
        t.assert_identical()
        t.feed(b"".join(market_stream(50, seed=14, u0=10 ** 6)))     # behind the backlog
        for _ in range(20):
            t.consume(limit=700)
            t.feed(text(quote("SOLUSDT", u=1)))       # a duplicate, no record: the read only drains the backlog
            t.assert_identical()
            if t.fused.eng.conflation.pending == 0:
                break
        assert t.fused.eng.conflation.pending == 0
        recs = t.assert_identical()
        assert (recs["flags"] & FLAG_CONFLATED).any()
        assert (np.diff(recs["seq"]) == 1).all()
        assert (recs["last_id"] >= 10 ** 6).sum() > 30 and recs["last_id"][-1] >= 10 ** 6
    finally:
        t.close()


def test_protocol_error_closes_after_publishing_the_reads_before_it(twins):
    good = b"".join(market_stream(10, seed=15))
    twins.feed(good)
    bad = bytes([0x80 | 0x3, 2]) + b"xx"              # reserved opcode 3
    twins.feed(b"".join(market_stream(5, seed=16, u0=500)) + bad)
    twins.assert_identical()
    assert twins.fused.closed_with and "protocol error" in twins.fused.closed_with
    assert twins.fused.reader.closed
    assert twins.pongs == [bytes([OP_CLOSE]) + struct.pack(">H", 1002)]


def test_close_frame_publishes_the_frames_of_its_read_then_reports_the_connection_closed(twins):
    data = b"".join(market_stream(8, seed=17)) + encode_frame(OP_CLOSE, struct.pack(">H", 1001), masked=False) + \
        b"".join(market_stream(3, seed=18, u0=900))
    twins.feed(data)
    recs = twins.assert_identical()
    assert twins.fused.closed_with and "1001" in twins.fused.closed_with
    assert twins.fused.eng.parser.stats[ST_FRAMES] == 11 and len(recs) > 0


def test_binary_frames_are_parsed_once_by_either_path(twins):
    msgs = [quote("BTCUSDT", 70_000 + k) for k in range(5)]
    data = b"".join(encode_frame(OP_TEXT, m, masked=False) for m in msgs[:3]) + \
        encode_frame(OP_BINARY, msgs[3], masked=False) + encode_frame(OP_TEXT, msgs[4], masked=False) + ping(b"m")
    twins.feed(data, read_sizes=[50, 100, 400])
    recs = twins.assert_identical()
    assert recs["last_id"].tolist() == [70_000 + k for k in range(5)]


def test_a_masked_server_frame_fails_the_connection_after_the_reads_before_it(twins):
    """RFC 6455 5.1: a client must close the connection when a server frame is masked."""
    twins.feed(b"".join(market_stream(10, seed=21)))
    twins.feed(b"".join(market_stream(5, seed=22, u0=500)) + encode_frame(OP_TEXT, quote("BTCUSDT", 9), masked=True))
    twins.assert_identical()
    assert twins.fused.closed_with and "masked the wrong way" in twins.fused.closed_with
    assert twins.fused.reader.closed
    assert twins.pongs == [bytes([OP_CLOSE]) + struct.pack(">H", 1002)]


def test_a_frame_larger_than_the_reader_buffer_grows_it_and_keeps_the_fused_path():
    t = Twins(buffer_size=1 << 16)
    try:
        big = orjson.dumps({"stream": "btcusdt@bookTicker", "data": orjson.loads(quote(u=5, wrapped=False)),
                            "pad": "x" * 150_000})
        t.feed(b"".join(market_stream(3, seed=19)) + text(big) + b"".join(market_stream(3, seed=20, u0=40)))
        recs = t.assert_identical()
        assert len(t.fused.reader.buf) > 1 << 16 and 5 in recs["last_id"].tolist()
        ty = t.fused.reader.state._type
        assert ty is t.fused.eng._reader_type     # the rebuilt state keeps the numba type: entry stays valid
    finally:
        t.close()


def test_recording_writes_the_same_payloads_from_either_path(tmp_path):
    da, db = tmp_path / "fused", tmp_path / "general"
    t = Twins(record_dirs=(str(da), str(db)), max_frames=16)
    try:
        data = b"".join(market_stream(60, seed=21)) + ping(b"r") + fragmented(quote("ETHUSDT", 99_999), 3)
        t.feed(data, read_sizes=[1000] * 20)
        t.assert_identical()
    finally:
        t.close()
    a, b = list(read_recording(da)), list(read_recording(db))
    assert a == b and len(a) == 60      # the data frames (a reassembled fragment is not recorded, either way)


def test_frames_written_through_a_real_socket_are_handled_by_feed_read():
    """FeedEngine._read (the poll loop's path) over a connected socket: receive, ingest, bookkeeping."""
    from aegis.feed.process import Connection
    t = Twins()
    try:
        side = t.fused
        c = Connection("public", [("btcusdt@bookTicker", 0)], "ws://127.0.0.1:9")
        c.reader = side.reader
        data = b"".join(market_stream(25, seed=22))
        side.peer.sendall(data)
        got = 0
        for _ in range(200):
            select.select([side.sock], [], [], 0.05)
            got += side.eng._read(c)
            if got >= len(data):
                break
        assert got == len(data) and c.last_data > 0
        side.consume()
        assert side.eng.parser.stats[ST_FRAMES] == 25 and len(side.published()) > 15
    finally:
        t.close()
