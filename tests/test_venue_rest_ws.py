"""User data stream and ws-fapi trading API of the embedded venue over real websockets on 127.0.0.1."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import websocket

from aegis.venue import userdata
from tests.test_venue_rest import KEY, SECRET, Venue
from tests.windows import fresh_window


@pytest.fixture
def venue():
    v = Venue(validity_s=3600.0)
    yield v
    v.stop()


def listen_key(v):
    return v.http.post(v.url + "/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY}).json()["listenKey"]


def recv_json(ws, timeout=3.0):
    ws.settimeout(timeout)
    return json.loads(ws.recv())


def recv_until(ws, n, timeout=3.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.append(recv_json(ws, max(0.05, deadline - time.monotonic())))
    return out


def market_buy(v, qty="0.001"):
    r = v.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=qty,
                                                 newClientOrderId="ud-1"))
    assert r.status_code == 200, r.text
    return r.json()


def test_user_stream_delivers_a_fill_in_binance_order(venue):
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws/{listen_key(venue)}", timeout=3)
    try:
        time.sleep(0.05)
        o = market_buy(venue)
        evs = recv_until(ws, 4)
        assert [e["e"] for e in evs] == ["TRADE_LITE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE"]
        assert (evs[1]["o"]["x"], evs[3]["o"]["x"], evs[3]["o"]["X"]) == ("NEW", "TRADE", "FILLED")
        assert evs[3]["o"]["i"] == o["orderId"] and evs[3]["o"]["c"] == "ud-1" and evs[3]["o"]["L"] == "90000.00"
        assert evs[2]["a"]["P"][0]["pa"] == "0.001" and evs[2]["a"]["B"][0]["wb"] == "9999.95500000"
    finally:
        ws.close()


def test_combined_private_stream_filters_events_and_wraps_them(venue):
    lk = listen_key(venue)
    ws = websocket.create_connection(
        f"{venue.ws_url}/private/stream?listenKey={lk}&events=ORDER_TRADE_UPDATE", timeout=3)
    try:
        time.sleep(0.05)
        market_buy(venue)
        evs = recv_until(ws, 2)
        assert [e["stream"] for e in evs] == [lk, lk]
        assert [e["data"]["o"]["x"] for e in evs] == ["NEW", "TRADE"]
        ws.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
    finally:
        ws.close()


def test_private_ws_with_listen_key_query_receives_events(venue):
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws?listenKey={listen_key(venue)}", timeout=3)
    try:
        time.sleep(0.05)
        venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000"))
        ev = recv_json(ws)
        assert ev["e"] == "ORDER_TRADE_UPDATE" and ev["o"]["X"] == "NEW" and ev["o"]["b"] == "89.00000"
    finally:
        ws.close()


def test_subscribe_a_listen_key_on_a_bare_private_stream(venue):
    lk = listen_key(venue)
    ws = websocket.create_connection(f"{venue.ws_url}/private/stream", timeout=3)
    try:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": [lk], "id": 7}))
        assert recv_json(ws) == {"result": None, "id": 7}
        market_buy(venue)
        assert recv_json(ws)["data"]["e"] == "TRADE_LITE"
    finally:
        ws.close()


def test_unknown_listen_key_closes_the_socket(venue):
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws/not-a-key", timeout=3)
    try:
        ws.settimeout(3)
        op, data = ws.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1008
    finally:
        ws.close()


@pytest.mark.parametrize("path", ["/private/ws/{lk}", "/private/stream?listenKey={lk}"])
def test_an_event_made_right_after_the_connect_returns_reaches_the_stream(venue, monkeypatch, path):
    real_add = userdata.UserDataService._add

    def slow_add(self, *a, **kw):          # the venue's connection thread descheduled while it subscribes
        time.sleep(0.3)
        return real_add(self, *a, **kw)

    monkeypatch.setattr(userdata.UserDataService, "_add", slow_add)
    lk = listen_key(venue)
    ws = websocket.create_connection(venue.ws_url + path.format(lk=lk), timeout=3)
    try:
        market_buy(venue)                  # no pause: the stream is subscribed once the handshake is complete
        evs = [e.get("data", e) for e in recv_until(ws, 4)]
        assert [e["e"] for e in evs] == ["TRADE_LITE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE"]
    finally:
        ws.close()


def test_listen_key_expires_without_keepalive_and_no_events_follow():
    v = Venue(validity_s=3.0)              # wide margins: a stalled test thread must not land on the wrong side
    try:
        lk = listen_key(v)
        ws = websocket.create_connection(f"{v.ws_url}/private/ws/{lk}", timeout=3)
        h = {"X-MBX-APIKEY": KEY}
        time.sleep(1.5)
        assert v.http.put(v.url + "/fapi/v1/listenKey", headers=h).status_code == 200   # extends to ~4.5 s
        time.sleep(2.0)
        assert v.exchange.listen_key_owner(lk) == KEY          # the keepalive kept it alive past 3 s
        ev = recv_json(ws, timeout=5)
        assert ev["e"] == "listenKeyExpired" and ev["listenKey"] == lk
        market_buy(v)
        ws.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
        assert v.http.put(v.url + "/fapi/v1/listenKey", headers=h).json()["code"] == -1125
        ws.close()
    finally:
        v.stop()


def test_test_hook_expires_a_listen_key_at_once(venue):
    lk = listen_key(venue)
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws/{lk}", timeout=3)
    try:
        time.sleep(0.05)
        assert venue.exchange.expire_listen_key(lk)
        assert recv_json(ws)["e"] == "listenKeyExpired"
    finally:
        ws.close()


# ---------------------------------------------------------------------------------------------- ws-fapi

def ws_sign(params: dict, secret: str = SECRET) -> dict:
    p = dict(params, apiKey=params.get("apiKey", KEY))
    p.setdefault("timestamp", int(time.time() * 1000))
    payload = "&".join(f"{k}={v}" for k, v in sorted(p.items()))
    p["signature"] = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return p


@pytest.fixture
def wsapi_conn(venue):
    ws = websocket.create_connection(f"{venue.ws_url}/ws-fapi/v1", timeout=3)
    yield ws
    ws.close()


def call(ws, method, params, rid="r1"):
    ws.send(json.dumps({"id": rid, "method": method, "params": params}))
    return recv_json(ws)


def test_ws_order_place_answers_the_order_with_rate_limits(wsapi_conn):
    r = call(wsapi_conn, "order.place", ws_sign(dict(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                                     timeInForce="GTC", quantity="0.100", price="89000.0",
                                                     recvWindow=5000)), rid="9ca1")
    assert r["id"] == "9ca1" and r["status"] == 200, r
    assert r["result"]["status"] == "NEW" and r["result"]["origQty"] == "0.100"
    limits = {(l["rateLimitType"], l["intervalNum"]): l["count"] for l in r["rateLimits"]}
    assert limits[("ORDERS", 10)] == 1 and limits[("ORDERS", 1)] == 1


def test_ws_signature_over_unsorted_params_is_rejected(wsapi_conn):
    p = dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001", apiKey=KEY,
             timestamp=int(time.time() * 1000))
    payload = "&".join(f"{k}={v}" for k, v in p.items())
    p["signature"] = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    r = call(wsapi_conn, "order.place", p)
    assert r["status"] == 400 and r["error"] == {"code": -1022, "msg": "Signature for this request is not valid."}


def test_ws_unknown_api_key_is_rejected_with_401(wsapi_conn):
    r = call(wsapi_conn, "order.place", ws_sign(dict(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                     quantity="0.001", apiKey="nobody")))
    assert r["status"] == 401 and r["error"]["code"] == -2015


def test_ws_missing_quantity_gives_the_documented_failure_shape(wsapi_conn):
    r = call(wsapi_conn, "order.place", ws_sign(dict(symbol="BTCUSDT", side="BUY", type="MARKET")))
    assert r["status"] == 400 and r["error"] == {
        "code": -1102, "msg": "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."}
    assert "rateLimits" in r


def test_ws_order_status_and_cancel(wsapi_conn):
    placed = call(wsapi_conn, "order.place", ws_sign(dict(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                                          timeInForce="GTC", quantity="0.001", price="91000",
                                                          newClientOrderId="ws-c")))["result"]
    st = call(wsapi_conn, "order.status", ws_sign(dict(symbol="BTCUSDT", orderId=placed["orderId"])))
    assert st["result"]["clientOrderId"] == "ws-c" and st["result"]["status"] == "NEW"
    c = call(wsapi_conn, "order.cancel", ws_sign(dict(symbol="BTCUSDT", origClientOrderId="ws-c")))
    assert c["status"] == 200 and c["result"]["status"] == "CANCELED"
    c = call(wsapi_conn, "order.cancel", ws_sign(dict(symbol="BTCUSDT", origClientOrderId="ws-c")))
    assert c["error"]["code"] == -2011


def test_ws_user_data_stream_start_returns_the_rest_listen_key(venue, wsapi_conn):
    r = call(wsapi_conn, "userDataStream.start", {"apiKey": KEY})
    assert r["result"]["listenKey"] == listen_key(venue)


def test_ws_return_rate_limits_false_hides_them(venue):
    ws = websocket.create_connection(f"{venue.ws_url}/ws-fapi/v1?returnRateLimits=false", timeout=3)
    try:
        r = call(ws, "order.status", ws_sign(dict(symbol="BTCUSDT", orderId=1)))
        assert r["error"]["code"] == -2013 and "rateLimits" not in r
    finally:
        ws.close()


def test_full_venue_ws_api_order_fills_and_the_user_stream_reports_it():
    from aegis.venue import VenueConfig, start_venue
    with start_venue(VenueConfig(rate=20.0, seed=5)) as v:
        lk = v.exchange.listen_key_create(KEY)
        user = websocket.create_connection(f"{v.ws_market_url}/private/ws/{lk}", timeout=3)
        api = websocket.create_connection(v.ws_api_url, timeout=3)
        try:
            time.sleep(0.05)
            r = call(api, "order.place", ws_sign(dict(symbol="ETHUSDT", side="SELL", type="MARKET",
                                                      quantity="0.010", newOrderRespType="RESULT")))
            assert r["status"] == 200 and r["result"]["status"] == "FILLED", r
            evs = recv_until(user, 4)
            assert [e["e"] for e in evs] == ["TRADE_LITE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE",
                                             "ORDER_TRADE_UPDATE"]
            assert evs[2]["a"]["P"][0]["pa"] == "-0.01" and evs[3]["o"]["i"] == r["result"]["orderId"]
        finally:
            user.close()
            api.close()


def test_ws_order_modify_amends_a_resting_order(wsapi_conn):
    placed = call(wsapi_conn, "order.place", ws_sign(dict(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                                          timeInForce="GTC", quantity="0.001", price="91000")))
    m = call(wsapi_conn, "order.modify", ws_sign(dict(symbol="BTCUSDT", orderId=placed["result"]["orderId"],
                                                      side="SELL", quantity="0.002", price="91500")))
    assert m["status"] == 200 and (m["result"]["price"], m["result"]["origQty"]) == ("91500.00", "0.002")


def test_ws_api_and_rest_share_the_ip_weight_limit():
    from aegis.venue.ratelimit import RateLimitConfig
    v = Venue(limits=RateLimitConfig(weight_per_minute=7))
    try:
        fresh_window()
        ws = websocket.create_connection(f"{v.ws_url}/ws-fapi/v1", timeout=3)      # handshake: 5
        r = call(ws, "order.status", ws_sign(dict(symbol="BTCUSDT", orderId=1)))     # +1 = 6
        assert r["error"]["code"] == -2013
        assert {l["rateLimitType"]: l["count"] for l in r["rateLimits"]}["REQUEST_WEIGHT"] == 6
        assert v.http.get(v.url + "/fapi/v1/ping").headers["X-MBX-USED-WEIGHT-1M"] == "7"
        r = call(ws, "order.status", ws_sign(dict(symbol="BTCUSDT", orderId=1)))
        assert r["status"] == 429 and r["error"]["code"] == -1003
        ws.close()
    finally:
        v.stop()


def test_deleting_the_listen_key_closes_its_stream(venue):
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws/{listen_key(venue)}", timeout=3)
    try:
        time.sleep(0.05)
        assert venue.http.delete(venue.url + "/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY}).json() == {}
        ws.settimeout(3)
        op, _ = ws.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE
    finally:
        ws.close()


def test_ws_per_request_return_rate_limits_false_is_signed_and_honoured(wsapi_conn):
    r = call(wsapi_conn, "order.status", ws_sign(dict(symbol="BTCUSDT", orderId=1, returnRateLimits="false")))
    assert r["error"]["code"] == -2013 and "rateLimits" not in r
