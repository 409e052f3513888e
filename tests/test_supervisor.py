"""The supervisor runs Feed and Brain pinned to their cores and cleans up on every exit path."""
from __future__ import annotations

import os
import signal
import time

import pytest

from aegis.core import control
from aegis.core import shm
from tests.enginerun import EngineRun

SYNTH = ("--source", "synthetic", "--status-interval", "0.5")
pytestmark = pytest.mark.time_limit(150)


@pytest.fixture
def engine():
    runs = []

    def _start(*args):
        run = EngineRun(*SYNTH, *args)
        runs.append(run)
        return run

    yield _start
    for run in runs:
        run.kill()


def test_a_timed_run_streams_feed_to_brain_prints_status_and_a_matching_summary(engine):
    run = engine("--duration", "3")
    assert run.finish(90) == 0
    out = run.output
    assert "rec/s" in out and "lag" in out  # status lines
    assert "duration 3s reached" in out
    assert "checksum feed/brain: match" in out
    published = int(out.split("published ")[1].split(",")[0])
    assert published > 0


def test_each_engine_process_is_pinned_to_its_core(engine):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores")
    run = engine("--cores", f"{cores[1]},{cores[0]}")
    run.wait_running()
    assert os.sched_getaffinity(run.pid(control.ROLE_FEED)) == {cores[1]}
    assert os.sched_getaffinity(run.pid(control.ROLE_BRAIN)) == {cores[0]}
    os.killpg(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 0


def test_segments_are_owner_only_and_named_for_the_run(engine):
    run = engine()
    run.wait_running()
    names = run.segments()
    assert {n.rsplit(".", 1)[1] for n in names} >= {"ring", "control"}
    assert all(shm.mode_of(n) == 0o600 for n in names)
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 0


def test_sigterm_stops_both_processes_in_order_prints_a_summary_and_removes_shared_memory(engine):
    run = engine()
    run.wait_running()
    feed, brain = run.pid(control.ROLE_FEED), run.pid(control.ROLE_BRAIN)
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish() == 0
    assert "stopped (SIGTERM)" in run.output
    assert "checksum feed/brain: match" in run.output
    assert run.segments() == []
    for pid in (feed, brain):
        assert not _alive(pid)


def test_ctrl_c_to_the_terminal_process_group_stops_the_run_orderly(engine):
    run = engine()
    run.wait_running()
    os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    assert run.finish() == 0
    assert "stopped (SIGINT)" in run.output
    assert "Traceback" not in run.output
    assert run.segments() == []


@pytest.mark.parametrize("victim,role", [("feed", control.ROLE_FEED), ("brain", control.ROLE_BRAIN)])
def test_kill_9_of_a_child_is_noticed_within_a_second_and_everything_is_cleaned_up(engine, victim, role):
    run = engine()
    run.wait_running()
    other = run.pid(control.ROLE_BRAIN if role == control.ROLE_FEED else control.ROLE_FEED)
    t0 = time.monotonic()
    os.kill(run.pid(role), signal.SIGKILL)
    run.wait_for(f"the {victim} process was killed by signal 9", 5)
    assert time.monotonic() - t0 < 1.0
    assert run.finish() == 1
    assert run.segments() == []
    assert not _alive(other)


def test_a_hung_child_is_detected_by_its_missing_heartbeat(engine):
    run = engine()
    run.wait_running()
    brain = run.pid(control.ROLE_BRAIN)
    os.kill(brain, signal.SIGSTOP)
    try:
        run.wait_for("brain process stopped beating", 15)
        assert run.finish() == 1
    finally:
        if _alive(brain):
            os.kill(brain, signal.SIGKILL)
    assert run.segments() == []


def test_segments_left_by_a_dead_run_are_removed_by_the_next_run(engine):
    dead_pid = _a_dead_pid()
    name = shm.segment_name(f"{dead_pid}-deadbeef", "ring")
    shm.Segment.create(name, 4096).close()
    shm.resource_tracker.unregister("/" + name, "shared_memory")  # as if its creator had died
    run = engine("--duration", "1")
    assert run.finish(90) == 0
    assert name not in shm.list_segments()
    assert "removed 1 shared-memory segment" in run.output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _a_dead_pid() -> int:
    import subprocess
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_feed_blocked_by_a_stalled_brain_keeps_beating_so_the_brain_is_blamed(engine):
    # the Brain stops consuming: the Feed fills the ring and waits (policy wait); the waiting Feed is healthy
    run = engine("--ring-capacity", "4096")
    run.wait_running()
    brain = run.pid(control.ROLE_BRAIN)
    os.kill(brain, signal.SIGSTOP)
    try:
        line = run.wait_for("stopped beating", 20)
        assert "brain process" in line
        assert run.finish() == 1
    finally:
        if _alive(brain):
            os.kill(brain, signal.SIGKILL)
    assert "full-ring waits 0" not in run.output  # the Feed did wait on the full ring
