"""One-port HTTP/1.1 keep-alive + RFC 6455 websocket server for the embedded venue.

Threads and blocking sockets only: one accept thread, one thread per TCP connection
(it serves HTTP requests, then after an upgrade runs the websocket route handler), one
reader thread per websocket (control frames are answered there so a handler that is
busy writing a firehose still answers pings), and one housekeeping thread that sends
server pings and enforces the pong timeout and the connection lifetime.
"""
from __future__ import annotations

import collections
import contextlib
import os
import queue
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote

from aegis.core import websocket as ws

from . import wsproto

_REASONS = {
    101: "Switching Protocols", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Payload Too Large", 418: "I'm a teapot", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str  # percent-decoded path without the query
    query: str  # raw, undecoded query string (the exact bytes a signature covers)
    body: bytes
    headers: dict[str, str]  # lower-case keys
    client_ip: str
    version: str = "HTTP/1.1"


@dataclass
class Response:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)


def json_error(status: int, code: int, msg: str) -> Response:
    import orjson

    return Response(status, orjson.dumps({"code": code, "msg": msg}))


@dataclass(frozen=True)
class WsPolicy:
    """Per-route websocket rules; defaults are Binance's documented values (docs/binance-notes.md, Stream connection
    rules)."""

    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    lifetime_s: float = 86400.0
    max_incoming_per_s: int | None = None  # ping + pong + data frames in any 1 s window
    incoming_limit_close_code: int = 1008
    lifetime_close_code: int = 1001
    max_message_bytes: int | None = None   # larger data messages close the connection with 1009 (None: 16 MiB)


class Router:
    def __init__(self) -> None:
        self._http: dict[tuple[str, str], Callable[[Request], Response]] = {}
        # headers of 404/405 replies (the REST API sets X-MBX-USED-WEIGHT-1M: every Binance reply carries it)
        self.unmatched_headers: Callable[[Request], dict[str, str]] | None = None
        self._ws: list[tuple[str, Callable, WsPolicy | None, Callable | None]] = []

    def add_http(self, method: str, path: str, handler: Callable[[Request], Response]) -> None:
        self._http[(method.upper(), path)] = handler

    def add_ws(self, path_prefix: str, handler: Callable[["WsConn", Request], None],
               policy: WsPolicy | None = None,
               prepare: Callable[[Request], contextlib.AbstractContextManager] | None = None) -> None:
        """prepare(req): a context manager entered before the 101 is sent and exited after the handler returned
        (or the 101 could not be sent); what it yields is the handler's conn.prepared."""
        self._ws = [w for w in self._ws if w[0] != path_prefix]
        self._ws.append((path_prefix, handler, policy, prepare))
        # Longest prefix first so "/ws-fapi/v1" wins over "/ws".
        self._ws.sort(key=lambda w: -len(w[0]))

    def http_handler(self, method: str, path: str):
        """(handler, None) or (None, status) with 404 unknown path / 405 wrong method."""
        h = self._http.get((method, path))
        if h is not None:
            return h, None
        if any(p == path for (_m, p) in self._http):
            return None, 405
        return None, 404

    def ws_handler(self, path: str):
        """(handler, policy, prepare) of the route, or Nones."""
        for prefix, handler, policy, prepare in self._ws:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return handler, policy, prepare
        return None, None, None


