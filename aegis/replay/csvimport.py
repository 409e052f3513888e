"""Binance public-data CSV files (USD-M futures, data.binance.vision) streamed into MARKET_DTYPE records.

Two daily file types are read, as published under data/futures/um/daily/<type>/<SYMBOL>/<SYMBOL>-<type>-<DATE>.zip:

  bookTicker: update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time
  aggTrades:  agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker

Sources for the column orders (checked with the `search` tool, code corpus):
  * aggTrades: binance/binance-public-data README.md, section FUTURES > AggTrades ("same as /fapi/v1/aggTrades"):
    Aggregate tradeId | Price | Quantity | First tradeId | Last tradeId | Timestamp | Was the buyer the maker
    (7 columns; the spot files have an 8th, is_best_match, which futures files do not). Several independent
    downloaders/tests of data/futures/um/daily/aggTrades files use the same header line (e.g. a Rust
    1-second-candle aggregator documenting "with or without a header").
  * bookTicker: the official README does not list bookTicker; the header line above appears verbatim in several
    independent readers of data/futures/um/daily/bookTicker/<SYM>/<SYM>-bookTicker-YYYY-MM-DD.zip (a C++ reader
    that compares the header string exactly, a Python ingest test that rejects any other header, a downloader
    module documenting the sample columns). Older files were published without a header row, newer ones with it,
    hence header detection: a first line whose first field is not a number is a header, and its names (not the
    position) then map the columns, so a reordered header still reads correctly.
Times are milliseconds since the epoch in these files; values >= 1e14 are taken as microseconds and >= 1e17 as
nanoseconds (Binance moved some spot files to microseconds in 2025; being lenient costs nothing).

Memory is bounded: files (plain, .gz, or the published .zip) are read in blocks of `block_bytes`, each block is cut at
its last newline and parsed by one jitted call into an array of records; nothing else of the file is kept.

Bad rows (wrong column count, unparsable numbers, non-positive prices, ...) are reported as `file:line: reason`,
skipped and counted. Rows whose timestamp goes back in time are kept but reported: their replay time (recv_ts) is
clamped to the latest time seen in the file so every chunk is non-decreasing in recv_ts, which the k-way merge of
aegis.replay.run relies on; exch_ts keeps the value in the file.
"""
from __future__ import annotations

import gzip
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from aegis.core.codecs import parse_decimal
from aegis.core.jit import njit
from aegis.core.records import KIND_QUOTE, KIND_TRADE, MARKET_DTYPE, SIDE_BUY, SIDE_SELL

BOOK_TICKER_COLUMNS = ("update_id", "best_bid_price", "best_bid_qty", "best_ask_price", "best_ask_qty",
                       "transaction_time", "event_time")
AGG_TRADES_COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
                      "is_buyer_maker")

FMT_BOOK_TICKER = 1
FMT_AGG_TRADES = 2
FORMATS = {"bookTicker": FMT_BOOK_TICKER, "aggTrades": FMT_AGG_TRADES}
_COLUMNS = {FMT_BOOK_TICKER: BOOK_TICKER_COLUMNS, FMT_AGG_TRADES: AGG_TRADES_COLUMNS}
_FORMAT_NAMES = {v: k for k, v in FORMATS.items()}

DEFAULT_BLOCK_BYTES = 2 << 20     # ~28 k bookTicker rows (~75 bytes each) per chunk: 3.6 MB of records
MAX_LINE_BYTES = 1 << 20          # a "line" longer than this is not CSV: stop instead of buffering the file
MAX_MESSAGES_PER_FILE = 20        # bad-row lines printed per file; the rest are only counted

# reason codes of bad rows (jitted parser -> Python messages)
BAD_COLUMNS = 1
BAD_INTEGER = 2
BAD_NUMBER = 3
BAD_BOOL = 4
BAD_VALUE = 5
BAD_TIME = 6
BACKWARDS = 7   # not a bad row: a warning, the row is kept
_REASONS = {
    BAD_COLUMNS: "expected {ncols} columns, got {detail}",
    BAD_INTEGER: "column {detail}: not an integer",
    BAD_NUMBER: "column {detail}: not a number",
    BAD_BOOL: "column {detail}: not true/false",
    BAD_VALUE: "column {detail}: price must be > 0 and quantity >= 0",
    BAD_TIME: "column {detail}: time must be > 0",
    BACKWARDS: "time goes back {detail} ns (row kept, replayed at the latest earlier time)",
}

RAW_DTYPE = np.dtype((np.void, MARKET_DTYPE.itemsize))   # one record as opaque bytes, for fast copies
_NAME_RE = re.compile(r"^([A-Z0-9]{2,40})-(bookTicker|aggTrades)-")


