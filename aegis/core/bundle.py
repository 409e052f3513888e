"""State bundles: a process's preallocated arrays as one StructRef, so jitted code takes one argument (one unboxing on
the Python -> jitted boundary, ~30-50 ns an array here) instead of a dozen loose arrays. Reading a field in jitted
code takes a reference to it (aegis.core.borrow says what that costs and how a hot path avoids it)."""
from __future__ import annotations

from numba import types


class BundleType(types.StructRef):
    """Base of the engine's StructRef types (register each subclass with numba.experimental.structref.register)."""

    def preprocess_fields(self, fields):
        # a field typed from a literal (an int the constructor got as a constant) would make each value a new type,
        # and so a new compile
        return tuple((name, types.unliteral(t)) for name, t in fields)
