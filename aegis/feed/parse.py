"""Field extraction for the known Binance market payloads, jitted, straight from the frame buffer.

No generic JSON: the kernel walks the members of the top-level object (and of `data` inside the combined-stream
wrapper {"stream": ..., "data": {...}}), remembers where the value of each key it knows lies, skips values of
keys it does not know, and only then decodes the values the event type needs. So key order does not matter,
unknown keys (st, ps, nq, ap, future additions) cost one skip, and optional fields may be absent.

Decimal strings become doubles as mantissa / 10^k with an exact integer mantissa (below 2^53, i.e. up to 15
significant digits -- every Binance price and quantity) and an exact power of ten: one correctly rounded IEEE
operation. Trailing fractional zeros are stripped first, so equal decimals always give the same double
("0.000" == "0", "50746.30" == "50746.3") even beyond 15 digits -- the order book uses prices as keys.

What the fast path does not handle goes to the slow path (Python + orjson): control replies
({"result":..,"id":..} / {"error":..}), the `!markPrice@arr` array payload, symbols written with \\u escapes,
events it does not know. The slow path re-encodes each object compactly with orjson and feeds it back through
the same kernel, so there is one parser of record for each payload.

Every frame ends in exactly one counter of `stats` (see ST_*), and nothing raises on bad input.
"""
from __future__ import annotations

import math

import numpy as np

from aegis.core import codecs
from aegis.core.jit import njit
from aegis.feed import book
from aegis.core.records import (KIND_MARK, KIND_QUOTE, KIND_TRADE, MARKET_DTYPE, SIDE_BUY, SIDE_SELL)
from aegis.binance.symbols import lookup_span
from aegis.feed.wsframes import FR_SPECIAL

# field codes
F_e, F_E, F_T, F_s, F_u, F_U, F_pu, F_b, F_B, F_a, F_A, F_p, F_q, F_m, F_i, F_r, F_DATA, F_STREAM, \
    F_RESULT, F_ERROR, F_ID = range(21)
NF = 21

_KEY1 = np.full(256, -1, np.int64)
for _c, _f in (("e", F_e), ("E", F_E), ("T", F_T), ("s", F_s), ("u", F_u), ("U", F_U), ("b", F_b), ("B", F_B),
               ("a", F_a), ("A", F_A), ("p", F_p), ("q", F_q), ("m", F_m), ("i", F_i), ("r", F_r)):
    _KEY1[ord(_c)] = _f

EV_BOOK_TICKER = np.frombuffer(b"bookTicker", np.uint8).copy()
EV_AGG_TRADE = np.frombuffer(b"aggTrade", np.uint8).copy()
EV_DEPTH = np.frombuffer(b"depthUpdate", np.uint8).copy()
EV_MARK = np.frombuffer(b"markPriceUpdate", np.uint8).copy()
K_DATA = np.frombuffer(b"data", np.uint8).copy()
K_STREAM = np.frombuffer(b"stream", np.uint8).copy()
K_RESULT = np.frombuffer(b"result", np.uint8).copy()
K_ERROR = np.frombuffer(b"error", np.uint8).copy()

# stats slots (int64 array of ST_COUNT): every frame lands in exactly one of the first group
ST_QUOTES, ST_TRADES, ST_MARKS, ST_DEPTH, ST_DUPLICATES, ST_SLOW, ST_MALFORMED, ST_UNKNOWN_SYMBOL, \
    ST_BAD_VALUE, ST_UNKNOWN_EVENT, ST_CONTROL = range(11)
