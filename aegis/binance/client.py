"""Binance USD-M order client: signed REST over keep-alive HTTP/1.1 connections, and the websocket trading API.

Results are plain dicts, never exceptions, because the sender thread must keep going whatever happens:
  {"ok": True, "status": 200, "data": <json>, "order": <order json>?}   or
  {"ok": False, "status": <http or 0>, "code": <binance code or None>, "msg": str, "unknown": bool}
`unknown` means the request may or may not have executed (timeout, 503 "Unknown error") and could not be settled.

Transport: measured against the embedded venue on this (loaded) box, 150 LIMIT orders each: REST round trip p50
1.6 ms / p99 7.0 ms, ws-fapi p50 0.65 ms / p99 3.9 ms; building + signing the request ~30 us either way. REST is the
default ([trade] transport) because every recovery path starts there; `ws` is 2.5x faster per order and uses the
same recovery (lookups, cancel-all and reconciliation stay on REST).

Safety rules (docs/binance-notes.md: Timing security, HTTP status codes):
- A new order is never re-sent blindly. After a timeout / connection error / 5xx it is looked up by its
  newClientOrderId (GET /fapi/v1/order?origClientOrderId=); found -> that is the answer. Not found -> we wait until
  the original's timestamp + recvWindow has passed (after that the exchange must refuse the original with -1021 /
  -5028, so it can never execute late) and look again; still not found -> re-send once with the same id.
- -1021 (timestamp outside recvWindow): the request was refused before processing, so resync the clock offset
  (GET /fapi/v1/time) and retry once.
- HTTP 429 / 418: stop sending until Retry-After (seconds) or the "banned until <ms>" time in the message, or an
  exponential back-off when neither is given; requests during the back-off fail locally (code -1003) without
  touching the network, except cancels and lookups after a 429 (reducing exposure beats our own pause); after a
  418 ban nothing is sent (every request would extend the ban).
"""
from __future__ import annotations

import errno
import http.client
import itertools
import logging
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

import orjson

from aegis.binance.keys import ApiKeys
from aegis.binance.signing import encode_params, signed_query, ws_signed_params
from aegis.binance.wire import ST_BACKOFF_UNTIL_NS, ST_OFFSET_MS, RestConnection, WireError
from aegis.binance.wire import new_state as wire_new_state

log = logging.getLogger("aegis.binance.client")

# docs/binance-notes.md, Hosts
VENUE_URLS = {
    "binance": ("https://fapi.binance.com", "wss://fstream.binance.com", "wss://ws-fapi.binance.com/ws-fapi/v1"),
    "binance-testnet": ("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com",
                        "wss://testnet.binancefuture.com/ws-fapi/v1"),
}
_BAN_RE = re.compile(r"banned until (\d{10,})")


@dataclass(frozen=True)
class Flight:
    """A prepared order whose bytes are in its connection's socket and whose answer is not read yet."""
    conn: object          # its RestConnection, or the WsTradeClient
    fd: int               # its socket's descriptor (readable: the answer has begun to arrive)
    sent_ns: int          # CLOCK_MONOTONIC ns of the send
    deadline_ns: int      # no answer by then: a timeout, settled as an unknown outcome
    params_fn: object     # the order's params, for the rare paths that need them (re-sign, lookup)
    rid: str = ""         # websocket: the request's id (its newClientOrderId), which its answer carries
    gen: int = 0          # websocket: the connection it went on (answers on a closed one are lost)


class VenueSelectionError(ValueError):
    """A user mistake choosing the venue: one line, exit code 2."""


@dataclass(frozen=True)
class Endpoints:
    venue: str
    rest_url: str
    ws_market_url: str
    ws_api_url: str


def endpoints(venue: str = "embedded", live: bool = False, embedded=None) -> Endpoints:
    """Base URLs for a venue. `embedded` is the running aegis.venue.Venue (or anything with rest_url,
    ws_market_url, ws_api_url). The real exchange needs live=True."""
    if venue == "embedded":
        if embedded is None:
            raise VenueSelectionError("venue embedded: start the embedded venue first (no URLs to connect to)")
        return Endpoints("embedded", embedded.rest_url, embedded.ws_market_url, embedded.ws_api_url)
    if venue not in VENUE_URLS:
        raise VenueSelectionError(f"unknown venue {venue!r} (choose embedded, binance-testnet, binance)")
    if venue == "binance" and not live:
        raise VenueSelectionError("venue binance trades real money: add --live to confirm")
    return Endpoints(venue, *VENUE_URLS[venue])


def _result_error(status: int, body: bytes | str, unknown: bool = False) -> dict:
    code, msg = None, ""
    try:
        j = orjson.loads(body) if body else {}
        if isinstance(j, dict):
            code, msg = j.get("code"), str(j.get("msg", ""))
    except orjson.JSONDecodeError:
        msg = (body[:200].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:200])
    return {"ok": False, "status": status, "code": code, "msg": msg, "unknown": unknown}


