"""Text <-> number codecs on byte buffers, jitted: the one decimal parser of the engine.

The Feed (websocket JSON) and CSV import both read prices and quantities with `parse_decimal`, so the same text
becomes the same double whichever path read it, and that double is the one Python's float(text) returns
(correctly rounded, ties to even).

How: a decimal is M * 10**E with M its significant digits. When M < 2**53 and |E| <= 22, M and 10**|E| are
exact doubles and one IEEE multiplication or division rounds correctly (Clinger's fast path): this covers every
price and quantity Binance sends (at most 15 significant digits once trailing zeros are dropped). Any other
number takes an exact path: the digits are kept as a decimal digit array and scaled by powers of two (shifts
done digit by digit, no rounding until the last step) until 53 bits of the mantissa stand before the decimal
point; the integer part rounded half-to-even is the mantissa. 800 digits are enough for any double (the longest
decimal needing them all is the halfway point next to the smallest subnormal, 767 significant digits); digits
past that only matter through whether any of them is non-zero ("truncated").
"""
from __future__ import annotations

import math

import numpy as np

from aegis.core.jit import njit

P10 = np.array([10.0 ** i for i in range(23)])   # 10**0 .. 10**22: every one an exact double
I10 = np.array([10 ** i for i in range(19)], np.int64)
TWO53 = 1 << 53
MAX_DIGITS = 800
_SCRATCH = MAX_DIGITS + 32                         # room for the digits a left shift adds before truncation
_MAX_SHIFT = 28                                    # bits per shift step: 10 * 2**28 * 9 fits an int64
_POW_SHIFT = np.array([1, 3, 6, 9, 13, 16, 19, 23, 26], np.int64)  # 2**POW_SHIFT[i] <= 10**i: binary
                                                   # exponents that keep the decimal point near the first digit
_EXP_CAP = 100_000                                 # exponents past this are all 0 or inf alike


@njit(cache=True, nogil=True)
def _trim(d, nd, dp):
    while nd > 0 and d[nd - 1] == 0:
        nd -= 1
    if nd == 0:
        dp = 0
    return nd, dp


@njit(cache=True, nogil=True)
def _right_shift(d, nd, dp, trunc, k):
    """The digit array d[:nd] (value 0.d * 10**dp) divided by 2**k, k <= _MAX_SHIFT."""
    r = 0
    w = 0
    n = 0
    while (n >> k) == 0:
        if r >= nd:
            if n == 0:
                return 0, 0, trunc
            while (n >> k) == 0:
                n *= 10
                r += 1
            break
        n = n * 10 + d[r]
        r += 1
    dp -= r - 1
    mask = (1 << k) - 1
    while r < nd:
        c = d[r]
        d[w] = n >> k
        w += 1
        n = (n & mask) * 10 + c
        r += 1
    while n > 0:
        dig = n >> k
        n = (n & mask) * 10
        if w < MAX_DIGITS:
            d[w] = dig
            w += 1
        elif dig > 0:
            trunc = True
    nd, dp = _trim(d, w, dp)
    return nd, dp, trunc


@njit(cache=True, nogil=True)
def _left_shift(d, nd, dp, trunc, k):
    """d[:nd] multiplied by 2**k, k <= _MAX_SHIFT: written from the last digit backwards, carries in front."""
    extra = (k * 30103) // 100000 + 1              # digits 2**k can add (log10(2) = 0.30103...)
    i = nd + extra - 1
    n = 0
    for r in range(nd - 1, -1, -1):
        n += d[r] << k
        q = n // 10
        d[i] = n - 10 * q
        n = q
        i -= 1
    while n > 0:
        q = n // 10
        d[i] = n - 10 * q
        n = q
        i -= 1
    first = i + 1
    end = nd + extra
    for j in range(first, end):
        d[j - first] = d[j]
    nd = end - first
    dp += nd - (end - extra)  # digits gained in front of the old first digit
    if nd > MAX_DIGITS:
        for j in range(MAX_DIGITS, nd):
            if d[j] != 0:
                trunc = True
        nd = MAX_DIGITS
    nd, dp = _trim(d, nd, dp)
    return nd, dp, trunc


