import numpy as np
import pytest

from aegis.brain import strategy as stg
from aegis.core.config import ConfigError, EngineConfig
from aegis.core.records import (FLAG_RESYNC, KIND_BOOK, KIND_QUOTE, KIND_TRADE, ORDER_LIMIT, ORDER_MARKET, SIDE_BUY,
                           SIDE_SELL, TIF_GTX)
from tests.test_brain_data import quotes


def run(name, recs, values=None, n_symbols=10, chunk=None):
    cfg = stg.resolve(name, values or {})
    params = cfg.array()
    state = stg.make_state(cfg.id, n_symbols, params)
    out = stg.new_signals(len(recs))
    chunk = chunk or len(recs)
    sigs = []
    for a in range(0, len(recs), chunk):
        part = recs[a:a + chunk]
        k = stg.run_batch(stg.strategy_state(cfg.id, params, state), part, len(part), out)
        sigs.append(out[:k].copy())
    return cat(*sigs), state


def cat(*arrays):
    """np.concatenate drops the trailing padding of structured dtypes (a 128-byte record would become 112 bytes)"""
    out = np.zeros(sum(len(a) for a in arrays), dtype=arrays[0].dtype)
    i = 0
    for a in arrays:
        out[i:i + len(a)] = a
        i += len(a)
    return out


def reference_ema_cross(recs, fast, slow, unit=1.0):
    """The issue's rule written plainly, one symbol at a time."""
    af, as_ = 2 / (fast + 1), 2 / (slow + 1)
    f, s, cnt, last = {}, {}, {}, {}
    out = []
    for r in recs:
        if r["kind"] != KIND_QUOTE:
            continue
        sym = int(r["symbol"])
        mid = (r["bid_px"] + r["ask_px"]) / 2
        if sym not in f:
            f[sym] = s[sym] = mid
            cnt[sym] = 1
            last[sym] = 0
        else:
            f[sym] = af * mid + (1 - af) * f[sym]
            s[sym] = as_ * mid + (1 - as_) * s[sym]
            cnt[sym] += 1
        if cnt[sym] < slow:
            continue
        target = int(np.sign(f[sym] - s[sym]))
        if target != 0 and target != last[sym]:
            out.append((int(r["seq"]), sym, target, unit if last[sym] == 0 else 2 * unit))
            last[sym] = target
    return out


def test_ema_cross_matches_plain_reference_of_the_issue_rule():
    recs = quotes(30_000, n_symbols=5, seed=3)
    sigs, _ = run("ema_cross", recs, {"fast": 5, "slow": 30}, n_symbols=5)
    got = [(int(s["seq"]), int(s["symbol"]), int(s["side"]), float(s["qty"])) for s in sigs]
    ref = reference_ema_cross(recs, 5, 30)
    assert len(ref) > 50
    assert got == ref


def test_ema_cross_first_entry_is_one_unit_then_reversals_are_two_units_and_alternate():
    recs = quotes(20_000, n_symbols=3, seed=4)
    sigs, _ = run("ema_cross", recs, {"fast": 3, "slow": 10, "unit": 0.5}, n_symbols=3)
    for sym in range(3):
        mine = sigs[sigs["symbol"] == sym]
        assert mine[0]["qty"] == 0.5
        assert (mine[1:]["qty"] == 1.0).all()
        assert (mine["side"][1:] != mine["side"][:-1]).all()
        assert (mine["order_type"] == ORDER_MARKET).all()
        assert (mine["position"] == mine["side"] * 0.5).all()


def test_ema_cross_emits_nothing_before_slow_values_seen():
    recs = quotes(99, n_symbols=1)
    sigs, _ = run("ema_cross", recs, {"fast": 2, "slow": 100}, n_symbols=1)
    assert len(sigs) == 0


def test_strategy_result_does_not_depend_on_batch_boundaries():
    recs = quotes(20_000, n_symbols=4, seed=5)
    for name in ("ema_cross", "mean_reversion", "obi"):
        whole, st1 = run(name, recs, n_symbols=4)
        parts, st2 = run(name, recs, n_symbols=4, chunk=777)
        assert np.array_equal(whole, parts), name
        assert np.array_equal(st1, st2)


