"""Simulated execution for replay: the exchange side of a backtest, jitted, deterministic.

Replay hands it what the live Brain hands the sender: ORDER_REQUEST records that passed aegis.trade.risk. Each request
travels for a latency (constant, or drawn from a recorded aegis.core.latency histogram with a seeded RNG), then "arrives":

  * MARKET: fills in full at the opposite best quote of that moment, moved against us by the slippage
    (buy: ask * (1 + bps/1e4), sell: bid * (1 - bps/1e4)); taker fee. A symbol that never had a quote (trades-only
    data) uses its last trade price for both sides; with neither the order is EXPIRED.
  * LIMIT arriving marketable (buy price >= ask / sell price <= bid): GTX (post-only) is EXPIRED, as Binance
    does; the others fill in full as taker at the quote (slipped, never worse than the limit price).
  * LIMIT not marketable: IOC/FOK are EXPIRED; GTC/GTX rest. A resting order fills in full, as maker, at its own
    price, when the market crosses it: a quote whose opposite side reaches it (buy: ask <= price; sell:
    bid >= price) or a trade printed through it (buy: trade price < price; sell: trade price > price). A trade AT
    the price does not fill it (queue position is unknown, so the conservative choice).
  * CANCEL / CANCEL_ALL travel with latency too and only cancel what is still open when they arrive.

Depth is not modelled (fills are never partial) and the fill report reaches the strategy/risk with no return
latency. Every fill and every final order state is written as a FILL_DTYPE record (qty 0 for CANCELED/EXPIRED), the
same record the live user-data stream produces, so aegis.trade.risk.on_fill consumes them unchanged.

Ordering rule (what makes a replay deterministic and independent of batching except for exact timestamp ties):
orders that arrive at time t are executed before the market record stamped t is applied; an order sent at t with
zero latency executes against the book that already includes the record that triggered it.

State: preallocated arrays (SimExchange.arrays); every kernel is @njit(cache=True, nogil=True).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from aegis.core import latency as L
from aegis.core.jit import njit
from aegis.core.records import (ACTION_CANCEL, ACTION_CANCEL_ALL, FILL_DTYPE, KIND_BOOK, KIND_QUOTE, KIND_TRADE,
                           ORDER_MARKET, SIDE_BUY, STATUS_CANCELED, STATUS_EXPIRED, STATUS_FILLED,
                           STATUS_NEW, STATUS_PARTIALLY_FILLED, STATUS_REJECTED, TIF_FOK, TIF_GTX, TIF_IOC)

# --- per-symbol book columns (float64) ---------------------------------------------------------------------------
B_BID, B_BID_QTY, B_ASK, B_ASK_QTY, B_LAST = 0, 1, 2, 3, 4
B_COLS = 8

# --- per-symbol account columns (float64) -------------------------------------------------------------------------
A_POS, A_AVG, A_REALIZED, A_FEES, A_NOTIONAL, A_VOLUME, A_FILLS, A_MAKER_FILLS = 0, 1, 2, 3, 4, 5, 6, 7
A_COLS = 8

# --- order table columns: int64 part and float64 part (active orders, and the log of finished orders) ------------
(I_CID, I_SYM, I_SIDE, I_TYPE, I_TIF, I_RO, I_ACTION, I_TARGET, I_SEND_TS, I_ARRIVE_TS, I_DONE_TS, I_STATUS,
 I_REASON, I_RESTING, I_ORDER_ID, I_MAKER, I_EXCH_TS) = range(17)
I_COLS = 17
F_PRICE, F_QTY, F_FILLED, F_NOTIONAL, F_FEE = 0, 1, 2, 3, 4
F_COLS = 8

# order log reasons (beyond aegis.trade.risk's reason codes, which replay writes for refused requests)
WHY_NONE = 0
WHY_NO_QUOTE = 100        # market order with no quote for the symbol yet
WHY_POST_ONLY = 101       # GTX would have taken liquidity
WHY_NOT_MARKETABLE = 102  # IOC / FOK found nothing to take
WHY_CANCELED = 103        # canceled by a CANCEL / CANCEL_ALL request
WHY_END_OF_DATA = 104     # still open when the replay ended
WHY_UNKNOWN_ORDER = 105   # a cancel whose target was not open when it arrived
WHY_NAMES = {WHY_NONE: "", WHY_NO_QUOTE: "no quote", WHY_POST_ONLY: "post-only would take",
             WHY_NOT_MARKETABLE: "not marketable", WHY_CANCELED: "canceled", WHY_END_OF_DATA: "open at end",
             WHY_UNKNOWN_ORDER: "unknown order"}

# --- counters (int64) ----------------------------------------------------------------------------------------------
(C_NOW, C_ACTIVE, C_NEXT_ORDER_ID, C_NEXT_TRADE_ID, C_FILLS, C_DONE, C_EQ, C_NEXT_SAMPLE, C_SAMPLE_NS, C_LAT_NS,
 C_LAT_TOTAL, C_RNG, C_SUBMITTED, C_TRADES, C_RECORDS, C_STARTED) = range(16)
C_LEN = 16

# --- float parameters ------------------------------------------------------------------------------------------------
P_SLIP, P_MAKER_FEE, P_TAKER_FEE = 0, 1, 2
P_LEN = 4

PX_EPS = 1e-12    # relative: a limit price (risk's ticks * tickSize) and a quote parsed from the same decimal can
                  # differ in the last bit; within this they are the same price
FLAT_EPS = 1e-9   # |position| below this fraction of the last fill's qty is flat (float residue of +0.1-0.1)


@dataclass(frozen=True)
class SimConfig:
    slippage_bps: float = 0.0
    maker_fee: float = 0.0002       # fraction of notional (Binance USD-M default tier: 0.02 % maker)
    taker_fee: float = 0.0005       # 0.05 % taker
    latency_ns: int = 0             # constant order latency (used when latency_hist is None)
    latency_hist: np.ndarray | None = None   # 1-D aegis.core.latency histogram to draw latencies from
    seed: int = 1
    sample_ns: int = 1_000_000_000  # equity curve grid

    def __post_init__(self):
        if self.slippage_bps < 0:
            raise ValueError(f"slippage must be >= 0 bps, got {self.slippage_bps}")
        if self.latency_ns < 0:
            raise ValueError(f"latency must be >= 0 ns, got {self.latency_ns}")
        if self.sample_ns <= 0:
            raise ValueError(f"equity sample interval must be > 0, got {self.sample_ns}")
        if self.latency_hist is not None and L.count(np.asarray(self.latency_hist, np.int64)) <= 0:
            raise ValueError("the latency histogram is empty")


def latency_table(hist: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative counts, lowest, highest value) of the non-empty buckets of a 1-D latency histogram, each bucket
    clamped to the recorded exact min/max; empty arrays for a constant latency."""
    if hist is None:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    hist = np.asarray(hist, np.int64)
    counts = hist[L.HEADER_LEN:L.HEADER_LEN + L.N_BUCKETS]
    nz = np.flatnonzero(counts)
    lo, hi = L.bucket_bounds()
    vmin, vmax = int(L.min_value(hist)), int(L.max_value(hist))
    lo = np.clip(lo[nz], vmin, vmax).astype(np.int64)
    hi = np.clip(hi[nz], vmin, vmax).astype(np.int64)
    return np.cumsum(counts[nz]).astype(np.int64), lo, hi