@njit(cache=True, nogil=True)
def _shift(d, nd, dp, trunc, k):
    """Multiply (k > 0) or divide (k < 0) by 2**|k|, in steps the int64 arithmetic can hold."""
    while k > 0:
        s = min(k, _MAX_SHIFT)
        nd, dp, trunc = _left_shift(d, nd, dp, trunc, s)
        k -= s
    while k < 0:
        s = min(-k, _MAX_SHIFT)
        nd, dp, trunc = _right_shift(d, nd, dp, trunc, s)
        k += s
    return nd, dp, trunc


@njit(cache=True, nogil=True)
def _rounded_integer(d, nd, dp, trunc):
    """The integer part of 0.d * 10**dp rounded half-to-even (dp <= 19 here)."""
    n = 0
    for i in range(dp):
        n = n * 10 + (d[i] if i < nd else 0)
    if 0 <= dp < nd:
        if d[dp] == 5 and dp + 1 == nd:             # exactly .5 in the digits kept
            up = trunc or (dp > 0 and d[dp - 1] % 2 == 1)
        else:
            up = d[dp] >= 5
        if up:
            n += 1
    return n


@njit(cache=True, nogil=True)
def _exact(d, nd, dp, trunc):
    """The double nearest 0.d[:nd] * 10**dp (positive), ties to even: the exact path."""
    if nd == 0 or dp < -330:
        return 0.0
    if dp > 310:
        return math.inf
    exp = 0
    while dp > 0:                                   # scale down into [0.5, 1)
        k = 27 if dp >= _POW_SHIFT.shape[0] else _POW_SHIFT[dp]
        nd, dp, trunc = _shift(d, nd, dp, trunc, -k)
        exp += k
    while dp < 0 or (dp == 0 and d[0] < 5):
        k = 27 if -dp >= _POW_SHIFT.shape[0] else _POW_SHIFT[-dp]
        nd, dp, trunc = _shift(d, nd, dp, trunc, k)
        exp -= k
    exp -= 1                                        # [0.5, 1) * 2**(exp+1) = [1, 2) * 2**exp
    if exp < -1022:                                 # subnormal: fewer mantissa bits
        k = -1022 - exp
        nd, dp, trunc = _shift(d, nd, dp, trunc, -k)
        exp += k
    if exp > 1023:
        return math.inf
    nd, dp, trunc = _shift(d, nd, dp, trunc, 53)
    mant = _rounded_integer(d, nd, dp, trunc)
    if mant == TWO53 << 1:                          # rounding carried into a 54th bit
        mant >>= 1
        exp += 1
        if exp > 1023:
            return math.inf
    return math.ldexp(float(mant), exp - 52)


@njit(cache=True, nogil=True)
def parse_decimal(buf, s, e):
    """(value, ok) of the decimal number buf[s:e] (uint8): [+-]digits[.digits][(e|E)[+-]digits], either side of
    the point may be empty but not both. value is float(text) exactly (inf past the double range); ok=False and
    NaN for anything else."""
    v, ok, end = scan_decimal(buf, s, e)
    if end != e:
        return math.nan, False
    return v, ok


