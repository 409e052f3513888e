"""The order loop: one set of kernels for the live Brain and for replay.

Per batch of market records (process_batch):
  checksum, publish->consume latency, counters -> candles -> risk.on_market_batch (mids, marks, daily loss) ->
  per record: strategy.sync_symbol (actual position and open orders of the record's symbol, for strategies that
  track them) -> strategy.run_range up to the next signal -> the venue sees the records up to the signal
  (`market_seen`) -> the signal: hold-off after a recent refusal -> signal_to_request -> risk.check ->
  `deliver` (hand-off or simulated submit) -> strategy.accepted, or strategy.revert and a hold-off when refused.
After each batch, and whenever the kill switch fires, `halt_followup` turns a HALT into cancel-all and flatten
requests that take the same risk -> deliver path. Fills of either venue reach risk through `apply_fills`.

The order sink is the only difference between live and replay. A sink is a NamedTuple whose class selects, at
compile time, three small functions (numba overloads, so the choice costs nothing per order):

    deliver(sink, bs, req, verdict, now) -> verdict   send an order risk accepted (verdict 0) or note a refusal
    market_seen(sink, bs, batch, i0, i1)              the venue sees batch[i0:i1] (replay's simulated exchange
                                                      moves its book and fills resting orders; live: nothing)
    signal_clock(sink, sig) -> ns                     the time a signal is decided at: the wall clock live,
                                                      the record's replay time in a backtest (deterministic)
    venue_quiet(sink) -> bool                         no fill can land before the next signal (live: fills
                                                      only come between batches; replay: no order held)

HandoffSink (below) is the live sink: the sender thread's request queue and the fill queue back. Replay's
SimSink (aegis.replay.sink) registers its own three. What must differ stays visible here and nowhere else:
  * fills: a live fill reaches risk when the sender or the user stream reports it (the next loop iteration);
    a simulated fill reaches risk at once, in simulated time, before the strategy sees the next record;
  * clocks: live stamps signals and risk with CLOCK_MONOTONIC, replay with the record's time.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from aegis.brain import bus, candles, pools, strategy
from aegis.core import latency, ring
from aegis.core.clock import now_ns
from aegis.core.jit import njit
from aegis.core.records import ACTION_CANCEL, ACTION_NEW, ORDER_MARKET, STATUS_REJECTED
from aegis.trade import risk as riskmod
from aegis.trade.sender import handoff, poll_kill

# Brain counters (int64 array BrainState.st)
S_RECORDS, S_BATCHES, S_CHECKSUM, S_SIGNALS, S_ORDERS, S_REJECTS, S_FILLS, S_LAST_SEQ = range(8)
S_TICK_RECORDS = 8     # records since the last TICK_UPDATE (reset by Python)
S_TICK_BATCHES = 9
S_IDLE = 10
S_MAX_EXCH_TS = 11     # newest exchange time seen (candle closing)
S_EVENTS_DROPPED = 12  # bus events not queued (queue or signal pool full): observers missed them, trading did not
S_FILL_LOG_N = 13
S_HALT_REQUESTS = 14
S_HELD = 15            # signals dropped (and reverted) during a symbol's hold-off after a refusal
S_REFUSED = 16         # orders refused before they left (risk, full sender queue); S_REJECTS adds exchange rejects
S_SYNCED = 17          # risk's G_RESTORED + 1 as of the last sync_all (0: never synced)
S_WARMS = 18           # rehearsals of the last order's risk check (warm_signal_path)
STATS_SLOTS = 24


class BrainState(NamedTuple):
    """Everything the order loop reads and writes, owned by one Brain (or one replay): preallocated arrays,
    bundled so a kernel takes the bundle, the sink and its data. The arrays mutate in place; the record itself
    (and so every setting in it) never changes."""
    strat: strategy.StrategyState
    rk: riskmod.RiskState
    cndl: tuple            # candles.CandleBook.args + (intervals, stats); no intervals: candles off
    busq: tuple            # (events, header, prio_of) of the EventBus; topics nobody listens to are not queued
    spool: tuple           # (records, header) of the SignalPool that carries SIGNAL_GENERATED payloads
    lat: np.ndarray        # latency histogram set (recorded only when record_lat)
    st: np.ndarray         # (STATS_SLOTS,) int64 counters above
    signals: np.ndarray    # (1,) SIGNAL_DTYPE: the signal being handled
    req: np.ndarray        # (1,) ORDER_REQUEST_DTYPE: the request being built
    req_buf: np.ndarray    # ORDER_REQUEST_DTYPE: halt follow-up requests (2 per symbol + slack)
    fill_log: np.ndarray   # FILL_DTYPE ring (power of two) the ORDER_FILLED events point into
    holdoff: np.ndarray    # (symbols,) int64: no new order for the symbol before this time (after a refusal)
    unit_qty: np.ndarray   # (symbols,) float64: base qty of one strategy unit, fixed at the first order (0: not yet)
    trading: bool          # False: signals only (no risk, no orders; the strategy trades on paper)
    record_lat: bool       # record publish->consume per record
    retry_ns: int          # hold-off after a refusal
    unit_notional: float   # quote value of one strategy unit (0: a unit is 1.0 base asset)
    warm_ns: int           # live: how often the loop rehearses the last order's risk check (warm_signal_path)


def new_brain_state(strat_cfg, n_symbols: int, rk: riskmod.RiskState, cndl: tuple, busq: tuple, spool: tuple,
                    lat: np.ndarray, *, trading: bool, record_lat: bool, retry_ms: float,
                    unit_notional: float, fill_log: int = 1024, warm_us: int = 0) -> BrainState:
    from aegis.core.records import FILL_DTYPE, ORDER_REQUEST_DTYPE
    return BrainState(strategy.new_strategy_state(strat_cfg, n_symbols), rk, cndl, busq, spool, lat,
                      np.zeros(STATS_SLOTS, np.int64), strategy.new_signals(1), np.zeros(1, ORDER_REQUEST_DTYPE),
                      np.zeros(2 * rk.sym.shape[0] + 8, ORDER_REQUEST_DTYPE), np.zeros(fill_log, FILL_DTYPE),
                      np.zeros(n_symbols, np.int64), np.zeros(n_symbols, np.float64), bool(trading),
                      bool(record_lat), int(retry_ms * 1e6), float(unit_notional), int(warm_us) * 1000)


# ============================================================================================ the sink interface
def deliver(sink, bs, req, verdict, now):
    """Send `req` (verdict 0: risk accepted it) or record its refusal; returns the final verdict."""
    raise NotImplementedError("a sink's overload is chosen at compile time")


def market_seen(sink, bs, batch, i0, i1):
    """The venue sees batch[i0:i1] (before the signal decided on batch[i1 - 1] is delivered)."""
    raise NotImplementedError("a sink's overload is chosen at compile time")


def signal_clock(sink, sig):
    """The time a signal is decided at (ns)."""
    raise NotImplementedError("a sink's overload is chosen at compile time")


def venue_quiet(sink):
    """True when no fill can reach risk before the next signal, so a strategy that reads its position may run over
    many records in one call: live fills arrive only between batches; the simulated exchange can fill at any record
    while it holds an order."""
    raise NotImplementedError("a sink's overload is chosen at compile time")


def sink_is(sink_type, cls) -> bool:
    """Typing-time test a sink's overloads use to claim their own NamedTuple class."""
    return isinstance(sink_type, (types.NamedTuple, types.NamedUniTuple)) and sink_type.instance_class is cls


