"""Borrowed arrays: a jitted view of an array, or of every array in a bundle, without an owner.

Numba counts references to an array with an atomic increment and decrement of its owner (meminfo) whenever a
variable takes it. A kernel that takes a dozen arrays out of a bundle per message pays two atomics each (the
Feed's ingest: ~40 per parsed message, ~0.15 us; replay's order loop: 7-12 pairs per simulated order and per
record while an order rests); a borrowed view has no owner, so those become no-ops (NRT skips a null owner).

Only for arrays that something else keeps alive for the whole jitted call (the object that owns the state and
passes it in) and that never escape the call (are not returned or stored anywhere that outlives it).
"""
from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _borrowable(ty) -> bool:
    if isinstance(ty, types.Array):
        return True
    if isinstance(ty, types.BaseTuple):
        return any(_borrowable(t) for t in ty.types)
    return False


def _strip(context, builder, ty, value):
    """`value` of type `ty` with the owner of every array in it nulled; everything else (scalars, field order,
    data pointers) unchanged, so the result has the same numba type and aliases the same memory. A member that is
    neither an array nor a tuple (a string, a record, a list) keeps its owner and takes a reference of its own."""
    if isinstance(ty, types.Array):
        view = cgutils.create_struct_proxy(ty)(context, builder, value=value)
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        return view._getvalue()
    if isinstance(ty, types.BaseTuple) and _borrowable(ty):
        out = value
        for i, t in enumerate(ty.types):
            out = builder.insert_value(out, _strip(context, builder, t, builder.extract_value(value, i)), i)
        return out
    # anything else is returned as a new reference, as numba expects of a function's result (a no-op for scalars)
    context.nrt.incref(builder, ty, value)
    return value


@intrinsic
def borrowed(typingctx, obj):
    """`obj` (an array, or a tuple / NamedTuple holding arrays, nested) with a null owner on every array."""
    if not _borrowable(obj):
        return None

    def codegen(context, builder, signature, args):
        return _strip(context, builder, obj, args[0])

    return obj(obj), codegen
