"""Order path against the embedded venue: risk -> queue -> sender -> journal -> venue -> user stream -> risk."""
import time

import pytest

from aegis.trade import journal
from aegis.trade import sender as trade
from aegis.binance import wire
from aegis.core.records import ORDER_MARKET, SIDE_BUY, SIDE_SELL
from aegis.venue import VenueConfig, start_venue

from tests.trade_rig import KeyPool, Rig, venue_config, wait_for
from tests.windows import fresh_window

pytestmark = [pytest.mark.time_limit(30), pytest.mark.usefixtures("compiled_order_path")]


@pytest.fixture(scope="module")
def venue():
    with start_venue(venue_config()) as v:
        yield v


@pytest.fixture(scope="module")
def pool():
    return KeyPool()


@pytest.fixture
def rig(venue, pool, tmp_path):
    rigs = []

    def make(**kw):
        r = Rig(venue, pool.take(), tmp_path / "journal.jsonl", **kw).start()
        rigs.append(r)
        return r
    yield make
    for r in rigs:
        r.stop()
    venue.exchange.faults.clear()


def kinds(path, coid=None):
    return [r["k"] for r in journal.read_records(str(path))[0] if coid is None or r.get("coid") == coid]


def test_order_is_journaled_before_it_is_sent_and_reaches_the_venue_with_our_client_id(rig, tmp_path):
    r = rig()
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert queued == 1
    coid = r.ts.sender.coid(req["client_id"])
    assert wait_for(lambda: [o for o in r.exchange_open("BTCUSDT") if o["clientOrderId"] == coid])
    assert wait_for(lambda: "ack" in kinds(tmp_path / "journal.jsonl", coid))
    ks = kinds(tmp_path / "journal.jsonl", coid)
    assert ks.index("req") < ks.index("ack")
    assert len(r.ts.sender.handoff_ns) == 1 and r.ts.sender.handoff_ns[0] > 0


def test_market_fill_comes_back_as_an_event_that_moves_the_risk_position(rig, tmp_path):
    r = rig()
    r.market("BTCUSDT", SIDE_BUY, 0.003)
    assert r.wait_position("BTCUSDT", 0.003)
    assert r.exchange_position("BTCUSDT") == pytest.approx(0.003)
    assert r.ts.userstream.ledger.pos("BTCUSDT").qty == pytest.approx(0.003)
    assert r.ts.userstream.ledger.fees > 0
    assert "fill" in kinds(tmp_path / "journal.jsonl")


def test_partial_fills_each_arrive_once_and_sum_to_the_order(rig, venue):
    r = rig()
    # thin book: no level may hold more than half the order, so it has to sweep at least two levels
    levels = venue.market.book_levels("ETHUSDT", "BUY", venue.exchange.cfg.book_depth)
    venue.exchange.set_liquidity_scale(0.02 / max(q for _, q in levels))
    try:
        r.market("ETHUSDT", SIDE_BUY, 0.05)
        assert r.wait_position("ETHUSDT", 0.05)
    finally:
        venue.exchange.set_liquidity_scale(1.0)
    fills = [x for x in journal.read_records(r.ts.journal_path)[0] if x["k"] == "fill"]
    assert len(fills) >= 2
    assert sum(float(f["qty"]) for f in fills) == pytest.approx(0.05)
    assert [f["status"] for f in fills][-1] == "FILLED" and fills[0]["status"] == "PARTIALLY_FILLED"
    assert len({(f["oid"], f["tid"]) for f in fills}) == len(fills)


