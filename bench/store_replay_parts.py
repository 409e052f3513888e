"""Store -> replay: where the time goes between the memory-mapped partitions and the replay core, measured in parts.
A script, not a pytest-benchmark file (its figures compare two source trees, each in its own processes); the
store formats and the month/sweep figures are bench_store.py's.

  python bench/store_replay_parts.py gen DIR DAYS ROWS_PER_DAY [SYMBOLS]   synthetic quote store (no CSV step)
  python bench/store_replay_parts.py parts DIR [STRATEGY] [SYMBOL]         in one process: input path alone, core
                                                                             alone, replay.run (CRC trusted, first
                                                                             open), peak RSS
  python bench/store_replay_parts.py cmd DIR [STRATEGY] [SYMBOL]           the whole `python -m aegis replay` command

Run it with PYTHONPATH=/work/main (old) and PYTHONPATH=<worktree> (new) side by side; `side` does that:
  python bench/store_replay_parts.py side OLD_ROOT NEW_ROOT DIR [STRATEGY] [SYMBOL]

STRATEGY: "idle" (mean_reversion sampling once a day: no signal; what a quote costs the core by itself),
"obi_quiet" (an EMA per quote, no signal) or "ema_cross" (fast 20, slow 100: trades, as bench_replay).
"""
from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DAY_NS = 86_400 * 1_000_000_000
T0_DAY = 19_723   # 2024-01-01


