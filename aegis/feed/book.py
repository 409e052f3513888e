"""Local L2 order books kept from the Binance futures diff-depth stream (Binance docs: "How to manage a local order book
correctly").

Futures rules, not spot: an event continues the book when its `pu` equals the `u` of the previous event
(U - pu is usually much larger than 1 on futures, so the spot rule `U == prev_u + 1` would resync constantly).

Per-symbol state machine (all state in preallocated arrays, all transitions in @njit kernels):
  BUFFERING    no usable book; events are appended to a shared pending pool; the Python side sees the symbol
               has buffered events and asks for a REST snapshot (GET /fapi/v1/depth), state -> WAIT_SNAPSHOT.
  WAIT_SNAPSHOT  still buffering, a snapshot request is in flight.
  SYNCING      snapshot (lastUpdateId L) loaded; events with u < L are dropped; the first event applied must have
               U <= L <= u (official rule) or pu == L (it directly follows the snapshot); an event with U > L
               means the snapshot is older than the stream: back to BUFFERING for a new one.
  LIVE         each event must have pu == previous u: applied, and a KIND_BOOK record (top of book + U/u/pu)
               is published, optionally one KIND_DEPTH record per changed level. An event with u <= previous u
               is a duplicate (a re-sent message or the overlap of two connections during a rotation) and is
               skipped and counted. Any other mismatch is a gap: the book is discarded (KIND_STATUS record with
               FLAG_RESYNC), the socket is kept, the event is buffered, and a new snapshot is fetched.

Levels are kept in sorted arrays per side with `cap` slots, worst first (bids ascending, asks descending) so
the best level is the last one and the frequent updates near the top move few elements; a level that would
fall beyond `cap` is the farthest from the top and is forgotten (the snapshot limit is 1000 levels).
Prices are compared as floats: aegis.feed.parse turns a decimal string into the correctly rounded double, so
"50746.30" and "50746.3" give the same key.
"""
from __future__ import annotations

import numpy as np

from aegis.core.jit import njit
from aegis.core.records import (FLAG_LAST_IN_EVENT, FLAG_RESYNC, FLAG_SNAPSHOT, KIND_BOOK, KIND_DEPTH, KIND_STATUS,
                           SIDE_BUY, SIDE_SELL)

ST_BUFFERING, ST_WAIT_SNAPSHOT, ST_SYNCING, ST_LIVE = 0, 1, 2, 3
STATE_NAMES = ("buffering", "wait-snapshot", "syncing", "live")

# per-symbol int64 state columns
S_STATE, S_LAST_U, S_SNAP_L, S_NB, S_NA, S_NPEND, S_RESYNCS, S_APPLIED, S_DUPS, S_STALE = range(10)
S_COLS = 16

# pending pool header columns
P_SYM, P_FIRST, P_LAST, P_PREV, P_EXCH, P_RECV, P_LOFF, P_LN = range(8)
# pool control slots
PC_N, PC_NL, PC_OVERFLOWS = 0, 1, 2

# on_depth results
R_APPLIED, R_BUFFERED, R_DUPLICATE, R_STALE, R_GAP, R_TOO_OLD, R_POOL_FULL = range(7)

BIDS, ASKS = 0, 1


