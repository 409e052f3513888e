"""Full or smoke mode for every bench.

AEGIS_BENCH_SMOKE=1 runs each bench once on small inputs (tests/test_bench_smoke.py does, so a bench that no longer
runs fails CI). Figures from a smoke run mean nothing: scripts/bench_results.py refuses to publish them.
"""
from __future__ import annotations

import os

SMOKE = os.environ.get("AEGIS_BENCH_SMOKE", "") not in ("", "0")


def size(full, smoke):
    """`full` normally, `smoke` in smoke mode."""
    return smoke if SMOKE else full


def record_mode(benchmark) -> None:
    """Mark a result as a smoke run in its JSON (extra_info), so it cannot be published by mistake."""
    benchmark.extra_info["smoke"] = SMOKE
