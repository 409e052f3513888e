"""Sender thread: order requests leave the Brain's jitted loop through an in-process SPSC ring and are sent by a
small dedicated thread (journal first, then the Binance client).

DESIGN (numbers: bench/bench_trade.py and the measurement table below)
The Brain busy-polls the market ring inside one long @njit(nogil=True) call, so while it spins it does NOT hold
the GIL. Its pipeline calls aegis.trade.risk.check and then `handoff` (jitted, never blocks: a full queue drops the
request and returns 0, which the Brain counts as a QUEUE_FULL rejection). The queue is an ORDER_REQUEST ring
allocated in-process (aegis.core.ring's kernels work on any dtype and on plain numpy arrays), one writer (the Brain
thread) and one reader (the sender thread), with the release/acquire cursors of aegis.core.ring.

How the sender waits is the hard part. Measured with bench/bench_trade.py (`python bench/bench_trade.py`): a
producer thread spinning in nogil jitted code (like the Brain) hands over one request every 200 us; "seen" =
Brain's handoff_ts -> sender_wait sees it. On this 2-vCPU VM the decisive cost is waking a thread on the OTHER core
(an inter-processor interrupt through the hypervisor: ~20 us), and a thread spinning beside a busy thread on one
core only runs at the scheduler's next pick (ms). Hence the wait strategy of the queue ([trade] wait, one of the
engine's strategies in aegis.core.wait; resolve_wait picks for `auto`):

    busy-spin   only with a core of its own ([trade] cores outside the engine's): 0.7-8 us here (simulated)
    spin-yield  wait on the Brain's own core, giving it back with sched_yield at every poll; the Brain yields after
                a hand-off (the header's W_YIELD_TO) and the sender, already runnable, gets the core at once: a
                same-core switch with no futex on either side, hand-off p50 2.0 us in the pipeline here (parking on
                a futex there and waking it took 5.0 us: the wake-up syscall on the Brain's side and the futex
                return path on the sender's). auto picks it when the Brain polls without sleeping (busy-spin or
                spin-yield: that core burns anyway). Costs: while the sender works in Python (answers, journal
                acks) the Brain waits for its core, which shows in publish->consume p99; and a spin-yield Brain's
                idle yields pass through the sender's poll (~2 us each), so publish->consume p90 is ~2.5 us instead
                of 0.6 (p50 unchanged). Encoding in the Brain before the hand-off gains nothing: the encode
                runs cold in either thread (bench/RESULTS.md). What does pay where orders are sparse: a polling
                sender rebuilds the last order into scratch every [trade] warm_us while it waits
                (warm_order_path). In the default run, an order every ~100 ms, it took prepare p50 from 15 to
                9 us; in the pipeline bench, an order every ~1.5 ms, from 3.1-4.2 to 2.8-3.2 us (bench/MEASURED.md).
    block       spin 20 us, then park on a futex on another core: p50 23-30 us here (the IPI), ~0 CPU; auto with a
                sleeping Brain
    sleep       spin 20 us, then 20 us naps: ~50 us

After the wake the fast path (wait_and_prepare, aegis.binance.wire) stays in nogil code: it builds the signed request and
the journal line, writes the line, and on a plain connection send(2)s the order itself. Python (GIL) comes next,
for the answer only. The generic path (TradeConfig.fast_path = False, and cancels) goes through aegis.binance.client.
The GIL: a sender holding it for its Python HTTP work would stall a Brain that returns to Python between batches,
so the Brain stays in its nogil loop (aegis.brain.process.consume_loop) and the GIL switch interval is 100 us
([trade] gil_switch_us) so no Python thread of the Brain process can hold the sender off for 5 ms. The journal is
written without fsync on the order path ([trade] fsync = interval).
Several orders in flight: the send never waits for an answer. REST orders go out on up to [trade] in_flight
keep-alive connections, one each (Binance documents no HTTP/1.1 pipelining); ws-fapi orders are pipelined, up to
[trade] in_flight on its one connection, each answer found by the request id it carries. The jitted code sends
request k of a batch on the k-th connection with no answer awaited (on ws-fapi the one socket, k times), and its
wait also ends when an answer to an order in flight can be read (poll(2) every 20 us), so the sender's Python runs
for an answer, never to look for one. A reduce-only order,
a cancel or a cancel-all waits for the answers of its symbol's orders in flight: two connections do not keep their
requests' order, and what it reduces or cancels must be on the book first. In the default run an order that came
while the previous one awaited its answer (0.5-2 ms from the venue at nice 10) waited for it: 2 % of orders, which
made tick-to-trade p99 2.6 ms; with four in flight p99 is 199-264 us (bench/MEASURED.md). After a send a
spin-yield sender gives the core straight back to the Brain, which handed it over mid-batch, and sends in the same
call what the Brain hands off before yielding again: the default strategy flips on two quick ticks, and the second
order otherwise waited ~200 us for the sender's Python bookkeeping of the first (cold caches here).
The wake protocol is Dekker-style: the sender announces it will sleep with a locked RMW (seq_cst) and re-checks the
queue, the Brain publishes and then reads the flag with a locked RMW; one of the two always sees the other, and
FUTEX_WAIT re-checks the flag in the kernel, so a wake can't be lost; a 50 ms timeout bounds any surprise.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from numba.experimental import structref

from aegis.core import control, ring
from aegis.core.borrow import borrowed
from aegis.core.bundle import BundleType
from aegis.core.jit import njit
from aegis.core.latency import new_set, record_order_request
from aegis.core.ratelog import RateLimitedLog
from aegis.core import wait as waiting
from aegis.binance import wire
from aegis.core.atomics import load_acquire, store_release
from aegis.core.clock import cpu_relax, now_ns, wall_ns, yield_cpu
from aegis.core.records import (ACTION_CANCEL, ACTION_CANCEL_ALL, ACTION_NEW, FILL_DTYPE, ORDER_MARKET,
                           ORDER_REQUEST_DTYPE, SIDE_BUY, STATUS_CANCELED, STATUS_EXPIRED, STATUS_FILLED, STATUS_NEW,
                           STATUS_PARTIALLY_FILLED, STATUS_REJECTED, TIF_FOK, TIF_GTC, TIF_GTX, TIF_IOC)
from aegis.binance.signing import units_to_str
from aegis.trade import risk as riskmod
from aegis.trade.journal import JC_POS, JournalFailed, map_store

log = logging.getLogger("aegis.trade.sender")

# --- how the sender waits: the engine's wait strategies (aegis.core.wait) --------------------------------------
SPIN_BEFORE_PARK_NS = 20_000    # catch back-to-back requests without a syscall
PARK_TIMEOUT_NS = 50_000_000    # a parked sender re-checks stop/housekeeping at least this often
ANSWER_CHECK_NS = 20_000        # while orders are in flight the jitted wait looks for their answers this often


# --------------------------------------------------------------------------------------------- the queue
class RequestQueue:
    """In-process SPSC ring of ORDER_REQUEST records (plain numpy arrays, aegis.core.ring layout)."""

    def __init__(self, capacity: int = 4096, dtype=ORDER_REQUEST_DTYPE):
        ring.check_capacity(capacity)
        self.header = np.zeros(ring.HEADER_SLOTS, np.int64)
        ring.init_header(self.header, capacity, np.dtype(dtype).itemsize)
        self.records = np.zeros(capacity, dtype)
        self.capacity = capacity

    def abort(self) -> None:
        ring.abort(self.header)
        waiting.signal(self.header)

    def stats(self) -> dict:
        h = self.header
        return {"published": int(h[ring.H_WRITE]), "consumed": int(h[ring.H_READ]), "dropped": int(h[ring.H_DROPPED]),
                "wakes": int(h[waiting.W_WAKES]), "parks": int(h[waiting.W_PARKS])}


@njit(cache=True, nogil=True)
def handoff(header, records, req, now):
    """Brain side: stamp handoff_ts, enqueue one request, wake the sender. Never blocks: 0 when the queue is full
    (the caller counts it as a QUEUE_FULL rejection), else 1."""
    seq, k = ring.claim(header, 1)
    if k == 0:
        header[ring.H_DROPPED] += 1
        return 0
    req.handoff_ts = now
    records[seq & (header[ring.H_CAPACITY] - 1)] = req
    ring.publish(header, 1)
    waiting.signal(header)
    return 1


@njit(cache=True, nogil=True)
def sender_wait(header, records, dst, max_n, mode, timeout_ns, stamps):
    """Sender side (nogil): wait until requests arrive, the queue is aborted or `timeout_ns` passes; copy up to
    max_n into dst and return the count. stamps[0] = when they were seen (CLOCK_MONOTONIC ns)."""
    start = now_ns()
    deadline = start + timeout_ns
    spin_until = start + SPIN_BEFORE_PARK_NS
    spins = 0
    while True:
        n = ring.read_batch(header, records, dst, max_n)
        if n > 0:
            stamps[0] = now_ns()
            return n
        if ring.aborted(header):
            return 0
        spins += 1
        t = now_ns() if (spins & 15) == 0 else start
        if t > deadline:
            return 0
        if mode == waiting.SPIN_YIELD:
            # on the Brain's core (it polls, and yields to us after a hand-off): no spin phase, which would only
            # delay the Brain, and no futex, whose wake-up syscall costs ~3 us more per order on both sides
            yield_cpu()
        elif mode == waiting.BUSY_SPIN or t < spin_until:
            cpu_relax()
        else:
            left = deadline - now_ns()
            if left <= 0:
                return 0
            waiting.wait_step(mode, header, ring.H_WRITE, load_acquire(header, ring.H_READ), ring.H_ABORT,
                           left if left < PARK_TIMEOUT_NS else PARK_TIMEOUT_NS)


@njit(cache=True, nogil=True)
def warm_order_path(enc, req, b, jmap, jcur):
    """Build `req` (the last new order) again into the scratch buffers and read the journal's ring where the next
    line goes, sending and storing nothing: the next real order then finds the encoder's code and tables, the
    buffers and the journal's page in the caches and the TLB. An order a few hundred ms after the last one
    otherwise built cold: in the default run this took prepare from 15 to 9 us p50 (bench/MEASURED.md). `b`: the
    sender's OrderBuffers (its `jit` bundle)."""
    state = b.state
    wall_ms = wall_ns() // 1_000_000
    mask_pos = state[wire.ST_MASK_POS]
    wire.encode_order(enc, req, wall_ms + state[wire.ST_OFFSET_MS], b.mask, state, b.out, 0, b.tmp)
    state[wire.ST_MASK_POS] = mask_pos     # mask keys are spent only by frames that leave
    wire.encode_journal_req(enc, req, wall_ms, b.jbuf, 0)
    # the ring's last stored byte, on the page the next line starts on unless that one starts a page
    p = load_acquire(jcur, JC_POS) - 1
    seen = jmap[p & (jmap.shape[0] - 1)] if p >= 0 and jmap.shape[0] > 0 else 0
    state[wire.ST_WARMS] += 1
    return seen


