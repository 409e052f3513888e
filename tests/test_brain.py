import time
from types import SimpleNamespace

import numpy as np
import pytest

from aegis.brain import pipeline
from aegis.brain import process as brain
from aegis.brain import bus
from aegis.core import control
from aegis.core import latency
from aegis.core import ring
from aegis.brain import strategy
from aegis.trade import sender as trade
from aegis.trade import risk as riskmod
from aegis.core.config import ConfigError, EngineConfig
from aegis.core.ring import checksum_step
from aegis.core.records import (ACTION_CANCEL_ALL, ACTION_NEW, FILL_DTYPE, KIND_TRADE, MARKET_DTYPE, ORDER_REQUEST_DTYPE, SIDE_BUY,
                           STATUS_FILLED)
from aegis.trade.sender import FillQueue, RequestQueue
from tests.test_brain_data import quotes

EMA = strategy.resolve("ema_cross", {"fast": 3, "slow": 10})


def make_brain(order_path=None, n_symbols=3, **kw):
    cfg = brain.BrainConfig(**{"batch": 4096, **kw})
    return brain.Brain(cfg, EMA, n_symbols, order_path, latency.new_set())


def live_quotes(n, n_symbols=3, seed=1):
    """Quotes stamped with the current monotonic clock (risk refuses stale market data)."""
    recs = quotes(n, n_symbols=n_symbols, seed=seed)
    now = time.monotonic_ns()
    recs["recv_ts"] = now
    recs["pub_ts"] = now + 10
    return recs


def test_pipeline_emits_exactly_the_strategy_kernels_signals_stamped_with_stage_times():
    recs = quotes(4000, n_symbols=3, seed=2)
    b = make_brain()
    got = []
    b.bus.subscribe(bus.SIGNAL_GENERATED, lambda t, slot, verdict, cid: got.append(b.signal_pool.records[slot].copy()))
    k = b.process(recs, consume_ts=5_000_000)
    b.housekeeping(0)
    params = EMA.array()
    state = strategy.make_state(EMA.id, 3, params)
    out = strategy.new_signals(len(recs))
    k_ref = strategy.run_batch(strategy.strategy_state(EMA.id, params, state), recs, len(recs), out)
    assert k == k_ref > 0 and len(got) == k
    assert [int(s["seq"]) for s in got] == list(out["seq"][:k])
    assert all(s["consume_ts"] == 5_000_000 and s["ts"] >= s["consume_ts"] for s in got)
    assert b.signal_pool.free == b.signal_pool.capacity   # every slot went back after dispatch
    assert b.stats()["signals"] == k and b.stats()["orders"] == 0


def test_publish_to_consume_latency_is_recorded_per_record():
    recs = quotes(100, n_symbols=2)
    recs["pub_ts"] = 1_000
    b = make_brain()
    b.process(recs, consume_ts=1_500)
    row = b.bs.lat[latency.STAGE_RING]
    assert row[latency.H_COUNT] == 100 and row[latency.H_MIN] == 500 and row[latency.H_MAX] == 500


def test_trades_in_the_batch_build_candles():
    recs = quotes(3000, n_symbols=2, step_ns=10_000_000)
    recs["kind"][::2] = KIND_TRADE
    recs["px"], recs["qty"] = 100.0, 1.0
    b = make_brain(n_symbols=2, candle_intervals=("1s",))
    b.process(recs)
    assert b.candles.closed_count(0, 0) > 10 and b.candles.closed(0, 0)["vwap"] == 100.0


def order_path(n_symbols=3, **risk_kw):
    rules = [riskmod.SymbolRules(symbol=f"S{i}USDT", tick_size="0.01", step_size="0.001", min_notional="1")
             for i in range(n_symbols)]
    cfg = riskmod.RiskConfig(**{"max_position_notional": 1e9, "max_gross_notional": 1e9,
                                "max_order_notional": 1e9, "orders_per_second": 1000, "daily_loss_limit": 0.0,
                                "price_band_bps": 0.0, "binance_orders_10s": 4000, "binance_orders_1m": 4000,
                                "max_open_orders": 1000, **risk_kw})
    return SimpleNamespace(risk=riskmod.RiskBook(cfg, rules), queue=RequestQueue(4096), fills=FillQueue(4096),
                           flags=np.zeros(trade.FLAGS_LEN, np.int64))