def test_signals_carry_trigger_record_timestamps_and_leave_wall_clock_stamps_to_the_caller():
    recs = quotes(5_000, n_symbols=2, seed=6)
    sigs, _ = run("ema_cross", recs, {"fast": 3, "slow": 10}, n_symbols=2)
    trig = recs[sigs["seq"]]
    assert (sigs["recv_ts"] == trig["recv_ts"]).all() and (sigs["pub_ts"] == trig["pub_ts"]).all()
    assert (sigs["exch_ts"] == trig["exch_ts"]).all()
    assert (sigs["ts"] == 0).all() and (sigs["consume_ts"] == 0).all()
    buys = sigs[sigs["side"] == SIDE_BUY]
    assert (buys["price"] == trig[sigs["side"] == SIDE_BUY]["ask_px"]).all()


def test_resync_and_non_quote_records_are_ignored_by_default():
    recs = quotes(5_000, n_symbols=2, seed=7)
    base, _ = run("ema_cross", recs, {"fast": 3, "slow": 10}, n_symbols=2)
    noisy = cat(recs, recs)
    noisy[5_000:]["flags"] = FLAG_RESYNC
    noisy[5_000:]["bid_px"] = 1.0
    order = np.argsort(np.concatenate([np.arange(5_000), np.arange(5_000) + 0.5]), kind="stable")
    noisy = noisy[order]
    trades = noisy.copy()
    trades["kind"] = KIND_TRADE
    noisy2, _ = run("ema_cross", cat(noisy, trades), {"fast": 3, "slow": 10}, n_symbols=2)
    assert np.array_equal(base["seq"], noisy2["seq"])


def test_mid_source_book_uses_book_tops_only():
    recs = quotes(5_000, n_symbols=2, seed=8)
    assert len(run("ema_cross", recs, {"fast": 3, "slow": 10, "mid_source": "book"}, 2)[0]) == 0
    recs["kind"] = KIND_BOOK
    assert len(run("ema_cross", recs, {"fast": 3, "slow": 10, "mid_source": "book"}, 2)[0]) > 0
    assert len(run("ema_cross", recs, {"fast": 3, "slow": 10, "mid_source": "any"}, 2)[0]) > 0


def test_records_of_unknown_symbols_are_ignored():
    recs = quotes(5_000, n_symbols=4, seed=9)
    sigs, _ = run("ema_cross", recs, {"fast": 3, "slow": 10}, n_symbols=2)
    assert len(sigs) > 0 and (sigs["symbol"] < 2).all()


def test_mean_reversion_buys_below_lower_band_with_post_only_limit_and_exits_reduce_only():
    recs = quotes(4_000, n_symbols=1, seed=1, step_ns=10_000_000)
    # a calm market, then a plunge and a recovery: must buy the dip passively and exit at the middle band
    mid = np.full(len(recs), 100.0) + 0.01 * np.sin(np.arange(len(recs)))
    mid[2000:2300] -= np.linspace(0, 5, 300)
    mid[2300:] = 100.0
    recs["bid_px"], recs["ask_px"] = mid - 0.01, mid + 0.01
    sigs, _ = run("mean_reversion", recs, {"sample_ms": 100, "period": 20, "rsi_period": 5}, n_symbols=1)
    entry, exit_ = sigs[:2]  # (the jump back to 100 then overshoots the upper band: a short may follow)
    assert entry["side"] == SIDE_BUY and entry["order_type"] == ORDER_LIMIT and entry["tif"] == TIF_GTX
    assert entry["price"] == recs[entry["seq"]]["bid_px"] and entry["reduce_only"] == 0
    assert exit_["side"] == SIDE_SELL and exit_["reduce_only"] == 1 and exit_["position"] == 0.0
    assert 2000 < entry["seq"] < 2300 <= exit_["seq"]


