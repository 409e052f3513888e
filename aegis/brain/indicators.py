"""Incremental technical indicators as @njit kernels over per-symbol float64 state rows.

Every stateful indicator keeps its whole state in a slice of one float64 row, `st[off : off + X_slots(...)]`, so a
strategy lays out all of its indicators for one symbol side by side in one row of its per-symbol state matrix
(aegis.brain.pools.state_matrix): one symbol's update touches one or two cache lines and nothing is ever allocated.
An update consumes one new value and returns the indicator's current value (NaN while it is not defined yet),
so strategies, candles and replay all run the same code, tick by tick, with no look-ahead.

Conventions, chosen to match the usual textbook definitions (and the references in tests/test_indicators.py):
  * EMA: alpha = 2 / (period + 1), seeded with the first value (EMA_0 = x_0), then alpha*x + (1-alpha)*EMA.
  * SMA / Bollinger: mean of the last `period` values; Bollinger uses the POPULATION standard deviation
    (ddof = 0, as John Bollinger defines the bands): mid +- k * std. NaN until `period` values were seen.
  * RSI (Wilder): the first `period` price changes are averaged simply, later ones smoothed with
    avg = (avg * (period - 1) + x) / period; RSI = 100 - 100 / (1 + avg_gain / avg_loss), 100 when avg_loss is 0
    (50 when both are 0: no movement at all). NaN until `period` changes were seen.
  * ATR (Wilder): true range max(h - l, |h - prev_close|, |l - prev_close|), the first bar's TR is h - l;
    seeded with the mean of the first `period` TRs, then Wilder-smoothed. NaN before that.
  * VWAP: sum(px * qty) / sum(qty) since the state was reset.
  * Rolling volatility: SAMPLE standard deviation (ddof = 1) of the last `period` log returns ln(p_t / p_{t-1});
    NaN until `period` returns were seen.
  * Trade-flow imbalance: (buy qty - sell qty) / (buy qty + sell qty) over the last `period` trades, side from the
    aggressor (+1 buyer, -1 seller).
  * Order-book imbalance and microprice are stateless functions of one top of book.

Rolling windows keep their running sums incrementally (O(1) per value) and recompute them exactly from the window
buffer each time the buffer wraps (O(1) amortised), so rounding errors cannot accumulate over millions of updates.
"""
from __future__ import annotations

import math

import numpy as np

from aegis.core.jit import njit

NAN = math.nan

# --- EMA ---------------------------------------------------------------------------------------------------------
EMA_SLOTS = 2  # value, count


@njit(cache=True, nogil=True)
def ema_alpha(period):
    return 2.0 / (period + 1.0)


@njit(cache=True, nogil=True)
def ema_update(st, off, alpha, x):
    if st[off + 1] == 0.0:
        st[off] = x
    else:
        st[off] = alpha * x + (1.0 - alpha) * st[off]
    st[off + 1] += 1.0
    return st[off]


# --- rolling window: SMA, variance, Bollinger ------------------------------------------------------------------
# slots: count (values seen, saturates at period), pos (next buffer slot), sum, sumsq_dev (sum of squared
# deviations from `shift`), shift (first value: keeps the squares small), buffer[period]
WIN_HEADER = 5


@njit(cache=True, nogil=True)
def win_slots(period):
    return WIN_HEADER + period


@njit(cache=True, nogil=True)
def win_update(st, off, period, x):
    """Push x into the window of the last `period` values."""
    cnt = st[off]
    pos = int(st[off + 1])
    if cnt == 0.0:
        st[off + 4] = x  # shift: deviations from an early value keep sum of squares well conditioned
    d = x - st[off + 4]
    buf = off + WIN_HEADER
    if cnt < period:
        st[off + 2] += d
        st[off + 3] += d * d
        st[off] = cnt + 1.0
    else:
        old = st[buf + pos]
        st[off + 2] += d - old
        st[off + 3] += d * d - old * old
    st[buf + pos] = d
    pos += 1
    if pos == period:
        pos = 0
        if st[off] >= period:
            # exact recomputation once per wrap: drift from the running sums never outlives one window
            s = 0.0
            q = 0.0
            for i in range(period):
                v = st[buf + i]
                s += v
                q += v * v
            st[off + 2] = s
            st[off + 3] = q
    st[off + 1] = pos


