"""Single-writer single-reader ring of structured records in shared memory (the LMAX Disruptor's ring).

Layout of a ring segment: a 512-byte header of int64 slots, then `capacity` records.
Each cursor lives alone on its own 64-byte cache line: the writer stores the write cursor and only reads the
read cursor when its cached copy says the ring might be full; the reader does the mirror image. So in steady
state each core keeps its own line and the two only exchange the line that actually changed hands.

Sequences are unbounded int64 counts (records ever published / consumed); slot = sequence & (capacity - 1).
At 1 G records/s an int64 count wraps after ~292 years, so overflow is not handled.

Every kernel is @njit(nogil=True) and takes the header and records arrays, so both ends can run their whole
batch loop inside jitted code (a Python -> jitted call costs ~0.3 us, more than moving a record).
"""
from __future__ import annotations

import numpy as np

from aegis.core.atomics import load_acquire, store_release
from aegis.core.clock import now_ns
from aegis.core.jit import njit
from aegis.core.records import MARKET_DTYPE
from aegis.core.shm import Segment
from aegis.core.wait import idle

HEADER_BYTES = 512
HEADER_SLOTS = HEADER_BYTES // 8
MAGIC = 0x41454749535F5247  # "AEGIS_RG"
VERSION = 1

# header slot indices (int64); one cache line = 8 slots
H_MAGIC, H_VERSION, H_CAPACITY, H_ITEMSIZE = 0, 1, 2, 3
H_WRITE = 8            # line 1: records published (written only by the writer, release)
H_READ = 16            # line 2: records consumed (written only by the reader, release)
H_DROPPED = 24         # line 3: writer-owned counters and cache
H_FULL_WAITS = 25      # times the writer found the ring full and waited
H_CONFLATED = 26       # quotes replaced before reaching the ring (the Feed's conflation buffer bumps it)
H_READ_CACHE = 27      # writer's last seen read cursor (saves touching the reader's line)
H_WRITE_CACHE = 32     # line 4: reader-owned cache of the write cursor
H_ABORT = 40           # line 5: set by the supervisor to release every waiter on shutdown
# slots 48..63 belong to the wait strategy of a queue whose producer signals (aegis.core.wait.W_*)

POLICY_WAIT = 0         # block (with the wait strategy) until the reader frees room: nothing is lost
POLICY_DROP_NEWEST = 1  # drop what does not fit now and count it in H_DROPPED

POLICIES = {"wait": POLICY_WAIT, "drop-newest": POLICY_DROP_NEWEST}
MIN_CAPACITY = 4096


def segment_size(capacity: int, dtype=MARKET_DTYPE) -> int:
    return HEADER_BYTES + capacity * np.dtype(dtype).itemsize


def check_capacity(capacity: int) -> None:
    if capacity < MIN_CAPACITY or capacity & (capacity - 1):
        raise ValueError(f"ring capacity must be a power of two >= {MIN_CAPACITY}, got {capacity}")


def init_header(header: np.ndarray, capacity: int, itemsize: int) -> None:
    header[:] = 0
    header[H_CAPACITY] = capacity
    header[H_ITEMSIZE] = itemsize
    header[H_VERSION] = VERSION
    header[H_MAGIC] = MAGIC  # last: a reader that sees the magic sees the rest


class Ring:
    """Python-side handle: owns the mapping, hands out the header and records arrays to jitted code."""

    def __init__(self, segment: Segment, dtype=MARKET_DTYPE):
        self.segment = segment
        self.dtype = np.dtype(dtype)
        self.header = segment.view(np.int64, 0, HEADER_SLOTS)
        if self.header[H_MAGIC] != MAGIC or self.header[H_VERSION] != VERSION:
            raise ValueError(f"segment {segment.name} is not an AEGIS ring of version {VERSION}")
        if self.header[H_ITEMSIZE] != self.dtype.itemsize:
            raise ValueError(f"ring {segment.name} holds {self.header[H_ITEMSIZE]}-byte records, "
                             f"not {self.dtype.itemsize}-byte {self.dtype}")
        self.capacity = int(self.header[H_CAPACITY])
        self.records = segment.view(self.dtype, HEADER_BYTES, self.capacity)

    @classmethod
    def create(cls, name: str, capacity: int = 1 << 16, dtype=MARKET_DTYPE) -> "Ring":
        check_capacity(capacity)
        seg = Segment.create(name, segment_size(capacity, dtype))
        init_header(seg.view(np.int64, 0, HEADER_SLOTS), capacity, np.dtype(dtype).itemsize)
        return cls(seg, dtype)

    @classmethod
    def attach(cls, name: str, dtype=MARKET_DTYPE) -> "Ring":
        return cls(Segment.attach(name), dtype)

    def stats(self) -> dict:
        h = self.header
        w, r = int(h[H_WRITE]), int(h[H_READ])
        return {"published": w, "consumed": r, "lag": w - r, "dropped": int(h[H_DROPPED]),
                "full_waits": int(h[H_FULL_WAITS]), "conflated": int(h[H_CONFLATED])}

    def abort(self) -> None:
        abort(self.header)

    def close(self) -> None:
        self.header = self.records = None
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