# --------------------------------------------------------------------------------------------- the fast path's buffers
# sent[i, ...] of wait_and_prepare: per request of the batch
SN_SEEN = 0      # when the sender saw it (CLOCK_MONOTONIC ns)
SN_BUILT = 1     # when its bytes and journal line were ready
SN_RESULT = 2    # what send(2) returned, when the jitted code sent it: bytes, or -errno
SN_AT = 3        # just before that send(2): the order's wire stamp
SN_DONE = 4      # when it returned (on loopback the receiver's TCP work runs inside it)
SN_COLS = 5


@structref.register
class BuffersType(BundleType):
    """Numba type of Buffers."""


class Buffers(structref.StructRefProxy):
    """The sender's preallocated fast-path arrays as one argument of its jitted code (one unboxing per call instead of
    fourteen). Built by OrderBuffers; its fields are that object's arrays, the same memory."""


BUFFER_FIELDS = ("batch", "stamps", "state", "mask", "out", "offs", "lens", "jbuf", "jends", "tmp", "busy", "fds",
                 "sent", "pfds")
structref.define_proxy(Buffers, BuffersType, list(BUFFER_FIELDS))


@njit(cache=True)
def _bundle(batch, stamps, state, mask, out, offs, lens, jbuf, jends, tmp, busy, fds, sent, pfds):
    # a cached constructor: the proxy's own one is compiled afresh in every process
    return Buffers(batch, stamps, state, mask, out, offs, lens, jbuf, jends, tmp, busy, fds, sent, pfds)


class OrderBuffers:
    """Everything the sender's jitted fast path reads and writes, preallocated once and owned by the sender thread:
    numpy arrays for its Python, and the same memory bundled for jitted code (`jit`). For a batch of up to n requests:

        batch   the requests taken from the queue (ORDER_REQUEST records)
        stamps  [when they were seen, when the first range was built] (CLOCK_MONOTONIC ns)
        state   aegis.binance.wire's state slots (ST_*), shared with the REST client (its clock offset)
        mask    the ws frame mask pool (aegis.binance.wire.new_mask_pool)
        out     the signed requests: request i at out[offs[i]:offs[i] + lens[i]]; lens[i] = 0: not prepared
                (the generic path takes it), -1: its journal line was refused (it must not be sent)
        jbuf    the journal lines: request i's ends at jends[i]
        tmp     the encoder's scratch
        busy    orders in flight per symbol index (counted by the sender's Python)
        fds     the plain-TCP order connection request k may leave on (-1: none, or TLS)
        sent    per request: SN_* stamps and what the jitted send returned
        pfds    the connections of the orders in flight as poll(2) entries (wire.pollfd), the first
                state[wire.ST_IN_FLIGHT] of them; for the jitted wait, which ends when an answer can be read"""

    def __init__(self, n: int, n_symbols: int, state: np.ndarray | None = None, batch: np.ndarray | None = None,
                 stamps: np.ndarray | None = None, busy: np.ndarray | None = None):
        self.batch = np.zeros(n, ORDER_REQUEST_DTYPE) if batch is None else batch
        self.stamps = np.zeros(2, np.int64) if stamps is None else stamps
        self.state = wire.new_state() if state is None else state
        self.mask = wire.new_mask_pool()
        self.out = np.zeros(n * wire.MAX_REQUEST, np.uint8)
        self.offs = np.zeros(n, np.int64)
        self.lens = np.zeros(n, np.int64)
        self.jbuf = np.zeros(n * wire.MAX_JOURNAL_LINE, np.uint8)
        self.jends = np.zeros(n, np.int64)
        self.tmp = np.zeros(wire.MAX_REQUEST * 2, np.uint8)
        self.busy = np.zeros(max(n_symbols, 1), np.int64) if busy is None else busy
        self.fds = np.full(n, -1, np.int64)
        self.sent = np.zeros((n, SN_COLS), np.int64)
        self.pfds = np.full(n, wire.pollfd(-1), np.int64)
        self.jit = _bundle(*(getattr(self, f) for f in BUFFER_FIELDS))

    def set_in_flight(self, fds: list[int]) -> None:
        """The connections of the orders in flight, oldest first. The jitted wait watches the first n; the answers of
        any more are read when it returns (it does every PARK_TIMEOUT_NS at most)."""
        k = min(len(fds), self.pfds.shape[0])
        self.pfds[:k] = [wire.pollfd(fd) for fd in fds[:k]]
        self.pfds[k:] = wire.pollfd(-1)
        self.state[wire.ST_IN_FLIGHT] = k


@njit(cache=True, nogil=True, inline="always")
def _prepare_range(dst, state, mask_pool, out, offs, lens, jbuf, jends, tmp, a, n, ts_ms, wall_ms, enc, jfd, jmap,
                   jcur, pos, jpos):
    """Requests dst[a:n]: the new orders' signed bytes from out[pos] and journal lines from jbuf[jpos], the
    lines stored (or written) before anything can be sent. Returns where the next bytes and line go. The arrays are
    wait_and_prepare's OrderBuffers fields, read out of the bundle before its wait: read here, after an order was
    seen, they cost ~100 ns of prepare p50 (each read takes a reference: aegis.core.borrow; bench/MEASURED.md)."""
    j0 = jpos
    for i in range(a, n):
        lens[i] = 0
        jends[i] = jpos
        if dst[i].action != ACTION_NEW:
            continue
        if pos + wire.MAX_REQUEST > out.shape[0] or jpos + wire.MAX_JOURNAL_LINE > jbuf.shape[0]:
            continue
        offs[i] = pos
        pos = wire.encode_order(enc, dst[i], ts_ms, mask_pool, state, out, pos, tmp)
        lens[i] = pos - offs[i]
        jpos = wire.encode_journal_req(enc, dst[i], wall_ms, jbuf, jpos)
        jends[i] = jpos
    if jpos > j0 and jmap.shape[0] > 0:
        # (a ring journal is never "always": its syncs are the sync thread's)
        if map_store(jmap, jcur, jbuf[j0:jpos], jpos - j0) < 0:
            # no room in the ring (the sync thread is behind; or the journal was closed): these go the generic way,
            # whose append copies the ring out or reports the failure
            for i in range(a, n):
                if lens[i] > 0:
                    lens[i] = 0
    elif jpos > j0:
        w = wire.write_all(jfd, jbuf[j0:jpos], jpos - j0)
        failed = w != jpos - j0
        if failed:
            # why (errno, read before anything else can change it), or how much of it the file took
            state[wire.ST_WRITE_ERRNO] = -wire.last_errno() if w < 0 else w
        elif state[wire.ST_FSYNC] != 0 and wire.fdatasync(jfd) != 0:
            failed = True
            state[wire.ST_WRITE_ERRNO] = -wire.last_errno()
        if failed:
            for i in range(a, n):
                if lens[i] > 0:
                    lens[i] = -1
    return pos, jpos


@njit(cache=True, nogil=True)
def wait_and_prepare(header, records, max_n, mode, timeout_ns, enc, b, jfd, jmap, jcur):
    """sender_wait into b.batch (b: the sender's OrderBuffers, its `jit` bundle), then, still without the GIL, the
    fast path's work for every new order of the batch: the signed request bytes (aegis.binance.wire) into
    out[offs[i]:offs[i] + lens[i]] and the journal `req` lines, stored into the journal's ring (jmap, jcur:
    aegis.trade.journal.map_store) or, with an empty jmap, written to the journal's fd jfd with one write(2), before
    anything can be sent. lens[i] = 0: not prepared (not a new order, or no room, here or in the ring: the generic
    path takes it); -1: the journal refused the line, so it must not be sent. jends[i] = end of request i's journal
    line in jbuf; sent[i, SN_*] its stamps.

    Then the batch's first requests leave from here, journaled and without the GIL, request k on the plain-TCP
    order connection fds[k] (one with no answer awaited; -1: none, or TLS), for as long as each is a prepared order
    and not a reduce-only one whose symbol has orders in flight (busy[s], counted by the sender's Python; it waits
    for their answers); the rest of the batch goes from Python, in order, so a cancel ahead of an order keeps its
    place. state[ST_SENT_N] = how many were sent (or tried). A spin-yield sender then yields its core back to the
    Brain, which handed it over mid-batch, and sends at once what the Brain hands off before it yields again (a
    strategy flipping on two quick ticks): the sender's Python (~200 us a order with cold caches in the default run)
    would otherwise hold those up. Returns the batch's length.
    With state[ST_WARM_NS] > 0 the wait is cut into steps, and every ST_WARM_NS the last batch's first request, if it
    was a new order, is built again into scratch (warm_order_path). With orders in flight (state[ST_IN_FLIGHT] > 0,
    their connections in pfds) it also ends, returning 0, once one of their answers can be read: the sender's Python
    then runs only for an answer, never to look for one."""
    # every field read once, before the wait, as a borrowed view (aegis.core.borrow; b owns the arrays for the whole
    # call): read after an order was seen, the fields cost ~100 ns of prepare p50 (see _prepare_range)
    dst, stamps, state, fds, sent, pfds = borrowed((b.batch, b.stamps, b.state, b.fds, b.sent, b.pfds))
    lens, offs, out, busy, mask, jbuf, jends, tmp = borrowed((b.lens, b.offs, b.out, b.busy, b.mask, b.jbuf, b.jends,
                                                               b.tmp))
    warm_ns = state[wire.ST_WARM_NS]
    step = warm_ns if warm_ns > 0 else timeout_ns
    if state[wire.ST_IN_FLIGHT] > 0 and ANSWER_CHECK_NS < step:
        step = ANSWER_CHECK_NS
    if step >= timeout_ns:
        n = sender_wait(header, records, dst, max_n, mode, timeout_ns, stamps)
    else:
        start = now_ns()
        deadline = start + timeout_ns
        next_warm = start + warm_ns
        while True:
            left = deadline - now_ns()
            n = sender_wait(header, records, dst, max_n, mode, step if step < left else left, stamps)
            if n > 0 or left <= step or ring.aborted(header):
                break
            if state[wire.ST_IN_FLIGHT] > 0 and wire.any_readable(pfds[:state[wire.ST_IN_FLIGHT]]):
                break                                   # an answer to read: the sender's Python takes it
            if warm_ns > 0 and now_ns() >= next_warm:
                next_warm += warm_ns
                if dst[0].action == ACTION_NEW:
                    warm_order_path(enc, dst[0], b, jmap, jcur)
    if n == 0:
        return 0
    state[wire.ST_SENT_N] = 0
    wall_ms = wall_ns() // 1_000_000
    ts_ms = wall_ms + state[wire.ST_OFFSET_MS]
    seen = stamps[0]
    a = 0
    k = 0
    pos = 0
    jpos = 0
    while True:
        pos, jpos = _prepare_range(dst, state, mask, out, offs, lens, jbuf, jends, tmp, a, n, ts_ms, wall_ms, enc, jfd,
                                   jmap, jcur, pos, jpos)
        built = now_ns()
        stamps[1] = built
        # a 429/418 back-off may have begun (in any thread) since the sender last asked for the descriptors
        backoff_until = load_acquire(state, wire.ST_BACKOFF_UNTIL_NS)
        cut = False
        while k < n and k < fds.shape[0] and fds[k] >= 0 and lens[k] > 0 and \
                (dst[k].reduce_only == 0 or not _symbol_in_flight(dst, k, busy)) and \
                (backoff_until == 0 or now_ns() >= backoff_until):
            sent[k, SN_AT] = now_ns()
            r = wire.send_now(fds[k], out, offs[k], lens[k])
            sent[k, SN_RESULT] = r
            sent[k, SN_DONE] = now_ns()
            k += 1
            if r != lens[k - 1]:
                # not all of it left: Python sends the rest first, and the next requests after it (on a websocket
                # several requests share one socket, where a frame after a cut one would corrupt the stream)
                cut = True
                break
        for i in range(a, n):
            sent[i, SN_SEEN] = seen
            sent[i, SN_BUILT] = built
        state[wire.ST_SENT_N] = k
        if cut or k < n or k == 0 or mode != waiting.SPIN_YIELD:
            break
        yield_cpu()
        if n >= max_n or k >= fds.shape[0] or fds[k] < 0:
            break           # no room for more here: what the Brain handed off meanwhile waits for our Python
        m = ring.read_batch(header, records, dst[n:], max_n - n)
        if m == 0:
            break
        seen = now_ns()
        a = n
        n += m
    return n


