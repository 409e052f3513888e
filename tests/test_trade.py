"""Brain -> sender hand-off (queue, wait modes, wake protocol), order params, [trade] config, venue selection."""
import errno
import os
import threading
import time

from types import SimpleNamespace

import numpy as np
import pytest
from tests.trade_rig import brain_for, request

from aegis.brain import pipeline
from aegis.core import ring
from aegis.trade import risk
from aegis.core import wait as waiting
from aegis.trade import sender as trade
from aegis.binance.client import VENUE_URLS, VenueSelectionError, endpoints
from aegis.core.config import ConfigError
from aegis.core.records import (ACTION_CANCEL_ALL, FILL_DTYPE, ORDER_LIMIT, ORDER_MARKET, ORDER_REQUEST_DTYPE, SIDE_BUY,
                           SIDE_SELL, STATUS_FILLED, TIF_GTX)


def one_req(cid=1):
    r = np.zeros(1, ORDER_REQUEST_DTYPE)
    r[0]["client_id"] = cid
    return r


def test_handoff_on_a_full_queue_returns_zero_and_counts_the_drop_without_blocking():
    q = trade.RequestQueue(4096)
    r = one_req()
    for _ in range(4096):
        assert trade.handoff(q.header, q.records, r[0], 1) == 1
    t = time.perf_counter()
    assert trade.handoff(q.header, q.records, r[0], 1) == 0
    assert time.perf_counter() - t < 0.05
    assert q.stats()["dropped"] == 1


def test_handoff_stamps_handoff_ts_and_the_sender_reads_requests_in_order():
    q = trade.RequestQueue()
    for cid in (1, 2, 3):
        trade.handoff(q.header, q.records, one_req(cid)[0], 1000 + cid)
    dst = np.zeros(8, ORDER_REQUEST_DTYPE)
    stamps = np.zeros(2, np.int64)
    n = trade.sender_wait(q.header, q.records, dst, 8, waiting.BLOCK, 1_000_000, stamps)
    assert n == 3 and list(dst[:3]["client_id"]) == [1, 2, 3] and list(dst[:3]["handoff_ts"]) == [1001, 1002, 1003]


@pytest.mark.parametrize("mode", ["block", "sleep", "busy-spin"])
def test_sender_wait_times_out_empty(mode):
    q = trade.RequestQueue()
    dst = np.zeros(8, ORDER_REQUEST_DTYPE)
    t = time.monotonic()
    assert trade.sender_wait(q.header, q.records, dst, 8, waiting.NAMES[mode], 20_000_000, np.zeros(2, np.int64)) == 0
    assert 0.015 < time.monotonic() - t < 1.0


def test_parked_sender_is_woken_by_a_handoff_from_another_thread():
    q = trade.RequestQueue()
    dst = np.zeros(8, ORDER_REQUEST_DTYPE)
    stamps = np.zeros(2, np.int64)
    trade.sender_wait(q.header, q.records, dst, 8, waiting.BLOCK, 1_000_000, stamps)   # compile
    warm = trade.RequestQueue()
    trade.handoff(warm.header, warm.records, one_req(1)[0], 0)   # compiled here, not while the 2 s bound runs
    got = {}

    def sender():
        t = time.monotonic()
        got["n"] = trade.sender_wait(q.header, q.records, dst, 8, waiting.BLOCK, 5_000_000_000, stamps)
        got["waited"] = time.monotonic() - t

    th = threading.Thread(target=sender)
    th.start()
    end = time.monotonic() + 3                        # the precondition: the sender is parked on the futex
    while q.stats()["parks"] < 1 and time.monotonic() < end:
        time.sleep(0.01)
    trade.handoff(q.header, q.records, one_req(9)[0], time.monotonic_ns())
    th.join(5)
    assert got["n"] == 1 and dst[0]["client_id"] == 9
    assert got["waited"] < 2.0                        # woken, not the 5 s timeout (nor a 50 ms re-park loop to it)
    assert q.stats()["parks"] >= 1 and q.stats()["wakes"] >= 1