def gen(root: str, days: int, rows: int, symbols: int = 1) -> None:
    from aegis.core.records import KIND_QUOTE, MARKET_DTYPE
    from aegis.replay import store as S
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    st = S.Store(root)
    names = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"][:symbols]
    for k, name in enumerate(names):
        n = rows if k == 0 else rows // 4
        for d in range(days):
            rng = np.random.default_rng(1000 * k + d)
            recs = np.zeros(n, MARKET_DTYPE)
            t = (T0_DAY + d) * DAY_NS + np.arange(n, dtype=np.int64) * (DAY_NS // n) + 7 * k
            mid = (40_000.0 / (k + 1)) * (1.0 + 1e-5 * np.cumsum(rng.integers(-3, 4, n)))
            recs["exch_ts"] = t
            recs["recv_ts"] = t
            recs["pub_ts"] = t                 # as import stores them
            recs["seq"] = np.arange(n)
            recs["bid_px"] = np.round(mid, 1)
            recs["ask_px"] = np.round(mid, 1) + 0.1
            recs["bid_qty"] = rng.integers(1, 500, n) / 100.0
            recs["ask_qty"] = rng.integers(1, 500, n) / 100.0
            recs["kind"] = KIND_QUOTE
            recs["last_id"] = np.arange(n)
            day = time.strftime("%Y-%m-%d", time.gmtime((T0_DAY + d) * 86_400))
            w = S._PartWriter(root, name, day, "bookTicker", f"{name}-bookTicker-{day}.csv")
            for i in range(0, n, 1 << 20):
                w.append(recs[i:i + (1 << 20)])
            p = w.commit()
            st.parts[p.rel] = p
            st.save()
    print(f"{root}: {sum(p.rows for p in st.parts.values()):,} rows in {len(st.parts)} partitions")


STRATEGIES = {   # name -> (strategy, params)
    "idle": ("mean_reversion", {"sample_ms": 86_400_000}),   # samples the mid once a day: no signal, the cheapest
    "obi_quiet": ("obi", {"threshold": 1.0}),                # an EMA per quote, never a signal
    "ema_cross": ("ema_cross", {"fast": 20, "slow": 100}),   # trades on ~1.4 % of the quotes (bench_replay's)
}


def cfg_for(strategy_name: str, out_dir: str = ""):
    from aegis.brain import strategy
    from aegis.replay import run as replay
    from aegis.replay import simexec
    from aegis.trade import risk
    name, params = STRATEGIES[strategy_name]
    scfg = strategy.resolve(name, params)
    rcfg = risk.RiskConfig(max_position_notional=0.0, max_gross_notional=0.0, max_order_notional=0.0,
                           orders_per_second=4096, binance_orders_10s=4096, binance_orders_1m=4096,
                           daily_loss_limit=0.0, price_band_bps=0.0)
    return replay.ReplayConfig(scfg, simexec.SimConfig(latency_ns=200_000), rcfg, out_dir=out_dir, progress=False)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CPU = {}   # label -> best CPU seconds (user + sys of this process) of the last best() / core run


def best(fn, repeat=3, label=None):
    """Best wall time of `repeat` runs (and, under CPU[label], the best CPU time: on a shared box a process gets a
    fraction of a core, so rows per CPU-second is the figure that says what one core does)."""
    b = c = float("inf")
    out = None
    for _ in range(repeat):
        t, p = time.perf_counter(), time.process_time()
        out = fn()
        b = min(b, time.perf_counter() - t)
        c = min(c, time.process_time() - p)
    if label:
        CPU[label] = c
    return b, out


def parts(root: str, strategy_name: str = "idle", symbol: str | None = None) -> dict:
    from aegis.core.records import MARKET_DTYPE
    from aegis.replay import run as replay
    from aegis.replay import store as S
    from aegis.brain.pipeline import S_ORDERS, S_RECORDS
    target = str(Path(root) / symbol) if symbol else root
    files = replay.expand_inputs([target])
    sel = [S.partition_of(f) for f in files]
    rows = sum(p.rows for p in sel)
    res = {"rows": rows, "partitions": len(sel), "strategy": strategy_name}
    S.verify(sel)
    # 1. the input path alone: partitions -> the arrays replay hands the core, touching every row once (the core
    #    would): what the store and the merge cost, without the core
    batches = getattr(replay, "feed_batches", None)

    def input_path():
        _, srcs = replay.open_sources(files, None, None, None, None)
        n = 0
        s = 0
        it = batches(srcs) if batches else replay.Merger(srcs).batches()
        for b in it:
            if isinstance(b, tuple):   # (batch, sum64 lanes): trees from s3-19 on; the lanes are None here (verified)
                b = b[0]
            n += len(b)
            s += int(b["recv_ts"][-1])   # a view: the pages are touched below
            np.add.reduce(b.view(np.int64).reshape(-1, MARKET_DTYPE.itemsize // 8)[:, 1])
        return n
    t, n = best(input_path, label="input")
    assert n == rows, (n, rows)
    res["input_path_rows_per_s"] = rows / t
    res["input_path_rows_per_cpu_s"] = rows / CPU["input"]
    # 2. the core alone on records already in memory (one contiguous array; as the merge would hand it)
    table, _ = replay.open_sources(files, None, None, None, None)
    recs = np.empty(rows, MARKET_DTYPE)
    o = 0
    for p in sel:
        recs[o:o + p.rows] = S.to_records(p.layout, np.array(S.open_partition(p, False)), 0,
                                          np.zeros(p.rows, MARKET_DTYPE))
        recs["symbol"][o:o + p.rows] = table.id_of(p.symbol)
        o += p.rows
    recs = recs[np.argsort(recs["recv_ts"], kind="stable")]   # sel is in merge order: ties as the merge breaks them
    recs["pub_ts"] = recs["recv_ts"]
    recs["seq"] = np.arange(len(recs))
    cfg = cfg_for(strategy_name)
    replay.ReplayCore(table, cfg, None, None).feed(recs[:20_000])   # compile / load outside the timing

    def core_alone():
        c = replay.ReplayCore(table, cfg, None, None)
        gc.collect()
        gc.freeze()
        t, p = time.perf_counter(), time.process_time()
        c.feed(recs)
        c.finish()
        el, cp = time.perf_counter() - t, time.process_time() - p
        gc.unfreeze()
        return el, cp, int(c.stats[S_ORDERS]), int(c.stats[S_RECORDS])
    runs = [core_alone() for _ in range(3)]
    el, _, orders, nrec = min(runs)
    assert nrec == rows
    res["core_rows_per_s"] = rows / el
    res["core_rows_per_cpu_s"] = rows / min(r[1] for r in runs)
    res["orders"] = orders
    recs = None   # (free the in-memory copy before the store runs)
    gc.collect()
    # 3. replay.run from the store (CRC trusted: a sweep trial), then first open (checksum: a pass of its own
    #    before s3-19, the replay core's own pass from then on)
    t, summ = best(lambda: replay.run([target], cfg, warn=lambda m: None), label="run")
    assert summ["counts"]["records"] == rows
    res["run_trusted_rows_per_s"] = rows / t
    res["run_trusted_rows_per_cpu_s"] = rows / CPU["run"]
    res["run_trusted_s"] = t
    res["run_orders"] = summ["counts"]["orders_accepted"]

    def cold():
        S._verified.clear()
        return replay.run([target], cfg, warn=lambda m: None)
    t, _ = best(cold, 2, label="cold")
    res["run_first_open_rows_per_s"] = rows / t
    res["run_first_open_rows_per_cpu_s"] = rows / CPU["cold"]
    with tempfile.TemporaryDirectory() as tiny:   # the fixed cost of a replay.run: 1000 rows
        gen(tiny, 1, 1000)
        S.verify(S.Store(tiny).select())
        t, _ = best(lambda: replay.run([tiny], cfg, warn=lambda m: None), label="fixed")
        res["run_1000_rows_s"] = t
        res["run_1000_rows_cpu_s"] = CPU["fixed"]
    res["peak_rss_mb"] = rss_mb()
    return res


def cmd(root: str, strategy_name: str = "idle", symbol: str | None = None) -> dict:
    from aegis.replay import store as S
    target = str(Path(root) / symbol) if symbol else root
    rows = sum(p.rows for p in S.Store(root).select([symbol] if symbol else None))
    name, params = STRATEGIES[strategy_name]
    args = ["--strategy", name, *[a for k, v in params.items() for a in ("--param", f"{k}={v}")],
            "--risk", "max_position_notional=0", "--risk", "max_gross_notional=0", "--risk", "max_order_notional=0",
            "--risk", "daily_loss_limit=0", "--risk", "price_band_bps=0", "--latency", "200us"]
    with tempfile.TemporaryDirectory() as out:
        best_t = best_cpu = float("inf")
        rss = 0
        for _ in range(int(os.environ.get("BENCH_REPEAT", "3"))):
            t = time.perf_counter()
            pr = subprocess.Popen([sys.executable, "-m", "aegis", "replay", target, *args, "--out", out,
                                   "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, ru = os.wait4(pr.pid, 0)
            el = time.perf_counter() - t
            err = pr.stderr.read().decode()
            pr.returncode = os.waitstatus_to_exitcode(status)
            assert pr.returncode == 0, err[-2000:]
            best_t = min(best_t, el)
            best_cpu = min(best_cpu, ru.ru_utime + ru.ru_stime)
            rss = max(rss, ru.ru_maxrss // 1024)
    return {"rows": rows, "cmd_s": best_t, "cmd_rows_per_s": rows / best_t, "cmd_cpu_s": best_cpu,
            "cmd_rows_per_cpu_s": rows / best_cpu, "cmd_peak_rss_mb": rss}


def side(old: str, new: str, root: str, *rest) -> None:
    """Old and new code, alternated in one run (same load), each measurement in its own process."""
    here = Path(__file__).resolve()
    print(f"load before: {os.getloadavg()}")
    for what in ("parts", "cmd"):
        for label, tree in (("old", old), ("new", new)) * int(os.environ.get("SIDE_ROUNDS", "2")):
            env = dict(os.environ, PYTHONPATH=tree)
            r = subprocess.run([sys.executable, str(here), what, root, *rest], capture_output=True, text=True,
                               env=env, timeout=1800, cwd=tree)
            if r.returncode != 0:
                print(label, what, "FAILED", r.stderr[-3000:])
                continue
            print(label, what, r.stdout.strip().splitlines()[-1], flush=True)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "gen":
        gen(a[1], int(a[2]), int(a[3]), int(a[4]) if len(a) > 4 else 1)
    elif a[0] == "parts":
        print(json.dumps(parts(*a[1:])))
    elif a[0] == "cmd":
        print(json.dumps(cmd(*a[1:])))
    elif a[0] == "side":
        side(*a[1:])