def drain_queue(q):
    dst = np.zeros(4096, ORDER_REQUEST_DTYPE)
    n = ring.read_batch(q.header, q.records, dst, 4096)
    return dst[:n]


def test_signals_become_risk_checked_order_requests_on_the_sender_queue_with_all_stage_timestamps():
    path = order_path()
    b = make_brain(path)
    events = []
    b.bus.subscribe(bus.ORDER_REQUEST, lambda t, cid, sym, side: events.append((cid, sym, side)))
    recs = live_quotes(3000)
    k = b.process(recs, consume_ts=time.monotonic_ns())
    reqs = drain_queue(path.queue)
    b.housekeeping(time.monotonic_ns())
    assert k > 0 and len(reqs) == k and b.stats()["orders"] == k
    assert (reqs["action"] == ACTION_NEW).all()
    assert list(reqs["client_id"]) == list(range(1, k + 1))
    for f in ("recv_ts", "pub_ts", "consume_ts", "signal_ts", "risk_ts", "handoff_ts"):
        assert (reqs[f] > 0).all(), f
    assert (reqs["pub_ts"] <= reqs["consume_ts"]).all() and (reqs["consume_ts"] <= reqs["signal_ts"]).all()
    assert (reqs["signal_ts"] <= reqs["risk_ts"]).all() and (reqs["risk_ts"] <= reqs["handoff_ts"]).all()
    assert (reqs["qty_steps"] > 0).all()                         # risk rounded the quantity to steps
    assert [e[0] for e in events] == list(reqs["client_id"])
    assert [e[2] for e in events] == list(reqs["side"].astype(int))


def test_one_unit_is_unit_notional_at_the_first_order_price_rounded_up_to_the_step_and_then_fixed():
    path = order_path()
    b = make_brain(path, unit_notional=25.0)
    recs = live_quotes(3000)
    b.process(recs, consume_ts=time.monotonic_ns())
    reqs = drain_queue(path.queue)
    params = EMA.array()
    sigs = strategy.new_signals(len(recs))
    k = strategy.run_batch(strategy.strategy_state(EMA.id, params, strategy.make_state(EMA.id, 3, params)), recs, len(recs), sigs)
    for s in range(3):
        mine = reqs[reqs["symbol"] == s]
        first_px = sigs[:k][sigs[:k]["symbol"] == s][0]["price"]     # touch the first order would take
        unit = b.bs.unit_qty[s]
        assert unit == pytest.approx(np.ceil(25.0 / first_px / 0.001) * 0.001, abs=1e-12)
        assert unit * first_px >= 25.0
        assert mine[0]["qty"] == unit and (mine[1:]["qty"] == 2 * unit).all()
    b2 = make_brain(order_path(), unit_notional=0.0)
    b2.process(live_quotes(3000), consume_ts=time.monotonic_ns())
    assert set(drain_queue(b2.order_path.queue)["qty"]) == {1.0, 2.0}


def test_risk_rejections_are_counted_and_published_not_sent():
    path = order_path(orders_per_second=2)
    b = make_brain(path)
    rejected = []
    b.bus.subscribe(bus.RISK_REJECTED, lambda t, reason, sym, cid: rejected.append(reason))
    k = b.process(live_quotes(3000), consume_ts=time.monotonic_ns())
    b.housekeeping(time.monotonic_ns())
    sent = drain_queue(path.queue)
    st = b.stats()
    assert len(sent) == 2 and k > 2
    assert set(rejected) == {riskmod.R_RATE_OURS} and len(rejected) == st["rejects"] >= 1
    # after a refusal the symbol is held off (retry_ms): the same order is not re-checked on every tick
    assert st["rejects"] <= 3 and st["orders"] + st["rejects"] + st["held"] == k


