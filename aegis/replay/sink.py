"""Replay's order sink: the simulated exchange behind the Brain's order loop (aegis.brain.pipeline).

An accepted order is submitted to the simulated exchange at the signal's replay time and a refused one goes to the
finished-order log with risk's reason; the exchange sees every record before the signal decided on it is delivered;
and every fill reaches risk at once, in simulated time (live fills arrive a loop iteration later).
"""
from __future__ import annotations

from typing import NamedTuple

from numba.extending import overload

from aegis.brain import pipeline
from aegis.replay import simexec
from aegis.replay.simexec import C_ACTIVE, C_FILLS, SimState


class SimSink(NamedTuple):
    sx: SimState


@overload(pipeline.deliver, jit_options={"nogil": True})
def _deliver_sim(sink, bs, req, verdict, now):
    if not pipeline.sink_is(sink, SimSink):
        return None

    def impl(sink, bs, req, verdict, now):
        sx = sink.sx
        if verdict != 0:
            simexec.log_refused(req, now, verdict, sx.log_i, sx.log_f, sx.ctr)
            return verdict
        f0 = sx.ctr[C_FILLS]
        req.handoff_ts = now
        simexec.submit(req, now, sx)
        pipeline.apply_fills(bs, sx.fills, f0, sx.ctr[C_FILLS], now)
        return 0
    return impl


@overload(pipeline.market_seen, jit_options={"nogil": True})
def _market_seen_sim(sink, bs, batch, i0, i1):
    if not pipeline.sink_is(sink, SimSink):
        return None

    def impl(sink, bs, batch, i0, i1):
        sx = sink.sx
        book, ctr = sx.book, sx.ctr      # taken out of the bundle once, not at every record
        for q in range(i0, i1):
            r = batch[q]
            if not simexec.quick_market(r, book, ctr):
                f0 = ctr[C_FILLS]
                simexec.on_market(r, sx)
                if ctr[C_FILLS] > f0:
                    pipeline.apply_fills(bs, sx.fills, f0, ctr[C_FILLS], r.recv_ts)
    return impl


@overload(pipeline.signal_clock, jit_options={"nogil": True})
def _signal_clock_sim(sink, sig):
    if not pipeline.sink_is(sink, SimSink):
        return None

    def impl(sink, sig):
        return sig.recv_ts
    return impl


@overload(pipeline.venue_quiet, jit_options={"nogil": True}, inline="always")
def _venue_quiet_sim(sink):
    if not pipeline.sink_is(sink, SimSink):
        return None

    def impl(sink):
        return sink.sx.ctr[C_ACTIVE] == 0
    return impl
