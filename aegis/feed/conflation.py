"""The Feed's conflation buffer: what happens to market records when the ring has no room.

While the ring has room, records go straight in, in arrival order. When it is full (the Brain is behind), new
records queue in a preallocated pending FIFO, still in arrival order, and the FIFO drains into the ring as soon
as slots free up -- before anything newer is written, so the Brain always sees records in arrival order.

Inside the FIFO:
- Quotes (KIND_QUOTE) and mark prices (KIND_MARK) CONFLATE per symbol: only the latest one of each symbol
  waits. A newer quote marks the waiting one dead and takes its place at the end of the queue with
  FLAG_CONFLATED set; the ring header's H_CONFLATED counts every quote/mark replaced that way (they are lost on
  purpose: a stale top of book is worth nothing once a newer one exists).
- Trades, book updates, depth levels and status records are NEVER dropped: they stay in the FIFO (counted in
  `pending`, high-water mark in `pending_max`) until the ring takes them.
- If the FIFO fills with records that cannot be conflated (the Brain stalled for long under a trade burst),
  the Feed BLOCKS: it waits with its wait strategy for ring room (H_FULL_WAITS counts the episodes) and stops
  reading its sockets meanwhile, so the backlog moves into the kernel's TCP buffers and, past those, to the
  exchange (which eventually disconnects a consumer that is too slow; the Feed then reconnects and resyncs its
  books). Nothing is dropped silently; an aborted ring (shutdown) is the only way out of that wait.

Every record written gets `seq` = its position in the Feed's output (0, 1, 2, ...), so a gap in `seq` seen by a
reader means loss in the ring itself, never conflation (which happens before numbering). `pub_ts` is stamped
when the record is written.
"""
from __future__ import annotations

import numpy as np

from aegis.core import control
from aegis.core import ring
from aegis.core.clock import now_ns
from aegis.core.jit import njit
from aegis.core.records import FLAG_CONFLATED, KIND_MARK, KIND_NONE, KIND_QUOTE, MARKET_DTYPE
from aegis.core.ring import H_CAPACITY, H_CONFLATED, H_FULL_WAITS, H_WRITE
from aegis.core.wait import idle

# ctl slots
C_HEAD, C_TAIL, C_SEQ, C_PENDING, C_PENDING_MAX, C_BLOCKED, C_WRITTEN = range(7)
C_COUNT = 8


@njit(cache=True, nogil=True)
def _write_direct(header, records, src, lo, hi, ctl):
    """Write src[lo:hi] into the ring as far as room allows; returns how many were written."""
    seq0, k = ring.claim(header, hi - lo)
    if k <= 0:
        return 0
    mask = header[H_CAPACITY] - 1
    t = now_ns()
    s = ctl[C_SEQ]
    for i in range(k):
        slot = (seq0 + i) & mask
        records[slot] = src[lo + i]
        records[slot].pub_ts = t
        records[slot].seq = s + i
    ctl[C_SEQ] = s + k
    ctl[C_WRITTEN] += k
    ring.publish(header, k)
    return k


@njit(cache=True, nogil=True)
def drain(header, records, pend, ctl):
    """Move pending records into the ring while it has room (skipping conflated-away ones); returns written."""
    head = ctl[C_HEAD]
    tail = ctl[C_TAIL]
    if head == tail:
        return 0
    written = 0
    mask = header[H_CAPACITY] - 1
    while head < tail:
        free = ring.free_slots(header, tail - head)
        if free <= 0:
            break
        seq0 = header[H_WRITE]
        t = now_ns()
        k = 0
        while head < tail and k < free:
            if pend[head].kind != KIND_NONE:
                slot = (seq0 + k) & mask
                records[slot] = pend[head]
                records[slot].pub_ts = t
                records[slot].seq = ctl[C_SEQ] + k
                k += 1
                ctl[C_PENDING] -= 1
            head += 1
        if k > 0:
            ctl[C_SEQ] += k
            ctl[C_WRITTEN] += k
            written += k
            ring.publish(header, k)
    if head == tail:
        head = 0
        tail = 0
    ctl[C_HEAD] = head
    ctl[C_TAIL] = tail
    return written