ST_FRAMES = 12          # data frames seen by the kernel
ST_RESYNCS = 13         # book gaps detected (-> KIND_STATUS FLAG_RESYNC)
ST_BOOK_DUPS = 14       # depth events skipped as already applied (u <= last u)
ST_BOOK_STALE = 15      # depth events older than the snapshot
ST_POOL_FULL = 16       # depth events lost because the resync buffer was full (book resyncs again)
ST_BUFFERED = 17        # depth events buffered while a book waits for its snapshot
ST_LAST_BAD = 24        # + category: (offset << 24 | length) of the last frame counted in that category
ST_COUNT = 40
PROBLEMS = {ST_MALFORMED: "malformed", ST_UNKNOWN_SYMBOL: "unknown symbol", ST_BAD_VALUE: "out-of-range value",
            ST_UNKNOWN_EVENT: "unknown event"}

# params (float64)
PR_MAX_PRICE, PR_MAX_QTY, PR_EMIT_LEVELS, PR_DEDUPE = range(4)
PR_COUNT = 8

# last_ids columns (per symbol): dedupe of quotes by u, trades by aggregate id, marks by event time
LI_QUOTE, LI_TRADE, LI_MARK = 0, 1, 2
LI_COLS = 4

# per-message results
M_QUOTE, M_TRADE, M_MARK, M_DEPTH, M_DUP, M_SLOW, M_MALFORMED, M_UNKNOWN_SYMBOL, M_BAD_VALUE, M_UNKNOWN_EVENT, \
    M_CONTROL = range(11)

LEVELS_CAP = 4096     # most levels one depth event may carry
MS = 1_000_000


def new_stats() -> np.ndarray:
    return np.zeros(ST_COUNT, np.int64)


def make_params(max_price: float = 1e9, max_qty: float = 1e13, emit_levels: bool = False,
                dedupe: bool = True) -> np.ndarray:
    p = np.zeros(PR_COUNT, np.float64)
    p[PR_MAX_PRICE] = max_price
    p[PR_MAX_QTY] = max_qty
    p[PR_EMIT_LEVELS] = 1.0 if emit_levels else 0.0
    p[PR_DEDUPE] = 1.0 if dedupe else 0.0
    return p


# ------------------------------------------------------------------------------------------- scanning
@njit(cache=True, nogil=True, inline="always")
def _ws(buf, i, end):
    while i < end:
        c = buf[i]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _string_close(buf, i, end):
    """i at an opening quote: index of the closing quote (-1 if none)."""
    i += 1
    while i < end:
        c = buf[i]
        if c == 34:
            return i
        if c == 92:
            i += 2
            continue
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _nested_end(buf, i, end):
    """Index just after the object or array starting at i (-1 if it does not end inside the span).

    Not inlined: the feeds' values are strings and numbers, and every inlined copy of this loop is typed and lowered
    again in each caller (seconds of the Feed's first compile)."""
    depth = 0
    while i < end:
        c = buf[i]
        if c == 34:
            q = _string_close(buf, i, end)
            if q < 0:
                return -1
            i = q + 1
            continue
        if c == 123 or c == 91:
            depth += 1
        elif c == 125 or c == 93:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


@njit(cache=True, nogil=True, inline="always")
def _value_end(buf, i, end):
    """Index just after the JSON value starting at i (-1 if it does not end inside the span)."""
    c = buf[i]
    if c == 34:
        q = _string_close(buf, i, end)
        return q + 1 if q >= 0 else -1
    if c == 123 or c == 91:
        return _nested_end(buf, i, end)
    start = i
    while i < end:
        c = buf[i]
        if c == 44 or c == 125 or c == 93 or c == 32 or c == 10 or c == 13 or c == 9:
            break
        i += 1
    return i if i > start else -1


@njit(cache=True, nogil=True, inline="always")
def _eq(buf, s, e, const):
    n = const.shape[0]
    if e - s != n:
        return False
    for k in range(n):
        if buf[s + k] != const[k]:
            return False
    return True


# byte classes for the member scanner: 3 = JSON whitespace, 2 = ends a scalar value
_CLS = np.zeros(256, np.uint8)
for _c in b" \t\r\n":
    _CLS[_c] = 3
for _c in b",}]":
    _CLS[_c] = 2


