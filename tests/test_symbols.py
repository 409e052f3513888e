"""Symbol discovery and the shared SymbolTable (aegis.binance.symbols)."""
from __future__ import annotations

import logging
import pickle
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import orjson
import pytest
import requests

from aegis.binance.symbols import (BUILTIN_SYMBOLS, SymbolTable, discover, lookup_span, parse_symbols_option, rank)
from aegis.venue import VenueConfig, start_venue


@pytest.fixture(scope="module")
def venue():
    with start_venue(VenueConfig(rate=50)) as v:
        yield v


@pytest.fixture(scope="module")
def big_venue():
    with start_venue(VenueConfig(rate=50, symbols=320)) as v:
        yield v


def test_discovery_picks_trading_usdt_perpetuals_by_quote_volume(venue):
    venue.pause_market()      # volumes grow with trading: freeze them so the ranking can be checked
    try:
        t = discover(venue.rest_url, top_n=5)
        info = requests.get(venue.rest_url + "/fapi/v1/exchangeInfo", timeout=5).json()
        vols = {r["symbol"]: float(r["quoteVolume"])
                for r in requests.get(venue.rest_url + "/fapi/v1/ticker/24hr", timeout=5).json()}
    finally:
        venue.resume_market()
    assert t.source == "discovered" and len(t) == 5
    eligible = {r["symbol"] for r in info["symbols"] if r["status"] == "TRADING"
                and r["contractType"] == "PERPETUAL" and r["quoteAsset"] == "USDT"}
    expected = sorted(eligible, key=lambda s: (-vols.get(s, 0.0), s))[:5]
    assert sorted(t.names) == sorted(expected)
    assert not {"FTTUSDT", "NEWCOINUSDT", "BTCUSDC", "BTCUSDT_261225", "XAUUSDT"} & set(t.names)


def test_ids_are_the_sorted_positions_of_the_names_whatever_the_listing_order():
    a = SymbolTable.build([("ETHUSDT", "0.01", "0.001"), ("BTCUSDT", "0.10", "0.001")])
    b = SymbolTable.build([("BTCUSDT", "0.10", "0.001"), ("ETHUSDT", "0.01", "0.001")])
    assert a == b and a.id_of("BTCUSDT") == 0 and a.id_of("ethusdt") == 1 and a.name_of(1) == "ETHUSDT"
    assert a.find("XRPUSDT") == -1


def test_non_ascii_symbol_has_an_id_a_lowercase_stream_name_and_a_byte_lookup(venue):
    t = discover(venue.rest_url, top_n=100)
    assert "币安人生USDT" in t.names
    info = t.info(t.id_of("币安人生USDT"))
    assert info.stream == "币安人生usdt" and info.tick_size == "0.00001"
    raw = "币安人生USDT".encode()
    assert lookup_span(np.frombuffer(raw, np.uint8), 0, len(raw), t.names_utf8, t.name_off, t.hash_table) == info.id


def test_three_hundred_symbols_are_discovered_with_distinct_ids(big_venue):
    t = discover(big_venue.rest_url, top_n=300)
    assert len(t) == 300 and sorted(t.names) == list(t.names)
    assert [t.id_of(n) for n in t.names] == list(range(300))


def test_explicit_list_is_validated_against_exchange_info(venue, caplog):
    with caplog.at_level(logging.WARNING):
        t = discover(venue.rest_url, symbols=["ethusdt", "BTCUSDT", "NOPEUSDT"])
    assert t.names == ("BTCUSDT", "ETHUSDT") and t.source == "explicit"
    assert "NOPEUSDT" in caplog.text
    assert t.info(t.id_of("BTCUSDT")).tick_size == "0.10"


def test_closed_port_falls_back_to_the_builtin_list_and_logs_the_reason_once(caplog):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with caplog.at_level(logging.WARNING, logger="aegis.binance.symbols"):
        t = discover(f"http://127.0.0.1:{port}", top_n=20, timeout=1.0)
    assert t.source == "builtin" and set(t.names) == {n for n, _, _ in BUILTIN_SYMBOLS}
    assert len([r for r in caplog.records if "discovery failed" in r.message]) == 1


class _Canned(BaseHTTPRequestHandler):
    status = 200
    body = b"{}"

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


def _serve(status, body):
    handler = type("H", (_Canned,), {"status": status, "body": body})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize("status, body, reason", [
    (451, b'{"code":0,"msg":"Service unavailable from a restricted location"}', "HTTP 451"),
    (403, b"forbidden", "HTTP 403"),
    (200, b"<html>not json</html>", "not JSON"),
    (200, b'{"symbols": "nope"}', "no 'symbols' list"),
    (200, b'{"symbols": []}', "no TRADING USDT perpetual"),
])
def test_venue_errors_fall_back_to_the_builtin_list(status, body, reason, caplog):
    srv = _serve(status, body)
    try:
        with caplog.at_level(logging.WARNING, logger="aegis.binance.symbols"):
            t = discover(f"http://127.0.0.1:{srv.server_address[1]}", top_n=5, timeout=2.0)
    finally:
        srv.shutdown()
    assert t.source == "builtin" and len(t) == 5 and reason in caplog.text


def test_slow_venue_times_out_into_the_fallback():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)   # accepts the TCP connection, never answers
    try:
        t = discover(f"http://127.0.0.1:{srv.getsockname()[1]}", top_n=3, timeout=0.5)
    finally:
        srv.close()
    assert t.source == "builtin" and len(t) == 3


def test_ranking_breaks_ties_by_name():
    elig = {"B": ("1", "1"), "A": ("1", "1"), "C": ("1", "1")}
    assert rank(elig, {"C": 5.0}, 3) == ["C", "A", "B"]


def test_symbol_table_survives_pickling_with_its_lookup_arrays():
    t = SymbolTable.build([("BTCUSDT", "0.10", "0.001"), ("币安人生USDT", "0.00001", "1")], "discovered")
    u = pickle.loads(pickle.dumps(t))
    assert u == t and u.id_of("币安人生USDT") == t.id_of("币安人生USDT") and u.source == "discovered"
    assert orjson.loads(orjson.dumps(u.to_dict()))["symbols"][0]["name"] == "BTCUSDT"


@pytest.mark.parametrize("value, expected", [("50", (50, None)), ("btcusdt, ETHUSDT", (None, ("BTCUSDT", "ETHUSDT")))])
def test_symbols_option_is_a_count_or_a_list(value, expected):
    assert parse_symbols_option(value) == expected


@pytest.mark.parametrize("value", ["", "0", " , "])
def test_bad_symbols_option_is_a_one_line_error(value):
    with pytest.raises(ValueError):
        parse_symbols_option(value)
