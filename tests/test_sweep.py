"""`python -m aegis sweep` on a local Ray runtime (1 CPU): results table, failed trials, plot, walk-forward."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from aegis.replay import store as S

pytest.importorskip("ray")
pytest.importorskip("optuna")
from aegis.research import sweep  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import marketdays  # noqa: E402

DAYS = marketdays.days("2024-05-01", 3)


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory):
    marketdays.warm_replay(tmp_path_factory.mktemp("warm"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweepdata")
    files = [marketdays.write_day(d, "BTCUSDT", day, 2000, seed=i) for i, day in enumerate(DAYS)]
    assert S.main(["import", *map(str, files), "--to", str(d / "store")]) == 0
    return d / "store"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _direct(store: Path, days: list[str], fast, slow) -> dict:
    """The same replay run directly (not through Ray): what a trial's figures must equal."""
    files = [str(p.path) for p in S.Store(store).select(start=days[0], end=days[-1])]
    ctx = {"strategy": "ema_cross", "fixed": {}, "replay_args": []}
    figs, _ = sweep.evaluate(ctx, {"fast": fast, "slow": slow}, files, None)
    return figs


@pytest.mark.time_limit(600)
def test_grid_sweep_on_local_ray_records_every_trial_and_failures(store, tmp_path, capsys):
    out = tmp_path / "sw"
    rc = sweep.main(["--data", str(store), "--grid", "fast=3,8,60", "--grid", "slow=50", "--workers", "1",
                     "--out", str(out)])
    assert rc == 0
    rows = _rows(out / sweep.RESULTS)
    assert len(rows) == 3
    bad = [r for r in rows if r["status"] == "error"]
    assert len(bad) == 1 and bad[0]["fast"] == "60" and "must be smaller than slow" in bad[0]["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["trial"] for r in rows[:2]] == [r["trial"] for r in ok]       # ranked first, best first
    assert float(ok[0]["score"]) >= float(ok[1]["score"])
    for r in ok:
        want = _direct(store, DAYS, int(r["fast"]), 50)
        assert float(r["net"]) == pytest.approx(want["net"], abs=1e-9)
        assert int(r["orders"]) == want["orders"] > 0 and int(r["days"]) == 3
        for col in ("sharpe", "max_drawdown", "turnover", "fees"):
            assert r[col] != ""
    assert (out / sweep.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "best trials by net" in printed and ok[0]["trial"] in printed


@pytest.mark.time_limit(600)
def test_walk_forward_reports_test_window_figures_of_params_chosen_in_training(store, tmp_path):
    out = tmp_path / "wf"
    rc = sweep.main(["--data", str(store), "--grid", "fast=3,8", "--grid", "slow=30,50", "--workers", "1",
                     "--walk-forward", "1/1", "--out", str(out)])
    assert rc == 0
    rows = _rows(out / sweep.WALK)
    assert [(r["train"], r["test"]) for r in rows] == [(f"{DAYS[0]}..{DAYS[0]}", f"{DAYS[1]}..{DAYS[1]}"),
                                                        (f"{DAYS[1]}..{DAYS[1]}", f"{DAYS[2]}..{DAYS[2]}")]
    for w, r in enumerate(rows):
        train = _rows(out / f"window{w:03d}-train.csv")
        assert len(train) == 4
        assert (r["fast"], r["slow"]) == (train[0]["fast"], train[0]["slow"])     # the training window's best
        assert float(r["train_score"]) == pytest.approx(max(float(t["score"]) for t in train))
        test = _direct(store, [DAYS[w + 1]], int(r["fast"]), int(r["slow"]))   # scored on the unseen day only
        assert float(r["net"]) == pytest.approx(test["net"], abs=1e-9)
        assert float(r["test_score"]) == pytest.approx(test["net"], abs=1e-9)
        assert int(r["records"]) == 2000


def test_chained_daily_sessions_sum_pnl_and_measure_drawdown_across_days():
    day = {"net": 1.0, "realized": 1.0, "unrealized": 0.0, "fees": 0.5, "turnover": 10.0, "orders": 2, "fills": 2,
           "signals": 2, "refused": 0, "records": 100}
    a = np.array([0.0, 3.0, 1.0])
    b = np.array([0.0, -4.0, 2.0])    # from 1.0 down to -3.0: a drawdown of 6 from the peak 3.0 of day one
    out = sweep.chain_days([day, dict(day, net=-2.0)], [a, b], 1_000_000_000)
    assert out["net"] == -1.0 and out["fees"] == 1.0 and out["orders"] == 4
    assert out["max_drawdown"] == pytest.approx(6.0)


@pytest.mark.parametrize("argv, message", [
    (["--grid", "nope=1,2"], "has no parameter nope"),
    (["--grid", "fast=1,x"], "not a number"),
    (["--range", "fast=5:50", "--search", "grid"], "a grid needs explicit values"),
    (["--grid", "fast=5", "--walk-forward", "9/9"], "fewer than one training"),
    (["--grid", "fast=5", "--symbols", "XRPUSDT"], "no data for XRPUSDT"),
    (["--grid", "fast=5", "--latency", "soon"], "bad duration"),
])
def test_sweep_mistakes_are_one_line_exit_2_before_ray_starts(store, tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.setattr(sweep, "_start_ray", lambda args: pytest.fail("Ray started on bad input"))
    assert sweep.main(["--data", str(store), *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_run_with_fewer_trials_than_planned_counts_as_stopped():
    # Tune catches Ctrl-C itself and returns normally: the trials it had not generated yet are simply missing
    import argparse
    dims = [sweep.Dim("fast", values=(2, 3, 4)), sweep.Dim("slow", values=(50, 60))]
    assert sweep.planned_trials(dims, argparse.Namespace(search="grid", trials=20)) == 6
    assert sweep.planned_trials(dims, argparse.Namespace(search="random", trials=9)) == 9
    ok = [{"status": "ok"}] * 6
    assert not sweep.unfinished(ok, 6)
    assert sweep.unfinished(ok[:4], 6)
    assert sweep.unfinished(ok[:5] + [{"status": "not run"}], 6)
    assert not sweep.unfinished(ok[:5] + [{"status": "stopped after 1 day(s)"}], 6)     # ASHA stopped it: done


@pytest.mark.time_limit(600)
def test_ctrl_c_keeps_finished_trials_and_resume_completes_the_sweep(tmp_path, capsys):
    import os
    import signal
    import threading
    files = [marketdays.write_day(tmp_path, "BTCUSDT", day, 200_000, seed=i) for i, day in enumerate(DAYS)]
    store = tmp_path / "store"
    assert S.main(["import", *map(str, files), "--to", str(store)]) == 0
    out = tmp_path / "sw"
    # enough trials (~0.6 s each here) that Ctrl-C lands with most of the grid to do: it is sent once Ray has
    # written a first result, and Ray writes results every few seconds
    n_trials = 36
    argv = ["--data", str(store), "--grid", "fast=" + ",".join(str(2 + i) for i in range(n_trials)),
            "--grid", "slow=50", "--workers", "1", "--out", str(out)]
    stop = threading.Event()

    def ctrl_c_after_a_trial():   # what a user's Ctrl-C does: SIGINT to the sweep process
        while not stop.wait(0.2):
            done = [p for p in out.glob("ray/sweep/*/result.json") if p.stat().st_size > 0]
            if len(done) >= 1:
                os.kill(os.getpid(), signal.SIGINT)
                return
    t = threading.Thread(target=ctrl_c_after_a_trial, daemon=True)
    t.start()
    try:
        rc = sweep.main(argv)
    finally:
        stop.set()
    assert rc == 130
    first = {r["trial"]: r for r in _rows(out / sweep.RESULTS)}
    finished = {k: r for k, r in first.items() if r["status"] == "ok"}
    assert 1 <= len(finished) < n_trials      # the rest listed as not run, or not listed when Tune had not made them
    assert "--resume" in capsys.readouterr().err
    assert sweep.main(argv) == 2   # the same --out without --resume: refused, nothing overwritten
    assert sweep.main([*argv, "--resume"]) == 0
    rows = {r["trial"]: r for r in _rows(out / sweep.RESULTS)}
    assert len(rows) == n_trials and all(r["status"] == "ok" for r in rows.values())
    for k, r in finished.items():
        assert rows[k]["net"] == r["net"] and rows[k]["fast"] == r["fast"]


@pytest.mark.time_limit(600)
def test_optuna_search_with_asha_reports_daily_sessions(store, tmp_path):
    out = tmp_path / "opt"
    rc = sweep.main(["--data", str(store), "--search", "optuna", "--range", "fast=3:12", "--grid", "slow=40,60",
                     "--trials", "4", "--scheduler", "asha", "--workers", "1", "--out", str(out)])
    assert rc == 0
    rows = _rows(out / sweep.RESULTS)
    assert len(rows) == 4 and len({(r["fast"], r["slow"]) for r in rows}) > 1
    for r in rows:
        assert r["status"] == "ok" or r["status"].startswith("stopped after"), r
        days = int(r["days"])
        direct = [_direct(store, [d], int(r["fast"]), int(r["slow"]))["net"] for d in DAYS[:days]]
        assert float(r["net"]) == pytest.approx(sum(direct), abs=1e-9)   # daily sessions, chained
