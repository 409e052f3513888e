"""`python -m aegis`: user mistakes get one line and exit code 2, never a traceback; --help teaches."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

AVAILABLE = ",".join(map(str, sorted(os.sched_getaffinity(0))))


def aegis(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aegis", *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0]


def test_a_core_that_does_not_exist_names_the_available_cores():
    assert_one_line_error(aegis("--cores", "0,999"), "core 999", f"available cores: {AVAILABLE}")


def test_a_duplicate_core_is_refused():
    assert_one_line_error(aegis("--cores", "0,0"), "twice", f"available cores: {AVAILABLE}")


@pytest.mark.parametrize("cores", ["abc", "1", "1,2,3,4", "1;2", "", "-1,0"])
def test_a_malformed_core_list_is_refused(cores):
    assert_one_line_error(aegis(f"--cores={cores}"), f"available cores: {AVAILABLE}")


def test_a_third_core_is_the_senders_own():
    from aegis.app.supervisor import CoreError, parse_cores
    assert parse_cores("2,3,1", [0, 1, 2, 3]) == (2, 3, 1)
    assert parse_cores("0,1", [0, 1]) == (0, 1)
    with pytest.raises(CoreError, match="twice"):
        parse_cores("2,3,3", [0, 1, 2, 3])
    with pytest.raises(CoreError, match="core 4 does not exist"):
        parse_cores("2,3,4", [0, 1, 2, 3])


def test_cores_from_the_config_file_are_validated_too(tmp_path):
    cfg = tmp_path / "aegis.toml"
    cfg.write_text("[engine]\ncores = [0, 999]\n")
    assert_one_line_error(aegis("--config", str(cfg)), "core 999")


def test_a_missing_config_file_is_one_line():
    assert_one_line_error(aegis("--config", "/nonexistent/aegis.toml"), "not found")


def test_invalid_toml_is_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[engine\nduration = \n")
    assert_one_line_error(aegis("--config", str(cfg)), "not valid TOML")


def test_an_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "aegis.toml"
    cfg.write_text("[engine]\nduraton = 5\n")
    assert_one_line_error(aegis("--config", str(cfg)), "duraton")


def test_live_binance_requires_an_explicit_live_flag():
    assert_one_line_error(aegis("--venue", "binance"), "--live")


def test_a_ring_capacity_that_is_not_a_power_of_two_is_refused():
    assert_one_line_error(aegis("--ring-capacity", "5000"), "power of two")


def test_help_explains_cores_wait_strategies_and_examples():
    res = aegis("--help")
    assert res.returncode == 0
    for needle in ("--cores", "busy-spin", "spin-yield", "sleep", "auto", "examples:", "--duration", "--config"):
        assert needle in res.stdout


def test_an_unknown_subcommand_option_is_a_usage_error_not_a_traceback():
    res = aegis("--no-such-option")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_an_unknown_strategy_is_refused_before_any_process_starts():
    assert_one_line_error(aegis("--strategy", "nope"), "unknown strategy", "ema_cross")


def test_an_invalid_strategy_parameter_is_refused():
    assert_one_line_error(aegis("--param", "fast=200"), "fast")


def test_strategy_list_shows_strategies_and_their_parameters():
    res = aegis("--strategy", "list")
    assert res.returncode == 0
    assert "ema_cross" in res.stdout and "slow=100" in res.stdout


def test_an_unknown_venue_setting_is_refused_before_the_venue_starts(tmp_path):
    cfg = tmp_path / "aegis.toml"
    cfg.write_text("[venue]\nrte = 5000\n")
    assert_one_line_error(aegis("--config", str(cfg)), "[venue]", "rte")


def test_an_unknown_feed_setting_is_refused(tmp_path):
    cfg = tmp_path / "aegis.toml"
    cfg.write_text("[feed]\nstall_timout = 5\n")
    assert_one_line_error(aegis("--config", str(cfg)), "stall_timout")


def test_an_unknown_risk_setting_is_refused(tmp_path):
    cfg = tmp_path / "aegis.toml"
    cfg.write_text("[risk]\nmax_positon_qty = 5\n")
    assert_one_line_error(aegis("--config", str(cfg)), "max_positon_qty")


def test_binance_testnet_without_keys_is_a_one_line_error(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("BINANCE_API_KEY", "BINANCE_API_SECRET")}
    res = subprocess.run([sys.executable, "-m", "aegis", "--venue", "binance-testnet"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert_one_line_error(res, "BINANCE_API_KEY")


@pytest.mark.time_limit(180)
def test_record_option_makes_the_feed_write_a_recording_replay_can_read(tmp_path):
    rec = tmp_path / "rec"
    res = aegis("--duration", "3", "--symbols", "BTCUSDT", "--record", str(rec), "--out", str(tmp_path / "out"),
                timeout=170)
    assert res.returncode == 0, res.stdout + res.stderr
    from aegis.feed.recording import read_recording
    rows = list(read_recording(str(rec)))
    assert rows[0][1] == "!exchangeInfo" and [r["symbol"] for r in rows[0][2]["symbols"]] == ["BTCUSDT"]
    assert len(rows) > 1 and all(stream.startswith("btcusdt@") for _, stream, _ in rows[1:])



def test_warmup_is_a_subcommand_that_teaches():
    res = aegis("warmup", "--help")
    assert res.returncode == 0 and "compile ahead" in res.stdout and "Numba's cache" in res.stdout
    assert_one_line_error(aegis("warmup", "--source", "nowhere"), "invalid choice")


@pytest.mark.time_limit(600)
def test_warmup_runs_the_engine_briefly_and_leaves_the_users_output_alone(tmp_path):
    res = subprocess.run([sys.executable, "-m", "aegis", "warmup", "--source", "synthetic"], capture_output=True,
                         text=True, timeout=570, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "engine running" in res.stdout and "aegis: warmup done in" in res.stdout
    assert not (tmp_path / "aegis-out").exists()      # its output went to a temporary directory