class HandoffSink(NamedTuple):
    """The live order sink: the sender thread's request queue out, the fill queue back."""
    qh: np.ndarray        # RequestQueue header
    qr: np.ndarray        # RequestQueue records
    fh: np.ndarray        # FillQueue header
    fr: np.ndarray        # FillQueue records
    ftmp: np.ndarray      # FILL_DTYPE scratch the fill queue is drained into


@overload(deliver, jit_options={"nogil": True})
def _deliver_handoff(sink, bs, req, verdict, now):
    if not sink_is(sink, HandoffSink):
        return None

    def impl(sink, bs, req, verdict, now):
        if verdict != 0:
            return verdict
        # risk decided at the signal's time `now` (deterministic, as replay needs); the latency stage ends here
        req.risk_ts = now_ns()
        if handoff(sink.qh, sink.qr, req, now_ns()) == 0:
            riskmod.count_reject(bs.rk, req.symbol, riskmod.R_QUEUE_FULL, req.client_id, now)
            return riskmod.R_QUEUE_FULL
        return 0
    return impl


@overload(market_seen, jit_options={"nogil": True})
def _market_seen_handoff(sink, bs, batch, i0, i1):
    if not sink_is(sink, HandoffSink):
        return None

    def impl(sink, bs, batch, i0, i1):
        return None
    return impl