def test_refusals_hold_a_symbol_off_for_retry_ms_then_it_tries_again():
    path = order_path()
    b = make_brain(path, retry_ms=1.0)
    riskmod.kill(path.risk.g, time.monotonic_ns())
    recs = live_quotes(3000)
    b.process(recs[:1500], consume_ts=time.monotonic_ns())
    first = b.stats()["rejects"]
    assert 1 <= first <= 3 and b.stats()["held"] > 0
    time.sleep(0.005)
    b.process(recs[1500:], consume_ts=time.monotonic_ns())
    assert b.stats()["rejects"] > first


def test_stale_market_data_is_refused_by_risk_inside_the_pipeline():
    path = order_path()
    b = make_brain(path)
    recs = quotes(3000, n_symbols=3)          # recv_ts from the distant past
    k = b.process(recs, consume_ts=time.monotonic_ns())
    assert k > 0 and len(drain_queue(path.queue)) == 0
    assert path.risk.reject_counts() == {"STALE_MARKET_DATA": b.stats()["rejects"]}
    assert b.stats()["rejects"] + b.stats()["held"] == k


def in_process_ring(capacity=4096):
    header = np.zeros(ring.HEADER_SLOTS, np.int64)
    ring.init_header(header, capacity, MARKET_DTYPE.itemsize)
    return header, np.zeros(capacity, MARKET_DTYPE)


def test_brain_loop_drains_the_ring_applies_fills_first_and_stops_after_the_feed():
    path = order_path()
    b = make_brain(path)
    filled = []
    b.bus.subscribe(bus.ORDER_FILLED, lambda t, idx, cid, status: filled.append((cid, status, b.bs.fill_log[idx]["qty"])))
    header, records = in_process_ring()
    ctl = control.new_block()
    recs = live_quotes(3000)
    fill = np.zeros(1, FILL_DTYPE)[0]
    fill["client_id"], fill["symbol"], fill["side"], fill["qty"], fill["price"] = 77, 1, SIDE_BUY, 0.5, 100.0
    fill["status"] = STATUS_FILLED
    assert path.fills.put(fill)
    assert ring.write_batch(header, records, recs, len(recs), ring.POLICY_WAIT, 0) == len(recs)
    ctl[control.G_STOP] = 1
    ctl[control.base(control.ROLE_FEED) + control.R_STATE] = control.ST_STOPPED
    deadline = time.monotonic() + 20
    ret = brain.RET_ROUND
    while ret != brain.RET_DONE and time.monotonic() < deadline:
        ret = b.step(header, records, ctl, time.monotonic_ns() + 5_000_000)
        b.housekeeping(time.monotonic_ns(), ctl)
    assert ret == brain.RET_DONE
    chk = 0
    for s in recs["seq"]:
        chk = checksum_step(chk, int(s))
    base = control.base(control.ROLE_BRAIN)
    assert ctl[base + control.R_RECORDS] == 3000 and ctl[base + control.R_CHECKSUM] == chk
    assert ctl[base + control.R_BRAIN_SIGNALS] == b.stats()["signals"] > 0
    assert ctl[base + control.R_BRAIN_FILLS] == 1 and filled == [(77, STATUS_FILLED, 0.5)]
    assert path.risk.position("S1USDT") == 0.5
    assert ctl[base + control.R_HEARTBEAT] > 0


def test_brain_loop_returns_for_housekeeping_when_the_round_ends_and_nothing_arrives():
    b = make_brain()
    header, records = in_process_ring()
    ctl = control.new_block()
    t = time.monotonic()
    assert b.step(header, records, ctl, time.monotonic_ns() + 20_000_000) == brain.RET_ROUND
    assert time.monotonic() - t < 2.0
    ring.abort(header)
    assert b.step(header, records, ctl, time.monotonic_ns() + 10_000_000_000) == brain.RET_DONE


