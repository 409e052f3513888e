"""Online learning inside the Brain's jitted loop: features, standardisation, models, prequential evaluation.

Everything here works on ONE float64 row of per-symbol state (the strategy state matrix of aegis.brain.strategy,
strategy `online`), laid out by the slot constants below, so a tick touches one symbol's row and allocates nothing.
The same kernels run in the Brain, in replay and in the tests.

Per market record of symbol s (on_record):
  1. If the record moves the mid (the strategy's mid source), the move is a LABEL: y = 1 up, 0 down. The feature
     vector of the state as it was after the previous record (everything known before the move: features() is
     computed from the state before this record touches it) is added to the standardiser, standardised, scored
     first (predict, accuracy / log-loss / baseline) and only then learned from (prequential: predict, then
     learn). Records that do not move the mid carry no label.
  2. The record updates the feature state (top of book, EMAs, trade flow, depth): O(1), no vector built.
The strategy builds the current vector only for a trading decision. No step reads anything later than the record
being processed, so there is no look-ahead.

Feature set FEATURE_SET (version FEATURE_VERSION; any change to the list, a horizon or a formula is a new version,
and model files of another version are refused): see FEATURES and docs/learning.md.

Models (state in the row, chosen by the strategy parameter `model`):
  * logistic regression on z, y in {0, 1}: p = sigmoid(w.z), gradient (p - y) z + l2 w, plain SGD
    w -= lr g or AdaGrad g2 += g^2, w -= lr g / sqrt(g2 + 1e-8). z[0] = 1 is the intercept and is treated like
    any weight (river's LogisticRegression with intercept_lr = 0 and a constant feature gives the same updates).
  * recursive least squares with forgetting factor lam on target y in {-1, +1}: the exact minimiser of
    sum_i lam^(n-i) (y_i - w.z_i)^2 + lam^n w' P0^-1 w, P0 = rls_init * I; p = clip((1 + w.z) / 2, PMIN, 1-PMIN).
    A direction of P that grows past rls_init * RLS_WINDUP (never excited: wind-up) is rescaled back to that.
Prequential metrics: predictions, correct (p >= 0.5 <=> predicted up), sum of log-loss, and the baseline's
log-loss: the base rate of up moves seen so far, (ups + 1) / (labels + 2), also predicted before it is updated.
Time windows of window_s seconds (exchange time) are logged per symbol (WLOG_CAP windows; when the log is full,
neighbouring windows are merged and the window length doubles, so a long run keeps its whole curve).

Model files (save_model / load_model): magic, a JSON header (format version, feature set and version, model kind,
number of features, model block width, symbols), the float64 model block of each symbol (standardiser, weights,
AdaGrad / RLS state, mean move size), and a SHA-256 of all of it. Anything that does not check out raises
ModelFileError (a ConfigError: one line, exit 2).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from aegis.core.config import ConfigError
from aegis.core.jit import njit
from aegis.core.records import FLAG_RESYNC, KIND_BOOK, KIND_DEPTH, KIND_QUOTE, KIND_TRADE

# ============================================================================================ feature set
FEATURE_SET = "mid-sign"
FEATURE_VERSION = 1
FEATURES = (
    "bias",                    # constant 1 (the intercept)
    "tob_imbalance",           # (bid qty - ask qty) / (bid qty + ask qty) of the top of book
    "depth_imbalance",         # same over the depth levels updated within DEPTH_BPS of the mid (decayed sums)
    "micro_minus_mid_bps",     # microprice - mid, basis points of the mid
    "spread_ticks",            # spread / smallest spread seen (the tick, estimated from the data)
    "ret_events_short",        # mid / (EMA of the mid over RET_EV_SHORT events) - 1, bps
    "ret_events_long",         # same over RET_EV_LONG events
    "ret_time_short",          # mid / (time-decayed mean of the mid, time constant RET_T_SHORT_NS) - 1, bps
    "ret_time_long",           # same, RET_T_LONG_NS
    "trade_flow_imbalance",    # (buy qty - sell qty) / (buy + sell) of aggTrades, decayed with FLOW_TAU_NS
    "realized_vol_bps",        # sqrt of the EWMA (RV_EVENTS mid changes) of squared relative mid moves, bps
    "log_ms_since_mid_change",  # log(1 + ms since the mid last moved)
)
NF = len(FEATURES)
RET_EV_SHORT, RET_EV_LONG = 8.0, 64.0
RET_T_SHORT_NS, RET_T_LONG_NS = 1e9, 30e9
FLOW_TAU_NS = 1e9
DEPTH_TAU_NS = 5e9
DEPTH_BPS = 10.0
RV_EVENTS = 64.0
MOVE_EVENTS = 256.0            # EWMA length of the mean |mid move| (bps) that sizes the predicted edge
STD_MEMORY = 10_000.0          # standardiser: running mean/var, exact (1/n) until n reaches this, then EW(1/STD_MEMORY)
Z_CLIP = 8.0                   # standardised values are clipped to +-Z_CLIP: one outlier cannot blow up a model
PMIN = 1e-3                    # RLS probabilities are kept in [PMIN, 1 - PMIN]
LL_EPS = 1e-15                 # log-loss clips probabilities to [LL_EPS, 1 - LL_EPS]
ADAGRAD_EPS = 1e-8
RLS_WINDUP = 1e6               # RLS: a diagonal of P above rls_init * RLS_WINDUP is scaled back to it (wind-up guard)

MODEL_LOGIT, MODEL_RLS = 0, 1
MODEL_NAMES = {"logit": MODEL_LOGIT, "rls": MODEL_RLS}
OPT_SGD, OPT_ADAGRAD = 0, 1
OPT_NAMES = {"sgd": OPT_SGD, "adagrad": OPT_ADAGRAD}

# ============================================================================================ row layout
# features (time-local: not saved)
F_HAVE = 0             # 1 once a mid was seen
F_MID = 1              # last mid
F_MID_TS = 2           # exchange ts of the last mid change
F_BID, F_ASK, F_BQ, F_AQ = 3, 4, 5, 6
F_EV_S, F_EV_L = 7, 8  # event EMAs of the mid
F_T_S, F_T_L = 9, 10   # time-decayed means of the mid
F_T_TS = 11            # exchange ts of their last update
F_FLOW_S, F_FLOW_A, F_FLOW_TS = 12, 13, 14     # decayed signed / absolute trade qty, ts
F_DEP_B, F_DEP_A, F_DEP_TS = 15, 16, 17        # decayed near-touch depth qty per side, ts
F_RV = 18              # EWMA of squared mid log-returns
F_RV_N = 19
F_MIN_SPREAD = 20
F_ZOK = 21             # 1 when the state changed since the last label (the next move labels it)
F_LAST_TS = 22         # exchange ts of the last record that changed the state
F_X = 24               # raw features [NF]
F_Z = F_X + NF         # standardised features [NF] (the vector the next label scores)
F_END = F_Z + NF
# model block (saved in model files): MB .. MB + MODEL_WIDTH
MB = ((F_END + 7) // 8) * 8
M_STD_N = MB
M_MOVE = MB + 1        # EWMA of |mid move| in bps (the size of the predicted edge)
M_MOVE_N = MB + 2
M_UPDATES = MB + 3     # labelled events learned from
M_MEAN = MB + 8
M_VAR = M_MEAN + NF
M_W = M_VAR + NF
M_G2 = M_W + NF        # AdaGrad squared-gradient sums
M_P = M_G2 + NF        # RLS inverse-correlation matrix, NF x NF row-major (0 = not initialised yet)
M_END = M_P + NF * NF
MODEL_WIDTH = M_END - MB
# scratch for RLS (P z and the gain)
S_PZ = M_END
S_K = S_PZ + NF
# prequential metrics (not saved)
Q_BASE = ((S_K + NF + 7) // 8) * 8
Q_N = Q_BASE           # predictions scored
Q_OK = Q_BASE + 1      # correct
Q_LL = Q_BASE + 2      # sum of log-loss
Q_BLL = Q_BASE + 3     # sum of the baseline's log-loss
Q_UP = Q_BASE + 4      # up labels seen (the baseline's base rate)
# current window and the window log
WIN_FIELDS = 5         # bucket, n, correct, log-loss sum, baseline log-loss sum
W_SCALE = Q_BASE + 8   # window length = window_s * 2**scale
W_LEN = Q_BASE + 11    # that length in ns (0: not set yet)
W_LOG_N = Q_BASE + 9
W_CUR = Q_BASE + 12    # current window (WIN_FIELDS); its n = 0: none open
WLOG_CAP = 512
W_LOG = Q_BASE + 24
W_END = W_LOG + WLOG_CAP * WIN_FIELDS
# trading (the strategy's own slots: position in units, orders working, tracked flag, ts of the last signal)
T_POS = W_END
T_OPEN = W_END + 1
T_TRACKED = W_END + 2
T_LAST = W_END + 3
ROW_SLOTS = W_END + 4


# ============================================================================================ kernels: models
@njit(cache=True, nogil=True, inline="always")
def sigmoid(a):
    if a >= 0.0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


@njit(cache=True, nogil=True)
def dot_w(row, zoff):
    a = 0.0
    for j in range(NF):
        a += row[M_W + j] * row[zoff + j]
    return a


@njit(cache=True, nogil=True)
def predict(row, zoff, model):
    """P(next mid move is up) for the vector at row[zoff:zoff + NF], with the current weights."""
    a = dot_w(row, zoff)
    if model == MODEL_RLS:
        p = 0.5 * (1.0 + a)
        return PMIN if p < PMIN else (1.0 - PMIN if p > 1.0 - PMIN else p)
    return sigmoid(a)


@njit(cache=True, nogil=True)
def logit_step(row, zoff, y, lr, l2, opt):
    """One logistic-regression update on (z, y in {0,1}); returns the probability before the update."""
    p = sigmoid(dot_w(row, zoff))
    lg = p - y
    for j in range(NF):
        g = row[zoff + j] * lg + l2 * row[M_W + j]
        if opt == OPT_ADAGRAD:
            row[M_G2 + j] += g * g
            row[M_W + j] -= lr / math.sqrt(row[M_G2 + j] + ADAGRAD_EPS) * g
        else:
            row[M_W + j] -= lr * g
    return p


@njit(cache=True, nogil=True)
def rls_step(row, zoff, y, lam, init):
    """One exponentially weighted RLS update on (z, y in {-1,+1}); returns the prediction w.z before it."""
    if row[M_P] == 0.0:                      # P0 = init * I on first use
        for i in range(NF):
            row[M_P + i * NF + i] = init
    denom = lam
    for i in range(NF):
        a = 0.0
        for j in range(NF):
            a += row[M_P + i * NF + j] * row[zoff + j]
        row[S_PZ + i] = a
        denom += row[zoff + i] * a
    yhat = dot_w(row, zoff)
    e = y - yhat
    for i in range(NF):
        k = row[S_PZ + i] / denom
        row[S_K + i] = k
        row[M_W + i] += k * e
    inv = 1.0 / lam
    cap = init * RLS_WINDUP
    capped = False
    for i in range(NF):
        ki = row[S_K + i]
        for j in range(i, NF):
            v = (row[M_P + i * NF + j] - ki * row[S_PZ + j]) * inv
            row[M_P + i * NF + j] = v      # P stays exactly symmetric
            row[M_P + j * NF + i] = v
        if row[M_P + i * NF + i] > cap:
            capped = True
    if capped:
        # wind-up guard: a direction the data never excites (a feature that stays at its mean: no depth or no
        # trades in the input) is divided by lam on every update and would overflow after ~700/(1-lam) updates.
        # Its variance is capped: P <- D P D with d_i = sqrt(cap / P_ii) where P_ii > cap, which keeps P symmetric
        # positive definite and leaves every direction the data does excite (P_ii <= init) alone.
        for i in range(NF):
            pii = row[M_P + i * NF + i]
            row[S_K + i] = math.sqrt(cap / pii) if pii > cap else 1.0
        for i in range(NF):
            di = row[S_K + i]
            for j in range(NF):
                row[M_P + i * NF + j] *= di * row[S_K + j]
    return yhat


# ============================================================================================ kernels: evaluation
@njit(cache=True, nogil=True, inline="always")
def log_loss(p, y):
    q = p if y > 0.5 else 1.0 - p
    if q < LL_EPS:
        q = LL_EPS
    return -math.log(q)


@njit(cache=True, nogil=True)
def _wlog_compact(row):
    """Window log full: double the window length, merging the windows that now share a bucket."""
    while row[W_LOG_N] >= WLOG_CAP:
        row[W_SCALE] += 1.0
        row[W_LEN] *= 2.0
        n = int(row[W_LOG_N])
        k = -1
        for i in range(n):
            src = W_LOG + i * WIN_FIELDS
            b = math.floor(row[src] / 2.0)
            if k >= 0 and row[W_LOG + k * WIN_FIELDS] == b:
                dst = W_LOG + k * WIN_FIELDS
                for f in range(1, WIN_FIELDS):
                    row[dst + f] += row[src + f]
            else:
                k += 1
                dst = W_LOG + k * WIN_FIELDS
                row[dst] = b
                for f in range(1, WIN_FIELDS):
                    row[dst + f] = row[src + f]
        row[W_LOG_N] = float(k + 1)
    if row[W_CUR + 1] > 0.0:
        row[W_CUR] = math.floor(row[W_CUR] / 2.0)


@njit(cache=True, nogil=True)
def score(row, ts, p, y, window_ns):
    """Prequential bookkeeping of one labelled event: model probability p, label y in {0,1}, exchange time ts."""
    n_lab = row[Q_N]
    pb = (row[Q_UP] + 1.0) / (n_lab + 2.0)     # the baseline's prediction, before it sees this label
    ll = log_loss(p, y)
    bll = log_loss(pb, y)
    ok = 1.0 if (p >= 0.5) == (y > 0.5) else 0.0
    row[Q_N] = n_lab + 1.0
    row[Q_OK] += ok
    row[Q_LL] += ll
    row[Q_BLL] += bll
    row[Q_UP] += y
    if window_ns <= 0.0:
        return
    if row[W_LEN] == 0.0:
        row[W_LEN] = window_ns
    b = math.floor(ts / row[W_LEN])
    if row[W_CUR + 1] > 0.0 and row[W_CUR] != b:
        if row[W_LOG_N] >= WLOG_CAP:
            _wlog_compact(row)
            b = math.floor(ts / row[W_LEN])
        if row[W_CUR] != b:
            dst = W_LOG + int(row[W_LOG_N]) * WIN_FIELDS
            for f in range(WIN_FIELDS):
                row[dst + f] = row[W_CUR + f]
                row[W_CUR + f] = 0.0
            row[W_LOG_N] += 1.0
    row[W_CUR] = b
    row[W_CUR + 1] += 1.0
    row[W_CUR + 2] += ok
    row[W_CUR + 3] += ll
    row[W_CUR + 4] += bll


# ============================================================================================ kernels: features
@njit(cache=True, nogil=True, inline="always")
def _decay(dt, tau):
    """Weight kept by a time-decayed quantity after dt ns (time constant tau)."""
    if dt <= 0.0:
        return 1.0
    if dt > 700.0 * tau:       # exp would underflow (libm's slow path): nothing is left anyway
        return 0.0
    return math.exp(-dt / tau)


@njit(cache=True, nogil=True)
def features(row, ts):
    """Raw feature vector of the row's feature state as of exchange time ts into row[F_X:]. Computed only when a
    vector is needed (a label, a trading decision): between records the state does not change, so the vector a
    label scores is exactly the one that was known right after the previous record."""
    mid = row[F_MID]
    bid, ask, bq, aq = row[F_BID], row[F_ASK], row[F_BQ], row[F_AQ]
    x = F_X
    row[x] = 1.0
    tq = bq + aq
    row[x + 1] = (bq - aq) / tq if tq > 0.0 else 0.0
    db, da = row[F_DEP_B], row[F_DEP_A]
    row[x + 2] = (db - da) / (db + da) if db + da > 0.0 else 0.0
    micro = (bid * aq + ask * bq) / tq if tq > 0.0 else mid
    row[x + 3] = (micro - mid) / mid * 1e4
    spread = ask - bid
    ms = row[F_MIN_SPREAD]
    row[x + 4] = spread / ms if ms > 0.0 else 1.0
    row[x + 5] = (mid / row[F_EV_S] - 1.0) * 1e4
    row[x + 6] = (mid / row[F_EV_L] - 1.0) * 1e4
    row[x + 7] = (mid / row[F_T_S] - 1.0) * 1e4
    row[x + 8] = (mid / row[F_T_L] - 1.0) * 1e4
    fa = row[F_FLOW_A]
    row[x + 9] = row[F_FLOW_S] / fa if fa > 0.0 else 0.0   # the decay since the last trade cancels out
    row[x + 10] = math.sqrt(row[F_RV]) * 1e4
    dt_ms = (ts - row[F_MID_TS]) * 1e-6
    row[x + 11] = math.log1p(dt_ms if dt_ms > 0.0 else 0.0)


@njit(cache=True, nogil=True)
def observe(row):
    """Add row[F_X:] to the standardiser's statistics (once per labelled vector)."""
    x = F_X
    # online standardisation: exact running mean / population variance (Welford's recursion in its 1/n form)
    # until STD_MEMORY samples, then exponentially weighted with that memory so the scale can follow the market
    n = row[M_STD_N] + 1.0
    row[M_STD_N] = n
    a = 1.0 / n if n < STD_MEMORY else 1.0 / STD_MEMORY
    for j in range(1, NF):
        d = row[x + j] - row[M_MEAN + j]
        row[M_MEAN + j] += a * d
        row[M_VAR + j] = (1.0 - a) * (row[M_VAR + j] + a * d * d)


