"""Feed and Brain run without any event loop: asyncio is never imported by the engine processes."""
from __future__ import annotations

import multiprocessing as mp
import sys
import time

import numpy as np
import pytest

from aegis.core import control
from aegis.core import shm
from aegis.core.config import EngineConfig
from aegis.core.startup import ProcessSpec
from aegis.core.ring import Ring
from aegis.core.shm import Segment

pytestmark = [pytest.mark.time_limit(120), pytest.mark.usefixtures("compiled_order_path")]


def _probe(role: str, spec: ProcessSpec, q) -> None:
    import importlib
    module = importlib.import_module(f"aegis.{role}.process")
    module.run(spec)
    q.put(sorted(m for m in sys.modules if m.split(".")[0] in ("asyncio", "uvloop", "trio", "anyio")))


def test_feed_and_brain_processes_never_import_an_event_loop():
    run_id = shm.new_run_id()
    ring = Ring.create(shm.segment_name(run_id, "ring"), 4096)
    ctl_seg = Segment.create(shm.segment_name(run_id, "control"), control.SLOTS * 8)
    ctl = ctl_seg.view(np.int64, 0, control.SLOTS)
    control.init(ctl, time.monotonic_ns())
    cfg = EngineConfig(source="synthetic", sections={"feed": {"synthetic_rate": 10_000}})
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = []
    try:
        for role in ("brain", "feed"):
            spec = ProcessSpec(run_id, role, None, 2, ring.segment.name, ctl_seg.name, None, cfg)
            p = ctx.Process(target=_probe, args=(role, spec, q))
            p.start()
            procs.append(p)
        end = time.monotonic() + 90
        while time.monotonic() < end and ctl[control.base(control.ROLE_BRAIN) + control.R_RECORDS] == 0:
            time.sleep(0.05)
        assert ctl[control.base(control.ROLE_BRAIN) + control.R_RECORDS] > 0
        control.request_stop(ctl)
        loaded = [q.get(timeout=30), q.get(timeout=30)]
        assert loaded == [[], []]
    finally:
        control.request_stop(ctl)
        ring.abort()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        ctl = None
        for seg in (ring.segment, ctl_seg):
            ring.header = ring.records = None
            seg.close()
            seg.unlink()
