"""Matching, accounts and positions of the embedded venue — pure logic, no HTTP.

Orders match against the venue's generated market (market.book_levels / best / mark_price): a taker sweeps the
book levels it crosses; an order left resting is filled (as maker, at its own price) when a later tick crosses it.
The generated book is not depleted by our fills: the market is synthetic and consuming it would make prices drift
with the test's own trading. Orders of one account never match each other.

Money is Decimal throughout: PnL, fees and wallet balances must add up to the cent in tests and in a client's
reconciliation, and order placement is not the venue's hot path (the market-data firehose is). A new order's margin
check reads per-account running totals (Ledger), kept exact as positions, open orders, leverage and mark prices change,
so it costs the same with one position as with hundreds.

Every call that changes an account emits user-data events (dicts shaped as Binance sends them) to the listeners
of that account, in Binance's order (docs/binance-notes.md, User data events). Listeners run under the exchange lock and
must not block.
"""
from __future__ import annotations

import collections
import random
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Context, Decimal, Inexact, \
    InvalidOperation
from math import lcm
from typing import Callable, Iterable, Mapping

from aegis.binance.keys import EMBEDDED_KEY as DEFAULT_API_KEY, EMBEDDED_SECRET as DEFAULT_API_SECRET
from aegis.venue.catalog import SymbolSpec, by_symbol, default_catalog, margin_assets

ZERO = Decimal(0)
_Q8 = Decimal("0.00000001")
_CID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_DEC_RE = re.compile(r"^-?(\d+\.?\d*|\.\d+)$")
_CID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_CONDITIONAL = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})
_TIFS = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"})
_OPEN = frozenset({"NEW", "PARTIALLY_FILLED"})
# The margin totals (Ledger) add and take back terms at unlimited precision: sums and products of finite decimals are
# then exact, so a total is exactly the sum of what is held now however long the venue runs, with no drift. They never
# divide; Inexact traps a division slipped in, which would otherwise try to compute infinitely many digits.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact])
# A margin figure is its exact value rounded once, to the default context's 28 digits.
_FIGURE = Context()
GTX_REJECT_MSG = ("Due to the order could not be executed as maker, the Post Only order will be rejected. "
                  "The order will not be recorded in the order history")


class VenueError(Exception):
    """A Binance error reply: HTTP status plus {"code":..,"msg":..}."""

    def __init__(self, code: int, msg: str, http_status: int = 400, headers: Mapping[str, str] | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status
        self.headers = dict(headers or {})


def mandatory(name: str) -> VenueError:
    return VenueError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def side_and_type(p: Mapping[str, str]) -> tuple[str, str]:
    """The side and type of an order request (regular or algo), checked as Binance checks them first."""
    side = p.get("side")
    if not side:
        raise mandatory("side")
    if side not in ("BUY", "SELL"):
        raise VenueError(-1117, "Invalid side.")
    otype = p.get("type")
    if not otype:
        raise mandatory("type")
    return side, otype


def not_required(name: str) -> VenueError:
    return VenueError(-1106, f"Parameter '{name}' sent when not required.")


@dataclass(frozen=True)
class ExchangeConfig:
    api_keys: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET})
    initial_balances: Mapping[str, str] = field(default_factory=lambda: {"USDT": "10000", "USDC": "10000"})
    maker_fee: str = "0.0002"
    taker_fee: str = "0.0005"
    leverage: int = 20
    maint_margin_rate: str = "0.004"
    book_depth: int = 50                 # levels a taker may sweep
    liquidity_scale: float = 1.0         # <1 thins every book level the exchange sees -> partial fills
    # "specific": -4014/-4023; "generic": -1013 "Filter failure: ..." (docs/binance-notes.md, New order)
    filter_errors: str = "specific"
    listen_key_validity_s: float = 3600.0
    max_order_history: int = 200_000    # closed orders kept queryable per account (a long paper run stays bounded)
    seed: int = 7
    timer_period_s: float = 0.01         # countdownCancelAll / funding checks (Binance checks countdowns ~every 10 ms)


