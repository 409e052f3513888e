"""Market generator of the embedded venue: per-symbol L2 books, update ids, real-time and aggregated streams.

The model (per TRADING symbol, integer ticks and step units): a ladder of price levels within `depth` ticks of
the best prices; each engine event is a trade at the best (aggressor side random, trending in bursts), a price
improvement / best-level pull, or a quantity change at a geometric distance from the top. Symbols switch between
calm / normal / burst regimes; bursts are 5x more active and trend. Update ids are per symbol and monotone; each
event consumes one id per visible level change, plus a random gap of invisible ids (docs/binance-notes.md, Local order
book: U - pu > 1 mostly). Update ids start around 1e13 like Binance's (exact in a double: clients that read JSON numbers
as doubles keep them); optionally some symbols use aggregate/trade ids above 2**53 to catch float-parsing clients
(big_ids_every).

Published output is a Chunk: encoded JSON payloads plus a stream id per message; the streams hub frames them per
connection. The generator only encodes the streams somebody subscribed to.
"""
from __future__ import annotations

import collections
import gzip
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, NamedTuple

import numpy as np
import orjson

from . import _mdkernels as K

LADDER_WIDTH = 4096
BIG_ID_BASE = 2**53 + 12345  # ids above 2**53 (exact in int64, not in float64)
KLINE_HISTORY = 1500         # closed candles kept per symbol and interval (the most one klines request returns)
PRICE_HISTORY = 1500         # closed 1m mark / index candles kept per symbol
FUNDING_INTERVAL_MS = 8 * 3_600_000
INTEREST_RATE = 0.0001       # per funding period, as on Binance USD-M
FUNDING_CAP = 0.02


_DEPTH_KINDS = (K.K_DEPTH0, K.K_DEPTH100, K.K_DEPTH250, K.K_DEPTH500) + tuple(K.K_PART + j for j in range(9))


def _index_of(mid, now: int, i):
    """The synthetic index (scalars or arrays): the mid, off by a slowly oscillating basis of up to 2 bp."""
    return mid * (1.0 - 0.0002 * np.sin(now / 7000.0 + i))


def _window(rows: list, start: int | None, end: int | None, limit: int, key) -> list:
    """Binance's time-window rule: rows with start <= key <= end; the first `limit` after startTime, else the
    last `limit`."""
    if start is not None:
        rows = [r for r in rows if key(r) >= start]
    if end is not None:
        rows = [r for r in rows if key(r) <= end]
    return rows[:limit] if start is not None else rows[-limit:] if limit else []


class Chunk(NamedTuple):
    buf: np.ndarray   # uint8 payload bytes
    off: np.ndarray   # int64 offsets
    ln: np.ndarray    # int64 lengths
    sid: np.ndarray   # int64 stream ids
    n: int


def chunk_from_payloads(items: list[tuple[int, bytes]]) -> Chunk:
    """Chunk from (stream id, payload bytes) pairs (low-rate Python-side messages, replay)."""
    n = len(items)
    lens = np.fromiter((len(p) for _, p in items), dtype=np.int64, count=n)
    off = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(lens[:-1], out=off[1:])
    buf = np.frombuffer(b"".join(p for _, p in items), dtype=np.uint8)
    sid = np.fromiter((s for s, _ in items), dtype=np.int64, count=n)
    return Chunk(buf, off, lens, sid, n)


