"""What every engine process does on start and stop, so Feed and Brain only contain their own loops."""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from numba.core import event as numba_event
from numba.core.event import Listener

from aegis.core import control
from aegis.core.config import EngineConfig
from aegis.core.ring import Ring
from aegis.core.shm import Segment

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
# The death signal an engine process asks for: a real-time signal that nobody sends by hand, so its arrival alone says
# the supervisor is gone. getppid() is no proof: the kernel re-parents the children only once the killed
# supervisor's last thread has exited, which can take longer than the Brain's whole orderly stop (tearing down a
# large address space on a loaded box), and a SIGTERM could as well come from a user.
SUPERVISOR_DIED = signal.SIGRTMIN + 1


@dataclass(frozen=True)
class ProcessSpec:
    run_id: str
    role: str                 # "feed" | "brain"
    core: int | None
    wait: int                 # aegis.core.wait strategy constant
    ring_name: str
    control_name: str
    latency_name: str | None
    config: EngineConfig
    venue_urls: tuple[str, str, str] | None = None  # (rest, ws market, ws api) of the venue to use
    symbols: object = None  # aegis.binance.symbols.SymbolTable resolved once by the supervisor: Feed and Brain share ids
    api_key: str | None = field(default=None, repr=False)     # the embedded venue's per-run key; for Binance the
    api_secret: str | None = field(default=None, repr=False)  # keys come from the environment (aegis.binance.keys)
    # started before the venue answered: the receiving end of a pipe on which the supervisor sends venue_urls,
    # symbols, api_key and api_secret once it knows them (receive_rest)
    rest: object = field(default=None, repr=False)

    @property
    def role_id(self) -> int:
        return control.ROLES.index(self.role)


def receive_rest(spec: ProcessSpec) -> ProcessSpec | None:
    """`spec` completed with what the supervisor sends on spec.rest once the venue answers; None if the supervisor
    closed the pipe instead (the run did not get that far: it says why)."""
    try:
        known = spec.rest.recv()
    except (EOFError, OSError):
        return None
    finally:
        spec.rest.close()
    return dataclasses.replace(spec, rest=None, **known)


class ProcessContext:
    def __init__(self, spec: ProcessSpec):
        self.spec = spec
        self.role = spec.role_id
        self.ring = Ring.attach(spec.ring_name)
        self._ctl_seg = Segment.attach(spec.control_name)
        self.control = self._ctl_seg.view(np.int64, 0, control.SLOTS)
        self.control_f = self._ctl_seg.view(np.float64, 0, control.SLOTS)
        self._lat_seg = Segment.attach(spec.latency_name) if spec.latency_name else None
        self.latency = self._lat_seg.view(np.int64) if self._lat_seg else None
        parent = mp.parent_process()
        self.parent_pid = parent.pid if parent is not None else os.getppid()
        self.orphan_since: float | None = None    # time.monotonic() when the supervisor was found gone
        self.supervisor_died = False              # the death signal came (set by its handler, see enter)
        self.progress = StartupProgress(self.control, self.role)

    def orphaned(self) -> bool:
        """The supervisor is gone (its death signal came, or we were re-parented): nobody watches this process any
        more."""
        return self.supervisor_died or os.getppid() != self.parent_pid

    def stopping(self) -> bool:
        """The run is stopping: asked by the supervisor, or the supervisor died. Engine loops call this on their slow
        path, so an orphan stops in order (and cancels its orders) even if the death signal was missed."""
        if self.orphaned():
            if self.orphan_since is None:
                self.orphan_since = time.monotonic()
                print(f"aegis: {self.spec.role}: the supervisor (pid {self.parent_pid}) is gone; stopping",
                      file=sys.stderr, flush=True)
            control.request_stop(self.control)
            return True
        return bool(control.stop_requested(self.control))

    def orphaned_for(self) -> float:
        """Seconds since stopping() found the supervisor gone (0 while it lives)."""
        return 0.0 if self.orphan_since is None else time.monotonic() - self.orphan_since

    def heartbeat(self) -> None:
        control.beat(self.control, self.role)

    def set_state(self, state: int) -> None:
        if state == control.ST_RUNNING:
            self.progress.running()
        elif state > control.ST_RUNNING:
            self.progress.stop()
        control.set_slot(self.control, self.role, control.R_STATE, state)

    def slot(self, slot: int) -> int:
        return int(control.get_slot(self.control, self.role, slot))

    def set(self, slot: int, value: int) -> None:
        control.set_slot(self.control, self.role, slot, value)

    def step(self, k: int, n: int, what: str, phase: int = control.PH_PREPARING) -> None:
        """Start-up step k of n begins (shown by the supervisor's status line; each step is progress)."""
        self.progress.step(k, n, what, phase)

    def close(self) -> None:
        self.progress.stop()
        self.ring.close()
        self.control = self.control_f = self.latency = None
        self._ctl_seg.close()
        if self._lat_seg:
            self._lat_seg.close()


