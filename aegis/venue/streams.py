"""Market websocket streams of the embedded venue: routes, subscriptions, per-connection framing, fault knobs.

Routes (docs/binance-notes.md, Stream routes): /public (bookTicker, depth*, trade, !bookTicker), /market (aggTrade,
markPrice*, !markPrice@arr, klines...), unrouted legacy /ws and /stream (public data only, but every valid SUBSCRIBE is
still acknowledged). Modes: raw /ws/<s1>/<s2> (bare payloads, combined=false) and combined /stream?streams=<s1>/<s2>
({"stream","data"}).

The generator publishes Chunks (encoded payloads + stream id per message) to every connection's queue; each
connection's own thread selects its streams and frames them in one @njit pass and writes them with one sendall.
"""
from __future__ import annotations

import collections
import json
import re
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Mapping
from urllib.parse import parse_qsl, unquote

import numpy as np
import orjson

from . import _mdkernels as K
from .market import Chunk, Market, chunk_from_payloads
from .marketdata import market_data_endpoints
from .server import Request, Response, Router, WsConn, WsPolicy

MAX_STREAMS = 1024
PUBLIC, MARKET, LEGACY = "public", "market", "legacy"

_KIND_SUFFIX = {K.K_BOOKTICKER: "@bookTicker", K.K_DEPTH0: "@depth@0ms", K.K_AGGTRADE: "@aggTrade",
                K.K_DEPTH100: "@depth@100ms", K.K_DEPTH250: "@depth", K.K_DEPTH500: "@depth@500ms",
                K.K_MARK3S: "@markPrice", K.K_MARK1S: "@markPrice@1s", K.K_TRADE: "@trade"}
for _li, _lv in enumerate(K.PART_LEVELS):
    for _k, _sp in enumerate(("@100ms", "", "@500ms")):
        _KIND_SUFFIX[K.K_PART + _li * 3 + _k] = f"@depth{_lv}{_sp}"
for _i, _iv in enumerate(K.KLINE_INTERVALS):
    _KIND_SUFFIX[K.K_KLINE + _i] = f"@kline_{_iv}"
_KIND_SUFFIX[K.K_TICKER] = "@ticker"
_KIND_SUFFIX[K.K_MINITICKER] = "@miniTicker"
_SUFFIX_KIND = {v: k for k, v in _KIND_SUFFIX.items()}
# continuous klines are named after the pair and contract type, not the symbol:
# <pair>_<contracttype>@continuousKline_<interval>
_CKLINE_SUFFIX = {K.K_CKLINE + _i: f"@continuousKline_{_iv}" for _i, _iv in enumerate(K.KLINE_INTERVALS)}
_MARKET_KINDS = ({K.K_AGGTRADE, K.K_MARK3S, K.K_MARK1S, K.K_TICKER, K.K_MINITICKER}
                 | {K.K_KLINE + i for i in range(len(K.KLINE_INTERVALS))} | set(_CKLINE_SUFFIX))
_DEPTH_KINDS = {K.K_DEPTH0, K.K_DEPTH100, K.K_DEPTH250, K.K_DEPTH500} | {K.K_PART + i for i in range(9)}
G_ALL_BOOKTICKER, G_ALL_MARK3S, G_ALL_MARK1S, G_ALL_TICKER, G_ALL_MINITICKER = range(5)
_GLOBAL_NAMES = {"!bookTicker": (G_ALL_BOOKTICKER, PUBLIC), "!markPrice@arr": (G_ALL_MARK3S, MARKET),
                 "!markPrice@arr@1s": (G_ALL_MARK1S, MARKET), "!ticker@arr": (G_ALL_TICKER, MARKET),
                 "!miniTicker@arr": (G_ALL_MINITICKER, MARKET)}

# Valid stream names the venue acknowledges but has no data for (route given for the delivery rule).
_OTHER_SUFFIX_ROUTE = {"@forceOrder": MARKET, "@compositeIndex": MARKET,
                       "@rpiDepth@500ms": PUBLIC, "@bookTicker@rpi": PUBLIC}
_OTHER_GLOBAL_ROUTE = {"!forceOrder@arr": MARKET,
                       "!contractInfo": MARKET, "!assetIndex@arr": MARKET}
_SYMBOL_RE = re.compile(r"^[^\s@/!A-Z\"\\]+$")