def test_abort_releases_a_parked_sender():
    q = trade.RequestQueue()
    dst = np.zeros(8, ORDER_REQUEST_DTYPE)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("n", trade.sender_wait(
        q.header, q.records, dst, 8, waiting.BLOCK, 5_000_000_000, np.zeros(2, np.int64))))
    t = time.monotonic()
    th.start()
    time.sleep(0.05)
    q.abort()
    th.join(5)
    assert out["n"] == 0 and time.monotonic() - t < 1.0


def _path(book, queue=None, fills=None, flags=None):
    return SimpleNamespace(risk=book, queue=queue or trade.RequestQueue(), fills=fills or trade.FillQueue(),
                           flags=flags if flags is not None else np.zeros(trade.FLAGS_LEN, np.int64))


def test_a_full_sender_queue_is_a_queue_full_refusal_that_releases_the_risk_slot():
    b = risk.RiskBook(risk.RiskConfig(orders_per_second=100000, binance_orders_10s=4096, binance_orders_1m=4096,
                                      max_open_orders=1024, max_gross_notional=0, max_position_notional=0,
                                      max_order_notional=0),
                      [risk.SymbolRules("X", tick_size="0.1", step_size="1", min_qty="1", min_notional="0")])
    risk.on_quote(b.rk, 0, 10.0, 10.1, 1)
    q = trade.RequestQueue(4096)
    filler = one_req()
    for _ in range(4095):
        trade.handoff(q.header, q.records, filler[0], 1)
    brain = brain_for(_path(b, q), 1)
    reqs = [request(0, SIDE_BUY, 1.0, 10.0) for _ in range(2)]
    verdicts = [pipeline.send(brain.bs, brain.sink, r[0], 2) for r in reqs]
    assert verdicts == [0, risk.R_QUEUE_FULL]
    assert b.reject_counts() == {"QUEUE_FULL": 1}
    assert b.sym[0, risk.S_OPEN_COUNT] == 1          # the refused order's slot was given back
    st = brain.bs.st
    assert (st[pipeline.S_ORDERS], st[pipeline.S_REFUSED], st[pipeline.S_REJECTS]) == (1, 1, 1)


def test_kill_flag_halts_and_queues_cancel_all_for_symbols_with_open_orders():
    b = risk.RiskBook(risk.RiskConfig(), [risk.SymbolRules("X", tick_size="0.1", step_size="1", min_qty="1",
                                                           min_notional="0"), risk.SymbolRules("Y")])
    risk.on_quote(b.rk, 0, 10.0, 10.1, 1)
    path = _path(b)
    brain = brain_for(path, 2)
    assert pipeline.send(brain.bs, brain.sink, request(0, 1, 1.0, 10.0)[0], 2) == 0
    pipeline.service(brain.bs, brain.sink, path.flags, 3)
    assert path.queue.header[ring.H_WRITE] == 1
    path.flags[trade.F_KILL] = 1
    pipeline.service(brain.bs, brain.sink, path.flags, 4)
    q = path.queue
    assert b.state == "HALTED" and q.header[ring.H_WRITE] == 2
    assert q.records[1]["action"] == ACTION_CANCEL_ALL and q.records[1]["symbol"] == 0
    assert brain.bs.st[pipeline.S_HALT_REQUESTS] == 1


def test_fill_queue_events_reach_the_risk_book():
    b = risk.RiskBook(risk.RiskConfig(), [risk.SymbolRules("X")])
    path = _path(b)
    rec = np.zeros(1, FILL_DTYPE)[0]
    rec["side"], rec["qty"], rec["price"], rec["status"] = SIDE_SELL, 2.0, 5.0, STATUS_FILLED
    assert path.fills.put(rec)
    brain = brain_for(path, 1)
    assert pipeline.service(brain.bs, brain.sink, path.flags, 1) == 1
    assert b.position("X") == -2.0
    assert brain.bs.st[pipeline.S_FILLS] == 1