@overload(signal_clock, jit_options={"nogil": True})
def _signal_clock_handoff(sink, sig):
    if not sink_is(sink, HandoffSink):
        return None

    def impl(sink, sig):
        return now_ns()
    return impl


@overload(venue_quiet, jit_options={"nogil": True}, inline="always")
def _venue_quiet_handoff(sink):
    if not sink_is(sink, HandoffSink):
        return None

    def impl(sink):
        return True
    return impl


# ============================================================================================ kernels
@njit(cache=True, nogil=True)
def unit_size(bs, s, price):
    """Base-asset quantity of one strategy unit for symbol s, fixed at the symbol's first order so a reversal is
    exactly twice an entry: unit_notional (quote currency) at that price, rounded UP to the symbol's step and at
    least its min qty. unit_notional <= 0: a unit is 1.0 base asset."""
    unit_qty = bs.unit_qty
    q = unit_qty[s]
    if q > 0.0:
        return q
    if bs.unit_notional <= 0.0 or price <= 0.0:
        return 1.0
    q = bs.unit_notional / price
    sym = bs.rk.sym
    if s < sym.shape[0]:
        step = max(sym[s, riskmod.S_STEP], sym[s, riskmod.S_MKT_STEP])
        if step > 0.0:
            q = math.ceil(q / step - 1e-9) * step
        mn = max(sym[s, riskmod.S_MIN_QTY], sym[s, riskmod.S_MKT_MIN_QTY])
        if q < mn:
            q = mn
    unit_qty[s] = q
    return q


@njit(cache=True, nogil=True)
def signal_to_request(sig, req, consume_ts, signal_ts, unit):
    """Fill an ORDER_REQUEST (ACTION_NEW, client id left to risk) from a signal, with the stage timestamps;
    quantity = signal units * `unit` (base asset per unit, see unit_size). A cancel signal (action ACTION_CANCEL)
    becomes an ACTION_CANCEL request of its target_id."""
    req.client_id = 0
    req.recv_ts = sig.recv_ts
    req.pub_ts = sig.pub_ts
    req.consume_ts = consume_ts
    req.signal_ts = signal_ts
    req.risk_ts = 0
    req.handoff_ts = 0
    req.target_id = sig.target_id if sig.action == ACTION_CANCEL else 0
    req.price = 0.0 if sig.order_type == ORDER_MARKET else sig.price
    req.qty = sig.qty * unit
    req.price_ticks = 0
    req.qty_steps = 0
    req.exch_ts = sig.exch_ts
    req.symbol = sig.symbol
    req.side = sig.side
    req.order_type = sig.order_type
    req.tif = sig.tif
    req.reduce_only = sig.reduce_only
    req.action = ACTION_CANCEL if sig.action == ACTION_CANCEL else ACTION_NEW
    req.flags = 0


@njit(cache=True, nogil=True)
def warm_signal_path(bs, now):
    """Live, between signals: the last signal through signal_to_request and risk.assess_new again, into the request
    scratch, recording nothing but the count S_WARMS (no order, no risk state, no refusal). On this host a thread
    that only waits loses much of its cache and TLB contents within 1-2 ms, and the next order's risk check then
    costs several times its hot figure (bench/MEASURED.md); run every BrainState.warm_ns, this keeps the path's data
    warm. Returns the verdict, or -1 when there is no new order to rehearse yet (no signal, a cancel, or a symbol
    whose unit size is not fixed yet)."""
    if not bs.trading or bs.st[S_SIGNALS] == 0:
        return -1
    sig = bs.signals[0]
    s = sig.symbol
    if sig.action == ACTION_CANCEL or s < 0 or s >= bs.unit_qty.shape[0] or bs.unit_qty[s] <= 0.0:
        return -1
    req = bs.req[0]
    signal_to_request(sig, req, now, now, bs.unit_qty[s])
    bs.st[S_WARMS] += 1
    return riskmod.assess_new(bs.rk, req, now)


