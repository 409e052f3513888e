"""bench/RESULTS.md is generated from the benches' JSON (scripts/bench_results.py): a figure cannot be typed by hand
or drift from the run that produced it."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_results", ROOT / "scripts" / "bench_results.py")
bench_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_results)

RUN = {
    "machine_info": {"python_version": "3.11.7", "system": "Linux", "release": "6.1"},
    "commit_info": {"id": "0123456789abcdef0123", "dirty": False},
    "datetime": "2026-12-06T17:00:00.000000+00:00",
    "aegis": {"smoke": False, "command": "python -m pytest bench/bench_ring.py -k round_trip",
              "loadavg_start": [1.5, 1.25, 1.0], "loadavg_end": [2.0, 1.5, 1.0], "cpu": "Test CPU", "cores": 2},
    "benchmarks": [{"name": "test_ring_round_trip",
                    "stats": {"rounds": 4, "min": 1.5e-6, "median": 2e-6, "mean": 0.25, "max": 1.0,
                              "data": [1.5e-6, 2e-6, 2e-6, 1.0]},
                    "extra_info": {"smoke": False, "event": "one record out and back", "records_per_s": 5.0e8}}],
}


def test_a_section_names_command_commit_machine_and_load_and_scales_units():
    text = bench_results.section(RUN, "ring")
    assert "- command: `python -m pytest bench/bench_ring.py -k round_trip`" in text
    assert "- commit: `0123456789ab`, run 2026-12-06T17:00:00 UTC" in text
    assert "- machine: Test CPU, 2 usable cores, Python 3.11.7, Linux 6.1" in text
    assert "- load average (1, 5, 15 min): 1.50, 1.25, 1.00 before, 2.00, 1.50, 1.00 after" in text
    assert "| test_ring_round_trip | 4 | 1.500us | 2.000us | 250.000ms | 1.000s | 1.000s |" in text
    assert "`test_ring_round_trip`: event one record out and back; records_per_s 5e+08" in text


def test_uncommitted_changes_are_flagged():
    run = copy.deepcopy(RUN)
    run["commit_info"]["dirty"] = True
    assert "(with uncommitted changes)" in bench_results.section(run, "ring")


@pytest.mark.parametrize("breakage", ["smoke", "no aegis block"])
def test_smoke_runs_and_foreign_json_are_refused(breakage, tmp_path):
    run = copy.deepcopy(RUN)
    if breakage == "smoke":
        run["aegis"]["smoke"] = True
    else:
        del run["aegis"]
    p = tmp_path / "ring.json"
    p.write_text(json.dumps(run))
    with pytest.raises(bench_results.ResultsError):
        bench_results.render([p])
    assert bench_results.main([str(p), "--out", str(tmp_path / "R.md")]) == 2


def test_compacted_files_give_the_same_results(tmp_path):
    p = tmp_path / "ring.json"
    p.write_text(json.dumps(RUN))
    before = bench_results.render([p])
    assert bench_results.main([str(p), "--compact"]) == 0
    stats = json.loads(p.read_text())["benchmarks"][0]["stats"]
    assert "data" not in stats and stats["percentiles"]["99"] == 1.0
    assert bench_results.render([p]) == before


def test_check_mode_tells_a_hand_edited_file(tmp_path):
    p = tmp_path / "ring.json"
    p.write_text(json.dumps(RUN))
    out = tmp_path / "RESULTS.md"
    assert bench_results.main([str(p), "--out", str(out)]) == 0
    assert bench_results.main([str(p), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("1.500us", "0.900us"))
    assert bench_results.main([str(p), "--out", str(out), "--check"]) == 1


def test_the_committed_results_are_exactly_what_their_json_gives():
    assert sorted(bench_results.RESULTS_DIR.glob("*.json")), "bench/results/ holds the JSON of the published runs"
    assert bench_results.main(["--check"]) == 0