class StreamRegistry:
    """Stream name <-> stream id. Symbol streams are sid = symbol_index * N_KINDS + kind; then globals; then
    names registered later (replay)."""

    def __init__(self, market: Market):
        self.market = market
        self.lower_index = {s.lower(): i for i, s in enumerate(market.symbols)}
        self.n_sym = market.n_sym_sids
        self.names: list[str] = []
        self.routes: list[str] = []
        for i, sym in enumerate(market.symbols):
            low = sym.lower()
            spec = market.specs[sym]
            ck = f"{spec.pair.lower()}_{spec.contract_type.lower()}"
            for kind in range(K.N_KINDS):
                if kind in _CKLINE_SUFFIX:
                    # one symbol per (pair, contract type) owns the name; a second one gets an unreachable name
                    name = ck + _CKLINE_SUFFIX[kind]
                    if name in self.names:
                        name = f"{low}#{kind}"
                    self.names.append(name)
                else:
                    self.names.append(low + _KIND_SUFFIX[kind])
                self.routes.append(MARKET if kind in _MARKET_KINDS else PUBLIC)
        self.g0 = len(self.names)
        for name, (_g, route) in sorted(_GLOBAL_NAMES.items(), key=lambda kv: kv[1][0]):
            self.names.append(name)
            self.routes.append(route)
        self.sid_of = {n: i for i, n in enumerate(self.names)}
        self.lock = threading.Lock()
        self.version = 0
        self._rebuild()

    def _rebuild(self) -> None:
        pre = [b'{"stream":"' + n.encode("utf-8") + b'","data":' for n in self.names]
        pre_len = np.array([len(p) for p in pre], np.int64)
        pre_off = np.zeros(len(pre), np.int64)
        np.cumsum(pre_len[:-1], out=pre_off[1:])
        pre_buf = np.frombuffer(b"".join(pre), np.uint8).copy()
        is_depth = np.array([self._is_depth_name(n) for n in self.names], np.bool_)
        # one assignment: connection threads read a consistent set while replay registers new names
        self.framing = (pre_buf, pre_off, pre_len, is_depth, int(pre_len.max(initial=0)))
        self.version += 1

    @staticmethod
    def _is_depth_name(name: str) -> bool:
        return "@depth" in name

    def __len__(self) -> int:
        return len(self.names)

    def classify(self, name: str) -> tuple[bool, int | None, str]:
        """(valid, sid or None if the venue has no data for it, route)."""
        if not isinstance(name, str) or not name or "/" in name:
            return False, None, PUBLIC
        sid = self.sid_of.get(name)
        if sid is not None:
            return True, sid, self.routes[sid]
        if name in _OTHER_GLOBAL_ROUTE:
            return True, None, _OTHER_GLOBAL_ROUTE[name]
        sym, at, rest = name.partition("@")
        if not at or not _SYMBOL_RE.match(sym.lower()):
            return False, None, PUBLIC
        suffix = "@" + rest
        if suffix in _SUFFIX_KIND:
            kind = _SUFFIX_KIND[suffix]
            idx = self.lower_index.get(sym)
            route = MARKET if kind in _MARKET_KINDS else PUBLIC
            return True, None, route  # unknown or upper-case symbol: acknowledged, never delivered
        if rest.startswith("continuousKline_"):
            return True, None, MARKET
        if suffix in _OTHER_SUFFIX_ROUTE:
            return True, None, _OTHER_SUFFIX_ROUTE[suffix]
        return False, None, PUBLIC

    def get_or_add(self, name: str) -> int:
        """sid for any name (replay of recorded streams); new names get new ids."""
        sid = self.sid_of.get(name)
        if sid is not None:
            return sid
        with self.lock:
            sid = self.sid_of.get(name)
            if sid is not None:
                return sid
            valid, _s, route = self.classify(name)
            self.names.append(name)
            self.routes.append(route)
            sid = len(self.names) - 1
            self.sid_of[name] = sid
            self._rebuild()
            return sid


@dataclass
class HubConfig:
    strict_ids: bool = False            # reject non-integer request ids like the options stream does
    max_queue_bytes: int = 256 * 1024 * 1024
    backpressure: bool = False          # True: the generator waits for slow clients instead of dropping them
    max_streams: int = MAX_STREAMS


MALFORMED_KINDS = ("bad_json", "bad_utf8", "bad_opcode", "masked", "rsv", "truncated_json")


