"""Replay core throughput: 1 M quotes over 10 symbols, ema_cross (fast 20, slow 100), through
ring -> risk.on_market_batch -> strategy.run_range -> risk.check -> simexec (the replay's live path).

Target (issue 8): >= 10 M ticks/s for test_bench_replay_core_1m_quotes_10_symbols_ema_cross.
test_bench_replay_csv_end_to_end measures what `python -m aegis replay` costs on the same quotes written as 10
Binance bookTicker CSV files (CSV parse + k-way merge + core + output files); no target, for the record.
Run: pytest bench/bench_replay.py -q -s   (about 15 s; prints both rates)
"""
from __future__ import annotations

import gc

import numpy as np
import pytest

from aegis.replay import run as replay
from aegis.brain.pipeline import S_ORDERS, S_RECORDS
from aegis.trade import risk
from aegis.replay import simexec
from aegis.brain import strategy
from aegis.core.records import KIND_QUOTE, MARKET_DTYPE
from aegis.binance.symbols import SymbolTable
from benchmode import size, timing

N_QUOTES = size(1_000_000, 20_000)
N_SYMBOLS = 10
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


def make_quotes(n: int = N_QUOTES, n_symbols: int = N_SYMBOLS, seed: int = 7) -> np.ndarray:
    """Random-walk top of book per symbol, symbols interleaved at random, 10 ms apart (2.8 h of market: the order
    rate stays inside Binance's limits, so risk refusals do not dominate the measurement)."""
    rng = np.random.default_rng(seed)
    recs = np.zeros(n, MARKET_DTYPE)
    sym = rng.integers(0, n_symbols, n).astype(np.int32)
    steps = rng.integers(-2, 3, n).astype(np.float64)
    base = 10.0 ** np.linspace(1, 4, n_symbols)
    mid = np.empty(n)
    for s in range(n_symbols):
        idx = np.flatnonzero(sym == s)
        mid[idx] = base[s] * (1.0 + 1e-4 * np.cumsum(steps[idx]))
    half = base[sym] * 5e-5
    t = T0 + np.arange(n, dtype=np.int64) * 10_000_000
    recs["exch_ts"] = t
    recs["recv_ts"] = t
    recs["pub_ts"] = t
    recs["seq"] = np.arange(n)
    recs["symbol"] = sym
    recs["kind"] = KIND_QUOTE
    recs["bid_px"] = mid - half
    recs["ask_px"] = mid + half
    recs["bid_qty"] = 1.0
    recs["ask_qty"] = 1.0
    return recs


def make_core(name: str = "ema_cross") -> replay.ReplayCore:
    table = SymbolTable.build([(f"SYM{i:02d}USDT", "0.00000001", "0.00000001") for i in range(N_SYMBOLS)])
    values = {"fast": 20, "slow": 100, "unit": 0.01} if name == "ema_cross" else {"unit": 0.01}
    scfg = strategy.resolve(name, values)
    rcfg = risk.RiskConfig(max_position_notional=0.0, max_gross_notional=0.0, max_order_notional=0.0,
                           orders_per_second=4096, binance_orders_10s=4096, binance_orders_1m=4096,
                           daily_loss_limit=0.0, price_band_bps=0.0)
    cfg = replay.ReplayConfig(scfg, simexec.SimConfig(latency_ns=200_000), rcfg, out_dir="")
    return replay.ReplayCore(table, cfg)


@pytest.fixture(scope="module")
def quotes():
    return make_quotes()


def test_bench_replay_core_1m_quotes_10_symbols_ema_cross(benchmark, quotes):
    make_core().feed(quotes[:20_000])  # compile outside the timing

    cores = []

    def setup():   # a fresh strategy/risk/exchange state per round, built outside the timing
        cores.append(make_core())
        gc.collect()
        gc.freeze()   # as replay.run does around the replay
        return (cores[-1],), {}

    def run(core):
        core.feed(quotes)
        core.finish()

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    gc.unfreeze()
    core = cores[-1]
    assert core.stats[S_RECORDS] == N_QUOTES
    assert core.stats[S_ORDERS] > size(1000, 100)   # the strategy really trades
    st = timing(benchmark)
    if st is None:
        return
    rate = N_QUOTES / st.min
    benchmark.extra_info["ticks_per_s"] = rate
    print(f"\nreplay core: {rate / 1e6:.1f} M ticks/s (best of {len(st.data)}), {int(core.stats[S_ORDERS])} orders")


