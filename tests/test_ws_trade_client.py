"""WsTradeClient's pipelining against a scripted connection: answers matched to their requests by id, in whatever
order they come. (The embedded venue answers one connection's requests in order; Binance documents no order.)"""
from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import orjson
import pytest
import websocket

from aegis.binance.client import Flight, WsTradeClient


class ScriptedWs:
    """What WsTradeClient reads from websocket-client: the frames of `answers`, one per recv_data_frame call."""

    def __init__(self, answers):
        self.frames = [(websocket.ABNF.OPCODE_PING, SimpleNamespace(data=b""))] + \
            [(websocket.ABNF.OPCODE_TEXT, SimpleNamespace(data=orjson.dumps(a))) for a in answers]
        self.sock, self._peer = socket.socketpair()    # nothing to read on it: a drain stops at once
        self.connected = True

    def settimeout(self, t):
        pass

    def recv_data_frame(self, control_frame=False):
        if not self.frames:
            raise websocket.WebSocketTimeoutException("nothing more")
        return self.frames.pop(0)

    def close(self):
        self.sock.close()
        self._peer.close()


def _answer(rid, order_id):
    return {"id": rid, "status": 200, "result": {"orderId": order_id, "clientOrderId": rid, "status": "NEW"}}


@pytest.fixture
def client():
    c = WsTradeClient(SimpleNamespace(now_ms=lambda: 0), timeout_s=1.0, in_flight=3)
    yield c
    c.close()


def _in_flight(c, *rids):
    now = time.monotonic_ns()
    c._awaited.update(rids)
    return [Flight(c, c._ws.sock.fileno(), now, now + 10**9, lambda: {}, rid, c._gen) for rid in rids]


def test_answers_that_come_in_another_order_reach_their_own_requests(client):
    client._ws, client._gen = ScriptedWs([_answer("p-2", 22), _answer("p-1", 11)]), 1
    one, two = _in_flight(client, "p-1", "p-2")
    assert client.free_order_connections(5) == [client]          # 3 in flight at most, 2 are
    assert client.finish_prepared(one)["order"]["orderId"] == 11   # read p-2's answer on the way, and kept it
    assert client.answered([two]) == [two]
    assert client.finish_prepared(two)["order"]["orderId"] == 22
    assert not client._awaited and not client._answers


def test_an_answer_to_a_request_no_longer_awaited_is_dropped(client):
    client._ws, client._gen = ScriptedWs([_answer("p-9", 99), _answer("p-1", 11)]), 1
    one, = _in_flight(client, "p-1")
    assert client.finish_prepared(one)["order"]["orderId"] == 11
    assert not client._answers


def test_orders_in_flight_on_a_lost_connection_are_unknown_outcomes_not_waited_for(client):
    client._ws, client._gen = ScriptedWs([]), 1
    one, two = _in_flight(client, "p-1", "p-2")
    looked_up = []
    client.rest.settle_unknown = lambda params, sent_ms, r: looked_up.append(r["msg"]) or r
    client.close()                                                 # e.g. a timeout of another request
    assert client.answered([one, two]) == [one, two]
    t = time.monotonic()
    assert client.finish_prepared(one)["unknown"] and client.finish_prepared(two)["unknown"]
    assert time.monotonic() - t < 0.5 and len(looked_up) == 2


def test_a_notice_from_the_server_for_no_request_is_logged(client, caplog):
    revoked = {"id": None, "status": 401, "error": {"code": -2015, "msg": "Invalid API-key, IP, or permissions."}}
    client._ws, client._gen = ScriptedWs([revoked, _answer("p-1", 11)]), 1
    one, = _in_flight(client, "p-1")
    assert client.finish_prepared(one)["ok"]
    assert "ws-fapi: the server reports -2015 Invalid API-key" in caplog.text
