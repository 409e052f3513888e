"""Borrowed arrays: a jitted view of an array without an owner.

Numba counts references to an array with an atomic increment and decrement of its owner (meminfo) whenever a
variable takes it. A kernel that takes a dozen arrays out of a bundle per message pays two atomics each (the
Feed's ingest: ~40 per parsed message, ~0.15 us); a borrowed view has no owner, so those become no-ops.

Only for arrays that something else keeps alive for the whole jitted call (the object that owns the state and
passes it in) and that never escape the call (are not returned or stored anywhere that outlives it).
"""
from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def borrowed(typingctx, arr):
    """`arr` with a null owner (meminfo)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        view = cgutils.create_struct_proxy(arr)(context, builder, value=args[0])
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        return view._getvalue()

    return arr(arr), codegen
