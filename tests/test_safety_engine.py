"""Safety of the whole engine under faults, with real processes: the supervisor killed with SIGKILL, a second
engine on the same journal, a disk that fills up under the journal."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from aegis.core import control, shm
from tests.enginerun import EngineRun

pytestmark = [pytest.mark.time_limit(180), pytest.mark.usefixtures("compiled_order_path")]
ARGS = ("--symbols", "BTCUSDT,ETHUSDT", "--param", "fast=2", "--param", "slow=5", "--status-interval", "0.5")


@pytest.fixture
def engine(tmp_path):
    runs = []

    def _start(*args, **kw):
        run = EngineRun(*ARGS, "--out", str(tmp_path), *args, **kw)
        runs.append(run)
        return run

    yield _start
    for run in runs:
        run.kill()
        try:        # whatever of the run outlived its supervisor (the point of the first test)
            os.killpg(run.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _orders(run) -> int:
    return int(run.ctl[control.base(control.ROLE_BRAIN) + control.R_BRAIN_ORDERS])


def test_engine_processes_stop_when_the_supervisor_is_killed(engine):
    run = engine()
    run.wait_running()
    pids = [run.pid(control.ROLE_FEED), run.pid(control.ROLE_BRAIN)]
    kids = [p.pid for p in psutil.Process(run.proc.pid).children()]
    assert set(pids) <= set(kids)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(5)
    end = time.monotonic() + 20
    while time.monotonic() < end and not all(_gone(p) for p in kids):
        time.sleep(0.1)
    assert all(_gone(p) for p in kids), f"still running after the supervisor died: {kids}\n{run.output}"
    time.sleep(0.5)
    assert "brain: the supervisor" in run.output and "is gone; stopping" in run.output, run.output


def test_a_second_engine_on_the_same_journal_refuses_with_one_line(engine, tmp_path):
    journal = str(tmp_path / "shared.jsonl")
    first = engine("--journal", journal)
    first.wait_running()
    second = engine("--journal", journal, "--duration", "5")
    assert second.finish(60) == 2
    assert len(second.lines) == 1, second.output
    assert second.lines[0].startswith(f"aegis: error: another engine (pid {first.proc.pid}) is running on journal "
                                      f"{journal}")
    assert not any(n for n in shm.list_segments() if n.startswith(f"aegis.{second.proc.pid}-"))
    os.kill(first.proc.pid, signal.SIGINT)
    assert first.finish(60) == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 16 kB tmpfs: a real filesystem that fills up (ENOSPC), as a full disk does. Needs CAP_SYS_ADMIN; the
    in-process twin in tests/test_safety.py (/dev/full under the journal) runs everywhere."""
    import subprocess
    d = tmp_path / "disk"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_full_disk_under_the_journal_halts_cancels_and_exits_non_zero(engine, small_disk, tmp_path):
    # fsync "always" writes each record with write(2): the 16 kB disk fills while the engine trades. (The ring
    # journal of the other modes does not start on a disk this small, the next test; its copy failing mid-run is
    # tests/test_safety.py's.)
    cfg = tmp_path / "always.toml"
    cfg.write_text('[trade]\nfsync = "always"\n')
    journal = str(small_disk / "j.jsonl")
    run = engine("--journal", journal, "--config", str(cfg))
    run.wait_running()
    code = run.finish(150)
    out = run.output
    assert code == 1, out
    # why, whichever path met the full disk first (the sender's jitted write or a Python append), and no traceback
    assert "ORDER JOURNAL CANNOT BE WRITTEN (" in out and "No space left on device" in out, out
    assert "Traceback" not in out, out
    assert "aegis: error: THE ORDER JOURNAL CANNOT BE WRITTEN: trading halted" in out
    assert "fail-safe cancel done" in out
    assert "cancelled its open orders on the exchange" in out


def test_a_disk_without_room_for_the_ring_journal_refuses_to_start(engine, small_disk):
    run = engine("--journal", str(small_disk / "j.jsonl"))
    code = run.finish(150)
    assert code != 0, run.output
    assert "aegis: error: trading cannot start: [Errno 28] No space left on device" in run.output, run.output


def test_a_sigterm_to_the_brain_is_reported_as_such(engine):
    run = engine()
    run.wait_running()
    os.kill(run.pid(control.ROLE_BRAIN), signal.SIGTERM)
    assert run.finish(60) == 0, run.output
    assert "stopped (SIGTERM to the brain process)" in run.output, run.output
