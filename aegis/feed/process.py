"""Feed process: Binance USD-M market data in, ring records out.

Sources: the exchange (or the embedded venue) over websocket combined streams -- the default -- or the built-in
synthetic generator (`source = "synthetic"`, used to measure the ring and the Brain without a network).

Websocket source, per poll of every connection:
  recv_into (one big buffer, receive timestamp taken when it returns) -> jitted frame split (aegis.feed.wsframes) ->
  jitted field extraction + order-book update (aegis.feed.parse, aegis.feed.book) -> conflation buffer -> ring
  (aegis.feed.conflation) -> recv -> publish histogram. In the common case (data frames of known payloads only) all of
  that after the socket read is ONE jitted call (ingest_frames); control frames, fragments, control replies and
  odd payloads stop it, and the general path (Python + the same kernels) carries on from there.

Connections: streams are routed as Binance requires since 2026 (/public: bookTicker + depth, /market: aggTrade +
markPrice), split across connections by the 1024-streams-per-connection limit. A dropped or stalled connection
(no data for `stall_timeout` s) is closed and reopened after an exponential backoff with full jitter, its streams
resubscribed and its symbols' books resynced. Before Binance's 24 h cut a connection is rotated make-before-break:
a successor with the same streams opens, both run side by side for `rotate_overlap` s (duplicates dropped by
update id: quotes by `u`, trades by aggregate id, marks by event time, depth by the book's `u` chain), then the
old one is closed -- so the rotation neither loses nor repeats an update.

Input is never trusted: malformed frames, unknown fields or events, unknown symbols, NaN/negative/huge values are
counted (control block + log) and skipped with a rate-limited log line; the Feed does not crash on input.
"""
from __future__ import annotations

import logging
import queue
import random
import select
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass

import numpy as np
import orjson
from numba.experimental import structref

from aegis.core.jit import njit
from aegis.feed import book
from aegis.feed import conflation
from aegis.core import control
from aegis.core import latency
from aegis.core.memory import prefault
from aegis.core.ratelog import RateLimitedLog
from aegis.feed import parse
from aegis.core import ring
from aegis.feed import synthetic
from aegis.core.atomics import store_release
from aegis.core.borrow import borrowed
from aegis.core.bundle import BundleType
from aegis.feed.book import BookState
from aegis.binance.client import VENUE_URLS
from aegis.core.clock import now_ns, py_now_ns
from aegis.feed.conflation import ConflationBuffer
from aegis.core.control import (R_CHECKSUM, R_FEED_BAD, R_FEED_BYTES, R_FEED_GAPS, R_FEED_MSGS, R_FEED_STALLS,
                           R_FEED_RECONNECTS, R_FEED_RESYNCS, R_IDLE, R_RECORDS, R_STATE, ROLE_FEED, ROLE_SLOTS,
                           ST_RUNNING)
from aegis.feed.parse import (LEVELS_CAP, LI_MARK, LI_QUOTE, LI_TRADE, PROBLEMS, ST_BAD_VALUE, ST_CONTROL,
                         ST_DUPLICATES, ST_FRAMES, ST_LAST_BAD, ST_MALFORMED, ST_POOL_FULL, ST_RESYNCS,
                         ST_UNKNOWN_EVENT, ST_UNKNOWN_SYMBOL, Parser)
from aegis.core.startup import ProcessSpec, enter, freeze_gc, receive_rest
from aegis.core.records import FLAG_RESYNC, KIND_STATUS, MARKET_DTYPE
from aegis.core.ring import H_CAPACITY as R_H_CAPACITY
from aegis.core.ring import H_WRITE as R_H_WRITE
from aegis.core.ring import POLICIES
from aegis.binance.symbols import SymbolTable, discover
from aegis.core.wait import BUSY_SPIN, SPIN_LIMIT, idle
from aegis.feed.wsframes import (FR_SPECIAL, POS_HEAD, POS_N, POS_SPECIAL, POS_TAIL, SPLIT_OK, ConnectionClosed,
                            connect, split_server_frames)

log = logging.getLogger("aegis.feed.process")

BATCH = 256
BEAT_NS = 50_000_000
EPOCH_OFFSET_NS = 0  # synthetic exchange time = monotonic clock (no wall clock needed)

STREAM_KINDS = ("bookTicker", "aggTrade", "depth", "markPrice")
ROUTE_OF = {"bookTicker": "public", "depth": "public", "aggTrade": "market", "markPrice": "market"}
MAX_STREAMS_PER_CONNECTION = 1024   # Binance limit since 2025-07-02 (docs/binance-notes.md, Stream connection rules)
URL_STREAMS_MAX_CHARS = 2000        # beyond that, SUBSCRIBE messages (long URLs are refused by proxies)
SUBSCRIBE_CHUNK = 100
SUBSCRIBE_SPACING_S = 0.25          # <= 4 control messages/s: under the 10 incoming messages/s limit


@dataclass(frozen=True)
class FeedConfig:
    """The [feed] section. Every key is optional; unknown keys are an error."""
    streams: tuple[str, ...] = STREAM_KINDS    # subset of bookTicker, aggTrade, depth, markPrice
    depth_speed: str = "100ms"                 # "", "0ms", "100ms", "500ms" (the @depth stream suffix)
    mark_speed: str = "1s"                     # "" (3 s) or "1s"
    depth_levels: bool = False                 # also publish one KIND_DEPTH record per changed level
    book_levels: int = 1024                    # levels kept per side
    snapshot_limit: int = 1000                 # GET /fapi/v1/depth limit
    snapshot_timeout: float = 5.0
    snapshot_interval: float = 1.0             # min seconds between two snapshot requests of one symbol
    snapshot_weight_per_minute: float = 1200.0  # REST weight budget of the snapshots (Binance: 2400/min/IP)
    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    stall_timeout: float = 10.0                # no data on a connection for that long -> reconnect
    rotate_after: float = 23 * 3600.0          # make-before-break rotation before the 24 h cut
    rotate_overlap: float = 5.0                # seconds both connections run side by side
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 3.0               # < the supervisor's 5 s heartbeat timeout (a handshake blocks)
    discovery_timeout: float = 5.0
    buffer_bytes: int = 4 << 20
    conflation_capacity: int = 1 << 16
    max_price: float = 1e9
    max_qty: float = 1e13
    dedupe: bool = True
    log_interval: float = 10.0                 # at most one log line per problem kind per interval
    rest_url: str = ""                         # override the venue's REST base URL
    ws_url: str = ""                           # override the venue's websocket market base URL
    record_max_bytes: int = 256 << 20
    synthetic_rate: int = 200_000              # synthetic source: records/s (0 = as fast as possible)
    seed: int = 1

    @classmethod
    def from_section(cls, section: dict | None) -> "FeedConfig":
        from aegis.core import config as C
        checks = {
            "streams": C.Check(lambda v: bool(v) and all(x in STREAM_KINDS for x in v),
                               f"a non-empty subset of {', '.join(STREAM_KINDS)}"),
            "depth_speed": C.one_of("", "0ms", "100ms", "500ms"), "mark_speed": C.one_of("", "1s"),
            "snapshot_limit": C.one_of(5, 10, 20, 50, 100, 500, 1000),
            "max_streams_per_connection": C.between(1, MAX_STREAMS_PER_CONNECTION),
            "rotate_overlap": C.NON_NEGATIVE, "snapshot_interval": C.NON_NEGATIVE,
            "buffer_bytes": C.at_least(1 << 16), "conflation_capacity": C.at_least(1024),
        }
        for k in ("stall_timeout", "rotate_after", "backoff_initial", "backoff_max", "connect_timeout",
                  "snapshot_timeout", "discovery_timeout", "log_interval", "max_price", "max_qty",
                  "snapshot_weight_per_minute"):
            checks[k] = C.POSITIVE
        cfg = C.load_section(cls, "feed", section, checks)
        if cfg.book_levels < cfg.snapshot_limit:
            raise C.section_error("feed", "book_levels", f">= snapshot_limit ({cfg.snapshot_limit})", cfg.book_levels)
        return cfg


