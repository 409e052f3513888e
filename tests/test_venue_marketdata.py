"""REST market data of the venue beyond depth/tickers: klines (trade, continuous, mark, index), trades, aggTrades,
historicalTrades, premiumIndex, fundingRate/fundingInfo, openInterest, ticker/price; and that they agree with the
streams built from the same generated trades. Payload shapes, weights and errors as on Binance's USD-M "Market Data"
REST pages (not in our reference file: taken from Binance's public documentation)."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import requests
import websocket

from aegis.venue import VenueConfig, start_venue
from tests.windows import fresh_window

KEY, SECRET = "aegis-test-key", "aegis-test-secret"


@pytest.fixture(scope="module")
def venue():
    v = start_venue(VenueConfig(rate=3000, seed=21, funding_interval_s=1.0))
    time.sleep(1.5)        # some trades, a few mark samples and funding settlements
    yield v
    v.stop()
    assert v.market.errors == 0


def get(venue, path, **params):
    r = requests.get(venue.rest_url + path, params=params, timeout=5)
    return r


def test_klines_shape_weight_and_errors(venue):
    r = get(venue, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=5)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert 1 <= len(rows) <= 5
    t, o, h, l, c, v, T, q, n, V, Q, ignore = rows[-1]
    assert isinstance(t, int) and T == t + 59_999 and t % 60_000 == 0
    assert all(isinstance(x, str) for x in (o, h, l, c, v, q, V, Q, ignore)) and isinstance(n, int)
    assert Decimal(l) <= min(Decimal(o), Decimal(c)) <= max(Decimal(o), Decimal(c)) <= Decimal(h)
    assert Decimal(V) <= Decimal(v) and n >= 0
    assert any(row[8] > 0 for row in rows)     # trades are counted; the open candle may have none just after a roll
    # weight by limit (1 for < 100, 2 for < 500, 5 up to 1000, 10 above): the header counts it
    fresh_window()
    w0 = int(get(venue, "/fapi/v1/ping").headers["X-MBX-USED-WEIGHT-1M"])
    w1 = int(get(venue, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1200).headers[
        "X-MBX-USED-WEIGHT-1M"])
    assert w1 - w0 == 10
    bad = get(venue, "/fapi/v1/klines", symbol="BTCUSDT", interval="1s")
    assert bad.status_code == 400 and bad.json() == {"code": -1120, "msg": "Invalid interval."}
    assert get(venue, "/fapi/v1/klines", symbol="BTCUSDT").json()["code"] == -1102
    assert get(venue, "/fapi/v1/klines", symbol="NOPEUSDT", interval="1m").json()["code"] == -1121
    assert get(venue, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1501).json()["code"] == -1130
    assert get(venue, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=10,
               endTime=5).json()["code"] == -1023


def test_rest_kline_is_the_streamed_kline(venue):
    """The open candle over REST and over @kline_1m are the same counters."""
    venue.pause_market()
    try:
        time.sleep(0.4)
        ws = websocket.create_connection(venue.ws_market_url + "/market/ws/ethusdt@kline_1m", timeout=5)
        k = json.loads(ws.recv())["k"]
        ws.close()
        # a minute can end between the push and the request (the candle then moved into the history) or just
        # before the push (which then carries the closing candle): the pushed candle is one of the last two rows
        rows = get(venue, "/fapi/v1/klines", symbol="ETHUSDT", interval="1m", limit=2).json()
    finally:
        venue.resume_market()
    row = next(r for r in rows if r[0] == k["t"])
    assert row[1:6] == [k["o"], k["h"], k["l"], k["c"], k["v"]]
    assert row[8] == k["n"] and row[9] == k["V"]


def test_continuous_klines_follow_the_perpetual(venue):
    venue.pause_market()
    try:
        time.sleep(0.3)
        a = get(venue, "/fapi/v1/continuousKlines", pair="BTCUSDT", contractType="PERPETUAL", interval="1m",
                limit=2).json()
        b = get(venue, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=2).json()
    finally:
        venue.resume_market()
    # a minute may end between the two requests: compare the candles both answers hold
    a, b = ({r[0]: r for r in rows} for rows in (a, b))
    assert a.keys() & b.keys() and all(a[t] == b[t] for t in a.keys() & b.keys())
    r = get(venue, "/fapi/v1/continuousKlines", pair="BTCUSDT", interval="1m")
    assert r.json()["code"] == -1102


def test_mark_and_index_price_klines(venue):
    for path, key in (("/fapi/v1/markPriceKlines", "symbol"), ("/fapi/v1/indexPriceKlines", "pair")):
        rows = get(venue, path, **{key: "BTCUSDT"}, interval="1m").json()
        assert rows, path
        t, o, h, l, c, v, T, q, n, *rest = rows[-1]
        assert T == t + 59_999 and v == "0" and q == "0" and isinstance(n, int) and n >= 1
        assert Decimal(l) <= Decimal(c) <= Decimal(h)
    mark = Decimal(get(venue, "/fapi/v1/premiumIndex", symbol="BTCUSDT").json()["markPrice"])
    last_mark = Decimal(get(venue, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1m").json()[-1][4])
    assert abs(mark - last_mark) / mark < Decimal("0.01")


def test_trades_agg_trades_and_historical_trades(venue):
    trades = get(venue, "/fapi/v1/trades", symbol="BTCUSDT", limit=10).json()
    assert len(trades) == 10
    assert list(trades[0]) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker"]
    assert [t["id"] for t in trades] == sorted(t["id"] for t in trades)
    t = trades[-1]
    assert Decimal(t["quoteQty"]) == Decimal(t["price"]) * Decimal(t["qty"])
    aggs = get(venue, "/fapi/v1/aggTrades", symbol="BTCUSDT", limit=10).json()
    assert list(aggs[0]) == ["a", "p", "q", "f", "l", "T", "m"]
    assert all(b["a"] == a["a"] + 1 for a, b in zip(aggs, aggs[1:]))
    first = aggs[0]["a"]
    assert get(venue, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=first, limit=3).json() == aggs[:3]
    # historicalTrades needs the API key (MARKET_DATA), no signature
    r = get(venue, "/fapi/v1/historicalTrades", symbol="BTCUSDT", limit=3)
    assert r.status_code == 401 and r.json()["code"] == -2014
    r = requests.get(venue.rest_url + "/fapi/v1/historicalTrades", params={"symbol": "BTCUSDT",
                     "fromId": trades[0]["id"], "limit": 2}, headers={"X-MBX-APIKEY": KEY}, timeout=5)
    assert r.status_code == 200 and [x["id"] for x in r.json()] == [trades[0]["id"], trades[1]["id"]]
    assert get(venue, "/fapi/v1/trades", symbol="BTCUSDT", limit=1001).json()["code"] == -1130


def test_trades_match_the_trade_stream(venue):
    ws = websocket.create_connection(venue.ws_market_url + "/public/ws/solusdt@trade", timeout=5)
    seen = [json.loads(ws.recv()) for _ in range(3)]
    ws.close()
    rest = {t["id"]: t for t in get(venue, "/fapi/v1/trades", symbol="SOLUSDT", limit=1000).json()}
    for s in seen:
        assert rest[s["t"]]["price"] == s["p"] and rest[s["t"]]["qty"] == s["q"]
        assert rest[s["t"]]["isBuyerMaker"] == s["m"]


def test_premium_index_funding_and_open_interest(venue):
    p = get(venue, "/fapi/v1/premiumIndex", symbol="BTCUSDT").json()
    assert list(p) == ["symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
                       "interestRate", "nextFundingTime", "time"]
    assert p["nextFundingTime"] % 1000 == 0 and p["nextFundingTime"] > p["time"]
    assert len(get(venue, "/fapi/v1/premiumIndex").json()) > 10
    rates = get(venue, "/fapi/v1/fundingRate", symbol="BTCUSDT").json()
    assert rates and list(rates[0]) == ["symbol", "fundingRate", "fundingTime", "markPrice"]
    assert all(r["fundingTime"] % 1000 == 0 for r in rates)
    info = get(venue, "/fapi/v1/fundingInfo").json()
    assert {"symbol", "adjustedFundingRateCap", "adjustedFundingRateFloor", "fundingIntervalHours",
            "disclaimer"} == set(info[0])
    oi = get(venue, "/fapi/v1/openInterest", symbol="BTCUSDT").json()
    assert list(oi) == ["openInterest", "symbol", "time"] and Decimal(oi["openInterest"]) > 0


def test_ticker_price_v1_v2_is_the_last_trade(venue):
    venue.pause_market()
    try:
        time.sleep(0.3)
        last = get(venue, "/fapi/v1/trades", symbol="BTCUSDT", limit=1).json()[-1]["price"]
        one = get(venue, "/fapi/v1/ticker/price", symbol="BTCUSDT").json()
        two = get(venue, "/fapi/v2/ticker/price", symbol="BTCUSDT").json()
    finally:
        venue.resume_market()
    assert one["price"] == two["price"] == last and list(one) == ["symbol", "price", "time"]
    assert isinstance(get(venue, "/fapi/v2/ticker/price").json(), list)


def test_404_and_405_carry_the_weight_header(venue):
    r = get(venue, "/fapi/v1/nothing")
    assert r.status_code == 404 and "X-MBX-USED-WEIGHT-1M" in r.headers
    r = requests.delete(venue.rest_url + "/fapi/v1/klines", timeout=5)
    assert r.status_code == 405 and "X-MBX-USED-WEIGHT-1M" in r.headers


def test_update_ids_are_exact_in_a_double(venue):
    """Binance's depth ids are around 1e13; ids past 2**53 break clients that read JSON numbers as doubles."""
    for sym in ("BTCUSDT", "ATOMUSDT", "XRPUSDT", "币安人生USDT"):
        u = get(venue, "/fapi/v1/depth", symbol=sym, limit=5).json()["lastUpdateId"]
        assert 10**12 < u < 2**53 and float(u) == u