class BookState:
    """The arrays of every symbol's book; owned by the Feed process (single writer, no locking)."""

    def __init__(self, n_symbols: int, cap: int = 1024, pool_events: int = 1 << 15, pool_levels: int = 1 << 19):
        self.n = n_symbols
        self.cap = cap
        self.st = np.zeros((n_symbols, S_COLS), np.int64)
        self.px = np.zeros((n_symbols, 2, cap), np.float64)
        self.qty = np.zeros((n_symbols, 2, cap), np.float64)
        self.pend_hdr = np.zeros((pool_events, 8), np.int64)
        self.pend_lv = np.zeros((pool_levels, 3), np.float64)
        self.pend_ctl = np.zeros(4, np.int64)

    def state(self, sym: int) -> int:
        return int(self.st[sym, S_STATE])

    def needs_snapshot(self) -> np.ndarray:
        """Symbols that buffered events and have no snapshot request in flight."""
        st = self.st
        return np.nonzero((st[:, S_STATE] == ST_BUFFERING) & (st[:, S_NPEND] > 0))[0]

    def bids(self, sym: int) -> list[tuple[float, float]]:
        """(price, qty) best first."""
        n = int(self.st[sym, S_NB])
        return list(zip(self.px[sym, BIDS, :n][::-1].tolist(), self.qty[sym, BIDS, :n][::-1].tolist()))

    def asks(self, sym: int) -> list[tuple[float, float]]:
        """(price, qty) best first."""
        n = int(self.st[sym, S_NA])
        return list(zip(self.px[sym, ASKS, :n][::-1].tolist(), self.qty[sym, ASKS, :n][::-1].tolist()))

    def resync(self, sym: int) -> None:
        """Forget the book (e.g. after a reconnect: the pu chain is broken); it rebuilds from new events."""
        reset_symbol(self.st, self.pend_hdr, self.pend_ctl, sym)

    def records_bound(self, snapshot_levels: int) -> int:
        """Upper bound of the records apply_snapshot can emit (snapshot levels + every pending event)."""
        return 2 + snapshot_levels + int(self.pend_ctl[PC_N]) + int(self.pend_ctl[PC_NL])


@njit(cache=True, nogil=True)
def set_level(px, qty, n, price, q, is_bid, cap):
    """Set one absolute level quantity in a sorted side (q == 0 removes); returns the new level count.

    Each side is kept WORST FIRST (bids ascending, asks descending) so the best level is px[n-1]: updates
    cluster near the top of the book, and there they shift only the few levels above them."""
    lo = 0
    hi = n
    while lo < hi:   # first index whose price is not worse than `price`
        mid = (lo + hi) >> 1
        if (px[mid] < price) if is_bid else (px[mid] > price):
            lo = mid + 1
        else:
            hi = mid
    if lo < n and px[lo] == price:
        if q == 0.0:
            for k in range(lo, n - 1):
                px[k] = px[k + 1]
                qty[k] = qty[k + 1]
            return n - 1
        qty[lo] = q
        return n
    if q == 0.0:
        return n   # removing a level we do not hold is normal (docs/binance-notes.md, Local order book)
    if n == cap:
        if lo == 0:
            return n   # worse than every level kept: beyond the depth we track
        # forget the worst level to make room (shifts the whole side: only happens on a full side)
        for k in range(0, lo - 1):
            px[k] = px[k + 1]
            qty[k] = qty[k + 1]
        px[lo - 1] = price
        qty[lo - 1] = q
        return n
    for k in range(n, lo, -1):
        px[k] = px[k - 1]
        qty[k] = qty[k - 1]
    px[lo] = price
    qty[lo] = q
    return n + 1


@njit(cache=True, nogil=True)
def _top_record(out, j, st, px, qty, sym, first, last, prev, exch, recv, flags):
    r = out[j]
    r.kind = KIND_BOOK
    r.symbol = sym
    r.exch_ts = exch
    r.recv_ts = recv
    r.pub_ts = 0
    r.side = 0
    r.flags = flags
    nb = st[sym, S_NB]
    na = st[sym, S_NA]
    if nb > 0:
        r.bid_px = px[sym, BIDS, nb - 1]
        r.bid_qty = qty[sym, BIDS, nb - 1]
    else:
        r.bid_px = 0.0
        r.bid_qty = 0.0
    if na > 0:
        r.ask_px = px[sym, ASKS, na - 1]
        r.ask_qty = qty[sym, ASKS, na - 1]
    else:
        r.ask_px = 0.0
        r.ask_qty = 0.0
    r.px = 0.0
    r.qty = 0.0
    r.first_id = first
    r.last_id = last
    r.prev_id = prev
    r.seq = 0


