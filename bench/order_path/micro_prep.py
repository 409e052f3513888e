"""The sender's prepare step as the engine runs it: one order handed off, wait_and_prepare builds, signs and journals
it (stamps[1] - stamps[0]); the tree's own Journal (fsync interval, its sync thread running); one order / 300 us."""
import inspect, os, sys, tempfile, time
import numpy as np
from aegis.core.jit import njit
from aegis.binance import wire
from aegis.core import ring, wait as waiting
from aegis.core.clock import now_ns
from aegis.core.records import ORDER_REQUEST_DTYPE, ORDER_MARKET, SIDE_BUY, ACTION_NEW
from aegis.trade import sender as trade
from aegis.trade.journal import Journal
from aegis.trade.risk import SymbolRules
rules = [SymbolRules(s, tick_size=t, step_size=st, market_step_size=st, min_qty=st, min_notional="5")
         for s, t, st in (("BTCUSDT", "0.10", "0.001"), ("ETHUSDT", "0.01", "0.001"))]
enc = wire.build_encoder("rest", rules, "ae1234abcd-", "bench-api-key-0123456789", "bench-api-secret-0123456789",
                         5000, "ACK", "http://127.0.0.1:40000")
d = tempfile.mkdtemp()
j = Journal(os.path.join(d, "j.jsonl"), "interval", 50)
q = trade.RequestQueue(4096)
params = inspect.signature(trade.wait_and_prepare.py_func).parameters
mapped = "jmap" in params
if hasattr(trade, "OrderBuffers"):     # this tree: the sender's buffers, bundled as the sender builds them
    b = trade.OrderBuffers(1, len(rules))
    stamps, lens = b.stamps, b.lens
    args = [q.header, q.records, 1, waiting.BUSY_SPIN, 1_000_000_000, enc, b.jit, j.fd, j.map_buf, j.map_cursor]
else:                                  # older trees (A/B runs), one loose array per buffer
    state = wire.new_state()
    if hasattr(wire, "ST_SEND_FD"):
        state[wire.ST_SEND_FD] = -1
    dst = np.zeros(1, ORDER_REQUEST_DTYPE); stamps = np.zeros(2, np.int64); lens = np.zeros(1, np.int64)
    args = [q.header, q.records, dst, 1, waiting.BUSY_SPIN, 1_000_000_000, stamps, enc, state, wire.new_mask_pool(),
            np.zeros(wire.MAX_REQUEST, np.uint8), np.zeros(1, np.int64), lens,
            np.zeros(wire.MAX_JOURNAL_LINE, np.uint8), np.zeros(1, np.int64), j.fd,
            np.zeros(2 * wire.MAX_REQUEST, np.uint8)]
    if mapped:
        args += [j.map_buf, j.map_cursor]
    if "busy" in params:
        args += [np.zeros(len(rules), np.int64)]
    if "fds" in params:
        args += [np.full(1, -1, np.int64), np.zeros((1, trade.SN_COLS), np.int64)]
    if "pfds" in params:
        args += [np.zeros(0, np.int64)]
req = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
req["symbol"], req["side"], req["order_type"], req["qty_steps"], req["action"] = 0, SIDE_BUY, ORDER_MARKET, 12, ACTION_NEW
@njit(nogil=True)
def spin(ns):
    end = now_ns() + ns
    while now_ns() < end:
        pass
N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
lat = np.zeros(N, np.int64)
spin(1)
for i in range(N + 50):
    req["client_id"] = i + 1
    trade.handoff(q.header, q.records, req, now_ns())
    n = trade.wait_and_prepare(*args)
    assert n == 1 and lens[0] > 0
    if i >= 50:
        lat[i - 50] = stamps[1] - stamps[0]
    spin(300_000)
j.close()
print(f"{'mapped' if mapped else 'write(2)':8s} prepare p10 {np.percentile(lat, 10):5.0f} p25 {np.percentile(lat, 25):5.0f} p50 {np.percentile(lat, 50):6.0f} p90 {np.percentile(lat, 90):6.0f} "
      f"p99 {np.percentile(lat, 99):7.0f} p99.9 {np.percentile(lat, 99.9):8.0f} ns  load {os.getloadavg()[0]:.2f}")
