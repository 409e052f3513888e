"""Test helper: run `python -m aegis ...` in a subprocess and look into its control block while it runs."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

import numpy as np

from aegis.core import control
from aegis.core import shm

RUN_LINE = re.compile(r"aegis: run (\S+):")


class EngineRun:
    def __init__(self, *args: str, env: dict | None = None, fsize_limit: int | None = None):
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()

        def limits():   # RLIMIT_FSIZE: no file of the run may grow past this (a disk that fills up)
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

        self.proc = subprocess.Popen([sys.executable, "-m", "aegis", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     env={**os.environ, **(env or {})},
                                     preexec_fn=limits if fsize_limit is not None else None)
        threading.Thread(target=self._pump, daemon=True).start()
        self.run_id: str | None = None
        self._seg = None
        self.ctl = None

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        rx = re.compile(pattern)
        for line in self.lines:
            if rx.search(line):
                return line
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self._q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if rx.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n" + "\n".join(self.lines))

    def wait_running(self, timeout: float = 90) -> None:
        """Until both engine processes report RUNNING in the control block."""
        line = self.wait_for(RUN_LINE.pattern, timeout)
        self.run_id = RUN_LINE.search(line).group(1)
        self._seg = shm.Segment.attach(shm.segment_name(self.run_id, "control"))
        self.ctl = self._seg.view(np.int64, 0, control.SLOTS)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self.state(r) == control.ST_RUNNING for r in (control.ROLE_FEED, control.ROLE_BRAIN)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("engine did not reach RUNNING; output:\n" + "\n".join(self.lines))

    def state(self, role: int) -> int:
        return int(self.ctl[control.base(role) + control.R_STATE])

    def pid(self, role: int) -> int:
        return int(self.ctl[control.base(role) + control.R_PID])

    def segments(self) -> list[str]:
        return shm.list_segments(self.run_id)

    def finish(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.release()

    def release(self):
        self.ctl = None
        if self._seg is not None:
            self._seg.close()
            self._seg = None

    def kill(self):
        self.release()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)
