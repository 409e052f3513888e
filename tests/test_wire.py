"""The sender's fast path (aegis.binance.wire): the bytes it prepares are exactly what the generic path would send."""
from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegis.binance import wire
from aegis.trade.journal import _line, read_records
from aegis.binance.keys import Secret
from aegis.core.records import (ACTION_NEW, ORDER_LIMIT, ORDER_MARKET, ORDER_REQUEST_DTYPE, SIDE_BUY, SIDE_SELL, TIF_FOK,
                           TIF_GTC, TIF_GTX, TIF_IOC)
from aegis.trade.risk import SymbolRules
from aegis.binance.signing import signed_query, units_to_str, ws_signed_params
from aegis.trade.sender import order_params

KEY, SECRET = "wire-test-api-key-0123", "wire-test-secret-4567"
RULES = [SymbolRules("BTCUSDT", tick_size="0.10", step_size="0.001", market_step_size="0.001"),
         SymbolRules("ETHUSDT", tick_size="0.01", step_size="0.001", market_step_size="0.01"),
         SymbolRules("币安人生USDT", tick_size="0.00001", step_size="1", market_step_size="1"),
         SymbolRules("1000PEPEUSDT", tick_size="0.0000001", step_size="1", market_step_size="10")]
PREFIX = "ae1234abcd-"
RW = 5000


def _enc(transport="rest", resp="ACK", url="http://127.0.0.1:8123"):
    return wire.build_encoder(transport, RULES, PREFIX, KEY, SECRET, RW, resp, url)


def _req(sym=0, side=SIDE_BUY, otype=ORDER_LIMIT, tif=TIF_GTC, qty_steps=5, price_ticks=634054, ro=0, cid=17):
    r = np.zeros(1, ORDER_REQUEST_DTYPE)
    r[0]["symbol"], r[0]["side"], r[0]["order_type"], r[0]["tif"] = sym, side, otype, tif
    r[0]["qty_steps"], r[0]["price_ticks"], r[0]["reduce_only"] = qty_steps, price_ticks, ro
    r[0]["client_id"], r[0]["action"], r[0]["exch_ts"] = cid, ACTION_NEW, 1_732_000_000_123_000_000
    return r


def _rest_bytes(enc, req, ts):
    out = np.zeros(wire.MAX_REQUEST, np.uint8)
    n = wire.encode_rest_order(enc, req[0], ts, out, 0)
    return bytes(out[:n])


def _ws_frame(enc, req, ts):
    out = np.zeros(wire.MAX_REQUEST, np.uint8)
    tmp = np.zeros(wire.MAX_REQUEST * 2, np.uint8)
    pool, state = wire.new_mask_pool(), wire.new_state()
    n = wire.encode_ws_order(enc, req[0], ts, pool, state, out, 0, tmp)
    return bytes(out[:n])


def _unmask(frame: bytes) -> tuple[int, bytes]:
    assert frame[1] & 0x80, "client frames are masked (RFC 6455 5.3)"
    ln, h = frame[1] & 0x7F, 2
    if ln == 126:
        ln, h = int.from_bytes(frame[2:4], "big"), 4
    key = frame[h:h + 4]
    body = frame[h + 4:]
    assert len(body) == ln
    return frame[0], bytes(b ^ key[i & 3] for i, b in enumerate(body))


def _coid(req):
    return f"{PREFIX}{int(req[0]['client_id'])}"


VARIANTS = [dict(), dict(side=SIDE_SELL), dict(otype=ORDER_MARKET, tif=0), dict(ro=1), dict(tif=TIF_IOC),
            dict(tif=TIF_FOK), dict(tif=TIF_GTX), dict(sym=1, price_ticks=305025), dict(sym=2, qty_steps=3, price_ticks=12),
            dict(sym=3, otype=ORDER_MARKET, tif=0, qty_steps=7, ro=1)]


@pytest.mark.parametrize("kw", VARIANTS)
def test_rest_query_is_exactly_the_generic_signed_query(kw):
    req = _req(**kw)
    ts = 1_732_000_000_123
    raw = _rest_bytes(_enc(), req, ts)
    qs = raw.split(b" ", 2)[1].split(b"?", 1)[1].decode()
    want = signed_query(Secret(SECRET), order_params(req[0], RULES, _coid(req)), ts, RW)
    assert qs == want


