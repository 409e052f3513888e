"""Jitted field extraction of aegis.feed.parse against payloads shaped as Binance sends them and broken variants of
them."""
from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from aegis.feed import parse as P
from aegis.feed.book import BookState
from aegis.core.records import KIND_MARK, KIND_QUOTE, KIND_TRADE, SIDE_BUY, SIDE_SELL
from aegis.binance.symbols import SymbolTable

# shaped as Binance's stream payloads (docs/binance-notes.md, Stream payloads)
DOC_BOOK_TICKER = (b'{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT",'
                   b'"b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}')
LIVE_BOOK_TICKER = (b'{"e":"bookTicker","u":10708444522016,"s":"BTCUSDT","b":"63405.40","B":"4.629","a":"63405.50",'
                    b'"A":"2.357","T":1780563843114,"E":1780563843114}')
AGG_TRADE = (b'{"e":"aggTrade","E":123456789,"s":"BTCUSDT","a":5933014,"p":"0.001","q":"100","nq":"100","f":100,'
             b'"l":105,"T":123456785,"m":true}')
MARK = (b'{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","ap":"11794.15000000",'
        b'"i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}')
MARK_ARR = (b'{"stream":"!markPrice@arr@1s","data":[{"e":"markPriceUpdate","E":1788936948001,"s":"BTCUSDT",'
            b'"p":"79107.36658171","ap":"79107.36658171","P":"79176.63756423","i":"79139.09565217",'
            b'"r":"0.00008359","T":1788940800000,"st":1}]}')
