"""`python -m aegis replay FILES... --strategy NAME`: backtest on recorded or Binance public data, through the
live path.

Pipeline (one process, no threads):

  sources (one per file, each an iterator of MARKET_DTYPE chunks in non-decreasing replay time)
    -> k-way merge (heap over the sources keyed by the last time of their buffered chunk); inputs that are all
       store partitions skip it (aegis.replay.store.replay_batches: a partition overlapping no other is handed
       to the core as its file's rows read into one reused buffer, overlapping ones are merged by one jitted
       pass)
    -> replay core, ONE jitted call per merged batch: per BATCH records, the Brain's own order loop
       (aegis.brain.pipeline.process_batch and halt_followup) on the merged array itself, with no ring between
       them (the live Brain's ring is transport between two processes; in one process its two copies of every
       record cost a replay a fifth of its core time), with the simulated exchange as its order sink
       (aegis.replay.sink): the exchange sees every record up to a signal's trigger before the order is sent, and
       its fills reach risk at once, in simulated time.
    -> aegis.replay.metrics: summary.json, trades.csv, orders.csv, equity.csv, equity.png in --out.

Replay time: every record's recv_ts (and pub_ts) is its replay time in ns since the Unix epoch, which is what the
strategy, risk and the simulated exchange see as "now". CSV rows: the exchange time (bookTicker event_time,
aggTrades transact_time). Recordings: the Feed's receive time (CLOCK_MONOTONIC) shifted by a constant so the
file's first record lands on its exchange time: the recorded arrival order and spacing are kept.

Determinism: nothing in the core reads a clock; the merge breaks time ties by file order (command line order, a
directory's files sorted by name) then by position in the file; latency draws come from a seeded splitmix64. So
the same files, options and seed give byte-identical output files. Wall-clock figures (elapsed, rate) only go to
stderr.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import heapq
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from aegis.core.jit import njit
from aegis.replay import metrics
from aegis.core.borrow import borrowed
from aegis.trade import risk
from aegis.replay import simexec
from aegis.replay import store
from aegis.replay.store import RECORD_WORDS, sum64_step
from aegis.brain import learn, strategy
from aegis.brain import bus, candles, pipeline, pools
from aegis.brain.pipeline import S_HALT_REQUESTS, S_HELD, S_ORDERS, S_RECORDS, S_REFUSED, S_SIGNALS
from aegis.brain.process import BrainConfig
from aegis.core import latency
from aegis.feed.parse import LEVELS_CAP
from aegis.feed.recording import EXCHANGE_INFO_STREAM, SNAPSHOT_SUFFIX
from aegis.replay.sink import SimSink
from aegis.core.config import ConfigError
from aegis.replay.csvimport import RAW_DTYPE, CsvSource, InputError, concat, symbol_and_format_from_name
from aegis.core.records import MARKET_DTYPE
from aegis.replay.simexec import C_ACTIVE, C_DONE, C_EQ, C_FILLS, SimConfig, SimExchange
from aegis.core.usage import OneLineParser, usage_error

BATCH = 1024                 # records per order-loop call, as the Brain's ring batch
MERGE_CHUNK_BYTES = 1 << 20  # per CSV source block: ~14 k quotes; memory ~ (files x 2 MB)
REC_PREFIX_SCAN_LINES = 100_000
DEFAULT_OUT = "replay-out"


# =============================================================================================== jitted core
@njit(cache=True, nogil=True)
def run_core(src, n, start, bs, sink, words, lanes):
    """Replay src[start:n] through the Brain's order loop (aegis.brain.pipeline), BATCH records a call, with the
    simulated exchange as its sink; returns how far it got (< n when an output buffer must be drained first).
    lanes not empty: also add the replayed records (words: src as 64-bit words) to a store partition's sum64."""
    # the ReplayCore holds every array for the whole call: owner-less views spare the kernels below two atomic
    # reference-count updates per array they take out of a bundle (per order, and per record while one rests)
    bs, sink, src = borrowed(bs), borrowed(sink), borrowed(src)
    sx = sink.sx
    ctr = sx.ctr
    i0 = start
    batch = BATCH
    need = 2 * batch + bs.req_buf.shape[0] + 8
    while i0 < n:
        na = ctr[C_ACTIVE]
        if sx.fills.shape[0] - ctr[C_FILLS] < na + need or sx.log_i.shape[0] - ctr[C_DONE] < na + need \
                or sx.eq_ts.shape[0] - ctr[C_EQ] < batch + 2 or sx.act_i.shape[0] - na < batch + bs.req_buf.shape[0] + 1:
            return i0
        m = n - i0
        if m > batch:
            m = batch
        if lanes.shape[0] != 0:   # a partition's first open: its check, on the rows the order loop reads next
            sum64_step(words[i0 * RECORD_WORDS:(i0 + m) * RECORD_WORDS], lanes)
        part = src[i0:i0 + m]
        now = part[m - 1].recv_ts
        pipeline.process_batch(bs, sink, part, m, now)
        if bs.rk.g[risk.G_HALT_PENDING] != 0:   # as the Brain's next loop iteration: cancel-all / flatten
            pipeline.halt_followup(bs, sink, now)
        i0 += m
    return i0


