"""Restarts and reconciliation: positions and open orders come back from the journal, the exchange is asked, and
only real differences are reported. Includes the reproduction of `reconcile X: position 2.2 -> exchange says -2.2`:
a reconciliation that runs while the events of a reversal are still in the user stream."""
from __future__ import annotations

import logging

import numpy as np
import orjson
import pytest
import websocket

from aegis.binance.client import BinanceClient, endpoints
from aegis.core.records import FILL_DTYPE, SIDE_BUY
from aegis.trade import journal, risk
from aegis.trade.sender import FillQueue
from aegis.trade.userstream import UserStream
from aegis.venue import start_venue

from tests.trade_rig import KeyPool, Rig, venue_config, wait_for

pytestmark = [pytest.mark.time_limit(60), pytest.mark.usefixtures("compiled_order_path")]


@pytest.fixture(scope="module")
def venue():
    with start_venue(venue_config()) as v:
        yield v


@pytest.fixture(scope="module")
def pool():
    return KeyPool()


def _market(client, side, qty):
    r = client.place_order({"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": qty,
                            "newOrderRespType": "RESULT"})
    assert r["ok"], r


def _events(ws, n):
    """The next n ACCOUNT_UPDATE / ORDER_TRADE_UPDATE(TRADE) events of the account, raw."""
    out = []
    while len(out) < n:
        raw = ws.recv()
        m = orjson.loads(raw)
        if m.get("e") == "ACCOUNT_UPDATE" or (m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["x"] == "TRADE"):
            out.append(raw)
    return out


def test_a_reconciliation_during_a_reversal_in_flight_neither_flips_nor_double_counts(venue, pool, tmp_path,
                                                                                       caplog):
    k = pool.take()
    client = BinanceClient(endpoints("embedded", embedded=venue), k)
    client.sync_time()
    j, st = journal.open_journal(str(tmp_path / "j.jsonl"), "never")
    fills = FillQueue(4096)
    us = UserStream(client, j, st, {"BTCUSDT": 0}, fills)      # driven by hand: we decide when events arrive
    rows = {r["symbol"]: r for r in client.exchange_info()["data"]["symbols"]}
    book = risk.RiskBook(risk.RiskConfig(), [risk.SymbolRules.from_exchange_info(rows["BTCUSDT"])])
    key = client.listen_key_create()["data"]["listenKey"]
    ws = websocket.create_connection(f"{venue.ws_market_url}/private/ws/{key}", timeout=5)
    scratch = np.zeros(64, FILL_DTYPE)

    def brain_drains():
        from aegis.core import ring
        n = ring.read_batch(fills.header, fills.records, scratch, scratch.shape[0])
        risk.on_fill_batch(book.rk, scratch, n, 0)

    try:
        _market(client, "BUY", "0.002")
        for raw in _events(ws, 2):
            us.handle_message(raw, 0)
        brain_drains()
        assert book.position("BTCUSDT") == pytest.approx(0.002) and us.ledger.pos("BTCUSDT").qty == 0.002
        _market(client, "SELL", "0.004")           # reverse to -0.002; its events are now in the socket ...
        caplog.set_level(logging.INFO, "aegis.trade.userstream")
        us.reconcile()                              # ... when a reconciliation (a reconnect, an unknown order) runs
        brain_drains()
        assert book.position("BTCUSDT") == pytest.approx(-0.002)     # the exchange's word
        for raw in _events(ws, 2):                  # then the reversal's own events arrive
            us.handle_message(raw, 0)
        brain_drains()
        assert book.position("BTCUSDT") == pytest.approx(-0.002)     # not -0.006: the trade is in the snapshot
        assert us.ledger.pos("BTCUSDT").qty == pytest.approx(-0.002)
        assert us.stats["in_snapshot"] == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        # and a restart from this journal counts that trade once
        assert journal.rebuild(journal.read_records(j.path)[0]).positions["BTCUSDT"] == pytest.approx(-0.002)
    finally:
        ws.close()
        j.close()
        client.close()


def test_a_restart_restores_positions_and_orders_and_reports_only_real_differences(venue, pool, tmp_path, caplog):
    k = pool.take()
    path = tmp_path / "j.jsonl"
    a = Rig(venue, k, path).start()
    a.market("BTCUSDT", SIDE_BUY, 0.003)
    assert a.wait_position("BTCUSDT", 0.003)
    a.order("BTCUSDT", SIDE_BUY, 0.002, a.below_bid("BTCUSDT"))
    assert wait_for(lambda: len(a.exchange_open("BTCUSDT")) == 1)
    a.stop(cancel=False)                               # stopped in order, leaving its order working
    caplog.set_level(logging.WARNING)
    b = Rig(venue, k, path, resume=True).start()
    try:
        # from the journal, before any event of the exchange reached the book
        assert b.book.position("BTCUSDT") == pytest.approx(0.003)
        assert b.book.sym[0, risk.S_OPEN_COUNT] == 1
        assert "resumed from the journal: 1 position(s), 1 open order(s)" in caplog.text
        assert "reconcile BTCUSDT" not in caplog.text                 # a clean journal has nothing to report
        assert b.ts.orphans_cancelled is None
    finally:
        b.stop(cancel=False)
    _market(BinanceClient(endpoints("embedded", embedded=venue), k), "BUY", "0.002")   # changed while it was down
    caplog.clear()
    c = Rig(venue, k, path, resume=True).start()
    try:
        assert "reconcile BTCUSDT: position 0.003 -> exchange says 0.005" in caplog.text
        assert c.wait_position("BTCUSDT", 0.005)
    finally:
        c.stop()
