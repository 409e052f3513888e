"""Trade path benchmarks: Brain -> sender hand-off latency per wait mode, signed-request build cost.

Run: pytest bench/bench_trade.py --benchmark-min-rounds=1 -q   (< 60 s)
     python bench/bench_trade.py          (prints the hand-off table used in aegis/trade.py's docstring, then
                                           where the order encode costs less: Brain or sender)

Hand-off method: a producer thread runs a nogil jitted loop (like the Brain: it holds no GIL while spinning),
hands one ORDER_REQUEST to the queue every `gap_us` and keeps spinning; the sender thread waits with the mode
under test. Two latencies per request: `seen` = when sender_wait saw it (still in nogil code) and `python` = when
the sender's Python code holds it (after re-taking the GIL) - the latter is what matters.
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from aegis.core.jit import njit

from aegis.binance import wire
from aegis.core.clock import cpu_relax, now_ns, sleep_ns, yield_cpu
from aegis.core.records import ORDER_REQUEST_DTYPE
from aegis.core.wait import NAMES as WAIT_NAMES, SPIN_YIELD, W_YIELD_TO
from aegis.trade.sender import RequestQueue, handoff, sender_wait
from benchmode import size, timing

HANDOFFS = size(1000, 50)     # orders handed over per measurement


@njit(cache=True, nogil=True)
def _produce(header, records, reqs, count, gap_ns, nap):
    """nap=False: spin between hand-offs like the Brain; nap=True: sleep instead, which leaves a core free for a
    spinning sender (how a box with a spare core for the sender behaves)."""
    done = 0
    nxt = now_ns() + gap_ns
    while done < count:
        t = now_ns()
        if t >= nxt:
            reqs[0].client_id = done + 1
            handoff(header, records, reqs[0], t)
            done += 1
            nxt = t + gap_ns
        elif nap:
            sleep_ns(gap_ns // 2)
        else:
            cpu_relax()
    return done


def measure_handoff(mode: str, count: int = 2000, gap_us: int = 200, nap: bool = False) -> dict:
    """spin-yield: producer and sender pinned to one core (the Brain's), the sender yield-polling, the producer hands
    the core over after each hand-off (aegis.core.wait.W_YIELD_TO), as [trade] wait = auto does with a polling Brain
    on 2 cores."""
    import os
    q = RequestQueue(4096)
    same_core = mode == "spin-yield"
    old_aff = os.sched_getaffinity(0)
    core = max(old_aff)
    if same_core:
        q.header[W_YIELD_TO] = 1
        os.sched_setaffinity(0, {core})
    reqs = np.zeros(1, ORDER_REQUEST_DTYPE)
    dst = np.zeros(64, ORDER_REQUEST_DTYPE)
    stamps = np.zeros(2, np.int64)
    seen, py = [], []
    wait = WAIT_NAMES[mode]
    _produce(q.header, q.records, reqs, 1, 1000, nap)      # compile outside the measurement
    sender_wait(q.header, q.records, dst, 64, wait, 1_000_000, stamps)

    def consumer():
        if same_core:
            os.sched_setaffinity(0, {core})
        got = 0
        deadline = time.monotonic() + 30
        while got < count and time.monotonic() < deadline:
            n = sender_wait(q.header, q.records, dst, 64, wait, 50_000_000, stamps)
            t_py = time.monotonic_ns()
            for i in range(n):
                seen.append(int(stamps[0]) - int(dst[i]["handoff_ts"]))
                py.append(t_py - int(dst[i]["handoff_ts"]))
            got += n

    th = threading.Thread(target=consumer)
    th.start()
    _produce(q.header, q.records, reqs, count, gap_us * 1000, nap)
    th.join(35)
    q.abort()
    os.sched_setaffinity(0, old_aff)
    s, p = np.array(seen) / 1000.0, np.array(py) / 1000.0
    return {"mode": mode + ("+napping-producer" if nap else ""), "n": len(py), "seen_p50": float(np.percentile(s, 50)), "seen_p99": float(np.percentile(s, 99)),
            "p50": float(np.percentile(p, 50)), "p99": float(np.percentile(p, 99)), "max": float(p.max()),
            "wakes": q.stats()["wakes"], "parks": q.stats()["parks"]}


def test_handoff_futex(benchmark):
    r = benchmark.pedantic(measure_handoff, args=("block", HANDOFFS), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["n"] == HANDOFFS


def test_handoff_sleep(benchmark):
    r = benchmark.pedantic(measure_handoff, args=("sleep", HANDOFFS), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["n"] == HANDOFFS


def test_handoff_spin(benchmark):
    r = benchmark.pedantic(measure_handoff, args=("busy-spin", HANDOFFS), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["n"] == HANDOFFS


def test_handoff_share_the_producers_core(benchmark):
    r = benchmark.pedantic(measure_handoff, args=("spin-yield", HANDOFFS), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["n"] == HANDOFFS


def test_handoff_spin_with_a_free_core(benchmark):
    r = benchmark.pedantic(measure_handoff, args=("busy-spin", HANDOFFS), kwargs={"nap": True}, rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["n"] == HANDOFFS


def test_signed_rest_query_build(benchmark):
    from aegis.binance.keys import from_strings
    from aegis.binance.signing import signed_query
    keys = from_strings("k" * 64, "s" * 64)
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002",
              "price": "91739.90", "newClientOrderId": "ae01234567-42", "newOrderRespType": "ACK"}
    benchmark(signed_query, keys.secret, params, 1591702613943, 5000)


def test_order_params_and_signing_from_record(benchmark):
    from aegis.binance.keys import from_strings
    from aegis.trade.risk import SymbolRules
    from aegis.binance.signing import signed_query
    from aegis.trade.sender import order_params
    keys = from_strings("k" * 64, "s" * 64)
    rules = [SymbolRules("BTCUSDT", tick_size="0.10", step_size="0.001")]
    req = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
    req["side"], req["order_type"], req["tif"], req["price_ticks"], req["qty_steps"] = 1, 2, 1, 917399, 2

    def build():
        return signed_query(keys.secret, order_params(req, rules, "ae01234567-42"), 1591702613943, 5000)
    benchmark(build)


def test_ws_signed_params_build(benchmark):
    from aegis.binance.keys import from_strings
    from aegis.binance.signing import ws_signed_params
    keys = from_strings("k" * 64, "s" * 64)
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002",
              "price": "91739.90", "newClientOrderId": "ae01234567-42"}
    benchmark(ws_signed_params, keys.key, keys.secret, params, 1591702613943, 5000)


# --- the fast path's request build (aegis.binance.wire), next to the generic Python build above ------------------------
@njit(cache=True, nogil=True)
def _encode_once(enc, req, pool, state, out, tmp, jb, i):
    """One order's signed request and journal line, as the sender's fast path builds them; returns their bytes."""
    state[wire.ST_MASK_POS] = 0                         # reuse the mask pool: the bench never sends
    return (wire.encode_order(enc, req, 1591702613943 + i, pool, state, out, 0, tmp)
            + wire.encode_journal_req(enc, req, 1591702613943 + i, jb, 0))


@njit(cache=True, nogil=True)
def _encode_many(enc, req, pool, state, out, tmp, jb, n):
    total = 0
    for i in range(n):
        total += _encode_once(enc, req, pool, state, out, tmp, jb, i)
    return total


def _fast_build(transport: str):
    from aegis.trade.risk import SymbolRules
    rules = [SymbolRules("BTCUSDT", tick_size="0.10", step_size="0.001")]
    enc = wire.build_encoder(transport, rules, "ae01234567-", "k" * 64, "s" * 64, 5000, "ACK", "https://fapi.binance.com")
    req = np.zeros(1, ORDER_REQUEST_DTYPE)
    req[0]["side"], req[0]["order_type"], req[0]["tif"], req[0]["price_ticks"], req[0]["qty_steps"] = 1, 2, 1, 917399, 2
    req[0]["client_id"], req[0]["action"] = 42, 1
    args = (enc, req[0], wire.new_mask_pool(), wire.new_state(), np.zeros(wire.MAX_REQUEST, np.uint8),
            np.zeros(2 * wire.MAX_REQUEST, np.uint8), np.zeros(wire.MAX_JOURNAL_LINE, np.uint8))
    _encode_many(*args, 10)
    return args


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_fast_path_request_and_journal_line_build(benchmark, transport):
    """Signed request bytes + journal `req` line per order, from the ORDER_REQUEST record, in jitted code
    (amortised over 10 000 orders per call; extra_info us_per_order)."""
    args = _fast_build(transport)
    n = 10_000
    benchmark(_encode_many, *args, n)
    st = timing(benchmark)
    if st is not None:
        benchmark.extra_info["us_per_order"] = st.median / n * 1e6



# --- where the order encode runs: in the Brain before the hand-off, or in the sender after it ------------------
# The sender encodes after the hand-off (trade.wait_and_prepare). Encoding in the Brain instead would move that
# work before the hand-off, and it only pays if the Brain, whose loop is hot, encodes faster than the sender that
# has just been switched in. Both threads share one core as with [trade] wait = spin-yield.
@njit(cache=True, nogil=True)
def _produce_encoding(header, records, reqs, count, gap_ns, encode_here, enc, req, pool, state, out, tmp, jb, times):
    """A spin-yield Brain: polls with sched_yield, and every gap_ns takes a stamp (risk passed), encodes when asked
    to, and hands a request over. times[k] = (risk passed, encoded, seen by the sender, sender's encode start,
    ready)."""
    done = 0
    nxt = now_ns() + gap_ns
    while done < count:
        t = now_ns()
        if t < nxt:
            yield_cpu()
            continue
        times[done, 0] = t
        if encode_here:
            _encode_once(enc, req, pool, state, out, tmp, jb, done)
        t1 = now_ns()
        times[done, 1] = t1
        reqs[0].client_id = done
        handoff(header, records, reqs[0], t1)
        done += 1
        nxt = now_ns() + gap_ns
    return done


@njit(cache=True, nogil=True)
def _consume_encoding(header, records, dst, count, encode_here, enc, req, pool, state, out, tmp, jb, times, stamps):
    got = 0
    while got < count:
        n = sender_wait(header, records, dst, dst.shape[0], SPIN_YIELD, 50_000_000, stamps)
        if n == 0:
            return got
        for i in range(n):
            k = dst[i].client_id
            times[k, 2] = stamps[0]
            times[k, 3] = now_ns()
            if encode_here:
                _encode_once(enc, req, pool, state, out, tmp, jb, k)
            times[k, 4] = now_ns()
        got += n
    return got


def measure_encode_placement(where: str, transport: str = "rest", count: int = 2000, gap_us: int = 300) -> dict:
    """where = "brain" or "sender". `encode` = the encode's own time where it ran; `ready` = risk passed -> the
    sender holds the signed request and journal line, the figure that decides."""
    import os
    q = RequestQueue(4096)
    q.header[W_YIELD_TO] = 1
    old_aff = os.sched_getaffinity(0)
    core = max(old_aff)
    os.sched_setaffinity(0, {core})
    brain_args, sender_args = _fast_build(transport), _fast_build(transport)
    reqs = np.zeros(1, ORDER_REQUEST_DTYPE)
    dst = np.zeros(64, ORDER_REQUEST_DTYPE)
    times = np.zeros((count, 5), np.int64)
    stamps = np.zeros(2, np.int64)
    in_brain = where == "brain"
    # compile (or load) both loops outside the measurement
    _produce_encoding(q.header, q.records, reqs, 1, 1000, in_brain, *brain_args, np.zeros((1, 5), np.int64))
    _consume_encoding(q.header, q.records, dst, 1, not in_brain, *sender_args, np.zeros((1, 5), np.int64), stamps)
    got = [0]

    def consumer():
        os.sched_setaffinity(0, {core})
        got[0] = _consume_encoding(q.header, q.records, dst, count, not in_brain, *sender_args, times, stamps)

    th = threading.Thread(target=consumer)
    th.start()
    try:
        _produce_encoding(q.header, q.records, reqs, count, gap_us * 1000, in_brain, *brain_args, times)
        th.join(60)
    finally:
        q.abort()
        os.sched_setaffinity(0, old_aff)
    t = times[:got[0]]
    enc_ns = (t[:, 1] - t[:, 0]) if in_brain else (t[:, 4] - t[:, 3])
    ready = (t[:, 4] - t[:, 0]) / 1000.0
    e = enc_ns / 1000.0
    return {"where": where, "transport": transport, "n": int(got[0]),
            "encode_p50": float(np.percentile(e, 50)), "encode_p99": float(np.percentile(e, 99)),
            "ready_p50": float(np.percentile(ready, 50)), "ready_p99": float(np.percentile(ready, 99))}


@pytest.mark.parametrize("where", ["brain", "sender"])
def test_encode_placement(benchmark, where):
    """extra_info: encode and risk-passed -> request-ready percentiles with the encode in the Brain or the sender."""
    r = benchmark.pedantic(measure_encode_placement, args=(where, "rest", HANDOFFS), rounds=1, iterations=1)
    benchmark.extra_info.update(r)
    assert r["n"] == HANDOFFS

if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    print(f"{'mode':22} {'n':>5} {'seen p50':>9} {'seen p99':>9} {'py p50':>8} {'py p99':>8} {'max':>8}  (us)")
    for m, nap in (("busy-spin", False), ("block", False), ("sleep", False), ("spin-yield", False),
                   ("busy-spin", True), ("block", True)):
        r = measure_handoff(m, count, nap=nap)
        m = r["mode"]
        print(f"{m:22} {r['n']:5d} {r['seen_p50']:9.1f} {r['seen_p99']:9.1f} {r['p50']:8.1f} {r['p99']:8.1f} "
              f"{r['max']:8.1f}  wakes={r['wakes']} parks={r['parks']}")
    print()
    print(f"{'encode in':10} {'transport':9} {'n':>5} {'encode p50':>10} {'p99':>6} {'ready p50':>9} {'p99':>6}  (us)")
    for trial in range(2):          # alternated, so a change in the host's load hits both
        for transport in ("rest", "ws"):
            for where in ("brain", "sender"):
                r = measure_encode_placement(where, transport, min(count, 2000))
                print(f"{where:10} {transport:9} {r['n']:5d} {r['encode_p50']:10.2f} {r['encode_p99']:6.2f} "
                      f"{r['ready_p50']:9.2f} {r['ready_p99']:6.2f}")
