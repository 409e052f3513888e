"""Brain process: consumes the ring in batches inside jitted code.

This first version consumes and checksums (issue 5 adds indicators, strategies and orders).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from aegis import control, ring
from aegis.atomics import load_acquire, store_release
from aegis.clock import now_ns
from aegis.control import R_BATCHES, R_CHECKSUM, R_RECORDS, R_STATE, ROLE_BRAIN, ROLE_FEED, ROLE_SLOTS, ST_RUNNING, ST_STOPPED
from aegis.feed import checksum_step
from aegis.process import ProcessSpec, enter, freeze_gc
from aegis.records import MARKET_DTYPE

BATCH = 1024
BEAT_NS = 50_000_000


@njit(cache=True, nogil=True)
def consume_loop(header, records, ctl, dst, wait):
    """Drain the ring until the Feed has stopped and nothing is left (nothing published is ever left unread)."""
    base = ROLE_SLOTS * (1 + ROLE_BRAIN)
    feed_state = ROLE_SLOTS * (1 + ROLE_FEED) + R_STATE
    total = 0
    batches = 0
    chk = 0
    max_n = dst.shape[0]
    control.set_slot(ctl, ROLE_BRAIN, R_STATE, ST_RUNNING)  # from compiled code: see aegis.feed.synthetic_loop
    while True:
        n = ring.wait_batch(header, records, dst, max_n, wait, now_ns() + BEAT_NS)
        for i in range(n):
            chk = checksum_step(chk, dst[i].seq)
        if n > 0:
            total += n
            batches += 1
            store_release(ctl, base + R_RECORDS, total)
            store_release(ctl, base + R_BATCHES, batches)
            store_release(ctl, base + R_CHECKSUM, chk)
        else:
            control.beat(ctl, ROLE_BRAIN)
            if ring.aborted(header):
                break
            if control.stop_requested(ctl) and load_acquire(ctl, feed_state) == ST_STOPPED \
                    and ring.available(header) == 0:
                break
        if (batches & 63) == 0:
            control.beat(ctl, ROLE_BRAIN)
    return total


def run(spec: ProcessSpec) -> int:
    ctx = enter(spec)
    dst = np.zeros(BATCH, dtype=MARKET_DTYPE)
    ctx.set_state(control.ST_READY)
    freeze_gc()
    try:
        consume_loop(ctx.ring.header, ctx.ring.records, ctx.control, dst, spec.wait)
    finally:
        ctx.set_state(control.ST_STOPPED)
        ctx.heartbeat()
    return 0
