import numpy as np
import pytest

from aegis.brain import candles
from aegis.core.records import KIND_QUOTE, KIND_TRADE
from tests.test_brain_data import T0, trades

S = 1_000_000_000
M = 60 * S


def reference_bars(recs, iv):
    """{(symbol, open_ts): (o, h, l, c, vol, quote_vol, vwap, count)} from a plain loop over the trades."""
    bars = {}
    for r in recs:
        if r["kind"] != KIND_TRADE:
            continue
        key = (int(r["symbol"]), int(r["exch_ts"]) // iv * iv)
        px, q = float(r["px"]), float(r["qty"])
        if key not in bars:
            bars[key] = [px, px, px, px, 0.0, 0.0, 0]
        b = bars[key]
        b[1], b[2], b[3] = max(b[1], px), min(b[2], px), px
        b[4] += q
        b[5] += px * q
        b[6] += 1
    return {k: (*v[:6], v[5] / v[4], v[6]) for k, v in bars.items()}


def closed_bars(book, sym, k):
    out = {}
    for back in range(book.closed_count(sym, k)):
        b = book.closed(sym, k, back)
        if b is None:
            break
        out[(sym, int(b["open_ts"]))] = (b["open"], b["high"], b["low"], b["close"], b["volume"],
                                         b["quote_volume"], b["vwap"], int(b["trades"]))
    return out


@pytest.mark.parametrize("chunk", [1, 100, 5000])
def test_bars_match_reference_ohlcv_vwap_and_count_for_each_interval(chunk):
    recs = trades(5000, n_symbols=3)
    book = candles.CandleBook(3, [S, M], depth=10_000)
    for i in range(0, len(recs), chunk):
        book.update(recs[i:i + chunk], len(recs[i:i + chunk]))
    book.close_due(int(recs["exch_ts"][-1]) + M)   # close the last open bars too
    for k, iv in enumerate((S, M)):
        ref = reference_bars(recs, iv)
        got = {}
        for s in range(3):
            got.update(closed_bars(book, s, k))
        assert got.keys() == ref.keys()
        for key in ref:
            np.testing.assert_allclose(got[key][:7], ref[key][:7], rtol=1e-12)
            assert got[key][7] == ref[key][7]


def test_a_bar_closes_when_a_trade_arrives_after_its_end_and_not_before():
    recs = trades(3, n_symbols=1)
    recs["symbol"] = 0
    recs["exch_ts"] = [T0 + 100, T0 + S - 1, T0 + S]   # T0 is a whole second
    book = candles.CandleBook(1, [S])
    assert book.update(recs[:2], 2) == 0
    assert book.open_bar(0, 0)["trades"] == 2
    assert book.update(recs[2:], 1) == 1
    bar = book.closed(0, 0)
    assert bar["open_ts"] == T0 and bar["close_ts"] == T0 + S and bar["closed"] == 1 and bar["trades"] == 2
    assert book.open_bar(0, 0)["open_ts"] == T0 + S


def test_close_due_closes_bars_of_quiet_symbols_by_time():
    recs = trades(2, n_symbols=1)
    recs["symbol"] = [0, 1]
    recs["exch_ts"] = [T0 + 5, T0 + 7]
    book = candles.CandleBook(2, [S])
    book.update(recs, 2)
    assert book.close_due(T0 + S - 1) == 0
    assert book.close_due(T0 + S) == 2
    assert book.open_bar(0, 0) is None and book.closed(1, 0)["trades"] == 1


def test_a_late_trade_never_changes_a_closed_bar():
    recs = trades(3, n_symbols=1)
    recs["symbol"] = 0
    recs["exch_ts"] = [T0 + 10, T0 + S + 10, T0 + 20]
    book = candles.CandleBook(1, [S])
    book.update(recs, 3)
    assert book.closed(0, 0)["trades"] == 1
    assert book.open_bar(0, 0)["trades"] == 1 and book.open_bar(0, 0)["low"] == recs["px"][1]
    assert book.stats[candles.C_LATE] == 1


def test_quotes_and_unknown_symbols_do_not_make_bars():
    recs = trades(10, n_symbols=1)
    recs["kind"][:5] = KIND_QUOTE
    recs["symbol"][5:] = 7
    book = candles.CandleBook(2, [S])
    book.update(recs, 10)
    assert book.stats[candles.C_TRADES] == 0 and book.stats[candles.C_BAD_SYMBOL] == 5


def test_history_is_a_bounded_ring_and_the_pool_never_runs_dry():
    recs = trades(20_000, n_symbols=2, step_ns=400_000_000)
    book = candles.CandleBook(2, [S], depth=4)
    book.update(recs, len(recs))
    assert book.closed_count(0, 0) > 100
    assert book.pool.stats()["exhausted"] == 0 and book.pool.in_use <= 2 * 5
    assert book.closed(0, 0, 4) is None
    newer, older = book.closed(0, 0, 0), book.closed(0, 0, 3)
    assert newer["open_ts"] > older["open_ts"]


@pytest.mark.parametrize("text,ns", [("250ms", 250_000_000), ("1s", S), ("1m", M), ("15m", 15 * M),
                                     ("1h", 60 * M), ("1d", 1440 * M)])
def test_interval_names(text, ns):
    assert candles.parse_interval(text) == ns


@pytest.mark.parametrize("text", ["", "0s", "1y", "m", "-1s"])
def test_bad_interval_names_are_refused(text):
    with pytest.raises(ValueError, match="candle interval"):
        candles.parse_interval(text)