def _looks_like_recording(path: str) -> bool:
    name = os.path.basename(path).lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json.gz")):
        return True
    if name.endswith((".csv", ".zip", ".csv.gz")):
        return False
    try:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            return f.read(64).lstrip()[:1] == b"{"
    except (OSError, EOFError):
        return False


def expand_inputs(paths: list[str]) -> list[str]:
    """Files in command-line order; a directory contributes its data files sorted by name."""
    out = []
    for p in paths:
        parts = store.expand(p)   # a market-data store (or a symbol / day directory in one): its partitions
        if parts is not None:
            out.extend(parts)
        elif os.path.isdir(p):
            names = sorted(f for f in os.listdir(p)
                           if f.lower().endswith((".csv", ".zip", ".csv.gz", ".jsonl.gz", ".jsonl")))
            if not names:
                raise InputError(f"{p}: directory holds no .csv/.zip/.jsonl.gz files")
            out.extend(os.path.join(p, f) for f in names)
        elif not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        else:
            out.append(p)
    return out


def recording_symbols(path: str, max_lines: int = REC_PREFIX_SCAN_LINES) -> set[str]:
    """Symbol names seen in the first lines of a recording (stream prefixes and "s" members)."""
    import orjson
    names = set()
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for i, line in enumerate(f):
                if i >= max_lines:
                    break
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(obj, dict):
                    continue
                data = obj.get("data")
                if isinstance(data, dict) and isinstance(data.get("s"), str):
                    names.add(data["s"].upper())
                elif isinstance(data, list):
                    names.update(d["s"].upper() for d in data if isinstance(d, dict) and isinstance(d.get("s"), str))
                stream = obj.get("stream")
                if isinstance(stream, str) and "@" in stream and not stream.startswith("!"):
                    names.add(stream.split("@", 1)[0].upper())
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read recording ({e})") from None
    return names