def test_exchange_reject_is_journaled_and_released_in_risk(rig):
    r = rig()
    r.book.restore_position("BTCUSDT", 0.01, 90000.0)   # risk believes in a position the exchange does not have
    queued, req = r.order("BTCUSDT", SIDE_SELL, 0.005, r.below_bid("BTCUSDT", -0.01), ro=1)
    assert queued == 1
    assert wait_for(lambda: (r.pump(), r.book.reject_counts().get("EXCHANGE_REJECT"))[1])
    recs = [x for x in journal.read_records(r.ts.journal_path)[0] if x["k"] == "rej"]
    assert recs and recs[0]["code"] == -2022
    assert r.book.sym[0, 24] == 0      # S_OPEN_COUNT released


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_timeout_then_the_order_is_found_by_client_id_and_not_sent_twice(rig, venue, transport):
    # a recv window well past the 0.8 s delay: a stalled box must not make the original land expired
    r = rig(trade_cfg={"timeout_s": 0.3, "recv_window_ms": 3000, "transport": transport})
    venue.exchange.faults.delay_next(1, seconds=0.8, execute=True)
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    coid = r.ts.sender.coid(req["client_id"])
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    time.sleep(1.0)                                    # the delayed original has certainly landed by now
    assert [o["clientOrderId"] for o in r.exchange_open("BTCUSDT")] == [coid]
    assert r.ts.client.stats["recovered"] == 1 and r.ts.client.stats["resends"] == 0


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_timeout_of_an_order_that_never_executed_is_resent_once_after_its_recv_window(rig, venue, transport):
    r = rig(trade_cfg={"timeout_s": 0.3, "recv_window_ms": 500, "transport": transport})
    venue.exchange.faults.delay_next(1, seconds=0.5, execute=False)
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    coid = r.ts.sender.coid(req["client_id"])
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert r.ts.client.stats["resends"] == 1
    assert [o["clientOrderId"] for o in r.exchange_open("BTCUSDT")] == [coid]


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_503_unknown_status_that_did_execute_is_recovered_without_resend(rig, venue, transport):
    r = rig(trade_cfg={"transport": transport})
    venue.exchange.faults.fail_next(1, "unknown")
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert len(r.exchange_open("BTCUSDT")) == 1 and r.ts.client.stats["resends"] == 0


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_clock_behind_by_more_than_recv_window_resyncs_and_retries_once(rig, transport):
    r = rig(trade_cfg={"transport": transport})
    r.ts.client.offset_ms -= 60_000
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert r.ts.client.stats["resyncs"] == 1 and abs(r.ts.client.offset_ms) < 5_000


def test_cancel_request_cancels_the_order_on_the_venue(rig):
    r = rig()
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.exchange_open("BTCUSDT"))
    assert r.cancel(int(req["client_id"])) == 1
    assert wait_for(lambda: not r.exchange_open("BTCUSDT"))
    assert wait_for(lambda: (r.pump(), r.book.sym[0, 24] == 0)[1])     # CANCELED event released it in risk


def test_ws_transport_places_and_cancels_orders(rig):
    r = rig(trade_cfg={"transport": "ws"})
    queued, req = r.order("ETHUSDT", SIDE_BUY, 0.01, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: r.exchange_open("ETHUSDT"))
    r.cancel(int(req["client_id"]))
    assert wait_for(lambda: not r.exchange_open("ETHUSDT"))
    assert r.ts.order_client.stats["requests"] == 2


def test_kill_switch_file_halts_cancels_everything_and_refuses_new_orders(rig, tmp_path):
    kill = tmp_path / "KILL"
    r = rig(risk_cfg={"kill_switch_file": str(kill)})
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    r.order("ETHUSDT", SIDE_BUY, 0.01, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: len(r.exchange_open()) == 2)
    kill.touch()
    assert wait_for(lambda: (r.pump(), r.book.state == "HALTED")[1], 10)
    assert r.book.state_reason == "kill switch"
    assert wait_for(lambda: not r.exchange_open(), 10)
    queued, _ = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert queued == 0 and r.book.reject_counts()["HALTED"] == 1
    assert wait_for(lambda: any(x["k"] == "state" and x["state"] == "HALTED"
                                for x in journal.read_records(r.ts.journal_path)[0]))


def test_kill_with_flatten_closes_every_position(rig):
    r = rig()
    r.market("BTCUSDT", SIDE_BUY, 0.004)
    assert r.wait_position("BTCUSDT", 0.004)
    r.ts.kill(flatten=True)
    assert r.wait_position("BTCUSDT", 0.0)
    assert r.exchange_position("BTCUSDT") == 0.0