class SimState(NamedTuple):
    """One simulated exchange as the one argument of its kernels: a record of SimExchange's preallocated arrays
    (mutated in place; the record itself never changes)."""
    book: np.ndarray     # (symbols, B_COLS): top of book, last trade, clock per symbol
    acct: np.ndarray     # (symbols, A_COLS): position, entry, realized PnL, fees
    act_i: np.ndarray    # (max_active, I_COLS) int64: orders in flight or resting
    act_f: np.ndarray    # (max_active, F_COLS) float64: their prices and quantities
    log_i: np.ndarray    # finished orders (int columns), drained by the caller
    log_f: np.ndarray    # finished orders (float columns)
    fills: np.ndarray    # FILL_DTYPE records not yet drained
    eq_ts: np.ndarray    # equity grid times not yet drained
    eq_val: np.ndarray   # equity grid values
    ctr: np.ndarray      # (C_LEN,) int64: counters, clock, latency settings
    params: np.ndarray   # (P_LEN,) float64: slippage, fees
    lat_cum: np.ndarray  # latency histogram: cumulative counts per non-empty bucket (empty: constant latency)
    lat_lo: np.ndarray   # bucket lows
    lat_hi: np.ndarray   # bucket highs
    rng: np.ndarray      # (1,) uint64: splitmix64 state