class RecordingSource:
    """A Feed recording (gzip JSON lines {"t": recv ns, "stream": ..., "data": payload}) parsed by aegis.feed.parse,
    the Feed's own parser, into MARKET records in recorded order."""

    def __init__(self, path: str, table, warn=None, chunk_lines: int = 8192):
        self.path = path
        self.table = table
        self.warn = warn
        self.chunk_lines = chunk_lines
        self.rows = 0
        self.bad_lines = 0
        self.lines = 0
        self.offset = None
        self._fh = None
        self._done = False
        self.parse_problems: dict[str, int] = {}

    def progress(self) -> tuple[int, int]:
        """(bytes done, bytes total) of the file on disk (compressed position for .gz)."""
        try:
            total = max(os.path.getsize(self.path), 1)
        except OSError:
            return 0, 1
        if self._done:
            return total, total
        fh = self._fh
        if fh is None:
            return 0, total
        try:
            raw = getattr(fh, "fileobj", None)
            return min(raw.tell() if raw is not None else fh.tell(), total), total
        except (OSError, ValueError):
            return 0, total

    def chunks(self) -> Iterator[np.ndarray]:
        from aegis.feed import book
        from aegis.feed import parse
        parser = parse.Parser(self.table, book.BookState(len(self.table)), out_cap=1 << 15,
                              **recording_meta(self.path)[1])
        opener = gzip.open if self.path.endswith(".gz") else open
        prev = np.iinfo(np.int64).min
        try:
            fh = opener(self.path, "rb")
        except OSError as e:
            raise InputError(f"{self.path}: {e.strerror or e}") from None
        self._fh = fh
        try:
            batch: list[bytes] = []
            batch_t = None
            j = 0
            reported = 0
            for line in fh:
                self.lines += 1
                line = line.strip()
                if not line:
                    continue
                t = _line_time(line)
                if t is None:
                    self.bad_lines += 1
                    if reported < 20 and self.warn:
                        self.warn(f"{self.path}:{self.lines}: not a recorded message (expected {{\"t\": ..., ...}})")
                        reported += 1
                    continue
                special = _special_stream(line)
                if special is not None:
                    if batch:
                        j = self._parse(parser, batch, batch_t, j)
                        batch = []
                        batch_t = None
                    if special.endswith(SNAPSHOT_SUFFIX):
                        if j + parser.books.records_bound(2 * LEVELS_CAP) > len(parser.out):
                            out, prev = self._finish(parser.out[:j].copy(), prev)
                            j = 0
                            if len(out):
                                yield out
                        j = self._snapshot(parser, special[:-len(SNAPSHOT_SUFFIX)], line, t, j)
                    continue
                if t != batch_t and batch:
                    j = self._parse(parser, batch, batch_t, j)
                    batch = []
                batch_t = t
                batch.append(line)
                if len(batch) >= 256:
                    j = self._parse(parser, batch, batch_t, j)
                    batch = []
                if j >= self.chunk_lines:
                    out, prev = self._finish(parser.out[:j].copy(), prev)
                    j = 0
                    if len(out):
                        yield out
            if batch:
                j = self._parse(parser, batch, batch_t, j)
            if j:
                out, prev = self._finish(parser.out[:j].copy(), prev)
                if len(out):
                    yield out
        except (OSError, EOFError) as e:
            if self.warn:
                self.warn(f"{self.path}: truncated after line {self.lines} ({e}); the rest is skipped")
        finally:
            fh.close()
            self._fh = None
            self._done = True
            for code, name in parse.PROBLEMS.items():
                if parser.stats[code]:
                    self.parse_problems[name] = int(parser.stats[code])
            if self.parse_problems and self.warn:
                self.warn(f"{self.path}: messages skipped: " + ", ".join(
                    f"{v} {k}" for k, v in sorted(self.parse_problems.items()))
                    + (" (symbols first seen after the scanned head of the file: add them with --symbols)"
                       if "unknown symbol" in self.parse_problems else ""))

    def _snapshot(self, parser, name: str, line: bytes, t: int, j: int) -> int:
        """A recorded REST depth snapshot, applied to the books with the Feed's own kernel at its recorded time."""
        import orjson
        from aegis.feed import book, parse
        sid = self.table.find(name.upper())
        if sid < 0:
            return j
        try:
            d = orjson.loads(line)["data"]
            bids = np.asarray(d["bids"], np.float64).reshape(-1, 2)
            asks = np.asarray(d["asks"], np.float64).reshape(-1, 2)
            last_id, exch = int(d["lastUpdateId"]), int(d.get("E", 0) or 0) * 1_000_000
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.bad_lines += 1
            return j
        b = parser.books
        if b.state(sid) not in (book.ST_BUFFERING, book.ST_WAIT_SNAPSHOT):
            return j
        b.st[sid, book.S_STATE] = book.ST_WAIT_SNAPSHOT
        return book.apply_snapshot(b.st, b.px, b.qty, b.pend_hdr, b.pend_lv, b.pend_ctl, sid, last_id, bids, asks,
                                   exch, t, parser.out, j, bool(parser.params[parse.PR_EMIT_LEVELS] != 0))

    @staticmethod
    def _parse(parser, batch: list[bytes], t: int, j: int) -> int:
        """The Feed's parse, fast path then its slow path (aegis.feed.process): what the kernel leaves (arrays such as
        !markPrice@arr, control replies) is decoded with orjson and each object parsed again."""
        import orjson
        j, slow = parser.parse_bytes(batch, t, j, allow_slow=True)
        for k in slow:
            try:
                obj = orjson.loads(batch[k])
            except orjson.JSONDecodeError:
                continue
            data = obj.get("data") if isinstance(obj, dict) else None
            items = data if isinstance(data, list) else ([data] if isinstance(data, dict) else [])
            for it in items:
                if isinstance(it, dict):
                    j, _ = parser.parse_bytes([orjson.dumps(it)], t, j)
        return j

    def _finish(self, out: np.ndarray, prev: int) -> tuple[np.ndarray, int]:
        if self.offset is None:
            has = np.flatnonzero(out["exch_ts"] > 0)
            self.offset = int(out["exch_ts"][has[0]] - out["recv_ts"][has[0]]) if len(has) else 0
        t = out["recv_ts"] + self.offset
        t = np.maximum.accumulate(np.concatenate(([prev], t)))[1:]
        out["recv_ts"] = t
        self.rows += len(out)
        return out, int(t[-1]) if len(t) else prev


def _special_stream(line: bytes) -> str | None:
    """The stream name of a recording's exchangeInfo or depth snapshot line, else None (market data)."""
    k = line.find(b'"stream":"', 0, 40)
    if k < 0:
        return None
    end = line.find(b'"', k + 10, k + 80)
    name = line[k + 10:end].decode("ascii", "replace") if end > 0 else ""
    return name if name == EXCHANGE_INFO_STREAM or name.endswith(SNAPSHOT_SUFFIX) else None


PARSE_KEYS = ("max_price", "max_qty", "emit_levels", "dedupe")


def recording_meta(path: str) -> tuple[dict | None, dict]:
    """(exchangeInfo, Feed parse settings) a recording file carries in its first line; (None, {}) without."""
    import orjson
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            line = f.readline()
    except (OSError, EOFError):
        return None, {}
    if _special_stream(line.strip()) != EXCHANGE_INFO_STREAM:
        return None, {}
    try:
        obj = orjson.loads(line)
        data, parse = obj["data"], obj.get("parse") or {}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None, {}
    parse = {k: v for k, v in parse.items() if k in PARSE_KEYS} if isinstance(parse, dict) else {}
    return (data if isinstance(data, dict) else None), parse


