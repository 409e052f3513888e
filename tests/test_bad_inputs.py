"""Every bad input the engine can meet at start: one line on stderr naming the problem, exit code 2, no
traceback, and nothing left behind (no process, no shared memory). Table-driven, real `python -m aegis` runs.

Config-file validation (`engine = 5`, `[engine] duration = "abc"` ...) is aegis.core.config's and tested there."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aegis.core import shm

pytestmark = [pytest.mark.time_limit(120), pytest.mark.usefixtures("compiled_order_path")]

BASE = ("--duration", "3", "--symbols", "BTCUSDT,ETHUSDT", "--status-interval", "5")

# (case id, extra args, config file text or None, env, RLIMIT_FSIZE or None, stderr pattern)
CASES = [
    ("record-unwritable", ["--record", "/proc/x/rec"], None, {}, None,
     r"^aegis: error: --record /proc/x/rec: cannot write there: "),
    ("out-unwritable", ["--out", "/proc/x"], None, {}, None, r"^aegis: error: --out /proc/x: cannot write there: "),
    ("journal-unwritable", ["--journal", "/proc/x/j.jsonl"], None, {}, None,
     r"^aegis: error: cannot write the journal /proc/x/j\.jsonl: "),
    ("unknown-symbol", ["--symbols", "FOOUSDT"], None, {}, None,
     r"^aegis: error: not TRADING USDT perpetuals on http://127\.0\.0\.1:\d+: FOOUSDT$"),
    ("one-unknown-among-known", ["--symbols", "BTCUSDT,NOPEUSDT"], None, {}, None,
     r"^aegis: error: not TRADING USDT perpetuals on .*: NOPEUSDT$"),
    ("venue-unreachable", [], '[feed]\nrest_url = "http://127.0.0.1:1"\n', {}, None,
     r"^aegis: error: cannot reach the venue at http://127\.0\.0\.1:1: Connection refused$"),
    ("testnet-unreachable", ["--venue", "binance-testnet"], '[feed]\nrest_url = "http://127.0.0.1:1"\n',
     {"BINANCE_API_KEY": "k" * 64, "BINANCE_API_SECRET": "s" * 64}, None,
     r"^aegis: error: cannot reach the venue at http://127\.0\.0\.1:1: Connection refused$"),
    ("market-data-unreachable", [], '[feed]\nws_url = "ws://127.0.0.1:1"\n', {}, None,
     r"^aegis: error: cannot reach market data at ws://127\.0\.0\.1:1: "),
    # every file may grow to 1 MB only: the 8 MB ring cannot be created in /dev/shm (a full or capped /dev/shm)
    ("shared-memory-fails", [], None, {}, 1 << 20, r"^aegis: error: cannot create the run's shared memory in "
                                                   r"/dev/shm: File too large"),
]


def _group_gone(pgid: int, timeout: float = 5.0) -> bool:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _limit(n):
    def f():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return f


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2_with_nothing_left_behind(case, tmp_path):
    import re
    name, extra, config, env, fsize, pattern = case
    args = [*BASE, "--out", str(tmp_path / "out"), *extra]
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        args += ["--config", str(tmp_path / "c.toml")]
    p = subprocess.Popen([sys.executable, "-m", "aegis", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, env={**os.environ, **env},
                         preexec_fn=_limit(fsize) if fsize else None)
    try:
        out, err = p.communicate(timeout=100)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
    lines = err.strip().splitlines()
    assert p.returncode == 2, f"exit {p.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err, out + err
    errors = [x for x in lines if x.startswith("aegis: error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), f"stderr:\n{err}"
    assert not [x for x in lines if not x.startswith(("aegis:", "feed:", "symbols:"))], err   # no stray output
    assert _group_gone(p.pid), "a process of the run is still alive"   # venue, feed, brain (the resource
    # tracker of multiprocessing notices its parent's exit by itself, within moments)
    assert not [n for n in shm.list_segments() if n.startswith(f"aegis.{p.pid}-")]
    assert "run" not in out.split("aegis: error")[0] or "records:" not in out   # no run summary for a setup error
