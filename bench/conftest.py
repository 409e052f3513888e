"""What every bench's JSON carries besides pytest-benchmark's own fields, for scripts/bench_results.py: the command
that produced it, the load average around it, the CPU, and whether it was a smoke run (benchmode.SMOKE: such
figures are refused)."""
from __future__ import annotations

import os
import platform
import shlex
import sys

from benchmode import SMOKE

_LOAD_AT_START = os.getloadavg()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["aegis"] = {
        "smoke": SMOKE,
        "command": "python -m pytest " + shlex.join(sys.argv[1:]),
        "loadavg_start": list(_LOAD_AT_START),
        "loadavg_end": list(os.getloadavg()),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
    }
    for b in output_json["benchmarks"]:
        b["extra_info"]["smoke"] = SMOKE
