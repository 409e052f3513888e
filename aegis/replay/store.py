"""A market-data store: Binance public data and Feed recordings converted once into arrays of MARKET_DTYPE's fields
that replay reads with no parsing. `python -m aegis data import FILES... --to DIR`, `data verify DIR`, `data ls DIR`.

Layout (one directory, any filesystem every reader sees):

  DIR/manifest.json                                  the only list of partitions a reader uses (the commit point)
  DIR/<SYMBOL>/<YYYY-MM-DD>/<stream>.<crc32>.npy     one partition: the records of one symbol, one UTC day (of replay
                                                     time, recv_ts) and one input stream, in replay order

stream is "bookTicker" or "aggTrades" for Binance CSV/ZIP files and "rec-<file name>" for a Feed recording (a
recording holds every symbol and kind the Feed received; each recording file gives its own partitions, so two
recordings overlapping one day are merged at replay time like any two inputs, not rewritten at import).

Why a plain .npy of records (and not Parquet): measured in bench/bench_store.py (figures in bench/RESULTS.md).
Replay consumes MARKET_DTYPE records; a .npy partition holds them row by row, so reading is a copy of bytes -- no
decode, no column-to-row assembly -- and the file opens with plain `numpy.load(mmap_mode="r")`. A bookTicker or
aggTrades partition stores only the fields its file fills (QUOTE_ROW, TRADE_ROW: 56 and 64 bytes a row against
128), expanded into records in the cache as they are read: the kernel's read of a file, not the copy, is what
costs here (see "row layouts" below). A recording's partitions are whole records.
Parquet (pyarrow) is 1.6x (uncompressed) to 2.4x (zstd) smaller on disk than a bookTicker partition (35 and 24
bytes a row against 56), but every read must decode and transpose it into records: into MARKET records the .npy
reads at 107 M rows/s against Parquet's 10-15 (bench at 4 M rows). Compression does not pay on the read path, which
a sweep repeats hundreds of times, while the data sits in the page cache; it would on storage slower than ~0.6 GB/s.
The engine path stays free of pyarrow.

In the stored records the symbol field is 0: a partition's symbol is its directory and manifest entry, and a reader
stamps its own symbol table's id (nothing to stamp when that id is 0, the usual single-symbol research replay).
pub_ts is recv_ts and seq the row's index in the partition, as replay's merge would stamp them, so a partition
whose time span overlaps no other input's goes to the replay core as its file's bytes, unmerged, read into one
reused 2 MB buffer; overlapping partitions are merged from 1 MB windows of each. Every row is read by pread(2)
(read_rows), none through a mapping: a read that finds the file cut short since it was opened, or fails, is a
one-line error naming the partition, where a mapped page no longer in the file kills the process with SIGBUS and no
message.

Integrity:
  * atomic: a partition is written to a hidden temp file, fsynced and renamed to a name that carries its checksum;
    then the manifest is rewritten the same way (temp + fsync + rename). A reader only opens partitions the
    manifest lists, so an import killed at any point leaves nothing replay would read (at worst an unlisted file,
    removed by the next import). A re-imported partition gets a new name; the old file is removed after the
    manifest no longer lists it.
  * exchange filters: a partition imported from a Feed recording keeps, in its manifest entry, its symbol's row of
    the recording's `!exchangeInfo` line (tick/step sizes, min notional...) and that row's CRC-32, so replay from
    the store sizes and rounds orders exactly as replay from the recording does (the last partition's row wins per
    symbol, in replay order, as the last recording's does). A row that does not match its CRC is reported like a
    damaged partition.
  * checksummed: the manifest holds each partition's rows, bytes, CRC-32 and sum64 of its records. Every open
    checks the file size and header against the manifest (catches truncation, no cost); the records are checked
    when a replay first opens a partition in a process (once per sweep worker, not once per trial), by sum64
    (4.8 GB/s: the CRC-32 pass, 2.3 GB/s, cost a replay about half as much as the replay core itself), and by
    both in `data verify`. In a replay the replay core takes the sum as it reads the rows (_Sum64Check): a pass
    of the check's own first read the file twice and cost a third of a first open. So a damaged partition is
    found only when its last row is summed, after the core has replayed all of it: the replay then fails and
    removes its output files (aegis.replay.run.run), nothing of it is kept. Partitions imported before sum64
    existed are checked by CRC-32 before replay. A mismatch is one line naming the partition, exit 2. CRC-32 and
    not SHA-256: it detects accidental damage, which is the threat here, at 1.3 GB/s against SHA-256's 0.76 GB/s
    on this box.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import mmap
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from aegis.brain import pools
from aegis.core.jit import njit
from aegis.core.records import KIND_QUOTE, KIND_TRADE, MARKET_DTYPE
from aegis.replay.csvimport import CsvSource, InputError

MANIFEST = "manifest.json"
FORMAT = "aegis-market-store"
VERSION = 2                  # 2: partitions name their row layout; a version 1 store is read as all "market"
READS = (1, 2)
LOCK = ".import.lock"
TMP_MARK = ".tmp-"
HEADER_BYTES = 1024          # reserved .npy header: written before the row count is known, padded with spaces
DAY_NS = 86_400 * 1_000_000_000
CHUNK_ROWS = 1 << 13         # rows per chunk a reader yields (1 MB): the merge keeps one chunk per source
CHECK_ROWS = 1 << 16         # rows a check of a whole partition reads at a time (8 MB)
_DESCR = np.lib.format.dtype_to_descr(MARKET_DTYPE)


# ============================================================================================== row layouts
# A partition's file holds its rows in one layout, named by its manifest entry (and checked against the .npy
# header). A Binance public-data file fills only some of MARKET_DTYPE's fields: the rest are the stream's kind,
# zeros, or what import stamps (symbol 0, pub_ts = recv_ts, seq = the row's index). Those are not stored: a
# bookTicker row is 56 bytes on disk instead of 128. Reading a file costs the kernel about 0.7 us per 4 KB page on
# this host (pread and mapped reads alike: 5.8-6.6 GB/s, against 20 GB/s for a memcpy in user space), which made
# the file read as long as the replay core itself; the rows are expanded into records in the cache, where that
# costs a few ns a row (bench/MEASURED.md). A Feed recording holds every kind and stays "market": whole records.
# On disk only: nothing but store.py sees these layouts, so the cache-line rule of aegis.core.records does not
# apply (TRADE_ROW is padded to 64 bytes only to keep its 8-byte fields aligned).
QUOTE_ROW = np.dtype({"names": ["exch_ts", "recv_ts", "bid_px", "bid_qty", "ask_px", "ask_qty", "last_id"],
                      "formats": ["<i8", "<i8", "<f8", "<f8", "<f8", "<f8", "<i8"],
                      "offsets": [0, 8, 16, 24, 32, 40, 48], "itemsize": 56})
TRADE_ROW = np.dtype({"names": ["exch_ts", "recv_ts", "px", "qty", "first_id", "last_id", "prev_id", "side"],
                      "formats": ["<i8", "<i8", "<f8", "<f8", "<i8", "<i8", "<i8", "i1"],
                      "offsets": [0, 8, 16, 24, 32, 40, 48, 56], "itemsize": 64})   # 7 bytes of padding
LAYOUTS = {"market": MARKET_DTYPE, "quote": QUOTE_ROW, "trade": TRADE_ROW}
STREAM_LAYOUT = {"bookTicker": "quote", "aggTrades": "trade"}   # any other stream (a recording's): "market"


@njit(cache=True, nogil=True)
def _quotes_to_records(rows, out, row0):
    for i in range(rows.shape[0]):
        r = rows[i]
        o = out[i]
        o.exch_ts = r.exch_ts
        o.recv_ts = r.recv_ts
        o.pub_ts = r.recv_ts
        o.bid_px = r.bid_px
        o.bid_qty = r.bid_qty
        o.ask_px = r.ask_px
        o.ask_qty = r.ask_qty
        o.symbol = 0
        o.kind = KIND_QUOTE
        o.side = 0
        o.flags = 0
        o.px = 0.0
        o.qty = 0.0
        o.first_id = 0
        o.last_id = r.last_id
        o.prev_id = 0
        o.seq = row0 + i


@njit(cache=True, nogil=True)
def _trades_to_records(rows, out, row0):
    for i in range(rows.shape[0]):
        r = rows[i]
        o = out[i]
        o.exch_ts = r.exch_ts
        o.recv_ts = r.recv_ts
        o.pub_ts = r.recv_ts
        o.bid_px = 0.0
        o.bid_qty = 0.0
        o.ask_px = 0.0
        o.ask_qty = 0.0
        o.symbol = 0
        o.kind = KIND_TRADE
        o.side = r.side
        o.flags = 0
        o.px = r.px
        o.qty = r.qty
        o.first_id = r.first_id
        o.last_id = r.last_id
        o.prev_id = r.prev_id
        o.seq = row0 + i


def to_records(layout: str, rows: np.ndarray, row: int, buf: np.ndarray) -> np.ndarray:
    """Stored rows (rows [row, row + len(rows)) of a partition of this layout) as MARKET_DTYPE records in buf's
    first len(rows) slots; a "market" partition's rows are records already. Only fields are written: buf's padding
    bytes must be zero, as import's were, for the records' sum64 to match (every reader's buffer is zeroed once)."""
    if layout == "market":
        return rows
    out = buf[:len(rows)]
    (_quotes_to_records if layout == "quote" else _trades_to_records)(rows, out, row)
    return out


def _stored(layout: str, recs: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(recs in the layout, for writing; the records a reader will get from them, for their sum64) of recs, rows
    [row, ...) of a partition; ValueError if the layout would not give every field back as it is in recs."""
    if recs.dtype != MARKET_DTYPE:   # (np.concatenate, for one, packs the padding away: 112-byte rows)
        raise ValueError(f"records of another layout than MARKET_DTYPE's ({recs.dtype.itemsize} bytes)")
    recs = np.ascontiguousarray(recs)
    if layout == "market":
        return recs, recs
    dt = LAYOUTS[layout]
    rows = np.zeros(len(recs), dt)
    for f in dt.names:
        rows[f] = recs[f]
    back = to_records(layout, rows, row, np.zeros(len(recs), MARKET_DTYPE))   # (padding: zeros, not recs')
    for f in MARKET_DTYPE.names:
        if back[f].tobytes() != recs[f].tobytes():
            raise ValueError(f"records that the {layout!r} layout does not hold: {f} is not what it stores")
    return rows, back


class StoreError(InputError):
    """A store that cannot be used as asked (bad path, damaged partition): one line, exit 2."""


# ============================================================================================== manifest
@dataclass(frozen=True)
class Partition:
    root: Path
    rel: str               # SYMBOL/YYYY-MM-DD/<stream>.<crc>.npy
    symbol: str
    day: str
    stream: str
    rows: int
    nbytes: int            # bytes of records (file size - header)
    crc32: int
    first_ns: int
    last_ns: int
    source: str            # the imported file's name
    filters: dict | None = None   # a recording's partition: its symbol's exchangeInfo row (tick/step/min notional)
    filters_crc32: str = ""       # the manifest's CRC-32 of that row (hex), checked by check_filters()
    sum64: int | None = None      # fast checksum of the records (see sum64); None in partitions imported before it
    layout: str = "market"        # how the file holds its rows (LAYOUTS); "market" in stores of version 1

    @property
    def row_dtype(self) -> np.dtype:
        return LAYOUTS[self.layout]

    @property
    def path(self) -> Path:
        return self.root / self.rel

    def to_json(self) -> dict:
        d = {"symbol": self.symbol, "day": self.day, "stream": self.stream, "rows": self.rows,
             "bytes": self.nbytes, "crc32": f"{self.crc32:08x}", "first_ns": self.first_ns,
             "last_ns": self.last_ns, "source": self.source}
        if self.filters is not None:
            d["filters"] = self.filters
            d["filters_crc32"] = self.filters_crc32 or f"{filters_crc(self.filters):08x}"
        if self.sum64 is not None:
            d["sum64"] = f"{self.sum64:016x}"
        d["layout"] = self.layout
        return d

    def check_filters(self) -> dict | None:
        """The exchangeInfo row, after checking it against its CRC (StoreError naming the partition if damaged)."""
        if self.filters is None:
            return None
        crc = filters_crc(self.filters) if isinstance(self.filters, dict) else None
        if crc is None or f"{crc:08x}" != self.filters_crc32:
            raise StoreError(f"damaged partition {self.rel}: exchange filters checksum "
                             f"{'-' if crc is None else f'{crc:08x}'}, manifest says {self.filters_crc32 or '-'}")
        return self.filters

    @classmethod
    def from_json(cls, root: Path, rel: str, d: dict) -> "Partition":
        return cls(root, rel, d["symbol"], d["day"], d["stream"], int(d["rows"]), int(d["bytes"]),
                   int(d["crc32"], 16), int(d["first_ns"]), int(d["last_ns"]), d.get("source", ""),
                   d.get("filters"), str(d.get("filters_crc32", "")),
                   int(d["sum64"], 16) if "sum64" in d else None, _layout_name(d.get("layout", "market")))


def _layout_name(name) -> str:
    if name not in LAYOUTS:
        raise ValueError(f"unknown row layout {name!r}")
    return name


def filters_crc(row: dict) -> int:
    """CRC-32 of an exchangeInfo row in one canonical spelling (sorted keys, no spaces): what the manifest stores
    next to it, so an edited or damaged row is named like a damaged partition."""
    return zlib.crc32(json.dumps(row, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def recorded_filters(parts: list[Partition]) -> tuple[dict[str, dict], bool]:
    """(exchangeInfo rows by symbol, whether any partition came from a recording) of partitions in replay order:
    what aegis.replay.run reads from the recordings themselves (the last one's row wins per symbol)."""
    rows: dict[str, dict] = {}
    from_rec = False
    for p in parts:
        if p.stream.startswith("rec-"):
            from_rec = True
            if p.filters is not None:
                rows[p.symbol] = p.check_filters()
    return rows, from_rec


def find_root(path: str | os.PathLike) -> Path | None:
    """The store holding path (the store directory itself, a symbol or day directory, or a partition file)."""
    p = Path(path).resolve()
    for cand in (p, *list(p.parents)[:3]):
        if (cand / MANIFEST).is_file():
            return cand
    return None


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.parts: dict[str, Partition] = {}
        mf = self.root / MANIFEST
        if not mf.exists():
            return
        try:
            data = json.loads(mf.read_text(encoding="ascii"))
            if data.get("format") != FORMAT or data.get("version") not in READS:
                raise StoreError(f"{mf}: not an {FORMAT} manifest of a version this build reads "
                                 f"({', '.join(f'v{v}' for v in READS)})")
            if data.get("record") != repr(_DESCR):
                raise StoreError(f"{mf}: written with another MARKET_DTYPE layout; import the data again")
            self.parts = {rel: Partition.from_json(self.root, rel, d) for rel, d in data["partitions"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{mf}: unreadable manifest ({e})") from None

    def save(self) -> None:
        data = {"format": FORMAT, "version": VERSION, "record": repr(_DESCR),
                "partitions": {rel: p.to_json() for rel, p in sorted(self.parts.items())}}
        _atomic_write(self.root / MANIFEST, (json.dumps(data, indent=1) + "\n").encode("ascii"))

    def select(self, symbols=None, start: str | None = None, end: str | None = None, under: str = "",
               streams=None) -> list[Partition]:
        """Partitions by symbol (None: all), day range [start, end] (ISO dates, inclusive), path prefix and stream;
        ordered by day, symbol, stream (the order replay merges ties in)."""
        syms = {s.upper() for s in symbols} if symbols else None
        out = [p for rel, p in self.parts.items()
               if (syms is None or p.symbol in syms) and (start is None or p.day >= start)
               and (end is None or p.day <= end) and rel.startswith(under)
               and (streams is None or p.stream in streams)]
        return sorted(out, key=lambda p: (p.day, p.symbol, p.stream))

    def symbols(self) -> list[str]:
        return sorted({p.symbol for p in self.parts.values()})

    def days(self, symbols=None) -> list[str]:
        return sorted({p.day for p in self.select(symbols)})


def _atomic_write(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ============================================================================================== reading
def _npy_header(rows: int, dtype: np.dtype) -> bytes:
    """A version 1.0 .npy header for `rows` rows of dtype, padded to HEADER_BYTES (numpy strips the padding)."""
    descr = np.lib.format.dtype_to_descr(dtype)
    text = repr({"descr": descr, "fortran_order": False, "shape": (rows,)}).encode("latin1")
    head = b"\x93NUMPY\x01\x00"
    body_len = HEADER_BYTES - len(head) - 2
    if len(text) + 1 > body_len:
        raise ValueError("the row layout's description does not fit the reserved .npy header")
    return head + body_len.to_bytes(2, "little") + text.ljust(body_len - 1) + b"\n"


def open_partition(part: Partition, check_crc: bool, both: bool = False) -> np.ndarray:
    """The partition's rows as stored (its layout's dtype) in an array over a private (copy-on-write) mmap of the
    file; StoreError naming it if damaged. Readers take its length and first row from it (the rows themselves
    are read by read_rows); a write would change this process's copy of the page, never the file.
    check_crc: check the records against the manifest -- by sum64 when the manifest has it (6x faster than CRC-32),
    else by CRC-32; both: by both (`data verify`)."""
    path = part.path
    name = part.rel
    try:
        f = open(path, "rb")
    except OSError as e:
        raise StoreError(f"damaged partition {name}: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != HEADER_BYTES + part.nbytes or part.nbytes != part.rows * part.row_dtype.itemsize:
            raise StoreError(f"damaged partition {name}: {size} bytes on disk, manifest says "
                             f"{HEADER_BYTES + part.nbytes}")
        try:
            if np.lib.format.read_magic(f) != (1, 0):
                raise ValueError("not a version 1.0 header")
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        except ValueError as e:
            raise StoreError(f"damaged partition {name}: bad .npy header ({e})") from None
        if f.tell() != HEADER_BYTES or dtype != part.row_dtype or shape != (part.rows,) or fortran:
            raise StoreError(f"damaged partition {name}: header says {shape} of another layout")
        if part.rows == 0:
            return np.zeros(0, part.row_dtype)
        if check_crc:
            _check_file(f.fileno(), part, part.sum64 is not None, both or part.sum64 is None)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    mm.madvise(mmap.MADV_SEQUENTIAL)
    return np.frombuffer(mm, part.row_dtype, count=part.rows, offset=HEADER_BYTES)


def read_rows(fd: int, part: Partition, row: int, buf: np.ndarray, raw: np.ndarray | None = None) -> np.ndarray:
    """Rows [row, row + len(buf)) (fewer at the end) of the partition's open file fd as MARKET_DTYPE records in
    buf's first slots: read by pread(2) into raw (rows of the partition's layout, at least len(buf) of them;
    allocated when None) and expanded, or straight into buf for a "market" partition."""
    if part.layout == "market":
        return read_stored(fd, part, row, buf)
    if raw is None or len(raw) < len(buf) or raw.dtype != part.row_dtype:
        raw = np.empty(len(buf), part.row_dtype)
    return to_records(part.layout, read_stored(fd, part, row, raw[:len(buf)]), row, buf)


def read_stored(fd: int, part: Partition, row: int, buf: np.ndarray) -> np.ndarray:
    """Rows [row, row + len(buf)) (fewer at the end) of the partition's open file fd, as stored, copied into buf by
    pread(2), as buf's first rows; StoreError naming the partition when the file no longer holds them (cut short
    since it was opened) or cannot be read. The store's rows are read this way, not through a mapping: a mapped
    page that is no longer in the file kills the process with SIGBUS, and an I/O error does the same."""
    size = part.row_dtype.itemsize
    n = min(len(buf), part.rows - row)
    view = memoryview(buf.view(np.uint8))[:n * size]
    got = 0
    while got < len(view):
        try:
            k = os.preadv(fd, [view[got:]], HEADER_BYTES + row * size + got)
        except OSError as e:
            raise StoreError(f"damaged partition {part.rel}: {e.strerror or e}") from None
        if k <= 0:
            raise StoreError(f"damaged partition {part.rel}: {HEADER_BYTES + row * size + got} bytes on disk, "
                             f"manifest says {HEADER_BYTES + part.nbytes}")
        got += k
    return buf[:n]


def _check_file(fd: int, part: Partition, by_sum64: bool, by_crc: bool) -> None:
    """Read the partition's rows once and check them against the manifest by sum64 and/or CRC-32 (StoreError
    naming it on a mismatch)."""
    raw = pools.aligned_zeros(CHECK_ROWS, part.row_dtype)
    buf = raw if part.layout == "market" else pools.aligned_zeros(CHECK_ROWS, MARKET_DTYPE)
    check = _Sum64Check(part) if by_sum64 else None
    crc = 0
    for row in range(0, part.rows, CHECK_ROWS):
        b = read_stored(fd, part, row, raw)
        if check is not None:   # sum64 is of the records, CRC-32 of the file's bytes
            check.add(row, to_records(part.layout, b, row, buf))
        if by_crc:
            crc = zlib.crc32(memoryview(b.view(np.uint8)), crc)
    if by_crc and crc != part.crc32:
        raise StoreError(f"damaged partition {part.rel}: checksum {crc:08x}, manifest says {part.crc32:08x}")


# sum64: the check a replay makes on first opening a partition. Four interleaved Fletcher-style lanes over the
# records' 64-bit words (lane k: s += w, t += s, mod 2^64), folded into 64 bits. Any change of one word changes its
# lane's s; two changes cancel in s only if they also cancel in t, which needs the same position. It detects the
# accidental damage CRC-32 is here for (flipped bits, zeroed or torn pages; truncation is caught by the size), at
# memory speed: the CRC-32 pass cost about as much as replaying the partition. CRC-32 stays, for `data verify`.
SUM64_LANES = 8   # s0..s3, t0..t3
RECORD_WORDS = MARKET_DTYPE.itemsize // 8   # 16: a slice of whole records keeps the lanes aligned


@njit(cache=True, nogil=True)
def sum64_step(words, st):
    """Add words to the lanes st[:SUM64_LANES]; st[SUM64_LANES], when st has it, counts the words added (so a
    check knows how far the replay core, which sums the rows as it reads them, has gone)."""
    # Over m steps of one lane with words w_1..w_m the recurrence (s += w, t += s) ends at
    #   s_m = s_0 + A,   t_m = t_0 + m s_0 + (m + 1) A - B,   A = sum w_j,  B = sum j w_j   (mod 2^64),
    # and A and B have no chain from one step to the next, so LLVM vectorises them: 2.5x the rate of the
    # recurrence itself (35 against 15 GB/s from the cache here), which a replay's first open pays per row.
    m = words.shape[0] // 4
    a0 = a1 = a2 = a3 = np.uint64(0)
    b0 = b1 = b2 = b3 = np.uint64(0)
    for k in range(m):
        j = np.uint64(k + 1)
        w0, w1, w2, w3 = words[4 * k], words[4 * k + 1], words[4 * k + 2], words[4 * k + 3]
        a0 += w0
        a1 += w1
        a2 += w2
        a3 += w3
        b0 += j * w0
        b1 += j * w1
        b2 += j * w2
        b3 += j * w3
    n = np.uint64(m)
    n1 = np.uint64(m + 1)
    st[4] += n * st[0] + n1 * a0 - b0
    st[5] += n * st[1] + n1 * a1 - b1
    st[6] += n * st[2] + n1 * a2 - b2
    st[7] += n * st[3] + n1 * a3 - b3
    st[0] += a0
    st[1] += a1
    st[2] += a2
    st[3] += a3
    if st.shape[0] > SUM64_LANES:
        st[SUM64_LANES] += np.uint64(4 * m)


def _sum64_fold(st: np.ndarray) -> int:
    h = 0xCBF29CE484222325
    for v in st[:SUM64_LANES].tolist():
        h = ((h ^ v) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class _Sum64Check:
    """A partition's sum64, taken in row order as its rows are read and compared with the manifest when the last row
    is in. A replay's first open hands `lanes` to the replay core with each read, and the core sums the rows as it
    reads them (aegis.replay.run.run_core): the file is read once, not once for the check and again for the
    replay, and the sum reads rows the core has just brought into the cache. Rows handed on without the lanes (the
    merge's windows, the general merge's chunks, a caller that does not sum, a whole-file check) are summed by
    add() as they are read."""

    def __init__(self, part: Partition):
        self.part = part
        self.lanes = np.zeros(SUM64_LANES + 1, np.uint64)   # + the count of words summed (sum64_step)

    def add(self, row: int, recs: np.ndarray) -> bool:
        """recs are rows [row, row + len(recs)) of the file: summed unless the replay core has summed them already
        (it has moved past row). True once every row is summed and matches the manifest, StoreError naming the
        partition if it does not."""
        done = int(self.lanes[SUM64_LANES]) // RECORD_WORDS
        if row == done:
            sum64_step(recs.view(np.uint64), self.lanes)
            done += len(recs)
        if done < self.part.rows:
            return False
        got = _sum64_fold(self.lanes)
        if done != self.part.rows or got != self.part.sum64:
            raise StoreError(f"damaged partition {self.part.rel}: checksum {got:016x}, manifest says "
                             f"{self.part.sum64:016x}")
        return True


def sum64(recs: np.ndarray) -> int:
    """The sum64 of records in memory (what import stores)."""
    st = np.zeros(SUM64_LANES, np.uint64)
    sum64_step(np.ascontiguousarray(recs).view(np.uint64), st)
    return _sum64_fold(st)


_verified: set[tuple] = set()   # partitions whose CRC this process has checked (key includes inode and mtime)


def _identity(part: Partition) -> tuple:
    st = os.stat(part.path)
    return part.rel, part.crc32, st.st_ino, st.st_size, st.st_mtime_ns


def verify(parts: list[Partition], progress: Callable[[Partition], None] | None = None) -> None:
    """Check every partition's CRC now (StoreError on the first damaged one); later opens in this process skip it."""
    for p in parts:
        try:
            ident = _identity(p)
        except OSError as e:
            raise StoreError(f"damaged partition {p.rel}: {e.strerror or e}") from None
        p.check_filters()
        if ident not in _verified:
            open_partition(p, check_crc=True, both=True)
            _verified.add(ident)
        if progress:
            progress(p)


def identities(parts: list[Partition]) -> list[tuple]:
    """What verify() remembers of each partition, to hand to another process reading the same files (a sweep's
    workers): trust() there skips the CRC pass for exactly these files (same inode, size and mtime)."""
    return [_identity(p) for p in parts]


def trust(idents) -> None:
    _verified.update(tuple(i) for i in idents)


class StoreSource:
    """One partition as a replay source: its rows read from the file into a buffer (read_into()) or as chunks
    (chunks()), no parsing; open() also maps the file, for its length and first row (nothing else reads the
    mapping: see read_rows)."""

    def __init__(self, part: Partition, symbol_id: int, chunk_rows: int = CHUNK_ROWS):
        self.part = part
        self.path = str(part.path)
        self.symbol_id = int(symbol_id)
        self.chunk_rows = int(chunk_rows)
        self.rows = 0
        self.bad_lines = 0
        self.parse_problems: dict[str, int] = {}
        self._done = False
        self._recs: np.ndarray | None = None
        self._check: _Sum64Check | None = None   # a first open's sum64, taken as the rows are handed on
        self._ident: tuple = ()
        self._file = None   # the partition's file, open for read_into (the same inode as the mapping)
        self._raw = np.empty(0, part.row_dtype)   # read_into's rows as stored, before they become records

    def progress(self) -> tuple[int, int]:
        total = max(self.part.nbytes, 1)
        return (total if self._done else min(self.rows * self.part.row_dtype.itemsize, total)), total

    def open(self) -> np.ndarray:
        """All the partition's rows as stored (a mapping of the file: nothing is read until touched). On the first
        open of this file in this process the records are checked: by sum64 as they are read and handed on (lanes(),
        check_rows()), so the file is read once; a partition imported before sum64 by CRC-32 here, before any is
        handed on."""
        if self._recs is None:
            try:
                ident = _identity(self.part)
            except OSError as e:
                raise StoreError(f"damaged partition {self.part.rel}: {e.strerror or e}") from None
            same_pass = ident not in _verified and self.part.sum64 is not None and self.part.rows > 0
            self._recs = open_partition(self.part, check_crc=ident not in _verified and not same_pass)
            try:
                self._file = open(self.path, "rb", buffering=0)
                st = os.fstat(self._file.fileno())
            except OSError as e:
                raise StoreError(f"damaged partition {self.part.rel}: {e.strerror or e}") from None
            if (st.st_ino, st.st_size, st.st_mtime_ns) != ident[2:]:
                raise StoreError(f"damaged partition {self.part.rel}: the file changed while it was being opened")
            with contextlib.suppress(OSError):   # advice only (read_into reads the file front to back)
                os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if same_pass:
                self._check, self._ident = _Sum64Check(self.part), ident
            else:
                _verified.add(ident)
        return self._recs

    def lanes(self) -> np.ndarray | None:
        """What the replay core sums the rows it is handed into (run_core), while this open checks them."""
        return self._check.lanes if self._check is not None else None

    def read_into(self, row: int, buf: np.ndarray) -> np.ndarray:
        """Rows [row, row + len(buf)) (fewer at the end) copied from the file into buf by pread(2), as buf's first
        rows; StoreError naming the partition when the file no longer holds them (cut short since it was opened)
        or cannot be read. Through the mapping, the same damage is a SIGBUS that kills the replay without a word.
        As fast end to end: the store's input path alone read 80-98 against 51-64 M rows/s through the mapping,
        and replay.run was the same within the noise (bench/MEASURED.md)."""
        self.open()
        if self.part.layout != "market" and len(self._raw) < len(buf):
            self._raw = pools.aligned_zeros(len(buf), self.part.row_dtype)
        return read_rows(self._file.fileno(), self.part, row, buf, self._raw)

    def check_rows(self, row: int, recs: np.ndarray) -> None:
        """recs, rows [row, row + len(recs)) read by read_into, are being handed on: on a first open they are
        summed from recs unless the replay core summed them already. When the last row is in, a wrong sum is a
        StoreError naming the partition: whatever was replayed from it is then thrown away by the caller (replay
        fails and removes its output files); a right one marks the file checked for later opens in this process."""
        if self._check is not None and self._check.add(row, recs):
            _verified.add(self._ident)
            self._check = None

    def release(self) -> None:
        """Replay is done with this partition. A check whose rows were not all handed on is left unfinished: the
        file is not marked checked, and its next open checks it again."""
        self._check = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def done(self) -> None:
        self.rows = len(self._recs) if self._recs is not None else self.rows
        self._done = True

    def chunks(self) -> Iterator[np.ndarray]:
        """The partition's rows, chunk_rows at a time, each chunk read into an array of its own (the general merge
        may still hold the one before), stamped with the replay's symbol id unless that is 0, then read-only."""
        self.open()
        n = self.part.rows
        step = self.chunk_rows
        for i in range(0, n, step):
            c = self.read_into(i, np.zeros(min(step, n - i), MARKET_DTYPE))
            self.check_rows(i, c)
            if self.symbol_id != 0:
                c["symbol"] = self.symbol_id
            else:
                c.flags.writeable = False   # as the stored rows: a reader has no business changing them
            self.rows += len(c)
            yield c
        self._done = True


# ============================================================================================== replay batches
MERGE_WINDOW = 1 << 13       # rows of each overlapping partition the merge holds at a time (1 MB each)
READ_ROWS = 1 << 14          # rows a lone partition hands the core at a time, read into one reused buffer (2 MB:
                             # 1-8 MB read at the same rate here; the buffer stays in the L3 cache)
MERGE_ROWS = 1 << 14         # rows per merged batch (2 MB, reused)
MERGE_MAX = 16               # partitions one merge kernel call takes (a tuple: one compilation per count, cached)


@njit(cache=True, nogil=True)
def merge_into(srcs, pos, end, more, sym, out, seq0):
    """Merge the records srcs[i][pos[i]:end[i]] (each non-decreasing in recv_ts) into out, in the order of (recv_ts,
    i, position), stamping each record's symbol (sym[i]), pub_ts (= recv_ts) and seq (seq0, seq0 + 1, ...) as it
    is copied; advances pos; returns how many records were written. more[i] != 0: source i has rows after
    srcs[i][end[i] - 1] that srcs[i] does not hold yet (a window of a longer partition), so the merge stops as soon
    as it would need them: fewer than len(out) are written when every source is done or one needs its next window.
    The source at the head copies a run of records at a time: as long as they precede the next source's head."""
    k = len(srcs)
    cap = out.shape[0]
    j = 0
    while j < cap:
        b = -1
        bt = 0
        s2 = -1
        t2 = 0
        for i in range(k):
            if pos[i] >= end[i]:
                if more[i] != 0:
                    return j
            else:
                t = srcs[i][pos[i]].recv_ts
                if b < 0 or t < bt:
                    s2 = b
                    t2 = bt
                    b = i
                    bt = t
                elif s2 < 0 or t < t2:
                    s2 = i
                    t2 = t
        if b < 0:
            break
        a = srcs[b]
        p = pos[b]
        e = end[b]
        sid = sym[b]
        while p < e and j < cap:
            t = a[p].recv_ts
            if s2 >= 0 and (t > t2 or (t == t2 and b > s2)):
                break
            out[j] = a[p]
            r = out[j]
            r.symbol = sid
            r.pub_ts = t
            r.seq = seq0 + j
            j += 1
            p += 1
        pos[b] = p
    return j


def replay_batches(sources: list, seq0: int = 0, fallback=None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The records of store sources in replay order (recv_ts, then source order, then position: what replay's
    k-way merge gives), as (array for the replay core, lanes) pairs, the array valid until the next one is asked
    for. lanes, when not None, are the sum64 lanes of a partition being checked on its first open: the core sums
    the array's rows into them as it reads them (ReplayCore.feed); rows it did not sum are summed here after.

    No record is merged where none needs to be: the partitions are grouped by overlapping time spans; a group of
    one partition whose symbol id is 0 (one symbol, any number of days, one stream) is handed over as its file's
    rows, READ_ROWS at a time read into one reused buffer, pub_ts and seq as stored (import stores them as the
    merge sets them: pub_ts = recv_ts, seq = the row's index in the partition; the core's outputs read neither).
    A group of several is merged by merge_into into one reused buffer from a window of MERGE_WINDOW rows of each,
    read again as the merge empties it: memory is the buffer and the windows, whatever the span. fallback(sources,
    seq0) merges a group of more than MERGE_MAX partitions (replay's general merge, over StoreSource.chunks), in
    pairs as well."""
    # spans from the manifest; each partition is opened when its group comes up and, on its first open, checked
    # read by read as the rows go to the core, so the check and the replay read the file once between them
    # (a month is larger than the page cache of a small node: checked all at once, the
    # first days would be read from disk twice; checked per partition, each would still be read twice from memory)
    spans = sorted((s.part.first_ns, s.part.last_ns, i) for i, s in enumerate(sources) if s.part.rows)
    groups: list[list[int]] = []
    last = None
    for first, end, i in spans:
        if groups and first <= last:
            groups[-1].append(i)
            last = max(last, end)
        else:
            groups.append([i])
            last = end
    seq = seq0
    recs: dict[int, np.ndarray] = {}
    buf = None
    for g in groups:
        g.sort()   # ties in time: source order
        recs = {i: sources[i].open() for i in g}
        a = recs[g[0]]   # (rows as stored: a packed layout's are always stamped as the merge would stamp them)
        stamped = a.dtype != MARKET_DTYPE or a["pub_ts"][0] == a["recv_ts"][0]
        if len(g) == 1 and sources[g[0]].symbol_id == 0 and stamped:
            # (a partition imported before pub_ts was stored is stamped on a copy by the merge below)
            src = sources[g[0]]
            # on a first open the core sums each read's rows as it reads them, from the cache (35 GB/s here); a
            # pass of the check's own over them, before or after the core's, read them from memory (8 GB/s)
            lanes = src.lanes()
            if buf is None:
                buf = pools.aligned_zeros(READ_ROWS, MARKET_DTYPE)
            for i in range(0, len(a), READ_ROWS):
                b = src.read_into(i, buf)
                src.rows = i + len(b)
                yield b, lanes
                src.check_rows(i, b)
            seq += len(a)
        elif len(g) <= MERGE_MAX or fallback is None:
            # each partition through a window of MERGE_WINDOW rows read from its file, read again once merged
            srcs = [sources[i] for i in g]
            wins = tuple(pools.aligned_zeros(MERGE_WINDOW, MARKET_DTYPE) for _ in g)
            base = np.zeros(len(g), np.int64)   # the partition row each window starts at
            pos = np.zeros(len(g), np.int64)
            end = np.zeros(len(g), np.int64)
            more = np.ones(len(g), np.int8)
            sym = np.array([s.symbol_id for s in srcs], np.int32)
            out = np.empty(MERGE_ROWS, MARKET_DTYPE)
            while True:
                read = False
                for k, s in enumerate(srcs):
                    if pos[k] == end[k] and more[k]:
                        base[k] += end[k]
                        w = s.read_into(int(base[k]), wins[k])
                        s.check_rows(int(base[k]), w)   # summed while it is in the cache
                        pos[k], end[k], more[k] = 0, len(w), base[k] + len(w) < s.part.rows
                        read = True
                m = merge_into(wins, pos, end, more, sym, out, seq)
                if m == 0 and not read:
                    break
                seq += m
                if m:
                    yield out[:m], None
                for k, s in enumerate(srcs):
                    s.rows = int(base[k] + pos[k])
        else:
            seq = yield from fallback([sources[i] for i in g], seq)
        for i in g:
            sources[i].release()
    for s in sources:
        s.done()


def partition_of(path: str | os.PathLike) -> Partition | None:
    """The manifest entry of a partition file, or None if path is not one."""
    p = Path(path)
    if p.suffix != ".npy":
        return None
    root = find_root(p)
    if root is None:
        return None
    rel = p.resolve().relative_to(root.resolve()).as_posix()
    return _cached_store(root).parts.get(rel)


_stores: dict[Path, tuple[tuple, Store]] = {}


def _cached_store(root: Path) -> Store:
    """Store(root), parsed once per manifest version: replay asks for each of its partitions (a month of a few
    symbols is hundreds), and a sweep for every trial."""
    root = root.resolve()
    try:
        st = os.stat(root / MANIFEST)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return Store(root)
    got = _stores.get(root)
    if got is None or got[0] != stamp:
        got = _stores[root] = (stamp, Store(root))
    return got[1]


def expand(path: str | os.PathLike) -> list[str] | None:
    """Partition files under a store path (store, symbol or day directory), in merge order; None if not a store."""
    p = Path(path)
    if not p.is_dir():
        return None
    root = find_root(p)
    if root is None:
        return None
    rel = p.resolve().relative_to(root.resolve()).as_posix()
    parts = _cached_store(root).select(under="" if rel == "." else rel + "/")
    if not parts:
        raise StoreError(f"{path}: store directory lists no partitions")
    return [str(x.path) for x in parts]


# ============================================================================================== import
class _PartWriter:
    """One partition being written: hidden temp file, running CRC, header patched in at the end."""

    def __init__(self, root: Path, symbol: str, day: str, stream: str, source: str, filters: dict | None = None,
                 layout: str | None = None):
        self.root, self.symbol, self.day, self.stream, self.source = root, symbol, day, stream, source
        self.filters = filters
        self.dir = root / symbol / day
        self.dir.mkdir(parents=True, exist_ok=True)
        self.layout = layout or STREAM_LAYOUT.get(stream, "market")
        self.tmp = self.dir / f".{stream}{TMP_MARK}{os.getpid()}"
        self.f = open(self.tmp, "wb")
        self.f.write(b"\0" * HEADER_BYTES)
        self.rows = 0
        self.crc = 0
        self.sum = np.zeros(SUM64_LANES, np.uint64)
        self.first = self.last = 0

    def append(self, recs: np.ndarray) -> None:
        if not self.rows:
            self.first = int(recs["recv_ts"][0])
        self.last = int(recs["recv_ts"][-1])
        rows, back = _stored(self.layout, recs, self.rows)
        sum64_step(back.view(np.uint64), self.sum)   # of the records: 16 words each, the lanes stay aligned
        blob = rows.tobytes()
        self.crc = zlib.crc32(blob, self.crc)
        self.f.write(blob)
        self.rows += len(recs)

    def commit(self) -> Partition:
        self.f.seek(0)
        self.f.write(_npy_header(self.rows, LAYOUTS[self.layout]))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        rel = f"{self.symbol}/{self.day}/{self.stream}.{self.crc:08x}.npy"
        os.replace(self.tmp, self.root / rel)
        _fsync_dir(self.dir)
        return Partition(self.root, rel, self.symbol, self.day, self.stream, self.rows,
                         self.rows * LAYOUTS[self.layout].itemsize, self.crc, self.first, self.last, self.source,
                         self.filters, f"{filters_crc(self.filters):08x}" if self.filters is not None else "",
                         _sum64_fold(self.sum), self.layout)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _day(ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ns // 1_000_000_000))


def _split(recs: np.ndarray, names: list[str]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(symbol, day, records) groups of a chunk (non-decreasing recv_ts), each in its original order."""
    syms = recs["symbol"]
    for sid in np.unique(syms):
        part = recs[syms == sid] if len(names) > 1 else recs
        t = part["recv_ts"]
        d = t // DAY_NS
        cuts = np.flatnonzero(np.diff(d)) + 1
        for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(part)]))):
            yield names[int(sid)], _day(int(t[a])), part[a:b]


def _source_of(path: str, symbol: str | None, fmt: str | None, extra_symbols: str | None, warn):
    """(source, symbol names by id, stream name, exchangeInfo rows by symbol) for one input file, read by replay's
    own readers; the rows are a recording's exchange filters (its first line), which replay from the store uses
    as replay from the recording does."""
    from aegis.replay import run as replay
    table, srcs = replay.open_sources([path], symbol, fmt, extra_symbols, warn)
    src = srcs[0]
    if isinstance(src, CsvSource):
        return src, list(table.names), None, {}
    info, _ = replay.recording_meta(path)
    rows = {r["symbol"]: r for r in (info or {}).get("symbols", []) if isinstance(r, dict) and "symbol" in r}
    return src, list(table.names), "rec-" + Path(path).name.split(".")[0], rows


def import_files(files: list[str], root: str | os.PathLike, symbol: str | None = None, fmt: str | None = None,
                 extra_symbols: str | None = None, warn=None, say=None) -> list[Partition]:
    """Convert input files into partitions of the store at root; the manifest is committed after each file."""
    from aegis.replay import run as replay
    warn = warn or (lambda m: print(m, file=sys.stderr))
    say = say or (lambda m: None)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    inputs = replay.expand_inputs(files)
    done: list[Partition] = []
    with open(root / LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(f"{root}: another import is writing this store") from None
        store = Store(root)
        _remove_orphans(store)
        for path in inputs:
            src, names, stream, filters = _source_of(path, symbol, fmt, extra_symbols, warn)
            writers: dict[tuple[str, str], _PartWriter] = {}
            t0 = time.monotonic()
            rows = 0
            try:
                for chunk in src.chunks():
                    if not len(chunk):
                        continue
                    rows += len(chunk)
                    kind = stream or ("bookTicker" if src.fmt == 1 else "aggTrades")
                    for sym, day, recs in _split(chunk, names):
                        w = writers.get((sym, day))
                        if w is None:
                            w = writers[(sym, day)] = _PartWriter(root, sym, day, kind, Path(path).name,
                                                                  filters.get(sym))
                        recs = recs.copy()
                        recs["symbol"] = 0
                        recs["pub_ts"] = recs["recv_ts"]   # as replay's merge stamps them: a single partition
                        recs["seq"] = np.arange(w.rows, w.rows + len(recs))   # goes to the core as stored
                        w.append(recs)
                new = [w.commit() for w in writers.values()]
            except BaseException:
                for w in writers.values():
                    w.abort()
                raise
            old = []
            for p in new:
                key = f"{p.symbol}/{p.day}/{p.stream}."
                for rel in [r for r in store.parts if r.startswith(key) and r != p.rel]:
                    old.append(store.parts.pop(rel))
                store.parts[p.rel] = p
            store.save()
            for p in old:
                with contextlib.suppress(OSError):
                    os.unlink(p.path)
            el = time.monotonic() - t0
            say(f"{path}: {rows:,} rows -> {len(new)} partition(s) in {el:.2f} s "
                f"({rows / el / 1e6 if el > 0 else 0:.2f} M rows/s)")
            done.extend(new)
    return done


def _remove_orphans(store: Store) -> None:
    """Files a killed import left behind: temp files and renamed partitions the manifest never listed."""
    listed = {p.path.resolve() for p in store.parts.values()}
    for f in store.root.glob("*/*/*"):
        if f.is_file() and (TMP_MARK in f.name or (f.suffix == ".npy" and f.resolve() not in listed)):
            with contextlib.suppress(OSError):
                f.unlink()


# ============================================================================================== CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise StoreError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m aegis data",
                description="The market-data store: Binance public data (bookTicker / aggTrades .csv/.zip) and Feed "
                            "recordings (.jsonl.gz) converted once into memory-mapped MARKET records, partitioned "
                            "by symbol and UTC day, checksummed. `python -m aegis replay DIR` (or a symbol or day "
                            "directory inside it) and `python -m aegis sweep --data DIR` read it.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    imp = sub.add_parser("import", help="convert files into the store (re-importing a file replaces its partitions)")
    imp.add_argument("files", nargs="+", metavar="FILE", help="input files or directories")
    imp.add_argument("--to", required=True, metavar="DIR", help="store directory (created if missing)")
    imp.add_argument("--symbol", default=None, help="symbol of CSV files whose name does not say it")
    imp.add_argument("--format", choices=("bookTicker", "aggTrades"), default=None,
                     help="CSV layout when neither the name nor a header says it")
    imp.add_argument("--symbols", default=None, help="extra symbol names for recordings (comma-separated)")
    ver = sub.add_parser("verify", help="check every partition's checksum (exit 2 naming the first damaged one)")
    ver.add_argument("store", metavar="DIR")
    ls = sub.add_parser("ls", help="list partitions: symbol, day, stream, rows, time span")
    ls.add_argument("store", metavar="DIR")
    return p


def _existing_store(path: str) -> Store:
    if not (Path(path) / MANIFEST).is_file():
        raise StoreError(f"{path}: not a store (no {MANIFEST}); create one with `python -m aegis data import`")
    return Store(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.cmd == "import":
            parts = import_files(args.files, args.to, args.symbol, args.format, args.symbols,
                                 say=lambda m: print(m, file=sys.stderr))
            rows = sum(p.rows for p in parts)
            print(f"{len(parts)} partition(s), {rows:,} rows written to {args.to}")
        elif args.cmd == "verify":
            store = _existing_store(args.store)
            parts = store.select()
            t0 = time.monotonic()
            verify(parts)
            nb = sum(p.nbytes for p in parts)
            el = time.monotonic() - t0
            print(f"{len(parts)} partition(s), {sum(p.rows for p in parts):,} rows, {nb / 1e6:.1f} MB: checksums OK "
                  f"({el:.2f} s)")
        else:
            store = _existing_store(args.store)
            for p in store.select():
                print(f"{p.symbol:<14} {p.day}  {p.stream:<24} {p.rows:>12,}  {_utc(p.first_ns)} .. "
                      f"{_utc(p.last_ns)}  {p.rel}")
    except (InputError, OSError) as e:
        print(f"aegis data: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aegis data: interrupted (finished files are in the store; the file in progress is not)",
              file=sys.stderr)
        return 130
    return 0


def _utc(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ns // 1_000_000_000))


if __name__ == "__main__":
    sys.exit(main())
