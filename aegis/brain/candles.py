"""Time bars (candles) per symbol and interval, built from trades inside @njit batch kernels.

A bar covers [open_ts, close_ts) of EXCHANGE time (the trade's event time), aligned to multiples of the interval
since the Unix epoch, like Binance klines: a 1 m bar opens on a whole minute. Bars hold OHLC, base and quote volume,
VWAP = quote volume / volume, and the trade count. A bar is closed by time, never by count:
  * by a trade of the same symbol at or after its close_ts (the next bar opens with that trade), or
  * by `close_due(ts)`: the Brain calls it with the newest exchange time it has seen (minus a grace period for
    streams that run a little behind), so a symbol that stops trading still gets its bar closed.
Intervals with no trade produce no bar (there is nothing to put in it); consumers see a gap in open_ts.
A trade older than the open bar (its own bar was closed already) is counted as late and left out: a closed bar
never changes, and an open bar only ever holds trades of its own time span.

Memory: bars come from a CandlePool (aegis.brain.pools). Each (symbol, interval) keeps the open bar plus a ring of its
`depth` most recent closed bars; closing one more returns the oldest to the pool, so the pool never runs dry and
nothing grows however long the run.
"""
from __future__ import annotations

import numpy as np

from aegis.brain.pools import END, CandlePool, give, take
from aegis.core.config import parse_duration_ns
from aegis.core.jit import njit
from aegis.core.records import KIND_TRADE

# stats slots
C_TRADES = 0
C_OPENED = 1
C_CLOSED = 2
C_LATE = 3         # trades older than an already closed bar
C_NO_BAR = 4       # pool exhausted: trade not recorded (cannot happen with the default sizing)
C_BAD_SYMBOL = 5
STATS_SLOTS = 8



def parse_interval(text) -> int:
    """A candle interval in the one duration grammar ('250ms', '1s', '1m' = one minute, '1h', '1d') -> ns.
    Raises ValueError with a one-line message."""
    try:
        ns = parse_duration_ns(text)
    except ValueError as e:
        raise ValueError(f"candle interval must be {e}") from None
    if ns <= 0:
        raise ValueError(f"candle interval must be longer than zero, got {text!r}")
    return ns


@njit(cache=True, nogil=True)
def _close(pool, pool_hdr, cur, hist, hist_n, stats, s, k):
    """Close the open bar of (s, k) and push it onto that pair's ring of recent bars."""
    b = cur[s, k]
    if b < 0:
        return
    bar = pool[b]
    bar.closed = 1
    if bar.volume > 0.0:
        bar.vwap = bar.quote_volume / bar.volume
    depth = hist.shape[2]
    n = hist_n[s, k]
    slot = n % depth
    if n >= depth:
        give(pool, pool_hdr, hist[s, k, slot])
    hist[s, k, slot] = b
    hist_n[s, k] = n + 1
    cur[s, k] = -1
    stats[C_CLOSED] += 1


@njit(cache=True, nogil=True)
def update(pool, pool_hdr, cur, last_close, hist, hist_n, intervals, stats, records, n):
    """Fold the trades among records[:n] into the bars; returns how many bars were closed."""
    n_sym = cur.shape[0]
    n_int = intervals.shape[0]
    closed0 = stats[C_CLOSED]
    for i in range(n):
        r = records[i]
        if r.kind != KIND_TRADE:
            continue
        s = r.symbol
        if s < 0 or s >= n_sym:
            stats[C_BAD_SYMBOL] += 1
            continue
        stats[C_TRADES] += 1
        ts = r.exch_ts
        px = r.px
        qty = r.qty
        for k in range(n_int):
            b = cur[s, k]
            if b >= 0 and ts < pool[b].open_ts:
                stats[C_LATE] += 1      # belongs to a bar that is already closed
                continue
            if b >= 0 and ts >= pool[b].close_ts:
                last_close[s, k] = pool[b].close_ts
                _close(pool, pool_hdr, cur, hist, hist_n, stats, s, k)
                b = -1
            if b < 0:
                if ts < last_close[s, k]:
                    stats[C_LATE] += 1
                    continue
                b = take(pool, pool_hdr)
                if b < 0:
                    stats[C_NO_BAR] += 1
                    continue
                iv = intervals[k]
                bar = pool[b]
                bar.open_ts = ts - ts % iv
                bar.close_ts = bar.open_ts + iv
                bar.open = px
                bar.high = px
                bar.low = px
                bar.close = px
                bar.volume = 0.0
                bar.quote_volume = 0.0
                bar.vwap = px
                bar.trades = 0
                bar.symbol = s
                bar.interval = k
                bar.closed = 0
                cur[s, k] = b
                stats[C_OPENED] += 1
            bar = pool[b]
            if px > bar.high:
                bar.high = px
            if px < bar.low:
                bar.low = px
            bar.close = px
            bar.volume += qty
            bar.quote_volume += px * qty
            bar.trades += 1
    return stats[C_CLOSED] - closed0


@njit(cache=True, nogil=True)
def close_due(pool, pool_hdr, cur, last_close, hist, hist_n, stats, ts):
    """Close every open bar whose close_ts <= ts (exchange ns); returns how many."""
    closed0 = stats[C_CLOSED]
    for s in range(cur.shape[0]):
        for k in range(cur.shape[1]):
            b = cur[s, k]
            if b >= 0 and pool[b].close_ts <= ts:
                last_close[s, k] = pool[b].close_ts
                _close(pool, pool_hdr, cur, hist, hist_n, stats, s, k)
    return stats[C_CLOSED] - closed0