class StreamConn:
    """One market-stream connection: its subscriptions, queue, and its own fault knobs."""

    def __init__(self, hub: "StreamHub", ws: WsConn, route: str, combined: bool):
        self.hub = hub
        self.ws = ws
        self.route = route
        self.combined = combined
        self.subs: dict[str, None] = {}
        self.mask = np.zeros(0, np.bool_)
        self._mask_version = -1
        self._q: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self.queued_bytes = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self._stall_until = 0.0
        self._skip_depth = 0
        self._dup_depth = 0
        self._fault_lock = threading.Lock()  # knobs are set from other threads while this one consumes them
        self._malformed: list[str] = []
        self._drop = False

    # ---- fault knobs (per connection) ------------------------------------------------------------
    def drop(self) -> None:
        """Drop the TCP connection at once, no close frame."""
        self._drop = True
        self.ws.abort()
        self._wake()

    def stall(self, seconds: float) -> None:
        """Stop sending for `seconds` (the backlog is delivered afterwards; pings are still answered)."""
        self._stall_until = time.monotonic() + float(seconds)

    def skip_depth(self, n: int = 1) -> None:
        """Do not send the next n depth messages (the client sees a pu gap)."""
        with self._fault_lock:
            self._skip_depth += int(n)

    def duplicate_depth(self, n: int = 1) -> None:
        """Send each of the next n depth messages twice."""
        with self._fault_lock:
            self._dup_depth += int(n)

    def send_malformed(self, kind: str = "bad_json") -> None:
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed frame kind {kind!r}; choose from {', '.join(MALFORMED_KINDS)}")
        self._malformed.append(kind)
        self._wake()

    # ---- data ------------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def enqueue(self, chunk: Chunk) -> None:
        size = int(chunk.buf.shape[0])
        with self._cv:
            if self.queued_bytes + size > self.hub.cfg.max_queue_bytes:
                if self.hub.cfg.backpressure:
                    while (self.queued_bytes + size > self.hub.cfg.max_queue_bytes and not self.ws.closed
                           and not self.hub.closing):
                        self._cv.wait(0.05)
                else:
                    # the generator must never wait on one client: no close frame if its writer is stuck
                    self.ws.close(1008, "Slow consumer", wait_s=0)
                    return
            self._q.append(chunk)
            self.queued_bytes += size
            self._cv.notify()

    def subscriptions_changed(self) -> None:
        """`subs` changed: the next refresh_mask() recomputes the mask."""
        self._mask_version = -1

    def refresh_mask(self) -> None:
        """Bring `mask` (which registry streams this connection receives) up to date with `subs`."""
        reg = self.hub.registry
        if self._mask_version == reg.version and len(self.mask) == len(reg):
            return
        m = np.zeros(len(reg), np.bool_)
        for name in self.subs:
            sid = reg.sid_of.get(name)
            if sid is not None and self._deliverable(reg.routes[sid]):
                m[sid] = True
        self.mask = m
        self._mask_version = reg.version

    def _deliverable(self, route: str) -> bool:
        # unrouted legacy connections only receive /public data (since 2026-04-23, docs/binance-notes.md, Stream routes)
        return route == PUBLIC if self.route in (PUBLIC, LEGACY) else route == MARKET

    def _send_malformed(self, kind: str) -> None:
        from aegis.core import websocket as W
        if kind == "bad_json":
            self.ws.send_raw_bytes(W.encode_frame(W.OP_TEXT, b'{"e":"bookTicker","u":,}', masked=False))
        elif kind == "truncated_json":
            self.ws.send_raw_bytes(W.encode_frame(W.OP_TEXT, b'{"e":"depthUpdate","E":17', masked=False))
        elif kind == "bad_utf8":
            self.ws.send_raw_bytes(W.encode_frame(W.OP_TEXT, b'{"e":"\xff\xfe"}', masked=False))
        elif kind == "bad_opcode":
            self.ws.send_raw_bytes(W.frame_header(0x3, 2) + b"{}")
        elif kind == "masked":
            self.ws.send_raw_bytes(W.encode_frame(W.OP_TEXT, b"{}", masked=True))
        elif kind == "rsv":
            self.ws.send_raw_bytes(W.frame_header(W.OP_TEXT, 2, rsv=4) + b"{}")

    def run(self) -> None:
        ws = self.ws
        while not ws.closed:
            while True:
                m = ws.recv(0)
                if m is None:
                    break
                self.hub.on_control(self, m[1])
            if ws.closed:
                break
            while self._malformed:
                self._send_malformed(self._malformed.pop(0))
            now = time.monotonic()
            if now < self._stall_until:
                time.sleep(min(0.02, self._stall_until - now))
                continue
            with self._cv:
                if not self._q:
                    self._cv.wait(0.02)
                chunks = list(self._q)
                self._q.clear()
                self.queued_bytes = 0
                self._cv.notify_all()
            if chunks:
                self._send_chunks(chunks)

    def _send_chunks(self, chunks: list[Chunk]) -> None:
        self.refresh_mask()
        reg = self.hub.registry
        if not self.mask.any():
            return
        pre_buf, pre_off, pre_len, is_depth, pre_max = reg.framing
        with self._fault_lock:
            skip0, dup0 = self._skip_depth, self._dup_depth
        skip, dup = skip0, dup0
        total = sum(int(c.buf.shape[0]) for c in chunks)
        nmsg = sum(c.n for c in chunks)
        cap = (2 if dup else 1) * (total + nmsg * (10 + (pre_max + 1 if self.combined else 0)))
        out = np.empty(max(cap, 16), np.uint8)
        pos = 0
        for c in chunks:
            if c.n == 0:
                continue
            nbytes, frames, skip, dup = K.frame_select(
                c.buf, c.off, c.ln, c.sid, c.n, self.mask, is_depth, self.combined,
                pre_buf, pre_off, pre_len, out[pos:], skip, dup)
            pos += nbytes
            self.frames_sent += frames
        if skip != skip0 or dup != dup0:
            with self._fault_lock:
                self._skip_depth -= skip0 - skip
                self._dup_depth -= dup0 - dup
        if pos:
            self.bytes_sent += pos
            self.ws.send_frames(memoryview(out)[:pos])


