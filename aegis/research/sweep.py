"""`python -m aegis sweep`: a strategy over a parameter grid or a random / Bayesian (Optuna TPE) search, on days and
symbols of the market-data store, each trial one in-process replay (aegis.replay.run.run), run by Ray Tune on a
local Ray runtime (started and stopped here, one trial per core) or an existing cluster (--address).

What comes from Ray Tune and Optuna, not from this module: the search (grid / random variant generation, Optuna's
TPE sampler), the scheduling of trials onto workers, early stopping (ASHA), failure isolation (a trial that raises is
recorded as errored and the others go on), experiment state on disk for --resume, and SIGINT handling (Ctrl-C stops
the run; the trials already finished are kept and written out).

Outputs in --out: results.csv (one row per trial: parameters, score, PnL, drawdown, Sharpe, turnover, orders, fees,
fills, learning metrics when the strategy reports a "model" section, error text of failed trials), sweep.png (a
heatmap of the score when two parameters vary, else parallel coordinates), ray/ (Tune's experiment state and each
trial's replay outputs). With --walk-forward TRAIN/TEST: walkforward.csv with the TEST-window figures of the
parameters chosen on each training window, and the per-window searches' results.

Trial modes: by default a trial is ONE replay over all its days (positions carry across midnight). With
--scheduler asha a trial replays its days one by one as daily sessions (flat at each day's end) and reports after
each day, so ASHA can stop weak trials after a few days; the trial's figures are then those of the daily sessions
chained (PnL and fees summed, drawdown and Sharpe of the chained equity curve).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aegis.core.config import ConfigError
from aegis.replay import store as S
from aegis.replay.csvimport import InputError

# metric name -> (summary path, direction of better)
METRICS = {
    "net": (("pnl", "net"), "max"),
    "sharpe": (("sharpe",), "max"),
    "max_drawdown": (("max_drawdown",), "min"),
    "realized": (("pnl", "realized"), "max"),
    "fees": (("pnl", "fees"), "min"),
    "turnover": (("turnover",), "max"),
}
FIGURES = ("net", "realized", "unrealized", "fees", "max_drawdown", "sharpe", "turnover", "orders", "fills",
           "signals", "refused", "records", "days", "elapsed_s")
RESULTS = "results.csv"
WALK = "walkforward.csv"
PLOT = "sweep.png"
DEFAULT_OUT = "sweep-out"


class SweepError(InputError):
    """Bad sweep input: one line, exit 2."""


# ============================================================================================== one trial
def _value(d: dict, path: tuple):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def figures(summary: dict) -> dict:
    """The results-table figures of one replay summary (learning metrics as model_<name> when present)."""
    c = summary["counts"]
    out = {"net": summary["pnl"]["net"], "realized": summary["pnl"]["realized"],
           "unrealized": summary["pnl"]["unrealized"], "fees": summary["pnl"]["fees"],
           "max_drawdown": summary["max_drawdown"], "sharpe": summary["sharpe"], "turnover": summary["turnover"],
           "orders": c["orders_accepted"], "fills": c["fills"], "signals": c["signals"],
           "refused": c["orders_refused_by_risk"], "records": c["records"]}
    model = summary.get("model")
    if isinstance(model, dict):
        for k, v in model.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"model_{k}"] = v
    return out


def replay_argv(ctx: dict, params: dict, files: list[str], out_dir: str) -> list[str]:
    """The `python -m aegis replay` command line of one trial (so a trial is reproducible by hand)."""
    argv = [*files, "--strategy", ctx["strategy"], "--out", out_dir, "--no-progress", *ctx["replay_args"]]
    for k, v in {**ctx["fixed"], **params}.items():
        argv += ["--param", f"{k}={_show(v)}"]
    return argv


def _show(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)
    return str(v)


def evaluate(ctx: dict, params: dict, files: list[str], out_dir: str | None) -> tuple[dict, np.ndarray]:
    """One replay in this process: (figures, equity curve). Output files go to out_dir only when the sweep keeps
    them (writing a day's 1-second equity CSV costs more than replaying the day). Raises what replay raises."""
    import dataclasses
    from aegis.replay import metrics
    from aegis.replay import run as replay
    args = replay.build_parser().parse_args(replay_argv(ctx, params, files, out_dir or "unused"))
    cfg = replay.configure(args)
    if not out_dir:
        cfg = dataclasses.replace(cfg, out_dir="")
    sinks = []

    def make_sink(*a):
        sinks.append(metrics.Collector(*a))
        return sinks[-1]

    summary = replay.run(args.files, cfg, args.symbol, args.format, args.symbols, args.exchange_info,
                         warn=lambda m: print(m, file=sys.stderr), make_sink=make_sink)
    return figures(summary), sinks[0].equity_curve()[1]


def chain_days(day_figs: list[dict], curves: list[np.ndarray], sample_ns: int) -> dict:
    """Figures of daily sessions taken one after the other: sums, and drawdown / Sharpe of the chained curve."""
    from aegis.replay import metrics
    out = {k: sum(f[k] for f in day_figs) for k in ("net", "realized", "unrealized", "fees", "turnover", "orders",
                                                   "fills", "signals", "refused", "records")}
    base = 0.0
    parts = []
    for c in curves:
        if len(c):
            parts.append(c + base)
            base = float(parts[-1][-1])
    eq = np.concatenate(parts) if parts else np.zeros(0)
    out["max_drawdown"] = metrics.max_drawdown(eq)[0]
    out["sharpe"] = metrics.sharpe(eq, sample_ns)
    for k in {k for f in day_figs for k in f if k.startswith("model_")}:
        out[k] = day_figs[-1].get(k)   # a learning strategy's state is per session: the last day's figures
    return out


def score_of(figs: dict, metric: str) -> float:
    v = figs.get(metric)
    return float("nan") if v is None else float(v)


def trainable(config: dict, ctx: dict) -> None:
    """Ray Tune function trainable: one trial. Reports once (one replay) or once per day (ASHA mode)."""
    from ray import tune
    S.trust(ctx["verified"])
    params = {k: config[k] for k in ctx["param_names"]}
    trial_dir = Path(tune.get_context().get_trial_dir())
    t0 = time.monotonic()
    days = ctx["files_by_day"]
    if not ctx["per_day"]:
        figs, _ = evaluate(ctx, params, [f for d in days for f in d], _out(ctx, trial_dir / "replay"))
        figs.update(days=len(days), elapsed_s=round(time.monotonic() - t0, 3), score=score_of(figs, ctx["metric"]))
        tune.report(figs)
        return
    day_figs, curves = [], []
    for i, files in enumerate(days):
        f, curve = evaluate(ctx, params, files, _out(ctx, trial_dir / f"replay-day{i:03d}"))
        day_figs.append(f)
        curves.append(curve)
        figs = chain_days(day_figs, curves, ctx["sample_ns"])
        figs.update(days=i + 1, elapsed_s=round(time.monotonic() - t0, 3), score=score_of(figs, ctx["metric"]))
        tune.report(figs)


def _out(ctx: dict, path: Path) -> str | None:
    return str(path) if ctx["keep_outputs"] else None


def _evaluate_task(ctx: dict, params: dict, files_by_day: list[list[str]], out_dir: str) -> dict:
    """A walk-forward test window as a Ray task: figures, or {"error": one line}."""
    S.trust(ctx["verified"])
    t0 = time.monotonic()
    try:
        figs, _ = evaluate(ctx, params, [f for d in files_by_day for f in d], _out(ctx, Path(out_dir)))
    except Exception as e:  # recorded in the table; the other windows go on
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    figs.update(days=len(files_by_day), elapsed_s=round(time.monotonic() - t0, 3))
    return figs


# ============================================================================================== search space
@dataclass(frozen=True)
class Dim:
    name: str
    values: tuple = ()           # --grid: explicit values
    lo: float | None = None      # --range: bounds
    hi: float | None = None
    log: bool = False
    integer: bool = False


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise SweepError(f"{what}: {text!r} is not a number") from None
    if v != v or math.isinf(v):
        raise SweepError(f"{what}: {text!r} is not a finite number")
    return v


def parse_dims(strategy_name: str, grids: list[str], ranges: list[str]) -> list[Dim]:
    from aegis.brain import strategy
    spec = strategy.REGISTRY.get(strategy_name)
    if spec is None:
        raise SweepError(f"unknown strategy {strategy_name!r} (known: {', '.join(strategy.names())})")
    kinds = {p.name: p.kind for p in spec.params}
    dims: dict[str, Dim] = {}

    def key(item, opt):
        k, eq, v = item.partition("=")
        k = k.strip()
        if not eq or not k or not v.strip():
            raise SweepError(f"{opt} takes NAME=..., got {item!r}")
        if k not in kinds:
            raise SweepError(f"{opt} {item}: strategy {strategy_name} has no parameter {k} "
                             f"(known: {', '.join(sorted(kinds))})")
        if k in dims:
            raise SweepError(f"parameter {k} given twice")
        return k, v.strip()

    for item in grids:
        k, v = key(item, "--grid")
        vals = [x.strip() for x in v.split(",") if x.strip()]
        if kinds[k] in ("int", "float"):
            nums = [_number(x, f"--grid {k}") for x in vals]
            vals = [int(x) if kinds[k] == "int" and x.is_integer() else x for x in nums]
        dims[k] = Dim(k, tuple(vals))
    for item in ranges:
        k, v = key(item, "--range")
        bits = v.split(":")
        if len(bits) not in (2, 3) or (len(bits) == 3 and bits[2] != "log"):
            raise SweepError(f"--range {item}: expected {k}=LOW:HIGH or {k}=LOW:HIGH:log")
        if kinds[k] not in ("int", "float"):
            raise SweepError(f"--range {item}: {k} is a {kinds[k]} parameter; list its values with --grid")
        lo, hi = _number(bits[0], f"--range {k}"), _number(bits[1], f"--range {k}")
        log = len(bits) == 3
        if not lo < hi or (log and lo <= 0):
            raise SweepError(f"--range {item}: need LOW < HIGH{' and LOW > 0 for log' if log else ''}")
        dims[k] = Dim(k, lo=lo, hi=hi, log=log, integer=kinds[k] == "int")
    if not dims:
        raise SweepError("nothing to sweep: give --grid NAME=V1,V2,... and/or --range NAME=LOW:HIGH[:log]")
    return list(dims.values())


def tune_space(dims: list[Dim], search: str) -> dict:
    from ray import tune
    space = {}
    for d in dims:
        if d.values:
            space[d.name] = tune.grid_search(list(d.values)) if search == "grid" else tune.choice(list(d.values))
        elif search == "grid":
            raise SweepError(f"--range {d.name}: a grid needs explicit values (--grid {d.name}=V1,V2,...); "
                             "ranges are for --search random or optuna")
        elif d.integer:
            lo, hi = int(math.ceil(d.lo)), int(math.floor(d.hi)) + 1
            space[d.name] = tune.lograndint(lo, hi) if d.log else tune.randint(lo, hi)
        else:
            space[d.name] = tune.loguniform(d.lo, d.hi) if d.log else tune.uniform(d.lo, d.hi)
    return space


# ============================================================================================== running a search
def _start_ray(args) -> None:
    import ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    if args.address:
        ray.init(address=args.address, logging_level="WARNING", log_to_driver=False)
    else:
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                 object_store_memory=100 << 20)


