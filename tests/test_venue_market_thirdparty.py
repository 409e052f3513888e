"""The official binance-futures-connector's websocket client, pointed at the venue's market routes, subscribes and
receives real payloads: the market streams speak Binance, not our own dialect."""
from __future__ import annotations

import json
import threading
import time

import pytest

from aegis.venue import VenueConfig, start_venue

um_ws = pytest.importorskip("binance.websocket.um_futures.websocket_client")


def _collect_with_connector(url: str, subscribe, want: set, timeout: float = 6.0, **kw) -> dict:
    got: dict = {}
    done = threading.Event()

    def on_message(_client, message):
        d = json.loads(message)
        key = d.get("stream") or (d.get("e") if isinstance(d, dict) else None)
        if "result" in d and "id" in d:
            key = "ack"
        got.setdefault(key, d)
        if want <= set(got):
            done.set()

    client = um_ws.UMFuturesWebsocketClient(stream_url=url, on_message=on_message, **kw)
    try:
        subscribe(client)
        done.wait(timeout)
    finally:
        client.stop()
    return got


def test_official_connector_raw_public_streams():
    with start_venue(VenueConfig(rate=3000)) as v:
        got = _collect_with_connector(v.ws_market_url + "/public", lambda c: (
            c.book_ticker(symbol="BTCUSDT", id=1), c.diff_book_depth(symbol="btcusdt", speed=100, id=2)),
            {"ack", "bookTicker", "depthUpdate"})
    assert got["ack"]["result"] is None
    assert got["bookTicker"]["s"] == "BTCUSDT" and isinstance(got["bookTicker"]["b"], str)
    assert got["depthUpdate"]["pu"] < got["depthUpdate"]["U"] <= got["depthUpdate"]["u"]


def test_official_connector_combined_market_streams():
    with start_venue(VenueConfig(rate=3000)) as v:
        got = _collect_with_connector(v.ws_market_url + "/market", lambda c: (
            c.agg_trade(symbol="btcusdt", id=1), c.mark_price(symbol="btcusdt", speed=1, id=2)),
            {"ack", "btcusdt@aggTrade", "btcusdt@markPrice@1s"}, is_combined=True)
    assert got["btcusdt@aggTrade"]["data"]["e"] == "aggTrade"
    assert got["btcusdt@markPrice@1s"]["data"]["e"] == "markPriceUpdate"