def stream_names(table: SymbolTable, cfg: FeedConfig) -> dict[str, list[tuple[str, int]]]:
    """route -> [(stream name, symbol id)] for every subscribed stream."""
    out: dict[str, list[tuple[str, int]]] = {"public": [], "market": []}
    for s in table:
        p = s.stream
        for kind in cfg.streams:
            if kind == "depth":
                name = f"{p}@depth@{cfg.depth_speed}" if cfg.depth_speed else f"{p}@depth"
            elif kind == "markPrice":
                name = f"{p}@markPrice@{cfg.mark_speed}" if cfg.mark_speed else f"{p}@markPrice"
            else:
                name = f"{p}@{kind}"
            out[ROUTE_OF[kind]].append((name, s.id))
    return out


def plan_connections(table: SymbolTable, cfg: FeedConfig) -> list[tuple[str, list[tuple[str, int]]]]:
    """[(route, streams)] with at most max_streams_per_connection streams each, one route per connection."""
    plan = []
    for route, streams in stream_names(table, cfg).items():
        for i in range(0, len(streams), cfg.max_streams_per_connection):
            plan.append((route, streams[i:i + cfg.max_streams_per_connection]))
    return plan


def quote_stream(name: str) -> str:
    return urllib.parse.quote(name, safe="@_.-!")


class Connection:
    """One websocket connection carrying a fixed list of streams of one route."""

    _ids = 0

    def __init__(self, route: str, streams: list[tuple[str, int]], ws_base: str):
        Connection._ids += 1
        self.id = Connection._ids
        self.route = route
        self.streams = streams
        self.symbols = sorted({sid for _, sid in streams})
        self.ws_base = ws_base.rstrip("/")
        self.reader = None
        self.opened_at = 0.0
        self.last_data = 0.0
        self.first_data = 0.0
        self.pending_subs: list[list[str]] = []
        self.next_sub_at = 0.0
        self.sub_id = 0
        self.backoff = 0.0
        self.next_attempt = 0.0
        self.failures = 0
        self.successor: Connection | None = None
        self.retiring_at = 0.0

    def url_and_subscriptions(self) -> tuple[str, list[list[str]]]:
        names = [n for n, _ in self.streams]
        in_url, chars = [], 0
        for n in names:
            q = quote_stream(n)
            if in_url and chars + len(q) + 1 > URL_STREAMS_MAX_CHARS:
                break
            in_url.append(q)
            chars += len(q) + 1
        rest = names[len(in_url):]
        subs = [rest[i:i + SUBSCRIBE_CHUNK] for i in range(0, len(rest), SUBSCRIBE_CHUNK)]
        return f"{self.ws_base}/{self.route}/stream?streams={'/'.join(in_url)}", subs

    @property
    def open(self) -> bool:
        return self.reader is not None and not self.reader.closed


@njit(cache=True, nogil=True)
def store_slots(ctl, slots, values):
    """Release-store several control-block slots (the status line reads them from another process)."""
    for k in range(slots.shape[0]):
        store_release(ctl, slots[k], values[k])


@njit(cache=True, nogil=True)
def record_feed_latency(hset, header, records, w0, w1):
    """recv -> publish latency of the ring slots [w0, w1) this process just wrote (only it writes them)."""
    mask = header[R_H_CAPACITY] - 1
    for w in range(w0, w1):
        r = records[w & mask]
        latency.record_span(hset, latency.STAGE_FEED, r.recv_ts, r.pub_ts)


@njit(cache=True, nogil=True)
def checksum_range(chk, s0, s1):
    for s in range(s0, s1):
        chk = chk * 31 + s + 1
    return chk


# ------------------------------------------------------------------------------------------ fused ingest
# One read of one connection costs one Python -> jitted call in the common case: split, parse, conflation push /
# ring publish and the recv -> publish histogram all run in ingest_frames. Whatever needs Python (control frames,
# fragments, payloads for orjson, recording, a problem to log, a protocol error) makes the kernel stop at a point
# where FeedEngine's general path can carry on: both paths make the same kernel calls on the same state in the same
# order, so records, counters, conflation and books come out identical.

# FeedEngine.io slots
IO_J = 0            # records waiting in parser.out (FeedEngine.j)
IO_FLUSH_AT = 1     # parser.out fill level that forces a flush
IO_WAIT = 2         # wait strategy of a blocked conflation push
IO_LATENCY = 3      # 1: record recv -> publish into the histogram set
IO_ONE_BATCH = 4    # 1: stop after every batch (the recorder writes each batch's payloads from Python)
IO_BAD_SEEN = 5     # problem count at the last check (FeedEngine logs a sample when it moves)
IO_STOP = 6         # where the kernel stopped (STOP_*)
IO_FRAMES = 7       # frames split by the call that stopped
IO_I = 8            # STOP_SLOW: next frame to parse
IO_NS = 9           # STOP_SLOW: messages listed in parser.slow
IO_BAD_CHANGED = 10  # STOP_BATCH: the problem count moved
IO_COUNT = 16

STOP_SPLIT = 1      # protocol error: nothing of the failing split committed; frames() raises it again
STOP_SPECIAL = 2    # batch split (reader cursors committed) and has control frames or fragments: nothing parsed
STOP_SLOW = 3       # parse stopped after a call that listed slow-path messages (nothing flushed since)
STOP_BATCH = 4      # batch published; recording or a problem log remains


@structref.register
class IngestStateType(BundleType):
    """Numba type of IngestState: every array the Feed's hot path touches, as one argument."""


class IngestState(structref.StructRefProxy):
    """FeedEngine's parser, book, conflation, ring and histogram arrays bundled: one StructRef crosses the Python ->
    jitted boundary for ~0.1 us where the ~28 arrays passed one by one cost ~1.5 us per call."""


structref.define_proxy(IngestState, IngestStateType,
                       ["names", "name_off", "htab", "out", "bk_st", "bk_px", "bk_qty", "pend_hdr", "pend_lv",
                        "pend_ctl", "lv", "last_ids", "fs", "stats", "params", "slow", "header", "records", "pend",
                        "cctl", "slots", "beat_ctl", "hset", "io"])


@njit(cache=True)
def make_ingest_state(names, name_off, htab, out, bk_st, bk_px, bk_qty, pend_hdr, pend_lv, pend_ctl, lv, last_ids,
                      fs, stats, params, slow, header, records, pend, cctl, slots, beat_ctl, hset, io):
    # a cached constructor: the proxy's own one is compiled afresh in every process
    return IngestState(names, name_off, htab, out, bk_st, bk_px, bk_qty, pend_hdr, pend_lv, pend_ctl, lv, last_ids,
                       fs, stats, params, slow, header, records, pend, cctl, slots, beat_ctl, hset, io)


