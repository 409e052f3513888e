import numpy as np
from aegis.core.jit import njit
from aegis.binance import sha256
from aegis.core.clock import now_ns
k = sha256.hmac_key_state(b"bench-api-secret-0123456789")
sc = sha256.new_scratch()
q = b"symbol=BTCUSDT&side=BUY&type=MARKET&newOrderRespType=ACK&newClientOrderId=ae1234abcd-1234&quantity=0.012&recvWindow=5000&timestamp=1765000000000"
msg = np.frombuffer(q, np.uint8).copy(); out = np.zeros(64, np.uint8)
mid, pre, skip = sha256.hmac_midstate(k, q[:q.index(b"-") + 1])
@njit(nogil=True)
def full(k, msg, out, sc, n):
    t0 = now_ns()
    for i in range(n):
        sha256.hmac_sha256_hex(k, msg, 0, msg.size, out, 0, sc)
    return (now_ns() - t0) / n
@njit(nogil=True)
def mids(k, mid, pre, skip, msg, out, sc, n):
    t0 = now_ns()
    for i in range(n):
        sha256.hmac_sha256_hex_mid(k, mid, 0, pre, msg, skip, msg.size - skip, out, 0, sc)
    return (now_ns() - t0) / n
full(k, msg, out, sc, 5); mids(k, mid, pre, skip, msg, out, sc, 5)
a = out.copy(); full(k, msg, out, sc, 1); assert (a == out).all()
for r in range(3):
    print(len(q), "bytes: full %.0f ns, from midstate %.0f ns (skip %d)" % (min(full(k, msg, out, sc, 2000) for _ in range(201)),
          min(mids(k, mid, pre, skip, msg, out, sc, 2000) for _ in range(201)), skip))