def progress_over(conn) -> "CompileWatch":
    """A CompileWatch that sends a child process's compile progress to its parent as ("progress", text, compiled)
    messages on a multiprocessing pipe: one for every function compiled, and a beat (text None) at most ten times
    a second between (the parent's liveness check)."""
    lock = threading.Lock()
    last = [0.0]

    def send(text=None, compiled=0):
        now = time.monotonic()
        with lock:
            if text is not None or now - last[0] >= 0.1:
                last[0] = now
                conn.send(("progress", text, compiled))

    return CompileWatch(send, send)


class CompileWatch:
    """Numba's compile events as start-up progress: `report(text, compiled)` is called when a function starts
    compiling (text "compiling module.function") and when it is done; `beat()` on every compiler pass in between.

    One pass can be long: the last one of an outer function hands the whole module to LLVM, which took over 90 s
    of wall time for the sender's fast path on this 2-core box at load average 20. While a compile is under way a
    watchdog thread therefore also beats whenever the process has used CPU since its last look (every
    POLL_S): a compiler that works is alive, one that waits on something that never comes (no CPU) falls silent,
    and so does one that has spent more than COMPILE_CPU_LIMIT_S of CPU on one outer function (a compile that
    never ends). Loads from Numba's on-disk cache raise no events: they are quick.

    The callbacks run inside the compiler (any thread): they must not call jitted code (which might compile)."""

    POLL_S = 0.5
    COMPILE_CPU_LIMIT_S = 900.0

    def __init__(self, report, beat):
        self._report = report
        self._beat = beat
        self.compiled = 0
        self.current = ""
        self.last_done = ""             # the function whose compile ended last
        self._stack: list[str] = []
        self._listener = _Listener(self)
        self._installed = False
        self._outer_cpu0 = 0.0          # process CPU time when the outermost compile under way began
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self._installed:
            numba_event.register("numba:compile", self._listener)
            numba_event.register("numba:run_pass", self._listener)
            self._installed = True
            self._stopped.clear()
            self._thread = threading.Thread(target=self._watchdog, name="aegis-compile-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._installed:
            numba_event.unregister("numba:compile", self._listener)
            numba_event.unregister("numba:run_pass", self._listener)
            self._installed = False
        self.stop_watchdog()

    def stop_watchdog(self) -> None:
        """Compile events are still reported; the CPU watchdog thread ends."""
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2 * self.POLL_S)
        self._thread = None

    def _watchdog(self) -> None:
        last = time.process_time()
        while not self._stopped.wait(self.POLL_S):
            now = time.process_time()
            if self._stack and now - last > 0.01 and now - self._outer_cpu0 < self.COMPILE_CPU_LIMIT_S:
                self._beat()
            last = now

    def _on(self, ev, start: bool) -> None:
        if ev.kind == "numba:compile":
            # compiles nest (a function compiles what it calls first): the outermost one is what was asked for
            if start:
                py = ev.data["dispatcher"].py_func
                if not self._stack:
                    self._outer_cpu0 = time.process_time()
                self._stack.append(f"{py.__module__}.{py.__qualname__}")
            else:
                self.compiled += 1
                if self._stack:
                    self.last_done = self._stack.pop()
            self.current = self.describe(self._stack)
            self._report(self.current, self.compiled)
        else:
            self._beat()

    @staticmethod
    def describe(stack: list) -> str:
        """'compiling outer' or 'compiling outer (now inner)' for a stack of nested compiles, outermost first ('' when
        nothing is compiling)."""
        if not stack:
            return ""
        inner = f" (now {stack[-1].rsplit('.', 1)[-1]})" if len(stack) > 1 else ""
        return f"compiling {stack[0]}{inner}"


class _Listener(Listener):
    def __init__(self, watch: CompileWatch):
        self.watch = watch

    def on_start(self, event):
        self.watch._on(event, True)

    def on_end(self, event):
        self.watch._on(event, False)


