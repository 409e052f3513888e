"""`python -m aegis replay FILES... --strategy NAME`: backtest on recorded or Binance public data, through the
live path.

Pipeline (one process, no threads):

  sources (one per file, each an iterator of MARKET_DTYPE chunks in non-decreasing replay time)
    -> k-way merge (heap over the sources keyed by the last time of their buffered chunk)
    -> replay core, ONE jitted call per merged batch; per ring batch of RING_BATCH records, the steps of
       aegis.brain.process.process_batch with the same kernels:
         aegis.core.ring.write_batch / read_batch on an in-process ring (plain numpy arrays)
         aegis.trade.risk.on_market_batch -> per record: aegis.brain.strategy.sync_symbol (actual position / open orders from
         risk) -> aegis.brain.strategy.run_range over that record -> aegis.replay.simexec.on_market -> if it signalled:
         aegis.brain.process.signal_to_request -> aegis.trade.risk.check -> aegis.replay.simexec.submit (instead of the sender) and
         aegis.brain.strategy.accepted, or aegis.brain.strategy.revert when risk refuses; the simulated exchange has seen
         every record up to the trigger when the order is sent. Every
         fill / final order state goes back through aegis.trade.risk.on_fill as live fills do (immediately, in simulated
         time); risk's HALTED state produces its cancel-all / flatten requests after the batch, as in the Brain.
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
from numba import njit

from aegis.replay import metrics
from aegis.core import ring
from aegis.trade import risk
from aegis.replay import simexec
from aegis.replay import store
from aegis.brain import strategy
from aegis.brain.process import BrainConfig, signal_to_request, unit_size
from aegis.core.config import ConfigError
from aegis.replay.csvimport import RAW_DTYPE, CsvSource, InputError, concat, symbol_and_format_from_name
from aegis.core.records import MARKET_DTYPE, ORDER_REQUEST_DTYPE, SIGNAL_DTYPE
from aegis.replay.simexec import C_ACTIVE, C_DONE, C_EQ, C_FILLS, SimConfig, SimExchange
from aegis.core.wait import BUSY_SPIN

RING_BATCH = 1024            # records per ring write/read, as the Brain's batch
RING_CAPACITY = 1 << 13
MERGE_CHUNK_BYTES = 1 << 20  # per CSV source block: ~14 k quotes; memory ~ (files x 2 MB)
REC_PREFIX_SCAN_LINES = 100_000
DEFAULT_OUT = "replay-out"


# =============================================================================================== jitted core
@njit(cache=True, nogil=True)
def _fills_to_risk(rsym, rg, rgf, roo, rrates, rrejlog, fills, f0, f1, now):
    for f in range(f0, f1):
        risk.on_fill(rsym, rg, rgf, roo, rrates, rrejlog, fills[f], now)


@njit(cache=True, nogil=True)
def _send(req, now, rsym, rg, rgf, roo, rrates, rrejlog, book, acct, act_i, act_f, log_i, log_f, fills, eq_ts,
          eq_val, ctr, params, lat_cum, lat_lo, lat_hi, rng, stats):
    rc = risk.check(rsym, rg, rgf, roo, rrates, rrejlog, req, now)
    if rc == 0:
        stats[ST_ACCEPTED] += 1
        f0 = ctr[C_FILLS]
        req.handoff_ts = now
        simexec.submit(req, now, book, acct, act_i, act_f, log_i, log_f, fills, eq_ts, eq_val, ctr, params,
                       lat_cum, lat_lo, lat_hi, rng)
        _fills_to_risk(rsym, rg, rgf, roo, rrates, rrejlog, fills, f0, ctr[C_FILLS], now)
    else:
        stats[ST_REFUSED] += 1
        simexec.log_refused(req, now, rc, log_i, log_f, ctr)
    return rc


ST_RECORDS, ST_SIGNALS, ST_ACCEPTED, ST_REFUSED, ST_HALT_REQUESTS, ST_HELD = range(6)
ST_LEN = 8


@njit(cache=True, nogil=True)
def run_core(src, n, start, rh, rrec, dst, sid, sparams, sstate, sigs, req, hreq, holdoff, retry_ns, unit_qty,
             unit_notional,
             rsym, rg, rgf, roo, rrates, rrejlog,
             book, acct, act_i, act_f, log_i, log_f, fills, eq_ts, eq_val, ctr, params, lat_cum, lat_lo, lat_hi, rng,
             stats):
    """Replay src[start:n]; returns how far it got (< n when an output buffer must be drained first)."""
    i0 = start
    batch = dst.shape[0]
    need = 2 * batch + hreq.shape[0] + 8
    while i0 < n:
        na = ctr[C_ACTIVE]
        if fills.shape[0] - ctr[C_FILLS] < na + need or log_i.shape[0] - ctr[C_DONE] < na + need \
                or eq_ts.shape[0] - ctr[C_EQ] < batch + 2 or act_i.shape[0] - na < batch + hreq.shape[0] + 1:
            return i0
        m = n - i0
        if m > batch:
            m = batch
        ring.write_batch(rh, rrec, src[i0:i0 + m], m, ring.POLICY_WAIT, BUSY_SPIN)
        got = ring.read_batch(rh, rrec, dst, batch)
        now = dst[got - 1].recv_ts
        stats[ST_RECORDS] += got
        risk.on_market_batch(rsym, rg, rgf, roo, rrates, rrejlog, dst, got, now)
        # the Brain's order (aegis.brain.process.process_batch), one record at a time: the strategy sees the record with
        # the actual position / open orders of its symbol (strategy.sync_symbol: simulated fills land between
        # records, as live fills land between the Brain's batches), then the simulated exchange sees the record,
        # then the record's signal (if any) is risk checked and sent -- or reverted in the strategy when refused
        # A strategy that does not track positions (ema_cross) reads nothing from risk between records, so it runs
        # over the batch up to its next signal in one call (same outcome, far fewer calls per tick).
        tracked = strategy.tracks_positions(sid)
        i = 0
        while i < got:
            if tracked:
                strategy.sync_symbol(sid, sparams, sstate, rsym, unit_qty, dst[i].symbol)
                k, i2 = strategy.run_range(sid, sparams, sstate, dst, i, i + 1, sigs, 1)
            else:
                k, i2 = strategy.run_range(sid, sparams, sstate, dst, i, got, sigs, 1)
            for q in range(i, i2):
                r = dst[q]
                if not simexec.quick_market(r, book, ctr):
                    f0 = ctr[C_FILLS]
                    simexec.on_market(r, book, acct, act_i, act_f, log_i, log_f, fills, eq_ts, eq_val, ctr, params,
                                      lat_cum, lat_lo, lat_hi, rng)
                    if ctr[C_FILLS] > f0:
                        _fills_to_risk(rsym, rg, rgf, roo, rrates, rrejlog, fills, f0, ctr[C_FILLS], r.recv_ts)
            i = i2
            if k == 0:
                continue
            sig = sigs[0]
            t = sig.recv_ts
            s = sig.symbol
            if t < holdoff[s]:   # the Brain's hold-off after a refusal: forget the signal, no risk check
                strategy.revert(sid, sparams, sstate, sig)
                stats[ST_HELD] += 1
                continue
            stats[ST_SIGNALS] += 1
            signal_to_request(sig, req, t, t, unit_size(rsym, s, unit_qty, unit_notional, sig.price))
            rc = _send(req, t, rsym, rg, rgf, roo, rrates, rrejlog, book, acct, act_i, act_f, log_i, log_f,
                       fills, eq_ts, eq_val, ctr, params, lat_cum, lat_lo, lat_hi, rng, stats)
            if rc != 0:
                strategy.revert(sid, sparams, sstate, sig)
                holdoff[s] = t + retry_ns
            else:
                strategy.accepted(sid, sparams, sstate, sig, req.client_id)
        if rg[risk.G_HALT_PENDING] != 0:  # the Brain's housekeeping step: cancel-all / flatten after a halt
            nh = risk.halt_requests(rsym, rg, rgf, roo, rrates, rrejlog, hreq, now)
            stats[ST_HALT_REQUESTS] += nh
            for h in range(nh):
                _send(hreq[h], now, rsym, rg, rgf, roo, rrates, rrejlog, book, acct, act_i, act_f, log_i, log_f,
                      fills, eq_ts, eq_val, ctr, params, lat_cum, lat_lo, lat_hi, rng, stats)
        i0 += m
    return i0


# =============================================================================================== sources
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
        parser = parse.Parser(self.table, book.BookState(len(self.table)), out_cap=1 << 15)
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


def symbol_rules(table) -> list:
    """Exchange filters per symbol for risk: the built-in table's tick/step for the majors, lenient otherwise (a
    public-data replay has no exchangeInfo; --exchange-info FILE gives the real ones)."""
    out = []
    for info in table:
        out.append(risk.SymbolRules(symbol=info.name, tick_size=info.tick_size, step_size=info.step_size,
                                    market_step_size=info.step_size, min_qty=info.step_size,
                                    market_min_qty=info.step_size, min_notional="0"))
    return out


class ReplayCore:
    """The live path's kernels and state for one replay (strategy, risk, simulated exchange, in-process ring)."""

    def __init__(self, table, cfg: ReplayConfig, rules: list | None = None, sink=None):
        n = len(table)
        self.table = table
        self.cfg = cfg
        self.header = np.zeros(ring.HEADER_SLOTS, np.int64)
        ring.init_header(self.header, RING_CAPACITY, MARKET_DTYPE.itemsize)
        self.ring_records = np.zeros(RING_CAPACITY, MARKET_DTYPE)
        self.dst = np.zeros(RING_BATCH, MARKET_DTYPE)
        self.sparams = cfg.strategy.array()
        self.sstate = strategy.make_state(cfg.strategy.id, n, self.sparams)
        self.sigs = np.zeros(RING_BATCH, SIGNAL_DTYPE)
        self.req = np.zeros(1, ORDER_REQUEST_DTYPE)[0:1]
        self.hreq = np.zeros(2 * n + 2, ORDER_REQUEST_DTYPE)
        self.riskbook = risk.RiskBook(cfg.risk, rules if rules is not None else symbol_rules(table))
        self.sim = SimExchange(n, cfg.sim, max_active=risk.MAX_OPEN + 4 * RING_BATCH, fill_cap=1 << 15,
                               log_cap=1 << 15, eq_cap=1 << 15)
        self.stats = np.zeros(ST_LEN, np.int64)
        # the Brain's per-symbol sizing and refusal hold-off ([brain] unit_notional, retry_ms), in simulated time
        self.retry_ns = int(cfg.brain.retry_ms * 1e6)
        self.unit_notional = float(cfg.brain.unit_notional)
        self.holdoff = np.zeros(n, np.int64)
        self.unit_qty = np.zeros(n, np.float64)
        self.sink = sink if sink is not None else metrics.Collector(table.names, cfg.sim.sample_ns)

    def feed(self, recs: np.ndarray) -> None:
        n = len(recs)
        i = 0
        sim = self.sim
        rb = self.riskbook
        while i < n:
            before = i
            i = run_core(recs, n, i, self.header, self.ring_records, self.dst, self.cfg.strategy.id, self.sparams,
                         self.sstate, self.sigs, self.req[0], self.hreq, self.holdoff, self.retry_ns, self.unit_qty,
                         self.unit_notional, rb.sym, rb.g, rb.gf, rb.oo, rb.rates,
                         rb.rejlog, *sim.arrays, self.stats)
            self.drain()
            if i == before:   # drained buffers and still no room: only the active-order table can be full
                raise RuntimeError(f"simulated exchange: {int(self.sim.ctr[C_ACTIVE])} orders open or in flight, "
                                   f"more than the table holds ({self.sim.act_i.shape[0]})")

    def drain(self) -> None:
        sim = self.sim
        if sim.ctr[C_FILLS]:
            self.sink.fills(sim.drain_fills())
        if sim.ctr[C_DONE]:
            self.sink.orders(*sim.drain_log())
        if sim.ctr[C_EQ]:
            self.sink.equity(*sim.drain_equity())

    def finish(self) -> None:
        self.drain()
        simexec.finish_open(*self.sim.arrays)
        f = self.sim.drain_fills()
        rb = self.riskbook
        for k in range(len(f)):
            risk.on_fill(*rb.arrays, f[k], int(self.sim.ctr[simexec.C_NOW]))
        self.sink.fills(f)
        self.drain()