@njit(cache=True, nogil=True)
def standardise(row):
    """row[F_Z:] = the standardised row[F_X:] with the current mean / variance, clipped to +-Z_CLIP."""
    row[F_Z] = 1.0
    for j in range(1, NF):
        var = row[M_VAR + j]
        z = (row[F_X + j] - row[M_MEAN + j]) / math.sqrt(var) if var > 1e-18 else 0.0
        row[F_Z + j] = Z_CLIP if z > Z_CLIP else (-Z_CLIP if z < -Z_CLIP else z)


@njit(cache=True, nogil=True)
def _on_mid(row, r, ts, model, lr, l2, opt, lam, init, window_ns):
    """A top of book: label + learn if the mid moved, then the top-of-book and mid features."""
    bid, ask = r.bid_px, r.ask_px
    mid = 0.5 * (bid + ask)
    if row[F_HAVE] == 0.0:
        row[F_HAVE] = 1.0
        row[F_MID] = mid
        row[F_MID_TS] = ts
        row[F_EV_S] = mid
        row[F_EV_L] = mid
        row[F_T_S] = mid
        row[F_T_L] = mid
        row[F_T_TS] = ts
    else:
        old = row[F_MID]
        if mid != old:
            y = 1.0 if mid > old else 0.0
            if row[F_ZOK] != 0.0:
                # prequential: score the vector known before this move with the current model, then learn from it
                features(row, row[F_LAST_TS])
                observe(row)
                standardise(row)
                if model == MODEL_RLS:
                    p = predict(row, F_Z, MODEL_RLS)
                    score(row, ts, p, y, window_ns)
                    rls_step(row, F_Z, 2.0 * y - 1.0, lam, init)
                else:
                    p = logit_step(row, F_Z, y, lr, l2, opt)   # returns the probability before its update
                    score(row, ts, p, y, window_ns)
                row[M_UPDATES] += 1.0
                row[F_ZOK] = 0.0
            ret = mid / old - 1.0
            nrv = row[F_RV_N] + 1.0
            row[F_RV_N] = nrv
            a = 1.0 / nrv if nrv < RV_EVENTS else 1.0 / RV_EVENTS
            row[F_RV] += a * (ret * ret - row[F_RV])
            nm = row[M_MOVE_N] + 1.0
            row[M_MOVE_N] = nm
            a = 1.0 / nm if nm < MOVE_EVENTS else 1.0 / MOVE_EVENTS
            row[M_MOVE] += a * (abs(ret) * 1e4 - row[M_MOVE])
            row[F_MID] = mid
            row[F_MID_TS] = ts
        a_s = 2.0 / (RET_EV_SHORT + 1.0)
        a_l = 2.0 / (RET_EV_LONG + 1.0)
        row[F_EV_S] += a_s * (mid - row[F_EV_S])
        row[F_EV_L] += a_l * (mid - row[F_EV_L])
        dt = ts - row[F_T_TS]
        if dt > 0.0:
            row[F_T_S] += (1.0 - _decay(dt, RET_T_SHORT_NS)) * (mid - row[F_T_S])
            row[F_T_L] += (1.0 - _decay(dt, RET_T_LONG_NS)) * (mid - row[F_T_L])
            row[F_T_TS] = ts
    spread = ask - bid
    if spread > 0.0 and (row[F_MIN_SPREAD] == 0.0 or spread < row[F_MIN_SPREAD]):
        row[F_MIN_SPREAD] = spread
    row[F_BID] = bid
    row[F_ASK] = ask
    row[F_BQ] = r.bid_qty
    row[F_AQ] = r.ask_qty


