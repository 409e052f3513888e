"""Pre-trade risk, in the Brain, jitted: limits, exchange filters with exact tick/step rounding, throttles, and
the trading state machine (ACTIVE / REDUCING / HALTED).

State lives in preallocated arrays owned by the Brain (a RiskBook); every check is an @njit(nogil) function over
them, so the Brain's jitted pipeline calls `check_new` on an ORDER_REQUEST record right after its strategy and
before it writes the record to the sender queue, with no Python in between.

Rounding: the strategy's float price/qty are converted ONCE to integer ticks/steps (BUY limit rounds down, SELL
limit rounds up: never more aggressive than asked; quantity rounds down: never bigger than asked) and the record
carries price_ticks/qty_steps; the sender formats `units * "0.10"` with decimal arithmetic (aegis.binance.signing), so no
float text ever reaches the wire (docs/binance-notes.md, Decimal text on the wire).

Checks, in order (the first failing one is the reason): trading state -> symbol tradable -> market data present and
fresh -> rounding + exchange filters (LOT_SIZE / MARKET_LOT_SIZE, PRICE_FILTER, MIN_NOTIONAL unless reduce-only,
PERCENT_PRICE vs mark, else mid) -> our price band vs mid -> max order qty/notional -> reduce-only (clipped to the
position not already covered by open reduce-only orders) -> max position qty/notional (worst case: position plus all
open orders on that side plus this one) -> max gross notional -> max open orders -> order-rate windows (ours, then
Binance's 300/10 s and 1200/1 min; last, so refused orders do not use up the budget). Cancels are always allowed
for known orders. Every refusal bumps a per-reason counter and is written to a small ring of recent rejections
(time, symbol, reason, client id) that the status line and the logs read: the reason is never lost.

A daily loss limit (realized + unrealized - fees since the UTC day started) and the manual kill switch move the
state to HALTED: `halt_requests` then produces one CANCEL_ALL per symbol with open orders and, optionally,
reduce-only MARKET orders that flatten every position (flagged REQ_FLAG_FLATTEN: they pass HALTED, stale data and
our own throttle, never Binance's limits). The exchange's limits come from its exchangeInfo `rateLimits` (ORDERS), so
a venue that allows more lets the engine send more; [risk] binance_orders_10s / _1m can only lower them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import numpy as np

from aegis.core.jit import njit
from aegis.core.records import (ACTION_CANCEL, ACTION_CANCEL_ALL, ACTION_NEW, KIND_BOOK, KIND_MARK, KIND_QUOTE,
                           ORDER_LIMIT, ORDER_MARKET, REQ_FLAG_FLATTEN, SIDE_BUY, SIDE_SELL,
                           STATUS_CANCELED, STATUS_EXPIRED, STATUS_FILLED, STATUS_REJECTED, STATUS_SNAPSHOT,
                           TIF_GTC, TIF_GTX)

# --- trading states ---------------------------------------------------------------------------------------------
ACTIVE, REDUCING, HALTED = 0, 1, 2
STATE_NAMES = ("ACTIVE", "REDUCING", "HALTED")

# why the state changed (g[G_STATE_REASON])
WHY_START, WHY_KILL_SWITCH, WHY_DAILY_LOSS, WHY_MANUAL, WHY_SHUTDOWN, WHY_RECONCILE = 0, 1, 2, 3, 4, 5
WHY_NAMES = ("start", "kill switch", "daily loss limit", "manual", "shutdown", "reconciliation mismatch")

# --- rejection reasons ------------------------------------------------------------------------------------------
REASONS = (
    "OK", "HALTED", "REDUCING", "UNKNOWN_SYMBOL", "SYMBOL_NOT_TRADING", "NO_MARKET_DATA", "STALE_MARKET_DATA",
    "QTY_BELOW_STEP", "MIN_QTY", "MAX_QTY", "PRICE_FILTER", "MIN_NOTIONAL", "PERCENT_PRICE", "PRICE_BAND",
    "ORDER_QTY_LIMIT", "ORDER_NOTIONAL_LIMIT", "POSITION_QTY_LIMIT", "POSITION_NOTIONAL_LIMIT",
    "GROSS_NOTIONAL_LIMIT", "REDUCE_ONLY_NO_POSITION", "RATE_OURS", "RATE_BINANCE_10S", "RATE_BINANCE_1M",
    "MAX_OPEN_ORDERS", "OPEN_TABLE_FULL", "UNKNOWN_ORDER", "BAD_REQUEST", "QUEUE_FULL", "EXCHANGE_REJECT",
)
(R_OK, R_HALTED, R_REDUCING, R_UNKNOWN_SYMBOL, R_NOT_TRADING, R_NO_MARKET, R_STALE, R_QTY_BELOW_STEP, R_MIN_QTY,
 R_MAX_QTY, R_PRICE_FILTER, R_MIN_NOTIONAL, R_PERCENT_PRICE, R_PRICE_BAND, R_ORDER_QTY, R_ORDER_NOTIONAL,
 R_POSITION_QTY, R_POSITION_NOTIONAL, R_GROSS_NOTIONAL, R_REDUCE_ONLY, R_RATE_OURS, R_RATE_10S, R_RATE_1M,
 R_MAX_OPEN_ORDERS, R_OPEN_TABLE_FULL, R_UNKNOWN_ORDER, R_BAD_REQUEST, R_QUEUE_FULL,
 R_EXCHANGE_REJECT) = range(len(REASONS))
N_REASONS = len(REASONS)

# --- per-symbol float64 columns: filters, limits, state ----------------------------------------------------------
(S_TICK, S_STEP, S_MKT_STEP, S_MIN_QTY, S_MAX_QTY, S_MKT_MIN_QTY, S_MKT_MAX_QTY, S_MIN_NOTIONAL, S_MULT_UP,
 S_MULT_DOWN, S_MIN_PRICE, S_MAX_PRICE, S_TRADING, S_MAX_NUM_ORDERS,
 S_LIM_POS_QTY, S_LIM_POS_NOTIONAL, S_LIM_ORDER_QTY, S_LIM_ORDER_NOTIONAL,
 S_POS, S_AVG_PX, S_OPEN_BUY, S_OPEN_SELL, S_OPEN_RO_BUY, S_OPEN_RO_SELL, S_OPEN_COUNT,
 S_MID, S_MARK, S_MD_TS, S_REALIZED, S_FEES) = range(30)
S_COLS = 32

# --- global int64 slots -----------------------------------------------------------------------------------------
G_STATE = 0
G_STATE_REASON = 1
G_STATE_TS = 2
G_NEXT_CID = 3
G_ACCEPTED = 4
G_REJECTED = 5
G_DAY = 6
G_MAX_MD_AGE_NS = 7
G_RATE_OURS = 8          # orders per 1 s window (ours)
G_RATE_10S = 9
G_RATE_1M = 10
G_RATE_N = 11            # orders ever accepted into the rate ring
G_REJLOG_N = 12
G_FLATTEN_ON_HALT = 13
G_FILLS = 14
G_HALT_PENDING = 15      # set when the state became HALTED and halt_requests has not run yet
G_REJ_BASE = 16          # per-reason counters: g[G_REJ_BASE + reason]
G_RESTORED = G_REJ_BASE + 48   # bumped whenever Python seeds positions or open orders (strategies re-read them)
G_LEN = G_RESTORED + 1

# --- global float64 slots ---------------------------------------------------------------------------------------
GF_MAX_GROSS = 0
GF_DAILY_LOSS = 1        # limit, > 0 (0 = off)
GF_BAND = 2              # price band as a fraction of mid (0 = off)
GF_DAY_BASE = 3          # total PnL when the current UTC day started
GF_REALIZED = 4
GF_FEES = 5
GF_LEN = 8

# --- open-order table (float64 rows) ----------------------------------------------------------------------------
O_CID, O_SYM, O_SIDE, O_RO, O_REMAIN, O_PRICE, O_FLAGS = 0, 1, 2, 3, 4, 5, 6
O_COLS = 8
MAX_OPEN = 1024
RATE_CAP = 65536         # >= every rate limit (checked at config time; an exchange's larger one is clipped to it)
BINANCE_ORDERS_10S, BINANCE_ORDERS_1M = 300, 1200   # Binance USD-M's ORDERS limits, when the venue lists none
REJLOG = 256
NS_PER_DAY = 86_400_000_000_000
ONE_S = 1_000_000_000
EPS = 1e-6               # tolerance in units of a tick/step when converting floats to integer units


@dataclass(frozen=True)
class RiskConfig:
    """[risk] table. Quantities in base asset, notionals in quote asset (USDT); 0 disables a limit."""
    max_position_qty: float = 0.0
    max_position_notional: float = 1_000.0
    max_gross_notional: float = 5_000.0
    max_order_qty: float = 0.0
    max_order_notional: float = 500.0
    price_band_bps: float = 100.0
    max_md_age_ms: int = 2_000
    orders_per_second: int = 10      # our own limit (1 s window); raise it for hundreds of orders/s
    binance_orders_10s: int = 0      # the exchange's ORDERS limits per 10 s / per minute: 0 = as its exchangeInfo
    binance_orders_1m: int = 0       # rateLimits say (Binance: 300 / 1200); a value here can only lower those
                                     # (replay: it is the limit; 0 = Binance's)
    max_open_orders: int = 200
    daily_loss_limit: float = 100.0
    flatten_on_halt: bool = False
    start_state: str = "ACTIVE"
    kill_switch_file: str = ""
    symbols: dict = field(default_factory=dict)   # {"BTCUSDT": {"max_position_qty": 0.01, ...}}

    @classmethod
    def from_section(cls, section: dict) -> "RiskConfig":
        from aegis.core import config as C
        rate = C.between(1, RATE_CAP)
        checks = {"start_state": C.one_of("ACTIVE", "REDUCING", "HALTED"), "orders_per_second": rate,
                  "binance_orders_10s": C.between(0, RATE_CAP), "binance_orders_1m": C.between(0, RATE_CAP), "max_open_orders": C.between(1, MAX_OPEN)}
        kw = C.section_values(cls, "risk", section, checks, numbers=C.NON_NEGATIVE)
        limits = {}
        for sym, lim in kw.get("symbols", {}).items():
            limits[sym] = C.section_values(SymbolLimits, f"risk.symbols.{sym}", lim, numbers=C.NON_NEGATIVE)
        if "symbols" in kw:
            kw["symbols"] = limits
        return cls(**kw)


@dataclass(frozen=True)
class SymbolLimits:
    """A [risk.symbols.SYMBOL] table: that symbol's own limits (0 disables one)."""
    max_position_qty: float = 0.0
    max_position_notional: float = 0.0
    max_order_qty: float = 0.0
    max_order_notional: float = 0.0