# =============================================================================================== CLI
def _duration_ns(text: str) -> int:
    """'250us', '2ms', '1.5s', '800' (ns)."""
    t = text.strip().lower()
    for suffix, mult in (("ns", 1), ("us", 1_000), ("µs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    else:
        mult = 1
    try:
        v = float(t)
    except ValueError:
        raise ConfigError(f"bad duration {text!r} (use e.g. 800, 250us, 2ms, 0.5s)") from None
    if v < 0 or v != v:
        raise ConfigError(f"duration must be >= 0, got {text!r}")
    return int(round(v * mult))


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


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a user mistake is one line and exit 2, not a usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m aegis replay",
                description="Backtest a strategy on Feed recordings (.jsonl.gz) and Binance public-data CSV files "
                            "(USD-M futures bookTicker / aggTrades, .csv or .zip) through the live "
                            "ring -> strategy -> risk path with simulated execution.")
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
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--max-speed", dest="realtime", action="store_false", help="as fast as possible (default)")
    speed.add_argument("--realtime", dest="realtime", action="store_true", help="pace the replay at real time")
    p.set_defaults(realtime=None)
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return p


REPLAY_KEYS = {"slippage_bps", "latency", "latency_hist", "latency_stage", "seed", "maker_fee", "taker_fee", "sample",
               "out", "realtime"}


def configure(args) -> ReplayConfig:
    """Options -> ReplayConfig (CLI over the config file's tables over defaults); ConfigError on bad values."""
    from aegis.core import config as C
    eng = C.load(args.config) if args.config else C.EngineConfig()
    rep = eng.section("replay")
    unknown = set(rep) - REPLAY_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) in [replay]: {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(REPLAY_KEYS))})")

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
    return ReplayConfig(scfg, sim, rcfg, str(out), bcfg, realtime, args.progress)


