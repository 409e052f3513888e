"""Append-only order journal: every request, ack, reject, cancel and fill is on disk BEFORE it is acted on.

Format: one record per line, `<compact JSON>\t<crc32 of the JSON, 8 hex>\n`, every record starting `{"k":`.
A line whose CRC fails is skipped and counted, and reading goes on: one bad line (a flipped bit, a write that failed
part-way on a full disk) never hides the records after it. A write that failed part-way leaves a fragment without a
newline, so the next record lands on the same line; the reader finds that record by its `{"k":` start and its CRC.
On open, only a torn tail (bytes after the last newline, as a crash mid-write leaves) is cut, so the next append
starts on a line boundary; nothing before it is ever removed. JSON (orjson) rather than fixed binary records because
the volume is tiny (orders, not market data) and a human reading the journal after an incident is the main consumer.

Record kinds (`k`):
  open   {prefix, pid}                    a run started; `prefix` makes newClientOrderId = prefix + client_id
  req    {id, coid, sym, side, type, tif, qty, px, ro, act, target}   before the sender sends it
  ack    {id, coid, sym, oid, status}     exchange accepted (or query found it)
  rej    {id, coid, sym, code, msg}       exchange or client refused it (final)
  fill   {id, coid, sym, oid, tid, side, px, qty, cum, fee, fee_asset, rpnl, status, maker, ts}
  final  {id, coid, sym, oid, status}     CANCELED / EXPIRED / FILLED without a new trade
  state  {state, reason}                  trading state changes (kill switch, daily loss, resume)
  unknown {id, coid, sym, msg}            timed out and could not be settled (reconciliation settles it)
  cancel_rej / cancel_all / position      cancel refused; cancel-all result; exchange position after reconciliation
Where the bytes go: under "interval" and "never" the file is preallocated (zeros written, MAP_CHUNK at a time) and
memory-mapped, and a record is a store into the mapping at a cursor reserved atomically (map_store: the sender's
jitted fast path and the Python appends share it), so the order path makes no write(2); the page cache holds the
line the moment the store is done, exactly as after a write(2), so it survives a process crash alike. The sync
thread fdatasyncs as before and grows the preallocation ahead of the cursor; disk space is taken when the file grows,
never by a store (a store into an unallocated page of a full disk would be a SIGBUS), so a full disk shows up as a
failed growth, which halts trading like a failed write. The unused preallocated tail is zero bytes (a record never
holds a NUL: JSON escapes it); a clean close cuts it, and after a crash (kill -9) readers skip it as they skip a torn
tail: no newline ends it. "always" writes with write(2) and fdatasyncs every record, as before. One process writes a
journal (the Brain's lock file sees to it): a second writer opening it would cut the zero tail under the first one's
mapping.
fsync policy: "always" (fdatasync every record: survives power loss, but costs ~0.5 ms per record on this box's
disk, before every send), "interval" (default: every record reaches the page cache at once, which survives a process
crash; fills are fdatasync'd at once by the user-stream thread, everything else by a background thread at most
`fsync_interval_ms` later, never inline on the order path), "never" (page cache
only: survives a process crash, not a host crash). Measured here: always 470 us/record, interval/never 6 us.
What a host crash can cost under "interval" is a request or ack line of the last few ms; reconciliation adopts such
orders from GET openOrders (they carry our prefix) and client ids continue above every id the journal has seen.
Secrets never reach it: append() refuses aegis.binance.keys.Secret values.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import secrets
import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import orjson
from numba import njit

from aegis.binance.keys import Secret
from aegis.core.atomics import compare_and_swap, load_acquire

log = logging.getLogger("aegis.trade.journal")

FSYNC_POLICIES = ("always", "interval", "never")
FINAL_STATUSES = ("FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED")
FILLS_REMEMBERED = 8192       # fill ids kept for de-duplication (JournalState.fills_seen)


MAP_CHUNK = 4 << 20           # bytes a mapped journal is preallocated by, each time it grows
MAP_GROW_MARGIN = 1 << 20     # the sync thread grows it when less than this is left ahead of the cursor
PAGE_BYTES = mmap.PAGESIZE
JC_POS, JC_CAP = 0, 1         # slots of a mapped journal's cursor array: next free byte, preallocated end
_ZEROS = bytes(1 << 20)


@njit(cache=True, nogil=True)
def map_store(buf, cur, line, n):
    """Reserve n bytes at the mapped journal's cursor (atomically: several threads write) and store line[:n] there;
    returns the offset, or -1 when the preallocated room (cur[JC_CAP], and this view of the mapping) cannot take
    it: the caller grows the file (Journal.append) or leaves the record to a path that can."""
    while True:
        p = load_acquire(cur, JC_POS)
        limit = load_acquire(cur, JC_CAP)
        if limit > buf.shape[0]:
            limit = buf.shape[0]
        if p + n > limit:
            return -1
        if compare_and_swap(cur, JC_POS, p, p + n):
            break
    for k in range(n):
        buf[p + k] = line[k]
    return p


@njit(cache=True, nogil=True)
def rearm_pages(words, pos):
    """After a sync: write-enable again the mapped journal's page at byte `pos` (the cursor) and the one after it,
    by a locked write of a word of each to itself, so the next record's store does not take the write fault.

    Writeback write-protects every page it cleans (that is how the kernel sees the next change), and on this box's
    ext4 the fault a store then takes cost ~75 us on the order path: at a few orders a second every order met one
    (each fill is synced at once). Taken here, by the thread that just synced, it costs the order path nothing.
    """
    page = PAGE_BYTES // 8
    w = pos // 8
    for i in (w, (w // page + 1) * page):
        if i < words.shape[0]:
            # a compare-and-swap of a word with itself: a locked write whatever the outcome (a word the sender
            # changed meanwhile fails the compare and stays as the sender left it). Not an add of 0: LLVM turns an
            # idempotent atomic add into a fenced load, which writes nothing and so takes no write fault.
            v = load_acquire(words, i)
            compare_and_swap(words, i, v, v)


def _line(rec: dict) -> bytes:
    body = orjson.dumps(rec)
    return body + b"\t" + f"{zlib.crc32(body):08x}".encode() + b"\n"


def _check_no_secret(rec: dict) -> None:
    for v in rec.values():
        if isinstance(v, Secret):
            raise TypeError("refusing to journal a Secret")


_START = b'{"k":'


def _record(line: bytes):
    """The record of one line without its newline, or None when its framing or CRC is wrong."""
    body, sep, crc = line.rpartition(b"\t")
    if not sep or len(crc) != 8:
        return None
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        return orjson.loads(body)
    except ValueError:
        return None


@dataclass
class Scan:
    records: list = field(default_factory=list)
    good_end: int = 0        # byte offset just past the last valid record
    corrupt: list = field(default_factory=list)   # byte offsets of lines (or fragments) that are not records
    lines_end: int = 0       # byte offset just past the last newline: what follows is a torn tail


def scan(path: str) -> Scan:
    """Every valid record of the file in order, skipping (and listing) what is not one."""
    out = Scan()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return out
    out.lines_end = data.rfind(b"\n") + 1
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break                                   # torn tail: no newline yet
        line = data[pos:nl]
        rec = _record(line)
        if rec is None:
            out.corrupt.append(pos)
            # a fragment of a failed write with the next record appended to it: find that record's start
            at = line.find(_START, 1)
            while at > 0 and rec is None:
                rec = _record(line[at:])
                at = line.find(_START, at + 1)
        if rec is not None:
            out.records.append(rec)
            out.good_end = nl + 1
        pos = nl + 1
    return out


def read_records(path: str) -> tuple[list[dict], int]:
    """(valid records, byte offset just past the last of them). Bad lines are skipped: see scan()."""
    s = scan(path)
    return s.records, s.good_end


class JournalFailed(OSError):
    """The journal could not be written (disk full, I/O error); nothing may be sent that it does not hold."""


class Journal:
    """Thread-safe appender (the sender and the user-stream threads both write)."""

    def __init__(self, path: str, fsync: str = "always", fsync_interval_ms: int = 50, mapped: bool | None = None):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"journal fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.path = path
        self.fsync = fsync
        self.fsync_interval_ns = int(fsync_interval_ms) * 1_000_000
        self._lock = threading.Lock()
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        found = scan(path)
        self.recovered = found.records
        self.corrupt_lines = len(found.corrupt)
        # 0600: the journal holds order flow and positions (no secrets, but nobody else's business)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        # cut only the torn tail (after the last newline) so the next append starts on a line boundary; complete
        # lines, even unreadable ones, stay for whoever investigates. Zero bytes at the end are the unused
        # preallocation of a mapped journal whose run did not close it (a crash): cut too, without a warning.
        end = found.lines_end
        tail = os.pread(self._fd, size - end, end) if size > end else b""
        self.torn_bytes = len(tail.rstrip(b"\0"))
        self.unused_bytes = len(tail) - self.torn_bytes
        if size > end:
            os.ftruncate(self._fd, end)
        if found.corrupt or self.torn_bytes:
            log.warning("journal %s: %d unreadable line(s) skipped (first at byte %d), %d torn byte(s) cut at the end",
                        path, len(found.corrupt), found.corrupt[0] if found.corrupt else -1, self.torn_bytes)
        os.lseek(self._fd, 0, os.SEEK_END)
        self.mapped = (fsync != "always") if mapped is None else bool(mapped)
        self.map_cursor = np.zeros(2, np.int64)     # [JC_POS, JC_CAP] (mapped journals)
        self.map_buf = np.zeros(0, np.uint8)        # the mapping as an array (empty: not mapped, or closed)
        self._mm = None
        self._grow_lock = threading.Lock()          # extending the file (taken after _lock, or alone)
        if self.mapped:
            self.map_cursor[JC_POS] = end
            try:
                self._map(end + MAP_CHUNK)
            except OSError:
                os.close(self._fd)
                raise
        self.records_written = 0
        self.state: JournalState | None = None   # when set, every appended record is applied to it too
        # a journal that cannot be written cannot be trusted: the first failure is reported once to on_failure
        # (the trade session halts and cancels through a path that needs no journal) and every later append
        # refuses at once, so nothing is sent that the journal does not hold
        self.failed: str | None = None
        self.on_failure = None
        self._dirty = False
        self._closed = threading.Event()
        self._flusher = None
        if fsync == "interval" or self.mapped:
            # periodic syncs (and a mapped journal's growth) happen here, never inline in an append on the order path
            self._flusher = threading.Thread(target=self._flush_loop, name="aegis-journal-sync", daemon=True)
            self._flusher.start()

    def _extend(self, size: int) -> None:
        """Zero bytes from the file's end up to `size` (under _grow_lock: the only code that extends the file).
        Written zeros, not posix_fallocate: fallocated blocks are unwritten extents, which the first store into each
        page and every sync then convert, and measured here that put 20 us at p90 of the prepare step and worse
        tails (bench/MEASURED.md). Nothing is mapped past the file's end, so no record lives where this writes.
        Raises OSError (ENOSPC on a full disk)."""
        have = os.fstat(self._fd).st_size
        while have < size:
            n = os.pwrite(self._fd, _ZEROS[:min(len(_ZEROS), size - have)], have)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            have += n

    def _map(self, size: int) -> None:
        """Preallocate the file to `size` bytes and map all of it (under the lock, or before any writer). Raises
        OSError (ENOSPC on a full disk)."""
        with self._grow_lock:
            self._extend(size)
        mm = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # the previous mapping is not closed: a writer may still hold it; it maps the same pages, and map_store
        # bounds every store by the view it was given, so it stays valid until the last reference goes
        self._mm, self.map_buf = mm, np.frombuffer(mm, np.uint8)
        self.map_cursor[JC_CAP] = size

    def _grow(self, need: int) -> None:
        """Under the lock: room for at least `need` more bytes plus a chunk."""
        pos, cap = int(self.map_cursor[JC_POS]), int(self.map_cursor[JC_CAP])
        self._map(max(cap, pos + need) + MAP_CHUNK)

    def _flush_loop(self) -> None:
        period = (self.fsync_interval_ns or 50_000_000) / 1e9
        while not self._closed.wait(period):
            grow_error = None
            with self._lock:
                dirty, self._dirty, fd = self._dirty, False, self._fd
                grow = (self.mapped and fd >= 0 and self.failed is None
                        and self.map_cursor[JC_CAP] - self.map_cursor[JC_POS] < MAP_GROW_MARGIN)
                target = int(self.map_cursor[JC_CAP]) + MAP_CHUNK
            if grow:
                try:
                    with self._grow_lock:       # the zeros are written without holding up appends
                        if self._fd == fd:
                            self._extend(target)
                    with self._lock:            # then the mapping, over a file already that long
                        if self._fd == fd and self.map_cursor[JC_CAP] < target:
                            self._map(target)
                except OSError as e:
                    grow_error = e
            if grow_error is not None:
                self.report_failure(f"preallocating: {grow_error.strerror or grow_error}")
            if dirty and fd >= 0 and self.fsync == "interval":
                try:
                    os.fdatasync(fd)
                except OSError as e:
                    if fd == self._fd:      # not closed meanwhile: the data may not be on disk
                        self.report_failure(f"fdatasync: {e.strerror or e}")
                self._rearm()

    def append(self, kind: str, **fields) -> None:
        rec = {"k": kind, "t": time.time_ns() // 1_000_000, **fields}
        _check_no_secret(rec)
        line = _line(rec)
        with self._lock:
            if self.failed is not None:
                raise JournalFailed(self.failed)
            done = 0
            try:
                if self.mapped:
                    data = np.frombuffer(line, np.uint8)
                    if map_store(self.map_buf, self.map_cursor, data, len(line)) < 0:
                        if self._fd < 0:
                            raise OSError(f"journal {self.path} is closed")
                        self._grow(len(line))
                        if map_store(self.map_buf, self.map_cursor, data, len(line)) < 0:
                            raise OSError("no room in the journal's mapping after growing it")
                while not self.mapped and done < len(line):   # a file may take part of a write (signal, full disk)
                    w = os.write(self._fd, line[done:])
                    if w <= 0:
                        raise OSError(f"journal write took 0 of {len(line) - done} bytes")
                    done += w
            except OSError as e:
                failure = self._failed(e)
            else:
                failure = None
            if failure is None:
                self.records_written += 1
                self._dirty = True
                if self.state is not None:
                    self.state.apply(rec)     # the in-memory view never runs ahead of (or behind) the file
            fd = self._fd
        if failure is not None:
            self._notify(failure)
            raise JournalFailed(failure)
        # the sync runs outside the lock: the sender's next append must not queue behind a fill's fdatasync
        if self.fsync == "always" or (self.fsync == "interval" and kind == "fill"):
            try:
                os.fdatasync(fd)
            except OSError as e:
                self.report_failure(f"fdatasync: {e}")
                raise JournalFailed(self.failed) from None
            self._rearm()

    def _rearm(self) -> None:
        """After a sync of a mapped journal: the pages the next records go to are made writable again, here and not
        in the order path's store (rearm_pages)."""
        if not self.mapped:
            return
        with self._lock:
            buf, pos = self.map_buf, int(self.map_cursor[JC_POS])
        if buf.shape[0] >= 8:
            # this view keeps its mapping alive even if the journal maps a longer one meanwhile (see _map)
            rearm_pages(buf[:buf.shape[0] // 8 * 8].view(np.int64), pos)

    def _failed(self, e: OSError) -> str:
        """Under the lock: remember the first failure; the caller notifies outside the lock."""
        msg = f"{self.path}: {e.strerror or e}" if isinstance(e, OSError) else f"{self.path}: {e}"
        if self.failed is None:
            self.failed = msg
        return msg

    def report_failure(self, what: str) -> None:
        """A write of this journal failed outside append() (the sender's fast path writes the fd itself)."""
        with self._lock:
            first = self.failed is None
            if first:
                self.failed = f"{self.path}: {what}"
        if first:
            self._notify(self.failed)

    def _notify(self, msg: str) -> None:
        cb, self.on_failure = self.on_failure, None     # once
        if cb is not None:
            try:
                cb(msg)
            except Exception:
                log.exception("journal failure handler failed")

    def adopt(self, line: bytes) -> dict:
        """A record line the sender's fast path (aegis.binance.wire) already wrote to this file with its own write(2):
        keep the in-memory view and the sync bookkeeping in step, as append() would have."""
        rec = orjson.loads(line.rpartition(b"\t")[0])
        with self._lock:
            self.records_written += 1
            self._dirty = True
            if self.state is not None:
                self.state.apply(rec)
        return rec

    @property
    def fd(self) -> int:
        return self._fd

    def sync(self) -> None:
        with self._lock:
            os.fsync(self._fd)

    def close(self) -> None:
        self._closed.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(1.0)
        with self._lock:
            if self._fd >= 0:
                if self.mapped:
                    # no store after this one; one reserved before it lies below the cursor, inside what is kept
                    self.map_cursor[JC_CAP] = 0
                    try:
                        os.ftruncate(self._fd, int(self.map_cursor[JC_POS]))   # the file ends with its last record
                    except OSError as e:
                        log.error("journal %s: cutting the preallocated tail failed: %s", self.path, e)
                try:
                    os.fsync(self._fd)
                except OSError as e:
                    log.error("journal %s: final sync failed: %s", self.path, e)
                os.close(self._fd)
                self._fd = -1
                self.map_buf = np.zeros(0, np.uint8)
                if self._mm is not None:
                    try:
                        self._mm.close()
                    except BufferError:     # a view is still held somewhere: unmapped when it goes
                        pass
                    self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class OrderState:
    client_id: int
    coid: str
    symbol: str
    side: str
    qty: str
    price: str
    reduce_only: bool
    order_id: int = 0
    status: str = "PENDING"     # PENDING (sent, no answer yet) / NEW / PARTIALLY_FILLED / final
    cum_qty: float = 0.0

    @property
    def open(self) -> bool:
        return self.status not in FINAL_STATUSES


@dataclass
class JournalState:
    """What the engine knew when it stopped, rebuilt from the journal alone (the exchange is consulted next)."""
    prefix: str = ""
    next_client_id: int = 1
    orders: dict[int, OrderState] = field(default_factory=dict)
    by_coid: dict[str, int] = field(default_factory=dict)
    # (symbol, orderId, tradeId) of the latest FILLS_REMEMBERED fills, oldest first: a replay after a reconnect or
    # a restart repeats recent fills only, and an ever-growing set would grow the process by every fill
    fills_seen: dict[tuple[str, int, int], None] = field(default_factory=dict)
    positions: dict[str, float] = field(default_factory=dict)
    entries: dict[str, float] = field(default_factory=dict)      # entry price of the last position record
    realized_pnl: float = 0.0
    fees: float = 0.0
    trading_state: str = "ACTIVE"
    state_reason: str = ""
    unusable: int = 0        # records skipped by rebuild(): valid checksum, unusable fields

    def open_orders(self) -> list[OrderState]:
        # a snapshot first: the user-stream thread settles (removes) orders while others ask, e.g. at shutdown
        # after hundreds of orders/s ("dictionary changed size during iteration" stopped the Brain uncleanly)
        return [o for o in list(self.orders.values()) if o.open]

    def _settle(self, o: OrderState) -> None:
        """A final order leaves the table: memory follows the open orders, not every order ever sent. Later
        events of it (a late ack, a repeated final) find nothing and change nothing, as before."""
        if not o.open:
            self.orders.pop(o.client_id, None)
            self.by_coid.pop(o.coid, None)

    def apply(self, r: dict) -> None:
        k = r.get("k")
        rid = r.get("id")
        if isinstance(rid, int) and rid >= self.next_client_id:
            self.next_client_id = rid + 1     # ids never repeat, even if the request line itself was lost
        if k == "open":
            self.prefix = self.prefix or r.get("prefix", "")
        elif k == "req":
            cid = int(r["id"])
            self.next_client_id = max(self.next_client_id, cid + 1)
            if r.get("act", "new") == "new":
                o = OrderState(cid, r["coid"], r["sym"], r["side"], r.get("qty", "0"), r.get("px", "0"),
                               bool(r.get("ro")))
                self.orders[cid] = o
                self.by_coid[o.coid] = cid
        elif k in ("ack", "final", "rej"):
            o = self.orders.get(int(r.get("id", -1)))
            if o is not None:
                o.order_id = int(r.get("oid") or o.order_id)
                status = "REJECTED" if k == "rej" else r.get("status", o.status)
                if o.open:   # a final state is never reopened by a late ack
                    o.status = status
                    self._settle(o)
        elif k == "fill":
            key = (r["sym"], int(r["oid"]), int(r["tid"]))  # ids are per symbol on Binance
            if key in self.fills_seen:
                return
            self.fills_seen[key] = None
            if len(self.fills_seen) > FILLS_REMEMBERED:
                del self.fills_seen[next(iter(self.fills_seen))]
            qty = float(r["qty"])
            sign = 1.0 if r["side"] == "BUY" else -1.0
            if not r.get("inc"):        # "inc": already in the position snapshot recorded before it
                self.positions[r["sym"]] = self.positions.get(r["sym"], 0.0) + sign * qty
            self.realized_pnl += float(r.get("rpnl", 0) or 0)
            self.fees += float(r.get("fee", 0) or 0)
            o = self.orders.get(int(r.get("id", -1)))
            if o is not None:
                o.order_id = int(r["oid"])
                o.cum_qty = max(o.cum_qty, float(r.get("cum", 0) or 0))
                if o.open:
                    o.status = r.get("status", o.status)
                    self._settle(o)
        elif k == "position":   # the exchange's word at a reconciliation: later fills add to it
            self.positions[r["sym"]] = float(r["qty"])
            self.entries[r["sym"]] = float(r.get("entry", 0) or 0)
        elif k == "state":
            self.trading_state = r.get("state", self.trading_state)
            self.state_reason = r.get("reason", "")


def rebuild(records: list[dict]) -> JournalState:
    """The state the records describe. A record whose checksum is right but whose fields are not (missing,
    wrong type: written by another version, or edited by hand) is skipped and reported, like a corrupt line."""
    st = JournalState()
    bad = []
    for i, r in enumerate(records):
        try:
            st.apply(r)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            bad.append((i, r.get("k") if isinstance(r, dict) else None, e))
    if bad:
        i, kind, e = bad[0]
        log.warning("journal: %d record(s) with a valid checksum but unusable fields skipped (first: record %d, "
                    "kind %r, %s: %s)", len(bad), i, kind, type(e).__name__, e)
    st.unusable = len(bad)
    return st


def new_prefix() -> str:
    """Run prefix of newClientOrderId: short (ids are <= 36 chars, docs/binance-notes.md, New order) and unique per
    journal."""
    return "ae" + secrets.token_hex(4) + "-"


def open_journal(path: str, fsync: str = "always", fsync_interval_ms: int = 50) -> tuple[Journal, JournalState]:
    """Open (or create) the journal and rebuild the state it records; a fresh journal gets a new prefix."""
    j = Journal(path, fsync, fsync_interval_ms)
    st = rebuild(j.recovered)
    if not st.prefix:
        st.prefix = new_prefix()
    j.state = st
    j.append("open", prefix=st.prefix, pid=os.getpid())
    return j, st
