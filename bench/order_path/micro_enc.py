"""ns per encode_rest_order / encode_journal_req (MARKET BTCUSDT, the bench's key): median of 21 batches of 20k."""
import sys, statistics
import numpy as np
from aegis.core.jit import njit
from aegis.binance import wire
from aegis.trade.risk import SymbolRules
from aegis.core.records import ORDER_REQUEST_DTYPE, ORDER_MARKET, SIDE_BUY, ACTION_NEW
from aegis.core.clock import now_ns
rules = [SymbolRules(s, tick_size=t, step_size=st, market_step_size=st, min_qty=st, min_notional="5")
         for s, t, st in (("BTCUSDT", "0.10", "0.001"), ("ETHUSDT", "0.01", "0.001"))]
enc = wire.build_encoder("rest", rules, "ae1234abcd-", "bench-api-key-0123456789", "bench-api-secret-0123456789",
                         5000, "ACK", "http://127.0.0.1:40000")
req = np.zeros(1, ORDER_REQUEST_DTYPE)[0]
req["symbol"], req["side"], req["order_type"], req["qty_steps"], req["client_id"] = 0, SIDE_BUY, ORDER_MARKET, 12, 1234
req["action"], req["exch_ts"] = ACTION_NEW, 1765000000000000000

@njit(nogil=True)
def t_enc(enc, req, out, n):
    t0 = now_ns()
    for i in range(n):
        wire.encode_rest_order(enc, req, 1765000000000 + i, out, 0)
    return (now_ns() - t0) / n

@njit(nogil=True)
def t_jl(enc, req, out, n):
    t0 = now_ns()
    for i in range(n):
        wire.encode_journal_req(enc, req, 1765000000000 + i, out, 0)
    return (now_ns() - t0) / n

out = np.zeros(4096, np.uint8)
t_enc(enc, req, out, 10); t_jl(enc, req, out, 10)
e = min(t_enc(enc, req, out, 2000) for _ in range(301))
j = min(t_jl(enc, req, out, 2000) for _ in range(301))
print(f"encode_rest_order {e:.0f} ns  encode_journal_req {j:.0f} ns")