_WIRE = threading.local()  # .ns: CLOCK_MONOTONIC ns of this thread's last write of request bytes to a socket


class _StampingHTTPConnection(http.client.HTTPConnection):
    def send(self, data):
        super().send(data)
        _WIRE.ns = time.monotonic_ns()


class _StampingHTTPSConnection(http.client.HTTPSConnection):
    def send(self, data):
        super().send(data)
        _WIRE.ns = time.monotonic_ns()


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one REST base URL (the standard library's http.client): one per request in
    flight, reused afterwards. Each connection notes when request bytes reach its socket (the latency stage
    "wire" ends there, not when the call began). The Brain process needs nothing more, so it never loads requests.

    A connection that the server closed while idle is found when it is taken (its socket reads EOF) and replaced,
    so a request is never written to a dead connection; an error after the write is the caller's "unknown"."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float):
        u = urllib.parse.urlsplit(base_url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname or "localhost", u.port or (443 if self.https else 80)
        self.prefix = u.path.rstrip("/")
        self.headers = {"Accept-Encoding": "identity", "Connection": "keep-alive", **headers}
        self.timeout_s = timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context() if self.https else None

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                c = self._idle.pop()
                if c.sock is not None and not _readable(c.sock):
                    return c
                c.close()
        if self.https:
            return _StampingHTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self._ssl)
        return _StampingHTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def request(self, method: str, path_qs: str) -> tuple[int, dict[str, str], bytes]:
        """(status, lower-case headers, body); raises TimeoutError / OSError / http.client.HTTPException."""
        c = self._take()
        try:
            c.timeout = self.timeout_s
            c.request(method, self.prefix + path_qs, headers=self.headers)
            r = c.getresponse()
            body = r.read()
            h = {k.lower(): v for k, v in r.getheaders()}
        except BaseException:
            c.close()
            raise
        if r.will_close:
            c.close()
        else:
            with self._lock:
                self._idle.append(c)
        return r.status, h, body

    def close(self) -> None:
        with self._lock:
            for c in self._idle:
                c.close()
            self._idle.clear()


def _readable(sock) -> bool:
    """An idle keep-alive socket that is readable was closed (or broken) by the server."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(r)


class BinanceClient:
    """Signed REST client. Thread-safe for the counters; one Session per client (keep-alive)."""

    def __init__(self, ep: Endpoints, keys: ApiKeys, recv_window_ms: int = 5000, timeout_s: float = 5.0,
                 max_backoff_s: float = 120.0, order_connections: int = 1):
        self.ep = ep
        self.keys = keys
        self.recv_window_ms = int(recv_window_ms)
        self.timeout_s = timeout_s
        self.http = HttpPool(ep.rest_url, {"X-MBX-APIKEY": keys.key.reveal()}, timeout_s)
        # serverTime - local wall clock lives in the fast path's state array (aegis.binance.wire), which the sender's
        # jitted code reads when it stamps an order: a resync from any thread applies to the very next order
        self.wire_state = wire_new_state()
        self.last_sync_mono = 0.0
        self.banned = False              # the back-off is an IP ban (418): not even cancels may go out
        self._backoff_s = 1.0
        self._lock = threading.Lock()
        self.used_weight_1m = 0
        self.order_count_10s = 0
        self.order_count_1m = 0
        self.stats = {"requests": 0, "timeouts": 0, "resyncs": 0, "backoffs": 0, "resends": 0, "recovered": 0}
        self.first_send_ns = 0           # CLOCK_MONOTONIC ns of the first write of the current place_order
        # keep-alive connections of the fast order path: one per order in flight (send_prepared / finish_prepared)
        self.order_connections = order_connections
        self._order_conns: list[RestConnection] = []
        self.send_return_ns = 0          # when the last prepared send returned (the kernel's part of "wire")

    # ----------------------------------------------------------------------------------- clock
    @property
    def offset_ms(self) -> int:
        return int(self.wire_state[ST_OFFSET_MS])

    @offset_ms.setter
    def offset_ms(self, value: int) -> None:
        self.wire_state[ST_OFFSET_MS] = int(value)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def sync_time(self) -> int:
        """Measure serverTime - local time (midpoint of the round trip); returns the offset in ms."""
        t0 = time.time_ns()
        r = self._send("GET", "/fapi/v1/time", "", signed=False)
        t1 = time.time_ns()
        if r.get("ok"):
            server = int(r["data"]["serverTime"])
            self.offset_ms = server - (t0 + t1) // 2_000_000
            self.last_sync_mono = time.monotonic()
        return self.offset_ms

    # ----------------------------------------------------------------------------------- transport
    def _send(self, method: str, path: str, qs: str, signed: bool, key_header: bool = True) -> dict:
        self.stats["requests"] += 1
        _WIRE.ns = 0
        try:
            status, headers, body = self.http.request(method, path + ("?" + qs if qs else ""))
        except TimeoutError:
            self.stats["timeouts"] += 1
            return {"ok": False, "status": 0, "code": None, "msg": "timeout", "unknown": True, "timeout": True}
        except (OSError, http.client.HTTPException) as e:
            return {"ok": False, "status": 0, "code": None, "msg": f"connection error: {type(e).__name__}",
                    "unknown": True, "timeout": True}
        if not self.first_send_ns:
            # when the request's last bytes went into the socket (latency stage "wire"), not when the call began
            self.first_send_ns = _WIRE.ns or time.monotonic_ns()
        return self._interpret(status, headers, body)

    def _interpret(self, status: int, h, content: bytes) -> dict:
        """An HTTP answer as a result dict; `h` maps lower-case header names."""
        if "x-mbx-used-weight-1m" in h:
            self.used_weight_1m = int(h["x-mbx-used-weight-1m"])
        if "x-mbx-order-count-10s" in h:
            self.order_count_10s = int(h["x-mbx-order-count-10s"])
            self.order_count_1m = int(h.get("x-mbx-order-count-1m", self.order_count_1m))
        if status in (429, 418):
            self.back_off(status, h.get("retry-after"), content.decode("utf-8", "replace"))
            return _result_error(status, content)
        if status >= 500:
            # 503 "Unknown error..." = execution status unknown; other 5xx are failures but we cannot be sure
            # of that either for an order, so the order path always looks the order up.
            return _result_error(status, content, unknown=True)
        if status >= 400:
            return _result_error(status, content)
        try:
            data = orjson.loads(content) if content else {}
        except orjson.JSONDecodeError:
            return {"ok": False, "status": status, "code": None, "msg": "bad JSON", "unknown": True}
        self._backoff_s = 1.0
        return {"ok": True, "status": status, "data": data}

    def back_off(self, status: int, retry_after, text: str) -> None:
        """A 429/418 (REST or ws-fapi): pause for Retry-After seconds, else until the "banned until <ms>" of the
        message, else an exponential back-off (1, 2, 4 ... 120 s)."""
        wait = None
        if retry_after not in (None, ""):
            try:
                wait = float(retry_after)
            except (TypeError, ValueError):
                wait = None
        if wait is None:
            m = _BAN_RE.search(text or "")
            if m:
                wait = max(0.0, int(m.group(1)) / 1000.0 - time.time())
        if wait is None:
            wait = self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, 120.0)
        # the deadline lives in the fast path's state array, where the sender's jitted code checks it just before
        # it sends: a back-off that starts while the sender waits (after it last asked plain_fd) still holds
        until_ns = time.monotonic_ns() + int(wait * 1e9)
        if until_ns > self.wire_state[ST_BACKOFF_UNTIL_NS]:
            self.wire_state[ST_BACKOFF_UNTIL_NS] = until_ns
        self.banned = status == 418
        self.stats["backoffs"] += 1
        log.warning("HTTP %d from Binance: backing off %.1f s", status, wait)

    @property
    def backoff_until(self) -> float:
        """time.monotonic() before which we do not send (0: never backed off)."""
        return int(self.wire_state[ST_BACKOFF_UNTIL_NS]) / 1e9

    def backing_off(self) -> float:
        """Seconds left of a 429/418 back-off (0 if none)."""
        return max(0.0, (int(self.wire_state[ST_BACKOFF_UNTIL_NS]) - time.monotonic_ns()) / 1e9)

    def _resync(self, what: str) -> None:
        """-1021: the exchange refused a request as outside recvWindow, before processing it; the clock offset is
        taken again, and the caller sends the request once more."""
        self.stats["resyncs"] += 1
        self.sync_time()
        log.warning("%s: -1021 from the exchange (timestamp outside recvWindow): clock offset resynced to %d ms, "
                    "sent once more", what, self.offset_ms)

    def request(self, method: str, path: str, params=None, signed: bool = True, urgent: bool = False) -> dict:
        """One REST call; signed ones resync the clock and retry once on -1021."""
        if self.backing_off() > 0 and (not urgent or self.banned):
            return {"ok": False, "status": 0, "code": -1003, "msg": f"backing off {self.backing_off():.1f} s",
                    "unknown": False, "local": True}
        params = params or {}
        for attempt in range(2):
            qs = signed_query(self.keys.secret, params, self.now_ms(), self.recv_window_ms) if signed \
                else encode_params(params)
            r = self._send(method, path, qs, signed)
            if not r["ok"] and r.get("code") == -1021 and attempt == 0:
                self._resync(f"{method} {path}")
                continue
            return r
        return r

    # ----------------------------------------------------------------------------------- orders
    def place_order(self, params: dict) -> dict:
        """POST /fapi/v1/order with duplicate protection (see module docstring). params must carry
        newClientOrderId; the result has "order" on success."""
        self.first_send_ns = 0
        sent_ms = self.now_ms()
        r = self.request("POST", "/fapi/v1/order", params)
        if r["ok"]:
            r["order"] = r["data"]
            return r
        if not r.get("unknown"):
            return r
        return self.settle_unknown(params, sent_ms, r)

    def plain_fd(self, conn: RestConnection | None) -> int:
        """`conn`'s descriptor when the jitted sender may write to it itself (plain TCP, connected, not backing
        off), else -1. TLS needs the ssl module, so HTTPS orders are written from Python."""
        if conn is None or conn.sock is None or conn.tls or (self.backoff_until and self.backing_off() > 0):
            return -1
        return conn.sock.fileno()

    def free_order_connections(self, n: int) -> list[RestConnection]:
        """Up to n connections of the order pool with no answer awaited: the idle ones, then new ones while the
        pool has fewer than `order_connections`."""
        free = [c for c in self._order_conns if not c.awaiting][:n]
        while len(free) < n and len(self._order_conns) < self.order_connections:
            c = RestConnection(self.ep.rest_url, self.timeout_s)
            self._order_conns.append(c)
            free.append(c)
        return free

    def open_order_connections(self) -> None:
        """Open the whole order pool now, so that no order pays a handshake. Raises OSError."""
        for c in self.free_order_connections(self.order_connections):
            if c.sock is None:
                c.connect()

    def send_prepared(self, data, coid: str, params_fn, on_sent=None, pre=None, conn=None):
        """POST /fapi/v1/order from request bytes prepared by aegis.binance.wire (signed, journaled) on `conn`, an
        order connection with no answer awaited (free_order_connections), with the same answers and safety rules as
        place_order. Returns a Flight once the bytes are in the socket (finish_prepared reads its answer), or the
        result dict when the outcome is already known (a back-off, or a connection that failed before anything
        left, which the generic path then owns). `params_fn()` gives the order's params for the rare paths that
        need them (-1021 re-sign, unknown-state lookup); first_send_ns is stamped just before the bytes are handed
        to the socket. `pre` = (send(2) result, stamp) when the jitted sender already wrote them to `conn`
        (plain_fd). Nothing but checks that cost nothing runs before the send."""
        if pre is None:
            if self.backoff_until and self.backing_off() > 0:
                self.first_send_ns = 0
                return {"ok": False, "status": 0, "code": -1003, "msg": f"backing off {self.backing_off():.1f} s",
                        "unknown": False, "local": True}
            if conn.sock is None:   # an idle connection's staleness is checked off the order path
                try:
                    conn.connect()
                except OSError:
                    self.first_send_ns = 0
                    return self.place_order(params_fn())   # nothing left yet: the generic path owns the retries
            t = time.monotonic_ns()
            rest = data
        else:
            done, t = pre
            if done < 0 and done != -errno.EAGAIN:
                # the socket refused the whole request (reset, broken pipe): nothing left, so the generic path
                # may send it on a new connection
                conn.close()
                self.first_send_ns = 0
                return self.place_order(params_fn())
            rest = data[max(done, 0):]
        self.first_send_ns = t
        try:
            if len(rest):
                conn.send(rest)
        except WireError as e:
            return self._settle_place({"ok": False, "status": 0, "code": None, "msg": f"connection error: {e}",
                                       "unknown": True, "timeout": True}, t, params_fn)
        if pre is None or len(rest):
            self.send_return_ns = time.monotonic_ns()
        if on_sent is not None:
            on_sent()
        conn.awaiting = True
        return Flight(conn, conn.sock.fileno(), t, t + int(self.timeout_s * 1e9), params_fn)

    def answered(self, flights) -> list:
        """The flights whose answer can be read now without waiting (or that are past their timeout)."""
        socks = [f.conn.sock for f in flights if f.conn.sock is not None]
        try:
            ready = set(select.select(socks, [], [], 0)[0]) if socks else set()
        except (OSError, ValueError):
            return list(flights)           # finish_prepared finds out which one and says so
        now = time.monotonic_ns()
        return [f for f in flights if f.conn.sock is None or f.conn.sock in ready or now >= f.deadline_ns]

    def finish_prepared(self, f: "Flight") -> dict:
        """Read a Flight's answer (waiting for it until its timeout) and settle it as place_order would."""
        conn = f.conn
        try:
            if conn.sock is None:
                raise ConnectionError("connection closed")
            status, headers, body = conn.read_response(max(0.001, (f.deadline_ns - time.monotonic_ns()) / 1e9))
        except (TimeoutError, socket.timeout):
            self.stats["timeouts"] += 1
            r = {"ok": False, "status": 0, "code": None, "msg": "timeout", "unknown": True, "timeout": True}
        except (OSError, ValueError) as e:
            r = {"ok": False, "status": 0, "code": None, "msg": f"connection error: {type(e).__name__}",
                 "unknown": True, "timeout": True}
        else:
            r = self._interpret(status, headers, body)
        finally:
            conn.awaiting = False
        return self._settle_place(r, f.sent_ns, f.params_fn)

    def _settle_place(self, r: dict, sent_ns: int, params_fn) -> dict:
        self.stats["requests"] += 1
        # when it went out, for the unknown-state rule (the request's own timestamp was taken just before)
        sent_ms = self.now_ms() - (time.monotonic_ns() - sent_ns) // 1_000_000
        if r["ok"]:
            r["order"] = r["data"]
            return r
        if r.get("code") == -1021:
            # refused before processing: resync and re-sign through the generic path (same client order id)
            self._resync("POST /fapi/v1/order")
            return self.place_order(params_fn())
        if not r.get("unknown"):
            return r
        return self.settle_unknown(params_fn(), sent_ms, r)

    def idle(self) -> None:
        """Sender idle time: replace an order connection the server closed while idle (keep-alive expiry), so
        an order never discovers it by losing its answer."""
        for c in self._order_conns:
            if c.sock is not None and not c.awaiting and not c.usable():
                c.close()
                try:
                    c.connect()
                except OSError:
                    pass       # the next order connects again

    def settle_unknown(self, params: dict, sent_ms: int, first: dict) -> dict:
        sym, coid = params["symbol"], params["newClientOrderId"]
        q = self.query_order(sym, coid)
        if q["ok"]:
            self.stats["recovered"] += 1
            return {"ok": True, "status": q["status"], "data": q["data"], "order": q["data"], "recovered": True}
        if q.get("code") != -2013:
            return {**first, "unknown": True, "msg": f"{first.get('msg')}; lookup failed: {q.get('msg')}"}
        # not there (yet): once the original is past its recvWindow it can never execute; then look again
        wait_s = (sent_ms + self.recv_window_ms + 1000 - self.now_ms()) / 1000.0
        if wait_s > 0:
            time.sleep(min(wait_s, (self.recv_window_ms + 1000) / 1000.0))
        q = self.query_order(sym, coid)
        if q["ok"]:
            self.stats["recovered"] += 1
            return {"ok": True, "status": q["status"], "data": q["data"], "order": q["data"], "recovered": True}
        if q.get("code") != -2013:
            return {**first, "unknown": True, "msg": f"{first.get('msg')}; lookup failed: {q.get('msg')}"}
        self.stats["resends"] += 1
        r = self.request("POST", "/fapi/v1/order", params)
        if r["ok"]:
            r["order"] = r["data"]
            r["resent"] = True
        return r

    def cancel_order(self, symbol: str, client_order_id: str) -> dict:
        r = self.request("DELETE", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": client_order_id},
                         urgent=True)
        if r["ok"]:
            r["order"] = r["data"]
        return r

    def cancel_all(self, symbol: str) -> dict:
        # success body is {"code": 200, "msg": ...} (docs/binance-notes.md, New order): judge by HTTP status
        return self.request("DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol}, urgent=True)

    def query_order(self, symbol: str, client_order_id: str) -> dict:
        return self.request("GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": client_order_id},
                            urgent=True)

    def open_orders(self, symbol: str | None = None) -> dict:
        r = self.request("GET", "/fapi/v1/openOrders", {"symbol": symbol} if symbol else {}, urgent=True)
        if r["ok"]:
            r["orders"] = r["data"]
        return r

    def position_risk(self) -> dict:
        r = self.request("GET", "/fapi/v3/positionRisk", {}, urgent=True)
        if r["ok"]:
            r["positions"] = r["data"]
        return r

    def exchange_info(self) -> dict:
        return self.request("GET", "/fapi/v1/exchangeInfo", {}, signed=False, urgent=True)

    # ----------------------------------------------------------------------------------- reference data
    def klines(self, symbol: str, interval: str, limit: int = 500) -> dict:
        """GET /fapi/v1/klines (closed and open candles, oldest first); "klines" = the rows on success."""
        r = self.request("GET", "/fapi/v1/klines", {"symbol": symbol, "interval": interval, "limit": limit},
                         signed=False)
        if r["ok"]:
            r["klines"] = r["data"]
        return r

    def leverage_brackets(self, symbol: str | None = None) -> dict:
        """GET /fapi/v1/leverageBracket: "brackets" = {symbol: [bracket, ...]}."""
        r = self.request("GET", "/fapi/v1/leverageBracket", {"symbol": symbol} if symbol else {})
        if r["ok"]:
            rows = r["data"] if isinstance(r["data"], list) else [r["data"]]
            r["brackets"] = {row["symbol"]: row["brackets"] for row in rows}
        return r

    def symbol_config(self, symbol: str | None = None) -> dict:
        """GET /fapi/v1/symbolConfig (leverage and margin type per symbol)."""
        return self.request("GET", "/fapi/v1/symbolConfig", {"symbol": symbol} if symbol else {})

    def position_mode(self) -> dict:
        """GET /fapi/v1/positionSide/dual: {"dualSidePosition": true} when the account is in hedge mode."""
        return self.request("GET", "/fapi/v1/positionSide/dual", {}, urgent=True)

    def commission_rate(self, symbol: str) -> dict:
        """GET /fapi/v1/commissionRate: this account's maker/taker rates for the symbol."""
        return self.request("GET", "/fapi/v1/commissionRate", {"symbol": symbol})

    # ----------------------------------------------------------------------------------- exchange-side safety
    def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> dict:
        """POST /fapi/v1/countdownCancelAll: (re)arm the symbol's dead-man switch; 0 disarms it."""
        return self.request("POST", "/fapi/v1/countdownCancelAll", {"symbol": symbol, "countdownTime": countdown_ms},
                            urgent=True)

    def algo_place(self, params: dict) -> dict:
        """POST /fapi/v1/algoOrder (conditional orders: STOP_MARKET & co. since 2025-12-09)."""
        return self.request("POST", "/fapi/v1/algoOrder", {"algoType": "CONDITIONAL", **params}, urgent=True)

    def algo_cancel(self, algo_id: int) -> dict:
        return self.request("DELETE", "/fapi/v1/algoOrder", {"algoId": algo_id}, urgent=True)

    def algo_open_orders(self, symbol: str | None = None) -> dict:
        r = self.request("GET", "/fapi/v1/openAlgoOrders", {"symbol": symbol} if symbol else {}, urgent=True)
        if r["ok"]:
            r["orders"] = r["data"]
        return r

    # ----------------------------------------------------------------------------------- listenKey (key only)
    def listen_key_create(self) -> dict:
        return self.request("POST", "/fapi/v1/listenKey", {}, signed=False, urgent=True)

    def listen_key_keepalive(self) -> dict:
        return self.request("PUT", "/fapi/v1/listenKey", {}, signed=False, urgent=True)

    def listen_key_delete(self) -> dict:
        return self.request("DELETE", "/fapi/v1/listenKey", {}, signed=False, urgent=True)

    def close(self) -> None:
        self.http.close()
        for c in self._order_conns:
            c.close()


