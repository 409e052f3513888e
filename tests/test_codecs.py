"""The one decimal parser (aegis.core.codecs.parse_decimal) reads any decimal text as float(text) does, and the
Feed and CSV import both read through it, so the same text is the same double live and in replay."""
from __future__ import annotations

import math
import struct
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aegis.core.codecs import parse_decimal, put_decimal, scan_decimal, shortest_decimal


def _parse(text: str):
    b = np.frombuffer(text.encode(), np.uint8)
    return parse_decimal(b, 0, len(b))


def _same(v: float, w: float) -> bool:
    """Bit-identical (so 0.0 and -0.0 differ, as float() keeps the sign)."""
    return struct.pack("<d", v) == struct.pack("<d", w)


digits = st.text("0123456789", min_size=0, max_size=40)


@st.composite
def decimal_text(draw):
    """[+-]int[.frac][e[+-]exp]: any number of digits either side, Binance's trailing zeros, wide exponents."""
    sign = draw(st.sampled_from(["", "-", "+"]))
    ipart = draw(digits)
    frac = draw(st.none() | digits)
    if not ipart and not frac:
        ipart = draw(st.text("0123456789", min_size=1, max_size=25))
    text = sign + ipart + ("" if frac is None else "." + frac + "0" * draw(st.integers(0, 8)))
    if draw(st.booleans()):
        text += draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "-", "+"])) + \
            str(draw(st.integers(0, 400)))
    return text


@settings(max_examples=3000, deadline=None)
@given(decimal_text())
@example("9007199254740993")                     # 2**53 + 1: a tie, rounds to even
@example("2.4703282292062328e-324")              # just above half the smallest subnormal
@example("2.4703282292062327e-324")              # just below: zero
@example("1.7976931348623159e308")               # past the largest double: inf
@example("0." + "0" * 400 + "1e400")
@example("12345678.123456780000")                # 16 significant digits and Binance's trailing zeros
def test_random_decimal_text_reads_as_float_reads_it(text):
    v, ok = _parse(text)
    assert ok, text
    assert _same(v, float(text)), (text, v, float(text))


@st.composite
def near_halfway(draw):
    """Decimals within a few units of the 40th digit of the midpoint between two neighbouring doubles: the
    hardest inputs, where any rounding shortcut picks the wrong neighbour."""
    x = draw(st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False))
    mid = (Decimal(x) + Decimal(np.nextafter(x, math.inf))) / 2
    nudge = draw(st.sampled_from([Decimal(0), Decimal(1), Decimal(-1)])) * \
        Decimal(10) ** (mid.adjusted() - draw(st.integers(17, 60)))
    return format(mid + nudge, "e") if draw(st.booleans()) else format(mid + nudge, "f")


@settings(max_examples=1500, deadline=None)
@given(near_halfway())
def test_numbers_next_to_a_rounding_tie_round_like_float(text):
    v, ok = _parse(text)
    assert ok and _same(v, float(text)), (text, v, float(text))


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["r", ".17g", ".25e", ".8f"]))
def test_printed_doubles_read_back(x, fmt):
    text = repr(x) if fmt == "r" else format(x, fmt)
    v, ok = _parse(text)
    assert ok and _same(v, float(text)), (text, v, float(text))


@pytest.mark.parametrize("text", ["", "-", "+", ".", "-.", "e5", ".e5", "1e", "1e+", "1.2.3", "--1", "1-", "0x10",
                                  "nan", "inf", "Infinity", "1 ", " 1", "1,5", "1_000", "1e5.5", '"1"'])
def test_text_that_is_not_a_decimal_is_refused(text):
    v, ok = _parse(text)
    assert not ok and math.isnan(v)


def test_the_feed_and_csv_import_read_a_long_price_to_the_same_double(tmp_path):
    """Past 15 significant digits, where the Feed used to round differently and CSV import handed off to float()."""
    from aegis.feed import parse as P
    from aegis.replay import csvimport
    texts = ["12345.678901234567891", "0.30000000000000004441", "9007199254740993", "1.5e3"]
    for text in texts:
        quoted = np.frombuffer(f'"{text}"'.encode(), np.uint8)
        v, ok = P.parse_decimal(quoted, 0, len(quoted))
        assert ok and _same(v, float(text)), text
    f = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    f.write_text("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n" +
                 "".join(f"{i + 1},{t},1,{i + 1},{i + 1},{1704067200000 + i},false\n" for i, t in enumerate(texts)))
    recs, _ = csvimport.read_file(str(f))
    assert [float(x) for x in recs["px"]] == [float(t) for t in texts]


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**62), 2**62), st.integers(0, 12))
def test_the_number_writers_write_what_python_writes(v, dec):
    from aegis.core.codecs import put_decimal, put_int
    out = np.zeros(64, np.uint8)
    n = put_int(out, 3, v)
    assert bytes(out[3:n]).decode() == str(v)
    n = put_decimal(out, 0, v, dec)
    q, r = divmod(abs(v), 10 ** dec)
    want = ("-" if v < 0 else "") + str(q) + (f".{r:0{dec}d}" if dec else "")
    assert bytes(out[:n]).decode() == want
    _, ok = _parse(bytes(out[:n]).decode())                 # and the parser reads back what the writer wrote
    assert ok