@dataclass(frozen=True)
class SymbolRules:
    """One symbol's exchange filters, as the strings exchangeInfo sends (the wire format is derived from them)."""
    symbol: str
    status: str = "TRADING"
    tick_size: str = "0.01"
    step_size: str = "0.001"
    market_step_size: str = "0.001"
    min_qty: str = "0.001"
    max_qty: str = "1000000"
    market_min_qty: str = "0.001"
    market_max_qty: str = "1000000"
    min_notional: str = "5"
    multiplier_up: str = "1.0500"
    multiplier_down: str = "0.9500"
    min_price: str = "0"
    max_price: str = "0"
    max_num_orders: int = 200

    @classmethod
    def from_exchange_info(cls, row: dict) -> "SymbolRules":
        """From one exchangeInfo `symbols[]` element (filters in any key order; missing filters keep defaults)."""
        kw = {"symbol": row["symbol"], "status": row.get("status", "TRADING")}
        for f in row.get("filters", ()):
            t = f.get("filterType")
            if t == "PRICE_FILTER":
                kw.update(tick_size=f["tickSize"], min_price=f.get("minPrice", "0"), max_price=f.get("maxPrice", "0"))
            elif t == "LOT_SIZE":
                kw.update(step_size=f["stepSize"], min_qty=f["minQty"], max_qty=f["maxQty"])
            elif t == "MARKET_LOT_SIZE":
                kw.update(market_step_size=f["stepSize"], market_min_qty=f["minQty"], market_max_qty=f["maxQty"])
            elif t == "MIN_NOTIONAL":
                kw.update(min_notional=str(f.get("notional", f.get("minNotional", "0"))))
            elif t == "PERCENT_PRICE":
                kw.update(multiplier_up=str(f["multiplierUp"]), multiplier_down=str(f["multiplierDown"]))
            elif t == "MAX_NUM_ORDERS":
                kw.update(max_num_orders=int(f["limit"]))
        if "market_step_size" not in kw and "step_size" in kw:
            kw["market_step_size"] = kw["step_size"]
        return cls(**kw)


