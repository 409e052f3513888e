"""Start-up is judged by progress: what a starting process reports, how the supervisor shows and judges it, and the
Feed publishing nothing until the Brain is ready."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
from numba import njit

from aegis.app import supervisor
from aegis.core import control, shm, startup
from aegis.core.config import EngineConfig
from aegis.core.ring import Ring
from aegis.core.shm import Segment
from aegis.core.startup import CompileWatch, ProcessContext, ProcessSpec, StartupProgress
from aegis.feed import process as feed


def _block() -> np.ndarray:
    ctl = control.new_block()
    control.init(ctl, time.monotonic_ns())
    return ctl


def test_compile_watch_reports_each_compile_and_beats_on_compiler_passes():
    reports, beats = [], []
    watch = CompileWatch(lambda text, n: reports.append((text, n)), lambda: beats.append(1))

    @njit(cache=False)
    def inner(x):
        return x + 1

    @njit(cache=False)
    def outer(x):
        return inner(x) * 2

    watch.start()
    try:
        assert outer(1) == 4
    finally:
        watch.stop()
    here = f"{__name__}.test_compile_watch_reports_each_compile_and_beats_on_compiler_passes.<locals>"
    assert (f"compiling {here}.outer", 0) in reports
    assert (f"compiling {here}.outer (now inner)", 0) in reports      # nested: the outer one stays named
    assert reports[-1] == ("", 2)                                     # nothing compiling any more
    assert len(beats) > 10                                           # a pass is a beat: dozens per function
    n = len(reports)

    @njit(cache=False)
    def after(x):
        return x

    after(1)
    assert len(reports) == n                                          # stopped: no more reports


def test_a_long_compile_step_beats_while_it_uses_cpu_and_falls_silent_when_it_does_not():
    # one compiler pass can run LLVM for minutes on a loaded box: the watchdog beats while the process computes
    from numba.core import event

    @njit(cache=False)
    def big(x):
        return x

    beats = []
    watch = CompileWatch(lambda text, n: None, lambda: beats.append(time.monotonic()))
    watch.start()
    data = {"dispatcher": big, "args": (), "return_type": None}
    try:
        event.start_event("numba:compile", data=data)        # a compile begins ...
        end = time.monotonic() + 1.6
        x = 0
        while time.monotonic() < end:                         # ... and computes, raising no event for 1.6 s
            x += 1
        busy = len(beats)
        time.sleep(CompileWatch.POLL_S * 1.2)                 # (the next look still sees the end of the busy time)
        quiet_from = len(beats)
        time.sleep(1.6)                                       # ... then waits on something: no CPU
        idle = len(beats) - quiet_from
        event.end_event("numba:compile", data=data)
    finally:
        watch.stop()
    assert busy >= 2 and idle == 0


@pytest.fixture
def progress():
    """StartupProgress objects, their compile listeners removed after the test (they are process-wide)."""
    made = []

    def make(ctl, role):
        made.append(StartupProgress(ctl, role))
        return made[-1]

    yield make
    for p in made:
        p.stop()


def test_progress_lands_in_the_control_block_and_moves_the_heartbeat(progress):
    ctl = _block()
    prog = progress(ctl, control.ROLE_BRAIN)
    prog.step(2, 3, "strategy state")
    b = control.base(control.ROLE_BRAIN)
    assert (ctl[b + control.R_START_STEP], ctl[b + control.R_START_STEPS]) == (2, 3)
    assert control.read_text(ctl, control.ROLE_BRAIN) == "strategy state"
    before = ctl[b + control.R_HEARTBEAT]
    time.sleep(0.002)
    prog._report("compiling aegis.brain.process.brain_loop", 7)
    assert ctl[b + control.R_HEARTBEAT] > before
    assert ctl[b + control.R_START_COMPILED] == 7
    assert control.read_text(ctl, control.ROLE_BRAIN) == "strategy state: compiling aegis.brain.process.brain_loop"
    control.write_text(ctl, control.ROLE_BRAIN, "x" * 500)     # too long: truncated, never into the next slots
    assert control.read_text(ctl, control.ROLE_BRAIN) == "x" * control.START_TEXT_BYTES
    assert ctl[b + control.R_START_TEXT + control.START_TEXT_BYTES // 8] == 0


def test_a_compile_after_start_up_is_named_on_stderr_as_a_stall(progress, capsys):
    ctl = _block()
    prog = progress(ctl, control.ROLE_BRAIN)
    prog.step(3, 3, "brain loop")

    @njit(cache=False)
    def during_start(x):
        return x + 1

    during_start(1)
    assert "while running" not in capsys.readouterr().err
    prog.running()

    @njit(cache=False)
    def missed_by_warm_up(x):
        return x + 2

    missed_by_warm_up(1)
    err = capsys.readouterr().err
    assert "aegis: brain: compiled" in err and "missed_by_warm_up while running" in err
    assert ctl[control.base(control.ROLE_BRAIN) + control.R_START_COMPILED] >= 2


def test_the_start_up_line_says_what_each_process_does_and_how_far_along_it_is(progress):
    ctl = _block()
    control.set_slot(ctl, control.ROLE_FEED, control.R_STATE, control.ST_READY)
    control.set_slot(ctl, control.ROLE_BRAIN, control.R_STATE, control.ST_STARTING)
    progress(ctl, control.ROLE_FEED).step(2, 3, "ready; waiting for the brain", control.PH_WAITING_FOR_BRAIN)
    brain = progress(ctl, control.ROLE_BRAIN)
    brain.step(3, 3, "brain loop")
    brain._report("compiling aegis.brain.process.brain_loop", 41)
    line = supervisor.startup_line(12.5, ctl)
    assert line == ("[   12.5s] starting: feed 2/3 ready; waiting for the brain | brain 3/3 brain loop: compiling "
                    "aegis.brain.process.brain_loop (41 compiled)")
    fresh = _block()
    assert "feed loading Python and Numba | brain loading Python and Numba" in supervisor.startup_line(1.0, fresh)


def test_a_starting_process_is_failed_by_silence_not_by_how_long_it_takes():
    ctl = _block()
    now = time.monotonic_ns()
    spawned = now - 3600 * 10**9                     # an hour ago: long, but it keeps reporting
    control.set_slot(ctl, control.ROLE_FEED, control.R_STATE, control.ST_STARTING)
    control.set_slot(ctl, control.ROLE_BRAIN, control.R_STATE, control.ST_STARTING)
    for rid in (control.ROLE_FEED, control.ROLE_BRAIN):
        ctl[control.base(rid) + control.R_HEARTBEAT] = now - 10**9
    assert supervisor.startup_stalled(ctl, now, spawned, limit_s=5) is None
    control.write_text(ctl, control.ROLE_BRAIN, "brain loop: compiling aegis.brain.process.brain_loop")
    ctl[control.base(control.ROLE_BRAIN) + control.R_HEARTBEAT] = now - 6 * 10**9
    assert supervisor.startup_stalled(ctl, now, spawned, limit_s=5) == (
        "brain process made no start-up progress for 5s (last: brain loop: compiling aegis.brain.process.brain_loop)")
    control.set_slot(ctl, control.ROLE_BRAIN, control.R_STATE, control.ST_RUNNING)   # running: the heartbeat
    assert supervisor.startup_stalled(ctl, now, spawned, limit_s=5) is None           # watch takes over
    # a process that never reported anything is measured from its spawn
    ctl2 = _block()
    assert supervisor.startup_stalled(ctl2, now, now - 2 * 10**9, limit_s=5) is None
    assert "feed process made no start-up progress for 5s (last: starting the interpreter)" == \
        supervisor.startup_stalled(ctl2, now, now - 6 * 10**9, limit_s=5)


@pytest.fixture
def feed_ctx():
    run_id = shm.new_run_id()
    ring = Ring.create(shm.segment_name(run_id, "ring"), 4096)
    ctl_seg = Segment.create(shm.segment_name(run_id, "control"), control.SLOTS * 8)
    control.init(ctl_seg.view(np.int64, 0, control.SLOTS), time.monotonic_ns())
    spec = ProcessSpec(run_id, "feed", None, 2, ring.segment.name, ctl_seg.name, None,
                       EngineConfig(source="synthetic"))
    ctx = ProcessContext(spec)
    ctx.stopping()      # compiled here, not first in the waiting thread while this one compiles too
    yield ctx
    ctx.close()            # also removes its compile listener
    ring.header = ring.records = None
    for seg in (ring.segment, ctl_seg):
        seg.close()
        seg.unlink()


@pytest.mark.parametrize("brain_state,expect", [(control.ST_READY, True), (control.ST_RUNNING, True),
                                                 (control.ST_FAILED, False), (control.ST_STOPPED, False)])
def test_the_feed_waits_for_the_brain_and_keeps_reporting_progress(feed_ctx, brain_state, expect):
    ctl = feed_ctx.control
    control.set_slot(ctl, control.ROLE_BRAIN, control.R_STATE, control.ST_STARTING)
    result = {}
    t = threading.Thread(target=lambda: result.update(ok=feed.wait_for_brain(feed_ctx, 2, 3)))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()                                   # the brain is still starting: the feed waits
    b = control.base(control.ROLE_FEED)
    assert ctl[b + control.R_START_PHASE] == control.PH_WAITING_FOR_BRAIN
    assert time.monotonic_ns() - ctl[b + control.R_HEARTBEAT] < 0.2e9   # and beats while it does
    control.set_slot(ctl, control.ROLE_BRAIN, control.R_STATE, brain_state)
    t.join(5)
    assert not t.is_alive() and result["ok"] is expect


def test_the_feed_stops_waiting_when_the_run_stops(feed_ctx):
    control.request_stop(feed_ctx.control)
    assert feed.wait_for_brain(feed_ctx, 2, 3) is False


def test_a_process_started_before_the_venue_answered_gets_the_rest_of_its_spec_on_its_pipe():
    import multiprocessing as mp

    from aegis.core.startup import receive_rest
    recv_end, send_end = mp.Pipe(duplex=False)
    spec = ProcessSpec("r", "brain", None, 2, "ring", "ctl", None, EngineConfig(), rest=recv_end)
    send_end.send(dict(venue_urls=("http://h:1", "ws://h:1", "ws://h:1/ws-fapi/v1"), api_key="k", api_secret="s"))
    done = receive_rest(spec)
    assert (done.venue_urls[0], done.api_key, done.api_secret, done.rest) == ("http://h:1", "k", "s", None)
    assert (done.run_id, done.role, done.config) == (spec.run_id, spec.role, spec.config)
    assert recv_end.closed
    # the supervisor gave up before the venue answered (it said why): nothing to run
    recv_end, send_end = mp.Pipe(duplex=False)
    send_end.close()
    assert receive_rest(ProcessSpec("r", "brain", None, 2, "ring", "ctl", None, EngineConfig(), rest=recv_end)) is None


def test_the_brain_starts_while_the_venue_starts_and_leaves_when_the_venue_fails(monkeypatch, tmp_path):
    """The Brain's start (Python, Numba, its order path's compile: ~20 s of a cold start) overlaps the embedded
    venue's; when the venue then cannot start, the Brain waiting for it goes with the run."""
    import io
    import multiprocessing as mp

    from aegis.app import embedded
    seen = {}

    def venue_that_fails(section, on_progress=None):
        seen["children"] = [p.name for p in mp.active_children()]
        raise RuntimeError("the embedded venue exited during start (exit code 1)")

    monkeypatch.setattr(embedded, "start", venue_that_fails)
    out = io.StringIO()
    t0 = time.monotonic()
    code = supervisor.run(EngineConfig(duration=5.0, status_interval=60.0, out_dir=str(tmp_path)), out=out)
    assert code == 1, out.getvalue()
    assert "aegis-brain" in seen["children"]
    assert "aegis: error: the embedded venue exited during start" in out.getvalue()
    assert not [p for p in mp.active_children() if p.name == "aegis-brain"]
    assert time.monotonic() - t0 < 30.0