def test_obi_goes_long_on_bid_heavy_book_and_respects_cooldown():
    recs = quotes(3_000, n_symbols=1, seed=2, step_ns=1_000_000)
    recs["bid_qty"], recs["ask_qty"] = 1.0, 1.0
    recs["bid_qty"][1000:] = 9.0      # imbalance 0.8 from record 1000
    recs["ask_qty"][2000:] = 81.0     # -0.8 from record 2000
    sigs, _ = run("obi", recs, {"smooth": 3, "cooldown_ms": 5000}, n_symbols=1)
    assert len(sigs) == 1  # the reversal comes within the 5 s cooldown
    assert sigs[0]["side"] == SIDE_BUY and 1000 <= sigs[0]["seq"] < 1010
    sigs, _ = run("obi", recs, {"smooth": 3, "cooldown_ms": 0}, n_symbols=1)
    # the smoothed imbalance passes through the exit zone on its way down: flat first, then short
    assert [int(s["side"]) for s in sigs] == [SIDE_BUY, SIDE_SELL, SIDE_SELL]
    assert list(sigs["position"]) == [1.0, 0.0, -1.0] and list(sigs["reduce_only"]) == [0, 1, 0]


def test_unknown_strategy_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="unknown strategy 'nope'.*ema_cross"):
        stg.resolve("nope")