def test_manual_halt_on_the_control_topic_turns_into_risk_refusals():
    path = order_path()
    b = make_brain(path)
    b.bus.publish(bus.CONTROL, bus.CMD_HALT)
    b.housekeeping(time.monotonic_ns())
    assert path.risk.state == "HALTED"
    k = b.process(live_quotes(3000), consume_ts=time.monotonic_ns())
    assert k > 0 and b.stats()["orders"] == 0 and path.risk.reject_counts() == {"HALTED": b.stats()["rejects"]}
    # refused orders were not traded: the strategy still holds no side, so after a resume it enters with 1 unit
    assert not b.bs.strat.state[:, strategy.EC_S_SIDE].any()
    b.bus.publish(bus.CONTROL, bus.CMD_RESUME)
    b.housekeeping(time.monotonic_ns())
    b.bs.holdoff[:] = 0                          # (the 100 ms retry hold-off after the refusals)
    b.process(live_quotes(3000, seed=5), consume_ts=time.monotonic_ns())
    reqs = drain_queue(path.queue)
    assert len(reqs) > 3
    for s in range(3):
        mine = reqs[reqs["symbol"] == s]
        assert mine[0]["qty"] > 0 and (mine[1:]["qty"] == 2 * mine[0]["qty"]).all()


def test_kill_switch_halts_risk_and_cancels_all_open_orders_from_inside_the_loop():
    path = order_path()
    b = make_brain(path)
    b.process(live_quotes(3000), consume_ts=time.monotonic_ns())
    sent = drain_queue(path.queue)
    assert len(sent) > 0
    open_symbols = set(int(x) for x in sent["symbol"])     # nothing was filled: every symbol has open orders
    path.flags[trade.F_KILL] = 1
    header, records = in_process_ring()
    ctl = control.new_block()
    assert b.step(header, records, ctl, time.monotonic_ns() + 5_000_000) == brain.RET_ROUND
    assert path.risk.state == "HALTED"
    cancels = drain_queue(path.queue)
    assert set(cancels["action"]) == {ACTION_CANCEL_ALL} and set(int(x) for x in cancels["symbol"]) == open_symbols


def test_tick_update_is_one_event_per_round_with_the_record_count():
    b = make_brain()
    ticks = []
    b.bus.subscribe(bus.TICK_UPDATE, lambda t, n, last_seq, batches: ticks.append((n, last_seq, batches)))
    recs = quotes(1000)
    b.process(recs[:600])
    b.process(recs[600:])
    b.housekeeping(0)
    b.housekeeping(0)
    assert ticks == [(1000, 999, 2)]


def _risk_snapshot(rk):
    return [a.copy() for a in rk if isinstance(a, np.ndarray)]


def test_the_last_orders_risk_check_is_rehearsed_while_the_market_is_quiet_and_records_nothing():
    path = order_path()
    b = make_brain(path)
    assert pipeline.warm_signal_path(b.bs, time.monotonic_ns()) == -1     # no signal yet: nothing to rehearse
    b.process(live_quotes(0))               # compiled first: risk refuses quotes older than its stale limit
    k = b.process(live_quotes(3000), consume_ts=time.monotonic_ns())
    sent = drain_queue(path.queue)
    assert k > 0 and len(sent) == k
    before, st = _risk_snapshot(path.risk.rk), b.st.copy()
    sig = b.bs.signals[0].copy()
    verdict = pipeline.warm_signal_path(b.bs, time.monotonic_ns())
    assert verdict == 0                                                 # what check would say of the order now
    assert all((x == y).all() for x, y in zip(_risk_snapshot(path.risk.rk), before))   # no open order, rate slot,
    assert len(drain_queue(path.queue)) == 0                            # refusal or client id; nothing sent
    st[pipeline.S_WARMS] += 1
    assert (b.st == st).all() and b.bs.signals[0] == sig                # only the rehearsal count moved
    req = b.bs.req[0]
    assert req["symbol"] == sig["symbol"] and req["qty_steps"] > 0 and req["client_id"] == 0
    # a rehearsal refused by risk is not a refusal either: nothing counted, no hold-off
    riskmod.set_state(path.risk.g, riskmod.HALTED, riskmod.WHY_MANUAL, 0)
    rejected = int(path.risk.g[riskmod.G_REJECTED])
    assert pipeline.warm_signal_path(b.bs, time.monotonic_ns()) == riskmod.R_HALTED
    assert int(path.risk.g[riskmod.G_REJECTED]) == rejected and b.stats()["rejects"] == 0


