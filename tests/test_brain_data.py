"""Market record batches for the brain tests (plain numpy, no engine code). Helpers only: no tests here (the
test_ prefix keeps the file inside the brain engineer's test_brain* files)."""
import numpy as np

from aegis.core.records import KIND_QUOTE, KIND_TRADE, MARKET_DTYPE

T0 = 1_700_000_000_000_000_000  # exchange ns


def quotes(n, n_symbols=10, seed=1, step_ns=1_000_000, vol=2.0, spread=0.5):
    """n interleaved random-walk quotes over n_symbols symbols, exchange time advancing step_ns per record."""
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, dtype=MARKET_DTYPE)
    sym = rng.integers(0, n_symbols, n).astype(np.int32)
    base = 100.0 * (1 + np.arange(n_symbols))
    mids = np.empty(n)
    level = base.copy()
    steps = rng.normal(0.0, vol, n)
    for i in range(n):  # small n in tests; the bench builds its batch once
        level[sym[i]] = max(1.0, level[sym[i]] + steps[i])
        mids[i] = level[sym[i]]
    rec["kind"] = KIND_QUOTE
    rec["symbol"] = sym
    rec["bid_px"] = mids - spread / 2
    rec["ask_px"] = mids + spread / 2
    rec["bid_qty"] = rng.uniform(0.1, 10.0, n)
    rec["ask_qty"] = rng.uniform(0.1, 10.0, n)
    rec["exch_ts"] = T0 + np.arange(n, dtype=np.int64) * step_ns
    rec["recv_ts"] = 1_000 + np.arange(n, dtype=np.int64)
    rec["pub_ts"] = 2_000 + np.arange(n, dtype=np.int64)
    rec["seq"] = np.arange(n, dtype=np.int64)
    return rec


def trades(n, n_symbols=3, seed=2, step_ns=37_000_000):
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, dtype=MARKET_DTYPE)
    rec["kind"] = KIND_TRADE
    rec["symbol"] = rng.integers(0, n_symbols, n)
    rec["px"] = 100.0 + np.cumsum(rng.normal(0, 0.3, n))
    rec["qty"] = rng.uniform(0.01, 5.0, n)
    rec["side"] = rng.choice(np.array([-1, 1], dtype=np.int8), n)
    rec["exch_ts"] = T0 + np.cumsum(rng.integers(1, 2 * step_ns, n))
    rec["seq"] = np.arange(n)
    return rec