class StartupProgress:
    """A starting process's progress in its control slots (control.R_START_*): the step, what is being done, how
    many functions are compiled, and a heartbeat on every bit of progress. The supervisor's start-up watch reads
    them: a process that keeps reporting is alive however long it compiles."""

    def __init__(self, ctl: np.ndarray, role: int):
        self.ctl = ctl
        self.base = control.base(role)
        self.role = role
        self._last_ns = time.monotonic_ns()
        self.watch = CompileWatch(self._report, self.beat)
        self._running = False
        self._what = ""

    def beat(self) -> None:
        # a plain store, not control.beat: this runs inside the compiler, where calling jitted code could compile
        now = time.monotonic_ns()
        b = self.base
        if now - self._last_ns > self.ctl[b + control.R_START_SILENCE_NS]:
            self.ctl[b + control.R_START_SILENCE_NS] = now - self._last_ns
        self._last_ns = now
        self.ctl[b + control.R_HEARTBEAT] = now

    def running(self) -> None:
        """Start-up is over. A compile from now on is one the warm-up missed: it stalls the hot loop (seconds on a
        cold cache), so each is named on stderr, once, and counted in R_START_COMPILED."""
        self.watch.stop_watchdog()
        self._running = True

    def _report(self, text: str, compiled: int) -> None:
        if self._running:
            if compiled > self.ctl[self.base + control.R_START_COMPILED]:
                self.ctl[self.base + control.R_START_COMPILED] = compiled
                print(f"aegis: {control.ROLES[self.role]}: compiled {self.watch.last_done} while running (its "
                      "warm-up missed it; the run stalled meanwhile)", file=sys.stderr, flush=True)
            return
        self.ctl[self.base + control.R_START_COMPILED] = compiled
        shown = f"{self._what}: {text}" if self._what and text else self._what or text
        control.write_text(self.ctl, self.role, shown)
        self.beat()

    def step(self, k: int, n: int, what: str, phase: int = control.PH_PREPARING) -> None:
        self.watch.start()
        self._what = what
        b = self.base
        self.ctl[b + control.R_START_STEP] = k
        self.ctl[b + control.R_START_STEPS] = n
        self.ctl[b + control.R_START_PHASE] = phase
        control.write_text(self.ctl, self.role, what)
        self.beat()

    def stop(self) -> None:
        self.watch.stop()


def pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def die_with_parent(sig: int = SUPERVISOR_DIED) -> bool:
    """Ask the kernel to send `sig` to this process when the thread that created it exits (PR_SET_PDEATHSIG), so a
    supervisor killed with SIGKILL never leaves an engine process trading unsupervised. A handled signal, not SIGKILL:
    the process then stops in order and the Brain cancels its open orders. The supervisor starts its children from
    its main thread, so that thread's exit is the supervisor's. False when the call is not available."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_timer_slack(ns: int = 1) -> None:
    """Let nanosleep wake when asked: the default 50 us slack would dominate the sleep wait strategy."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def enter(spec: ProcessSpec) -> ProcessContext:
    """Common start of an engine process. Signals: the supervisor owns Ctrl-C (the terminal sends SIGINT to the whole
    process group; the children ignore it and stop when the supervisor asks), SIGTERM to a child stops the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin(spec.core)
    set_timer_slack()
    ctx = ProcessContext(spec)

    def stop_now():
        control.request_stop(ctx.control)
        if ctx.slot(control.R_STATE) < control.ST_RUNNING:
            # still starting (compiling, connecting): nothing to finish in order, and the start-up code does not
            # look at the stop flag, so leave now instead of after the supervisor's stop timeout
            raise KeyboardInterrupt

    def on_term(signum, frame):
        if not ctx.control[control.G_STOP_BY]:
            ctx.control[control.G_STOP_BY] = ctx.role + 1     # the supervisor names who got the signal
        stop_now()

    def on_supervisor_death(signum, frame):
        ctx.supervisor_died = True    # said by the next stopping(): printing here could re-enter a half-done print
        stop_now()

    # the handlers' jitted calls are loaded here: loaded in a handler, a second signal (a killed supervisor's death
    # signal comes once per exiting thread of it) re-entered Numba's loader mid-load and the process died unordered
    control.request_stop(np.zeros_like(ctx.control))
    ctx.slot(control.R_STATE)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(SUPERVISOR_DIED, on_supervisor_death)
    die_with_parent()
    if ctx.orphaned():    # the supervisor died before the death signal was armed
        ctx.stopping()
    ctx.set(control.R_PID, os.getpid())
    ctx.set(control.R_CORE, -1 if spec.core is None else spec.core)
    ctx.set(control.R_WAIT, spec.wait)
    ctx.set_state(control.ST_STARTING)
    ctx.progress.watch.start()
    ctx.heartbeat()
    return ctx


def freeze_gc() -> None:
    """Called right before a hot loop: everything allocated so far is long-lived, and a collection pause in the
    loop would be a latency spike of milliseconds."""
    gc.collect()
    gc.freeze()
    gc.disable()
