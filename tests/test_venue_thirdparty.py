"""Proof that the venue speaks real Binance: the official (PyPI) binance-futures-connector, unchanged, trades on it.

The connector builds, encodes and signs every request itself; nothing of ours is on its side of the wire.
"""
from __future__ import annotations

from decimal import Decimal

import pytest

um_futures = pytest.importorskip("binance.um_futures", reason="needs binance-futures-connector (test extra)")
from binance.error import ClientError  # noqa: E402

from aegis.venue import VenueConfig, start_venue  # noqa: E402

KEY, SECRET = "aegis-test-key", "aegis-test-secret"


@pytest.fixture
def venue():
    with start_venue(VenueConfig(rate=20.0, seed=11)) as v:
        yield v


@pytest.fixture
def client(venue):
    return um_futures.UMFutures(key=KEY, secret=SECRET, base_url=venue.rest_url, timeout=5)


def test_connector_reads_time_and_exchange_info(client):
    assert client.ping() == {}
    assert client.time()["serverTime"] > 1_700_000_000_000
    syms = {s["symbol"]: s for s in client.exchange_info()["symbols"]}
    assert syms["BTCUSDT"]["filters"][0]["filterType"] == "PRICE_FILTER"


def test_connector_places_queries_and_cancels_a_limit_order(venue, client):
    bid = Decimal(client.book_ticker(symbol="BTCUSDT")["bidPrice"])
    price = bid - Decimal("500.0")            # well below the book: it rests
    o = client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=0.002,
                         price=str(price), newClientOrderId="tp-limit-1")
    assert o["status"] == "NEW" and Decimal(o["price"]) == price and o["clientOrderId"] == "tp-limit-1"
    q = client.query_order(symbol="BTCUSDT", orderId=o["orderId"])
    assert q["status"] == "NEW"
    assert [x["orderId"] for x in client.get_orders(symbol="BTCUSDT")] == [o["orderId"]]
    assert client.get_open_orders(symbol="BTCUSDT", orderId=o["orderId"])["status"] == "NEW"
    c = client.cancel_order(symbol="BTCUSDT", origClientOrderId="tp-limit-1")
    assert c["status"] == "CANCELED" and c["orderId"] == o["orderId"]
    with pytest.raises(ClientError) as e:
        client.cancel_order(symbol="BTCUSDT", orderId=o["orderId"])
    assert e.value.status_code == 400 and e.value.error_code == -2011


def test_connector_opens_a_position_and_reads_it_back(venue, client):
    o = client.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.003, newOrderRespType="RESULT")
    assert o["status"] == "FILLED" and o["executedQty"] == "0.003"
    (pos,) = client.get_position_risk(symbol="BTCUSDT")
    assert pos["positionAmt"] == "0.003" and Decimal(pos["entryPrice"]) == Decimal(o["avgPrice"])
    acct = client.account()
    assert [p["symbol"] for p in acct["positions"]] == ["BTCUSDT"]
    fee = Decimal(o["cumQuote"]) * Decimal("0.0005")     # fees are rounded per fill: allow a few 1e-8
    assert abs(Decimal(acct["totalWalletBalance"]) - (Decimal(10000) - fee)) < Decimal("0.0000001")


def test_connector_signature_errors_surface_as_binance_client_errors(venue):
    bad = um_futures.UMFutures(key=KEY, secret="not-the-secret", base_url=venue.rest_url, timeout=5)
    with pytest.raises(ClientError) as e:
        bad.account()
    assert e.value.error_code == -1022
    with pytest.raises(ClientError) as e:
        um_futures.UMFutures(key="stranger", secret=SECRET, base_url=venue.rest_url, timeout=5).account()
    assert e.value.status_code == 401 and e.value.error_code == -2015


def test_connector_manages_a_listen_key(client):
    lk = client.new_listen_key()["listenKey"]
    assert client.renew_listen_key(lk) == {"listenKey": lk}
    assert client.close_listen_key(lk) == {}


def test_connector_batch_order_is_understood(client):
    bid = Decimal(client.book_ticker(symbol="BTCUSDT")["bidPrice"])
    orders = [{"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002",
               "price": str(bid - Decimal(i * 100 + 500))} for i in range(2)]
    out = client.new_batch_order(orders)
    assert [o["status"] for o in out] == ["NEW", "NEW"]
    assert client.cancel_open_orders(symbol="BTCUSDT")["code"] == 200
    assert client.get_orders(symbol="BTCUSDT") == []
