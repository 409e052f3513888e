"""REST endpoints of the embedded venue over real HTTP on 127.0.0.1: signing, timing, errors, limits, faults.

The client side here signs with its own few lines of hmac (the venue's verifier is aegis/venue/auth.py), so a
shared bug cannot make both sides agree.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import types
from urllib.parse import urlencode

import pytest
import requests

from aegis.venue import rest, userdata, wsapi
from aegis.venue.auth import Authenticator
from aegis.venue.catalog import ORDER_IDS_ABOVE_2_53
from aegis.venue.exchange import Exchange, ExchangeConfig, VenueError
from aegis.venue.ratelimit import RateLimitConfig, RateLimiter
from aegis.venue.server import Router, VenueServer
from tests.test_venue_exchange import StaticBook
from tests.windows import fresh_window

KEY, SECRET = "aegis-test-key", "aegis-test-secret"


class Venue:
    def __init__(self, limits: RateLimitConfig | None = None, validity_s: float = 3600.0):
        self.book = StaticBook()
        self.book.set("BTCUSDT", [(89999.9, 5.0), (89999.0, 5.0)], [(90000.0, 5.0), (90001.0, 5.0)])
        self.book.set("XRPUSDT", [(2.1999, 1e6)], [(2.2, 1e6)])
        self.book.set("ETHUSDT", [(2999.99, 50.0)], [(3000.0, 50.0)])
        self.exchange = Exchange(self.book, cfg=ExchangeConfig(listen_key_validity_s=validity_s))
        cfg = types.SimpleNamespace(rate_limits=limits or RateLimitConfig())
        router = Router()
        self.rest = rest.install(router, self.exchange, self.book, cfg)
        self.userdata = userdata.install(router, self.exchange, cfg)
        self.wsapi = wsapi.install(router, self.exchange, cfg)
        self.server = VenueServer(router).start()
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.ws_url = f"ws://127.0.0.1:{self.server.port}"
        self.http = requests.Session()

    def stop(self):
        self.userdata.stop()
        self.http.close()
        self.server.stop()

    def signed(self, method, path, params=None, *, key=KEY, secret=SECRET, in_body=False, timeout=5.0):
        p = dict(params or {})
        p.setdefault("timestamp", int(time.time() * 1000))
        qs = urlencode(p)
        sig = hmac.new(secret.encode(), qs.encode(), hashlib.sha256).hexdigest()
        qs += "&signature=" + sig
        headers = {"X-MBX-APIKEY": key}
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.http.request(method, self.url + path, data=qs, headers=headers, timeout=timeout)
        return self.http.request(method, self.url + path + "?" + qs, headers=headers, timeout=timeout)


@pytest.fixture
def venue():
    v = Venue()
    yield v
    v.stop()


def test_ping_time_and_every_reply_carry_the_used_weight_header(venue):
    fresh_window()
    r = venue.http.get(venue.url + "/fapi/v1/ping")
    assert r.status_code == 200 and r.content == b"{}" and r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    r = venue.http.get(venue.url + "/fapi/v1/time")
    assert abs(r.json()["serverTime"] - time.time() * 1000) < 5000
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "2"


def test_exchange_info_lists_symbols_with_filters_and_ignores_the_symbol_param(venue):
    r = venue.http.get(venue.url + "/fapi/v1/exchangeInfo")
    info = r.json()
    assert list(info)[:7] == ["timezone", "serverTime", "futuresType", "rateLimits", "exchangeFilters", "assets",
                              "symbols"]
    assert info["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                     "limit": 2400}
    syms = {s["symbol"]: s for s in info["symbols"]}
    assert "币安人生USDT" in syms and syms["FTTUSDT"]["status"] == "SETTLING"
    assert syms["BTCUSDT"]["filters"][0]["tickSize"] == "0.10"
    r2 = venue.http.get(venue.url + "/fapi/v1/exchangeInfo?symbol=NOTAREALSYM")
    assert r2.status_code == 200 and len(r2.json()["symbols"]) == len(info["symbols"])


def test_signed_order_in_query_string_is_accepted_with_order_count_headers(venue):
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                                     timeInForce="GTC", quantity="0.001", price="89000"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "NEW" and body["price"] == "89000.00" and body["origQty"] == "0.001"
    assert r.headers["X-MBX-ORDER-COUNT-10S"] == "1" and r.headers["X-MBX-ORDER-COUNT-1M"] == "1"
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "0"      # new orders weigh 0 on the IP limit


def test_signed_order_in_form_body_is_accepted(venue):
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                     quantity="0.001", newOrderRespType="RESULT"), in_body=True)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "FILLED" and r.json()["avgPrice"] == "90000.00000"


def test_mixed_query_and_body_are_signed_concatenated_without_separator(venue):
    # docs/binance-notes.md, Request signing: totalParams = query string + body, "There is no & between"
    ts = int(time.time() * 1000)
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = f"quantity=0.001&price=89000&recvWindow=5000&timestamp={ts}"
    sig = hmac.new(SECRET.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    r = venue.http.post(f"{venue.url}/fapi/v1/order?{query}", data=f"{body}&signature={sig}",
                        headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    bad = hmac.new(SECRET.encode(), (query + "&" + body).encode(), hashlib.sha256).hexdigest()
    r = venue.http.post(f"{venue.url}/fapi/v1/order?{query}", data=f"{body}&signature={bad}",
                        headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.json()["code"] == -1022


def test_query_string_parameter_wins_over_the_same_parameter_in_the_body(venue):
    ts = int(time.time() * 1000)
    query = f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=89000&timestamp={ts}"
    body = "price=88000"
    sig = hmac.new(SECRET.encode(), (query + body).encode(), hashlib.sha256).hexdigest()
    r = venue.http.post(f"{venue.url}/fapi/v1/order?{query}&signature={sig}", data=body,
                        headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["price"] == "89000.00"


def test_signature_is_accepted_in_upper_case(venue):
    ts = int(time.time() * 1000)
    qs = f"symbol=BTCUSDT&timestamp={ts}"
    sig = hmac.new(SECRET.encode(), qs.encode(), hashlib.sha256).hexdigest().upper()
    r = venue.http.get(f"{venue.url}/fapi/v1/openOrders?{qs}&signature={sig}", headers={"X-MBX-APIKEY": KEY})
    assert r.status_code == 200 and r.content == b"[]"


@pytest.mark.parametrize("kwargs,status,code", [
    (dict(secret="wrong-secret"), 400, -1022),
    (dict(key="unknown-key"), 401, -2015),
    (dict(key=""), 401, -2014),
])
def test_bad_credentials_are_rejected_with_binance_codes(venue, kwargs, status, code):
    r = venue.signed("GET", "/fapi/v3/account", **kwargs)
    assert r.status_code == status and r.json()["code"] == code


def test_missing_signature_is_rejected(venue):
    r = venue.http.get(f"{venue.url}/fapi/v3/account?timestamp={int(time.time() * 1000)}",
                       headers={"X-MBX-APIKEY": KEY})
    assert r.status_code == 400 and r.content == b'{"code":-1022,"msg":"Signature for this request is not valid."}'


@pytest.mark.parametrize("offset_ms,recv_window,msg", [
    (-6000, None, "Timestamp for this request is outside of the recvWindow."),
    (-2500, 2000, "Timestamp for this request is outside of the recvWindow."),
    (3000, None, "Timestamp for this request was 1000ms ahead of the server's time."),  # still ahead after a stall
])
def test_timestamp_outside_the_window_is_rejected_with_1021(venue, offset_ms, recv_window, msg):
    p = {"timestamp": int(time.time() * 1000) + offset_ms}
    if recv_window:
        p["recvWindow"] = recv_window
    r = venue.signed("GET", "/fapi/v3/account", p)
    assert r.status_code == 400 and r.json() == {"code": -1021, "msg": msg}


def test_old_timestamp_inside_a_larger_recv_window_is_accepted(venue):
    r = venue.signed("GET", "/fapi/v3/account", {"timestamp": int(time.time() * 1000) - 6000,
                                                 "recvWindow": 10000})
    assert r.status_code == 200


def test_missing_timestamp_is_a_mandatory_parameter_error(venue):
    qs = "symbol=BTCUSDT"
    sig = hmac.new(SECRET.encode(), qs.encode(), hashlib.sha256).hexdigest()
    r = venue.http.get(f"{venue.url}/fapi/v1/openOrders?{qs}&signature={sig}", headers={"X-MBX-APIKEY": KEY})
    assert r.json()["code"] == -1102


def test_server_rule_matches_the_documented_vector():
    secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
    qs = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
    auth = Authenticator({"k": secret}, clock_ms=lambda: 1591702614000)
    sig = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    auth.verify_rest("k", qs + "&signature=" + sig, b"", {"timestamp": "1591702613943", "recvWindow": "5000"})
    with pytest.raises(VenueError) as e:
        auth.verify_rest("k", qs + "&signature=" + sig[:-1] + "0", b"", {"timestamp": "1591702613943"})
    assert e.value.code == -1022


def test_order_lifecycle_query_cancel_open_orders_and_cancel_all(venue):
    p = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001")
    a = venue.signed("POST", "/fapi/v1/order", {**p, "price": "89000", "newClientOrderId": "life-1"}).json()
    venue.signed("POST", "/fapi/v1/order", {**p, "price": "88000", "newClientOrderId": "life-2"})
    q = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "life-1"}).json()
    assert q["orderId"] == a["orderId"] and q["status"] == "NEW"
    q = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": a["orderId"]}).json()
    assert q["clientOrderId"] == "life-1"
    opens = venue.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}).json()
    assert [o["clientOrderId"] for o in opens] == ["life-1", "life-2"]
    c = venue.signed("DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": a["orderId"]})
    assert c.status_code == 200 and c.json()["status"] == "CANCELED"
    again = venue.signed("DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": a["orderId"]})
    assert again.status_code == 400 and again.content == b'{"code":-2011,"msg":"Unknown order sent."}'
    r = venue.signed("DELETE", "/fapi/v1/allOpenOrders", {"symbol": "BTCUSDT"})
    assert r.json() == {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert venue.signed("GET", "/fapi/v1/openOrders").json() == []
    missing = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "orderId": 999999})
    assert missing.json() == {"code": -2013, "msg": "Order does not exist."}


def test_order_ids_above_2_53_arrive_exactly_in_json(venue):
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="10", price="2.1"))
    assert b'"orderId":%d' % ORDER_IDS_ABOVE_2_53 in r.content
    assert json.loads(r.content)["orderId"] == ORDER_IDS_ABOVE_2_53


def test_percent_encoded_non_ascii_symbol_is_accepted(venue):
    venue.book.set("币安人生USDT", [(0.11999, 1e6)], [(0.12, 1e6)])
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="币安人生USDT", side="BUY", type="MARKET",
                                                     quantity="100"))
    assert r.status_code == 200, r.text and r.json()["symbol"] == "币安人生USDT"


def test_filter_error_reaches_the_client_as_binance_json(venue):
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000.05"))
    assert r.status_code == 400 and r.json() == {"code": -4014, "msg": "Price not increased by tick size."}
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="NOPE", side="BUY", type="MARKET", quantity="1"))
    assert r.content == b'{"code":-1121,"msg":"Invalid symbol."}'


def test_position_risk_and_account_after_a_fill(venue):
    venue.signed("POST", "/fapi/v1/order", dict(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1"))
    v3 = venue.signed("GET", "/fapi/v3/positionRisk").json()
    assert [(p["symbol"], p["positionAmt"], p["entryPrice"]) for p in v3] == [("ETHUSDT", "1", "3000")]
    v2 = venue.signed("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"}).json()
    assert v2[0]["positionAmt"] == "1" and v2[0]["marginType"] == "cross"
    acct = venue.signed("GET", "/fapi/v3/account").json()
    assert acct["totalWalletBalance"] == "9998.50000000"            # 10000 - 0.05% of 3000
    assert venue.signed("GET", "/fapi/v2/account").json()["canTrade"] is True
    bal = venue.signed("GET", "/fapi/v2/balance").json()
    assert {b["asset"]: b["balance"] for b in bal}["USDT"] == "9998.50000000"


def test_listen_key_create_keepalive_delete_then_keepalive_fails(venue):
    h = {"X-MBX-APIKEY": KEY}
    k = venue.http.post(venue.url + "/fapi/v1/listenKey", headers=h).json()["listenKey"]
    assert venue.http.put(venue.url + "/fapi/v1/listenKey", headers=h).json() == {"listenKey": k}
    assert venue.http.delete(venue.url + "/fapi/v1/listenKey", headers=h).json() == {}
    r = venue.http.put(venue.url + "/fapi/v1/listenKey", headers=h)
    assert r.status_code == 400 and r.json()["code"] == -1125
    assert venue.http.post(venue.url + "/fapi/v1/listenKey").json()["code"] == -2014


def test_weight_limit_answers_429_with_retry_after_then_bans_with_418():
    v = Venue(limits=RateLimitConfig(weight_per_minute=5, requests_over_limit_before_ban=2, ban_s=30))
    try:
        fresh_window()
        codes = [v.http.get(v.url + "/fapi/v1/ping").status_code for _ in range(5)]
        assert codes == [200] * 5
        r = v.http.get(v.url + "/fapi/v1/ping")
        assert r.status_code == 429 and r.json()["code"] == -1003
        assert r.json()["msg"].startswith("Too many requests; current limit is 5 requests per minute.")
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["X-MBX-USED-WEIGHT-1M"] == "6"
        assert v.http.get(v.url + "/fapi/v1/ping").status_code == 429
        r = v.http.get(v.url + "/fapi/v1/ping")
        assert r.status_code == 418 and r.json()["msg"].startswith("Way too many requests; IP banned until ")
        assert 29 <= int(r.headers["Retry-After"]) <= 30
        assert v.http.get(v.url + "/fapi/v1/time").status_code == 418
    finally:
        v.stop()


def test_ban_lifts_when_it_expires_and_limits_reset_per_window():
    clock = [1000.0]
    lim = RateLimiter(RateLimitConfig(weight_per_minute=2, requests_over_limit_before_ban=1, ban_s=10,
                                      weight_window_s=60), clock_s=lambda: clock[0])
    lim.charge_weight("ip", 2)
    assert err_status(lim, "ip") == 429
    assert err_status(lim, "ip") == 418
    clock[0] += 11                       # ban over, same minute window (960..1020): still over the limit
    assert err_status(lim, "ip") == 429
    clock[0] += 60                       # next window
    assert lim.charge_weight("ip", 1) == 1
    assert lim.charge_weight("other", 2) == 2


def err_status(lim, ip):
    try:
        lim.charge_weight(ip, 1)
    except VenueError as e:
        return e.http_status
    return 200


def test_order_rate_limit_answers_1015():
    v = Venue(limits=RateLimitConfig(orders_per_10s=2))
    try:
        fresh_window(10.0, 2.0)
        p = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000")
        assert [v.signed("POST", "/fapi/v1/order", p).status_code for _ in range(2)] == [200, 200]
        r = v.signed("POST", "/fapi/v1/order", p)
        assert r.status_code == 429 and r.json() == {
            "code": -1015, "msg": "Too many new orders; current limit is 2 orders per 10 SECOND."}
    finally:
        v.stop()


def test_injected_503_unknown_still_executes_the_order(venue):
    venue.exchange.faults.fail_next(1, "unknown")
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000", newClientOrderId="u503"))
    assert r.status_code == 503 and r.json()["msg"].startswith("Unknown error")
    q = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "u503"})
    assert q.json()["status"] == "NEW"


def test_injected_503_unavailable_does_not_execute(venue):
    venue.exchange.faults.fail_next(1, "unavailable")
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000", newClientOrderId="n503"))
    assert r.status_code == 503
    q = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "n503"})
    assert q.json()["code"] == -2013


def test_delayed_order_times_the_client_out_but_is_executed(venue):
    venue.exchange.faults.delay_next(1, 0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000", newClientOrderId="slow"),
                     timeout=0.2)
    time.sleep(0.7)
    q = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "slow"})
    assert q.json()["status"] == "NEW"


def test_skewed_venue_clock_makes_client_timestamps_fall_outside_the_window():
    from aegis.venue import VenueConfig, start_venue
    with start_venue(VenueConfig(rate=0.0, seed=3)) as v:
        http = requests.Session()

        def account():
            qs = f"timestamp={int(time.time() * 1000)}"
            sig = hmac.new(SECRET.encode(), qs.encode(), hashlib.sha256).hexdigest()
            return http.get(f"{v.rest_url}/fapi/v3/account?{qs}&signature={sig}", headers={"X-MBX-APIKEY": KEY})

        assert account().status_code == 200
        v.skew_clock(10_000)
        assert account().json() == {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
        v.skew_clock(-3_000)
        assert account().json()["msg"] == "Timestamp for this request was 1000ms ahead of the server's time."
        http.close()


def test_modify_leverage_commission_and_user_trades_over_http(venue):
    a = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000")).json()
    m = venue.signed("PUT", "/fapi/v1/order", dict(symbol="BTCUSDT", orderId=a["orderId"], side="BUY",
                                                    quantity="0.001", price="90000"))
    assert m.status_code == 200 and m.json()["status"] == "FILLED" and "X-MBX-ORDER-COUNT-1M" in m.headers
    lev = venue.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 7}).json()
    assert lev == {"leverage": 7, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}
    fees = venue.signed("GET", "/fapi/v1/commissionRate", {"symbol": "BTCUSDT"}).json()
    assert (fees["makerCommissionRate"], fees["takerCommissionRate"]) == ("0.0002", "0.0005")
    (t,) = venue.signed("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"}).json()
    assert t["orderId"] == a["orderId"] and t["price"] == "90000.00" and t["commission"] == "0.04500000"


def test_order_delayed_past_its_recv_window_is_rejected_by_the_matching_engine(venue):
    venue.exchange.faults.delay_next(1, 0.4)
    r = venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                                     quantity="0.001", price="89000", recvWindow=300,
                                                     newClientOrderId="me-late"))
    assert r.status_code == 400 and r.json() == {
        "code": -5028, "msg": "Timestamp for this request is outside of the ME recvWindow."}
    q = venue.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "me-late"})
    assert q.json()["code"] == -2013


def test_batch_orders_answer_one_result_or_error_per_order_and_batch_cancel(venue):
    batch = [dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000",
                  newClientOrderId="b1"),
             dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001",
                  price="89000.05"),
             dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="88000",
                  newClientOrderId="b3")]
    r = venue.signed("POST", "/fapi/v1/batchOrders", {"batchOrders": json.dumps(batch)})
    out = r.json()
    assert r.status_code == 200 and out[0]["clientOrderId"] == "b1" and out[2]["clientOrderId"] == "b3"
    assert out[1] == {"code": -4014, "msg": "Price not increased by tick size."}
    c = venue.signed("DELETE", "/fapi/v1/batchOrders",
                     {"symbol": "BTCUSDT", "origClientOrderIdList": json.dumps(["b1", "zz"])}).json()
    assert c[0]["status"] == "CANCELED" and c[1]["code"] == -2011