@njit(cache=True, nogil=True)
def send(bs, sink, req, now):
    """risk.check + deliver of one request at time `now`; counts it and tells the bus. 0 (sent) or the reason."""
    st = bs.st
    events, bh, prio_of = bs.busq
    verdict = deliver(sink, bs, req, riskmod.check(bs.rk, req, now), now)
    if verdict == 0:
        st[S_ORDERS] += 1
        if not bus.push(events, bh, prio_of, bus.ORDER_REQUEST, req.client_id, req.symbol,
                        np.int64(req.side) * np.int64(req.action)):
            st[S_EVENTS_DROPPED] += 1
    else:
        st[S_REJECTS] += 1
        st[S_REFUSED] += 1
        if not bus.push(events, bh, prio_of, bus.RISK_REJECTED, verdict, req.symbol, req.client_id):
            st[S_EVENTS_DROPPED] += 1
    return verdict


@njit(cache=True, nogil=True)
def apply_fills(bs, fills, f0, f1, now):
    """Fills and order state changes fills[f0:f1] from the venue: risk first, then the log the bus points into."""
    st = bs.st
    events, bh, prio_of = bs.busq
    fill_log = bs.fill_log
    mask = fill_log.shape[0] - 1
    for i in range(f0, f1):
        f = fills[i]
        riskmod.on_fill(bs.rk, f, now)
        if bs.trading:   # the strategy reads what really happened (a no-op for strategies that do not track it)
            strategy.sync_symbol(bs.strat, bs.rk.sym, bs.unit_qty, f.symbol)
        if f.qty > 0.0:
            st[S_FILLS] += 1
        if f.status == STATUS_REJECTED:
            st[S_REJECTS] += 1
        idx = st[S_FILL_LOG_N] & mask
        fill_log[idx] = f
        st[S_FILL_LOG_N] += 1
        if not bus.push(events, bh, prio_of, bus.ORDER_FILLED, idx, f.client_id, f.status):
            st[S_EVENTS_DROPPED] += 1
    return f1 - f0


@njit(cache=True, nogil=True)
def drain_fills(bs, sink, now):
    """Live: everything the fill queue holds -> apply_fills. Returns how many."""
    total = 0
    while True:
        n = ring.read_batch(sink.fh, sink.fr, sink.ftmp, sink.ftmp.shape[0])
        if n == 0:
            return total
        apply_fills(bs, sink.ftmp, 0, n, now)
        total += n


@njit(cache=True, nogil=True)
def service(bs, sink, kill_flags, now):
    """The start of every live loop iteration: fills first, then the kill switch, then a halt's follow-up.
    Returns the number of fills applied."""
    n = drain_fills(bs, sink, now)
    poll_kill(kill_flags, bs.rk.g, now)
    if bs.rk.g[riskmod.G_HALT_PENDING] != 0:
        halt_followup(bs, sink, now)
    return n


@njit(cache=True, nogil=True)
def halt_followup(bs, sink, now):
    """Once risk entered HALTED: its cancel-all (+ flatten) requests, each through risk.check and deliver."""
    m = riskmod.halt_requests(bs.rk, bs.req_buf, now)
    for i in range(m):
        send(bs, sink, bs.req_buf[i], now)
    bs.st[S_HALT_REQUESTS] += m
    if m > 0:
        sync_all(bs)     # risk's own flatten orders are open orders the strategy did not emit
    return m


@njit(cache=True, nogil=True)
def sync_all(bs):
    """Every symbol's actual position and open orders into the strategy state: at the start, whenever Python seeded
    positions or orders (resume, reconciliation: risk.G_RESTORED), after a halt's flatten orders. Fills keep one
    symbol in step (apply_fills)."""
    if not bs.trading:
        return
    for s in range(bs.unit_qty.shape[0]):
        strategy.sync_symbol(bs.strat, bs.rk.sym, bs.unit_qty, s)
    bs.st[S_SYNCED] = bs.rk.g[riskmod.G_RESTORED] + 1


