"""Feed process: market data in, ring records out.

This first version has the built-in synthetic source only (issue 4 adds the Binance websocket source).
"""
from __future__ import annotations

import sys

from numba import njit

from aegis import control, ring, synthetic
from aegis.clock import now_ns
from aegis.control import R_CHECKSUM, R_RECORDS, R_STATE, ROLE_FEED, ROLE_SLOTS, ST_RUNNING
from aegis.atomics import store_release
from aegis.process import ProcessSpec, enter, freeze_gc
from aegis.ring import POLICIES
from aegis.wait import idle

BATCH = 256
BEAT_NS = 50_000_000
EPOCH_OFFSET_NS = 0  # synthetic exchange time = monotonic clock (no wall clock needed)


@njit(cache=True, nogil=True)
def checksum_step(chk, seq):
    """Order-sensitive running checksum of record sequence numbers (wrapping int64 arithmetic)."""
    return chk * 31 + seq + 1


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
        spins = 0
        synthetic.generate(state, batch, nb, seq, t + EPOCH_OFFSET_NS, t)
        w = ring.stamp_and_write(header, records, batch, nb, policy, wait)
        for i in range(w):
            chk = checksum_step(chk, batch[i].seq)
        seq += nb
        written_total += w
        store_release(ctl, base + R_RECORDS, written_total)
        store_release(ctl, base + R_CHECKSUM, chk)
    return written_total


def run(spec: ProcessSpec) -> int:
    ctx = enter(spec)
    cfg = spec.config
    n_symbols = cfg.symbols if isinstance(cfg.symbols, int) else len(cfg.symbols)
    section = cfg.section("feed")
    rate = int(section.get("synthetic_rate", 200_000))
    state = synthetic.make_state(n_symbols, seed=int(section.get("seed", 1)))
    synthetic.seed(int(section.get("seed", 1)))
    batch = synthetic.new_batch(BATCH)
    control.set_slot(ctx.control, control.ROLE_FEED, 0, 0)
    ctx.control[control.G_SYMBOLS] = n_symbols
    ctx.set_state(control.ST_READY)
    freeze_gc()
    try:
        synthetic_loop(ctx.ring.header, ctx.ring.records, ctx.control, state, batch, rate,
                       POLICIES[cfg.ring_policy], spec.wait)
    finally:
        ctx.set_state(control.ST_STOPPED)
        ctx.heartbeat()
    return 0


if __name__ == "__main__":  # pragma: no cover - started by the supervisor
    sys.exit("aegis.feed is started by `python -m aegis`")