@njit(cache=True, nogil=True)
def on_record(row, r, mid_source, model, lr, l2, opt, lam, init, window_ns):
    """Feed one market record of this row's symbol. Returns True when the features were refreshed (a decision
    may be taken on this record), False when the record was not used."""
    k = r.kind
    ts = float(r.exch_ts)
    if k == KIND_QUOTE or k == KIND_BOOK:
        if (k == KIND_QUOTE and mid_source == 1) or (k == KIND_BOOK and mid_source == 0):
            return False
        if (r.flags & FLAG_RESYNC) != 0 or r.bid_px <= 0.0 or r.ask_px <= 0.0:
            return False
        _on_mid(row, r, ts, model, lr, l2, opt, lam, init, window_ns)
    elif k == KIND_TRADE:
        if row[F_HAVE] == 0.0 or r.qty <= 0.0:
            return False
        d = _decay(ts - row[F_FLOW_TS], FLOW_TAU_NS)
        row[F_FLOW_S] = row[F_FLOW_S] * d + (r.qty if r.side > 0 else -r.qty)
        row[F_FLOW_A] = row[F_FLOW_A] * d + r.qty
        row[F_FLOW_TS] = ts
    elif k == KIND_DEPTH:
        mid = row[F_MID]
        if row[F_HAVE] == 0.0 or (r.flags & FLAG_RESYNC) != 0 or abs(r.px - mid) > mid * DEPTH_BPS * 1e-4:
            return False
        d = _decay(ts - row[F_DEP_TS], DEPTH_TAU_NS)
        row[F_DEP_B] *= d
        row[F_DEP_A] *= d
        if r.side > 0:
            row[F_DEP_B] += r.qty
        else:
            row[F_DEP_A] += r.qty
        row[F_DEP_TS] = ts
    else:
        return False
    row[F_ZOK] = 1.0
    row[F_LAST_TS] = ts
    return True


