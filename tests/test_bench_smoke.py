"""Every bench still runs: each bench file once, in smoke mode (AEGIS_BENCH_SMOKE=1: small inputs, see
bench/benchmode.py), as `python -m pytest bench/<file>` in a subprocess. A bench that no longer runs the code it
names fails here instead of going stale; its figures come from a full run (scripts/bench_results.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))
LIMIT_S = 900     # a cold Numba cache on a loaded 2-core box: several minutes of compiling for some of them


def test_every_bench_file_is_smoke_tested():
    assert {"bench_ring.py", "bench_feed.py", "bench_pipeline.py"} <= set(BENCHES)


@pytest.mark.time_limit(LIMIT_S)
@pytest.mark.parametrize("bench", BENCHES)
def test_bench_runs_in_smoke_mode(bench, tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "AEGIS_BENCH_SMOKE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", f"bench/{bench}", "-q", "-x", "-p", "no:cacheprovider",
                           f"--benchmark-json={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=LIMIT_S - 30)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["aegis"]["smoke"] is True and data["benchmarks"]
    assert all(b["extra_info"]["smoke"] for b in data["benchmarks"])


# the tests that report a figure from pytest-benchmark's statistics, one per bench file that does
UNTIMED = ["bench/bench_brain.py::test_brain_pipeline_ema_cross_ticks_per_second",
           "bench/bench_pipeline.py::test_record_stage_cost_per_value",
           "bench/bench_replay.py::test_bench_replay_core_1m_quotes_10_symbols_ema_cross",
           "bench/bench_replay.py::test_bench_replay_csv_end_to_end",
           "bench/bench_trade.py::test_fast_path_request_and_journal_line_build"]


@pytest.mark.time_limit(LIMIT_S)
def test_benches_run_untimed_with_benchmark_disable(tmp_path):
    """`--benchmark-disable` (each bench function run once, no statistics: a quick check that benches still run)
    reports no figure instead of failing; a bench reads the statistics only through benchmode.timing."""
    for p in (ROOT / "bench").glob("*.py"):
        if p.name != "benchmode.py":
            assert "benchmark.stats" not in p.read_text(), f"{p.name}: use benchmode.timing(benchmark)"
    env = {**os.environ, "AEGIS_BENCH_SMOKE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", *UNTIMED, "-q", "-p", "no:cacheprovider",
                           "--benchmark-disable"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=LIMIT_S - 30)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(UNTIMED) + 1} passed" in proc.stdout, proc.stdout[-2000:]   # (the fast path's: rest and ws)