class StreamHub:
    def __init__(self, market: Market, cfg: HubConfig | None = None):
        self.market = market
        self.cfg = cfg or HubConfig()
        self.registry = StreamRegistry(market)
        self._conns: list[StreamConn] = []
        self._lock = threading.Lock()
        # Every connection thread recomputes what the market must generate after its own subscription change.
        # Unserialised, a thread could compute from a stale view and write it last, leaving another connection's
        # new streams unwanted (never generated) until the next change: seen as 66 of 300 symbols never quoted.
        # Subscription edits and the recompute happen under this lock, so the last writer saw every edit.
        self._wants_lock = threading.RLock()
        self.global_want = np.zeros(len(_GLOBAL_NAMES), np.bool_)
        self._next_flush = [0.0, 0.0, 0.0]
        self._next_mark = [0.0, 0.0]
        self._next_all_bt = 0.0
        self._next_kline = 0.0
        self._next_ticker = 0.0
        self._next_ticker_arr = 0.0
        self._next_sample = 0.0
        self._next_force = 0.0
        self._force_orders: dict[str, dict] = {}     # symbol -> its latest liquidation not yet published
        self._force_lock = threading.Lock()
        self._replay_thread: threading.Thread | None = None
        self._replay_stop = threading.Event()
        self.replay_books: ReplayBooks | None = None  # REST depth source while replaying
        self.closing = False  # set at venue stop: a backpressured generator must not wait for clients any more
        market.sink = self.publish
        self._warm_kernels()

    def _warm_kernels(self) -> None:
        # same argument types as StreamConn._send_chunks, so the first client does not wait for a compile
        pre_buf, pre_off, pre_len, is_depth, _ = self.registry.framing
        c = chunk_from_payloads([(0, b"{}")])
        out = np.empty(64, np.uint8)
        for combined in (False, True):
            K.frame_select(c.buf, c.off, c.ln, c.sid, c.n, np.zeros(len(pre_len), np.bool_), is_depth, combined,
                           pre_buf, pre_off, pre_len, out[0:], 0, 0)

    # ---- connections -----------------------------------------------------------------------------
    def connections(self, route: str | None = None) -> list[StreamConn]:
        with self._lock:
            return [c for c in self._conns if not c.ws.closed and (route is None or c.route == route)]

    def publish(self, chunk: Chunk) -> None:
        if chunk.n == 0:
            return
        for c in self.connections():
            c.enqueue(chunk)

    def _recompute_wants(self) -> None:
        with self._wants_lock:
            reg = self.registry
            want = np.zeros(len(reg), np.bool_)
            for c in self.connections():
                c.refresh_mask()
                m = c.mask
                want[: len(m)] |= m
            self.market.set_wants(want[: reg.n_sym])
            self.global_want = want[reg.g0: reg.g0 + len(_GLOBAL_NAMES)].copy()

    # ---- the websocket handler -------------------------------------------------------------------
    def handle(self, ws: WsConn, req: Request) -> None:
        parts = [p for p in req.path.split("/") if p]
        route = LEGACY
        if parts and parts[0] in (PUBLIC, MARKET):
            route = parts[0]
            parts = parts[1:]
        combined = bool(parts) and parts[0] == "stream"
        names: list[str] = []
        if parts and parts[0] == "ws":
            names = [p for p in parts[1:] if p]
        elif combined:
            for k, v in parse_qsl(req.query, keep_blank_values=True):
                if k == "streams":
                    names += [unquote(x) for x in v.split("/") if x]
        elif parts:
            ws.close(1008, "Invalid path")  # e.g. /public/foo
            return
        if len(names) > self.cfg.max_streams:
            ws.close(1008, "Too many streams")
            return
        sc = StreamConn(self, ws, route, combined)
        for n in names:
            valid, _sid, _r = self.registry.classify(n)
            if valid:
                sc.subs[n] = None
        with self._lock:
            self._conns.append(sc)
        self._recompute_wants()
        try:
            sc.run()
        finally:
            with self._lock:
                if sc in self._conns:
                    self._conns.remove(sc)
            self._recompute_wants()

    # ---- control messages (Binance docs: "Live Subscribing/Unsubscribing to streams") ------------------------
    @staticmethod
    def _reply(sc: StreamConn, obj) -> None:
        sc.ws.send_text(orjson.dumps(obj))

    def _error(self, sc: StreamConn, code: int, msg: str, rid) -> None:
        self._reply(sc, {"error": {"code": code, "msg": msg}, "id": rid})

    def on_control(self, sc: StreamConn, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace")
        try:
            req = json.loads(text)
        except json.JSONDecodeError as e:
            self._error(sc, 3, f"Invalid JSON: expected value at line {e.lineno} column {e.colno}", None)
            return
        col = len(text)
        if not isinstance(req, dict) or "method" not in req:
            self._error(sc, 2, f"Invalid request: missing field `method` at line 1 column {col}", None)
            return
        rid = req.get("id")
        if rid is not None and not (isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0):
            if self.cfg.strict_ids or not isinstance(rid, str):
                self._error(sc, 2, "Invalid request: request ID must be an unsigned integer", None)
                return
        method = req["method"]
        params = req.get("params", [])
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY"):
            self._error(sc, 2, f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
                               "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 "
                               "column 28", rid)
            return
        if params is None:
            params = []
        if not isinstance(params, list):
            self._error(sc, 2, "Invalid request: invalid type: expected a sequence", rid)
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params) or any(not self.registry.classify(p)[0] for p in params):
                self._error(sc, 2, "Invalid request: invalid stream", rid)
                return
            with self._wants_lock:
                if method == "SUBSCRIBE":
                    new = [p for p in params if p not in sc.subs]
                    if len(sc.subs) + len(new) > self.cfg.max_streams:
                        self._error(sc, 2, f"Invalid request: too many streams (max {self.cfg.max_streams})", rid)
                        return
                    for p in new:
                        sc.subs[p] = None
                else:
                    for p in params:
                        sc.subs.pop(p, None)
                sc.subscriptions_changed()
                self._recompute_wants()
            self._reply(sc, {"result": None, "id": rid})
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(sc, {"result": list(sc.subs), "id": rid})
        elif method == "SET_PROPERTY":
            if len(params) > 2:
                self._error(sc, 2, "Invalid request: too many parameters", rid)
            elif len(params) < 2 or not isinstance(params[0], str):
                self._error(sc, 2, "Invalid request: property name must be a string", rid)
            elif params[0] != "combined":
                self._error(sc, 0, "Unknown property", rid)
            elif not isinstance(params[1], bool):
                self._error(sc, 1, "Invalid value type: expected Boolean", rid)
            else:
                sc.combined = params[1]
                self._reply(sc, {"result": None, "id": rid})
        else:  # GET_PROPERTY
            if len(params) > 1:
                self._error(sc, 2, "Invalid request: too many parameters", rid)
            elif len(params) < 1 or not isinstance(params[0], str):
                self._error(sc, 2, "Invalid request: property name must be a string", rid)
            elif params[0] != "combined":
                self._error(sc, 0, "Unknown property", rid)
            else:
                self._reply(sc, {"result": sc.combined, "id": rid})

    def force_order(self, ev: dict) -> None:
        """A liquidation on the venue (Exchange.force_order_listeners): kept for the next forceOrder snapshot."""
        with self._force_lock:
            self._force_orders[ev["o"]["s"]] = ev

    def _publish_force_orders(self) -> None:
        """<symbol>@forceOrder and !forceOrder@arr: each second, the latest liquidation of each symbol that had one
        (Binance's "Liquidation Order Snapshot Streams"; nothing when nothing was liquidated). Their names are
        registered at the first liquidation; a connection that subscribed before then receives it."""
        with self._force_lock:
            due, self._force_orders = self._force_orders, {}
        items = []
        for sym, ev in sorted(due.items()):
            body = orjson.dumps(ev)
            items.append((self.registry.get_or_add(sym.lower() + "@forceOrder"), body))
            items.append((self.registry.get_or_add("!forceOrder@arr"), body))
        if items:
            self.publish(chunk_from_payloads(items))

    # ---- periodic streams (run on the generator thread, so windows close between event batches) ----
    def tick(self, now: float) -> None:
        if self._next_flush[0] == 0.0:
            self._next_flush = [now + 0.1, now + 0.25, now + 0.5]
            self._next_mark = [now + 1.0, now + 3.0]
            self._next_all_bt = now + 5.0
            self._next_kline = now + 0.25
            self._next_ticker = now + 0.5
            self._next_ticker_arr = now + 1.0
            self._next_sample = now
            self._next_force = now + 1.0
        for k, period in enumerate((0.1, 0.25, 0.5)):
            if now >= self._next_flush[k]:
                self._next_flush[k] = max(self._next_flush[k] + period, now)
                self.publish(self.market.flush(k))
        g0 = self.registry.g0
        for j, (kind, period, gidx) in enumerate(((K.K_MARK1S, 1.0, G_ALL_MARK1S), (K.K_MARK3S, 3.0, G_ALL_MARK3S))):
            if now >= self._next_mark[j]:
                self._next_mark[j] = max(self._next_mark[j] + period, now)
                items = self.market.mark_prices(kind)
                if self.global_want[gidx]:
                    items.append((g0 + gidx, self.market.all_mark_prices()))
                if items:
                    self.publish(chunk_from_payloads(items))
        if now >= self._next_kline:
            self._next_kline = max(self._next_kline + 0.25, now)
            items = self.market.kline_messages(self.market.now_ms())
            if items:
                self.publish(chunk_from_payloads(items))
        if now >= self._next_sample:
            self._next_sample = max(self._next_sample + 1.0, now)
            self.market.sample_prices(self.market.now_ms())
        if now >= self._next_ticker:
            # symbol tickers every 500 ms, the all-market arrays every second (Binance's update speeds)
            self._next_ticker = max(self._next_ticker + 0.5, now)
            arr = now >= self._next_ticker_arr
            if arr:
                self._next_ticker_arr = max(self._next_ticker_arr + 1.0, now)
            gw = self.global_want
            if arr and (gw[G_ALL_TICKER] or gw[G_ALL_MINITICKER]) or self.market.want[
                    self.market.sid_base[:, None] + np.array([K.K_TICKER, K.K_MINITICKER])].any():
                items, full, mini = self.market.ticker_payloads(self.market.now_ms())
                if arr and gw[G_ALL_TICKER]:
                    items.append((g0 + G_ALL_TICKER, orjson.dumps(full)))
                if arr and gw[G_ALL_MINITICKER]:
                    items.append((g0 + G_ALL_MINITICKER, orjson.dumps(mini)))
                if items:
                    self.publish(chunk_from_payloads(items))
        if now >= self._next_force:
            self._next_force = max(self._next_force + 1.0, now)
            if self._force_orders:
                self._publish_force_orders()
        if now >= self._next_all_bt:
            self._next_all_bt = max(self._next_all_bt + 5.0, now)
            if self.global_want[G_ALL_BOOKTICKER]:
                self.publish(chunk_from_payloads([(g0 + G_ALL_BOOKTICKER, p) for p in self.market.all_book_tickers()]))

    # ---- venue-wide fault knobs ------------------------------------------------------------------
    def drop_connections(self, route: str | None = None) -> int:
        conns = self.connections(route)
        for c in conns:
            c.drop()
        return len(conns)

    def stall(self, seconds: float, route: str | None = None) -> int:
        conns = self.connections(route)
        for c in conns:
            c.stall(seconds)
        return len(conns)

    def skip_depth(self, n: int = 1, route: str | None = None) -> int:
        conns = self.connections(route)
        for c in conns:
            c.skip_depth(n)
        return len(conns)

    def duplicate_depth(self, n: int = 1, route: str | None = None) -> int:
        conns = self.connections(route)
        for c in conns:
            c.duplicate_depth(n)
        return len(conns)

    def send_malformed(self, kind: str = "bad_json", route: str | None = None) -> int:
        conns = self.connections(route)
        for c in conns:
            c.send_malformed(kind)
        return len(conns)

    def skew_clock(self, ms: int) -> None:
        """Offset E/T of every later payload (and REST E/T) by ms."""
        self.market.skew_ms = int(ms)

    # ---- replay ----------------------------------------------------------------------------------
    def start_replay(self, path: str, speed: float = 1.0, loop: bool = False) -> None:
        from .market import read_recording
        list(zip(range(1), read_recording(path)))  # fail fast (one-line error) on a missing / non-JSON file

        def run() -> None:
            while not self._replay_stop.is_set():
                self.replay_books.reset()  # a new pass restarts the recorded update ids
                t_first = None
                wall0 = time.monotonic()
                batch: list[tuple[int, bytes]] = []
                for t_ns, stream, data in read_recording(path):
                    if self._replay_stop.is_set():
                        return
                    if t_first is None:
                        t_first = t_ns
                    due = (t_ns - t_first) / 1e9 / speed if speed > 0 else 0.0
                    delay = due - (time.monotonic() - wall0)
                    if delay > 0.001 and batch:
                        self.publish(chunk_from_payloads(batch))
                        batch = []
                    if delay > 0.001:
                        self._replay_stop.wait(delay)
                    sid = self.registry.get_or_add(stream)
                    self.replay_books.apply(stream, data)
                    batch.append((sid, orjson.dumps(data)))
                    if len(batch) >= 2000:
                        self.publish(chunk_from_payloads(batch))
                        batch = []
                if batch:
                    self.publish(chunk_from_payloads(batch))
                if not loop:
                    return

        self.replay_books = ReplayBooks()
        self._replay_stop.clear()
        self._replay_thread = threading.Thread(target=run, name="venue-replay", daemon=True)
        self._replay_thread.start()

    def stop_replay(self) -> None:
        self._replay_stop.set()
        if self._replay_thread is not None:
            self._replay_thread.join(timeout=2.0)


