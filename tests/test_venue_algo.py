"""Conditional orders (Binance's Algo Order API) on the venue: REST through the official connector's signed request
path, raw HTTP, and ws-fapi algoOrder.place / algoOrder.cancel over a raw websocket; ALGO_UPDATE on the user
stream; triggers on the right price (mark or last trade), then the order they become behaves like any order.
Shapes are Binance's "New Algo Order (TRADE)" and ALGO_UPDATE pages (Binance's public documentation)."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import websocket

um_futures = pytest.importorskip("binance.um_futures", reason="needs binance-futures-connector (test extra)")
from binance.error import ClientError  # noqa: E402

from aegis.venue import VenueConfig, start_venue  # noqa: E402
from tests.test_venue_rest_ws import ws_sign  # noqa: E402
from tests.windows import fresh_window  # noqa: E402

KEY, SECRET = "aegis-test-key", "aegis-test-secret"
TICK = Decimal("0.001")       # DOTUSDT


@pytest.fixture
def venue():
    with start_venue(VenueConfig(rate=1500.0, seed=17)) as v:
        yield v


@pytest.fixture
def client(venue):
    return um_futures.UMFutures(key=KEY, secret=SECRET, base_url=venue.rest_url, timeout=5)


@pytest.fixture
def events(venue):
    out: list[dict] = []
    venue.exchange.add_listener(KEY, out.append)
    return out


def algo(client, **params):
    return client.sign_request("POST", "/fapi/v1/algoOrder", {"algoType": "CONDITIONAL", **params})


def algo_query(client, algo_id):
    return client.sign_request("GET", "/fapi/v1/algoOrder", {"algoId": algo_id})


def wait_status(client, algo_id, statuses, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        q = algo_query(client, algo_id)
        if q["algoStatus"] in statuses:
            return q
        time.sleep(0.05)
    raise AssertionError(f"algo {algo_id} still {q['algoStatus']} after {timeout}s")


def error_code(fn, *a, **kw) -> int:
    with pytest.raises(ClientError) as e:
        fn(*a, **kw)
    return e.value.error_code


def mark(client, sym="DOTUSDT") -> Decimal:
    return Decimal(client.mark_price(sym)["markPrice"])


def test_stop_market_close_position_closes_the_long_when_the_mark_falls_through(venue, client, events):
    client.new_order(symbol="DOTUSDT", side="BUY", type="MARKET", quantity=10)
    trig = (mark(client) * Decimal("0.995")).quantize(TICK)
    r = algo(client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=str(trig),
             closePosition="true", workingType="MARK_PRICE", clientAlgoId="protect-1")
    assert r["algoStatus"] == "NEW" and r["clientAlgoId"] == "protect-1" and r["closePosition"] is True
    assert {"algoId", "algoType", "orderType", "triggerPrice", "workingType", "createTime"} <= set(r)
    assert [o["clientAlgoId"] for o in client.sign_request("GET", "/fapi/v1/openAlgoOrders",
                                                            {"symbol": "DOTUSDT"})] == ["protect-1"]
    venue.drive("DOTUSDT", -1)
    q = wait_status(client, r["algoId"], ("FINISHED", "REJECTED", "EXPIRED"))
    venue.drive("DOTUSDT", None)
    assert q["algoStatus"] == "FINISHED" and q["actualOrderId"]
    (pos,) = client.get_position_risk(symbol="DOTUSDT")
    assert pos["positionAmt"] == "0"
    placed = client.query_order(symbol="DOTUSDT", orderId=int(q["actualOrderId"]))
    assert placed["type"] == "MARKET" and placed["reduceOnly"] is True and placed["status"] == "FILLED"
    assert Decimal(placed["executedQty"]) == 10
    algo_events = [e["o"] for e in events if e["e"] == "ALGO_UPDATE"]
    assert [e["X"] for e in algo_events] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    assert Decimal(algo_events[-1]["aq"]) == 10 and algo_events[-1]["ai"] == q["actualOrderId"]
    assert client.sign_request("GET", "/fapi/v1/openAlgoOrders", {}) == []


@pytest.mark.parametrize("working", ["MARK_PRICE", "CONTRACT_PRICE"])
def test_triggers_exactly_when_its_working_price_crosses(venue, client, working):
    """Step the generator one event at a time (the tick listeners run in this thread): while the order waits its
    working price has not reached the trigger; the tick it triggers on has."""
    venue.pause_market()
    time.sleep(0.1)
    ex, mk = venue.exchange, venue.market
    spec = ex.specs["DOTUSDT"]

    def price() -> Decimal:
        return ex.mark(spec) if working == "MARK_PRICE" else ex.grid(mk.last_price("DOTUSDT"), spec.tick)

    trig = price() + 2 * TICK
    r = algo(client, symbol="DOTUSDT", side="BUY", type="STOP_MARKET", triggerPrice=str(trig), quantity="5",
             workingType=working)
    mk.drive("DOTUSDT", +1)
    try:
        for _ in range(20000):
            before = ex.algo.query(KEY, {"algoId": str(r["algoId"])})["algoStatus"]
            assert before == "NEW"
            mk.step(1)
            after = ex.algo.query(KEY, {"algoId": str(r["algoId"])})["algoStatus"]
            if after != "NEW":
                break
            assert price() < trig
        else:
            raise AssertionError("never triggered")
    finally:
        mk.drive("DOTUSDT", None)
        venue.resume_market()
    assert after == "FINISHED"
    # the tick it triggered on: the working price had reached the trigger (the fill moved nothing: the
    # generated book is not consumed by our fills)
    assert price() >= trig


def test_take_profit_limit_becomes_a_limit_order(venue, client, events):
    client.new_order(symbol="DOTUSDT", side="BUY", type="MARKET", quantity=10)
    up = (mark(client) * Decimal("1.004")).quantize(TICK)
    r = algo(client, symbol="DOTUSDT", side="SELL", type="TAKE_PROFIT", triggerPrice=str(up),
             price=str(up + 50 * TICK), quantity="10", reduceOnly="true", timeInForce="GTC")
    venue.drive("DOTUSDT", +1)
    q = wait_status(client, r["algoId"], ("TRIGGERED", "FINISHED", "REJECTED"))
    venue.drive("DOTUSDT", None)
    assert q["algoStatus"] in ("TRIGGERED", "FINISHED")
    o = client.query_order(symbol="DOTUSDT", orderId=int(q["actualOrderId"]))
    assert o["type"] == "LIMIT" and Decimal(o["price"]) == up + 50 * TICK and o["reduceOnly"] is True
    if o["status"] == "NEW":
        client.cancel_order(symbol="DOTUSDT", orderId=o["orderId"])
    q = wait_status(client, r["algoId"], ("FINISHED",), timeout=3)
    assert [e["o"]["X"] for e in events if e["e"] == "ALGO_UPDATE"][-1] == "FINISHED"


def test_trailing_stop_follows_the_high_then_triggers(venue, client):
    client.new_order(symbol="DOTUSDT", side="BUY", type="MARKET", quantity=10)
    r = algo(client, symbol="DOTUSDT", side="SELL", type="TRAILING_STOP_MARKET", callbackRate="0.5",
             quantity="10", reduceOnly="true", workingType="MARK_PRICE")
    start = mark(client)
    venue.drive("DOTUSDT", +1)
    time.sleep(0.5)
    high = mark(client)
    assert algo_query(client, r["algoId"])["algoStatus"] == "NEW"
    venue.drive("DOTUSDT", -1)
    q = wait_status(client, r["algoId"], ("FINISHED", "REJECTED"))
    venue.drive("DOTUSDT", None)
    assert q["algoStatus"] == "FINISHED" and high > start
    assert client.get_position_risk(symbol="DOTUSDT")[0]["positionAmt"] == "0"


def test_reduce_only_stop_with_no_position_is_rejected_at_trigger(venue, client, events):
    trig = (mark(client) * Decimal("1.003")).quantize(TICK)
    r = algo(client, symbol="DOTUSDT", side="BUY", type="STOP_MARKET", triggerPrice=str(trig), quantity="5",
             reduceOnly="true")
    venue.drive("DOTUSDT", +1)
    q = wait_status(client, r["algoId"], ("REJECTED", "FINISHED"))
    venue.drive("DOTUSDT", None)
    assert q["algoStatus"] == "REJECTED"
    rej = [e["o"] for e in events if e["e"] == "ALGO_UPDATE" and e["o"]["X"] == "REJECTED"]
    assert rej and "ReduceOnly" in rej[0]["rm"]


def test_algo_parameter_errors(client):
    m = mark(client)
    below, above = str((m * Decimal("0.99")).quantize(TICK)), str((m * Decimal("1.01")).quantize(TICK))
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=above,
                      quantity="5") == -2021
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", quantity="5") == -1102
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below,
                      quantity="5", closePosition="true") == -1106
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="LIMIT", triggerPrice=below,
                      quantity="5") == -1116
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="STOP", triggerPrice=below,
                      quantity="5") == -1102     # price
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET",
                      triggerPrice=str(Decimal(below) + Decimal("0.0005")), quantity="5") in (-1111, -4014)
    with pytest.raises(ClientError) as e:
        client.sign_request("POST", "/fapi/v1/algoOrder", {"symbol": "DOTUSDT", "side": "SELL",
                                                           "type": "STOP_MARKET", "triggerPrice": below,
                                                           "quantity": "5"})
    assert e.value.error_code == -1102 and "algoType" in e.value.error_message
    algo(client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below, closePosition="true")
    assert error_code(algo, client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below,
                      closePosition="true") == -4130
    # the classic endpoint still refuses conditional types
    assert error_code(client.new_order, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", quantity=5,
                      stopPrice=below) == -4120


def test_cancel_query_all_and_cancel_all(client):
    below = str((mark(client) * Decimal("0.98")).quantize(TICK))
    a = algo(client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below, quantity="5",
             clientAlgoId="c-1")
    b = algo(client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below, quantity="6")
    c = client.sign_request("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "c-1"})
    assert c == {"algoId": a["algoId"], "clientAlgoId": "c-1", "code": "200", "msg": "success"}
    assert error_code(client.sign_request, "DELETE", "/fapi/v1/algoOrder", {"algoId": a["algoId"]}) == -2011
    assert error_code(client.sign_request, "GET", "/fapi/v1/algoOrder", {"algoId": 1}) == -2013
    assert client.sign_request("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": "DOTUSDT"})["code"] == 200
    rows = client.sign_request("GET", "/fapi/v1/allAlgoOrders", {"symbol": "DOTUSDT"})
    assert [(x["algoId"], x["algoStatus"]) for x in rows] == [(a["algoId"], "CANCELED"), (b["algoId"], "CANCELED")]


def test_ws_fapi_algo_order_place_and_cancel(venue):
    ws = websocket.create_connection(venue.ws_api_url, timeout=5)
    try:
        m = Decimal(venue.market.premium_index("DOTUSDT")["markPrice"])
        below = str((m * Decimal("0.98")).quantize(TICK))
        ws.send(json.dumps({"id": "a1", "method": "algoOrder.place", "params": ws_sign(dict(
            algoType="CONDITIONAL", symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below,
            quantity="5", workingType="MARK_PRICE"))}))
        r = json.loads(ws.recv())
        assert r["status"] == 200 and r["result"]["algoStatus"] == "NEW", r
        assert r["rateLimits"][1]["rateLimitType"] == "ORDERS" and r["rateLimits"][1]["count"] >= 1
        ws.send(json.dumps({"id": "a2", "method": "algoOrder.cancel", "params": ws_sign(dict(
            algoId=r["result"]["algoId"]))}))
        c = json.loads(ws.recv())
        assert c["status"] == 200 and c["result"]["code"] == "200"
        ws.send(json.dumps({"id": "a3", "method": "algoOrder.cancel", "params": ws_sign(dict(
            algoId=r["result"]["algoId"]))}))
        assert json.loads(ws.recv())["error"]["code"] == -2011
    finally:
        ws.close()


def test_algo_update_reaches_the_user_stream(venue, client):
    lk = client.new_listen_key()["listenKey"]
    ws = websocket.create_connection(f"{venue.ws_market_url}/private/ws/{lk}", timeout=5)
    try:
        below = str((mark(client) * Decimal("0.98")).quantize(TICK))
        r = algo(client, symbol="DOTUSDT", side="SELL", type="STOP_MARKET", triggerPrice=below, quantity="5")
        ev = json.loads(ws.recv())
        assert ev["e"] == "ALGO_UPDATE" and ev["o"]["aid"] == r["algoId"] and ev["o"]["X"] == "NEW"
        assert {"caid", "at", "o", "s", "S", "q", "tp", "wt", "cp", "R", "X"} <= set(ev["o"])
    finally:
        ws.close()


# ---------------------------------------------------------------------------------------------- ws-fapi market data

def test_ws_fapi_depth_ticker_book_and_ticker_price(venue):
    ws = websocket.create_connection(venue.ws_api_url, timeout=5)
    try:
        ws.send(json.dumps({"id": 1, "method": "depth", "params": {"symbol": "BTCUSDT", "limit": 5}}))
        d = json.loads(ws.recv())
        assert d["status"] == 200 and len(d["result"]["bids"]) == 5 and d["result"]["lastUpdateId"] > 0
        assert d["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
        ws.send(json.dumps({"id": 2, "method": "ticker.book", "params": {"symbol": "BTCUSDT"}}))
        b = json.loads(ws.recv())["result"]
        assert {"symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time", "lastUpdateId"} <= set(b)
        ws.send(json.dumps({"id": 3, "method": "ticker.price", "params": {"symbol": "BTCUSDT"}}))
        p = json.loads(ws.recv())["result"]
        assert p["symbol"] == "BTCUSDT" and Decimal(p["price"]) > 0
        ws.send(json.dumps({"id": 4, "method": "ticker.price", "params": {}}))
        assert len(json.loads(ws.recv())["result"]) > 10
        ws.send(json.dumps({"id": 5, "method": "depth", "params": {"symbol": "BTCUSDT", "limit": 3}}))
        e = json.loads(ws.recv())
        assert e["status"] == 400 and e["error"]["code"] == -4021
    finally:
        ws.close()


def test_ws_fapi_refuses_an_oversize_request_frame(venue):
    ws = websocket.create_connection(venue.ws_api_url, timeout=5)
    try:
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            # refused from the frame's header: the venue may close before the client has written the payload
            ws.send(json.dumps({"id": 1, "method": "ticker.price", "params": {"symbol": "BTCUSDT",
                                                                              "pad": "x" * 2_000_000}}))
            for _ in range(3):
                op, data = ws.recv_data(control_frame=True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    assert int.from_bytes(data[:2], "big") == 1009
                    raise ConnectionError("closed")
    finally:
        ws.close()
    # a normal request on a new connection still works
    ws = websocket.create_connection(venue.ws_api_url, timeout=5)
    ws.send(json.dumps({"id": 2, "method": "ticker.price", "params": {"symbol": "BTCUSDT"}}))
    assert json.loads(ws.recv())["status"] == 200
    ws.close()


def test_raw_http_algo_order_counts_orders_not_weight(venue):
    """POST /fapi/v1/algoOrder by hand (form body, HMAC over the body): 0 IP weight, counted as an order."""
    import hashlib
    import hmac
    from urllib.parse import urlencode

    import requests
    m = Decimal(venue.market.premium_index("DOTUSDT")["markPrice"])
    body = urlencode({"algoType": "CONDITIONAL", "symbol": "DOTUSDT", "side": "SELL", "type": "STOP_MARKET",
                      "triggerPrice": str((m * Decimal("0.98")).quantize(TICK)), "quantity": "5",
                      "timestamp": int(time.time() * 1000)})
    body += "&signature=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    h = {"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"}
    fresh_window()
    w0 = int(requests.get(venue.rest_url + "/fapi/v1/ping", timeout=5).headers["X-MBX-USED-WEIGHT-1M"])
    r = requests.post(venue.rest_url + "/fapi/v1/algoOrder", data=body, headers=h, timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["algoStatus"] == "NEW" and r.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) == w0
    bad = requests.post(venue.rest_url + "/fapi/v1/algoOrder", data=body.replace("quantity=5", "quantity=6"),
                        headers=h, timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == -1022