def _tuner(ctx: dict, dims: list[Dim], args, name: str, exp_root: Path, files_by_day, resume: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    ctx = dict(ctx, files_by_day=files_by_day)
    fn = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"cpu": 1})
    path = exp_root / name
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=fn, resume_unfinished=True, resume_errored=False), True
    mode = METRICS[args.metric][1]
    if args.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        search_alg = OptunaSearch(metric="score", mode=mode, seed=args.seed_search)
    elif args.search == "random":
        from ray.tune.search import BasicVariantGenerator
        search_alg = BasicVariantGenerator(random_state=args.seed_search)
    else:
        search_alg = None
    if args.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="days", max_t=len(files_by_day), grace_period=args.grace_days,
                                  reduction_factor=2)
    else:
        scheduler = FIFOScheduler()
    tc = tune.TuneConfig(metric="score", mode=mode, search_alg=search_alg, scheduler=scheduler,
                         num_samples=1 if args.search == "grid" else args.trials,
                         max_concurrent_trials=args.workers, reuse_actors=True,
                         trial_dirname_creator=lambda t: t.trial_id)
    rc = tune.RunConfig(name=name, storage_path=str(exp_root), verbose=0,
                        failure_config=tune.FailureConfig(max_failures=0, fail_fast=False))
    return tune.Tuner(fn, param_space=tune_space(dims, args.search), tune_config=tc, run_config=rc), False