class CandleBook:
    """All bars of one process: pool + per (symbol, interval) open bar and ring of recent closed bars."""

    def __init__(self, n_symbols: int, intervals_ns, depth: int = 64):
        self.intervals = np.asarray(intervals_ns, dtype=np.int64)
        if self.intervals.ndim != 1 or (self.intervals <= 0).any():
            raise ValueError("candle intervals must be positive nanosecond counts")
        if depth < 1:
            raise ValueError(f"candle history depth must be >= 1, got {depth}")
        n_int = self.intervals.shape[0]
        self.depth = depth
        # every pair holds at most depth closed + 1 open bar: the pool can never be exhausted
        self.pool = CandlePool(max(1, n_symbols * n_int * (depth + 1)))
        self.cur = np.full((n_symbols, n_int), -1, dtype=np.int32)
        self.last_close = np.zeros((n_symbols, n_int), dtype=np.int64)
        self.hist = np.full((n_symbols, n_int, depth), END, dtype=np.int32)
        self.hist_n = np.zeros((n_symbols, n_int), dtype=np.int64)
        self.stats = np.zeros(STATS_SLOTS, dtype=np.int64)

    @property
    def args(self):
        """Arrays in the order update/close_due take them (after which come records, n / ts)."""
        return (self.pool.records, self.pool.header, self.cur, self.last_close, self.hist, self.hist_n)

    def update(self, records, n: int) -> int:
        p = self.pool
        return int(update(p.records, p.header, self.cur, self.last_close, self.hist, self.hist_n, self.intervals,
                          self.stats, records, n))

    def close_due(self, ts: int) -> int:
        p = self.pool
        return int(close_due(p.records, p.header, self.cur, self.last_close, self.hist, self.hist_n, self.stats, ts))

    def closed_count(self, symbol: int, interval: int) -> int:
        return int(self.hist_n[symbol, interval])

    def closed(self, symbol: int, interval: int, back: int = 0):
        """The back-th most recent closed bar (0 = newest) as a CANDLE_DTYPE scalar copy, or None."""
        n = int(self.hist_n[symbol, interval])
        if back < 0 or back >= min(n, self.depth):
            return None
        return self.pool.records[self.hist[symbol, interval, (n - 1 - back) % self.depth]].copy()

    def open_bar(self, symbol: int, interval: int):
        b = int(self.cur[symbol, interval])
        return None if b < 0 else self.pool.records[b].copy()


# ---- warm-up from the exchange's klines ------------------------------------------------------------
BINANCE_INTERVALS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400,
                     "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800}
_BY_NS = {sec * 1_000_000_000: name for name, sec in BINANCE_INTERVALS.items()}


def seed(book: CandleBook, symbol: int, interval: int, bars) -> int:
    """Put closed bars from history into (symbol, interval): (open_ts_ns, open, high, low, close, volume,
    quote_volume, trades), oldest first, aligned to the interval. Only before that pair has an open bar and only
    bars newer than its last closed one: live bars are never rewritten. Returns the bars added."""
    if book.cur[symbol, interval] >= 0:
        return 0
    iv = int(book.intervals[interval])
    rec, added = book.pool.records, 0
    for t, o, h, lo, c, v, q, k in bars:
        if t % iv or t + iv <= book.last_close[symbol, interval]:
            continue
        b = book.pool.take()
        if b < 0:
            break
        for name, val in (("open", o), ("high", h), ("low", lo), ("close", c), ("volume", v), ("quote_volume", q),
                          ("vwap", q / v if v > 0 else c), ("trades", k), ("open_ts", t), ("close_ts", t + iv),
                          ("symbol", symbol), ("interval", interval), ("closed", 1)):
            rec[name][b] = val
        n = int(book.hist_n[symbol, interval])
        slot = n % book.depth
        if n >= book.depth:
            book.pool.give(int(book.hist[symbol, interval, slot]))
        book.hist[symbol, interval, slot] = b
        book.hist_n[symbol, interval] = n + 1
        book.last_close[symbol, interval] = t + iv
        added += 1
    return added


def warm_up(book: CandleBook, client, names: list[str], now_ms: int) -> int:
    """Seed every (symbol, interval) that Binance has klines for with the exchange's most recent closed klines
    (GET /fapi/v1/klines), so bar-based indicators start warm instead of `depth` intervals into the run.
    `client` is an aegis.binance.client.BinanceClient; `names` the symbols in id order. Returns the bars added."""
    total = 0
    for k, iv_ns in enumerate(book.intervals.tolist()):
        name = _BY_NS.get(int(iv_ns))
        if name is None:
            continue
        for s, sym in enumerate(names):
            r = client.klines(sym, name, limit=min(book.depth + 1, 1500))
            if not r.get("ok"):
                continue
            bars = [(int(row[0]) * 1_000_000, float(row[1]), float(row[2]), float(row[3]), float(row[4]),
                     float(row[5]), float(row[7]), int(row[8])) for row in r["klines"] if int(row[6]) < now_ms]
            total += seed(book, s, k, bars)
    return total