@njit(cache=True, nogil=True)
def process_batch(bs, sink, batch, n, consume_ts):
    """Everything the order loop does with one batch of market records; returns the number of signals."""
    st = bs.st
    ss = bs.strat
    events, bh, prio_of = bs.busq
    sp_recs, sp_hdr = bs.spool
    # latency + checksum + bookkeeping
    chk = st[S_CHECKSUM]
    max_ts = st[S_MAX_EXCH_TS]
    for i in range(n):
        r = batch[i]
        chk = ring.checksum_step(chk, r.seq)
        if r.exch_ts > max_ts:
            max_ts = r.exch_ts
        if bs.record_lat:
            latency.record_span(bs.lat, latency.STAGE_RING, r.pub_ts, consume_ts)
    st[S_CHECKSUM] = chk
    st[S_MAX_EXCH_TS] = max_ts
    st[S_RECORDS] += n
    st[S_BATCHES] += 1
    st[S_TICK_RECORDS] += n
    st[S_TICK_BATCHES] += 1
    if n > 0:
        st[S_LAST_SEQ] = batch[n - 1].seq
    # candles (trades only)
    pool, pool_hdr, cur, last_close, hist, hist_n, intervals, cstats = bs.cndl
    if intervals.shape[0] > 0:
        candles.update(pool, pool_hdr, cur, last_close, hist, hist_n, intervals, cstats, batch, n)
    trading = bs.trading
    if trading:
        riskmod.on_market_batch(bs.rk, batch, n, consume_ts)
    # A strategy that reads its actual position sees each record with its symbol's position and open orders as
    # risk knows them: its state is synced with every symbol at the start (and after Python seeded risk), and with a
    # symbol at each of its fills (apply_fills), so it runs up to its next signal in one call while no fill can
    # land, and one record at a time while one can (replay holding an order: a fill at one record is seen at the
    # next, as live fills are seen in the next batch). A strategy that does not read them always runs on.
    tracked = trading and strategy.tracks_positions(ss.id)
    if tracked and st[S_SYNCED] != bs.rk.g[riskmod.G_RESTORED] + 1:
        sync_all(bs)
    signals = bs.signals
    total = 0
    i = 0
    while i < n:
        end = n if (not tracked or venue_quiet(sink)) else i + 1
        k, i2 = strategy.run_range(ss, batch, i, end, signals, 1)
        market_seen(sink, bs, batch, i, i2)
        i = i2
        if k == 0:
            continue
        total += 1
        sig = signals[0]
        signal_ts = signal_clock(sink, sig)
        sig.ts = signal_ts
        sig.consume_ts = consume_ts
        verdict = -1
        cid = 0
        s = sig.symbol
        if trading:
            if signal_ts < bs.holdoff[s]:
                # refused recently: do not hammer risk with the same order on every tick; the strategy forgets
                # the signal and will produce it again once the hold-off is over (if it still wants it)
                strategy.revert(ss, sig)
                st[S_HELD] += 1
                continue
        st[S_SIGNALS] += 1
        if trading:
            req = bs.req[0]
            signal_to_request(sig, req, consume_ts, signal_ts, unit_size(bs, s, sig.price))
            verdict = send(bs, sink, req, signal_ts)
            cid = req.client_id
            if verdict != 0:
                strategy.revert(ss, sig)
                bs.holdoff[s] = signal_ts + bs.retry_ns
            else:
                strategy.accepted(ss, sig, cid)
        if not bus.wanted(prio_of, bus.SIGNAL_GENERATED):
            continue
        slot = pools.take(sp_recs, sp_hdr)
        if slot < 0:
            st[S_EVENTS_DROPPED] += 1
            continue
        sp_recs[slot] = sig
        sp_recs[slot].next = pools.TAKEN
        if not bus.push(events, bh, prio_of, bus.SIGNAL_GENERATED, slot, verdict, cid):
            pools.give(sp_recs, sp_hdr, slot)
            st[S_EVENTS_DROPPED] += 1
    return total