@pytest.mark.parametrize("warm_us, expect_warms", [(200, True), (0, False)])
def test_the_brain_loop_rehearses_every_warm_us_while_idle_and_never_when_off(warm_us, expect_warms):
    path = order_path()
    b = make_brain(path, warm_us=warm_us)
    b.process(live_quotes(0))
    b.process(live_quotes(3000), consume_ts=time.monotonic_ns())
    b.housekeeping(time.monotonic_ns())     # the bus delivered: the loop runs until its round ends
    drain_queue(path.queue)
    header, records = in_process_ring()
    ctl = control.new_block()
    b.step(header, records, ctl, 0)         # compiled (or loaded) before the clock starts; returns at once
    open_before, st_before = path.risk.rk.oo.copy(), b.st.copy()
    st_before[pipeline.S_WARMS] = b.st[pipeline.S_WARMS] = 0
    t0 = time.monotonic_ns()
    assert b.step(header, records, ctl, t0 + 20_000_000) == brain.RET_ROUND     # 20 ms without market data
    elapsed = time.monotonic_ns() - t0
    warms = int(b.st[pipeline.S_WARMS])
    assert elapsed >= 20_000_000
    if expect_warms:
        assert 20 <= warms <= elapsed // 200_000 + 1    # about one per 200 us (a loaded box may skip some), never more
    else:
        assert warms == 0
    assert len(drain_queue(path.queue)) == 0 and (path.risk.rk.oo == open_before).all()
    assert b.st[pipeline.S_ORDERS] == st_before[pipeline.S_ORDERS] and b.st[pipeline.S_REJECTS] == 0


def test_brain_config_defaults_and_validation():
    assert brain.BrainConfig.from_section({}) == brain.BrainConfig()
    c = brain.BrainConfig.from_section({"candle_intervals": ["1s", "5m"], "round_ms": 5, "trading": False})
    assert c.candle_intervals == ("1s", "5m") and c.round_ms == 5.0 and not c.trading
    assert brain.BrainConfig.from_section({"unit_notional": 0}).unit_notional == 0.0
    for bad, msg in [({"batchsize": 1}, "unknown key"), ({"candle_intervals": ["1y"]}, "candle interval"),
                     ({"batch": 0}, "batch must be > 0"), ({"trading": "yes"}, "true or false"),
                     ({"bus_capacity": 1000}, "power of two"), ({"round_ms": -1}, "round_ms must be > 0"),
                     ({"batch": 1.5}, "batch must be an integer"), ({"unit_notional": -5}, "unit_notional must be >= 0"),
                     ({"warm_us": -1}, "warm_us")]:
        with pytest.raises(ConfigError, match=msg):
            brain.BrainConfig.from_section(bad)


def test_validate_checks_brain_section_and_strategy_selection():
    bc, sc = brain.validate(EngineConfig(strategy="obi", sections={"brain": {"batch": 512},
                                                                   "strategy": {"threshold": 0.5}}))
    assert bc.batch == 512 and sc.name == "obi"
    with pytest.raises(ConfigError, match="unknown strategy"):
        brain.validate(EngineConfig(strategy="nope"))


@pytest.mark.time_limit(120)
def test_engine_run_uses_the_configured_strategy_and_consumes_everything(tmp_path):
    from tests.enginerun import EngineRun
    cfg = tmp_path / "aegis.toml"
    cfg.write_text('[engine]\nstrategy = "obi"\n[strategy]\nthreshold = 0.5\n'
                   '[brain]\nround_ms = 5\ncandle_intervals = ["1s"]\n')
    run = EngineRun("--source", "synthetic", "--duration", "1.5", "--config", str(cfg), "--status-interval", "1")
    try:
        assert run.finish(90) == 0, run.output
    finally:
        run.kill()
    assert "brain: strategy obi threshold=0.5" in run.output
    assert "checksum feed/brain: match" in run.output