class InputError(ValueError):
    """A user mistake in an input file (missing, unreadable, unknown layout): one line, exit code 2."""


# ------------------------------------------------------------------------------------------ jitted field parsers
@njit(cache=True, nogil=True)
def _parse_int(buf, s, e):
    """(value, ok) of an optionally signed decimal integer in buf[s:e]."""
    if s >= e:
        return 0, False
    neg = False
    if buf[s] == 45:  # '-'
        neg = True
        s += 1
        if s >= e:
            return 0, False
    v = 0
    for i in range(s, e):
        c = buf[i] - 48
        if c < 0 or c > 9 or i - s > 18:
            return 0, False
        v = v * 10 + c
    return (-v if neg else v), True


@njit(cache=True, nogil=True)
def _parse_bool(buf, s, e):
    """1 true, 0 false, -1 neither (case-insensitive true/false, as Binance writes both `true` and `True`)."""
    n = e - s
    if n == 4 and (buf[s] | 32) == 116 and (buf[s + 1] | 32) == 114 and (buf[s + 2] | 32) == 117 \
            and (buf[s + 3] | 32) == 101:
        return 1
    if n == 5 and (buf[s] | 32) == 102 and (buf[s + 1] | 32) == 97 and (buf[s + 2] | 32) == 108 \
            and (buf[s + 3] | 32) == 115 and (buf[s + 4] | 32) == 101:
        return 0
    return -1


@njit(cache=True, nogil=True)
def _to_ns(v):
    if v < 100_000_000_000_000:          # < 1e14: milliseconds
        return v * 1_000_000
    if v < 100_000_000_000_000_000:      # < 1e17: microseconds
        return v * 1_000
    return v