@njit(cache=True, nogil=True)
def edge_bps(row, p):
    """Expected mid move in bps toward an up move: (2p - 1) times the mean size of a move."""
    return (2.0 * p - 1.0) * row[M_MOVE]


@njit(cache=True, nogil=True)
def totals(state):
    """(predictions, correct, log-loss sum, baseline log-loss sum) over all symbols."""
    n = ok = ll = bll = 0.0
    for s in range(state.shape[0]):
        n += state[s, Q_N]
        ok += state[s, Q_OK]
        ll += state[s, Q_LL]
        bll += state[s, Q_BLL]
    return n, ok, ll, bll


# ============================================================================================ Python side
class ModelFileError(ConfigError):
    """A model file that cannot be used: one line for the user, exit 2."""


MAGIC = b"AEGISMDL"
FILE_VERSION = 1
_DIGEST = 32


def model_header(params_model: int, names) -> dict:
    return {"format": "aegis-online-model", "file_version": FILE_VERSION, "feature_set": FEATURE_SET,
            "feature_version": FEATURE_VERSION, "features": list(FEATURES), "model": _model_name(params_model),
            "model_width": MODEL_WIDTH, "symbols": list(names)}


def _model_name(m: int) -> str:
    return {v: k for k, v in MODEL_NAMES.items()}[int(m)]