# ---------------------------------------------------------------------------------------------- streams

def _first(venue, path, timeout=5):
    ws = websocket.create_connection(venue.ws_market_url + path, timeout=timeout)
    try:
        while True:
            d = json.loads(ws.recv())
            if "result" not in d:
                return d
    finally:
        ws.close()


def test_ticker_streams(venue):
    t = _first(venue, "/market/ws/btcusdt@ticker")
    assert t["e"] == "24hrTicker" and t["s"] == "BTCUSDT"
    assert set(t) == {"e", "E", "s", "p", "P", "w", "c", "Q", "o", "h", "l", "v", "q", "O", "C", "F", "L", "n"}
    m = _first(venue, "/market/ws/btcusdt@miniTicker")
    assert m["e"] == "24hrMiniTicker" and set(m) == {"e", "E", "s", "c", "o", "h", "l", "v", "q"}
    arr = _first(venue, "/market/stream?streams=!ticker@arr")
    assert arr["stream"] == "!ticker@arr" and {x["s"] for x in arr["data"]} >= {"BTCUSDT", "ETHUSDT"}
    arr = _first(venue, "/market/stream?streams=!miniTicker@arr")
    assert all(x["e"] == "24hrMiniTicker" for x in arr["data"])
    # tickers are /market data: an unrouted (legacy) connection gets nothing
    ws = websocket.create_connection(venue.ws_market_url + "/ws/btcusdt@ticker", timeout=1.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    ws.close()


def test_ticker_stream_agrees_with_rest_24hr(venue):
    venue.pause_market()
    try:
        time.sleep(0.3)
        t = _first(venue, "/market/ws/xrpusdt@ticker")
        r = get(venue, "/fapi/v1/ticker/24hr", symbol="XRPUSDT").json()
    finally:
        venue.resume_market()
    assert (t["c"], t["o"], t["h"], t["l"], t["v"], t["n"]) == (r["lastPrice"], r["openPrice"], r["highPrice"],
                                                              r["lowPrice"], r["volume"], r["count"])


def test_kline_and_continuous_kline_streams(venue):
    k = _first(venue, "/market/ws/btcusdt@kline_1m")
    assert k["e"] == "kline" and k["k"]["i"] == "1m" and k["k"]["s"] == "BTCUSDT"
    c = _first(venue, "/market/ws/btcusdt_perpetual@continuousKline_5m")
    assert c["e"] == "continuous_kline" and c["ps"] == "BTCUSDT" and c["ct"] == "PERPETUAL"
    assert c["k"]["i"] == "5m" and "s" not in c["k"] and c["k"]["T"] == c["k"]["t"] + 299_999
    q = _first(venue, "/market/stream?streams=btcusdt_current_quarter@continuousKline_1m", timeout=5)
    assert q["data"]["ct"] == "CURRENT_QUARTER"