@njit(cache=True, nogil=True)
def _members(buf, s, e, fs):
    """Record the value span of every known key of the object at buf[s:e] into fs; False if not an object.

    One flat loop (no helper calls for the common cases): this is the hottest code of the Feed. The value of a
    top-level "data" key that is an object is not skipped: its start is recorded with the message end, and the
    caller parses it in place (one pass over the bytes instead of two)."""
    for k in range(2 * NF):
        fs[k] = -1
    i = s
    while i < e and _CLS[buf[i]] == 3:
        i += 1
    if i >= e or buf[i] != 123:
        return False
    i += 1
    while True:
        while i < e and _CLS[buf[i]] == 3:
            i += 1
        if i >= e:
            return False
        c = buf[i]
        if c == 125:
            return True
        if c != 34:
            return False
        ks = i + 1
        i = ks
        while i < e and buf[i] != 34:
            if buf[i] == 92:
                i += 1
            i += 1
        if i >= e:
            return False
        kq = i
        kl = kq - ks
        i += 1
        while i < e and _CLS[buf[i]] == 3:
            i += 1
        if i >= e or buf[i] != 58:
            return False
        i += 1
        while i < e and _CLS[buf[i]] == 3:
            i += 1
        if i >= e:
            return False
        vs = i
        c = buf[i]
        if c == 34:
            i += 1
            while i < e and buf[i] != 34:
                if buf[i] == 92:
                    i += 1
                i += 1
            if i >= e:
                return False
            i += 1
        elif c == 123 or c == 91:
            if c == 123 and kl == 4 and _eq(buf, ks, kq, K_DATA):
                fs[2 * F_DATA] = vs
                fs[2 * F_DATA + 1] = e
                return True
            i = _value_end(buf, i, e)
            if i < 0:
                return False
        else:
            while i < e and _CLS[buf[i]] < 2:
                i += 1
            if i == vs:
                return False
        f = -1
        if kl == 1:
            f = _KEY1[buf[ks]]
        elif kl == 2:
            if buf[ks] == 112 and buf[ks + 1] == 117:
                f = F_pu
            elif buf[ks] == 105 and buf[ks + 1] == 100:
                f = F_ID
        elif kl == 4 and _eq(buf, ks, kq, K_DATA):
            f = F_DATA
        elif kl == 6:
            if _eq(buf, ks, kq, K_STREAM):
                f = F_STREAM
            elif _eq(buf, ks, kq, K_RESULT):
                f = F_RESULT
        elif kl == 5 and _eq(buf, ks, kq, K_ERROR):
            f = F_ERROR
        if f >= 0:
            fs[2 * f] = vs
            fs[2 * f + 1] = i
        while i < e and _CLS[buf[i]] == 3:
            i += 1
        if i >= e:
            return False
        c = buf[i]
        if c == 44:
            i += 1
            continue
        if c == 125:
            return True
        return False


@njit(cache=True, nogil=True)
def parse_decimal(buf, s, e):
    """(value, ok) of a JSON number or a quoted decimal string at buf[s:e], as float(text) reads it."""
    if e - s >= 2 and buf[s] == 34:
        if buf[e - 1] != 34:
            return math.nan, False
        s += 1
        e -= 1
    return codecs.parse_decimal(buf, s, e)


@njit(cache=True, nogil=True)
def parse_int(buf, s, e):
    """(value, ok) of a JSON integer (quoted accepted) at buf[s:e]; ok=False on overflow or junk."""
    if e - s >= 2 and buf[s] == 34:
        s += 1
        e -= 1
    if s >= e:
        return 0, False
    neg = False
    if buf[s] == 45:
        neg = True
        s += 1
        if s >= e:
            return 0, False
    v = np.int64(0)
    for k in range(s, e):
        c = buf[k]
        if c < 48 or c > 57:
            return 0, False
        d = c - 48
        if v > (9223372036854775807 - d) // 10:
            return 0, False
        v = v * 10 + d
    return (-v if neg else v), True