def _f(s: str) -> float:
    return float(Decimal(s))


def exchange_order_limits(exchange_info: dict | None) -> tuple[int, int]:
    """(orders per 10 s, orders per minute) from an exchangeInfo's `rateLimits`: the ORDERS entries of 10 SECOND
    and 1 MINUTE, the two windows Binance USD-M lists and risk enforces; 0 where it lists none."""
    l10 = l60 = 0
    for r in (exchange_info or {}).get("rateLimits", ()) or ():
        try:
            if r.get("rateLimitType") != "ORDERS":
                continue
            span = {"SECOND": 1, "MINUTE": 60}.get(r["interval"], 0) * int(r.get("intervalNum", 1))
            limit = int(r["limit"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if span == 10 and limit > 0:
            l10 = limit
        elif span == 60 and limit > 0:
            l60 = limit
    return l10, l60


def effective_order_limits(cfg: "RiskConfig", exchange: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """The ORDERS limits per 10 s and per minute risk enforces: the exchange's (from its exchangeInfo), lowered by
    [risk] binance_orders_10s / _1m when those are set; with no exchange figure (replay, a venue that lists none)
    the [risk] value, else Binance's 300 / 1200. Clipped to what the rate ring holds (RATE_CAP)."""
    out = []
    for mine, theirs, binance in ((cfg.binance_orders_10s, exchange[0], BINANCE_ORDERS_10S),
                                  (cfg.binance_orders_1m, exchange[1], BINANCE_ORDERS_1M)):
        v = min(theirs, mine) if theirs and mine else (theirs or mine or binance)
        out.append(max(1, min(v, RATE_CAP)))
    return out[0], out[1]


class RiskState(NamedTuple):
    """The risk book as the one argument of every jitted check. A record of the book's preallocated arrays: the
    arrays are owned by the Brain and mutated in place; the record itself never changes, so numba passes it by
    value at no cost and caches the kernels that take it."""
    sym: np.ndarray      # (symbols, S_COLS) float64: filters, limits, position, open quantities, mid/mark
    g: np.ndarray        # (G_LEN,) int64: trading state, client ids, rate-limit settings, per-reason counters
    gf: np.ndarray       # (GF_LEN,) float64: gross/daily-loss limits, realized PnL, fees
    oo: np.ndarray       # (MAX_OPEN, O_COLS) float64: open orders
    rates: np.ndarray    # (RATE_CAP,) int64: accepted-order times, the rate windows' ring
    rejlog: np.ndarray   # (REJLOG, 4) int64: recent refusals (ts, symbol, reason, client id)


class RiskBook:
    """The Brain's risk state: preallocated arrays the jitted checks work on (pass `book.arrays` to them)."""

    def __init__(self, cfg: RiskConfig, rules: list[SymbolRules], first_client_id: int = 1,
                 exchange_limits: tuple[int, int] = (0, 0)):
        """exchange_limits: the venue's ORDERS limits per 10 s and per minute (exchange_order_limits of its
        exchangeInfo; 0 = not listed, Binance's apply)."""
        self.cfg = cfg
        self.rules = list(rules)
        self.index = {r.symbol: i for i, r in enumerate(self.rules)}
        n = max(1, len(self.rules))
        self.sym = np.zeros((n, S_COLS), np.float64)
        self.g = np.zeros(G_LEN, np.int64)
        self.gf = np.zeros(GF_LEN, np.float64)
        self.oo = np.zeros((MAX_OPEN, O_COLS), np.float64)
        self.rates = np.zeros(RATE_CAP, np.int64)
        self.rejlog = np.zeros((REJLOG, 4), np.int64)
        for i, r in enumerate(self.rules):
            s = self.sym[i]
            s[S_TICK], s[S_STEP], s[S_MKT_STEP] = _f(r.tick_size), _f(r.step_size), _f(r.market_step_size)
            s[S_MIN_QTY], s[S_MAX_QTY] = _f(r.min_qty), _f(r.max_qty)
            s[S_MKT_MIN_QTY], s[S_MKT_MAX_QTY] = _f(r.market_min_qty), _f(r.market_max_qty)
            s[S_MIN_NOTIONAL] = _f(r.min_notional)
            s[S_MULT_UP], s[S_MULT_DOWN] = _f(r.multiplier_up), _f(r.multiplier_down)
            s[S_MIN_PRICE], s[S_MAX_PRICE] = _f(r.min_price), _f(r.max_price)
            s[S_TRADING] = 1.0 if r.status == "TRADING" else 0.0
            s[S_MAX_NUM_ORDERS] = min(r.max_num_orders, cfg.max_open_orders)
            lim = cfg.symbols.get(r.symbol, {})
            s[S_LIM_POS_QTY] = lim.get("max_position_qty", cfg.max_position_qty)
            s[S_LIM_POS_NOTIONAL] = lim.get("max_position_notional", cfg.max_position_notional)
            s[S_LIM_ORDER_QTY] = lim.get("max_order_qty", cfg.max_order_qty)
            s[S_LIM_ORDER_NOTIONAL] = lim.get("max_order_notional", cfg.max_order_notional)
        self.g[G_STATE] = STATE_NAMES.index(cfg.start_state)
        self.g[G_NEXT_CID] = first_client_id
        self.g[G_MAX_MD_AGE_NS] = cfg.max_md_age_ms * 1_000_000
        self.g[G_RATE_OURS] = cfg.orders_per_second
        self.order_limits = effective_order_limits(cfg, exchange_limits)
        self.g[G_RATE_10S], self.g[G_RATE_1M] = self.order_limits
        self.g[G_FLATTEN_ON_HALT] = int(cfg.flatten_on_halt)
        self.g[G_DAY] = -1
        self.gf[GF_MAX_GROSS] = cfg.max_gross_notional
        self.gf[GF_DAILY_LOSS] = cfg.daily_loss_limit
        self.gf[GF_BAND] = cfg.price_band_bps / 10_000.0

        self.rk = RiskState(self.sym, self.g, self.gf, self.oo, self.rates, self.rejlog)

    # --- Python-side views (status line, logs, tests) --------------------------------------------------------
    @property
    def state(self) -> str:
        return STATE_NAMES[int(self.g[G_STATE])]

    @property
    def state_reason(self) -> str:
        return WHY_NAMES[int(self.g[G_STATE_REASON])]

    def reject_counts(self) -> dict[str, int]:
        return {REASONS[r]: int(self.g[G_REJ_BASE + r]) for r in range(1, N_REASONS) if self.g[G_REJ_BASE + r]}

    def recent_rejections(self) -> list[tuple[int, str, str, int]]:
        """(ts_ns, symbol, reason, client_id), oldest first."""
        n = int(self.g[G_REJLOG_N])
        out = []
        for k in range(max(0, n - REJLOG), n):
            ts, sym, reason, cid = (int(x) for x in self.rejlog[k % REJLOG])
            name = self.rules[sym].symbol if 0 <= sym < len(self.rules) else str(sym)
            out.append((ts, name, REASONS[reason], cid))
        return out

    def position(self, symbol: str) -> float:
        return float(self.sym[self.index[symbol], S_POS])

    def restore_position(self, symbol: str, qty: float, avg_price: float) -> None:
        """Seed a position from the exchange (reconciliation at start / after a reconnect)."""
        i = self.index[symbol]
        self.sym[i, S_POS] = qty
        self.sym[i, S_AVG_PX] = avg_price
        self.g[G_RESTORED] += 1

    def restore_open_order(self, client_id: int, symbol: str, side: int, remaining: float, price: float,
                           reduce_only: bool) -> None:
        """Seed an open order from the journal (resume) or the exchange (reconciliation)."""
        add_open_order(self.sym, self.oo, client_id, self.index[symbol], side, int(reduce_only), remaining, price, 0)
        self.g[G_RESTORED] += 1


# ============================================================================================ jitted kernels
@njit(cache=True, nogil=True)
def _reject(sym, g, rejlog, req_symbol, reason, cid, now):
    g[G_REJ_BASE + reason] += 1
    g[G_REJECTED] += 1
    k = g[G_REJLOG_N] % REJLOG
    rejlog[k, 0] = now
    rejlog[k, 1] = req_symbol
    rejlog[k, 2] = reason
    rejlog[k, 3] = cid
    g[G_REJLOG_N] += 1
    return reason


@njit(cache=True, nogil=True)
def count_reject(rk, symbol, reason, cid, now):
    """Count a refusal decided outside check_new (sender queue full, exchange reject). QUEUE_FULL also releases
    the open-order slot check_new took for client id `cid` (the request never left the Brain)."""
    sym, g, oo, rejlog = rk.sym, rk.g, rk.oo, rk.rejlog
    if reason == R_QUEUE_FULL and cid > 0:
        release_order(sym, oo, cid)
    _count_reject(g, rejlog, symbol, reason, cid, now)


@njit(cache=True, nogil=True)
def release_order(sym, oo, cid):
    """Forget open order `cid` locally (it was never sent); True if it was open."""
    k = find_open(oo, cid)
    if k < 0:
        return False
    s = np.int64(oo[k, O_SYM])
    _open_add(sym, s, np.int64(oo[k, O_SIDE]), np.int64(oo[k, O_RO]), -oo[k, O_REMAIN], -1.0)
    for c in range(O_COLS):
        oo[k, c] = 0.0
    return True


@njit(cache=True, nogil=True)
def _count_reject(g, rejlog, symbol, reason, cid, now):
    k = g[G_REJLOG_N] % REJLOG
    rejlog[k, 0] = now
    rejlog[k, 1] = symbol
    rejlog[k, 2] = reason
    rejlog[k, 3] = cid
    g[G_REJLOG_N] += 1
    g[G_REJ_BASE + reason] += 1
    g[G_REJECTED] += 1


@njit(cache=True, nogil=True)
def _rate_ok(rates, g, limit, window_ns, now):
    """Sliding window: fewer than `limit` accepted orders in (now - window, now]."""
    n = g[G_RATE_N]
    if n < limit:
        return True
    return rates[(n - limit) % RATE_CAP] <= now - window_ns


@njit(cache=True, nogil=True)
def add_open_order(sym, oo, cid, s, side, ro, remaining, price, flags):
    for k in range(oo.shape[0]):
        if oo[k, O_CID] == 0.0:
            oo[k, O_CID] = cid
            oo[k, O_SYM] = s
            oo[k, O_SIDE] = side
            oo[k, O_RO] = ro
            oo[k, O_REMAIN] = remaining
            oo[k, O_PRICE] = price
            oo[k, O_FLAGS] = flags
            _open_add(sym, s, side, ro, remaining, 1.0)
            return k
    return -1


@njit(cache=True, nogil=True)
def _open_add(sym, s, side, ro, qty, count):
    if side == SIDE_BUY:
        sym[s, S_OPEN_BUY] += qty
        if ro:
            sym[s, S_OPEN_RO_BUY] += qty
    else:
        sym[s, S_OPEN_SELL] += qty
        if ro:
            sym[s, S_OPEN_RO_SELL] += qty
    sym[s, S_OPEN_COUNT] += count


@njit(cache=True, nogil=True)
def find_open(oo, cid):
    for k in range(oo.shape[0]):
        if oo[k, O_CID] == cid:
            return k
    return -1


@njit(cache=True, nogil=True)
def _worst(sym, s):
    """Largest |position| this symbol can reach if every open order fills."""
    a = abs(sym[s, S_POS] + sym[s, S_OPEN_BUY])
    b = abs(sym[s, S_POS] - sym[s, S_OPEN_SELL])
    return a if a > b else b


@njit(cache=True, nogil=True)
def _ref_px(sym, s):
    return sym[s, S_MID] if sym[s, S_MID] > 0.0 else sym[s, S_MARK]


@njit(cache=True, nogil=True)
def assess_new(rk, req, now):
    """The verdict on one ACTION_NEW request, recording nothing: 0 (it would be accepted) or a reason code.

    Reads req.symbol/side/order_type/tif/reduce_only/flags/price/qty and the risk state; only when the verdict is 0
    it writes the order as it would leave into req: qty_steps, qty, price_ticks, price (rounded; rounding never makes
    an order more aggressive or bigger than asked) and reduce_only (REDUCING may set it). check_new records what it
    decides; the Brain also runs it alone on its last order while the market is quiet (pipeline.warm_signal_path),
    so that the next real check finds its code and the risk state in the caches."""
    sym, g, gf, rates = rk.sym, rk.g, rk.gf, rk.rates
    s = req.symbol
    flatten = (req.flags & REQ_FLAG_FLATTEN) != 0
    if s < 0 or s >= sym.shape[0] or sym[s, S_TICK] <= 0.0:
        return R_UNKNOWN_SYMBOL
    state = g[G_STATE]
    if state == HALTED and not flatten:
        return R_HALTED
    if req.side != SIDE_BUY and req.side != SIDE_SELL:
        return R_BAD_REQUEST
    is_mkt = req.order_type == ORDER_MARKET
    if not is_mkt and (req.order_type != ORDER_LIMIT or req.tif < TIF_GTC or req.tif > TIF_GTX):
        return R_BAD_REQUEST
    if sym[s, S_TRADING] == 0.0:
        return R_NOT_TRADING
    ref = _ref_px(sym, s)
    if ref <= 0.0:
        return R_NO_MARKET
    if not flatten and g[G_MAX_MD_AGE_NS] > 0 and now - np.int64(sym[s, S_MD_TS]) > g[G_MAX_MD_AGE_NS]:
        return R_STALE
    pos = sym[s, S_POS]
    ro = req.reduce_only != 0 or flatten
    buy = req.side == SIDE_BUY
    # REDUCING: only orders that shrink |position| pass, and they become reduce-only so they can never flip it
    if state == REDUCING and not ro:
        if (buy and pos < 0.0) or ((not buy) and pos > 0.0):
            ro = True
        else:
            return R_REDUCING
    # --- rounding to integer units
    step = sym[s, S_MKT_STEP] if is_mkt else sym[s, S_STEP]
    qty = req.qty
    if flatten:   # the whole position: the halt cancels the resting reduce-only exits just before (halt_requests)
        room = -pos if buy else pos
        if room <= 0.0:
            return R_REDUCE_ONLY
        if qty > room:
            qty = room
    elif ro:   # reduce-only: never more than the position not already covered by open reduce-only orders
        room = (-pos - sym[s, S_OPEN_RO_BUY]) if buy else (pos - sym[s, S_OPEN_RO_SELL])
        if room <= 0.0:
            return R_REDUCE_ONLY
        if qty > room:
            qty = room
    if not qty > 0.0:
        return R_QTY_BELOW_STEP
    steps = np.int64(math.floor(qty / step + EPS))
    if steps <= 0:
        return R_QTY_BELOW_STEP
    q = steps * step
    tick = sym[s, S_TICK]
    ticks = np.int64(0)
    px = 0.0
    if not is_mkt:
        if not req.price > 0.0:
            return R_PRICE_FILTER
        x = req.price / tick
        ticks = np.int64(math.floor(x + EPS)) if buy else np.int64(math.ceil(x - EPS))
        px = ticks * tick
        if ticks <= 0 or (sym[s, S_MIN_PRICE] > 0.0 and px < sym[s, S_MIN_PRICE] - 0.5 * tick) \
                or (sym[s, S_MAX_PRICE] > 0.0 and px > sym[s, S_MAX_PRICE] + 0.5 * tick):
            return R_PRICE_FILTER
    # --- exchange filters
    mn = sym[s, S_MKT_MIN_QTY] if is_mkt else sym[s, S_MIN_QTY]
    mx = sym[s, S_MKT_MAX_QTY] if is_mkt else sym[s, S_MAX_QTY]
    if q < mn - 0.5 * step:
        return R_MIN_QTY
    if mx > 0.0 and q > mx + 0.5 * step:
        return R_MAX_QTY
    npx = ref if is_mkt else px
    if sym[s, S_MARK] > 0.0 and is_mkt:
        npx = sym[s, S_MARK]        # Binance checks a MARKET order's notional at the mark price
    notional = npx * q
    if not ro and notional < sym[s, S_MIN_NOTIONAL] * (1.0 - 1e-12):
        return R_MIN_NOTIONAL
    if not is_mkt:
        mark = sym[s, S_MARK] if sym[s, S_MARK] > 0.0 else ref
        if (buy and px > mark * sym[s, S_MULT_UP] * (1.0 + 1e-12)) or \
                ((not buy) and px < mark * sym[s, S_MULT_DOWN] * (1.0 - 1e-12)):
            return R_PERCENT_PRICE
        band = gf[GF_BAND]
        if band > 0.0 and not flatten and sym[s, S_MID] > 0.0 and abs(px - sym[s, S_MID]) > band * sym[s, S_MID]:
            return R_PRICE_BAND
    # --- our order limits
    if sym[s, S_LIM_ORDER_QTY] > 0.0 and q > sym[s, S_LIM_ORDER_QTY] * (1.0 + 1e-12) and not flatten:
        return R_ORDER_QTY
    if sym[s, S_LIM_ORDER_NOTIONAL] > 0.0 and notional > sym[s, S_LIM_ORDER_NOTIONAL] * (1.0 + 1e-12) \
            and not flatten:
        return R_ORDER_NOTIONAL
    # --- position and gross limits (reduce-only orders cannot increase exposure: exempt)
    if not ro:
        proj = abs(pos + sym[s, S_OPEN_BUY] + q) if buy else abs(pos - sym[s, S_OPEN_SELL] - q)
        cur = _worst(sym, s)
        if proj < cur:
            proj = cur
        if sym[s, S_LIM_POS_QTY] > 0.0 and proj > sym[s, S_LIM_POS_QTY] * (1.0 + 1e-12):
            return R_POSITION_QTY
        if sym[s, S_LIM_POS_NOTIONAL] > 0.0 and proj * ref > sym[s, S_LIM_POS_NOTIONAL] * (1.0 + 1e-12):
            return R_POSITION_NOTIONAL
        if gf[GF_MAX_GROSS] > 0.0:
            gross = proj * ref
            for j in range(sym.shape[0]):
                if j != s:
                    gross += _worst(sym, j) * _ref_px(sym, j)
            if gross > gf[GF_MAX_GROSS] * (1.0 + 1e-12):
                return R_GROSS_NOTIONAL
    if sym[s, S_OPEN_COUNT] >= sym[s, S_MAX_NUM_ORDERS] and not flatten:   # flatten: the exits are being cancelled
        return R_MAX_OPEN_ORDERS
    # --- order-rate windows, last: a refused order must not use up the budget
    if not flatten and not _rate_ok(rates, g, g[G_RATE_OURS], ONE_S, now):
        return R_RATE_OURS
    if not _rate_ok(rates, g, g[G_RATE_10S], 10 * ONE_S, now):
        return R_RATE_10S
    if not _rate_ok(rates, g, g[G_RATE_1M], 60 * ONE_S, now):
        return R_RATE_1M
    if find_open(rk.oo, 0) < 0:      # no free slot in the open-order table
        return R_OPEN_TABLE_FULL
    req.qty_steps = steps
    req.qty = q
    req.price_ticks = ticks
    req.price = px
    req.reduce_only = 1 if ro else 0
    return R_OK


@njit(cache=True, nogil=True)
def check_new(rk, req, now):
    """Validate one ACTION_NEW request in place (assess_new) and record the verdict; returns 0 (accepted) or a reason
    code. On acceptance req also gets its client_id and risk_ts, and the order is open and counted in the rate
    windows; a refusal is counted and logged, and leaves req as it was."""
    sym, g, oo, rates, rejlog = rk.sym, rk.g, rk.oo, rk.rates, rk.rejlog
    s = req.symbol
    verdict = assess_new(rk, req, now)
    if verdict != R_OK:
        return _reject(sym, g, rejlog, s, verdict, 0, now)
    cid = g[G_NEXT_CID]
    if add_open_order(sym, oo, cid, s, req.side, np.int64(req.reduce_only), req.qty, req.price, req.flags) < 0:
        return _reject(sym, g, rejlog, s, R_OPEN_TABLE_FULL, 0, now)
    g[G_NEXT_CID] = cid + 1
    rates[g[G_RATE_N] % RATE_CAP] = now
    g[G_RATE_N] += 1
    g[G_ACCEPTED] += 1
    req.client_id = cid
    req.action = ACTION_NEW
    req.risk_ts = now
    return R_OK


@njit(cache=True, nogil=True)
def check_cancel(rk, req, now):
    """ACTION_CANCEL of req.target_id: allowed in every state when the order is open; 0 or R_UNKNOWN_ORDER."""
    sym, g, oo, rejlog = rk.sym, rk.g, rk.oo, rk.rejlog
    k = find_open(oo, req.target_id)
    if k < 0:
        return _reject(sym, g, rejlog, req.symbol, R_UNKNOWN_ORDER, req.target_id, now)
    req.symbol = np.int32(oo[k, O_SYM])
    req.action = ACTION_CANCEL
    req.risk_ts = now
    return R_OK


@njit(cache=True, nogil=True)
def check(rk, req, now):
    """Dispatch on req.action (CANCEL / CANCEL_ALL / NEW)."""
    if req.action == ACTION_CANCEL:
        return check_cancel(rk, req, now)
    if req.action == ACTION_CANCEL_ALL:
        req.risk_ts = now
        return R_OK
    return check_new(rk, req, now)


# --------------------------------------------------------------------------------------------- market + fills
@njit(cache=True, nogil=True)
def on_quote(rk, s, bid, ask, ts_ns):
    sym = rk.sym
    if 0 <= s < sym.shape[0] and bid > 0.0 and ask > 0.0:
        sym[s, S_MID] = 0.5 * (bid + ask)
        sym[s, S_MD_TS] = ts_ns


@njit(cache=True, nogil=True)
def on_market_batch(rk, records, n, now):
    """Update mids/marks from a batch of MARKET records; then check the daily loss limit (unrealized PnL moves)."""
    sym, g, gf = rk.sym, rk.g, rk.gf
    for i in range(n):
        r = records[i]
        s = r.symbol
        if s < 0 or s >= sym.shape[0]:
            continue
        if r.kind == KIND_QUOTE or r.kind == KIND_BOOK:
            if r.bid_px > 0.0 and r.ask_px > 0.0:
                sym[s, S_MID] = 0.5 * (r.bid_px + r.ask_px)
                sym[s, S_MD_TS] = r.recv_ts if r.recv_ts > 0 else now
        elif r.kind == KIND_MARK and r.px > 0.0:
            sym[s, S_MARK] = r.px
    if n > 0:
        roll_day(g, gf, sym, records[n - 1].exch_ts)
        _daily_loss(sym, g, gf, now)


@njit(cache=True, nogil=True)
def total_pnl(sym, gf):
    """Realized + unrealized - fees, quote currency."""
    u = 0.0
    for s in range(sym.shape[0]):
        p = sym[s, S_POS]
        ref = _ref_px(sym, s)
        if p != 0.0 and ref > 0.0:
            u += p * (ref - sym[s, S_AVG_PX])
    return gf[GF_REALIZED] + u - gf[GF_FEES]


@njit(cache=True, nogil=True)
def roll_day(g, gf, sym, exch_ts_ns):
    if exch_ts_ns <= 0:
        return
    day = exch_ts_ns // NS_PER_DAY
    if day != g[G_DAY]:
        g[G_DAY] = day
        gf[GF_DAY_BASE] = total_pnl(sym, gf)


@njit(cache=True, nogil=True)
def set_state(g, state, why, now):
    """Move to a trading state; entering HALTED arms halt_requests (cancel everything, maybe flatten)."""
    if state == HALTED and g[G_STATE] != HALTED:
        g[G_HALT_PENDING] = 1
    g[G_STATE] = state
    g[G_STATE_REASON] = why
    g[G_STATE_TS] = now


@njit(cache=True, nogil=True)
def kill(g, now):
    """The manual kill switch."""
    set_state(g, HALTED, WHY_KILL_SWITCH, now)


@njit(cache=True, nogil=True)
def check_daily_loss(rk, now):
    sym, g, gf = rk.sym, rk.g, rk.gf
    return _daily_loss(sym, g, gf, now)


@njit(cache=True, nogil=True)
def _daily_loss(sym, g, gf, now):
    lim = gf[GF_DAILY_LOSS]
    if lim > 0.0 and g[G_STATE] != HALTED and total_pnl(sym, gf) - gf[GF_DAY_BASE] < -lim:
        set_state(g, HALTED, WHY_DAILY_LOSS, now)
        return True
    return False


@njit(cache=True, nogil=True)
def on_fill(rk, fill, now):
    """Apply one FILL record (trade or final state change): position, average price, realized PnL, fees, open
    orders. The caller dedupes fills by (order_id, trade_id) before this (aegis.trade.userstream does)."""
    sym, g, gf, oo, rejlog = rk.sym, rk.g, rk.gf, rk.oo, rk.rejlog
    s = fill.symbol
    if s < 0 or s >= sym.shape[0]:
        return
    if fill.status == STATUS_SNAPSHOT:     # the exchange's word after reconciliation: adopt it
        sym[s, S_POS] = fill.qty
        sym[s, S_AVG_PX] = fill.price if fill.qty != 0.0 else 0.0
        return
    k = find_open(oo, fill.client_id) if fill.client_id > 0 else -1
    if fill.status == STATUS_REJECTED and fill.qty == 0.0:
        _count_reject(g, rejlog, s, R_EXCHANGE_REJECT, fill.client_id, now)
    q = fill.qty
    if q > 0.0:
        g[G_FILLS] += 1
        signed = q if fill.side == SIDE_BUY else -q
        pos = sym[s, S_POS]
        avg = sym[s, S_AVG_PX]
        if pos == 0.0 or (pos > 0.0) == (signed > 0.0):
            new = pos + signed
            sym[s, S_AVG_PX] = (avg * abs(pos) + fill.price * q) / abs(new)
            sym[s, S_POS] = new
        else:
            closed = q if q < abs(pos) else abs(pos)
            pnl = (fill.price - avg) * closed * (1.0 if pos > 0.0 else -1.0)
            sym[s, S_REALIZED] += pnl
            gf[GF_REALIZED] += pnl
            new = pos + signed
            if abs(new) < 1e-12:
                new = 0.0
                sym[s, S_AVG_PX] = 0.0
            elif (new > 0.0) != (pos > 0.0):
                sym[s, S_AVG_PX] = fill.price     # flipped: the remainder opened at this price
            sym[s, S_POS] = new
        sym[s, S_FEES] += fill.fee
        gf[GF_FEES] += fill.fee
        if k >= 0:
            dq = q if q < oo[k, O_REMAIN] else oo[k, O_REMAIN]
            oo[k, O_REMAIN] -= dq
            _open_add(sym, s, np.int64(oo[k, O_SIDE]), np.int64(oo[k, O_RO]), -dq, 0.0)
    st = fill.status
    if k >= 0 and (st == STATUS_FILLED or st == STATUS_CANCELED or st == STATUS_EXPIRED or st == STATUS_REJECTED):
        _open_add(sym, s, np.int64(oo[k, O_SIDE]), np.int64(oo[k, O_RO]), -oo[k, O_REMAIN], -1.0)
        for c in range(O_COLS):
            oo[k, c] = 0.0
    _daily_loss(sym, g, gf, now)


@njit(cache=True, nogil=True)
def on_fill_batch(rk, fills, n, now):
    for i in range(n):
        on_fill(rk, fills[i], now)


@njit(cache=True, nogil=True)
def halt_requests(rk, out, now):
    """After entering HALTED: write one CANCEL_ALL per symbol with open orders and, when flatten_on_halt, a
    reduce-only MARKET order (REQ_FLAG_FLATTEN) per open position into `out`; returns how many. The flatten
    orders still go through check_new (rounding, MARKET_LOT_SIZE) before they are sent."""
    sym, g = rk.sym, rk.g
    if g[G_HALT_PENDING] == 0:
        return 0
    g[G_HALT_PENDING] = 0
    n = 0
    for s in range(sym.shape[0]):
        if n >= out.shape[0]:
            break
        if sym[s, S_OPEN_COUNT] > 0:
            r = out[n]
            r.action = ACTION_CANCEL_ALL
            r.symbol = s
            r.client_id = 0
            r.risk_ts = now
            n += 1
    if g[G_FLATTEN_ON_HALT] != 0:
        for s in range(sym.shape[0]):
            if n >= out.shape[0]:
                break
            p = sym[s, S_POS]
            if p != 0.0:
                r = out[n]
                r.action = ACTION_NEW
                r.symbol = s
                r.side = SIDE_SELL if p > 0.0 else SIDE_BUY
                r.order_type = ORDER_MARKET
                r.tif = 0
                r.reduce_only = 1
                r.flags = REQ_FLAG_FLATTEN
                r.qty = abs(p)
                r.price = 0.0
                n += 1
    return n