@njit(cache=True, nogil=True)
def _symbol_in_flight(dst, k, busy):
    """Request k's symbol has orders whose answer is not read: counted by the sender (busy), or sent just now."""
    s = dst[k].symbol
    if busy[s] != 0:
        return True
    for j in range(k):
        if dst[j].symbol == s:
            return True
    return False


def precompile(cfg) -> None:
    """What a Brain does before the venue answers (aegis.core.startup.receive_rest): compile the fast path if run
    `cfg` will trade on it, so that ~14 s of a cold start overlaps the embedded venue's start."""
    if (cfg.source == "venue" or cfg.venue != "embedded") and \
            TradeConfig.from_section(cfg.section("trade")).fast_path:
        warm_fast_path()


def warm_fast_path() -> None:
    """Compile (or load from Numba's cache) wait_and_prepare and everything it calls, so the first order does not
    pay it: ~14 CPU-s on a cold cache on a 2-vCPU EPYC, well under a second from the cache."""
    from aegis.trade.risk import SymbolRules
    q = RequestQueue(ring.MIN_CAPACITY)
    enc = wire.build_encoder("rest", [SymbolRules("WARMUSDT")], "w-", "k", "s", 5000, "ACK", "http://127.0.0.1:1")
    b = OrderBuffers(1, 1)
    wait_and_prepare(q.header, q.records, 1, waiting.BUSY_SPIN, 0, enc, b.jit, -1, np.zeros(0, np.uint8),
                     np.zeros(2, np.int64))
    map_store(np.zeros(0, np.uint8), np.zeros(2, np.int64), np.zeros(1, np.uint8), 1)
    map_store(np.zeros(0, np.uint8), np.zeros(2, np.int64), np.frombuffer(b"x", np.uint8), 1)   # Journal.append's
    # and what the sender calls right after the first order: compiling it there would hold up that order's answer
    # (and, sharing the Brain's core, the Brain)
    record_order_request(new_set(), np.zeros(1, ORDER_REQUEST_DTYPE)[0], 0)
    FillQueue(ring.MIN_CAPACITY).put(np.zeros(1, FILL_DTYPE)[0])
    # and what stop() calls: loading it there would hold up the stop (and the cancels after it)
    q.abort()


def default_sender_cores() -> tuple:
    """Every core except the one(s) the creating thread (the Brain) is pinned to, when that leaves any.

    A thread inherits its creator's CPU mask, so without this the sender would share the Brain's core and, with a
    busy-spinning Brain, only run when the scheduler takes the core away from it (milliseconds). On the other
    core(s) a futex-woken sender preempts the Feed at once (it is a sleeper; the Feed is CPU-bound)."""
    mine = set(os.sched_getaffinity(0))
    allowed = set(range(os.cpu_count() or 1))
    try:
        with open("/sys/fs/cgroup/cpuset.cpus.effective") as f:   # containers may allow fewer cpus
            allowed = _parse_cpus(f.read()) or allowed
    except OSError:
        pass
    rest = allowed - mine
    return tuple(sorted(rest)) if rest else ()


def move_off_brain_core(thread: threading.Thread | None, cores: tuple | None = None) -> None:
    """Pin a helper thread of the Brain process (journal sync, user stream) to the other core(s). Threads inherit
    their creator's CPU mask, and TradeSession starts in the pinned Brain thread: left there, a woken helper
    preempts the Brain mid-tick (its Python runs ~50-100 us), which shows as the tick-to-trade p99."""
    cores = default_sender_cores() if cores is None else cores
    tid = getattr(thread, "native_id", None)
    if cores and tid:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError as e:
            log.warning("cannot move thread %s off the Brain's core: %s", thread.name, e)


def _parse_cpus(text: str) -> set:
    out = set()
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        elif part.strip():
            out.add(int(part))
    return out


def resolve_wait(name: str, own_core: bool, brain_polls: bool = False) -> int:
    """auto: busy-spin on a core of its own; else, when the Brain polls without sleeping (busy-spin / spin-yield),
    spin-yield on the Brain's core and let the Brain hand the core over after each hand-off (a same-core switch,
    ~2 us here, against ~20 us for waking another core of this VM); else block (futex) on another core."""
    if name == "auto":
        if own_core:
            return waiting.BUSY_SPIN
        return waiting.SPIN_YIELD if brain_polls else waiting.BLOCK
    return waiting.NAMES[name]


# --------------------------------------------------------------------------------------------- diagnostics
SAMPLES = 16384          # per-order timing samples kept (the latest); the histograms keep every order
RESULTS_KEPT = 256        # exchange answers kept by the sender for tests and tools (~2 KB each)
REJECT_LOG_INTERVAL_S = 10.0   # an exchange reject code is logged at most once per this many seconds


class Samples:
    """The latest `cap` rows of int64 samples in preallocated memory: per-order diagnostics that do not grow with
    the number of orders (a list of tuples grew by ~200 B per order for the life of the process)."""

    def __init__(self, cap: int, width: int = 1):
        self.cap = cap
        self.width = width
        self._a = np.zeros((cap, width), np.int64)
        self.n = 0

    def append(self, row) -> None:
        self._a[self.n % self.cap] = row
        self.n += 1

    def clear(self) -> None:
        self.n = 0

    def __len__(self) -> int:
        return min(self.n, self.cap)

    def rows(self) -> np.ndarray:
        """Oldest first, a copy; shape (len, width)."""
        if self.n <= self.cap:
            return self._a[:self.n].copy()
        k = self.n % self.cap
        return np.concatenate((self._a[k:], self._a[:k]))

    def __getitem__(self, i):
        r = self.rows()[i]
        return r[0] if self.width == 1 and np.ndim(r) == 1 else r

    def __array__(self, dtype=None, copy=None):
        r = self.rows()
        r = r[:, 0] if self.width == 1 else r
        return r if dtype is None else r.astype(dtype)


# --------------------------------------------------------------------------------------------- fills back
class FillQueue:
    """Events back into the Brain (fills, order state changes, exchange rejects): an in-process ring of FILL
    records. Producers are Python threads (user stream, sender), serialized by a lock; the Brain drains it with
    aegis.core.ring.read_batch in its jitted loop, first thing in every iteration (highest priority)."""

    def __init__(self, capacity: int = 4096):
        ring.check_capacity(capacity)
        self.header = np.zeros(ring.HEADER_SLOTS, np.int64)
        ring.init_header(self.header, capacity, FILL_DTYPE.itemsize)
        self.records = np.zeros(capacity, FILL_DTYPE)
        self._lock = threading.Lock()
        self._one = np.zeros(1, FILL_DTYPE)

    def put(self, rec) -> bool:
        """Enqueue one FILL record; waits (bounded, 1 s) rather than lose a fill if the Brain is behind."""
        with self._lock:
            self._one[0] = rec
            deadline = time.monotonic() + 1.0
            while ring.write_batch(self.header, self.records, self._one, 1, ring.POLICY_DROP_NEWEST, 0) == 0:
                self.header[ring.H_DROPPED] -= 1      # not dropped: we retry
                if time.monotonic() > deadline:
                    self.header[ring.H_DROPPED] += 1
                    log.error("fill queue full for 1 s: the Brain is not draining it")
                    return False
                time.sleep(0.0005)
            return True

    def drain(self, max_n: int = 1024) -> np.ndarray:
        """Python-side drain (tests, tools); the Brain uses ring.read_batch on .header/.records directly."""
        dst = np.zeros(max_n, FILL_DTYPE)
        n = ring.read_batch(self.header, self.records, dst, max_n)
        return dst[:n]


# --------------------------------------------------------------------------------------------- the sender
_TIF = {TIF_GTC: "GTC", TIF_IOC: "IOC", TIF_FOK: "FOK", TIF_GTX: "GTX"}