def _error_line(err) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    for ln in reversed(lines):   # the remote exception's own message, not Ray's wrapping
        if ":" in ln and not ln.startswith(("File ", "During handling", "The above exception", "Traceback")):
            return ln[:300]
    return (lines[-1] if lines else type(err).__name__)[:300]


def rows_of(grid, dims: list[Dim], total_days: int) -> list[dict]:
    rows = []
    for r in grid:
        m = r.metrics or {}
        cfg = r.config or {}
        row = {"trial": m.get("trial_id") or Path(str(r.path)).name}
        row.update({d.name: cfg.get(d.name) for d in dims})
        if r.error is not None:
            row["status"] = "error"
            row["error"] = _error_line(r.error)
        elif "score" not in m:
            row["status"] = "not run"
        elif m.get("days", total_days) < total_days:
            row["status"] = f"stopped after {m.get('days')} day(s)"
        else:
            row["status"] = "ok"
        for k in ("score", *FIGURES):
            if k in m:
                row[k] = m[k]
        row.update({k: v for k, v in m.items() if k.startswith("model_")})
        rows.append(row)
    return rows


def run_search(ctx: dict, dims: list[Dim], args, name: str, exp_root: Path, files_by_day, resume: bool,
               say) -> tuple[list[dict], bool]:
    """One Tune run: (rows, interrupted)."""
    from ray import tune
    tuner, restored = _tuner(ctx, dims, args, name, exp_root, files_by_day, resume)
    if restored:
        say(f"{name}: resuming the stopped run in {exp_root / name}")
    interrupted = False
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
        grid = tune.Tuner.restore(str(exp_root / name), trainable=trainable).get_results()
    rows = rows_of(grid, dims, len(files_by_day))
    return rows, interrupted or unfinished(rows, planned_trials(dims, args))