def test_rest_request_is_a_post_with_host_and_api_key_headers_and_no_body():
    raw = _rest_bytes(_enc(url="https://fapi.binance.com"), _req(), 1)
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"POST /fapi/v1/order?symbol=BTCUSDT&") and lines[0].endswith(b" HTTP/1.1")
    assert b"Host: fapi.binance.com" in lines and f"X-MBX-APIKEY: {KEY}".encode() in lines
    assert b"Content-Length: 0" in lines and sep and body == b""


def test_rest_host_header_keeps_a_non_default_port():
    raw = _rest_bytes(_enc(url="http://127.0.0.1:8123"), _req(), 1)
    assert b"\r\nHost: 127.0.0.1:8123\r\n" in raw


def test_non_ascii_symbol_is_percent_encoded_in_the_rest_query():
    raw = _rest_bytes(_enc(), _req(sym=2, qty_steps=3, price_ticks=12), 1)
    qs = raw.split(b" ", 2)[1].split(b"?", 1)[1].decode("ascii")
    assert unquote(qs.split("&")[0]) == "symbol=币安人生USDT"


@pytest.mark.parametrize("kw", VARIANTS)
def test_ws_frame_carries_order_place_with_the_generic_signed_params(kw):
    req = _req(**kw)
    ts = 1_732_000_000_456
    op, payload = _unmask(_ws_frame(_enc("ws"), req, ts))
    assert op == 0x81
    msg = orjson.loads(payload)
    assert msg["id"] == _coid(req) and msg["method"] == "order.place"
    want = ws_signed_params(Secret(KEY), Secret(SECRET), order_params(req[0], RULES, _coid(req)), ts, RW)
    assert msg["params"] == want


def test_ws_frames_use_a_fresh_mask_key_each_time():
    enc, req = _enc("ws"), _req()
    out = np.zeros(wire.MAX_REQUEST * 2, np.uint8)
    tmp = np.zeros(wire.MAX_REQUEST * 2, np.uint8)
    pool, state = wire.new_mask_pool(), wire.new_state()
    n1 = wire.encode_ws_order(enc, req[0], 1, pool, state, out, 0, tmp)
    n2 = wire.encode_ws_order(enc, req[0], 1, pool, state, out, n1, tmp)
    h = 4 if out[1] & 0x7F == 126 else 2
    assert bytes(out[h:h + 4]) != bytes(out[n1 + h:n1 + h + 4])
    assert _unmask(bytes(out[:n1]))[1] == _unmask(bytes(out[n1:n2]))[1]


@pytest.mark.parametrize("transport", ["rest", "ws"])
@pytest.mark.parametrize("kw", VARIANTS)
def test_journal_line_is_the_record_the_generic_path_journals(kw, transport, tmp_path):
    req = _req(**kw)
    out = np.zeros(wire.MAX_JOURNAL_LINE, np.uint8)
    n = wire.encode_journal_req(_enc(transport), req[0], 1_732_000_000_789, out, 0)
    line = bytes(out[:n])
    p = order_params(req[0], RULES, _coid(req))
    want = {"k": "req", "t": 1_732_000_000_789, "id": int(req[0]["client_id"]), "coid": _coid(req),
            "sym": RULES[int(req[0]["symbol"])].symbol, "side": p["side"], "type": p["type"],
            "tif": p.get("timeInForce", ""), "qty": p["quantity"], "px": p.get("price", "0"),
            "ro": bool(int(req[0]["reduce_only"])), "act": "new", "x": int(req[0]["exch_ts"])}
    f = tmp_path / "j.jsonl"
    f.write_bytes(line)
    recs, good = read_records(str(f))       # the CRC and framing the journal reader checks
    assert recs == [want] and good == len(line)
    assert line == _line(want)


@settings(max_examples=300, deadline=None)
@given(units=st.integers(-10**12, 10**12), unit=st.sampled_from(["0.10", "0.001", "1", "10", "0.0000001", "0.5",
                                                                   "100", "0.00001"]))
def test_decimal_text_equals_units_to_str(units, unit):
    from aegis.core.codecs import put_decimal
    from aegis.binance.signing import unit_parts
    m, d = unit_parts(unit)
    out = np.zeros(64, np.uint8)
    n = put_decimal(out, 0, units * m, d)
    assert bytes(out[:n]).decode() == units_to_str(units, unit)


