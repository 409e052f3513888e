"""Replay core CPU time of one tree, for side-by-side comparisons of two commits (e.g. two git worktrees):

    python scripts/replay_core_time.py TREE STRATEGY     # STRATEGY: ema_cross, mean_reversion or obi

Feeds bench/bench_replay.py's 1 M quotes over 10 symbols through that tree's ReplayCore five times and prints the
best CPU time of the replay thread (time.thread_time, so load on the other core counts less) and the orders sent.
Run it alternately on the two trees; only ratios from one sitting mean much.
"""
import gc
import json
import sys
import time

tree, name = sys.argv[1], sys.argv[2]
sys.path[:0] = [tree + "/bench", tree]
import bench_replay as B  # noqa: E402  (the tree's own bench and package)

PARAMS = {"ema_cross": {"fast": 20, "slow": 100, "unit": 0.01}, "obi": {"threshold": 0.1, "exit": 0.0},
          "mean_reversion": {}}


def make():
    c = B.make_core()
    cfg = c.cfg.__class__(B.strategy.resolve(name, PARAMS[name]), c.cfg.sim, c.cfg.risk, out_dir="")
    return B.replay.ReplayCore(c.table, cfg)


quotes = B.make_quotes()
make().feed(quotes[:20000])        # compile / load the cache outside the timing
best, core = 1e9, None
for _ in range(5):
    core = make()
    gc.collect()
    gc.freeze()
    t = time.thread_time()
    core.feed(quotes)
    core.finish()
    best = min(best, time.thread_time() - t)
    gc.unfreeze()
print(json.dumps({"tree": tree, "strategy": name, "best_s": round(best, 4),
                  "M_ticks_per_s": round(len(quotes) / best / 1e6, 2),
                  "orders": int(core.sim.ctr[B.simexec.C_SUBMITTED])}))