def test_shutdown_cancels_every_open_order_on_every_symbol(rig):
    r = rig()
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    r.order("ETHUSDT", SIDE_BUY, 0.01, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: len(r.exchange_open()) == 2)
    client = r.ts.client
    out = r.stop()
    assert set(out) == {"BTCUSDT", "ETHUSDT"} and all(v["ok"] for v in out.values())
    from aegis.binance.client import BinanceClient
    assert BinanceClient(client.ep, client.keys).open_orders()["orders"] == []


def test_emergency_cancel_all_works_without_the_brain(venue, pool, tmp_path, monkeypatch):
    k = pool.take()
    r = Rig(venue, k, tmp_path / "j.jsonl").start()
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: len(r.exchange_open()) == 1)
    r.stop(cancel=False)                              # the Brain "died": nothing cancelled
    monkeypatch.setenv("BINANCE_API_KEY", k.key.reveal())
    monkeypatch.setenv("BINANCE_API_SECRET", k.secret.reveal())
    out = trade.emergency_cancel_all("embedded", embedded=venue)
    assert list(out) == ["BTCUSDT"] and out["BTCUSDT"]["ok"]
    from aegis.binance.client import BinanceClient, endpoints
    assert BinanceClient(endpoints("embedded", embedded=venue), k).open_orders()["orders"] == []