def _line_time(line: bytes) -> int | None:
    if line.startswith(b'{"t":'):
        end = line.find(b",", 5)
        if end > 5:
            try:
                return int(line[5:end])
            except ValueError:
                return None
    return None


# =============================================================================================== merge
class Merger:
    """K-way merge of sources whose chunks are each non-decreasing in recv_ts.

    A heap holds (last time of the source's buffered records, source index) for every source that still has
    chunks to read. Everything strictly earlier than the heap's smallest key can be emitted (no unread chunk can
    hold anything earlier); then the source at the top reads its next chunk (appended to what it has left) and
    goes back on the heap. Each step reads one chunk, so memory is one chunk per source. Ties in time: source
    order, then file order (a stable sort of the concatenated buffers)."""

    def __init__(self, sources: list):
        self.sources = sources
        self.bufs: list[np.ndarray] = [np.empty(0, MARKET_DTYPE) for _ in sources]
        self.iters = [s.chunks() for s in sources]
        self.seq = 0

    def _read(self, i: int) -> bool:
        for chunk in self.iters[i]:
            if len(chunk):
                self.bufs[i] = chunk if not len(self.bufs[i]) else concat([self.bufs[i], chunk])
                return True
        return False

    def batches(self) -> Iterator[np.ndarray]:
        heap = []
        for i in range(len(self.sources)):
            if self._read(i):
                heapq.heappush(heap, (int(self.bufs[i]["recv_ts"][-1]), i))
        while heap:
            bound, top = heap[0]
            out = self._emit_before(bound)
            if out is not None:
                yield out
            heapq.heappop(heap)
            if self._read(top):
                heapq.heappush(heap, (int(self.bufs[top]["recv_ts"][-1]), top))
        out = self._emit_before(None)
        if out is not None:
            yield out

    def _emit_before(self, bound: int | None) -> np.ndarray | None:
        parts = []
        for i, b in enumerate(self.bufs):
            if not len(b):
                continue
            cut = len(b) if bound is None else int(np.searchsorted(b["recv_ts"], bound, side="left"))
            if cut:
                parts.append(b[:cut])
                self.bufs[i] = b[cut:]
        if not parts:
            return None
        if len(parts) == 1:
            out = parts[0].copy()
        else:
            out = concat(parts)
            order = np.argsort(out["recv_ts"], kind="stable")
            out = out.view(RAW_DTYPE)[order].view(MARKET_DTYPE)
        out["pub_ts"] = out["recv_ts"]
        out["seq"] = np.arange(self.seq, self.seq + len(out), dtype=np.int64)
        self.seq += len(out)
        return out


