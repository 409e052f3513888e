"""Brain process: market records in, orders out, inside one long @njit(nogil) loop.

Per iteration of `brain_loop`, in priority order (the event bus keeps the same order for its Python handlers):
  1. fills   drain the trade path's FillQueue -> aegis.trade.risk.on_fill_batch (positions, PnL, open orders), log them;
  2. control stop / abort; a pending HALT turns into cancel-all (+ flatten) requests via aegis.trade.risk.halt_requests;
  3. market  ring.wait_batch -> consume_ts, STAGE_RING latency -> checksum -> candles -> risk.on_market_batch ->
             strategy.sync (the actual positions / open orders of the risk book, fills included, into the strategy
             state) -> strategy.run_range (one signal at a time) -> per signal: signal_to_request -> risk.check ->
             trade.handoff to the sender thread (then strategy.accepted with the client id); a refused signal is
             reverted in the strategy's state and its symbol held off for [brain] retry_ms (no re-check on every
             tick). A signal may also ask to cancel a working order of the strategy (ACTION_CANCEL).
The loop returns to Python only for a housekeeping round (every [brain] round_ms, or early when the bus queues are
getting full): Python then dispatches the event bus (SIGNAL_GENERATED, ORDER_REQUEST, RISK_REJECTED, ORDER_FILLED,
TICK_UPDATE, TIMER), closes due candles, publishes stats and beats. Nothing per record or per order needs Python,
and while the loop spins it holds no GIL, so the sender thread runs freely (see aegis.trade.sender).

Without an order path (aegis.trade.sender.open_order_path missing or returning None, or [brain] trading = false) the
Brain runs "signals only": the same pipeline minus risk and hand-off; the strategy is never synced then, so it
trades on paper (assumes each of its orders filled at once, see aegis.brain.strategy "Position").
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass

import numpy as np
from numba import njit

from aegis.brain import bus
from aegis.brain import candles
from aegis.core import control
from aegis.core import latency
from aegis.brain import pools
from aegis.core import ring
from aegis.brain import strategy
from aegis.trade import risk as riskmod
from aegis.core.atomics import load_acquire, store_release
from aegis.core.clock import now_ns, py_now_ns
from aegis.core.control import (R_BATCHES, R_BRAIN_FILLS, R_BRAIN_ORDERS, R_BRAIN_POSITIONS, R_BRAIN_REJECTS,
                           R_BRAIN_SIGNALS, R_CHECKSUM, R_ERRORS, R_IDLE, R_RECORDS, R_STATE, ROLE_BRAIN, ROLE_FEED,
                           ROLE_SLOTS, ST_STOPPED)
from aegis.feed.process import checksum_step
from aegis.core.startup import ProcessSpec, enter, freeze_gc
from aegis.trade.sender import FillQueue, RequestQueue
from aegis.trade.sender import FLAGS_LEN as KILL_FLAGS_LEN
from aegis.trade.sender import handoff as trade_handoff
from aegis.trade.sender import poll_kill
from aegis.core.records import (ACTION_CANCEL, ACTION_NEW, FILL_DTYPE, MARKET_DTYPE, ORDER_MARKET, ORDER_REQUEST_DTYPE,
                           STATUS_REJECTED)
from aegis.core.wait import SLEEP

log = logging.getLogger("aegis.brain.process")

BEAT_NS = 50_000_000
FILL_POLL_NS = 1_000_000    # a quiet market delays fills / halts by at most this long
BUS_LOW_WATER = 64          # return to Python when a bus queue has less room than this

# loop return codes
RET_ROUND = 0    # housekeeping round due (or bus nearly full): call again
RET_DONE = 1     # stop: the Feed stopped and everything it published was consumed, or the ring was aborted

# brain stats (int64 array `st`)
S_RECORDS, S_BATCHES, S_CHECKSUM, S_SIGNALS, S_ORDERS, S_REJECTS, S_FILLS, S_LAST_SEQ = range(8)
S_TICK_RECORDS = 8     # records since the last TICK_UPDATE (reset by Python)
S_TICK_BATCHES = 9
S_IDLE = 10
S_MAX_EXCH_TS = 11     # newest exchange time seen (candle closing)
S_EVENTS_DROPPED = 12  # bus events not queued (queue or signal pool full): observers missed them, trading did not
S_FILL_LOG_N = 13
S_HALT_REQUESTS = 14
S_HELD = 15            # signals dropped (and reverted) during a symbol's hold-off after a refusal
STATS_SLOTS = 16

FILL_LOG = 1024        # recent fills kept for ORDER_FILLED handlers (power of two)


# ============================================================================================ [brain] config
@dataclass(frozen=True)
class BrainConfig:
    """[brain] table."""
    batch: int = 1024                    # max records per ring read
    round_ms: float = 20.0               # max time between two Python housekeeping rounds (bus, stats)
    candle_intervals: tuple = ("1s", "1m")
    candle_depth: int = 64               # closed bars kept per symbol and interval
    candle_grace_ms: int = 250           # close a bar this long after its end (exchange time) without a trade
    signal_pool: int = 1024              # signals awaiting bus dispatch
    bus_capacity: int = 4096             # events per priority queue (power of two)
    trading: bool = True                 # hand orders to the trade path (False: signals only)
    retry_ms: float = 100.0              # after a refused order, the symbol's next order waits this long
    unit_notional: float = 20.0          # quote value of one strategy unit (fixed per symbol at its first order,
                                         # rounded up to the step); 0: a unit is 1.0 base asset
    record_latency: bool = True          # record publish->consume per record into the latency histograms

    @classmethod
    def from_section(cls, section: dict) -> "BrainConfig":
        from aegis.core.config import ConfigError
        known = set(cls.__dataclass_fields__)
        unknown = set(section) - known
        if unknown:
            raise ConfigError(f"unknown key(s) in [brain]: {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(known))})")
        kw = dict(section)
        for k, v in kw.items():
            d = cls.__dataclass_fields__[k].default
            if isinstance(d, bool):
                if not isinstance(v, bool):
                    raise ConfigError(f"[brain] {k} must be true or false, got {v!r}")
            elif isinstance(d, int):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ConfigError(f"[brain] {k} must be a positive integer, got {v!r}")
            elif isinstance(d, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 or (v == 0 and k == "unit_notional")):
                    raise ConfigError(f"[brain] {k} must be a positive number, got {v!r}")
        ivs = kw.get("candle_intervals", cls.candle_intervals)
        if isinstance(ivs, str):
            ivs = [x for x in ivs.split(",") if x.strip()]
        if not isinstance(ivs, (list, tuple)):
            raise ConfigError(f"[brain] candle_intervals must be a list like [\"1s\", \"1m\"], got {ivs!r}")
        try:
            for x in ivs:
                candles.parse_interval(x)
        except ValueError as e:
            raise ConfigError(f"[brain] {e}") from None
        kw["candle_intervals"] = tuple(str(x).strip() for x in ivs)
        cap = kw.get("bus_capacity", cls.bus_capacity)
        if cap & (cap - 1) or cap < 2 * BUS_LOW_WATER:
            raise ConfigError(f"[brain] bus_capacity must be a power of two >= {2 * BUS_LOW_WATER}, got {cap}")
        for k in ("round_ms", "retry_ms", "unit_notional"):
            if k in kw:
                kw[k] = float(kw[k])
        return cls(**kw)


# ============================================================================================ jitted pipeline
@njit(cache=True, nogil=True)
def unit_size(sym, s, unit_qty, unit_notional, price):
    """Base-asset quantity of one strategy unit for symbol s, fixed at the symbol's first order so a reversal is
    exactly twice an entry: unit_notional (quote currency) at that price, rounded UP to the symbol's step and at
    least its min qty (sym = risk's per-symbol filter rows). unit_notional <= 0: a unit is 1.0 base asset."""
    q = unit_qty[s]
    if q > 0.0:
        return q
    if unit_notional <= 0.0 or price <= 0.0:
        return 1.0
    q = unit_notional / price
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
    req.symbol = sig.symbol
    req.side = sig.side
    req.order_type = sig.order_type
    req.tif = sig.tif
    req.reduce_only = sig.reduce_only
    req.action = ACTION_CANCEL if sig.action == ACTION_CANCEL else ACTION_NEW
    req.flags = 0


@njit(cache=True, nogil=True)
def _send(risk, oq, req, st, busq, now):
    """risk check + hand-off of one request; returns 0 (sent) or the risk reason code. Pushes the bus event."""
    sym, g, gf, oo, rates, rejlog = risk
    qh, qr = oq
    events, bh, prio_of = busq
    reason = riskmod.check(sym, g, gf, oo, rates, rejlog, req, now)
    if reason == 0:
        # risk decides at the signal's time `now` (deterministic, as replay needs); the latency stage ends here
        req.risk_ts = now_ns()
        if trade_handoff(qh, qr, req, now_ns()) == 0:
            reason = riskmod.R_QUEUE_FULL
            riskmod.count_reject(sym, g, gf, oo, rates, rejlog, req.symbol, reason, req.client_id, now)
    if reason == 0:
        st[S_ORDERS] += 1
        if not bus.push(events, bh, prio_of, bus.ORDER_REQUEST, req.client_id, req.symbol,
                        np.int64(req.side) * np.int64(req.action)):
            st[S_EVENTS_DROPPED] += 1
    else:
        st[S_REJECTS] += 1
        if not bus.push(events, bh, prio_of, bus.RISK_REJECTED, reason, req.symbol, req.client_id):
            st[S_EVENTS_DROPPED] += 1
    return reason


@njit(cache=True, nogil=True)
def process_batch(batch, n, consume_ts, strat, cndl, risk, oq, busq, spool, lat, st, signals, req_tmp, trading,
                  record_lat, holdoff, retry_ns, unit_qty, unit_notional):
    """Everything the Brain does with one batch of market records (also the bench's unit of work)."""
    strategy_id, params, state = strat
    events, bh, prio_of = busq
    sp_recs, sp_hdr = spool
    # latency + checksum + bookkeeping
    chk = st[S_CHECKSUM]
    max_ts = st[S_MAX_EXCH_TS]
    for i in range(n):
        r = batch[i]
        chk = checksum_step(chk, r.seq)
        if r.exch_ts > max_ts:
            max_ts = r.exch_ts
        if record_lat:
            latency.record_span(lat, latency.STAGE_RING, r.pub_ts, consume_ts)
    st[S_CHECKSUM] = chk
    st[S_MAX_EXCH_TS] = max_ts
    st[S_RECORDS] += n
    st[S_BATCHES] += 1
    st[S_TICK_RECORDS] += n
    st[S_TICK_BATCHES] += 1
    if n > 0:
        st[S_LAST_SEQ] = batch[n - 1].seq
    # candles (trades only)
    pool, pool_hdr, cur, last_close, hist, hist_n, intervals, cstats = cndl
    if intervals.shape[0] > 0:
        candles.update(pool, pool_hdr, cur, last_close, hist, hist_n, intervals, cstats, batch, n)
    sym, g, gf, oo, rates, rejlog = risk
    if trading:
        riskmod.on_market_batch(sym, g, gf, oo, rates, rejlog, batch, n, consume_ts)
        # the strategy decides from what really happened: positions and working orders as risk knows them (fills
        # reach risk only between batches, so once per batch is as fresh as it gets)
        strategy.sync(strategy_id, params, state, sym, unit_qty)
    # strategy: one signal at a time, so each is risk-checked and handed off (or reverted when refused) before
    # the strategy sees the next record, and its signal_ts is the moment it was produced
    total = 0
    i = 0
    while i < n:
        k, i = strategy.run_range(strategy_id, params, state, batch, i, n, signals, 1)
        if k == 0:
            break
        total += 1
        signal_ts = now_ns()
        sig = signals[0]
        sig.ts = signal_ts
        sig.consume_ts = consume_ts
        verdict = -1
        cid = 0
        if trading:
            s = sig.symbol
            if signal_ts < holdoff[s]:
                # refused recently: do not hammer risk with the same order on every tick; the strategy forgets
                # the signal and will produce it again once the hold-off is over (if it still wants it)
                strategy.revert(strategy_id, params, state, sig)
                st[S_HELD] += 1
                continue
        st[S_SIGNALS] += 1
        if trading:
            req = req_tmp[0]
            signal_to_request(sig, req, consume_ts, signal_ts,
                              unit_size(sym, s, unit_qty, unit_notional, sig.price))
            verdict = _send(risk, oq, req, st, busq, signal_ts)
            cid = req.client_id
            if verdict != 0:
                strategy.revert(strategy_id, params, state, sig)
                holdoff[s] = signal_ts + retry_ns
            else:
                strategy.accepted(strategy_id, params, state, sig, cid)
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


@njit(cache=True, nogil=True)
def drain_fills(fq, risk, busq, st, fill_log, now):
    """Fills and order state changes from the trade path: risk state first, then the log the bus points into."""
    fh, frecs, ftmp = fq
    sym, g, gf, oo, rates, rejlog = risk
    events, bh, prio_of = busq
    total = 0
    while True:
        n = ring.read_batch(fh, frecs, ftmp, ftmp.shape[0])
        if n == 0:
            return total
        riskmod.on_fill_batch(sym, g, gf, oo, rates, rejlog, ftmp, n, now)
        mask = fill_log.shape[0] - 1
        for i in range(n):
            f = ftmp[i]
            if f.qty > 0.0:
                st[S_FILLS] += 1
            if f.status == STATUS_REJECTED:
                st[S_REJECTS] += 1
            idx = st[S_FILL_LOG_N] & mask
            fill_log[idx] = f
            st[S_FILL_LOG_N] += 1
            if not bus.push(events, bh, prio_of, bus.ORDER_FILLED, idx, f.client_id, f.status):
                st[S_EVENTS_DROPPED] += 1
        total += n


@njit(cache=True, nogil=True)
def halt_orders(risk, oq, busq, st, req_buf, now):
    """Cancel-all (+ flatten) requests once risk entered HALTED; each still goes through check + hand-off."""
    sym, g, gf, oo, rates, rejlog = risk
    m = riskmod.halt_requests(sym, g, gf, oo, rates, rejlog, req_buf, now)
    for i in range(m):
        _send(risk, oq, req_buf[i], st, busq, now)
    st[S_HALT_REQUESTS] += m
    return m


@njit(cache=True, nogil=True)
def _publish_stats(ctl, st):
    base = ROLE_SLOTS * (1 + ROLE_BRAIN)
    store_release(ctl, base + R_RECORDS, st[S_RECORDS])
    store_release(ctl, base + R_BATCHES, st[S_BATCHES])
    store_release(ctl, base + R_CHECKSUM, st[S_CHECKSUM])
    store_release(ctl, base + R_BRAIN_SIGNALS, st[S_SIGNALS])
    store_release(ctl, base + R_BRAIN_ORDERS, st[S_ORDERS])
    store_release(ctl, base + R_BRAIN_REJECTS, st[S_REJECTS])
    store_release(ctl, base + R_BRAIN_FILLS, st[S_FILLS])
    store_release(ctl, base + R_IDLE, st[S_IDLE])


@njit(cache=True, nogil=True)
def brain_loop(header, ring_recs, batch, wait, ctl, round_end_ns, strat, cndl, risk, oq, fq, busq, spool, lat, st,
               signals, req_tmp, req_buf, fill_log, trading, record_lat, holdoff, retry_ns, unit_qty, unit_notional,
               kill_flags):
    """Run the pipeline until a housekeeping round is due (RET_ROUND) or the run is over (RET_DONE)."""
    feed_state = ROLE_SLOTS * (1 + ROLE_FEED) + R_STATE
    events, bh, prio_of = busq
    max_n = batch.shape[0]
    last_beat = 0
    while True:
        t = now_ns()
        # 1. fills
        if trading:
            drain_fills(fq, risk, busq, st, fill_log, t)
            # 2. control: the kill switch (file, supervisor, session) -> HALTED; a HALT (kill switch, daily loss,
            # manual) becomes cancel-all / flatten requests
            poll_kill(kill_flags, risk[1], t)
            if risk[1][riskmod.G_HALT_PENDING] != 0:
                halt_orders(risk, oq, busq, st, req_buf, t)
        if t - last_beat > BEAT_NS:
            control.beat(ctl, ROLE_BRAIN)
            last_beat = t
        if t >= round_end_ns:
            _publish_stats(ctl, st)
            return RET_ROUND
        for p in range(bh.shape[0]):
            if bus.room(bh, events, p) < BUS_LOW_WATER:
                _publish_stats(ctl, st)
                return RET_ROUND
        # 3. market data (the wait is bounded so fills, halts and the round's end are seen in time)
        deadline = round_end_ns
        if trading and t + FILL_POLL_NS < deadline:
            deadline = t + FILL_POLL_NS
        n = ring.wait_batch(header, ring_recs, batch, max_n, wait, deadline)
        if n > 0:
            consume_ts = now_ns()
            process_batch(batch, n, consume_ts, strat, cndl, risk, oq, busq, spool, lat, st, signals, req_tmp,
                          trading, record_lat, holdoff, retry_ns, unit_qty, unit_notional)
            _publish_stats(ctl, st)
        else:
            st[S_IDLE] += 1
            if ring.aborted(header):
                _publish_stats(ctl, st)
                return RET_DONE
            if control.stop_requested(ctl) and load_acquire(ctl, feed_state) == ST_STOPPED \
                    and ring.available(header) == 0:
                if trading:
                    drain_fills(fq, risk, busq, st, fill_log, now_ns())
                _publish_stats(ctl, st)
                return RET_DONE


# ============================================================================================ Python side
class Brain:
    """One Brain's state and pipeline, independent of the process around it (tests, bench and replay build one
    directly; `run` builds one inside the Brain process)."""

    def __init__(self, cfg: BrainConfig, strat: strategy.StrategyConfig, n_symbols: int, order_path=None,
                 latency_set: np.ndarray | None = None, wait: int = SLEEP):
        self.cfg = cfg
        self.strategy = strat
        self.n_symbols = n_symbols
        self.wait = wait
        self.params = strat.array()
        self.state = strategy.make_state(strat.id, n_symbols, self.params)
        self.strat = (np.int64(strat.id), self.params, self.state)
        intervals = np.array([candles.parse_interval(x) for x in cfg.candle_intervals], dtype=np.int64)
        self.candles = candles.CandleBook(n_symbols, intervals, cfg.candle_depth)
        self.cndl = (*self.candles.args, self.candles.intervals, self.candles.stats)
        self.order_path = order_path
        self.trading = bool(order_path is not None and cfg.trading)
        if order_path is not None:
            self.riskbook, queue, fills = order_path.risk, order_path.queue, order_path.fills
            self.kill_flags = order_path.flags
        else:   # typed placeholders: the jitted loop has one signature; trading=False never touches them
            self.riskbook = riskmod.RiskBook(riskmod.RiskConfig(), [])
            queue, fills = RequestQueue(ring.MIN_CAPACITY), FillQueue(ring.MIN_CAPACITY)
            self.kill_flags = np.zeros(KILL_FLAGS_LEN, np.int64)
        self.risk = self.riskbook.arrays
        self.oq = (queue.header, queue.records)
        self.fq = (fills.header, fills.records, np.zeros(256, FILL_DTYPE))
        self.bus = bus.EventBus(cfg.bus_capacity)
        self.busq = (self.bus.events, self.bus.header, self.bus.prio_of)
        self.signal_pool = pools.SignalPool(cfg.signal_pool)
        self.spool = (self.signal_pool.records, self.signal_pool.header)
        self.bus.set_release(bus.SIGNAL_GENERATED, self.signal_pool.give)
        self.record_lat = bool(cfg.record_latency and latency_set is not None)
        self.lat = latency_set if latency_set is not None else latency.new_set()
        self.st = np.zeros(STATS_SLOTS, np.int64)
        self.batch = pools.aligned_zeros(cfg.batch, MARKET_DTYPE)
        self.signals = strategy.new_signals(1)
        self.req_tmp = np.zeros(1, ORDER_REQUEST_DTYPE)
        self.req_buf = np.zeros(2 * self.risk[0].shape[0] + 8, ORDER_REQUEST_DTYPE)
        self.fill_log = np.zeros(FILL_LOG, FILL_DTYPE)
        self.grace_ns = int(cfg.candle_grace_ms) * 1_000_000
        self.round_ns = int(cfg.round_ms * 1e6)
        self.retry_ns = int(cfg.retry_ms * 1e6)
        self.holdoff = np.zeros(n_symbols, np.int64)   # per symbol: no new order before this time (after a refusal)
        self.unit_qty = np.zeros(n_symbols, np.float64)  # per symbol: base qty of one strategy unit (0: not fixed yet)
        self.unit_notional = float(cfg.unit_notional)
        self.stop_asked = False
        self.bus.subscribe(bus.CONTROL, self._on_control)
        self.bus.on_error = lambda topic, e: log.error("bus handler for %s failed: %s: %s", bus.TOPIC_NAMES[topic],
                                                       type(e).__name__, e)
        if log.isEnabledFor(logging.DEBUG):   # observers cost nothing unless someone listens (see aegis.brain.bus)
            self.bus.subscribe(bus.SIGNAL_GENERATED, self._log_signal)
            self.bus.subscribe(bus.RISK_REJECTED, self._log_reject)

    def _log_signal(self, topic, slot, verdict, cid):
        s = self.signal_pool.records[slot]
        log.debug("signal %s sym=%d side=%+d qty=%g px=%g type=%d verdict=%d cid=%d", self.strategy.name,
                  s["symbol"], s["side"], s["qty"], s["price"], s["order_type"], verdict, cid)

    def _log_reject(self, topic, reason, symbol, cid):
        name = riskmod.REASONS[reason] if 0 <= reason < len(riskmod.REASONS) else str(reason)
        log.debug("order refused sym=%d reason=%s cid=%d", symbol, name, cid)

    # --- hot path entry points ----------------------------------------------------------------------------
    def process(self, records: np.ndarray, n: int | None = None, consume_ts: int | None = None) -> int:
        """Run the pipeline over records[:n] (no ring): returns the number of signals. Bench/tests/tools."""
        n = len(records) if n is None else n
        return int(process_batch(records, n, py_now_ns() if consume_ts is None else consume_ts, self.strat,
                                 self.cndl, self.risk, self.oq, self.busq, self.spool, self.lat, self.st,
                                 self.signals, self.req_tmp, self.trading, self.record_lat, self.holdoff,
                                 self.retry_ns, self.unit_qty, self.unit_notional))

    def step(self, header, ring_records, ctl, round_end_ns: int) -> int:
        """One brain_loop call: until the round ends or the run is over."""
        return int(brain_loop(header, ring_records, self.batch, self.wait, ctl, round_end_ns, self.strat, self.cndl,
                              self.risk, self.oq, self.fq, self.busq, self.spool, self.lat, self.st, self.signals,
                              self.req_tmp, self.req_buf, self.fill_log, self.trading, self.record_lat,
                              self.holdoff, self.retry_ns, self.unit_qty, self.unit_notional, self.kill_flags))

    def housekeeping(self, now: int, ctl=None, ctl_f=None) -> int:
        """The Python round between two brain_loop calls: bus, candles, stats. Returns events delivered."""
        st = self.st
        if st[S_TICK_RECORDS] and self.bus.subscribed(bus.TICK_UPDATE):
            if self.bus.publish(bus.TICK_UPDATE, int(st[S_TICK_RECORDS]), int(st[S_LAST_SEQ]),
                                int(st[S_TICK_BATCHES])):
                st[S_TICK_RECORDS] = 0
                st[S_TICK_BATCHES] = 0
        else:
            st[S_TICK_RECORDS] = 0
            st[S_TICK_BATCHES] = 0
        self.bus.fire_timers(now)
        delivered = self.bus.dispatch()
        if self.candles.intervals.shape[0] and st[S_MAX_EXCH_TS] > 0:
            self.candles.close_due(int(st[S_MAX_EXCH_TS]) - self.grace_ns)
        if ctl is not None:
            _publish_stats(ctl, st)
            base = control.base(ROLE_BRAIN)
            ctl[base + R_ERRORS] = self.bus.handler_errors + int(st[S_EVENTS_DROPPED])
            if self.trading:
                sym = self.risk[0]
                ctl[base + R_BRAIN_POSITIONS] = int(np.count_nonzero(sym[:, riskmod.S_POS]))
                sender = control.base(control.ROLE_SENDER)      # risk state mirrored for the status line
                ctl[sender + control.R_SENDER_TRADING_STATE] = int(self.risk[1][riskmod.G_STATE])
                ctl[sender + control.R_SENDER_STATE_REASON] = int(self.risk[1][riskmod.G_STATE_REASON])
                if ctl_f is not None:
                    ctl_f[base + control.F_BRAIN_PNL] = float(riskmod.total_pnl(sym, self.risk[2]))
                    ctl_f[base + control.F_BRAIN_FEES] = float(self.risk[2][riskmod.GF_FEES])
                    ref = np.where(sym[:, riskmod.S_MID] > 0, sym[:, riskmod.S_MID], sym[:, riskmod.S_MARK])
                    ctl_f[base + control.F_BRAIN_GROSS] = float(np.abs(sym[:, riskmod.S_POS] * ref).sum())
            control.beat(ctl, ROLE_BRAIN)
        return delivered

    def _on_control(self, topic, cmd, b, c):
        now = py_now_ns()
        if cmd == bus.CMD_HALT:
            riskmod.set_state(self.risk[1], riskmod.HALTED, riskmod.WHY_MANUAL, now)
        elif cmd == bus.CMD_RESUME:
            riskmod.set_state(self.risk[1], riskmod.ACTIVE, riskmod.WHY_MANUAL, now)
        elif cmd == bus.CMD_STOP:
            self.stop_asked = True

    def stats(self) -> dict:
        st = self.st
        return {"records": int(st[S_RECORDS]), "batches": int(st[S_BATCHES]), "signals": int(st[S_SIGNALS]),
                "orders": int(st[S_ORDERS]), "rejects": int(st[S_REJECTS]), "fills": int(st[S_FILLS]),
                "held": int(st[S_HELD]),
                "events_dropped": int(st[S_EVENTS_DROPPED]), "bus": self.bus.stats(),
                "signal_pool": self.signal_pool.stats(), "candles_closed": int(self.candles.stats[candles.C_CLOSED])}


def summary_line(brain: Brain) -> str:
    st = brain.stats()
    refused = ", ".join(f"{k} {v}" for k, v in brain.riskbook.reject_counts().items()) if brain.trading else ""
    return (f"aegis: brain: {st['records']} records, {st['signals']} signals, {st['orders']} orders sent, "
            f"{st['rejects']} refused{' (' + refused + ')' if refused else ''}, {st['held']} held off, "
            f"{st['fills']} fills, {st['candles_closed']} candles closed")


def symbol_count(cfg, ctl=None) -> int:
    n = cfg.symbols if isinstance(cfg.symbols, int) else len(cfg.symbols)
    if ctl is not None:
        n = max(n, int(ctl[control.G_SYMBOLS]))
    return max(1, n)


def validate(cfg) -> tuple[BrainConfig, strategy.StrategyConfig]:
    """Validate [brain] and the strategy selection of an EngineConfig; raises ConfigError (one line). The CLI
    calls this before starting processes so user mistakes never surface inside a child."""
    return BrainConfig.from_section(cfg.section("brain")), strategy.from_config(cfg)


def _open_order_path(spec: ProcessSpec, ctx, bcfg: BrainConfig):
    if not bcfg.trading:
        return None
    from aegis.trade import sender as trade
    opener = getattr(trade, "open_order_path", None)
    if opener is None:
        return None
    return opener(spec, ctx)


def run(spec: ProcessSpec) -> int:
    ctx = enter(spec)
    from aegis.core.config import ConfigError
    try:
        ctx.step(1, 3, "order path")
        bcfg, strat = validate(spec.config)
        order_path = _open_order_path(spec, ctx, bcfg)
    except ConfigError as e:
        print(f"aegis: error: {e}", file=sys.stderr, flush=True)
        ctx.set_state(control.ST_FAILED)
        return 2
    brain = None
    try:
        lat = None
        if ctx.latency is not None and ctx.latency.size >= latency.N_STAGES * latency.HIST_LEN:
            lat = ctx.latency[: latency.N_STAGES * latency.HIST_LEN].reshape(latency.HIST_SET_SHAPE)
        ctx.step(2, 3, "strategy state")
        brain = Brain(bcfg, strat, symbol_count(spec.config, ctx.control), order_path, lat, spec.wait)
        mode = "trading" if brain.trading else "signals only (no order path)"
        # warm-up before RUNNING: compiles (or loads from numba's cache) the whole jitted loop now, while the
        # supervisor's start timeout applies, instead of inside the first round where the heartbeat is watched
        ctx.step(3, 3, "brain loop")
        brain.step(ctx.ring.header, ctx.ring.records, ctx.control, 0)
        brain.housekeeping(py_now_ns(), ctx.control, ctx.control_f)
        # what the first bar close and the stats call later: compiled lazily they stalled a cold run's Brain for
        # seconds right after it started (time 0 closes nothing, pending only reads)
        brain.candles.close_due(0)
        brain.bus.pending()
        print(f"aegis: brain: strategy {strat.describe()}, {brain.n_symbols} symbols, {mode}", flush=True)
        ctx.set_state(control.ST_READY)
        freeze_gc()
        ctx.set_state(control.ST_RUNNING)
        while True:
            ret = brain.step(ctx.ring.header, ctx.ring.records, ctx.control, py_now_ns() + brain.round_ns)
            brain.housekeeping(py_now_ns(), ctx.control, ctx.control_f)
            if brain.stop_asked:        # CMD_STOP on the bus: ask the supervisor for an orderly stop of the run
                control.request_stop(ctx.control)
                brain.stop_asked = False
            if ret == RET_DONE:
                break
    finally:
        if brain is not None:
            print(summary_line(brain), flush=True)
        try:
            if order_path is not None:
                order_path.close()     # stops the sender, cancels open orders, closes the journal
        finally:
            ctx.set_state(ST_STOPPED)
            ctx.heartbeat()
    return 0