@dataclass(frozen=True)
class TradeConfig:
    """[trade] table."""
    transport: str = "rest"          # rest | ws (ws-fapi order.place / order.cancel)
    wait: str = "auto"               # auto | busy-spin | spin-yield | sleep | block (aegis.core.wait, resolve_wait)
    cores: tuple[int, ...] = ()      # CPU set of the sender thread (() = inherit)
    queue_capacity: int = 4096
    recv_window_ms: int = 5000
    timeout_s: float = 5.0           # HTTP / ws request timeout
    # orders sent before the answers of earlier ones: on REST one keep-alive connection each, on ws-fapi pipelined
    # on its one connection (a reduce-only order or a cancel still waits for the answers of its symbol's orders)
    in_flight: int = 4
    time_sync_interval_s: float = 300.0
    journal: str = ""                # "" = <out_dir>/journal-<venue>.jsonl (one per account; embedded: one per run)
    fsync: str = "interval"          # always | interval | never (see aegis.trade.journal: always = +0.5 ms per order)
    fsync_interval_ms: int = 50
    # listenKey PUT cadence (docs/binance-notes.md, User data stream: 30 min or less)
    keepalive_interval_s: float = 1800.0
    key_file: str = ""
    resp_type: str = "ACK"           # newOrderRespType: ACK | RESULT
    cancel_on_shutdown: bool = True
    resume: bool = False             # clear a HALTED state recorded in the journal (CLI --resume)
    gil_switch_us: int = 100         # sys.setswitchinterval for the Brain process (Python's default: 5000 us)
    fast_path: bool = True           # new orders built, signed and journaled in jitted code (aegis.binance.wire)
    # a polling sender (busy-spin, spin-yield) rebuilds the last order into scratch this often while it waits, so
    # the next one is not built cold (sender.warm_order_path); 0 = never. A sleeping or blocking sender never does.
    warm_us: int = 1000
    # exchange-side safety (aegis.trade.protect): a protective STOP_MARKET per position `protect` away from its
    # entry (a fraction, or "1%" in the file; 0 = none), and the countdownCancelAll dead-man switch
    protect: float = 0.0
    deadman: bool = True
    deadman_s: float = 120.0         # countdown armed per traded symbol, re-armed every deadman_s / 4

    @classmethod
    def from_section(cls, section: dict) -> "TradeConfig":
        from aegis.core import config as C
        if isinstance(section, dict) and "protect" in section:
            from aegis.trade.protect import parse_distance
            section = dict(section)
            try:
                section["protect"] = parse_distance(section["protect"])
            except ValueError as e:
                raise C.ConfigError(str(e)) from None
        checks = {"transport": C.one_of("rest", "ws"), "wait": C.one_of("auto", *waiting.NAMES),
                  "fsync": C.one_of("always", "interval", "never"), "resp_type": C.one_of("ACK", "RESULT"),
                  "cores": C.Check(lambda c: all(x >= 0 for x in c), "a list of CPU numbers"),
                  "queue_capacity": C.power_of_two(ring.MIN_CAPACITY), "recv_window_ms": C.between(1, 60000),
                  "protect": C.NON_NEGATIVE, "warm_us": C.between(0, 1_000_000),
                  "in_flight": C.between(1, 64)}
        return C.load_section(cls, "trade", section, checks, numbers=C.POSITIVE)


def order_params(req, rules, coid: str, resp_type: str = "ACK") -> dict:
    """Binance new-order params for one ORDER_REQUEST record (decimal strings from integer ticks/steps)."""
    r = rules[int(req["symbol"])]
    side = "BUY" if int(req["side"]) == SIDE_BUY else "SELL"
    market = int(req["order_type"]) == ORDER_MARKET
    # the params that are the same for every order of a symbol/side/type/timeInForce/reduceOnly come first, in
    # the order the fast path's HMAC midstates were computed over (aegis.binance.wire.rest_constant_params);
    # Binance checks the signature over the query as sent, in any order
    p = dict(wire.rest_constant_params(r.symbol, side, "MARKET" if market else "LIMIT",
                                       "" if market else _TIF[int(req["tif"])], bool(int(req["reduce_only"])),
                                       resp_type))
    p["newClientOrderId"] = coid
    if market:
        p["quantity"] = units_to_str(int(req["qty_steps"]), r.market_step_size)
    else:
        p["quantity"] = units_to_str(int(req["qty_steps"]), r.step_size)
        p["price"] = units_to_str(int(req["price_ticks"]), r.tick_size)
    return p


_STATUS = {"NEW": STATUS_NEW, "PARTIALLY_FILLED": STATUS_PARTIALLY_FILLED, "FILLED": STATUS_FILLED,
           "CANCELED": STATUS_CANCELED, "EXPIRED": STATUS_EXPIRED, "EXPIRED_IN_MATCH": STATUS_EXPIRED,
           "REJECTED": STATUS_REJECTED}


