"""Cross-process ring load: a writer process and a jitted reader, shared by the ring tests and benchmarks.

The writer runs in its own (spawned) process so that every transfer really crosses a process boundary through
shared memory; both ends run their whole loop inside @njit code, as the engine does.
"""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np

from aegis.core import ring
from aegis.core.clock import now_ns
from aegis.core.jit import njit
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
# Both ends move whole records with the engine's own calls: the writer stamps and copies a record in as the Feed
# publishes (ring.stamp_and_write), the reader copies it out as the Brain consumes (ring.wait_batch).
@njit(cache=True, nogil=True)
def ping_writer(header, records, count, gap_ns, wait):
    """Publish `count` single records, stamped (pub_ts) as they are written, `gap_ns` apart; returns how many."""
    one = np.zeros(1, MARKET_DTYPE)
    for i in range(count):
        t_next = now_ns() + gap_ns
        one[0].seq = i
        one[0].bid_px = i * 0.25
        if ring.stamp_and_write(header, records, one, 1, ring.POLICY_WAIT, wait) == 0:
            return i   # aborted
        while now_ns() < t_next:
            pass
    return count


@njit(cache=True, nogil=True)
def ping_reader(header, records, count, wait, deadline_ns, out_ns):
    """Read `count` records one by one, storing now - pub_ts (one-way latency, ns) for each."""
    one = np.zeros(1, MARKET_DTYPE)
    got = 0
    while got < count:
        if ring.wait_batch(header, records, one, 1, wait, deadline_ns) == 0:
            break
        out_ns[got] = now_ns() - one[0].pub_ts
        got += 1
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


# ------------------------------------------------------------------------------- per-event round trip (echo)
@njit(cache=True, nogil=True)
def echo(inbound_h, inbound_r, outbound_h, outbound_r, count, wait, deadline_ns):
    """Copy each record of one ring into the other, one at a time (whole records, as the Feed and Brain move them);
    returns how many were echoed."""
    one = np.zeros(1, MARKET_DTYPE)
    for i in range(count):
        if ring.wait_batch(inbound_h, inbound_r, one, 1, wait, deadline_ns) == 0:
            return i
        if ring.stamp_and_write(outbound_h, outbound_r, one, 1, ring.POLICY_WAIT, wait) == 0:
            return i
    return count


@njit(cache=True, nogil=True)
def round_trip(out_h, out_r, back_h, back_r, one, seq, wait, deadline_ns):
    """One record out through one ring and back through the other (echoed by another process); returns the seq
    that came back (-1 on a deadline or an abort). One event: what a per-round benchmark times."""
    one[0].seq = seq
    if ring.stamp_and_write(out_h, out_r, one, 1, ring.POLICY_WAIT, wait) == 0:
        return -1
    if ring.wait_batch(back_h, back_r, one, 1, wait, deadline_ns) == 0:
        return -1
    return one[0].seq


def _echo_main(inbound: str, outbound: str, count: int, wait: int, core) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    a, b = ring.Ring.attach(inbound), ring.Ring.attach(outbound)
    echo(a.header, a.records, b.header, b.records, count, wait, now_ns() + 600_000_000_000)


def start_echo(inbound: str, outbound: str, count: int, wait: int, core: int | None) -> mp.Process:
    p = mp.get_context("spawn").Process(target=_echo_main, args=(inbound, outbound, count, wait, core), daemon=True)
    p.start()
    return p