@njit(cache=True, nogil=True, inline="always")
def _price_ok(v, params):
    return v > 0.0 and v <= params[PR_MAX_PRICE]   # NaN fails both comparisons


@njit(cache=True, nogil=True, inline="always")
def _qty_ok(v, params):
    return v >= 0.0 and v <= params[PR_MAX_QTY]


@njit(cache=True, nogil=True)
def _levels(buf, s, e, side, lv, n, params):
    """Parse [[px, qty], ...] at buf[s:e] into lv rows from n; returns the new n, -1 malformed, -2 bad value.

    One scan per element of a level, wherever it stands: the scanners are inlined, and each call site is typed and
    lowered again (written out element by element, this function took 8.8 of the Feed's 36.6 CPU-s of first compile;
    this form 1.2)."""
    i = _ws(buf, s, e)
    if i >= e or buf[i] != 91:
        return -1
    i = _ws(buf, i + 1, e)
    if i < e and buf[i] == 93:
        return n
    while i < e:
        if buf[i] != 91:
            return -1
        price = 0.0
        q = 0.0
        ok1 = False
        k = 0               # elements of this level read so far; a third and later are tolerated and skipped
        while True:
            i = _ws(buf, i + 1, e)
            if i >= e:
                return -1
            ve = -1
            if k < 2 and buf[i] == 34:   # a quoted decimal, as Binance sends them: read once, to its closing quote
                v, ok, ve = codecs.scan_decimal(buf, i + 1, e)
                ve = ve + 1 if ve < e and buf[ve] == 34 else -1
            if ve < 0:                   # anything else (or a string that is not a plain decimal): the full grammar
                ve = _value_end(buf, i, e)
                if ve < 0:
                    return -1
                if k < 2:
                    v, ok = parse_decimal(buf, i, ve)
            if k < 2:
                if k == 0:
                    price = v
                    ok1 = ok
                else:
                    if not (ok1 and ok):
                        return -1
                    if not (_price_ok(price, params) and _qty_ok(v, params)):
                        return -2
                    q = v
            k += 1
            i = _ws(buf, ve, e)
            if i >= e:
                return -1
            if buf[i] != 44:
                break
        if buf[i] != 93 or k < 2:
            return -1
        if n >= lv.shape[0]:
            return -1
        lv[n, 0] = side
        lv[n, 1] = price
        lv[n, 2] = q
        n += 1
        i = _ws(buf, i + 1, e)
        if i >= e:
            return -1
        if buf[i] == 44:
            i = _ws(buf, i + 1, e)
            continue
        if buf[i] == 93:
            return n
        return -1
    return -1


@njit(cache=True, nogil=True, inline="always")
def _fill(out, j, kind, sym, exch, recv, bpx, bq, apx, aq, side, px, qty, first, last, prev):
    r = out[j]
    r.exch_ts = exch
    r.recv_ts = recv
    r.pub_ts = 0
    r.bid_px = bpx
    r.bid_qty = bq
    r.ask_px = apx
    r.ask_qty = aq
    r.symbol = sym
    r.kind = kind
    r.side = side
    r.flags = 0
    r.px = px
    r.qty = qty
    r.first_id = first
    r.last_id = last
    r.prev_id = prev
    r.seq = 0


@njit(cache=True, nogil=True, inline="always")
def _opt_int(buf, fs, f, default):
    if fs[2 * f] < 0:
        return default, True
    return parse_int(buf, fs[2 * f], fs[2 * f + 1])


@njit(cache=True, nogil=True, inline="always")
def _dec(buf, fs, f):
    if fs[2 * f] < 0:
        return math.nan, False
    return parse_decimal(buf, fs[2 * f], fs[2 * f + 1])


