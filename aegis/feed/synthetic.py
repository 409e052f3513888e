"""Built-in synthetic market: quotes and trades for N symbols, generated inside jitted code.

It lets the whole engine (Feed -> ring -> Brain) run and be measured with no exchange and no network, and it is
the load generator of the ring benchmarks. Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np

from aegis.core.jit import njit
from aegis.core.records import FLAG_SYNTHETIC, KIND_QUOTE, KIND_TRADE, MARKET_DTYPE

STATE_FIELDS = 4  # per symbol: mid, tick, next update id, spread ticks


def make_state(n_symbols: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    st = np.zeros((n_symbols, STATE_FIELDS), dtype=np.float64)
    st[:, 0] = np.round(10 ** rng.uniform(-1, 5, n_symbols), 2)   # mids from 0.1 to 100k
    st[:, 1] = 10.0 ** np.floor(np.log10(st[:, 0]) - 4)           # ~1e-4 relative tick
    st[:, 2] = 1_000_000_000_000 + np.arange(n_symbols) * 1000
    st[:, 3] = 1
    return st


@njit(cache=True, nogil=True)
def generate(state, out, n, seq0, exch_ns, recv_ns):
    """Fill out[:n] with one step of the market per record; every 8th record is a trade."""
    ns = state.shape[0]
    for i in range(n):
        s = (seq0 + i) % ns
        mid = state[s, 0]
        tick = state[s, 1]
        step = np.random.randint(-2, 3) * tick
        if mid + step > 10 * tick:
            mid += step
        state[s, 0] = mid
        state[s, 2] += 1 + np.random.randint(0, 3)
        half = state[s, 3] * tick
        r = out[i]
        r.exch_ts = exch_ns
        r.recv_ts = recv_ns
        r.pub_ts = 0
        r.symbol = s
        r.flags = FLAG_SYNTHETIC
        r.seq = seq0 + i
        r.bid_px = mid - half
        r.ask_px = mid + half
        r.bid_qty = 1.0 + np.random.randint(0, 100)
        r.ask_qty = 1.0 + np.random.randint(0, 100)
        r.last_id = np.int64(state[s, 2])
        r.first_id = 0
        r.prev_id = 0
        if (seq0 + i) % 8 == 7:
            r.kind = KIND_TRADE
            r.side = 1 if np.random.randint(0, 2) == 1 else -1
            r.px = r.ask_px if r.side == 1 else r.bid_px
            r.qty = 0.001 * (1 + np.random.randint(0, 1000))
        else:
            r.kind = KIND_QUOTE
            r.side = 0
            r.px = 0.0
            r.qty = 0.0


@njit(cache=True)
def seed(value):
    np.random.seed(value)


def new_batch(n: int) -> np.ndarray:
    return np.zeros(n, dtype=MARKET_DTYPE)
