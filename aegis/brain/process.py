"""Brain process: market records in, orders out, inside one long @njit(nogil) loop.

`brain_loop` reads the shared ring and runs the order loop of aegis.brain.pipeline (the very kernels replay runs)
with the live sink, the sender thread's hand-off queue. Per iteration, in priority order (the event bus keeps the
same order for its Python handlers):
  1. fills and control  pipeline.service: the fill queue -> risk (positions, PnL, open orders); the kill switch;
                        a pending HALT turns into cancel-all (+ flatten) requests;
  2. market             ring.wait_batch -> pipeline.process_batch (latency, checksum, candles, risk, strategy,
                        risk.check, hand-off; a refused signal is reverted and its symbol held off for
                        [brain] retry_ms).
The loop returns to Python only for a housekeeping round (every [brain] round_ms, or early when the bus queues are
getting full): Python then dispatches the event bus (SIGNAL_GENERATED, ORDER_REQUEST, RISK_REJECTED, ORDER_FILLED,
TICK_UPDATE, TIMER), closes due candles, publishes stats and beats. Nothing per record or per order needs Python,
and while the loop spins it holds no GIL, so the sender thread runs freely (see aegis.trade.sender).

Without an order path (aegis.trade.sender.open_order_path returning None, or [brain] trading = false) the Brain
runs "signals only": the same pipeline minus risk and hand-off; the strategy then trades on paper (assumes each of
its orders filled at once, see aegis.brain.strategy "Position").
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np

from aegis.brain import bus
from aegis.brain import pipeline
from aegis.brain.pipeline import (S_BATCHES, S_CHECKSUM, S_EVENTS_DROPPED, S_FILLS, S_HELD, S_IDLE,
                                  S_LAST_SEQ, S_MAX_EXCH_TS, S_ORDERS, S_RECORDS, S_REJECTS, S_SIGNALS,
                                  S_TICK_BATCHES, S_TICK_RECORDS)
from aegis.brain import candles
from aegis.brain import learn
from aegis.core import control
from aegis.core import latency
from aegis.brain import pools
from aegis.core import ring
from aegis.brain import strategy
from aegis.core.jit import njit
from aegis.trade import risk as riskmod
from aegis.core.borrow import borrowed
from aegis.core.atomics import load_acquire, store_release
from aegis.core.clock import now_ns, py_now_ns
from aegis.core.control import (R_BATCHES, R_BRAIN_FILLS, R_BRAIN_ORDERS, R_BRAIN_POSITIONS, R_BRAIN_REJECTS,
                           R_BRAIN_SIGNALS, R_CHECKSUM, R_ERRORS, R_IDLE, R_RECORDS, R_STATE, ROLE_BRAIN, ROLE_FEED,
                           ROLE_SLOTS, ST_STOPPED)
from aegis.core.startup import ProcessSpec, enter, freeze_gc, receive_rest
from aegis.trade.sender import FillQueue, RequestQueue
from aegis.trade.sender import FLAGS_LEN as KILL_FLAGS_LEN
from aegis.core.records import FILL_DTYPE, MARKET_DTYPE
from aegis.core.wait import SLEEP

log = logging.getLogger("aegis.brain.process")

BEAT_NS = 50_000_000
FILL_POLL_NS = 1_000_000    # a quiet market delays fills / halts by at most this long
BUS_LOW_WATER = 64          # return to Python when a bus queue has less room than this

# loop return codes
RET_ROUND = 0    # housekeeping round due (or bus nearly full): call again
RET_DONE = 1     # stop: the Feed stopped and everything it published was consumed, or the ring was aborted

FILL_LOG = 1024        # recent fills kept for ORDER_FILLED handlers (power of two)


# ============================================================================================ [brain] config
@dataclass(frozen=True)
class BrainConfig:
    """[brain] table."""
    batch: int = 1024                    # max records per ring read
    round_ms: float = 20.0               # max time between two Python housekeeping rounds (bus, stats)
    candle_intervals: tuple[str, ...] = ("1s", "1m")
    candle_depth: int = 64               # closed bars kept per symbol and interval
    candle_grace_ms: int = 250           # close a bar this long after its end (exchange time) without a trade
    signal_pool: int = 1024              # signals awaiting bus dispatch
    bus_capacity: int = 4096             # events per priority queue (power of two)
    trading: bool = True                 # hand orders to the trade path (False: signals only)
    retry_ms: float = 100.0              # after a refused order, the symbol's next order waits this long
    unit_notional: float = 20.0          # quote value of one strategy unit (fixed per symbol at its first order,
                                         # rounded up to the step); 0: a unit is 1.0 base asset
    record_latency: bool = True          # record publish->consume per record into the latency histograms
    warm_us: int = 200                   # while no signal comes, the last order's risk check runs again (recording
                                         # nothing) this often, so the next order's is not cold; 0: never
    model_file: str = ""                 # online strategy: model loaded at start and saved at shutdown (--model)
    save_model_file: str = ""            # online strategy: save at shutdown here instead (--save-model)

    @classmethod
    def from_section(cls, section: dict) -> "BrainConfig":
        from aegis.core import config as C
        checks = {"unit_notional": C.NON_NEGATIVE, "warm_us": C.between(0, 1_000_000),
                  "bus_capacity": C.power_of_two(2 * BUS_LOW_WATER),
                  "candle_intervals": C.Check(_intervals_ok, "a list of candle intervals like [\"1s\", \"1m\"]")}
        return C.load_section(cls, "brain", section, checks, numbers=C.POSITIVE)


def _intervals_ok(intervals) -> bool:
    try:
        return all(candles.parse_interval(x) > 0 for x in intervals)
    except ValueError:
        return False


# ============================================================================================ jitted loop
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
def brain_loop(header, ring_recs, batch, wait, ctl, round_end_ns, bs, sink, kill_flags):
    """Run the order loop on the shared ring until a housekeeping round is due (RET_ROUND) or the run is over
    (RET_DONE). Each iteration: fills first, then the kill switch and a halt's follow-up, then market data."""
    # the Brain object holds every array for the whole call: owner-less views spare the order loop two atomic
    # reference-count updates per array it takes out of a bundle (aegis.core.borrow)
    bs, sink, batch, header, ring_recs = borrowed(bs), borrowed(sink), borrowed(batch), borrowed(header), \
        borrowed(ring_recs)
    feed_state = ROLE_SLOTS * (1 + ROLE_FEED) + R_STATE
    bh = bs.busq[1]
    events = bs.busq[0]
    st = bs.st
    trading = bs.trading
    max_n = batch.shape[0]
    last_beat = 0
    warm_ns = bs.warm_ns if trading else 0
    next_warm = 0
    while True:
        t = now_ns()
        if trading:
            pipeline.service(bs, sink, kill_flags, t)
            if warm_ns > 0 and t >= next_warm:
                pipeline.warm_signal_path(bs, t)
                next_warm = t + warm_ns
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
        # market data (the wait is bounded so fills, halts and the round's end are seen in time)
        deadline = round_end_ns
        if trading and t + FILL_POLL_NS < deadline:
            deadline = t + FILL_POLL_NS
        if warm_ns > 0 and next_warm < deadline:
            deadline = next_warm
        n = ring.wait_batch(header, ring_recs, batch, max_n, wait, deadline)
        if n > 0:
            pipeline.process_batch(bs, sink, batch, n, now_ns())
            _publish_stats(ctl, st)
        else:
            st[S_IDLE] += 1
            if ring.aborted(header):
                _publish_stats(ctl, st)
                return RET_DONE
            if control.stop_requested(ctl) and load_acquire(ctl, feed_state) == ST_STOPPED \
                    and ring.available(header) == 0:
                if trading:
                    pipeline.drain_fills(bs, sink, now_ns())
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
        intervals = np.array([candles.parse_interval(x) for x in cfg.candle_intervals], dtype=np.int64)
        self.candles = candles.CandleBook(n_symbols, intervals, cfg.candle_depth)
        self.order_path = order_path
        self.trading = bool(order_path is not None and cfg.trading)
        if order_path is not None:
            self.riskbook, queue, fills = order_path.risk, order_path.queue, order_path.fills
            self.kill_flags = order_path.flags
        else:   # typed placeholders: the jitted loop has one signature; trading=False never touches them
            self.riskbook = riskmod.RiskBook(riskmod.RiskConfig(), [])
            queue, fills = RequestQueue(ring.MIN_CAPACITY), FillQueue(ring.MIN_CAPACITY)
            self.kill_flags = np.zeros(KILL_FLAGS_LEN, np.int64)
        self.sink = pipeline.HandoffSink(queue.header, queue.records, fills.header, fills.records,
                                         np.zeros(256, FILL_DTYPE))
        self.bus = bus.EventBus(cfg.bus_capacity)
        self.signal_pool = pools.SignalPool(cfg.signal_pool)
        self.bus.set_release(bus.SIGNAL_GENERATED, self.signal_pool.give)
        self.record_lat = bool(cfg.record_latency and latency_set is not None)
        self.bs = pipeline.new_brain_state(
            strat, n_symbols, self.riskbook.rk, (*self.candles.args, self.candles.intervals, self.candles.stats),
            (self.bus.events, self.bus.header, self.bus.prio_of), (self.signal_pool.records, self.signal_pool.header),
            latency_set if latency_set is not None else latency.new_set(), trading=self.trading,
            record_lat=self.record_lat, retry_ms=cfg.retry_ms, unit_notional=cfg.unit_notional, fill_log=FILL_LOG,
            warm_us=cfg.warm_us)
        self.st = self.bs.st
        self.batch = pools.aligned_zeros(cfg.batch, MARKET_DTYPE)
        self.grace_ns = int(cfg.candle_grace_ms) * 1_000_000
        self.round_ns = int(cfg.round_ms * 1e6)
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
        return int(pipeline.process_batch(self.bs, self.sink, records, n,
                                          py_now_ns() if consume_ts is None else consume_ts))

    def step(self, header, ring_records, ctl, round_end_ns: int) -> int:
        """One brain_loop call: until the round ends or the run is over."""
        return int(brain_loop(header, ring_records, self.batch, self.wait, ctl, round_end_ns, self.bs, self.sink,
                              self.kill_flags))

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
                sym = self.riskbook.sym
                ctl[base + R_BRAIN_POSITIONS] = int(np.count_nonzero(sym[:, riskmod.S_POS]))
                sender = control.base(control.ROLE_SENDER)      # risk state mirrored for the status line
                ctl[sender + control.R_SENDER_TRADING_STATE] = int(self.riskbook.g[riskmod.G_STATE])
                ctl[sender + control.R_SENDER_STATE_REASON] = int(self.riskbook.g[riskmod.G_STATE_REASON])
                if ctl_f is not None:
                    ctl_f[base + control.F_BRAIN_PNL] = float(riskmod.total_pnl(sym, self.riskbook.gf))
                    ctl_f[base + control.F_BRAIN_FEES] = float(self.riskbook.gf[riskmod.GF_FEES])
                    ref = np.where(sym[:, riskmod.S_MID] > 0, sym[:, riskmod.S_MID], sym[:, riskmod.S_MARK])
                    ctl_f[base + control.F_BRAIN_GROSS] = float(np.abs(sym[:, riskmod.S_POS] * ref).sum())
            if self.strategy.id == strategy.ONLINE:     # learn hook: prequential scores for the status line
                learn.publish(ctl, ctl_f, self.bs.strat.state)
            control.beat(ctl, ROLE_BRAIN)
        return delivered

    def _on_control(self, topic, cmd, b, c):
        now = py_now_ns()
        if cmd == bus.CMD_HALT:
            riskmod.set_state(self.riskbook.g, riskmod.HALTED, riskmod.WHY_MANUAL, now)
        elif cmd == bus.CMD_RESUME:
            riskmod.set_state(self.riskbook.g, riskmod.ACTIVE, riskmod.WHY_MANUAL, now)
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
            f"{st['fills']} fills, {st['candles_closed']} candles closed"
            + (f"; {learn.state_text(brain.bs.strat.state)}" if brain.strategy.id == strategy.ONLINE else ""))