SIGNALS_CHILD = r'''
import os, signal, sys, threading, time
from aegis.core import control, startup
from aegis.core.config import EngineConfig
ctx = startup.enter(startup.ProcessSpec("r", "brain", None, 2, sys.argv[1], sys.argv[2], None, EngineConfig()))
ctx.set_state(control.ST_RUNNING)
pid, sig = os.getpid(), int(sys.argv[3])

def barrage():          # signal after signal, as a killed supervisor's exiting threads each send the death signal
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        os.kill(pid, sig)
        time.sleep(0.0001)

t = threading.Thread(target=barrage)
t.start()
while t.is_alive():     # this thread runs the handlers, nested when a signal comes during one
    pass
print("stopped", int(control.stop_requested(ctx.control)), int(ctx.control[control.G_STOP_BY]), ctx.orphaned())
'''


@pytest.fixture
def segments():
    run_id = shm.new_run_id()
    ring = Ring.create(shm.segment_name(run_id, "ring"), 4096)
    ctl_seg = Segment.create(shm.segment_name(run_id, "control"), control.SLOTS * 8)
    try:
        control.init(ctl_seg.view(np.int64, 0, control.SLOTS), time.monotonic_ns())
        yield ring.segment.name, ctl_seg.name
    finally:
        ring.header = ring.records = None
        for seg in (ring.segment, ctl_seg):
            seg.close()
            seg.unlink()


