"""Strategies act on what actually happened: through the Brain with a real risk book, a minimal venue answering
between batches (cancels confirmed; entries rest or fill as each test says)."""
import time

import numpy as np

from aegis.brain import process as brain
from aegis.brain import bus
from aegis.brain import pipeline
from aegis.core import latency
from aegis.brain import strategy
from aegis.trade import risk as riskmod
from aegis.core.records import (ACTION_CANCEL, ACTION_NEW, FILL_DTYPE, SIDE_BUY, SIDE_SELL, STATUS_CANCELED,
                           STATUS_FILLED, STATUS_REJECTED)
from tests.test_brain import drain_queue, order_path
from tests.test_brain_data import quotes

STEP_NS = 10_000_000     # 10 ms of exchange time per record


def dip_quotes():
    """One symbol: calm at 100, a plunge of 5 over records 2000..2300, back at 100 from record 2300."""
    recs = quotes(4_000, n_symbols=1, seed=1, step_ns=STEP_NS)
    mid = np.full(len(recs), 100.0) + 0.01 * np.sin(np.arange(len(recs)))
    mid[2000:2300] -= np.linspace(0, 5, 300)
    mid[2300:] = 100.0
    recs["bid_px"], recs["ask_px"] = mid - 0.01, mid + 0.01
    return recs


def fill(req, status, qty=0.0, price=0.0, client_id=None):
    f = np.zeros(1, FILL_DTYPE)[0]
    f["client_id"] = req["client_id"] if client_id is None else client_id
    f["symbol"] = req["symbol"]
    f["side"] = req["side"]
    f["status"] = status
    f["qty"] = qty
    f["price"] = price
    return f


def run(values, fill_entries, chunk=50):
    """Feed the dip to a mean_reversion Brain chunk by chunk (one chunk = one ring batch); between chunks the venue
    answers every request: cancels are confirmed, exits fill, entries fill only when fill_entries."""
    path = order_path(n_symbols=1)
    cfg = strategy.resolve("mean_reversion", {"sample_ms": 100, "period": 20, "rsi_period": 5, **values})
    b = brain.Brain(brain.BrainConfig(batch=4096), cfg, 1, path, latency.new_set())
    signals, sent = [], []
    b.bus.subscribe(bus.SIGNAL_GENERATED,
                    lambda t, slot, verdict, cid: signals.append((b.signal_pool.records[slot].copy(), verdict, cid)))
    recs = dip_quotes()
    for a in range(0, len(recs), chunk):
        part = recs[a:a + chunk].copy()
        now = time.monotonic_ns()
        part["recv_ts"], part["pub_ts"] = now, now + 10      # fresh market data for risk
        b.process(part, consume_ts=now)
        b.housekeeping(now)
        for req in drain_queue(path.queue):
            sent.append(req.copy())
            if req["action"] == ACTION_CANCEL:
                f = fill(req, STATUS_CANCELED, client_id=req["target_id"])
            elif fill_entries or req["reduce_only"]:
                f = fill(req, STATUS_FILLED, req["qty"], req["price"])
            else:
                continue                                           # the entry rests on the book
            assert path.fills.put(f)                   # as the sender / user stream report it
        pipeline.service(b.bs, b.sink, path.flags, time.monotonic_ns())   # the next loop iteration takes it in
    return b, path, signals, sent


def test_mean_reversion_sends_no_reduce_only_exit_while_its_entry_never_filled():
    b, path, signals, sent = run({"entry_timeout_ms": 5000}, fill_entries=False)
    new = [r for r in sent if r["action"] == ACTION_NEW]
    assert len(new) >= 1 and new[0]["side"] == SIDE_BUY and new[0]["reduce_only"] == 0
    assert all(r["reduce_only"] == 0 for r in new)                 # never an exit: nothing was ever held
    assert "REDUCE_ONLY_NO_POSITION" not in path.risk.reject_counts()
    assert b.stats()["rejects"] == 0 and path.risk.position("S0USDT") == 0.0
    # one order at a time: an entry is always cancelled before the next entry is sent
    kinds = ["cancel" if r["action"] == ACTION_CANCEL else "entry" for r in sent]
    assert kinds[:2] == ["entry", "cancel"] and all(a != b_ for a, b_ in zip(kinds, kinds[1:]))


