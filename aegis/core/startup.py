"""What every engine process does on start and stop, so Feed and Brain only contain their own loops."""
from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from aegis.core import control
from aegis.core.config import EngineConfig
from aegis.core.ring import Ring
from aegis.core.shm import Segment

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29


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

    @property
    def role_id(self) -> int:
        return control.ROLES.index(self.role)


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

    def orphaned(self) -> bool:
        """The supervisor is gone (we were re-parented): nobody watches this process any more."""
        return os.getppid() != self.parent_pid

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
        control.set_slot(self.control, self.role, control.R_STATE, state)

    def slot(self, slot: int) -> int:
        return int(control.get_slot(self.control, self.role, slot))

    def set(self, slot: int, value: int) -> None:
        control.set_slot(self.control, self.role, slot, value)

    def close(self) -> None:
        self.ring.close()
        self.control = self.control_f = self.latency = None
        self._ctl_seg.close()
        if self._lat_seg:
            self._lat_seg.close()


def pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when the thread that created it exits (PR_SET_PDEATHSIG), so a
    supervisor killed with SIGKILL never leaves an engine process trading unsupervised. SIGTERM, not SIGKILL: the
    process then stops in order and the Brain cancels its open orders. False when the call is not available."""
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

    def on_term(signum, frame):
        if not ctx.control[control.G_STOP_BY]:
            ctx.control[control.G_STOP_BY] = ctx.role + 1     # the supervisor names who got the signal
        control.request_stop(ctx.control)
        if ctx.slot(control.R_STATE) < control.ST_RUNNING:
            # still starting (compiling, connecting): nothing to finish in order, and the start-up code does not
            # look at the stop flag, so leave now instead of after the supervisor's stop timeout
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    die_with_parent()
    if ctx.orphaned():    # the supervisor died before the death signal was armed
        ctx.stopping()
    ctx.set(control.R_PID, os.getpid())
    ctx.set(control.R_CORE, -1 if spec.core is None else spec.core)
    ctx.set(control.R_WAIT, spec.wait)
    ctx.set_state(control.ST_STARTING)
    ctx.heartbeat()
    return ctx


def freeze_gc() -> None:
    """Called right before a hot loop: everything allocated so far is long-lived, and a collection pause in the
    loop would be a latency spike of milliseconds."""
    gc.collect()
    gc.freeze()
    gc.disable()