def _calendar(ns: int) -> str:
    import datetime
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ns // 1_000_000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.integers(0, 2**63 - 1), st.integers(946_684_800, 4_102_444_800).map(lambda s: s * 10**9 - 1)))
def test_the_utc_writer_writes_the_calendars_date_and_time(ns):
    from aegis.core.codecs import put_utc_ms
    out = np.zeros(32, np.uint8)
    n = put_utc_ms(out, 2, ns)
    assert bytes(out[2:n]).decode() == _calendar(ns)


@pytest.mark.parametrize("text", ["1970-01-01T00:00:00.000", "2000-02-29T12:00:00.001", "2000-03-01T00:00:00.000",
                                  "2100-02-28T23:59:59.999", "2100-03-01T00:00:00.000", "2024-02-29T23:59:59.999",
                                  "2024-12-31T23:59:59.999", "2262-04-11T23:47:15.999"])
def test_the_utc_writer_on_leap_days_and_ends_of_years(text):
    import datetime
    from aegis.core.codecs import put_utc_ms
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f")
    ns = (t - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1) * 1000 + 999_999
    out = np.zeros(32, np.uint8)
    assert bytes(out[:put_utc_ms(out, 0, ns)]).decode() == text


def test_the_writers_copy_bytes_and_spans():
    from aegis.core.codecs import put_bytes, put_span
    out = np.zeros(16, np.uint8)
    src = np.frombuffer(b"abcdef", np.uint8)
    n = put_bytes(out, 1, src)
    n = put_span(out, n, src, 2, 3)
    assert n == 10 and bytes(out[1:n]) == b"abcdefcde"


def _short_text(v: float) -> str | None:
    """What the CSV writers write for v through shortest_decimal (None: left to repr)."""
    units, dec = shortest_decimal(v)
    if dec < 0:
        return None
    out = np.zeros(64, np.uint8)
    n = put_decimal(out, 0, units, dec)
    return out[:n].tobytes().decode() + (".0" if dec == 0 else "")


@pytest.mark.parametrize("v, text", [
    (40000.1, "40000.1"), (2.0, "2.0"), (-7.25, "-7.25"), (1e-4, "0.0001"), (0.001, "0.001"),
    (1e15, "1000000000000000.0"),
    (9007199254740990.0, "9007199254740990.0"), (0.1 + 0.2, None), (1 / 3, None), (9.999999999999999e-05, None),
    (1e16, None), (float("inf"), None), (float("nan"), None), (0.0, "0.0"), (123.456, "123.456"),
])
def test_shortest_decimal_writes_repr_or_leaves_it_to_repr(v, text):
    got = _short_text(v)
    if text is None:
        assert got is None
    else:
        assert got == repr(v) == text


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(), st.floats(min_value=1e-4, max_value=1e7),
                 st.builds(lambda m, d: round(m / 10 ** d, d), st.integers(-10 ** 12, 10 ** 12), st.integers(0, 9))))
@example(0.30000000000000004)
@example(-0.0)
def test_shortest_decimal_is_repr_whenever_it_writes(v):
    got = _short_text(v)
    if got is not None:
        assert got == repr(v if v != 0.0 else 0.0)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.decimals(allow_nan=False, allow_infinity=False).map(str),
                 st.floats(allow_nan=False, allow_infinity=False).map(repr),
                 st.text(alphabet="0123456789.eE+-", max_size=12)),
       st.sampled_from(['"', ",", "]", "}", " ", "x", ""]))
def test_scan_decimal_reads_a_number_up_to_what_cannot_continue_it(text, after):
    """scan_decimal on a number followed by a byte that cannot continue it gives parse_decimal's value of the number
    and stops at that byte; parse_decimal is scan_decimal that must end at the end."""
    buf = np.frombuffer((text + after).encode(), np.uint8)
    v, ok = parse_decimal(buf[:len(text)], 0, len(text))
    sv, sok, end = scan_decimal(buf, 0, len(buf))
    if ok and end == len(text):
        assert sok and (sv == v or (math.isnan(sv) and math.isnan(v)))
        assert struct.pack("<d", sv) == struct.pack("<d", v)
    if ok:
        assert end == len(text) or after == ""  and end == len(buf)
    whole, whole_ok = parse_decimal(buf, 0, len(buf))
    assert (whole_ok, struct.pack("<d", whole) if whole_ok else b"") == \
        ((sok, struct.pack("<d", sv)) if (sok and end == len(buf)) else (False, b""))
