"""Wait strategies for every spin loop in the engine: the Disruptor's pluggable waiting, as @njit code.

One family, four strategies, each with a wait (the consumer that found nothing to do) and a signal (the producer
after it published):

    busy-spin   wait: a PAUSE; signal: nothing. Lowest latency, burns the whole core, so only with a core of its own.
    spin-yield  wait: spin briefly, then sched_yield; signal: give the core to a consumer that waits on this very
                core (the header's W_YIELD_TO), so a same-core hand-off switches at once.
    sleep       wait: spin briefly, then a 20 us nanosleep; signal: nothing. Least CPU of the polling strategies.
    block       wait: spin briefly, then park on a futex in the ring header; signal: wake it if (and only if) it is
                parked. ~0 CPU while idle; the wake-up costs a syscall on both sides.

`idle(strategy, spins)` is the wait of the engine's market ring (Feed -> Brain), whose producer never signals, so
that ring offers the three polling strategies (CHOICES). The Brain -> sender order queue uses all four
(aegis.trade.sender): `wait_step` and `signal` on the queue's ring header.

Busy-spin on a box with fewer cores than busy processes starves everything else (CI included), which is why `auto`
exists.
"""
from __future__ import annotations

import os
import platform
import time

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from aegis.core.atomics import fetch_add, load_acquire, store_release
from aegis.core.clock import cpu_relax, sleep_ns, yield_cpu
from aegis.core.jit import njit

BUSY_SPIN = 0
SPIN_YIELD = 1
SLEEP = 2
BLOCK = 3

NAMES = {"busy-spin": BUSY_SPIN, "spin-yield": SPIN_YIELD, "sleep": SLEEP, "block": BLOCK}
CHOICES = ("auto", "busy-spin", "spin-yield", "sleep")   # the market ring's: its producer does not signal

# Spins before giving the CPU back: ~100 PAUSEs is a few microseconds on current x86, long enough to catch a
# producer that is mid-batch, short enough not to matter when it is not.
SPIN_LIMIT = 100
# The sleep strategy's nap. Linux rounds a nanosleep up by the thread's timer slack (50 us by default); the
# engine processes set their slack to 1 ns (see aegis.app.supervisor), so this is the real granularity.
SLEEP_NS = 20_000

# Slots of a ring header (aegis.core.ring) that belong to the wait strategy; the ring's own slots are below 48.
W_SLEEPING = 48       # own cache line: 1 while the consumer is parked on the futex (block)
W_WAKES = 56          # FUTEX_WAKE calls the producer made (diagnostics)
W_PARKS = 57          # times the consumer parked
W_YIELD_TO = 58       # 1: the consumer waits on the producer's core (spin-yield), so the producer yields after
                      # publishing and the consumer runs at once (a same-core switch: no inter-core interrupt)

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_TIMESPEC = ir.LiteralStructType([_I64, _I64])
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower(), 202)
FUTEX_WAIT_PRIVATE = 0 | 128
FUTEX_WAKE_PRIVATE = 1 | 128


@intrinsic
def futex(typingctx, arr, idx, op, val, timeout_ns):
    """syscall(SYS_futex, &arr[idx], op, val, &timeout) by symbol name (cacheable, like aegis.core.clock)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, idx, op, val, timeout_ns)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        t = context.cast(builder, args[4], signature.args[4], types.int64)
        billion = ir.Constant(_I64, 1_000_000_000)
        builder.store(builder.sdiv(t, billion), builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)]))
        builder.store(builder.srem(t, billion), builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 1)]))
        op = context.cast(builder, args[2], signature.args[2], types.int64)
        val = context.cast(builder, args[3], signature.args[3], types.int64)
        # the futex word is the low 32 bits of the int64 slot (little-endian); only 0 and 1 are ever stored there
        return builder.call(fn, [ir.Constant(_I64, _SYS_FUTEX), builder.ptrtoint(ptr, _I64), op, val,
                                 builder.ptrtoint(ts, _I64), ir.Constant(_I64, 0), ir.Constant(_I64, 0)])

    return sig, codegen


@njit(cache=True, nogil=True)
def idle(strategy: int, spins: int) -> int:
    """Wait once (a consumer whose producer does not signal); return the new count of consecutive empty polls."""
    if strategy == BUSY_SPIN or spins < SPIN_LIMIT:
        cpu_relax()
    elif strategy == SPIN_YIELD:
        yield_cpu()
    else:
        sleep_ns(SLEEP_NS)
    return spins + 1


@njit(cache=True, nogil=True)
def wait_step(strategy, header, cursor, seen, abort, timeout_ns):
    """One wait of a consumer past its spin phase, on a ring header whose producer signals: until header[cursor]
    moves off `seen` or header[abort] is set (block re-checks both after announcing itself, so a signal between
    the consumer's last look and its park is never lost: the producer's locked read of W_SLEEPING and the
    consumer's locked announce order each other), or at most timeout_ns."""
    if strategy == BUSY_SPIN:
        cpu_relax()
    elif strategy == SPIN_YIELD:
        yield_cpu()
    elif strategy == SLEEP:
        sleep_ns(SLEEP_NS)
    else:
        fetch_add(header, W_SLEEPING, 1)
        if load_acquire(header, cursor) == seen and load_acquire(header, abort) == 0:
            header[W_PARKS] += 1
            futex(header, W_SLEEPING, FUTEX_WAIT_PRIVATE, 1, timeout_ns)
        store_release(header, W_SLEEPING, 0)


@njit(cache=True, nogil=True)
def signal(header):
    """Producer side, after publishing: wake the consumer if (and only if) it is parked (block), and hand it the
    core when it waits on this one (spin-yield sharing the producer's core, W_YIELD_TO)."""
    if fetch_add(header, W_SLEEPING, 0) != 0:   # locked RMW: orders the publish before this read (Dekker)
        store_release(header, W_SLEEPING, 0)
        header[W_WAKES] += 1
        futex(header, W_SLEEPING, FUTEX_WAKE_PRIVATE, 1, 0)
    if load_acquire(header, W_YIELD_TO) != 0:
        yield_cpu()


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


# `auto` without a spare core: the box counts as idle (spin-yield) when the rest of the machine used less than this
# share of the usable cores while the supervisor started. Measured on this 2-core box (bench/MEASURED.md,
# 2026-12-07): idle, spin-yield gave tick-to-trade p50 53-57 us and p99 3.6 ms against 303-487 us and 4.9-5.3 ms
# sleeping, with the shell as responsive; with other work on the cores its tail was the worse one (p99 83 ms against
# 5 ms at load 1.6-2.7, 94740c3), so a busy box keeps sleeping. A look at the present, not a load average: a run
# started right after another must not count that run's spinning as someone else's work.
IDLE_SHARE = 0.15
MIN_LOOK_S = 0.1


def busy_seconds(stat: str, cores) -> float:
    """CPU seconds the given cores spent on anything but idling, from the text of /proc/stat (per-CPU lines; time
    the hypervisor stole is not work of this machine)."""
    hz = os.sysconf("SC_CLK_TCK")
    want = {f"cpu{c}" for c in cores}
    total = 0
    for line in stat.splitlines():
        f = line.split()
        if f and f[0] in want:
            user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f[1:8])
            total += user + nice + system + irq + softirq
    return total / hz


