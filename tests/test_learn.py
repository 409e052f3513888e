"""Online learning (aegis.brain.learn, strategy `online`): model updates against independent references, no
look-ahead, adaptation to a regime change, model files, replay outputs, orders through risk."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aegis.brain import learn, strategy
from aegis.core.records import KIND_QUOTE, KIND_TRADE, MARKET_DTYPE

T0_NS = 1_704_067_200_000_000_000
STEP_NS = 10_000_000   # 10 ms between records


def stream(n, p=0.8, flip_at=None, seed=1, informative=True, trades=False):
    """Quotes of one symbol where the top-of-book imbalance q of record i predicts the direction of the mid's move
    at record i + 1 (same sign with probability p; opposite sign after flip_at). informative=False: the move is a
    fair coin, independent of everything. trades: an aggTrade between quotes (side = sign of q, no information)."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(-0.9, 0.9, n)
    follow = rng.random(n) < p
    coin = rng.random(n) < 0.5
    per = 2 if trades else 1
    rec = np.zeros(n * per, MARKET_DTYPE)
    mid = 1000.0
    for i in range(n):
        j = i * per
        r = rec[j]
        r["kind"] = KIND_QUOTE
        r["exch_ts"] = T0_NS + i * STEP_NS
        r["bid_px"], r["ask_px"] = mid - 0.05, mid + 0.05
        r["bid_qty"], r["ask_qty"] = 1 + q[i], 1 - q[i]
        if trades:
            t = rec[j + 1]
            t["kind"] = KIND_TRADE
            t["exch_ts"] = T0_NS + i * STEP_NS + 1
            t["px"], t["qty"], t["side"] = mid, 0.5, 1 if rng.random() < 0.5 else -1
        if informative:
            up = (q[i] > 0) == follow[i]
            if flip_at is not None and i >= flip_at:
                up = not up
        else:
            up = coin[i]
        mid += 0.1 if up else -0.1
    return rec


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Compile (or load from numba's cache) the learning kernels once per module, before the per-test time limit
    starts: a cold compile of the strategy dispatch takes tens of seconds on a busy machine."""
    for model in ("logit", "rls"):
        cfg = strategy.resolve("online", {"model": model})
        params = cfg.array()
        ss = strategy.strategy_state(cfg.id, params, strategy.make_state(cfg.id, 1, params))
        strategy.run_batch(ss, stream(10), 10, strategy.new_signals(10))
    row = np.zeros(learn.ROW_SLOTS)
    learn.logit_step(row, learn.F_Z, 1.0, 0.1, 0.0, learn.OPT_SGD)
    learn.rls_step(row, learn.F_Z, 1.0, 0.99, 1.0)


def online(**values):
    cfg = strategy.resolve("online", {"trade": "false", **values})
    params = cfg.array()
    return cfg, params, strategy.make_state(cfg.id, 1, params)


def run(cfg, params, state, rec):
    out = strategy.new_signals(len(rec))
    return strategy.run_batch(strategy.strategy_state(cfg.id, params, state), rec, len(rec), out)


# ============================================================================================ references
def test_logistic_sgd_and_adagrad_updates_match_river_to_1e9():
    river = pytest.importorskip("river")
    from river import linear_model, optim
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(400, learn.NF))
    xs[:, 0] = 1.0
    ys = rng.random(400) < 1 / (1 + np.exp(-(xs @ rng.normal(size=learn.NF))))
    names = [f"f{j}" for j in range(learn.NF)]
    for opt_name, opt, ref_opt in (("sgd", learn.OPT_SGD, optim.SGD(0.05)),
                                   ("adagrad", learn.OPT_ADAGRAD, optim.AdaGrad(0.05))):
        # river's separate intercept is switched off: our intercept is feature 0 (constant 1), a weight like any
        ref = linear_model.LogisticRegression(optimizer=ref_opt, l2=0.01, intercept_lr=0.0)
        row = np.zeros(learn.ROW_SLOTS)
        for x, y in zip(xs, ys):
            row[learn.F_Z:learn.F_Z + learn.NF] = x
            xd = dict(zip(names, x.tolist()))
            p_ref = ref.predict_proba_one(xd)[True]
            p = learn.logit_step(row, learn.F_Z, float(y), 0.05, 0.01, opt)
            ref.learn_one(xd, bool(y))
            assert p == pytest.approx(p_ref, abs=1e-9), opt_name
            w_ref = np.array([ref.weights.get(k, 0.0) for k in names])
            np.testing.assert_allclose(row[learn.M_W:learn.M_W + learn.NF], w_ref, rtol=0, atol=1e-9,
                                       err_msg=opt_name)
        assert np.abs(w_ref).max() > 0.1      # the weights really moved


def test_rls_with_forgetting_matches_the_numpy_closed_form_to_1e9():
    rng = np.random.default_rng(3)
    lam, init, n = 0.99, 100.0, 300
    xs = rng.normal(size=(n, learn.NF))
    xs[:, 0] = 1.0
    ys = np.sign(xs @ rng.normal(size=learn.NF) + rng.normal(size=n))
    row = np.zeros(learn.ROW_SLOTS)
    for t in range(n):
        row[learn.F_Z:learn.F_Z + learn.NF] = xs[t]
        yhat = learn.rls_step(row, learn.F_Z, ys[t], lam, init)
        # closed form: argmin sum_i lam^(t-i) (y_i - w.x_i)^2 + lam^t w' (init I)^-1 w over the samples before t
        if t in (0, 1, 5, 50, 299):
            wts = lam ** np.arange(t, -1, -1)
            a = (xs[:t + 1] * wts[:, None]).T @ xs[:t + 1] + lam ** (t + 1) / init * np.eye(learn.NF)
            b = (xs[:t + 1] * wts[:, None]).T @ ys[:t + 1]
            w = np.linalg.solve(a, b)
            np.testing.assert_allclose(row[learn.M_W:learn.M_W + learn.NF], w, rtol=0, atol=1e-9)
        if t == 50:
            assert yhat == pytest.approx(float(w_prev @ xs[t]), abs=1e-9)   # prediction before learning
        if t == 49 or t == 50:
            w_prev = row[learn.M_W:learn.M_W + learn.NF].copy()


def test_rls_does_not_wind_up_on_a_feature_that_never_moves():
    # z_3 is always 0 (e.g. no depth data): without a guard P[3,3] grows by 1/lam per update and overflows
    # after ~700 / (1 - lam) updates (70 k here), turning the weights into NaN
    rng = np.random.default_rng(5)
    lam, init = 0.99, 100.0
    row = np.zeros(learn.ROW_SLOTS)
    xs = rng.normal(size=(100_000, learn.NF))
    xs[:, 0] = 1.0
    xs[:, 3] = 0.0
    ys = np.sign(xs[:, 1] + 0.5 * rng.normal(size=len(xs)))
    for x, y in zip(xs, ys):
        row[learn.F_Z:learn.F_Z + learn.NF] = x
        learn.rls_step(row, learn.F_Z, y, lam, init)
    p = row[learn.M_P:learn.M_P + learn.NF ** 2].reshape(learn.NF, learn.NF)
    w = row[learn.M_W:learn.M_W + learn.NF]
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(w))
    cap = init * learn.RLS_WINDUP
    assert p[3, 3] == pytest.approx(cap, rel=0.02) and np.all(np.diag(p) <= cap * 1.0101)
    np.testing.assert_allclose(p, p.T, rtol=0, atol=0)
    assert np.all(np.linalg.eigvalsh(p) > 0)
    assert w[1] > 0.3 and abs(w[3]) < 1e-12          # still learns the excited direction


def test_standardiser_is_the_running_mean_and_population_variance_of_the_labelled_features():
    cfg, params, st = online()
    rec = stream(600, trades=True)
    xs = []
    out = strategy.new_signals(1)
    for i in range(len(rec)):
        n = st[0, learn.Q_N]
        strategy.run_range(strategy.strategy_state(cfg.id, params, st), rec, i, i + 1, out, 1)
        if st[0, learn.Q_N] > n:          # a label: the vector it scored
            xs.append(st[0, learn.F_X:learn.F_X + learn.NF].copy())
    xs = np.array(xs)
    n = int(st[0, learn.M_STD_N])
    assert n == len(xs) == 599
    np.testing.assert_allclose(st[0, learn.M_MEAN + 1:learn.M_MEAN + learn.NF], xs[:, 1:].mean(0), rtol=1e-9,
                               atol=1e-9)
    np.testing.assert_allclose(st[0, learn.M_VAR + 1:learn.M_VAR + learn.NF], xs[:, 1:].var(0), rtol=1e-7,
                               atol=1e-9)
    assert np.all(xs[1:, 9] != 0.0)   # trade-flow imbalance is fed by the aggTrades (from the first one on)


# ============================================================================================ prequential
@pytest.mark.parametrize("model", ["logit", "rls"])
def test_independent_moves_stay_at_chance(model):
    # the next move is a fair coin independent of every feature: any edge over 50% would be look-ahead
    cfg, params, st = online(model=model)
    rec = stream(30_000, informative=False, trades=True)
    run(cfg, params, st, rec)
    n, ok, ll, bll = learn.totals(st)
    assert n == 30_000 - 1
    sigma = math.sqrt(0.25 / n)
    assert abs(ok / n - 0.5) < 4 * sigma
    assert ll / n > bll / n - 0.002          # no better than the base rate
    assert ll / n < 0.70                     # and not badly worse (log(2) = 0.6931)


@pytest.mark.parametrize("model,recover", [("logit", 1000), ("rls", 1000)])
def test_model_recovers_within_stated_events_after_the_relation_flips(model, recover):
    # imbalance predicts the move with 80% accuracy; at event 20000 the sign of the relation flips. With the
    # defaults (sgd lr 0.01, rls forget 0.999, docs/learning.md) the model must be back above 70% accuracy on the
    # 2000 events that start `recover` events after the flip.
    flip = 20_000
    cfg, params, st = online(model=model)
    rec = stream(flip + recover + 2000, flip_at=flip)
    out = strategy.new_signals(len(rec))
    strategy.run_range(strategy.strategy_state(cfg.id, params, st), rec, 0, flip, out, len(rec))
    n0, ok0, _, _ = learn.totals(st)
    assert ok0 / n0 > 0.75                              # it learned the first regime
    strategy.run_range(strategy.strategy_state(cfg.id, params, st), rec, flip, flip + 300, out, len(rec))
    n1, ok1, _, _ = learn.totals(st)
    assert (ok1 - ok0) / (n1 - n0) < 0.5                # the flip really hurt at first
    strategy.run_range(strategy.strategy_state(cfg.id, params, st), rec, flip + 300, flip + recover, out, len(rec))
    n2, ok2, _, _ = learn.totals(st)
    strategy.run_range(strategy.strategy_state(cfg.id, params, st), rec, flip + recover, len(rec), out, len(rec))
    n3, ok3, _, _ = learn.totals(st)
    assert n3 - n2 == 2000
    assert (ok3 - ok2) / (n3 - n2) > 0.70


def test_windows_add_up_to_the_totals_and_survive_log_compaction():
    cfg, params, st = online(window_s="0.05")      # 5 records per window: 20000 records overflow the log
    rec = stream(20_000)
    run(cfg, params, st, rec)
    s = learn.summary(st, 0.05)
    assert st[0, learn.W_SCALE] >= 1                 # the log was compacted at least once
    w = s["windows"]
    assert sum(x["predictions"] for x in w) == s["predictions"] == 19_999
    assert [x["start_ns"] for x in w] == sorted(x["start_ns"] for x in w)
    assert all(x["end_ns"] - x["start_ns"] == s["window_ns"] for x in w)
    assert sum(x["accuracy"] * x["predictions"] for x in w) == pytest.approx(s["accuracy"] * s["predictions"])
    assert sum(x["log_loss"] * x["predictions"] for x in w) == pytest.approx(s["log_loss"] * s["predictions"])


# ============================================================================================ model files
def trained(model="logit"):
    cfg, params, st = online(model=model)
    run(cfg, params, st, stream(3000))
    return cfg, params, st


def test_model_file_round_trip_restores_the_model_exactly(tmp_path):
    cfg, params, st = trained()
    path = learn.save_model(tmp_path / "m.bin", st, learn.MODEL_LOGIT, ["BTCUSDT"])
    fresh2 = strategy.make_state(cfg.id, 2, params)
    assert learn.load_model(path, fresh2, learn.MODEL_LOGIT, ["ETHUSDT", "BTCUSDT"]) == ["ETHUSDT"]
    np.testing.assert_array_equal(fresh2[1, learn.MB:learn.M_END], st[0, learn.MB:learn.M_END])
    assert not fresh2[0, learn.MB:learn.M_END].any()
    assert fresh2[1, learn.Q_N] == 0                 # metrics are per run, not part of the model


def _rewrite_header(data: bytes, **changes) -> bytes:
    import hashlib
    import struct
    body = data[:-32]
    (hlen,) = struct.unpack_from("<I", body, 8)
    header = json.loads(body[12:12 + hlen])
    header.update(changes)
    h = json.dumps(header).encode()
    body = body[:8] + struct.pack("<I", len(h)) + h + body[12 + hlen:]
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("damage,message", [
    (lambda d: d[:-100], "corrupt or truncated"),
    (lambda d: d[:40] + bytes([d[40] ^ 1]) + d[41:], "corrupt or truncated"),
    (lambda d: d[-20:], "not an aegis model file"),
    (lambda d: b"PK\x03\x04" + d[4:], "not an aegis model file"),
    (lambda d: _rewrite_header(d, feature_version=learn.FEATURE_VERSION + 1), "feature set"),
    (lambda d: _rewrite_header(d, model_width=learn.MODEL_WIDTH - 1), "model block"),
    (lambda d: _rewrite_header(d, symbols=["BTCUSDT", "ETHUSDT"]), "expected"),
    (lambda d: _rewrite_header(d, file_version=99), "version"),
    (lambda d: _rewrite_header(d, model="rls"), "model file holds a 'rls' model"),
    (lambda d: _rewrite_header(d, symbols=["XRPUSDT"]), "none of this run's symbols"),
])
def test_bad_model_files_are_refused_with_one_line(tmp_path, damage, message):
    cfg, params, st = trained()
    path = learn.save_model(tmp_path / "m.bin", st, learn.MODEL_LOGIT, ["BTCUSDT"])
    path.write_bytes(damage(path.read_bytes()))
    fresh = strategy.make_state(cfg.id, 1, params)
    with pytest.raises(learn.ModelFileError) as e:
        learn.load_model(path, fresh, learn.MODEL_LOGIT, ["BTCUSDT"])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not fresh.any()                           # nothing half-loaded


def test_missing_model_file_is_an_error_not_a_fresh_start(tmp_path):
    cfg, params, st = online()
    with pytest.raises(learn.ModelFileError, match="does not exist"):
        learn.load_model(tmp_path / "nope.bin", st, learn.MODEL_LOGIT, ["BTCUSDT"])


# ============================================================================================ replay, CLI, Brain
import subprocess  # noqa: E402
import sys  # noqa: E402

from aegis.replay import run as replay  # noqa: E402

T0_MS = T0_NS // 1_000_000
HEADER = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"


def quotes_csv(path, n=4000, **kw):
    """The stream() quotes as a Binance bookTicker CSV (10 ms apart)."""
    rec = stream(n, **kw)
    rows = [HEADER]
    for i, r in enumerate(rec):
        t = T0_MS + i * (STEP_NS // 1_000_000)
        rows.append(f"{i + 1},{r['bid_px']:.2f},{r['bid_qty']:.6f},{r['ask_px']:.2f},{r['ask_qty']:.6f},{t - 1},{t}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def replay_online(tmp_path, csv_path, *extra, out="out"):
    out_dir = tmp_path / out
    rc = replay.main([csv_path, "--strategy", "online", "--brain", "unit_notional=0", "--out", str(out_dir),
                      "--no-progress", *extra])
    assert rc == 0
    return json.loads((out_dir / "summary.json").read_text()), out_dir


@pytest.mark.time_limit(600)
def test_replay_writes_prequential_metrics_windows_and_a_learning_curve(tmp_path):
    csv_path = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")
    summary, out = replay_online(tmp_path, csv_path, "--param", "window_s=5", "--param", "trade=false")
    m = summary["model"]
    assert {"predictions", "accuracy", "log_loss", "baseline_log_loss", "windows"} <= set(m)
    assert m["predictions"] == 3999
    assert m["accuracy"] > 0.7 and m["log_loss"] < m["baseline_log_loss"]
    w = m["windows"]
    assert len(w) == 8                                      # 40 s of quotes, 5 s windows
    for x in w:
        assert {"start_ns", "end_ns", "predictions", "accuracy", "log_loss"} <= set(x)
    assert [x["start_ns"] for x in w] == sorted(x["start_ns"] for x in w)
    assert w[0]["start_ns"] == T0_NS and w[-1]["end_ns"] == T0_NS + 40 * 10**9
    assert sum(x["predictions"] for x in w) == m["predictions"]
    assert w[-1]["log_loss"] < w[0]["log_loss"]            # it learns
    png = (out / "learning_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (out / "equity.png").exists()


@pytest.mark.time_limit(600)
def test_replay_trains_a_model_file_that_a_later_run_starts_from(tmp_path):
    csv_path = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")
    model = tmp_path / "m.bin"
    a, _ = replay_online(tmp_path, csv_path, "--param", "window_s=1", "--param", "trade=false",
                         "--save-model", str(model), out="a")
    header, blocks = learn.read_model(model)
    assert header["symbols"] == ["BTCUSDT"] and header["feature_set"] == learn.FEATURE_SET
    b, _ = replay_online(tmp_path, csv_path, "--param", "window_s=1", "--param", "trade=false",
                         "--model", str(model), out="b")
    # the second run starts trained: its first second (100 events) is far better than the fresh model's, and as
    # good as the first run's last one
    wa, wb = a["model"]["windows"], b["model"]["windows"]
    assert wa[0]["log_loss"] > 0.62 and wb[0]["log_loss"] < wa[0]["log_loss"] - 0.05
    assert wb[0]["log_loss"] < wa[-1]["log_loss"] + 0.05


@pytest.mark.time_limit(600)
@pytest.mark.parametrize("make,extra,message", [
    (lambda p: p.write_bytes(b"AEGISMDL" + b"\0" * 100), [], "corrupt or truncated"),
    (lambda p: None, [], "does not exist"),
    (lambda p: p.write_bytes(b""), ["--strategy", "obi"], "need --strategy online"),
])
def test_replay_refuses_a_bad_model_file_with_one_line_and_exit_2(tmp_path, make, extra, message):
    csv_path = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", n=50)
    model = tmp_path / "m.bin"
    make(model)
    res = subprocess.run([sys.executable, "-m", "aegis", "replay", csv_path, "--strategy", "online", *extra,
                          "--model", str(model), "--out", str(tmp_path / "o"), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr


@pytest.mark.time_limit(600)
def test_online_orders_go_through_risk(tmp_path):
    csv_path = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv")
    free = ("--param", "fee_bps=0", "--param", "margin_bps=0", "--param", "warmup=200", "--param", "cooldown_ms=200",
            "--param", "unit=0.01")
    s, _ = replay_online(tmp_path, csv_path, *free, out="free")
    c = s["counts"]
    assert c["orders_accepted"] > 10 and c["fills"] == c["orders_accepted"]
    assert c["orders_accepted"] + c["orders_refused_by_risk"] == c["signals"]
    # the same signals against a risk limit no order can pass: every one refused, nothing filled
    s, _ = replay_online(tmp_path, csv_path, *free, "--risk", "max_order_notional=1", out="capped")
    c = s["counts"]
    assert c["orders_accepted"] == 0 and c["fills"] == 0 and c["orders_refused_by_risk"] > 0
    assert s["refusals"] == {"ORDER_NOTIONAL_LIMIT": c["orders_refused_by_risk"]}
    # with a realistic taker fee the predicted edge (a fraction of a 1 bps move) never pays: no orders at all
    s, _ = replay_online(tmp_path, csv_path, "--param", "warmup=200", out="fees")
    assert s["counts"]["signals"] == 0 and s["model"]["predictions"] == 3999


def test_brain_reports_the_model_on_its_status_and_summary_lines():
    from aegis.app import supervisor
    from aegis.brain import process
    from aegis.core import control
    brain = process.Brain(process.BrainConfig(candle_intervals=()), strategy.resolve("online", {"trade": "false"}), 1)
    brain.process(stream(2000))
    ctl = control.new_block()
    brain.housekeeping(0, ctl, ctl.view(np.float64))
    text = supervisor.model_fields(ctl)
    n, ok, ll, bll = learn.totals(brain.bs.strat.state)
    assert n == 1999 and f"{int(n)} predictions" in text and f"accuracy {ok / n * 100:.1f}%" in text
    assert "model: 1999 predictions" in process.summary_line(brain)


def test_live_cli_checks_model_options_before_starting(tmp_path):
    res = subprocess.run([sys.executable, "-m", "aegis", "--strategy", "online", "--model", str(tmp_path / "x.bin")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert [x for x in res.stderr.splitlines() if x.strip()] == [f"aegis: error: {tmp_path / 'x.bin'}: model file "
                                                                  f"does not exist"]
    res = subprocess.run([sys.executable, "-m", "aegis", "--strategy", "list"], capture_output=True, text=True,
                         timeout=120)
    assert "online:" in res.stdout and "forget=0.999" in res.stdout and "fee_bps=5" in res.stdout


@pytest.mark.time_limit(400)
def test_a_live_run_shows_the_model_saves_it_and_the_next_run_starts_from_it(tmp_path):
    """The engine itself (synthetic market, signals only): the status and summary lines carry the prequential
    scores, the model is saved at shutdown, and a second run loads it."""
    model = tmp_path / "live.model"
    common = [sys.executable, "-m", "aegis", "--source", "synthetic", "--strategy", "online", "--duration", "6",
              "--status-interval", "1", "--out", str(tmp_path / "out")]
    first = subprocess.run(common + ["--save-model", str(model)], capture_output=True, text=True, timeout=380)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    status = [ln for ln in first.stdout.splitlines() if "model:" in ln and "predictions" in ln]
    assert status, first.stdout[-3000:]
    summary = [ln for ln in first.stdout.splitlines() if ln.startswith("aegis: brain:") and "model:" in ln]
    assert summary and "accuracy" in summary[-1] and "log-loss" in summary[-1]
    assert model.exists() and f"model saved to {model}" in first.stdout
    second = subprocess.run(common + ["--model", str(model)], capture_output=True, text=True, timeout=380)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert f"model {model}: loaded for" in second.stdout