def test_429_backs_off_for_retry_after_without_touching_the_network(tmp_path):
    from aegis.binance.client import BinanceClient, endpoints
    from aegis.binance.keys import from_strings
    from aegis.venue.ratelimit import RateLimitConfig
    cfg = VenueConfig(rate=20, rate_limits=RateLimitConfig(weight_per_minute=10, weight_window_s=2.0))
    with start_venue(cfg) as v:
        c = BinanceClient(endpoints("embedded", embedded=v), from_strings("aegis-test-key", "aegis-test-secret"))
        fresh_window(2.0, 1.0)
        results = [c.request("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}) for _ in range(12)]
        assert any(x.get("status") == 429 for x in results)
        assert 0 < c.backing_off() <= 2.5
        sent = c.stats["requests"]
        x = c.request("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})
        assert x["code"] == -1003 and x.get("local") and c.stats["requests"] == sent
        time.sleep(c.backing_off() + 0.1)
        assert c.request("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})["ok"]


def _spec(venue, tmp_path, symbols, key, sections=None):
    from aegis.core.config import EngineConfig
    from aegis.core.startup import ProcessSpec
    cfg = EngineConfig(symbols=symbols, out_dir=str(tmp_path),
                       sections=sections or {"trade": {"fsync": "never"}, "risk": {"max_md_age_ms": 0}})
    return ProcessSpec("run", "brain", None, 2, "ring", "ctl", None, cfg,
                       venue_urls=(venue.rest_url, venue.ws_market_url, venue.ws_api_url),
                       api_key=key.key.reveal(), api_secret=key.secret.reveal())


def test_open_order_path_builds_the_brains_trading_state_from_the_spec(venue, pool, tmp_path):
    op = trade.open_order_path(_spec(venue, tmp_path, ("ETHUSDT", "BTCUSDT"), pool.take()), None)
    try:
        from aegis.binance.symbols import discover
        feed_order = list(discover(venue.rest_url, symbols=["ETHUSDT", "BTCUSDT"]).names)   # what the Feed uses
        assert [r.symbol for r in op.risk.rules] == feed_order
        assert {r.symbol: r.tick_size for r in op.risk.rules} == {"BTCUSDT": "0.10", "ETHUSDT": "0.01"}
        assert op.session.userstream.connected.is_set()
        # an embedded run trades a fresh account under a fresh key: its journal is its own, never a previous run's
        assert (tmp_path / "journal-embedded-run.jsonl").exists()
        assert op.queue.header is not None and op.fills.records.dtype.names[0] == "client_id"
    finally:
        op.close()


def test_open_order_path_refuses_a_symbol_count_it_cannot_share_with_the_feed(venue, pool, tmp_path):
    assert trade.open_order_path(_spec(venue, tmp_path, 5, pool.take()), None) is None


def test_a_halt_survives_a_restart_until_resume(venue, pool, tmp_path):
    k = pool.take()
    a = Rig(venue, k, tmp_path / "j.jsonl").start()
    a.ts.kill()
    assert wait_for(lambda: (a.pump(), a.book.state == "HALTED")[1])
    a.stop()
    b = Rig(venue, k, tmp_path / "j.jsonl").start()
    assert b.book.state == "HALTED" and b.book.state_reason == "kill switch"
    b.stop()
    c = Rig(venue, k, tmp_path / "j.jsonl", resume=True).start()
    assert c.book.state == "ACTIVE"
    c.stop()
    d = Rig(venue, k, tmp_path / "j.jsonl").start()
    assert d.book.state == "ACTIVE"
    d.stop()


def test_418_ban_stops_even_cancels_until_it_ends(tmp_path):
    from aegis.binance.client import BinanceClient, endpoints
    from aegis.binance.keys import from_strings
    from aegis.venue.ratelimit import RateLimitConfig
    cfg = VenueConfig(rate=20, rate_limits=RateLimitConfig(weight_per_minute=5, weight_window_s=30.0,
                                                           requests_over_limit_before_ban=2, ban_s=1.0))
    with start_venue(cfg) as v:
        c = BinanceClient(endpoints("embedded", embedded=v), from_strings("aegis-test-key", "aegis-test-secret"))
        fresh_window(30.0)
        statuses = [c.request("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}, urgent=True).get("status")
                    for _ in range(12)]
        assert 429 in statuses and 418 in statuses and c.banned
        sent = c.stats["requests"]
        x = c.cancel_all("BTCUSDT")                   # urgent, but an IP ban means nothing may go out
        assert x.get("local") and c.stats["requests"] == sent
        assert c.backing_off() > 0


def test_a_confirmed_cancel_releases_risk_even_without_the_user_stream(rig):
    r = rig()
    r.ts.userstream.stop()
    queued, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.exchange_open("BTCUSDT"))
    r.cancel(int(req["client_id"]))
    assert wait_for(lambda: (r.pump(), r.book.sym[0, 24] == 0)[1])


def test_open_order_path_without_a_venue_runs_signals_only(tmp_path):
    from aegis.core.config import EngineConfig
    from aegis.core.startup import ProcessSpec
    spec = ProcessSpec("run", "brain", None, 2, "ring", "ctl", None,
                       EngineConfig(symbols=("BTCUSDT",), source="synthetic", out_dir=str(tmp_path)))
    assert trade.open_order_path(spec, None) is None


def test_open_order_path_failures_are_one_line_config_errors(tmp_path, monkeypatch):
    from aegis.core.config import ConfigError, EngineConfig
    from aegis.core.startup import ProcessSpec
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    spec = ProcessSpec("run", "brain", None, 2, "ring", "ctl", None,
                       EngineConfig(symbols=("BTCUSDT",), venue="binance-testnet", out_dir=str(tmp_path)),
                       venue_urls=("http://127.0.0.1:9", "ws://127.0.0.1:9", "ws://127.0.0.1:9/ws-fapi/v1"))
    with pytest.raises(ConfigError) as e:
        trade.open_order_path(spec, None)
    assert "BINANCE_API_KEY" in str(e.value) and "\n" not in str(e.value)


def test_ws_order_connection_dropped_while_idle_is_rebuilt_before_the_next_order(rig, venue):
    r = rig(trade_cfg={"transport": "ws"})
    oc = r.ts.order_client
    assert oc.stats["reconnects"] == 1                 # connected at start, not on the first order
    oc._ws.sock.close()                                # the venue (or a NAT) drops it while we are idle
    assert wait_for(lambda: oc.stats["reconnects"] == 2, 10)
    r.order("ETHUSDT", SIDE_BUY, 0.01, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert r.ts.client.stats["resends"] == 0 and oc.stats["timeouts"] == 0


def test_daily_loss_halt_is_logged_with_its_reason_and_journaled(rig, caplog):
    import logging
    caplog.set_level(logging.ERROR, logger="aegis.trade.sender")
    r = rig(risk_cfg={"daily_loss_limit": 0.01})
    r.market("BTCUSDT", SIDE_BUY, 0.002)               # the taker fee alone is a loss above 0.01
    assert wait_for(lambda: (r.pump(), r.quotes(), r.book.state == "HALTED")[2])
    assert r.book.state_reason == "daily loss limit"
    assert wait_for(lambda: any("HALTED: daily loss limit" in m for m in caplog.messages))
    assert wait_for(lambda: any(x["k"] == "state" and x["reason"] == "daily loss limit"
                                for x in journal.read_records(r.ts.journal_path)[0]))


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_on_a_plain_connection_a_new_order_leaves_from_the_jitted_fast_path(rig, transport):
    r = rig(trade_cfg={"transport": transport})
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    st = r.ts.sender.wire_state
    assert st[wire.ST_SENT_N] == 1                                 # written by send(2) from the nogil kernel
    k = kinds(r.ts.journal_path, f"{r.ts.jstate.prefix}1")
    assert k[0] == "req" and "ack" in k                            # journaled before it was sent


def test_when_python_must_send_the_order_still_goes_through(rig, monkeypatch):
    from aegis.binance.client import BinanceClient
    monkeypatch.setattr(BinanceClient, "plain_fd", lambda self, conn: -1)     # as on a TLS connection
    r = rig()
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert r.ts.sender.wire_state[wire.ST_SENT_N] == 0
    assert len(r.exchange_open("BTCUSDT")) == 1


def test_the_generic_path_still_works_with_the_fast_path_off(rig):
    r = rig(trade_cfg={"fast_path": False})
    r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert r.ts.sender.fast is None and len(r.exchange_open("BTCUSDT")) == 1


def _answered(r):
    """Client ids in the order the sender read their answers (Sender.results keeps insertion order)."""
    return list(r.ts.sender.results)


def test_an_order_of_another_symbol_leaves_while_the_first_awaits_its_answer(rig, venue):
    r = rig(trade_cfg={"timeout_s": 6.0, "recv_window_ms": 10000})
    venue.exchange.faults.delay_next(1, seconds=3.0, execute=True)   # BTCUSDT's answer comes 3 s late
    _, slow = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 1)
    _, quick = r.order("ETHUSDT", SIDE_BUY, 0.05, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: int(quick["client_id"]) in r.ts.sender.results)
    assert int(slow["client_id"]) not in r.ts.sender.results     # still in flight: ETHUSDT did not wait for it
    assert r.ts.sender.results[int(quick["client_id"])]["ok"]
    assert wait_for(lambda: r.ts.sender.acks == 2)
    assert _answered(r) == [int(quick["client_id"]), int(slow["client_id"])]


def test_an_answer_is_read_when_it_arrives_not_when_the_next_order_comes(rig, venue, monkeypatch):
    """The sender's jitted wait watches the connections of its orders in flight and returns for an answer. Without
    that, an idle sender read it only when its wait timed out (made 30 s here) or the next order came."""
    monkeypatch.setattr(trade, "PARK_TIMEOUT_NS", 30_000_000_000)
    r = rig(trade_cfg={"timeout_s": 6.0, "recv_window_ms": 10000})
    venue.exchange.faults.delay_next(1, seconds=0.5, execute=True)
    _, slow = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 1)
    assert int(slow["client_id"]) not in r.ts.sender.results
    assert wait_for(lambda: int(slow["client_id"]) in r.ts.sender.results, timeout=5.0)
    assert r.ts.sender.results[int(slow["client_id"])]["ok"]


def test_ws_orders_are_pipelined_on_the_one_connection_and_answers_matched_by_id(rig, venue):
    """A ws-fapi order leaves before the answer of the one sent before it (the venue delays that answer 1.5 s)."""
    r = rig(trade_cfg={"transport": "ws", "timeout_s": 6.0, "recv_window_ms": 10000})
    venue.exchange.faults.delay_next(1, seconds=1.5, execute=True)
    _, slow = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 1)
    _, quick = r.order("ETHUSDT", SIDE_BUY, 0.05, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 2)
    assert int(slow["client_id"]) not in r.ts.sender.results      # both were in flight at once
    assert wait_for(lambda: r.ts.sender.acks == 2)
    assert _answered(r) == [int(slow["client_id"]), int(quick["client_id"])]
    assert all(r.ts.sender.results[c]["ok"] for c in _answered(r))
    assert len(r.exchange_open("BTCUSDT")) == 1 and len(r.exchange_open("ETHUSDT")) == 1
    assert r.ts.order_client.stats["reconnects"] == 1 and r.ts.client.stats["recovered"] == 0


def test_ws_orders_in_flight_on_a_connection_that_drops_are_looked_up_not_lost_or_sent_twice(rig, venue):
    import socket
    r = rig(trade_cfg={"transport": "ws", "timeout_s": 6.0, "recv_window_ms": 1500})
    venue.exchange.faults.delay_next(1, seconds=0.5, execute=True)
    _, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 1)
    r.ts.order_client._ws.sock.shutdown(socket.SHUT_RDWR)      # the connection drops with the order in flight
    assert wait_for(lambda: r.ts.sender.acks == 1, 10)
    assert [o["clientOrderId"] for o in r.exchange_open("BTCUSDT")] == [r.ts.sender.coid(req["client_id"])]
    assert r.ts.client.stats["recovered"] == 1 and r.ts.client.stats["resends"] == 0


def test_a_reduce_only_order_reaches_the_exchange_after_its_symbols_orders_sent_before_it(rig, venue):
    """Two connections do not keep their requests' order. Long 0.002, then a sell of 0.002 (slow to arrive) and a
    reduce-only sell of 0.002: in the order made, the sell closes the position and the reduce-only one finds nothing
    to reduce (-2022). Sent at once, the reduce-only sell would close it first and the sell would open a short."""
    r = rig(trade_cfg={"timeout_s": 5.0, "recv_window_ms": 10000})
    r.market("BTCUSDT", SIDE_BUY, 0.002)
    assert r.wait_position("BTCUSDT", 0.002)
    venue.exchange.faults.delay_next(1, seconds=1.0, execute=True)
    _, sell = r.market("BTCUSDT", SIDE_SELL, 0.002)
    assert wait_for(lambda: r.ts.sender.sent == 2)
    queued, close = r.order("BTCUSDT", SIDE_SELL, 0.002, 0.0, ORDER_MARKET, ro=1)
    assert queued == 1
    ids = [int(sell["client_id"]), int(close["client_id"])]
    assert wait_for(lambda: ids[1] in r.ts.sender.results)
    assert _answered(r)[-2:] == ids
    assert r.ts.sender.results[ids[0]]["ok"] and r.ts.sender.results[ids[1]]["code"] == -2022
    assert r.exchange_position("BTCUSDT") == 0


def test_a_symbols_next_order_that_reduces_nothing_does_not_wait(rig, venue):
    r = rig(trade_cfg={"timeout_s": 6.0, "recv_window_ms": 10000})
    venue.exchange.faults.delay_next(1, seconds=3.0, execute=True)
    _, slow = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 1)
    _, quick = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT", 0.03))
    assert wait_for(lambda: int(quick["client_id"]) in r.ts.sender.results)
    assert int(slow["client_id"]) not in r.ts.sender.results
    assert wait_for(lambda: r.ts.sender.acks == 2)


