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
Where the bytes go: under "interval" and "never" a record is a store into a ring in shared memory (a file on
/dev/shm, tmpfs) at a cursor reserved atomically (map_store: the sender's jitted fast path and the Python appends
share it), so the order path makes no system call and takes no page fault. A tmpfs page is never written back, so
never write-protected: a store into a mapping of the journal file itself took the write fault whenever the sync
thread's writeback had just cleaned its page, ~50 us at p99 of the pipeline bench (bench/MEASURED.md). The sync
thread copies the ring's complete records to the file with pwrite(2) every `fsync_interval_ms` and fdatasyncs it.
The ring outlives the process, as the page cache does: after a crash (kill -9) the next open, and any reader
(scan), finds it by the journal file's device and inode and takes the records it holds past the file's end; so a
stored record survives a process crash exactly as a written one. It does not survive a host crash, nor would the
page cache's unsynced lines. A clean close copies everything, syncs, and removes the ring. Disk space is taken
only by the sync thread's pwrite, so a full disk shows up there, which halts trading like a failed write.
"always" writes with write(2) and fdatasyncs every record. One process writes a journal (the Brain's lock file
sees to it).
fsync policy: "always" (fdatasync every record: survives power loss, but costs ~0.5 ms per record on this box's
disk, before every send), "interval" (default: every record reaches the ring at once, which survives a process
crash; fills are copied and fdatasync'd at once by the user-stream thread, everything else by a background thread
at most `fsync_interval_ms` later, never inline on the order path), "never" (copied to the
file but never synced: survives a process crash, not a host crash). Measured here: always 470 us/record, interval/never 6 us.
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
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import orjson

from aegis.binance.keys import Secret
from aegis.core.atomics import compare_and_swap, load_acquire
from aegis.core.jit import njit

log = logging.getLogger("aegis.trade.journal")

FSYNC_POLICIES = ("always", "interval", "never")
FINAL_STATUSES = ("FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED")
FILLS_REMEMBERED = 8192       # fill ids kept for de-duplication (JournalState.fills_seen)


# The ring file: a header page, then RING_BYTES of records at logical offset o (the journal file's byte offset) stored
# at o mod RING_BYTES. Header words (int64), one cache line each for what different threads write:
#   line 0, written once when the ring is made: magic, ring size, the journal file's st_dev and st_ino, the file's
#           size then (BASE) and the crc32 and length of its last <= TAIL_CHECK bytes before BASE (the journal it
#           belongs to: an inode number is reused once a file is deleted);
#   line 1: the cursor [JC_POS, JC_CAP] every store reserves from (compare-and-swap);
#   line 2: FLUSHED, how far the sync thread has copied the ring into the file (one 8-byte store per copy);
#   bytes 256..4095: the journal's path, for whoever finds the ring, NUL-padded.
RING_BYTES = 1 << 18          # a power of two; ~0.1 s of the busiest run's records fill a tenth of it (~300 B a line)
RING_HEADER = 4096            # one page, so the records start page-aligned
RING_MAGIC = int.from_bytes(b"AEGISJR1", "little")
H_MAGIC, H_SIZE, H_DEV, H_INO, H_BASE, H_TAIL_CRC, H_TAIL_LEN = 0, 1, 2, 3, 4, 5, 6     # line 0
H_CURSOR = 8                                                                          # line 1
H_FLUSHED = 16                                                                        # line 2
H_PATH_AT = 256
TAIL_CHECK = 64
JC_POS, JC_CAP = 0, 1         # slots of the cursor (a view of the header's line 1): next free byte, end of the room
MIN_FREE_BYTES = 1 << 20     # a ring journal does not start on a disk with less room than this left (see _make_ring)
STORE_WAIT_S = 1.0            # how long a copy waits for a store another thread has reserved but not finished
PAGE_BYTES = mmap.PAGESIZE


