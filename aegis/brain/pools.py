"""Preallocated pools of records with O(1) take/return, and cache-line aligned per-symbol state matrices.

Why pools: the Brain runs for hours with the garbage collector frozen; anything allocated per tick or per signal
would either grow the heap or bring back collection pauses. So every candle and every pending signal lives in a
structured array allocated once at start, and "allocating" one is popping an index off an intrusive free list
threaded through the records' own `next` field (CANDLE_DTYPE / SIGNAL_DTYPE in aegis.core.records).

A pool is two arrays, both usable from @njit code: `records` (the structured array) and `header` (int64 slots
below). take/give are @njit kernels generic over any record dtype with an int32 `next` field; the Python classes
are thin handles for the edges. A taken record is marked with next == TAKEN, which makes a double return or the
return of a never-taken index detectable in O(1).
"""
from __future__ import annotations

import numpy as np

from aegis.core.jit import njit
from aegis.core.records import CACHE_LINE, CANDLE_DTYPE, SIGNAL_DTYPE

END = -1      # end of the free list
TAKEN = -2    # `next` of a record that is out of the pool

# header slots
P_HEAD = 0        # first free index, END when empty
P_FREE = 1        # number of free records
P_CAPACITY = 2
P_TAKES = 3       # successful takes since creation
P_GIVES = 4
P_EXHAUSTED = 5   # takes that found the pool empty
P_BAD_GIVES = 6   # returns of an index that was not out of the pool (ignored)
HEADER_SLOTS = 8


def new_pool(dtype, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(records, header) with every record free."""
    if capacity < 1:
        raise ValueError(f"pool capacity must be >= 1, got {capacity}")
    records = aligned_zeros(capacity, dtype)
    header = np.zeros(HEADER_SLOTS, dtype=np.int64)
    reset(records, header)
    return records, header


@njit(cache=True, nogil=True)
def reset(records, header):
    """Put every record back on the free list (index order: low indices are handed out first)."""
    n = records.shape[0]
    for i in range(n):
        records[i].next = i + 1 if i + 1 < n else END
    header[P_HEAD] = 0 if n > 0 else END
    header[P_FREE] = n
    header[P_CAPACITY] = n


@njit(cache=True, nogil=True)
def take(records, header):
    """Index of a free record (its fields keep stale values: the caller initialises them), or -1 when empty."""
    i = header[P_HEAD]
    if i == END:
        header[P_EXHAUSTED] += 1
        return -1
    header[P_HEAD] = records[i].next
    header[P_FREE] -= 1
    header[P_TAKES] += 1
    records[i].next = TAKEN
    return i


@njit(cache=True, nogil=True)
def give(records, header, i):
    """Return record i to the pool; returns False (and counts it) if i was not out of the pool."""
    if i < 0 or i >= records.shape[0] or records[i].next != TAKEN:
        header[P_BAD_GIVES] += 1
        return False
    records[i].next = header[P_HEAD]
    header[P_HEAD] = i
    header[P_FREE] += 1
    header[P_GIVES] += 1
    return True


class Pool:
    """Python handle over (records, header); pass .records and .header to jitted code."""

    def __init__(self, dtype, capacity: int):
        self.records, self.header = new_pool(dtype, capacity)

    def take(self) -> int:
        return int(take(self.records, self.header))

    def give(self, i: int) -> bool:
        return bool(give(self.records, self.header, i))

    @property
    def capacity(self) -> int:
        return int(self.header[P_CAPACITY])

    @property
    def free(self) -> int:
        return int(self.header[P_FREE])

    @property
    def in_use(self) -> int:
        return self.capacity - self.free

    def stats(self) -> dict:
        h = self.header
        return {"capacity": int(h[P_CAPACITY]), "free": int(h[P_FREE]), "takes": int(h[P_TAKES]),
                "gives": int(h[P_GIVES]), "exhausted": int(h[P_EXHAUSTED]), "bad_gives": int(h[P_BAD_GIVES])}


class CandlePool(Pool):
    def __init__(self, capacity: int):
        super().__init__(CANDLE_DTYPE, capacity)


class SignalPool(Pool):
    def __init__(self, capacity: int):
        super().__init__(SIGNAL_DTYPE, capacity)


# --- per-symbol state ---------------------------------------------------------------------------------------------
def aligned_zeros(shape, dtype, align: int = CACHE_LINE) -> np.ndarray:
    """Zeroed C-contiguous array whose first byte is `align`-aligned (numpy only promises 16)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.zeros(count * dtype.itemsize + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start: start + count * dtype.itemsize].view(dtype).reshape(shape)


def row_width(slots: int) -> int:
    """Slots rounded up to whole cache lines of float64, so each symbol's row starts on its own line."""
    per_line = CACHE_LINE // 8
    return max(per_line, -(-slots // per_line) * per_line)


def state_matrix(n_symbols: int, slots: int) -> np.ndarray:
    """float64 (n_symbols, row_width(slots)) matrix, zeroed, 64-byte aligned: one row of strategy state per symbol."""
    if n_symbols < 1:
        raise ValueError(f"need at least one symbol, got {n_symbols}")
    return aligned_zeros((n_symbols, row_width(slots)), np.float64)