@njit(cache=True, nogil=True)
def _compact(pend, ctl, slots):
    head = ctl[C_HEAD]
    tail = ctl[C_TAIL]
    w = 0
    for i in range(head, tail):
        if pend[i].kind != KIND_NONE:
            if w != i:
                pend[w] = pend[i]
            k = pend[w].kind
            if k == KIND_QUOTE:
                slots[pend[w].symbol, 0] = w
            elif k == KIND_MARK:
                slots[pend[w].symbol, 1] = w
            w += 1
    ctl[C_HEAD] = 0
    ctl[C_TAIL] = w


@njit(cache=True, nogil=True)
def push(header, records, src, n, pend, ctl, slots, wait, beat_ctl, beat_role):
    """Publish src[:n] through the conflation buffer (see module doc). Returns records written to the ring now.

    slots[symbol, 0|1] = FIFO index of that symbol's waiting quote|mark (-1: none), only valid in [head, tail).
    While blocked on a full FIFO the writer keeps its heartbeat in the control block `beat_ctl` (if non-empty)
    so the supervisor sees a process waiting for its reader, not a hung one; a stop request ends the wait.
    """
    written = drain(header, records, pend, ctl)
    i = 0
    if ctl[C_HEAD] == ctl[C_TAIL]:
        k = _write_direct(header, records, src, 0, n, ctl)
        written += k
        i = k
    cap = pend.shape[0]
    while i < n:
        if ctl[C_TAIL] == cap:
            _compact(pend, ctl, slots)
            spins = 0
            blocked = False
            last_beat = now_ns()
            while ctl[C_TAIL] == cap:
                # every pending record is a trade/book record or a latest quote: wait for the reader
                if ring.aborted(header):
                    return written
                if beat_ctl.shape[0] > 0 and (spins & 255) == 0:
                    t = now_ns()
                    if t - last_beat > 50_000_000:
                        control.beat(beat_ctl, beat_role)
                        last_beat = t
                        if control.stop_requested(beat_ctl):
                            return written
                if not blocked:
                    header[H_FULL_WAITS] += 1
                    ctl[C_BLOCKED] += 1
                    blocked = True
                w = drain(header, records, pend, ctl)
                if w > 0:
                    written += w
                    if ctl[C_HEAD] > 0:
                        _compact(pend, ctl, slots)
                else:
                    spins = idle(wait, spins)
        r = src[i]
        k = r.kind
        col = -1
        if k == KIND_QUOTE:
            col = 0
        elif k == KIND_MARK:
            col = 1
        t = ctl[C_TAIL]
        pend[t] = r
        if col >= 0:
            old = slots[r.symbol, col]
            if old >= ctl[C_HEAD] and old < t and pend[old].kind == k and pend[old].symbol == r.symbol:
                pend[old].kind = KIND_NONE
                pend[t].flags |= FLAG_CONFLATED
                header[H_CONFLATED] += 1
                ctl[C_PENDING] -= 1
            slots[r.symbol, col] = t
        ctl[C_TAIL] = t + 1
        ctl[C_PENDING] += 1
        if ctl[C_PENDING] > ctl[C_PENDING_MAX]:
            ctl[C_PENDING_MAX] = ctl[C_PENDING]
        i += 1
    return written


class ConflationBuffer:
    """Pending FIFO + per-symbol conflation slots for one ring writer."""

    def __init__(self, n_symbols: int, capacity: int = 1 << 16, beat_ctl=None, beat_role: int = 0):
        self.pend = np.zeros(capacity, MARKET_DTYPE)
        self.ctl = np.zeros(C_COUNT, np.int64)
        self.slots = np.full((n_symbols, 2), -1, np.int64)
        self.beat_ctl = beat_ctl if beat_ctl is not None else np.zeros(0, np.int64)
        self.beat_role = beat_role

    def push(self, header, records, src, n, wait) -> int:
        return int(push(header, records, src, n, self.pend, self.ctl, self.slots, wait, self.beat_ctl,
                        self.beat_role))

    def drain(self, header, records) -> int:
        return int(drain(header, records, self.pend, self.ctl))

    @property
    def pending(self) -> int:
        return int(self.ctl[C_PENDING])

    @property
    def seq(self) -> int:
        return int(self.ctl[C_SEQ])

    def stats(self) -> dict:
        c = self.ctl
        return {"pending": int(c[C_PENDING]), "pending_max": int(c[C_PENDING_MAX]),
                "blocked": int(c[C_BLOCKED]), "written": int(c[C_WRITTEN])}
