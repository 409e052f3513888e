"""Ring vs multiprocessing.Queue vs multiprocessing.Pipe, cross-process, side by side in one run.

Run:  python -m pytest bench/bench_ring.py -s --benchmark-json=ring.json [--benchmark-histogram]
Pinned busy-spin: the writer on one core, the reader (this process) on another. Every ring transfer moves whole
records with the engine's own calls: ring.stamp_and_write as the Feed publishes, ring.wait_batch as the Brain reads.

test_ring_round_trip times one event per round (a record out through one ring and back through another, echoed by
a process on the other core), so pytest-benchmark's statistics and histogram are per-event round-trip latency.
The one-way figures (stamped in the record) and the throughputs are whole-run measurements printed as a table with
ratios; pytest-benchmark's rows for those tests time the whole run.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from aegis.core import ring
from aegis.core import ringload
from aegis.core import shm
from aegis.core.clock import now_ns
from aegis.core.records import MARKET_DTYPE
from aegis.core.wait import BUSY_SPIN
from benchmode import size

CORES = sorted(os.sched_getaffinity(0))
WRITER_CORE, READER_CORE = (CORES[0], CORES[1]) if len(CORES) > 1 else (CORES[0], CORES[0])
PINGS = size(200_000, 2_000)
QUEUE_PINGS = size(20_000, 500)
THROUGHPUT_RECORDS = size(20_000_000, 100_000)
QUEUE_ITEMS = size(300_000, 2_000)
ROUND_TRIPS = size(20_000, 200)
BATCH = 4096      # the Brain's batch (aegis.brain.process) and a Feed-sized write batch
RESULTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def pinned_reader():
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {READER_CORE})
    yield
    os.sched_setaffinity(0, before)
    _print_summary()


@pytest.fixture
def new_ring():
    r = ring.Ring.create(shm.segment_name(shm.new_run_id(), "bench"), 1 << 16)
    yield r
    r.abort()
    name = r.segment.name
    r.close()
    shm.unlink(name, registered=True)


def _percentiles(ns: np.ndarray) -> dict:
    return {"p50": float(np.percentile(ns, 50)), "p99": float(np.percentile(ns, 99)),
            "p99.9": float(np.percentile(ns, 99.9)), "count": int(ns.size)}


def _ring_latency(r: ring.Ring) -> dict:
    out = np.zeros(PINGS, dtype=np.int64)
    w = ringload.start_ping_writer(r.segment.name, PINGS, 2_000, BUSY_SPIN, WRITER_CORE)
    n = ringload.ping_reader(r.header, r.records, PINGS, BUSY_SPIN, now_ns() + 60_000_000_000, out)
    w.join(30)
    assert n == PINGS
    return _percentiles(out[min(1000, PINGS // 10):])  # the first pings include the writer's page faults


def test_ring_one_way_latency(benchmark, new_ring):
    # warm up compilation in both processes with a short run first
    ringload.ping_reader(new_ring.header, new_ring.records, 0, BUSY_SPIN, 0, np.zeros(1, np.int64))
    RESULTS["ring_latency"] = benchmark.pedantic(_ring_latency, args=(new_ring,), rounds=1, iterations=1)
    benchmark.extra_info.update(RESULTS["ring_latency"])


@pytest.fixture
def echo_rings():
    rings = [ring.Ring.create(shm.segment_name(shm.new_run_id(), f"bench{i}"), 1 << 12) for i in range(2)]
    yield rings
    for r in rings:
        r.abort()
        name = r.segment.name
        r.close()
        shm.unlink(name, registered=True)


def test_ring_round_trip(benchmark, echo_rings):
    """One record there and back per round: the histogram is per-event latency (two one-way hops)."""
    out, back = echo_rings
    warm = 100
    w = ringload.start_echo(out.segment.name, back.segment.name, warm + ROUND_TRIPS, BUSY_SPIN, WRITER_CORE)
    one = np.zeros(1, out.dtype)
    deadline = now_ns() + 120_000_000_000
    for i in range(warm):     # compiles, starts the echo process, faults the pages in
        assert ringload.round_trip(out.header, out.records, back.header, back.records, one, i, BUSY_SPIN,
                                   deadline) == i
    seq = iter(range(warm, warm + ROUND_TRIPS))
    benchmark.pedantic(lambda: ringload.round_trip(out.header, out.records, back.header, back.records, one,
                                                   next(seq), BUSY_SPIN, deadline),
                       rounds=ROUND_TRIPS, iterations=1)
    w.join(30)
    benchmark.extra_info["event"] = "one record out and back through two rings (2 one-way hops)"


def _queue_writer(q, count, gap_ns, core):
    # paced by sleeping, not spinning: Queue.put hands the item to a feeder thread of this process, which a
    # spinning writer pinned to the same core would starve (measuring our loop, not the Queue)
    os.sched_setaffinity(0, {core})
    for _ in range(count):
        q.put(time.monotonic_ns())
        time.sleep(gap_ns / 1e9)


def _pipe_writer(conn, count, gap_ns, core):
    os.sched_setaffinity(0, {core})
    for _ in range(count):
        t_next = time.monotonic_ns() + gap_ns
        conn.send(time.monotonic_ns())
        while time.monotonic_ns() < t_next:
            pass


def _mp_latency(kind: str) -> dict:
    ctx = mp.get_context("spawn")
    out = np.zeros(QUEUE_PINGS, dtype=np.int64)
    if kind == "queue":
        q = ctx.Queue()
        p = ctx.Process(target=_queue_writer, args=(q, QUEUE_PINGS, 20_000, WRITER_CORE))
        p.start()
        for i in range(QUEUE_PINGS):
            sent = q.get(timeout=30)  # receive first: `now - q.get()` would read the clock before blocking
            out[i] = time.monotonic_ns() - sent
    else:
        a, b = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_pipe_writer, args=(b, QUEUE_PINGS, 20_000, WRITER_CORE))
        p.start()
        for i in range(QUEUE_PINGS):
            sent = a.recv()
            out[i] = time.monotonic_ns() - sent
    p.join(30)
    return _percentiles(out[100:])


@pytest.mark.parametrize("kind", ["queue", "pipe"])
def test_multiprocessing_one_way_latency(benchmark, kind):
    RESULTS[f"{kind}_latency"] = benchmark.pedantic(_mp_latency, args=(kind,), rounds=1, iterations=1)
    benchmark.extra_info.update(RESULTS[f"{kind}_latency"])


def _ring_throughput(r: ring.Ring) -> float:
    # whole records both ways: the writer copies batches in (ring.write_batch, as the Feed's conflation buffer
    # drains), the reader copies them out and reads two fields of each (ring.wait_batch, as the Brain does)
    w = ringload.start_writer(r.segment.name, THROUGHPUT_RECORDS, BATCH, ring.POLICY_WAIT, BUSY_SPIN, WRITER_CORE)
    # the writer process needs a moment to start; time from its first record
    while ring.available(r.header) == 0:
        pass
    t0 = time.perf_counter()
    got, disorder, _, _ = ringload.consume_checked(r.header, r.records, THROUGHPUT_RECORDS, BATCH, BUSY_SPIN,
                                                   now_ns() + 120_000_000_000)
    dt = time.perf_counter() - t0
    w.join(30)
    assert got == THROUGHPUT_RECORDS and disorder == 0
    return got / dt


def test_ring_batch_throughput(benchmark, new_ring):
    RESULTS["ring_rate"] = benchmark.pedantic(_ring_throughput, args=(new_ring,), rounds=1, iterations=1)
    benchmark.extra_info["records_per_s"] = RESULTS["ring_rate"]


def _bulk_writer(kind, obj, count, core):
    os.sched_setaffinity(0, {core})
    if kind == "queue":
        for i in range(count):
            obj.put(i)
    else:
        for i in range(count):
            obj.send(i)


def _mp_throughput(kind: str) -> float:
    ctx = mp.get_context("spawn")
    if kind == "queue":
        q = ctx.Queue()
        p = ctx.Process(target=_bulk_writer, args=(kind, q, QUEUE_ITEMS, WRITER_CORE))
        p.start()
        q.get(timeout=30)
        t0 = time.perf_counter()
        for _ in range(QUEUE_ITEMS - 1):
            q.get(timeout=30)
    else:
        a, b = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_bulk_writer, args=(kind, b, QUEUE_ITEMS, WRITER_CORE))
        p.start()
        a.recv()
        t0 = time.perf_counter()
        for _ in range(QUEUE_ITEMS - 1):
            a.recv()
    dt = time.perf_counter() - t0
    p.join(30)
    return (QUEUE_ITEMS - 1) / dt


@pytest.mark.parametrize("kind", ["queue", "pipe"])
def test_multiprocessing_throughput(benchmark, kind):
    RESULTS[f"{kind}_rate"] = benchmark.pedantic(_mp_throughput, args=(kind,), rounds=1, iterations=1)
    benchmark.extra_info["items_per_s"] = RESULTS[f"{kind}_rate"]


def _print_summary() -> None:
    if "ring_latency" not in RESULTS:
        return
    lines = [f"\nring vs multiprocessing (writer core {WRITER_CORE}, reader core {READER_CORE}, busy-spin)",
             f"{'one-way latency (ns)':24s} {'p50':>10s} {'p99':>10s} {'p99.9':>10s}"]
    for k in ("ring", "queue", "pipe"):
        d = RESULTS.get(f"{k}_latency")
        if d:
            lines.append(f"{k:24s} {d['p50']:10.0f} {d['p99']:10.0f} {d['p99.9']:10.0f}")
    rl = RESULTS["ring_latency"]
    for k in ("queue", "pipe"):
        d = RESULTS.get(f"{k}_latency")
        if d:
            lines.append(f"ring faster than {k}: p50 x{d['p50'] / rl['p50']:.0f}, p99 x{d['p99'] / rl['p99']:.0f}")
    if "ring_rate" in RESULTS:
        lines.append(f"throughput: ring {RESULTS['ring_rate'] / 1e6:.1f} M records/s "
                     f"(whole {MARKET_DTYPE.itemsize}-byte records copied in and out)")
        for k in ("queue", "pipe"):
            if f"{k}_rate" in RESULTS:
                lines.append(f"  {k} {RESULTS[f'{k}_rate'] / 1e6:.3f} M items/s -> ring x"
                             f"{RESULTS['ring_rate'] / RESULTS[f'{k}_rate']:.0f}")
    print("\n".join(lines))