def own_cpu_seconds() -> float:
    """CPU time of this process and of its live children (e.g. multiprocessing's resource tracker, started when the
    first shared-memory segment is registered)."""
    import psutil
    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class BoxLook:
    """What the rest of the machine does with the CPUs while this process starts: the usable cores' busy time
    (/proc/stat) minus the CPU time of this process and its children, from construction to verdict()."""

    def __init__(self):
        self.cores = usable_cores()
        self._t0, self._own0, self._busy0 = time.monotonic(), own_cpu_seconds(), self._busy()
        self._verdict: tuple[bool, str] | None = None

    def _busy(self) -> float | None:
        try:
            with open("/proc/stat") as f:
                return busy_seconds(f.read(), self.cores)
        except OSError:
            return None

    def verdict(self) -> tuple[bool, str]:
        """(idle, why): idle when the others used under IDLE_SHARE of the cores (looked at for MIN_LOOK_S at least).
        The first call decides; later ones repeat it."""
        if self._verdict is None:
            self._verdict = self._look()
        return self._verdict

    def _look(self) -> tuple[bool, str]:
        left = MIN_LOOK_S - (time.monotonic() - self._t0)
        if left > 0:
            time.sleep(left)
        busy = self._busy()
        if busy is None or self._busy0 is None:
            return False, "busy box assumed: /proc/stat unreadable"
        elapsed = time.monotonic() - self._t0
        share = max(0.0, (busy - self._busy0) - (own_cpu_seconds() - self._own0)) / (elapsed * len(self.cores))
        return judge(share, elapsed)


def judge(share: float, elapsed: float) -> tuple[bool, str]:
    """The verdict on a share of the cores the rest of the machine used, and the words the run line prints."""
    idle = share < IDLE_SHARE
    return idle, f"{'idle' if idle else 'busy'} box: others used {share:.0%} of the cores over {elapsed:.2f}s"


def resolve(name: str, engine_cores: tuple[int, ...], look: "BoxLook | None" = None) -> int:
    """Map a strategy name to its constant. `auto`: busy-spin when every engine process has a core to itself;
    otherwise spin-yield on an idle box and sleep on a busy one (`look`'s verdict; a fresh look when None).

    "To itself" means: the engine cores are distinct, and at least one usable core is left outside them for the
    supervisor, the venue, the kernel and anything else (CI). Otherwise an engine process shares its core. A
    yielding one gives the core to anything runnable at once, so on an idle box it costs nothing but power and
    answers in microseconds; where other work keeps the cores busy, sleeping between short spins is kinder to it and
    has the shorter tail.
    """
    if name != "auto":
        return NAMES[name]
    cores = set(usable_cores())
    distinct = len(set(engine_cores)) == len(engine_cores)
    spare = cores - set(engine_cores)
    if distinct and spare:
        return BUSY_SPIN
    return SPIN_YIELD if (look or BoxLook()).verdict()[0] else SLEEP


def name_of(strategy: int) -> str:
    return {v: k for k, v in NAMES.items()}[strategy]
