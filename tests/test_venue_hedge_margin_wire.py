"""Hedge mode, isolated margin and liquidation over the wire: raw signed HTTP, ws-fapi and the user data stream on
127.0.0.1 (hand-set book), and a liquidation on the full venue driven by its own generated market.

Shapes and codes our reference does not list follow Binance's public USD-M documentation as we know it ("Change
Position Mode", "User's Force Orders", user-data "Event: Order Update" / "Event: Margin Call")."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest
import websocket

from tests.test_venue_rest import KEY, SECRET, Venue
from tests.test_venue_rest_ws import call, listen_key, recv_until, ws_sign


@pytest.fixture
def venue():
    v = Venue()
    yield v
    v.stop()


def ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def code(r) -> int:
    assert r.status_code == 400, r.text
    return r.json()["code"]


def test_hedge_mode_over_http_and_the_user_stream(venue):
    assert ok(venue.signed("GET", "/fapi/v1/positionSide/dual")) == {"dualSidePosition": False}
    assert code(venue.signed("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"})) == -4059
    assert ok(venue.signed("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "true"})) == \
        {"code": 200, "msg": "success"}
    assert ok(venue.signed("GET", "/fapi/v1/positionSide/dual")) == {"dualSidePosition": True}
    buy = dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert code(venue.signed("POST", "/fapi/v1/order", buy)) == -4061
    r = venue.signed("POST", "/fapi/v1/order", dict(buy, positionSide="LONG", reduceOnly="true"))
    assert code(r) == -1106 and r.json()["msg"] == "Parameter 'reduceOnly' sent when not required."
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws/{listen_key(venue)}", timeout=3)
    try:
        time.sleep(0.05)
        o = ok(venue.signed("POST", "/fapi/v1/order", dict(buy, positionSide="LONG", newOrderRespType="RESULT")))
        assert o["positionSide"] == "LONG" and o["status"] == "FILLED"
        evs = recv_until(ws, 4)
        assert [e["e"] for e in evs] == ["TRADE_LITE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE"]
        assert evs[1]["o"]["ps"] == evs[3]["o"]["ps"] == "LONG"
        assert evs[2]["a"]["P"][0]["ps"] == "LONG" and evs[2]["a"]["P"][0]["pa"] == "0.01"
        ok(venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="SELL", type="MARKET",
                                                          quantity="0.020", positionSide="SHORT")))
        recv_until(ws, 4)
        rows = ok(venue.signed("GET", "/fapi/v3/positionRisk"))
        assert [(r["positionSide"], r["positionAmt"]) for r in rows] == [("LONG", "0.01"), ("SHORT", "-0.02")]
        acct = ok(venue.signed("GET", "/fapi/v2/account"))
        assert {p["positionSide"] for p in acct["positions"]} == {"LONG", "SHORT"}
        # SELL of the LONG side closes it; the SHORT side stays
        ok(venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="SELL", type="MARKET",
                                                          quantity="0.010", positionSide="LONG")))
        evs = recv_until(ws, 4)
        au = next(e for e in evs if e["e"] == "ACCOUNT_UPDATE")
        assert au["a"]["P"][0]["ps"] == "LONG" and au["a"]["P"][0]["pa"] == "0"
        assert code(venue.signed("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"})) == -4068
    finally:
        ws.close()


def test_hedge_mode_over_ws_fapi(venue):
    ok(venue.signed("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "true"}))
    ws = websocket.create_connection(f"{venue.ws_url}/ws-fapi/v1", timeout=3)
    try:
        place = dict(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010", newOrderRespType="RESULT")
        r = call(ws, "order.place", ws_sign(place))
        assert r["status"] == 400 and r["error"]["code"] == -4061
        r = call(ws, "order.place", ws_sign(dict(place, positionSide="SHORT")))
        assert r["status"] == 200 and r["result"]["positionSide"] == "SHORT" and r["result"]["status"] == "FILLED"
        r = call(ws, "account.position", ws_sign({}))
        assert [(p["positionSide"], p["positionAmt"]) for p in r["result"]] == [("SHORT", "-0.01")]
        r = call(ws, "algoOrder.place", ws_sign(dict(algoType="CONDITIONAL", symbol="BTCUSDT", side="BUY",
                                                     positionSide="SHORT", type="STOP_MARKET",
                                                     triggerPrice="95000", closePosition="true",
                                                     workingType="MARK_PRICE")))
        assert r["status"] == 200 and r["result"]["positionSide"] == "SHORT", r
    finally:
        ws.close()


def test_isolated_margin_and_liquidation_over_http_and_the_user_stream(venue):
    ok(venue.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": "50"}))
    ok(venue.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSDT", "marginType": "ISOLATED"}))
    ok(venue.signed("POST", "/fapi/v1/order", dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")))
    (row,) = ok(venue.signed("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"}))
    assert (row["marginType"], row["isolatedWallet"]) == ("isolated", "180.00000000")
    ok(venue.signed("POST", "/fapi/v1/positionMargin", {"symbol": "BTCUSDT", "amount": "20", "type": "1"}))
    (row,) = ok(venue.signed("GET", "/fapi/v3/positionRisk", {"symbol": "BTCUSDT"}))
    assert row["isolatedWallet"] == "200.00000000"
    bal = next(b for b in ok(venue.signed("GET", "/fapi/v2/balance")) if b["asset"] == "USDT")
    assert bal["availableBalance"] == bal["crossWalletBalance"] == "9795.50000000"   # 10000 - 4.5 fee - 200
    ws = websocket.create_connection(f"{venue.ws_url}/private/ws/{listen_key(venue)}", timeout=3)
    try:
        time.sleep(0.05)
        # 200 + 0.1 (p - 90000) < 0.0004 p below p = 88353.4: at 88300 the position is liquidated
        venue.book.set("BTCUSDT", [(88300.0, 5.0)], [(88300.1, 5.0)], mark=88300.0)
        venue.exchange.check_liquidations()
        evs = recv_until(ws, 4)
        assert [e["e"] for e in evs] == ["ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE",
                                         "ACCOUNT_UPDATE"]
        new, fill = evs[0]["o"], evs[2]["o"]
        assert new["c"].startswith("autoclose-") and (new["o"], new["x"], new["X"]) == ("LIQUIDATION", "NEW", "NEW")
        assert (fill["x"], fill["X"], fill["L"]) == ("CALCULATED", "FILLED", "88300.00")
        assert evs[3]["a"]["m"] == "INSURANCE_CLEAR"
        (fo,) = ok(venue.signed("GET", "/fapi/v1/forceOrders", {"symbol": "BTCUSDT"}))
        assert fo["clientOrderId"] == new["c"] and fo["orderId"] == new["i"] and fo["status"] == "FILLED"
        assert code(venue.signed("GET", "/fapi/v1/forceOrders", {"limit": "101"})) == -1130
        income = ok(venue.signed("GET", "/fapi/v1/income", {"incomeType": "INSURANCE_CLEAR"}))
        # realized 0.1 x (88300 - 90000) = -170; the 30 left pays the clearance fee
        assert [r["income"] for r in income] == ["-30.00000000"]
        bal = next(b for b in ok(venue.signed("GET", "/fapi/v2/balance")) if b["asset"] == "USDT")
        assert bal["balance"] == "9795.50000000"      # exactly the isolated margin is gone
    finally:
        ws.close()


def test_the_venue_liquidates_a_high_leverage_position_when_its_market_is_driven_through():
    um_futures = pytest.importorskip("binance.um_futures", reason="needs binance-futures-connector (test extra)")
    from aegis.venue import VenueConfig, start_venue
    with start_venue(VenueConfig(rate=1500.0, seed=17)) as v:
        c = um_futures.UMFutures(key=KEY, secret=SECRET, base_url=v.rest_url, timeout=5)
        events: list[dict] = []
        v.exchange.add_listener(KEY, events.append)
        c.change_leverage(symbol="DOTUSDT", leverage=125)
        c.change_margin_type(symbol="DOTUSDT", marginType="ISOLATED")
        c.new_order(symbol="DOTUSDT", side="BUY", type="MARKET", quantity=20)
        (pos,) = c.get_position_risk(symbol="DOTUSDT")
        liq = Decimal(pos["liquidationPrice"])
        assert 0 < liq < Decimal(pos["entryPrice"])
        wallet0 = Decimal(c.balance()[0]["balance"])
        # the public liquidation streams: one subscribed by name, one combined
        one = websocket.create_connection(f"{v.ws_market_url}/market/ws/dotusdt@forceOrder", timeout=5)
        arr = websocket.create_connection(f"{v.ws_market_url}/market/stream?streams=!forceOrder@arr", timeout=5)
        v.drive("DOTUSDT", -1)
        try:
            end = time.monotonic() + 30
            while time.monotonic() < end and not c.force_orders(symbol="DOTUSDT"):
                time.sleep(0.05)
        finally:
            v.drive("DOTUSDT", None)
        (fo,) = c.force_orders(symbol="DOTUSDT")
        assert fo["clientOrderId"].startswith("autoclose-") and fo["side"] == "SELL" and fo["status"] == "FILLED"
        assert Decimal(fo["executedQty"]) == 20
        (pos2,) = c.get_position_risk(symbol="DOTUSDT")
        assert pos2["positionAmt"] == "0"
        fills = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "CALCULATED"]
        assert len(fills) >= 1 and fills[-1]["X"] == "FILLED" and fills[-1]["c"] == fo["clientOrderId"]
        # it was closed near the liquidation price, and the account lost no more than the isolated margin
        assert Decimal(fo["avgPrice"]) <= liq * Decimal("1.002")
        lost = wallet0 - Decimal(c.balance()[0]["balance"])
        assert 0 < lost <= Decimal(pos["isolatedWallet"])
        try:
            (snap,) = recv_until(one, 1, timeout=5.0)
            (wrapped,) = recv_until(arr, 1, timeout=5.0)
        finally:
            one.close()
            arr.close()
        assert wrapped == {"stream": "!forceOrder@arr", "data": snap}
        assert snap["e"] == "forceOrder" and set(snap["o"]) == {"s", "S", "o", "f", "q", "p", "ap", "X", "l", "z", "T"}
        assert (snap["o"]["s"], snap["o"]["S"], snap["o"]["o"], snap["o"]["f"], snap["o"]["X"]) == (
            "DOTUSDT", "SELL", "LIMIT", "IOC", "FILLED")
        assert (snap["o"]["p"], Decimal(snap["o"]["ap"]), Decimal(snap["o"]["z"])) == (
            fo["price"], Decimal(fo["avgPrice"]), 20)
