"""aegis.core.borrow: a borrowed array, or a bundle of them (tuples and NamedTuples, nested), keeps its data, its
scalars and its type, and loses only the owner whose reference counting the order loop's kernels avoid."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from aegis.core.borrow import borrowed


@intrinsic
def _has_owner(typingctx, arr):
    """Test probe: is the array's owner (meminfo) set?"""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        view = cgutils.create_struct_proxy(arr)(context, builder, value=args[0])
        return builder.not_(cgutils.is_null(builder, view.meminfo))

    return types.boolean(arr), codegen


class Inner(NamedTuple):
    a: np.ndarray
    k: int


class Bundle(NamedTuple):
    x: np.ndarray
    inner: Inner
    f: float
    pair: tuple
    on: bool
    name: str


@njit
def _use(b):
    c = borrowed(b)
    c.x[0] = 5.0
    c.inner.a[1] = c.inner.k
    c.pair[1][0] = c.f
    owners = (_has_owner(b.x), _has_owner(c.x), _has_owner(c.inner.a), _has_owner(c.pair[0]),
              _has_owner(c.pair[1]))
    return owners, c.inner.k, c.f, c.on, c.name


def test_a_borrowed_bundle_writes_through_keeps_its_scalars_and_drops_every_owner():
    b = Bundle(np.zeros(3), Inner(np.zeros(2, np.int64), 7), 2.5, (np.zeros(1), np.zeros(2)), True, "ab" * 40)
    for _ in range(1000):    # a member that keeps its owner (the string) must not lose a reference per call
        owners, k, f, on, name = _use(b)
    assert owners == (True, False, False, False, False)
    assert (k, f, on, name) == (7, 2.5, True, "ab" * 40)
    assert b.x[0] == 5.0 and b.inner.a[1] == 7 and b.pair[1][0] == 2.5


@njit
def _one(a):
    v = borrowed(a)
    v[0] = 1
    return _has_owner(a), _has_owner(v)


def test_a_borrowed_array_is_the_same_memory_without_an_owner():
    a = np.zeros(4, np.int64)
    assert _one(a) == (True, False)
    assert a[0] == 1