@njit(cache=True, nogil=True)
def scan_decimal(buf, s, e):
    """(value, ok, end) of the decimal number at the start of buf[s:e], which ends at buf[end], the first byte that
    cannot continue it (e if none): what parse_decimal reads of buf[s:end], in one pass, for a reader that finds the
    end of a number by reading it (a JSON string's closing quote)."""
    if s >= e:
        return math.nan, False, s
    neg = False
    c = buf[s]
    if c == 45 or c == 43:                          # '-' '+'
        neg = c == 45
        s += 1
    start = s
    mant = 0
    nd = 0              # digits in mant
    zeros = 0           # zeros after mant's last non-zero digit, not yet in mant
    frac = 0            # digits after the point
    many = False        # more than 18 significant digits: the exact path
    any_digit = False
    dot = False
    exp = 0
    while s < e:
        c = buf[s]
        if 48 <= c <= 57:
            any_digit = True
            if dot:
                frac += 1
            if c == 48:
                if nd != 0:                         # leading zeros only move the point
                    zeros += 1
            elif nd + zeros < 18:                   # mant stays below 10**18: an int64
                mant = mant * I10[zeros + 1] + (c - 48)
                nd += zeros + 1
                zeros = 0
            else:
                many = True
        elif c == 46 and not dot:                   # '.'
            dot = True
        elif (c == 101 or c == 69) and any_digit:   # 'e' 'E'
            s += 1
            eneg = False
            if s < e and (buf[s] == 45 or buf[s] == 43):
                eneg = buf[s] == 45
                s += 1
            ne = 0
            while s < e:
                c = buf[s]
                if c < 48 or c > 57:
                    break
                if exp < _EXP_CAP:
                    exp = exp * 10 + (c - 48)
                s += 1
                ne += 1
            if ne == 0:                             # an exponent without digits
                return math.nan, False, s
            if eneg:
                exp = -exp
            break
        else:
            break
        s += 1
    end = s
    if not any_digit:
        return math.nan, False, end
    if mant == 0 and not many:
        return (-0.0 if neg else 0.0), True, end
    if not many:
        p = exp + zeros - frac                      # value = mant * 10**p
        if mant < TWO53:
            if 0 <= p <= 22:
                v = mant * P10[p]
                return (-v if neg else v), True, end
            if -22 <= p < 0:
                v = mant / P10[-p]
                return (-v if neg else v), True, end
            if 22 < p <= 22 + 15 and mant < TWO53 // 10 ** (p - 22):   # 12e30 = 12e8 * 1e22, both exact
                v = float(mant * 10 ** (p - 22)) * P10[22]
                return (-v if neg else v), True, end
    v = _exact_text(buf, start, end, exp)
    return (-v if neg else v), True, end


@njit(cache=True, nogil=True)
def _exact_text(buf, start, e, exp):
    """The exact path of parse_decimal (kept out of it so the fast path stays small), on text it has validated:
    the significant digits of buf[start:e] (up to the exponent) as a digit array with value 0.d * 10**dp."""
    d = np.zeros(_SCRATCH, np.int64)
    nd = 0
    trunc = False
    ipart = 0           # digits before the point
    lead = 0            # zeros before the first non-zero digit
    dot = False
    for i in range(start, e):
        c = buf[i]
        if c == 101 or c == 69:
            break
        if c == 46:
            dot = True
            continue
        if not dot:
            ipart += 1
        if nd == 0 and c == 48:
            lead += 1
        elif nd < MAX_DIGITS:
            d[nd] = c - 48
            nd += 1
        elif c != 48:
            trunc = True
    nd, dp = _trim(d, nd, ipart - lead + exp)
    return _exact(d, nd, dp, trunc)


# ===================================================================================== number -> text writers
# Plain byte loops: a numpy slice assignment builds two views and a generic copy per call (~25 ns each, and an order
# makes ~40 of them); a loop over a few bytes compiles to straight moves. Each returns the position after what it
# wrote; the caller guarantees the room.

@njit(cache=True, nogil=True)
def put_bytes(out, pos, src):
    """src (uint8) at out[pos:]."""
    n = src.shape[0]
    for k in range(n):
        out[pos + k] = src[k]
    return pos + n


@njit(cache=True, nogil=True)
def put_span(out, pos, src, off, n):
    """src[off:off + n] at out[pos:]."""
    for k in range(n):
        out[pos + k] = src[off + k]
    return pos + n


@njit(cache=True, nogil=True)
def put_int(out, pos, v):
    """Decimal text of an int64, as str(int) writes it."""
    if v < 0:
        out[pos] = 45    # '-'
        pos += 1
        v = -v
    digits = 1
    t = v
    while t >= 10:
        t //= 10
        digits += 1
    end = pos + digits
    for k in range(digits):
        out[end - 1 - k] = 48 + v % 10
        v //= 10
    return end