KLINE = (b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1788936947361,"s":"BTCUSDT","k":{"t":1788936900000,'
         b'"T":1788936959999,"s":"BTCUSDT","i":"1m","f":8062213398,"L":8062214482,"o":"79095.40","c":"79104.00",'
         b'"h":"79111.30","l":"79080.60","v":"42.797","n":1079,"x":false,"q":"3384949.92680","V":"14.001",'
         b'"Q":"1107450.49620","B":"0"}}}')


@pytest.fixture(scope="module", autouse=True)
def _compiled(compiled_feed):
    """The Feed's kernels, compiled before any test's clock started (tests/conftest.py)."""


@pytest.fixture()
def parser():
    table = SymbolTable.build([("BTCUSDT", "0.10", "0.001"), ("BNBUSDT", "0.010", "0.01"),
                               ("币安人生USDT", "0.00001", "1")])
    return P.Parser(table, BookState(len(table), 1024))


def _one(parser, msg: bytes):
    j, slow = parser.parse_bytes([msg], 42, allow_slow=True)
    return parser.out[:j].copy(), slow


def test_doc_book_ticker_becomes_a_quote_record(parser):
    recs, _ = _one(parser, DOC_BOOK_TICKER)
    assert len(recs) == 1
    r = recs[0]
    assert r["kind"] == KIND_QUOTE and r["symbol"] == parser.symbols.id_of("BNBUSDT")
    assert (r["bid_px"], r["bid_qty"], r["ask_px"], r["ask_qty"]) == (25.3519, 31.21, 25.3652, 40.66)
    assert r["last_id"] == 400900217 and r["exch_ts"] == 1568014460893 * 1_000_000 and r["recv_ts"] == 42


def test_key_order_does_not_matter(parser):
    recs, _ = _one(parser, LIVE_BOOK_TICKER)
    assert recs[0]["bid_px"] == 63405.40 and recs[0]["last_id"] == 10708444522016


def test_wrapped_combined_stream_payload_is_unwrapped(parser):
    recs, _ = _one(parser, b'{"stream":"btcusdt@bookTicker","data":' + LIVE_BOOK_TICKER + b"}")
    assert len(recs) == 1 and recs[0]["ask_px"] == 63405.50


def test_agg_trade_with_buyer_maker_is_a_seller_initiated_trade(parser):
    recs, _ = _one(parser, AGG_TRADE)
    r = recs[0]
    assert r["kind"] == KIND_TRADE and r["side"] == SIDE_SELL and r["px"] == 0.001 and r["qty"] == 100.0
    assert r["last_id"] == 5933014
    recs, _ = _one(parser, AGG_TRADE.replace(b'"a":5933014', b'"a":5933015').replace(b"true", b"false"))
    assert recs[0]["side"] == SIDE_BUY


def test_mark_price_record_carries_mark_funding_and_index(parser):
    recs, _ = _one(parser, MARK)
    r = recs[0]
    assert r["kind"] == KIND_MARK and r["px"] == 11794.15 and r["qty"] == 0.00038167 and r["bid_px"] == 11784.62659091


def test_mark_price_array_goes_to_the_slow_path(parser):
    _, slow = _one(parser, MARK_ARR)
    assert slow == [0] and parser.stats[P.ST_SLOW] == 1


def test_unknown_keys_and_2026_fields_are_ignored(parser):
    msg = LIVE_BOOK_TICKER.replace(b'"e":"bookTicker"', b'"e":"bookTicker","st":1,"ps":"BTCUSDT","zz":{"a":[1,"}"]}')
    recs, _ = _one(parser, msg)
    assert len(recs) == 1 and recs[0]["ask_qty"] == 2.357


def test_missing_optional_fields_are_fine(parser):
    recs, _ = _one(parser, b'{"e":"bookTicker","s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}')
    assert len(recs) == 1 and recs[0]["exch_ts"] == 0 and recs[0]["last_id"] == 0
    recs, _ = _one(parser, b'{"e":"aggTrade","s":"BTCUSDT","p":"10","q":"1"}')
    assert len(recs) == 1 and recs[0]["side"] == 0


def test_non_ascii_symbol_is_found_raw_and_through_the_escaped_slow_path(parser):
    raw = '{"e":"bookTicker","u":5,"s":"币安人生USDT","b":"0.12","B":"4","a":"0.13","A":"2"}'.encode()
    recs, _ = _one(parser, raw)
    assert recs[0]["symbol"] == parser.symbols.id_of("币安人生USDT")
    escaped = json.dumps(json.loads(raw.replace(b'"u":5', b'"u":6')), ensure_ascii=True).encode()
    assert b"\\u" in escaped
    _, slow = _one(parser, escaped)
    assert slow == [0]


@pytest.mark.parametrize("msg, counter", [
    (b'{"e":"bookTicker","s":"BTCUSDT","b":"NaN","B":"1","a":"2","A":"1"}', P.ST_MALFORMED),
    (b'{"e":"bookTicker","s":"BTCUSDT","b":"-1","B":"1","a":"2","A":"1"}', P.ST_BAD_VALUE),
    (b'{"e":"bookTicker","s":"BTCUSDT","b":"1e300","B":"1","a":"2","A":"1"}', P.ST_BAD_VALUE),
    (b'{"e":"bookTicker","s":"BTCUSDT","b":"1","B":"-3","a":"2","A":"1"}', P.ST_BAD_VALUE),
    (b'{"e":"bookTicker","s":"BTCUSDT","b":"1","B":"1","a":"2"}', P.ST_MALFORMED),
    (b'{"e":"bookTicker","s":"DOGEUSDT","b":"1","B":"1","a":"2","A":"1"}', P.ST_UNKNOWN_SYMBOL),
    (b'{"e":"bookTicker","u":,}', P.ST_MALFORMED),
    (b'{"e":"depthUpdate","E":17', P.ST_MALFORMED),
    (b'{"e":"\xff\xfe"}', P.ST_UNKNOWN_EVENT),
    (b"{}", P.ST_MALFORMED),
    (b"", P.ST_MALFORMED),
    (b"[1,2,3]", P.ST_MALFORMED),
    (KLINE, P.ST_UNKNOWN_EVENT),
    (b'{"e":"aggTrade","s":"BTCUSDT","p":"10","q":"1","a":99999999999999999999999}', P.ST_MALFORMED),
    (b'{"e":"depthUpdate","s":"BTCUSDT","U":5,"u":4,"pu":1,"b":[],"a":[]}', P.ST_MALFORMED),
    (b'{"e":"depthUpdate","s":"BTCUSDT","U":5,"u":6,"pu":1,"b":[["1","x"]],"a":[]}', P.ST_MALFORMED),
])
def test_bad_input_is_counted_in_its_category_and_produces_no_record(parser, msg, counter):
    recs, slow = _one(parser, msg)
    assert len(recs) == 0 and slow == []
    assert parser.stats[counter] == 1


def test_control_replies_are_routed_to_the_slow_path(parser):
    _, slow = _one(parser, b'{"result":null,"id":1}')
    assert slow == [0] and parser.stats[P.ST_CONTROL] == 1


def test_duplicate_quote_update_ids_are_dropped_and_counted(parser):
    j, _ = parser.parse_bytes([LIVE_BOOK_TICKER, LIVE_BOOK_TICKER], 1)
    assert j == 1 and parser.stats[P.ST_DUPLICATES] == 1


def _dec(s: str):
    b = np.frombuffer(s.encode(), np.uint8)
    return P.parse_decimal(b, 0, len(b))


@pytest.mark.parametrize("text", ["0", "0.000", "0.00000000", "50746.30", "50746.3", "63405.40", "0.0000001",
                                  "123456789.12345678", "1e-5", "2.5E3", "-0.5", "25.35190000"])
def test_decimal_parse_is_correctly_rounded(text):
    v, ok = _dec(f'"{text}"')
    assert ok and v == float(Decimal(text))


@settings(max_examples=300, deadline=None)
@given(hst.decimals(min_value=Decimal("0"), max_value=Decimal("1e9"), places=8, allow_nan=False,
                    allow_infinity=False))
def test_decimal_parse_matches_python_float_for_exchange_precisions(d):
    text = format(d, "f")
    v, ok = _dec(f'"{text}"')
    assert ok and v == float(text)                        # correctly rounded, however many digits


@settings(max_examples=200, deadline=None)
@given(hst.decimals(min_value=Decimal("0"), max_value=Decimal("1e9"), places=10, allow_nan=False,
                    allow_infinity=False), hst.integers(0, 6))
def test_equal_decimals_give_the_same_double_whatever_their_trailing_zeros(d, zeros):
    text = format(d, "f")
    padded = text + ("" if "." in text else ".") + "0" * zeros
    assert _dec(f'"{text}"') == _dec(f'"{padded}"')


@pytest.mark.parametrize("text", ['"abc"', '""', '"1.2.3"', '"--1"', '"1e"', "nan", '"Infinity"'])
def test_decimal_parse_rejects_junk(text):
    v, ok = _dec(text)
    assert not ok and math.isnan(v)


def _depth_levels(parser, bids: bytes):
    """The bid levels a depthUpdate with these `b` bytes buffers (its book has no snapshot), or the stats counter
    that refused it."""
    msg = b'{"e":"depthUpdate","s":"BTCUSDT","U":5,"u":6,"pu":4,"b":%s,"a":[]}' % bids
    j, slow = parser.parse_bytes([msg], 1)
    assert j == 0 and slow == []
    for counter in (P.ST_MALFORMED, P.ST_BAD_VALUE):
        if parser.stats[counter]:
            return counter
    assert parser.stats[P.ST_BUFFERED] == 1
    n = int(parser.books.pend_ctl[1])
    return [(px, q) for _, px, q in parser.books.pend_lv[:n].tolist()]


@pytest.mark.parametrize("bids, expected", [
    (b'[["1.5","2"],["1.4","3"]]', [(1.5, 2.0), (1.4, 3.0)]),
    (b'[ [ "1.5" , "2" , 7 , {"x":"]"} , [1,[2,"[",{}]] ] ]', [(1.5, 2.0)]),   # extra elements skipped, nested too
    (b'[[1.5,2],["1.4","0"]]', [(1.5, 2.0), (1.4, 0.0)]),
    (b'[["1.5"]]', P.ST_MALFORMED),
    (b'[[]]', P.ST_MALFORMED),
    (b'[["1.5","2",]]', P.ST_MALFORMED),
    (b'[["1.5","2"],]', P.ST_MALFORMED),
    (b'[["1.5","2"] ["1","1"]]', P.ST_MALFORMED),
    (b'[["1.5","2",{"x":[1]]]', P.ST_MALFORMED),           # an extra element that never closes
    (b'[["1.5","2",7}]', P.ST_MALFORMED),
    (b'[["1.5","x",7]]', P.ST_MALFORMED),
    (b'[["x","-1"]]', P.ST_MALFORMED),                      # malformed comes before a bad value
    (b'[["0","2"]]', P.ST_BAD_VALUE),
    (b'[["1.5","-2",{"x":}]]', P.ST_BAD_VALUE),             # a bad value is found before the extras are read
    (b'["1.5","2"]', P.ST_MALFORMED),
    # a quoted decimal is read to its closing quote in one pass; any other string takes the full grammar
    (b'[["1.5e2","2.50"]]', [(150.0, 2.5)]),
    (b'[["1.5" , "2" ]]', [(1.5, 2.0)]),
    (b'[["1.5\\"","2"]]', P.ST_MALFORMED),                # an escaped quote in the price
    (b'[["1.5x","2"]]', P.ST_MALFORMED),
    (b'[["1e","2"]]', P.ST_MALFORMED),
    (b'[["","2"]]', P.ST_MALFORMED),
    (b'[["1.5","2', P.ST_MALFORMED),                        # the quantity's string never closes
    (b'[["-1.5","2"]]', P.ST_BAD_VALUE),
])
def test_depth_levels_are_read_as_price_and_quantity_and_anything_after_them_is_skipped(parser, bids, expected):
    assert _depth_levels(parser, bids) == expected


@settings(max_examples=150, deadline=None)
@given(hst.lists(hst.tuples(hst.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999"), places=2),
                            hst.decimals(min_value=Decimal("0"), max_value=Decimal("9999"), places=3),
                            hst.lists(hst.recursive(hst.integers(0, 9) | hst.text("[]{}\",:ab", max_size=4),
                                                    lambda c: hst.lists(c, max_size=2), max_leaves=4),
                                      max_size=2),
                            hst.booleans()),
                 min_size=1, max_size=6),
       hst.sampled_from(["", " ", "\n  "]))
def test_depth_levels_match_a_json_reader(levels, ws):
    table = SymbolTable.build([("BTCUSDT", "0.10", "0.001")])
    parser = P.Parser(table, BookState(1, 1024))
    doc = [[str(px) if quoted else float(px), str(q) if quoted else float(q), *extra]
           for px, q, extra, quoted in levels]
    text = json.dumps(doc, separators=(ws + "," + ws, ":"))
    expected = [(float(px), float(q)) for px, q, _, _ in levels]
    assert _depth_levels(parser, text.encode()) == expected
