"""Market generator of the embedded venue: payload shapes, depth snapshot + diff consistency, REST market data,
replay, firehose. Clients are websocket-client / requests / raw sockets on 127.0.0.1."""
from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import time
from decimal import Decimal

import pytest
import requests
import websocket

from aegis.venue import VenueConfig, start_venue
from aegis.venue.catalog import default_catalog
from aegis.venue.market import Market, MarketConfig
from tests.windows import fresh_window

SPECS = {s.symbol: s for s in default_catalog()}


@pytest.fixture(scope="module")
def venue():
    v = start_venue(VenueConfig(rate=3000, seed=5))
    yield v
    v.stop()
    assert v.market.errors == 0, "the generator thread raised (traceback on stderr)"



def _connect(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=5)


def _collect(ws, n: int, timeout: float = 5.0, stream: str | None = None) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        d = json.loads(ws.recv())
        if "id" in d and ("result" in d or "error" in d):
            continue
        if stream is None or d.get("stream") == stream:
            out.append(d)
    assert len(out) == n, f"only {len(out)} of {n} messages in {timeout}s"
    return out


def _on_grid(value: str, step: str) -> bool:
    return Decimal(value) % Decimal(step) == 0


def _is_price(spec, s) -> bool:
    return isinstance(s, str) and _on_grid(s, spec.tick_size) and len(s.split(".")[-1]) >= spec.price_precision


def _is_qty(spec, s) -> bool:
    return isinstance(s, str) and _on_grid(s, spec.step_size)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---- payload shapes -----------------------------------------------------------------------------------------
