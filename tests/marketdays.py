"""Synthetic Binance USD-M bookTicker days (the public-data CSV layout, with header) for store / sweep tests and
benches: a random-walk mid with a one-tick spread, rows evenly spaced over the UTC day."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

HEADER = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n"


def day_ms(day: str) -> int:
    d = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp() * 1000)


def write_day(directory, symbol: str, day: str, rows: int, seed: int = 1, mid0: float = 40_000.0,
              tick: float = 0.1, vol_ticks: int = 3) -> Path:
    """DIR/<SYMBOL>-bookTicker-<day>.csv with `rows` quotes spread over the day; returns its path."""
    rng = np.random.default_rng(seed)
    mid = np.round(mid0 / tick) + np.cumsum(rng.integers(-vol_ticks, vol_ticks + 1, rows))
    bid = mid * tick
    ask = (mid + 1) * tick
    t = day_ms(day) + (np.arange(rows, dtype=np.int64) * 86_400_000) // rows
    bq = rng.integers(1, 500, rows) / 100.0
    aq = rng.integers(1, 500, rows) / 100.0
    uid = 1_000_000 + np.arange(rows)
    path = Path(directory) / f"{symbol}-bookTicker-{day}.csv"
    lines = [f"{u},{b:.1f},{x:.2f},{a:.1f},{y:.2f},{ts},{ts}\n"
             for u, b, x, a, y, ts in zip(uid.tolist(), bid.tolist(), bq.tolist(), ask.tolist(), aq.tolist(),
                                          t.tolist())]
    with open(path, "w", encoding="ascii") as f:
        f.write(HEADER)
        f.writelines(lines)
    return path


def days(first: str, n: int) -> list[str]:
    d0 = dt.date.fromisoformat(first)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


def warm_replay(directory) -> None:
    """Compile (or load from numba's cache) the replay path once, before any per-test time limit starts: a cold
    compile takes minutes on a busy 2-core box."""
    from aegis.replay import run as replay
    path = write_day(directory, "BTCUSDT", "2024-01-01", 500)
    assert replay.main([str(path), "--param", "fast=2", "--param", "slow=5", "--out", str(Path(directory) / "o"),
                        "--no-progress"]) == 0
    from aegis.feed.recording import Recorder   # and the Feed's parser, which reads recordings
    rec = Recorder(Path(directory) / "rec")
    rec.write(1, "btcusdt@bookTicker", {"e": "bookTicker", "u": 1, "s": "BTCUSDT", "b": "1.0", "B": "1", "a": "1.1",
                                         "A": "1", "T": day_ms("2024-01-01"), "E": day_ms("2024-01-01")})
    rec.close()
    assert replay.main([str(rec.files[0]), "--out", str(Path(directory) / "o2"), "--no-progress"]) == 0