# ---------------------------------------------------------------------------------------------- writer side
@njit(cache=True, nogil=True)
def free_slots(header, want):
    """Room for up to `want` records without overwriting unread ones (refreshes the cached read cursor lazily)."""
    cap = header[H_CAPACITY]
    w = header[H_WRITE]  # our own cursor: plain load is fine, nobody else writes it
    free = cap - (w - header[H_READ_CACHE])
    if free < want:
        header[H_READ_CACHE] = load_acquire(header, H_READ)
        free = cap - (w - header[H_READ_CACHE])
    return free


@njit(cache=True, nogil=True)
def claim(header, want):
    """(first sequence, count) the writer may fill now, count <= want; fill records[seq & mask] then publish."""
    free = free_slots(header, want)
    n = want if want < free else free
    return header[H_WRITE], n


@njit(cache=True, nogil=True)
def publish(header, count):
    """Make `count` claimed records visible to the reader (release: their bytes are written before the cursor)."""
    store_release(header, H_WRITE, header[H_WRITE] + count)


@njit(cache=True, nogil=True)
def aborted(header):
    return load_acquire(header, H_ABORT) != 0


@njit(cache=True, nogil=True)
def abort(header):
    store_release(header, H_ABORT, 1)


@njit(cache=True, nogil=True)
def write_batch(header, records, src, n, policy, wait):
    """Copy src[:n] into the ring; returns how many were written.

    POLICY_WAIT blocks until every record is in (or the ring is aborted); POLICY_DROP_NEWEST writes what fits
    and counts the rest as dropped. Publishes in chunks as room appears so the reader never waits for a whole
    batch. The pub_ts field of market records is stamped here, in the same clock as recv_ts.
    """
    mask = header[H_CAPACITY] - 1
    done = 0
    spins = 0
    waited = False
    while done < n:
        seq, k = claim(header, n - done)
        if k == 0:
            if policy == POLICY_DROP_NEWEST:
                header[H_DROPPED] += n - done
                break
            if not waited:
                header[H_FULL_WAITS] += 1
                waited = True
            if aborted(header):
                break
            spins = idle(wait, spins)
            continue
        spins = 0
        for i in range(k):
            records[(seq + i) & mask] = src[done + i]
        done += k
        publish(header, k)
    return done


@njit(cache=True, nogil=True)
def stamp_and_write(header, records, src, n, policy, wait):
    """write_batch for market records, stamping pub_ts (the ring's own stage timestamp)."""
    t = now_ns()
    for i in range(n):
        src[i].pub_ts = t
    return write_batch(header, records, src, n, policy, wait)


# ---------------------------------------------------------------------------------------------- reader side
@njit(cache=True, nogil=True)
def available(header):
    """Records published and not yet consumed (acquire: their bytes are visible once the count is)."""
    w = header[H_WRITE_CACHE]
    r = header[H_READ]
    if w == r:
        w = load_acquire(header, H_WRITE)
        header[H_WRITE_CACHE] = w
    return w - r


@njit(cache=True, nogil=True)
def consume(header, count):
    """Give `count` read slots back to the writer."""
    store_release(header, H_READ, header[H_READ] + count)


@njit(cache=True, nogil=True)
def read_batch(header, records, dst, max_n):
    """Copy up to max_n available records into dst (no waiting); returns how many."""
    n = available(header)
    if n > max_n:
        n = max_n
    if n > 0:
        mask = header[H_CAPACITY] - 1
        r = header[H_READ]
        for i in range(n):
            dst[i] = records[(r + i) & mask]
        consume(header, n)
    return n


@njit(cache=True, nogil=True)
def wait_batch(header, records, dst, max_n, wait, deadline_ns):
    """read_batch that waits (with the wait strategy) until something arrives, the deadline passes
    (deadline_ns <= 0: none) or the ring is aborted; returns 0 in the last two cases."""
    spins = 0
    while True:
        n = read_batch(header, records, dst, max_n)
        if n > 0:
            return n
        if aborted(header):
            return 0
        if deadline_ns > 0 and (spins & 15) == 15 and now_ns() > deadline_ns:
            return 0
        spins = idle(wait, spins)


@njit(cache=True, nogil=True)
def checksum_step(chk, seq):
    """Order-sensitive running checksum of record sequence numbers (wrapping int64 arithmetic): the Feed sums what
    it published, the Brain what it consumed, and the supervisor compares the two at the end of a run."""
    return chk * 31 + seq + 1
