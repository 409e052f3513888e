"""Strategies: pure @njit functions of (parameters, per-symbol state, a batch of market records) -> signals.

Kernel API (process independent: the Brain, replay and tests call the very same code):

    ss = new_strategy_state(resolve("ema_cross", {"fast": 20}), n_symbols)   # EmaCrossState(id, params, state):
                                               # params float64[n_params] (defaults filled in, validated), state
                                               # float64[n_symbols, width] (row s = symbol s)
    k      = run_batch(ss, records, n, signals_out)                         # @njit; returns signals written
    k, nxt = run_range(ss, records, start, n, signals_out, max_signals)     # @njit
    revert(ss, signal)                         # @njit: undo a signal whose order was refused
    accepted(ss, signal, client_id)            # @njit: the order was risk-checked and sent
    sync_symbol(ss, risk_sym, unit_qty, s)     # @njit: symbol s's actual position / open orders from risk

`records` is a MARKET_DTYPE array (records[:n] are processed in order), `signals_out` a SIGNAL_DTYPE array with
room for at least n signals (a record yields at most one). run_batch is deterministic: it reads nothing but its
arguments and writes only `state` and `signals_out[:k]`; it leaves the wall-clock stamps `ts` and `consume_ts` at 0
for the caller (the Brain stamps them; replay has no use for them). Records of a symbol >= n_symbols are ignored.
A state row starts zeroed, so a fresh state means "nothing seen yet"; state rows hold float64 only (counts and
sides are exact in float64) so one matrix layout serves every strategy.

run_range stops right after the record that produced its max_signals-th signal (the Brain uses 1, so each
signal is risk-checked before the strategy moves on); run_batch(...) is run_range over the whole batch.

Position -- what actually happened, not what was asked for:
  * ema_cross keeps the side it last traded (state[s, EC_S_SIDE]) as the issue specifies; a caller whose order was
    refused calls revert() so it stays equal to what was really sent. sync_symbol/accepted do nothing for it.
  * mean_reversion, obi and online decide from the ACTUAL position and working orders of the symbol, which the caller
    copies from the risk book into the strategy state with sync_symbol(ss, risk_sym, unit_qty, s)
    (risk_sym = aegis.trade.risk RiskBook.sym: column S_POS, signed base qty, and S_OPEN_COUNT; unit_qty = the Brain's
    per-symbol base qty of one unit, aegis.brain.pipeline.unit_size; 0 = not fixed yet = 1.0) right before the
    strategy sees each record, for that record's symbol (aegis.brain.pipeline.process_batch, live and replay alike).
    Columns: mean_reversion MR_S_POS (position, units of `unit`), MR_S_OPEN (orders working); online learn.T_POS,
    learn.T_OPEN; obi OB_S_POS,
    OB_S_OPEN. A signal counts as a working order (OPEN + 1) from the moment it is emitted until the next sync;
    revert() takes it back when the order was refused. After a NEW order passed risk and was handed off, the
    caller calls accepted(..., sig, req.client_id): mean_reversion remembers its working entry's client id
    (MR_S_CID) so it can cancel it.
    Rules: no exit while flat, no new order while one of ours is working; mean_reversion cancels a resting entry
    not filled within `entry_timeout_ms` of exchange time: a signal with action = ACTION_CANCEL and target_id =
    that client id (qty/price informational), which the caller turns into an ACTION_CANCEL request through the
    normal risk check + hand-off (aegis.brain.pipeline.signal_to_request). The clock restarts when the cancel is emitted,
    so a cancel that is refused or lost is retried one timeout later; revert() of a cancel does nothing.
    Exits size to the actual position (risk clips reduce-only orders to it); partial fills are exited as such.
  * A caller that never syncs a symbol (the kernel tests, the Brain in signals-only mode: no risk book) gets paper
    trading for it: every signal is assumed filled at once (MR_S_POS / OB_S_POS = the signal's target), and
    revert() restores the previous position. sync_symbol() switches a symbol to tracked mode for good (MR_S_TRACKED,
    OB_S_TRACKED).

Registry: name -> StrategySpec(id, param specs with defaults and bounds, state slots). resolve() validates user
values (TOML numbers or CLI strings) and raises aegis.core.config.ConfigError with a one-line message.

Built-in strategies (all positions in units of the `unit` parameter, base asset quantity):
  * ema_cross: per symbol EMA(fast) and EMA(slow) of the mid, both seeded with the first mid. Once the slow EMA
    has seen `slow` mids, sign(fast - slow) is the target side (no target when they are equal). Whenever it
    differs from the side last traded: one MARKET order of 1 unit (first entry) or 2 units (reversal). Always in
    the market after the first entry, stop-and-reverse.
  * mean_reversion: mid sampled every `sample_ms` of exchange time into Bollinger(period, k) and RSI(rsi_period).
    Flat: buy 1 unit when mid < lower band and RSI < rsi_low, sell 1 unit when mid > upper band and
    RSI > rsi_high. Long (short): exit when the mid is back at or above (below) the middle band, reduce-only.
    LIMIT orders at our own side of the touch (bid to buy, ask to sell), post-only (GTX) by default. An entry
    still resting after entry_timeout_ms (exchange time) is cancelled (tracked mode, see Position above).
  * obi: EMA(smooth) of the top-of-book imbalance (bid qty - ask qty) / (bid qty + ask qty). Above `threshold`
    target long, below -threshold target short, inside +-exit target flat; MARKET orders for the difference to
    the current target, at most one per `cooldown_ms` of exchange time per symbol; tracked mode: nothing while
    an order of ours is working.
  * online: learns online from every record (aegis.brain.learn: features, standardisation, logistic regression or
    RLS, prequential scoring) the probability p that the mid's next move is up; edge = (2p - 1) * mean move (bps).
    Long when edge > fee_bps + half spread + margin_bps, short when -edge does, flat when the edge turns against
    the position by more than margin_bps; nothing before `warmup` labelled events. MARKET orders, cooldown_ms,
    tracked / paper mode as obi. Its state row also holds the model and the evaluation (aegis.brain.learn layout).
Mids come from bookTicker quotes (KIND_QUOTE) by default; mid_source=book uses the Feed's local book tops
(KIND_BOOK), any uses both. Records flagged FLAG_RESYNC, or with a non-positive bid/ask, are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba.extending import overload

from aegis.brain import indicators as ind
from aegis.brain import learn
from aegis.brain.pools import state_matrix
from aegis.core.jit import njit
from aegis.trade import risk as _risk
from aegis.core.records import (ACTION_CANCEL, ACTION_NEW, FLAG_RESYNC, KIND_BOOK, KIND_QUOTE, ORDER_LIMIT, ORDER_MARKET,
                           SIDE_BUY, SIDE_SELL, TIF_GTC, TIF_GTX)

_R_POS = _risk.S_POS
_R_OPEN = _risk.S_OPEN_COUNT

EMA_CROSS = 0
MEAN_REVERSION = 1
OBI = 2
ONLINE = 3

MID_QUOTE, MID_BOOK, MID_ANY = 0, 1, 2
MID_SOURCES = {"quote": MID_QUOTE, "book": MID_BOOK, "any": MID_ANY}

# --- parameter indices (params array layout per strategy) ---------------------------------------------------------
# ema_cross
EC_FAST, EC_SLOW, EC_UNIT, EC_MID = 0, 1, 2, 3
# mean_reversion
(MR_PERIOD, MR_K, MR_RSI_PERIOD, MR_RSI_LOW, MR_RSI_HIGH, MR_SAMPLE_MS, MR_UNIT, MR_POST_ONLY, MR_ENTRY_TIMEOUT_MS,
 MR_MID) = range(10)
# obi
OB_THRESHOLD, OB_EXIT, OB_SMOOTH, OB_COOLDOWN_MS, OB_UNIT, OB_MID = range(6)
# online (aegis.brain.learn)
(ON_MODEL, ON_OPT, ON_LR, ON_L2, ON_FORGET, ON_RLS_INIT, ON_FEE_BPS, ON_MARGIN_BPS, ON_WARMUP, ON_COOLDOWN_MS,
 ON_UNIT, ON_WINDOW_S, ON_TRADE, ON_MID) = range(14)

# --- state slot layout per strategy -------------------------------------------------------------------------------
# ema_cross: fast EMA (2 slots), slow EMA (2 slots), side last traded (0 none yet, +1, -1)
EC_S_FAST = 0
EC_S_SLOW = EC_S_FAST + ind.EMA_SLOTS
EC_S_SIDE = EC_S_SLOW + ind.EMA_SLOTS
EC_SLOTS = EC_S_SIDE + 1
# mean_reversion: position (units; paper: -1/0/+1, tracked: actual), next sample exchange ts, orders working,
# client id of the working entry (0: unknown/none), exchange ts the entry (or its last cancel) was sent, side of the
# working entry, tracked flag (1 once the caller syncs actual positions), RSI (5), Bollinger window (5 + period)
MR_S_POS = 0
MR_S_NEXT = 1
MR_S_OPEN = 2
MR_S_CID = 3
MR_S_ENTRY_TS = 4
MR_S_ENTRY_SIDE = 5
MR_S_TRACKED = 6
MR_S_RSI = 7
MR_S_WIN = MR_S_RSI + ind.RSI_SLOTS
# obi: imbalance EMA (2), position (units), exchange ts of the last signal, orders working, tracked flag
OB_S_EMA = 0
OB_S_POS = OB_S_EMA + ind.EMA_SLOTS
OB_S_LAST = OB_S_POS + 1
OB_S_OPEN = OB_S_LAST + 1
OB_S_TRACKED = OB_S_OPEN + 1
OB_SLOTS = OB_S_TRACKED + 1


# ================================================================================================ kernels
@njit(cache=True, nogil=True)
def _mid_ok(r, mid_source):
    """Is r a usable top of book for this strategy's mid source?"""
    k = r.kind
    if k == KIND_QUOTE:
        if mid_source == MID_BOOK:
            return False
    elif k == KIND_BOOK:
        if mid_source == MID_QUOTE:
            return False
    else:
        return False
    return (r.flags & FLAG_RESYNC) == 0 and r.bid_px > 0.0 and r.ask_px > 0.0