def test_with_every_order_connection_awaiting_an_answer_the_next_order_waits_for_the_oldest(rig, venue):
    r = rig(trade_cfg={"timeout_s": 5.0, "recv_window_ms": 10000, "in_flight": 1})
    venue.exchange.faults.delay_next(1, seconds=1.0, execute=True)
    _, slow = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    assert wait_for(lambda: r.ts.sender.sent == 1)
    _, other = r.order("ETHUSDT", SIDE_BUY, 0.05, r.below_bid("ETHUSDT"))
    assert wait_for(lambda: r.ts.sender.acks == 2)
    assert _answered(r) == [int(slow["client_id"]), int(other["client_id"])]


def test_stopping_reads_the_answer_of_every_order_in_flight(rig, venue, tmp_path):
    r = rig(trade_cfg={"timeout_s": 5.0, "recv_window_ms": 10000})
    venue.exchange.faults.delay_next(1, seconds=0.5, execute=True)
    _, req = r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
    coid = r.ts.sender.coid(req["client_id"])
    assert wait_for(lambda: r.ts.sender.sent == 1)
    r.ts.sender.stop()
    assert r.ts.sender.acks == 1 and r.ts.sender.results[int(req["client_id"])]["ok"]
    assert kinds(tmp_path / "journal.jsonl", coid)[:2] == ["req", "ack"]