class WsTradeClient:
    """order.place / order.cancel over the websocket trading API (Binance docs: "WebSocket API General Info").
    Orders are pipelined: up to `in_flight` requests are on the one connection at once, each answer matched to its
    request by the id it carries (an order's id is its newClientOrderId), in whatever order the answers come.
    Lookups, cancel-all and reconciliation go over the REST client `rest`, which also supplies the clock offset.
    Reconnects lazily after any socket error; the orders in flight on a lost connection are settled as unknown
    outcomes (looked up by client order id). Used by the sender thread only."""

    def __init__(self, rest: BinanceClient, timeout_s: float = 5.0, in_flight: int = 4):
        self.rest = rest
        self.timeout_s = timeout_s
        self.in_flight = in_flight
        self._ws = None
        self._gen = 0                     # connections opened so far: a Flight's gen names the one it went on
        self._opened = 0.0
        self._ids = itertools.count(1)
        self._awaited: set[str] = set()   # ids of the requests in flight, whose answers are kept when read
        self._answers: dict[str, dict] = {}   # answers read while another was looked for, by request id
        self.stats = {"requests": 0, "timeouts": 0, "reconnects": 0}
        self.first_send_ns = 0
        self.send_return_ns = 0

    # reconnect before Binance's 24 h cut (docs/binance-notes.md, Trading websocket), never in the middle of an order
    MAX_AGE_S = 23 * 3600

    def _conn(self):
        import websocket
        if self._ws is None:
            self._ws = websocket.create_connection(self.rest.ep.ws_api_url, timeout=self.timeout_s,
                                                   enable_multithread=True)
            self._opened = time.monotonic()
            self._gen += 1
            self.stats["reconnects"] += 1
        return self._ws

    def connect(self) -> None:
        """Open the connection now, so the first order does not pay the handshake."""
        self._conn()

    def idle(self) -> None:
        """Called by the sender thread when it has nothing to send: answer the server's pings (a pong must echo
        the ping within 10 min, docs/binance-notes.md, Trading websocket, and websocket-client only answers while
        reading), notice a dead socket and reconnect ahead of the 24 h cut, all off the order path."""
        import websocket
        ws = self._ws
        try:
            if ws is None or not ws.connected or (not self._awaited and
                                                  time.monotonic() - self._opened > self.MAX_AGE_S):
                self.close()
                self._conn()
                return
            self._drain(ws)
        except (websocket.WebSocketException, OSError, orjson.JSONDecodeError):
            self.close()

    def close(self) -> None:
        """Close the connection. Answers already read stay; the requests still awaited on it are lost."""
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None

    def _frame(self, ws, deadline: float) -> tuple[str | None, dict | None]:
        """The next frame: (request id, answer) for a text frame, (None, None) for a ping or pong (answered
        inside websocket-client). Raises on a close frame, a timeout or a socket error."""
        import websocket
        ws.settimeout(max(0.01, deadline - time.monotonic()))
        op, frame = ws.recv_data_frame(True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            raise websocket.WebSocketConnectionClosedException("closed by the server")
        if op not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
            return None, None
        j = orjson.loads(frame.data)
        return j.get("id"), j

    def _keep(self, rid, j, wanted: str = "") -> None:
        if rid is not None and (rid == wanted or rid in self._awaited):
            self._answers[rid] = j        # anything else (an answer to a request given up on) is dropped
        elif rid is None and j is not None and int(j.get("status", 200)) >= 400:
            # the server's own notice, e.g. a revoked key (-2015): every request after it fails too, say why once
            err = j.get("error") or {}
            log.error("ws-fapi: the server reports %s %s", err.get("code"), err.get("msg"))

    def _drain(self, ws) -> None:
        """Read every frame that has begun to arrive, keeping the answers awaited. Afterwards nothing is held in
        the TLS layer's buffer, where poll(2) on the socket (the sender's jitted wait) could not see it."""
        import websocket
        while True:
            sock = ws.sock
            if sock is None or sock.fileno() < 0:
                raise websocket.WebSocketConnectionClosedException("closed")
            if not ((isinstance(sock, ssl.SSLSocket) and sock.pending()) or select.select([sock], [], [], 0)[0]):
                return
            rid, j = self._frame(ws, time.monotonic() + self.timeout_s)   # begun: the rest is on its way
            self._keep(rid, j)

    def _await(self, rid: str, deadline: float) -> dict:
        """The answer carrying `rid`, read when it comes; other awaited answers read meanwhile are kept."""
        import websocket
        ws = self._ws
        while rid not in self._answers:
            if ws is None:
                raise websocket.WebSocketConnectionClosedException("closed")
            got, j = self._frame(ws, deadline)
            self._keep(got, j, rid)
        return self._answers.pop(rid)

    def call(self, method: str, params: dict) -> dict:
        """One request, its answer read before this returns (orders in flight keep theirs)."""
        import websocket
        rid = f"r{next(self._ids)}"
        signed = ws_signed_params(self.rest.keys.key, self.rest.keys.secret, params, self.rest.now_ms(),
                                  self.rest.recv_window_ms)
        msg = orjson.dumps({"id": rid, "method": method, "params": signed})
        self.stats["requests"] += 1
        try:
            ws = self._conn()
            ws.send(msg)                  # returns once the frame is written
            if not self.first_send_ns:
                self.first_send_ns = time.monotonic_ns()
            return self._result(self._await(rid, time.monotonic() + self.timeout_s))
        except (websocket.WebSocketException, OSError, orjson.JSONDecodeError) as e:
            return self._failed(e)

    def _failed(self, e: Exception) -> dict:
        """The result of a request whose answer was not read; the connection is closed (a late answer is not worth
        keeping it for)."""
        import websocket
        self.close()
        if isinstance(e, (websocket.WebSocketTimeoutException, TimeoutError)):
            self.stats["timeouts"] += 1
            return {"ok": False, "status": 0, "code": None, "msg": "timeout", "unknown": True, "timeout": True}
        return {"ok": False, "status": 0, "code": None, "msg": f"ws error: {type(e).__name__}", "unknown": True}

    @staticmethod
    def _result(j: dict) -> dict:
        status = int(j.get("status", 0))
        if status == 200:
            return {"ok": True, "status": 200, "data": j.get("result")}
        err = j.get("error") or {}
        data = err.get("data") if isinstance(err.get("data"), dict) else {}
        retry = data.get("retryAfter")          # ms epoch on Binance's ws APIs, when given
        return {"ok": False, "status": status, "code": err.get("code"), "msg": str(err.get("msg", "")),
                "unknown": status >= 500,
                "retry_after": max(0.0, retry / 1000.0 - time.time()) if isinstance(retry, (int, float)) else None}

    def free_order_connections(self, n: int) -> list:
        """The websocket once for each order it may still take while up to `in_flight` are awaited."""
        return [self] * max(0, min(n, self.in_flight - len(self._awaited)))

    def plain_fd(self, conn=None) -> int:
        """The websocket's descriptor when the jitted sender may write frames to it itself, else -1 (TLS, not
        connected, backing off). Only the sender thread reads or writes this connection, so a frame written
        from jitted code cannot interleave with a pong websocket-client sends while reading."""
        ws = self._ws
        if ws is None or ws.sock is None or isinstance(ws.sock, ssl.SSLSocket) or \
                (self.rest.backoff_until and self.rest.backing_off() > 0):
            return -1
        return ws.sock.fileno()

    def send_prepared(self, data, coid: str, params_fn, on_sent=None, pre=None, conn=None):
        """order.place from a frame prepared by aegis.binance.wire (masked, signed, journaled; its request id is the
        newClientOrderId), with the same answers and safety rules as place_order. Returns a Flight once the frame
        is in the socket (finish_prepared reads its answer), or the result when it is already known. `pre` and
        first_send_ns as in BinanceClient.send_prepared."""
        import websocket
        self.first_send_ns = 0
        if pre is None and self.rest.backing_off() > 0:
            return {"ok": False, "status": 0, "code": -1003, "msg": "backing off", "unknown": False, "local": True}
        stamp = 0
        if pre is not None:
            done, stamp = pre
            if done < 0 and done != -errno.EAGAIN:
                self.close()          # nothing of the frame left; the generic path reconnects and sends it
                return self.place_order(params_fn())
            data = data[max(done, 0):]
        sent_ms = self.rest.now_ms()
        self.stats["requests"] += 1
        try:
            ws = self._conn()
            t = stamp or time.monotonic_ns()
            if len(data):
                with ws.lock:      # websocket-client's own writer lock: its pongs never interleave with our frame
                    ws.sock.sendall(data)
                self.send_return_ns = time.monotonic_ns()
            self.first_send_ns = t
        except (websocket.WebSocketException, OSError) as e:
            return self._finish_place(self._failed(e), params_fn, sent_ms)
        if on_sent is not None:
            on_sent()
        self._awaited.add(coid)
        return Flight(self, ws.sock.fileno(), t, t + int(self.timeout_s * 1e9), params_fn, coid, self._gen)

    def answered(self, flights) -> list:
        """The flights whose answer has been read or can be read now (or that are past their timeout, or whose
        connection is gone)."""
        import websocket
        if self._ws is not None and self._awaited:
            try:
                self._drain(self._ws)
            except (websocket.WebSocketException, OSError, orjson.JSONDecodeError):
                self.close()              # their finish_prepared settles the orders awaited as unknown outcomes
        now = time.monotonic_ns()
        return [f for f in flights if f.rid in self._answers or f.gen != self._gen or self._ws is None or
                now >= f.deadline_ns]

    def finish_prepared(self, f: Flight) -> dict:
        """Read a Flight's answer (waiting for it until its timeout) and settle it as place_order would."""
        import websocket
        sent_ms = self.rest.now_ms() - (time.monotonic_ns() - f.sent_ns) // 1_000_000
        try:
            if f.rid not in self._answers and (f.gen != self._gen or self._ws is None):
                raise websocket.WebSocketConnectionClosedException("connection lost with the order in flight")
            r = self._result(self._await(f.rid, f.deadline_ns / 1e9))
        except (websocket.WebSocketException, OSError, orjson.JSONDecodeError, TimeoutError) as e:
            r = self._failed(e)
        finally:
            self._awaited.discard(f.rid)
        if self._ws is not None and self._awaited:
            self.answered(())             # what the TLS layer holds beyond this answer: see _drain
        if not r["ok"] and r.get("code") == -1021:
            self.rest.stats["resyncs"] += 1
            self.rest.sync_time()
            return self.place_order(f.params_fn())     # re-signed with the new clock, same client order id
        return self._finish_place(r, f.params_fn, sent_ms)

    def _finish_place(self, r: dict, params_fn, sent_ms: int) -> dict:
        """An order.place answer: the order on success, a back-off on 429/418, the by-client-id lookup when the
        outcome is unknown."""
        if r["ok"]:
            r["order"] = r["data"]
            return r
        if r.get("status") in (429, 418):
            self.rest.back_off(r["status"], r.get("retry_after"), r.get("msg", ""))
        if not r.get("unknown"):
            return r
        return self.rest.settle_unknown(params_fn(), sent_ms, r)

    def place_order(self, params: dict) -> dict:
        if self.rest.backing_off() > 0:
            return {"ok": False, "status": 0, "code": -1003, "msg": "backing off", "unknown": False, "local": True}
        self.first_send_ns = 0
        sent_ms = self.rest.now_ms()
        r = self.call("order.place", params)
        if not r["ok"] and r.get("code") == -1021:
            self.rest.stats["resyncs"] += 1
            self.rest.sync_time()
            sent_ms = self.rest.now_ms()
            r = self.call("order.place", params)
        return self._finish_place(r, lambda: params, sent_ms)

    def cancel_order(self, symbol: str, client_order_id: str) -> dict:
        r = self.call("order.cancel", {"symbol": symbol, "origClientOrderId": client_order_id})
        if r.get("unknown"):
            return self.rest.cancel_order(symbol, client_order_id)
        if r["ok"]:
            r["order"] = r["data"]
        return r

    def cancel_all(self, symbol: str) -> dict:
        return self.rest.cancel_all(symbol)

    def query_order(self, symbol: str, client_order_id: str) -> dict:
        return self.rest.query_order(symbol, client_order_id)

    def open_orders(self, symbol: str | None = None) -> dict:
        return self.rest.open_orders(symbol)

    def position_risk(self) -> dict:
        return self.rest.position_risk()