@njit(cache=True, nogil=True)
def _flush_records(header, records, out, j, pend, cctl, slots, wait, beat_ctl, hset, measure):
    """FeedEngine.flush with j records in out."""
    w0 = header[R_H_WRITE]
    if j:
        conflation.push(header, records, out, j, pend, cctl, slots, wait, beat_ctl, ROLE_FEED)
    elif cctl[conflation.C_PENDING]:
        conflation.drain(header, records, pend, cctl)
    if measure:
        record_feed_latency(hset, header, records, w0, header[R_H_WRITE])


@njit(cache=True, nogil=True)
def ingest_frames(k, fr, recv):
    """Split, parse and publish the frames received in reader fr (FrameReader.state), recv = receive timestamp.

    Returns the frames handled when the read needed no Python at all, else -1 with k.io[IO_STOP] telling where
    FeedEngine's general path takes over (see STOP_*)."""
    # every field read once, as a borrowed view: k and fr own the arrays for the whole call
    io = borrowed(k.io)
    buf, offs, lens = borrowed(fr.buf), borrowed(fr.offs), borrowed(fr.lens)
    ops, flags, pos = borrowed(fr.ops), borrowed(fr.flags), borrowed(fr.pos)
    names, name_off, htab, out = borrowed(k.names), borrowed(k.name_off), borrowed(k.htab), borrowed(k.out)
    bk_st, bk_px, bk_qty = borrowed(k.bk_st), borrowed(k.bk_px), borrowed(k.bk_qty)
    pend_hdr, pend_lv, pend_ctl = borrowed(k.pend_hdr), borrowed(k.pend_lv), borrowed(k.pend_ctl)
    lv, last_ids, fs = borrowed(k.lv), borrowed(k.last_ids), borrowed(k.fs)
    stats, params, slow = borrowed(k.stats), borrowed(k.params), borrowed(k.slow)
    header, records, pend = borrowed(k.header), borrowed(k.records), borrowed(k.pend)
    cctl, slots, beat_ctl, hset = borrowed(k.cctl), borrowed(k.slots), borrowed(k.beat_ctl), borrowed(k.hset)
    wait = io[IO_WAIT]
    measure = io[IO_LATENCY] != 0
    flush_at = io[IO_FLUSH_AT]
    max_frames = offs.shape[0]
    total = 0
    while True:
        n, end, special, status = split_server_frames(buf, pos[POS_HEAD], pos[POS_TAIL], offs, lens, ops, flags,
                                                      max_frames)
        if status != SPLIT_OK:
            io[IO_STOP] = STOP_SPLIT
            io[IO_FRAMES] = total
            return -1
        pos[POS_HEAD] = end
        pos[POS_N] = n
        pos[POS_SPECIAL] = special
        if n == 0:
            return total
        total += n
        io[IO_FRAMES] = total
        if special:
            io[IO_STOP] = STOP_SPECIAL
            return -1
        i = 0
        j = io[IO_J]
        while i < n:
            i, j, ns = parse.parse_frames(buf, offs, lens, flags, i, n, recv, names, name_off, htab, out, j, bk_st,
                                          bk_px, bk_qty, pend_hdr, pend_lv, pend_ctl, lv, last_ids, fs, stats, params,
                                          slow, True)
            if ns:
                io[IO_J] = j
                io[IO_I] = i
                io[IO_NS] = ns
                io[IO_STOP] = STOP_SLOW
                return -1
            if j > flush_at or i < n:
                _flush_records(header, records, out, j, pend, cctl, slots, wait, beat_ctl, hset, measure)
                j = 0
        _flush_records(header, records, out, j, pend, cctl, slots, wait, beat_ctl, hset, measure)
        io[IO_J] = 0
        bad = stats[ST_MALFORMED] + stats[ST_UNKNOWN_SYMBOL] + stats[ST_BAD_VALUE] + stats[ST_UNKNOWN_EVENT]
        changed = bad != io[IO_BAD_SEEN]
        if changed:
            io[IO_BAD_SEEN] = bad
        if changed or io[IO_ONE_BATCH]:
            io[IO_BAD_CHANGED] = 1 if changed else 0
            io[IO_STOP] = STOP_BATCH
            return -1
        if n < max_frames:
            return total


def entry_for(dispatcher, *args):
    """The compiled entry of `dispatcher` for the numba types of args (compiled or loaded from the cache now).

    Calling it skips the dispatcher's per-call type resolution of every argument, which for a StructRef goes through
    Python (~0.5 us a call). Only for calls with arguments of exactly those numba types: the entry unboxes blindly."""
    import numba

    return dispatcher.compile(tuple(numba.typeof(a) for a in args))


# GET /fapi/v1/depth (Binance docs: "Order Book")
DEPTH_WEIGHT = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}


