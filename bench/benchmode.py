"""Full or smoke mode for every bench.

AEGIS_BENCH_SMOKE=1 runs each bench once on small inputs (tests/test_bench_smoke.py does, so a bench that no longer
runs fails CI). Figures from a smoke run mean nothing: bench/conftest.py marks them in the JSON and
scripts/bench_results.py refuses to publish them.
"""
from __future__ import annotations

import os

SMOKE = os.environ.get("AEGIS_BENCH_SMOKE", "") not in ("", "0")


def size(full, smoke):
    """`full` normally, `smoke` in smoke mode."""
    return smoke if SMOKE else full



def timing(benchmark):
    """The bench's timing statistics (min, mean, median, data...), or None when pytest-benchmark ran the function
    once untimed (`--benchmark-disable`, for a quick check that benches still run): a bench then reports no figure
    rather than failing."""
    stats = getattr(benchmark, "stats", None)
    return stats.stats if stats is not None else None