def test_order_params_are_decimal_strings_from_integer_units():
    rules = [risk.SymbolRules("BTCUSDT", tick_size="0.10", step_size="0.001", market_step_size="0.01")]
    r = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
    r["side"], r["order_type"], r["tif"], r["price_ticks"], r["qty_steps"], r["reduce_only"] = \
        SIDE_SELL, ORDER_LIMIT, TIF_GTX, 917399, 29, 1
    p = trade.order_params(r, rules, "aeX-5")
    assert p == {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTX", "quantity": "0.029",
                 "price": "91739.90", "reduceOnly": "true", "newClientOrderId": "aeX-5", "newOrderRespType": "ACK"}
    r["order_type"], r["reduce_only"] = ORDER_MARKET, 0
    p = trade.order_params(r, rules, "aeX-6")
    assert p["quantity"] == "0.29" and "price" not in p and "timeInForce" not in p


def test_trade_config_validation():
    assert trade.TradeConfig.from_section({"transport": "ws", "cores": [1]}).cores == (1,)
    for bad in ({"transport": "fix"}, {"wait": "nap"}, {"bogus": 1}, {"queue_capacity": 1000},
                {"recv_window_ms": 70000}, {"timeout_s": -1}):
        with pytest.raises(ConfigError):
            trade.TradeConfig.from_section(bad)


def test_auto_wait_spins_only_with_a_core_of_its_own():
    assert trade.resolve_wait("auto", own_core=False) == waiting.BLOCK
    assert trade.resolve_wait("auto", own_core=True) == waiting.BUSY_SPIN


def test_auto_wait_shares_the_brains_core_only_when_the_brain_never_sleeps():
    assert trade.resolve_wait("auto", own_core=False, brain_polls=True) == waiting.SPIN_YIELD
    assert trade.resolve_wait("auto", own_core=False, brain_polls=False) == waiting.BLOCK
    assert trade.resolve_wait("auto", own_core=True, brain_polls=True) == waiting.BUSY_SPIN


def test_a_sharing_sender_waiting_on_the_producers_core_gets_the_request_without_a_futex():
    q = trade.RequestQueue()
    q.header[waiting.W_YIELD_TO] = 1
    dst = np.zeros(8, ORDER_REQUEST_DTYPE)
    stamps = np.zeros(2, np.int64)
    trade.sender_wait(q.header, q.records, dst, 8, waiting.SPIN_YIELD, 1_000_000, stamps)   # compile
    core = {max(os.sched_getaffinity(0))}
    old = os.sched_getaffinity(0)
    got, started = {}, threading.Event()

    def sender():
        os.sched_setaffinity(0, core)
        started.set()
        got["n"] = trade.sender_wait(q.header, q.records, dst, 8, waiting.SPIN_YIELD, 5_000_000_000, stamps)

    th = threading.Thread(target=sender)
    th.start()
    try:
        os.sched_setaffinity(0, core)
        assert started.wait(5)
        time.sleep(0.01)                 # the sender is polling by now (it yields the core at every poll)
        req = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
        req["client_id"] = 42
        assert trade.handoff(q.header, q.records, req, time.monotonic_ns()) == 1
        th.join(5)
    finally:
        os.sched_setaffinity(0, old)
    assert not th.is_alive()
    assert got["n"] == 1 and dst[0]["client_id"] == 42
    assert q.stats()["parks"] == 0 and q.stats()["wakes"] == 0   # no futex on either side


def test_a_sharing_sender_returns_when_the_queue_is_aborted():
    q = trade.RequestQueue()
    dst = np.zeros(8, ORDER_REQUEST_DTYPE)
    stamps = np.zeros(2, np.int64)
    got = {}
    th = threading.Thread(target=lambda: got.update(
        n=trade.sender_wait(q.header, q.records, dst, 8, waiting.SPIN_YIELD, 5_000_000_000, stamps)))
    th.start()
    time.sleep(0.01)
    q.abort()
    th.join(5)
    assert not th.is_alive() and got["n"] == 0


def _limit_buy(client_id: int = 9) -> np.void:
    """A new LIMIT GTC buy of 1 step at 100 ticks of symbol 0, as the Brain hands it over."""
    req = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
    req["client_id"], req["action"], req["order_type"], req["tif"], req["side"] = client_id, 1, ORDER_LIMIT, 1, SIDE_BUY
    req["price_ticks"], req["qty_steps"] = 100, 1
    return req


