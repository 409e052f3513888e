"""User data stream of the venue: ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, TRADE_LITE and listenKeyExpired over websocket.

Paths (docs/binance-notes.md, User data stream): /private/ws/<listenKey>, /private/ws?listenKey=<k>[&events=A/B],
/private/stream?listenKey=<k1>&events=..&listenKey=<k2>.. (combined wrapper {"stream":<listenKey>,"data":..}), and
/private/stream with a JSON SUBSCRIBE of bare listenKeys. An unknown or expired listenKey closes the socket (1008).

The exchange emits events under its lock; each connection only queues them, and its own handler thread writes
them, so a slow client never stalls matching. The listen keys are followed from before the 101 is sent, as on Binance,
where the stream is subscribed once the handshake completes: an event made right after the connect is delivered.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from urllib.parse import parse_qsl

import orjson

from aegis.venue.exchange import Exchange


class _Sub:
    """One listenKey followed by one connection."""

    def __init__(self, conn: "_UserConn", listen_key: str, account: str, events: frozenset[str] | None):
        self.conn = conn
        self.listen_key = listen_key
        self.account = account
        self.events = events
        self.alive = True

    def on_event(self, ev: dict) -> None:
        if self.alive and (self.events is None or ev["e"] in self.events):
            self.conn.push(self.listen_key, ev)


class _UserConn:
    def __init__(self, combined: bool):
        self.ws = None             # the websocket, once the 101 is sent
        self.combined = combined
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.subs: list[_Sub] = []
        self._lock = threading.Lock()
        self._close: tuple[int, str] | None = None   # asked for before there was a websocket

    def attach(self, ws) -> None:
        with self._lock:
            self.ws = ws
            pending = self._close
        if pending is not None:
            ws.close(*pending)

    def close(self, code: int, reason: str) -> None:
        with self._lock:
            ws = self.ws
            if ws is None:
                self._close = self._close or (code, reason)
                return
        ws.close(code, reason)

    def push(self, listen_key: str, ev: dict) -> None:
        self.q.put((listen_key, ev))

    def encode(self, listen_key: str, ev: dict) -> bytes:
        if self.combined:
            return orjson.dumps({"stream": listen_key, "data": ev})
        return orjson.dumps(ev)


class UserDataService:
    def __init__(self, exchange: Exchange, cfg=None):
        self.exchange = exchange
        self._lock = threading.Lock()
        self._subs: list[_Sub] = []
        exchange.add_expiry_listener(self._on_expired)
        validity = exchange.cfg.listen_key_validity_s
        self._period = max(0.01, min(1.0, validity / 10.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._expiry_loop, name="venue-listenkey-expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _expiry_loop(self) -> None:
        while not self._stop.wait(self._period):
            self.exchange.expire_due_listen_keys()

    def _on_expired(self, listen_key: str, account: str, ev: dict | None) -> None:
        with self._lock:
            subs = [s for s in self._subs if s.listen_key == listen_key]
        for s in subs:
            if ev is None:                       # DELETE /fapi/v1/listenKey closes the stream
                self._drop(s)
                if not s.conn.subs:
                    s.conn.close(1000, "listenKey deleted")
                continue
            # the last event of a key; nothing follows until a new listenKey is used (docs/binance-notes.md, User data
            # events)
            s.conn.push(listen_key, ev)
            self._drop(s)

    def _add(self, conn: _UserConn, listen_key: str, events: frozenset[str] | None) -> bool:
        account = self.exchange.listen_key_owner(listen_key)
        if account is None:
            return False
        sub = _Sub(conn, listen_key, account, events)
        conn.subs.append(sub)
        with self._lock:
            self._subs.append(sub)
        self.exchange.add_listener(account, sub.on_event)
        return True

    def _drop(self, sub: _Sub) -> None:
        sub.alive = False
        self.exchange.remove_listener(sub.account, sub.on_event)
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        if sub in sub.conn.subs:
            sub.conn.subs.remove(sub)

    @contextlib.contextmanager
    def subscribe(self, req):
        """Entered before the 101: follows the request's listen keys (an unknown one: the stream opens, then closes
        with 1008); exited when the connection ends."""
        path = req.path.rstrip("/")
        params = parse_qsl(req.query or "", keep_blank_values=True)
        keys: list[tuple[str, frozenset[str] | None]] = []
        pending_key = None
        for k, v in params:
            if k == "listenKey":
                if pending_key is not None:
                    keys.append((pending_key, None))
                pending_key = v
            elif k == "events" and pending_key is not None:
                keys.append((pending_key, frozenset(e for e in v.split("/") if e)))
                pending_key = None
        if pending_key is not None:
            keys.append((pending_key, None))
        combined = path.startswith("/private/stream")
        if path.startswith("/private/ws/"):
            keys.append((path[len("/private/ws/"):], None))
        conn = _UserConn(combined)
        try:
            for lk, events in keys:
                if not self._add(conn, lk, events):
                    self._drop_all(conn)
                    conn.close(1008, "Invalid listenKey")
                    break
            if not keys and not combined:
                conn.close(1008, "Missing listenKey")
            yield conn
        finally:
            self._drop_all(conn)

    def _drop_all(self, conn: _UserConn) -> None:
        for s in list(conn.subs):
            self._drop(s)

    def handle(self, ws, req) -> None:
        conn: _UserConn = ws.prepared
        conn.attach(ws)
        try:
            self._serve(conn)
        finally:
            self._drop_all(conn)

    def _serve(self, conn: _UserConn) -> None:
        ws = conn.ws
        while not ws.closed:
            try:
                lk, ev = conn.q.get(timeout=0.2)
            except queue.Empty:
                lk = None
            if lk is not None:
                if not ws.send_text(conn.encode(lk, ev)):
                    return
                while True:     # drain what queued meanwhile before looking at control messages
                    try:
                        lk, ev = conn.q.get_nowait()
                    except queue.Empty:
                        break
                    if not ws.send_text(conn.encode(lk, ev)):
                        return
            msg = ws.recv(timeout=0)
            if msg is not None:
                self._control(conn, msg[1])

    def _control(self, conn: _UserConn, payload: bytes) -> None:
        try:
            req = orjson.loads(payload)
            method = req.get("method")
            rid = req.get("id")
        except (orjson.JSONDecodeError, AttributeError):
            conn.ws.send_text(orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON: malformed request"},
                                            "id": None}))
            return
        params = req.get("params") or []
        if method == "SUBSCRIBE":
            for item in params:
                lk, _, event = str(item).partition("@")
                if not any(s.listen_key == lk for s in conn.subs):
                    self._add(conn, lk, frozenset([event]) if event else None)
            conn.ws.send_text(orjson.dumps({"result": None, "id": rid}))
        elif method == "UNSUBSCRIBE":
            for item in params:
                lk = str(item).partition("@")[0]
                for s in [s for s in conn.subs if s.listen_key == lk]:
                    self._drop(s)
            conn.ws.send_text(orjson.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            conn.ws.send_text(orjson.dumps({"result": [s.listen_key for s in conn.subs], "id": rid}))
        else:
            conn.ws.send_text(orjson.dumps({"error": {"code": 2, "msg": "Invalid request: unknown method"},
                                            "id": rid}))


def install(router, exchange: Exchange, cfg=None) -> UserDataService:
    svc = UserDataService(exchange, cfg)
    router.add_ws("/private", svc.handle, prepare=svc.subscribe)
    return svc