@njit(cache=True, nogil=True)
def _emit(out, j, r, strategy_id, side, qty, price, order_type, tif, reduce_only, strength, position):
    s = out[j]
    s.ts = 0
    s.consume_ts = 0
    s.recv_ts = r.recv_ts
    s.pub_ts = r.pub_ts
    s.exch_ts = r.exch_ts
    s.seq = r.seq
    s.price = price
    s.qty = qty
    s.strength = strength
    s.position = position
    s.symbol = r.symbol
    s.strategy = strategy_id
    s.side = side
    s.order_type = order_type
    s.tif = tif
    s.reduce_only = reduce_only
    s.action = ACTION_NEW
    s.target_id = 0


@njit(cache=True, nogil=True)
def ema_cross_batch(params, state, records, start, n, out, max_k):
    fast_a = ind.ema_alpha(params[EC_FAST])
    slow_a = ind.ema_alpha(params[EC_SLOW])
    slow_n = params[EC_SLOW]
    unit = params[EC_UNIT]
    mid_source = int(params[EC_MID])
    n_sym = state.shape[0]
    k = 0
    for i in range(start, n):
        r = records[i]
        s = r.symbol
        if s < 0 or s >= n_sym or not _mid_ok(r, mid_source):
            continue
        st = state[s]
        mid = 0.5 * (r.bid_px + r.ask_px)
        f = ind.ema_update(st, EC_S_FAST, fast_a, mid)
        sl = ind.ema_update(st, EC_S_SLOW, slow_a, mid)
        if st[EC_S_SLOW + 1] < slow_n:
            continue
        target = 1.0 if f > sl else (-1.0 if f < sl else 0.0)
        last = st[EC_S_SIDE]
        if target == 0.0 or target == last:
            continue
        qty = unit if last == 0.0 else 2.0 * unit
        st[EC_S_SIDE] = target
        if target > 0:
            _emit(out, k, r, EMA_CROSS, SIDE_BUY, qty, r.ask_px, ORDER_MARKET, 0, 0, (f - sl) / sl, unit)
        else:
            _emit(out, k, r, EMA_CROSS, SIDE_SELL, qty, r.bid_px, ORDER_MARKET, 0, 0, (f - sl) / sl, -unit)
        k += 1
        if k >= max_k:
            return k, i + 1
    return k, n


