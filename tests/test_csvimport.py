"""Binance public-data CSV import: layouts, headers, zip, bad rows, ordering, exact decimals, streaming."""
from __future__ import annotations

import gzip
import random
import zipfile

import pytest

from aegis.replay.csvimport import (AGG_TRADES_COLUMNS, BOOK_TICKER_COLUMNS, CsvSource, InputError, concat, read_file,
                             symbol_and_format_from_name)
from aegis.core.records import KIND_QUOTE, KIND_TRADE, SIDE_BUY, SIDE_SELL

BT_HEADER = ",".join(BOOK_TICKER_COLUMNS)
AGG_HEADER = ",".join(AGG_TRADES_COLUMNS)
BT_ROWS = [
    "8000001,42000.10,1.234,42000.20,0.500,1704067200001,1704067200003",
    "8000002,42000.00,2.000,42000.30,0.100,1704067200010,1704067200012",
    "8000005,41999.90,0.001,42000.00,3.000,1704067200020,1704067200025",
]
AGG_ROWS = [
    "500,42000.10,0.010,900,902,1704067200004,true",
    "501,42000.20,1.500,903,903,1704067200009,false",
    "502,42000.30,0.002,904,910,1704067200009,True",
]


def write(path, lines, newline="\n"):
    path.write_text(newline.join(lines) + (newline if lines else ""), encoding="ascii")
    return str(path)


