"""Preallocated, process-private buffers made resident when they are created.

numpy's zeroed arrays are mapped lazily: a page costs nothing until it is first written, and then costs a page
fault. The Feed's large buffers (socket read buffers, the conflation FIFO, the parser's output, depth books) are
written deep into only when the Brain falls behind or a burst arrives, so without this their pages fault in
exactly then: on the slowest path, at the worst moment, and resident memory climbs in steps during a long run
instead of being flat from the start.
"""
from __future__ import annotations

import mmap

import numpy as np

PAGE = mmap.PAGESIZE


def prefault(*arrays: np.ndarray) -> int:
    """Write one byte of every page of each array back to itself, so all of them are resident now; the contents
    do not change. Only for arrays this process owns and no other thread or process writes yet (never shared
    memory: writing a byte back could undo a concurrent writer's store). Returns the bytes covered."""
    total = 0
    for a in arrays:
        if a.nbytes == 0:
            continue
        if not a.flags.c_contiguous:
            raise ValueError("prefault needs a contiguous array")
        flat = a.reshape(-1).view(np.uint8)
        # through a copy: numpy skips an assignment whose source and destination are the same memory
        flat[::PAGE] = flat[::PAGE].copy()
        total += a.nbytes
    return total