@settings(max_examples=200, deadline=None)
@given(cid=st.integers(1, 2**62), qty=st.integers(1, 10**9), px=st.integers(1, 10**9), ts=st.integers(0, 2**45),
       side=st.sampled_from([SIDE_BUY, SIDE_SELL]), limit=st.booleans(), ro=st.integers(0, 1),
       sym=st.integers(0, len(RULES) - 1))
def test_any_order_signs_like_the_generic_path(cid, qty, px, ts, side, limit, ro, sym):
    req = _req(sym=sym, side=side, otype=ORDER_LIMIT if limit else ORDER_MARKET, tif=TIF_GTC if limit else 0,
               qty_steps=qty, price_ticks=px, ro=ro, cid=cid)
    qs = _rest_bytes(_enc(), req, ts).split(b" ", 2)[1].split(b"?", 1)[1].decode()
    assert qs == signed_query(Secret(SECRET), order_params(req[0], RULES, _coid(req)), ts, RW)


def test_a_prefix_that_would_need_escaping_is_refused():
    with pytest.raises(ValueError, match="escaping"):
        wire.build_encoder("rest", RULES, "a b&", KEY, SECRET, RW, "ACK", "http://x")


@pytest.mark.parametrize("kw", VARIANTS)
def test_the_rest_query_starts_with_its_templates_constant_params_whose_whole_blocks_are_hashed_once(kw):
    req = _req(**kw)
    enc = _enc()
    qs = _rest_bytes(enc, req, 1_732_000_000_123).split(b" ", 2)[1].split(b"?", 1)[1]
    r, side = RULES[kw.get("sym", 0)], "BUY" if kw.get("side", SIDE_BUY) == SIDE_BUY else "SELL"
    limit = kw.get("otype", ORDER_LIMIT) != ORDER_MARKET
    tif = {TIF_GTC: "GTC", TIF_IOC: "IOC", TIF_FOK: "FOK", TIF_GTX: "GTX"}.get(kw.get("tif", TIF_GTC), "")
    start = wire._rest_constant_start(r.symbol, side, wire._TYPE_TIF.index(("LIMIT", tif) if limit else
                                                                           ("MARKET", "")), kw.get("ro", 0), PREFIX,
                                      "ACK")
    assert qs.startswith(start) and qs[len(start):].startswith(b"%d&quantity=" % int(req[0]["client_id"]))
    t = wire._template(req[0])
    assert enc.mid_skip[t] == len(start) // 64 * 64 >= 64     # at least one block of every order is hashed once


def test_the_ws_payloads_constant_start_is_hashed_once_when_it_spans_a_block():
    enc = wire.build_encoder("ws", RULES, PREFIX, "k" * 64, SECRET, RW, "ACK", "http://x")   # Binance keys: 64
    assert enc.mid_skip[-1] == 64


@settings(max_examples=200, deadline=None)
@given(cid=st.integers(1, 2**62), qty=st.integers(1, 10**9), px=st.integers(1, 10**9), wall=st.integers(0, 2**45),
       side=st.sampled_from([SIDE_BUY, SIDE_SELL]), limit=st.booleans(), ro=st.integers(0, 1),
       sym=st.integers(0, len(RULES) - 1), tif=st.sampled_from([TIF_GTC, TIF_IOC, TIF_FOK, TIF_GTX]))
def test_any_orders_journal_line_from_its_template_is_the_line_built_piece_by_piece(cid, qty, px, wall, side, limit,
                                                                                     ro, sym, tif):
    req = _req(sym=sym, side=side, otype=ORDER_LIMIT if limit else ORDER_MARKET, tif=tif if limit else 0,
               qty_steps=qty, price_ticks=px, ro=ro, cid=cid)
    a, b = np.zeros(wire.MAX_JOURNAL_LINE, np.uint8), np.zeros(wire.MAX_JOURNAL_LINE, np.uint8)
    na = wire.encode_journal_req(_ENC_REST, req[0], wall, a, 0)
    nb = wire.encode_journal_req(_ENC_WS, req[0], wall, b, 0)
    assert bytes(a[:na]) == bytes(b[:nb])


_ENC_REST, _ENC_WS = _enc("rest"), _enc("ws")
