"""Conditional orders of the venue: Binance's Algo Order API (algoType CONDITIONAL, since 2025-12-09).

STOP_MARKET / TAKE_PROFIT_MARKET / STOP / TAKE_PROFIT / TRAILING_STOP_MARKET wait off the book. On every market tick
of their symbol the trigger price (workingType MARK_PRICE: the mark; CONTRACT_PRICE: the last trade) is compared
with the order's triggerPrice; when it is crossed the order becomes a MARKET (the *_MARKET types) or LIMIT order
(STOP / TAKE_PROFIT) placed through the exchange's normal order path, so from then on it is an ordinary order with
every rule of one (filters, reduce-only, margin). closePosition closes whatever position exists at that moment.
priceProtect holds the trigger while mark and last price differ by more than the symbol's triggerProtect.

Lifecycle on the user stream (ALGO_UPDATE, X): NEW -> TRIGGERING -> TRIGGERED (ai = the new order's id) ->
FINISHED when that order is final; CANCELED; REJECTED (rm = why) when the order it becomes is refused; EXPIRED
when a closePosition order triggers with no position. Shapes follow Binance's "New Algo Order (TRADE)" page and
the ALGO_UPDATE event page (from Binance's public documentation; our reference only lists the field names).
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Mapping

from aegis.venue.exchange import Account, Exchange, VenueError, fixed, mandatory, not_required, side_and_type

TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET")
_MARKET_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
_OPEN = ("NEW", "TRIGGERING")
_CID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
MAX_OPEN_ALGO = 200          # "The conditional order limits is 200 across all symbols"
FIRST_ALGO_ID = 2_146_760


class AlgoOrder:
    __slots__ = ("algo_id", "client_id", "account", "spec", "side", "type", "tif", "qty", "price", "trigger",
                 "working", "price_match", "close_position", "price_protect", "reduce_only", "activate",
                 "callback", "stp", "gtd", "status", "create_time", "update_time", "trigger_time", "actual_id",
                 "actual_price", "actual_qty", "extreme", "activated", "reason", "position_side")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    @property
    def symbol(self) -> str:
        return self.spec.symbol


def _bool(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return False
    low = raw.lower()
    if low not in ("true", "false"):
        raise VenueError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return low == "true"


class AlgoEngine:
    def __init__(self, exchange: Exchange):
        self.ex = exchange
        self._next_id = FIRST_ALGO_ID
        self._open: dict[str, dict[int, AlgoOrder]] = {}              # symbol -> algoId -> open algo order
        self._by_account: dict[str, dict[int, AlgoOrder]] = {}        # every algo order of an account
        self._watch: dict[tuple[str, int], AlgoOrder] = {}             # (symbol, actual orderId) -> TRIGGERED algo
        market = exchange.market
        if market is not None and hasattr(market, "add_tick_listener"):
            market.add_tick_listener(self.on_tick)
        for key in exchange.accounts:
            exchange.add_listener(key, self._on_account_event)

    # ---------------------------------------------------------------------------------------------- json

    def _px(self, a: AlgoOrder, d: Decimal | None) -> str:
        return fixed(d, a.spec.price_precision) if d is not None else ""

    def algo_json(self, a: AlgoOrder, query: bool = False) -> dict:
        spec = a.spec
        d = {"algoId": a.algo_id, "clientAlgoId": a.client_id, "algoType": "CONDITIONAL", "orderType": a.type,
             "symbol": spec.symbol, "side": a.side, "positionSide": a.position_side, "timeInForce": a.tif,
             "quantity": fixed(a.qty, spec.quantity_precision) if a.qty is not None else "0",
             "algoStatus": a.status, "triggerPrice": self._px(a, a.trigger) or "0",
             "price": self._px(a, a.price) or "0", "icebergQuantity": None, "selfTradePreventionMode": a.stp,
             "workingType": a.working, "priceMatch": a.price_match, "closePosition": a.close_position,
             "priceProtect": a.price_protect, "reduceOnly": a.reduce_only,
             "activatePrice": self._px(a, a.activate), "callbackRate": str(a.callback) if a.callback else "",
             "createTime": a.create_time, "updateTime": a.update_time, "triggerTime": a.trigger_time,
             "goodTillDate": a.gtd}
        if query:
            d["actualOrderId"] = str(a.actual_id) if a.actual_id else ""
            d["actualPrice"] = self._px(a, a.actual_price) if a.actual_price else ""
        return d

    def _event(self, a: AlgoOrder, now: int) -> dict:
        spec = a.spec
        return {"e": "ALGO_UPDATE", "T": now, "E": now, "o": {
            "caid": a.client_id, "aid": a.algo_id, "at": "CONDITIONAL", "o": a.type, "s": spec.symbol, "S": a.side,
            "ps": a.position_side, "f": a.tif, "q": fixed(a.qty, spec.quantity_precision) if a.qty is not None else "0",
            "X": a.status, "ai": str(a.actual_id) if a.actual_id else "",
            "ap": self._px(a, a.actual_price) if a.actual_price else "0",
            "aq": fixed(a.actual_qty, spec.quantity_precision) if a.actual_qty else "0",
            "act": self._px(a, a.activate) or "0", "tp": self._px(a, a.trigger) or "0",
            "p": self._px(a, a.price) or "0", "V": a.stp, "wt": a.working, "pm": a.price_match,
            "cp": a.close_position, "pP": a.price_protect, "R": a.reduce_only, "tt": a.trigger_time,
            "gtd": a.gtd, "rm": a.reason or ""}}

    def _set(self, a: AlgoOrder, status: str, now: int, events: list[dict], reason: str = "") -> None:
        a.status = status
        a.update_time = now
        if reason:
            a.reason = reason
        if status not in _OPEN:
            self._open.get(a.symbol, {}).pop(a.algo_id, None)
        events.append(self._event(a, now))

    # ---------------------------------------------------------------------------------------------- REST / ws

    def place(self, key: str, params: Mapping[str, str]) -> dict:
        """POST /fapi/v1/algoOrder, ws-fapi algoOrder.place."""
        ex = self.ex
        with ex.lock:
            acc = ex.account(key)
            a = self._validate(acc, params)
            a.algo_id = self._next_id
            self._next_id += 1
            self._open.setdefault(a.symbol, {})[a.algo_id] = a
            self._by_account.setdefault(key, {})[a.algo_id] = a
            ex.emit(acc, [self._event(a, a.create_time)])
            return self.algo_json(a)

    def _validate(self, acc: Account, p: Mapping[str, str]) -> AlgoOrder:
        ex = self.ex
        algo_type = p.get("algoType")
        if not algo_type:
            raise mandatory("algoType")
        if algo_type != "CONDITIONAL":
            raise VenueError(-1130, "Data sent for parameter 'algoType' is not valid.")
        spec = ex.spec(p.get("symbol"))
        side, otype = side_and_type(p)
        if otype not in TYPES:
            raise VenueError(-1116, "Invalid orderType.")
        ps = ex.position_side(acc, p)
        if acc.dual_side and p.get("reduceOnly"):
            raise not_required("reduceOnly")
        # hedge mode: SELL of LONG / BUY of SHORT close; a closePosition order must be one of those
        closing_side = ps == "BOTH" or (ps == "LONG") == (side == "SELL")
        working = p.get("workingType") or "CONTRACT_PRICE"
        if working not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise VenueError(-1130, "Data sent for parameter 'workingType' is not valid.")
        close_position = _bool(p, "closePosition")
        reduce_only = _bool(p, "reduceOnly")
        price_protect = _bool(p, "priceProtect")
        qty = ex.decimal_param(p, "quantity")
        price = ex.decimal_param(p, "price")
        trigger = ex.decimal_param(p, "triggerPrice")
        activate = ex.decimal_param(p, "activatePrice")
        callback = ex.decimal_param(p, "callbackRate")
        tif = p.get("timeInForce")
        market_type = otype in _MARKET_TYPES
        if close_position:
            if otype not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise not_required("closePosition")
            if qty is not None:
                raise not_required("quantity")
            if p.get("reduceOnly"):
                raise not_required("reduceOnly")
            if not closing_side:
                raise VenueError(-2022, "ReduceOnly Order is rejected.")
        elif qty is None:
            raise mandatory("quantity")
        if market_type:
            if price is not None:
                raise not_required("price")
            if tif:
                raise not_required("timeInForce")
            tif = "GTC"
        else:
            if price is None:
                raise mandatory("price")
            tif = tif or "GTC"
            if tif not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
                raise VenueError(-1115, "Invalid timeInForce.")
        if otype == "TRAILING_STOP_MARKET":
            if trigger is not None:
                raise not_required("triggerPrice")
            if callback is None:
                raise mandatory("callbackRate")
            if not Decimal("0.1") <= callback <= Decimal("10"):
                raise VenueError(-1130, "Data sent for parameter 'callbackRate' is not valid.")
        else:
            if trigger is None:
                raise mandatory("triggerPrice")
            if activate is not None:
                raise not_required("activatePrice")
            if callback is not None:
                raise not_required("callbackRate")
        for name, px in (("triggerPrice", trigger), ("price", price), ("activatePrice", activate)):
            if px is None:
                continue
            if px <= 0:
                raise VenueError(-4001, "Price less than 0.")
            if ex.places(px) > spec.price_precision:
                raise VenueError(-1111, "Precision is over the maximum defined for this asset.")
            if (px - Decimal(spec.min_price)) % spec.tick != 0:
                raise VenueError(-4014, "Price not increased by tick size.")
        if qty is not None:
            # LOT_SIZE / MARKET_LOT_SIZE now; notional at the trigger price (no margin check before triggering)
            ex.check_filters(spec, side, "MARKET" if market_type else "LIMIT", qty,
                             None if market_type else price, True)
            ref = price if price is not None else trigger if trigger is not None else ex.mark(spec)
            if not (reduce_only or (ps != "BOTH" and closing_side)) and qty * ref < Decimal(spec.min_notional):
                raise VenueError(-4164, f"Order's notional must be no smaller than {spec.min_notional} "
                                        "(unless you choose reduce only).")
        if not spec.is_trading:
            raise VenueError(-4140, "Invalid symbol status for opening position.")
        stp = p.get("selfTradePreventionMode") or "EXPIRE_MAKER"
        if stp not in ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"):
            raise VenueError(-1130, "Data sent for parameter 'selfTradePreventionMode' is not valid.")
        pm = p.get("priceMatch") or "NONE"
        gtd = int(p["goodTillDate"]) if (p.get("goodTillDate") or "").isdigit() else 0
        cid = p.get("clientAlgoId")
        mine = self._by_account.get(acc.key, {})
        if cid is not None:
            if not _CID_RE.match(cid):
                raise VenueError(-1100, "Illegal characters found in parameter 'clientAlgoId'; legal range is "
                                        "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
            if any(x.client_id == cid and x.status in _OPEN for x in mine.values()):
                raise VenueError(-4116, "ClientOrderId is duplicated.")
        else:
            cid = ex.random_client_id()
        if sum(1 for x in mine.values() if x.status in _OPEN) >= MAX_OPEN_ALGO:
            raise VenueError(-4045, "Reach max stop order limit.")
        if close_position and any(x.close_position and x.side == side and x.symbol == spec.symbol
                                  and x.position_side == ps and x.status in _OPEN for x in mine.values()):
            raise VenueError(-4130, "An open stop or take profit order with GTE and closePosition in the direction "
                                    "is existing.")
        now = ex.clock_ms()
        a = AlgoOrder(algo_id=0, client_id=cid, account=acc, spec=spec, side=side, type=otype, tif=tif, qty=qty,
                      price=price, trigger=trigger, working=working, price_match=pm, close_position=close_position,
                      price_protect=price_protect, reduce_only=reduce_only or (close_position and ps == "BOTH"),
                      position_side=ps, activate=activate,
                      callback=callback, stp=stp, gtd=gtd, status="NEW", create_time=now, update_time=now,
                      trigger_time=0, actual_id=None, actual_price=None, extreme=None, activated=False, reason="")
        if a.type != "TRAILING_STOP_MARKET" and self._crossed(a, self._price(a)):
            raise VenueError(-2021, "Order would immediately trigger.")
        return a

    def has_open(self, key: str, symbol: str | None = None) -> bool:
        """Whether the account has an open conditional order (on the symbol, or on any)."""
        return any(a.status in _OPEN and (symbol is None or a.symbol == symbol)
                   for a in self._by_account.get(key, {}).values())

    def _find(self, key: str, params: Mapping[str, str]) -> AlgoOrder | None:
        mine = self._by_account.get(key, {})
        raw = params.get("algoId")
        if raw:
            if not raw.isdigit():
                raise mandatory("algoId")
            return mine.get(int(raw))
        cid = params.get("clientAlgoId")
        if cid:
            found = [a for a in mine.values() if a.client_id == cid]
            return max(found, key=lambda a: a.algo_id) if found else None
        raise VenueError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")

    def cancel(self, key: str, params: Mapping[str, str]) -> dict:
        """DELETE /fapi/v1/algoOrder, ws-fapi algoOrder.cancel."""
        ex = self.ex
        with ex.lock:
            acc = ex.account(key)
            a = self._find(key, params)
            if a is None or a.status not in _OPEN:
                raise VenueError(-2011, "Unknown order sent.")
            events: list[dict] = []
            self._set(a, "CANCELED", ex.clock_ms(), events)
            ex.emit(acc, events)
            return {"algoId": a.algo_id, "clientAlgoId": a.client_id, "code": "200", "msg": "success"}

    def cancel_all(self, key: str, params: Mapping[str, str]) -> dict:
        """DELETE /fapi/v1/algoOpenOrders."""
        ex = self.ex
        with ex.lock:
            acc = ex.account(key)
            spec = ex.spec(params.get("symbol"))
            now = ex.clock_ms()
            events: list[dict] = []
            for a in sorted(self._open.get(spec.symbol, {}).values(), key=lambda x: x.algo_id):
                if a.account is acc:
                    self._set(a, "CANCELED", now, events)
            ex.emit(acc, events)
            return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def query(self, key: str, params: Mapping[str, str]) -> dict:
        """GET /fapi/v1/algoOrder."""
        with self.ex.lock:
            self.ex.account(key)
            a = self._find(key, params)
            if a is None:
                raise VenueError(-2013, "Order does not exist.")
            return self.algo_json(a, query=True)

    def open_orders(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/openAlgoOrders (symbol, algoType, algoId optional)."""
        with self.ex.lock:
            self.ex.account(key)
            sym = params.get("symbol")
            if sym:
                sym = self.ex.spec(sym).symbol
            at = params.get("algoType")
            if at and at != "CONDITIONAL":
                raise VenueError(-1130, "Data sent for parameter 'algoType' is not valid.")
            aid = params.get("algoId")
            rows = [a for a in self._by_account.get(key, {}).values() if a.status in _OPEN
                    and (not sym or a.symbol == sym) and (not aid or str(a.algo_id) == aid)]
            return [self.algo_json(a, query=True) for a in sorted(rows, key=lambda a: a.algo_id)]

    def all_orders(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/allAlgoOrders: every algo order of a symbol, oldest first (default 500, max 1000)."""
        with self.ex.lock:
            self.ex.account(key)
            spec = self.ex.spec(params.get("symbol"))
            raw = params.get("limit") or "500"
            if not raw.isdigit() or not 1 <= int(raw) <= 1000:
                raise VenueError(-1130, "Data sent for parameter 'limit' is not valid.")
            rows = sorted((a for a in self._by_account.get(key, {}).values() if a.symbol == spec.symbol),
                          key=lambda a: a.algo_id)
            aid = params.get("algoId")
            if aid and aid.isdigit():
                rows = [a for a in rows if a.algo_id >= int(aid)]
            start, end = params.get("startTime"), params.get("endTime")
            if start and start.isdigit():
                rows = [a for a in rows if a.create_time >= int(start)]
            if end and end.isdigit():
                rows = [a for a in rows if a.create_time <= int(end)]
            page = int(params["page"]) if (params.get("page") or "").isdigit() and int(params["page"]) > 0 else 1
            n = int(raw)
            return [self.algo_json(a, query=True) for a in rows[(page - 1) * n: page * n]]

    # ---------------------------------------------------------------------------------------------- triggers

    def _price(self, a: AlgoOrder) -> Decimal:
        ex = self.ex
        if a.working == "MARK_PRICE":
            return ex.mark(a.spec)
        return ex.grid(ex.market.last_price(a.symbol), a.spec.tick)

    def _crossed(self, a: AlgoOrder, px: Decimal) -> bool:
        if a.type == "TRAILING_STOP_MARKET":
            if not a.activated:
                if a.activate is None or (px >= a.activate if a.side == "SELL" else px <= a.activate):
                    a.activated = True
                    a.extreme = px
                return False
            if a.side == "SELL":
                a.extreme = max(a.extreme, px)
                return px <= a.extreme * (1 - a.callback / 100)
            a.extreme = min(a.extreme, px)
            return px >= a.extreme * (1 + a.callback / 100)
        stop = a.type in ("STOP", "STOP_MARKET")
        if a.side == "BUY":
            return px >= a.trigger if stop else px <= a.trigger
        return px <= a.trigger if stop else px >= a.trigger

    def _protected(self, a: AlgoOrder) -> bool:
        """priceProtect: hold while mark and last price differ by more than the symbol's triggerProtect."""
        if not a.price_protect:
            return False
        mark = self.ex.mark(a.spec)
        last = self.ex.grid(self.ex.market.last_price(a.symbol), a.spec.tick)
        return mark > 0 and abs(mark - last) / mark > Decimal(a.spec.trigger_protect)

    def on_tick(self, symbol: str, bid_px: float, ask_px: float, ts_ms: int) -> None:
        if not self._open.get(symbol):
            return
        ex = self.ex
        with ex.lock:
            for a in sorted(self._open.get(symbol, {}).values(), key=lambda x: x.algo_id):
                if a.status != "NEW":
                    continue
                if self._crossed(a, self._price(a)) and not self._protected(a):
                    self._trigger(a)

    def _trigger(self, a: AlgoOrder) -> None:
        ex = self.ex
        acc = a.account
        now = ex.clock_ms()
        a.trigger_time = now
        events: list[dict] = []
        self._set(a, "TRIGGERING", now, events)
        ex.emit(acc, events)
        qty = a.qty
        if a.close_position:
            amt = ex.position_amt(acc, a.symbol, a.position_side)
            closes = amt != 0 and (amt > 0) == (a.side == "SELL")
            if not closes:
                events = []
                self._set(a, "EXPIRED", now, events, reason="No position to close")
                ex.emit(acc, events)
                return
            qty = abs(amt)
        params = {"symbol": a.symbol, "side": a.side, "quantity": format(qty, "f"),
                  "newOrderRespType": "RESULT", "selfTradePreventionMode": a.stp}
        if a.position_side != "BOTH":
            params["positionSide"] = a.position_side
        if a.type in _MARKET_TYPES:
            params["type"] = "MARKET"
        else:
            params.update(type="LIMIT", price=format(a.price, "f"), timeInForce=a.tif)
            if a.tif == "GTD" and a.gtd:
                params["goodTillDate"] = str(a.gtd)
        if a.reduce_only:
            params["reduceOnly"] = "true"
        if not ex.client_id_in_use(acc, a.symbol, a.client_id):
            params["newClientOrderId"] = a.client_id
        try:
            res = ex.place_order(acc.key, params)
        except VenueError as e:
            events = []
            self._set(a, "REJECTED", ex.clock_ms(), events, reason=e.msg)
            ex.emit(acc, events)
            return
        a.actual_id = res["orderId"]
        a.actual_price = Decimal(res["avgPrice"]) if Decimal(res["avgPrice"]) else None
        a.actual_qty = Decimal(res["executedQty"])
        events = []
        self._set(a, "TRIGGERED", ex.clock_ms(), events)
        if res["status"] in ("NEW", "PARTIALLY_FILLED"):
            self._watch[(a.symbol, a.actual_id)] = a
        else:
            self._set(a, "FINISHED", ex.clock_ms(), events)
        ex.emit(acc, events)

    def _on_account_event(self, ev: dict) -> None:
        """The LIMIT order a STOP / TAKE_PROFIT became reached a final state: the algo order is FINISHED."""
        if ev.get("e") != "ORDER_TRADE_UPDATE" or not self._watch:
            return
        o = ev["o"]
        if o["X"] in ("NEW", "PARTIALLY_FILLED"):
            return
        a = self._watch.pop((o["s"], o["i"]), None)
        if a is None:
            return
        if o["ap"] not in ("0", ""):
            a.actual_price = Decimal(o["ap"])
        if o["z"] not in ("0", ""):
            a.actual_qty = Decimal(o["z"])
        self.ex.emit(a.account, [self._event_after(a, "FINISHED", ev["E"])])

    def _event_after(self, a: AlgoOrder, status: str, now: int) -> dict:
        events: list[dict] = []
        self._set(a, status, now, events)
        return events[0]


__all__ = ["AlgoEngine", "AlgoOrder", "TYPES"]
