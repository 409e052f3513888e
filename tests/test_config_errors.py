"""Every config-file mistake, whichever table it is in, is one line on stderr in one format and exit code 2.

Driven through the real entry point (`python -m aegis --config FILE`), so a check that only runs inside a child
process (where a mistake becomes a traceback) fails here."""
from __future__ import annotations

import subprocess
import sys

import pytest

from aegis.core.config import ConfigError, parse_duration_ns

CASES = [
    # (config file text, fragments the one error line must hold)
    ("engine = 5\n", ["[engine] must be a table", "5"]),
    ("feed = 3\n", ["[feed] must be a table"]),
    ("[engine]\nduration = \"abc\"\n", ["[engine] duration must be a duration", "'abc'"]),
    ("[engine]\nduration = -1\n", ["[engine] duration must be > 0"]),
    ("[engine]\nring_capacity = 5000\n", ["[engine] ring_capacity must be a power of two"]),
    ("[engine]\nwait = \"spin\"\n", ["[engine] wait must be one of", "'spin'"]),
    ("[engine]\ncores = \"a\"\n", ["[engine] cores must be a list of integers"]),
    ("[engine]\nsymbols = 0\n", ["[engine] symbols must be at least 1"]),
    ("[engine]\nlive = \"yes\"\n", ["[engine] live must be true or false"]),
    ("[engine]\nspeed = 1\n", ["[engine] unknown key(s): speed"]),
    ("[venue]\nrate = \"fast\"\n", ["[venue] rate must be a number", "'fast'"]),
    ("[venue]\nrate = -3\n", ["[venue] rate must be > 0"]),
    ("[venue]\nport = 70000\n", ["[venue] port must be between 0 and 65535"]),
    ("[venue]\nrte = 5000\n", ["[venue] unknown key(s): rte", "orders_per_10s"]),
    ("[venue]\norders_per_10s = 0\n", ["[venue] orders_per_10s must be >= 1"]),
    ("[venue]\norders_per_minute = \"many\"\n", ["[venue] orders_per_minute must be an integer"]),
    ("[risk]\norders_per_second = 100000\n", ["[risk] orders_per_second must be between 1 and 65536"]),
    ("[feed]\nstall_timeout = \"10s\"\n", ["[feed] stall_timeout must be a number"]),
    ("[feed]\nstreams = [\"bookTicker\", \"kline\"]\n", ["[feed] streams must be a non-empty subset"]),
    ("[feed]\nsnapshot_limit = 7\n", ["[feed] snapshot_limit must be one of"]),
    ("[brain]\nbatch = 0\n", ["[brain] batch must be > 0"]),
    ("[brain]\ncandle_intervals = [\"1x\"]\n", ["[brain] candle_intervals must be a list of candle intervals"]),
    ("[brain]\nbus_capacity = 100\n", ["[brain] bus_capacity must be a power of two"]),
    ("[risk]\nmax_order_qty = -1\n", ["[risk] max_order_qty must be >= 0"]),
    ("[risk]\nmax_md_age_ms = 1.5\n", ["[risk] max_md_age_ms must be an integer"]),
    ("[risk]\nstart_state = \"PAUSED\"\n", ["[risk] start_state must be one of"]),
    ("[risk.symbols.BTCUSDT]\nmax_order_qty = \"x\"\n", ["[risk.symbols.BTCUSDT] max_order_qty must be a number"]),
    ("[risk.symbols]\nBTCUSDT = 3\n", ["[risk.symbols.BTCUSDT] must be a table"]),
    ("[trade]\ntransport = \"fix\"\n", ["[trade] transport must be one of"]),
    ("[trade]\nqueue_capacity = 100\n", ["[trade] queue_capacity must be a power of two"]),
    ("[trade]\ncores = [-1]\n", ["[trade] cores must be a list of CPU numbers"]),
    ("[trade]\ncancel_on_shutdown = 1\n", ["[trade] cancel_on_shutdown must be true or false"]),
    ("[strategy]\nfast = \"x\"\n", ["strategy ema_cross: parameter fast"]),
]


@pytest.mark.time_limit(300)
@pytest.mark.parametrize("text,fragments", CASES, ids=[c[0].strip().replace("\n", " ") for c in CASES])
def test_a_config_file_mistake_is_one_line_and_exit_2(tmp_path, text, fragments):
    f = tmp_path / "aegis.toml"
    f.write_text(text)
    res = subprocess.run([sys.executable, "-m", "aegis", "--config", str(f), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert len(lines) == 1, res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.time_limit(300)
def test_a_replay_table_mistake_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "aegis.toml"
    f.write_text("[replay]\nlatency = \"fast\"\n")
    res = subprocess.run([sys.executable, "-m", "aegis", "replay", "--config", str(f), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "bad duration" in lines[0] and "'fast'" in lines[0]


@pytest.mark.parametrize("text,ns", [
    ("250ns", 250), ("250us", 250_000), ("250µs", 250_000), ("2ms", 2_000_000), ("1.5s", 1_500_000_000),
    ("1m", 60_000_000_000), ("15m", 900_000_000_000), ("2h", 7_200_000_000_000), ("1d", 86_400_000_000_000),
    (" 3 s ", 3_000_000_000), (".5s", 500_000_000), ("1e3us", 1_000_000),
])
def test_the_duration_grammar(text, ns):
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "s", "-1s", "1y", "1M", "abc", "1 m s", "nan", "inf", True])
def test_malformed_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration like"):
        parse_duration_ns(text)


def test_a_bare_number_takes_the_callers_unit_or_is_refused():
    assert parse_duration_ns("800", bare_unit="ns") == 800
    assert parse_duration_ns(90, bare_unit="s") == 90_000_000_000
    assert parse_duration_ns(0.25, bare_unit="s") == 250_000_000
    with pytest.raises(ValueError):
        parse_duration_ns("800")


def test_candles_replay_and_the_engine_read_a_minute_alike():
    from aegis.brain.candles import parse_interval
    from aegis.core.config import load
    from aegis.replay.run import _duration_ns
    assert parse_interval("1m") == _duration_ns("1m") == 60_000_000_000
    assert load(None, {"duration": "1m"}).duration == 60.0


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