def test_a_fast_path_order_the_journal_refuses_is_not_sent_and_is_released_in_risk(tmp_path):
    class ReadOnlyJournal:           # write(2) on this descriptor fails (EBADF): the jitted path must not send
        def __init__(self, path):
            open(path, "wb").close()
            self.fd = os.open(path, os.O_RDONLY)
            self.map_buf, self.map_cursor = np.zeros(0, np.uint8), np.zeros(2, np.int64)   # not mapped: write(2)
            self.failed = None
            self.reported = []

        def report_failure(self, what):     # the sender tells the journal, which halts trading (fail safe)
            self.reported.append(what)

    class MustNotSend:
        def plain_fd(self, conn):
            return -1

        def free_order_connections(self, n):
            return []

        def send_prepared(self, *a, **kw):
            raise AssertionError("sent without a journal record")

    fills = trade.FillQueue()
    rules = [risk.SymbolRules("X", tick_size="0.1", step_size="1")]
    q = trade.RequestQueue()
    j = ReadOnlyJournal(str(tmp_path / "j.jsonl"))
    s = trade.Sender(q, MustNotSend(), j, "p-", rules, fills, wait=waiting.BLOCK)
    s.enable_fast_path("rest", "key", "secret", 5000, "http://127.0.0.1:1")
    s.start()
    try:
        req = _limit_buy()
        trade.handoff(q.header, q.records, req, time.monotonic_ns())
        deadline = time.monotonic() + 20          # includes loading the fast path's compiled code
        while s.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        s.stop()
        os.close(j.fd)
    ev = fills.drain()
    assert s.errors == 1 and s.sent == 0 and len(j.reported) == 1
    assert len(ev) == 1 and ev[0]["client_id"] == 9 and ev[0]["status"] == 6


def _prepare_one_order_for_a_socket(tmp_path, backoff_until_ns, in_flight=0, reduce_only=0):
    """wait_and_prepare on one queued order with a plain socket to send on, its symbol with `in_flight` orders in
    flight; (state, bytes the peer got)."""
    from aegis.binance import wire
    c = _TwoConnections(tmp_path, in_flight=in_flight)
    c.state[wire.ST_BACKOFF_UNTIL_NS] = backoff_until_ns
    req = _limit_buy()
    req["reduce_only"] = reduce_only
    trade.handoff(c.q.header, c.q.records, req, time.monotonic_ns())
    try:
        assert c.prepare() == 1 and c.lens[0] > 0    # signed and journaled either way
        got = c.got(0)
    finally:
        c.close()
    return c.state, got


def test_the_jitted_sender_does_not_send_during_a_back_off_that_began_while_it_waited(compiled_order_path, tmp_path):
    from aegis.binance import wire
    state, got = _prepare_one_order_for_a_socket(tmp_path, time.monotonic_ns() + 10_000_000_000)
    assert state[wire.ST_SENT_N] == 0 and got == b""


def test_the_jitted_sender_sends_once_the_back_off_has_passed(compiled_order_path, tmp_path):
    from aegis.binance import wire
    state, got = _prepare_one_order_for_a_socket(tmp_path, time.monotonic_ns() - 1)
    assert state[wire.ST_SENT_N] == 1 and got.startswith(b"POST /fapi/v1/order?")


def test_the_jitted_sender_leaves_a_reduce_only_order_whose_symbol_awaits_answers_to_python(compiled_order_path,
                                                                                            tmp_path):
    """A reduce-only order goes after the answers of its symbol's orders in flight (what it reduces is on the book);
    any other order goes at once."""
    from aegis.binance import wire
    state, got = _prepare_one_order_for_a_socket(tmp_path, 0, in_flight=1, reduce_only=1)
    assert state[wire.ST_SENT_N] == 0 and got == b""
    state, got = _prepare_one_order_for_a_socket(tmp_path, 0, in_flight=0, reduce_only=1)
    assert state[wire.ST_SENT_N] == 1 and got.startswith(b"POST /fapi/v1/order?")
    state, got = _prepare_one_order_for_a_socket(tmp_path, 0, in_flight=2, reduce_only=0)
    assert state[wire.ST_SENT_N] == 1 and got.startswith(b"POST /fapi/v1/order?")


