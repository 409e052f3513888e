"""Market-stream routing, control messages (Binance docs: "Live Subscribing/Unsubscribing to streams"), connection rules
and fault knobs of the embedded venue."""
from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time

import pytest
import websocket

from aegis.venue import VenueConfig, start_venue


@pytest.fixture(scope="module")
def venue():
    v = start_venue(VenueConfig(rate=3000, seed=9))
    yield v
    v.stop()
    assert v.market.errors == 0, "the generator thread raised (traceback on stderr)"



def _connect(url: str, timeout: float = 5) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=timeout)


def _reply(ws, rid, timeout: float = 3.0):
    """The control reply with this id (data frames in between are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = json.loads(ws.recv())
        if isinstance(d, dict) and d.get("id", "missing") == rid and ("result" in d or "error" in d):
            return d
    raise AssertionError(f"no reply with id {rid!r}")


def _data(ws, n: int = 1, timeout: float = 5.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        d = json.loads(ws.recv())
        if isinstance(d, dict) and "id" in d and ("result" in d or "error" in d):
            continue
        out.append(d)
    assert len(out) == n
    return out


def _silent(ws, seconds: float) -> bool:
    """True if no data frame arrives within `seconds`."""
    ws.settimeout(seconds)
    try:
        while True:
            d = json.loads(ws.recv())
            if not ("id" in d and ("result" in d or "error" in d)):
                return False
    except websocket.WebSocketTimeoutException:
        return True


# ---- routes and modes ---------------------------------------------------------------------------------------
def test_raw_mode_delivers_bare_payloads(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@bookTicker/ethusdt@bookTicker")
    msgs = _data(ws, 20)
    assert all(m["e"] == "bookTicker" for m in msgs) and {m["s"] for m in msgs} == {"BTCUSDT", "ETHUSDT"}
    ws.close()


def test_combined_mode_wraps_payloads_with_stream_name(venue):
    ws = _connect(venue.ws_market_url + "/public/stream?streams=btcusdt@bookTicker/ethusdt@depth@100ms")
    msgs = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.6:
        msgs.append(json.loads(ws.recv()))
    assert all(list(m) == ["stream", "data"] for m in msgs)
    assert {m["stream"] for m in msgs} == {"btcusdt@bookTicker", "ethusdt@depth@100ms"}
    for m in msgs:
        assert m["data"]["s"] == m["stream"].split("@")[0].upper()
    ws.close()


def test_market_route_does_not_deliver_public_streams(venue):
    ws = _connect(venue.ws_market_url + "/market/ws/btcusdt@bookTicker")
    assert _silent(ws, 0.6)
    ws.close()


def test_public_route_does_not_deliver_market_streams(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@aggTrade")
    assert _silent(ws, 0.6)
    ws.close()


def test_unrouted_legacy_url_delivers_public_streams(venue):
    ws = _connect(venue.ws_market_url + "/ws/btcusdt@bookTicker")
    assert _data(ws, 1)[0]["e"] == "bookTicker"
    ws.close()


def test_unrouted_legacy_url_acks_market_stream_but_never_delivers_it(venue):
    ws = _connect(venue.ws_market_url + "/stream")
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s", "btcusdt@aggTrade"], "id": 1}))
    assert _reply(ws, 1) == {"result": None, "id": 1}
    assert _silent(ws, 1.3)
    ws.close()


def test_get_property_combined_reflects_connection_mode(venue):
    raw = _connect(venue.ws_market_url + "/public/ws")
    comb = _connect(venue.ws_market_url + "/public/stream")
    raw.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}))
    comb.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}))
    assert _reply(raw, 2) == {"result": False, "id": 2}
    assert _reply(comb, 2) == {"result": True, "id": 2}
    raw.close()
    comb.close()


def test_set_property_combined_switches_to_wrapped_payloads(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@bookTicker")
    assert "e" in _data(ws, 1)[0]
    ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}))
    assert _reply(ws, 5) == {"result": None, "id": 5}
    assert _data(ws, 1)[0]["stream"] == "btcusdt@bookTicker"
    ws.close()


# ---- SUBSCRIBE & co. ----------------------------------------------------------------------------------------
def test_subscribe_then_data_then_unsubscribe_stops_it(venue):
    ws = _connect(venue.ws_market_url + "/public/stream")
    assert _silent(ws, 0.3)
    ws.settimeout(5)
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1}))
    assert _reply(ws, 1) == {"result": None, "id": 1}
    assert _data(ws, 1)[0]["stream"] == "btcusdt@bookTicker"
    ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 312}))
    assert _reply(ws, 312) == {"result": None, "id": 312}
    assert _silent(ws, 0.5)
    ws.close()


def test_list_subscriptions_returns_current_streams_in_order(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@depth")
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 1}))
    _reply(ws, 1)
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
    assert _reply(ws, 3) == {"result": ["btcusdt@depth", "ethusdt@bookTicker"], "id": 3}
    ws.close()


@pytest.mark.parametrize("message,expected", [
    ({"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 2},
     {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}),
    ({"method": "SET_PROPERTY", "params": ["colour", True], "id": 4}, {"error": {"code": 0, "msg": "Unknown property"}, "id": 4}),
    ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 6},
     {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 6}),
    ({"method": "SET_PROPERTY", "params": [5, True], "id": 7},
     {"error": {"code": 2, "msg": "Invalid request: property name must be a string"}, "id": 7}),
    ({"method": "GET_PROPERTY", "params": ["combined", "x"], "id": 8},
     {"error": {"code": 2, "msg": "Invalid request: too many parameters"}, "id": 8}),
    ({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": -1},
     {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": None}),
])
def test_control_errors_have_documented_codes_and_messages(venue, message, expected):
    ws = _connect(venue.ws_market_url + "/public/ws")
    ws.send(json.dumps(message))
    assert _reply(ws, expected["id"]) == expected
    ws.close()


def test_unknown_method_error_names_the_variant(venue):
    ws = _connect(venue.ws_market_url + "/public/ws")
    ws.send(json.dumps({"method": "SUBSCRIBEX", "params": [], "id": 9}))
    d = _reply(ws, 9)
    assert d["error"]["code"] == 2 and d["error"]["msg"].startswith("Invalid request: unknown variant `SUBSCRIBEX`")
    ws.close()


def test_invalid_json_and_missing_method_errors(venue):
    ws = _connect(venue.ws_market_url + "/public/ws")
    ws.send("{not json")
    d = _reply(ws, None)
    assert d["error"]["code"] == 3 and d["error"]["msg"].startswith("Invalid JSON: expected value at line 1 column")
    ws.send(json.dumps({"params": [], "id": 4}))
    d = _reply(ws, None)
    assert d["error"]["code"] == 2 and d["error"]["msg"].startswith("Invalid request: missing field `method`")
    ws.close()


def test_string_ids_accepted_by_default_and_rejected_in_strict_mode(venue, own_venue):
    ws = _connect(venue.ws_market_url + "/public/ws")
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "abc"}))
    assert _reply(ws, "abc") == {"result": [], "id": "abc"}
    ws.close()
    strict = own_venue(rate=10, strict_ids=True)
    ws = _connect(strict.ws_market_url + "/public/ws")
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "abc"}))
    assert _reply(ws, None)["error"]["msg"] == "Invalid request: request ID must be an unsigned integer"
    ws.close()


def test_subscribing_beyond_1024_streams_is_refused(venue):
    ws = _connect(venue.ws_market_url + "/public/ws")
    names = [f"sym{i}usdt@bookTicker" for i in range(1024)]
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
    assert _reply(ws, 1) == {"result": None, "id": 1}
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 2}))
    assert _reply(ws, 2)["error"]["code"] == 2
    ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
    assert len(_reply(ws, 3)["result"]) == 1024
    ws.close()


def test_url_with_more_than_1024_streams_is_closed(venue):
    path = "/public/stream?streams=" + "/".join(f"s{i}usdt@bookTicker" for i in range(1025))
    ws = _connect(venue.ws_market_url + path)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(5):
            ws.recv()


def test_more_than_ten_control_messages_per_second_disconnects(venue):
    ws = _connect(venue.ws_market_url + "/public/ws")
    for i in range(11):
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(20):
            ws.recv()


# ---- connection rules ---------------------------------------------------------------------------------------
def _raw_ws(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return s


def _frame(s: socket.socket) -> tuple[int, int, bytes]:
    """(first byte, opcode, payload) of the next server frame; raises ConnectionError on EOF."""
    def n(k):
        b = b""
        while len(b) < k:
            c = s.recv(k - len(b))
            if not c:
                raise ConnectionError("EOF")
            b += c
        return b
    b0, b1 = n(2)
    ln = b1 & 0x7F
    if ln == 126:
        ln = struct.unpack("!H", n(2))[0]
    elif ln == 127:
        ln = struct.unpack("!Q", n(8))[0]
    mask = n(4) if b1 & 0x80 else b""
    payload = n(ln)
    if mask:  # only the "masked" fault sends these
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    _frame.last_masked = bool(mask)
    return b0, b0 & 0x0F, payload


def test_market_connection_is_cut_at_configured_lifetime(own_venue):
    v = own_venue(rate=200, conn_lifetime_s=1.0)
    t0 = time.monotonic()          # before the handshake: the lifetime starts at the venue's 101
    s = _raw_ws(v.port, "/public/ws/btcusdt@bookTicker")
    while True:
        _b0, op, payload = _frame(s)
        if op == 0x8:
            break
    assert 0.9 <= time.monotonic() - t0 < 3.0
    s.close()


def test_market_server_pings_and_disconnects_without_pong(own_venue):
    v = own_venue(rate=50, ping_interval_s=0.2, pong_timeout_s=0.5)
    s = _raw_ws(v.port, "/public/ws/btcusdt@bookTicker")
    pings = 0
    while True:
        _b0, op, payload = _frame(s)
        if op == 0x9:
            pings += 1
        if op == 0x8:
            break
    assert pings >= 1 and struct.unpack("!H", payload[:2])[0] == 1008
    s.close()


def test_websocket_client_auto_pong_keeps_market_connection_alive(own_venue):
    v = own_venue(rate=200, ping_interval_s=0.2, pong_timeout_s=0.5)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@bookTicker")  # websocket-client echoes pings itself
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        ws.recv()
    assert ws.connected
    ws.close()


# ---- fault knobs --------------------------------------------------------------------------------------------
def _wait_conn(v, n=1):
    deadline = time.monotonic() + 3
    while len(v.stream_connections()) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    conns = v.stream_connections()
    assert len(conns) >= n
    return conns


def test_skip_depth_produces_exactly_one_pu_gap(own_venue):
    v = own_venue(rate=2000)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@depth@0ms")
    msgs = _data(ws, 10)
    _wait_conn(v)[0].skip_depth(1)
    msgs += _data(ws, 30)
    gaps = sum(b["pu"] != a["u"] for a, b in zip(msgs, msgs[1:]))
    assert gaps == 1
    ws.close()


def test_duplicate_depth_repeats_a_message(own_venue):
    v = own_venue(rate=2000)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@depth@0ms")
    msgs = _data(ws, 5)
    assert v.duplicate_depth(2) == 1
    msgs += _data(ws, 20)
    dups = sum(a == b for a, b in zip(msgs, msgs[1:]))
    assert dups == 2


def test_drop_connection_ends_tcp_without_close_frame(own_venue):
    v = own_venue(rate=2000)
    s = _raw_ws(v.port, "/public/ws/btcusdt@bookTicker")
    _frame(s)
    assert v.drop_connections() == 1
    ops = []
    with pytest.raises((ConnectionError, OSError)):
        for _ in range(100000):
            ops.append(_frame(s)[1])
    assert 0x8 not in ops
    s.close()


def test_stall_pauses_data_then_resumes(own_venue):
    v = own_venue(rate=3000)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@bookTicker")
    _data(ws, 3)
    _wait_conn(v)[0].stall(0.8)
    time.sleep(0.05)
    ws.settimeout(0.3)
    try:  # drain what was already in flight
        while True:
            ws.recv()
    except websocket.WebSocketTimeoutException:
        pass
    ws.settimeout(5)
    t0 = time.monotonic()
    ws.recv()
    assert time.monotonic() - t0 >= 0.3
    ws.close()


def test_malformed_json_frame_is_delivered_as_text(own_venue):
    v = own_venue(rate=100)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@bookTicker")
    _wait_conn(v)
    v.send_malformed("bad_json")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            json.loads(ws.recv())
        except json.JSONDecodeError:
            break
    else:
        pytest.fail("no malformed JSON frame seen")
    ws.close()


@pytest.mark.parametrize("kind,check", [("bad_opcode", lambda b0, op: op == 0x3),
                                        ("rsv", lambda b0, op: b0 & 0x70 != 0),
                                        ("masked", lambda b0, op: _frame.last_masked)])
def test_malformed_protocol_frames_are_sent(own_venue, kind, check):
    v = own_venue(rate=0)
    s = _raw_ws(v.port, "/public/ws/btcusdt@bookTicker")
    conn = _wait_conn(v)[0]
    conn.send_malformed(kind)
    b0, op, payload = _frame(s)
    assert check(b0, op) and payload == b"{}"
    s.close()


def test_unknown_malformed_kind_is_rejected(own_venue):
    v = own_venue(rate=0)
    ws = _connect(v.ws_market_url + "/public/ws")
    with pytest.raises(ValueError):
        _wait_conn(v)[0].send_malformed("nope")
    ws.close()


def test_skew_clock_offsets_event_times(own_venue):
    v = own_venue(rate=2000)
    v.skew_clock(60_000)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@bookTicker")
    d = _data(ws, 3)[-1]
    now = time.time() * 1000
    assert 55_000 < d["E"] - now < 65_000 and 55_000 < d["T"] - now < 65_000
    ws.close()


def test_slow_consumer_is_disconnected_when_queue_overflows(own_venue):
    v = own_venue(rate=100_000, bursts=False, max_queue_bytes=1 << 20)
    s = _raw_ws(v.port, "/public/ws/btcusdt@bookTicker/btcusdt@depth@0ms/ethusdt@depth@0ms")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deadline = time.monotonic() + 5
    while v.stream_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not v.stream_connections()
    s.close()


def test_all_book_tickers_stream_pushes_one_object_per_symbol_every_5s(venue):
    ws = _connect(venue.ws_market_url + "/public/stream?streams=!bookTicker", timeout=7)
    first = _data(ws, 1, timeout=7)[0]
    assert first["stream"] == "!bookTicker" and isinstance(first["data"], dict)
    batch = [first] + _data(ws, 15, timeout=2)
    assert all(m["data"]["e"] == "bookTicker" for m in batch)
    assert len({m["data"]["s"] for m in batch}) == len(batch)
    ws.close()


def test_client_that_stops_reading_does_not_stall_other_connections(own_venue):
    v = own_venue(rate=50_000, bursts=False, ping_interval_s=0.2, pong_timeout_s=30)
    stuck = _raw_ws(v.port, "/public/ws/btcusdt@depth@0ms/ethusdt@depth@0ms/solusdt@depth@0ms")
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    time.sleep(0.5)  # its sender is now blocked in sendall
    s = _raw_ws(v.port, "/public/ws/btcusdt@bookTicker")
    pings = data = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.2:
        _b0, op, payload = _frame(s)
        pings += op == 0x9
        data += op == 0x1
    assert pings >= 3 and data > 100
    s.close()
    stuck.close()