@njit(cache=True, nogil=True)
def win_mean(st, off, period):
    """Mean of the window (SMA); NaN until full."""
    if st[off] < period:
        return NAN
    return st[off + 4] + st[off + 2] / period


@njit(cache=True, nogil=True)
def win_var(st, off, period, ddof):
    """Variance of the window with `ddof` (0 population, 1 sample); NaN until full."""
    if st[off] < period or period - ddof <= 0:
        return NAN
    m = st[off + 2] / period
    v = (st[off + 3] - period * m * m) / (period - ddof)
    return v if v > 0.0 else 0.0


@njit(cache=True, nogil=True)
def sma_update(st, off, period, x):
    win_update(st, off, period, x)
    return win_mean(st, off, period)


@njit(cache=True, nogil=True)
def bollinger_update(st, off, period, k, x):
    """(lower, middle, upper) after pushing x; NaNs until the window is full."""
    win_update(st, off, period, x)
    mid = win_mean(st, off, period)
    sd = math.sqrt(win_var(st, off, period, 0))
    return mid - k * sd, mid, mid + k * sd


# --- RSI (Wilder) ------------------------------------------------------------------------------------------------
RSI_SLOTS = 5  # prev, has_prev, avg_gain, avg_loss, changes


@njit(cache=True, nogil=True)
def rsi_value(avg_gain, avg_loss):
    if avg_loss == 0.0:
        return 50.0 if avg_gain == 0.0 else 100.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


@njit(cache=True, nogil=True)
def rsi_update(st, off, period, x):
    if st[off + 1] == 0.0:
        st[off] = x
        st[off + 1] = 1.0
        return NAN
    ch = x - st[off]
    st[off] = x
    gain = ch if ch > 0.0 else 0.0
    loss = -ch if ch < 0.0 else 0.0
    n = st[off + 4] + 1.0
    st[off + 4] = n
    if n <= period:
        # simple average of the first `period` changes (kept as a running mean)
        st[off + 2] += (gain - st[off + 2]) / n
        st[off + 3] += (loss - st[off + 3]) / n
        if n < period:
            return NAN
    else:
        st[off + 2] = (st[off + 2] * (period - 1) + gain) / period
        st[off + 3] = (st[off + 3] * (period - 1) + loss) / period
    return rsi_value(st[off + 2], st[off + 3])


# --- ATR (Wilder) ------------------------------------------------------------------------------------------------
ATR_SLOTS = 3  # prev_close, atr, bars


@njit(cache=True, nogil=True)
def true_range(high, low, prev_close, has_prev):
    tr = high - low
    if has_prev:
        a = abs(high - prev_close)
        b = abs(low - prev_close)
        if a > tr:
            tr = a
        if b > tr:
            tr = b
    return tr


@njit(cache=True, nogil=True)
def atr_update(st, off, period, high, low, close):
    n = st[off + 2] + 1.0
    tr = true_range(high, low, st[off], n > 1.0)
    st[off] = close
    st[off + 2] = n
    if n <= period:
        st[off + 1] += (tr - st[off + 1]) / n
        if n < period:
            return NAN
    else:
        st[off + 1] = (st[off + 1] * (period - 1) + tr) / period
    return st[off + 1]


# --- VWAP --------------------------------------------------------------------------------------------------------
VWAP_SLOTS = 2  # sum px*qty, sum qty


@njit(cache=True, nogil=True)
def vwap_update(st, off, px, qty):
    st[off] += px * qty
    st[off + 1] += qty
    if st[off + 1] <= 0.0:
        return NAN
    return st[off] / st[off + 1]


# --- rolling volatility of log returns ---------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def rvol_slots(period):
    return 1 + win_slots(period)  # prev price, window of log returns


