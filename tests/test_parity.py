"""Live and replay run one order loop: an engine run against the embedded venue, recorded, then replayed with the
same strategy and settings, gives the same orders (symbol, side, quantity, triggering record).

ema_cross decides from market data and from the side it last traded, never from fills, so the live run and the
replay must decide the same at every record. The recording carries the exchange filters (so quantities round the
same) and the depth snapshots (so the book records are the same). What must differ, and is not compared: the
fills themselves (a live fill arrives from the venue, a simulated one from the simulated exchange) and the clock
values (the live Brain stamps CLOCK_MONOTONIC, replay the record's time); the triggering record is compared by
its exchange time, which both read from the same message.
"""
from __future__ import annotations

import csv
import gzip
import re
import subprocess
import sys

import orjson
import pytest

from aegis.trade.journal import read_records

CONFIG = """
[risk]
max_position_notional = 0
max_gross_notional = 0
max_order_notional = 0
daily_loss_limit = 0
price_band_bps = 0
max_md_age_ms = 0
orders_per_second = 4096
binance_orders_10s = 4096
binance_orders_1m = 4096
[venue]
rate = 200
"""
# Order-rate limits are raised: they count orders against the decision clock, which is the wall clock live and the
# record's time in replay, so near a limit the two would refuse different orders (a refusal reverts the signal).
STRATEGY = ["--strategy", "ema_cross", "--param", "fast=10", "--param", "slow=40"]


def live_orders(journal) -> list[tuple]:
    out = []
    records, _ = read_records(str(journal))
    for rec in records:
        if rec.get("k") == "req" and rec.get("act") == "new" and "src" not in rec:
            out.append((rec["sym"], rec["side"], float(rec["qty"]), int(rec["x"])))
    return out


def replay_orders(out_dir) -> list[tuple]:
    with open(out_dir / "orders.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["action"] == "NEW"]
    return [(r["symbol"], r["side"], float(r["qty"]), int(r["trigger_exch_ns"])) for r in rows]


@pytest.mark.time_limit(420)
def test_a_recorded_live_run_replays_to_the_same_orders(tmp_path):
    cfg = tmp_path / "aegis.toml"
    cfg.write_text(CONFIG)
    rec, journal = tmp_path / "rec", tmp_path / "journal.jsonl"
    live = subprocess.run([sys.executable, "-m", "aegis", "--duration", "12", "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT",
                           "--config", str(cfg), "--record", str(rec), "--journal", str(journal),
                           "--out", str(tmp_path / "live"), "--status-interval", "5", *STRATEGY],
                          capture_output=True, text=True, timeout=400)
    assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
    first = next(rec.glob("feed-*.jsonl.gz"))
    head = orjson.loads(gzip.open(first).readline())
    assert head["stream"] == "!exchangeInfo" and {r["symbol"] for r in head["data"]["symbols"]} == \
        {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    out = tmp_path / "replay"
    rep = subprocess.run([sys.executable, "-m", "aegis", "replay", str(rec), "--config", str(cfg), *STRATEGY,
                          "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert "no exchange filters" not in rep.stderr
    # every record the live Brain consumed is made again from the recording (book records need the recorded
    # depth snapshots, quantities the recorded filters)
    live_records = int(re.search(r"aegis: brain: (\d+) records", live.stdout).group(1))
    assert orjson.loads((out / "summary.json").read_bytes())["counts"]["records"] == live_records
    got_live, got_replay = live_orders(journal), replay_orders(out)
    assert len(got_live) >= 5, live.stdout[-2000:]     # the strategy really traded
    assert got_replay == got_live