@pytest.mark.parametrize("sig, said", [(signal.SIGTERM, f"stopped 1 {control.ROLE_BRAIN + 1} False"),
                                       (startup.SUPERVISOR_DIED, "stopped 1 0 True")])
def test_signals_arriving_during_the_stop_handler_stop_the_process_in_order(segments, sig, said):
    """A killed supervisor's death signal reaches a child once per exiting thread of it. The handler calls jitted
    code: loaded there for the first time, a second signal re-entered Numba's loader mid-load and the Brain died of
    'generator already executing' instead of stopping in order (CI, test_safety_engine). A SIGTERM is someone's
    request to stop; the death signal alone says the supervisor is gone."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", SIGNALS_CHILD, *segments, str(int(sig))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and said in p.stdout, (p.stdout, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]


ORPHAN_CHILD = r'''
import os, sys, time
from aegis.core import control, startup
from aegis.core.config import EngineConfig
ctx = startup.enter(startup.ProcessSpec("r", "brain", None, 2, sys.argv[1], sys.argv[2], None, EngineConfig()))
ctx.set_state(control.ST_RUNNING)
print("ready", flush=True)
while not ctx.stopping():
    time.sleep(0.001)
print("stopped; re-parented:", os.getppid() != ctx.parent_pid, flush=True)
'''

# A supervisor whose main thread (the one that started the child) has exited while another of its threads lingers:
# what a SIGKILLed supervisor is while the kernel tears down a large address space. Its children get the death signal
# but are re-parented only when the last thread goes.
DYING_SUPERVISOR = r'''
import ctypes, os, subprocess, sys, threading, time
out = open(sys.argv[3], "w")
child = subprocess.Popen([sys.executable, "-c", sys.argv[4], sys.argv[1], sys.argv[2]], stdout=out, stderr=out)
while "ready" not in open(sys.argv[3]).read():
    time.sleep(0.01)
threading.Thread(target=lambda: (time.sleep(float(sys.argv[5])), os._exit(0))).start()
ctypes.CDLL(None).pthread_exit(None)
'''


def test_a_child_says_its_supervisor_is_gone_before_the_kernel_re_parents_it(segments, tmp_path):
    """CI: the supervisor was killed, the Brain stopped in order, but never said why. The death signal was a SIGTERM,
    taken as an ordinary stop request, and getppid() still named the supervisor all through the Brain's stop."""
    import subprocess
    import sys
    out = tmp_path / "child.out"
    subprocess.run([sys.executable, "-c", DYING_SUPERVISOR, *segments, str(out), ORPHAN_CHILD, "3"], timeout=60)
    end = time.monotonic() + 60
    while "stopped" not in out.read_text() and time.monotonic() < end:
        time.sleep(0.05)
    text = out.read_text()
    assert "the supervisor (pid " in text and ") is gone; stopping" in text, text
    assert "stopped; re-parented: False" in text, text