@njit(cache=True, nogil=True)
def _level_record(out, j, sym, side, price, q, first, last, prev, exch, recv, flags):
    r = out[j]
    r.kind = KIND_DEPTH
    r.symbol = sym
    r.exch_ts = exch
    r.recv_ts = recv
    r.pub_ts = 0
    r.side = side
    r.flags = flags
    r.bid_px = 0.0
    r.bid_qty = 0.0
    r.ask_px = 0.0
    r.ask_qty = 0.0
    r.px = price
    r.qty = q
    r.first_id = first
    r.last_id = last
    r.prev_id = prev
    r.seq = 0


@njit(cache=True, nogil=True)
def _status_record(out, j, sym, last, prev, exch, recv, flags):
    r = out[j]
    r.kind = KIND_STATUS
    r.symbol = sym
    r.exch_ts = exch
    r.recv_ts = recv
    r.pub_ts = 0
    r.side = 0
    r.flags = flags
    r.bid_px = 0.0
    r.bid_qty = 0.0
    r.ask_px = 0.0
    r.ask_qty = 0.0
    r.px = 0.0
    r.qty = 0.0
    r.first_id = 0
    r.last_id = last
    r.prev_id = prev
    r.seq = 0


@njit(cache=True, nogil=True)
def _apply_levels(st, px, qty, sym, lv, lo, n, cap):
    for k in range(lo, lo + n):
        if lv[k, 0] > 0:
            st[sym, S_NB] = set_level(px[sym, BIDS], qty[sym, BIDS], st[sym, S_NB], lv[k, 1], lv[k, 2], True, cap)
        else:
            st[sym, S_NA] = set_level(px[sym, ASKS], qty[sym, ASKS], st[sym, S_NA], lv[k, 1], lv[k, 2], False, cap)


@njit(cache=True, nogil=True)
def _emit_applied(st, px, qty, sym, first, last, prev, exch, recv, lv, lo, n, out, j, emit_levels, flags):
    _top_record(out, j, st, px, qty, sym, first, last, prev, exch, recv, flags)
    j += 1
    if emit_levels:
        for k in range(lo, lo + n):
            f = flags
            if k == lo + n - 1:
                f |= FLAG_LAST_IN_EVENT
            side = SIDE_BUY if lv[k, 0] > 0 else SIDE_SELL
            _level_record(out, j, sym, side, lv[k, 1], lv[k, 2], first, last, prev, exch, recv, f)
            j += 1
    return j


@njit(cache=True, nogil=True)
def _buffer(st, pend_hdr, pend_lv, pend_ctl, sym, first, last, prev, exch, recv, lv, lo, n):
    """Append an event to the pending pool (compacting dead entries when the end is reached)."""
    if pend_ctl[PC_N] >= pend_hdr.shape[0] or pend_ctl[PC_NL] + n > pend_lv.shape[0]:
        _compact_pool(pend_hdr, pend_lv, pend_ctl)
        if pend_ctl[PC_N] >= pend_hdr.shape[0] or pend_ctl[PC_NL] + n > pend_lv.shape[0]:
            pend_ctl[PC_OVERFLOWS] += 1
            return False
    e = pend_ctl[PC_N]
    lo2 = pend_ctl[PC_NL]
    pend_hdr[e, P_SYM] = sym
    pend_hdr[e, P_FIRST] = first
    pend_hdr[e, P_LAST] = last
    pend_hdr[e, P_PREV] = prev
    pend_hdr[e, P_EXCH] = exch
    pend_hdr[e, P_RECV] = recv
    pend_hdr[e, P_LOFF] = lo2
    pend_hdr[e, P_LN] = n
    for k in range(n):
        pend_lv[lo2 + k, 0] = lv[lo + k, 0]
        pend_lv[lo2 + k, 1] = lv[lo + k, 1]
        pend_lv[lo2 + k, 2] = lv[lo + k, 2]
    pend_ctl[PC_N] = e + 1
    pend_ctl[PC_NL] = lo2 + n
    st[sym, S_NPEND] += 1
    return True