class Sender:
    """The sender thread. `client` is an aegis.binance.client.BinanceClient (REST) or WsTradeClient (ws-fapi)."""

    def __init__(self, queue: RequestQueue, client, journal, prefix: str, rules, fills: FillQueue | None = None,
                 wait: int = waiting.BLOCK, cores: tuple = (), resp_type: str = "ACK", ctl=None, latency=None,
                 batch: int = 64):
        self.q = queue
        self.client = client
        self.journal = journal
        self.prefix = prefix
        self.rules = rules
        self.fills = fills
        self.wait = wait
        self.cores = tuple(cores)
        self.resp_type = resp_type
        self.ctl = ctl                    # control block (int64) for the status counters, optional
        self.latency = latency            # aegis.core.latency histogram set, optional
        self._batch = np.zeros(batch, ORDER_REQUEST_DTYPE)
        self._stamps = np.zeros(2, np.int64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = self.acks = self.rejects = self.errors = 0
        self.handoff_ns = Samples(SAMPLES)   # last hand-off latencies, for the status line and tests
        self.cores_used: tuple = ()
        # per order: (handoff, seen by the sender, request built, handed to the socket, send returned)
        self.wire_ns = Samples(SAMPLES, 5)
        self._seen_ns = 0
        self.results: dict[int, dict] = {}   # client_id -> last exchange answer, the last RESULTS_KEPT (tests/tools)
        self.fast = None                  # aegis.binance.wire tables when the fast path is on (enable_fast_path)
        self.housekeeping = None          # optional callable run when idle (kill-switch file, clock resync)
        self.rlog = RateLimitedLog(log, REJECT_LOG_INTERVAL_S)   # exchange rejects: one line per code per interval
        self.on_unknown = None            # optional callable after an order ended in an unknown state (reconcile)
        # orders sent whose answer is not read yet, oldest first: (client Flight, request, client id, client order
        # id, symbol index, symbol name). A new order goes at once; a reduce-only order, a cancel or a cancel-all
        # waits for the answers of its symbol's orders in flight, so the order it reduces or cancels is on the
        # exchange's book before it arrives (two connections do not keep their requests' order)
        self._flights: list[tuple] = []
        self._busy = np.zeros(max(len(rules), 1), np.int64)   # orders in flight per symbol (read by jitted code)
        self.buf: OrderBuffers | None = None   # the fast path's arrays (enable_fast_path)
        self._fd_conns: list = []         # the order connections behind buf.fds, which the jitted code sends on
        self._fds_stale = True            # connections were taken or freed since buf.fds was filled
        self._unbooked: list[tuple] = []  # sent orders not yet counted and timed (_book)

    def enable_fast_path(self, transport: str, api_key: str, secret: str, recv_window_ms: int, rest_url: str,
                         fsync_always: bool = False, warm_us: int = TradeConfig.warm_us) -> None:
        """Build new orders in jitted code (aegis.binance.wire): signed bytes and journal line ready without the GIL.
        Needs a client with send_prepared (BinanceClient or WsTradeClient) and a journal with a file. A polling
        sender keeps the path warm every warm_us while it waits (TradeConfig.warm_us)."""
        n = self._batch.shape[0]
        self.fast = wire.build_encoder(transport, self.rules, self.prefix, api_key, secret, recv_window_ms,
                                       self.resp_type, rest_url)
        rest = getattr(self.client, "rest", self.client)
        # the REST client's state array carries the exchange clock offset (resyncs reach the next order at once)
        self.wire_state = getattr(rest, "wire_state", None)
        if self.wire_state is None:
            self.wire_state = wire.new_state()
        self.wire_state[wire.ST_FSYNC] = int(fsync_always)
        polls = self.wait in (waiting.BUSY_SPIN, waiting.SPIN_YIELD)
        self.wire_state[wire.ST_WARM_NS] = warm_us * 1000 if polls else 0
        self.buf = OrderBuffers(n, len(self.rules), self.wire_state, self._batch, self._stamps, self._busy)
        self._out_mv = memoryview(self.buf.out)

    # ---- lifecycle
    def start(self) -> "Sender":
        self._thread = threading.Thread(target=self._run, name="aegis-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.q.header[waiting.W_YIELD_TO] = 0
        self._stop.set()
        self.q.abort()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def coid(self, client_id: int) -> str:
        return f"{self.prefix}{int(client_id)}"

    # ---- thread body
    def _run(self) -> None:
        # a sharing sender stays on the Brain's core (it inherits the Brain's affinity): the Brain hands it the core
        # after each hand-off; every other mode leaves the Brain's core
        cores = self.cores or (() if self.wait == waiting.SPIN_YIELD else default_sender_cores())
        if cores:
            try:
                os.sched_setaffinity(0, cores)   # pid 0 = this thread only (Linux)
            except OSError as e:
                log.warning("sender: cannot pin to cores %s: %s", cores, e)
        self.cores_used = tuple(sorted(os.sched_getaffinity(0)))
        # read by the Brain with an acquire load
        self.q.header[waiting.W_YIELD_TO] = int(self.wait == waiting.SPIN_YIELD)
        h, recs, dst = self.q.header, self.q.records, self._batch
        while not self._stop.is_set():
            if self.fast is not None:
                if self._fds_stale:
                    self._refresh_fds()
                if self.wire_state[wire.ST_MASK_POS] > wire.MASK_POOL // 2:
                    self.buf.mask[:] = wire.new_mask_pool()
                    self.wire_state[wire.ST_MASK_POS] = 0
                n = wait_and_prepare(h, recs, dst.shape[0], self.wait, PARK_TIMEOUT_NS, self.fast, self.buf.jit,
                                     self.journal.fd,
                                     self.journal.map_buf, self.journal.map_cursor)   # read per call: emptied at close
            else:
                n = sender_wait(h, recs, dst, dst.shape[0], self.wait, PARK_TIMEOUT_NS, self._stamps)
            if n > 0:
                self._fds_stale = True
                self._send_batch(dst, n)
                if h[ring.H_WRITE] != h[ring.H_READ]:
                    continue                # more orders already waiting: they go before any bookkeeping
            self._book()
            if self._flights:
                self._collect()
            elif n == 0 and self.housekeeping is not None:
                self._fds_stale = True      # it may replace a connection the server closed
                try:
                    self.housekeeping()
                except Exception:   # housekeeping must never kill the sender
                    log.exception("sender housekeeping failed")
        # stopping: every order sent is answered (or times out and is settled) before the thread ends
        self._book()
        self._collect(wait=True)

    def _send_batch(self, dst, n: int) -> None:
        fast = self.fast is not None
        for i in range(n):
            req = dst[i]
            self._seen_ns = int(self.buf.sent[i, SN_SEEN]) if fast else int(self._stamps[0])
            self.handoff_ns.append(self._seen_ns - int(req["handoff_ts"]))
            try:
                if fast and self.buf.lens[i] != 0:
                    self._process_prepared(req, i)
                else:
                    self._settle(int(req["symbol"]))   # what it cancels or reduces is on the book first
                    self.process(req)
            except Exception as e:   # one bad request must not stop the order path
                self.errors += 1
                log.error("sender: request %d failed: %s", int(req["client_id"]), type(e).__name__)

    def _collect(self, wait: bool = False) -> None:
        """Read the answers that have arrived (all of them, waiting for each, with `wait`)."""
        if not self._flights:
            return
        if wait:
            ready = list(self._flights)
        else:
            done = {id(f) for f in self.client.answered([e[0] for e in self._flights])}
            ready = [e for e in self._flights if id(e[0]) in done]
        if ready:
            self._fds_stale = True
        for e in ready:
            try:
                self._settle_one(e)
            except Exception as ex:   # one bad answer must not stop the order path
                self.errors += 1
                log.error("sender: answer to request %d failed: %s", e[2], type(ex).__name__)

    def _settle_one(self, e: tuple) -> None:
        """Read (waiting if need be) the answer of one order in flight and act on it."""
        self._flights.remove(e)
        self._flights_changed()
        flight, req, cid, coid, sym_i, sym = e
        self._busy[sym_i] -= 1
        self._answer(req, cid, coid, sym, self.client.finish_prepared(flight))

    def _settle(self, sym_i: int) -> None:
        """Answers of symbol sym_i's orders in flight, oldest first: before its reduce-only order or cancel goes."""
        for e in [e for e in self._flights if e[4] == sym_i]:
            self._settle_one(e)

    def _free_connection(self):
        """An order connection with no answer awaited: when all are, the oldest order in flight is answered first."""
        free = self.client.free_order_connections(1)
        while not free and self._flights:
            self._settle_one(self._flights[0])
            free = self.client.free_order_connections(1)
        return free[0] if free else None

    def _flights_changed(self) -> None:
        if self.buf is not None:
            self.buf.set_in_flight([e[0].fd for e in self._flights])

    def _refresh_fds(self) -> None:
        """The order connections the jitted code may send the next orders on, one each, in order."""
        fds = self.buf.fds
        self._fd_conns = self.client.free_order_connections(fds.shape[0])
        fds[:] = -1
        for k, c in enumerate(self._fd_conns):
            fds[k] = self.client.plain_fd(c)
        self._fds_stale = False

    def _count(self, slot_name: str) -> None:
        if self.ctl is not None:
            slot = getattr(control, slot_name)
            self.ctl[control.base(control.ROLE_SENDER) + slot] += 1

    def _note(self, kind: str, **fields) -> None:
        """Journal a cancel: it is sent even when the journal fails (a cancel can only reduce what is at risk; the
        failure itself has been reported and has halted trading)."""
        try:
            self.journal.append(kind, **fields)
        except JournalFailed:
            pass

    def process(self, req) -> dict | None:
        """Journal, send, journal the answer, report rejects back to the Brain. Public for tests/tools."""
        action = int(req["action"])
        sym = self.rules[int(req["symbol"])].symbol
        cid = int(req["client_id"])
        if action == ACTION_NEW:
            coid = self.coid(cid)
            try:
                params = order_params(req, self.rules, coid, self.resp_type)
                self.journal.append("req", id=cid, coid=coid, sym=sym, side=params["side"], type=params["type"],
                                    tif=params.get("timeInForce", ""), qty=params["quantity"],
                                    px=params.get("price", "0"), ro=bool(int(req["reduce_only"])), act="new",
                                    x=int(req["exch_ts"]))
            except Exception:
                # not journaled = not sent (disk full, bad record): release it in the Brain's risk state
                self._event(cid, req, STATUS_REJECTED, 0)
                raise
            t0 = time.monotonic_ns()
            res = self.client.place_order(params)
            wire = getattr(self.client, "first_send_ns", 0) or t0
            self.wire_ns.append((int(req["handoff_ts"]), self._seen_ns, t0, wire, wire))
            self.sent += 1
            self._count("R_SENDER_SENT")
            if self.latency is not None:
                record_order_request(self.latency, req, wire)
            self._answer(req, cid, coid, sym, res)
            return res
        if action == ACTION_CANCEL:
            target = int(req["target_id"])
            coid = self.coid(target)
            self._note("req", id=cid, coid=coid, sym=sym, act="cancel", target=target)
            res = self.client.cancel_order(sym, coid)
            self.sent += 1
            self._count("R_SENDER_SENT")
            if res.get("ok"):
                o = res["order"]
                st = o.get("status", "")
                final = st in ("CANCELED", "FILLED", "EXPIRED")
                self._note("final" if final else "ack", id=target, coid=coid, sym=sym,
                           oid=int(o.get("orderId", 0)), status=st)
                if final and st != "FILLED":
                    # tell the Brain now (the user stream repeats it; a second final event is a no-op in risk)
                    self._event(target, req, _STATUS.get(st, STATUS_CANCELED), int(o.get("orderId", 0)))
            else:
                self._note("cancel_rej", id=target, coid=coid, sym=sym, code=res.get("code"), msg=res.get("msg", ""))
            return res
        if action == ACTION_CANCEL_ALL:
            self._note("req", id=cid, coid="", sym=sym, act="cancel_all")
            res = self.client.cancel_all(sym)
            self.sent += 1
            self._count("R_SENDER_SENT")
            self._note("cancel_all", sym=sym, ok=bool(res.get("ok")), code=res.get("code"))
            return res
        log.error("sender: unknown action %d", action)
        return None

    def _process_prepared(self, req, i: int) -> None:
        """A new order whose bytes and journal line the jitted fast path made (wait_and_prepare): sent, and its
        answer read later (_collect), or now when the client already has it."""
        cid = int(req["client_id"])
        coid = f"{self.prefix}{cid}"
        b = self.buf
        if b.lens[i] < 0 or self.journal.failed is not None:
            # not journaled = not sent: release it in the Brain's risk state
            log.error("sender: journal write failed; order %s not sent", coid)
            self.errors += 1
            self._event(cid, req, STATUS_REJECTED, 0)
            if b.lens[i] < 0:
                err = int(self.wire_state[wire.ST_WRITE_ERRNO])
                self.journal.report_failure(os.strerror(-err) if err < 0 else f"short write ({err} bytes)")
            return None
        off = int(b.offs[i])
        adopted = []
        sym_i = int(req["symbol"])
        req = req.copy()                  # the batch buffer is reused before a flight's answer is read

        def on_sent():
            # the journal's in-memory view learns of the request before its answer (or a fill) can arrive
            adopted.append(self.journal.adopt(bytes(b.jbuf[(b.jends[i - 1] if i else 0):b.jends[i]])))

        pre = None
        if i < self.wire_state[wire.ST_SENT_N]:        # the jitted code already sent it (or tried), on fds[i]
            pre = (int(b.sent[i, SN_RESULT]), int(b.sent[i, SN_AT]))
            self.client.send_return_ns = int(b.sent[i, SN_DONE])
            conn = self._fd_conns[i]
        else:
            if req["reduce_only"]:
                self._settle(sym_i)                     # what it reduces is on the book first
            conn = self._free_connection()
        res = self.client.send_prepared(self._out_mv[off:off + int(b.lens[i])], coid,
                                        lambda: order_params(req, self.rules, coid, self.resp_type), on_sent, pre,
                                        conn)
        if not adopted:
            on_sent()
        wire_ns = self.client.first_send_ns or time.monotonic_ns()
        # counted and timed once the queue is empty (_book): a second order already waiting goes first
        self._unbooked.append((req, self._seen_ns, int(b.sent[i, SN_BUILT]), wire_ns,
                               getattr(self.client, "send_return_ns", 0) or wire_ns))
        sym = self.rules[sym_i].symbol
        if isinstance(res, dict):                       # answered already (a back-off; a failed connect)
            self._answer(req, cid, coid, sym, res)
        else:
            self._flights.append((res, req, cid, coid, sym_i, sym))
            self._flights_changed()
            self._busy[sym_i] += 1

    def _book(self) -> None:
        """The sent orders' counters and wire stamps (status line, latency histograms)."""
        for req, seen, built, wire_ns, returned in self._unbooked:
            self.wire_ns.append((int(req["handoff_ts"]), seen, built, wire_ns, returned))
            self.sent += 1
            self._count("R_SENDER_SENT")
            if self.latency is not None:
                record_order_request(self.latency, req, wire_ns)
        self._unbooked.clear()

    def _answer(self, req, cid, coid, sym, res) -> None:
        self.results[cid] = res
        if len(self.results) > RESULTS_KEPT:     # oldest first (dicts keep insertion order): memory stays flat
            del self.results[next(iter(self.results))]
        if res.get("ok"):
            o = res["order"]
            self.acks += 1
            self._count("R_SENDER_ACKS")
            self.journal.append("ack", id=cid, coid=coid, sym=sym, oid=int(o.get("orderId", 0)),
                                status=o.get("status", "NEW"))
            return
        if res.get("unknown"):
            # timed out and the order query could not tell: leave it open; the user stream or reconciliation
            # will settle it. Never re-send blindly (that is how duplicates happen).
            self.journal.append("unknown", id=cid, coid=coid, sym=sym, msg=res.get("msg", ""))
            log.warning("sender: order %s %s: state unknown (%s); left open for the user stream and reconciliation",
                        sym, coid, res.get("msg", ""))
            if self.on_unknown is not None:
                try:
                    self.on_unknown()
                except Exception:
                    log.exception("sender: reconciliation after an unknown order state failed")
            return
        self.rejects += 1
        self._count("R_SENDER_REJECTS")
        self.journal.append("rej", id=cid, coid=coid, sym=sym, code=res.get("code"), msg=res.get("msg", ""))
        self.rlog.warning(f"rej{res.get('code')}", "sender: order %s %s rejected by the exchange: %s %s (%d rejects so "
                          "far; this code is logged once per %g s)", sym, coid, res.get("code"), res.get("msg", ""),
                          self.rejects, REJECT_LOG_INTERVAL_S)
        self._event(cid, req, STATUS_REJECTED, 0)

    def _event(self, cid, req, status, order_id) -> None:
        """An order state change the Brain must see (qty 0: not a trade)."""
        if self.fills is None:
            return
        rec = np.zeros(1, FILL_DTYPE)[0]
        rec["client_id"] = cid
        rec["order_id"] = order_id
        rec["symbol"] = req["symbol"]
        rec["side"] = req["side"]
        rec["status"] = status
        rec["orig_qty"] = req["qty"]
        rec["recv_ts"] = time.monotonic_ns()
        self.fills.put(rec)


# --------------------------------------------------------------------------------------------- shutdown
def cancel_all_open_orders(client, symbols=None) -> dict[str, dict]:
    """Cancel every open order of the account (shutdown, Ctrl-C, SIGTERM, a dead Brain).

    Asks the exchange which symbols have open orders (GET /fapi/v1/openOrders, so it works even when the Brain's
    own state is gone) and sends DELETE /fapi/v1/allOpenOrders for each; `symbols` adds symbols to cancel even if
    the listing failed. Returns {symbol: result}."""
    todo = set(symbols or ())
    listing = client.open_orders()
    if listing.get("ok"):
        todo |= {o["symbol"] for o in listing["orders"]}
    else:
        log.error("cancel-all: cannot list open orders (%s); cancelling known symbols only", listing.get("msg"))
    out = {}
    for s in sorted(todo):
        out[s] = client.cancel_all(s)
        if not out[s].get("ok"):
            log.error("cancel-all %s failed: %s %s", s, out[s].get("code"), out[s].get("msg"))
    return out


# --------------------------------------------------------------------------------------------- Brain-side kernels
# What the Brain's jitted loop calls (all nogil, no Python): drain events first, then orders.
F_KILL = 0            # trade flags (int64 array, TradeSession.flags): 1 = kill switch, 2 = kill + flatten
F_KILL_SEEN = 1
FLAGS_LEN = 8


@njit(cache=True, nogil=True)
def set_flag(flags, slot, value):
    store_release(flags, slot, value)


@njit(cache=True, nogil=True)
def poll_kill(flags, g, now):
    """Kill switch (file, supervisor, TradeSession.kill) -> risk HALTED (+ flatten); True the first time it fires.
    The Brain's order loop calls this once per iteration (aegis.brain.pipeline.service): one acquire load when nothing happens."""
    k = load_acquire(flags, F_KILL)
    if k > flags[F_KILL_SEEN]:
        # fires again when the request escalates (USR1, then USR2 = also flatten), and also when trading is
        # already HALTED (a halt kept from an earlier run): cancel everything again, and flatten if asked
        flags[F_KILL_SEEN] = k
        if k == 2:
            g[riskmod.G_FLATTEN_ON_HALT] = 1
        riskmod.kill(g, now)
        g[riskmod.G_HALT_PENDING] = 1
        return True
    return False


# --------------------------------------------------------------------------------------------- wiring
class TradeSession:
    """Everything the Brain process needs for trading, started in the Brain process (threads, sockets, files):

        ts = TradeSession(TradeConfig.from_section(...), RiskConfig.from_section(...), endpoints, keys, symbols)
        ts.start()              # journal replay, clock sync, exchangeInfo -> rules, risk book, sender, user stream
        ts.book.arrays, ts.queue.header/.records, ts.fills.header/.records, ts.flags  -> the Brain's jitted loop
        ts.stop()               # stop sender, cancel every open order (if configured), stop stream, close journal

    `symbols` is the Brain's symbol list in its integer-id order (the Feed's aegis.binance.symbols table)."""

    def __init__(self, tcfg: TradeConfig, rcfg, ep, keys, symbols, ctl=None, latency=None, journal_path=None,
                 resume: bool = False, own_core: bool = False, brain_polls: bool = False, lock: bool = True):
        self.tcfg = tcfg
        self.rcfg = rcfg
        self.ep = ep
        self.keys = keys
        self.symbols = list(symbols)
        self.ctl = ctl
        self.latency = latency
        self.journal_path = journal_path or tcfg.journal or "journal.jsonl"
        self.resume = resume
        self.own_core = own_core
        self.brain_polls = brain_polls   # the Brain busy-spins or spin-yields (never sleeps) on its core
        if ctl is not None:
            # the kill-switch flags live in the control block so the supervisor (another process) can pull it too
            b = control.base(control.ROLE_SENDER) + control.R_SENDER_FLAGS
            self.flags = ctl[b:b + FLAGS_LEN]
        else:
            self.flags = np.zeros(FLAGS_LEN, np.int64)
        self.journal = self.jstate = self.client = self.order_client = self.book = None
        self.queue = self.fills = self.sender = self.userstream = None
        self.protector = None
        self.rate_note = ""
        self._last_sync = 0.0
        self._last_state = (-1, -1)
        self.use_lock = lock        # False: a journal of this run alone (embedded venue), nobody to exclude
        self.ledger = None          # aegis.binance.weight.WeightLedger of a venue shared across runs
        self.lock = None
        self.orphans_cancelled: dict | None = None   # symbol -> ok, when a dead predecessor's orders were cancelled
        self.failsafe: str | None = None             # why the journal failed (then trading is halted for good)
        self.failsafe_cancelled: dict | None = None
        self._failsafe_thread = None
        self.remaining: dict | None = None           # symbol -> position the exchange still shows at stop()

    def start(self, wait_stream_s: float = 10.0) -> "TradeSession":
        try:
            return self._start(wait_stream_s)
        except BaseException:
            self.stop(cancel_open_orders=False)    # no half-started threads or open files behind a failure
            raise

    def _start(self, wait_stream_s: float) -> "TradeSession":
        from aegis.binance.client import BinanceClient, WsTradeClient
        from aegis.trade.journal import open_journal
        from aegis.trade.risk import STATE_NAMES, WHY_NAMES, RiskBook, SymbolRules, set_state
        from aegis.trade.userstream import UserStream
        from aegis.core.lockfile import LockBusy, LockFile
        # one Brain per journal (= per account): a second one would trade beside the first and both would
        # mistake the other's orders for their own
        if self.use_lock:
            self.lock = LockFile(brain_lock_path(self.journal_path))
            try:
                self.lock.acquire(LOCK_TRADING)
            except LockBusy as e:
                self.lock = None
                raise TradeSetupError(f"another engine (pid {e.pid}) is trading on journal {self.journal_path}; "
                                      "stop it first") from None
        self.journal, self.jstate = open_journal(self.journal_path, self.tcfg.fsync, self.tcfg.fsync_interval_ms)
        self.journal.on_failure = self._journal_failed
        from aegis.binance.weight import cached_exchange_info, ledger_for
        # the REST weight of the minute is shared with the runs just before this one (a crash loop must not get
        # the IP banned): wait for room for the start-up requests first
        self.ledger = ledger_for(self.ep.rest_url, self.ep.venue == "embedded")
        if self.ledger is not None:
            self.ledger.wait_for(START_WEIGHT, share=0.9)
        self.client = BinanceClient(self.ep, self.keys, self.tcfg.recv_window_ms, self.tcfg.timeout_s,
                                    order_connections=self.tcfg.in_flight)
        self.client.sync_time()
        self._last_sync = time.monotonic()
        if self.lock is not None and self.lock.previous[1] == LOCK_TRADING:
            # the last Brain on this account died while trading, with nobody to cancel for it (its supervisor
            # was killed too): its orders may still rest on the exchange. Cancel them before anything else.
            from aegis.trade.userstream import client_id_of
            listing = self.client.open_orders()
            ids = [client_id_of(o.get("clientOrderId", ""), self.jstate.prefix)
                   for o in (listing.get("orders") or ())] if listing.get("ok") else []
            done = cancel_all_open_orders(self.client)
            self.orphans_cancelled = {s: bool(r.get("ok")) for s, r in done.items()}
            log.error("the previous engine on this journal (pid %d) died while trading; cancelled its open orders "
                      "on %d symbol(s)%s", self.lock.previous[0], len(done),
                      f": {', '.join(sorted(done))}" if done else " (none were open)")
            # "id": client ids continue above every id the exchange listed, even one the journal never recorded
            self.journal.append("orphans_cancelled", pid=self.lock.previous[0], symbols=sorted(done),
                                **({"id": max(ids)} if ids and max(ids) > 0 else {}))
        if self.ledger is not None:
            def fetch():
                r = self.client.exchange_info()
                return r["data"] if r.get("ok") else None
            data = cached_exchange_info(self.ep.rest_url, fetch)
            info = {"ok": True, "data": data} if data is not None else self.client.exchange_info()
        else:
            info = self.client.exchange_info()
        if not info.get("ok"):
            raise ConnectionError(f"exchangeInfo failed: {info.get('code')} {info.get('msg')}")
        rows = {r["symbol"]: r for r in info["data"].get("symbols", ())}
        missing = [s for s in self.symbols if s not in rows]
        if missing:
            raise ValueError(f"symbols not listed by the venue: {', '.join(missing[:5])}")
        self._require_one_way_mode()
        rules = [SymbolRules.from_exchange_info(rows[s]) for s in self.symbols]
        # the exchange's order-rate limits come from its exchangeInfo, so a venue that allows more lets us send
        # more (our own [risk] orders_per_second still applies on top)
        listed = riskmod.exchange_order_limits(info["data"])
        self.book = RiskBook(self.rcfg, rules, first_client_id=self.jstate.next_client_id, exchange_limits=listed)
        l10, l60 = self.book.order_limits
        src = "from its exchangeInfo" if any(listed) else "Binance's: its exchangeInfo lists none"
        self.rate_note = (f"order-rate limits: ours {self.rcfg.orders_per_second}/s ([risk] orders_per_second), "
                          f"the exchange's {l10}/10s and {l60}/min ({src})")
        self._apply_leverage_brackets()
        restored = self._restore_from_journal()
        if self.jstate.trading_state == "HALTED" and self.resume:
            self.journal.append("state", state="ACTIVE", reason="resume")
        elif self.jstate.trading_state == "HALTED":
            # a halt survives restarts until someone says --resume: the reason it halted is probably still there
            why = WHY_NAMES.index(self.jstate.state_reason) if self.jstate.state_reason in WHY_NAMES else 3
            set_state(self.book.g, STATE_NAMES.index("HALTED"), why, time.monotonic_ns())
            self.book.g[riskmod.G_HALT_PENDING] = 1     # cancel whatever is still open from before
        self.queue = RequestQueue(self.tcfg.queue_capacity)
        self.fills = FillQueue(4096)
        self.order_client = (WsTradeClient(self.client, self.tcfg.timeout_s, self.tcfg.in_flight)
                             if self.tcfg.transport == "ws" else self.client)
        if self.order_client is not self.client:
            self.order_client.connect()
        self.sender = Sender(self.queue, self.order_client, self.journal, self.jstate.prefix, rules, self.fills,
                             resolve_wait(self.tcfg.wait, self.own_core, self.brain_polls), self.tcfg.cores,
                             self.tcfg.resp_type,
                             self.ctl, self.latency)
        if self.tcfg.fast_path:
            warm_fast_path()
            self.sender.enable_fast_path(self.tcfg.transport, self.keys.key.reveal(), self.keys.secret.reveal(),
                                         self.tcfg.recv_window_ms, self.ep.rest_url, self.tcfg.fsync == "always",
                                         self.tcfg.warm_us)
            if self.tcfg.transport == "rest":
                try:
                    self.client.open_order_connections()   # no order pays the handshake
                except OSError as e:
                    log.warning("order connection not open yet (%s): the first order opens it", type(e).__name__)
        self.sender.housekeeping = self._housekeeping
        self.sender.on_unknown = lambda: self.userstream.reconcile()
        idx = {s: i for i, s in enumerate(self.symbols)}
        self.userstream = UserStream(self.client, self.journal, self.jstate, idx, self.fills,
                                     self.tcfg.keepalive_interval_s)
        self.userstream.fee_rates = self._commission_rates()
        # how long the sender may wait for the GIL held by another Python thread of this process (the Brain's
        # housekeeping round, the user stream) before the interpreter forces a switch: 5 ms by default
        sys.setswitchinterval(self.tcfg.gil_switch_us / 1e6)
        self.sender.start()
        self.userstream.start()
        move_off_brain_core(getattr(self.userstream, "_thread", None))
        move_off_brain_core(getattr(self.journal, "sync_thread", None))
        if not self.userstream.connected.wait(wait_stream_s):
            log.warning("user data stream not connected after %.0f s; continuing (it keeps retrying)", wait_stream_s)
        elif any(restored):
            rec = self.userstream.last_reconcile or {}
            log.warning("resumed from the journal: %d position(s), %d open order(s); the exchange closed %d of those "
                        "orders meanwhile and listed %d unknown to the journal (adopted); positions that differed "
                        "are listed above as 'reconcile'", restored[0], restored[1], rec.get("closed", 0),
                        rec.get("adopted", 0))
        self._note_weight()
        # reconciliation may have adopted orders the journal had lost: never hand out their ids again
        self.book.g[riskmod.G_NEXT_CID] = max(int(self.book.g[riskmod.G_NEXT_CID]), self.jstate.next_client_id)
        self._start_protector(rules)
        return self

    # ---- exchange-side protection (aegis.trade.protect) --------------------------------------------------------
    def _start_protector(self, rules) -> None:
        from decimal import Decimal
        from aegis.binance.client import BinanceClient
        from aegis.trade.protect import Protector
        if self.tcfg.protect <= 0 and not self.tcfg.deadman:
            return
        client = BinanceClient(self.ep, self.keys, self.tcfg.recv_window_ms, self.tcfg.timeout_s)
        client.sync_time()
        ledger = self.userstream.ledger

        def positions() -> dict:
            for _ in range(5):     # the user-stream thread may add a symbol meanwhile
                try:
                    return {s: (p.qty, p.entry) for s, p in list(ledger.positions.items())}
                except RuntimeError:
                    continue
            return {}
        self.protector = Protector(client, self.symbols, {r.symbol: Decimal(r.tick_size) for r in rules}, positions,
                                   self.tcfg.protect, self.tcfg.deadman_s if self.tcfg.deadman else 0.0).start()
        log.info("exchange-side safety: %s; %s", f"protective stops {self.tcfg.protect:.2%} from entry"
                 if self.tcfg.protect > 0 else "no protective stops",
                 f"dead-man switch {self.tcfg.deadman_s:g} s per symbol" if self.tcfg.deadman else "no dead-man switch")

    def _require_one_way_mode(self) -> None:
        """The engine keeps one position per symbol and sends orders without positionSide: on an account in hedge
        mode every order would be refused (-4061) and positionRisk would list two sides per symbol. Refuse to
        start instead, before any order."""
        r = self.client.position_mode()
        if not r.get("ok"):
            raise ConnectionError(f"position mode (GET /fapi/v1/positionSide/dual) failed: {r.get('code')} "
                                  f"{r.get('msg')}")
        if r["data"].get("dualSidePosition"):
            raise TradeSetupError("the account is in hedge mode (dualSidePosition true) and the engine trades one-way "
                                  "positions only; switch it with POST /fapi/v1/positionSide/dual "
                                  "dualSidePosition=false (no open orders or positions)")

    def _apply_leverage_brackets(self) -> None:
        """At the account's leverage (symbolConfig) Binance refuses a position above that bracket's notionalCap
        (-2027): cap the risk book's position-notional limit there, so the engine never sends such an order."""
        from aegis.trade.risk import S_LIM_POS_NOTIONAL
        br, sc = self.client.leverage_brackets(), self.client.symbol_config()
        if not br.get("ok") or not sc.get("ok"):
            log.warning("leverage brackets unavailable (%s %s): position limits are [risk]'s only",
                        br.get("code") or sc.get("code"), br.get("msg") or sc.get("msg"))
            return
        lev = {row["symbol"]: int(row["leverage"]) for row in sc["data"]}
        for i, sym in enumerate(self.symbols):
            caps = [b["notionalCap"] for b in br["brackets"].get(sym, ()) if b["initialLeverage"] >= lev.get(sym, 0)]
            if not caps or sym not in lev:
                continue
            cap, cur = float(max(caps)), float(self.book.sym[i, S_LIM_POS_NOTIONAL])
            if cur <= 0.0 or cur > cap:
                self.book.sym[i, S_LIM_POS_NOTIONAL] = cap
                log.info("%s: position notional limited to %g (leverage %dx bracket)", sym, cap, lev[sym])

    def _commission_rates(self) -> dict[str, tuple[float, float]]:
        """(maker, taker) per symbol from commissionRate: every fill's fee is checked against them. Weight 20 a
        call: symbols past a third of the minute's budget go unchecked (said once) rather than risk a 429."""
        out = {}
        for n, sym in enumerate(self.symbols):
            if (getattr(self.client, "used_weight_1m", 0) or 0) > 800:
                log.warning("commission rates fetched for %d of %d symbols (weight budget); fees of the others "
                            "are not checked", n, len(self.symbols))
                break
            r = self.client.commission_rate(sym)
            if r.get("ok"):
                out[sym] = (float(r["data"]["makerCommissionRate"]), float(r["data"]["takerCommissionRate"]))
        return out
    # ---- end of exchange-side protection ----------------------------------------------------------------------

    def _note_weight(self) -> None:
        if self.ledger is not None and self.client is not None and self.client.used_weight_1m:
            self.ledger.note(self.client.used_weight_1m)

    def _restore_from_journal(self) -> tuple[int, int]:
        """Positions and open orders as the journal left them, into the risk book, before the exchange is asked:
        the reconciliation that follows then reports (and fixes) only what really differs."""
        from aegis.core.records import SIDE_BUY, SIDE_SELL
        ours = set(self.symbols)
        n_pos = n_ord = 0
        for sym, qty in self.jstate.positions.items():
            if sym in ours and qty != 0.0:
                self.book.restore_position(sym, qty, self.jstate.entries.get(sym, 0.0))
                n_pos += 1
        for o in self.jstate.open_orders():
            if o.symbol in ours:
                left = max(0.0, float(o.qty or 0) - o.cum_qty)
                self.book.restore_open_order(o.client_id, o.symbol, SIDE_BUY if o.side == "BUY" else SIDE_SELL, left,
                                             float(o.price or 0), o.reduce_only)
                n_ord += 1
        return n_pos, n_ord

    def _housekeeping(self) -> None:
        """Runs in the sender thread when idle: kill-switch file, trading-state changes (say why, journal them),
        periodic clock resync, ws-fapi connection upkeep."""
        from aegis.trade.risk import G_STATE, G_STATE_REASON, STATE_NAMES, WHY_NAMES
        state, why = int(self.book.g[G_STATE]), int(self.book.g[G_STATE_REASON])   # read-only: the Brain owns g
        if (state, why) != self._last_state:
            self._last_state = (state, why)
            name = STATE_NAMES[state]
            if name != "ACTIVE":
                log.error("trading %s: %s%s", name, WHY_NAMES[why],
                          "; cancelling every open order" if name == "HALTED" else "; only reducing orders pass")
            try:
                self.journal.append("state", state=name, reason=WHY_NAMES[why])
            except JournalFailed:
                pass   # already reported, and that failure is what halted trading: this line cannot be kept
        f = self.rcfg.kill_switch_file
        if f and self.flags[F_KILL] == 0 and os.path.exists(f):
            log.error("kill switch file %s exists: HALTING (cancel all%s)", f,
                      ", flatten" if self.rcfg.flatten_on_halt else "")
            self.kill(flatten=self.rcfg.flatten_on_halt)
        if time.monotonic() - self._last_sync > self.tcfg.time_sync_interval_s:
            self._last_sync = time.monotonic()
            self.client.sync_time()
        idle = getattr(self.order_client, "idle", None)
        if idle is not None:
            idle()

    def _journal_failed(self, why: str) -> None:
        """The journal cannot be written (any thread, once): halt, cancel every open order through a client of its
        own that needs no journal, tell the supervisor (the run ends with exit code 1), say so loudly."""
        self.failsafe = why
        log.critical("ORDER JOURNAL CANNOT BE WRITTEN (%s): trading HALTED, cancelling every open order without "
                     "journaling; the run stops with an error", why)
        set_flag(self.flags, F_KILL, max(1, int(self.flags[F_KILL])))
        if self.ctl is not None:
            self.ctl[control.base(control.ROLE_SENDER) + control.R_SENDER_FAILSAFE] = 1
        t = threading.Thread(target=self._failsafe_cancel, name="aegis-failsafe-cancel", daemon=True)
        self._failsafe_thread = t
        t.start()

    def _failsafe_cancel(self) -> None:
        from aegis.binance.client import BinanceClient
        client = BinanceClient(self.ep, self.keys, self.tcfg.recv_window_ms, self.tcfg.timeout_s)
        try:
            client.sync_time()
            done = cancel_all_open_orders(client)
            bad = sorted(s for s, r in done.items() if not r.get("ok"))
            self.failsafe_cancelled = done
            if bad:
                log.critical("fail-safe cancel FAILED on %s -- CHECK THE EXCHANGE", ", ".join(bad))
            else:
                log.critical("fail-safe cancel done: open orders cancelled on %d symbol(s)", len(done))
        except Exception as e:   # noqa: BLE001 - say it; the supervisor cancels again when the Brain ends
            log.critical("fail-safe cancel failed: %s: %s -- CHECK THE EXCHANGE", type(e).__name__, e)
        finally:
            client.close()

    def kill(self, flatten: bool = False) -> None:
        """Manual kill switch (any thread): the Brain's poll_kill/service kernel halts, cancels all, maybe flattens;
        the sender's housekeeping then logs and journals the new state."""
        set_flag(self.flags, F_KILL, max(int(self.flags[F_KILL]), 2 if flatten else 1))

    def latency_summary(self) -> str:
        """One line: median / p99 of hand-off (Brain -> sender holds it), request prepared (journal, params,
        signature), then handed to the socket, the send call itself, and handoff -> wire, over this run's orders."""
        rows = self.sender.wire_ns.rows() if self.sender else np.zeros((0, 5), np.int64)
        if not len(rows):
            return "sender: no orders"
        parts = []
        for name, a, b in (("hand-off", 0, 1), ("prepare", 1, 2), ("to socket", 2, 3), ("send call", 3, 4),
                           ("handoff->wire", 0, 3)):
            d = (rows[:, b] - rows[:, a]) / 1e3
            parts.append(f"{name} p50 {np.percentile(d, 50):.1f} p99 {np.percentile(d, 99):.1f} us")
        return f"sender: {len(rows)} orders; " + "; ".join(parts)

    def stop(self, cancel_open_orders: bool | None = None) -> dict:
        """Orderly shutdown; returns the cancel-all results ({symbol: result}). Ends with what the exchange says is
        still open (self.remaining), logged with the reason each position remains."""
        if self.sender is not None and self.sender.wire_ns:
            log.info("%s", self.latency_summary())
        cancel = self.tcfg.cancel_on_shutdown if cancel_open_orders is None else cancel_open_orders
        out = {}
        if self.sender is not None:
            self.sender.stop()
        if self._failsafe_thread is not None:
            self._failsafe_thread.join(3 * self.tcfg.timeout_s)
        cancelled = False
        if cancel and self.client is not None:
            known = {o.symbol for o in self.jstate.open_orders()} if self.jstate else set()
            out = cancel_all_open_orders(self.client, known)
            cancelled = all(r.get("ok") for r in out.values())
            if self.userstream is not None and self.userstream.connected.is_set() and self.failsafe is None:
                try:   # settle every order the journal still thinks is open, so the next start begins clean
                    self.userstream.reconcile()
                except Exception as e:
                    log.warning("final reconciliation failed: %s", type(e).__name__)
        if self.protector is not None:     # after the cancel-all: disarm the countdowns, keep protective stops
            self.protector.stop()
            self.protector.client.close()
        if self.userstream is not None:
            self.userstream.stop()
        if self.order_client is not None and self.order_client is not self.client:
            self.order_client.close()
        if self.client is not None and self.book is not None:
            self.remaining = self._report_positions()
        if self.journal is not None:
            if self.book is not None and self.book.state != self.jstate.trading_state:
                try:
                    self.journal.append("state", state=self.book.state, reason=self.book.state_reason)
                except JournalFailed:
                    pass
            self.journal.close()
        if self.client is not None:
            self._note_weight()
            self.client.close()
        if self.lock is not None:
            # "stopped" only when nothing of ours can be left resting: the next start cancels otherwise
            orphans_left = self.lock.previous[1] == LOCK_TRADING and self.orphans_cancelled is None
            self.lock.release(LOCK_TRADING if orphans_left or (cancel and self.sender is not None and not cancelled)
                              else LOCK_STOPPED)
        return out

    def _report_positions(self) -> dict | None:
        """The exchange's open positions in our symbols at the end, each with why it remains. None if the
        exchange could not be asked."""
        from aegis.trade.risk import G_FLATTEN_ON_HALT, G_STATE, G_STATE_TS, STATE_NAMES
        pr = self.client.position_risk()
        if not pr.get("ok"):
            log.error("positions at the end: the exchange could not be asked (%s %s) -- CHECK THE EXCHANGE",
                      pr.get("code"), pr.get("msg"))
            return None
        ours = set(self.symbols)
        remaining = {p["symbol"]: float(p.get("positionAmt", 0) or 0) for p in pr["positions"]
                     if p.get("symbol") in ours and float(p.get("positionAmt", 0) or 0) != 0.0}
        if not remaining:
            log.info("positions at the end: none open on the exchange")
            return remaining
        flatten = int(self.book.g[G_FLATTEN_ON_HALT]) != 0 and STATE_NAMES[int(self.book.g[G_STATE])] == "HALTED"
        refused = {}
        halted_at = int(self.book.g[G_STATE_TS])
        for ts, sym, reason, _ in self.book.recent_rejections():
            if ts >= halted_at and reason not in ("HALTED", "REDUCING"):   # the strategy's own orders after the halt
                refused[sym] = reason
        by_reason: dict[str, list[str]] = {}       # each reason said once, after the positions it explains
        for sym, qty in sorted(remaining.items()):
            if flatten:
                why = (f"flatten refused by risk: {refused[sym]}" if sym in refused else
                       "flatten was sent but did not close it (see the journal)")
            else:
                why = "kept: stopping cancels orders, it does not close positions (kill -USR2 or --flatten-on-halt)"
            by_reason.setdefault(why, []).append(f"{sym} {qty:+g}")
        parts = [f"{', '.join(syms)} ({why})" for why, syms in by_reason.items()]
        log.warning("positions at the end, as the exchange shows them: %d open: %s", len(remaining), "; ".join(parts))
        return remaining


LOCK_TRADING, LOCK_STOPPED = "trading", "stopped"   # Brain lock states (aegis.core.lockfile)
# REST weight of a start: time, exchangeInfo, listenKey, openOrders (40), positionRisk (5), positionSide/dual (30)
START_WEIGHT = 90


def journal_path(cfg, run_id: str) -> str:
    """Where the Brain journals its orders: [trade] journal, else one file per real account that outlives runs
    (crash recovery, --resume); each embedded run trades a fresh account under a fresh key, so it gets its own."""
    journal = cfg.section("trade").get("journal") or ""
    if journal:
        return journal
    default = f"journal-{cfg.venue}.jsonl" if cfg.venue != "embedded" else f"journal-embedded-{run_id}.jsonl"
    return os.path.join(cfg.out_dir, default)


def brain_lock_path(journal: str) -> str:
    """Held by the Brain that writes `journal`; it also records whether that Brain stopped in order."""
    return journal + ".brain.lock"


def supervisor_lock_path(journal: str) -> str:
    """Held by the supervisor of the engine that trades on `journal`, for its whole life."""
    return journal + ".lock"


def request_kill(ctl, flatten: bool = False) -> None:
    """Supervisor side (any process with the control block): pull the kill switch of the running Brain."""
    b = control.base(control.ROLE_SENDER) + control.R_SENDER_FLAGS
    flags = ctl[b:b + FLAGS_LEN]
    set_flag(flags, F_KILL, max(int(flags[F_KILL]), 2 if flatten else 1))   # never de-escalates


def emergency_cancel_all(venue: str = "embedded", live: bool = False, key_file: str | None = None,
                         embedded=None, timeout_s: float = 5.0, urls=None, api_keys=None) -> dict:
    """For the supervisor when the Brain is dead (or on SIGTERM/Ctrl-C from outside it): load keys in THIS process
    (secrets never travel between processes), list open orders on the exchange and cancel them per symbol.
    `urls` = (rest, ws market, ws api) instead of `embedded`; `api_keys` = an aegis.binance.keys.ApiKeys to use."""
    from aegis.binance import keys as _keys
    from aegis.binance.client import BinanceClient, Endpoints, endpoints
    ep = Endpoints(venue, *urls) if urls else endpoints(venue, live, embedded)
    client = BinanceClient(ep, api_keys or _keys.load(venue, key_file), timeout_s=timeout_s)
    try:
        client.sync_time()
        return cancel_all_open_orders(client)
    finally:
        client.close()


class OrderPath:
    """What aegis.brain.process uses: .risk (RiskBook, index = ring symbol id), .queue, .fills, .flags, .session, .close()."""

    def __init__(self, session: TradeSession):
        self.session = session
        self.risk = session.book
        self.queue = session.queue
        self.fills = session.fills
        self.flags = session.flags

    def close(self) -> dict:
        return self.session.stop()


def symbol_names(spec) -> list[str] | None:
    """The Feed's symbol table, in id order. Trading needs the SAME table as the Feed: spec.symbols (a SymbolTable
    the supervisor resolved once) or an explicit symbol list (resolved deterministically); a top-N count resolved
    separately in each process could rank differently, so it is refused."""
    table = getattr(spec, "symbols", None)
    if table is None:
        sym = spec.config.symbols
        if isinstance(sym, int):
            return None
        if not spec.venue_urls:
            return [s.upper() for s in sym]
        from aegis.binance.symbols import discover
        table = discover(spec.venue_urls[0], symbols=list(sym))
    names = getattr(table, "names", table)
    return list(names() if callable(names) else names)


def _config_error():
    from aegis.core.config import ConfigError
    return ConfigError


class TradeSetupError(_config_error()):
    """The order path cannot start (keys, venue, exchangeInfo, journal): one line, exit code 2."""


def open_order_path(spec, ctx) -> OrderPath | None:
    """Brain-process factory (called after aegis.core.startup.enter): validate [trade]/[risk], load keys in this process,
    replay the journal, start the sender and the user stream. None (with a log line saying why) = signals only.
    Raises TradeSetupError (a ConfigError: one line, exit 2) when trading was asked for and cannot start."""
    try:
        return _open_order_path(spec, ctx)
    except TradeSetupError:
        raise
    except (ValueError, OSError, ConnectionError) as e:   # ApiKeyError, VenueSelectionError, ConfigError, I/O
        raise TradeSetupError(f"trading cannot start: {e}") from None


def _open_order_path(spec, ctx) -> OrderPath | None:
    from aegis.binance import keys as _keys
    from aegis.binance.client import Endpoints, endpoints
    from aegis.trade.risk import RiskConfig
    cfg = spec.config
    tcfg = TradeConfig.from_section(cfg.section("trade"))
    rcfg = RiskConfig.from_section(cfg.section("risk"))
    if cfg.venue == "embedded" and not spec.venue_urls:
        log.warning("no venue to trade on (embedded venue not running, e.g. --source synthetic): signals only")
        return None
    names = symbol_names(spec)
    if not names:
        log.error("trading disabled: the Brain needs the Feed's symbol table (spec.symbols) or an explicit list")
        return None
    ep = Endpoints(cfg.venue, *spec.venue_urls) if spec.venue_urls else endpoints(cfg.venue, cfg.live)
    if spec.api_key and spec.api_secret:
        k = _keys.from_strings(spec.api_key, spec.api_secret)
    else:
        k = _keys.load(cfg.venue, tcfg.key_file or None)
    path = journal_path(cfg, spec.run_id)
    lat = None
    from aegis.core import latency as _lat
    if ctx is not None and ctx.latency is not None and ctx.latency.size >= _lat.N_STAGES * _lat.HIST_LEN:
        lat = ctx.latency[: _lat.N_STAGES * _lat.HIST_LEN].reshape(_lat.HIST_SET_SHAPE)
    engine_cores = set(cfg.cores or ())
    own_core = bool(tcfg.cores) and not (set(tcfg.cores) & engine_cores)
    from aegis.core.wait import SLEEP
    session = TradeSession(tcfg, rcfg, ep, k, names, ctl=ctx.control if ctx is not None else None, latency=lat,
                           journal_path=path, resume=tcfg.resume, own_core=own_core,
                           brain_polls=getattr(spec, "wait", SLEEP) != SLEEP,
                           lock=not (cfg.venue == "embedded" and not tcfg.journal))
    session.start()
    log.info("trading on %s: %d symbols, journal %s, sender wait %s, transport %s, state %s", ep.venue, len(names),
             path, tcfg.wait, tcfg.transport, session.book.state)
    return OrderPath(session)
