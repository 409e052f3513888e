"""Acquire/release loads and stores on int64 arrays, callable from @njit code.

Why an intrinsic: inside a jitted spin loop a plain `arr[i]` load of a cursor written by another process is
loop-invariant as far as LLVM knows, so it is hoisted out of the loop and the loop never sees the new value.
An LLVM `load atomic ... acquire` cannot be hoisted, and pairs with the writer's `store atomic ... release`
so that everything written before the release (the records) is visible after the acquire (the cursor).
On x86-64 both compile to plain MOVs; the ordering constraint is on the compiler, which is what we need.
"""
from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _item_pointer(context, builder, aryty, ary_val, idx):
    ary = context.make_array(aryty)(context, builder, ary_val)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


def _is_int64_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


@intrinsic
def load_acquire(typingctx, arr, idx):
    """arr[idx] with acquire ordering (arr: 1-D int64)."""
    if not _is_int64_array(arr) or not isinstance(idx, types.Integer):
        return None
    sig = types.int64(arr, idx)

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return sig, codegen


@intrinsic
def store_release(typingctx, arr, idx, value):
    """arr[idx] = value with release ordering (arr: 1-D int64)."""
    if not _is_int64_array(arr) or not isinstance(idx, types.Integer) or not isinstance(value, types.Integer):
        return None
    sig = types.void(arr, idx, value)

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fetch_add(typingctx, arr, idx, value):
    """Atomically add to arr[idx] and return the old value (sequentially consistent).

    Used only for counters that more than one thread may bump (never on the ring's hot path, which has a single
    writer per cursor and needs no read-modify-write).
    """
    if not _is_int64_array(arr) or not isinstance(idx, types.Integer) or not isinstance(value, types.Integer):
        return None
    sig = types.int64(arr, idx, value)

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, ordering="seq_cst")

    return sig, codegen


@intrinsic
def compare_and_swap(typingctx, arr, idx, expected, value):
    """arr[idx] = value if it holds `expected` (sequentially consistent); True if it did."""
    if not _is_int64_array(arr) or not all(isinstance(x, types.Integer) for x in (idx, expected, value)):
        return None
    sig = types.boolean(arr, idx, expected, value)

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        exp = context.cast(builder, args[2], signature.args[2], types.int64)
        val = context.cast(builder, args[3], signature.args[3], types.int64)
        pair = builder.cmpxchg(ptr, exp, val, ordering="seq_cst", failordering="seq_cst")
        return builder.extract_value(pair, 1)

    return sig, codegen
