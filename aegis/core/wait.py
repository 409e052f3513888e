"""Wait strategies for every spin loop in the engine (the Disruptor's pluggable waiting, as @njit code).

A consumer that finds nothing to do calls `idle(strategy, spins)` with the number of consecutive empty polls
so far; the strategy decides how much CPU to give back. Busy-spin gives the lowest latency and burns a whole
core, which is only acceptable when the process owns that core; on a box with fewer cores than busy processes
it starves everything else (CI included), which is why `auto` exists.
"""
from __future__ import annotations

import os

from numba import njit

from aegis.core.clock import cpu_relax, sleep_ns, yield_cpu

BUSY_SPIN = 0
SPIN_YIELD = 1
SLEEP = 2

NAMES = {"busy-spin": BUSY_SPIN, "spin-yield": SPIN_YIELD, "sleep": SLEEP}
CHOICES = ("auto", *NAMES)

# Spins before giving the CPU back: ~100 PAUSEs is a few microseconds on current x86, long enough to catch a
# producer that is mid-batch, short enough not to matter when it is not.
SPIN_LIMIT = 100
# The sleep strategy's nap. Linux rounds a nanosleep up by the thread's timer slack (50 us by default); the
# engine processes set their slack to 1 ns (see aegis.app.supervisor), so this is the real granularity.
SLEEP_NS = 20_000


@njit(cache=True, nogil=True)
def idle(strategy: int, spins: int) -> int:
    """Wait once; return the new count of consecutive empty polls."""
    if strategy == BUSY_SPIN or spins < SPIN_LIMIT:
        cpu_relax()
    elif strategy == SPIN_YIELD:
        yield_cpu()
    else:
        sleep_ns(SLEEP_NS)
    return spins + 1


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def resolve(name: str, engine_cores: tuple[int, ...]) -> int:
    """Map a strategy name to its constant; `auto` busy-spins only when every engine process has a core to itself.

    "To itself" means: the engine cores are distinct, and at least one usable core is left outside them for the
    supervisor, the venue, the kernel and anything else (CI). Otherwise a spinning engine process competes with
    them for a core, so `auto` sleeps between short spins instead.
    """
    if name != "auto":
        return NAMES[name]
    cores = set(usable_cores())
    distinct = len(set(engine_cores)) == len(engine_cores)
    spare = cores - set(engine_cores)
    return BUSY_SPIN if distinct and spare else SLEEP


def name_of(strategy: int) -> str:
    return {v: k for k, v in NAMES.items()}[strategy]
