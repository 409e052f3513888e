"""A/B of the in-process pipeline bench (bench_pipeline.py::test_in_process_tick_to_trade): runs of several source
trees (e.g. `git archive <commit> | tar -x -C DIR` of each commit) alternated in rotating order, each with its own
PYTHONPATH; per-run tick-to-trade p50/p99 and the sender's prepare split, then the medians. Two warm-up runs per tree
first (Numba's cache; a cold one may fail on a busy box and is ignored).
    python bench/order_path/ab_pipeline.py TREE_A TREE_B [TREE_C ...] ROUNDS rest|ws"""
import json, os, re, subprocess, sys, statistics, tempfile, time
trees = sys.argv[1:-2]; rounds = int(sys.argv[-2]); transport = sys.argv[-1]
orders = os.environ.get("AEGIS_BENCH_ORDERS", "2000")
res = {t: [] for t in trees}
def run(tree, warm=False):
    out = os.path.join(tempfile.gettempdir(), f"ab-{os.getpid()}.json")
    env = dict(os.environ, PYTHONPATH=tree, AEGIS_BENCH_ORDERS="100" if warm else orders)
    la = os.getloadavg()[0]
    p = subprocess.run(["timeout", "900", sys.executable, "-m", "pytest", "bench/bench_pipeline.py", "-k",
                        f"in_process and {transport}", "-s", "-q", "-p", "no:cacheprovider", "--timeout", "800",
                        f"--benchmark-json={out}"], cwd=tree, env=env, capture_output=True, text=True)
    if warm: return
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-2000:]); return
    info = json.load(open(out))["benchmarks"][0]["extra_info"]
    m = re.search(r"prepare \(sign\+journal\) p50 ([\d.]+) p99 ([\d.]+)", p.stdout)
    r = dict(p50=info["tick_to_trade_p50_us"], p99=info["tick_to_trade_p99_us"],
             hw50=info["wire_p50_us"],
             prep50=float(m.group(1)), prep99=float(m.group(2)), load=la)
    res[tree].append(r)
    print(f"{os.path.basename(tree):12s} load {la:5.2f}  t2t p50 {r['p50']:6.1f} p99 {r['p99']:8.1f}  "
          f"prepare p50 {r['prep50']:5.1f} p99 {r['prep99']:6.1f}", flush=True)
for t in trees: run(t, warm=True); run(t, warm=True)
for i in range(rounds):
    k = i % len(trees)
    for t in (trees[k:] + trees[:k]): run(t)
for t in trees:
    rs = res[t]
    print(f"MEDIAN {t}: t2t p50 {statistics.median(r['p50'] for r in rs):.1f} p99 "
          f"{statistics.median(r['p99'] for r in rs):.1f}  prepare p50 {statistics.median(r['prep50'] for r in rs):.1f} "
          f"p99 {statistics.median(r['prep99'] for r in rs):.1f}  load {min(r['load'] for r in rs):.2f}-{max(r['load'] for r in rs):.2f}")
