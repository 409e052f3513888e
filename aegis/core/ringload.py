"""Cross-process ring load: a writer process and a jitted reader, shared by the ring tests and benchmarks.

The writer runs in its own (spawned) process so that every transfer really crosses a process boundary through
shared memory; both ends run their whole loop inside @njit code, as the engine does.
"""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
from numba import njit

from aegis.core import ring
from aegis.core.clock import now_ns
from aegis.core.records import MARKET_DTYPE
from aegis.core.wait import idle


@njit(cache=True, nogil=True)
def fill_sequence(batch, seq0, n):
    for i in range(n):
        batch[i].seq = seq0 + i
        batch[i].bid_px = (seq0 + i) * 0.25
        batch[i].symbol = (seq0 + i) % 997


@njit(cache=True, nogil=True)
def produce(header, records, total, batch_size, policy, wait):
    """Publish records with seq 0..total-1 in batches; returns how many went in."""
    batch = np.zeros(batch_size, MARKET_DTYPE)
    s = 0
    written = 0
    while s < total:
        n = min(batch_size, total - s)
        fill_sequence(batch, s, n)
        w = ring.write_batch(header, records, batch, n, policy, wait)
        written += w
        s += n
        if w < n and policy == ring.POLICY_WAIT:
            break  # aborted
    return written


@njit(cache=True, nogil=True)
def consume_checked(header, records, total, batch_size, wait, deadline_ns):
    """Read `total` records; returns (count, records out of order, checksum of seq, checksum of bid_px bits)."""
    dst = np.zeros(batch_size, MARKET_DTYPE)
    got = 0
    disorder = 0
    chk = np.int64(0)
    pxsum = 0.0
    while got < total:
        n = ring.wait_batch(header, records, dst, batch_size, wait, deadline_ns)
        if n == 0:
            break
        for i in range(n):
            if dst[i].seq != got + i:
                disorder += 1
            chk = chk * 31 + dst[i].seq + 1
            pxsum += dst[i].bid_px
        got += n
    return got, disorder, chk, pxsum


@njit(cache=True)
def expected_checksum(total):
    chk = np.int64(0)
    pxsum = 0.0
    for s in range(total):
        chk = chk * 31 + s + 1
        pxsum += s * 0.25
    return chk, pxsum


def _writer_main(ring_name: str, total: int, batch_size: int, policy: int, wait: int, core) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    r = ring.Ring.attach(ring_name)
    produce(r.header, r.records, total, batch_size, policy, wait)


def start_writer(ring_name: str, total: int, batch_size: int = 256, policy: int = ring.POLICY_WAIT,
                 wait: int = 1, core: int | None = None) -> mp.Process:
    p = mp.get_context("spawn").Process(target=_writer_main, args=(ring_name, total, batch_size, policy, wait, core),
                                        daemon=True)
    p.start()
    return p


# ------------------------------------------------------------------------------------- one-way latency probe
@njit(cache=True, nogil=True)
def ping_writer(header, records, count, gap_ns, wait):
    """Publish `count` single records, each stamped with pub_ts just before publication, `gap_ns` apart."""
    mask = header[ring.H_CAPACITY] - 1
    for i in range(count):
        t_next = now_ns() + gap_ns
        spins = 0
        while True:
            seq, n = ring.claim(header, 1)
            if n == 1 or ring.aborted(header):
                break
            spins = idle(wait, spins)
        if n == 0:
            return i
        r = records[seq & mask]
        r.seq = i
        r.pub_ts = now_ns()
        ring.publish(header, 1)
        while now_ns() < t_next:
            pass
    return count


@njit(cache=True, nogil=True)
def ping_reader(header, records, count, wait, deadline_ns, out_ns):
    """Read `count` records one by one, storing now - pub_ts (one-way latency, ns) for each."""
    mask = header[ring.H_CAPACITY] - 1
    got = 0
    spins = 0
    while got < count:
        if ring.available(header) == 0:
            spins = idle(wait, spins)
            if (spins & 1023) == 0 and now_ns() > deadline_ns:
                break
            continue
        t = now_ns()
        r = records[header[ring.H_READ] & mask]
        out_ns[got] = t - r.pub_ts
        ring.consume(header, 1)
        got += 1
        spins = 0
    return got


def _ping_main(ring_name: str, count: int, gap_ns: int, wait: int, core) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    r = ring.Ring.attach(ring_name)
    ping_writer(r.header, r.records, count, gap_ns, wait)


def start_ping_writer(ring_name: str, count: int, gap_ns: int, wait: int, core: int | None) -> mp.Process:
    p = mp.get_context("spawn").Process(target=_ping_main, args=(ring_name, count, gap_ns, wait, core), daemon=True)
    p.start()
    return p


# ------------------------------------------------------------------------------ zero-copy batch throughput
@njit(cache=True, nogil=True)
def produce_in_place(header, records, total, batch_size, wait):
    """Writer that fills claimed slots directly (no staging copy), as the Feed's parser does."""
    mask = header[ring.H_CAPACITY] - 1
    s = 0
    spins = 0
    while s < total:
        seq, n = ring.claim(header, min(batch_size, total - s))
        if n == 0:
            if ring.aborted(header):
                break
            spins = idle(wait, spins)
            continue
        spins = 0
        for i in range(n):
            r = records[(seq + i) & mask]
            r.seq = s + i
            r.bid_px = (s + i) * 0.25
            r.symbol = (s + i) % 997
        ring.publish(header, n)
        s += n
    return s


@njit(cache=True, nogil=True)
def consume_in_place(header, records, total, wait, deadline_ns):
    """Reader that processes records where they lie and hands the slots back per batch; returns (count, checksum)."""
    mask = header[ring.H_CAPACITY] - 1
    got = 0
    chk = np.int64(0)
    spins = 0
    while got < total:
        n = ring.available(header)
        if n == 0:
            spins = idle(wait, spins)
            if (spins & 1023) == 0 and now_ns() > deadline_ns:
                break
            continue
        spins = 0
        r0 = header[ring.H_READ]
        for i in range(n):
            chk = chk * 31 + records[(r0 + i) & mask].seq + 1
        ring.consume(header, n)
        got += n
    return got, chk


def _in_place_main(ring_name: str, total: int, batch_size: int, wait: int, core) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    r = ring.Ring.attach(ring_name)
    produce_in_place(r.header, r.records, total, batch_size, wait)


def start_in_place_writer(ring_name: str, total: int, batch_size: int, wait: int, core: int | None) -> mp.Process:
    p = mp.get_context("spawn").Process(target=_in_place_main, args=(ring_name, total, batch_size, wait, core),
                                        daemon=True)
    p.start()
    return p