@njit(cache=True, nogil=True)
def mean_reversion_batch(params, state, records, start, n, out, max_k):
    period = int(params[MR_PERIOD])
    kk = params[MR_K]
    rsi_period = int(params[MR_RSI_PERIOD])
    rsi_low = params[MR_RSI_LOW]
    rsi_high = params[MR_RSI_HIGH]
    sample_ns = int(params[MR_SAMPLE_MS]) * 1_000_000
    unit = params[MR_UNIT]
    tif = TIF_GTX if params[MR_POST_ONLY] != 0.0 else TIF_GTC
    timeout_ns = params[MR_ENTRY_TIMEOUT_MS] * 1e6
    mid_source = int(params[MR_MID])
    n_sym = state.shape[0]
    k = 0
    for i in range(start, n):
        r = records[i]
        s = r.symbol
        if s < 0 or s >= n_sym or not _mid_ok(r, mid_source):
            continue
        st = state[s]
        ts = r.exch_ts
        mid = 0.5 * (r.bid_px + r.ask_px)
        sampled = False
        lo = mb = up = rsi = 0.0
        if ts >= st[MR_S_NEXT]:
            st[MR_S_NEXT] = float((ts // sample_ns + 1) * sample_ns)
            lo, mb, up = ind.bollinger_update(st, MR_S_WIN, period, kk, mid)
            rsi = ind.rsi_update(st, MR_S_RSI, rsi_period, mid)
            sampled = lo == lo and rsi == rsi     # NaN: not warmed up yet
        if st[MR_S_TRACKED] != 0.0 and st[MR_S_OPEN] > 0.0:
            # an order of ours is working: no new decision until it is done; a resting entry that did not fill
            # within the timeout is cancelled (the clock restarts, so a refused / lost cancel is retried later)
            if st[MR_S_CID] > 0.0 and timeout_ns > 0.0 and ts - st[MR_S_ENTRY_TS] >= timeout_ns:
                st[MR_S_ENTRY_TS] = float(ts)
                buy = st[MR_S_ENTRY_SIDE] > 0.0
                _emit(out, k, r, MEAN_REVERSION, SIDE_BUY if buy else SIDE_SELL, unit,
                      r.bid_px if buy else r.ask_px, ORDER_LIMIT, tif, 0, 0.0, st[MR_S_POS] * unit)
                out[k].action = ACTION_CANCEL
                out[k].target_id = np.int64(st[MR_S_CID])
                k += 1
                if k >= max_k:
                    return k, i + 1
            continue
        if not sampled:
            continue
        pos = st[MR_S_POS]
        target = pos
        if pos == 0.0:
            if mid < lo and rsi < rsi_low:
                target = 1.0
            elif mid > up and rsi > rsi_high:
                target = -1.0
        elif pos > 0.0:
            if mid >= mb:
                target = 0.0
        elif mid <= mb:
            target = 0.0
        if target == pos:
            continue
        reduce = 1 if target == 0.0 else 0
        qty = abs(pos) * unit if reduce else unit      # exits close what is really held (risk clips them to it)
        side = SIDE_BUY if target > pos else SIDE_SELL
        if st[MR_S_TRACKED] != 0.0:
            st[MR_S_OPEN] += 1.0                        # working until the next sync says otherwise
            if not reduce:
                st[MR_S_ENTRY_TS] = float(ts)
                st[MR_S_ENTRY_SIDE] = 1.0 if side == SIDE_BUY else -1.0
                st[MR_S_CID] = 0.0                      # known once accepted() is told
        else:
            st[MR_S_POS] = target                       # paper: assumed filled
        strength = (mid - mb) / (up - mb) if up > mb else 0.0
        _emit(out, k, r, MEAN_REVERSION, side, qty, r.bid_px if side == SIDE_BUY else r.ask_px, ORDER_LIMIT, tif,
              reduce, strength, target * unit)
        k += 1
        if k >= max_k:
            return k, i + 1
    return k, n


@njit(cache=True, nogil=True)
def obi_batch(params, state, records, start, n, out, max_k):
    th = params[OB_THRESHOLD]
    ex = params[OB_EXIT]
    smooth = params[OB_SMOOTH]
    alpha = ind.ema_alpha(smooth)
    cooldown_ns = params[OB_COOLDOWN_MS] * 1e6
    unit = params[OB_UNIT]
    mid_source = int(params[OB_MID])
    n_sym = state.shape[0]
    k = 0
    for i in range(start, n):
        r = records[i]
        s = r.symbol
        if s < 0 or s >= n_sym or not _mid_ok(r, mid_source):
            continue
        st = state[s]
        e = ind.ema_update(st, OB_S_EMA, alpha, ind.book_imbalance(r.bid_qty, r.ask_qty))
        if st[OB_S_EMA + 1] < smooth:
            continue
        tracked = st[OB_S_TRACKED] != 0.0
        if tracked and st[OB_S_OPEN] > 0.0:
            continue                # an order of ours is still working: act once its outcome is known
        pos = st[OB_S_POS]
        cur = 1.0 if pos > 0.0 else (-1.0 if pos < 0.0 else 0.0)
        target = cur
        if e > th:
            target = 1.0
        elif e < -th:
            target = -1.0
        elif abs(e) < ex:
            target = 0.0
        if target == cur:
            continue
        if st[OB_S_LAST] != 0.0 and r.exch_ts - st[OB_S_LAST] < cooldown_ns:
            continue
        if tracked:
            st[OB_S_OPEN] += 1.0    # working until the next sync says otherwise
        else:
            st[OB_S_POS] = target   # paper: assumed filled
        st[OB_S_LAST] = float(r.exch_ts)
        reduce = 1 if target == 0.0 else 0
        # flat -> 1 unit; exit -> what is held; reversal -> what is held + 1 unit
        qty = abs(pos) * unit if reduce else (abs(pos) + 1.0) * unit
        if target > cur:
            _emit(out, k, r, OBI, SIDE_BUY, qty, r.ask_px, ORDER_MARKET, 0, reduce, e, target * unit)
        else:
            _emit(out, k, r, OBI, SIDE_SELL, qty, r.bid_px, ORDER_MARKET, 0, reduce, e, target * unit)
        k += 1
        if k >= max_k:
            return k, i + 1
    return k, n


@njit(cache=True, nogil=True)
def online_batch(params, state, records, start, n, out, max_k):
    """Learn from every record (aegis.brain.learn.on_record: label + score + learn, then features), then trade
    when the predicted edge beats the costs. Positions and working orders as obi (tracked / paper mode)."""
    model = int(params[ON_MODEL])
    opt = int(params[ON_OPT])
    lr = params[ON_LR]
    l2 = params[ON_L2]
    lam = params[ON_FORGET]
    init = params[ON_RLS_INIT]
    cost0 = params[ON_FEE_BPS] + params[ON_MARGIN_BPS]
    margin = params[ON_MARGIN_BPS]
    warmup = params[ON_WARMUP]
    cooldown_ns = params[ON_COOLDOWN_MS] * 1e6
    unit = params[ON_UNIT]
    window_ns = params[ON_WINDOW_S] * 1e9
    trade = params[ON_TRADE] != 0.0
    mid_source = int(params[ON_MID])
    n_sym = state.shape[0]
    k = 0
    for i in range(start, n):
        r = records[i]
        s = r.symbol
        if s < 0 or s >= n_sym:
            continue
        st = state[s]
        if not learn.on_record(st, r, mid_source, model, lr, l2, opt, lam, init, window_ns):
            continue
        if not trade or st[learn.M_UPDATES] < warmup:
            continue
        tracked = st[learn.T_TRACKED] != 0.0
        if tracked and st[learn.T_OPEN] > 0.0:
            continue                # an order of ours is still working: act once its outcome is known
        bid = st[learn.F_BID]
        ask = st[learn.F_ASK]
        mid = 0.5 * (bid + ask)
        cost = cost0 + 0.5 * (ask - bid) / mid * 1e4
        pos = st[learn.T_POS]
        cur = 1.0 if pos > 0.0 else (-1.0 if pos < 0.0 else 0.0)
        # |edge| < the mean move size: when that cannot beat the cost (flat) or the margin (in a position), no
        # prediction can change anything and none is computed
        if st[learn.M_MOVE] <= (cost if cur == 0.0 else margin):
            continue
        learn.features(st, float(r.exch_ts))
        learn.standardise(st)
        p = learn.predict(st, learn.F_Z, model)
        edge = learn.edge_bps(st, p)
        target = cur
        if edge > cost:
            target = 1.0
        elif -edge > cost:
            target = -1.0
        elif cur * edge < -margin:
            target = 0.0            # the model now expects a move against the position
        if target == cur:
            continue
        if st[learn.T_LAST] != 0.0 and r.exch_ts - st[learn.T_LAST] < cooldown_ns:
            continue
        if tracked:
            st[learn.T_OPEN] += 1.0
        else:
            st[learn.T_POS] = target
        st[learn.T_LAST] = float(r.exch_ts)
        reduce = 1 if target == 0.0 else 0
        qty = abs(pos) * unit if reduce else (abs(pos) + 1.0) * unit
        if target > cur:
            _emit(out, k, r, ONLINE, SIDE_BUY, qty, ask, ORDER_MARKET, 0, reduce, edge, target * unit)
        else:
            _emit(out, k, r, ONLINE, SIDE_SELL, qty, bid, ORDER_MARKET, 0, reduce, edge, target * unit)
        k += 1
        if k >= max_k:
            return k, i + 1
    return k, n


def _strategy_batch(ss, records, start, n, signals_out, max_signals):
    """The batch kernel of ss's strategy, chosen at compile time by ss's class (see StrategyState)."""
    raise NotImplementedError("chosen at compile time from the StrategyState class")


@overload(_strategy_batch, jit_options={"nogil": True})
def _strategy_batch_of(ss, records, start, n, signals_out, max_signals):
    kernel = _BATCH_OF.get(getattr(ss, "instance_class", None))
    if kernel is None:
        raise TypeError(f"{ss} is not a strategy state: build one with strategy_state()")
    return lambda ss, records, start, n, signals_out, max_signals: kernel(
        ss.params, ss.state, records, start, n, signals_out, max_signals)


@njit(cache=True, nogil=True)
def run_range(ss, records, start, n, signals_out, max_signals):
    """Run over records[start:n], stopping right after the record that produced the max_signals-th signal.
    Returns (signals written to signals_out[0:], index of the first record not processed). The Brain calls it
    with max_signals = 1 so each signal is risk-checked and handed off (or reverted) before the strategy sees
    the next record: the strategy's idea of its position never runs ahead of what was really sent."""
    if max_signals > signals_out.shape[0]:
        max_signals = signals_out.shape[0]
    if max_signals <= 0:
        return 0, start
    return _strategy_batch(ss, records, start, n, signals_out, max_signals)


@njit(cache=True, nogil=True)
def run_batch(ss, records, n, signals_out):
    """Run strategy `strategy_id` over records[:n]; returns the number of signals written to signals_out."""
    if signals_out.shape[0] < n:
        raise ValueError("signals_out must have room for one signal per record of the batch")
    k, _ = run_range(ss, records, 0, n, signals_out, n + 1)
    return k


@njit(cache=True, nogil=True)
def revert(ss, sig):
    """Undo the position change of a signal whose order was refused (risk, full sender queue): the strategy then
    still holds the side it last really traded, so e.g. ema_cross re-enters with the right size later instead of
    believing it is in the market. Cooldowns / sampling clocks are NOT rolled back (they throttle the retry)."""
    strategy_id, params, state = ss.id, ss.params, ss.state
    s = sig.symbol
    if s < 0 or s >= state.shape[0]:
        return
    side = 1.0 if sig.side == SIDE_BUY else -1.0
    before = sig.position - side * sig.qty          # signed position (base units) before this signal
    if strategy_id == EMA_CROSS:
        state[s, EC_S_SIDE] = 1.0 if before > 0.0 else (-1.0 if before < 0.0 else 0.0)
    elif strategy_id == MEAN_REVERSION:
        if sig.action == ACTION_CANCEL:
            return                                  # retried one timeout later (the clock restarted)
        if state[s, MR_S_TRACKED] != 0.0:
            if state[s, MR_S_OPEN] >= 1.0:
                state[s, MR_S_OPEN] -= 1.0
            if sig.reduce_only == 0:
                state[s, MR_S_ENTRY_TS] = 0.0
                state[s, MR_S_CID] = 0.0
        else:
            state[s, MR_S_POS] = before / params[MR_UNIT]
    elif strategy_id == OBI:
        if state[s, OB_S_TRACKED] != 0.0:
            if state[s, OB_S_OPEN] >= 1.0:
                state[s, OB_S_OPEN] -= 1.0
        else:
            state[s, OB_S_POS] = before / params[OB_UNIT]
    elif strategy_id == ONLINE:
        if state[s, learn.T_TRACKED] != 0.0:
            if state[s, learn.T_OPEN] >= 1.0:
                state[s, learn.T_OPEN] -= 1.0
        else:
            state[s, learn.T_POS] = before / params[ON_UNIT]


@njit(cache=True, nogil=True)
def accepted(ss, sig, client_id):
    """The order of `sig` passed risk and was handed off as client id `client_id`: mean_reversion remembers the
    client id of its working entry (to cancel it after entry_timeout_ms). No-op for the other strategies."""
    strategy_id, state = ss.id, ss.state
    s = sig.symbol
    if strategy_id != MEAN_REVERSION or s < 0 or s >= state.shape[0]:
        return
    if state[s, MR_S_TRACKED] != 0.0 and sig.action != ACTION_CANCEL and sig.reduce_only == 0:
        state[s, MR_S_CID] = float(client_id)


@njit(cache=True, nogil=True)
def sync_symbol(ss, risk_sym, unit_qty, s):
    """Copy symbol s's actual position (risk_sym[s, S_POS], base qty, converted to units of the strategy's `unit`
    with unit_qty[s], the Brain's base qty per unit; 0 = 1.0) and open-order count (S_OPEN_COUNT) into the
    strategy state, and switch the symbol to tracked mode. No-op for ema_cross (it keeps the side last traded)."""
    strategy_id, params, state = ss.id, ss.params, ss.state
    if not tracks_positions(strategy_id):
        return  # first: replay calls this once per record, and ema_cross needs nothing from it
    if s < 0 or s >= state.shape[0] or s >= risk_sym.shape[0]:
        return
    uq = unit_qty[s] if s < unit_qty.shape[0] and unit_qty[s] > 0.0 else 1.0
    if strategy_id == MEAN_REVERSION:
        st = state[s]
        st[MR_S_TRACKED] = 1.0
        st[MR_S_POS] = risk_sym[s, _R_POS] / (uq * params[MR_UNIT])
        st[MR_S_OPEN] = risk_sym[s, _R_OPEN]
        if st[MR_S_OPEN] <= 0.0:      # nothing working any more: forget the entry (filled, cancelled, expired)
            st[MR_S_CID] = 0.0
            st[MR_S_ENTRY_TS] = 0.0
    elif strategy_id == OBI:
        st = state[s]
        st[OB_S_TRACKED] = 1.0
        st[OB_S_POS] = risk_sym[s, _R_POS] / (uq * params[OB_UNIT])
        st[OB_S_OPEN] = risk_sym[s, _R_OPEN]
    elif strategy_id == ONLINE:
        st = state[s]
        st[learn.T_TRACKED] = 1.0
        st[learn.T_POS] = risk_sym[s, _R_POS] / (uq * params[ON_UNIT])
        st[learn.T_OPEN] = risk_sym[s, _R_OPEN]


@njit(cache=True, nogil=True)
def tracks_positions(strategy_id):
    """Whether the strategy reads actual positions (sync/sync_symbol) between records."""
    return strategy_id == MEAN_REVERSION or strategy_id == OBI or strategy_id == ONLINE


# ================================================================================================ registry
@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: float
    kind: str = "float"            # "int" | "float" | "bool" | "choice"
    lo: float | None = None        # inclusive bounds (None: unbounded)
    hi: float | None = None
    choices: tuple[tuple[str, int], ...] = ()   # for kind == "choice": (name, value)
    doc: str = ""

    def parse(self, strategy: str, raw) -> float:
        def bad(what):
            from aegis.core.config import ConfigError
            return ConfigError(f"strategy {strategy}: parameter {self.name} must be {what}, got {raw!r}")

        if self.kind == "choice":
            names = dict(self.choices)
            if isinstance(raw, str) and raw.strip() in names:
                return float(names[raw.strip()])
            raise bad("one of " + ", ".join(names))
        if self.kind == "bool":
            if isinstance(raw, bool):
                return 1.0 if raw else 0.0
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return 1.0
            if text in ("0", "false", "no", "off"):
                return 0.0
            raise bad("true or false")
        if isinstance(raw, bool):
            raise bad("a number")
        try:
            v = float(raw.strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            raise bad("an integer" if self.kind == "int" else "a number") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise bad("a finite number")
        if self.kind == "int" and v != int(v):
            raise bad("an integer")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            lo = "" if self.lo is None else f">= {self.lo:g}"
            hi = "" if self.hi is None else f"<= {self.hi:g}"
            raise bad(" and ".join(x for x in (lo, hi) if x))
        return v

    def show(self, v: float) -> str:
        if self.kind == "choice":
            return {val: name for name, val in self.choices}[int(v)]
        if self.kind == "bool":
            return "true" if v else "false"
        return str(int(v)) if self.kind == "int" else f"{v:g}"


_MID = ParamSpec("mid_source", MID_QUOTE, "choice", choices=tuple(MID_SOURCES.items()),
                 doc="top of book the mid comes from: quote (bookTicker), book (local L2 book), any")


@dataclass(frozen=True)
class StrategySpec:
    name: str
    id: int
    params: tuple[ParamSpec, ...]
    doc: str

    def slots(self, params: np.ndarray) -> int:
        if self.id == EMA_CROSS:
            return EC_SLOTS
        if self.id == MEAN_REVERSION:
            return MR_S_WIN + ind.win_slots(int(params[MR_PERIOD]))
        if self.id == ONLINE:
            return learn.ROW_SLOTS
        return OB_SLOTS

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}


REGISTRY: dict[str, StrategySpec] = {
    "ema_cross": StrategySpec("ema_cross", EMA_CROSS, (
        ParamSpec("fast", 20, "int", 1, 1_000_000, doc="fast EMA period (mids)"),
        ParamSpec("slow", 100, "int", 2, 1_000_000, doc="slow EMA period (mids); also the warm-up length"),
        ParamSpec("unit", 1.0, "float", 1e-12, None, doc="quantity of one unit (base asset)"),
        _MID,
    ), "EMA(fast)/EMA(slow) cross of the mid, stop-and-reverse with market orders"),
    "mean_reversion": StrategySpec("mean_reversion", MEAN_REVERSION, (
        ParamSpec("period", 20, "int", 2, 10_000, doc="Bollinger window (samples)"),
        ParamSpec("k", 2.0, "float", 0.0, 100.0, doc="band width in standard deviations"),
        ParamSpec("rsi_period", 14, "int", 1, 10_000, doc="RSI (Wilder) period (samples)"),
        ParamSpec("rsi_low", 30.0, "float", 0.0, 100.0, doc="buy only below this RSI"),
        ParamSpec("rsi_high", 70.0, "float", 0.0, 100.0, doc="sell only above this RSI"),
        ParamSpec("sample_ms", 1000, "int", 1, 86_400_000, doc="mid sampling period, exchange time"),
        ParamSpec("unit", 1.0, "float", 1e-12, None, doc="position size (base asset)"),
        ParamSpec("post_only", 1, "bool", doc="limit orders post-only (GTX) instead of GTC"),
        ParamSpec("entry_timeout_ms", 5000, "int", 0, 86_400_000,
                  doc="cancel a resting entry not filled after this long, exchange time (0: never)"),
        _MID,
    ), "Bollinger band + RSI mean reversion with passive limit orders"),
    "obi": StrategySpec("obi", OBI, (
        ParamSpec("threshold", 0.6, "float", 0.0, 1.0, doc="smoothed imbalance that opens a position"),
        ParamSpec("exit", 0.2, "float", 0.0, 1.0, doc="|smoothed imbalance| below which the position is closed"),
        ParamSpec("smooth", 10, "int", 1, 1_000_000, doc="EMA period of the imbalance (updates); warm-up length"),
        ParamSpec("cooldown_ms", 500, "int", 0, 86_400_000, doc="min exchange time between two signals"),
        ParamSpec("unit", 1.0, "float", 1e-12, None, doc="position size (base asset)"),
        _MID,
    ), "top-of-book order-book imbalance, market orders"),
    "online": StrategySpec("online", ONLINE, (
        ParamSpec("model", learn.MODEL_LOGIT, "choice", choices=tuple(learn.MODEL_NAMES.items()),
                  doc="logit: online logistic regression; rls: recursive least squares with forgetting"),
        ParamSpec("optimizer", learn.OPT_SGD, "choice", choices=tuple(learn.OPT_NAMES.items()),
                  doc="logit updates: sgd (constant rate, keeps adapting) or adagrad (rate decays per feature)"),
        ParamSpec("lr", 0.01, "float", 1e-9, 10.0, doc="logit learning rate"),
        ParamSpec("l2", 1e-4, "float", 0.0, 10.0, doc="logit L2 penalty (gradient term l2 * w)"),
        ParamSpec("forget", 0.999, "float", 0.5, 1.0,
                  doc="rls forgetting factor: memory ~ 1 / (1 - forget) labelled events"),
        ParamSpec("rls_init", 100.0, "float", 1e-6, 1e9, doc="rls initial P = rls_init * identity"),
        ParamSpec("fee_bps", 5.0, "float", 0.0, 1000.0, doc="fee of one market order (bps) counted against the edge"),
        ParamSpec("margin_bps", 0.5, "float", 0.0, 1000.0,
                  doc="extra edge required over fee + half spread (bps); also the exit threshold"),
        ParamSpec("warmup", 1000, "int", 0, 1_000_000_000, doc="labelled events learned before trading"),
        ParamSpec("cooldown_ms", 500, "int", 0, 86_400_000, doc="min exchange time between two signals"),
        ParamSpec("unit", 1.0, "float", 1e-12, None, doc="position size (base asset)"),
        ParamSpec("window_s", 60.0, "float", 0.001, 86_400.0, doc="prequential evaluation window (exchange time)"),
        ParamSpec("trade", 1, "bool", doc="send orders (false: learn and evaluate only)"),
        _MID,
    ), "online-learning model of the sign of the next mid move (aegis.brain.learn); trades when the predicted "
       "edge beats fee + half spread + margin"),
}
BY_ID = {s.id: s for s in REGISTRY.values()}


@dataclass(frozen=True)
class StrategyConfig:
    name: str
    id: int
    params: tuple[float, ...]

    def array(self) -> np.ndarray:
        return np.array(self.params, dtype=np.float64)

    @property
    def spec(self) -> StrategySpec:
        return REGISTRY[self.name]

    def describe(self) -> str:
        return self.name + " " + " ".join(f"{p.name}={p.show(v)}" for p, v in zip(self.spec.params, self.params))


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def resolve(name: str, values: dict | None = None) -> StrategyConfig:
    """Validated parameters for strategy `name` (defaults for what `values` leaves out); ConfigError otherwise."""
    from aegis.core.config import ConfigError
    spec = REGISTRY.get(name)
    if spec is None:
        raise ConfigError(f"unknown strategy {name!r} (known: {', '.join(REGISTRY)})")
    values = dict(values or {})
    known = {p.name for p in spec.params}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"strategy {name} has no parameter {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    out = tuple(p.parse(name, values[p.name]) if p.name in values else float(p.default) for p in spec.params)
    if spec.id == EMA_CROSS and out[EC_FAST] >= out[EC_SLOW]:
        raise ConfigError(f"strategy ema_cross: fast ({out[EC_FAST]:g}) must be smaller than slow ({out[EC_SLOW]:g})")
    if spec.id == MEAN_REVERSION and out[MR_RSI_LOW] >= out[MR_RSI_HIGH]:
        raise ConfigError("strategy mean_reversion: rsi_low must be smaller than rsi_high")
    if spec.id == OBI and out[OB_EXIT] > out[OB_THRESHOLD]:
        raise ConfigError("strategy obi: exit must not exceed threshold")
    return StrategyConfig(name, spec.id, out)


def parse_param_args(items) -> dict:
    """CLI `--param k=v` strings -> {k: v} (values stay strings: resolve() parses them); ConfigError if malformed."""
    from aegis.core.config import ConfigError
    out = {}
    for item in items or ():
        key, eq, val = str(item).partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--param takes KEY=VALUE, got {item!r}")
        out[key.strip()] = val.strip()
    return out


def param_overrides(items) -> dict:
    """CLI `--param k=v ...` -> aegis.core.config.load overrides {"strategy.k": "v"} (flat [strategy] keys)."""
    return {f"strategy.{k}": v for k, v in parse_param_args(items).items()}


def help_text() -> str:
    """Strategies and their parameters with defaults, for --help / `--strategy list`."""
    lines = []
    for spec in REGISTRY.values():
        lines.append(f"{spec.name}: {spec.doc}")
        for p in spec.params:
            lines.append(f"    {p.name}={p.show(float(p.default))}  {p.doc}")
    return "\n".join(lines)


def from_config(cfg) -> StrategyConfig:
    """Strategy of an EngineConfig: name from `strategy`, parameters from the [strategy] table.

    Flat keys of [strategy] are parameters of the selected strategy; a sub-table named after a strategy
    ([strategy.obi]) holds that strategy's parameters, so one file can keep settings for several strategies
    (flat keys win over the selected strategy's sub-table, as the CLI's --param writes flat keys).
    """
    from aegis.core.config import ConfigError
    name = cfg.strategy
    table = cfg.section("strategy")
    values = {}
    for key, val in table.items():
        if isinstance(val, dict):
            if key not in REGISTRY:
                raise ConfigError(f"[strategy.{key}]: unknown strategy (known: {', '.join(REGISTRY)})")
    sub = table.get(name)
    if isinstance(sub, dict):
        values.update(sub)
    values.update({k: v for k, v in table.items() if not isinstance(v, dict)})
    return resolve(name, values)


class StrategyState(NamedTuple):
    """One strategy instance as the one argument of the dispatching kernels (run_range, sync_symbol, revert,
    accepted): its id, its immutable parameter vector and its per-symbol state matrix (mutated in place).

    Only its per-strategy subclasses (EmaCrossState, ...; strategy_state() picks one) are ever built: the class
    selects the batch kernel at compile time, so a Brain or a replay compiles the one strategy it runs, not all
    four (the online learner alone is ~5 s of a cold start)."""
    id: int              # strategy id (EMA_CROSS, MEAN_REVERSION, OBI, ONLINE); the subclass names the same one
    params: np.ndarray   # float64 parameter vector (StrategyConfig.array())
    state: np.ndarray    # (symbols, width) float64, rows cache-line aligned (make_state)


class EmaCrossState(StrategyState):
    __slots__ = ()


class MeanReversionState(StrategyState):
    __slots__ = ()


class ObiState(StrategyState):
    __slots__ = ()


class OnlineState(StrategyState):
    __slots__ = ()


_STATE_CLASS = {EMA_CROSS: EmaCrossState, MEAN_REVERSION: MeanReversionState, OBI: ObiState, ONLINE: OnlineState}
_BATCH_OF = {EmaCrossState: ema_cross_batch, MeanReversionState: mean_reversion_batch, ObiState: obi_batch,
             OnlineState: online_batch}


def strategy_state(strategy_id: int, params: np.ndarray, state: np.ndarray) -> StrategyState:
    """The StrategyState of strategy `strategy_id` over `params` and `state`."""
    cls = _STATE_CLASS.get(int(strategy_id))
    if cls is None:
        raise ValueError(f"unknown strategy id {strategy_id}")
    return cls(int(strategy_id), params, state)


def new_strategy_state(cfg, n_symbols: int) -> StrategyState:
    """A fresh StrategyState for StrategyConfig `cfg` over n_symbols symbols."""
    params = cfg.array()
    return strategy_state(cfg.id, params, make_state(cfg.id, n_symbols, params))


def make_state(strategy_id: int, n_symbols: int, params: np.ndarray) -> np.ndarray:
    """Fresh per-symbol state for one strategy: float64 (n_symbols, width), zeroed, rows cache-line aligned."""
    spec = BY_ID.get(int(strategy_id))
    if spec is None:
        raise ValueError(f"unknown strategy id {strategy_id}")
    return state_matrix(n_symbols, spec.slots(np.asarray(params, dtype=np.float64)))


def new_signals(capacity: int) -> np.ndarray:
    from aegis.brain.pools import aligned_zeros
    from aegis.core.records import SIGNAL_DTYPE
    return aligned_zeros(capacity, SIGNAL_DTYPE)
