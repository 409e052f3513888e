"""How often this host takes a core away from a running thread: the floor under every tail-latency figure.

A jitted loop reads CLOCK_MONOTONIC back to back on one pinned core; any gap above a threshold is time the core
spent elsewhere (timer interrupts, other interrupts, the hypervisor). Run:
    python -m pytest bench/bench_host_jitter.py -s
On a tuned host (isolcpus, nohz_full, IRQs moved: scripts/tune_host.sh) the counts on engine cores should be near 0.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from aegis.core.jit import njit

from aegis.core.clock import now_ns
from benchmode import size

THRESHOLDS_NS = np.array([500, 1_000, 5_000, 20_000, 100_000], dtype=np.int64)
READS = size(20_000_000, 200_000)


@njit(cache=True)
def count_gaps(n, thresholds):
    counts = np.zeros(thresholds.shape[0], np.int64)
    lost = 0  # total ns in gaps above the lowest threshold: the share of time the core was not ours
    t0 = now_ns()
    last = t0
    for _ in range(n):
        t = now_ns()
        d = t - last
        last = t
        if d > thresholds[0]:
            lost += d
        for k in range(thresholds.shape[0]):
            if d > thresholds[k]:
                counts[k] += 1
    return counts, now_ns() - t0, lost


@pytest.mark.parametrize("core", sorted(os.sched_getaffinity(0)))
def test_core_interruptions_per_second(benchmark, core):
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        count_gaps(1000, THRESHOLDS_NS)
        counts, elapsed, lost = benchmark.pedantic(count_gaps, args=(READS, THRESHOLDS_NS), rounds=1, iterations=1)
    finally:
        os.sched_setaffinity(0, before)
    per_s = counts / (elapsed / 1e9)
    for thr, v in zip(THRESHOLDS_NS, per_s):
        benchmark.extra_info[f"gaps_over_{thr}ns_per_s"] = float(v)
    benchmark.extra_info["time_lost_fraction"] = lost / elapsed
    print(f"\ncore {core}: core taken away per second: " + ", ".join(
        f">{thr / 1000:g}us {v:.0f}" for thr, v in zip(THRESHOLDS_NS, per_s))
        + f"; time lost in those gaps: {100 * lost / elapsed:.2f}%")