def symbol_count(cfg, ctl=None) -> int:
    n = cfg.symbols if isinstance(cfg.symbols, int) else len(cfg.symbols)
    if ctl is not None:
        n = max(n, int(ctl[control.G_SYMBOLS]))
    return max(1, n)


def validate(cfg) -> tuple[BrainConfig, strategy.StrategyConfig]:
    """Validate [brain] and the strategy selection of an EngineConfig; raises ConfigError (one line). The CLI
    calls this before starting processes so user mistakes never surface inside a child."""
    bcfg, strat = BrainConfig.from_section(cfg.section("brain")), strategy.from_config(cfg)
    learn.check_model_options(strat, bcfg.model_file, bcfg.save_model_file)   # learn hook: model file usable
    return bcfg, strat


def symbol_names(spec: ProcessSpec, n: int) -> list[str]:
    """Symbol names by id (model files key their models by name: ids differ between runs)."""
    table = spec.symbols
    if table is not None:
        return list(table.names)[:n]
    syms = spec.config.symbols
    return list(syms)[:n] if not isinstance(syms, int) else [str(i) for i in range(n)]


def _open_order_path(spec: ProcessSpec, ctx, bcfg: BrainConfig):
    if not bcfg.trading:
        return None
    from aegis.trade import sender as trade
    opener = getattr(trade, "open_order_path", None)
    if opener is None:
        return None
    return opener(spec, ctx)