@njit(cache=True, nogil=True)
def parse_message(buf, s, e, recv, names, name_off, htab, out, j, bk_st, bk_px, bk_qty, pend_hdr, pend_lv,
                  pend_ctl, lv, last_ids, fs, stats, params):
    """Parse one message at buf[s:e]; returns (M_* result, records end)."""
    if not _members(buf, s, e, fs):
        return M_MALFORMED, j
    if fs[2 * F_DATA] >= 0:
        ds = fs[2 * F_DATA]
        de = fs[2 * F_DATA + 1]
        if buf[ds] != 123:
            return M_SLOW, j          # array payload (!markPrice@arr) or junk: slow path decides
        if not _members(buf, ds, de, fs) or fs[2 * F_DATA] >= 0:
            return M_MALFORMED, j
    if fs[2 * F_e] < 0:
        if fs[2 * F_RESULT] >= 0 or fs[2 * F_ERROR] >= 0 or fs[2 * F_ID] >= 0:
            return M_CONTROL, j
        return M_MALFORMED, j
    es = fs[2 * F_e]
    ee = fs[2 * F_e + 1]
    if ee - es < 2 or buf[es] != 34:
        return M_MALFORMED, j
    es += 1
    ee -= 1
    kind = 0
    if _eq(buf, es, ee, EV_BOOK_TICKER):
        kind = 1
    elif _eq(buf, es, ee, EV_AGG_TRADE):
        kind = 2
    elif _eq(buf, es, ee, EV_MARK):
        kind = 3
    elif _eq(buf, es, ee, EV_DEPTH):
        kind = 4
    else:
        return M_UNKNOWN_EVENT, j
    # symbol
    ss = fs[2 * F_s]
    se = fs[2 * F_s + 1]
    if ss < 0 or se - ss < 3 or buf[ss] != 34:
        return M_MALFORMED, j
    for k in range(ss + 1, se - 1):
        if buf[k] == 92:
            return M_SLOW, j          # \u-escaped name: orjson decodes it
    sym = lookup_span(buf, ss + 1, se - 1, names, name_off, htab)
    if sym < 0:
        return M_UNKNOWN_SYMBOL, j
    ev_ms, ok = _opt_int(buf, fs, F_E, -1)
    if not ok:
        return M_MALFORMED, j
    if ev_ms < 0:
        ev_ms, ok = _opt_int(buf, fs, F_T, 0)
        if not ok:
            return M_MALFORMED, j
    if ev_ms < 0 or ev_ms > 9_000_000_000_000:
        return M_BAD_VALUE, j
    exch = ev_ms * MS
    dedupe = params[PR_DEDUPE] != 0.0
    if kind == 1:
        bpx, ok1 = _dec(buf, fs, F_b)
        bq, ok2 = _dec(buf, fs, F_B)
        apx, ok3 = _dec(buf, fs, F_a)
        aq, ok4 = _dec(buf, fs, F_A)
        if not (ok1 and ok2 and ok3 and ok4):
            return M_MALFORMED, j
        if not (_price_ok(bpx, params) and _price_ok(apx, params) and _qty_ok(bq, params)
                and _qty_ok(aq, params)):
            return M_BAD_VALUE, j
        u, ok = _opt_int(buf, fs, F_u, 0)
        if not ok or u < 0:
            return M_MALFORMED, j
        if dedupe and u > 0:
            if u <= last_ids[sym, LI_QUOTE]:
                return M_DUP, j
            last_ids[sym, LI_QUOTE] = u
        _fill(out, j, KIND_QUOTE, sym, exch, recv, bpx, bq, apx, aq, 0, 0.0, 0.0, 0, u, 0)
        return M_QUOTE, j + 1
    if kind == 2:
        px, ok1 = _dec(buf, fs, F_p)
        q, ok2 = _dec(buf, fs, F_q)
        if not (ok1 and ok2):
            return M_MALFORMED, j
        if not (_price_ok(px, params) and _qty_ok(q, params)):
            return M_BAD_VALUE, j
        agg, ok = _opt_int(buf, fs, F_a, 0)
        if not ok or agg < 0:
            return M_MALFORMED, j
        side = 0
        if fs[2 * F_m] >= 0:
            c = buf[fs[2 * F_m]]
            if c == 116:
                side = SIDE_SELL     # buyer is the maker: the seller hit the bid
            elif c == 102:
                side = SIDE_BUY
            else:
                return M_MALFORMED, j
        if dedupe and agg > 0:
            if agg <= last_ids[sym, LI_TRADE]:
                return M_DUP, j
            last_ids[sym, LI_TRADE] = agg
        _fill(out, j, KIND_TRADE, sym, exch, recv, 0.0, 0.0, 0.0, 0.0, side, px, q, 0, agg, 0)
        return M_TRADE, j + 1
    if kind == 3:
        mp, ok1 = _dec(buf, fs, F_p)
        if not ok1:
            return M_MALFORMED, j
        if not _price_ok(mp, params):
            return M_BAD_VALUE, j
        idx = 0.0
        if fs[2 * F_i] >= 0:
            idx, ok = _dec(buf, fs, F_i)
            if not ok or not (idx >= 0.0 and idx <= params[PR_MAX_PRICE]):
                idx = 0.0
        rate = 0.0
        if fs[2 * F_r] >= 0 and fs[2 * F_r + 1] - fs[2 * F_r] > 2:   # "" for delivery contracts
            rate, ok = _dec(buf, fs, F_r)
            if not ok or not (rate > -1.0 and rate < 1.0):
                return M_BAD_VALUE, j
        if dedupe:
            if ev_ms <= last_ids[sym, LI_MARK]:
                return M_DUP, j
            last_ids[sym, LI_MARK] = ev_ms
        _fill(out, j, KIND_MARK, sym, exch, recv, idx, 0.0, 0.0, 0.0, 0, mp, rate, 0, ev_ms, 0)
        return M_MARK, j + 1
    # depthUpdate
    first, ok1 = _opt_int(buf, fs, F_U, -1)
    last, ok2 = _opt_int(buf, fs, F_u, -1)
    prev, ok3 = _opt_int(buf, fs, F_pu, -1)
    if not (ok1 and ok2 and ok3) or first < 0 or last < first or prev < 0:
        return M_MALFORMED, j
    n = 0
    if fs[2 * F_b] >= 0:
        n = _levels(buf, fs[2 * F_b], fs[2 * F_b + 1], 1.0, lv, n, params)
    if n >= 0 and fs[2 * F_a] >= 0:
        n = _levels(buf, fs[2 * F_a], fs[2 * F_a + 1], -1.0, lv, n, params)
    if n == -2:
        return M_BAD_VALUE, j
    if n < 0:
        return M_MALFORMED, j
    res, j = book.on_depth(bk_st, bk_px, bk_qty, pend_hdr, pend_lv, pend_ctl, sym, first, last, prev, exch, recv,
                           lv, 0, n, out, j, params[PR_EMIT_LEVELS] != 0.0)
    if res == book.R_DUPLICATE:
        stats[ST_BOOK_DUPS] += 1
    elif res == book.R_STALE:
        stats[ST_BOOK_STALE] += 1
    elif res == book.R_GAP or res == book.R_TOO_OLD:
        stats[ST_RESYNCS] += 1
    elif res == book.R_POOL_FULL:
        stats[ST_POOL_FULL] += 1
    elif res == book.R_BUFFERED:
        stats[ST_BUFFERED] += 1
    return M_DEPTH, j


