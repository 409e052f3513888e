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