@njit(cache=True, nogil=True)
def _put_digits(out, pos, v, width):
    for k in range(width):
        out[pos + width - 1 - k] = 48 + v % 10
        v //= 10
    return pos + width


@njit(cache=True, nogil=True)
def put_utc_ms(out, pos, ns):
    """ISO-8601 UTC text of ns since the epoch, truncated to the millisecond, without a zone letter:
    "2024-01-01T00:00:00.000", as numpy's datetime_as_string(unit="ms") writes it for years 1970-9999. The date
    is the proleptic Gregorian calendar's, counted in 400-year eras of 146,097 days (March-based years, so the
    leap day ends a year)."""
    ms = ns // 1_000_000
    day = ms // 86_400_000
    tod = ms - day * 86_400_000
    z = day + 719_468                     # days from 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097               # day of the era, 0..146096
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153             # month from March, 0..11
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    pos = _put_digits(out, pos, y, 4)
    out[pos] = 45        # '-'
    pos = _put_digits(out, pos + 1, m, 2)
    out[pos] = 45
    pos = _put_digits(out, pos + 1, d, 2)
    out[pos] = 84        # 'T'
    pos = _put_digits(out, pos + 1, tod // 3_600_000, 2)
    out[pos] = 58        # ':'
    pos = _put_digits(out, pos + 1, tod // 60_000 % 60, 2)
    out[pos] = 58
    pos = _put_digits(out, pos + 1, tod // 1000 % 60, 2)
    out[pos] = 46        # '.'
    return _put_digits(out, pos + 1, tod % 1000, 3)


@njit(cache=True, nogil=True)
def put_decimal(out, pos, units, dec):
    """Exact decimal text of units / 10**dec with exactly dec decimals ("0.000" for 0 with dec 3, as Binance writes
    it; "-1.50" for -150 with dec 2)."""
    if dec == 0:
        return put_int(out, pos, units)
    if units < 0:
        out[pos] = 45
        pos += 1
        units = -units
    scale = 1
    for _ in range(dec):
        scale *= 10
    pos = put_int(out, pos, units // scale)
    out[pos] = 46        # '.'
    pos += 1
    r = units % scale
    for k in range(dec):
        out[pos + dec - 1 - k] = 48 + r % 10
        r //= 10
    return pos + dec


_TWO53F = 9007199254740992.0
SHORT_MAX_DEC = 15   # decimals shortest_decimal tries; longer texts (17 significant digits, most often) are Python's


@njit(cache=True, nogil=True)
def shortest_decimal(v):
    """(units, dec) such that put_decimal(units, dec) (with ".0" after it when dec is 0) is repr(v), Python's
    shortest text that reads back as v; dec is -1 when v needs what this does not write: exponent notation (|v|
    below 1e-4 or from 1e16), more than SHORT_MAX_DEC decimals or 2**53 units, an infinity, a NaN, or a length at
    which two texts read back as v (repr takes the closer; this leaves it to repr).

    Why it is repr: with fewer decimals a text has fewer significant digits, so the first dec at which some
    units / 10**dec reads back as v gives the shortest texts. units / 10**dec, both exact doubles, is one IEEE
    division: the correctly rounded value float() gives for the text. The units that read back form a run of
    integers around v * 10**dec, and the product is within half a unit of its rounding here, so that rounding and
    its two neighbours hold every integer within 1 of it: one of them reading back is the run's closest to v (what
    repr chooses), two are left to repr."""
    if v != v or v == np.inf or v == -np.inf:
        return 0, -1
    a = abs(v)
    if a == 0.0:
        return 0, 0
    if a < 1e-4 or a >= 1e16:
        return 0, -1
    for dec in range(SHORT_MAX_DEC + 1):
        p = P10[dec]
        s = a * p
        if s >= _TWO53F:
            return 0, -1
        m = np.int64(math.floor(s + 0.5))
        found = 0
        units = 0
        for c in range(m - 1, m + 2):
            if c >= 0 and c / p == a:
                found += 1
                units = c
        if found == 1:
            return (-units if v < 0.0 else units), dec
        if found > 1:
            return 0, -1
    return 0, -1