class _TwoConnections:
    """wait_and_prepare's arguments for a batch of up to 2 orders with two plain sockets to send them on, their
    symbol with `in_flight` orders in flight."""

    def __init__(self, tmp_path, mode=waiting.BUSY_SPIN, in_flight=0):
        import socket
        from aegis.binance import wire
        self.q = trade.RequestQueue(ring.MIN_CAPACITY)
        self.enc = wire.build_encoder("rest", [risk.SymbolRules("X", tick_size="0.1", step_size="1")], "p-", "k", "s",
                                      5000, "ACK", "http://127.0.0.1:1")
        self.state = wire.new_state()
        self.pairs = [socket.socketpair() for _ in range(2)]
        for _, peer in self.pairs:
            peer.setblocking(False)
        self.jfd = os.open(str(tmp_path / "j.jsonl"), os.O_WRONLY | os.O_CREAT, 0o600)
        self.buf = trade.OrderBuffers(2, 1, self.state)
        self.buf.fds[:] = [mine.fileno() for mine, _ in self.pairs]
        self.buf.busy[0] = in_flight
        self.lens, self.sent = self.buf.lens, self.buf.sent
        self.mode = mode

    def prepare(self):
        return trade.wait_and_prepare(self.q.header, self.q.records, 2, self.mode, 1_000_000_000, self.enc,
                                      self.buf.jit, self.jfd, np.zeros(0, np.uint8), np.zeros(2, np.int64))

    def got(self, k):
        try:
            return self.pairs[k][1].recv(65536)
        except BlockingIOError:
            return b""

    def close(self):
        os.close(self.jfd)
        for a, b in self.pairs:
            a.close()
            b.close()


def test_the_jitted_sender_sends_each_order_of_a_batch_on_its_own_connection(compiled_order_path, tmp_path):
    from aegis.binance import wire
    c = _TwoConnections(tmp_path)
    try:
        for cid in (7, 8):
            trade.handoff(c.q.header, c.q.records, _limit_buy(cid), time.monotonic_ns())
        assert c.prepare() == 2 and c.state[wire.ST_SENT_N] == 2
        assert b"newClientOrderId=p-7" in c.got(0) and b"newClientOrderId=p-8" in c.got(1)
        assert (c.sent[:, trade.SN_RESULT] > 0).all() and (c.sent[:, trade.SN_AT] >= c.sent[:, trade.SN_BUILT]).all()
        # a reduce-only order behind an order of its symbol sent just now waits for that answer (Python sends it)
        ro = _limit_buy(10)
        ro["reduce_only"] = 1
        for req in (_limit_buy(9), ro):
            trade.handoff(c.q.header, c.q.records, req, time.monotonic_ns())
        assert c.prepare() == 2 and c.state[wire.ST_SENT_N] == 1
        assert b"newClientOrderId=p-9" in c.got(0) and c.got(1) == b""
    finally:
        c.close()


def test_the_jitted_sender_sends_nothing_after_a_request_that_did_not_all_leave(compiled_order_path, tmp_path):
    """On a websocket the batch's requests share one socket: a frame after a cut one would corrupt the stream, so
    after a send that did not take the whole request the rest of the batch goes from Python, in order."""
    from aegis.binance import wire
    c = _TwoConnections(tmp_path)
    full = c.pairs[0][0]
    full.setblocking(False)
    try:
        while True:                                   # the first order's socket has no room left
            full.send(b"x" * 65536)
    except BlockingIOError:
        pass
    try:
        for cid in (7, 8):
            trade.handoff(c.q.header, c.q.records, _limit_buy(cid), time.monotonic_ns())
        assert c.prepare() == 2 and c.state[wire.ST_SENT_N] == 1
        assert c.sent[0, trade.SN_RESULT] == -errno.EAGAIN and c.got(1) == b""
    finally:
        c.close()