@njit(cache=True, nogil=True)
def parse_block(buf, fmt, cols, ncols, symbol, out, line0, prev_ts, bad_line, bad_code, bad_detail):
    """Parse every line of buf (complete lines) into out.

    cols[k] = position in the row of semantic column k (the order of *_COLUMNS); ncols = columns per row.
    line0 = file line number of buf's first line. prev_ts = latest time of the file so far (replay-time clamp).
    Bad rows / warnings go to bad_line/bad_code/bad_detail. Numbers are read by codecs.parse_decimal, the Feed's
    parser: float(text) exactly. Returns (records, bad+warning entries, lines, prev_ts).
    """
    n = buf.shape[0]
    fs = np.empty(32, np.int64)
    fe = np.empty(32, np.int64)
    vals = np.empty(4)
    nout = 0
    nbad = 0
    line = line0
    pos = 0
    while pos < n:
        end = pos
        while end < n and buf[end] != 10:
            end += 1
        nxt = end + 1
        if end > pos and buf[end - 1] == 13:  # CRLF
            end -= 1
        if end == pos:  # blank line (a trailing newline, an empty file's only line): nothing to say
            pos = nxt
            line += 1
            continue
        # split into fields
        nf = 0
        s = pos
        for i in range(pos, end + 1):
            if i == end or buf[i] == 44:  # ','
                if nf < 32:
                    fs[nf] = s
                    fe[nf] = i
                nf += 1
                s = i + 1
        if nf != ncols:
            bad_line[nbad] = line
            bad_code[nbad] = BAD_COLUMNS
            bad_detail[nbad] = nf
            nbad += 1
            pos = nxt
            line += 1
            continue
        code = 0
        detail = 0
        r = out[nout]
        if fmt == FMT_BOOK_TICKER:
            uid, ok1 = _parse_int(buf, fs[cols[0]], fe[cols[0]])
            tt, ok5 = _parse_int(buf, fs[cols[5]], fe[cols[5]])
            et, ok6 = _parse_int(buf, fs[cols[6]], fe[cols[6]])
            if not ok1:
                code, detail = BAD_INTEGER, cols[0]
            elif not ok5:
                code, detail = BAD_INTEGER, cols[5]
            elif not ok6:
                code, detail = BAD_INTEGER, cols[6]
            elif et <= 0:
                code, detail = BAD_TIME, cols[6]
            if code == 0:
                for k in range(4):
                    c = cols[1 + k]
                    v, ok = parse_decimal(buf, fs[c], fe[c])
                    if not ok or not math.isfinite(v):
                        code, detail = BAD_NUMBER, c
                        break
                    if (k % 2 == 0 and not v > 0.0) or (k % 2 == 1 and not v >= 0.0):
                        code, detail = BAD_VALUE, c
                        break
                    vals[k] = v
            if code == 0:
                ts = _to_ns(et)
                r.exch_ts = ts
                r.bid_px = vals[0]
                r.bid_qty = vals[1]
                r.ask_px = vals[2]
                r.ask_qty = vals[3]
                r.kind = KIND_QUOTE
                r.side = 0
                r.px = 0.0
                r.qty = 0.0
                r.first_id = 0
                r.last_id = uid
                r.prev_id = 0
        else:  # aggTrades
            aid, ok0 = _parse_int(buf, fs[cols[0]], fe[cols[0]])
            fid, ok3 = _parse_int(buf, fs[cols[3]], fe[cols[3]])
            lid, ok4 = _parse_int(buf, fs[cols[4]], fe[cols[4]])
            tt, ok5 = _parse_int(buf, fs[cols[5]], fe[cols[5]])
            bm = _parse_bool(buf, fs[cols[6]], fe[cols[6]])
            if not ok0:
                code, detail = BAD_INTEGER, cols[0]
            elif not ok3:
                code, detail = BAD_INTEGER, cols[3]
            elif not ok4:
                code, detail = BAD_INTEGER, cols[4]
            elif not ok5:
                code, detail = BAD_INTEGER, cols[5]
            elif tt <= 0:
                code, detail = BAD_TIME, cols[5]
            elif bm < 0:
                code, detail = BAD_BOOL, cols[6]
            px = 0.0
            qty = 0.0
            if code == 0:
                px, ok = parse_decimal(buf, fs[cols[1]], fe[cols[1]])
                if not ok or not math.isfinite(px):
                    code, detail = BAD_NUMBER, cols[1]
                elif not px > 0.0:
                    code, detail = BAD_VALUE, cols[1]
            if code == 0:
                qty, ok = parse_decimal(buf, fs[cols[2]], fe[cols[2]])
                if not ok or not math.isfinite(qty):
                    code, detail = BAD_NUMBER, cols[2]
                elif not qty >= 0.0:
                    code, detail = BAD_VALUE, cols[2]
            if code == 0:
                ts = _to_ns(tt)
                r.exch_ts = ts
                r.bid_px = 0.0
                r.bid_qty = 0.0
                r.ask_px = 0.0
                r.ask_qty = 0.0
                r.kind = KIND_TRADE
                # is_buyer_maker: the seller crossed the spread, so the aggressor side is SELL
                r.side = SIDE_SELL if bm == 1 else SIDE_BUY
                r.px = px
                r.qty = qty
                r.first_id = fid
                r.last_id = aid
                r.prev_id = lid
        if code != 0:
            bad_line[nbad] = line
            bad_code[nbad] = code
            bad_detail[nbad] = detail
            nbad += 1
        else:
            ts = r.exch_ts
            if ts < prev_ts:
                bad_line[nbad] = line
                bad_code[nbad] = BACKWARDS
                bad_detail[nbad] = prev_ts - ts
                nbad += 1
                ts = prev_ts
            prev_ts = ts
            r.recv_ts = ts
            r.pub_ts = 0
            r.symbol = symbol
            r.flags = 0
            r.seq = line
            nout += 1
        pos = nxt
        line += 1
    return nout, nbad, line - line0, prev_ts


# ------------------------------------------------------------------------------------------------ file handling
def symbol_and_format_from_name(path: str) -> tuple[str | None, int | None]:
    """('BTCUSDT', FMT_BOOK_TICKER) from .../BTCUSDT-bookTicker-2024-01-01.csv[.zip|.gz]; (None, None) parts unknown."""
    base = os.path.basename(path)
    m = _NAME_RE.match(base)
    if m:
        return m.group(1), FORMATS[m.group(2)]
    fmt = None
    for name, code in FORMATS.items():
        if f"-{name}" in base:
            fmt = code
    return None, fmt


