"""Clock, pause, yield and sleep as cacheable @njit intrinsics.

They call libc by symbol name from the generated code instead of through ctypes function pointers: a ctypes
pointer is a per-process address that Numba cannot put in its on-disk cache, and every spawned engine process
would then recompile its hot loops. All timestamps are CLOCK_MONOTONIC nanoseconds, which on Linux are
comparable between processes on the same host (that is what makes cross-process latency measurable).
"""
from __future__ import annotations

import platform
import time

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from aegis.core.jit import njit

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_TIMESPEC = ir.LiteralStructType([_I64, _I64])  # struct timespec on LP64 Linux: tv_sec, tv_nsec
_IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _clock_codegen(clock_id):
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_I32, _TIMESPEC.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        builder.call(fn, [ir.Constant(_I32, clock_id), ts])
        sec = builder.load(builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)]))
        nsec = builder.load(builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(_I64, 1_000_000_000)), nsec)

    return codegen


@intrinsic
def _clock_monotonic_ns(typingctx):
    return types.int64(), _clock_codegen(CLOCK_MONOTONIC)


@intrinsic
def _clock_realtime_ns(typingctx):
    return types.int64(), _clock_codegen(CLOCK_REALTIME)


@intrinsic
def _pause(typingctx):
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _IS_X86:
            # PAUSE tells the core this is a spin-wait: it saves power and, on SMT, gives the sibling thread
            # the pipeline; it also avoids the memory-order mis-speculation flush when the cursor changes.
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _sched_yield(typingctx):
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, []), "sched_yield")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def _nanosleep(typingctx, ns):
    if not isinstance(ns, types.Integer):
        return None
    sig = types.int32(ns)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_TIMESPEC.as_pointer(), _TIMESPEC.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "nanosleep")
        n = context.cast(builder, args[0], signature.args[0], types.int64)
        billion = ir.Constant(_I64, 1_000_000_000)
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        builder.store(builder.sdiv(n, billion), builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 0)]))
        builder.store(builder.srem(n, billion), builder.gep(ts, [ir.Constant(_I32, 0), ir.Constant(_I32, 1)]))
        return builder.call(fn, [ts, ir.Constant(_TIMESPEC.as_pointer(), None)])

    return sig, codegen


@njit(cache=True, nogil=True)
def now_ns() -> int:
    """CLOCK_MONOTONIC in ns (same clock as time.monotonic_ns())."""
    return _clock_monotonic_ns()


@njit(cache=True, nogil=True)
def wall_ns() -> int:
    """CLOCK_REALTIME in ns (same clock as time.time_ns()): only for exchange timestamps, never for latency."""
    return _clock_realtime_ns()


@njit(cache=True, nogil=True)
def cpu_relax() -> None:
    _pause()


@njit(cache=True, nogil=True)
def yield_cpu() -> None:
    _sched_yield()


@njit(cache=True, nogil=True)
def sleep_ns(ns: int) -> None:
    _nanosleep(ns)


def py_now_ns() -> int:
    """The same clock from plain Python (edges only: sockets, supervisor)."""
    return time.monotonic_ns()