class SimExchange:
    """Arrays of one simulated exchange. Buffers (fills, finished-order log, equity points) are drained by the
    caller (drain_*) whenever room() says they may not hold the next record's output."""

    def __init__(self, n_symbols: int, cfg: SimConfig = SimConfig(), max_active: int = 4096,
                 fill_cap: int = 1 << 14, log_cap: int = 1 << 14, eq_cap: int = 1 << 14):
        self.cfg = cfg
        self.n_symbols = n_symbols
        self.book = np.zeros((n_symbols, B_COLS), np.float64)
        self.acct = np.zeros((n_symbols, A_COLS), np.float64)
        self.act_i = np.zeros((max_active, I_COLS), np.int64)
        self.act_f = np.zeros((max_active, F_COLS), np.float64)
        self.log_i = np.zeros((log_cap, I_COLS), np.int64)
        self.log_f = np.zeros((log_cap, F_COLS), np.float64)
        self.fills = np.zeros(fill_cap, FILL_DTYPE)
        self.eq_ts = np.zeros(eq_cap, np.int64)
        self.eq_val = np.zeros(eq_cap, np.float64)
        self.ctr = np.zeros(C_LEN, np.int64)
        self.params = np.zeros(P_LEN, np.float64)
        self.params[P_SLIP] = cfg.slippage_bps / 10_000.0
        self.params[P_MAKER_FEE] = cfg.maker_fee
        self.params[P_TAKER_FEE] = cfg.taker_fee
        self.lat_cum, self.lat_lo, self.lat_hi = latency_table(cfg.latency_hist)
        self.ctr[C_LAT_NS] = cfg.latency_ns
        self.ctr[C_LAT_TOTAL] = int(self.lat_cum[-1]) if len(self.lat_cum) else 0
        self.ctr[C_SAMPLE_NS] = cfg.sample_ns
        self.ctr[C_NEXT_ORDER_ID] = 1
        self.ctr[C_NEXT_TRADE_ID] = 1
        self.rng = np.array([splitmix_seed(cfg.seed)], np.uint64)

        self.sx = SimState(self.book, self.acct, self.act_i, self.act_f, self.log_i, self.log_f, self.fills,
                           self.eq_ts, self.eq_val, self.ctr, self.params, self.lat_cum, self.lat_lo, self.lat_hi,
                           self.rng)

    def drain_fills(self) -> np.ndarray:
        n = int(self.ctr[C_FILLS])
        out = self.fills[:n].copy()
        self.ctr[C_FILLS] = 0
        return out

    def drain_log(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.ctr[C_DONE])
        out = self.log_i[:n].copy(), self.log_f[:n].copy()
        self.ctr[C_DONE] = 0
        return out

    def drain_equity(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.ctr[C_EQ])
        out = self.eq_ts[:n].copy(), self.eq_val[:n].copy()
        self.ctr[C_EQ] = 0
        return out


