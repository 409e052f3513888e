"""The venue's running margin totals against a full walk, after every step of a random trading session.

The exchange keeps per-account totals (Ledger) so that a new order's margin check does not walk every position and
open order. Here a real Exchange on a hand-set book goes through a random sequence of what changes them: orders that
rest, cross or fill later on a tick, partial fills, cancels, amendments, leverage changes (3, 7, 33: divisions that do
not terminate), mark moves, isolated margin and its transfers, hedge mode, two accounts, two margin assets,
liquidations. After every step each figure must equal, to the last digit, the same figure computed from scratch by
walking positions and open orders in exact rational arithmetic and rounding once to the default 28 digits.
"""
from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Context, Decimal
from fractions import Fraction

import pytest

from aegis.venue.exchange import Exchange, ExchangeConfig, VenueError
from tests.test_venue_exchange import StaticBook

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BTCUSDC")
KEYS = ("a", "b")
LEVERAGES = (1, 2, 3, 5, 7, 10, 20, 33, 50, 125)


def rounded(f: Fraction) -> Decimal:
    return Context().divide(Decimal(f.numerator), Decimal(f.denominator))


def book_mark(ex: Exchange, book: StaticBook, sym: str) -> Decimal:
    tick = ex.specs[sym].tick
    return (Decimal(repr(float(book.mark_price(sym)))) / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick


def walk(ex: Exchange, book: StaticBook, acc, asset: str) -> dict[str, Fraction]:
    """Every figure from the positions and open orders as they are now, exactly."""
    f = {k: Fraction(0) for k in ("iso_wallet", "up_cross", "up_iso", "im_cross", "im_iso", "im_orders")}
    for p in acc.positions.values():
        spec = ex.specs[p.symbol]
        if spec.margin_asset != asset:
            continue
        f["iso_wallet"] += Fraction(p.iso)
        if not p.amt:
            continue
        mark = Fraction(book_mark(ex, book, p.symbol))
        lev = Fraction(acc.leverage.get(p.symbol, ex.cfg.leverage))
        side = "iso" if acc.margin_type.get(p.symbol) == "ISOLATED" else "cross"
        f["up_" + side] += Fraction(p.amt) * (mark - Fraction(p.entry))
        f["im_" + side] += abs(Fraction(p.amt)) * mark / lev
    for sym, orders in acc.open_orders.items():
        if ex.specs[sym].margin_asset != asset:
            continue
        lev = Fraction(acc.leverage.get(sym, ex.cfg.leverage))
        for o in orders.values():
            if not o.reduces:
                f["im_orders"] += (Fraction(o.orig_qty) - Fraction(o.executed_qty)) * Fraction(o.price) / lev
    f["avail"] = (Fraction(acc.wallet[asset]) - f["iso_wallet"] + f["up_cross"] - f["im_cross"] - f["im_orders"])
    return f


def check(ex: Exchange, book: StaticBook, seen: dict) -> None:
    for sym in SYMBOLS:
        assert ex.mark(ex.specs[sym]) == book_mark(ex, book, sym), sym
    for key in KEYS:
        acc = ex.account(key)
        for asset in ("USDT", "USDC"):
            f = walk(ex, book, acc, asset)
            want = {"cross_wallet": acc.wallet[asset] - rounded(f["iso_wallet"]),
                    "available": rounded(f["avail"]),
                    "unrealized_cross": rounded(f["up_cross"]),
                    "unrealized": rounded(f["up_cross"] + f["up_iso"]),
                    "im_cross": (rounded(f["im_cross"]), rounded(f["im_orders"])),
                    "im": (rounded(f["im_cross"] + f["im_iso"]), rounded(f["im_orders"]))}
            got = {"cross_wallet": acc.cross_wallet(asset),
                   "available": ex.available_balance(acc, asset),
                   "unrealized_cross": ex.unrealized(acc, asset, True),
                   "unrealized": ex.unrealized(acc, asset),
                   "im_cross": ex.initial_margin(acc, asset, True),
                   "im": ex.initial_margin(acc, asset)}
            assert got == want, (key, asset)
            # the session must reach what makes a running total hard: a figure that had to be rounded
            seen["rounded"] += Context().divide(Decimal(f["avail"].numerator), Decimal(f["avail"].denominator)) \
                != f["avail"] if f["avail"].denominator != 1 else 0


class Session:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.book = StaticBook()
        self.mid = {"BTCUSDT": Decimal("90000.0"), "ETHUSDT": Decimal("3000.00"), "BTCUSDC": Decimal("90000.0")}
        for sym in SYMBOLS:
            self.quote(sym, self.mid[sym])
        clock = iter(range(1_700_000_000_000, 1_800_000_000_000))
        self.ex = Exchange(self.book, cfg=ExchangeConfig(api_keys={k: "s" + k for k in KEYS},
                                                         initial_balances={"USDT": "2000", "USDC": "1500"}),
                           clock_ms=lambda: next(clock))
        self.seen = {k: 0 for k in ("rounded", "rejected", "hedge", "isolated", "tick_fills", "liquidated",
                                    "resting", "positions", "two_accounts")}

    def quote(self, sym: str, mid: Decimal) -> None:
        tick = Decimal("0.1") if sym.startswith("BTC") else Decimal("0.01")
        levels = [(float(mid - tick * i), round(self.rng.uniform(0.002, 0.2), 3)) for i in range(5)]
        asks = [(float(mid + tick * (i + 1)), round(self.rng.uniform(0.002, 0.2), 3)) for i in range(5)]
        # the mark is the mid most of the time, off it sometimes (a mark between the quotes or away from them)
        mark = float(mid) if self.rng.random() < 0.7 else float(mid + tick * self.rng.randint(-3, 3)) + float(tick) / 2
        self.book.set(sym, levels, asks, mark=mark)

    def side_params(self, acc, side: str) -> dict:
        if acc.dual_side:
            return {"positionSide": self.rng.choice(("LONG", "SHORT"))}
        return {"reduceOnly": "true"} if self.rng.random() < 0.15 else {}

    def liquidate(self) -> None:
        """What the exchange's timer does after a move."""
        before = sum(len(a.liquidations) for a in self.ex.accounts.values())
        self.ex.check_liquidations()
        self.seen["liquidated"] += sum(len(a.liquidations) for a in self.ex.accounts.values()) > before

    def flatten(self, key: str, sym: str) -> None:
        acc = self.ex.account(key)
        self.ex.cancel_all(key, {"symbol": sym})
        for (s, ps), pos in list(acc.positions.items()):
            if s == sym and pos.amt:
                p = {"positionSide": ps} if acc.dual_side else {"reduceOnly": "true"}
                self.ex.place_order(key, {"symbol": s, "side": "SELL" if pos.amt > 0 else "BUY", "type": "MARKET",
                                          "quantity": str(abs(pos.amt)), **p})

    def step(self) -> None:
        rng, ex = self.rng, self.ex
        key = rng.choice(KEYS)
        acc = ex.account(key)
        sym = rng.choice(SYMBOLS)
        spec = ex.specs[sym]
        tick = spec.tick
        op = rng.choices(("move", "limit", "market", "cancel", "modify", "leverage", "margin_type", "mode",
                          "transfer", "flatten"), weights=(20, 25, 10, 8, 8, 6, 4, 2, 4, 4))[0]
        side = rng.choice(("BUY", "SELL"))
        qty = Decimal(rng.randint(1, 40)) * Decimal("0.001") * (30 if sym == "ETHUSDT" else 1)
        try:
            if op == "move":
                # mostly small moves; now and then 8% at once, which liquidates the more leveraged positions
                if rng.random() < 0.15:
                    self.mid[sym] += (self.mid[sym] * Decimal("0.08")).quantize(tick) * rng.choice((-1, 1))
                else:
                    self.mid[sym] += tick * rng.randint(-400, 400)
                filled = sum(len(o) for o in acc.open_orders.values())
                self.quote(sym, self.mid[sym])
                self.seen["tick_fills"] += filled > sum(len(o) for o in acc.open_orders.values())
                self.liquidate()
            elif op == "limit":
                off = rng.randint(-3, 60) * (-1 if side == "BUY" else 1)
                px = self.mid[sym] + tick * off if side == "SELL" else self.mid[sym] - tick * -off
                tif = rng.choice(("GTC", "GTC", "GTC", "IOC", "GTX"))
                ex.place_order(key, {"symbol": sym, "side": side, "type": "LIMIT", "timeInForce": tif,
                                     "quantity": str(qty), "price": str(px), **self.side_params(acc, side)})
            elif op == "market":
                ex.place_order(key, {"symbol": sym, "side": side, "type": "MARKET", "quantity": str(qty),
                                     **self.side_params(acc, side)})
            elif op in ("cancel", "modify"):
                orders = [o for os in acc.open_orders.values() for o in os.values()]
                if not orders:
                    return
                o = rng.choice(orders)
                p = {"symbol": o.symbol, "orderId": str(o.order_id)}
                if op == "cancel":
                    ex.cancel_order(key, p)
                else:
                    q = o.orig_qty + o.spec.step * rng.randint(-2, 5)
                    ex.modify_order(key, {**p, "side": o.side, "quantity": str(q),
                                          "price": str(o.price + o.spec.tick * rng.randint(-20, 20))})
            elif op == "leverage":
                ex.set_leverage(key, {"symbol": sym, "leverage": str(rng.choice(LEVERAGES))})
            elif op == "margin_type":
                ex.set_margin_type(key, {"symbol": sym, "marginType": rng.choice(("ISOLATED", "CROSSED"))})
            elif op == "mode":
                for s in SYMBOLS:      # the mode changes only with no position and no open order
                    self.flatten(key, s)
                ex.set_position_mode(key, {"dualSidePosition": "false" if acc.dual_side else "true"})
            elif op == "transfer":
                ps = {"positionSide": rng.choice(("LONG", "SHORT"))} if acc.dual_side else {}
                ex.position_margin(key, {"symbol": sym, "amount": str(rng.randint(1, 50)),
                                         "type": rng.choice("12"), **ps})
            elif op == "flatten":
                self.flatten(key, sym)
        except VenueError:
            self.seen["rejected"] += 1
        self.seen["hedge"] += any(ex.account(k).dual_side for k in KEYS)
        self.seen["isolated"] += any(p.amt and a.isolated(p.symbol) for a in ex.accounts.values()
                                     for p in a.positions.values())
        self.seen["resting"] += any(a.open_orders.get(s) for a in ex.accounts.values() for s in SYMBOLS)
        self.seen["positions"] += sum(1 for a in ex.accounts.values() for p in a.positions.values() if p.amt) >= 3
        self.seen["two_accounts"] += all(any(p.amt for p in ex.account(k).positions.values()) for k in KEYS)


@pytest.mark.parametrize("seed", [1, 2, 4, 5])
def test_margin_totals_equal_a_full_walk_after_every_step(seed):
    s = Session(seed)
    for _ in range(800):
        s.step()
        check(s.ex, s.book, s.seen)
    # the session went through what it is meant to test
    assert all(v > 0 for v in s.seen.values()), s.seen
