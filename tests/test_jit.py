"""aegis.core.jit: the engine's jitted functions compile once per signature of types, never once per constant."""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numba
import pytest
from numba.core import types
from numba.core.dispatcher import Dispatcher as NumbaDispatcher

import aegis
from aegis.core import jit


def _engine_dispatchers():
    """(qualified name, dispatcher) of every jitted function defined in the aegis package."""
    for m in pkgutil.walk_packages(aegis.__path__, "aegis."):
        mod = importlib.import_module(m.name)
        for name, v in vars(mod).items():
            if isinstance(v, NumbaDispatcher) and v.py_func.__module__ == mod.__name__:
                yield f"{mod.__name__}.{name}", v


def _caller_of(decorator):
    @decorator
    def add(x, k):
        return x + k

    @decorator
    def caller(x):
        return add(x, 1) + add(x, 2) + add(x, 3) + add(x, x)

    return caller, add


def test_a_constant_argument_does_not_compile_a_copy_of_the_callee_per_value():
    caller, add = _caller_of(jit.njit)
    assert caller(10) == 11 + 12 + 13 + 20
    assert [tuple(map(str, s)) for s in add.signatures] == [("int64", "int64")]
    # numba's own njit, for contrast: one copy per constant, typed Literal[int](k)
    caller, add = _caller_of(numba.njit)
    assert caller(10) == 56
    assert sum(1 for s in add.signatures if isinstance(s[1], types.Literal)) == 3


def test_options_are_numbas_and_a_signature_is_refused():
    def f(x):
        return x

    d = jit.njit(cache=True, nogil=True, inline="always")(f)
    assert isinstance(d, jit.Dispatcher)
    assert d.targetoptions["nogil"] is True and d.targetoptions["inline"] == "always"
    assert d.targetoptions["nopython"] is True
    assert type(d._cache).__name__ != "NullCache"
    assert type(jit.njit(f)._cache).__name__ == "NullCache"
    assert jit.njit(f)(7) == 7
    with pytest.raises(TypeError, match="no signatures"):
        jit.njit("int64(int64)")


def test_every_jitted_function_of_the_engine_is_made_by_aegis_core_jit():
    found = dict(_engine_dispatchers())
    assert len(found) > 200          # the walk reached the package's kernels
    others = sorted(n for n, d in found.items() if not isinstance(d, jit.Dispatcher))
    assert others == [], f"jitted with numba's own njit (use aegis.core.jit.njit): {others}"


# A cold cache: loaded from Numba's cache, a caller brings its callees' code with it and their dispatchers list no
# signatures, so only a first compile shows which copies are made.
_COLD_COMPILE = r"""
import sys
import numpy as np
from numba.core import types
sys.path.insert(0, sys.argv[1])
from test_jit import _engine_dispatchers
from aegis.core.records import ORDER_REQUEST_DTYPE
from aegis.feed.process import warm_up
from aegis.trade import risk

warm_up()
book = risk.RiskBook(risk.RiskConfig(), [risk.SymbolRules("BTCUSDT")])
assert risk.check(book.rk, np.zeros(1, ORDER_REQUEST_DTYPE)[0], 0) != 0
found = dict(_engine_dispatchers())
print(len(found["aegis.trade.risk._reject"].signatures), len(found["aegis.feed.book._apply_levels"].signatures))
for n, d in found.items():
    for s in d.signatures:
        if any(isinstance(a, types.Literal) for a in s):
            print(n, tuple(map(str, s)))
"""


@pytest.mark.time_limit(240)
def test_a_first_compile_of_the_feed_and_the_risk_checks_makes_no_copy_for_a_constant(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _COLD_COMPILE, str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True, timeout=220)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    # one _reject for 26 call sites with as many reasons; one _apply_levels for the bid side (0) and a variable side
    assert lines == ["1 1"], "\n".join(lines[:20])


_CALLEE = "from aegis.core.jit import njit\n\n\n@njit(cache=True)\ndef limit():\n    return {value}\n"
_CALLER = """import sys
sys.path.insert(0, {root!r})
from aegis.core import jit
jit.SOURCE_ROOT = {root!r}          # the sources whose stamp guards the cache: here, these two files
from aegis.core.jit import njit
from callee import limit


@njit(cache=True)
def checked(x):
    return x <= limit()


print(int(checked(7)), sum(checked.stats.cache_hits.values()), sum(checked.stats.cache_misses.values()))
"""


def test_a_cached_function_compiles_again_when_a_callee_in_another_file_changes(tmp_path):
    """Numba stamps a cache with the function's own file only; the engine's stamp covers every source, so a caller
    cached in one file never runs a callee's old code from another (risk.py edited, the Brain's loop in process.py)."""
    root = str(tmp_path)
    (tmp_path / "caller.py").write_text(_CALLER.format(root=root))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run():
        out = subprocess.run([sys.executable, str(tmp_path / "caller.py")], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        return [int(x) for x in out.stdout.split()]

    (tmp_path / "callee.py").write_text(_CALLEE.format(value=10))
    assert run() == [1, 0, 1]           # 7 <= 10, compiled
    assert run() == [1, 1, 0]           # unchanged sources: loaded from the cache
    (tmp_path / "callee.py").write_text(_CALLEE.format(value=5))
    assert run() == [0, 0, 1]           # the callee changed in its own file: compiled again, new limit in force


def test_the_source_stamp_covers_every_engine_source_and_nothing_else(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("X = 1\n")
    (tmp_path / "y.py").write_text("Y = 1\n")
    first = jit.source_stamp(str(tmp_path))
    jit.source_stamp.cache_clear()
    (tmp_path / "a" / "__pycache__").mkdir()
    (tmp_path / "a" / "__pycache__" / "x.nbi").write_bytes(b"index")
    (tmp_path / "notes.txt").write_text("not a source")
    assert jit.source_stamp(str(tmp_path)) == first
    jit.source_stamp.cache_clear()
    (tmp_path / "a" / "x.py").write_text("X = 2\n")
    assert jit.source_stamp(str(tmp_path)) != first
    jit.source_stamp.cache_clear()
    d = jit.njit(cache=True)(lambda: 1)
    assert d._cache._impl.locator.get_source_stamp()[0] == jit.source_stamp(jit.SOURCE_ROOT)