@njit(cache=True, nogil=True)
def parse_frames(buf, offs, lens, flags, i0, n, recv, names, name_off, htab, out, j, bk_st, bk_px, bk_qty,
                 pend_hdr, pend_lv, pend_ctl, lv, last_ids, fs, stats, params, slow, allow_slow):
    """Parse frames i0..n-1 (skipping FR_SPECIAL ones) into out[j:].

    Stops early when out might not hold the next frame's records. Returns (next frame, records end, slow count);
    frames needing the slow path are listed in slow[:count] (only when allow_slow, else counted malformed)."""
    cap = out.shape[0]
    need = lv.shape[0] + 2
    ns = 0
    i = i0
    while i < n:
        if flags[i] & FR_SPECIAL:
            i += 1
            continue
        if cap - j < need or ns >= slow.shape[0]:
            break
        s = offs[i]
        e = s + lens[i]
        stats[ST_FRAMES] += 1
        res, j = parse_message(buf, s, e, recv, names, name_off, htab, out, j, bk_st, bk_px, bk_qty, pend_hdr,
                               pend_lv, pend_ctl, lv, last_ids, fs, stats, params)
        if res == M_SLOW or res == M_CONTROL:
            if allow_slow:
                slow[ns] = i
                ns += 1
            elif res == M_SLOW:
                res = M_MALFORMED   # the slow path's own re-encoded output must not loop back to it
        stats[res] += 1
        if res == M_MALFORMED or res == M_UNKNOWN_SYMBOL or res == M_BAD_VALUE or res == M_UNKNOWN_EVENT:
            stats[ST_LAST_BAD + res] = (s << 24) | min(lens[i], 0xFFFFFF)
        i += 1
    return i, j, ns