def test_a_resting_entry_is_cancelled_once_entry_timeout_ms_of_exchange_time_passed():
    b, path, signals, sent = run({"entry_timeout_ms": 1000}, fill_entries=False)
    entries = [(s, cid) for s, v, cid in signals if s["action"] != ACTION_CANCEL and v == 0]
    cancels = [s for s, v, cid in signals if s["action"] == ACTION_CANCEL and v == 0]
    assert len(entries) >= 1 and len(cancels) in (len(entries), len(entries) - 1)   # the last may still rest
    for (entry, cid), cancel in zip(entries, cancels):
        assert cancel["target_id"] == cid > 0
        waited = int(cancel["exch_ts"]) - int(entry["exch_ts"])
        assert 1000 * 1_000_000 <= waited < 1000 * 1_000_000 + STEP_NS    # the first record at/after the timeout
    reqs = [r for r in sent if r["action"] == ACTION_CANCEL]
    assert [int(r["target_id"]) for r in reqs] == [int(cid) for _, cid in entries[:len(reqs)]]
    assert path.risk.sym[0, riskmod.S_OPEN_COUNT] <= 1


def test_after_its_entry_filled_mean_reversion_exits_the_actual_position_reduce_only():
    b, path, signals, sent = run({"entry_timeout_ms": 5000}, fill_entries=True)
    entry, exit_ = sent[0], sent[1]
    assert entry["action"] == exit_["action"] == ACTION_NEW
    assert entry["side"] == SIDE_BUY and entry["reduce_only"] == 0
    assert exit_["side"] == SIDE_SELL and exit_["reduce_only"] == 1 and exit_["qty"] == entry["qty"]
    sigs = [s for s, v, cid in signals if v == 0]
    assert 2000 < sigs[0]["seq"] < 2300 <= sigs[1]["seq"]          # bought the dip, sold at the middle band
    assert not any(r["action"] == ACTION_CANCEL for r in sent[:2])
    assert b.stats()["rejects"] == 0


def test_a_rejected_entry_leaves_the_strategy_flat_and_free_to_enter_again():
    path = order_path(n_symbols=1)
    cfg = strategy.resolve("mean_reversion", {"sample_ms": 100, "period": 20, "rsi_period": 5})
    b = brain.Brain(brain.BrainConfig(batch=4096), cfg, 1, path, latency.new_set())
    recs = dip_quotes()
    sent = []
    for a in range(0, 2300, 20):
        part = recs[a:a + 20].copy()
        now = time.monotonic_ns()
        part["recv_ts"], part["pub_ts"] = now, now + 10
        b.process(part, consume_ts=now)
        for req in drain_queue(path.queue):       # the exchange rejects every order (e.g. post-only would cross)
            sent.append(req.copy())
            assert path.fills.put(fill(req, STATUS_REJECTED))
        pipeline.service(b.bs, b.sink, path.flags, time.monotonic_ns())
    assert len(sent) >= 2 and all(r["reduce_only"] == 0 and r["side"] == SIDE_BUY for r in sent)
    assert path.risk.sym[0, riskmod.S_OPEN_COUNT] == 0


def test_mean_reversion_replay_cancels_stale_entries_never_exits_flat_and_is_deterministic(tmp_path):
    import csv
    import json

    from aegis.replay import run as replay
    from tests.test_replay import quotes_csv
    mids = list(100 + 2 * np.sin(np.arange(1500) / 9.0) + np.cumsum(np.random.default_rng(3).normal(0, 0.05, 1500)))
    f = quotes_csv(tmp_path / "BTCUSDT-bookTicker-2024-01-01.csv", mids=mids, step_ms=100)
    outs = []
    for run_dir in ("a", "b"):
        assert replay.main([f, "--strategy", "mean_reversion", "--param", "period=10", "--param", "k=1",
                            "--param", "rsi_period=3", "--param", "sample_ms=100", "--param", "entry_timeout_ms=1000",
                            "--brain", "unit_notional=0", "--risk", "price_band_bps=0", "--risk", "daily_loss_limit=0",
                            "--out", str(tmp_path / run_dir), "--no-progress"]) == 0
        outs.append(tmp_path / run_dir)
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert "REDUCE_ONLY_NO_POSITION" not in summary["refusals"] and summary["counts"]["fills"] > 0
    orders = list(csv.DictReader(open(outs[0] / "orders.csv")))
    cancels = [o for o in orders if o["action"] == "CANCEL"]
    by_cid = {o["client_id"]: o for o in orders if o["action"] == "NEW"}
    assert cancels
    for c in cancels:   # each cancel targets an entry that rested for exactly the timeout (sample records 100 ms)
        entry = next(o for o in by_cid.values() if o["status"] == "CANCELED" and int(o["done_ns"]) == int(c["send_ns"]))
        assert int(c["send_ns"]) - int(entry["send_ns"]) == 1_000_000_000 and entry["reduce_only"] == "0"
    for name in ("orders.csv", "trades.csv", "summary.json", "equity.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