@njit(cache=True, nogil=True)
def _compact_pool(pend_hdr, pend_lv, pend_ctl):
    w = 0
    wl = 0
    for e in range(pend_ctl[PC_N]):
        if pend_hdr[e, P_SYM] < 0:
            continue
        lo = pend_hdr[e, P_LOFF]
        n = pend_hdr[e, P_LN]
        for c in range(8):
            pend_hdr[w, c] = pend_hdr[e, c]
        for k in range(n):
            for c in range(3):
                pend_lv[wl + k, c] = pend_lv[lo + k, c]
        pend_hdr[w, P_LOFF] = wl
        wl += n
        w += 1
    pend_ctl[PC_N] = w
    pend_ctl[PC_NL] = wl


@njit(cache=True, nogil=True)
def reset_symbol(st, pend_hdr, pend_ctl, sym):
    """Discard a symbol's book and its buffered events; it goes back to BUFFERING."""
    for e in range(pend_ctl[PC_N]):
        if pend_hdr[e, P_SYM] == sym:
            pend_hdr[e, P_SYM] = -1
    st[sym, S_STATE] = ST_BUFFERING
    st[sym, S_NB] = 0
    st[sym, S_NA] = 0
    st[sym, S_NPEND] = 0
    st[sym, S_LAST_U] = 0
    st[sym, S_SNAP_L] = 0


@njit(cache=True, nogil=True)
def _step(st, px, qty, sym, first, last, prev, exch, recv, lv, lo, n, out, j, emit_levels, cap):
    """Apply one event to a SYNCING or LIVE book. Returns (result, records end)."""
    s = st[sym, S_STATE]
    if s == ST_SYNCING:
        snap = st[sym, S_SNAP_L]
        if last < snap:
            st[sym, S_STALE] += 1
            return R_STALE, j
        if not ((first <= snap and snap <= last) or prev == snap):
            return R_TOO_OLD, j
    else:
        if last <= st[sym, S_LAST_U]:
            st[sym, S_DUPS] += 1
            return R_DUPLICATE, j
        if prev != st[sym, S_LAST_U]:
            return R_GAP, j
    _apply_levels(st, px, qty, sym, lv, lo, n, cap)
    st[sym, S_STATE] = ST_LIVE
    st[sym, S_LAST_U] = last
    st[sym, S_APPLIED] += 1
    j = _emit_applied(st, px, qty, sym, first, last, prev, exch, recv, lv, lo, n, out, j, emit_levels, 0)
    return R_APPLIED, j


@njit(cache=True, nogil=True)
def on_depth(st, px, qty, pend_hdr, pend_lv, pend_ctl, sym, first, last, prev, exch, recv, lv, lo, n,
             out, j, emit_levels):
    """Feed one depthUpdate event (levels lv[lo:lo+n] as rows (side +1/-1, price, qty)) to a symbol's book.

    Records go to out[j:]; the caller guarantees room for 2 + n of them. Returns (result, records end)."""
    cap = px.shape[2]
    s = st[sym, S_STATE]
    if s == ST_BUFFERING or s == ST_WAIT_SNAPSHOT:
        if _buffer(st, pend_hdr, pend_lv, pend_ctl, sym, first, last, prev, exch, recv, lv, lo, n):
            return R_BUFFERED, j
        return R_POOL_FULL, j
    res, j = _step(st, px, qty, sym, first, last, prev, exch, recv, lv, lo, n, out, j, emit_levels, cap)
    if res == R_GAP or res == R_TOO_OLD:
        last_u = st[sym, S_LAST_U]
        reset_symbol(st, pend_hdr, pend_ctl, sym)
        st[sym, S_RESYNCS] += 1
        _status_record(out, j, sym, last_u, prev, exch, recv, FLAG_RESYNC)
        j += 1
        _buffer(st, pend_hdr, pend_lv, pend_ctl, sym, first, last, prev, exch, recv, lv, lo, n)
    return res, j