def save_model(path, state: np.ndarray, model: int, names) -> Path:
    """Write the model block of every symbol to `path` (atomically: a temp file renamed over it)."""
    path = Path(path)
    names = list(names)
    header = json.dumps(model_header(model, names), sort_keys=True).encode()
    block = np.ascontiguousarray(state[:len(names), MB:M_END], dtype="<f8")
    body = MAGIC + struct.pack("<I", len(header)) + header + block.tobytes()
    data = body + hashlib.sha256(body).digest()
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot write model file ({e.strerror or e})") from None
    return path


def read_model(path) -> tuple[dict, np.ndarray]:
    """(header, model blocks [n_symbols, MODEL_WIDTH]) of a model file; ModelFileError unless it checks out."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file does not exist") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read model file ({e.strerror or e})") from None
    if len(data) < len(MAGIC) + 4 + _DIGEST or not data.startswith(MAGIC):
        raise ModelFileError(f"{path}: not an aegis model file (bad magic or too short)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ModelFileError(f"{path}: model file is corrupt or truncated (checksum mismatch)")
    (hlen,) = struct.unpack_from("<I", body, len(MAGIC))
    h0 = len(MAGIC) + 4
    try:
        header = json.loads(body[h0:h0 + hlen].decode())
        names = header["symbols"]
        width = int(header["model_width"])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("symbols")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: model file header is unreadable") from None
    if header.get("file_version") != FILE_VERSION:
        raise ModelFileError(f"{path}: model file version {header.get('file_version')!r}, this build reads "
                             f"{FILE_VERSION}")
    if header.get("feature_set") != FEATURE_SET or header.get("feature_version") != FEATURE_VERSION \
            or header.get("features") != list(FEATURES):
        raise ModelFileError(f"{path}: model was trained on feature set {header.get('feature_set')!r} "
                             f"v{header.get('feature_version')}, this build computes {FEATURE_SET!r} v{FEATURE_VERSION}")
    if width != MODEL_WIDTH:
        raise ModelFileError(f"{path}: model block of {width} values per symbol, expected {MODEL_WIDTH}")
    payload = body[h0 + hlen:]
    if len(payload) != 8 * width * len(names):
        raise ModelFileError(f"{path}: model file holds {len(payload)} bytes of weights, expected "
                             f"{8 * width * len(names)} for {len(names)} symbols")
    blocks = np.frombuffer(payload, dtype="<f8").reshape(len(names), width).astype(np.float64)
    if not np.all(np.isfinite(blocks)):
        raise ModelFileError(f"{path}: model file holds non-finite weights")
    return header, blocks


def load_model(path, state: np.ndarray, model: int, names) -> list[str]:
    """Load a model file into the state rows of the symbols it knows (by name). Returns the symbols of `names`
    the file does not know (they start from zero; the caller says so). ModelFileError if the file is unusable,
    trained with another model kind, or shares no symbol with this run."""
    header, blocks = read_model(path)
    if header.get("model") != _model_name(model):
        raise ModelFileError(f"{path}: model file holds a {header.get('model')!r} model, the strategy runs "
                             f"model={_model_name(model)}")
    index = {n: i for i, n in enumerate(header["symbols"])}
    names = list(names)
    common = [n for n in names if n in index]
    if not common:
        raise ModelFileError(f"{path}: model file covers {', '.join(header['symbols']) or 'no symbols'}, none of "
                             f"this run's symbols")
    for s, n in enumerate(names):
        if n in index and s < state.shape[0]:
            state[s, MB:M_END] = blocks[index[n]]
    return [n for n in names if n not in index]


def summary(state: np.ndarray, window_s: float, names=None) -> dict:
    """Prequential metrics for summary.json "model": overall and per time window (all symbols together)."""
    n, ok, ll, bll = (float(v) for v in totals(state))
    base_ns = int(round(window_s * 1e9))
    scales = [int(state[s, W_SCALE]) for s in range(state.shape[0])]
    top = max(scales) if scales else 0
    buckets: dict[int, list] = {}
    for s in range(state.shape[0]):
        row = state[s]
        wlen = base_ns * 2 ** scales[s]
        entries = [row[W_LOG + i * WIN_FIELDS: W_LOG + (i + 1) * WIN_FIELDS] for i in range(int(row[W_LOG_N]))]
        if row[W_CUR + 1] > 0:
            entries.append(row[W_CUR:W_CUR + WIN_FIELDS])
        for e in entries:
            b = int(e[0]) * wlen // (base_ns * 2 ** top)
            acc = buckets.setdefault(b, [0.0, 0.0, 0.0, 0.0])
            for f in range(4):
                acc[f] += float(e[f + 1])
    wlen = base_ns * 2 ** top
    windows = [{"start_ns": b * wlen, "end_ns": (b + 1) * wlen, "predictions": int(v[0]),
                "accuracy": v[1] / v[0], "log_loss": v[2] / v[0], "baseline_log_loss": v[3] / v[0]}
               for b, v in sorted(buckets.items()) if v[0] > 0]
    out = {"feature_set": f"{FEATURE_SET}-v{FEATURE_VERSION}", "features": list(FEATURES),
           "predictions": int(n),
           "accuracy": ok / n if n else None, "log_loss": ll / n if n else None,
           "baseline_log_loss": bll / n if n else None,
           "window_ns": wlen, "windows": windows}
    if names is not None:
        per = {}
        for s, name in enumerate(names):
            m = state[s, Q_N]
            if m > 0:
                per[name] = {"predictions": int(m), "accuracy": state[s, Q_OK] / m, "log_loss": state[s, Q_LL] / m,
                             "baseline_log_loss": state[s, Q_BLL] / m,
                             "weights": {f: float(state[s, M_W + j]) for j, f in enumerate(FEATURES)}}
        out["per_symbol"] = per
    return out


def status_text(n: float, ok: float, ll: float, bll: float) -> str:
    """The model's part of a status / summary line."""
    if n <= 0:
        return "model: no predictions yet"
    return (f"model: {int(n)} predictions, accuracy {ok / n * 100:.1f}%, log-loss {ll / n:.4f} "
            f"(base rate {bll / n:.4f})")