def test_book_ticker_payload_has_real_shape(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@bookTicker")
    for d in _collect(ws, 5):
        assert list(d) == ["e", "u", "s", "b", "B", "a", "A", "T", "E"]
        spec = SPECS["BTCUSDT"]
        assert d["e"] == "bookTicker" and d["s"] == "BTCUSDT"
        assert _int(d["u"]) and _int(d["T"]) and _int(d["E"]) and d["E"] >= d["T"]
        assert _is_price(spec, d["b"]) and _is_price(spec, d["a"]) and Decimal(d["b"]) < Decimal(d["a"])
        assert _is_qty(spec, d["B"]) and _is_qty(spec, d["A"]) and Decimal(d["B"]) > 0
    ws.close()


def test_agg_trade_payload_has_real_shape(venue):
    ws = _connect(venue.ws_market_url + "/market/ws/btcusdt@aggTrade")
    spec = SPECS["BTCUSDT"]
    for d in _collect(ws, 3):
        assert list(d) == ["e", "E", "s", "a", "p", "q", "nq", "f", "l", "T", "m"]
        assert d["e"] == "aggTrade" and _int(d["a"]) and _int(d["f"]) and _int(d["l"]) and d["l"] >= d["f"]
        assert _is_price(spec, d["p"]) and _is_qty(spec, d["q"]) and d["nq"] == d["q"]
        assert isinstance(d["m"], bool)
    ws.close()


def test_trade_payload_has_real_shape(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@trade")
    d = _collect(ws, 1)[0]
    assert list(d) == ["e", "E", "T", "s", "t", "p", "q", "X", "m"] and d["X"] == "MARKET" and _int(d["t"])
    ws.close()


@pytest.mark.parametrize("stream", ["btcusdt@depth@0ms", "btcusdt@depth@100ms", "btcusdt@depth",
                                    "btcusdt@depth@500ms"])
def test_diff_depth_payload_has_real_shape(venue, stream):
    ws = _connect(venue.ws_market_url + "/public/ws/" + stream)
    spec = SPECS["BTCUSDT"]
    msgs = _collect(ws, 2)
    for d in msgs:
        assert list(d) == ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]
        assert d["e"] == "depthUpdate" and all(_int(d[k]) for k in ("E", "T", "U", "u", "pu"))
        assert d["U"] <= d["u"] and d["pu"] < d["U"]
        for px, q in d["b"] + d["a"]:
            assert _is_price(spec, px) and _is_qty(spec, q)
    assert msgs[1]["pu"] == msgs[0]["u"]
    ws.close()


def test_zero_quantity_is_written_with_step_decimals(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@depth@0ms")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        d = json.loads(ws.recv())
        zeros = [q for _, q in d["b"] + d["a"] if Decimal(q) == 0]
        if zeros:
            assert zeros[0] == "0.000"  # as live Binance writes it for BTCUSDT
            break
    else:
        pytest.fail("no level removal seen")
    ws.close()


@pytest.mark.parametrize("levels", [5, 10, 20])
def test_partial_depth_is_a_top_n_picture_with_update_ids(venue, levels):
    ws = _connect(venue.ws_market_url + f"/public/ws/ethusdt@depth{levels}@100ms")
    d = _collect(ws, 1)[0]
    assert d["e"] == "depthUpdate" and len(d["b"]) == levels and len(d["a"]) == levels
    assert all(_int(d[k]) for k in ("U", "u", "pu"))
    bids = [Decimal(p) for p, _ in d["b"]]
    asks = [Decimal(p) for p, _ in d["a"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert all(Decimal(q) > 0 for _, q in d["b"] + d["a"])
    ws.close()


def test_mark_price_payload_has_real_shape(venue):
    ws = _connect(venue.ws_market_url + "/market/ws/btcusdt@markPrice@1s")
    d = _collect(ws, 1, timeout=3)[0]
    assert list(d) == ["e", "E", "s", "p", "ap", "P", "i", "r", "T"]
    assert d["e"] == "markPriceUpdate" and all(isinstance(d[k], str) for k in ("p", "ap", "P", "i", "r"))
    assert _int(d["T"]) and d["T"] % 28_800_000 == 0 and d["T"] > d["E"]
    ws.close()


def test_all_mark_price_stream_is_an_array(venue):
    ws = _connect(venue.ws_market_url + "/market/stream?streams=!markPrice@arr@1s")
    d = _collect(ws, 1, timeout=3)[0]
    assert d["stream"] == "!markPrice@arr@1s" and isinstance(d["data"], list)
    assert {x["s"] for x in d["data"]} >= {"BTCUSDT", "ETHUSDT"}
    ws.close()


def test_update_ids_stay_around_1e13(venue):
    """Binance's depth/bookTicker ids are ~1e13: exact even for clients that read JSON numbers as doubles."""
    for sym in ("xrpusdt", "atomusdt", "btcusdt"):
        ws = _connect(venue.ws_market_url + f"/public/ws/{sym}@bookTicker")
        d = _collect(ws, 1)[0]
        assert 10**12 < d["u"] < 2**53
        ws.close()


@pytest.mark.parametrize("stream", ["dotusdt@depth@0ms", "dotusdt@depth@100ms", "dotusdt@depth", "dotusdt@depth5",
                                    "dotusdt@depth10@100ms"])
def test_first_depth_message_carries_the_previous_update_id(venue, stream):
    """Binance's first message on a depth stream has the real previous id in pu, never 0."""
    before = venue.market.last_update_id("DOTUSDT")
    ws = _connect(venue.ws_market_url + "/public/ws/" + stream)
    first, second = _collect(ws, 2, timeout=8)
    ws.close()
    assert before <= first["pu"] < first["u"] and first["pu"] >= 10**12
    assert second["pu"] == first["u"]


# ---- depth snapshot + diffs (docs/binance-notes.md, Local order book)
# ------------------------------------------------------
def _apply(book: dict, levels) -> None:
    for px, q in levels:
        if Decimal(q) == 0:
            book.pop(px, None)
        else:
            book[px] = q


def _sync_and_compare(v, stream: str, symbol: str = "BTCUSDT"):
    ws = _connect(v.ws_market_url + "/public/stream?streams=" + stream + f"/{symbol.lower()}@bookTicker")
    buf, tickers = [], []

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            d = json.loads(ws.recv())
            (tickers if d["stream"].endswith("bookTicker") else buf).append(d["data"])

    pump(0.3)
    snap = requests.get(v.rest_url + f"/fapi/v1/depth?symbol={symbol}&limit=1000").json()
    pump(0.6)
    v.pause_market()
    ws.settimeout(0.7)
    try:
        while True:
            d = json.loads(ws.recv())
            (tickers if d["stream"].endswith("bookTicker") else buf).append(d["data"])
    except websocket.WebSocketTimeoutException:
        pass
    L = snap["lastUpdateId"]
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    state, last_u, applied, gaps_gt1 = "SYNCING", None, 0, 0
    best_at_u = {}
    for ev in buf:
        if state == "SYNCING":
            if ev["u"] < L:
                continue
            assert ev["U"] <= L <= ev["u"], "first event after the snapshot must straddle lastUpdateId"
            state = "LIVE"
        else:
            assert ev["pu"] == last_u, "futures continuity: pu == previous u"
            gaps_gt1 += ev["U"] - ev["pu"] > 1
        _apply(bids, ev["b"])
        _apply(asks, ev["a"])
        last_u = ev["u"]
        applied += 1
        bb = max(bids, key=Decimal)
        ba = min(asks, key=Decimal)
        best_at_u[ev["u"]] = (bb, bids[bb], ba, asks[ba])
    u, vb, va = v.market.book_dict(symbol)
    v.resume_market()
    ws.close()
    assert applied >= 3
    assert last_u == u
    assert bids == vb and asks == va
    return applied, gaps_gt1, tickers, best_at_u


def test_depth_0ms_snapshot_plus_diffs_rebuild_the_venue_book(own_venue):
    v = own_venue(rate=2000, seed=11)
    applied, gaps, tickers, best_at_u = _sync_and_compare(v, "btcusdt@depth@0ms")
    assert gaps > applied // 2, "U - pu > 1 most of the time (docs/binance-notes.md, Local order book)"


def test_depth_100ms_snapshot_plus_diffs_rebuild_the_venue_book(own_venue):
    v = own_venue(rate=2000, seed=12)
    _sync_and_compare(v, "btcusdt@depth@100ms")


def test_book_ticker_u_is_in_the_depth_update_id_space(own_venue):
    v = own_venue(rate=2000, seed=13)
    _, _, tickers, best_at_u = _sync_and_compare(v, "btcusdt@depth@0ms")
    checked = 0
    for t in tickers:
        if t["u"] in best_at_u:
            assert best_at_u[t["u"]] == (t["b"], t["B"], t["a"], t["A"])
            checked += 1
    assert checked >= 3


def test_step_produces_monotone_update_ids_per_symbol():
    m = Market(default_catalog(), MarketConfig(seed=3))
    import numpy as np
    want = np.zeros_like(m.want)
    from aegis.venue import _mdkernels as K
    want[m.index["ETHUSDT"] * K.N_KINDS + K.K_DEPTH0] = True
    m.set_wants(want)
    c = m.step(3000)
    evs = [json.loads(bytes(c.buf[c.off[i]:c.off[i] + c.ln[i]])) for i in range(c.n)]
    assert len(evs) > 10 and all(e["s"] == "ETHUSDT" for e in evs)
    for a, b in zip(evs, evs[1:]):
        assert b["pu"] == a["u"] and b["U"] > a["u"]


# ---- REST market data -------------------------------------------------------------------------------------
def test_rest_depth_snapshot_shape_and_limit(venue):
    d = requests.get(venue.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=5").json()
    assert list(d) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert len(d["bids"]) == 5 and len(d["asks"]) == 5 and _int(d["lastUpdateId"])
    assert Decimal(d["bids"][0][0]) < Decimal(d["asks"][0][0])


@pytest.mark.parametrize("query,code,status", [("symbol=BTCUSDT&limit=3", -4021, 400),
                                               ("symbol=BTCUSDT&limit=1500", -1130, 400),
                                               ("symbol=NOPE", -1121, 400), ("", -1102, 400)])
def test_rest_depth_errors_match_binance(venue, query, code, status):
    r = requests.get(venue.rest_url + "/fapi/v1/depth?" + query)
    assert r.status_code == status and r.json()["code"] == code
    if code == -4021:
        assert r.json()["msg"] == "3 is not valid depth limit"


def test_rest_book_ticker_one_and_all(venue):
    one = requests.get(venue.rest_url + "/fapi/v1/ticker/bookTicker?symbol=ETHUSDT").json()
    assert list(one) == ["symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time", "lastUpdateId"]
    allt = requests.get(venue.rest_url + "/fapi/v1/ticker/bookTicker").json()
    assert isinstance(allt, list) and "BTCUSDT" in {t["symbol"] for t in allt}


def test_rest_24hr_ticker_keys_are_sorted_like_live(venue):
    d = requests.get(venue.rest_url + "/fapi/v1/ticker/24hr?symbol=BTCUSDT").json()
    assert list(d) == sorted(d) and d["symbol"] == "BTCUSDT" and _int(d["count"]) and isinstance(d["lastPrice"], str)
    assert requests.get(venue.rest_url + "/fapi/v1/ticker/24hr?symbol=NOPE").json()["code"] == -1121


def test_exchange_api_best_levels_and_mark(venue):
    m = venue.market
    bid, bq, ask, aq = m.best("BTCUSDT")
    asks = m.book_levels("BTCUSDT", "BUY", 5)
    bids = m.book_levels("BTCUSDT", "SELL", 5)
    assert len(asks) == 5 and len(bids) == 5
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert bid < ask and abs(m.mark_price("BTCUSDT") - (bid + ask) / 2) < 100


def test_tick_listener_receives_best_prices(venue):
    seen = []
    venue.market.add_tick_listener(lambda s, b, a, ts: seen.append((s, b, a, ts)))
    deadline = time.monotonic() + 3
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    s, b, a, ts = seen[0]
    assert s in SPECS and b < a and abs(ts - time.time() * 1000) < 5000


# ---- replay, firehose -------------------------------------------------------------------------------------
def test_replay_serves_recorded_gzip_json_lines(tmp_path, own_venue):
    rec = tmp_path / "rec.jsonl.gz"
    payloads = [{"e": "bookTicker", "u": 10708444522016 + i, "s": "BTCUSDT", "b": "63405.40", "B": "4.629",
                 "a": "63405.50", "A": "2.357", "T": 1780563843114 + i, "E": 1780563843114 + i} for i in range(5)]
    with gzip.open(rec, "wb") as f:
        for i, p in enumerate(payloads):
            f.write(json.dumps({"t": 1_000_000_000 + i * 1_000_000, "stream": "btcusdt@bookTicker",
                                "data": p}).encode() + b"\n")
    v = own_venue(replay_path=str(rec), replay_speed=0.0, replay_loop=True)
    ws = _connect(v.ws_market_url + "/public/stream?streams=btcusdt@bookTicker")
    got = _collect(ws, 5)
    assert all(g["stream"] == "btcusdt@bookTicker" for g in got)
    us = [g["data"]["u"] for g in got]
    start = us.index(min(us))
    assert got[start]["data"] in payloads
    ws.close()


def _raw_ws(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return s


def test_firehose_sustains_a_high_message_rate_to_one_client(own_venue):
    v = own_venue(rate=300_000, backpressure=True, bursts=False, max_queue_bytes=8 << 20)
    syms = [s.symbol.lower() for s in default_catalog() if s.status == "TRADING"]
    path = "/public/ws/" + "/".join(f"{s}@bookTicker/{s}@depth@0ms" for s in syms)
    s = _raw_ws(v.port, path)
    buf = bytearray(4 << 20)
    mv = memoryview(buf)
    got = 0
    while got < 4 or (buf[1] == 126 and got < 4 + (buf[2] << 8 | buf[3])):
        got += s.recv_into(mv[got:])
    assert buf[0] == 0x81  # FIN + text, unmasked
    ln, hl = (buf[1], 2) if buf[1] < 126 else (buf[2] << 8 | buf[3], 4)
    assert json.loads(bytes(buf[hl:hl + ln]))["e"] in ("bookTicker", "depthUpdate")
    count, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 1.0:
        n = s.recv_into(mv)
        count += buf.count(b'{"e":"', 0, n)
    rate = count / (time.monotonic() - t0)
    s.close()
    assert rate > 20_000, f"firehose delivered only {rate:.0f} msgs/s"


def test_diffs_stay_consistent_across_ladder_recentering(monkeypatch):
    """A narrow ladder forces many recenterings; depth@0ms and @100ms/@500ms replays must still equal the book."""
    import numpy as np
    from aegis.venue import _mdkernels as K
    from aegis.venue import market as market_mod
    monkeypatch.setattr(market_mod, "LADDER_WIDTH", 256)
    m = Market((SPECS["BTCUSDT"],), MarketConfig(seed=21, depth=32))
    kinds = (K.K_DEPTH0, K.K_DEPTH100, K.K_DEPTH500)
    want = np.zeros_like(m.want)
    want[list(kinds)] = True
    m.set_wants(want)
    u0, b0, a0 = m.book_dict("BTCUSDT")
    books = {k: [u0, dict(b0), dict(a0)] for k in kinds}
    base0, recentered = int(m.base[0]), 0

    def apply_chunk(c):
        for i in range(c.n):
            ev = json.loads(bytes(c.buf[c.off[i]:c.off[i] + c.ln[i]]))
            book = books[int(c.sid[i]) % K.N_KINDS]
            assert ev["U"] <= ev["u"]
            _apply(book[1], ev["b"])
            _apply(book[2], ev["a"])
            book[0] = ev["u"]

    for it in range(30):
        apply_chunk(m.step(3000))
        apply_chunk(m.flush(0))
        if it % 5 == 4:
            apply_chunk(m.flush(2))
        recentered += int(m.base[0]) != base0
        base0 = int(m.base[0])
    apply_chunk(m.flush(2))
    assert recentered >= 2
    u, b, a = m.book_dict("BTCUSDT")
    for k in kinds:
        assert books[k] == [u, b, a], f"stream kind {k} diverged from the book"


def test_kline_payload_has_real_shape(venue):
    ws = _connect(venue.ws_market_url + "/market/stream?streams=btcusdt@kline_1m")
    # a push at a minute boundary carries the closing candle (x true, sent after its T) before the new open one,
    # so the first two messages hold at least one open candle
    msgs = _collect(ws, 2, timeout=3)
    for d in msgs:
        assert d["stream"] == "btcusdt@kline_1m"
        assert list(d["data"]) == ["e", "E", "s", "k"] and d["data"]["e"] == "kline"
        k = d["data"]["k"]
        assert k["x"] is (d["data"]["E"] > k["T"])
    k = next(d["data"]["k"] for d in msgs if not d["data"]["k"]["x"])
    assert list(k) == ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
    assert k["i"] == "1m" and k["t"] % 60_000 == 0 and k["T"] == k["t"] + 59_999
    spec = SPECS["BTCUSDT"]
    assert all(_is_price(spec, k[f]) for f in "ochl") and Decimal(k["l"]) <= Decimal(k["o"]) <= Decimal(k["h"])
    assert _is_qty(spec, k["v"]) and Decimal(k["V"]) <= Decimal(k["v"]) and _int(k["n"])
    ws.close()


def test_kline_closes_with_x_true_and_next_candle_opens_at_previous_close():
    import numpy as np
    from aegis.venue import _mdkernels as K
    m = Market((SPECS["ETHUSDT"],), MarketConfig(seed=4))
    want = np.zeros_like(m.want)
    want[K.K_KLINE] = True  # ethusdt@kline_1m
    m.set_wants(want)
    m.step(2000)
    # inside the minute the market opened in: a clock read here could already be in the next one
    now = int(m.kl[K.KL_OPEN_T, 0, 0]) + 30_000
    live = json.loads(m.kline_messages(now)[0][1])["k"]
    assert live["x"] is False and live["n"] > 0 and Decimal(live["v"]) > 0
    later = m.kline_messages(now + 60_000)
    closed, fresh = (json.loads(p)["k"] for _, p in later)
    assert closed["x"] is True and closed["t"] == live["t"] and closed["c"] == live["c"]
    assert fresh["x"] is False and fresh["t"] == live["t"] + 60_000 and fresh["n"] == 0
    assert fresh["o"] == fresh["h"] == fresh["l"] == fresh["c"] == live["c"]


@pytest.mark.parametrize("interval,t_ms,open_ms", [("1w", 1780563843114, 1780272000000),
                                                   ("1M", 1780563843114, 1780272000000),
                                                   ("4h", 1780563843114, 1780560000000)])
def test_kline_calendar_boundaries(interval, t_ms, open_ms):
    from aegis.venue.market import kline_open_time
    assert kline_open_time(interval, t_ms) == open_ms


def test_fields_2026_variant_adds_st_and_ps(own_venue):
    v = own_venue(rate=3000, fields_2026=True)
    ws = _connect(v.ws_market_url + "/public/stream?streams=btcusdt@bookTicker/btcusdt@depth@0ms/btcusdt@depth5")
    seen = {}
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        d = json.loads(ws.recv())
        seen[d["stream"]] = d["data"]
    assert len(seen) == 3
    for data in seen.values():
        assert data["st"] == 1 and data["ps"] == "BTCUSDT" and list(data)[-2:] == ["st", "ps"]
    ws.close()
    ws = _connect(v.ws_market_url + "/market/ws/btcusdt@aggTrade")
    assert _collect(ws, 1)[0]["st"] == 1
    ws.close()


def test_event_time_is_the_send_time(venue):
    ws = _connect(venue.ws_market_url + "/public/ws/btcusdt@bookTicker")
    _collect(ws, 5)  # skip what was queued before the measurement
    lags = []
    # the smallest lag: a stalled reader delays receipt, never the venue's stamp; after a stall it catches up
    deadline = time.monotonic() + 3.0
    while len(lags) < 20 or (min(lags) >= 50 and time.monotonic() < deadline):
        d = json.loads(ws.recv())
        lags.append(time.time() * 1000 - d["E"])
    ws.close()
    assert -5 < min(lags) < 50


def test_rest_market_data_is_charged_to_the_ip_weight(venue):
    fresh_window()
    r1 = requests.get(venue.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    r2 = requests.get(venue.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    w1, w2 = int(r1.headers["X-MBX-USED-WEIGHT-1M"]), int(r2.headers["X-MBX-USED-WEIGHT-1M"])
    assert w2 - w1 == 20  # limit 1000 weighs 20 (Binance docs: "Order Book")


def test_rest_market_data_over_weight_limit_is_429(own_venue):
    from aegis.venue.ratelimit import RateLimitConfig
    v = own_venue(rate=50, rate_limits=RateLimitConfig(weight_per_minute=30, weight_window_s=30.0))
    fresh_window(30.0)
    codes = [requests.get(v.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000").status_code for _ in range(2)]
    assert codes == [200, 429]
    r = requests.get(v.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=5")
    assert r.json()["code"] == -1003 and "X-MBX-USED-WEIGHT-1M" in r.headers


def test_replayed_depth_diffs_sync_with_the_replay_rest_snapshot(tmp_path, own_venue):
    import numpy as np
    from aegis.venue import _mdkernels as K
    m = Market((SPECS["BTCUSDT"],), MarketConfig(seed=8))
    want = np.zeros_like(m.want)
    want[K.K_DEPTH0] = True
    m.set_wants(want)
    c = m.step(2500)
    rec = tmp_path / "depth.jsonl.gz"
    with gzip.open(rec, "wb") as f:
        for i in range(c.n):
            data = json.loads(bytes(c.buf[c.off[i]:c.off[i] + c.ln[i]]))
            f.write(json.dumps({"t": i * 1_000_000, "stream": "btcusdt@depth@0ms", "data": data}).encode() + b"\n")
    v = own_venue(replay_path=str(rec), replay_speed=1.0)
    ws = _connect(v.ws_market_url + "/public/ws/btcusdt@depth@0ms")
    buf = [json.loads(ws.recv()) for _ in range(50)]
    snap = requests.get(v.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000").json()
    ws.settimeout(1.0)
    try:
        while True:
            buf.append(json.loads(ws.recv()))
    except websocket.WebSocketTimeoutException:
        pass
    ws.close()
    L = snap["lastUpdateId"]
    bids, asks = dict(map(tuple, snap["bids"])), dict(map(tuple, snap["asks"]))
    live, last_u = False, None
    for ev in buf:
        if not live:
            if ev["u"] < L:
                continue
            assert ev["U"] <= L <= ev["u"]
            live = True
        else:
            assert ev["pu"] == last_u
        _apply(bids, ev["b"])
        _apply(asks, ev["a"])
        last_u = ev["u"]
    final = requests.get(v.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000").json()
    assert live and final["lastUpdateId"] == last_u == buf[-1]["u"]
    assert bids == dict(map(tuple, final["bids"])) and asks == dict(map(tuple, final["asks"]))