class OrderPathFaults:
    """Test knobs the REST/ws-api order paths consult before handling an order request.

    fail_next(n, kind): the next n order requests answer HTTP 503; kind "unknown" still EXECUTES the order (Binance's
    "execution status unknown"), "unavailable"/"internal"/"throttled" do not.
    delay_next(n, seconds, execute=True): the next n order requests sleep first (a client read timeout); the order
    is executed afterwards unless execute=False.
    """
    _KINDS = {
        "unknown": (-1000, "Unknown error, please check your request or try again later.", True),
        "unavailable": (-1000, "Service Unavailable.", False),
        "internal": (-1001, "Internal error; unable to process your request. Please try again.", False),
        "throttled": (-1008, "Request throttled by system-level protection. Reduce-only/close-position orders are "
                             "exempt. Please try again.", False),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail: list[str] = []
        self._delay: list[tuple[float, bool]] = []

    def fail_next(self, n: int = 1, kind: str = "unknown") -> None:
        if kind not in self._KINDS:
            raise ValueError(f"unknown 503 kind {kind!r}; choose one of {sorted(self._KINDS)}")
        with self._lock:
            self._fail.extend([kind] * n)

    def delay_next(self, n: int = 1, seconds: float = 5.0, execute: bool = True) -> None:
        with self._lock:
            self._delay.extend([(seconds, execute)] * n)

    def clear(self) -> None:
        with self._lock:
            self._fail.clear()
            self._delay.clear()

    def take(self) -> tuple[float, bool, VenueError | None]:
        """(delay_s, execute, error_after) for the next order request."""
        with self._lock:
            delay, execute = self._delay.pop(0) if self._delay else (0.0, True)
            kind = self._fail.pop(0) if self._fail else None
        if kind is None:
            return delay, execute, None
        code, msg, runs = self._KINDS[kind]
        return delay, execute and runs, VenueError(code, msg, 503)


class Order:
    _FIELDS = ("order_id", "symbol", "spec", "client_id", "side", "type", "tif", "price", "orig_qty",
               "executed_qty", "cum_quote", "reduce_only", "status", "time", "update_time", "position_side",
               "price_match", "stp", "gtd", "account", "sent_new", "liquidation")
    __slots__ = tuple(f for f in _FIELDS if f not in ("price", "orig_qty", "executed_qty")) + (
        "_price", "_orig_qty", "_executed_qty", "exposure")

    def __init__(self, **kw):
        # set while the order rests and can grow a position: its notional is in that Exposure's open-order total
        self.exposure: Exposure | None = None
        for k in self._FIELDS:
            setattr(self, k, kw.get(k))

    # price, orig_qty and executed_qty are what a resting order's margin is made of: a change moves the total with it
    @property
    def price(self) -> Decimal:
        return self._price

    @price.setter
    def price(self, v: Decimal) -> None:
        e = self.exposure
        if e is not None:
            e.order_notional(_EXACT.multiply(self._open_qty(), _EXACT.subtract(v, self._price)))
        self._price = v

    @property
    def orig_qty(self) -> Decimal:
        return self._orig_qty

    @orig_qty.setter
    def orig_qty(self, v: Decimal) -> None:
        e = self.exposure
        if e is not None:
            e.order_notional(_EXACT.multiply(_EXACT.subtract(v, self._orig_qty), self._price))
        self._orig_qty = v

    @property
    def executed_qty(self) -> Decimal:
        return self._executed_qty

    @executed_qty.setter
    def executed_qty(self, v: Decimal) -> None:
        e = self.exposure
        if e is not None:
            e.order_notional(_EXACT.multiply(_EXACT.subtract(self._executed_qty, v), self._price))
        self._executed_qty = v

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def _open_qty(self) -> Decimal:
        return _EXACT.subtract(self._orig_qty, self._executed_qty)

    def open_notional(self) -> Decimal:
        """remaining * price, exact: what the order adds to its Exposure's open-order total while it rests."""
        return _EXACT.multiply(self._open_qty(), self._price)

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def reduces(self) -> bool:
        """The order can only make its position smaller: reduce-only, or (hedge mode) a SELL of the LONG side or a
        BUY of the SHORT side."""
        return self.reduce_only or (self.position_side == "LONG" and self.side == "SELL") or (
            self.position_side == "SHORT" and self.side == "BUY")


class Position:
    """One position: (symbol, BOTH) in one-way mode, (symbol, LONG) and (symbol, SHORT) in hedge mode. amt is signed
    (a SHORT position's amount is negative, as Binance prints it).

    iso is the isolated wallet when the symbol's margin type is ISOLATED: the initial margin moved out of the cross
    wallet when the position grew, plus positionMargin additions, less reductions; the position's realized PnL
    settles into it and a close releases the closed share back to the cross wallet. Fees are paid from the cross
    wallet. The account's wallet balance is the total; its cross wallet is the total less every isolated wallet."""
    __slots__ = ("symbol", "side", "_amt", "_entry", "realized", "update_time", "_iso", "margin_call", "exposure")

    def __init__(self, symbol: str = "", side: str = "BOTH", exposure: Exposure | None = None) -> None:
        self.symbol = symbol
        self.side = side
        self._amt = ZERO
        self._entry = ZERO
        self.realized = ZERO      # `cr`: pre-fee accumulated realized PnL
        self.update_time = 0
        self._iso = ZERO
        self.margin_call = False  # a MARGIN_CALL was pushed and the margin has not recovered since
        self.exposure = exposure  # None for a row of nothing held (positionRisk of an untouched symbol)

    # amt, entry and iso are what the account's margin totals are made of: every change moves the totals with it
    @property
    def amt(self) -> Decimal:
        return self._amt

    @amt.setter
    def amt(self, v: Decimal) -> None:
        if self.exposure is not None:
            self.exposure.position(self._amt, self._entry, v, self._entry)
        self._amt = v

    @property
    def entry(self) -> Decimal:
        return self._entry

    @entry.setter
    def entry(self, v: Decimal) -> None:
        if self.exposure is not None:
            self.exposure.position(self._amt, self._entry, self._amt, v)
        self._entry = v

    @property
    def iso(self) -> Decimal:
        return self._iso

    @iso.setter
    def iso(self, v: Decimal) -> None:
        if self.exposure is not None:
            led = self.exposure.ledger
            led.iso_wallet = _EXACT.add(led.iso_wallet, _EXACT.subtract(v, self._iso))
        self._iso = v


def _add_to(buckets: dict[Decimal, Decimal], lev: Decimal, x: Decimal) -> None:
    if x:
        v = _EXACT.add(buckets.get(lev, ZERO), x)
        if v:
            buckets[lev] = v
        else:      # an empty bucket would still count in the common denominator of every figure
            del buckets[lev]


class Ledger:
    """One account's running margin totals in one margin asset, so that a new order's margin check costs the same
    with one position or a thousand positions and open orders. Exact (_EXACT); index 0 of a pair is the cross
    positions, 1 the isolated ones. Initial margin is a notional over the leverage: the notionals are kept per
    leverage and divided only when a figure is asked for."""
    __slots__ = ("iso_wallet", "cost", "mark_amt", "notional", "orders")

    def __init__(self) -> None:
        self.iso_wallet = ZERO                  # the isolated wallets
        self.cost = [ZERO, ZERO]                # amt * entry
        self.mark_amt = [ZERO, ZERO]            # amt * mark
        self.notional: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] = ({}, {})   # leverage -> |amt| * mark
        self.orders: dict[Decimal, Decimal] = {}    # leverage -> remaining * price of open orders that can grow

    def unrealized(self, k: int) -> Decimal:
        """Exact unrealized PnL of the cross (0) or isolated (1) positions."""
        return _EXACT.subtract(self.mark_amt[k], self.cost[k])

    @staticmethod
    def figure(base: Decimal, sign: int, *buckets: dict[Decimal, Decimal]) -> Decimal:
        """base + sign * the sum of notional / leverage over the buckets, rounded once: over a common denominator
        the numerator is exact."""
        if not any(buckets):
            return _FIGURE.plus(base)
        den = lcm(*(int(lev) for b in buckets for lev in b))
        num = _EXACT.multiply(base, den)
        for b in buckets:
            for lev, v in b.items():
                num = _EXACT.add(num, _EXACT.multiply(v, sign * (den // int(lev))))
        return _FIGURE.divide(num, Decimal(den))


class Exposure:
    """What one account holds in one symbol as its Ledger counts it: the symbol's positions (sum and absolute sum of
    their amounts, amt * entry) and the notional of its open orders that can grow a position, with the leverage,
    margin type and mark price they are counted at."""
    __slots__ = ("ledger", "lev", "k", "mark", "amt", "abs_amt", "cost", "orders")

    def __init__(self, ledger: Ledger, lev: Decimal, isolated: bool, mark: Decimal) -> None:
        self.ledger = ledger
        self.lev = lev
        self.k = 1 if isolated else 0
        self.mark = mark
        self.amt = ZERO
        self.abs_amt = ZERO
        self.cost = ZERO
        self.orders = ZERO

    def position(self, amt0: Decimal, entry0: Decimal, amt1: Decimal, entry1: Decimal) -> None:
        led, k = self.ledger, self.k
        d_cost = _EXACT.subtract(_EXACT.multiply(amt1, entry1), _EXACT.multiply(amt0, entry0))
        self.cost = _EXACT.add(self.cost, d_cost)
        led.cost[k] = _EXACT.add(led.cost[k], d_cost)
        d_amt = _EXACT.subtract(amt1, amt0)
        if d_amt:
            self.amt = _EXACT.add(self.amt, d_amt)
            led.mark_amt[k] = _EXACT.add(led.mark_amt[k], _EXACT.multiply(self.mark, d_amt))
            d_abs = _EXACT.subtract(abs(amt1), abs(amt0))
            self.abs_amt = _EXACT.add(self.abs_amt, d_abs)
            _add_to(led.notional[k], self.lev, _EXACT.multiply(self.mark, d_abs))

    def order_notional(self, d: Decimal) -> None:
        self.orders = _EXACT.add(self.orders, d)
        _add_to(self.ledger.orders, self.lev, d)

    def remark(self, mark: Decimal) -> None:
        led, k = self.ledger, self.k
        d = _EXACT.subtract(mark, self.mark)
        led.mark_amt[k] = _EXACT.add(led.mark_amt[k], _EXACT.multiply(d, self.amt))
        _add_to(led.notional[k], self.lev, _EXACT.multiply(d, self.abs_amt))
        self.mark = mark

    def relever(self, lev: Decimal) -> None:
        led = self.ledger
        pos = _EXACT.multiply(self.mark, self.abs_amt)
        _add_to(led.notional[self.k], self.lev, -pos)
        _add_to(led.notional[self.k], lev, pos)
        _add_to(led.orders, self.lev, -self.orders)
        _add_to(led.orders, lev, self.orders)
        self.lev = lev

    def set_isolated(self, isolated: bool) -> None:
        led, k0, k1 = self.ledger, self.k, 1 if isolated else 0
        if k0 == k1:
            return
        pos = _EXACT.multiply(self.mark, self.abs_amt)
        mark_amt = _EXACT.multiply(self.mark, self.amt)
        for k, sign in ((k0, -1), (k1, 1)):
            led.cost[k] = _EXACT.add(led.cost[k], _EXACT.multiply(self.cost, sign))
            led.mark_amt[k] = _EXACT.add(led.mark_amt[k], _EXACT.multiply(mark_amt, sign))
            _add_to(led.notional[k], self.lev, _EXACT.multiply(pos, sign))
        self.k = k1


class Account:
    def __init__(self, key: str, balances: Mapping[str, str], assets: Iterable[str], created_ms: int = 0):
        self.key = key
        self.created_ms = created_ms
        self.wallet: dict[str, Decimal] = {a: Decimal(balances.get(a, "0")) for a in assets}
        self.ledgers: dict[str, Ledger] = {a: Ledger() for a in self.wallet}    # margin asset -> running totals
        self.exposures: dict[str, Exposure] = {}                  # symbol -> what the ledger counts of it
        self.positions: dict[tuple[str, str], Position] = {}     # (symbol, BOTH | LONG | SHORT)
        self.open_orders: dict[str, dict[int, Order]] = {}
        self.orders: dict[str, dict[int, Order]] = {}          # every accepted order, for GET /fapi/v1/order
        self.by_cid: dict[str, dict[str, Order]] = {}           # symbol -> clientOrderId -> latest order
        self.listeners: list[Callable[[dict], None]] = []
        # a fresh balance was last updated when the account was created (clients skip rows with updateTime 0)
        self.update_time = created_ms
        self.closed: collections.deque[Order] = collections.deque()
        self.leverage: dict[str, Decimal] = {}
        self.trades: collections.deque[dict] = collections.deque()
        self.income: collections.deque[dict] = collections.deque()
        self.margin_type: dict[str, str] = {}           # symbol -> "ISOLATED" (absent: "CROSSED")
        self.dual_side = False                          # hedge mode (positionSide/dual)
        self.multi_assets = False
        self.liquidations: collections.deque[Order] = collections.deque(maxlen=1000)   # GET /fapi/v1/forceOrders
        self.cross_margin_call: dict[str, bool] = {}    # asset -> a cross MARGIN_CALL was pushed, not yet recovered
        self.config_time = created_ms

    @property
    def sides(self) -> tuple[str, ...]:
        return ("LONG", "SHORT") if self.dual_side else ("BOTH",)

    def isolated(self, symbol: str) -> bool:
        return self.margin_type.get(symbol) == "ISOLATED"

    def cross_wallet(self, asset: str) -> Decimal:
        """The wallet balance less what isolated positions of this margin asset hold."""
        led = self.ledgers.get(asset)
        wallet = self.wallet.get(asset, ZERO)
        return wallet - led.iso_wallet if led is not None else wallet


# ---------------------------------------------------------------------------------------------- formatting


def fixed(d: Decimal, places: int) -> str:
    return format(d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP), "f") if places > 0 else \
        format(d.quantize(Decimal(1), rounding=ROUND_HALF_UP), "f")


def norm(d: Decimal) -> str:
    """Shortest decimal form, as Binance prints entry prices and position amounts ("91739.9", "0", "30")."""
    if d == 0:
        return "0"
    s = format(d.normalize(), "f")
    return s


def pnorm(d: Decimal) -> str:
    """An averaged price (entry, break-even, liquidation): at most 8 decimals, shortest form."""
    return norm(d.quantize(_Q8, rounding=ROUND_HALF_UP))


def q8(d: Decimal) -> str:
    return fixed(d, 8)


def _price(spec: SymbolSpec, d: Decimal) -> str:
    return fixed(d, spec.price_precision)


def _qty(spec: SymbolSpec, d: Decimal) -> str:
    return fixed(d, spec.quantity_precision)


def _quote_places(spec: SymbolSpec) -> int:
    # live replies pad avgPrice/cumQuote to 5 decimals, or to the price precision when that is larger
    # (docs/binance-notes.md, New order)
    return max(spec.price_precision, 5)


def order_json(o: Order, kind: str = "order") -> dict:
    """Order object as POST/DELETE/GET /fapi/v1/order return it; kind "open" is the openOrders element."""
    spec = o.spec
    avg = o.avg_price
    d = {
        "orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
        "price": _price(spec, o.price) if o.type == "LIMIT" else "0",
        "avgPrice": fixed(avg, _quote_places(spec)) if avg else "0.00",
        "origQty": _qty(spec, o.orig_qty), "executedQty": _qty(spec, o.executed_qty),
        "cumQty": _qty(spec, o.executed_qty), "cumQuote": fixed(o.cum_quote, _quote_places(spec)),
        "timeInForce": o.tif, "type": o.type, "reduceOnly": o.reduce_only, "closePosition": False,
        "side": o.side, "positionSide": o.position_side, "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "origType": o.type, "priceMatch": o.price_match, "selfTradePreventionMode": o.stp,
        "goodTillDate": o.gtd, "updateTime": o.update_time,
    }
    if kind == "open":
        del d["cumQty"]
        d["time"] = o.time
    elif kind == "query":
        d["time"] = o.time
    return d


# ---------------------------------------------------------------------------------------------- the exchange


class Exchange:
    def __init__(self, market, catalog: tuple[SymbolSpec, ...] | None = None, cfg: ExchangeConfig | None = None,
                 clock_ms: Callable[[], int] | None = None):
        self.market = market
        self.cfg = cfg or ExchangeConfig()
        self.catalog = tuple(catalog) if catalog is not None else default_catalog()
        self.specs = by_symbol(self.catalog)
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.faults = OrderPathFaults()
        self.lock = threading.RLock()
        self._rng = random.Random(self.cfg.seed)
        self._maker_fee = Decimal(self.cfg.maker_fee)
        self._taker_fee = Decimal(self.cfg.taker_fee)
        self._leverage = Decimal(self.cfg.leverage)
        self._mmr = Decimal(self.cfg.maint_margin_rate)
        self.liquidity_scale = float(self.cfg.liquidity_scale)
        self._next_order_id = {s.symbol: s.first_order_id for s in self.catalog}
        self._next_trade_id = {s.symbol: 1000 + (s.first_order_id // 3) for s in self.catalog}
        assets = margin_assets(self.catalog)
        self.created_ms = self.clock_ms()
        self.accounts: dict[str, Account] = {
            k: Account(k, self.cfg.initial_balances, assets, self.created_ms) for k in self.cfg.api_keys}
        self._tran_id = 9_689_000_000
        self._countdowns: dict[tuple[str, str], int] = {}      # (account, symbol) -> deadline (ms)
        self.funding_history: dict[str, collections.deque] = {s.symbol: collections.deque(maxlen=1000)
                                                              for s in self.catalog}
        self._next_funding_ms = self._funding_after(self.created_ms)
        self._next_liq_check_ms = self.created_ms
        # symbol -> resting orders of every account; the tick listener only looks at symbols present here
        self._resting: dict[str, dict[int, Order]] = {}
        self._bounds: dict[str, tuple[float, float, float]] = {}
        # the mark of each symbol an account holds or has resting orders in, as the margin totals count it (kept
        # by on_tick, so a figure costs nothing per position); with the float it came from
        self._marks: dict[str, tuple[float, Decimal]] = {}
        self._exposed: dict[str, list[Exposure]] = {}
        self._listen_keys: dict[str, tuple[str, float]] = {}   # listenKey -> (account key, expires_at_s)
        self._key_listeners: list[Callable[[str, str, dict], None]] = []
        self.force_order_listeners: list[Callable[[dict], None]] = []   # market-wide liquidation feed (forceOrder)
        if market is not None and hasattr(market, "add_tick_listener"):
            market.add_tick_listener(self.on_tick)
        from aegis.venue.algo import AlgoEngine   # it builds on this module: imported once the module exists
        # conditional orders; created after on_tick is registered, so resting fills of a tick come first
        self.algo = AlgoEngine(self)

    # ------------------------------------------------------------------------------------ accounts & events

    def account(self, key: str) -> Account:
        acc = self.accounts.get(key)
        if acc is None:
            raise VenueError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return acc

    def add_listener(self, key: str, fn: Callable[[dict], None]) -> None:
        with self.lock:
            self.account(key).listeners.append(fn)

    def remove_listener(self, key: str, fn: Callable[[dict], None]) -> None:
        with self.lock:
            acc = self.accounts.get(key)
            if acc is not None and fn in acc.listeners:
                acc.listeners.remove(fn)

    def emit(self, acc: Account, events: list[dict]) -> None:
        for ev in events:
            for fn in tuple(acc.listeners):
                fn(ev)

    def set_liquidity_scale(self, scale: float) -> None:
        """Thin (scale < 1) or thicken every book level the exchange sees; tests use it to force partial fills."""
        if scale <= 0:
            raise ValueError("liquidity scale must be > 0")
        self.liquidity_scale = float(scale)

    def deposit(self, key: str, asset: str, amount: str) -> None:
        with self.lock:
            acc = self.account(key)
            now = self.clock_ms()
            acc.wallet[asset] = acc.wallet.get(asset, ZERO) + Decimal(amount)
            acc.update_time = now
            self._income(acc, "", "TRANSFER", Decimal(amount), asset, now, None, info="TRANSFER")
            ev = {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {"B": [
                {"a": asset, "wb": q8(acc.wallet[asset]), "cw": q8(acc.wallet[asset]), "bc": q8(Decimal(amount))}],
                "P": [], "m": "DEPOSIT"}}
            self.emit(acc, [ev])

    # ------------------------------------------------------------------------------------ listen keys

    def listen_key_create(self, key: str) -> str:
        """One key per account: POST on an account with a live key returns it and extends it (Binance docs: "Start User
        Data Stream")."""
        with self.lock:
            self.account(key)
            now = time.monotonic()
            for lk, (owner, exp) in self._listen_keys.items():
                if owner == key and exp > now:
                    self._listen_keys[lk] = (owner, now + self.cfg.listen_key_validity_s)
                    return lk
            lk = "".join(self._rng.choice(_CID_ALPHABET) for _ in range(64))
            self._listen_keys[lk] = (key, now + self.cfg.listen_key_validity_s)
            return lk

    def _live_key_of(self, key: str) -> str | None:
        now = time.monotonic()
        for lk, (owner, exp) in self._listen_keys.items():
            if owner == key and exp > now:
                return lk
        return None

    def listen_key_keepalive(self, key: str, listen_key: str | None = None) -> str:
        with self.lock:
            lk = listen_key or self._live_key_of(key)
            entry = self._listen_keys.get(lk) if lk else None
            if entry is None or entry[0] != key or entry[1] <= time.monotonic():
                raise VenueError(-1125, "This listenKey does not exist.")
            self._listen_keys[lk] = (key, time.monotonic() + self.cfg.listen_key_validity_s)
            return lk

    def listen_key_delete(self, key: str, listen_key: str | None = None) -> None:
        with self.lock:
            lk = listen_key or self._live_key_of(key)
            entry = self._listen_keys.get(lk) if lk else None
            if entry is None or entry[0] != key:
                raise VenueError(-1125, "This listenKey does not exist.")
            del self._listen_keys[lk]
            for fn in tuple(self._key_listeners):    # DELETE closes the stream (event None: no announcement)
                fn(lk, key, None)

    def listen_key_owner(self, listen_key: str) -> str | None:
        """Account key of a live listenKey, else None."""
        with self.lock:
            entry = self._listen_keys.get(listen_key)
            if entry is None or entry[1] <= time.monotonic():
                return None
            return entry[0]

    def add_expiry_listener(self, fn: Callable[[str, str, dict], None]) -> None:
        """fn(listen_key, account_key, listenKeyExpired event) when a key expires; event None when deleted."""
        with self.lock:
            self._key_listeners.append(fn)

    def expire_listen_key(self, listen_key: str) -> bool:
        """Test knob: expire a key now (as if 60 minutes passed without keepalive)."""
        with self.lock:
            entry = self._listen_keys.get(listen_key)
            if entry is None:
                return False
            self._listen_keys[listen_key] = (entry[0], time.monotonic() - 1.0)
        self.expire_due_listen_keys()
        return True

    def expire_due_listen_keys(self) -> list[str]:
        """Drop every key past its validity and announce listenKeyExpired; called periodically by userdata."""
        with self.lock:
            now = time.monotonic()
            due = [(lk, owner) for lk, (owner, exp) in self._listen_keys.items() if exp <= now]
            for lk, owner in due:
                del self._listen_keys[lk]
                ev = {"e": "listenKeyExpired", "E": self.clock_ms(), "listenKey": lk}
                for fn in tuple(self._key_listeners):
                    fn(lk, owner, ev)
            return [lk for lk, _ in due]

    # ------------------------------------------------------------------------------------ validation helpers

    def spec(self, symbol: str | None) -> SymbolSpec:
        if not symbol:
            raise mandatory("symbol")
        spec = self.specs.get(symbol)
        if spec is None:
            raise VenueError(-1121, "Invalid symbol.")
        return spec

    def _filter_error(self, specific_code: int, specific_msg: str, filter_name: str) -> VenueError:
        if self.cfg.filter_errors == "generic":
            return VenueError(-1013, f"Filter failure: {filter_name}")
        return VenueError(specific_code, specific_msg)

    @staticmethod
    def decimal_param(params: Mapping[str, str], name: str) -> Decimal | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not _DEC_RE.match(raw):
            raise mandatory(name)
        try:
            return Decimal(raw)
        except InvalidOperation:
            raise mandatory(name) from None

    @staticmethod
    def places(d: Decimal) -> int:
        exp = d.normalize().as_tuple().exponent
        return -exp if isinstance(exp, int) and exp < 0 else 0

    def grid(self, px: float, step: Decimal) -> Decimal:
        return (Decimal(repr(px)) / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step

    def _levels(self, spec: SymbolSpec, side: str, limit: Decimal | None = None,
                need: Decimal | None = None) -> list[tuple[Decimal, Decimal]]:
        """Opposite book side a `side` taker would hit, best first, on the tick/step grid, scaled by liquidity;
        only the levels at or better than `limit`, and no more than enough to cover `need`."""
        buy = side == "BUY"
        if limit is not None:     # most limit orders do not cross: one cheap look at the top first
            bid, _, ask, _ = self.market.best(spec.symbol)
            top = ask if buy else bid
            if not top:
                return []
            top_d = self.grid(top, spec.tick)
            if (top_d > limit) if buy else (top_d < limit):
                return []
        raw = self.market.book_levels(spec.symbol, side, self.cfg.book_depth)
        scale = self.liquidity_scale
        out = []
        total = ZERO
        for px, qty in raw:
            p = self.grid(px, spec.tick)
            if limit is not None and ((p > limit) if buy else (p < limit)):
                break
            q = (Decimal(repr(qty * scale)) / spec.step).to_integral_value(rounding=ROUND_DOWN) * spec.step
            if q > 0:
                out.append((p, q))
                total += q
                if need is not None and total >= need:
                    break
        return out

    def mark(self, spec: SymbolSpec) -> Decimal:
        """The mark price on the tick grid. For a symbol an account holds or has orders in, the one on_tick last
        saw (the market delivers every book change as a tick): the margin totals and every other use agree on it."""
        held = self._marks.get(spec.symbol)
        return held[1] if held is not None else self.grid(float(self.market.mark_price(spec.symbol)), spec.tick)

    def _remark(self, symbol: str) -> None:
        """The market moved: a new mark moves the margin totals of every account exposed to the symbol."""
        px = float(self.market.mark_price(symbol))
        # a tick that leaves the mid where it was (a change deeper in the book) must not make the market's thread
        # wait for an order's lock. Only this thread (the market's) replaces a kept mark: reading it unlocked is safe.
        if px == self._marks[symbol][0]:
            return
        with self.lock:
            mark = self._marks[symbol][1]
            new = self.grid(px, self.specs[symbol].tick)
            self._marks[symbol] = (px, new)
            if new != mark:
                for e in self._exposed[symbol]:
                    e.remark(new)

    def _exposure(self, acc: Account, symbol: str) -> Exposure:
        e = acc.exposures.get(symbol)
        if e is None:
            if symbol not in self._marks:     # from now on the mark is kept, as the totals count it
                px = float(self.market.mark_price(symbol))
                self._marks[symbol] = (px, self.grid(px, self.specs[symbol].tick))
            e = acc.exposures[symbol] = Exposure(acc.ledgers[self.specs[symbol].margin_asset], self._lev(acc, symbol),
                                                 acc.isolated(symbol), self._marks[symbol][1])
            self._exposed.setdefault(symbol, []).append(e)
        return e

    def _position(self, acc: Account, symbol: str, side: str) -> Position:
        p = acc.positions.get((symbol, side))
        if p is None:
            p = acc.positions[symbol, side] = Position(symbol, side, self._exposure(acc, symbol))
        return p

    # ------------------------------------------------------------------------------------ margin

    def _lev(self, acc: Account, symbol: str) -> Decimal:
        return acc.leverage.get(symbol, self._leverage)

    def set_leverage(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/leverage."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            raw = params.get("leverage")
            if not raw:
                raise mandatory("leverage")
            if not raw.isdigit() or not 1 <= int(raw) <= 125:
                raise VenueError(-4028, f"Leverage {raw} is not valid")
            acc.leverage[spec.symbol] = Decimal(int(raw))
            if spec.symbol in acc.exposures:
                acc.exposures[spec.symbol].relever(acc.leverage[spec.symbol])
            now = self.clock_ms()
            self.emit(acc, [{"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now,
                              "ac": {"s": spec.symbol, "l": int(raw)}}])
            return {"leverage": int(raw), "maxNotionalValue": "1000000", "symbol": spec.symbol}

    def commission_rate(self, key: str, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/commissionRate."""
        spec = self.spec(params.get("symbol"))
        self.account(key)
        return {"symbol": spec.symbol, "makerCommissionRate": self.cfg.maker_fee,
                "takerCommissionRate": self.cfg.taker_fee, "rpiCommissionRate": "0"}

    def user_trades(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/userTrades (from the bounded per-account trade history)."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            raw_limit = params.get("limit") or "500"
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
                raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
            order_id = params.get("orderId")
            start = int(params["startTime"]) if (params.get("startTime") or "").isdigit() else None
            end = int(params["endTime"]) if (params.get("endTime") or "").isdigit() else None
            from_id = int(params["fromId"]) if (params.get("fromId") or "").isdigit() else None
            out = []
            for t in acc.trades:
                if t["symbol"] != spec.symbol:
                    continue
                if order_id and str(t["orderId"]) != order_id:
                    continue
                if (start is not None and t["time"] < start) or (end is not None and t["time"] > end):
                    continue
                if from_id is not None and t["id"] < from_id:
                    continue
                out.append(t)
            return out[:int(raw_limit)] if from_id is not None else out[-int(raw_limit):]

    def upnl(self, p: Position) -> Decimal:
        """Unrealized PnL of a position at the mark price."""
        return p.amt * (self.mark(self.specs[p.symbol]) - p.entry) if p.amt else ZERO

    def _held(self, acc: Account, asset: str, cross_only: bool) -> Iterable[Position]:
        """Open positions margined in `asset` (cross_only: those of CROSSED symbols)."""
        return (p for p in acc.positions.values() if p.amt and self.specs[p.symbol].margin_asset == asset
                and not (cross_only and acc.isolated(p.symbol)))

    def unrealized(self, acc: Account, asset: str, cross_only: bool = False) -> Decimal:
        """Unrealized PnL of the positions margined in `asset` (cross_only: of the CROSSED symbols)."""
        led = acc.ledgers[asset]
        up = led.unrealized(0)
        return _FIGURE.plus(up if cross_only else _EXACT.add(up, led.unrealized(1)))

    def _maint(self, p: Position) -> Decimal:
        return abs(p.amt) * self.mark(self.specs[p.symbol]) * self._mmr

    def initial_margin(self, acc: Account, asset: str, cross_only: bool = False) -> tuple[Decimal, Decimal]:
        """(position initial margin, open-order initial margin): notional at the mark (at the order price) over the
        symbol's leverage; open orders always draw on the cross wallet."""
        led = acc.ledgers[asset]
        pos = (led.notional[0],) if cross_only else led.notional
        return led.figure(ZERO, 1, *pos), led.figure(ZERO, 1, led.orders)

    def available_balance(self, acc: Account, asset: str) -> Decimal:
        """Cross wallet + cross unrealized PnL - cross positions' and open orders' initial margin: the margin an
        isolated position holds is not available, and its PnL does not count."""
        led = acc.ledgers[asset]
        base = _EXACT.add(_EXACT.subtract(acc.wallet[asset], led.iso_wallet), led.unrealized(0))
        return led.figure(base, -1, led.notional[0], led.orders)

    # ------------------------------------------------------------------------------------ orders

    def place_order(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/order semantics; returns the reply body (ACK: state at acceptance, RESULT: final)."""
        with self.lock:
            acc = self.account(key)
            now = self.clock_ms()
            resp_type = params.get("newOrderRespType") or "ACK"
            if resp_type not in ("ACK", "RESULT"):
                raise VenueError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
            o = self._validate_new(acc, params, now)
            crossing = self._prematch(o)
            # accepted: the order now has an id and a history
            o.order_id = self._next_order_id[o.symbol]
            self._next_order_id[o.symbol] += 1
            acc.orders.setdefault(o.symbol, {})[o.order_id] = o
            acc.by_cid.setdefault(o.symbol, {})[o.client_id] = o
            ack = order_json(o, "order")
            self._match(acc, o, crossing, now)
            return order_json(o, "order") if resp_type == "RESULT" else ack

    def test_order(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/order/test: every check of a new order, nothing executed."""
        with self.lock:
            self._validate_new(self.account(key), params, self.clock_ms())
            return {}

    def _validate_new(self, acc: Account, p: Mapping[str, str], now: int) -> Order:
        spec = self.spec(p.get("symbol"))
        side, otype = side_and_type(p)
        if otype in _CONDITIONAL:
            raise VenueError(-4120, "Order type not supported for this endpoint. Please use the Algo Order API "
                                    "endpoints instead.")
        if otype not in ("LIMIT", "MARKET"):
            raise VenueError(-1116, "Invalid orderType.")
        ps = self.position_side(acc, p)
        if acc.dual_side and p.get("reduceOnly"):
            raise not_required("reduceOnly")
        ro_raw = (p.get("reduceOnly") or "false").lower()
        if ro_raw not in ("true", "false"):
            raise VenueError(-1130, "Data sent for parameter 'reduceOnly' is not valid.")
        reduce_only = ro_raw == "true"
        # a hedge-mode order that closes its side (SELL LONG, BUY SHORT) is reduce-only without saying so
        reduces = reduce_only or (ps == "LONG" and side == "SELL") or (ps == "SHORT" and side == "BUY")
        if p.get("closePosition") or p.get("stopPrice"):
            raise not_required("closePosition" if p.get("closePosition") else "stopPrice")
        tif = p.get("timeInForce")
        qty = self.decimal_param(p, "quantity")
        price = self.decimal_param(p, "price")
        price_match = p.get("priceMatch") or "NONE"
        gtd = 0
        if otype == "LIMIT":
            if not tif:
                raise mandatory("timeInForce")
            if tif not in _TIFS:
                raise VenueError(-1115, "Invalid timeInForce.")
            if qty is None:
                raise mandatory("quantity")
            if price_match != "NONE":
                if price is not None:
                    raise not_required("price")
                price = self._match_price(spec, side, price_match)
            if price is None:
                raise mandatory("price")
            if tif == "GTD":
                raw = p.get("goodTillDate")
                if not raw or not raw.isdigit():
                    raise mandatory("goodTillDate")
                gtd = int(raw)
                if gtd <= now + 600_000:
                    raise VenueError(-1130, "Data sent for parameter 'goodTillDate' is not valid.")
        else:
            if tif:
                raise not_required("timeInForce")
            if price is not None:
                raise not_required("price")
            if qty is None:
                raise mandatory("quantity")
            tif = "GTC"   # what live MARKET replies show
        if not spec.is_trading:
            raise VenueError(-4140, "Invalid symbol status for opening position.")
        mark = self.check_filters(spec, side, otype, qty, price, reduces)
        cid = p.get("newClientOrderId")
        if cid is not None:
            if not _CID_RE.match(cid):
                raise VenueError(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                        "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
            prev = acc.by_cid.get(spec.symbol, {}).get(cid)
            if prev is not None and prev.is_open:
                raise VenueError(-4116, "ClientOrderId is duplicated.")
        else:
            cid = self.random_client_id()
        if len(acc.open_orders.get(spec.symbol, ())) >= spec.max_num_orders:
            raise VenueError(-2025, "Reach max open order limit.")
        pos_amt = self.position_amt(acc, spec.symbol, ps)
        sign = 1 if side == "BUY" else -1
        if reduces and (pos_amt == 0 or (pos_amt > 0) == (sign > 0)):
            raise VenueError(-2022, "ReduceOnly Order is rejected.")
        if reduces and ps != "BOTH" and qty > abs(pos_amt):
            raise VenueError(-2022, "ReduceOnly Order is rejected.")   # closes more than the side holds
        if not reduces:
            closing = min(qty, abs(pos_amt)) if pos_amt and (pos_amt > 0) != (sign > 0) else ZERO
            ref_px = price if otype == "LIMIT" else mark
            need = (qty - closing) * ref_px / self._lev(acc, spec.symbol)
            if need > 0 and need > self.available_balance(acc, spec.margin_asset):
                raise VenueError(-2019, "Margin is insufficient.")
        stp = p.get("selfTradePreventionMode") or "EXPIRE_MAKER"
        if stp not in ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"):
            raise VenueError(-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid.")
        o = Order(order_id=0, symbol=spec.symbol, spec=spec, client_id=cid, side=side, type=otype, tif=tif,
                  price=price if price is not None else ZERO, orig_qty=qty, executed_qty=ZERO, cum_quote=ZERO,
                  reduce_only=reduce_only, status="NEW", time=now, update_time=now, position_side=ps,
                  price_match=price_match, stp=stp, gtd=gtd, account=acc, sent_new=False)
        return o

    @staticmethod
    def position_side(acc: Account, p: Mapping[str, str]) -> str:
        """The positionSide of an order request (regular or algo): BOTH in one-way mode, LONG or SHORT (required) in
        hedge mode; anything else is -4061."""
        ps = p.get("positionSide") or "BOTH"
        if ps not in ("BOTH", "LONG", "SHORT"):
            raise VenueError(-1130, "Data sent for parameter 'positionSide' is not valid.")
        if (ps != "BOTH") != acc.dual_side:
            raise VenueError(-4061, "Order's position side does not match user's setting.")
        return ps

    def check_filters(self, spec: SymbolSpec, side: str, otype: str, qty: Decimal, price: Decimal | None,
                       reduce_only: bool) -> Decimal:
        """PRICE_FILTER, LOT_SIZE/MARKET_LOT_SIZE, PERCENT_PRICE and MIN_NOTIONAL; returns the mark price."""
        if qty <= 0:
            raise VenueError(-4003, "Quantity less than or equal to zero.")
        if price is not None and price <= 0:
            raise VenueError(-4001, "Price less than 0.")
        if self.places(qty) > spec.quantity_precision or (
                price is not None and self.places(price) > spec.price_precision):
            raise VenueError(-1111, "Precision is over the maximum defined for this asset.")
        if price is not None:
            min_px, max_px = Decimal(spec.min_price), Decimal(spec.max_price)
            if (min_px and price < min_px) or (max_px and price > max_px):
                raise VenueError(-1013, "Filter failure: PRICE_FILTER")
            if (price - min_px) % spec.tick != 0:
                raise self._filter_error(-4014, "Price not increased by tick size.", "PRICE_FILTER")
        lot = "LOT_SIZE" if otype == "LIMIT" else "MARKET_LOT_SIZE"
        min_q = Decimal(spec.min_qty if otype == "LIMIT" else spec.market_min_qty)
        max_q = Decimal(spec.max_qty if otype == "LIMIT" else spec.market_max_qty)
        if qty < min_q or qty > max_q:
            raise VenueError(-1013, f"Filter failure: {lot}")
        if (qty - min_q) % spec.step != 0:
            raise self._filter_error(-4023, "Qty not increased by step size.", lot)
        mark = self.mark(spec)
        if otype == "LIMIT":
            up = mark * Decimal(spec.multiplier_up)
            down = mark * Decimal(spec.multiplier_down)
            if side == "BUY" and price > up:
                raise VenueError(-4016, "Price is higher than mark price multiplier cap.")
            if side == "SELL" and price < down:
                raise VenueError(-4024, "Price is lower than mark price multiplier floor.")
        notional = qty * (price if otype == "LIMIT" else mark)
        min_notional = Decimal(spec.min_notional)
        if not reduce_only and notional < min_notional:
            raise VenueError(-4164, f"Order's notional must be no smaller than {spec.min_notional} "
                                    "(unless you choose reduce only).")
        return mark

    def _match_price(self, spec: SymbolSpec, side: str, mode: str) -> Decimal:
        modes = {"OPPONENT": (True, 1), "OPPONENT_5": (True, 5), "OPPONENT_10": (True, 10),
                 "OPPONENT_20": (True, 20), "QUEUE": (False, 1), "QUEUE_5": (False, 5), "QUEUE_10": (False, 10),
                 "QUEUE_20": (False, 20)}
        if mode not in modes:
            raise VenueError(-1130, "Data sent for parameter 'priceMatch' is not valid.")
        opponent, n = modes[mode]
        look_side = side if opponent else ("SELL" if side == "BUY" else "BUY")
        levels = self.market.book_levels(spec.symbol, look_side, n)
        if not levels:
            raise VenueError(-4131, "The counterparty's best price does not meet the PERCENT_PRICE filter limit.")
        return self.grid(levels[min(n, len(levels)) - 1][0], spec.tick)

    def _prematch(self, o: Order) -> list[tuple[Decimal, Decimal]]:
        """Book levels the new order would take; raises the reject of GTX/FOK/MARKET-outside-band orders."""
        spec = o.spec
        if o.type == "LIMIT":
            crossing = self._levels(spec, o.side, o.price, o.orig_qty)
            if o.tif == "GTX" and crossing:
                raise VenueError(-5022, GTX_REJECT_MSG)
            if o.tif == "FOK" and sum((q for _, q in crossing), ZERO) < o.orig_qty:
                raise VenueError(-5021, "Due to the order could not be filled immediately, the FOK order has been "
                                        "rejected.")
        else:
            mark = self.mark(spec)
            bound = mark * Decimal(spec.multiplier_up if o.side == "BUY" else spec.multiplier_down)
            crossing = self._levels(spec, o.side, bound, o.orig_qty)
            if not crossing:
                raise VenueError(-4131, "The counterparty's best price does not meet the PERCENT_PRICE filter "
                                        "limit.")
        return crossing

    def _match(self, acc: Account, o: Order, crossing: list[tuple[Decimal, Decimal]], now: int) -> None:
        spec = o.spec
        events: list[dict] = []
        for px, q in crossing:
            if o.remaining <= 0:
                break
            take = min(q, o.remaining)
            take = self._reduce_only_cap(acc, o, take)
            if take <= 0:
                break
            self._fill(acc, o, px, take, False, now, events)
        if o.remaining > 0 and o.status in _OPEN:
            if o.type == "MARKET" or o.tif in ("IOC", "FOK") or (o.reduces and self._ro_dead(acc, o)):
                er = "9" if o.type == "MARKET" else ("4" if o.reduces and o.tif not in ("IOC", "FOK") else "2")
                if not o.sent_new:
                    events.append(self._otu(o, "NEW", now))
                    o.sent_new = True
                o.status = "EXPIRED"
                o.update_time = now
                self._unrest(acc, o)
                events.append(self._otu(o, "EXPIRED", now, er=er))
            else:
                if not o.sent_new:
                    events.append(self._otu(o, "NEW", now))
                    o.sent_new = True
                acc.open_orders.setdefault(spec.symbol, {})[o.order_id] = o
                if not o.reduces:
                    o.exposure = self._exposure(acc, spec.symbol)
                    o.exposure.order_notional(o.open_notional())
                self._resting.setdefault(spec.symbol, {})[o.order_id] = o
                self._rebound(spec.symbol)
        self._expire_stale_reduce_only(acc, spec.symbol, now, events, skip=o)
        self.emit(acc, events)

    def _ro_dead(self, acc: Account, o: Order) -> bool:
        amt = self.position_amt(acc, o.symbol, o.position_side)
        return amt == 0 or (amt > 0) == (o.sign > 0)

    def _reduce_only_cap(self, acc: Account, o: Order, take: Decimal) -> Decimal:
        if not o.reduces:
            return take
        amt = self.position_amt(acc, o.symbol, o.position_side)
        if amt == 0 or (amt > 0) == (o.sign > 0):
            return ZERO
        return min(take, abs(amt))

    def _expire_stale_reduce_only(self, acc: Account, symbol: str, now: int, events: list[dict],
                                  skip: Order | None = None) -> None:
        """A resting reduce-only order that could only increase the position now is expired (er 4)."""
        orders = acc.open_orders.get(symbol)
        if not orders:
            return
        for o in list(orders.values()):
            if o is skip or not o.reduces or not self._ro_dead(acc, o):
                continue
            o.status = "EXPIRED"
            o.update_time = now
            self._unrest(acc, o)
            events.append(self._otu(o, "EXPIRED", now, er="4"))

    def _unrest(self, acc: Account, o: Order) -> None:
        """The order reached a final state: off the book, into the bounded history."""
        acc.open_orders.get(o.symbol, {}).pop(o.order_id, None)
        if o.exposure is not None:
            o.exposure.order_notional(o.open_notional().copy_negate())
            o.exposure = None
        if self._resting.get(o.symbol, {}).pop(o.order_id, None) is not None:
            self._rebound(o.symbol)
        acc.closed.append(o)
        while len(acc.closed) > self.cfg.max_order_history:
            old = acc.closed.popleft()
            acc.orders.get(old.symbol, {}).pop(old.order_id, None)
            cids = acc.by_cid.get(old.symbol, {})
            if cids.get(old.client_id) is old:
                del cids[old.client_id]

    def _fill(self, acc: Account, o: Order, px: Decimal, q: Decimal, maker: bool, now: int,
              events: list[dict]) -> None:
        spec = o.spec
        pos = self._position(acc, spec.symbol, o.position_side)
        signed = q * o.sign
        realized = ZERO
        iso = acc.isolated(spec.symbol)
        lev = self._lev(acc, spec.symbol)
        if pos.amt == 0 or (pos.amt > 0) == (signed > 0):
            new_amt = pos.amt + signed
            pos.entry = (abs(pos.amt) * pos.entry + q * px) / abs(new_amt)
            pos.amt = new_amt
            if iso:      # the initial margin of what was opened moves into the isolated wallet
                pos.iso += (q * px / lev).quantize(_Q8, rounding=ROUND_HALF_UP)
        else:
            closed = min(q, abs(pos.amt))
            # booked at 8 decimals, as printed in `rp`: the wallet must equal the sum of what the events say
            realized = (closed * (px - pos.entry) * (1 if pos.amt > 0 else -1)).quantize(_Q8, rounding=ROUND_HALF_UP)
            new_amt = pos.amt + signed
            if iso:      # PnL settles in the isolated wallet; the closed share of it goes back to cross
                held = pos.iso + realized
                left = abs(pos.amt) - closed
                pos.iso = (held * left / abs(pos.amt)).quantize(_Q8, rounding=ROUND_HALF_UP) if left else ZERO
            if new_amt == 0:
                pos.entry = ZERO
            elif (new_amt > 0) != (pos.amt > 0):
                pos.entry = px        # flipped: the remainder opened at this fill's price
                if iso:
                    pos.iso += (abs(new_amt) * px / lev).quantize(_Q8, rounding=ROUND_HALF_UP)
            pos.amt = new_amt
        pos.realized += realized
        pos.update_time = now
        # a liquidation pays the clearance fee (INSURANCE_CLEAR) instead of a commission
        rate = ZERO if o.liquidation else self._maker_fee if maker else self._taker_fee
        fee = (q * px * rate).quantize(_Q8, rounding=ROUND_HALF_UP)
        asset = spec.margin_asset
        acc.wallet[asset] = acc.wallet.get(asset, ZERO) + realized - fee
        acc.update_time = now
        o.executed_qty += q
        o.cum_quote += q * px
        o.status = "FILLED" if o.remaining == 0 else "PARTIALLY_FILLED"
        o.update_time = now
        trade_id = self._next_trade_id[spec.symbol]
        self._next_trade_id[spec.symbol] += 1
        acc.trades.append({"buyer": o.side == "BUY", "commission": q8(fee), "commissionAsset": asset,
                           "id": trade_id, "maker": maker, "orderId": o.order_id, "price": _price(spec, px),
                           "qty": _qty(spec, q), "quoteQty": fixed(q * px, _quote_places(spec)),
                           "realizedPnl": q8(realized), "side": o.side, "positionSide": o.position_side,
                           "symbol": spec.symbol, "time": now})
        if len(acc.trades) > self.cfg.max_order_history:
            acc.trades.popleft()
        if realized:
            self._income(acc, spec.symbol, "REALIZED_PNL", realized, asset, now, trade_id)
        if fee:
            self._income(acc, spec.symbol, "COMMISSION", -fee, asset, now, trade_id)
        if not o.liquidation:    # TRADE_LITE carries TRADE executions only
            events.append({"e": "TRADE_LITE", "E": now, "T": now, "s": spec.symbol, "q": _qty(spec, o.orig_qty),
                           "p": _price(spec, o.price) if o.type == "LIMIT" else fixed(ZERO, spec.price_precision),
                           "m": maker, "c": o.client_id, "S": o.side, "L": _price(spec, px), "l": _qty(spec, q),
                           "t": trade_id, "i": o.order_id})
        if not o.sent_new:
            nstatus, o.status = o.status, "NEW"
            events.append(self._otu(o, "NEW", now, before_fill=q))
            o.status = nstatus
            o.sent_new = True
        events.append(self._account_update(acc, spec, pos, now))
        events.append(self._otu(o, "TRADE", now, last_px=px, last_qty=q, fee=fee, realized=realized,
                                trade_id=trade_id, maker=maker))
        if o.status == "FILLED":
            self._unrest(acc, o)

    def _account_update(self, acc: Account, spec: SymbolSpec, pos: Position | None, now: int, reason: str = "ORDER",
                        bc: Decimal = ZERO) -> dict:
        asset = spec.margin_asset
        wb = acc.wallet[asset]
        rows = [] if pos is None else [self._position_event_row(acc, pos)]
        return {"e": "ACCOUNT_UPDATE", "T": now, "E": now, "a": {
            "B": [{"a": asset, "wb": q8(wb), "cw": q8(acc.cross_wallet(asset)), "bc": q8(bc) if bc
                   else "0"}], "P": rows, "m": reason}}

    def _position_event_row(self, acc: Account, pos: Position) -> dict:
        """A position as ACCOUNT_UPDATE's `P` lists it."""
        iso = acc.isolated(pos.symbol)
        return {"s": pos.symbol, "pa": norm(pos.amt), "ep": pnorm(pos.entry),
                "cr": q8(pos.realized) if pos.realized else "0", "up": q8(self.upnl(pos)),
                "mt": "isolated" if iso else "cross", "iw": q8(pos.iso) if iso else "0", "ps": pos.side,
                "ma": self.specs[pos.symbol].margin_asset, "bep": pnorm(self._break_even(pos))}

    def _break_even(self, pos: Position) -> Decimal:
        # entry price moved by the taker fee paid to open and to close (as in live frames, docs/binance-notes.md, User
        # data events)
        if pos.amt == 0:
            return ZERO
        f = self._taker_fee
        return pos.entry * (1 + f) if pos.amt > 0 else pos.entry * (1 - f)

    def _otu(self, o: Order, x: str, now: int, *, last_px: Decimal = ZERO, last_qty: Decimal = ZERO,
             fee: Decimal = ZERO, realized: Decimal = ZERO, trade_id: int = 0, maker: bool = False,
             er: str = "0", before_fill: Decimal | None = None) -> dict:
        spec = o.spec
        if before_fill is not None:      # the NEW event of an order that fills in the same instant
            z, ap = ZERO, ZERO
        else:
            z, ap = o.executed_qty, o.avg_price
        open_notional = o.remaining * o.price if (o.is_open and o.type == "LIMIT") else ZERO
        if before_fill is not None and o.type == "LIMIT":
            open_notional = o.orig_qty * o.price
        otype = o.type
        if o.liquidation:     # Binance's liquidation orders: type LIQUIDATION, their fills execution CALCULATED
            otype = "LIQUIDATION"
            x = "CALCULATED" if x == "TRADE" else x
        return {"e": "ORDER_TRADE_UPDATE", "T": now, "E": now, "o": {
            "s": spec.symbol, "c": o.client_id, "S": o.side, "o": otype, "f": o.tif,
            "q": _qty(spec, o.orig_qty), "p": _price(spec, o.price) if o.type == "LIMIT" else "0",
            "ap": fixed(ap, _quote_places(spec)) if ap else "0", "sp": "0", "x": x, "X": o.status,
            "i": o.order_id, "l": _qty(spec, last_qty) if last_qty else "0", "z": _qty(spec, z) if z else "0",
            "L": _price(spec, last_px) if last_px else "0", "n": q8(fee) if fee else "0",
            "N": spec.margin_asset, "T": now, "t": trade_id,
            "b": fixed(open_notional, 5) if (open_notional and o.side == "BUY") else "0",
            "a": fixed(open_notional, 5) if (open_notional and o.side == "SELL") else "0",
            "m": maker, "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": otype, "ps": o.position_side,
            "cp": False, "rp": q8(realized) if realized else "0", "pP": False, "si": 0, "ss": 0, "V": o.stp,
            "pm": o.price_match, "gtd": o.gtd, "er": er}}

    # ------------------------------------------------------------------------------------ cancel & query

    def _find(self, acc: Account, symbol: str, order_id: str | None, cid: str | None) -> Order | None:
        if order_id:
            if not order_id.isdigit():
                raise mandatory("orderId")
            return acc.orders.get(symbol, {}).get(int(order_id))
        if cid:
            return acc.by_cid.get(symbol, {}).get(cid)
        raise VenueError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")

    def cancel_order(self, key: str, params: Mapping[str, str]) -> dict:
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            o = self._find(acc, spec.symbol, params.get("orderId"), params.get("origClientOrderId"))
            if o is None or not o.is_open:
                raise VenueError(-2011, "Unknown order sent.")
            now = self.clock_ms()
            events: list[dict] = []
            self._cancel(acc, o, now, events)
            self.emit(acc, events)
            return order_json(o)

    def _cancel(self, acc: Account, o: Order, now: int, events: list[dict]) -> None:
        o.status = "CANCELED"
        o.update_time = now
        self._unrest(acc, o)
        events.append(self._otu(o, "CANCELED", now))

    def cancel_all(self, key: str, params: Mapping[str, str]) -> dict:
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            now = self.clock_ms()
            events: list[dict] = []
            for o in sorted(acc.open_orders.get(spec.symbol, {}).values(), key=lambda x: x.order_id):
                self._cancel(acc, o, now, events)
            self.emit(acc, events)
            return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def modify_order(self, key: str, params: Mapping[str, str]) -> dict:
        """PUT /fapi/v1/order (order.modify): new price and/or quantity of an open LIMIT order (x=AMENDMENT).
        A new price that crosses the book trades at once like a new taker order (GTX: -5022, order unchanged)."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            o = self._find(acc, spec.symbol, params.get("orderId"), params.get("origClientOrderId"))
            if o is None or not o.is_open:
                raise VenueError(-2013, "Order does not exist.")
            side = params.get("side")
            if not side:
                raise mandatory("side")
            if side != o.side:
                raise VenueError(-1130, "Data sent for parameter 'side' is not valid.")
            qty = self.decimal_param(params, "quantity")
            if qty is None:
                raise mandatory("quantity")
            pm = params.get("priceMatch") or "NONE"
            price = self.decimal_param(params, "price")
            if pm != "NONE":
                if price is not None:
                    raise not_required("price")
                price = self._match_price(spec, side, pm)
            if price is None:
                raise mandatory("price")
            self.check_filters(spec, side, "LIMIT", qty, price, o.reduces)
            if qty <= o.executed_qty:
                raise VenueError(-1130, "Data sent for parameter 'quantity' is not valid.")
            if o.reduces and o.position_side != "BOTH" and \
                    qty - o.executed_qty > abs(self.position_amt(acc, spec.symbol, o.position_side)):
                raise VenueError(-2022, "ReduceOnly Order is rejected.")   # would close more than the side holds
            if price == o.price and qty == o.orig_qty:
                raise VenueError(-5027, "No need to modify the order.")
            crossing = self._levels(spec, side, price, qty - o.executed_qty)
            if crossing and o.tif == "GTX":
                raise VenueError(-5022, GTX_REJECT_MSG)
            now = self.clock_ms()
            o.price, o.orig_qty, o.update_time = price, qty, now
            o.price_match = pm
            self._rebound(spec.symbol)
            events = [self._otu(o, "AMENDMENT", now)]
            for px, q in crossing:
                take = self._reduce_only_cap(acc, o, min(q, o.remaining))
                if take <= 0:
                    break
                self._fill(acc, o, px, take, False, now, events)
            self._expire_stale_reduce_only(acc, spec.symbol, now, events)
            self.emit(acc, events)
            return order_json(o)

    def query_order(self, key: str, params: Mapping[str, str]) -> dict:
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            o = self._find(acc, spec.symbol, params.get("orderId"), params.get("origClientOrderId"))
            if o is None:
                raise VenueError(-2013, "Order does not exist.")
            return order_json(o, "query")

    def query_open_order(self, key: str, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/openOrder: like query_order, but only orders still open."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            o = self._find(acc, spec.symbol, params.get("orderId"), params.get("origClientOrderId"))
            if o is None or not o.is_open:
                raise VenueError(-2013, "Order does not exist.")
            return order_json(o, "open")

    def open_orders(self, key: str, params: Mapping[str, str]) -> list[dict]:
        with self.lock:
            acc = self.account(key)
            sym = params.get("symbol")
            symbols = [self.spec(sym).symbol] if sym else sorted(acc.open_orders)
            out = []
            for s in symbols:
                for o in sorted(acc.open_orders.get(s, {}).values(), key=lambda x: x.order_id):
                    out.append(order_json(o, "open"))
            return out

    # ------------------------------------------------------------------------------------ resting fills

    def _rebound(self, symbol: str) -> None:
        """Float bounds of the resting orders of a symbol, for on_tick's lock-free early exit."""
        orders = self._resting.get(symbol)
        if not orders:
            self._bounds.pop(symbol, None)
            return
        buys = [float(o.price) for o in orders.values() if o.side == "BUY"]
        sells = [float(o.price) for o in orders.values() if o.side == "SELL"]
        gtds = [o.gtd for o in orders.values() if o.gtd]
        # widened by a relative hair so float rounding can only send a tick to the exact (locked) check
        self._bounds[symbol] = (max(buys) * (1 + 1e-9) if buys else -1.0,
                                min(sells) * (1 - 1e-9) if sells else float("inf"),
                                min(gtds) if gtds else float("inf"))

    def on_tick(self, symbol: str, bid_px: float, ask_px: float, ts_ms: int) -> None:
        """Market tick listener: fills resting orders the market now crosses (maker fills at the order price)."""
        if symbol in self._marks:
            self._remark(symbol)
        b = self._bounds.get(symbol)
        if b is None:
            return
        if ask_px > b[0] and bid_px < b[1] and (b[2] == float("inf") or self.clock_ms() < b[2]):
            return
        with self.lock:
            resting = self._resting.get(symbol)
            if not resting:
                return
            now = self.clock_ms()
            spec = self.specs[symbol]
            ask = self.grid(ask_px, spec.tick) if ask_px else None
            bid = self.grid(bid_px, spec.tick) if bid_px else None
            buys = sorted((o for o in resting.values() if o.side == "BUY" and ask is not None and o.price >= ask),
                          key=lambda o: (-o.price, o.order_id))
            sells = sorted((o for o in resting.values() if o.side == "SELL" and bid is not None and o.price <= bid),
                           key=lambda o: (o.price, o.order_id))
            expired = [o for o in resting.values() if o.gtd and o.gtd <= now]
            if not buys and not sells and not expired:
                return
            per_account: dict[str, list[dict]] = {}
            for group, side in ((buys, "BUY"), (sells, "SELL")):
                if not group:
                    continue
                # groups are sorted most aggressive first: its price bounds every level any of them can take
                levels = self._levels(spec, side, group[0].price, sum((o.remaining for o in group), ZERO))
                used: list[Decimal] = [ZERO] * len(levels)
                for o in group:
                    if not o.is_open:       # expired meanwhile (a reduce-only whose position just closed)
                        continue
                    avail = ZERO
                    for i, (px, q) in enumerate(levels):
                        if (px <= o.price) if side == "BUY" else (px >= o.price):
                            avail += q - used[i]
                    take = self._reduce_only_cap(o.account, o, min(avail, o.remaining))
                    if take <= 0:
                        continue
                    left = take
                    for i, (px, q) in enumerate(levels):      # consume the shared liquidity best first
                        if left <= 0:
                            break
                        if (px <= o.price) if side == "BUY" else (px >= o.price):
                            d = min(q - used[i], left)
                            used[i] += d
                            left -= d
                    evs = per_account.setdefault(o.account.key, [])
                    self._fill(o.account, o, o.price, take, True, now, evs)
                    self._expire_stale_reduce_only(o.account, symbol, now, evs)
            for o in expired:
                if o.is_open:
                    o.status = "EXPIRED"
                    o.update_time = now
                    self._unrest(o.account, o)
                    per_account.setdefault(o.account.key, []).append(self._otu(o, "EXPIRED", now, er="6"))
            for k, evs in per_account.items():
                self.emit(self.accounts[k], evs)

    def random_client_id(self) -> str:
        return "".join(self._rng.choice(_CID_ALPHABET) for _ in range(22))

    @staticmethod
    def position_amt(acc: Account, symbol: str, side: str = "BOTH") -> Decimal:
        pos = acc.positions.get((symbol, side))
        return pos.amt if pos else ZERO

    @staticmethod
    def client_id_in_use(acc: Account, symbol: str, cid: str) -> bool:
        prev = acc.by_cid.get(symbol, {}).get(cid)
        return prev is not None and prev.is_open

    # ------------------------------------------------------------------------------------ income, funding, timers

    def _income(self, acc: Account, symbol: str, kind: str, amount: Decimal, asset: str, now: int,
                trade_id: int | None, info: str = "") -> None:
        self._tran_id += 1
        acc.income.append({"symbol": symbol, "incomeType": kind, "income": q8(amount), "asset": asset,
                           "info": info, "time": now, "tranId": self._tran_id,
                           "tradeId": str(trade_id) if trade_id is not None else ""})
        if len(acc.income) > self.cfg.max_order_history:
            acc.income.popleft()

    @property
    def funding_interval_ms(self) -> int:
        return int(getattr(self.market, "funding_interval_ms", 8 * 3_600_000))

    def _funding_after(self, now: int) -> int:
        iv = self.funding_interval_ms
        return (now // iv + 1) * iv

    def run_timers(self, now: int | None = None) -> None:
        """Fire due countdownCancelAll timers and settle funding when a funding time passed (ExchangeTimers
        calls it every timer_period_s)."""
        now = self.clock_ms() if now is None else now
        if self._countdowns:
            with self.lock:
                due = [k for k, deadline in self._countdowns.items() if deadline <= now]
                for key, symbol in due:
                    del self._countdowns[(key, symbol)]
                    acc = self.accounts[key]
                    events: list[dict] = []
                    for o in sorted(acc.open_orders.get(symbol, {}).values(), key=lambda x: x.order_id):
                        self._cancel(acc, o, now, events)
                    self.emit(acc, events)
        if now >= self._next_liq_check_ms:
            self._next_liq_check_ms = now + self.LIQUIDATION_CHECK_MS
            if any(p.amt for acc in list(self.accounts.values()) for p in list(acc.positions.values())):
                self.check_liquidations(now)
        if now >= self._next_funding_ms:
            with self.lock:
                funding_time = now // self.funding_interval_ms * self.funding_interval_ms
                self._next_funding_ms = self._funding_after(now)
                self._settle_funding(funding_time)

    def _settle_funding(self, funding_time: int) -> None:
        """Every perpetual's rate from the venue's mark and index; each position pays or receives
        position notional x rate (longs pay a positive rate), booked as FUNDING_FEE income."""
        rates: dict[str, tuple[Decimal, Decimal]] = {}
        for spec in self.catalog:
            if spec.contract_type != "PERPETUAL" or not spec.is_trading:
                continue
            pi = self.market.premium_index(spec.symbol)
            rate, mark = Decimal(pi["lastFundingRate"]), Decimal(pi["markPrice"])
            rates[spec.symbol] = (rate, mark)
            self.funding_history[spec.symbol].append({"symbol": spec.symbol, "fundingRate": pi["lastFundingRate"],
                                                      "fundingTime": funding_time,
                                                      "markPrice": q8(mark)})
        for acc in self.accounts.values():
            paid: dict[str, Decimal] = {}
            isolated: list[Position] = []
            for pos in acc.positions.values():
                if not pos.amt or pos.symbol not in rates:
                    continue
                rate, mark = rates[pos.symbol]
                amount = (-pos.amt * mark * rate).quantize(_Q8, rounding=ROUND_HALF_UP)
                asset = self.specs[pos.symbol].margin_asset
                acc.wallet[asset] = acc.wallet.get(asset, ZERO) + amount
                if acc.isolated(pos.symbol):     # an isolated position's funding settles in its own wallet
                    pos.iso += amount
                    isolated.append(pos)
                acc.update_time = funding_time
                paid[asset] = paid.get(asset, ZERO) + amount
                self._income(acc, pos.symbol, "FUNDING_FEE", amount, asset, funding_time, None)
            if paid:
                # cross positions: only the balances are pushed (Binance's FUNDING_FEE ACCOUNT_UPDATE); isolated
                # ones are listed too
                self.emit(acc, [{"e": "ACCOUNT_UPDATE", "E": funding_time, "T": funding_time, "a": {
                    "m": "FUNDING_FEE", "B": [{"a": a, "wb": q8(acc.wallet[a]),
                                               "cw": q8(acc.cross_wallet(a)), "bc": "0"} for a in paid],
                    "P": [self._position_event_row(acc, p) for p in isolated]}}])

    def funding_rates(self, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/fundingRate: settled rates, oldest first (symbol optional; default limit 100, max 1000)."""
        sym = params.get("symbol")
        raw = params.get("limit") or "100"
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = self._time_param(params, "startTime"), self._time_param(params, "endTime")
        with self.lock:
            if sym:
                rows = list(self.funding_history[self.spec(sym).symbol])
            else:
                rows = sorted((r for h in self.funding_history.values() for r in h), key=lambda r: r["fundingTime"])
        if start is not None:
            rows = [r for r in rows if r["fundingTime"] >= start]
        if end is not None:
            rows = [r for r in rows if r["fundingTime"] <= end]
        return rows[:int(raw)] if start is not None else rows[-int(raw):]

    def open_interest(self, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/openInterest: contracts held long (= held short) by everyone on the venue.

        Two parts. Exact: the venue's accounts trade only with the generated market, so the generated traders as a
        whole hold the opposite of the accounts' net position; the longs of accounts plus generator are then
        max(sum of account longs, sum of account shorts). Modelled: the generated traders' positions among
        themselves, which the generator does not track, held fixed at `base_open_interest` (half a day of the
        symbol's volume at its starting price). So the figure moves exactly with the accounts' opening and closing
        and never with the generator's own trading."""
        spec = self.spec(params.get("symbol"))
        with self.lock:
            longs = shorts = ZERO
            for acc in self.accounts.values():
                for side in ("BOTH", "LONG", "SHORT"):
                    amt = self.position_amt(acc, spec.symbol, side)
                    longs, shorts = (longs + amt, shorts) if amt > 0 else (longs, shorts - amt)
        oi = self.base_open_interest(spec) + max(longs, shorts)
        return {"openInterest": _qty(spec, oi), "symbol": spec.symbol, "time": self.clock_ms()}

    @staticmethod
    def base_open_interest(spec: SymbolSpec) -> Decimal:
        """The modelled open interest among the generated market's own traders (see open_interest)."""
        units = Decimal(repr(spec.daily_volume_quote / spec.base_price / 2))
        return (units / spec.step).to_integral_value(rounding=ROUND_DOWN) * spec.step

    @staticmethod
    def _time_param(params: Mapping[str, str], name: str) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit():
            raise VenueError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                    "'^[0-9]{1,20}$'.")
        return int(raw)

    def countdown_cancel_all(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/countdownCancelAll: (re)arm the symbol's dead-man switch; countdownTime 0 disarms it.
        When it fires, every open order of the symbol is cancelled. Conditional (algo) orders are a separate
        service and stay: a stop that protects a position must outlive the client that placed it."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            raw = params.get("countdownTime")
            if raw is None or raw == "":
                raise mandatory("countdownTime")
            if not raw.isdigit():
                raise VenueError(-1100, "Illegal characters found in parameter 'countdownTime'; legal range is "
                                        "'^[0-9]{1,20}$'.")
            ms = int(raw)
            if ms == 0:
                self._countdowns.pop((acc.key, spec.symbol), None)
            else:
                self._countdowns[(acc.key, spec.symbol)] = self.clock_ms() + ms
            return {"symbol": spec.symbol, "countdownTime": str(ms)}

    def countdown_deadline(self, key: str, symbol: str) -> int | None:
        """When the symbol's countdown fires (ms), None when disarmed (tests, venue console)."""
        with self.lock:
            return self._countdowns.get((key, symbol))

    # ------------------------------------------------------------------------------------ account configuration

    # Notional brackets (Binance's "Notional and Leverage Brackets"; the tiers of a large USDT perpetual). Tier 1's
    # maintenance rate is the venue's maint_margin_rate; `cum` is the maintenance amount that keeps the
    # maintenance margin continuous across tiers.
    _BRACKETS = ((125, 50_000, "0.004"), (100, 600_000, "0.005"), (75, 3_000_000, "0.0065"), (50, 12_000_000, "0.01"),
                 (25, 70_000_000, "0.02"), (20, 100_000_000, "0.025"), (10, 230_000_000, "0.05"),
                 (5, 480_000_000, "0.1"), (4, 600_000_000, "0.125"), (3, 800_000_000, "0.15"),
                 (2, 1_200_000_000, "0.25"), (1, 1_800_000_000, "0.5"))

    def _brackets(self) -> list[dict]:
        out, floor, cum = [], 0, ZERO
        prev_mmr = None
        for n, (lev, cap, mmr) in enumerate(self._BRACKETS, 1):
            m = self._mmr if n == 1 else Decimal(mmr)
            if prev_mmr is not None:
                cum += Decimal(floor) * (m - prev_mmr)
            out.append({"bracket": n, "initialLeverage": lev, "notionalCap": cap, "notionalFloor": floor,
                        "maintMarginRatio": float(m), "cum": float(cum)})
            floor, prev_mmr = cap, m
        return out

    def leverage_brackets(self, key: str, params: Mapping[str, str]) -> list[dict] | dict:
        """GET /fapi/v1/leverageBracket: a list of every symbol, or (symbol sent) that symbol's object."""
        self.account(key)
        sym = params.get("symbol")
        if sym:
            spec = self.spec(sym)
            return {"symbol": spec.symbol, "notionalCoef": 1.0, "brackets": self._brackets()}
        return [{"symbol": s.symbol, "notionalCoef": 1.0, "brackets": self._brackets()} for s in self.catalog]

    def _has_position_or_orders(self, acc: Account, symbol: str | None) -> tuple[bool, bool]:
        """(a position is open, an order or a conditional order is open) on the symbol, or on any symbol."""
        pos = any(p.amt != 0 for p in acc.positions.values() if symbol is None or p.symbol == symbol)
        orders = any(o for s, o in acc.open_orders.items() if symbol is None or s == symbol) or \
            self.algo.has_open(acc.key, symbol)
        return pos, orders

    def set_margin_type(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/marginType (ISOLATED / CROSSED)."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            mt = params.get("marginType")
            if not mt:
                raise mandatory("marginType")
            mt = mt.upper()
            if mt not in ("ISOLATED", "CROSSED"):
                raise VenueError(-1130, "Data sent for parameter 'marginType' is not valid.")
            if acc.margin_type.get(spec.symbol, "CROSSED") == mt:
                raise VenueError(-4046, "No need to change margin type.")
            pos, orders = self._has_position_or_orders(acc, spec.symbol)
            if orders:
                raise VenueError(-4047, "Margin type cannot be changed if there exists open orders.")
            if pos:
                raise VenueError(-4048, "Margin type cannot be changed if there exists position.")
            if mt == "CROSSED":
                acc.margin_type.pop(spec.symbol, None)
            else:
                acc.margin_type[spec.symbol] = mt
            if spec.symbol in acc.exposures:
                acc.exposures[spec.symbol].set_isolated(mt == "ISOLATED")
            return {"code": 200, "msg": "success"}

    def margin_type_of(self, acc: Account, symbol: str) -> str:
        return acc.margin_type.get(symbol, "CROSSED")

    def position_mode(self, key: str, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/positionSide/dual."""
        return {"dualSidePosition": self.account(key).dual_side}

    def set_position_mode(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/positionSide/dual: hedge mode (true: a LONG and a SHORT position per symbol, every order names
        its positionSide) or one-way mode (false: one BOTH position). The mode is the account's, for every symbol, and
        changes only while the account has no open order, conditional order or position."""
        with self.lock:
            acc = self.account(key)
            raw = (params.get("dualSidePosition") or "").lower()
            if raw not in ("true", "false"):
                raise mandatory("dualSidePosition")
            if (raw == "true") == acc.dual_side:
                raise VenueError(-4059, "No need to change position side.")
            pos, orders = self._has_position_or_orders(acc, None)
            if orders:
                raise VenueError(-4067, "Position side cannot be changed if there exists open orders.")
            if pos:
                raise VenueError(-4068, "Position side cannot be changed if there exists position.")
            acc.dual_side = raw == "true"
            acc.config_time = self.clock_ms()
            return {"code": 200, "msg": "success"}

    def position_margin(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/positionMargin: add (type 1) or reduce (type 2) an isolated position's margin."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            amount = self.decimal_param(params, "amount")
            if amount is None:
                raise mandatory("amount")
            kind = params.get("type")
            if kind not in ("1", "2"):
                raise mandatory("type")
            if amount <= 0:
                raise VenueError(-1130, "Data sent for parameter 'amount' is not valid.")
            ps = self.position_side(acc, params)
            if not acc.isolated(spec.symbol):
                raise VenueError(-4049, "Add margin only support for isolated position.")
            pos = acc.positions.get((spec.symbol, ps))
            if pos is None or pos.amt == 0:
                raise VenueError(-4050 if kind == "1" else -4051, "Cross balance insufficient." if kind == "1"
                                 else "Isolated balance insufficient.")
            if kind == "1":
                if amount > self.available_balance(acc, spec.margin_asset):
                    raise VenueError(-4050, "Cross balance insufficient.")
                pos.iso += amount
            else:
                # what may leave: the isolated margin (wallet + unrealized PnL) above the position's initial margin
                im = abs(pos.amt) * self.mark(spec) / self._lev(acc, spec.symbol)
                if amount > pos.iso + self.upnl(pos) - im or amount > pos.iso:
                    raise VenueError(-4051, "Isolated balance insufficient.")
                pos.iso -= amount
            now = self.clock_ms()
            pos.update_time = now
            self.emit(acc, [self._account_update(acc, spec, pos, now, "MARGIN_TRANSFER")])
            return {"amount": float(amount), "code": 200, "msg": "Successfully modify position margin.",
                    "type": int(kind)}

    def multi_assets_mode(self, key: str, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/multiAssetsMargin."""
        return {"multiAssetsMargin": self.account(key).multi_assets}

    def set_multi_assets_mode(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/multiAssetsMargin (ACCOUNT_CONFIG_UPDATE with "ai" on the user stream)."""
        with self.lock:
            acc = self.account(key)
            raw = (params.get("multiAssetsMargin") or "").lower()
            if raw not in ("true", "false"):
                raise mandatory("multiAssetsMargin")
            acc.multi_assets = raw == "true"
            now = self.clock_ms()
            acc.config_time = now
            self.emit(acc, [{"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now, "ai": {"j": acc.multi_assets}}])
            return {"code": 200, "msg": "success"}

    def account_config(self, key: str, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/accountConfig."""
        acc = self.account(key)
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                "dualSidePosition": acc.dual_side,
                "updateTime": acc.config_time, "multiAssetsMargin": acc.multi_assets, "tradeGroupId": -1}

    def symbol_config(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/symbolConfig (symbol optional)."""
        with self.lock:
            acc = self.account(key)
            sym = params.get("symbol")
            specs = [self.spec(sym)] if sym else [s for s in self.catalog if s.is_trading]
            return [{"symbol": s.symbol, "marginType": self.margin_type_of(acc, s.symbol), "isAutoAddMargin": False,
                     "leverage": int(self._lev(acc, s.symbol)), "maxNotionalValue": "1000000"} for s in specs]

    def all_orders(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/allOrders: open and closed orders of a symbol, oldest first (default 500, max 1000)."""
        with self.lock:
            acc = self.account(key)
            spec = self.spec(params.get("symbol"))
            raw = params.get("limit") or "500"
            if not raw.isdigit() or not 1 <= int(raw) <= 1000:
                raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
            start, end = self._time_param(params, "startTime"), self._time_param(params, "endTime")
            oid = self._time_param(params, "orderId")
            rows = sorted(acc.orders.get(spec.symbol, {}).values(), key=lambda o: o.order_id)
            if oid is not None:
                rows = [o for o in rows if o.order_id >= oid]
            if start is not None:
                rows = [o for o in rows if o.time >= start]
            if end is not None:
                rows = [o for o in rows if o.time <= end]
            rows = rows[:int(raw)] if (oid is not None or start is not None) else rows[-int(raw):]
            return [order_json(o, "query") for o in rows]

    def income_history(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/income: REALIZED_PNL, COMMISSION, FUNDING_FEE, TRANSFER rows, oldest first; without a
        time range the last 7 days (default limit 100, max 1000; `page` pages through the result)."""
        with self.lock:
            acc = self.account(key)
            sym = params.get("symbol")
            if sym:
                self.spec(sym)
            kind = params.get("incomeType")
            raw = params.get("limit") or "100"
            if not raw.isdigit() or not 1 <= int(raw) <= 1000:
                raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
            page = self._time_param(params, "page") or 1
            start, end = self._time_param(params, "startTime"), self._time_param(params, "endTime")
            if start is None and end is None:
                start = self.clock_ms() - 7 * 86_400_000
            rows = [r for r in acc.income if (not sym or r["symbol"] == sym) and (not kind or r["incomeType"] == kind)
                    and (start is None or r["time"] >= start) and (end is None or r["time"] <= end)]
            n = int(raw)
            return rows[(page - 1) * n: page * n]

    def force_orders(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/forceOrders: the account's liquidation orders, oldest first (symbol, autoCloseType
        LIQUIDATION | ADL, startTime, endTime optional; without startTime the 7 days before endTime or now; default
        limit 50, max 100). The venue never auto-deleverages, so ADL lists nothing."""
        with self.lock:
            acc = self.account(key)
            sym = params.get("symbol")
            if sym:
                sym = self.spec(sym).symbol
            kind = params.get("autoCloseType")
            if kind is not None and kind not in ("LIQUIDATION", "ADL"):
                raise VenueError(-1130, "Data sent for parameter 'autoCloseType' is not valid.")
            raw = params.get("limit") or "50"
            if not raw.isdigit() or not 1 <= int(raw) <= 100:
                raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
            start, end = self._time_param(params, "startTime"), self._time_param(params, "endTime")
            if start is None:
                start = (end if end is not None else self.clock_ms()) - 7 * 86_400_000
            rows = [o for o in acc.liquidations if kind != "ADL" and (not sym or o.symbol == sym)
                    and o.time >= start and (end is None or o.time <= end)]
            keys = ("orderId", "symbol", "status", "clientOrderId", "price", "avgPrice", "origQty", "executedQty",
                    "cumQuote", "timeInForce", "type", "reduceOnly", "closePosition", "side", "positionSide",
                    "stopPrice", "workingType", "origType", "time", "updateTime")
            out = []
            for o in rows[:int(raw)]:
                full = order_json(o, "query")
                out.append({k: full[k] for k in keys})
            return out

    def adl_quantile(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/adlQuantile: 1..4 by unrealized-profit ratio for each position (0 = no position); hedge mode
        rates the LONG and the SHORT position apart."""
        with self.lock:
            acc = self.account(key)
            sym = params.get("symbol")
            syms = [self.spec(sym).symbol] if sym else sorted({p.symbol for p in acc.positions.values() if p.amt})
            out = []
            for s in syms:
                q = {side: self._adl_rank(acc.positions.get((s, side))) for side in ("BOTH", "LONG", "SHORT")}
                if acc.dual_side:
                    out.append({"symbol": s, "adlQuantile": {"LONG": q["LONG"], "SHORT": q["SHORT"], "HEDGE": 0}})
                else:
                    amt = self.position_amt(acc, s)
                    out.append({"symbol": s, "adlQuantile": {"LONG": q["BOTH"] if amt > 0 else 0,
                                                             "SHORT": q["BOTH"] if amt < 0 else 0,
                                                             "BOTH": q["BOTH"]}})
            return out

    def _adl_rank(self, pos: Position | None) -> int:
        if pos is None or not pos.amt:
            return 0
        ratio = self.upnl(pos) / (abs(pos.amt) * pos.entry)
        return 1 if ratio <= 0 else 2 if ratio < Decimal("0.01") else 3 if ratio < Decimal("0.05") else 4

    # ------------------------------------------------------------------------------------ liquidation

    MARGIN_CALL_RATIO = Decimal("0.8")    # MARGIN_CALL once maintenance margin reaches 80% of the margin balance
    LIQUIDATION_CHECK_MS = 50

    def _cushion(self, acc: Account, pos: Position) -> Decimal:
        """What stands behind a position before it is bankrupt, besides its own PnL: its isolated wallet; for a cross
        position, the cross wallet plus the other cross positions' unrealized PnL."""
        if acc.isolated(pos.symbol):
            return pos.iso
        asset = self.specs[pos.symbol].margin_asset
        return acc.cross_wallet(asset) + sum((self.upnl(p) for p in self._held(acc, asset, True)
                                                          if p is not pos), ZERO)

    def _liq_price(self, acc: Account, pos: Position) -> Decimal:
        # mark price at which margin (cushion + own PnL) meets the maintenance margin, the other positions' marks held
        # (a cross position also needs the others' maintenance margin)
        if pos.amt == 0:
            return ZERO
        cushion = self._cushion(acc, pos)
        if not acc.isolated(pos.symbol):
            asset = self.specs[pos.symbol].margin_asset
            cushion -= sum((self._maint(p) for p in self._held(acc, asset, True) if p is not pos), ZERO)
        denom = pos.amt - abs(pos.amt) * self._mmr
        if denom == 0:
            return ZERO
        p = (pos.amt * pos.entry - cushion) / denom
        return p if p > 0 else ZERO

    def _bankruptcy_price(self, acc: Account, pos: Position) -> Decimal:
        """The price at which the position's loss takes all of its cushion, on the tick grid (rounded so the
        account is not charged more than that)."""
        spec = self.specs[pos.symbol]
        p = pos.entry - self._cushion(acc, pos) / pos.amt
        steps = (p / spec.tick).to_integral_value(rounding=ROUND_UP if pos.amt > 0 else ROUND_DOWN)
        return max(steps * spec.tick, spec.tick)

    def check_liquidations(self, now: int | None = None) -> None:
        """Liquidate what the mark price has put below maintenance margin: an isolated position when its isolated
        wallet plus unrealized PnL falls below its maintenance margin; every cross position of a margin asset when
        the cross wallet plus the cross unrealized PnL falls below their maintenance margin. Before that, at 80%,
        one MARGIN_CALL event. ExchangeTimers calls it every LIQUIDATION_CHECK_MS."""
        with self.lock:
            now = self.clock_ms() if now is None else now
            for acc in self.accounts.values():
                held = [p for p in acc.positions.values() if p.amt]
                if not held:
                    continue
                events: list[dict] = []
                calls: list[dict] = []
                for pos in held:
                    if acc.isolated(pos.symbol):
                        margin, mm = pos.iso + self.upnl(pos), self._maint(pos)
                        if margin < mm:
                            self._liquidate(acc, [pos], now, events)
                        elif self._margin_call_due(pos, margin, mm):
                            calls.append({"p": [self._margin_call_row(acc, pos)]})
                for asset in sorted({self.specs[p.symbol].margin_asset for p in held if not acc.isolated(p.symbol)}):
                    cross = list(self._held(acc, asset, True))
                    cw = acc.cross_wallet(asset)
                    margin = cw + self.unrealized(acc, asset, True)
                    mm = sum((self._maint(p) for p in cross), ZERO)
                    if margin < mm:
                        self._liquidate(acc, cross, now, events)
                    else:
                        due = margin <= 0 or mm / margin >= self.MARGIN_CALL_RATIO
                        if due and not acc.cross_margin_call.get(asset):
                            calls.append({"cw": q8(cw), "p": [self._margin_call_row(acc, p) for p in cross]})
                        acc.cross_margin_call[asset] = due
                for c in calls:
                    events.insert(0, {"e": "MARGIN_CALL", "E": now, **c})
                self.emit(acc, events)

    def _margin_call_due(self, pos: Position, margin: Decimal, mm: Decimal) -> bool:
        """True once when an isolated position's maintenance margin reaches MARGIN_CALL_RATIO of its margin;
        re-armed when it falls back."""
        due = margin <= 0 or mm / margin >= self.MARGIN_CALL_RATIO
        first = due and not pos.margin_call
        pos.margin_call = due
        return first

    def _margin_call_row(self, acc: Account, pos: Position) -> dict:
        iso = acc.isolated(pos.symbol)
        return {"s": pos.symbol, "ps": pos.side, "pa": norm(pos.amt), "mt": "ISOLATED" if iso else "CROSSED",
                "iw": q8(pos.iso) if iso else "0", "mp": q8(self.mark(self.specs[pos.symbol])),
                "up": q8(self.upnl(pos)), "mm": q8(self._maint(pos))}

    def _liquidate(self, acc: Account, positions: list[Position], now: int, events: list[dict]) -> None:
        """Close the positions with liquidation orders (clientOrderId autoclose-..., LIMIT IOC at the bankruptcy
        price): open orders of their symbols expire first (er 5); each order takes the book at prices no worse than
        bankruptcy, and what the book cannot take the insurance fund takes at the bankruptcy price, so the position
        always closes. No commission; instead what margin is left pays the clearance fee (notional x the symbol's
        liquidationFee) as INSURANCE_CLEAR income, and a loss beyond the margin is made good by the insurance fund
        (INSURANCE_CLEAR, positive): liquidation never leaves a negative balance."""
        for sym in sorted({p.symbol for p in positions}):
            for o in sorted(acc.open_orders.get(sym, {}).values(), key=lambda x: x.order_id):
                o.status = "EXPIRED"
                o.update_time = now
                self._unrest(acc, o)
                events.append(self._otu(o, "EXPIRED", now, er="5"))
        closed: list[tuple[SymbolSpec, Order, Decimal | None]] = []
        for pos in positions:
            spec = self.specs[pos.symbol]
            iso = acc.isolated(pos.symbol)
            bankrupt = self._bankruptcy_price(acc, pos)
            side = "SELL" if pos.amt > 0 else "BUY"
            qty = abs(pos.amt)
            o = Order(order_id=self._next_order_id[spec.symbol], symbol=spec.symbol, spec=spec,
                      client_id=f"autoclose-{now}{len(acc.liquidations) % 1_000_000:06d}", side=side, type="LIMIT",
                      tif="IOC", price=bankrupt, orig_qty=qty, executed_qty=ZERO, cum_quote=ZERO, reduce_only=False,
                      status="NEW", time=now, update_time=now, position_side=pos.side, price_match="NONE",
                      stp="NONE", gtd=0, account=acc, sent_new=False, liquidation=True)
            self._next_order_id[spec.symbol] += 1
            acc.orders.setdefault(spec.symbol, {})[o.order_id] = o
            acc.by_cid.setdefault(spec.symbol, {})[o.client_id] = o
            acc.liquidations.append(o)
            margin_before = pos.iso if iso else None
            realized_before = pos.realized
            for px, q in self._levels(spec, side, bankrupt, qty):
                take = min(q, o.remaining)
                if take <= 0:
                    break
                self._fill(acc, o, px, take, False, now, events)
            if o.remaining > 0:     # the insurance fund takes the rest over at the bankruptcy price
                self._fill(acc, o, bankrupt, o.remaining, False, now, events)
            pos.margin_call = False
            closed.append((spec, o, (margin_before + pos.realized - realized_before) if iso else None))
            self._announce_liquidation(o, now)
        # cross: what is left of the cross wallet once every position is closed pays (or is made good)
        cross_left = acc.cross_wallet(closed[0][0].margin_asset) if closed else ZERO
        for spec, o, iso_left in closed:
            asset = spec.margin_asset
            left = iso_left if iso_left is not None else cross_left
            fee = (o.cum_quote * Decimal(spec.liquidation_fee)).quantize(_Q8, rounding=ROUND_HALF_UP)
            clear = -min(fee, left) if left > 0 else -left
            if iso_left is None:
                cross_left += clear
            if clear:
                acc.wallet[asset] += clear
                acc.update_time = now
                self._income(acc, spec.symbol, "INSURANCE_CLEAR", clear, asset, now, None)
                events.append(self._account_update(acc, spec, None, now, "INSURANCE_CLEAR", bc=clear))
        acc.cross_margin_call.clear()

    def _announce_liquidation(self, o: Order, now: int) -> None:
        """The liquidation as the public forceOrder streams show it (no account, no order id)."""
        if not self.force_order_listeners:
            return
        spec = o.spec
        ev = {"e": "forceOrder", "E": now, "o": {
            "s": spec.symbol, "S": o.side, "o": "LIMIT", "f": "IOC", "q": _qty(spec, o.orig_qty),
            "p": _price(spec, o.price), "ap": _price(spec, o.avg_price), "X": o.status,
            "l": _qty(spec, o.executed_qty), "z": _qty(spec, o.executed_qty), "T": now}}
        for fn in tuple(self.force_order_listeners):
            fn(ev)

    # ------------------------------------------------------------------------------------ account views

    def _position_row(self, acc: Account, sym: str, side: str, version: int) -> dict:
        spec = self.specs[sym]
        pos = acc.positions.get((sym, side)) or Position(sym, side)
        iso = acc.isolated(sym)
        mark = self.mark(spec)
        up = self.upnl(pos)
        notional = pos.amt * mark
        lev = self._lev(acc, sym)
        im = abs(notional) / lev
        mm = abs(notional) * self._mmr
        orders = [o for o in acc.open_orders.get(sym, {}).values() if o.position_side == side]
        bid_n = sum((o.remaining * o.price for o in orders if o.side == "BUY"), ZERO)
        ask_n = sum((o.remaining * o.price for o in orders if o.side == "SELL"), ZERO)
        ord_im = sum((o.remaining * o.price for o in orders if not o.reduces), ZERO) / lev
        # isolatedMargin is the isolated wallet plus the position's unrealized PnL (0 for a cross position)
        iso_wallet, iso_margin = (q8(pos.iso), q8(pos.iso + up)) if iso and pos.amt else ("0", "0")
        common = {"symbol": sym, "positionAmt": norm(pos.amt), "entryPrice": pnorm(pos.entry),
                  "breakEvenPrice": pnorm(self._break_even(pos)), "markPrice": q8(mark),
                  "unRealizedProfit": q8(up), "liquidationPrice": pnorm(self._liq_price(acc, pos))}
        if version == 2:
            return {**common, "leverage": str(int(lev)), "maxNotionalValue": "1000000",
                    "marginType": "isolated" if iso else "cross", "isolatedMargin": iso_margin,
                    "isAutoAddMargin": "false", "positionSide": side, "notional": q8(notional),
                    "isolatedWallet": iso_wallet, "updateTime": pos.update_time}
        return {"symbol": sym, "positionSide": side, **{k: v for k, v in common.items() if k != "symbol"},
                "isolatedMargin": iso_margin, "notional": q8(notional), "marginAsset": spec.margin_asset,
                "isolatedWallet": iso_wallet, "initialMargin": q8(im + ord_im), "maintMargin": q8(mm),
                "positionInitialMargin": q8(im), "openOrderInitialMargin": q8(ord_im), "adl": 0,
                "bidNotional": q8(bid_n), "askNotional": q8(ask_n), "updateTime": pos.update_time}

    def position_risk(self, key: str, params: Mapping[str, str], version: int = 3) -> list[dict]:
        """GET /fapi/v2|v3/positionRisk: a row per symbol and position side (BOTH; LONG and SHORT in hedge mode)."""
        with self.lock:
            acc = self.account(key)
            sym = params.get("symbol")
            rows = [(s.symbol, side) for s in ([self.spec(sym)] if sym else self.catalog)
                    if sym or s.is_trading for side in acc.sides]
            if version == 3 and not sym:     # v3: "only symbol that has position or open orders will be returned"
                rows = [(s, side) for s, side in rows if self.position_amt(acc, s, side) or
                        any(o.position_side == side for o in acc.open_orders.get(s, {}).values())]
                rows.sort()
            return [self._position_row(acc, s, side, version) for s, side in rows]

    def balances(self, key: str) -> list[dict]:
        """GET /fapi/v2|v3/balance rows."""
        with self.lock:
            acc = self.account(key)
            out = []
            for asset, wb in acc.wallet.items():
                avail = self.available_balance(acc, asset)
                out.append({"accountAlias": "SgsR", "asset": asset, "balance": q8(wb),
                            "crossWalletBalance": q8(acc.cross_wallet(asset)),
                            "crossUnPnl": q8(self.unrealized(acc, asset, True)), "availableBalance": q8(avail),
                            "maxWithdrawAmount": q8(max(ZERO, min(wb, avail))), "marginAvailable": True,
                            "updateTime": acc.update_time})
            return out

    def account_info(self, key: str, version: int = 3) -> dict:
        """GET /fapi/v2|v3/account. walletBalance is the total; crossWalletBalance and crossUnPnl leave out what
        isolated positions hold and gain; availableBalance is what the cross side can still use."""
        with self.lock:
            acc = self.account(key)
            assets = []
            tot = {k: ZERO for k in ("im", "mm", "wb", "up", "pim", "oim", "avail", "cw", "cup")}
            for asset, wb in acc.wallet.items():
                up = self.unrealized(acc, asset)
                cw, cup = acc.cross_wallet(asset), self.unrealized(acc, asset, True)
                pos_im, ord_im = self.initial_margin(acc, asset)
                mm = sum((self._maint(p) for p in self._held(acc, asset, False)), ZERO)
                avail = self.available_balance(acc, asset)
                assets.append({"asset": asset, "walletBalance": q8(wb), "unrealizedProfit": q8(up),
                               "marginBalance": q8(wb + up), "maintMargin": q8(mm),
                               "initialMargin": q8(pos_im + ord_im), "positionInitialMargin": q8(pos_im),
                               "openOrderInitialMargin": q8(ord_im), "crossWalletBalance": q8(cw),
                               "crossUnPnl": q8(cup), "availableBalance": q8(avail),
                               "maxWithdrawAmount": q8(max(ZERO, min(wb, avail))),
                               "updateTime": acc.update_time})
                if asset == "USDT":   # Binance totals are in USDT; other margin assets would need a rate
                    for k, v in (("im", pos_im + ord_im), ("mm", mm), ("wb", wb), ("up", up), ("pim", pos_im),
                                 ("oim", ord_im), ("avail", avail), ("cw", cw), ("cup", cup)):
                        tot[k] += v
            positions = []
            # "only BOTH positions will be returned with One-way mode; only LONG and SHORT positions will be
            # returned with Hedge mode"
            for (sym, side), p in sorted(acc.positions.items()):
                if side not in acc.sides or (version == 3 and not p.amt):
                    continue
                spec = self.specs[sym]
                iso = acc.isolated(sym) and p.amt
                notional = p.amt * self.mark(spec)
                positions.append({"symbol": sym, "positionSide": side, "positionAmt": norm(p.amt),
                                  "unrealizedProfit": q8(self.upnl(p)),
                                  "isolatedMargin": q8(p.iso + self.upnl(p)) if iso else "0",
                                  "notional": q8(notional), "isolatedWallet": q8(p.iso) if iso else "0",
                                  "initialMargin": q8(abs(notional) / self._lev(acc, sym)),
                                  "maintMargin": q8(self._maint(p)), "updateTime": p.update_time})
            body = {"totalInitialMargin": q8(tot["im"]), "totalMaintMargin": q8(tot["mm"]),
                    "totalWalletBalance": q8(tot["wb"]), "totalUnrealizedProfit": q8(tot["up"]),
                    "totalMarginBalance": q8(tot["wb"] + tot["up"]),
                    "totalPositionInitialMargin": q8(tot["pim"]), "totalOpenOrderInitialMargin": q8(tot["oim"]),
                    "totalCrossWalletBalance": q8(tot["cw"]), "totalCrossUnPnl": q8(tot["cup"]),
                    "availableBalance": q8(tot["avail"]),
                    "maxWithdrawAmount": q8(max(ZERO, min(tot["wb"], tot["avail"]))),
                    "assets": assets, "positions": positions}
            if version == 2:
                body = {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                        "updateTime": 0, "multiAssetsMargin": acc.multi_assets, "tradeGroupId": -1, **body}
            return body


class ExchangeTimers:
    """The exchange's clock thread: countdownCancelAll deadlines and funding settlement."""

    def __init__(self, exchange: Exchange):
        self.exchange = exchange
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="venue-exchange-timers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.exchange.cfg.timer_period_s
        while not self._stop.wait(period):
            try:
                self.exchange.run_timers()
            except Exception:      # a bug must show, but must not stop countdowns and funding for good
                traceback.print_exc(file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
