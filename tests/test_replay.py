"""Replay end to end: hand-computed fills and PnL, latency, recordings, merge order, determinism, CLI errors."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from aegis.core import latency as L
from aegis.core.records import ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, TIF_FOK, TIF_GTC, TIF_GTX, TIF_IOC
from aegis.replay import run as replay
from aegis.app import report
from aegis.replay.csvimport import CsvSource
from aegis.feed.recording import Recorder

T0_MS = 1_704_067_200_000          # 2024-01-01T00:00:00Z
MIDS = [100.0, 100.0, 102.0, 101.0, 99.0, 103.0]
HALF = 0.1                          # half spread
TAKER = 0.0005
HEADER = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"


def quotes_csv(path, mids=MIDS, t0_ms=T0_MS, step_ms=1000, header=True):
    rows = [HEADER] if header else []
    for i, m in enumerate(mids):
        t = t0_ms + i * step_ms
        rows.append(f"{i + 1},{m - HALF:.2f},5,{m + HALF:.2f},5,{t - 1},{t}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def compiled(compiled_replay):
    """The replay core and the Feed's parser, compiled before any test's clock started (tests/conftest.py)."""


def run(tmp_path, files, *extra, out="out"):
    out_dir = tmp_path / out
    progress = [] if "--progress" in extra else ["--no-progress"]
    rc = replay.main([*map(str, files), "--strategy", "ema_cross", "--param", "fast=1", "--param", "slow=2",
                      "--taker-fee", str(TAKER), "--brain", "unit_notional=0", "--out", str(out_dir), *progress,
                      *extra])
    assert rc == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    with open(out_dir / "trades.csv") as f:
        trades = list(csv.DictReader(f))
    return summary, trades, out_dir


def test_ema_cross_on_six_quotes_gives_the_hand_computed_fills_and_pnl(tmp_path):
    # ema_cross fast=1 (EMA = last mid), slow=2 (alpha 2/3), both seeded with the first mid; trades from the 2nd mid:
    #   q2 mid 100: fast 100 = slow 100         -> no side
    #   q3 mid 102: fast 102 > slow 101.333     -> BUY 1 (first entry) at ask 102.1
    #   q4 mid 101: fast 101 < slow 101.111     -> SELL 2 (reversal) at bid 100.9 : realized (100.9-102.1)*1 = -1.2
    #   q5 mid  99: fast  99 < slow  99.704     -> still short, nothing
    #   q6 mid 103: fast 103 > slow 101.901     -> BUY 2 at ask 103.1 : realized (100.9-103.1)*1 = -2.2
    # end: long 1 @ 103.1 marked at mid 103 -> unrealized -0.1
    summary, trades, out = run(tmp_path, [quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")],
                               "--sample", "1s")
    got = [(t["side"], float(t["price"]), float(t["qty"]), float(t["realized_pnl"])) for t in trades]
    expect = [("BUY", 102.1, 1.0, 0.0), ("SELL", 100.9, 2.0, -1.2), ("BUY", 103.1, 2.0, -2.2)]
    assert len(got) == 3
    for g, e in zip(got, expect):
        assert g[:3] == e[:3] and g[3] == pytest.approx(e[3], abs=1e-9)
    assert [int(t["time_ns"]) for t in trades] == [(T0_MS + k * 1000) * 1_000_000 for k in (2, 3, 5)]
    f1, f2, f3 = 102.1 * TAKER, 2 * 100.9 * TAKER, 2 * 103.1 * TAKER
    fees = f1 + f2 + f3
    pnl = summary["pnl"]
    assert pnl["realized"] == pytest.approx(-3.4, abs=1e-9)
    assert pnl["unrealized"] == pytest.approx(-0.1, abs=1e-9)
    assert pnl["fees"] == pytest.approx(fees, abs=1e-12)
    assert pnl["net"] == pytest.approx(-3.5 - fees, abs=1e-9)
    sym = summary["per_symbol"]["BTCUSDT"]
    assert sym["position"] == 1.0 and sym["avg_entry_price"] == pytest.approx(103.1) and sym["fills"] == 3
    assert summary["turnover"] == pytest.approx(102.1 + 201.8 + 206.2)
    c = summary["counts"]
    assert (c["records"], c["signals"], c["orders_accepted"], c["fills"]) == (6, 3, 3, 3)
    # equity just before each quote (grid 1 s) and after the last one
    eq = [float(r["equity"]) for r in csv.DictReader(open(out / "equity.csv"))]
    expect_eq = [0.0, 0.0, 0.0, -0.1 - f1, -1.2 - 0.1 - f1 - f2, -1.2 + 1.9 - f1 - f2, -3.5 - fees]
    assert eq == pytest.approx(expect_eq, abs=1e-9)
    peak = -1.2 + 1.9 - f1 - f2
    assert summary["max_drawdown"] == pytest.approx(peak - (-3.5 - fees), abs=1e-9)
    d = np.diff(expect_eq)
    assert summary["sharpe"] == pytest.approx(d.mean() / d.std(ddof=1) * np.sqrt(365 * 86400), rel=1e-9)
    png = (out / "equity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_order_latency_moves_fills_to_the_book_at_arrival(tmp_path):
    # 1.5 s latency: BUY sent at q3 arrives between q4 and q5 -> ask of q4 (101.1); SELL 2 sent at q4 arrives
    # before q6 -> bid of q5 (98.9); BUY 2 sent at q6 never arrives (end of data) -> canceled.
    summary, trades, out = run(tmp_path, [quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")],
                               "--latency", "1.5s")
    assert [(t["side"], float(t["price"]), float(t["qty"])) for t in trades] == \
        [("BUY", 101.1, 1.0), ("SELL", 98.9, 2.0)]
    assert [int(t["time_ns"]) for t in trades] == [(T0_MS + 3500) * 1_000_000, (T0_MS + 4500) * 1_000_000]
    fees = (101.1 + 197.8) * TAKER
    assert summary["pnl"]["realized"] == pytest.approx(-2.2, abs=1e-9)
    assert summary["pnl"]["unrealized"] == pytest.approx(-(103.0 - 98.9), abs=1e-9)
    assert summary["pnl"]["net"] == pytest.approx(-2.2 - 4.1 - fees, abs=1e-9)
    orders = list(csv.DictReader(open(out / "orders.csv")))
    assert [(o["status"], o["reason"]) for o in orders][-1] == ("CANCELED", "open at end")


def test_slippage_moves_market_fills_against_the_order(tmp_path):
    _, trades, _ = run(tmp_path, [quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")],
                       "--slippage-bps", "10")
    assert float(trades[0]["price"]) == pytest.approx(102.1 * 1.001)
    assert float(trades[1]["price"]) == pytest.approx(100.9 * 0.999)


def test_a_feed_recording_replays_like_the_same_quotes_from_csv(tmp_path):
    rec = Recorder(tmp_path / "rec")
    for i, m in enumerate(MIDS):
        e = T0_MS + i * 1000
        rec.write(5_000_000_000 + i * 1_000_000_000 + 777, "btcusdt@bookTicker",
                  {"e": "bookTicker", "u": 100 + i, "s": "BTCUSDT", "b": f"{m - HALF:.2f}", "B": "5",
                   "a": f"{m + HALF:.2f}", "A": "5", "T": e - 1, "E": e})
        rec.write(5_000_000_000 + i * 1_000_000_000 + 900, "!markPrice@arr",   # the Feed's slow path: an array
                  [{"e": "markPriceUpdate", "E": e, "s": "BTCUSDT", "p": f"{m:.2f}", "i": f"{m:.2f}",
                    "P": f"{m:.2f}", "r": "0.0001", "T": e + 1000}])
    rec.close()
    summary, trades, _ = run(tmp_path, [rec.files[0]])
    assert summary["counts"]["records"] == 12 and summary["inputs"][0]["parse_problems"] == {}
    assert [(t["side"], float(t["price"]), float(t["qty"])) for t in trades] == \
        [("BUY", 102.1, 1.0), ("SELL", 100.9, 2.0), ("BUY", 103.1, 2.0)]
    assert summary["pnl"]["realized"] == pytest.approx(-3.4, abs=1e-9)


def test_merge_orders_records_by_time_across_files_ties_by_file_order(tmp_path):
    a = quotes_csv(tmp_path / "AAAUSDT-bookTicker-x.csv", mids=[10.0] * 50, step_ms=2)
    b = quotes_csv(tmp_path / "BBBUSDT-bookTicker-x.csv", mids=[20.0] * 50, step_ms=3)
    srcs = [CsvSource(a, 0, block_bytes=100), CsvSource(b, 1, block_bytes=100)]
    out = np.concatenate([x[["recv_ts", "symbol", "seq"]] for x in replay.Merger(srcs).batches()])
    assert len(out) == 100
    t = out["recv_ts"]
    assert (np.diff(t) >= 0).all()
    ties = np.flatnonzero(np.diff(t) == 0)
    assert len(ties) > 0 and (out["symbol"][ties] == 0).all() and (out["symbol"][ties + 1] == 1).all()
    assert out["seq"].tolist() == list(range(100))


def test_same_inputs_and_parameters_give_byte_identical_outputs(tmp_path):
    files = [quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv",
                        mids=list(100 + np.sin(np.arange(400) / 7) * 3), step_ms=37),
             quotes_csv(tmp_path / "ETHUSDT-bookTicker-2024-01-01.csv",
                        mids=list(50 + np.cos(np.arange(300) / 5) * 2), step_ms=53)]
    (tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv").write_text(
        "".join(f"{i},{50 + (i % 7) / 10:.2f},0.5,{i},{i},{T0_MS + i * 41},{'true' if i % 3 else 'false'}\n"
                for i in range(1, 300)))
    files.append(str(tmp_path / "ETHUSDT-aggTrades-2024-01-01.csv"))
    hist = L.new_set()
    for v in (200_000, 350_000, 900_000, 4_000_000) * 25:
        L.record_stage(hist, L.STAGE_TICK_TO_TRADE, v)
    report.save_histograms(tmp_path / "lat.npz", hist)
    extra = ["--latency-hist", str(tmp_path / "lat.npz"), "--seed", "9", "--slippage-bps", "1", "--sample", "100ms"]
    s1, _, out1 = run(tmp_path, files, *extra, out="run1")
    # the second run in another process: nothing may depend on process state (hash seeds, caches, clocks)
    import subprocess
    import sys
    out2 = tmp_path / "run2"
    p = subprocess.run([sys.executable, "-m", "aegis", "replay", *files, "--strategy", "ema_cross", "--param", "fast=1",
                        "--param", "slow=2", "--taker-fee", str(TAKER), "--brain", "unit_notional=0", "--out",
                        str(out2), "--no-progress", *extra], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert p.returncode == 0, p.stderr
    assert s1["counts"]["fills"] > 5
    names = sorted(os.listdir(out1))
    assert names == sorted(os.listdir(out2)) == ["equity.csv", "equity.png", "orders.csv", "summary.json",
                                                 "trades.csv"]
    for n in names:
        assert (out1 / n).read_bytes() == (out2 / n).read_bytes(), n
    s3, _, _ = run(tmp_path, files, *extra[:2], "--seed", "10", *extra[4:], out="run3")
    assert s3 != s1   # the seed really drives the latency draws


def test_out_of_order_rows_are_reported_with_their_line(tmp_path, capsys):
    p = tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv"
    quotes_csv(p)
    lines = p.read_text().splitlines()
    lines[3], lines[4] = lines[4], lines[3]
    p.write_text("\n".join(lines) + "\n")
    run(tmp_path, [p])
    err = capsys.readouterr().err
    assert f"{p}:5: time goes back 1000000000 ns" in err


@pytest.mark.parametrize("args, message", [
    (["missing-BTCUSDT-bookTicker.csv"], "no such file"),
    (["{csv}", "--strategy", "nope"], "unknown strategy 'nope'"),
    (["{csv}", "--param", "fast=abc"], "parameter fast must be an integer"),
    (["{csv}", "--param", "fast"], "--param takes KEY=VALUE"),
    (["{csv}", "--latency", "soon"], "bad duration"),
    (["{csv}", "--latency-hist", "nohist.npz"], "no histogram file"),
    (["{csv}", "--risk", "max_open_orders=0"], "max_open_orders"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, args, message):
    csv_path = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")
    argv = [a.replace("{csv}", csv_path) for a in args] + ["--out", str(tmp_path / "o"), "--no-progress"]
    assert replay.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aegis replay: error:") and message in err[0], err


def test_realtime_pacing_takes_the_data_span_in_wall_time_and_gives_the_same_results(tmp_path):
    import time
    f = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", step_ms=120)   # 0.6 s of market
    fast, _, out_fast = run(tmp_path, [f], out="fast")
    t = time.monotonic()
    slow, _, out_slow = run(tmp_path, [f], "--realtime", out="slow")
    assert time.monotonic() - t >= 0.55
    assert (out_fast / "trades.csv").read_bytes() == (out_slow / "trades.csv").read_bytes()
    assert fast["pnl"] == slow["pnl"]


def test_progress_bar_goes_to_stderr_only(tmp_path, capsys):
    f = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")
    run(tmp_path, [f], "--progress", out="p")
    cap = capsys.readouterr()
    assert "replay [" in cap.err and "100.0%" in cap.err
    assert "replay [" not in cap.out and "PnL" in cap.out


def test_orders_risk_refuses_are_logged_with_the_reason_and_never_filled(tmp_path):
    summary, trades, out = run(tmp_path, [quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")],
                               "--risk", "max_order_notional=50")
    assert trades == [] and summary["counts"]["orders_accepted"] == 0
    assert summary["refusals"] == {"ORDER_NOTIONAL_LIMIT": summary["counts"]["orders_refused_by_risk"]}
    orders = list(csv.DictReader(open(out / "orders.csv")))
    assert orders and {(o["status"], o["reason"]) for o in orders} == {("REJECTED", "ORDER_NOTIONAL_LIMIT")}


def test_passive_limit_strategy_gets_maker_fills_through_the_replay(tmp_path):
    mids = list(100 + 2 * np.sin(np.arange(600) / 9.0))
    out_dir = tmp_path / "mr"
    rc = replay.main([quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", mids=mids, step_ms=100),
                      "--strategy", "mean_reversion", "--param", "period=10", "--param", "k=1",
                      "--param", "rsi_period=3", "--param", "sample_ms=100", "--brain", "unit_notional=0",
                      "--risk", "price_band_bps=0", "--out", str(out_dir), "--no-progress"])
    assert rc == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    trades = list(csv.DictReader(open(out_dir / "trades.csv")))
    assert summary["counts"]["maker_fills"] > 0
    maker = [t for t in trades if t["maker"] == "1"]
    assert maker and all(float(t["fee"]) == pytest.approx(float(t["notional"]) * 0.0002) for t in maker)


def test_python_m_aegis_replay_reports_a_missing_file_in_one_line_with_exit_2(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "aegis", "replay", str(tmp_path / "BTCUSDT-bookTicker-x.csv")],
                       capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"aegis replay: error: {tmp_path / 'BTCUSDT-bookTicker-x.csv'}: "
                                             f"no such file"]


def test_exchange_info_filters_reach_risk(tmp_path):
    info = {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "filters": [
        {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "0.10", "maxPrice": "1000000"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
        {"filterType": "MARKET_LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"},
        {"filterType": "MIN_NOTIONAL", "notional": "1000"}]}]}
    (tmp_path / "info.json").write_text(json.dumps(info))
    summary, trades, _ = run(tmp_path, [quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")],
                             "--exchange-info", str(tmp_path / "info.json"))
    assert trades == [] and set(summary["refusals"]) == {"MIN_NOTIONAL"}


def test_config_file_tables_set_strategy_risk_and_replay_options(tmp_path):
    (tmp_path / "c.toml").write_text('[engine]\nstrategy = "ema_cross"\n[strategy]\nfast = 1\nslow = 2\n'
                                     '[brain]\nunit_notional = 0\n[replay]\nlatency = "1.5s"\ntaker_fee = 0.0005\n')
    out = tmp_path / "cfg-out"
    assert replay.main([quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv"), "--config",
                        str(tmp_path / "c.toml"), "--out", str(out), "--no-progress"]) == 0
    trades = list(csv.DictReader(open(out / "trades.csv")))
    # the same fills as test_order_latency_moves_fills_to_the_book_at_arrival, configured from the file
    assert [(t["side"], float(t["price"])) for t in trades] == [("BUY", 101.1), ("SELL", 98.9)]


def test_reading_and_merging_a_file_keeps_memory_bounded_by_the_chunk_size(tmp_path):
    import tracemalloc
    n = 300_000   # ~22 MB of CSV, 38 MB as records if loaded whole
    p = tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv"
    with open(p, "w") as f:
        f.write(HEADER + "\n")
        f.write("".join(f"{i},100.{i % 97:02d},1.5,101.{i % 89:02d},2.5,{T0_MS + i},{T0_MS + i}\n" for i in range(n)))
    src = CsvSource(str(p), 0, block_bytes=256 << 10)
    tracemalloc.start()
    seen = 0
    for batch in replay.Merger([src]).batches():
        seen += len(batch)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == n
    assert peak < 8 << 20, peak


def test_equity_lines_are_each_samples_time_utc_time_and_shortest_float_text():
    """equity.csv's lines, assembled by a jitted kernel, are what utc() and repr() write for each sample; a negative
    zero is written as 0.0 (the same bytes whatever the sign of a zero sum)."""
    from aegis.replay import metrics
    rng = np.random.default_rng(7)
    ts = np.sort(rng.integers(1_500_000_000, 2_000_000_000, 3000)) * 1_000_000_000 + rng.integers(0, 10**9, 3000)
    eq = np.concatenate([rng.normal(0, 1e4, 2990), [0.0, -0.0, 1e16, -1e-7, 123.0, 0.1, -5e-324, 1.7976931348623157e308,
                                                   2.5, -0.0]])
    want = "".join(f"{t},{metrics.utc(t)},{(0.0 if v == 0.0 else v)!r}\n" for t, v in zip(ts.tolist(), eq.tolist()))
    assert metrics.equity_lines(ts, eq).decode("ascii") == want
    assert metrics.equity_lines(ts[:0], eq[:0]) == b""


def _old_style_lines(names, pos, f, li, lf):
    """trades.csv and orders.csv lines written one f-string per row: the format the files have always had, an
    independent statement of it to hold the bulk writers to."""
    from aegis.replay import metrics as M
    from aegis.replay import simexec as X
    r0 = lambda x: 0.0 if x == 0.0 else float(x)   # noqa: E731
    trades = []
    for r in f[f["qty"] > 0.0].tolist():
        (cid, oid, tid, ts, _recv, px, qty, _cum, fee, pnl, _orig, sym, side, _status, maker, _ro) = r
        pos[sym] += qty if side == SIDE_BUY else -qty
        if abs(pos[sym]) <= X.FLAT_EPS * qty:
            pos[sym] = 0.0
        trades.append(f"{ts},{M.utc(ts)},{names[sym]},{cid},{oid},{tid},{'BUY' if side == SIDE_BUY else 'SELL'},"
                      f"{px!r},{qty!r},{r0(px * qty)!r},{r0(fee)!r},{r0(pnl)!r},{int(maker)},{r0(pos[sym])!r}\n")
    orders = []
    for ri, rf in zip(li.tolist(), lf.tolist()):
        action = {0: "NEW", 1: "NEW", 2: "CANCEL", 3: "CANCEL_ALL"}.get(ri[X.I_ACTION], str(ri[X.I_ACTION]))
        status = X.STATUS_NAMES.get(ri[X.I_STATUS], str(ri[X.I_STATUS]))
        if action != "NEW":
            status = "DONE" if ri[X.I_REASON] == 0 else "FAILED"
        filled = rf[X.F_FILLED]
        avg = rf[X.F_NOTIONAL] / filled if filled > 0 else 0.0
        sym = ri[X.I_SYM]
        name = names[sym] if 0 <= sym < len(names) else str(sym)
        side = "BUY" if ri[X.I_SIDE] == SIDE_BUY else ("SELL" if ri[X.I_SIDE] else "")
        typ = {ORDER_MARKET: "MARKET", ORDER_LIMIT: "LIMIT"}.get(ri[X.I_TYPE], "")
        tif = {0: "", TIF_GTC: "GTC", TIF_IOC: "IOC", TIF_FOK: "FOK", TIF_GTX: "GTX"}.get(ri[X.I_TIF], "")
        orders.append(f"{ri[X.I_CID]},{name},{action},{side},{typ},{tif},{ri[X.I_RO]},{r0(rf[X.F_PRICE])!r},"
                      f"{r0(rf[X.F_QTY])!r},{ri[X.I_SEND_TS]},{ri[X.I_ARRIVE_TS]},{ri[X.I_DONE_TS]},{status},"
                      f"{M.reason_text(ri[X.I_REASON])},{r0(filled)!r},{r0(avg)!r},{r0(rf[X.F_FEE])!r},"
                      f"{ri[X.I_EXCH_TS]}\n")
    return "".join(trades), "".join(orders)


def test_trade_and_order_lines_written_in_bulk_are_the_per_row_format(tmp_path):
    """The Collector writes trades.csv and orders.csv column by column (numbers and times jitted, texts joined per
    column); every line is what one f-string per row writes, unknown codes, -0.0 and empty batches included."""
    from aegis.core.records import FILL_DTYPE
    from aegis.replay import metrics as M
    from aegis.replay import simexec as X
    rng = np.random.default_rng(11)
    names = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    col = M.Collector(names, 1_000_000_000, tmp_path)
    want_t, want_o = [], []
    pos = np.zeros(len(names))     # carried from batch to batch, as the Collector's
    for n in (0, 1, 500, 2000):
        f = np.zeros(n, FILL_DTYPE)
        f["client_id"], f["order_id"], f["trade_id"] = rng.integers(1, 1 << 40, (3, n))
        f["ts"] = rng.integers(1_600_000_000, 1_900_000_000, n) * 1_000_000_000 + rng.integers(0, 10**9, n)
        f["price"] = np.round(rng.uniform(0.001, 90_000, n), rng.integers(0, 6))
        f["qty"] = np.where(rng.random(n) < 0.1, 0.0, np.round(rng.uniform(0, 5, n), 3))
        f["fee"] = np.where(rng.random(n) < 0.2, -0.0, rng.normal(0, 1, n))
        f["realized_pnl"] = np.where(rng.random(n) < 0.2, 0.0, rng.normal(0, 100, n))
        f["symbol"] = rng.integers(0, len(names), n)
        f["side"] = rng.choice([SIDE_BUY, 2], n)
        f["maker"] = rng.integers(0, 2, n)
        li = np.zeros((n, X.I_COLS), np.int64)
        for c, (lo, hi) in {X.I_CID: (0, 1 << 40), X.I_SYM: (-1, 5), X.I_SIDE: (0, 3), X.I_TYPE: (0, 4),
                            X.I_TIF: (0, 6), X.I_RO: (0, 2), X.I_ACTION: (0, 6), X.I_SEND_TS: (0, 1 << 62),
                            X.I_ARRIVE_TS: (0, 1 << 62), X.I_DONE_TS: (0, 1 << 62), X.I_STATUS: (0, 9),
                            X.I_REASON: (0, 3), X.I_EXCH_TS: (0, 1 << 62)}.items():
            li[:, c] = rng.integers(lo, hi, n)
        li[: n // 3, X.I_REASON] = rng.choice([0, 1, 2, 5, 28, 100, 103, 104, 999], n // 3)
        lf = np.zeros((n, X.F_COLS))
        lf[:, X.F_PRICE] = np.where(rng.random(n) < 0.1, -0.0, rng.uniform(0, 1e5, n))
        lf[:, X.F_QTY] = rng.uniform(0, 10, n)
        lf[:, X.F_FILLED] = np.where(rng.random(n) < 0.3, 0.0, lf[:, X.F_QTY])
        lf[:, X.F_NOTIONAL] = lf[:, X.F_FILLED] * lf[:, X.F_PRICE]
        lf[:, X.F_FEE] = rng.normal(0, 1, n)
        t, o = _old_style_lines(names, pos, f, li, lf)
        want_t.append(t)
        want_o.append(o)
        col.fills(f)
        col.orders(li, lf)
    # +0.1 +0.2 -0.3 leaves 5.6e-17 in floats: written flat, and the next fill starts from 0
    f = np.zeros(4, FILL_DTYPE)
    f["symbol"], f["qty"], f["price"] = 2, [0.1, 0.2, 0.3, 0.1], 10.0
    f["side"] = [SIDE_BUY, SIDE_BUY, 2, 2]
    pos[2] = 0.0
    col.pos[2] = 0.0
    t, _ = _old_style_lines(names, pos, f, li[:0], lf[:0])
    assert [line.rsplit(",", 1)[1] for line in t.splitlines()] == ["0.1", "0.30000000000000004", "0.0", "-0.1"]
    want_t.append(t)
    col.fills(f)
    col.close()
    assert (tmp_path / "trades.csv").read_text() == M.TRADES_HEADER + "".join(want_t)
    assert (tmp_path / "orders.csv").read_text() == M.ORDERS_HEADER + "".join(want_o)
    assert sum(1 for _ in open(tmp_path / "orders.csv")) == 1 + 2501


@pytest.mark.parametrize("codes", [[3, -1, 3, 7, -1], [5, 10**12, 5, -3, 10**12]])   # counted, and sorted
def test_a_label_is_made_once_per_distinct_code_and_indexed_per_row(codes):
    from aegis.replay import metrics as M
    made = []

    def label(c):
        made.append(c)
        return f"L{c}"
    idx, labels = M._label_table(np.array(codes), label)
    assert [labels[i] for i in idx.tolist()] == [f"L{c}" for c in codes]
    assert sorted(made) == made == sorted(set(codes))