@njit(cache=True, nogil=True)
def rvol_update(st, off, period, px):
    prev = st[off]
    st[off] = px
    if prev <= 0.0 or px <= 0.0:
        return NAN
    win_update(st, off + 1, period, math.log(px / prev))
    return math.sqrt(win_var(st, off + 1, period, 1))


# --- trade-flow imbalance over the last `period` trades ---------------------------------------------------------
# slots: count, pos, sum signed qty, sum qty, buffer of signed qty[period]
TFI_HEADER = 4


@njit(cache=True, nogil=True)
def tfi_slots(period):
    return TFI_HEADER + period


@njit(cache=True, nogil=True)
def tfi_update(st, off, period, side, qty):
    s = qty if side > 0 else -qty
    cnt = st[off]
    pos = int(st[off + 1])
    buf = off + TFI_HEADER
    if cnt < period:
        st[off] = cnt + 1.0
    else:
        old = st[buf + pos]
        st[off + 2] -= old
        st[off + 3] -= abs(old)
    st[off + 2] += s
    st[off + 3] += qty
    st[buf + pos] = s
    pos += 1
    if pos == period:
        pos = 0
        a = 0.0
        b = 0.0
        for i in range(int(st[off])):
            v = st[buf + i]
            a += v
            b += abs(v)
        st[off + 2] = a
        st[off + 3] = b
    st[off + 1] = pos
    if st[off + 3] <= 0.0:
        return 0.0
    return st[off + 2] / st[off + 3]


# --- stateless top-of-book measures ------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def book_imbalance(bid_qty, ask_qty):
    """(bid qty - ask qty) / (bid qty + ask qty) in [-1, 1]; 0 for an empty book."""
    t = bid_qty + ask_qty
    if t <= 0.0:
        return 0.0
    return (bid_qty - ask_qty) / t


@njit(cache=True, nogil=True)
def microprice(bid_px, bid_qty, ask_px, ask_qty):
    """Size-weighted mid: leans towards the side with LESS quantity (the one more likely to be taken out next)."""
    t = bid_qty + ask_qty
    if t <= 0.0:
        return 0.5 * (bid_px + ask_px)
    return (bid_px * ask_qty + ask_px * bid_qty) / t


# --- series helpers (tests, replay, offline analysis): the same incremental kernels over a whole array ----------
@njit(cache=True)
def ema_series(x, period, out):
    st = np.zeros(EMA_SLOTS)
    a = ema_alpha(period)
    for i in range(x.shape[0]):
        out[i] = ema_update(st, 0, a, x[i])


@njit(cache=True)
def sma_series(x, period, out):
    st = np.zeros(win_slots(period))
    for i in range(x.shape[0]):
        out[i] = sma_update(st, 0, period, x[i])


@njit(cache=True)
def bollinger_series(x, period, k, lower, mid, upper):
    st = np.zeros(win_slots(period))
    for i in range(x.shape[0]):
        lower[i], mid[i], upper[i] = bollinger_update(st, 0, period, k, x[i])


@njit(cache=True)
def rsi_series(x, period, out):
    st = np.zeros(RSI_SLOTS)
    for i in range(x.shape[0]):
        out[i] = rsi_update(st, 0, period, x[i])


@njit(cache=True)
def atr_series(high, low, close, period, out):
    st = np.zeros(ATR_SLOTS)
    for i in range(high.shape[0]):
        out[i] = atr_update(st, 0, period, high[i], low[i], close[i])


@njit(cache=True)
def vwap_series(px, qty, out):
    st = np.zeros(VWAP_SLOTS)
    for i in range(px.shape[0]):
        out[i] = vwap_update(st, 0, px[i], qty[i])


@njit(cache=True)
def rvol_series(px, period, out):
    st = np.zeros(rvol_slots(period))
    for i in range(px.shape[0]):
        out[i] = rvol_update(st, 0, period, px[i])


@njit(cache=True)
def tfi_series(side, qty, period, out):
    st = np.zeros(tfi_slots(period))
    for i in range(side.shape[0]):
        out[i] = tfi_update(st, 0, period, side[i], qty[i])