class SnapshotFetcher:
    """Background thread doing the blocking REST depth snapshots, so the read loop never waits on HTTP.

    Requests are paced by a token bucket of `weight_per_minute` request weight (Binance allows 2400/min per IP
    and bans IPs that keep exceeding it; 300 books x weight 20 would be 6000 at once), and a 429/418 answer
    pauses the thread for its Retry-After (or 10 s)."""

    def __init__(self, rest_url: str, limit: int, timeout: float, weight_per_minute: float = 1200.0,
                 ledger=None):
        self.rest_url = rest_url.rstrip("/")
        # aegis.binance.weight.WeightLedger of a venue shared across runs: the snapshots of this run and of the runs
        # just before it share one minute's budget (a crash loop waits instead of getting the IP banned)
        self.ledger = ledger
        self.weight_per_minute = weight_per_minute
        self.limit = limit
        self.timeout = timeout
        self.weight = DEPTH_WEIGHT.get(limit, 20)
        self.rate = weight_per_minute / 60.0
        self.burst = max(float(self.weight), weight_per_minute / 4.0)
        self._tokens = self.burst
        self._last = time.monotonic()
        self.requests: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aegis-feed-snapshots", daemon=True)
        self._thread.start()

    def request(self, sym: int, name: str) -> None:
        self.requests.put((sym, name))

    def _run(self) -> None:
        import requests

        with requests.Session() as s:
            s.trust_env = not self.rest_url.startswith(("http://127.", "http://localhost"))
            while not self._stop.is_set():
                try:
                    sym, name = self.requests.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._pace()
                if self.ledger is not None:
                    from aegis.binance.weight import LIMIT
                    # the snapshots' budget is a share of Binance's limit; a venue with a lower limit scales it
                    self.ledger.wait_for(self.weight, share=min(1.0, self.weight_per_minute / LIMIT),
                                         stop=self._stop.is_set)
                    if self._stop.is_set():
                        break
                try:
                    r = s.get(self.rest_url + "/fapi/v1/depth", params={"symbol": name, "limit": self.limit},
                              timeout=self.timeout)
                    if self.ledger is not None:
                        self.ledger.note_response(r)
                    if r.status_code in (418, 429):
                        try:
                            pause = float(r.headers.get("Retry-After", 10))
                        except ValueError:
                            pause = 10.0
                        self._stop.wait(min(max(pause, 1.0), 120.0))
                    if r.status_code != 200:
                        raise ValueError(f"HTTP {r.status_code}: {r.text[:120]}")
                    body = orjson.loads(r.content)
                    res = (sym, int(body["lastUpdateId"]), _levels_array(body.get("bids", [])),
                           _levels_array(body.get("asks", [])), int(body.get("E", 0) or 0) * 1_000_000, None)
                except Exception as e:  # noqa: BLE001 - any failure is reported and retried, never fatal
                    res = (sym, 0, None, None, 0, f"{type(e).__name__}: {e}")
                self.results.put(res)

    def _pace(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= self.weight:
                self._tokens -= self.weight
                return
            self._stop.wait((self.weight - self._tokens) / self.rate)

    def stop(self) -> None:
        self._stop.set()


def _levels_array(rows) -> np.ndarray:
    a = np.array([(float(p), float(q)) for p, q, *_ in rows], np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(a)) or np.any(a[:, 0] <= 0) or np.any(a[:, 1] < 0):
        raise ValueError("snapshot has non-finite or negative levels")
    return a


class FeedEngine:
    """The websocket Feed, usable inside the Feed process (run) or directly in tests and benches."""

    def __init__(self, table: SymbolTable, cfg: FeedConfig, header, records, rest_url: str, ws_url: str,
                 wait: int = 2, record_dir: str | None = None, ctl=None, latency_set=None, weight_ledger=None):
        self.table = table
        self.cfg = cfg
        self.header = header
        self.records = records
        self.rest_url = rest_url
        self.ws_url = ws_url
        self.wait = wait
        self.ctl = ctl
        self.latency = latency_set     # histogram set (aegis.core.latency): STAGE_FEED gets recv -> publish
        self.books = BookState(len(table), cfg.book_levels)
        self.parser = Parser(table, self.books, **self.parse_settings())
        self.conflation = ConflationBuffer(len(table), cfg.conflation_capacity, ctl, ROLE_FEED)
        self.io = np.zeros(IO_COUNT, np.int64)    # shared with the fused kernel (IO_*)
        self.flush_at = len(self.parser.out) - (LEVELS_CAP + 2)
        self.conns: list[Connection] = [Connection(route, streams, ws_url)
                                        for route, streams in plan_connections(table, cfg)]
        self.depth_enabled = "depth" in cfg.streams
        # resident now, not page by page during the first backlog (aegis.core.memory); the depth books only when
        # depth is subscribed, since nothing else writes them
        b = self.books
        prefault(self.parser.out, self.parser.lv, self.conflation.pend,
                 *((b.px, b.qty, b.pend_hdr, b.pend_lv) if self.depth_enabled else ()))
        self.fetcher = SnapshotFetcher(rest_url, cfg.snapshot_limit, cfg.snapshot_timeout,
                                       cfg.snapshot_weight_per_minute, weight_ledger) if self.depth_enabled else None
        self.next_snapshot_at = np.zeros(len(table))
        self.recorder = None
        if record_dir:
            from aegis.feed.recording import Recorder
            self.recorder = Recorder(record_dir, cfg.record_max_bytes)
            self._record_exchange_info()
        self.rlog = RateLimitedLog(log, cfg.log_interval)
        self.reconnects = 0
        self.stalls = 0
        self.last_error = ""
        self.bytes_in = 0
        self.checksum = 0
        self._chk_seq = 0
        self._logged = np.zeros(len(self.parser.stats), np.int64)
        self._status = np.zeros(max(16, len(table)), MARKET_DTYPE)
        self._snap_out = np.zeros(0, MARKET_DTYPE)
        self.idle_polls = 0
        base = ROLE_SLOTS * (1 + ROLE_FEED)
        self._stat_slots = np.array([base + x for x in (R_RECORDS, R_CHECKSUM, R_FEED_MSGS, R_FEED_BYTES, R_FEED_BAD,
                                                        R_FEED_RECONNECTS, R_FEED_RESYNCS, R_FEED_GAPS, R_IDLE,
                                                        R_FEED_STALLS)],
                                    np.int64)
        self._stat_values = np.zeros(len(self._stat_slots), np.int64)
        io = self.io
        io[IO_FLUSH_AT] = self.flush_at
        io[IO_WAIT] = wait
        io[IO_LATENCY] = latency_set is not None
        io[IO_ONE_BATCH] = self.recorder is not None
        p, b, t, cb = self.parser, self.books, table, self.conflation
        self.kstate = make_ingest_state(
            t.names_utf8, t.name_off, t.hash_table, p.out, b.st, b.px, b.qty, b.pend_hdr, b.pend_lv, b.pend_ctl, p.lv,
            p.last_ids, p.fs, p.stats, p.params, p.slow, header, records, cb.pend, cb.ctl, cb.slots, cb.beat_ctl,
            latency_set if latency_set is not None else np.zeros((1, 1), np.int64), io)
        self._ingest_entry = None
        self._reader_type = None

    @property
    def j(self) -> int:
        """Records waiting in parser.out (kept in io: the fused kernel reads and leaves it there)."""
        return int(self.io[IO_J])

    @j.setter
    def j(self, v: int) -> None:
        self.io[IO_J] = v

    # ------------------------------------------------------------------------------------------ output
    def flush(self) -> None:
        w0 = self.header[R_H_WRITE]
        if self.j:
            self.conflation.push(self.header, self.records, self.parser.out, self.j, self.wait)
            self.j = 0
        elif self.conflation.pending:
            self.conflation.drain(self.header, self.records)
        if self.latency is not None:
            record_feed_latency(self.latency, self.header, self.records, w0, self.header[R_H_WRITE])

    def _publish(self, recs: np.ndarray, n: int, measure: bool = True) -> None:
        """Publish records made outside the parse path (status, snapshot replays). Snapshot replays are not
        measured: their recv_ts is when the buffered event arrived, and the wait for the REST snapshot would
        swamp the recv -> publish histogram of the hot path."""
        self.flush()
        if n:
            w0 = self.header[R_H_WRITE]
            self.conflation.push(self.header, self.records, recs, n, self.wait)
            if measure and self.latency is not None:
                record_feed_latency(self.latency, self.header, self.records, w0, self.header[R_H_WRITE])

    # -------------------------------------------------------------------------------------- connections
    def _beat(self) -> None:
        if self.ctl is not None:
            control.beat(self.ctl, ROLE_FEED)

    def _open(self, c: Connection) -> bool:
        url, subs = c.url_and_subscriptions()
        self._beat()
        try:
            c.reader = connect(url, timeout=self.cfg.connect_timeout, buffer_size=self.cfg.buffer_bytes)
        except Exception as e:  # noqa: BLE001 - handshake failures of any kind mean "retry later"
            c.reader = None
            self._schedule_retry(c, f"connect {url[:120]} failed: {type(e).__name__}: {e}")
            self.last_error = getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
            return False
        finally:
            self._beat()   # a handshake blocks (up to connect_timeout): the supervisor must not see a hang
        now = time.monotonic()
        c.opened_at = c.last_data = now
        c.first_data = 0.0
        c.pending_subs = subs
        c.next_sub_at = now
        log.info("feed: connection %d open: %s route, %d streams", c.id, c.route, len(c.streams))
        return True

    def wait_connected(self, timeout: float, stop=None) -> bool:
        """Until one market-data connection is open (retrying as usual); False after `timeout` s without one."""
        deadline = time.monotonic() + timeout
        while not any(c.reader is not None for c in self.conns):
            if time.monotonic() >= deadline or (stop is not None and stop()):
                return False
            self.run_for(0.05)
        return True

    def _schedule_retry(self, c: Connection, reason: str) -> None:
        self.last_error = reason
        c.failures += 1
        c.backoff = min(self.cfg.backoff_max, self.cfg.backoff_initial * (2 ** min(c.failures - 1, 20)))
        delay = random.uniform(0.5 * c.backoff, c.backoff)   # jitter: reconnecting clients do not synchronise
        c.next_attempt = time.monotonic() + delay
        self.rlog.warning(f"conn{c.id}", "feed: %s; retry in %.2f s", reason, delay)

    def _lost(self, c: Connection, reason: str) -> None:
        """A connection died or stalled: close it, resync its books, reset its dedupe state, retry later."""
        if c.reader is not None:
            self.bytes_in += c.reader.bytes_in
            c.reader.close()
            c.reader = None
        if c.successor is not None:       # a rotation was under way: the successor simply takes over
            succ = c.successor
            c.successor = None
            self.conns[self.conns.index(c)] = succ
            return
        if c in self.conns:
            self.reconnects += 1
            self._resync_symbols(c)
            self._schedule_retry(c, f"connection {c.id} ({c.route}) lost: {reason}")

    def _resync_symbols(self, c: Connection) -> None:
        li = self.parser.last_ids
        kinds = {n.split("@", 1)[1].split("@")[0] for n, _ in c.streams}
        syms = np.array(c.symbols, np.int64)
        if "bookTicker" in kinds:
            li[syms, LI_QUOTE] = 0
        if "aggTrade" in kinds:
            li[syms, LI_TRADE] = 0
        if "markPrice" in kinds:
            li[syms, LI_MARK] = 0
        if "depth" in kinds:
            n = 0
            t = now_ns()
            for s in c.symbols:
                if self.books.state(s) == book.ST_LIVE or self.books.state(s) == book.ST_SYNCING:
                    r = self._status[n]
                    r["kind"] = KIND_STATUS
                    r["symbol"] = s
                    r["flags"] = FLAG_RESYNC
                    r["recv_ts"] = t
                    r["last_id"] = self.books.st[s, book.S_LAST_U]
                    n += 1
                    if n == len(self._status):
                        self._publish(self._status, n)
                        n = 0
                self.books.resync(s)
            self._publish(self._status, n)

    def _maintain(self, now: float) -> None:
        cfg = self.cfg
        opened = False
        for c in list(self.conns):
            if c.reader is None:
                if now >= c.next_attempt and not opened:
                    self._open(c)        # one blocking handshake per pass: heartbeats go on in between
                    opened = True
                continue
            if not self._subscribe(c, now):
                self._lost(c, "SUBSCRIBE could not be sent")
                continue
            if c.successor is not None and c.successor.reader is not None \
                    and not self._subscribe(c.successor, now):
                c.successor.reader.close()
                c.successor.reader = None
            if now - c.last_data > cfg.stall_timeout:
                self.stalls += 1
                self._lost(c, f"no data for {now - c.last_data:.1f} s (stall)")
                continue
            if c.first_data and now - c.first_data > 30.0:
                c.failures = 0
            # make-before-break rotation before the 24 h cut
            succ = c.successor
            if succ is None and now - c.opened_at > cfg.rotate_after:
                succ = Connection(c.route, c.streams, c.ws_base)
                if self._open(succ):
                    c.successor = succ
                    log.info("feed: rotating connection %d -> %d", c.id, succ.id)
                else:   # retry the rotation in a few seconds, not on every pass
                    c.opened_at = now - cfg.rotate_after + min(5.0, cfg.rotate_overlap + 1.0)
            elif succ is not None:
                if succ.reader is None or succ.reader.closed:
                    c.successor = None      # the successor failed: try again on the next pass
                    c.opened_at = now - cfg.rotate_after + min(5.0, cfg.rotate_overlap + 1.0)
                elif succ.first_data and not succ.pending_subs and now - succ.first_data >= cfg.rotate_overlap:
                    self.bytes_in += c.reader.bytes_in
                    c.reader.close()
                    c.reader = None
                    c.successor = None
                    self.conns[self.conns.index(c)] = succ
                    log.info("feed: connection %d retired, %d carries its streams", c.id, succ.id)

    def _subscribe(self, c: Connection, now: float) -> bool:
        """Send the next SUBSCRIBE of a connection whose streams did not all fit in its URL (paced)."""
        if c.pending_subs and now >= c.next_sub_at:
            c.sub_id += 1
            try:
                c.reader.send_text(orjson.dumps({"method": "SUBSCRIBE", "params": c.pending_subs.pop(0),
                                                 "id": c.sub_id}))
            except ConnectionClosed:
                return False
            c.next_sub_at = now + SUBSCRIBE_SPACING_S
        return True

    def _all_readers(self):
        for c in self.conns:
            if c.reader is not None:
                yield c
            if c.successor is not None and c.successor.reader is not None:
                yield c.successor

    def parse_settings(self) -> dict:
        """The Parser keywords this Feed parses with (recorded, so replay parses the same way)."""
        c = self.cfg
        return {"max_price": c.max_price, "max_qty": c.max_qty, "emit_levels": c.depth_levels, "dedupe": c.dedupe}

    def _record_exchange_info(self) -> None:
        """The recorded symbols' exchange filters head the recording (weight 1), so it replays on its own."""
        import requests
        try:
            with requests.Session() as s:
                s.trust_env = not self.rest_url.startswith(("http://127.", "http://localhost"))
                r = s.get(self.rest_url.rstrip("/") + "/fapi/v1/exchangeInfo", timeout=self.cfg.snapshot_timeout)
                r.raise_for_status()
                self.recorder.set_exchange_info(orjson.loads(r.content), self.table.names, self.parse_settings())
        except Exception as e:  # noqa: BLE001 - the recording goes on; replay then needs --exchange-info
            log.warning("feed: recording without exchange filters (exchangeInfo: %s: %s); replay it with "
                        "--exchange-info FILE", type(e).__name__, e)

    # -------------------------------------------------------------------------------------------- books
    def _snapshots(self, now: float) -> None:
        if not self.depth_enabled:
            return
        for sym in self.books.needs_snapshot():
            if now >= self.next_snapshot_at[sym]:
                self.books.st[sym, book.S_STATE] = book.ST_WAIT_SNAPSHOT
                self.next_snapshot_at[sym] = now + self.cfg.snapshot_interval
                self.fetcher.request(int(sym), self.table.name_of(int(sym)))
        while True:
            try:
                sym, last_id, bids, asks, exch, err = self.fetcher.results.get_nowait()
            except queue.Empty:
                return
            if self.books.state(sym) != book.ST_WAIT_SNAPSHOT:
                continue
            if err is not None:
                self.books.st[sym, book.S_STATE] = book.ST_BUFFERING
                self.rlog.warning("snapshot", "feed: depth snapshot of %s failed: %s", self.table.name_of(sym), err)
                continue
            self.flush()
            need = self.books.records_bound(len(bids) + len(asks))
            if len(self._snap_out) < need:
                self._snap_out = np.zeros(need, MARKET_DTYPE)
            b = self.books
            applied = now_ns()
            if self.recorder is not None:
                self.recorder.write_snapshot(applied, self.table.name_of(int(sym)), last_id, bids, asks, exch)
            n = book.apply_snapshot(b.st, b.px, b.qty, b.pend_hdr, b.pend_lv, b.pend_ctl, sym, last_id, bids, asks,
                                    exch, applied, self._snap_out, 0, self.cfg.depth_levels)
            self._publish(self._snap_out, n, measure=False)

    # ------------------------------------------------------------------------------------------ reading
    def _slow(self, buf, offs, lens, idx, ns, recv) -> None:
        msgs = []
        for k in range(ns):
            i = idx[k]
            o = offs[i]
            msgs.append(bytes(buf[o:o + lens[i]]))
        self._slow_messages(msgs, recv)

    def _slow_messages(self, msgs, recv) -> None:
        stats = self.parser.stats
        for raw in msgs:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                stats[ST_MALFORMED] += 1
                self.rlog.warning("malformed", "feed: malformed message skipped: %r", raw[:160])
                continue
            items = None
            if isinstance(obj, dict) and "data" in obj:
                data = obj["data"]
                items = data if isinstance(data, list) else [data]
            elif isinstance(obj, dict) and ("result" in obj or "error" in obj):
                if "error" in obj:
                    self.rlog.warning("ctl-error", "feed: control request %s refused: %s", obj.get("id"),
                                      str(obj["error"])[:200])
                continue
            elif isinstance(obj, dict):
                items = [obj]
            else:
                items = obj if isinstance(obj, list) else []
            for it in items:
                if not isinstance(it, dict):
                    stats[ST_MALFORMED] += 1
                    continue
                if self.j > self.flush_at:
                    self.flush()
                self.j, _ = self.parser.parse_bytes([orjson.dumps(it)], recv, self.j)

    def _on_fragmented(self, msg: bytes) -> None:
        self._pending_frag.append(msg)

    def _read(self, c: Connection) -> int:
        r = c.reader
        try:
            got = r.read()
        except ConnectionClosed as e:
            self._lost(c, str(e))
            return 0
        if not got:
            return 0
        recv = py_now_ns()
        try:
            self.ingest(r, recv)
        except ConnectionClosed as e:
            self._saw_data(c)
            self._lost(c, str(e))
            return got
        self._saw_data(c)    # after publishing: bookkeeping stays off the recv -> publish path
        return got

    @staticmethod
    def _saw_data(c: Connection) -> None:
        c.last_data = time.monotonic()
        if not c.first_data:
            c.first_data = c.last_data

    def ingest(self, r, recv: int) -> int:
        """Split, parse and publish everything reader r received (r.read() returned; recv = its receive timestamp,
        CLOCK_MONOTONIC ns); returns the frames handled. Raises ConnectionClosed (protocol error, server CLOSE)
        after publishing the frames before it.

        One jitted call (ingest_frames, through its compiled entry) in the common case; the general path takes
        over where it stops. The caller reads the socket and stamps recv; nothing else runs before publishing."""
        fr = r.state
        if fr._type is self._reader_type:     # inline of _kernel: a Python call costs ~0.1 us here
            n = self._ingest_entry(self.kstate, fr, recv)
        else:
            n = self._kernel(fr, recv)
        if n >= 0:
            return n
        return self._ingest_general(r, recv)

    def _kernel(self, fr, recv: int) -> int:
        """ingest_frames through its compiled entry, fetched on first use for the reader state's numba type (every
        FrameReader's is the same); a state of another type goes through the dispatcher, which checks types."""
        if self._reader_type is None:
            self._ingest_entry = entry_for(ingest_frames, self.kstate, fr, recv)
            self._reader_type = fr._type
        if fr._type is self._reader_type:
            return self._ingest_entry(self.kstate, fr, recv)
        return ingest_frames(self.kstate, fr, recv)

    def _ingest_general(self, r, recv: int) -> int:
        """The general path of one read, from where ingest_frames stopped (io[IO_STOP])."""
        io = self.io
        total = 0
        while True:
            total += int(io[IO_FRAMES])
            stop = int(io[IO_STOP])
            if stop == STOP_SPLIT:
                nf = r.frames()          # the same bytes: raises the same protocol error
                if nf == 0:
                    return total
                total += nf
                self._batch(r, nf, recv)
            else:
                nf = r.n
                if stop == STOP_SPECIAL:
                    self._batch(r, nf, recv)
                elif stop == STOP_SLOW:
                    self._process(r, nf, recv, int(io[IO_I]), int(io[IO_NS]))
                else:
                    self._after_batch(r, nf, recv, bool(io[IO_BAD_CHANGED]))
            if nf < len(r.offs):
                return total
            n = self._kernel(r.state, recv)
            if n >= 0:
                return total + n

    def read_general(self, r, recv: int) -> int:
        """The general path alone (no fused kernel) over what reader r received: frames handled. The reference the
        fused path is tested against."""
        total = 0
        while True:
            nf = r.frames()
            if nf == 0:
                return total
            total += nf
            self._batch(r, nf, recv)
            if nf < len(r.offs):
                return total

    def _batch(self, r, nf: int, recv: int) -> None:
        """One split batch: control frames and fragments first (Python), then the data frames."""
        if r.special:
            self._pending_frag = []
            try:
                r.handle_special(self._on_fragmented)
            except ConnectionClosed:
                self._process(r, nf, recv)
                raise
            if self._pending_frag:
                self._slow_messages(self._pending_frag, recv)
        self._process(r, nf, recv)

    def _process(self, r, nf: int, recv: int, i: int = 0, ns: int = 0) -> None:
        """Parse and publish the data frames of a split batch. i, ns > 0: resume after a parse call that stopped
        at frame i having listed ns slow-path messages (where ingest_frames hands over)."""
        p = self.parser
        if ns:
            self._slow(r.buf, r.offs, r.lens, p.slow, ns, recv)
            if self.j > self.flush_at or i < nf:
                self.flush()
        while i < nf:
            i, self.j, ns = p.parse(r.buf, r.offs, r.lens, r.flags, i, nf, recv, self.j)
            if ns:
                self._slow(r.buf, r.offs, r.lens, p.slow, ns, recv)
            if self.j > self.flush_at or i < nf:
                self.flush()
        self.flush()
        self._after_batch(r, nf, recv)

    def _after_batch(self, r, nf: int, recv: int, bad_changed: bool | None = None) -> None:
        """Recording and the problem log of a published batch; bad_changed None: compare the counts here."""
        if self.recorder is not None:   # after publishing: recording stays off the recv -> publish path
            buf = r.buf
            self.recorder.write_payloads(recv, [buf[r.offs[i]:r.offs[i] + r.lens[i]] for i in range(nf)
                                                if not r.flags[i] & FR_SPECIAL])
        if bad_changed is None:
            bad = self.bad_count()
            bad_changed = bad != self.io[IO_BAD_SEEN]
            if bad_changed:
                self.io[IO_BAD_SEEN] = bad
        if bad_changed:
            self._log_bad_samples(r.buf)

    def _log_bad_samples(self, buf) -> None:
        """One rate-limited line per problem kind, with the count and the last offending payload."""
        st = self.parser.stats
        for cat, what in PROBLEMS.items():
            if st[cat] != self._logged[cat] and self.rlog.due(what):
                packed = int(st[ST_LAST_BAD + cat])
                off, ln = packed >> 24, packed & 0xFFFFFF
                sample = bytes(buf[off:off + min(ln, 160)]) if 0 <= off < len(buf) else b""
                self.rlog.log.warning("feed: %s message skipped (%d so far, %d since the last report): %r",
                                      what, st[cat], st[cat] - self._logged[cat], sample)
                self._logged[cat] = st[cat]

    def poll(self) -> int:
        """Read every connection once; returns bytes read."""
        got = 0
        for c in list(self._all_readers()):
            got += self._read(c)
        return got

    # -------------------------------------------------------------------------------------- bookkeeping
    def housekeeping(self) -> None:
        now = time.monotonic()
        self._maintain(now)
        self._snapshots(now)
        if self.conflation.pending:
            self.conflation.drain(self.header, self.records)
        self._report_problems()
        if self.ctl is not None:
            self.publish_stats()

    def _report_problems(self) -> None:
        st = self.parser.stats
        for cat, what in PROBLEMS.items():   # problems found on the slow path, or not yet reported
            if st[cat] != self._logged[cat] and self.rlog.due(what):
                self.rlog.log.warning("feed: %s message skipped (%d so far, %d since the last report)",
                                      what, st[cat], st[cat] - self._logged[cat])
                self._logged[cat] = st[cat]
        if st[ST_POOL_FULL] != self._logged[ST_POOL_FULL] and self.rlog.due("pool"):
            self.rlog.log.warning("feed: depth resync buffer full %d time(s): books resync again",
                                  st[ST_POOL_FULL])
            self._logged[ST_POOL_FULL] = st[ST_POOL_FULL]

    def stats(self) -> dict:
        st = self.parser.stats
        return {"frames": int(st[ST_FRAMES]), "bad": self.bad_count(), "duplicates": int(st[ST_DUPLICATES]),
                "resyncs": int(st[ST_RESYNCS]), "reconnects": self.reconnects,
                "control": int(st[ST_CONTROL]), "written": self.conflation.seq, **self.conflation.stats()}

    def bad_count(self) -> int:
        st = self.parser.stats
        return int(st[ST_MALFORMED] + st[ST_UNKNOWN_SYMBOL] + st[ST_BAD_VALUE] + st[ST_UNKNOWN_EVENT])

    def publish_stats(self) -> None:
        ctl = self.ctl
        seq = self.conflation.seq
        if seq != self._chk_seq:
            self.checksum = checksum_range(self.checksum, self._chk_seq, seq)
            self._chk_seq = seq
        st = self.parser.stats
        bytes_in = self.bytes_in + sum(c.reader.bytes_in for c in self._all_readers())
        vals = self._stat_values
        for k, v in enumerate((seq, self.checksum, int(st[ST_FRAMES]), bytes_in, self.bad_count(), self.reconnects,
                               int(st[ST_RESYNCS]), int(st[ST_POOL_FULL]), self.idle_polls, self.stalls)):
            vals[k] = v
        store_slots(ctl, self._stat_slots, vals)

    def start(self) -> None:
        for c in self.conns:
            self._open(c)

    def run_for(self, seconds: float, stop=None) -> None:
        """Poll loop (tests and the process entry): until `seconds` pass, stop() is true or the ring aborts."""
        deadline = time.monotonic() + seconds
        next_hk = 0.0
        spins = 0
        while True:
            got = self.poll()
            now = time.monotonic()
            if now >= next_hk:
                self.housekeeping()
                now = time.monotonic()
                next_hk = now + 0.002
                if now >= deadline or (stop is not None and stop()) or ring.aborted(self.header):
                    break
            if got:
                spins = 0
                continue
            self.idle_polls += 1
            spins += 1
            if self.wait == BUSY_SPIN or spins < SPIN_LIMIT:
                continue
            readers = [c.reader for c in self._all_readers()]
            if any(rd.pending() for rd in readers):
                continue
            timeout = max(0.0, min(0.002, next_hk - time.monotonic()))
            if readers:
                try:
                    select.select(readers, [], [], timeout)
                except (OSError, ValueError):
                    pass
            else:
                time.sleep(timeout)

    def close(self) -> None:
        self.flush()
        for c in self.conns:
            if c.successor is not None and c.successor.reader is not None:
                c.successor.reader.close()
            if c.reader is not None:
                c.reader.close()
                c.reader = None
        if self.fetcher is not None:
            self.fetcher.stop()
        if self.recorder is not None:
            self.recorder.close()


# ------------------------------------------------------------------------------------- synthetic source
@njit(cache=True, nogil=True)
def synthetic_loop(header, records, ctl, state, batch, rate, policy, wait):
    """Generate and publish until stopped; rate = records/s (0: as fast as the ring takes them)."""
    base = ROLE_SLOTS * (1 + ROLE_FEED)
    t0 = now_ns()
    last_beat = 0
    seq = 0
    written_total = 0
    chk = 0
    spins = 0
    full_since = 0
    nb = batch.shape[0]
    # RUNNING is announced from inside the compiled loop: the supervisor's hang detection must not count the
    # seconds of the first-run compilation
    control.set_slot(ctl, ROLE_FEED, R_STATE, ST_RUNNING)
    while True:
        t = now_ns()
        if t - last_beat > BEAT_NS:
            control.beat(ctl, ROLE_FEED)
            last_beat = t
            if control.stop_requested(ctl) or ring.aborted(header):
                break
        if rate > 0 and seq * 1_000_000_000 >= rate * (t - t0):
            spins = idle(wait, spins)
            continue
        if policy == ring.POLICY_WAIT and ring.free_slots(header, nb) < nb:
            # wait for room here, not inside write_batch: this loop keeps beating, so a stalled Brain is reported
            # as the hung process instead of the back-pressured Feed
            if full_since == 0:
                header[ring.H_FULL_WAITS] += 1
                full_since = t
            spins = idle(wait, spins)
            continue
        full_since = 0
        spins = 0
        synthetic.generate(state, batch, nb, seq, t + EPOCH_OFFSET_NS, t)
        w = ring.stamp_and_write(header, records, batch, nb, policy, wait)
        for i in range(w):
            chk = ring.checksum_step(chk, batch[i].seq)
        seq += nb
        written_total += w
        store_release(ctl, base + R_RECORDS, written_total)
        store_release(ctl, base + R_CHECKSUM, chk)
    return written_total


def _run_synthetic(ctx, spec: ProcessSpec, fcfg: FeedConfig, n_symbols: int) -> int:
    cfg = spec.config
    ctx.step(1, 2, "synthetic source")
    state = synthetic.make_state(n_symbols, seed=fcfg.seed)
    synthetic.seed(fcfg.seed)
    batch = synthetic.new_batch(BATCH)
    args = (ctx.ring.header, ctx.ring.records, ctx.control, state, batch, fcfg.synthetic_rate,
            POLICIES[cfg.ring_policy], spec.wait)
    loop = entry_for(synthetic_loop, *args)
    ctx.set_state(control.ST_READY)
    if not wait_for_brain(ctx, 2, 2):
        return 0
    ctx.progress.running()       # the loop announces RUNNING itself, from compiled code
    freeze_gc()
    loop(*args)
    return 0


def wait_for_brain(ctx, k: int, n: int) -> bool:
    """Publish nothing until the Brain is ready to consume: what the Feed published while the Brain was still
    compiling would reach it seconds old, and it would trade on that backlog. False if the run ends first."""
    ctx.step(k, n, "ready; waiting for the brain (nothing is published until it can trade)",
             control.PH_WAITING_FOR_BRAIN)
    while not ctx.stopping() and not ring.aborted(ctx.ring.header):
        brain = int(control.get_slot(ctx.control, control.ROLE_BRAIN, R_STATE))
        if brain in (control.ST_READY, control.ST_RUNNING):
            return True
        if brain in (control.ST_STOPPED, control.ST_FAILED):
            return False
        ctx.progress.beat()
        time.sleep(0.02)
    return False


def venue_urls(spec: ProcessSpec, fcfg: FeedConfig) -> tuple[str, str]:
    rest, ws = VENUE_URLS.get(spec.config.venue, ("", ""))[:2]  # the embedded venue's come from the spec
    if spec.venue_urls:
        rest, ws = spec.venue_urls[0], spec.venue_urls[1]
    return fcfg.rest_url or rest, fcfg.ws_url or ws


def resolve_symbols(spec: ProcessSpec, fcfg: FeedConfig, rest_url: str) -> SymbolTable:
    table = getattr(spec, "symbols", None)
    if isinstance(table, SymbolTable):
        return table
    sym = spec.config.symbols
    if isinstance(sym, int):
        return discover(rest_url, top_n=sym, timeout=fcfg.discovery_timeout)
    return discover(rest_url, symbols=list(sym), timeout=fcfg.discovery_timeout)


from aegis.binance.weight import ledger_for  # noqa: E402

FIRST_CONNECT_S = 10.0   # the first market-data connection must open within this (several tries, with back-off)


def run(spec: ProcessSpec) -> int:
    """Feed process entry point (started by the supervisor)."""
    ctx = enter(spec)
    if spec.rest is not None:      # started before the venue answered: only the imports overlap its start
        ctx.step(1, 3, "waiting for the venue")
        spec = receive_rest(spec)
        if spec is None:
            ctx.set_state(control.ST_STOPPED)
            return 0
        ctx.spec = spec
    cfg = spec.config
    try:
        fcfg = FeedConfig.from_section(cfg.section("feed"))
    except ValueError as e:
        log.error("%s", e)
        ctx.set_state(control.ST_FAILED)
        return 2
    try:
        if cfg.source == "synthetic":
            n_symbols = cfg.symbols if isinstance(cfg.symbols, int) else len(cfg.symbols)
            ctx.control[control.G_SYMBOLS] = n_symbols
            return _run_synthetic(ctx, spec, fcfg, n_symbols)
        rest_url, ws_url = venue_urls(spec, fcfg)
        table = resolve_symbols(spec, fcfg, rest_url)
        ctx.control[control.G_SYMBOLS] = len(table)
        store_slots(ctx.control, np.array([control.G_SYMBOLS_READY], np.int64), np.ones(1, np.int64))
        lat = None
        if ctx.latency is not None and ctx.latency.size >= latency.N_STAGES * latency.HIST_LEN:
            lat = ctx.latency[: latency.N_STAGES * latency.HIST_LEN].reshape(latency.HIST_SET_SHAPE)
        ctx.step(1, 3, "feed kernels")
        warm_up()
        eng = FeedEngine(table, fcfg, ctx.ring.header, ctx.ring.records, rest_url, ws_url, spec.wait,
                         cfg.record_dir, ctx.control, lat,
                         weight_ledger=ledger_for(rest_url, cfg.venue == "embedded" and not fcfg.rest_url))
        ctx.set_state(control.ST_READY)
        if not wait_for_brain(ctx, 2, 3):
            eng.close()
            return 0
        ctx.step(3, 3, "connecting to the market streams", control.PH_CONNECTING)
        eng.start()
        if not eng.wait_connected(FIRST_CONNECT_S, ctx.stopping):
            # market data that never arrives is an error of the run, not a quiet run with 0 records
            if not ctx.stopping():
                print(f"aegis: error: cannot reach market data at {ws_url}: {eng.last_error}", file=sys.stderr,
                      flush=True)
            eng.close()
            ctx.set_state(control.ST_FAILED)
            return 2 if not ctx.stopping() else 0
        freeze_gc()
        ctx.set_state(control.ST_RUNNING)
        try:
            beat_every = BEAT_NS / 1e9
            while not ctx.stopping() and not ring.aborted(ctx.ring.header):
                eng.run_for(beat_every)
                ctx.heartbeat()
        finally:
            eng.close()
            eng.publish_stats()
        return 0
    finally:
        ctx.set_state(control.ST_STOPPED)
        ctx.heartbeat()


if __name__ == "__main__":  # pragma: no cover - started by the supervisor
    sys.exit("aegis.feed.process is started by `python -m aegis`")


def warm_up() -> float:
    """Compile (or load from the on-disk cache) every kernel of the websocket Feed; returns the seconds taken.

    Numba compiles on first call; a fresh checkout pays tens of seconds once. The Feed process calls this before
    it reports READY, and test modules call it from a module-scoped fixture (outside the per-test time limit)."""
    from aegis.core.websocket import OP_TEXT, encode_frame
    from aegis.feed.wsframes import split_server_frames

    t0 = time.monotonic()
    table = SymbolTable.build([("BTCUSDT", "0.10", "0.001")])
    books = BookState(1, 16, 16, 64)
    p = Parser(table, books, out_cap=16)
    msgs = [b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":2,"s":"BTCUSDT","b":"1.5","B":"1",'
            b'"a":"1.6","A":"2","E":1}}',
            b'{"e":"aggTrade","s":"BTCUSDT","p":"1.5","q":"1","a":3,"m":true,"E":1}',
            b'{"e":"markPriceUpdate","s":"BTCUSDT","p":"1.5","i":"1.4","r":"0.0001","E":1}',
            b'{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":5,"pu":0,"b":[["1.5","1"]],"a":[["1.6","0"]],"E":1}',
            b'{"result":null,"id":1}']
    blob = b"".join(encode_frame(OP_TEXT, m, masked=False) for m in msgs)
    buf = np.frombuffer(blob, np.uint8).copy()
    offs, lens = np.zeros(8, np.int64), np.zeros(8, np.int64)
    ops, flags = np.zeros(8, np.uint8), np.zeros(8, np.uint8)
    n, _, _, _ = split_server_frames(buf, 0, len(buf), offs, lens, ops, flags, 8)
    _, j, _ = p.parse(buf, offs, lens, flags, 0, n, 1, 0)
    out = np.zeros(books.records_bound(2) + 4, MARKET_DTYPE)
    book.apply_snapshot(books.st, books.px, books.qty, books.pend_hdr, books.pend_lv, books.pend_ctl, 0, 3,
                        np.array([[1.5, 1.0]]), np.array([[1.6, 1.0]]), 1, 1, out, 0, False)
    p.parse(buf, offs, lens, flags, 3, 4, 1, 0)
    name = "aegis-warm-" + str(np.random.randint(1 << 30))
    rg = ring.Ring.create(name, ring.MIN_CAPACITY)
    rg.unlink()      # the mapping stays ours; a process killed during the warm-up leaves nothing in /dev/shm
    try:
        cb = ConflationBuffer(1, 1024)
        cb.push(rg.header, rg.records, p.out, max(j, 1), 2)
        cb.drain(rg.header, rg.records)
        record_feed_latency(latency.new_set(), rg.header, rg.records, 0, 1)
        _warm_ingest(table, rg, blob)
        ring.abort(rg.header)    # what a stop calls: compiled now, not while the engine is stopping
    finally:
        rg.close()
    store_slots(np.zeros(4, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64))
    checksum_range(0, 0, 2)
    return time.monotonic() - t0


def _warm_ingest(table: SymbolTable, rg, blob: bytes) -> None:
    """The fused path and its constructors, with the argument types of a real Feed (shared-memory ring, histogram
    set, FrameReader), so the first read of a connection does not compile."""
    import socket

    from aegis.feed.wsframes import FrameReader

    a, b = socket.socketpair()
    try:
        eng = FeedEngine(table, FeedConfig(streams=("bookTicker",)), rg.header, rg.records, "", "",
                         latency_set=latency.new_set())
        r = FrameReader(a, buffer_size=1 << 16, max_frames=8)
        r.buf[:len(blob)] = np.frombuffer(blob, np.uint8)
        r.tail = len(blob)
        eng.ingest(r, 1)
        eng.close()
        r.close()
        del eng, r    # the ring's views: the mapping closes only once nothing refers to it
    finally:
        a.close()
        b.close()
