"""Exchange-side safety that outlives the engine: a protective stop per position and the dead-man switch.

Both live on the exchange, so a dead engine, host or network cannot leave the account unattended:

  * protect ([trade] protect = 0.01 or "1%"): every open position gets one reduce-only STOP_MARKET with
    closePosition=true and workingType MARK_PRICE at `protect` away from its entry price (below a long, above a
    short; rounded away from the price to the tick). It is re-placed when the position's side or entry changes and
    cancelled when the position is closed. Conditional orders are Binance's Algo Order API (POST /fapi/v1/algoOrder).
    The venue keeps them when the engine is gone: the next trade through the stop closes the position.
  * dead man ([trade] deadman = true, deadman_s = 120): POST /fapi/v1/countdownCancelAll for every traded symbol,
    re-armed every deadman_s / 4. If the engine stops calling, the exchange cancels the symbol's open orders once
    the countdown ends. Protective stops are algo orders and are not cancelled by it.

One thread with its own REST client (its own connection and clock offset: it never waits on the order path's).
It reads positions from the user stream's ledger (what the exchange reported). Its stops are recognised after a
restart by their clientAlgoId prefix, so a restarted engine adopts the stop a crashed one left behind.
Weight: countdownCancelAll costs 10 per symbol per heartbeat (20 symbols every 30 s = 400 of 2400 per minute).
The heartbeat period stretches so that it never takes more than a quarter of the 2400/min budget (many symbols),
and the countdown stretches to at least two periods, with a warning, so a heartbeat can never lapse by design.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

log = logging.getLogger("aegis.trade.protect")

PREFIX = "aegisprot"          # clientAlgoId prefix of the engine's protective stops
VERIFY_EVERY_S = 5.0          # how often the stops we think are open are checked against openAlgoOrders
HEARTBEAT_WEIGHT = 10         # countdownCancelAll, per symbol
HEARTBEAT_BUDGET = 600        # request weight per minute the heartbeats may use (a quarter of Binance's 2400)


def parse_distance(value) -> float:
    """`protect` as a fraction: 0.01 or "1%" -> 0.01. 0 / "off" / false = no protection."""
    if value in (None, False, 0, "off", "", "0"):
        return 0.0
    if isinstance(value, bool):
        raise ValueError("[trade] protect must be a fraction (0.01) or a percentage (\"1%\"), not true")
    try:
        d = float(str(value).strip()[:-1]) / 100.0 if isinstance(value, str) and value.strip().endswith("%") \
            else float(value)
    except ValueError:
        raise ValueError(f"[trade] protect must be a fraction (0.01) or a percentage (\"1%\"), got {value!r}") \
            from None
    if not 0.0 < d < 0.5:
        raise ValueError(f"[trade] protect must be between 0 and 50% of the entry price, got {value!r}")
    return d


@dataclass
class Stop:
    algo_id: int
    side: str
    trigger: Decimal


def stop_price(entry: Decimal, long: bool, distance: float, tick: Decimal) -> Decimal:
    """The protective trigger: `distance` below a long's entry (rounded down to the tick) or above a short's
    (rounded up): never closer to the price than asked."""
    raw = entry * (Decimal(1) - Decimal(repr(distance))) if long else entry * (Decimal(1) + Decimal(repr(distance)))
    steps = (raw / tick).to_integral_value(rounding=ROUND_FLOOR if long else ROUND_CEILING)
    return steps * tick


class Protector:
    def __init__(self, client, symbols: list[str], ticks: dict[str, Decimal], positions, distance: float = 0.0,
                 deadman_s: float = 0.0, period_s: float = 0.2, weight_budget: float = HEARTBEAT_BUDGET):
        """client: an aegis.binance.client.BinanceClient of its own; positions(): {symbol: (qty, entry)} as the
        exchange reported them (floats); distance: 0 = no stops; deadman_s: 0 = no countdown."""
        self.client = client
        self.symbols = list(symbols)
        self.ticks = ticks
        self.positions = positions
        self.distance = distance
        self.period_s = period_s
        # re-arm every deadman_s / 4, but within the weight budget; the countdown covers two periods at least
        self.beat_s = max(deadman_s / 4, len(self.symbols) * HEARTBEAT_WEIGHT * 60.0 / weight_budget) \
            if deadman_s > 0 else 0.0
        if deadman_s > 0 and 2 * self.beat_s > deadman_s:
            log.warning("dead-man countdown %.0f s is too short to re-arm %d symbols within the weight budget: "
                        "using %.0f s", deadman_s, len(self.symbols), 2 * self.beat_s)
            deadman_s = 2 * self.beat_s
        self.deadman_s = deadman_s
        self.stops: dict[str, Stop] = {}
        self.stats = {"placed": 0, "cancelled": 0, "failed": 0, "heartbeats": 0, "heartbeat_failures": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_beat = 0.0
        self._next_verify = 0.0
        self._n = 0

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> "Protector":
        if self.distance > 0:
            self.adopt()
        if self.deadman_s > 0:
            self.heartbeat()           # armed before the first order can go out
        self._thread = threading.Thread(target=self._run, name="aegis-protect", daemon=True)
        self._thread.start()
        return self

    def stop(self, disarm: bool = True) -> None:
        """Stop the thread; disarm the countdowns (an orderly stop cancels its own orders). Protective stops stay:
        a position left open keeps its protection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if disarm and self.deadman_s > 0:
            for s in self.symbols:
                self.client.countdown_cancel_all(s, 0)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                now = time.monotonic()
                if self.deadman_s > 0 and now >= self._next_beat:
                    self.heartbeat()
                if self.distance > 0:
                    if now >= self._next_verify:
                        self._next_verify = now + VERIFY_EVERY_S
                        self.verify()
                    self.sync()
            except Exception as e:      # never let exchange-side safety die silently
                self.stats["failed"] += 1
                log.error("protection round failed: %s: %s", type(e).__name__, e)

    # ------------------------------------------------------------------------------------------ dead man
    def heartbeat(self) -> None:
        ms = int(self.deadman_s * 1000)
        for s in self.symbols:
            r = self.client.countdown_cancel_all(s, ms)
            if r.get("ok"):
                self.stats["heartbeats"] += 1
            else:
                self.stats["heartbeat_failures"] += 1
                log.error("countdownCancelAll %s failed: %s %s (the dead-man switch may lapse)", s, r.get("code"),
                          r.get("msg"))
        self._next_beat = time.monotonic() + self.beat_s

    # ------------------------------------------------------------------------------------------ stops
    def adopt(self) -> None:
        """Take over the protective stops a previous run left on the exchange (one per symbol; extras go)."""
        r = self.client.algo_open_orders()
        if not r.get("ok"):
            log.error("openAlgoOrders failed: %s %s", r.get("code"), r.get("msg"))
            return
        for o in sorted(r["orders"], key=lambda o: o["algoId"]):
            if not str(o.get("clientAlgoId", "")).startswith(PREFIX) or o["symbol"] not in self.ticks:
                continue
            old = self.stops.get(o["symbol"])
            if old is not None:
                self._cancel(o["symbol"], old)
            self.stops[o["symbol"]] = Stop(int(o["algoId"]), o["side"], Decimal(o["triggerPrice"]))

    def verify(self) -> None:
        """Forget stops the exchange no longer lists (triggered, or cancelled by hand): the next sync re-places
        what is still needed."""
        if not self.stops:
            return
        r = self.client.algo_open_orders()
        if not r.get("ok"):
            return
        live = {int(o["algoId"]) for o in r["orders"]}
        for sym, st in list(self.stops.items()):
            if st.algo_id not in live:
                del self.stops[sym]

    def sync(self) -> None:
        pos = self.positions()
        for sym in self.symbols:
            qty, entry = pos.get(sym, (0.0, 0.0))
            cur = self.stops.get(sym)
            if qty == 0.0 or entry <= 0.0:
                if cur is not None:
                    self._cancel(sym, cur)
                continue
            long = qty > 0
            side = "SELL" if long else "BUY"
            trigger = stop_price(Decimal(repr(entry)), long, self.distance, self.ticks[sym])
            if cur is not None and cur.side == side and cur.trigger == trigger:
                continue
            if cur is not None and cur.side == side:
                # one closePosition stop per direction (-4130): the old one goes first
                self._cancel(sym, cur)
                cur = None
            new = self._place(sym, side, trigger)
            if cur is not None:           # the position flipped: the stop of the old side is no longer needed
                self._cancel(sym, cur)
            if new is not None:
                self.stops[sym] = new

    def _place(self, sym: str, side: str, trigger: Decimal) -> Stop | None:
        self._n += 1
        cid = f"{PREFIX}{secrets.token_hex(6)}{self._n}"[:36]
        r = self.client.algo_place({"symbol": sym, "side": side, "type": "STOP_MARKET",
                                    "triggerPrice": format(trigger, "f"), "closePosition": "true",
                                    "workingType": "MARK_PRICE", "clientAlgoId": cid})
        if not r.get("ok"):
            self.stats["failed"] += 1
            # e.g. -2021: the mark is already past the stop; the position is beyond its protection distance
            log.error("protective stop %s %s @ %s refused: %s %s -- POSITION UNPROTECTED", sym, side, trigger,
                      r.get("code"), r.get("msg"))
            return None
        self.stats["placed"] += 1
        log.info("protective stop %s %s @ %s (algoId %s)", sym, side, trigger, r["data"]["algoId"])
        return Stop(int(r["data"]["algoId"]), side, trigger)

    def _cancel(self, sym: str, st: Stop) -> None:
        r = self.client.algo_cancel(st.algo_id)
        if r.get("ok") or r.get("code") == -2011:     # -2011: already gone (triggered or cancelled)
            self.stats["cancelled"] += 1
            if self.stops.get(sym) is st:
                del self.stops[sym]
        else:
            self.stats["failed"] += 1
            log.error("cancelling protective stop %s (algoId %s) failed: %s %s", sym, st.algo_id, r.get("code"),
                      r.get("msg"))
