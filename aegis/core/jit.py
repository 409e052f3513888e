"""The engine's jit decorator: Numba's `njit`, with jitted callees typed by their arguments' types, not by constants.

Numba types a jitted call with a constant argument, `_reject(..., R_HALTED, 0, now)`, as a call with
`Literal[int](3)`, and compiles the callee again for every such literal: one copy per constant that any caller
passes. Nothing in the engine wants that specialisation (no `literally`, no constant used as a tuple index or a field
name), and it cost about a quarter of a first start's compiling. Measured with Numba's compile events on the
embedded-venue run, empty cache, 2 vCPUs (2026-12-07): `risk._reject` was compiled 26 times (5.8 CPU-s), each order
encoder twice, `latency.record_stage` 5 times, the venue's `_set_level` 8 times. The Brain compiled for 49 CPU-s and
the venue for 13; typed by types only, 36 and 11. Each copy was also written to, and read back from, Numba's cache.

`njit` here takes Numba's options (cache, nogil, inline, fastmath, ...) and builds the same CPU dispatcher, but for
one step: when other jitted code calls it, a literal argument type is widened to its ordinary type (int64, bool,
unicode) before the callee is looked up or compiled. Calls from Python are unchanged (Numba never specialises them
on values). Functions inlined at Numba's IR level (`inline="always"`) are not called at all, and so not concerned.
"""
from __future__ import annotations

from numba.core import config, types
from numba.core.registry import CPUDispatcher


class Dispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, typing the calls other jitted code makes by the arguments' non-literal types."""

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


def njit(func=None, *, cache: bool = False, **options):
    """`@njit` or `@njit(cache=True, nogil=True, ...)`: a `Dispatcher` in nopython mode (signatures are not taken:
    the engine compiles lazily, for the types it is called with)."""
    if func is not None and not callable(func):
        raise TypeError("aegis.core.jit.njit takes no signatures: functions compile for the types they are called with")

    def wrap(f):
        if config.DISABLE_JIT:
            return f
        disp = Dispatcher(py_func=f, locals={}, targetoptions={"nopython": True, "boundscheck": None, **options})
        if cache:
            disp.enable_caching()
        return disp

    return wrap if func is None else wrap(func)