def _drop(sock: socket.socket) -> None:
    """Shut a socket down, then close it.

    A websocket's reader thread may be blocked in recv on the socket. close() alone neither wakes it nor ends the
    TCP connection (the blocked call keeps the socket alive), and after a close the socket can no longer be shut
    down by anyone else: so every closer shuts down first, whichever thread gets there first.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class WsConn:
    """A server-side websocket. Sends are thread-safe; recv() returns data messages only."""

    def __init__(self, sock: socket.socket, reader: wsproto.FrameReader, request: Request,
                 policy: WsPolicy, server: "VenueServer"):
        self.request = request
        self.policy = policy
        self.path = request.path
        self.connected_at = time.monotonic()
        self.close_code: int | None = None  # code we sent (or received first)
        self.close_reason = ""
        self.peer_close_code: int | None = None
        self._sock = sock
        self._reader = reader
        self._server = server
        self.prepared = None  # what the route's prepare yielded
        self._send_lock = threading.Lock()
        self._inbox: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._close_sent_at: float | None = None
        self._pending_pings: "collections.OrderedDict[bytes, float]" = collections.OrderedDict()
        self._ping_lock = threading.Lock()
        self._last_ping_at = self.connected_at
        self._incoming_times: collections.deque = collections.deque()
        self._reader_thread = threading.Thread(target=self._read_loop, name="venue-ws-reader", daemon=True)
        self.pings_sent = 0
        self.pongs_received = 0

    # ---- sending -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed.is_set() or self._close_sent_at is not None

    @property
    def finished(self) -> bool:
        """The socket is closed: nothing more will be sent or received."""
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def start(self) -> None:
        """Start reading frames (the server calls it once the connection is registered)."""
        self._reader_thread.start()

    def _send_raw(self, data: bytes | bytearray | memoryview, block: bool = True) -> bool:
        """block=False: give up at once if another thread is inside a (possibly stuck) sendall."""
        if self.closed:
            return False
        if not self._send_lock.acquire(blocking=block):
            return False
        try:
            self._sock.sendall(data)
            return True
        except OSError:
            self.mark_closed(1006, "send failed")
            return False
        finally:
            self._send_lock.release()

    def send_text(self, data: bytes | str) -> bool:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self._send_raw(ws.encode_frame(ws.OP_TEXT, data, masked=False))

    def send_frames(self, prebuilt: bytes | bytearray | memoryview) -> bool:
        """Write already-encoded server frames in one sendall (the firehose path)."""
        return self._send_raw(prebuilt)

    def send_raw_bytes(self, data: bytes) -> bool:
        """Write arbitrary bytes (fault injection of malformed frames)."""
        return self._send_raw(data)

    def ping(self, payload: bytes = b"", block: bool = True) -> bool:
        payload = bytes(payload)[:125]
        now = time.monotonic()
        with self._ping_lock:  # registered before sending: the echo may arrive before sendall returns
            self._pending_pings[payload] = now
        if not self._send_raw(ws.encode_frame(ws.OP_PING, payload, masked=False), block):
            with self._ping_lock:
                self._pending_pings.pop(payload, None)
            return False
        self._last_ping_at = now
        self.pings_sent += 1
        return True

    def close(self, code: int = 1000, reason: str = "", wait_s: float | None = None) -> None:
        """Start the closing handshake; the TCP connection is dropped when the peer answers (or after 1 s).
        wait_s: how long to wait for a sender stuck on a client that does not read; then the TCP connection
        is dropped without a close frame (None = wait as long as it takes)."""
        if self.closed:
            return
        frame = ws.encode_close(code, reason, masked=False)
        if not self._send_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            self.mark_closed(code, reason)
            return
        try:
            self._close_sent_at = time.monotonic()
            self.close_code, self.close_reason = code, reason
            self._sock.sendall(frame)
        except OSError:
            self.mark_closed(code, reason)
        finally:
            self._send_lock.release()

    def abort(self) -> None:
        """Drop the TCP connection with no closing handshake (fault knob)."""
        self.mark_closed(1006, "aborted")

    # ---- receiving -----------------------------------------------------------------------------
    def recv(self, timeout: float | None = None):
        """(opcode, payload) of the next text/binary message, or None on timeout / closed."""
        try:
            if timeout is not None and timeout <= 0:
                return self._inbox.get_nowait()
            if self._closed.is_set() and self._inbox.empty():
                return None
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _count_incoming(self) -> bool:
        limit = self.policy.max_incoming_per_s
        if limit is None:
            return True
        now = time.monotonic()
        q = self._incoming_times
        q.append(now)
        while q and now - q[0] > 1.0:
            q.popleft()
        if len(q) > limit:
            self.close(self.policy.incoming_limit_close_code, "Too many messages")
            return False
        return True

    def _read_loop(self) -> None:
        try:
            while not self._closed.is_set():
                try:
                    opcode, payload = self._reader.next_message()
                except wsproto.ProtocolError as e:
                    self.close(e.close_code, str(e)[:100])
                    self._drain_until_close()
                    return
                if opcode == ws.OP_CLOSE:
                    code, reason = ws.parse_close_payload(payload)
                    self.peer_close_code = code
                    if self._close_sent_at is None:
                        # Echo the peer's code, as RFC 6455 5.5.1 suggests.
                        try:
                            with self._send_lock:
                                self._close_sent_at = time.monotonic()
                                self.close_code, self.close_reason = code, reason
                                self._sock.sendall(ws.encode_close(code, masked=False))
                        except OSError:
                            pass
                    self.mark_closed(code if code is not None else 1005, reason)
                    return
                if not self._count_incoming():
                    self._drain_until_close()
                    return
                if opcode == ws.OP_PING:
                    self._send_raw(ws.encode_frame(ws.OP_PONG, payload, masked=False))
                elif opcode == ws.OP_PONG:
                    self.pongs_received += 1
                    # Only an echo of an outstanding ping counts (unsolicited pongs do not, docs/binance-notes.md,
                    # Stream connection rules).
                    with self._ping_lock:
                        if payload in self._pending_pings:
                            while self._pending_pings:
                                k, _ = self._pending_pings.popitem(last=False)
                                if k == payload:
                                    break
                elif self._close_sent_at is None:
                    self._inbox.put((opcode, payload))
        except (OSError, ConnectionError):
            self.mark_closed(1006, "connection lost")

    def _drain_until_close(self) -> None:
        # After we sent a close frame, wait briefly for the peer's close, then drop TCP.
        try:
            self._sock.settimeout(1.0)
            while True:
                fin, opcode, payload = self._reader.read_frame()
                if opcode == ws.OP_CLOSE:
                    self.peer_close_code = ws.parse_close_payload(payload)[0]
                    break
        except Exception:
            pass
        self.mark_closed(self.close_code or 1006, self.close_reason)

    def mark_closed(self, code: int | None, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._closed.is_set():
            return
        self._closed.set()
        _drop(self._sock)

    def housekeep(self, now: float) -> None:
        if self._closed.is_set():
            return
        if self._close_sent_at is not None:
            if now - self._close_sent_at > 1.0:
                self.mark_closed(self.close_code, self.close_reason)
            return
        # never block here: one client that stopped reading must not stall every other connection's timers
        p = self.policy
        if now - self.connected_at >= p.lifetime_s:
            self.close(p.lifetime_close_code, "connection lifetime reached", wait_s=0.05)
            return
        with self._ping_lock:
            oldest = next(iter(self._pending_pings.values())) if self._pending_pings else None
        if oldest is not None:
            if now - oldest >= p.pong_timeout_s:
                self.close(1008, "pong timeout", wait_s=0.05)
                return
        if now - self._last_ping_at >= p.ping_interval_s:
            self.ping(os.urandom(8), block=False)


class VenueServer:
    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 0,
                 ws_policy: WsPolicy | None = None, housekeeping_interval_s: float = 0.05):
        self.router = router
        self.host = host
        self._requested_port = port
        self.ws_policy = ws_policy or WsPolicy()
        self._hk_interval = housekeeping_interval_s
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conn_lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self.ws_conns: list[WsConn] = []
        self.port = 0

    def start(self) -> "VenueServer":
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self._requested_port))
        ls.listen(256)
        self._listener = ls
        self.port = ls.getsockname()[1]
        for target, name in ((self._accept_loop, "venue-accept"), (self._housekeeping_loop, "venue-housekeeping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._listener is not None:
            _drop(self._listener)    # wakes the accept loop
        with self._conn_lock:
            conns = list(self.ws_conns)
            socks = list(self._socks)
        for c in conns:
            c.abort()
        for s in socks:
            _drop(s)
        for t in self._threads:
            t.join(timeout=2.0)

    def live_ws_conns(self, path_prefix: str | None = None) -> list[WsConn]:
        with self._conn_lock:
            conns = [c for c in self.ws_conns if not c.closed]
        if path_prefix is not None:
            conns = [c for c in conns if c.path == path_prefix or c.path.startswith(path_prefix.rstrip("/") + "/")
                     or c.path.startswith(path_prefix + "?")]
        return conns

    # ---- threads -------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conn_lock:
                self._socks.add(sock)
            t = threading.Thread(target=self._serve_connection, args=(sock, addr[0]), name="venue-conn", daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(self._hk_interval):
            now = time.monotonic()
            with self._conn_lock:
                self.ws_conns = [c for c in self.ws_conns if not c.finished]
                conns = list(self.ws_conns)
            for c in conns:
                try:
                    c.housekeep(now)
                except Exception:
                    traceback.print_exc(file=sys.stderr)

    def _serve_connection(self, sock: socket.socket, client_ip: str) -> None:
        buf = bytearray()
        try:
            while not self._stop.is_set():
                req = self._read_request(sock, buf, client_ip)
                if req is None:
                    return
                if isinstance(req, Response):
                    self._write_response(sock, req, keep_alive=False)
                    return
                if req.headers.get("upgrade", "").lower() == "websocket":
                    self._upgrade(sock, req, buf)
                    return
                conn_hdr = req.headers.get("connection", "").lower()
                # HTTP/1.0 closes unless asked to keep the connection; HTTP/1.1 keeps it unless asked to close
                keep_alive = ("keep-alive" in conn_hdr) if req.version == "HTTP/1.0" else "close" not in conn_hdr
                self._write_response(sock, self._dispatch(req), keep_alive)
                if not keep_alive:
                    return
        except (OSError, ConnectionError):
            return
        finally:
            with self._conn_lock:
                self._socks.discard(sock)
            _drop(sock)

    # ---- HTTP ----------------------------------------------------------------------------------
    @staticmethod
    def _recv_more(sock: socket.socket, buf: bytearray) -> bool:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
        return True

    def _read_request(self, sock: socket.socket, buf: bytearray, client_ip: str):
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                if end > MAX_HEADER_BYTES:
                    return json_error(431, -1000, "Request header too large.")
                break
            if len(buf) > MAX_HEADER_BYTES:
                return json_error(431, -1000, "Request header too large.")
            if not self._recv_more(sock, buf):
                return None
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return json_error(400, -1000, "Malformed request line.")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return json_error(400, -1000, "Malformed header line.")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raw_path, _, query = target.partition("?")
        if not raw_path.startswith("/"):
            return json_error(400, -1000, "Malformed request target.")
        if headers.get("expect", "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it before sending a large body
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(sock, buf)
            if body is None:
                return json_error(400, -1000, "Malformed chunked body.")
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                return json_error(400, -1000, "Malformed Content-Length.")
            if n < 0 or n > MAX_BODY_BYTES:
                return json_error(413, -1000, "Body too large.")
            while len(buf) < n:
                if not self._recv_more(sock, buf):
                    return None
            body = bytes(buf[:n])
            del buf[:n]
        return Request(method.upper(), unquote(raw_path), query, body, headers, client_ip, version)

    def _read_chunked(self, sock: socket.socket, buf: bytearray) -> bytes | None:
        out = bytearray()
        while True:
            while b"\r\n" not in buf:
                if not self._recv_more(sock, buf):
                    return None
            line, _, _rest = bytes(buf).partition(b"\r\n")
            del buf[: len(line) + 2]
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            while len(buf) < size + 2:
                if not self._recv_more(sock, buf):
                    return None
            out += buf[:size]
            del buf[: size + 2]
            if len(out) > MAX_BODY_BYTES:
                return None
            if size == 0:
                return bytes(out)

    def _dispatch(self, req: Request) -> Response:
        handler, status = self.router.http_handler(req.method, req.path)
        if handler is None:
            if status == 405:
                resp = json_error(405, -1000, f"Request method '{req.method}' not supported.")
            else:
                resp = json_error(404, -1000, "Not Found: unknown path.")
            if self.router.unmatched_headers is not None:
                resp.headers.update(self.router.unmatched_headers(req))
            return resp
        try:
            resp = handler(req)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return json_error(500, -1000, "An unknown error occured while processing the request.")
        if not isinstance(resp, Response):
            traceback.print_stack(file=sys.stderr)
            return json_error(500, -1000, "An unknown error occured while processing the request.")
        return resp

    @staticmethod
    def _write_response(sock: socket.socket, resp: Response, keep_alive: bool) -> None:
        body = resp.body if isinstance(resp.body, (bytes, bytearray)) else str(resp.body).encode()
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(resp.headers)
        hdrs["Content-Length"] = str(len(body))
        hdrs["Connection"] = "keep-alive" if keep_alive else "close"
        for k, v in hdrs.items():
            lines.append(f"{k}: {v}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    # ---- websocket -----------------------------------------------------------------------------
    def _upgrade(self, sock: socket.socket, req: Request, buf: bytearray) -> None:
        handler, policy, prepare = self.router.ws_handler(req.path)
        if handler is None:
            self._write_response(sock, json_error(404, -1000, "Not Found: unknown websocket path."), False)
            return
        key = req.headers.get("sec-websocket-key", "")
        if (req.method != "GET" or "upgrade" not in req.headers.get("connection", "").lower()
                or not ws.valid_client_key(key)):
            self._write_response(sock, json_error(400, -1000, "Bad websocket handshake."), False)
            return
        if req.headers.get("sec-websocket-version", "") != "13":
            resp = json_error(426, -1000, "Unsupported websocket version.")
            resp.headers["Sec-WebSocket-Version"] = "13"
            self._write_response(sock, resp, False)
            return
        stack = contextlib.ExitStack()
        try:
            # before the 101: what the route sets up (a user stream's subscription) is in place once the client sees
            # the handshake complete
            state = stack.enter_context(prepare(req)) if prepare is not None else None
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._write_response(sock, json_error(500, -1000, "An unknown error occured while processing the "
                                                              "request."), False)
            return
        with stack:
            sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {ws.accept_key(key)}\r\n\r\n").encode("ascii"))
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            except OSError:
                pass
            policy = policy or self.ws_policy
            # with the bytes the client pipelined after its handshake
            reader = wsproto.FrameReader(sock, pending=buf,
                                         max_message=policy.max_message_bytes or wsproto.MAX_MESSAGE_PAYLOAD)
            conn = WsConn(sock, reader, req, policy, self)
            conn.prepared = state
            with self._conn_lock:
                self.ws_conns.append(conn)
            conn.start()
            try:
                handler(conn, req)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                conn.close(1011, "internal error")
            else:
                conn.close(1000, "")
            conn.wait_closed(2.0)
            conn.mark_closed(conn.close_code, conn.close_reason)