class ReplayBooks:
    """Books rebuilt from the replayed diff-depth payloads (one diff stream per symbol), so GET /fapi/v1/depth
    during a replay is consistent with the replayed U/u/pu chain (levels the recording never touched are absent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._stream: dict[str, str] = {}
            self._books: dict[str, tuple[dict, dict]] = {}
            self._last_u: dict[str, int] = {}

    def apply(self, stream: str, data) -> None:
        if not isinstance(data, dict) or data.get("e") != "depthUpdate" or "@depth" not in stream:
            return
        suffix = stream.partition("@")[2]
        if suffix[len("depth"):][:1].isdigit():  # depth5/10/20 are pictures, not diffs
            return
        sym = str(data.get("s", ""))
        with self._lock:
            if self._stream.setdefault(sym, stream) != stream:
                return
            bids, asks = self._books.setdefault(sym, ({}, {}))
            for side, levels in ((bids, data.get("b", ())), (asks, data.get("a", ()))):
                for px, q in levels:
                    if Decimal(q) == 0:
                        side.pop(px, None)
                    else:
                        side[px] = q
            self._last_u[sym] = int(data.get("u", 0))

    def snapshot(self, symbol: str, limit: int, now_ms: int) -> dict:
        with self._lock:
            bids, asks = self._books.get(symbol, ({}, {}))
            b = sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:limit]
            a = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:limit]
            u = self._last_u.get(symbol, 0)
        return {"lastUpdateId": u, "E": now_ms, "T": now_ms - 1, "bids": [list(x) for x in b],
                "asks": [list(x) for x in a]}


# ---- REST market data (Binance docs: "Order Book", "Exchange Information") ------------------------------------
@dataclass(frozen=True)
class MarketEndpoint:
    method: str
    path: str
    weight: Callable[[Mapping[str, str]], int]
    handler: Callable[[Mapping[str, str]], tuple[int, object]]  # -> (http status, JSON-able body)


_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)


def _depth_weight(p: Mapping[str, str]) -> int:
    try:
        lim = int(p.get("limit", "500"))
    except ValueError:
        return 2
    return 2 if lim <= 50 else 5 if lim <= 100 else 10 if lim <= 500 else 20


def _err(code: int, msg: str, status: int = 400) -> tuple[int, dict]:
    return status, {"code": code, "msg": msg}


def market_endpoints(market: Market, hub: "StreamHub | None" = None) -> list[MarketEndpoint]:
    def symbol_of(p: Mapping[str, str]):
        sym = p.get("symbol")
        if sym is None or sym == "":
            return None, _err(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if sym not in market.index:
            return None, _err(-1121, "Invalid symbol.")
        return sym, None

    def depth(p):
        sym, err = symbol_of(p)
        if err:
            return err
        raw = p.get("limit", "500")
        try:
            lim = int(raw)
        except ValueError:
            return _err(-1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        if lim > 1000:
            return _err(-1130, "Data sent for parameter 'limit' is not valid.")
        if lim not in _DEPTH_LIMITS:
            return _err(-4021, f"{lim} is not valid depth limit")
        books = hub.replay_books if hub is not None else None
        if books is not None:
            return 200, books.snapshot(sym, lim, market.now_ms())
        return 200, market.depth_snapshot(sym, lim)

    def listed():
        return [s for s in market.symbols if market.specs[s].status == "TRADING"]

    def book_ticker(p):
        if p.get("symbol") in (None, ""):
            return 200, [market.book_ticker(s) for s in listed()]
        sym, err = symbol_of(p)
        return err if err else (200, market.book_ticker(sym))

    def ticker_24hr(p):
        if p.get("symbol") in (None, ""):
            return 200, [market.ticker_24hr(s) for s in listed()]
        sym, err = symbol_of(p)
        return err if err else (200, market.ticker_24hr(sym))

    return market_data_endpoints(market, MarketEndpoint, symbol_of) + [
        MarketEndpoint("GET", "/fapi/v1/depth", _depth_weight, depth),
        MarketEndpoint("GET", "/fapi/v1/ticker/bookTicker", lambda p: 2 if p.get("symbol") else 5, book_ticker),
        MarketEndpoint("GET", "/fapi/v1/ticker/24hr", lambda p: 1 if p.get("symbol") else 40, ticker_24hr),
    ]


def install_market_rest(router: Router, market: Market, limiter=None, hub: "StreamHub | None" = None
                        ) -> list[MarketEndpoint]:
    """Register the market-data REST endpoints. limiter (optional, venue-exchange's RateLimiter): its
    charge_weight(ip, weight) -> used weight (raising its 429/418 error with http_status, code, msg, headers)
    and used_weight(ip) give these endpoints the same IP weight accounting and X-MBX-USED-WEIGHT-1M header."""
    eps = market_endpoints(market, hub)
    for ep in eps:
        def handler(req: Request, ep=ep) -> Response:
            params = dict(parse_qsl(req.query, keep_blank_values=True))
            headers: dict[str, str] = {}
            if limiter is not None:
                try:
                    headers["X-MBX-USED-WEIGHT-1M"] = str(limiter.charge_weight(req.client_ip, ep.weight(params)))
                except Exception as e:
                    if not all(hasattr(e, a) for a in ("http_status", "code", "msg")):
                        raise
                    headers.update(getattr(e, "headers", {}) or {})
                    headers.setdefault("X-MBX-USED-WEIGHT-1M", str(limiter.used_weight(req.client_ip)))
                    return Response(e.http_status, orjson.dumps({"code": e.code, "msg": e.msg}), headers)
            status, body = ep.handler(params)
            return Response(status, orjson.dumps(body), headers)
        router.add_http(ep.method, ep.path, handler)
    return eps


def install(router: Router, hub: StreamHub, policy: WsPolicy) -> None:
    for prefix in ("/public", "/market", "/ws", "/stream"):
        router.add_ws(prefix, hub.handle, policy)