@pytest.mark.parametrize("mode", [waiting.SPIN_YIELD, waiting.BLOCK])
def test_the_sender_waits_in_jitted_code_until_an_answer_to_an_order_in_flight_can_be_read(compiled_order_path,
                                                                                          tmp_path, mode):
    """Its Python runs for an answer that has arrived, not to look for one (it would hold the GIL every few us)."""
    from aegis.binance import wire
    c = _TwoConnections(tmp_path, mode)
    try:
        answer_from, answer_to = c.pairs[0]              # stands for an order connection awaiting its answer
        c.buf.set_in_flight([-1, answer_to.fileno()])
        t = time.monotonic()
        assert c.prepare() == 0 and time.monotonic() - t >= 0.9       # nothing to read: the whole 1 s timeout
        answer_from.send(b"HTTP/1.1 200 OK\r\n")
        t = time.monotonic()
        assert c.prepare() == 0 and time.monotonic() - t < 0.5        # at once, as the answer is there
    finally:
        c.close()


def test_a_spin_yield_sender_sends_what_the_brain_hands_off_while_it_yields_after_a_send(compiled_order_path,
                                                                                           tmp_path):
    """The Brain hands the sender its core after a hand-off, maybe mid-batch; the sender sends, yields it back, and
    a second order handed off meanwhile leaves from the same call, without waiting for the sender's Python."""
    assert _second_order_in_the_same_call(tmp_path) >= 1


def _second_order_in_the_same_call(tmp_path, attempts: int = 5) -> int:
    """How often (of `attempts`) a second order, handed off by a same-core "Brain" thread once the first is on the
    wire, left in the same wait_and_prepare call as the first."""
    import select
    from aegis.binance import wire
    c = _TwoConnections(tmp_path, waiting.SPIN_YIELD)
    me = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(me)})             # the test thread is the sender here, the helper the Brain
    hits = 0
    try:
        for attempt in range(attempts):
            def brain():
                os.sched_setaffinity(0, {min(me)})
                deadline = time.monotonic() + 5
                while not select.select([c.pairs[0][1]], [], [], 0)[0] and time.monotonic() < deadline:
                    os.sched_yield()
                trade.handoff(c.q.header, c.q.records, _limit_buy(2 * attempt + 2), time.monotonic_ns())

            t = threading.Thread(target=brain)
            t.start()
            trade.handoff(c.q.header, c.q.records, _limit_buy(2 * attempt + 1), time.monotonic_ns())
            c.q.header[waiting.W_YIELD_TO] = 1
            n = c.prepare()
            t.join(10)
            # the second order was seen after the first had been sent, and left in the same call
            hits += n == 2 and c.state[wire.ST_SENT_N] == 2 and c.sent[1, trade.SN_SEEN] > c.sent[0, trade.SN_AT] \
                and b"p-%d&" % (2 * attempt + 2) in c.got(1)
            if n == 1:
                assert c.prepare() == 1                 # the second order, in the next call
            c.got(0), c.got(1)
    finally:
        os.sched_setaffinity(0, me)
        c.close()
    return hits


