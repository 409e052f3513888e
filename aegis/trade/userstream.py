"""User data stream: listenKey lifecycle, fills -> journal -> Brain, positions/PnL/fees, reconciliation.

One thread. Loop: POST /fapi/v1/listenKey -> connect <ws_market_url>/private/ws/<listenKey> -> reconcile over REST
(GET /fapi/v1/openOrders, per-order GET /fapi/v1/order for orders the journal thinks are open but the exchange
no longer lists, GET /fapi/v3/positionRisk) -> read events; PUT /fapi/v1/listenKey every keepalive interval.
The stream is connected BEFORE reconciling so nothing falls in between; what arrives twice is deduplicated.
On `listenKeyExpired`, a -1125 answer to the keep-alive, a socket error or silence past the 24 h cut: get a key
again (POST returns the live one or a new one), reconnect (exponential back-off, 0.2 s .. 10 s) and reconcile.

Every ORDER_TRADE_UPDATE is journaled before anything else happens with it. Trades are deduplicated by
(symbol, orderId, tradeId) against everything the journal has ever recorded, so a replayed or repeated event (reconnect,
restart, reconciliation) never counts twice. Trades missed while disconnected cannot be replayed (there is no
userTrades endpoint on the embedded venue and the stream does not resend); reconciliation finds them as an
executedQty larger than the journal's and records the difference as one "gap" fill (tradeId = -cum steps, so the
same gap is never booked twice), and the positionRisk snapshot then makes the position exact (STATUS_SNAPSHOT).
Events go to the Brain as FILL records through aegis.trade.sender.FillQueue (the Brain drains it first in its loop).
TRADE_LITE is ignored: it lacks fee, realized PnL and order status, and the ORDER_TRADE_UPDATE follows at once.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import orjson

from aegis.core.records import (FILL_DTYPE, SIDE_BUY, SIDE_SELL, STATUS_CANCELED, STATUS_EXPIRED, STATUS_FILLED,
                           STATUS_NEW, STATUS_PARTIALLY_FILLED, STATUS_REJECTED, STATUS_SNAPSHOT)

log = logging.getLogger("aegis.trade.userstream")

STATUS_CODES = {"NEW": STATUS_NEW, "PARTIALLY_FILLED": STATUS_PARTIALLY_FILLED, "FILLED": STATUS_FILLED,
                "CANCELED": STATUS_CANCELED, "EXPIRED": STATUS_EXPIRED, "EXPIRED_IN_MATCH": STATUS_EXPIRED,
                "REJECTED": STATUS_REJECTED}
FINAL = ("FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED")


@dataclass
class Position:
    qty: float = 0.0          # as the exchange reports it (ACCOUNT_UPDATE "pa", positionRisk)
    entry: float = 0.0
    unrealized: float = 0.0
    realized: float = 0.0
    fees: float = 0.0


@dataclass
class Ledger:
    """Positions, realized/unrealized PnL and fees as the exchange reports them (quote currency)."""
    positions: dict[str, Position] = field(default_factory=dict)
    balances: dict[str, float] = field(default_factory=dict)
    fills: int = 0

    def pos(self, sym: str) -> Position:
        return self.positions.setdefault(sym, Position())

    @property
    def realized(self) -> float:
        return sum(p.realized for p in self.positions.values())

    @property
    def fees(self) -> float:
        return sum(p.fees for p in self.positions.values())

    @property
    def unrealized(self) -> float:
        return sum(p.unrealized for p in self.positions.values())


def client_id_of(coid: str, prefix: str) -> int:
    """Numeric client id of one of our newClientOrderIds, -1 for anything else (manual, liquidation)."""
    if prefix and coid.startswith(prefix):
        tail = coid[len(prefix):]
        if tail.isdigit():
            return int(tail)
    return -1


class UserStream:
    def __init__(self, client, journal, state, symbol_index: dict[str, int], fills=None,
                 keepalive_interval_s: float = 1800.0, recv_timeout_s: float = 1.0, ledger: Ledger | None = None):
        self.client = client              # aegis.binance.client.BinanceClient (REST)
        self.journal = journal
        self.state = state                # aegis.trade.journal.JournalState (prefix, fills_seen, orders)
        self.symbol_index = symbol_index  # symbol name -> the Brain's integer id
        self.fills = fills                # aegis.trade.sender.FillQueue (None: Python-only, e.g. tools)
        self.keepalive_interval_s = keepalive_interval_s
        self.recv_timeout_s = recv_timeout_s
        self.ledger = ledger or Ledger()
        self.listen_key: str | None = None
        self._ws = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()     # event handling vs reconciliation
        self.connected = threading.Event()
        self.stats = {"events": 0, "fills": 0, "dup_fills": 0, "reconnects": 0, "expired": 0, "keepalives": 0,
                      "reconciles": 0, "gap_fills": 0, "bad": 0, "in_snapshot": 0}
        # Exchange time (ms) per symbol: of the newest position event applied, and of the newest positionRisk
        # snapshot adopted. A snapshot already contains every trade up to its time, including trades whose events
        # are still on their way through the socket; those must not move the position a second time.
        self.last_reconcile: dict | None = None
        self.connected_ms = 0
        self.event_ms: dict[str, int] = {}
        self.snapshot_ms: dict[str, int] = {}
        for sym, qty in getattr(state, "positions", {}).items():   # what the journal knew: compared, not trusted
            self.ledger.pos(sym).qty = qty
        self._next_keepalive = 0.0
        self.fee_rates: dict[str, tuple[float, float]] = {}   # symbol -> (maker, taker) from commissionRate
        self._fee_warned: set[str] = set()

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> "UserStream":
        self._thread = threading.Thread(target=self._run, name="aegis-userstream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._close_ws()
        if self._thread is not None:
            self._thread.join(timeout)

    def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        self.connected.clear()
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._connect()
                backoff = 0.2
                self._read_loop()
            except Exception as e:   # never let the fill path die; reconnect
                if self._stop.is_set():
                    break
                log.warning("user stream: %s; reconnecting", type(e).__name__)
            self._close_ws()
            if self._stop.is_set():
                break
            self.stats["reconnects"] += 1
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _connect(self) -> None:
        import websocket
        r = self.client.listen_key_create()
        if not r.get("ok"):
            raise ConnectionError(f"listenKey create failed: {r.get('code')} {r.get('msg')}")
        self.listen_key = r["data"]["listenKey"]
        url = f"{self.client.ep.ws_market_url}/private/ws/{self.listen_key}"
        self.connected_ms = self._exchange_ms()   # changes before this were missed, not on their way
        # a generous handshake timeout (a loaded box or a far exchange), then short reads so keep-alives and
        # stop requests are never more than recv_timeout_s away
        self._ws = websocket.create_connection(url, timeout=max(5.0, self.recv_timeout_s))
        self._ws.settimeout(self.recv_timeout_s)
        self._next_keepalive = time.monotonic() + self.keepalive_interval_s
        self.reconcile()
        self.connected.set()

    def _read_loop(self) -> None:
        import websocket
        while not self._stop.is_set():
            if time.monotonic() >= self._next_keepalive:
                if not self.keepalive():
                    return
            try:
                raw = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not raw:
                return   # closed by the server
            if self.handle_message(raw, time.monotonic_ns()) == "expired":
                return

    def keepalive(self) -> bool:
        """PUT /fapi/v1/listenKey; False when the key is gone (-1125) and the stream must be rebuilt."""
        r = self.client.listen_key_keepalive()
        self._next_keepalive = time.monotonic() + self.keepalive_interval_s
        self.stats["keepalives"] += 1
        if r.get("ok"):
            return True
        if r.get("code") == -1125:
            self.stats["expired"] += 1
            log.warning("listenKey expired (-1125 on keep-alive): recreating")
            return False
        # a network error on the PUT must not kill the stream a day later (docs/binance-notes.md, User data stream):
        # retry soon
        self._next_keepalive = time.monotonic() + min(60.0, self.keepalive_interval_s)
        return True

    # ------------------------------------------------------------------------------------------ events
    def handle_message(self, raw: bytes | str, recv_ns: int) -> str | None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.stats["bad"] += 1
            return None
        if isinstance(msg, dict) and "data" in msg and "e" not in msg:
            msg = msg["data"]    # combined-stream wrapper
        if not isinstance(msg, dict):
            self.stats["bad"] += 1
            return None
        self.stats["events"] += 1
        e = msg.get("e")
        with self._lock:
            if e == "ORDER_TRADE_UPDATE":
                self._order_update(msg, recv_ns)
            elif e == "ACCOUNT_UPDATE":
                self._account_update(msg)
            elif e == "listenKeyExpired":
                self.stats["expired"] += 1
                log.warning("listenKeyExpired: recreating the user stream")
                return "expired"
        return None

    def _order_update(self, msg: dict, recv_ns: int) -> None:
        o = msg.get("o") or {}
        sym, coid, x, status = o.get("s", ""), o.get("c", ""), o.get("x", ""), o.get("X", "")
        oid = int(o.get("i", 0))
        cid = client_id_of(coid, self.state.prefix)
        if x == "TRADE":
            tid = int(o.get("t", 0))
            t_ms = int(o.get("T", msg.get("E", 0)))
            self._book_fill(sym, cid, coid, oid, tid, o.get("S", "BUY"), o.get("L", "0"), o.get("l", "0"),
                            o.get("z", "0"), o.get("n", "0") or "0", o.get("N", ""), o.get("rp", "0") or "0",
                            status, bool(o.get("m")), t_ms, recv_ns, o.get("q", "0"),
                            bool(o.get("R")), in_snapshot=0 < t_ms <= self.snapshot_ms.get(sym, 0))
            return
        if x in ("CANCELED", "EXPIRED", "EXPIRED_IN_MATCH") or status in FINAL:
            self.journal.append("final", id=cid, coid=coid, sym=sym, oid=oid, status=status)
        elif x == "NEW":
            self.journal.append("ack", id=cid, coid=coid, sym=sym, oid=oid, status=status, src="stream")
        else:
            return
        self._push(sym, cid, oid, 0, o.get("S", "BUY"), 0.0, 0.0, float(o.get("z", 0) or 0), 0.0, 0.0,
                   STATUS_CODES.get(status, 0), False, int(o.get("T", msg.get("E", 0))), recv_ns,
                   float(o.get("q", 0) or 0), bool(o.get("R")))

    def _book_fill(self, sym, cid, coid, oid, tid, side, px, qty, cum, fee, fee_asset, rpnl, status, maker, ts_ms,
                   recv_ns, orig_qty, reduce_only, gap=False, in_snapshot=False) -> bool:
        """in_snapshot: the trade happened before the positionRisk snapshot last adopted for the symbol, so that
        position already contains it: journaled (inc) and reported to the Brain for the order's sake, with no
        quantity, so it does not move the position twice."""
        key = (sym, oid, tid)  # Binance numbers orders and trades per symbol: ids alone collide across symbols
        if key in self.state.fills_seen:
            self.stats["dup_fills"] += 1
            return False
        rec = {"k": "fill", "id": cid, "coid": coid, "sym": sym, "oid": oid, "tid": tid, "side": side, "px": px,
               "qty": qty, "cum": cum, "fee": fee, "fee_asset": fee_asset, "rpnl": rpnl, "status": status,
               "maker": maker, "ts": ts_ms}
        if gap:
            rec["gap"] = True
        if in_snapshot:
            rec["inc"] = True
            self.stats["in_snapshot"] += 1
        elif not gap and ts_ms > self.event_ms.get(sym, 0):
            # a gap fill (booked from an order query by reconcile) brings no position: the ACCOUNT_UPDATE of that
            # trade may still be on its way, so it must not count as a position event already applied
            self.event_ms[sym] = ts_ms
        self.journal.append("fill", **{k: v for k, v in rec.items() if k != "k"})   # also adds key to fills_seen
        self.stats["fills"] += 1
        if gap:
            self.stats["gap_fills"] += 1
        p = self.ledger.pos(sym)
        # quantity comes from ACCOUNT_UPDATE / positionRisk (authoritative, and ACCOUNT_UPDATE arrives BEFORE the
        # TRADE event, docs/binance-notes.md, User data events); fills carry realized PnL and fees
        p.realized += float(rpnl)
        p.fees += float(fee)
        if not gap:
            self._check_fee(sym, px, qty, fee, maker)
        self.ledger.fills += 1
        self._push(sym, cid, oid, tid, side, float(px), 0.0 if in_snapshot else float(qty), float(cum), float(fee),
                   float(rpnl), STATUS_CODES.get(status, STATUS_PARTIALLY_FILLED), maker, ts_ms, recv_ns,
                   float(orig_qty or 0), reduce_only)
        return True

    def _check_fee(self, sym, px, qty, fee, maker) -> None:
        """The fee charged against the account's commissionRate for the symbol. A mismatch (a changed fee
        tier, a BNB discount, fees in another asset) means the engine's fee assumptions are off: said once per
        symbol, counted every time."""
        rates = self.fee_rates.get(sym)
        if not rates:
            return
        expect = float(px) * float(qty) * rates[0 if maker else 1]
        if abs(float(fee) - expect) <= 1e-8 + 1e-6 * expect:
            self.stats["fee_checked"] = self.stats.get("fee_checked", 0) + 1
            return
        self.stats["fee_mismatch"] = self.stats.get("fee_mismatch", 0) + 1
        if sym not in self._fee_warned:
            self._fee_warned.add(sym)
            log.warning("%s: fee %s on a %s fill of %s @ %s, commissionRate says %.8f", sym, fee,
                        "maker" if maker else "taker", qty, px, expect)

    def _push(self, sym, cid, oid, tid, side, px, qty, cum, fee, rpnl, status, maker, ts_ms, recv_ns, orig_qty,
              reduce_only) -> None:
        if self.fills is None or sym not in self.symbol_index:
            return
        rec = np.zeros(1, FILL_DTYPE)[0]
        rec["client_id"], rec["order_id"], rec["trade_id"] = cid, oid, tid
        rec["ts"], rec["recv_ts"] = int(ts_ms) * 1_000_000, recv_ns
        rec["price"], rec["qty"], rec["cum_qty"] = px, qty, cum
        rec["fee"], rec["realized_pnl"], rec["orig_qty"] = fee, rpnl, orig_qty
        rec["symbol"] = self.symbol_index[sym]
        rec["side"] = SIDE_BUY if side == "BUY" else SIDE_SELL
        rec["status"], rec["maker"], rec["reduce_only"] = status, int(maker), int(reduce_only)
        self.fills.put(rec)

    def _account_update(self, msg: dict) -> None:
        a = msg.get("a") or {}
        for b in a.get("B", ()):
            try:
                self.ledger.balances[b["a"]] = float(b.get("wb", 0))
            except (KeyError, ValueError):
                self.stats["bad"] += 1
        t_ms = int(msg.get("T", msg.get("E", 0)) or 0)
        for p in a.get("P", ()):
            try:
                sym = p["s"]
                if 0 < t_ms <= self.snapshot_ms.get(sym, 0):
                    continue        # older than the snapshot adopted since: it would turn the position back
                pos = self.ledger.pos(sym)
                pos.entry = float(p.get("ep", 0) or 0)
                pos.unrealized = float(p.get("up", 0) or 0)
                # "pa" is authoritative for the quantity; our fill-by-fill sum must agree once the TRADE arrives
                pos.qty = float(p.get("pa", pos.qty) or 0)
                if t_ms > self.event_ms.get(sym, 0):
                    self.event_ms[sym] = t_ms
            except (KeyError, ValueError):
                self.stats["bad"] += 1

    # ------------------------------------------------------------------------------------------ reconcile
    def reconcile(self) -> dict:
        """Make the journal, the ledger and the Brain agree with the exchange (start and every reconnect)."""
        out = {"adopted": 0, "closed": 0, "gap_fills": 0, "positions": 0}
        with self._lock:
            r = self.client.open_orders()
            listed = {}
            if r.get("ok"):
                for o in r["orders"]:
                    listed[o.get("clientOrderId", "")] = o
                    cid = client_id_of(o.get("clientOrderId", ""), self.state.prefix)
                    known = self.state.orders.get(cid)
                    if cid > 0 and known is None:   # ours, but its request line was lost (host crash)
                        self.journal.append("req", id=cid, coid=o["clientOrderId"], sym=o["symbol"],
                                            side=o.get("side", "BUY"), type=o.get("type", ""),
                                            qty=o.get("origQty", "0"), px=o.get("price", "0"),
                                            ro=bool(o.get("reduceOnly")), act="new", src="reconcile")
                        known = self.state.orders.get(cid)
                    if cid > 0 and known is not None and known.status in ("PENDING", "UNKNOWN"):
                        self.journal.append("ack", id=cid, coid=o["clientOrderId"], sym=o["symbol"],
                                            oid=int(o["orderId"]), status=o.get("status", "NEW"), src="reconcile")
                        out["adopted"] += 1
            for o in list(self.state.open_orders()):
                if o.coid in listed:
                    continue
                q = self.client.query_order(o.symbol, o.coid)
                if not q.get("ok"):
                    if q.get("code") == -2013:   # never reached the exchange
                        self.journal.append("final", id=o.client_id, coid=o.coid, sym=o.symbol, oid=0,
                                            status="REJECTED", src="reconcile")
                        self._push(o.symbol, o.client_id, 0, 0, o.side, 0.0, 0.0, 0.0, 0.0, 0.0, STATUS_REJECTED,
                                   False, 0, time.monotonic_ns(), 0.0, o.reduce_only)
                        out["closed"] += 1
                    continue
                d = q["data"]
                executed = float(d.get("executedQty", 0) or 0)
                if executed > o.cum_qty + 1e-12:
                    self._gap_fill(o, d, executed)
                    out["gap_fills"] += 1
                st = d.get("status", "")
                if st in FINAL:
                    self.journal.append("final", id=o.client_id, coid=o.coid, sym=o.symbol, oid=int(d["orderId"]),
                                        status=st, src="reconcile")
                    self._push(o.symbol, o.client_id, int(d["orderId"]), 0, o.side, 0.0, 0.0, executed, 0.0, 0.0,
                               STATUS_CODES[st], False, int(d.get("updateTime", 0)), time.monotonic_ns(),
                               float(d.get("origQty", 0) or 0), o.reduce_only)
                    out["closed"] += 1
            asked_ms = self._exchange_ms()
            pr = self.client.position_risk()
            if pr.get("ok"):
                seen = set()
                for p in pr["positions"]:
                    sym = p["symbol"]
                    seen.add(sym)
                    self._snapshot(sym, float(p.get("positionAmt", 0) or 0), float(p.get("entryPrice", 0) or 0),
                                   float(p.get("unRealizedProfit", 0) or 0), int(p.get("updateTime", 0) or 0))
                    out["positions"] += 1
                for sym, pos in list(self.ledger.positions.items()):
                    if sym not in seen and pos.qty != 0.0:   # v3 lists only symbols with a position
                        # closed at some time before we asked: everything up to then is in this "no position"
                        self._snapshot(sym, 0.0, 0.0, 0.0, asked_ms)
            self.stats["reconciles"] += 1
            self.last_reconcile = out
        return out

    def _gap_fill(self, o, d, executed: float) -> None:
        """Book the part of an order that filled while we were not listening (one record per gap)."""
        missing = executed - o.cum_qty
        # avgPrice covers the whole order, so for an order that was partly journaled already this price is an
        # approximation (PnL only; the position is made exact by the positionRisk snapshot)
        price = float(d.get("avgPrice", 0) or 0)
        tid = -int(Decimal(str(executed)).scaleb(8))   # stable per (order, cum): the same gap is booked once
        self._book_fill(o.symbol, o.client_id, o.coid, int(d["orderId"]), tid, o.side, str(price), f"{missing:.10g}",
                        str(executed), "0", "", "0", d.get("status", "FILLED"), False, int(d.get("updateTime", 0)),
                        time.monotonic_ns(), d.get("origQty", "0"), o.reduce_only, gap=True)

    def _exchange_ms(self) -> int:
        """Exchange time now, as far as we know it (our clock plus the offset measured by the client)."""
        now_ms = getattr(self.client, "now_ms", None)
        return int(now_ms()) if callable(now_ms) else time.time_ns() // 1_000_000

    def _snapshot(self, sym: str, qty: float, entry: float, upnl: float, update_ms: int = 0) -> None:
        """Adopt the exchange's position. A difference is reported when nothing explains it: the exchange's last
        change to the position is one whose event we have already applied (else that event is on its way)."""
        pos = self.ledger.pos(sym)
        if abs(pos.qty - qty) > 1e-12:
            if update_ms and update_ms > max(self.event_ms.get(sym, 0), self.connected_ms):
                log.info("reconcile %s: position %g -> exchange says %g (trades of the last moments are still on "
                         "their way through the user stream)", sym, pos.qty, qty)
            else:
                log.warning("reconcile %s: position %g -> exchange says %g", sym, pos.qty, qty)
        if update_ms > self.snapshot_ms.get(sym, 0):
            self.snapshot_ms[sym] = update_ms
        pos.qty, pos.entry, pos.unrealized = qty, entry, upnl
        self.journal.append("position", sym=sym, qty=qty, entry=entry, ms=update_ms)
        self._push(sym, -1, 0, 0, "BUY", entry, qty, 0.0, 0.0, 0.0, STATUS_SNAPSHOT, False, 0,
                   time.monotonic_ns(), 0.0, False)
