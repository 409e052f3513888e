"""HTTP/1.1 + RFC 6455 server of the embedded venue (aegis.venue.server / wsproto), loopback only."""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time

import pytest
import requests
import websocket

from aegis.core import websocket as ws
from aegis.venue.server import Response, Router, VenueServer, WsPolicy


def _echo(conn, req):
    while not conn.closed:
        m = conn.recv(0.05)
        if m is not None:
            conn.send_text(m[1])


def _boom(req):
    raise RuntimeError("handler bug")


@pytest.fixture
def make_server():
    servers = []

    def make(policy: WsPolicy | None = None):
        r = Router()
        r.add_http("GET", "/fapi/v1/ping", lambda req: Response(200, b"{}"))
        r.add_http("POST", "/echo", lambda req: Response(200, json.dumps(
            {"query": req.query, "body": req.body.decode(), "path": req.path}).encode(), {"X-Test": "1"}))
        r.add_http("GET", "/boom", _boom)
        r.add_ws("/ws", _echo)
        r.add_ws("/ws-fapi/v1", lambda conn, req: conn.send_text(b'{"fapi":true}') or _echo(conn, req))
        s = VenueServer(r, ws_policy=policy or WsPolicy(), housekeeping_interval_s=0.02).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def _raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out


def _handshake(port: int, path: str = "/ws", key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s, head


def _read_server_frame(s: socket.socket) -> tuple[int, bytes]:
    def n(k):
        b = b""
        while len(b) < k:
            c = s.recv(k - len(b))
            if not c:
                raise ConnectionError("closed")
            b += c
        return b
    b0, b1 = n(2)
    ln = b1 & 0x7F
    if ln == 126:
        ln = struct.unpack("!H", n(2))[0]
    elif ln == 127:
        ln = struct.unpack("!Q", n(8))[0]
    assert not b1 & 0x80, "server frames must not be masked"
    return b0 & 0x0F, n(ln)


def test_http_keep_alive_serves_several_requests_on_one_connection(make_server):
    s = make_server()
    req = b"GET /fapi/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /fapi/v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = _raw_http(s.port, req * 2 + last)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.count(b"Connection: keep-alive") == 2 and out.count(b"Connection: close") == 1


def test_http_post_passes_raw_query_and_body_to_handler(make_server):
    s = make_server()
    r = requests.post(f"http://127.0.0.1:{s.port}/echo?symbol=BTCUSDT&x=%2F", data="a=1&b=2")
    assert r.status_code == 200 and r.headers["X-Test"] == "1"
    assert r.json() == {"query": "symbol=BTCUSDT&x=%2F", "body": "a=1&b=2", "path": "/echo"}


def test_http_unknown_path_is_404_with_json_body(make_server):
    s = make_server()
    r = requests.get(f"http://127.0.0.1:{s.port}/fapi/v1/nope")
    assert r.status_code == 404 and "code" in r.json()


def test_http_wrong_method_on_known_path_is_405(make_server):
    s = make_server()
    assert requests.delete(f"http://127.0.0.1:{s.port}/fapi/v1/ping").status_code == 405


def test_http_malformed_request_line_is_400(make_server):
    s = make_server()
    assert _raw_http(s.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_http_handler_exception_is_500_json(make_server, capsys):
    s = make_server()
    r = requests.get(f"http://127.0.0.1:{s.port}/boom")
    assert r.status_code == 500 and r.json()["code"] == -1000


def test_http_chunked_body_is_decoded(make_server):
    s = make_server()
    out = _raw_http(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                            b"3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n")
    assert b'"body": "a=1&b=2"' in out


def test_ws_handshake_returns_rfc6455_accept_key(make_server):
    s = make_server()
    sock, head = _handshake(s.port)
    sock.close()
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455 section 1.3 example


def test_ws_handshake_without_key_is_400(make_server):
    s = make_server()
    out = _raw_http(s.port, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


def test_ws_unknown_path_is_404(make_server):
    s = make_server()
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws://127.0.0.1:{s.port}/nothing/here", timeout=3)


def test_ws_longest_prefix_route_wins(make_server):
    s = make_server()
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws-fapi/v1", timeout=3)
    assert ws.recv() == '{"fapi":true}'
    ws.close()


def test_ws_echo_of_large_message_uses_extended_lengths(make_server):
    s = make_server()
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws", timeout=3)
    for n in (10, 200, 70000):
        msg = "x" * n
        ws.send(msg)
        assert ws.recv() == msg
    ws.close()


def test_ws_fragmented_message_is_reassembled(make_server):
    s = make_server()
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws", timeout=3)
    ws.send_frame(websocket.ABNF.create_frame("ab", websocket.ABNF.OPCODE_TEXT, 0))
    ws.ping(b"mid")  # a control frame between fragments is legal
    ws.send_frame(websocket.ABNF.create_frame("cd", websocket.ABNF.OPCODE_CONT, 0))
    ws.send_frame(websocket.ABNF.create_frame("ef", websocket.ABNF.OPCODE_CONT, 1))
    op, frame = ws.recv_data_frame(True)
    assert op == websocket.ABNF.OPCODE_PONG and frame.data == b"mid"
    assert ws.recv() == "abcdef"
    ws.close()


def test_ws_client_ping_is_answered_with_same_payload(make_server):
    s = make_server()
    sock, _ = _handshake(s.port)
    sock.sendall(ws.encode_frame(ws.OP_PING, b"hello", masked=True))
    assert _read_server_frame(sock) == (ws.OP_PONG, b"hello")
    sock.close()


def test_ws_unmasked_client_frame_is_closed_with_1002(make_server):
    s = make_server()
    sock, _ = _handshake(s.port)
    sock.sendall(ws.encode_frame(ws.OP_TEXT, b"hi", masked=False))
    op, payload = _read_server_frame(sock)
    assert op == ws.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1002
    sock.close()


def test_ws_invalid_utf8_text_is_closed_with_1007(make_server):
    s = make_server()
    sock, _ = _handshake(s.port)
    sock.sendall(ws.encode_frame(ws.OP_TEXT, b"\xff\xfe", masked=True))
    op, payload = _read_server_frame(sock)
    assert op == ws.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1007
    sock.close()


def test_ws_client_close_is_echoed_and_connection_ends(make_server):
    s = make_server()
    sock, _ = _handshake(s.port)
    sock.sendall(ws.encode_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"bye", masked=True))
    op, payload = _read_server_frame(sock)
    assert op == ws.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1000
    assert sock.recv(10) == b""
    sock.close()


def test_server_pings_with_random_payload(make_server):
    s = make_server(WsPolicy(ping_interval_s=0.1))
    sock, _ = _handshake(s.port)
    payloads = set()
    for _ in range(2):
        op, payload = _read_server_frame(sock)
        assert op == ws.OP_PING and len(payload) > 0
        payloads.add(payload)
    assert len(payloads) == 2
    sock.close()


def test_echoed_pongs_keep_the_connection_alive(make_server):
    s = make_server(WsPolicy(ping_interval_s=0.1, pong_timeout_s=0.4))
    sock, _ = _handshake(s.port)
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        op, payload = _read_server_frame(sock)
        assert op == ws.OP_PING
        sock.sendall(ws.encode_frame(ws.OP_PONG, payload, masked=True))
    sock.close()


def test_missing_pong_disconnects_after_pong_timeout(make_server):
    s = make_server(WsPolicy(ping_interval_s=0.1, pong_timeout_s=0.3))
    t0 = time.monotonic()          # before the handshake: the server's clocks start at its 101
    sock, _ = _handshake(s.port)
    while True:
        op, payload = _read_server_frame(sock)
        if op == ws.OP_CLOSE:
            break
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert struct.unpack("!H", payload[:2])[0] == 1008
    sock.close()


def test_unsolicited_or_wrong_pongs_do_not_prevent_disconnection(make_server):
    s = make_server(WsPolicy(ping_interval_s=0.1, pong_timeout_s=0.3))
    sock, _ = _handshake(s.port)
    while True:
        op, payload = _read_server_frame(sock)
        if op == ws.OP_CLOSE:
            break
        sock.sendall(ws.encode_frame(ws.OP_PONG, b"not-the-payload", masked=True))
    assert struct.unpack("!H", payload[:2])[0] == 1008
    sock.close()


def test_connection_is_closed_at_its_lifetime(make_server):
    s = make_server(WsPolicy(lifetime_s=0.5))
    t0 = time.monotonic()          # before the handshake: the lifetime starts at the server's 101
    sock, _ = _handshake(s.port)
    op, payload = _read_server_frame(sock)
    assert op == ws.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1001
    assert 0.45 <= time.monotonic() - t0 < 2.0
    sock.close()


def test_more_than_limit_incoming_messages_per_second_disconnects(make_server):
    s = make_server(WsPolicy(max_incoming_per_s=10))
    sock, _ = _handshake(s.port)
    for i in range(11):
        sock.sendall(ws.encode_frame(ws.OP_PING, b"%d" % i, masked=True))
    frames = []
    while True:
        op, payload = _read_server_frame(sock)
        frames.append(op)
        if op == ws.OP_CLOSE:
            break
    assert struct.unpack("!H", payload[:2])[0] == 1008
    assert frames.count(ws.OP_PONG) == 10
    sock.close()


def test_ten_incoming_messages_per_second_are_allowed(make_server):
    s = make_server(WsPolicy(max_incoming_per_s=10))
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws", timeout=3)
    for i in range(10):
        ws.send(str(i))
        assert ws.recv() == str(i)
    time.sleep(1.05)
    ws.send("again")
    assert ws.recv() == "again"
    ws.close()


def test_stop_closes_open_websockets(make_server):
    s = make_server()
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws", timeout=3)
    s.stop()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        ws.recv()


def test_stop_closes_a_websocket_whose_serving_thread_closes_it_first(make_server, monkeypatch):
    # stop() marks the connection closed, then shuts it down; the thread serving it sees the mark and closes the
    # socket. When that close wins the race, stop()'s shutdown finds no socket, the reader thread blocked in recv
    # keeps the connection alive, and the client waits forever. Holding the stop thread's shutdowns back makes the
    # serving thread win every time.
    real_shutdown = socket.socket.shutdown

    def late_from_main_thread(sock, how):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.3)
        return real_shutdown(sock, how)

    s = make_server()
    ws = websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws", timeout=3)
    monkeypatch.setattr(socket.socket, "shutdown", late_from_main_thread)
    s.stop()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        ws.recv()


def test_accept_key_helper_matches_rfc_example():
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ws.valid_client_key(base64.b64encode(os.urandom(16)).decode())
    assert not ws.valid_client_key("short")


def test_http_1_0_request_without_keep_alive_is_answered_and_closed(make_server):
    s = make_server()
    out = _raw_http(s.port, b"GET /fapi/v1/ping HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out


def test_expect_100_continue_gets_interim_response(make_server):
    s = make_server()
    with socket.create_connection(("127.0.0.1", s.port), timeout=3) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"a=1")
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200") and b'"body": "a=1"' in out


def test_frame_claiming_huge_length_is_closed_with_1009(make_server):
    s = make_server()
    sock, _ = _handshake(s.port)
    sock.sendall(ws.frame_header(ws.OP_TEXT, 1 << 40, masked=True) + b"\x00\x00\x00\x00")
    op, payload = _read_server_frame(sock)
    assert op == ws.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1009
    sock.close()


def test_oversized_request_headers_are_431(make_server):
    s = make_server()
    out = _raw_http(s.port, b"GET /fapi/v1/ping HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")


def test_ws_handler_exception_closes_with_1011(make_server):
    s = make_server()

    def bad(conn, req):
        raise RuntimeError("handler bug")

    s.router.add_ws("/bad", bad)
    sock, _ = _handshake(s.port, "/bad")
    op, payload = _read_server_frame(sock)
    assert op == ws.OP_CLOSE and struct.unpack("!H", payload[:2])[0] == 1011
    sock.close()