@pytest.mark.parametrize("transport", ["rest", "ws"])
def test_a_polling_sender_rebuilds_the_last_order_while_it_waits_and_sends_and_stores_nothing(
        compiled_order_path, transport):
    import socket
    from aegis.binance import wire
    q = trade.RequestQueue(ring.MIN_CAPACITY)
    enc = wire.build_encoder(transport, [risk.SymbolRules("X", tick_size="0.1", step_size="1")], "p-", "k", "s",
                             5000, "ACK", "http://127.0.0.1:1")
    state = wire.new_state()
    mine, peer = socket.socketpair()
    peer.setblocking(False)
    b = trade.OrderBuffers(1, 1, state)
    b.fds[0] = mine.fileno() if transport == "rest" else -1
    state[wire.ST_WARM_NS] = 200_000
    jmap, jcur = np.zeros(1 << 16, np.uint8), np.array([0, 1 << 16], np.int64)     # a mapped journal's room
    out, lens, jbuf = b.out, b.lens, b.jbuf

    def prepare(timeout_ns):
        return trade.wait_and_prepare(q.header, q.records, 1, waiting.BUSY_SPIN, timeout_ns, enc, b.jit, -1, jmap,
                                      jcur)

    def sent():
        try:
            return peer.recv(65536)
        except BlockingIOError:
            return b""

    try:
        assert prepare(5_000_000) == 0 and state[wire.ST_WARMS] == 0     # no order yet: nothing to rebuild
        req = _limit_buy()
        trade.handoff(q.header, q.records, req, time.monotonic_ns())
        assert prepare(0) == 1 and lens[0] > 0
        first = sent()
        assert first.startswith(b"POST /fapi/v1/order?") if transport == "rest" else first == b""
        line_end, mask_pos = int(jcur[0]), int(state[wire.ST_MASK_POS])
        journal = jmap.copy()
        assert line_end > 0
        out[:], jbuf[:] = 0, 0
        assert prepare(20_000_000) == 0                  # 20 ms of waiting, in 0.2 ms steps
        assert state[wire.ST_WARMS] >= 10
        assert sent() == b"" and jcur[0] == line_end and np.array_equal(jmap, journal)
        assert state[wire.ST_MASK_POS] == mask_pos       # a mask key is spent only by a frame that leaves
        # the scratch holds the rebuilt order: the request (a ws text frame) and its journal line
        assert out[0] == (ord("P") if transport == "rest" else 0x81) and b"p-9" in bytes(jbuf)
    finally:
        mine.close()
        peer.close()