def concat_chunks(parts: list[Chunk]) -> Chunk:
    parts = [p for p in parts if p.n]
    if not parts:
        return Chunk(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    offs, shift = [], 0
    for p in parts:
        offs.append(p.off + shift)
        shift += int(p.buf.shape[0])
    return Chunk(np.concatenate([p.buf for p in parts]), np.concatenate(offs), np.concatenate([p.ln for p in parts]),
                 np.concatenate([p.sid for p in parts]), sum(p.n for p in parts))


def _decimals(s: str) -> int:
    d = Decimal(s).normalize()
    return max(0, -d.as_tuple().exponent)


@dataclass(frozen=True)
class MarketConfig:
    rate: float = 200.0            # average engine events per second over all symbols
    seed: int = 1
    depth: int = 400               # levels are kept within this many ticks of the best
    bursts: bool = True
    tick_interval_s: float = 0.005  # generator loop period
    level_notional: float = 3000.0  # typical quote notional per level (sets step-unit quantities)
    big_ids_every: int = 0         # every n-th symbol uses agg / trade ids above 2**53 (0 = never)
    # add the 2026 "st" (1 = UM) / "ps" (pair) fields (docs/binance-notes.md, Stream payloads)
    fields_2026: bool = False


class Market:
    """Books + generator. Thread-safe: the generator thread and REST / exchange callers share `lock`."""

    def __init__(self, catalog, cfg: MarketConfig | None = None):
        self.cfg = cfg or MarketConfig()
        self.catalog = tuple(catalog)
        self.symbols = [s.symbol for s in self.catalog]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.specs = {s.symbol: s for s in self.catalog}
        S, W = len(self.catalog), LADDER_WIDTH
        self.S, self.W = S, W
        self.lock = threading.RLock()
        self.depth = max(4, min(self.cfg.depth, W // 8))  # recentering needs 2*depth of margin on both sides
        self.pdec = np.array([max(sp.price_precision, _decimals(sp.tick_size)) for sp in self.catalog], np.int64)
        self.qdec = np.array([max(sp.quantity_precision, _decimals(sp.step_size)) for sp in self.catalog], np.int64)
        self.tick_units = np.array([int(Decimal(sp.tick_size) * (10 ** int(self.pdec[i])))
                                    for i, sp in enumerate(self.catalog)], np.int64)
        self.tick_f = np.array([float(Decimal(sp.tick_size)) for sp in self.catalog])
        self.step_f = np.array([float(Decimal(sp.step_size)) for sp in self.catalog])
        start_tick = np.array([max(self.depth + 10, round(sp.base_price / float(Decimal(sp.tick_size))))
                               for sp in self.catalog], np.int64)
        self.qbase = np.array([max(1.0, self.cfg.level_notional / max(sp.base_price, 1e-12) / self.step_f[i])
                               for i, sp in enumerate(self.catalog)])
        weights = np.array([sp.daily_volume_quote if sp.status == "TRADING" else 0.0 for sp in self.catalog])
        if S and weights.sum() <= 0:
            weights[:] = 1.0
        self.weights = weights / max(weights.sum(), 1e-300)
        names = [sp.symbol.encode("utf-8") for sp in self.catalog]
        self.sym_buf = np.frombuffer(b"".join(names) or b"\0", np.uint8).copy()
        self.sym_len = np.array([len(n) for n in names], np.int64)
        self.sym_off = np.zeros(S, np.int64)
        if S:
            np.cumsum(self.sym_len[:-1], out=self.sym_off[1:])
        # payload tails inserted before the closing brace: [s, 0] bookTicker/depth (st + ps), [s, 1] aggTrade (st)
        tails = []
        for sp in self.catalog:
            if self.cfg.fields_2026:
                tails.append((b',"st":1,"ps":"' + sp.pair.encode("utf-8") + b'"', b',"st":1'))
            else:
                tails.append((b"", b""))
        flat = [t for pair in tails for t in pair]
        self.tail_len = np.array([len(t) for t in flat], np.int64).reshape(S, 2)
        offs = np.zeros(len(flat), np.int64)
        if flat:
            np.cumsum(np.array([len(t) for t in flat[:-1]], np.int64), out=offs[1:])
        self.tail_off = offs.reshape(S, 2) if S else np.zeros((0, 2), np.int64)
        self.tail_buf = np.frombuffer(b"".join(flat) or b"\0", np.uint8).copy()
        # book state
        self.base = np.zeros(S, np.int64)
        self.bidq = np.zeros((S, W), np.int64)
        self.askq = np.zeros((S, W), np.int64)
        self.bb = np.zeros(S, np.int64)
        self.ba = np.zeros(S, np.int64)
        self.regime = np.ones(S, np.int64)
        self.trend = np.ones(S, np.int64)
        self.flags = np.zeros((3, S, 2, W), np.uint8)
        self.win_U = np.zeros((3, S), np.int64)
        self.track = np.zeros((3, S), np.bool_)
        self.pu = np.zeros((K.N_KINDS, S), np.int64)
        self.tr_ring = np.zeros((max(S, 1), K.TRADE_RING, K.TR_FIELDS), np.int64)
        self.tr_head = np.zeros(max(S, 1), np.int64)
        rng = np.random.default_rng(self.cfg.seed)
        big = np.array([self.cfg.big_ids_every > 0 and i % self.cfg.big_ids_every == self.cfg.big_ids_every - 1
                        for i in range(S)])
        self.next_id = (10**13 + rng.integers(0, 10**12, S)).astype(np.int64)
        self.last_u = self.next_id - 1
        # the first message of every depth stream carries the book's previous id in pu, as Binance's does
        self.pu[:] = self.last_u[None, :]
        self.agg_id = np.where(big, BIG_ID_BASE + rng.integers(0, 10**9, S),
                               rng.integers(10**9, 4 * 10**9, S)).astype(np.int64)
        self.trade_id = (self.agg_id * 2 + rng.integers(0, 10**6, S)).astype(np.int64) if S else self.agg_id.copy()
        self.trade_id = np.where(big, self.agg_id + 10**9, self.trade_id).astype(np.int64)
        self.touched = np.zeros(S, np.bool_)
        self.sid_base = np.arange(S, dtype=np.int64) * K.N_KINDS
        self.n_sym_sids = S * K.N_KINDS
        # stream wants (set by the hub); sized to the symbol streams only
        self.want = np.zeros(max(self.n_sym_sids, 1), np.bool_)
        self._pending_want: np.ndarray | None = None
        self.skew_ms = 0
        self.events = 0
        self.errors = 0  # exceptions caught (and printed) by the generator thread
        self.sink: Callable[[Chunk], None] | None = None
        self._tick_listeners: list[Callable] = []
        self._mark_ma = np.zeros(S)
        with self.lock:
            K.seed_rng(int(self.cfg.seed))
            K.init_books(self.base, self.bidq, self.askq, self.bb, self.ba, start_tick, self.qbase, self.depth, 0.7)
        for i in range(S):
            mid = self._mid(i)
            self._mark_ma[i] = mid
        self._cumw = np.cumsum(self.weights)
        self._drive: dict[int, int] = {}
        self._ev_cap = 0
        self._ev_buf = np.zeros(1, np.uint8)
        self._fl_buf = np.zeros(max(S, 1) * 16_384, np.uint8)
        self._fl_off = np.zeros(max(S, 1) * 4, np.int64)
        self._fl_len = np.zeros(max(S, 1) * 4, np.int64)
        self._fl_sid = np.zeros(max(S, 1) * 4, np.int64)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._rate = float(self.cfg.rate)
        self._status = np.zeros(1, np.int64)
        # klines: [field, interval, symbol]; a candle with no trade yet has n == 0 and o=h=l=c = previous close
        NI = len(K.KLINE_INTERVALS)
        self.kl = np.zeros((K.KL_FIELDS, NI + 1, S), np.int64)
        self.klq = np.zeros((2, NI + 1, S), np.float64)  # quote volume, taker-buy quote volume (price units * qty units)
        mid_tick = (self.bb + self.ba) // 2
        for f in (K.KL_O, K.KL_H, K.KL_L, K.KL_C):
            self.kl[f] = mid_tick
        self.kl[K.KL_F] = -1
        self.kl[K.KL_LAST] = -1
        now0 = int(time.time() * 1000)
        for iv in range(NI):
            self.kl[K.KL_OPEN_T, iv] = kline_open_time(K.KLINE_INTERVALS[iv], now0)
        self.kl[K.KL_OPEN_T, NI] = now0
        self.kl_hist = [[collections.deque(maxlen=KLINE_HISTORY) for _ in range(S)] for _ in range(NI)]
        # 1m mark (0) and index (1) candles: [kind][o, h, l, c, samples][symbol], sampled once a second
        self.pk = np.zeros((2, 5, max(S, 1)))
        self.pk_open = np.zeros(max(S, 1), np.int64)
        self.pk_hist = [[collections.deque(maxlen=PRICE_HISTORY) for _ in range(S)] for _ in range(2)]
        self.funding_interval_ms = FUNDING_INTERVAL_MS
        self._warm_kernels()

    def _warm_kernels(self) -> None:
        # Compile (or load from numba's cache) every kernel now, with the argument types used later: a first
        # compile inside the generator thread would freeze the streams for seconds.
        if self.S == 0:
            return
        self.step(0)
        with self.lock:
            K.gen_events(0, 0, 0, 0, self._cumw, self.base, self.bidq, self.askq, self.bb, self.ba, self.next_id,
                         self.last_u, self.regime, self.trend, self.qbase, self.agg_id, self.trade_id, self.depth,
                         self.flags, self.win_U, self.track, self.want, self.pu, self.sid_base, self.sym_buf,
                         self.sym_off, self.sym_len, self.pdec, self.tick_units, self.qdec, self._ev_buf,
                         np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), self.touched,
                         bool(self.cfg.bursts), self._status, self.kl, self.klq, self.tail_buf, self.tail_off,
                         self.tail_len, self.tr_ring, self.tr_head)
            for k in range(3):
                if not self.win_U[k].any():
                    self.flush(k)
            self._levels_ticks(0, 0, 1)

    # ---- queries (exchange / REST) ----------------------------------------------------------------
    def _mid(self, i: int) -> float:
        return (self.bb[i] + self.ba[i]) * 0.5 * self.tick_f[i]

    def _px(self, i: int, tick: int) -> float:
        return float(Decimal(int(tick * self.tick_units[i])).scaleb(-int(self.pdec[i])))

    def _qty(self, i: int, q: int) -> float:
        return float(Decimal(int(q)).scaleb(-int(self.qdec[i])))

    def price_str(self, symbol: str, tick: int) -> str:
        i = self.index[symbol]
        return f"{Decimal(int(tick * self.tick_units[i])).scaleb(-int(self.pdec[i])):.{int(self.pdec[i])}f}"

    def qty_str(self, symbol: str, q: int) -> str:
        i = self.index[symbol]
        return f"{Decimal(int(q)).scaleb(-int(self.qdec[i])):.{int(self.qdec[i])}f}"

    def best(self, symbol: str) -> tuple[float, float, float, float]:
        i = self.index[symbol]
        with self.lock:
            bb, ba = int(self.bb[i]), int(self.ba[i])
            bq = int(self.bidq[i, bb - self.base[i]])
            aq = int(self.askq[i, ba - self.base[i]])
        return self._px(i, bb), self._qty(i, bq), self._px(i, ba), self._qty(i, aq)

    def _levels_ticks(self, i: int, side: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        n = max(0, int(n))
        ot = np.empty(max(n, 1), np.int64)
        oq = np.empty(max(n, 1), np.int64)
        cnt = K.book_side(i, side, n, self.base, self.bidq, self.askq, self.bb, self.ba, self.depth, ot, oq)
        return ot[:cnt], oq[:cnt]

    def book_levels(self, symbol: str, side: str, n: int) -> list[tuple[float, float]]:
        """side BUY -> the asks a buyer lifts (best first); SELL -> the bids."""
        i = self.index[symbol]
        with self.lock:
            t, q = self._levels_ticks(i, 1 if side.upper() == "BUY" else 0, n)
        return [(self._px(i, a), self._qty(i, b)) for a, b in zip(t.tolist(), q.tolist())]

    def mark_price(self, symbol: str) -> float:
        i = self.index[symbol]
        with self.lock:
            return self._mid(i)

    def last_update_id(self, symbol: str) -> int:
        return int(self.last_u[self.index[symbol]])

    def add_tick_listener(self, fn: Callable[[str, float, float, int], None]) -> None:
        self._tick_listeners.append(fn)

    def book_dict(self, symbol: str) -> tuple[int, dict[str, str], dict[str, str]]:
        """(lastUpdateId, {price: qty} bids, asks) of the whole book, as strings (tests compare against it)."""
        i = self.index[symbol]
        with self.lock:
            bt, bq = self._levels_ticks(i, 0, 10 * self.depth)
            at, aq = self._levels_ticks(i, 1, 10 * self.depth)
            u = int(self.last_u[i])
        return (u, {self.price_str(symbol, t): self.qty_str(symbol, q) for t, q in zip(bt.tolist(), bq.tolist())},
                {self.price_str(symbol, t): self.qty_str(symbol, q) for t, q in zip(at.tolist(), aq.tolist())})

    def depth_snapshot(self, symbol: str, limit: int) -> dict:
        i = self.index[symbol]
        with self.lock:
            bt, bq = self._levels_ticks(i, 0, limit)
            at, aq = self._levels_ticks(i, 1, limit)
            u = int(self.last_u[i])
        now = self.now_ms()
        return {"lastUpdateId": u, "E": now, "T": now - 1,
                "bids": [[self.price_str(symbol, t), self.qty_str(symbol, q)] for t, q in zip(bt.tolist(), bq.tolist())],
                "asks": [[self.price_str(symbol, t), self.qty_str(symbol, q)] for t, q in zip(at.tolist(), aq.tolist())]}

    def book_ticker(self, symbol: str) -> dict:
        i = self.index[symbol]
        with self.lock:
            bb, ba = int(self.bb[i]), int(self.ba[i])
            bq = int(self.bidq[i, bb - self.base[i]])
            aq = int(self.askq[i, ba - self.base[i]])
            u = int(self.last_u[i])
        return {"symbol": symbol, "bidPrice": self.price_str(symbol, bb), "bidQty": self.qty_str(symbol, bq),
                "askPrice": self.price_str(symbol, ba), "askQty": self.qty_str(symbol, aq),
                "time": self.now_ms(), "lastUpdateId": u}

    def ticker_24hr(self, symbol: str) -> dict:
        """Statistics since the venue started (it has no 24 h of history), from the generated trades."""
        i = self.index[symbol]
        iv = K.KL_SINCE_START
        with self.lock:
            k = self.kl[:, iv, i].copy()
            qv = float(self.klq[0, iv, i])
        pd, qd = int(self.pdec[i]), int(self.qdec[i])
        o, last = int(k[K.KL_O]), int(k[K.KL_C])
        vol_units = int(k[K.KL_V])
        quote = qv / 10.0 ** (pd + qd)
        vol = vol_units / 10.0 ** qd
        wavg = quote / vol if vol > 0 else float(self._px(i, last))
        last_px, open_px = self._px(i, last), self._px(i, o)
        change_units = (last - o) * int(self.tick_units[i])
        change = f"{Decimal(change_units).scaleb(-pd):.{pd}f}"
        pct = (last_px - open_px) / open_px * 100 if open_px else 0.0
        now = self.now_ms()
        # live keys come back sorted (docs/binance-notes.md, Exchange information)
        return {"closeTime": now, "count": int(k[K.KL_N]), "firstId": int(k[K.KL_F]),
                "highPrice": self.price_str(symbol, int(k[K.KL_H])), "lastId": int(k[K.KL_LAST]),
                "lastPrice": self.price_str(symbol, last), "lastQty": self.qty_str(symbol, int(k[K.KL_LASTQ])),
                "lowPrice": self.price_str(symbol, int(k[K.KL_L])), "openPrice": self.price_str(symbol, o),
                "openTime": int(k[K.KL_OPEN_T]), "priceChange": change, "priceChangePercent": f"{pct:.3f}",
                "quoteVolume": f"{quote:.2f}", "symbol": symbol, "volume": self.qty_str(symbol, vol_units),
                "weightedAvgPrice": f"{wavg:.{pd}f}"}

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms

    # ---- subscriptions ---------------------------------------------------------------------------
    def set_wants(self, want: np.ndarray) -> None:
        """want[sid] for the symbol stream ids; applied between batches by the generator."""
        w = np.zeros_like(self.want)
        m = min(len(w), len(want))
        w[:m] = want[:m]
        with self.lock:
            self._apply_wants(w)

    def _apply_wants(self, w: np.ndarray) -> None:
        if self.S:
            # a depth stream nobody watched starts its pu chain at the book's current id: the id its previous
            # message would have carried had it been published
            on = (w[: self.n_sym_sids] & ~self.want[: self.n_sym_sids]).reshape(self.S, K.N_KINDS)
            for kind in _DEPTH_KINDS:
                started = on[:, kind]
                if started.any():
                    self.pu[kind, started] = self.last_u[started]
        self.want = w
        per = w[: self.n_sym_sids].reshape(self.S, K.N_KINDS) if self.S else np.zeros((0, K.N_KINDS), bool)
        for k in range(3):
            on = per[:, K.K_DEPTH100 + k].copy()
            for li in range(3):
                on |= per[:, K.K_PART + li * 3 + k]
            turned_off = self.track[k] & ~on
            if turned_off.any():
                # a window that nobody watches any more must not survive into a later subscription
                self.win_U[k, turned_off] = 0
                self.flags[k, turned_off] = 0
            self.track[k] = on

    # ---- generation ------------------------------------------------------------------------------
    def step(self, n: int, t0_ms: int | None = None, t1_ms: int | None = None) -> Chunk:
        """Run n engine events now and return the encoded real-time messages (also used by tests)."""
        now = time.time_ns() // 1_000_000
        t1 = now if t1_ms is None else t1_ms
        t0 = t1 if t0_ms is None else t0_ms
        n = int(n)
        need = n * (2400 + 4 * int(self.sym_len.max(initial=0)))
        if need > self._ev_buf.shape[0]:
            self._ev_buf = np.zeros(need, np.uint8)
        if n * 4 > self._ev_cap:
            self._ev_cap = n * 4
            self._ev_off = np.zeros(self._ev_cap, np.int64)
            self._ev_len = np.zeros(self._ev_cap, np.int64)
            self._ev_sid = np.zeros(self._ev_cap, np.int64)
        if self.S == 0 or n == 0:
            return Chunk(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        parts = []
        with self.lock:
            for i, d in self._drive.items():
                self.regime[i], self.trend[i] = 2, d
            self.touched[:] = False
            remaining, ta = n, t0
            while remaining > 0:
                nmsg = K.gen_events(remaining, ta, t1, int(self.skew_ms), self._cumw, self.base, self.bidq,
                                    self.askq, self.bb, self.ba, self.next_id, self.last_u, self.regime, self.trend,
                                    self.qbase, self.agg_id, self.trade_id, self.depth, self.flags, self.win_U,
                                    self.track, self.want, self.pu, self.sid_base, self.sym_buf, self.sym_off,
                                    self.sym_len, self.pdec, self.tick_units, self.qdec, self._ev_buf, self._ev_off,
                                    self._ev_len, self._ev_sid, self.touched, bool(self.cfg.bursts), self._status,
                                    self.kl, self.klq, self.tail_buf, self.tail_off, self.tail_len,
                                    self.tr_ring, self.tr_head)
                parts.append(self._copy_chunk(self._ev_buf, self._ev_off, self._ev_len, self._ev_sid, nmsg))
                stopped = int(self._status[0])
                if stopped < 0:
                    break
                # a ladder must be recentered: close every open window first (they end a little early)
                ta = ta + (t1 - ta) * stopped // remaining
                remaining -= stopped
                for k in range(3):
                    parts.append(self._flush_locked(k, ta + self.skew_ms))
            self.events += n
            touched = np.flatnonzero(self.touched)
        chunk = parts[0] if len(parts) == 1 else concat_chunks(parts)
        if self._tick_listeners and len(touched):
            ts = t1 + self.skew_ms
            for i in touched.tolist():
                bpx, apx = self._px(i, int(self.bb[i])), self._px(i, int(self.ba[i]))
                for fn in list(self._tick_listeners):
                    fn(self.symbols[i], bpx, apx, ts)
        return chunk

    @staticmethod
    def _copy_chunk(buf, off, ln, sid, n) -> Chunk:
        if n == 0:
            return Chunk(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        end = int(off[n - 1] + ln[n - 1])
        return Chunk(buf[:end].copy(), off[:n].copy(), ln[:n].copy(), sid[:n].copy(), n)

    def flush(self, speed_index: int) -> Chunk:
        """Close the 100/250/500 ms window (speed_index 0/1/2) and return its diff and partial messages."""
        with self.lock:
            return self._flush_locked(speed_index, self.now_ms())

    def _flush_locked(self, speed_index: int, now: int) -> Chunk:
        # worst case: every touched level plus three 20-level pictures per symbol (numba does not bounds-check)
        need = int(self.flags[speed_index].sum()) * 64 + self.S * (3 * 40 * 64 + 1024)
        if need > self._fl_buf.shape[0]:
            self._fl_buf = np.zeros(need, np.uint8)
        n = K.flush_depth(speed_index, now, now - 1, self.base, self.bidq, self.askq, self.bb, self.ba,
                          self.last_u, self.depth, self.flags, self.win_U, self.want, self.pu, self.sid_base,
                          self.sym_buf, self.sym_off, self.sym_len, self.pdec, self.tick_units, self.qdec,
                          self._fl_buf, self._fl_off, self._fl_len, self._fl_sid,
                          self.tail_buf, self.tail_off, self.tail_len)
        return self._copy_chunk(self._fl_buf, self._fl_off, self._fl_len, self._fl_sid, n)

    def kline_messages(self, now: int) -> list[tuple[int, bytes]]:
        """Roll candles whose interval ended (into the REST history; a final x=true message if somebody listens)
        and return the current candle of every wanted kline and continuous-kline stream (the 250 ms push)."""
        out = []
        NI = len(K.KLINE_INTERVALS)
        with self.lock:
            per = self.want[: self.n_sym_sids].reshape(self.S, K.N_KINDS)
            wanted = per[:, K.K_KLINE:K.K_KLINE + NI]
            wanted_c = per[:, K.K_CKLINE:K.K_CKLINE + NI]
            for iv, name in enumerate(K.KLINE_INTERVALS):
                open_now = kline_open_time(name, now)
                rolled = np.flatnonzero(self.kl[K.KL_OPEN_T, iv] < open_now)
                for i in rolled.tolist():
                    row = self._kline_row(i, iv)
                    if wanted[i, iv]:
                        out.append((int(self.sid_base[i] + K.K_KLINE + iv), self._kline_json(i, iv, row, now, True)))
                    if wanted_c[i, iv]:
                        out.append((int(self.sid_base[i] + K.K_CKLINE + iv),
                                    self._ckline_json(i, iv, row, now, True)))
                    hist = self.kl_hist[iv][i]
                    hist.append(row)
                    c = int(self.kl[K.KL_C, iv, i])
                    # intervals without a trade are flat candles at the previous close, as on Binance
                    t = kline_close_time(name, row[0]) + 1
                    gaps = 0
                    while t < open_now and gaps < KLINE_HISTORY:
                        hist.append((t, c, c, c, c, 0, 0, 0, -1, -1, 0.0, 0.0))
                        t = kline_close_time(name, t) + 1
                        gaps += 1
                    self.kl[:, iv, i] = 0
                    self.kl[K.KL_O, iv, i] = self.kl[K.KL_H, iv, i] = self.kl[K.KL_L, iv, i] = c
                    self.kl[K.KL_C, iv, i] = c
                    self.kl[K.KL_F, iv, i] = self.kl[K.KL_LAST, iv, i] = -1
                    self.kl[K.KL_OPEN_T, iv, i] = open_now
                    self.klq[:, iv, i] = 0.0
                for i in np.flatnonzero(wanted[:, iv]).tolist():
                    out.append((int(self.sid_base[i] + K.K_KLINE + iv),
                                self._kline_json(i, iv, self._kline_row(i, iv), now, False)))
                for i in np.flatnonzero(wanted_c[:, iv]).tolist():
                    out.append((int(self.sid_base[i] + K.K_CKLINE + iv),
                                self._ckline_json(i, iv, self._kline_row(i, iv), now, False)))
        return out

    def _kline_row(self, i: int, iv: int) -> tuple:
        """(open time, o, h, l, c ticks, volume units, trades, taker-buy units, first id, last id, quote volume,
        taker-buy quote volume)."""
        k = self.kl[:, iv, i]
        return (int(k[K.KL_OPEN_T]), int(k[K.KL_O]), int(k[K.KL_H]), int(k[K.KL_L]), int(k[K.KL_C]), int(k[K.KL_V]),
                int(k[K.KL_N]), int(k[K.KL_TBV]), int(k[K.KL_F]), int(k[K.KL_LAST]), float(self.klq[0, iv, i]),
                float(self.klq[1, iv, i]))

    def _kline_body(self, i: int, name: str, row: tuple, closed: bool) -> dict:
        sym = self.symbols[i]
        qd = int(self.pdec[i]) + int(self.qdec[i])
        scale = 10.0 ** qd
        t = row[0]
        return {"t": t, "T": kline_close_time(name, t), "s": sym, "i": name, "f": row[8], "L": row[9],
                "o": self.price_str(sym, row[1]), "c": self.price_str(sym, row[4]), "h": self.price_str(sym, row[2]),
                "l": self.price_str(sym, row[3]), "v": self.qty_str(sym, row[5]), "n": row[6], "x": closed,
                "q": f"{row[10] / scale:.{qd}f}", "V": self.qty_str(sym, row[7]), "Q": f"{row[11] / scale:.{qd}f}",
                "B": "0"}

    def _kline_json(self, i: int, iv: int, row: tuple, now: int, closed: bool) -> bytes:
        sym = self.symbols[i]
        return orjson.dumps({"e": "kline", "E": now, "s": sym,
                             "k": self._kline_body(i, K.KLINE_INTERVALS[iv], row, closed)})

    def _ckline_json(self, i: int, iv: int, row: tuple, now: int, closed: bool) -> bytes:
        spec = self.specs[self.symbols[i]]
        body = self._kline_body(i, K.KLINE_INTERVALS[iv], row, closed)
        del body["s"]
        return orjson.dumps({"e": "continuous_kline", "E": now, "ps": spec.pair, "ct": spec.contract_type,
                             "k": body})

    def klines(self, symbol: str, interval: str, start: int | None, end: int | None, limit: int) -> list[list]:
        """REST kline rows of the venue's own trades: the closed candles, then the open one (same data as the
        kline streams)."""
        i = self.index[symbol]
        iv = K.KLINE_INTERVALS.index(interval)
        with self.lock:
            rows = list(self.kl_hist[iv][i]) + [self._kline_row(i, iv)]
        rows = _window(rows, start, end, limit, lambda r: r[0])
        qd = int(self.pdec[i]) + int(self.qdec[i])
        scale = 10.0 ** qd
        return [[r[0], self.price_str(symbol, r[1]), self.price_str(symbol, r[2]), self.price_str(symbol, r[3]),
                 self.price_str(symbol, r[4]), self.qty_str(symbol, r[5]), kline_close_time(interval, r[0]),
                 f"{r[10] / scale:.{qd}f}", r[6], self.qty_str(symbol, r[7]), f"{r[11] / scale:.{qd}f}", "0"]
                for r in rows]

    # ---- mark / index prices and funding ----------------------------------------------------------------
    def index_price(self, i: int, now: int) -> float:
        return float(_index_of(self._mid(i), now, i))

    @staticmethod
    def funding_rate(mark: float, index: float) -> float:
        """Binance's formula: premium + clamp(interest - premium, +-0.05 %), with interest 0.01 % per period."""
        premium = (mark - index) / index if index else 0.0
        rate = premium + min(max(INTEREST_RATE - premium, -0.0005), 0.0005)
        return min(max(rate, -FUNDING_CAP), FUNDING_CAP)

    def next_funding_time(self, now: int) -> int:
        iv = self.funding_interval_ms
        return (now // iv + 1) * iv

    def mark_price_payload(self, i: int, now: int) -> dict:
        sym = self.symbols[i]
        pd = int(self.pdec[i]) + 6
        mid = self._mid(i)
        self._mark_ma[i] = 0.9 * self._mark_ma[i] + 0.1 * mid
        idx = self.index_price(i, now)
        out = {"e": "markPriceUpdate", "E": now, "s": sym, "p": f"{mid:.{pd}f}", "ap": f"{self._mark_ma[i]:.{pd}f}",
               "P": f"{idx * 1.0003:.{pd}f}", "i": f"{idx:.{pd}f}", "r": f"{self.funding_rate(mid, idx):.8f}",
               "T": self.next_funding_time(now)}
        if self.cfg.fields_2026:
            out["st"] = 1
        return out

    def premium_index(self, symbol: str) -> dict:
        i = self.index[symbol]
        now = self.now_ms()
        pd = int(self.pdec[i]) + 6
        with self.lock:
            mid = self._mid(i)
        idx = self.index_price(i, now)
        return {"symbol": symbol, "markPrice": f"{mid:.{pd}f}", "indexPrice": f"{idx:.{pd}f}",
                "estimatedSettlePrice": f"{idx * 1.0003:.{pd}f}",
                "lastFundingRate": f"{self.funding_rate(mid, idx):.8f}", "interestRate": f"{INTEREST_RATE:.8f}",
                "nextFundingTime": self.next_funding_time(now), "time": now}

    def sample_prices(self, now: int) -> None:
        """One mark and index sample per symbol into the 1m mark / index candles (called every second)."""
        open_now = kline_open_time("1m", now)
        with self.lock:
            mark = (self.bb + self.ba) * 0.5 * self.tick_f
            idx = _index_of(mark, now, np.arange(self.S))
            for kind, px in ((0, mark), (1, idx)):
                pk = self.pk[kind]
                for i in np.flatnonzero(self.pk_open < open_now).tolist():
                    if pk[4, i] > 0:
                        self.pk_hist[kind][i].append((int(self.pk_open[i]), *pk[:4, i].tolist(), int(pk[4, i])))
                new = self.pk_open < open_now
                pk[0, new] = pk[1, new] = pk[2, new] = pk[3, new] = px[new]
                pk[4, new] = 0
                pk[1] = np.maximum(pk[1], px)
                pk[2] = np.minimum(pk[2], px)
                pk[3] = px
                pk[4] += 1
            self.pk_open[self.pk_open < open_now] = open_now

    def price_klines(self, kind: int, symbol: str, interval: str, start: int | None, end: int | None,
                     limit: int) -> list[list]:
        """markPriceKlines (kind 0) / indexPriceKlines (kind 1) rows, from the per-second samples."""
        i = self.index[symbol]
        with self.lock:
            rows = list(self.pk_hist[kind][i])
            if self.pk[kind][4, i] > 0:
                rows.append((int(self.pk_open[i]), *self.pk[kind][:4, i].tolist(), int(self.pk[kind][4, i])))
        buckets: dict[int, list] = {}
        for t, o, h, l, c, n in rows:
            b = kline_open_time(interval, t)
            cur = buckets.get(b)
            if cur is None:
                buckets[b] = [b, o, h, l, c, n]
            else:
                cur[2], cur[3], cur[4], cur[5] = max(cur[2], h), min(cur[3], l), c, cur[5] + n
        out = _window(sorted(buckets.values()), start, end, limit, lambda r: r[0])
        pd = int(self.pdec[i]) + 6
        return [[r[0], f"{r[1]:.{pd}f}", f"{r[2]:.{pd}f}", f"{r[3]:.{pd}f}", f"{r[4]:.{pd}f}", "0",
                 kline_close_time(interval, r[0]), "0", r[5], "0", "0", "0"] for r in out]

    # ---- trades, last price, tickers --------------------------------------------------------------------
    def recent_trades(self, symbol: str) -> list[tuple[int, ...]]:
        """The trade ring of a symbol, oldest first: (aggId, firstId, lastId, price tick, qty units, T, maker)."""
        i = self.index[symbol]
        with self.lock:
            head = int(self.tr_head[i])
            n = min(head, K.TRADE_RING)
            idx = [(head - n + j) % K.TRADE_RING for j in range(n)]
            rows = self.tr_ring[i, idx].tolist() if n else []
        return [tuple(r) for r in rows]

    def last_price(self, symbol: str) -> float:
        i = self.index[symbol]
        with self.lock:
            return self._px(i, int(self.kl[K.KL_C, K.KL_SINCE_START, i]))

    def ticker_price(self, symbol: str) -> dict:
        i = self.index[symbol]
        with self.lock:
            last = int(self.kl[K.KL_C, K.KL_SINCE_START, i])
        return {"symbol": symbol, "price": self.price_str(symbol, last), "time": self.now_ms()}

    def ticker_payloads(self, now: int) -> tuple[list[tuple[int, bytes]], list[dict], list[dict]]:
        """(wanted @ticker / @miniTicker messages, every 24hrTicker, every 24hrMiniTicker) of the TRADING symbols."""
        items, full, mini = [], [], []
        per = self.want[: self.n_sym_sids].reshape(self.S, K.N_KINDS)
        for i, sym in enumerate(self.symbols):
            if self.specs[sym].status != "TRADING":
                continue
            t = self.ticker_24hr(sym)
            ft = {"e": "24hrTicker", "E": now, "s": sym, "p": t["priceChange"], "P": t["priceChangePercent"],
                  "w": t["weightedAvgPrice"], "c": t["lastPrice"], "Q": t["lastQty"], "o": t["openPrice"],
                  "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"],
                  "O": t["openTime"], "C": t["closeTime"], "F": t["firstId"], "L": t["lastId"], "n": t["count"]}
            mt = {"e": "24hrMiniTicker", "E": now, "s": sym, "c": t["lastPrice"], "o": t["openPrice"],
                  "h": t["highPrice"], "l": t["lowPrice"], "v": t["volume"], "q": t["quoteVolume"]}
            full.append(ft)
            mini.append(mt)
            if per[i, K.K_TICKER]:
                items.append((int(self.sid_base[i] + K.K_TICKER), orjson.dumps(ft)))
            if per[i, K.K_MINITICKER]:
                items.append((int(self.sid_base[i] + K.K_MINITICKER), orjson.dumps(mt)))
        return items, full, mini

    def mark_prices(self, kind: int) -> list[tuple[int, bytes]]:
        now = self.now_ms()
        out = []
        with self.lock:
            for i in range(self.S):
                if self.want[self.sid_base[i] + kind] and self.specs[self.symbols[i]].status == "TRADING":
                    out.append((int(self.sid_base[i] + kind), orjson.dumps(self.mark_price_payload(i, now))))
        return out

    def all_mark_prices(self) -> bytes:
        now = self.now_ms()
        with self.lock:
            return orjson.dumps([self.mark_price_payload(i, now) for i in range(self.S)
                                 if self.specs[self.symbols[i]].status == "TRADING"])

    def all_book_tickers(self) -> list[bytes]:
        out = []
        for sym in self.symbols:
            if self.specs[sym].status != "TRADING":
                continue
            t = self.book_ticker(sym)
            now = self.now_ms()
            out.append(orjson.dumps({"e": "bookTicker", "u": t["lastUpdateId"], "s": sym, "b": t["bidPrice"],
                                     "B": t["bidQty"], "a": t["askPrice"], "A": t["askQty"], "T": now, "E": now}))
        return out

    def drive(self, symbol: str, direction: int | None) -> None:
        """Test knob: push a symbol's price up (+1) or down (-1) with a lasting trending burst that also gets half
        of the generator's events; None lets it go. Streams, books and ids stay consistent (it is ordinary
        generated trading, just one-sided)."""
        i = self.index[symbol]
        with self.lock:
            if direction is None:
                self._drive.pop(i, None)
                self.regime[i] = 1
            else:
                self._drive[i] = 1 if direction > 0 else -1
            w = self.weights.copy()
            others = w.sum() - w[list(self._drive)].sum() if self._drive else 0.0
            for j in self._drive:
                w[j] = max(others, 1e-12) / len(self._drive)
            self._cumw = np.cumsum(w)

    # ---- thread ----------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        self._rate = max(0.0, float(rate))

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def start(self, extra_tick: Callable[[float], None] | None = None) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(extra_tick,), name="venue-market", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self, extra_tick) -> None:
        K.seed_rng(int(self.cfg.seed) + 1)  # numba's RNG state is per thread
        period = self.cfg.tick_interval_s
        last = time.monotonic()
        acc = 0.0
        burst_until = 0.0
        max_batch = 20_000
        while not self._stop.is_set():
            now = time.monotonic()
            dt = now - last
            last = now
            if self._paused.is_set():
                # windows still close while paused, so a paused market drains to a quiet, consistent state
                if extra_tick is not None:
                    extra_tick(now)
                self._stop.wait(period)
                continue
            mult = 1.0
            if self.cfg.bursts:
                # venue-wide bursts: ~ every 20 s for 0.5 s, 4x the rate
                if now < burst_until:
                    mult = 4.0
                elif np.random.random() < dt / 20.0:
                    burst_until = now + 0.5
            acc = min(acc + self._rate * mult * dt, max_batch)
            n = int(acc)
            try:
                if n > 0:
                    acc -= n
                    t1 = time.time_ns() // 1_000_000
                    # the batch's events carry the send time: E/T then measure only the venue-to-client path
                    chunk = self.step(n, t1, t1)
                    if chunk.n and self.sink is not None:
                        self.sink(chunk)
                if extra_tick is not None:
                    extra_tick(now)
            except Exception:
                # a bug must show, but must not freeze every stream of a long-running venue
                self.errors += 1
                traceback.print_exc(file=sys.stderr)
                self._stop.wait(0.5)
            spent = time.monotonic() - now
            if spent < period:
                self._stop.wait(period - spent)


# ---- kline calendar (UTC; weeks start on Monday, months on the 1st) ---------------------------------------------
_FIXED_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
             "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000,
             "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000}
_MONDAY_OFFSET_MS = 4 * 86_400_000  # 1970-01-01 was a Thursday


def kline_open_time(interval: str, t_ms: int) -> int:
    if interval == "1M":
        import datetime as _dt
        d = _dt.datetime.fromtimestamp(t_ms / 1000, _dt.timezone.utc)
        return int(_dt.datetime(d.year, d.month, 1, tzinfo=_dt.timezone.utc).timestamp() * 1000)
    dur = _FIXED_MS[interval]
    off = _MONDAY_OFFSET_MS if interval == "1w" else 0
    return (t_ms - off) // dur * dur + off


def kline_close_time(interval: str, open_ms: int) -> int:
    if interval == "1M":
        import datetime as _dt
        d = _dt.datetime.fromtimestamp(open_ms / 1000, _dt.timezone.utc)
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(_dt.datetime(y, m, 1, tzinfo=_dt.timezone.utc).timestamp() * 1000) - 1
    return open_ms + _FIXED_MS[interval] - 1


# ---- replay ------------------------------------------------------------------------------------------
def read_recording(path: str):
    """Yield (t_ns, stream, payload_obj) from JSON lines (gzip or plain) of {"t", "stream", "data"}.
    A line without "stream" is taken as a bare payload; its stream name is derived from it."""
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
            if isinstance(rec, dict) and "data" in rec and "stream" in rec:
                yield int(rec.get("t", 0)), str(rec["stream"]), rec["data"]
            else:
                t = int(rec.get("t", 0)) if isinstance(rec, dict) and "t" in rec else 0
                data = rec.get("data", rec) if isinstance(rec, dict) else rec
                yield t, _stream_name_of(data), data


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _stream_name_of(data) -> str:
    if isinstance(data, list):
        return "!markPrice@arr"
    e = data.get("e", "") if isinstance(data, dict) else ""
    s = str(data.get("s", "")).lower() if isinstance(data, dict) else ""
    return {"bookTicker": f"{s}@bookTicker", "depthUpdate": f"{s}@depth@0ms", "aggTrade": f"{s}@aggTrade",
            "trade": f"{s}@trade", "markPriceUpdate": f"{s}@markPrice"}.get(e, f"{s}@{e}")