def feed_batches(sources: list) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The inputs' records in replay order, as (array for the core, lanes for ReplayCore.feed) pairs, each array
    valid until the next is asked for. Store partitions only: aegis.replay.store.replay_batches (no copy for a
    partition that overlaps no other, a one-pass merge otherwise; lanes on a partition's first open); any CSV or
    recording among the inputs: Merger (lanes None)."""
    if sources and all(isinstance(s, store.StoreSource) for s in sources):
        return store.replay_batches(sources, 0, _merge_from)
    return ((b, None) for b in Merger(sources).batches())


def _merge_from(sources: list, seq0: int):
    m = Merger(sources)
    m.seq = seq0
    for b in m.batches():
        yield b, None
    return m.seq


# =============================================================================================== engine
@dataclass(frozen=True)
class ReplayConfig:
    strategy: "strategy.StrategyConfig"
    sim: SimConfig
    risk: "risk.RiskConfig"
    out_dir: str = DEFAULT_OUT
    brain: BrainConfig = BrainConfig()
    realtime: bool = False
    progress: bool | None = None   # None: when stderr is a terminal
    model_in: str | None = None    # online strategy: model file loaded at start (--model)
    model_out: str | None = None   # online strategy: model file written at the end (--save-model)


def symbol_rules(table) -> list:
    """Exchange filters per symbol for risk: the built-in table's tick/step for the majors, lenient otherwise (a
    public-data replay has no exchangeInfo; --exchange-info FILE gives the real ones)."""
    out = []
    for info in table:
        out.append(risk.SymbolRules(symbol=info.name, tick_size=info.tick_size, step_size=info.step_size,
                                    market_step_size=info.step_size, min_qty=info.step_size,
                                    market_min_qty=info.step_size, min_notional="0"))
    return out


_NO_WORDS = np.zeros(0, np.uint64)   # run_core's words and lanes when there is nothing to sum


class ReplayCore:
    """The live path's kernels and state for one replay: the Brain's order loop (aegis.brain.pipeline) over the
    replayed records, with the simulated exchange as its order sink (aegis.replay.sink)."""

    def __init__(self, table, cfg: ReplayConfig, rules: list | None = None, out=None):
        n = len(table)
        self.table = table
        self.cfg = cfg
        self.riskbook = risk.RiskBook(cfg.risk, rules if rules is not None else symbol_rules(table))
        self.sim = SimExchange(n, cfg.sim, max_active=risk.MAX_OPEN + 4 * BATCH, fill_cap=1 << 15,
                               log_cap=1 << 15, eq_cap=1 << 15)
        self.sink = SimSink(self.sim.sx)
        # no candles, no bus listeners, no latency histograms: the order loop's observers, not its decisions
        no_candles = candles.CandleBook(1, np.zeros(0, np.int64), 1)
        quiet = bus.EventBus(64)
        spool = pools.SignalPool(1)
        self.bs = pipeline.new_brain_state(
            cfg.strategy, n, self.riskbook.rk, (*no_candles.args, no_candles.intervals, no_candles.stats),
            (quiet.events, quiet.header, quiet.prio_of), (spool.records, spool.header), latency.new_set(), trading=True,
            record_lat=False, retry_ms=cfg.brain.retry_ms, unit_notional=cfg.brain.unit_notional)
        self.stats = self.bs.st
        self.out = out if out is not None else metrics.Collector(table.names, cfg.sim.sample_ns)

    def feed(self, recs: np.ndarray, lanes: np.ndarray | None = None) -> None:
        """Replay recs; with lanes (a store partition's first open: aegis.replay.store.replay_batches), also add
        them to its sum64."""
        n = len(recs)
        i = 0
        words = _NO_WORDS if lanes is None else recs.view(np.uint64)
        lanes = _NO_WORDS if lanes is None else lanes
        while i < n:
            before = i
            i = run_core(recs, n, i, self.bs, self.sink, words, lanes)
            self.drain()
            if i == before:   # drained buffers and still no room: only the active-order table can be full
                raise RuntimeError(f"simulated exchange: {int(self.sim.ctr[C_ACTIVE])} orders open or in flight, "
                                   f"more than the table holds ({self.sim.act_i.shape[0]})")

    def drain(self) -> None:
        sim = self.sim
        if sim.ctr[C_FILLS]:
            self.out.fills(sim.drain_fills())
        if sim.ctr[C_DONE]:
            self.out.orders(*sim.drain_log())
        if sim.ctr[C_EQ]:
            self.out.equity(*sim.drain_equity())

    def finish(self) -> None:
        self.drain()
        simexec.finish_open(self.sim.sx)
        f = self.sim.drain_fills()
        rb = self.riskbook
        for k in range(len(f)):
            risk.on_fill(rb.rk, f[k], int(self.sim.ctr[simexec.C_NOW]))
        self.out.fills(f)
        self.drain()


# =============================================================================================== CLI
def _duration_ns(text) -> int:
    """'250us', '2ms', '1.5s', '1m', '800' (ns) in the one duration grammar."""
    from aegis.core.config import parse_duration_ns
    try:
        return parse_duration_ns(text, bare_unit="ns")
    except ValueError as e:
        raise ConfigError(f"bad duration: expected {e}") from None


def _typed(v: str):
    s = v.strip()
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m aegis replay",
                description="Backtest a strategy on Feed recordings (.jsonl.gz) and Binance public-data CSV files "
                            "(USD-M futures bookTicker / aggTrades, .csv or .zip) through the live "
                            "order loop (strategy -> risk -> orders) with simulated execution.")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files or directories, merged in time order")
    p.add_argument("--strategy", default=None, help=f"strategy name ({', '.join(strategy.names())}); "
                                                    "default: the config file's, else ema_cross")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="strategy parameter (repeatable)")
    p.add_argument("--slippage-bps", type=float, default=None, help="market/taker fills move this many basis points against you (default 0)")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--latency", default=None, metavar="DURATION",
                     help="constant order latency: ns, or with a unit (250us, 2ms); default 0")
    lat.add_argument("--latency-hist", default=None, metavar="FILE",
                     help="draw order latencies from a recorded latency histogram file (aegis report --hist format)")
    p.add_argument("--latency-stage", default="tick_to_trade",
                   help="histogram row used with --latency-hist (feed, ring, signal, risk, handoff, wire, "
                        "tick_to_trade)")
    p.add_argument("--seed", type=int, default=None, help="seed of the latency draws (default 1)")
    p.add_argument("--maker-fee", type=float, default=None, help="maker fee, fraction of notional (default 0.0002)")
    p.add_argument("--taker-fee", type=float, default=None, help="taker fee, fraction of notional (default 0.0005)")
    p.add_argument("--sample", default=None, metavar="DURATION",
                   help="equity curve / Sharpe sampling interval (default 1s)")
    p.add_argument("--risk", action="append", default=[], metavar="K=V",
                   help="[risk] setting for this replay, e.g. max_position_notional=1e6 (repeatable)")
    p.add_argument("--brain", action="append", default=[], metavar="K=V",
                   help="[brain] setting, e.g. unit_notional=100 (quote value of one strategy unit; 0: one unit "
                        "is 1.0 base asset) or retry_ms=100 (hold-off after a refused order) (repeatable)")
    p.add_argument("--config", default=None, help="TOML file: [strategy], [risk], [brain] and [replay] tables are used")
    p.add_argument("--exchange-info", default=None, metavar="FILE",
                   help="exchangeInfo JSON with the symbols' real filters (tick/step/min notional)")
    p.add_argument("--symbol", default=None,
                   help="symbol of CSV files whose name does not say it (SYMBOL-bookTicker-DATE.csv)")
    p.add_argument("--format", choices=("bookTicker", "aggTrades"), default=None,
                   help="CSV layout when neither the name nor a header says it")
    p.add_argument("--symbols", default=None, help="extra symbol names for recordings (comma-separated)")
    p.add_argument("--out", default=None, metavar="DIR", help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="--strategy online: start from this model file (from --save-model or a live run)")
    p.add_argument("--save-model", default=None, metavar="FILE",
                   help="--strategy online: write the trained model here at the end (for --model in a live run)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--max-speed", dest="realtime", action="store_false", help="as fast as possible (default)")
    speed.add_argument("--realtime", dest="realtime", action="store_true", help="pace the replay at real time")
    p.set_defaults(realtime=None)
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return p


@dataclass(frozen=True)
class ReplaySection:
    """The [replay] table: defaults for the options of the same names (the command line wins)."""
    slippage_bps: float | None = None
    latency: str | int | None = None         # a duration; a bare number is ns
    latency_hist: str | None = None
    latency_stage: str | None = None
    seed: int | None = None
    maker_fee: float | None = None
    taker_fee: float | None = None
    sample: str | int | None = None          # a duration; a bare number is ns
    out: str | None = None
    realtime: bool | None = None


def configure(args) -> ReplayConfig:
    """Options -> ReplayConfig (CLI over the config file's tables over defaults); ConfigError on bad values."""
    from aegis.core import config as C
    eng = C.load(args.config) if args.config else C.EngineConfig()
    rep = C.section_values(ReplaySection, "replay", eng.section("replay"), {"slippage_bps": C.NON_NEGATIVE})

    def opt(name, cli):
        return cli if cli is not None else rep.get(name)

    name = args.strategy or (eng.strategy if args.config else "ema_cross")
    values = {}
    table = eng.section("strategy")
    if isinstance(table.get(name), dict):
        values.update(table[name])
    values.update({k: v for k, v in table.items() if not isinstance(v, dict)})
    values.update(strategy.parse_param_args(args.param))
    scfg = strategy.resolve(name, values)

    rsec = eng.section("risk")
    for item in args.risk:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--risk takes KEY=VALUE, got {item!r}")
        rsec[k.strip()] = _typed(v)
    rcfg = risk.RiskConfig.from_section(rsec)
    bsec = eng.section("brain")
    for item in args.brain:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--brain takes KEY=VALUE, got {item!r}")
        bsec[k.strip()] = _typed(v)
    bcfg = BrainConfig.from_section(bsec)

    hist = None
    lat_hist = opt("latency_hist", args.latency_hist)
    lat = opt("latency", args.latency)
    if lat_hist:
        from aegis.core import latency as L
        from aegis.app import report
        try:
            hset = report.load_histograms(lat_hist)
        except report.HistogramFileError as e:
            raise ConfigError(str(e)) from None
        stage = opt("latency_stage", args.latency_stage if args.latency_stage != "tick_to_trade" else None) \
            or "tick_to_trade"
        if stage not in L.STAGE_SLUGS:
            raise ConfigError(f"--latency-stage must be one of {', '.join(L.STAGE_SLUGS)}, got {stage!r}")
        hist = hset[L.STAGE_SLUGS.index(stage)]
        if L.count(hist) <= 0:
            raise ConfigError(f"{lat_hist}: stage {stage} holds no latency samples")
    lat_ns = _duration_ns(str(lat)) if lat is not None else 0
    sample = opt("sample", args.sample)
    sample_ns = _duration_ns(str(sample)) if sample is not None else 1_000_000_000
    if sample_ns <= 0:
        raise ConfigError("--sample must be > 0")
    slip = opt("slippage_bps", args.slippage_bps)
    maker = opt("maker_fee", args.maker_fee)
    taker = opt("taker_fee", args.taker_fee)
    seed = opt("seed", args.seed)
    for label, v in (("slippage-bps", slip), ("maker-fee", maker), ("taker-fee", taker)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
            raise ConfigError(f"--{label} must be a number, got {v!r}")
    if slip is not None and slip < 0:
        raise ConfigError(f"--slippage-bps must be >= 0, got {slip}")
    try:
        sim = SimConfig(slippage_bps=float(slip or 0.0),
                        maker_fee=float(0.0002 if maker is None else maker),
                        taker_fee=float(0.0005 if taker is None else taker),
                        latency_ns=lat_ns, latency_hist=hist, seed=int(1 if seed is None else seed),
                        sample_ns=sample_ns)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    realtime = args.realtime if args.realtime is not None else bool(rep.get("realtime", False))
    out = opt("out", args.out) or DEFAULT_OUT
    learn.check_model_options(scfg, args.model, args.save_model)
    return ReplayConfig(scfg, sim, rcfg, str(out), bcfg, realtime, args.progress, args.model, args.save_model)


def _exchange_rules(path: str, table) -> list:
    import orjson
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read exchangeInfo JSON ({e})") from None
    return rules_from_exchange_info(data, table, path)


def rules_from_exchange_info(data, table, origin: str) -> list:
    """Risk's SymbolRules per table symbol from an exchangeInfo body; symbols it lacks get symbol_rules' defaults."""
    rows = {r.get("symbol"): r for r in data.get("symbols", [])} if isinstance(data, dict) else {}
    out = []
    defaults = symbol_rules(table)
    for info, d in zip(table, defaults):
        row = rows.get(info.name)
        try:
            out.append(risk.SymbolRules.from_exchange_info(row) if row else d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{origin}: symbol {info.name}: unreadable filters ({e!r})") from None
    return out


def open_sources(files: list[str], symbol: str | None, fmt: str | None, extra_symbols: str | None, warn):
    """(symbol table, sources) for the inputs; the table covers every symbol the inputs name (ids by name)."""
    from aegis.binance import symbols as S
    kinds = []
    names: set[str] = set()
    parts = {f: store.partition_of(f) for f in files}
    for f in files:
        if parts[f] is not None:
            kinds.append("store")
            names.add(parts[f].symbol)
        elif _looks_like_recording(f):
            kinds.append("rec")
            names |= recording_symbols(f)
        else:
            kinds.append("csv")
            sym, _ = symbol_and_format_from_name(f)
            sym = sym or symbol
            if sym is None:
                raise InputError(f"{f}: cannot tell the symbol from the file name (expected "
                                 f"SYMBOL-bookTicker-DATE.csv or SYMBOL-aggTrades-DATE.csv); give it with --symbol")
            names.add(sym.upper())
    if extra_symbols:
        names |= {s.strip().upper() for s in extra_symbols.split(",") if s.strip()}
    if not names:
        raise InputError("no symbol found in the inputs (recordings without market data?)")
    builtin = {n: (t, s) for n, t, s in S.BUILTIN_SYMBOLS}
    try:
        table = S.SymbolTable.build([(n, *builtin.get(n, ("0.00000001", "0.00000001"))) for n in sorted(names)],
                                    "replay")
    except ValueError as e:
        raise InputError(str(e)) from None
    sources = []
    for f, kind in zip(files, kinds):
        if kind == "store":
            sources.append(store.StoreSource(parts[f], table.id_of(parts[f].symbol)))
        elif kind == "rec":
            sources.append(RecordingSource(f, table, warn))
        else:
            sym, _ = symbol_and_format_from_name(f)
            sym = (sym or symbol).upper()
            src = CsvSource(f, table.id_of(sym), sym, fmt, MERGE_CHUNK_BYTES, warn)
            sources.append(src)
    return table, sources


def _recorded_rules(sources, table, warn) -> list | None:
    """Exchange filters carried by the recordings among the sources (the last file's wins per symbol), and by the
    store partitions imported from recordings (their manifest keeps the recording's rows)."""
    rows = {}
    recs = []
    for src in sources:
        if isinstance(src, RecordingSource):
            recs.append(src)
            info, _ = recording_meta(src.path)
            if info:
                rows.update({r.get("symbol"): r for r in info.get("symbols", []) if isinstance(r, dict)})
        elif isinstance(src, store.StoreSource):
            got, from_rec = store.recorded_filters([src.part])
            rows.update(got)
            if from_rec:
                recs.append(src)
    if not rows:
        if recs:
            warn("replay: the recordings carry no exchange filters (recorded, or imported into the store, before "
                 "they did); orders are sized with lenient built-in filters, give --exchange-info FILE for the real "
                 "ones")
        return None
    return rules_from_exchange_info({"symbols": list(rows.values())}, table, "recording")


class Progress:
    """A rate-limited progress line on stderr (bytes of input consumed; records/s)."""

    def __init__(self, sources, enabled: bool, interval: float = 0.5):
        self.sources = sources
        self.enabled = enabled
        self.interval = interval
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self, records: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        done = total = 0
        for s in self.sources:
            d, t = s.progress()
            done += d
            total += t
        frac = done / total if total else 0.0
        el = now - self.t0
        rate = records / el if el > 0 else 0.0
        eta = (el / frac - el) if frac > 0.01 else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\rreplay [{bar:<30}] {frac * 100:5.1f}%  {records / 1e6:8.2f} M records  "
                         f"{rate / 1e6:6.2f} M/s  ETA {eta:5.0f} s ")
        sys.stderr.flush()
        self.shown = True

    def close(self, records: int) -> None:
        if self.enabled:
            self.update(records, force=True)
            if self.shown:
                sys.stderr.write("\n")


def run(files: list[str], cfg: ReplayConfig, symbol=None, fmt=None, extra_symbols=None, exchange_info=None,
        warn=None, make_sink=metrics.Collector) -> dict:
    """Replay files with cfg; writes the output files (none when cfg.out_dir is empty: a sweep's trials only want the
    summary) and returns the summary dict. make_sink(names, sample_ns, out_dir) builds the metrics.Collector, for
    a caller that wants it afterwards (e.g. its equity curve)."""
    warn = warn or (lambda m: print(m, file=sys.stderr))
    table, sources = open_sources(expand_inputs(files), symbol, fmt, extra_symbols, warn)
    rules = _exchange_rules(exchange_info, table) if exchange_info else _recorded_rules(sources, table, warn)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    try:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create output directory ({e.strerror or e})") from None
    sink = make_sink(table.names, cfg.sim.sample_ns, out_dir)
    try:
        return _run(sources, table, cfg, rules, sink, warn)
    except BaseException:
        # a failure after the output files were started (a store partition's checksum is only known once the
        # partition has been replayed, Ctrl-C, a bad row in a CSV): nothing may be left that looks like a result
        sink.discard()
        raise


def _run(sources, table, cfg: ReplayConfig, rules, sink, warn) -> dict:
    core = ReplayCore(table, cfg, rules, sink)
    learn.start_run(cfg.strategy, core.bs.strat.state, table.names, cfg.model_in, warn)   # online strategy: --model
    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    prog = Progress(sources, show)
    batches = feed_batches(sources)
    wall0 = time.monotonic()
    sim0 = None
    # as the engine processes do for their hot loops: everything allocated so far (numba's and numpy's large object
    # graphs) is frozen out of the cyclic GC, whose full traversals would otherwise cost more than the replay core.
    # No gc.collect() first: it took 0.2 s a replay, and what it would free is unfrozen (and collected) at the end
    gc.freeze()
    try:
        for batch, lanes in batches:
            if cfg.realtime:
                sim0 = _pace(core, batch, lanes, sim0, wall0, prog)
            else:
                core.feed(batch, lanes)
            prog.update(int(core.stats[S_RECORDS]))
        core.finish()
    finally:
        gc.unfreeze()
        prog.close(int(core.stats[S_RECORDS]))
        sink.close()
    inputs = []
    for s in sources:
        st = getattr(s, "stats", None)
        if st is not None:
            inputs.append({"file": s.path, "rows": st.rows, "bad_rows": st.bad_rows, "out_of_order": st.backwards})
        else:
            inputs.append({"file": s.path, "rows": s.rows, "bad_lines": s.bad_lines,
                           "parse_problems": dict(sorted(s.parse_problems.items()))})
    counts = {"records": int(core.stats[S_RECORDS]), "signals": int(core.stats[S_SIGNALS]),
              "signals_held_after_refusal": int(core.stats[S_HELD]),
              "orders_accepted": int(core.stats[S_ORDERS]), "orders_refused_by_risk": int(core.stats[S_REFUSED]),
              "halt_requests": int(core.stats[S_HALT_REQUESTS])}
    summary = sink.summary(core.sim, core.riskbook, counts, inputs, cfg)
    # online strategy: prequential metrics, --save-model
    model = learn.end_run(cfg.strategy, core.bs.strat.state, table.names, cfg.model_out)
    if model is not None:
        summary["model"] = model
    sink.write_summary(summary)
    return summary


def _pace(core: ReplayCore, batch: np.ndarray, lanes, sim0, wall0, prog) -> int:
    """Feed batch in slices so that replay time tracks wall time since the start."""
    t = batch["recv_ts"]
    if sim0 is None:
        sim0 = int(t[0])
    i = 0
    n = len(batch)
    while i < n:
        due = sim0 + int((time.monotonic() - wall0) * 1e9)
        j = int(np.searchsorted(t, due, side="right"))
        if j > i:
            core.feed(batch[i:j], lanes)
            i = j
            prog.update(int(core.stats[S_RECORDS]))
        else:
            time.sleep(min(0.05, max(0.0, (int(t[i]) - due) / 1e9)))
    return sim0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.monotonic()
    try:
        args = build_parser().parse_args(argv)
        cfg = configure(args)
        summary = run(args.files, cfg, args.symbol, args.format, args.symbols, args.exchange_info)
    except (ConfigError, InputError) as e:
        return usage_error("python -m aegis replay", str(e))
    except KeyboardInterrupt:
        print("aegis replay: interrupted", file=sys.stderr)
        return 130
    sys.stdout.write(metrics.format_summary(summary))
    el = time.monotonic() - t0
    n = summary["counts"]["records"]
    print(f"replay: {n} records in {el:.2f} s ({n / el / 1e6 if el > 0 else 0:.2f} M records/s incl. start-up); "
          f"output in {cfg.out_dir}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
