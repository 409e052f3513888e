"""Cost of measuring latency: what one histogram record adds to every tick and order, and what the supervisor's
status-line query costs.

Run:  python -m pytest bench/bench_pipeline.py --benchmark-columns=min,mean,max --benchmark-json=pipeline.json
Each round records N values from one @njit call (the way the Feed/Brain/sender do it: inside their jitted batch
loops), so the Python->jit call cost is amortised away; extra_info["ns_per_value"] is the per-value figure.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from aegis import latency as L
from aegis import report as R
from aegis.clock import now_ns
from aegis.records import ORDER_REQUEST_DTYPE

N = 1_000_000


@njit(cache=True, nogil=True)
def _record_values(hset, values):
    for i in range(values.shape[0]):
        L.record_stage(hset, L.STAGE_RING, values[i])


@njit(cache=True, nogil=True)
def _stamp_and_record(hset, n):
    # The real hot-path pattern: read the clock, record the span since the previous stamp.
    prev = now_ns()
    for _ in range(n):
        t = now_ns()
        L.record_span(hset, L.STAGE_RING, prev, t)
        prev = t


@njit(cache=True, nogil=True)
def _record_requests(hset, reqs, wire_ns):
    for i in range(reqs.shape[0]):
        L.record_order_request(hset, reqs[i], wire_ns[i])


def _values(n=N, seed=1):
    # tick-to-trade-like spread: a few us, with a long tail (touches many buckets, like real data)
    return np.random.default_rng(seed).lognormal(np.log(5_000), 1.0, n).astype(np.int64)


def _per_value(benchmark, n):
    benchmark.extra_info["ns_per_value"] = benchmark.stats.stats.mean / n * 1e9


def test_record_stage_cost_per_value(benchmark):
    hset, values = L.new_set(), _values()
    _record_values(hset, values[:10])
    benchmark(_record_values, hset, values)
    _per_value(benchmark, N)
    assert L.count(hset[L.STAGE_RING]) >= N


def test_clock_read_plus_record_cost_per_value(benchmark):
    hset = L.new_set()
    _stamp_and_record(hset, 10)
    benchmark(_stamp_and_record, hset, N)
    _per_value(benchmark, N)


def test_record_order_request_cost_per_request(benchmark):
    n = 200_000
    reqs = np.zeros(n, ORDER_REQUEST_DTYPE)
    base = np.arange(n, dtype=np.int64) * 100_000 + 1
    steps = _values(n * 6, seed=2).reshape(6, n) // 8 + 1
    for k, field in enumerate(("recv_ts", "pub_ts", "consume_ts", "signal_ts", "risk_ts", "handoff_ts")):
        reqs[field] = base + steps[:k].sum(axis=0)
    wire = base + steps.sum(axis=0)
    hset = L.new_set()
    _record_requests(hset, reqs[:10], wire[:10])
    benchmark(_record_requests, hset, reqs, wire)
    _per_value(benchmark, n)


def test_status_line_query_cost(benchmark):
    hset = L.new_set()
    L.record_spans(hset, L.STAGE_TICK_TO_TRADE, np.ones(N, np.int64), _values() + 1)
    R.status_fields(hset)
    p50, p99 = benchmark(R.status_fields, hset)
    assert 0 < p50 <= p99