@njit(cache=True, nogil=True)
def map_store(buf, cur, line, n):
    """Reserve n bytes at the ring's cursor (atomically: several threads write) and store line[:n] at that logical
    offset modulo the ring's size; returns the offset, or -1 when the ring has no room (cur[JC_CAP]: the sync thread
    has not copied what is there yet, or the journal is closed, or buf is empty): the caller drains the ring
    (Journal.append) or leaves the record to a path that can."""
    size = buf.shape[0]
    if size == 0:
        return -1
    while True:
        p = load_acquire(cur, JC_POS)
        if p + n > load_acquire(cur, JC_CAP):
            return -1
        if compare_and_swap(cur, JC_POS, p, p + n):
            break
    a = p & (size - 1)
    first = n if n <= size - a else size - a
    buf[a:a + first] = line[:first]
    buf[:n - first] = line[first:n]        # the part past the ring's end wraps to its start
    return p


def ring_dir() -> str:
    """Where journal rings live: shared memory (tmpfs), or the temporary directory where there is none."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def ring_path(st: os.stat_result) -> str:
    """Where the ring of the journal file with this stat lives (found again after a crash by device and inode)."""
    return os.path.join(ring_dir(), f"aegis-journal-{os.getuid()}-{st.st_dev:x}-{st.st_ino:x}.ring")


@dataclass
class RingTail:
    data: bytes = b""           # the ring's bytes past the file's end, verbatim (a store a kill cut is NUL there)
    path: str | None = None     # the ring file, when there is one
    foreign: str = ""           # why a ring file at that name is not this journal's (then data is empty)


def ring_tail(path: str, file_data: bytes) -> RingTail:
    """What the journal's ring holds past the file's end (file_data: the file's bytes): records a writer that
    stopped without copying them left there, or a running writer has not copied yet."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return RingTail()
    rp = ring_path(st)
    try:
        with open(rp, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return RingTail()
    if len(raw) < RING_HEADER:
        return RingTail(path=rp, foreign=f"{len(raw)} bytes, shorter than its header")
    h = np.frombuffer(raw, np.int64, count=RING_HEADER // 8)
    size = len(raw) - RING_HEADER
    base, tl = int(h[H_BASE]), int(h[H_TAIL_LEN])
    named = raw[H_PATH_AT:RING_HEADER].rstrip(b"\0").decode("utf-8", "replace")
    if h[H_MAGIC] != RING_MAGIC or h[H_SIZE] != size or h[H_DEV] != st.st_dev or h[H_INO] != st.st_ino:
        return RingTail(path=rp, foreign="not a journal ring of this file")
    if named != os.path.realpath(path) or not (tl <= base <= len(file_data)) or int(h[H_FLUSHED]) > len(file_data) \
            or zlib.crc32(file_data[base - tl:base]) != int(h[H_TAIL_CRC]):
        return RingTail(path=rp, foreign=f"the ring of {named}, whose file does not match this one")
    start, pos = len(file_data), int(h[H_CURSOR + JC_POS])
    if pos <= start:
        return RingTail(path=rp)
    return RingTail(_ring_read(np.frombuffer(raw, np.uint8, offset=RING_HEADER), start, pos), rp)


def _ring_spans(ring: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The ring's bytes at logical offsets [start, stop) as two views, the second where they wrap to its start
    (offset o is at o mod its size; stop - start <= its size)."""
    a = start % ring.shape[0]
    first = ring[a:a + stop - start]
    return first, ring[:stop - start - first.shape[0]]


def _ring_read(ring: np.ndarray, start: int, stop: int) -> bytes:
    first, wrapped = _ring_spans(ring, start, stop)
    return first.tobytes() + wrapped.tobytes()


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
    ring: RingTail = field(default_factory=RingTail)   # what came from the ring, past the file's end


def scan(path: str) -> Scan:
    """Every valid record of the journal in order, skipping (and listing) what is not one: the file's, then those
    its ring holds past the file's end (ring_tail; offsets count them as if they followed in the file)."""
    out = Scan()
    for _ in range(100):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return out
        out.ring = ring_tail(path, data)
        # a running writer's sync thread copies (then zeroes) ring bytes past the end the file had: read again
        if os.stat(path).st_size == len(data):
            break
    data += out.ring.data
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

    def __init__(self, path: str, fsync: str = "always", fsync_interval_ms: int = 50):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"journal fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.path = path
        self.fsync = fsync
        self.fsync_interval_ns = int(fsync_interval_ms) * 1_000_000
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()         # copying the ring into the file (taken alone, never under _lock)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        found = scan(path)
        self.recovered = found.records
        self.corrupt_lines = len(found.corrupt)
        # 0600: the journal holds order flow and positions (no secrets, but nobody else's business)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(self._fd).st_size
            # records a writer left in its ring (a crash) go into the file first, synced, before anything else
            self.ring_restored = len(found.ring.data)
            if found.ring.data:
                _write_all(self._fd, found.ring.data, size)
                os.fdatasync(self._fd)
                size += len(found.ring.data)
                log.warning("journal %s: %d byte(s) of records its last writer left in %s restored into the file",
                            path, len(found.ring.data), found.ring.path)
            if found.ring.foreign:
                aside = f"{found.ring.path}.foreign-{time.time_ns()}"
                os.replace(found.ring.path, aside)
                log.error("journal %s: the ring file at %s is %s; moved aside to %s, not read", path,
                          found.ring.path, found.ring.foreign, aside)
        except OSError:
            os.close(self._fd)
            raise
        # cut only the torn tail (after the last newline) so the next append starts on a line boundary; complete
        # lines, even unreadable ones, stay for whoever investigates. Zero bytes at the end of a file are a crashed
        # run's unused preallocation (journals of earlier versions were preallocated files): cut too, without a
        # warning. Past a ring's records they are a store a kill cut after it took its room: torn.
        end = found.lines_end
        tail = os.pread(self._fd, size - end, end) if size > end else b""
        self.torn_bytes = len(tail) if found.ring.data else len(tail.rstrip(b"\0"))
        self.unused_bytes = len(tail) - self.torn_bytes
        if size > end:
            os.ftruncate(self._fd, end)
        if found.corrupt or self.torn_bytes:
            log.warning("journal %s: %d unreadable line(s) skipped (first at byte %d), %d torn byte(s) cut at the end",
                        path, len(found.corrupt), found.corrupt[0] if found.corrupt else -1, self.torn_bytes)
        os.lseek(self._fd, 0, os.SEEK_END)
        self.mapped = fsync != "always"
        self.map_cursor = np.zeros(2, np.int64)     # [JC_POS, JC_CAP]: a view of the ring's header when mapped
        self.map_buf = np.zeros(0, np.uint8)        # the ring (empty: not mapped, or closed)
        self._hdr = np.zeros(RING_HEADER // 8, np.int64)
        self._mm = None
        self._ring_file: str | None = None
        self._flushed = end                         # the file's end: how far the ring has been copied into it
        self._unsynced = False
        self._closing = False                       # (under _drain_lock) no room is handed back to the writers
        if self.mapped:
            try:
                self._make_ring(end)
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
        self._closed = threading.Event()
        self.sync_thread: threading.Thread | None = None
        if self.mapped:
            # the copies into the file and their syncs happen here, never inline in an append on the order path
            self.sync_thread = threading.Thread(target=self._flush_loop, name="aegis-journal-sync", daemon=True)
            self.sync_thread.start()

    def _make_ring(self, end: int) -> None:
        """A fresh ring for this run, its cursor at the file's end `end`. Raises OSError.

        The ring's records reach the disk only in the sync thread, where a full disk halts trading; a disk that is
        already (nearly) full is refused here instead, so a run that cannot journal never starts trading."""
        vfs = os.fstatvfs(self._fd)
        if vfs.f_bavail * vfs.f_frsize < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {vfs.f_bavail * vfs.f_frsize} bytes free "
                                        f"under the journal, less than {MIN_FREE_BYTES}")
        st = os.fstat(self._fd)
        rp = ring_path(st)
        fd = os.open(rp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, RING_HEADER + RING_BYTES)
            mm = mmap.mmap(fd, RING_HEADER + RING_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        hdr = np.frombuffer(mm, np.int64, count=RING_HEADER // 8)
        ring = np.frombuffer(mm, np.uint8, offset=RING_HEADER)
        ring[::PAGE_BYTES] = 0        # every page allocated and mapped writable now, not by the order path's store
        named = os.path.realpath(self.path).encode()[:RING_HEADER - H_PATH_AT]
        np.frombuffer(mm, np.uint8)[H_PATH_AT:H_PATH_AT + len(named)] = np.frombuffer(named, np.uint8)
        tl = min(TAIL_CHECK, end)
        hdr[H_SIZE], hdr[H_DEV], hdr[H_INO], hdr[H_BASE] = RING_BYTES, st.st_dev, st.st_ino, end
        hdr[H_TAIL_CRC], hdr[H_TAIL_LEN] = zlib.crc32(os.pread(self._fd, tl, end - tl)), tl
        hdr[H_FLUSHED] = end
        cur = hdr[H_CURSOR:H_CURSOR + 2]
        cur[JC_POS], cur[JC_CAP] = end, end + RING_BYTES
        hdr[H_MAGIC] = RING_MAGIC     # last: a ring whose making a crash cut short is not trusted
        self._mm, self._hdr, self.map_buf, self.map_cursor, self._ring_file = mm, hdr, ring, cur, rp

    def _drain(self, sync: bool, need: int = 0, final: bool = False) -> None:
        """Copy the ring's complete records into the file, then fdatasync it if `sync` and anything was copied since
        the last sync. A record another thread has reserved but not finished storing (its bytes are still zero)
        stops the copy there; with `need`, the copy waits up to STORE_WAIT_S for every record below that offset.
        `final` (closing: no writer is left): after that wait, everything reserved is copied as it is, so nothing is
        lost; a reader skips a line a stopped store left short. Never called under _lock. Raises OSError."""
        with self._drain_lock:
            fd, ring, cur = self._fd, self.map_buf, self.map_cursor
            if fd < 0 or ring.shape[0] == 0:
                return
            start = self._flushed
            deadline = None
            short = None
            while True:
                pos = int(cur[JC_POS])
                data = _ring_read(ring, start, pos)
                zero = data.find(b"\0")
                take = data.rfind(b"\n", 0, len(data) if zero < 0 else zero) + 1
                if zero < 0 or start + take >= max(need, pos if final else 0):
                    break
                if deadline is None:
                    deadline = time.monotonic() + STORE_WAIT_S
                elif time.monotonic() > deadline:
                    if final:
                        take = len(data)
                    else:       # what is complete is copied all the same
                        short = OSError(errno.EIO, f"a record reserved in the journal's ring was not stored within "
                                                   f"{STORE_WAIT_S} s")
                    break
                time.sleep(0)
            if take:
                _write_all(fd, data[:take], start)
                self._unsynced = True
                self._flushed = start + take
                self._hdr[H_FLUSHED] = self._flushed
                # zero what was copied before its room is handed back: a zero byte is how a copy tells a store in
                # progress (x86 keeps these stores in order, so a writer that sees the new JC_CAP sees the zeros)
                for span in _ring_spans(ring, start, start + take):
                    span[:] = 0
                if not self._closing:
                    cur[JC_CAP] = self._flushed + ring.shape[0]
            if sync and self._unsynced:
                os.fdatasync(fd)
                self._unsynced = False
            if short is not None:
                raise short

    def _flush_loop(self) -> None:
        period = (self.fsync_interval_ns or 50_000_000) / 1e9
        while not self._closed.wait(period):
            try:
                self._drain(sync=self.fsync == "interval")
            except OSError as e:
                if self._fd >= 0:      # not closed meanwhile: records may not be on disk
                    self.report_failure(f"copying the ring into the file: {e.strerror or e}")

    def append(self, kind: str, **fields) -> None:
        rec = {"k": kind, "t": time.time_ns() // 1_000_000, **fields}
        _check_no_secret(rec)
        line = _line(rec)
        failure = None
        end = -1
        for attempt in range(3):
            with self._lock:
                if self.failed is not None:
                    raise JournalFailed(self.failed)
                try:
                    if self._fd < 0:
                        raise OSError(errno.EBADF, f"journal {self.path} is closed")
                    if self.mapped:
                        at = map_store(self.map_buf, self.map_cursor, np.frombuffer(line, np.uint8), len(line))
                        if at >= 0:
                            end = at + len(line)
                        elif attempt == 2:
                            raise OSError(errno.ENOBUFS, "no room in the journal's ring after copying it out")
                    else:
                        _write_all(self._fd, line)
                        end = 0
                except OSError as e:
                    failure = self._failed(e)
                if failure is None and end >= 0:
                    self.records_written += 1
                    if self.state is not None:
                        self.state.apply(rec)     # the in-memory view never runs ahead of (or behind) the file
                fd = self._fd
            if failure is not None or end >= 0:
                break
            try:                  # the ring is full: copy it out here (the sync thread is behind) and store again
                self._drain(sync=False, need=int(self.map_cursor[JC_POS]))
            except OSError as e:
                self.report_failure(f"copying the ring into the file: {e.strerror or e}")
                raise JournalFailed(self.failed) from None
        if failure is not None:
            self._notify(failure)
            raise JournalFailed(failure)
        # the sync runs outside the lock: the sender's next append must not queue behind a fill's fdatasync
        try:
            if self.fsync == "always":
                os.fdatasync(fd)
            elif self.fsync == "interval" and kind == "fill":
                self._drain(sync=True, need=end)
        except OSError as e:
            self.report_failure(f"fdatasync: {e.strerror or e}")
            raise JournalFailed(self.failed) from None

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
        """A record line the sender's fast path (aegis.binance.wire) already stored or wrote itself: keep the
        in-memory view in step, as append() would have."""
        rec = orjson.loads(line.rpartition(b"\t")[0])
        with self._lock:
            self.records_written += 1
            if self.state is not None:
                self.state.apply(rec)
        return rec

    @property
    def fd(self) -> int:
        return self._fd

    def sync(self) -> None:
        """Everything stored so far into the file and onto the disk."""
        if self.mapped:
            self._drain(sync=True, need=int(self.map_cursor[JC_POS]))
        with self._lock:
            os.fsync(self._fd)

    def close(self) -> None:
        self._closed.set()
        if self.sync_thread is not None and self.sync_thread is not threading.current_thread():
            self.sync_thread.join(1.0)
        if self._fd < 0:
            return
        with self._drain_lock:
            self._closing = True
            self.map_cursor[JC_CAP] = 0         # no store after this one; one reserved before it is copied below
        kept = False
        if self.mapped:
            try:
                self._drain(sync=False, final=True)
            except OSError as e:
                kept = True
                log.error("journal %s: copying the ring into the file failed (%s); its records stay in %s, which "
                          "the next open reads", self.path, e.strerror or e, self._ring_file)
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.fsync(self._fd)
            except OSError as e:
                kept = True
                log.error("journal %s: final sync failed: %s", self.path, e)
            os.close(self._fd)
            self._fd = -1
            self.map_buf = np.zeros(0, np.uint8)
            if self._ring_file is not None and not kept:
                try:
                    os.unlink(self._ring_file)
                except OSError as e:
                    log.error("journal %s: removing its ring %s failed: %s", self.path, self._ring_file, e)
            if self._mm is not None:
                self._hdr = np.zeros(RING_HEADER // 8, np.int64)
                self.map_cursor = np.zeros(2, np.int64)
                try:
                    self._mm.close()
                except BufferError:     # a view is still held somewhere: unmapped when it goes
                    pass
                self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _write_all(fd: int, data: bytes, at: int | None = None) -> None:
    """All of data into the file, at its position or at offset `at`: a file may take part of a write (a signal, a
    full disk). Raises OSError."""
    done = 0
    while done < len(data):
        w = os.write(fd, data[done:]) if at is None else os.pwrite(fd, data[done:], at + done)
        if w <= 0:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: the journal took 0 of {len(data) - done} bytes")
        done += w


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