@njit(cache=True, nogil=True)
def apply_snapshot(st, px, qty, pend_hdr, pend_lv, pend_ctl, sym, last_update_id, bids, asks, exch, recv,
                   out, j, emit_levels):
    """Load a REST snapshot (bids/asks: rows (price, qty), best first) and replay the symbol's buffered events.

    Returns the records end. Emits a KIND_BOOK record with FLAG_SNAPSHOT (and the snapshot levels when
    emit_levels), then one record set per replayed event. If the buffered events show the snapshot is too old
    (first usable event has U > lastUpdateId) the symbol goes back to BUFFERING and keeps its events."""
    cap = px.shape[2]
    st[sym, S_NB] = 0
    st[sym, S_NA] = 0
    # REST lists levels best first; inserting them worst first appends at the end of the worst-first arrays
    for k in range(bids.shape[0] - 1, -1, -1):
        st[sym, S_NB] = set_level(px[sym, BIDS], qty[sym, BIDS], st[sym, S_NB], bids[k, 0], bids[k, 1], True, cap)
    for k in range(asks.shape[0] - 1, -1, -1):
        st[sym, S_NA] = set_level(px[sym, ASKS], qty[sym, ASKS], st[sym, S_NA], asks[k, 0], asks[k, 1], False, cap)
    st[sym, S_STATE] = ST_SYNCING
    st[sym, S_SNAP_L] = last_update_id
    st[sym, S_LAST_U] = 0
    _top_record(out, j, st, px, qty, sym, 0, last_update_id, 0, exch, recv, FLAG_SNAPSHOT)
    j += 1
    if emit_levels:
        nb = st[sym, S_NB]
        na = st[sym, S_NA]
        for k in range(nb - 1, -1, -1):   # best first
            f = FLAG_SNAPSHOT | (FLAG_LAST_IN_EVENT if (k == 0 and na == 0) else 0)
            _level_record(out, j, sym, SIDE_BUY, px[sym, BIDS, k], qty[sym, BIDS, k], 0, last_update_id, 0,
                          exch, recv, f)
            j += 1
        for k in range(na - 1, -1, -1):
            f = FLAG_SNAPSHOT | (FLAG_LAST_IN_EVENT if k == 0 else 0)
            _level_record(out, j, sym, SIDE_SELL, px[sym, ASKS, k], qty[sym, ASKS, k], 0, last_update_id, 0,
                          exch, recv, f)
            j += 1
    # replay buffered events in arrival order
    for e in range(pend_ctl[PC_N]):
        if pend_hdr[e, P_SYM] != sym:
            continue
        res, j = _step(st, px, qty, sym, pend_hdr[e, P_FIRST], pend_hdr[e, P_LAST], pend_hdr[e, P_PREV],
                       pend_hdr[e, P_EXCH], pend_hdr[e, P_RECV], pend_lv, pend_hdr[e, P_LOFF], pend_hdr[e, P_LN],
                       out, j, emit_levels, cap)
        if res == R_TOO_OLD or res == R_GAP:
            # keep this and later events buffered; a newer snapshot is needed
            st[sym, S_STATE] = ST_BUFFERING
            st[sym, S_NB] = 0
            st[sym, S_NA] = 0
            st[sym, S_RESYNCS] += 1
            _status_record(out, j, sym, 0, pend_hdr[e, P_PREV], pend_hdr[e, P_EXCH], pend_hdr[e, P_RECV],
                           FLAG_RESYNC)
            j += 1
            return j
        pend_hdr[e, P_SYM] = -1
        st[sym, S_NPEND] -= 1
    st[sym, S_NPEND] = 0
    if pend_ctl[PC_N] > 0 and _pool_empty(pend_hdr, pend_ctl):
        pend_ctl[PC_N] = 0
        pend_ctl[PC_NL] = 0
    return j


@njit(cache=True, nogil=True)
def _pool_empty(pend_hdr, pend_ctl):
    for e in range(pend_ctl[PC_N]):
        if pend_hdr[e, P_SYM] >= 0:
            return False
    return True