def test_keeping_warm_never_reads_past_a_closed_journals_end(compiled_order_path, tmp_path):
    """A closing journal cuts its file at the cursor; a warm-up that read the page at the cursor, when the cursor
    starts a page, would die of SIGBUS. Run in a child: a SIGBUS must fail this test, not kill pytest."""
    import subprocess
    import sys
    code = f"""
import mmap, os, numpy as np
from aegis.binance import wire
from aegis.trade import risk, sender
from aegis.core.records import ORDER_REQUEST_DTYPE, ORDER_LIMIT, SIDE_BUY
path = {str(tmp_path / "j.jsonl")!r}
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 2 * mmap.PAGESIZE)
jmap = np.frombuffer(mmap.mmap(fd, 2 * mmap.PAGESIZE), np.uint8)
os.ftruncate(fd, mmap.PAGESIZE)                        # as Journal.close leaves it: the file ends at the cursor
jcur = np.array([mmap.PAGESIZE, 0], np.int64)
enc = wire.build_encoder("rest", [risk.SymbolRules("X", tick_size="0.1", step_size="1")], "p-", "k", "s", 5000,
                         "ACK", "http://127.0.0.1:1")
req = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
req["client_id"], req["action"], req["order_type"], req["tif"], req["side"] = 9, 1, ORDER_LIMIT, 1, SIDE_BUY
req["price_ticks"], req["qty_steps"] = 100, 1
b = sender.OrderBuffers(1, 1)
sender.warm_order_path(enc, req, b.jit, jmap, jcur)
print("warmed", b.state[wire.ST_WARMS])
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "warmed 1" in p.stdout, (p.returncode, p.stderr[-2000:])


@pytest.mark.parametrize("wait,warm_us,expect_ns", [(waiting.SPIN_YIELD, 1000, 1_000_000),
                                                     (waiting.BUSY_SPIN, 250, 250_000),
                                                     (waiting.SPIN_YIELD, 0, 0),
                                                     (waiting.BLOCK, 1000, 0), (waiting.SLEEP, 1000, 0)])
def test_only_a_polling_sender_keeps_the_order_path_warm(wait, warm_us, expect_ns):
    from aegis.binance import wire

    class Client:
        def plain_fd(self, conn=None):
            return -1

    s = trade.Sender(trade.RequestQueue(), Client(), None, "p-", [risk.SymbolRules("X")], trade.FillQueue(),
                     wait=wait)
    s.enable_fast_path("rest", "key", "secret", 5000, "http://127.0.0.1:1", warm_us=warm_us)
    assert s.wire_state[wire.ST_WARM_NS] == expect_ns
    assert trade.TradeConfig().warm_us == 1000
    with pytest.raises(ConfigError):
        trade.TradeConfig.from_section({"warm_us": -1})


def test_a_back_off_reaches_the_state_the_jitted_sender_reads():
    from aegis.binance import wire
    from aegis.binance.client import BinanceClient
    from aegis.binance.keys import from_strings
    c = BinanceClient(endpoints("binance-testnet"), from_strings("k", "s"))
    t = time.monotonic_ns()
    c.back_off(429, "3", "")
    assert 3e9 <= c.wire_state[wire.ST_BACKOFF_UNTIL_NS] - t < 4e9


def test_real_binance_requires_live_and_uses_the_documented_urls():
    with pytest.raises(VenueSelectionError, match="--live"):
        endpoints("binance")
    ep = endpoints("binance", live=True)
    assert (ep.rest_url, ep.ws_market_url, ep.ws_api_url) == (
        "https://fapi.binance.com", "wss://fstream.binance.com", "wss://ws-fapi.binance.com/ws-fapi/v1")
    assert endpoints("binance-testnet").rest_url == VENUE_URLS["binance-testnet"][0] == \
        "https://testnet.binancefuture.com"
    with pytest.raises(VenueSelectionError):
        endpoints("embedded")


def test_supervisor_kill_through_the_control_block_reaches_the_brains_risk_state():
    from aegis.core import control
    ctl = control.new_block()
    b = control.base(control.ROLE_SENDER) + control.R_SENDER_FLAGS
    flags = ctl[b:b + trade.FLAGS_LEN]                  # what TradeSession(ctl=...) hands the Brain
    book = risk.RiskBook(risk.RiskConfig(), [risk.SymbolRules("X")])
    assert not trade.poll_kill(flags, book.g, 1)
    trade.request_kill(ctl, flatten=True)
    assert trade.poll_kill(flags, book.g, 2) and not trade.poll_kill(flags, book.g, 3)
    assert book.state == "HALTED" and book.state_reason == "kill switch" and book.g[risk.G_FLATTEN_ON_HALT] == 1


def test_sender_thread_leaves_the_brains_core_when_another_exists():
    import os
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores")
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})          # this thread plays the pinned Brain
    try:
        s = trade.Sender(trade.RequestQueue(), None, None, "p-", [], wait=waiting.BLOCK).start()
        assert wait_for_value(lambda: s.cores_used)
        assert cores[-1] not in s.cores_used
        s.stop()
    finally:
        os.sched_setaffinity(0, set(cores))


def wait_for_value(fn, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not fn():
        time.sleep(0.01)
    return fn()


def test_a_request_that_cannot_be_journaled_is_not_sent_and_is_released_in_risk(tmp_path):
    class FullDisk:
        def append(self, kind, **kw):
            raise OSError(28, "No space left on device")

    class MustNotSend:
        def place_order(self, params):
            raise AssertionError("sent without a journal record")

    fills = trade.FillQueue()
    rules = [risk.SymbolRules("X", tick_size="0.1", step_size="1")]
    s = trade.Sender(trade.RequestQueue(), MustNotSend(), FullDisk(), "p-", rules, fills)
    req = _limit_buy(7)
    with pytest.raises(OSError):
        s.process(req)
    ev = fills.drain()
    assert len(ev) == 1 and ev[0]["client_id"] == 7 and ev[0]["status"] == 6


def test_helper_threads_of_the_brain_process_can_be_moved_off_its_core():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two cores")
    seen = {}
    go = threading.Event()

    def helper():
        go.wait(5)
        seen["cores"] = os.sched_getaffinity(0)

    t = threading.Thread(target=helper)
    t.start()
    trade.move_off_brain_core(t, (cores[0],))
    go.set()
    t.join(5)
    assert seen["cores"] == {cores[0]}


def test_the_order_path_warm_up_compiles_the_queue_abort_a_stop_calls():
    # the sender's stop aborts its queue: that kernel is compiled (or loaded) at start-up, not while stopping
    trade.warm_fast_path()
    assert ring.abort.signatures