def test_book_ticker_rows_become_quotes_with_event_time_in_ns(tmp_path):
    recs, stats = read_file(write(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", [BT_HEADER] + BT_ROWS),
                            symbol_id=7)
    assert stats.rows == 3 and stats.bad_rows == 0
    r = recs[0]
    assert r["kind"] == KIND_QUOTE and r["symbol"] == 7
    assert r["bid_px"] == 42000.10 and r["bid_qty"] == 1.234 and r["ask_px"] == 42000.20 and r["ask_qty"] == 0.5
    assert r["exch_ts"] == 1704067200003 * 1_000_000 and r["recv_ts"] == r["exch_ts"]
    assert r["last_id"] == 8000001
    assert recs["last_id"].tolist() == [8000001, 8000002, 8000005]


def test_agg_trades_rows_become_trades_with_aggressor_side(tmp_path):
    recs, stats = read_file(write(tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv", [AGG_HEADER] + AGG_ROWS))
    assert stats.rows == 3
    assert (recs["kind"] == KIND_TRADE).all()
    # is_buyer_maker true: the seller hit the bid -> aggressor SELL
    assert recs["side"].tolist() == [SIDE_SELL, SIDE_BUY, SIDE_SELL]
    assert recs["px"].tolist() == [42000.10, 42000.20, 42000.30]
    assert recs["qty"].tolist() == [0.010, 1.5, 0.002]
    assert recs["last_id"].tolist() == [500, 501, 502]
    assert recs["first_id"].tolist() == [900, 903, 904]
    assert recs["exch_ts"][0] == 1704067200004 * 1_000_000


def test_file_without_header_reads_like_the_same_file_with_header(tmp_path):
    a, _ = read_file(write(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", [BT_HEADER] + BT_ROWS))
    b, _ = read_file(write(tmp_path / "BTCUSDT-bookTicker-2024-01-02.csv", BT_ROWS))
    c, _ = read_file(write(tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv", AGG_ROWS))
    d, _ = read_file(write(tmp_path / "ETHUSDT-aggTrades-2024-01-02.csv", [AGG_HEADER] + AGG_ROWS))
    assert len(a) == len(b) == 3 and len(c) == len(d) == 3
    for f in ("exch_ts", "recv_ts", "bid_px", "bid_qty", "ask_px", "ask_qty", "last_id", "kind"):
        assert a[f].tolist() == b[f].tolist()
    for f in ("exch_ts", "px", "qty", "side", "first_id", "last_id", "kind"):
        assert c[f].tolist() == d[f].tolist()


def test_headerless_file_with_a_neutral_name_is_recognised_from_its_last_column(tmp_path):
    recs, _ = read_file(write(tmp_path / "trades.csv", AGG_ROWS), symbol="ETHUSDT")
    assert (recs["kind"] == KIND_TRADE).all()
    recs, _ = read_file(write(tmp_path / "quotes.csv", BT_ROWS), symbol="ETHUSDT")
    assert (recs["kind"] == KIND_QUOTE).all()


def test_header_columns_are_mapped_by_name_not_position(tmp_path):
    cols = list(BOOK_TICKER_COLUMNS)
    order = [6, 0, 3, 4, 1, 2, 5]
    rows = [",".join(r.split(",")[k] for k in order) for r in BT_ROWS]
    recs, _ = read_file(write(tmp_path / "BTCUSDT-bookTicker-x.csv", [",".join(cols[k] for k in order)] + rows))
    ref, _ = read_file(write(tmp_path / "BTCUSDT-bookTicker-y.csv", BT_ROWS))
    for f in ("exch_ts", "bid_px", "bid_qty", "ask_px", "ask_qty", "last_id"):
        assert recs[f].tolist() == ref[f].tolist()


def test_empty_file_and_header_only_file_give_no_records_and_no_errors(tmp_path):
    for name, lines in (("BTCUSDT-bookTicker-a.csv", []), ("BTCUSDT-bookTicker-b.csv", [BT_HEADER]),
                        ("BTCUSDT-aggTrades-c.csv", ["", ""])):
        recs, stats = read_file(write(tmp_path / name, lines))
        assert len(recs) == 0 and stats.bad_rows == 0 and stats.messages == []


def test_bad_rows_are_reported_with_file_and_line_skipped_and_counted(tmp_path):
    lines = [BT_HEADER, BT_ROWS[0],
             "8000002,42000.00,2.000,42000.30",                                     # line 3: 4 columns
             "8000003,42x00.00,2.000,42000.30,0.1,1704067200010,1704067200012",    # line 4: bad number
             "8000004,0,2.000,42000.30,0.1,1704067200010,1704067200012",           # line 5: price 0
             "abc,42000.00,2.000,42000.30,0.1,1704067200010,1704067200012",        # line 6: bad integer
             BT_ROWS[1]]
    seen = []
    path = write(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", lines)
    recs, stats = read_file(path, warn=seen.append)
    assert len(recs) == 2 and stats.rows == 2 and stats.bad_rows == 4
    assert [m.split(": ", 1)[0] for m in seen] == [f"{path}:{n}" for n in (3, 4, 5, 6)]
    assert "expected 7 columns, got 4" in seen[0]
    assert "best_bid_price" in seen[1] and "not a number" in seen[1]
    assert "price must be > 0" in seen[2]
    assert "update_id" in seen[3] and "not an integer" in seen[3]


def test_bad_boolean_in_agg_trades_is_a_bad_row(tmp_path):
    seen = []
    path = write(tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv", [AGG_ROWS[0], "501,1.0,1.0,1,1,1704067200009,maybe"])
    recs, stats = read_file(path, warn=seen.append)
    assert len(recs) == 1 and stats.bad_rows == 1
    assert seen == [f"{path}:2: column 7 (is_buyer_maker): not true/false"]


def test_rows_going_back_in_time_are_reported_kept_and_clamped_in_replay_time(tmp_path):
    rows = [BT_ROWS[0], BT_ROWS[2], BT_ROWS[1]]  # 3 ms, 25 ms, then 12 ms
    seen = []
    path = write(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", rows)
    recs, stats = read_file(path, warn=seen.append)
    assert stats.rows == 3 and stats.backwards == 1 and stats.bad_rows == 0
    assert seen == [f"{path}:3: time goes back 13000000 ns (row kept, replayed at the latest earlier time)"]
    assert recs["exch_ts"].tolist() == [1704067200003000000, 1704067200025000000, 1704067200012000000]
    assert recs["recv_ts"].tolist() == [1704067200003000000, 1704067200025000000, 1704067200025000000]


def test_zip_as_published_reads_like_the_plain_csv(tmp_path):
    plain = write(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", [BT_HEADER] + BT_ROWS)
    z = tmp_path / "BTCUSDT-bookTicker-2024-01-01.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(plain, "BTCUSDT-bookTicker-2024-01-01.csv")
    gz = tmp_path / "BTCUSDT-bookTicker-2024-01-03.csv.gz"
    gz.write_bytes(gzip.compress(open(plain, "rb").read()))
    a, _ = read_file(plain)
    b, _ = read_file(str(z))
    c, _ = read_file(str(gz))
    assert a.tobytes() == b.tobytes() == c.tobytes()


def test_crlf_line_endings_and_bom_are_accepted(tmp_path):
    a, _ = read_file(write(tmp_path / "BTCUSDT-bookTicker-a.csv", [BT_HEADER] + BT_ROWS))
    p = tmp_path / "BTCUSDT-bookTicker-b.csv"
    p.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join([BT_HEADER] + BT_ROWS) + "\r\n").encode())
    b, stats = read_file(str(p))
    assert stats.bad_rows == 0 and a.tobytes() == b.tobytes()


def test_streaming_in_tiny_blocks_gives_the_same_records_and_line_numbers(tmp_path):
    rows = [f"{i},{100 + i / 100:.2f},1,{100.5 + i / 100:.2f},2,{1704067200000 + i},{1704067200000 + i}"
            for i in range(1, 400)]
    rows[150] = "bad"
    path = write(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", [BT_HEADER] + rows)
    big, s1 = read_file(path)
    seen = []
    src = CsvSource(path, block_bytes=64, warn=seen.append)
    chunks = list(src.chunks())
    assert len(chunks) > 20   # really streamed
    small = concat(chunks)
    assert big.tobytes() == small.tobytes() and len(big) == 398
    assert seen == [f"{path}:152: expected 7 columns, got 1"]


def test_microsecond_timestamps_are_recognised(tmp_path):
    recs, _ = read_file(write(tmp_path / "BTCUSDT-aggTrades-x.csv", ["1,1.5,2,1,1,1704067200000123,false"]))
    assert recs["exch_ts"][0] == 1704067200000123000


def test_decimals_parse_to_exactly_the_double_python_gives(tmp_path):
    rnd = random.Random(5)
    texts = []
    for _ in range(2000):
        ip = rnd.choice(["0", "1", "42", "63405", "99999999", "123456789012"])
        fp = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 12)))
        t = ip + ("." + fp if fp else "")
        if float(t) > 0:
            texts.append(t)
    texts += ["1e-3", "2.5E2", "0.12345678901234567890", "12345678901234567.5"]  # Python's float() path
    rows = [f"{i},{t},1,{t},1,1,1704067200000" for i, t in enumerate(texts, 1)]
    recs, stats = read_file(write(tmp_path / "XUSDT-bookTicker-x.csv", rows))
    assert stats.bad_rows == 0
    assert recs["bid_px"].tolist() == [float(t) for t in texts]


def test_symbol_and_format_come_from_the_published_file_name():
    assert symbol_and_format_from_name("/d/BTCUSDT-bookTicker-2024-01-01.zip") == ("BTCUSDT", 1)
    assert symbol_and_format_from_name("1000PEPEUSDT-aggTrades-2024-01-01.csv") == ("1000PEPEUSDT", 2)
    assert symbol_and_format_from_name("quotes.csv") == (None, None)


def test_missing_symbol_or_file_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot tell the symbol"):
        CsvSource(write(tmp_path / "quotes.csv", BT_ROWS))
    with pytest.raises(InputError, match="no such file"):
        CsvSource(str(tmp_path / "BTCUSDT-bookTicker-nope.csv"))
    with pytest.raises(InputError, match="matches neither"):
        read_file(write(tmp_path / "x.csv", ["a,b,c", "1,2,3"]), symbol="X")