def planned_trials(dims: list[Dim], args) -> int:
    """How many trials the search was asked for: the grid's size, or --trials."""
    if args.search != "grid":
        return args.trials
    return math.prod(len(d.values) for d in dims)


def unfinished(rows: list[dict], planned: int) -> bool:
    """A run that stopped before the end. Tune catches Ctrl-C itself and returns normally, with the trials it had
    not started either listed as not run or, when it had not generated them yet, missing."""
    return len(rows) < planned or any(r["status"] == "not run" for r in rows)


def best(rows: list[dict], metric: str, n: int = 1) -> list[dict]:
    sign = -1.0 if METRICS[metric][1] == "max" else 1.0
    ok = [r for r in rows if r.get("status") == "ok" and r.get("score") is not None and r["score"] == r["score"]]
    return sorted(ok, key=lambda r: sign * r["score"])[:n]


# ============================================================================================== outputs
def write_table(rows: list[dict], path: Path, first: list[str]) -> None:
    cols = list(first)
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    os.replace(tmp, path)


def read_table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plot(rows: list[dict], dims: list[Dim], metric: str, path: Path, title: str) -> Path | None:
    """Heatmap of the score over two varied parameters, else parallel coordinates of all of them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in rows if r.get("score") is not None and r["score"] == r["score"] and r.get("status") == "ok"]
    if not ok:
        return None
    names = [d.name for d in dims]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=100)
    xs = sorted({r[names[0]] for r in ok}, key=_sort_key)
    ys = sorted({r[names[-1]] for r in ok}, key=_sort_key)
    cmap = plt.get_cmap("RdYlGn" if METRICS[metric][1] == "max" else "RdYlGn_r")
    if len(names) == 2 and len(xs) <= 40 and len(ys) <= 40 and len(ok) >= 0.5 * len(xs) * len(ys):   # a grid
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in ok:
            grid[ys.index(r[names[1]]), xs.index(r[names[0]])] = r["score"]
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="RdYlGn" if METRICS[metric][1] == "max" else
                       "RdYlGn_r")
        ax.set_xticks(range(len(xs)), [_fmt(x) for x in xs], rotation=45)
        ax.set_yticks(range(len(ys)), [_fmt(y) for y in ys])
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        for (i, j), v in np.ndenumerate(grid):
            if v == v and grid.size <= 200:
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label=metric)
    elif len(names) == 2 and all(isinstance(r[n], (int, float)) for r in ok for n in names):   # sampled points
        sc = ax.scatter([r[names[0]] for r in ok], [r[names[1]] for r in ok], c=[r["score"] for r in ok], cmap=cmap,
                        s=60, edgecolors="k")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        fig.colorbar(sc, ax=ax, label=metric)
    else:
        cols = names + ["score"]
        data = np.array([[_as_float(r[c]) for c in cols] for r in ok])
        lo, hi = np.nanmin(data, axis=0), np.nanmax(data, axis=0)
        norm = (data - lo) / np.where(hi > lo, hi - lo, 1.0)
        s = norm[:, -1]
        for k in np.argsort(s):
            ax.plot(range(len(cols)), norm[k], color=cmap(s[k]), alpha=0.7, lw=1.2)
        ax.set_xticks(range(len(cols)), [f"{c}\n{_fmt(lo[i])}..{_fmt(hi[i])}" for i, c in enumerate(cols)])
        ax.set_yticks([])
        ax.set_ylabel(f"each line: one trial (colour: {metric})")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _as_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _sort_key(v):
    return (0, float(v)) if isinstance(v, (int, float)) else (1, str(v))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_rows(rows: list[dict], names: list[str], n: int) -> str:
    cols = ["trial", *names, "score", "net", "sharpe", "max_drawdown", "turnover", "orders", "fees"]
    table = [[_fmt(r.get(c)) if r.get(c) is not None else "-" for c in cols] for r in rows[:n]]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(t, widths)) for t in table]
    return "\n".join(lines) + "\n"


# ============================================================================================== CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise SweepError(message)


EXAMPLES = """examples:
  python -m aegis data import data/BTCUSDT-bookTicker-2024-01-*.zip --to store
  python -m aegis sweep --data store --strategy ema_cross --grid fast=5,10,20 --grid slow=50,100,200
  python -m aegis sweep --data store --strategy obi --search optuna --trials 64 \\
      --range threshold=0.3:0.9 --range smooth=2:200:log --metric sharpe --walk-forward 20/5
  python -m aegis sweep --data /shared/store --address ray://head:10001 --search random --trials 500 ...