def _exchange_rules(path: str, table) -> list:
    import orjson
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read exchangeInfo JSON ({e})") from None
    rows = {r.get("symbol"): r for r in data.get("symbols", [])} if isinstance(data, dict) else {}
    out = []
    defaults = symbol_rules(table)
    for info, d in zip(table, defaults):
        row = rows.get(info.name)
        try:
            out.append(risk.SymbolRules.from_exchange_info(row) if row else d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{path}: symbol {info.name}: unreadable filters ({e!r})") from None
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
    rules = _exchange_rules(exchange_info, table) if exchange_info else None
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    try:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create output directory ({e.strerror or e})") from None
    sink = make_sink(table.names, cfg.sim.sample_ns, out_dir)
    core = ReplayCore(table, cfg, rules, sink)
    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    prog = Progress(sources, show)
    merger = Merger(sources)
    wall0 = time.monotonic()
    sim0 = None
    # as the engine processes do for their hot loops: everything allocated so far (numba's and numpy's large object
    # graphs) is frozen out of the cyclic GC, whose full traversals would otherwise cost more than the replay core
    gc.collect()
    gc.freeze()
    try:
        for batch in merger.batches():
            if cfg.realtime:
                sim0 = _pace(core, batch, sim0, wall0, prog)
            else:
                core.feed(batch)
            prog.update(int(core.stats[ST_RECORDS]))
        core.finish()
    finally:
        gc.unfreeze()
        prog.close(int(core.stats[ST_RECORDS]))
        sink.close()
    inputs = []
    for s in sources:
        st = getattr(s, "stats", None)
        if st is not None:
            inputs.append({"file": s.path, "rows": st.rows, "bad_rows": st.bad_rows, "out_of_order": st.backwards})
        else:
            inputs.append({"file": s.path, "rows": s.rows, "bad_lines": s.bad_lines,
                           "parse_problems": dict(sorted(s.parse_problems.items()))})
    counts = {"records": int(core.stats[ST_RECORDS]), "signals": int(core.stats[ST_SIGNALS]),
              "signals_held_after_refusal": int(core.stats[ST_HELD]),
              "orders_accepted": int(core.stats[ST_ACCEPTED]), "orders_refused_by_risk": int(core.stats[ST_REFUSED]),
              "halt_requests": int(core.stats[ST_HALT_REQUESTS])}
    summary = sink.summary(core.sim, core.riskbook, counts, inputs, cfg)
    sink.write_summary(summary)
    return summary


def _pace(core: ReplayCore, batch: np.ndarray, sim0, wall0, prog) -> int:
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
            core.feed(batch[i:j])
            i = j
            prog.update(int(core.stats[ST_RECORDS]))
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
    except (ConfigError, InputError, risk.RiskConfigError) as e:
        print(f"aegis replay: error: {e}", file=sys.stderr)
        return 2
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
