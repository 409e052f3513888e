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

Numba's cache also needs one change. It keeps each function's machine code under a stamp of that function's own
source file, and the machine code holds every jitted callee compiled in, from whatever file. Edit `risk.py` alone and
the Brain's loop, cached under `process.py`, still runs the old risk check on the next start (Numba's "Notes on
Caching" lists it among the cache's limitations: a change to a symbol defined in another file does not invalidate
the cache). For a trading engine that is stale risk code after a `git pull` into an editable install. The engine's
functions are therefore cached under a stamp of the package's sources as a whole plus their own file: any change to
any engine source makes every cached function compile again once (a first start's ~40 s), and nothing stale is ever
loaded.
"""
from __future__ import annotations

import functools
import hashlib
import os

from numba.core import caching, config, types
from numba.core.registry import CPUDispatcher

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the aegis package


@functools.cache
def source_stamp(root: str = SOURCE_ROOT) -> bytes:
    """SHA-256 of every .py file under root (relative path and content, in a fixed order); read once per process."""
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(d, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.digest()


class _PackageStamped:
    """Mixin for Numba's cache locators: the stamp a cached function is checked against is the engine's sources as a
    whole, plus the function's own file (a bench or a test outside the package)."""

    def get_source_stamp(self):
        return source_stamp(SOURCE_ROOT), super().get_source_stamp()


class _CacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [type(c.__name__, (_PackageStamped, c), {"__module__": __name__})
                        for c in caching.CacheImpl._locator_classes]


class _FunctionCache(caching.FunctionCache):
    _impl_class = _CacheImpl


class Dispatcher(CPUDispatcher):
    """Numba's CPU dispatcher, typing the calls other jitted code makes by the arguments' non-literal types."""

    def enable_caching(self):
        self._cache = _FunctionCache(self.py_func)

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