"""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m aegis sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Run a strategy over many parameter sets on days of the market-data store, each trial "
                            "one replay, on Ray Tune (local cores by default, or a Ray cluster). Needs the research "
                            "extra: pip install 'aegis-engine[research]'.", epilog=EXAMPLES)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="market-data store (python -m aegis data import); on a cluster a path every node sees")
    p.add_argument("--strategy", default="ema_cross", help="strategy name (default ema_cross)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,..",
                   help="values of a parameter (grid search; a categorical choice for random/optuna)")
    p.add_argument("--range", action="append", default=[], metavar="NAME=LOW:HIGH[:log]",
                   help="interval of a parameter for --search random / optuna")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="fixed strategy parameter")
    p.add_argument("--search", choices=("grid", "random", "optuna"), default=None,
                   help="grid (default with --grid only), random, or optuna (Bayesian TPE; default with --range)")
    p.add_argument("--trials", type=int, default=20, help="trials of a random / optuna search (default 20)")
    p.add_argument("--metric", choices=tuple(METRICS), default="net",
                   help="what the search optimises and the best trials are ranked by (default net PnL)")
    p.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo",
                   help="asha: replay days as daily sessions and stop weak trials early (Ray Tune ASHA)")
    p.add_argument("--grace-days", type=int, default=1, help="ASHA: days every trial gets before it can be stopped")
    p.add_argument("--symbols", default=None, help="comma-separated symbols of the store (default: all)")
    p.add_argument("--from", dest="start", default=None, metavar="YYYY-MM-DD", help="first day (default: first)")
    p.add_argument("--to", dest="end", default=None, metavar="YYYY-MM-DD", help="last day, inclusive")
    p.add_argument("--walk-forward", default=None, metavar="TRAIN/TEST",
                   help="days per training and test window: choose parameters on each training window, report "
                        "them on the next unseen test window")
    p.add_argument("--workers", type=int, default=None,
                   help="trials at once (default: this box's cores for the local Ray runtime, which gets this many "
                        "CPUs; with --address, every CPU of the cluster)")
    p.add_argument("--address", default=None, metavar="ray://HOST:PORT",
                   help="run on an existing Ray cluster instead of a local runtime")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue the stopped sweep in --out")
    p.add_argument("--keep-outputs", action="store_true",
                   help="write each trial's replay outputs (trades, orders, equity CSV/PNG) into its trial directory "
                        "(off by default: the results table holds every trial's figures)")
    p.add_argument("--top", type=int, default=5, help="best trials printed (default 5)")
    p.add_argument("--seed-search", type=int, default=1, help="seed of the random / optuna search (default 1)")
    g = p.add_argument_group("replay options, the same for every trial (see python -m aegis replay --help)")
    for opt in ("--config", "--latency", "--latency-hist", "--latency-stage", "--slippage-bps", "--maker-fee",
                "--taker-fee", "--seed", "--sample", "--exchange-info"):
        g.add_argument(opt, default=None)
    g.add_argument("--risk", action="append", default=[], metavar="K=V")
    g.add_argument("--brain", action="append", default=[], metavar="K=V")
    return p


def _replay_args(args) -> list[str]:
    out = []
    for name in ("config", "latency", "latency_hist", "latency_stage", "slippage_bps", "maker_fee", "taker_fee",
                 "seed", "sample", "exchange_info"):
        v = getattr(args, name)
        if v is not None:
            out += ["--" + name.replace("_", "-"), str(v)]
    for v in args.risk:
        out += ["--risk", v]
    for v in args.brain:
        out += ["--brain", v]
    return out


def _windows(days: list[str], spec: str) -> list[tuple[list[str], list[str]]]:
    train, slash, test = spec.partition("/")
    try:
        train, test = int(train), int(test)
    except ValueError:
        raise SweepError(f"--walk-forward takes TRAIN/TEST in days, e.g. 20/5, got {spec!r}") from None
    if not slash or train < 1 or test < 1:
        raise SweepError(f"--walk-forward takes TRAIN/TEST in days (both >= 1), got {spec!r}")
    out = []
    k = 0
    while k + train + test <= len(days):
        out.append((days[k:k + train], days[k + train:k + train + test]))
        k += test
    if not out:
        raise SweepError(f"--walk-forward {spec}: the selection holds {len(days)} day(s), fewer than one training "
                         f"plus one test window ({train + test})")
    return out


def prepare(args, say):
    """Validated inputs before any Ray start: (store, days, files per day, dims, ctx)."""
    data = Path(args.data).resolve()
    if not (data / S.MANIFEST).is_file():
        raise SweepError(f"{args.data}: not a market-data store; create one with `python -m aegis data import`")
    st = S.Store(data)
    syms = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    if syms:
        missing = sorted(set(syms) - set(st.symbols()))
        if missing:
            raise SweepError(f"{args.data}: no data for {', '.join(missing)} (store has {', '.join(st.symbols())})")
    parts = st.select(syms, args.start, args.end)
    if not parts:
        raise SweepError(f"{args.data}: no partitions for the chosen symbols and days")
    days = sorted({p.day for p in parts})
    by_day = {d: [str(p.path) for p in parts if p.day == d] for d in days}
    if args.search is None:
        args.search = "optuna" if args.range else "grid"
    if args.workers is None and not args.address:
        args.workers = os.cpu_count() or 1
    if args.trials < 1 or (args.workers is not None and args.workers < 1) or args.top < 0 or args.grace_days < 1:
        raise SweepError("--trials, --workers and --grace-days must be >= 1")
    if args.walk_forward:
        _windows(days, args.walk_forward)
    from aegis.brain import strategy
    dims = parse_dims(args.strategy, args.grid, args.range)
    if args.search == "grid":
        for d in dims:
            if not d.values:
                raise SweepError(f"--range {d.name}: a grid needs explicit values (--grid {d.name}=V1,V2,...); "
                                 "ranges are for --search random or optuna")
    fixed = strategy.parse_param_args(args.param)
    clash = sorted(set(fixed) & {d.name for d in dims})
    if clash:
        raise SweepError(f"parameter {', '.join(clash)} is both fixed (--param) and swept")
    ctx = {"strategy": args.strategy, "fixed": fixed, "replay_args": _replay_args(args), "param_names":
           [d.name for d in dims], "per_day": args.scheduler == "asha", "metric": args.metric,
           "keep_outputs": args.keep_outputs}
    # the replay options, checked once here so a typo is one line now rather than an error in every trial
    from aegis.replay import run as replay
    rargs = replay.build_parser().parse_args(replay_argv(ctx, {}, by_day[days[0]], str(Path(args.out) / "probe")))
    cfg = replay.configure(rargs)
    ctx["sample_ns"] = cfg.sim.sample_ns
    t0 = time.monotonic()
    S.verify(parts)
    ctx["verified"] = S.identities(parts)
    say(f"data: {len(parts)} partition(s), {sum(p.rows for p in parts):,} rows, {len(days)} day(s) "
        f"{days[0]}..{days[-1]}, checksums OK ({time.monotonic() - t0:.2f} s)")
    return days, by_day, dims, ctx


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        args = build_parser().parse_args(argv)
        days, by_day, dims, ctx = prepare(args, say)
        try:
            import ray
        except ModuleNotFoundError:
            raise SweepError("the sweep needs the research extra: pip install 'aegis-engine[research]'") from None
    except (SweepError, ConfigError, InputError) as e:
        print(f"aegis sweep: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    exp_root = out / "ray"
    if not args.resume and exp_root.exists() and any(exp_root.iterdir()):
        print(f"aegis sweep: error: {out} holds a previous sweep; continue it with --resume or choose another --out",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        _start_ray(args)
    except (ConnectionError, RuntimeError, ValueError) as e:   # what ray.init raises for an unreachable cluster
        ray.shutdown()
        print(f"aegis sweep: error: cannot start or reach Ray{' at ' + args.address if args.address else ''}: "
              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr)
        return 2
    try:
        if args.walk_forward:
            rc = _walk_forward(args, days, by_day, dims, ctx, out, exp_root, say)
        else:
            rc = _sweep(args, days, by_day, dims, ctx, out, exp_root, say)
    finally:
        ray.shutdown()
    say(f"sweep: {time.monotonic() - t0:.1f} s wall; results in {out}/")
    return rc


def _sweep(args, days, by_day, dims, ctx, out, exp_root, say) -> int:
    t0 = time.monotonic()
    rows, interrupted = run_search(ctx, dims, args, "sweep", exp_root, [by_day[d] for d in days], args.resume, say)
    el = time.monotonic() - t0
    names = [d.name for d in dims]
    ranked = best(rows, args.metric, len(rows))
    rest = [r for r in rows if r not in ranked]
    write_table(ranked + rest, out / RESULTS, ["trial", "status", *names, "score", *FIGURES, "error"])
    png = plot(rows, dims, args.metric, out / PLOT, f"{args.strategy}: {args.metric}, {days[0]}..{days[-1]}")
    done = sum(1 for r in rows if r["status"] != "not run")
    errs = [r for r in rows if r["status"] == "error"]
    say(f"sweep: {done} trial(s) in {el:.1f} s ({done / el * 60 if el > 0 else 0:.1f} trials/min, "
        f"{args.workers if not args.address else 'cluster'} worker(s)); {len(errs)} failed")
    for r in errs[:5]:
        say(f"  trial {r['trial']} failed: {r.get('error')}")
    print(f"best trials by {args.metric} ({days[0]}..{days[-1]}, {len(days)} day(s)):")
    sys.stdout.write(format_rows(ranked, names, args.top))
    print(f"table: {out / RESULTS}" + (f"   plot: {png}" if png else ""))
    if interrupted:
        say("sweep: stopped before the end; finished trials are kept. Continue with --resume")
        return 130
    return 0


def _walk_forward(args, days, by_day, dims, ctx, out, exp_root, say) -> int:
    import ray
    windows = _windows(days, args.walk_forward)
    names = [d.name for d in dims]
    path = out / WALK
    done = {int(r["window"]): r for r in read_table(path)} if args.resume and path.exists() else {}
    rows = [done[k] for k in sorted(done)]
    task = ray.remote(num_cpus=1)(_evaluate_task)
    chosen = []
    for w, (train, test) in enumerate(windows):
        if w in done:
            continue
        name = f"window{w:03d}-train"
        trials, interrupted = run_search(ctx, dims, args, name, exp_root, [by_day[d] for d in train], args.resume,
                                         say)
        write_table(best(trials, args.metric, len(trials)) + [r for r in trials if r["status"] != "ok"],
                    out / f"{name}.csv", ["trial", "status", *names, "score", *FIGURES, "error"])
        if interrupted:
            say(f"sweep: stopped during window {w}; finished windows are in {path}. Continue with --resume")
            break
        top = best(trials, args.metric, 1)
        if not top:
            rows.append({"window": w, "train": f"{train[0]}..{train[-1]}", "test": f"{test[0]}..{test[-1]}",
                         "error": "no training trial succeeded"})
            continue
        params = {n: top[0][n] for n in names}
        ref = task.remote(ctx, params, [by_day[d] for d in test], str(exp_root / f"window{w:03d}-test"))
        chosen.append((w, train, test, params, top[0]["score"], ref))
    else:
        interrupted = False
    for w, train, test, params, train_score, ref in chosen:
        figs = ray.get(ref)
        row = {"window": w, "train": f"{train[0]}..{train[-1]}", "test": f"{test[0]}..{test[-1]}", **params,
               "train_score": train_score, "test_score": score_of(figs, args.metric) if "error" not in figs else None}
        row.update(figs)
        rows.append(row)
    rows.sort(key=lambda r: int(r["window"]))
    write_table(rows, path, ["window", "train", "test", *names, "train_score", "test_score", *FIGURES, "error"])
    print(f"walk-forward {args.walk_forward} days by {args.metric}: TEST-window figures of the parameters chosen on "
          f"each training window")
    cols = ["window", "train", "test", *names, "train_score", "test_score", "net", "sharpe", "max_drawdown", "orders"]
    print("  ".join(cols))
    for r in rows:
        print("  ".join(_fmt(_num(r.get(c))) if r.get(c) not in (None, "") else "-" for c in cols))
    nets = [_as_float(r.get("net")) for r in rows if r.get("net") not in (None, "")]
    if nets:
        print(f"test windows: {len(nets)}, total net {sum(nets):.4f}, mean net per window {np.mean(nets):.4f}, "
              f"windows with net > 0: {sum(1 for x in nets if x > 0)}")
    print(f"table: {path}")
    return 130 if interrupted else 0


def _num(v):
    if isinstance(v, str):
        try:
            f = float(v)
            return int(f) if f.is_integer() and "." not in v else f
        except ValueError:
            return v
    return v


if __name__ == "__main__":
    sys.exit(main())