ONLINE_TARGET_TICKS_PER_S = 5_000_000   # issue 16: replay --strategy online


def test_bench_replay_core_online_vs_ema_cross(quotes):
    """Replay core with --strategy online (learning on every mid move, default costs: it learns and evaluates but
    the edge never pays a 5 bps fee), ema_cross and obi on the same quotes, alternated in one run: ratios that
    machine load affects alike. Best of 3 each. obi is the other strategy that tracks actual positions, which the
    order loop runs one record at a time: online vs obi is the cost of learning, obi vs ema_cross the cost of
    that per-record path."""
    import time
    cores = {n: make_core(n) for n in ("ema_cross", "obi", "online")}
    for c in cores.values():
        c.feed(quotes[:20_000])   # compile outside the timing
    best = {n: float("inf") for n in cores}
    for _ in range(3):
        for n in cores:
            core = make_core(n)
            gc.collect()
            gc.freeze()
            t = time.perf_counter()
            core.feed(quotes)
            best[n] = min(best[n], time.perf_counter() - t)
            gc.unfreeze()
            cores[n] = core
    rate = {n: N_QUOTES / b for n, b in best.items()}
    print(f"\nreplay core, same run: online {rate['online'] / 1e6:.2f} M ticks/s, ema_cross "
          f"{rate['ema_cross'] / 1e6:.2f} M ticks/s (ratio {rate['online'] / rate['ema_cross']:.2f}), obi "
          f"{rate['obi'] / 1e6:.2f} M ticks/s (online/obi {rate['online'] / rate['obi']:.2f}); target online "
          f">= {ONLINE_TARGET_TICKS_PER_S / 1e6:.0f} M: "
          f"{'met' if rate['online'] >= ONLINE_TARGET_TICKS_PER_S else 'NOT met'}")
    from aegis.brain import learn
    assert learn.totals(cores["online"].bs.strat.state)[0] > 0.5 * N_QUOTES   # it really learned from the moves


def write_csv_files(quotes: np.ndarray, directory) -> list[str]:
    """The same quotes as 10 Binance bookTicker daily files (one per symbol, header row, microsecond times)."""
    paths = []
    for s in range(N_SYMBOLS):
        r = quotes[quotes["symbol"] == s]
        t_us = r["exch_ts"] // 1000
        path = directory / f"SYM{s:02d}USDT-bookTicker-2024-01-01.csv"
        with open(path, "w") as f:
            f.write("update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n")
            f.write("".join(f"{i},{b:.6f},1.5,{a:.6f},2.25,{t},{t}\n"
                            for i, (b, a, t) in enumerate(zip(r["bid_px"].tolist(), r["ask_px"].tolist(),
                                                              t_us.tolist()), 1)))
        paths.append(str(path))
    return paths


def test_bench_replay_csv_end_to_end(benchmark, quotes, tmp_path):
    """CSV parse + k-way merge + core + output files for the same 1 M quotes (what `aegis replay` costs)."""
    files = write_csv_files(quotes, tmp_path)
    core_cfg = make_core().cfg
    rounds = []

    def run():
        out = tmp_path / f"out{len(rounds)}"
        rounds.append(out)
        cfg = replay.ReplayConfig(core_cfg.strategy, core_cfg.sim, core_cfg.risk, out_dir=str(out), progress=False)
        return replay.run(files, cfg, warn=lambda m: None)

    summary = benchmark.pedantic(run, rounds=2, iterations=1)
    assert summary["counts"]["records"] == N_QUOTES
    st = timing(benchmark)
    if st is None:
        return
    rate = N_QUOTES / st.min
    benchmark.extra_info["rows_per_s"] = rate
    print(f"\nreplay end to end (CSV): {rate / 1e6:.2f} M rows/s")