# ============================================================================================ run hooks
# The Brain (aegis.brain.process) and replay (aegis.replay.run) call these at start and at the end of a run; they
# do nothing unless the strategy is `online`.
def _online(scfg) -> bool:
    from aegis.brain import strategy
    return scfg is not None and scfg.id == strategy.ONLINE


def _param(scfg, name: str) -> float:
    return float(scfg.params[[p.name for p in scfg.spec.params].index(name)])


def check_model_options(scfg, load_path, save_path) -> None:
    """Before anything starts: model files are for the online strategy, and a file to load must be usable."""
    if not _online(scfg):
        if load_path or save_path:
            raise ConfigError(f"--model / --save-model need --strategy online (strategy is {scfg.name})")
        return
    if load_path:
        header, _ = read_model(load_path)
        want = _model_name(int(_param(scfg, "model")))
        if header.get("model") != want:
            raise ModelFileError(f"{load_path}: model file holds a {header.get('model')!r} model, the strategy "
                                 f"runs model={want}")
    if save_path:
        parent = Path(save_path).resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"{save_path}: directory {parent} does not exist")


def start_run(scfg, state: np.ndarray, names, load_path, say) -> None:
    """Load the model file (if any) into the strategy state; say() which symbols start from zero."""
    if not _online(scfg) or not load_path:
        return
    fresh = load_model(load_path, state, int(_param(scfg, "model")), names)
    known = [n for n in names if n not in fresh]
    say(f"model {load_path}: loaded for {', '.join(known)}"
        + (f"; no model in the file for {', '.join(fresh)}: those start from zero" if fresh else ""))


def end_run(scfg, state: np.ndarray, names, save_path) -> dict | None:
    """Save the model (if asked) and return the prequential metrics (None unless the strategy learns)."""
    if not _online(scfg):
        return None
    if save_path:
        save_model(save_path, state, int(_param(scfg, "model")), names)
    return summary(state, _param(scfg, "window_s"), names)


def publish(ctl, ctl_f, state: np.ndarray) -> None:
    """The Brain's housekeeping: prequential totals into the control block for the supervisor's status line."""
    from aegis.core import control
    n, ok, ll, bll = totals(state)
    b = control.base(control.ROLE_BRAIN)
    ctl[b + control.R_BRAIN_MODEL_N] = int(n)
    ctl[b + control.R_BRAIN_MODEL_OK] = int(ok)
    if ctl_f is not None:
        ctl_f[b + control.F_BRAIN_MODEL_LL] = ll
        ctl_f[b + control.F_BRAIN_MODEL_BLL] = bll


def state_text(state: np.ndarray) -> str:
    return status_text(*totals(state))