class Parser:
    """Everything the parse kernel needs for one symbol table and one book set, bundled for the Python side."""

    def __init__(self, symbols, books: "book.BookState", out_cap: int = 1 << 14, max_price: float = 1e9,
                 max_qty: float = 1e13, emit_levels: bool = False, dedupe: bool = True):
        self.symbols = symbols
        self.books = books
        self.out = np.zeros(max(out_cap, LEVELS_CAP * 2 + 16), MARKET_DTYPE)
        self.lv = np.zeros((LEVELS_CAP, 3), np.float64)
        self.last_ids = np.zeros((len(symbols), LI_COLS), np.int64)
        self.fs = np.zeros(2 * NF, np.int64)
        self.stats = new_stats()
        self.params = make_params(max_price, max_qty, emit_levels, dedupe)
        self.slow = np.zeros(1 << 12, np.int64)

    def parse(self, buf, offs, lens, flags, i0, n, recv, j, allow_slow=True):
        b = self.books
        t = self.symbols
        return parse_frames(buf, offs, lens, flags, i0, n, recv, t.names_utf8, t.name_off, t.hash_table,
                            self.out, j, b.st, b.px, b.qty, b.pend_hdr, b.pend_lv, b.pend_ctl, self.lv,
                            self.last_ids, self.fs, self.stats, self.params, self.slow, allow_slow)

    def parse_bytes(self, messages: list[bytes], recv: int, j: int = 0, allow_slow=False):
        """Parse whole messages given as bytes (tests, slow path, replays): returns (records end, slow idx list).
        All messages must fit: the caller flushes self.out first when j is large."""
        if not messages:
            return j, []
        buf = np.frombuffer(b"".join(messages), np.uint8).copy()
        lens = np.array([len(m) for m in messages], np.int64)
        offs = np.zeros(len(messages), np.int64)
        offs[1:] = np.cumsum(lens)[:-1]
        flags = np.ones(len(messages), np.uint8)
        i = 0
        slow_all = []
        while i < len(messages):
            i2, j, ns = self.parse(buf, offs, lens, flags, i, len(messages), recv, j, allow_slow)
            slow_all.extend(int(x) for x in self.slow[:ns])
            if i2 < len(messages) and i2 == i:
                raise RuntimeError("parser output buffer full: flush before parse_bytes")
            i = i2
            if i < len(messages):
                raise RuntimeError("parser output buffer full: flush before parse_bytes")
        return j, slow_all