def splitmix_seed(seed: int) -> int:
    return (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF


# ======================================================================================================= kernels
@njit(cache=True, nogil=True)
def _rand(rng):
    """splitmix64: a tiny, well-mixed, seedable generator (deterministic across runs and machines)."""
    rng[0] += np.uint64(0x9E3779B97F4A7C15)
    z = rng[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def draw_latency(ctr, lat_cum, lat_lo, lat_hi, rng):
    """One order latency (ns): the constant, or a draw from the histogram (bucket by count, uniform inside)."""
    total = ctr[C_LAT_TOTAL]
    if total <= 0:
        return ctr[C_LAT_NS]
    u = np.int64(_rand(rng) % np.uint64(total))
    lo_i = 0
    hi_i = lat_cum.shape[0] - 1
    while lo_i < hi_i:   # first bucket whose cumulative count exceeds u
        mid = (lo_i + hi_i) // 2
        if lat_cum[mid] > u:
            hi_i = mid
        else:
            lo_i = mid + 1
    width = lat_hi[lo_i] - lat_lo[lo_i] + 1
    return lat_lo[lo_i] + np.int64(_rand(rng) % np.uint64(width))


@njit(cache=True, nogil=True)
def mark_price(book, s):
    if book[s, B_BID] > 0.0 and book[s, B_ASK] > 0.0:
        return 0.5 * (book[s, B_BID] + book[s, B_ASK])
    return book[s, B_LAST]


@njit(cache=True, nogil=True)
def equity(book, acct):
    """Realized - fees + unrealized at the current marks, all symbols (quote currency)."""
    e = 0.0
    for s in range(acct.shape[0]):
        e += acct[s, A_REALIZED] - acct[s, A_FEES]
        p = acct[s, A_POS]
        if p != 0.0:
            m = mark_price(book, s)
            if m > 0.0:
                e += p * (m - acct[s, A_AVG])
    return e


@njit(cache=True, nogil=True)
def _apply_fill(acct, s, side, qty, px, fee):
    """Position, average entry and realized PnL of one fill (USD-M linear contract); returns the realized PnL."""
    pos = acct[s, A_POS]
    avg = acct[s, A_AVG]
    signed = qty if side == SIDE_BUY else -qty
    pnl = 0.0
    if pos == 0.0 or (pos > 0.0) == (signed > 0.0):
        new = pos + signed
        acct[s, A_AVG] = (avg * abs(pos) + px * qty) / abs(new)
    else:
        closed = qty if qty < abs(pos) else abs(pos)
        pnl = (px - avg) * closed * (1.0 if pos > 0.0 else -1.0)
        new = pos + signed
        if abs(new) <= FLAT_EPS * qty:
            new = 0.0
            acct[s, A_AVG] = 0.0
        elif (new > 0.0) != (pos > 0.0):
            acct[s, A_AVG] = px
    acct[s, A_POS] = new
    acct[s, A_REALIZED] += pnl
    acct[s, A_FEES] += fee
    acct[s, A_NOTIONAL] += px * qty
    acct[s, A_VOLUME] += qty
    acct[s, A_FILLS] += 1.0
    return pnl


@njit(cache=True, nogil=True)
def _emit(fills, ctr, act_i, act_f, k, px, qty, fee, pnl, status, maker, now):
    n = ctr[C_FILLS]
    f = fills[n]
    f.client_id = act_i[k, I_CID]
    f.order_id = act_i[k, I_ORDER_ID]
    if qty > 0.0:
        f.trade_id = ctr[C_NEXT_TRADE_ID]
        ctr[C_NEXT_TRADE_ID] += 1
    else:
        f.trade_id = 0
    f.ts = now
    f.recv_ts = now
    f.price = px
    f.qty = qty
    f.cum_qty = act_f[k, F_FILLED]
    f.fee = fee
    f.realized_pnl = pnl
    f.orig_qty = act_f[k, F_QTY]
    f.symbol = act_i[k, I_SYM]
    f.side = act_i[k, I_SIDE]
    f.status = status
    f.maker = maker
    f.reduce_only = act_i[k, I_RO]
    ctr[C_FILLS] = n + 1


@njit(cache=True, nogil=True)
def _finish(act_i, act_f, log_i, log_f, ctr, k, status, reason, now):
    """Move active order k to the finished-order log (keeps the active table in arrival order)."""
    act_i[k, I_STATUS] = status
    act_i[k, I_REASON] = reason
    act_i[k, I_DONE_TS] = now
    d = ctr[C_DONE]
    for c in range(I_COLS):
        log_i[d, c] = act_i[k, c]
    for c in range(F_COLS):
        log_f[d, c] = act_f[k, c]
    ctr[C_DONE] = d + 1
    n = ctr[C_ACTIVE]
    for j in range(k, n - 1):
        for c in range(I_COLS):
            act_i[j, c] = act_i[j + 1, c]
        for c in range(F_COLS):
            act_f[j, c] = act_f[j + 1, c]
    ctr[C_ACTIVE] = n - 1


@njit(cache=True, nogil=True)
def _trade(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, k, px, maker, now):
    """Fill active order k in full at px; emits the FILL record and retires the order."""
    s = act_i[k, I_SYM]
    q = act_f[k, F_QTY] - act_f[k, F_FILLED]
    if act_i[k, I_RO] != 0:  # reduce-only never flips: clip to the position left (risk clipped it at send time)
        pos = acct[s, A_POS]
        room = -pos if act_i[k, I_SIDE] == SIDE_BUY else pos
        if room <= 0.0:
            _emit(fills, ctr, act_i, act_f, k, 0.0, 0.0, 0.0, 0.0, STATUS_EXPIRED, 0, now)
            _finish(act_i, act_f, log_i, log_f, ctr, k, STATUS_EXPIRED, WHY_NONE, now)
            return
        if q > room:
            q = room
    fee = px * q * (params[P_MAKER_FEE] if maker else params[P_TAKER_FEE])
    pnl = _apply_fill(acct, s, act_i[k, I_SIDE], q, px, fee)
    if maker:
        acct[s, A_MAKER_FILLS] += 1.0
    act_f[k, F_FILLED] += q
    act_f[k, F_NOTIONAL] += px * q
    act_f[k, F_FEE] += fee
    act_i[k, I_MAKER] = 1 if maker else 0
    ctr[C_TRADES] += 1
    _emit(fills, ctr, act_i, act_f, k, px, q, fee, pnl, STATUS_FILLED, 1 if maker else 0, now)
    _finish(act_i, act_f, log_i, log_f, ctr, k, STATUS_FILLED, WHY_NONE, now)


@njit(cache=True, nogil=True)
def _opposite(book, s, side):
    """The price a taker meets: best ask to buy, best bid to sell; the last trade price for a symbol that never had a
    quote (a trades-only replay, e.g. aggTrades files alone); 0 when there is neither."""
    px = book[s, B_ASK] if side == SIDE_BUY else book[s, B_BID]
    if px > 0.0:
        return px
    return book[s, B_LAST]


@njit(cache=True, nogil=True)
def _taker_px(book, params, s, side, limit, is_market):
    """Price a taker order gets now: the opposite side with slippage (capped at a limit); 0 if none."""
    opp = _opposite(book, s, side)
    if not opp > 0.0:
        return 0.0
    if side == SIDE_BUY:
        px = opp * (1.0 + params[P_SLIP])
        if not is_market and px > limit:
            px = limit
        return px
    px = opp * (1.0 - params[P_SLIP])
    if not is_market and px < limit:
        px = limit
    return px


@njit(cache=True, nogil=True)
def _arrive(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, k):
    """Active order k reaches the exchange at its arrival time (against the current book). Returns True if k left
    the active table."""
    now = act_i[k, I_ARRIVE_TS]
    action = act_i[k, I_ACTION]
    if action == ACTION_CANCEL or action == ACTION_CANCEL_ALL:
        target = act_i[k, I_TARGET]
        s = act_i[k, I_SYM]
        found = False
        j = 0
        while j < ctr[C_ACTIVE]:
            hit = j != k and act_i[j, I_RESTING] == 1 and act_i[j, I_ACTION] != ACTION_CANCEL \
                and act_i[j, I_ACTION] != ACTION_CANCEL_ALL \
                and ((action == ACTION_CANCEL and act_i[j, I_CID] == target)
                     or (action == ACTION_CANCEL_ALL and act_i[j, I_SYM] == s))
            if hit:
                found = True
                _emit(fills, ctr, act_i, act_f, j, 0.0, 0.0, 0.0, 0.0, STATUS_CANCELED, 0, now)
                _finish(act_i, act_f, log_i, log_f, ctr, j, STATUS_CANCELED, WHY_CANCELED, now)
                if j < k:
                    k -= 1
            else:
                j += 1
        reason = WHY_NONE if found or action == ACTION_CANCEL_ALL else WHY_UNKNOWN_ORDER
        _finish(act_i, act_f, log_i, log_f, ctr, k, STATUS_FILLED if found else STATUS_EXPIRED, reason, now)
        return True
    s = act_i[k, I_SYM]
    side = act_i[k, I_SIDE]
    is_mkt = act_i[k, I_TYPE] == ORDER_MARKET
    limit = act_f[k, F_PRICE]
    px = _taker_px(book, params, s, side, limit, is_mkt)
    if is_mkt:
        if px > 0.0:
            _trade(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, k, px, False, now)
        else:
            _emit(fills, ctr, act_i, act_f, k, 0.0, 0.0, 0.0, 0.0, STATUS_EXPIRED, 0, now)
            _finish(act_i, act_f, log_i, log_f, ctr, k, STATUS_EXPIRED, WHY_NO_QUOTE, now)
        return True
    opp = _opposite(book, s, side)
    marketable = opp > 0.0 and ((side == SIDE_BUY and opp <= limit * (1.0 + PX_EPS))
                                or (side != SIDE_BUY and opp >= limit * (1.0 - PX_EPS)))
    tif = act_i[k, I_TIF]
    if marketable:
        if tif == TIF_GTX:
            _emit(fills, ctr, act_i, act_f, k, 0.0, 0.0, 0.0, 0.0, STATUS_EXPIRED, 0, now)
            _finish(act_i, act_f, log_i, log_f, ctr, k, STATUS_EXPIRED, WHY_POST_ONLY, now)
        else:
            _trade(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, k, px, False, now)
        return True
    if tif == TIF_IOC or tif == TIF_FOK:
        _emit(fills, ctr, act_i, act_f, k, 0.0, 0.0, 0.0, 0.0, STATUS_EXPIRED, 0, now)
        _finish(act_i, act_f, log_i, log_f, ctr, k, STATUS_EXPIRED, WHY_NOT_MARKETABLE, now)
        return True
    act_i[k, I_RESTING] = 1
    return False


@njit(cache=True, nogil=True)
def arrive_due(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, now):
    """Every in-flight request with arrival time <= now reaches the exchange, in (arrival time, send order)."""
    while True:
        best = -1
        best_t = now + 1
        for j in range(ctr[C_ACTIVE]):
            if act_i[j, I_RESTING] == 0 and act_i[j, I_ARRIVE_TS] < best_t:
                best_t = act_i[j, I_ARRIVE_TS]
                best = j
        if best < 0:
            return
        _arrive(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, best)


@njit(cache=True, nogil=True)
def submit(req, send_ts, sx):
    """Send one accepted ORDER_REQUEST at send_ts; returns its arrival time. The caller must have drained the
    fill and log buffers and the active table must have room (it holds every in-flight and resting order)."""
    book, acct, act_i, act_f, log_i = sx.book, sx.acct, sx.act_i, sx.act_f, sx.log_i
    log_f, fills, ctr, params, lat_cum = sx.log_f, sx.fills, sx.ctr, sx.params, sx.lat_cum
    lat_lo, lat_hi, rng = sx.lat_lo, sx.lat_hi, sx.rng
    k = ctr[C_ACTIVE]
    for c in range(I_COLS):
        act_i[k, c] = 0
    for c in range(F_COLS):
        act_f[k, c] = 0.0
    lat = draw_latency(ctr, lat_cum, lat_lo, lat_hi, rng)
    act_i[k, I_CID] = req.client_id
    act_i[k, I_SYM] = req.symbol
    act_i[k, I_SIDE] = req.side
    act_i[k, I_TYPE] = req.order_type
    act_i[k, I_TIF] = req.tif
    act_i[k, I_RO] = req.reduce_only
    act_i[k, I_ACTION] = req.action
    act_i[k, I_TARGET] = req.target_id
    act_i[k, I_EXCH_TS] = req.exch_ts
    act_i[k, I_SEND_TS] = send_ts
    act_i[k, I_ARRIVE_TS] = send_ts + lat
    act_i[k, I_ORDER_ID] = ctr[C_NEXT_ORDER_ID]
    ctr[C_NEXT_ORDER_ID] += 1
    act_f[k, F_PRICE] = req.price
    act_f[k, F_QTY] = req.qty
    ctr[C_ACTIVE] = k + 1
    ctr[C_SUBMITTED] += 1
    if send_ts > ctr[C_NOW]:   # sending at t means the simulated clock is at least t
        ctr[C_NOW] = send_ts
    if send_ts + lat <= ctr[C_NOW]:
        arrive_due(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, ctr[C_NOW])
    return send_ts + lat


@njit(cache=True, nogil=True)
def log_refused(req, send_ts, reason, log_i, log_f, ctr):
    """Put a request that risk refused into the finished-order log (status REJECTED, risk's reason code)."""
    d = ctr[C_DONE]
    for c in range(I_COLS):
        log_i[d, c] = 0
    for c in range(F_COLS):
        log_f[d, c] = 0.0
    log_i[d, I_CID] = req.client_id
    log_i[d, I_SYM] = req.symbol
    log_i[d, I_SIDE] = req.side
    log_i[d, I_TYPE] = req.order_type
    log_i[d, I_TIF] = req.tif
    log_i[d, I_RO] = req.reduce_only
    log_i[d, I_ACTION] = req.action
    log_i[d, I_TARGET] = req.target_id
    log_i[d, I_EXCH_TS] = req.exch_ts
    log_i[d, I_SEND_TS] = send_ts
    log_i[d, I_ARRIVE_TS] = send_ts
    log_i[d, I_DONE_TS] = send_ts
    log_i[d, I_STATUS] = STATUS_REJECTED
    log_i[d, I_REASON] = reason
    log_f[d, F_PRICE] = req.price
    log_f[d, F_QTY] = req.qty
    ctr[C_DONE] = d + 1


@njit(cache=True, nogil=True)
def _sample(book, acct, eq_ts, eq_val, ctr, t):
    """Equity grid: the first record at or after a grid time stores the equity just before it, stamped with the
    latest grid time <= t (grid times skipped without records had the same equity: metrics back-fills them)."""
    if ctr[C_STARTED] == 0:
        ctr[C_STARTED] = 1
        ctr[C_NEXT_SAMPLE] = (t // ctr[C_SAMPLE_NS]) * ctr[C_SAMPLE_NS]
    if t >= ctr[C_NEXT_SAMPLE]:
        g = (t // ctr[C_SAMPLE_NS]) * ctr[C_SAMPLE_NS]
        n = ctr[C_EQ]
        eq_ts[n] = g
        eq_val[n] = equity(book, acct)
        ctr[C_EQ] = n + 1
        ctr[C_NEXT_SAMPLE] = g + ctr[C_SAMPLE_NS]


@njit(cache=True, nogil=True, inline="always")
def quick_market(rec, book, ctr):
    """The common case in a few instructions: no order in flight or resting and no equity sample due, so the
    record only moves the clock and the book. Returns False (and does nothing) when on_market must run instead.
    (A call passing all the state arrays costs ~200 ns per record; this one passes three.)"""
    t = rec.recv_ts
    if ctr[C_ACTIVE] != 0 or ctr[C_STARTED] == 0 or t >= ctr[C_NEXT_SAMPLE]:
        return False
    if t > ctr[C_NOW]:
        ctr[C_NOW] = t
    ctr[C_RECORDS] += 1
    s = rec.symbol
    if s < 0 or s >= book.shape[0]:
        return True
    _move_book(book, rec, s)
    return True


@njit(cache=True, nogil=True)
def _move_book(book, rec, s):
    """Top of book / last trade of symbol s from one market record; False for kinds that move no price."""
    kind = rec.kind
    if kind == KIND_QUOTE or kind == KIND_BOOK:
        if rec.bid_px > 0.0 and rec.ask_px > 0.0:
            book[s, B_BID] = rec.bid_px
            book[s, B_BID_QTY] = rec.bid_qty
            book[s, B_ASK] = rec.ask_px
            book[s, B_ASK_QTY] = rec.ask_qty
        return True
    if kind == KIND_TRADE:
        if rec.px > 0.0:
            book[s, B_LAST] = rec.px
        return True
    return False


@njit(cache=True, nogil=True)
def on_market(rec, sx):
    """One market record at its replay time rec.recv_ts: due orders arrive, the equity grid is sampled, the book
    moves, and resting orders the record crosses fill."""
    book, acct, act_i, act_f, log_i = sx.book, sx.acct, sx.act_i, sx.act_f, sx.log_i
    log_f, fills, eq_ts, eq_val, ctr = sx.log_f, sx.fills, sx.eq_ts, sx.eq_val, sx.ctr
    params = sx.params
    t = rec.recv_ts
    if t > ctr[C_NOW]:
        ctr[C_NOW] = t
    t = ctr[C_NOW]
    ctr[C_RECORDS] += 1
    if ctr[C_STARTED] != 0 and t >= ctr[C_NEXT_SAMPLE]:
        # orders that arrived before the grid time belong to the equity sampled there
        g = (t // ctr[C_SAMPLE_NS]) * ctr[C_SAMPLE_NS]
        if ctr[C_ACTIVE] > 0:
            arrive_due(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, g - 1)
    _sample(book, acct, eq_ts, eq_val, ctr, t)
    if ctr[C_ACTIVE] > 0:
        arrive_due(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, t)
    s = rec.symbol
    if s < 0 or s >= book.shape[0]:
        return
    if not _move_book(book, rec, s):
        return
    kind = rec.kind
    if ctr[C_ACTIVE] == 0:
        return
    j = 0
    while j < ctr[C_ACTIVE]:
        if act_i[j, I_RESTING] == 1 and act_i[j, I_SYM] == s:
            p = act_f[j, F_PRICE]
            buy = act_i[j, I_SIDE] == SIDE_BUY
            if kind == KIND_TRADE:
                hit = (buy and rec.px < p * (1.0 - PX_EPS)) or ((not buy) and rec.px > p * (1.0 + PX_EPS))
            else:
                hit = (buy and rec.ask_px <= p * (1.0 + PX_EPS)) or ((not buy) and rec.bid_px >= p * (1.0 - PX_EPS))
            if hit:
                _trade(book, acct, act_i, act_f, log_i, log_f, fills, ctr, params, j, p, True, t)
                continue  # the table shifted into slot j
        j += 1


@njit(cache=True, nogil=True)
def finish_open(sx):
    """End of data: requests still in flight arrive (if due by the last record's time they already did; the
    rest never reach the exchange) and every open order is logged as CANCELED (open at end); then one last equity
    point at the last replay time. Caller drains buffers first (needs ctr[C_ACTIVE] + 1 slots)."""
    book, acct, act_i, act_f, log_i = sx.book, sx.acct, sx.act_i, sx.act_f, sx.log_i
    log_f, fills, eq_ts, eq_val, ctr = sx.log_f, sx.fills, sx.eq_ts, sx.eq_val, sx.ctr
    t = ctr[C_NOW]
    while ctr[C_ACTIVE] > 0:
        if act_i[0, I_ACTION] != ACTION_CANCEL and act_i[0, I_ACTION] != ACTION_CANCEL_ALL:
            _emit(fills, ctr, act_i, act_f, 0, 0.0, 0.0, 0.0, 0.0, STATUS_CANCELED, 0, t)
        _finish(act_i, act_f, log_i, log_f, ctr, 0, STATUS_CANCELED, WHY_END_OF_DATA, t)
    if ctr[C_STARTED] != 0:
        n = ctr[C_EQ]
        eq_ts[n] = t
        eq_val[n] = equity(book, acct)
        ctr[C_EQ] = n + 1


# status names for output files
STATUS_NAMES = {STATUS_NEW: "NEW", STATUS_PARTIALLY_FILLED: "PARTIALLY_FILLED", STATUS_FILLED: "FILLED",
                STATUS_CANCELED: "CANCELED", STATUS_EXPIRED: "EXPIRED", STATUS_REJECTED: "REJECTED"}