@pytest.mark.parametrize("values,msg", [
    ({"fast": "x"}, "fast must be an integer"),
    ({"fast": 2.5}, "fast must be an integer"),
    ({"fast": 0}, "fast must be >= 1"),
    ({"fast": 50, "slow": 40}, "fast .* must be smaller than slow"),
    ({"speed": 3}, "has no parameter speed"),
    ({"mid_source": "last"}, "mid_source must be one of quote, book, any"),
])
def test_bad_parameters_are_one_line_config_errors(values, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        stg.resolve("ema_cross", values)
    assert "\n" not in str(e.value)


def test_cli_strings_and_defaults_resolve_to_the_params_array():
    cfg = stg.resolve("ema_cross", stg.parse_param_args(["fast=5", " slow = 50 "]))
    assert list(cfg.array()) == [5.0, 50.0, 1.0, 0.0]
    assert cfg.describe() == "ema_cross fast=5 slow=50 unit=1 mid_source=quote"
    assert stg.resolve("ema_cross").params[:2] == (20.0, 100.0)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        stg.parse_param_args(["fast"])


def test_from_config_reads_flat_keys_and_the_strategys_own_subtable():
    cfg = EngineConfig(strategy="obi", sections={"strategy": {"threshold": 0.7, "obi": {"smooth": 4, "threshold": 0.5},
                                                              "ema_cross": {"fast": 3}}})
    sc = stg.from_config(cfg)
    assert sc.name == "obi" and sc.params[stg.OB_THRESHOLD] == 0.7 and sc.params[stg.OB_SMOOTH] == 4
    with pytest.raises(ConfigError, match="strategy.foo"):
        stg.from_config(EngineConfig(sections={"strategy": {"foo": {}}}))


def test_state_rows_are_cache_line_aligned():
    for name in stg.names():
        c = stg.resolve(name)
        st = stg.make_state(c.id, 7, c.array())
        assert st.ctypes.data % 64 == 0 and (st.shape[1] * 8) % 64 == 0


@pytest.mark.parametrize("name", ["ema_cross", "mean_reversion", "obi"])
def test_revert_restores_the_position_held_before_a_refused_signal(name):
    recs = quotes(20_000, n_symbols=1, seed=12)
    if name == "obi":
        recs["bid_qty"] = np.where(np.arange(len(recs)) // 500 % 2 == 0, 9.0, 0.5)
    values = {"unit": 0.5, **({"sample_ms": 5} if name == "mean_reversion" else {})}
    unit = 0.5
    sigs, state = run(name, recs, values, n_symbols=1)
    assert len(sigs) >= 2
    cfg = stg.resolve(name, values)
    stg.revert(stg.strategy_state(cfg.id, cfg.array(), state), sigs[-1])
    before = sigs[-2]["position"] / unit     # the position the strategy held before its last signal
    col = {"ema_cross": stg.EC_S_SIDE, "mean_reversion": stg.MR_S_POS, "obi": stg.OB_S_POS}[name]
    assert state[0, col] == (np.sign(before) if name == "ema_cross" else before)
    assert state[0, col] != sigs[-1]["position"] / unit


def test_run_range_stops_after_each_signal_and_resumes_where_it_stopped():
    recs = quotes(5_000, n_symbols=2, seed=13)
    whole, _ = run("ema_cross", recs, {"fast": 3, "slow": 10}, n_symbols=2)
    cfg = stg.resolve("ema_cross", {"fast": 3, "slow": 10})
    params = cfg.array()
    state = stg.make_state(cfg.id, 2, params)
    out = stg.new_signals(1)
    seqs, i = [], 0
    while i < len(recs):
        k, nxt = stg.run_range(stg.strategy_state(cfg.id, params, state), recs, i, len(recs), out, 1)
        assert nxt > i
        if k:
            assert int(out[0]["seq"]) == nxt - 1      # stopped right after the record that signalled
            seqs.append(int(out[0]["seq"]))
        i = nxt
    assert seqs == list(whole["seq"])


def test_cli_param_overrides_feed_the_config_loader():
    from aegis.core.config import load
    over = {"strategy": "obi", **stg.param_overrides(["threshold=0.7", "smooth=5"])}
    assert over == {"strategy": "obi", "strategy.threshold": "0.7", "strategy.smooth": "5"}
    sc = stg.from_config(load(None, over))
    assert sc.params[stg.OB_THRESHOLD] == 0.7 and sc.params[stg.OB_SMOOTH] == 5


def test_help_text_lists_every_strategy_and_parameter_with_its_default():
    text = stg.help_text()
    for spec in stg.REGISTRY.values():
        assert spec.name + ":" in text
        for p in spec.params:
            assert f"{p.name}=" in text
    assert "fast=20" in text and "slow=100" in text


def test_run_batch_refuses_a_signal_array_shorter_than_the_batch():
    recs = quotes(100, n_symbols=1)
    cfg = stg.resolve("ema_cross")
    params = cfg.array()
    with pytest.raises(ValueError, match="room for one signal per record"):
        stg.run_batch(stg.strategy_state(cfg.id, params, stg.make_state(cfg.id, 1, params)), recs, 100, stg.new_signals(99))


def run_tracked(name, recs, values, outcome, rests=False):
    """Drive a strategy as the Brain does, one signal at a time, syncing the actual position from a risk-book
    row before each step; outcome(sig) -> signed base qty that really traded (0: the order was rejected).
    rests=True: orders that do not trade stay open on the book (until a cancel signal for them); every order is
    accepted with client ids 1, 2, ..."""
    from aegis.trade import risk as riskmod
    from aegis.core.records import ACTION_CANCEL
    cfg = stg.resolve(name, values)
    params = cfg.array()
    state = stg.make_state(cfg.id, 1, params)
    rsym = np.zeros((1, riskmod.S_COLS))
    unit_qty = np.zeros(1)
    out = stg.new_signals(1)
    sigs, i = [], 0
    while i < len(recs):
        ss = stg.strategy_state(cfg.id, params, state)
        stg.sync_symbol(ss, rsym, unit_qty, int(recs[i]["symbol"]))
        k, i = stg.run_range(ss, recs, i, i + 1, out, 1)
        if k:
            sig = out[0].copy()
            sigs.append(sig)
            if sig["action"] == ACTION_CANCEL:
                rsym[0, riskmod.S_OPEN_COUNT] -= 1
                continue
            stg.accepted(stg.strategy_state(cfg.id, params, state), out[0], len(sigs))
            traded = outcome(sig)
            rsym[0, riskmod.S_POS] += traded
            if rests and traded == 0.0:
                rsym[0, riskmod.S_OPEN_COUNT] += 1
    return sigs, state


def obi_flip_quotes():
    recs = quotes(3_000, n_symbols=1, seed=2, step_ns=1_000_000)
    recs["bid_qty"], recs["ask_qty"] = 1.0, 1.0
    recs["bid_qty"][1000:] = 9.0      # imbalance 0.8 from record 1000
    recs["ask_qty"][2000:] = 81.0     # -0.8 from record 2000
    return recs


def test_obi_synced_to_a_flat_book_sends_no_exit_and_enters_with_one_unit():
    # every order is rejected by the exchange: the strategy stays flat, so it never exits and never "reverses"
    sigs, _ = run_tracked("obi", obi_flip_quotes(), {"smooth": 3, "cooldown_ms": 100}, lambda s: 0.0)
    assert len(sigs) > 2
    assert all(s["reduce_only"] == 0 and s["qty"] == 1.0 for s in sigs)
    assert {int(s["side"]) for s in sigs if s["seq"] < 2000} == {SIDE_BUY}
    assert {int(s["side"]) for s in sigs if s["seq"] >= 2010} == {SIDE_SELL}


def test_obi_synced_to_real_fills_matches_its_paper_trading():
    recs = obi_flip_quotes()
    paper, _ = run("obi", recs, {"smooth": 3, "cooldown_ms": 0}, n_symbols=1)
    tracked, _ = run_tracked("obi", recs, {"smooth": 3, "cooldown_ms": 0},
                             lambda s: s["qty"] if s["side"] == SIDE_BUY else -s["qty"])
    assert [(int(s["seq"]), int(s["side"]), float(s["qty"]), int(s["reduce_only"])) for s in tracked] == \
           [(int(s["seq"]), int(s["side"]), float(s["qty"]), int(s["reduce_only"])) for s in paper]


def dip_quotes():
    recs = quotes(4_000, n_symbols=1, seed=1, step_ns=10_000_000)
    mid = np.full(len(recs), 100.0) + 0.01 * np.sin(np.arange(len(recs)))
    mid[2000:2300] -= np.linspace(0, 5, 300)
    mid[2300:] = 100.0
    recs["bid_px"], recs["ask_px"] = mid - 0.01, mid + 0.01
    return recs


def test_mean_reversion_with_a_resting_entry_never_exits_and_cancels_it_after_the_timeout():
    from aegis.core.records import ACTION_CANCEL
    sigs, state = run_tracked("mean_reversion", dip_quotes(), {"sample_ms": 100, "period": 20, "rsi_period": 5,
                                                               "entry_timeout_ms": 5000}, lambda s: 0.0, rests=True)
    assert len(sigs) >= 2 and all(s["reduce_only"] == 0 for s in sigs)
    entry, cancel = sigs[:2]
    assert entry["action"] != ACTION_CANCEL and cancel["action"] == ACTION_CANCEL and cancel["target_id"] == 1
    assert int(cancel["exch_ts"]) - int(entry["exch_ts"]) == 5_000_000_000    # records are 10 ms apart
    assert state[0, stg.MR_S_TRACKED] == 1.0 and state[0, stg.MR_S_POS] == 0.0


def test_mean_reversion_whose_entry_filled_exits_what_it_holds():
    unit = 0.5
    sigs, _ = run_tracked("mean_reversion", dip_quotes(), {"sample_ms": 100, "period": 20, "rsi_period": 5,
                                                           "unit": unit},
                          lambda s: 0.3 if s["side"] == SIDE_BUY else -0.3)     # a partial fill of the entry
    entry, exit_ = sigs[:2]
    assert entry["side"] == SIDE_BUY and entry["qty"] == unit and entry["reduce_only"] == 0
    assert exit_["side"] == SIDE_SELL and exit_["reduce_only"] == 1 and exit_["qty"] == pytest.approx(0.3)
    assert 2000 < entry["seq"] < 2300 <= exit_["seq"]


def test_ema_cross_ignores_sync_symbol_and_keeps_the_side_it_last_traded():
    from aegis.trade import risk as riskmod
    recs = quotes(5_000, n_symbols=2, seed=13)
    whole, _ = run("ema_cross", recs, {"fast": 3, "slow": 10}, n_symbols=2)
    cfg = stg.resolve("ema_cross", {"fast": 3, "slow": 10})
    params = cfg.array()
    state = stg.make_state(cfg.id, 2, params)
    rsym = np.zeros((2, riskmod.S_COLS))
    rsym[:, riskmod.S_POS] = 5.0
    rsym[:, riskmod.S_OPEN_COUNT] = 3.0
    out = stg.new_signals(1)
    seqs, i = [], 0
    while i < len(recs):
        ss = stg.strategy_state(cfg.id, params, state)
        stg.sync_symbol(ss, rsym, np.zeros(2), int(recs[i]["symbol"]))
        k, i = stg.run_range(ss, recs, i, i + 1, out, 1)
        if k:
            seqs.append(int(out[0]["seq"]))
    assert seqs == list(whole["seq"])
