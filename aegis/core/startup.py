"""What every engine process does on start and stop, so Feed and Brain only contain their own loops."""
from __future__ import annotations

import ctypes
import gc
import os
import signal
from dataclasses import dataclass, field

import numpy as np

from aegis.core import control
from aegis.core.config import EngineConfig
from aegis.core.ring import Ring
from aegis.core.shm import Segment

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

    def stopping(self) -> bool:
        return bool(control.stop_requested(self.control))

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
        control.request_stop(ctx.control)

    signal.signal(signal.SIGTERM, on_term)
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