def _open_binary(path: str):
    """A binary stream of the CSV text inside path (.zip: its single .csv member, as published; .gz; plain)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory")
    try:
        if path.endswith(".zip"):
            zf = zipfile.ZipFile(path)
            members = sorted(i for i in zf.namelist() if i.lower().endswith(".csv"))
            if len(members) != 1:
                zf.close()
                raise InputError(f"{path}: expected one .csv member in the zip, found {len(members)}")
            info = zf.getinfo(members[0])
            return zf.open(info), members[0], info.file_size, zf
        if path.endswith(".gz"):
            return gzip.open(path, "rb"), None, os.path.getsize(path), None
        return open(path, "rb"), None, os.path.getsize(path), None
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a valid zip file") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from None


def _looks_numeric(field: bytes) -> bool:
    f = field.strip()
    return bool(f) and (f[:1].isdigit() or (f[:1] in b"-+." and f[1:2].isdigit()))


@dataclass
class ImportStats:
    rows: int = 0
    bad_rows: int = 0
    backwards: int = 0
    lines: int = 0
    bytes_read: int = 0
    messages: list = field(default_factory=list)


class CsvSource:
    """One Binance public-data CSV file as an iterator of MARKET_DTYPE chunks (non-decreasing recv_ts).

    symbol_id: the integer written into every record (the replay's symbol table decides it). symbol/fmt default to
    what the file name says. warn(msg) receives each bad-row / out-of-order message (the first
    MAX_MESSAGES_PER_FILE of the file; all are counted in .stats)."""

    def __init__(self, path: str, symbol_id: int = 0, symbol: str | None = None, fmt: int | str | None = None,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, warn: Callable[[str], None] | None = None):
        name_symbol, name_fmt = symbol_and_format_from_name(path)
        if isinstance(fmt, str):
            if fmt not in FORMATS:
                raise InputError(f"unknown CSV format {fmt!r} (known: {', '.join(FORMATS)})")
            fmt = FORMATS[fmt]
        self.path = path
        self.symbol = symbol or name_symbol
        self.fmt = fmt or name_fmt
        self.symbol_id = int(symbol_id)
        self.block_bytes = int(block_bytes)
        self.warn = warn
        self.stats = ImportStats()
        self.total_bytes = 0
        self._done = False
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        self.disk_bytes = max(os.path.getsize(path), 1)
        if self.symbol is None:
            raise InputError(f"{path}: cannot tell the symbol from the file name "
                             "(expected SYMBOL-bookTicker-DATE.csv or SYMBOL-aggTrades-DATE.csv); "
                             "give it with --symbol")

    # -- messages
    def _report(self, line: int, code: int, detail: int, ncols: int) -> None:
        if code == BACKWARDS:
            self.stats.backwards += 1
        else:
            self.stats.bad_rows += 1
        if len(self.stats.messages) < MAX_MESSAGES_PER_FILE:
            if code in (BAD_COLUMNS, BACKWARDS):
                text = _REASONS[code].format(ncols=ncols, detail=detail)
            else:
                names = self._names
                col = names[detail] if 0 <= detail < len(names) else str(detail + 1)
                text = _REASONS[code].format(ncols=ncols, detail=f"{detail + 1} ({col})")
            msg = f"{self.path}:{line}: {text}"
            self.stats.messages.append(msg)
            if self.warn is not None:
                self.warn(msg)

    def _header(self, first_line: bytes) -> tuple[np.ndarray, int, bool]:
        """(cols, ncols, has_header) from the first non-empty line of the file."""
        fields = [f.strip() for f in first_line.rstrip(b"\r\n").split(b",")]
        if not _looks_numeric(fields[0]):
            names = [f.decode("utf-8", "replace").strip().strip('"').lower() for f in fields]
            if self.fmt is None:
                for code, cols in _COLUMNS.items():
                    if set(cols) <= set(names):
                        self.fmt = code
            if self.fmt is None:
                raise InputError(f"{self.path}:1: header {','.join(names)} matches neither bookTicker nor aggTrades "
                                 f"columns")
            want = _COLUMNS[self.fmt]
            missing = [c for c in want if c not in names]
            if missing:
                raise InputError(f"{self.path}:1: {_FORMAT_NAMES[self.fmt]} header lacks column(s) "
                                 f"{', '.join(missing)}")
            self._names = names
            return np.array([names.index(c) for c in want], dtype=np.int64), len(names), True
        if self.fmt is None:
            # no header, no hint in the name: both layouts have 7 columns; only aggTrades ends in true/false
            last = fields[-1].lower()
            self.fmt = FMT_AGG_TRADES if last in (b"true", b"false") else FMT_BOOK_TICKER
        want = _COLUMNS[self.fmt]
        self._names = list(want)
        return np.arange(len(want), dtype=np.int64), len(want), False

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.chunks()

    def progress(self) -> tuple[int, int]:
        """(bytes done, bytes total) of the file on disk, for a progress bar (the whole size once finished)."""
        if self._done:
            return self.disk_bytes, self.disk_bytes
        stream = getattr(self, "_stream", None)
        raw = getattr(stream, "fileobj", None) if stream is not None else None
        if raw is not None:   # .gz: position in the compressed file
            try:
                return min(raw.tell(), self.disk_bytes), self.disk_bytes
            except (OSError, ValueError):
                return 0, self.disk_bytes
        if self.total_bytes <= 0:
            return 0, self.disk_bytes
        # plain: text bytes read; .zip: the same fraction of the uncompressed member, scaled to the zip's size
        frac = min(self.stats.bytes_read / self.total_bytes, 1.0)
        return int(frac * self.disk_bytes), self.disk_bytes

    def chunks(self) -> Iterator[np.ndarray]:
        stream, _member, total, zf = _open_binary(self.path)
        self.total_bytes = total
        self._stream = stream
        try:
            yield from self._chunks(stream)
        except OSError as e:  # truncated zip / gzip, I/O error mid-file
            raise InputError(f"{self.path}: read failed after line {self.stats.lines}: {e}") from None
        except (EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as e:
            raise InputError(f"{self.path}: truncated or corrupt after line {self.stats.lines}: {e}") from None
        finally:
            self._stream = None
            self._done = True
            stream.close()
            if zf is not None:
                zf.close()

    def _blocks(self, stream) -> Iterator[bytes]:
        rest = b""
        while True:
            data = stream.read(self.block_bytes)
            if not data:
                if rest:
                    yield rest
                return
            self.stats.bytes_read += len(data)
            if rest:
                data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > MAX_LINE_BYTES:
                    raise InputError(f"{self.path}:{self.stats.lines + 1}: line longer than {MAX_LINE_BYTES} "
                                     f"bytes: not a CSV file")
                rest = data
                continue
            rest = data[cut + 1:]
            yield data[:cut + 1]

    def _chunks(self, stream) -> Iterator[np.ndarray]:
        cols = None
        ncols = 0
        line = 1
        prev_ts = np.iinfo(np.int64).min
        for block in self._blocks(stream):
            if cols is None:
                if line == 1 and block.startswith(b"\xef\xbb\xbf"):
                    block = block[3:]
                # skip leading blank lines, then look at the first real line
                while block[:1] in (b"\n", b"\r"):
                    cut = block.find(b"\n")
                    block = block[cut + 1:]
                    line += 1
                if not block:
                    continue
                nl = block.find(b"\n")
                first = block if nl < 0 else block[:nl]
                cols, ncols, has_header = self._header(first)
                if has_header:
                    block = b"" if nl < 0 else block[nl + 1:]
                    line += 1
                    if not block:
                        continue
            buf = np.frombuffer(block, dtype=np.uint8)
            nlines = block.count(b"\n") + 1
            out = np.zeros(nlines, dtype=MARKET_DTYPE)  # zeroed: padding bytes stay deterministic
            bad_line = np.empty(nlines, np.int64)
            bad_code = np.empty(nlines, np.int64)
            bad_detail = np.empty(nlines, np.int64)
            nout, nbad, used, prev_ts = parse_block(
                buf, self.fmt, cols, ncols, self.symbol_id, out, line, prev_ts, bad_line, bad_code, bad_detail)
            out = out[:nout]
            order = np.argsort(bad_line[:nbad], kind="stable")
            for i in order:
                self._report(int(bad_line[i]), int(bad_code[i]), int(bad_detail[i]), ncols)
            line += used
            self.stats.lines = line - 1
            self.stats.rows += len(out)
            if len(out):
                yield out


def concat(parts: list[np.ndarray]) -> np.ndarray:
    """np.concatenate for MARKET records that keeps the padded 128-byte dtype (numpy's structured-dtype promotion
    would return a packed 112-byte one, which the order loop's kernels are not compiled for)."""
    n = sum(len(p) for p in parts)
    out = np.zeros(n, dtype=MARKET_DTYPE)
    raw = out.view(RAW_DTYPE)   # whole-record byte copies: numpy copies padded structured arrays field by field
    i = 0
    for p in parts:
        raw[i:i + len(p)] = np.ascontiguousarray(p).view(RAW_DTYPE)
        i += len(p)
    return out


def read_file(path: str, symbol_id: int = 0, symbol: str | None = None, fmt: int | str | None = None,
              block_bytes: int = DEFAULT_BLOCK_BYTES, warn=None) -> tuple[np.ndarray, ImportStats]:
    """Whole file at once (tests, small files): (records, stats)."""
    src = CsvSource(path, symbol_id, symbol, fmt, block_bytes, warn)
    parts = list(src.chunks())
    recs = concat(parts)
    return recs, src.stats


__all__ = ["CsvSource", "ImportStats", "InputError", "read_file", "concat", "symbol_and_format_from_name",
           "BOOK_TICKER_COLUMNS", "AGG_TRADES_COLUMNS", "FMT_BOOK_TICKER", "FMT_AGG_TRADES", "RAW_DTYPE"]
