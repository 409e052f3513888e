"""This tree against an older checkout, side by side in one run: the same quotes must give the same orders, at the
same replay speed or better. It is the check for any change to the order loop (aegis.brain.pipeline) or to the
kernels replay and the live Brain share.

    AEGIS_BASELINE=/path/to/old/checkout python -m pytest bench/bench_replay_baseline.py -s \\
        --benchmark-json=bench/results/replay_baseline.json --benchmark-save-data

Orders: both trees run `python -m aegis replay` over bench_replay's quotes (1 M over 10 symbols) written as ten
bookTicker CSV files, once per strategy; orders.csv (on the columns the baseline writes), trades.csv, equity.csv and
summary.json must be byte for byte the same. Speed: `scripts/replay_core_time.py` (best CPU time of the replay
thread over five passes) alternately on each tree, twice each; the ratio is baseline time / this tree's time.
Without AEGIS_BASELINE the tree is compared with itself (smoke mode does, with ema_cross only, so the bench's own
code runs in CI). The pytest-benchmark row times the whole comparison; the figures are in extra_info.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench_replay import make_quotes, write_csv_files
from benchmode import SMOKE, size

HERE = Path(__file__).resolve().parent.parent
BASELINE = Path(os.environ.get("AEGIS_BASELINE") or HERE).resolve()
PAIRS = size(2, 1)
STRATEGIES = {
    "ema_cross": ["--param", "fast=20", "--param", "slow=100", "--param", "unit=0.01"],
    "mean_reversion": [],
    "obi": ["--param", "threshold=0.1", "--param", "exit=0"],
}
if SMOKE:
    STRATEGIES = {"ema_cross": STRATEGIES["ema_cross"]}
TIMEOUT_S = 900
pytestmark = pytest.mark.timeout(size(3 * 4 * TIMEOUT_S, 600))   # a full comparison takes minutes, not 60 s


def _env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree)}


def commit_of(tree: Path) -> str:
    r = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def replay_files(tree: Path, inputs: Path, strategy: str, out: Path) -> Path:
    cmd = [sys.executable, "-m", "aegis", "replay", str(inputs), "--strategy", strategy, *STRATEGIES[strategy],
           "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, f"{tree}: {' '.join(cmd[1:])} exited {r.returncode}: {r.stderr[-2000:]}"
    return out


def orders_on(path: Path, columns: list[str]) -> list[list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [[row[c] for c in columns] for row in rows]


def core_time(tree: Path, strategy: str) -> dict:
    r = subprocess.run([sys.executable, str(HERE / "scripts" / "replay_core_time.py"), str(tree), strategy],
                       cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, f"{tree}: replay_core_time {strategy} exited {r.returncode}: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_replay_same_orders_and_speed_as_the_baseline(benchmark, strategy, tmp_path):
    inputs = tmp_path / "quotes"
    inputs.mkdir()
    write_csv_files(make_quotes(), inputs)

    def compare():
        old = replay_files(BASELINE, inputs, strategy, tmp_path / "old")
        new = replay_files(HERE, inputs, strategy, tmp_path / "new")
        with open(old / "orders.csv", newline="") as f:
            columns = next(csv.reader(f))
        assert orders_on(new / "orders.csv", columns) == orders_on(old / "orders.csv", columns)
        for name in ("trades.csv", "equity.csv", "summary.json"):
            assert (new / name).read_bytes() == (old / name).read_bytes(), f"{name} differs from the baseline's"
        times = {"old": [], "new": []}
        for _ in range(PAIRS):
            for side, tree in (("old", BASELINE), ("new", HERE)):
                times[side].append(core_time(tree, strategy))
        return len(orders_on(new / "orders.csv", columns)), times

    n_orders, times = benchmark.pedantic(compare, rounds=1, iterations=1)
    old_s = min(t["best_s"] for t in times["old"])
    new_s = min(t["best_s"] for t in times["new"])
    assert {t["orders"] for t in times["old"]} == {t["orders"] for t in times["new"]}
    benchmark.extra_info.update({
        "baseline_commit": commit_of(BASELINE), "commit": commit_of(HERE), "orders": n_orders,
        "same_orders_trades_equity_summary": True,
        "baseline_core_s": old_s, "core_s": new_s, "speed_vs_baseline": old_s / new_s, "target_speed": 1.0,
        "core_s_each_run": f"old {[t['best_s'] for t in times['old']]}, new {[t['best_s'] for t in times['new']]}",
    })
    print(f"\n{strategy}: {n_orders} orders, identical; core {old_s:.4f} s (baseline {commit_of(BASELINE)}) -> "
          f"{new_s:.4f} s: x{old_s / new_s:.2f}")