ORPHAN_GRACE_S = 5.0    # an orphaned Brain waits this long for the Feed to stop, then stops without it


def run(spec: ProcessSpec) -> int:
    ctx = enter(spec)
    from aegis.core.config import ConfigError
    try:
        ctx.step(1, 3, "order path")
        bcfg, strat = validate(spec.config)
        if spec.rest is not None:      # started before the venue answered: compile while it starts
            if bcfg.trading:
                from aegis.trade.sender import precompile
                precompile(spec.config)
            ctx.step(1, 3, "waiting for the venue")
            spec = receive_rest(spec)
            if spec is None:
                ctx.set_state(ST_STOPPED)
                return 0
            ctx.spec = spec
        order_path = _open_order_path(spec, ctx, bcfg)
    except ConfigError as e:
        print(f"aegis: error: {e}", file=sys.stderr, flush=True)
        ctx.set_state(control.ST_FAILED)
        return 2
    brain = None
    model_ready = False     # learn hook: save at shutdown only a model that was loaded (or started fresh) here
    try:
        lat = None
        if ctx.latency is not None and ctx.latency.size >= latency.N_STAGES * latency.HIST_LEN:
            lat = ctx.latency[: latency.N_STAGES * latency.HIST_LEN].reshape(latency.HIST_SET_SHAPE)
        ctx.step(2, 3, "strategy state")
        brain = Brain(bcfg, strat, symbol_count(spec.config, ctx.control), order_path, lat, spec.wait)
        if order_path is not None:      # bars start from the exchange's recent klines
            sess = order_path.session
            n = candles.warm_up(brain.candles, sess.client, sess.symbols, sess.client.now_ms())
            print(f"aegis: brain: {n} candles warmed up from the exchange's klines", flush=True)
            if sess.rate_note:
                print(f"aegis: brain: {sess.rate_note}", flush=True)
        names = symbol_names(spec, brain.n_symbols)
        learn.start_run(strat, brain.bs.strat.state, names, bcfg.model_file,
                        lambda m: print(f"aegis: brain: {m}", flush=True))
        model_ready = True
        mode = "trading" if brain.trading else "signals only (no order path)"
        if brain.trading and brain.riskbook.state != "ACTIVE":   # e.g. a halt kept from an earlier run
            mode = f"trading {brain.riskbook.state} ({brain.riskbook.state_reason}; --resume lifts a kept halt)"
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
            if ctx.orphaned():          # no supervisor: stop in order (orders cancelled below), never trade alone
                ctx.stopping()
                if ctx.orphaned_for() > ORPHAN_GRACE_S:
                    ring.abort(ctx.ring.header)   # the Feed died with the supervisor: nothing will end the ring
            if ret == RET_DONE:
                break
    finally:
        if brain is not None:
            print(summary_line(brain), flush=True)
            if model_ready and (bcfg.save_model_file or bcfg.model_file):   # learn hook: save at shutdown
                try:
                    learn.end_run(strat, brain.bs.strat.state, names, bcfg.save_model_file or bcfg.model_file)
                    print(f"aegis: brain: model saved to {bcfg.save_model_file or bcfg.model_file}", flush=True)
                except ConfigError as e:
                    print(f"aegis: error: {e}", file=sys.stderr, flush=True)
        try:
            if order_path is not None:
                order_path.close()     # stops the sender, cancels open orders, closes the journal
        finally:
            ctx.set_state(ST_STOPPED)
            ctx.heartbeat()
    return 0
