"""Each incremental kernel against a plain numpy/python reference computed from scratch on the same data."""
import math

import numpy as np
import pytest

from aegis.brain import indicators as ind

RNG = np.random.default_rng(7)
N = 3000
PRICES = 50_000.0 + np.cumsum(RNG.normal(0.0, 5.0, N))  # BTC-like level: tests numerical conditioning too
HIGH = PRICES + RNG.uniform(0.0, 10.0, N)
LOW = PRICES - RNG.uniform(0.0, 10.0, N)
QTY = RNG.uniform(0.001, 3.0, N)
SIDE = RNG.choice(np.array([-1, 1], dtype=np.int8), N)


def run(fn, *args):
    out = np.empty(N)
    fn(*args, out)
    return out


def test_ema_is_seeded_with_first_value_then_textbook_recursion():
    period = 20
    a = 2.0 / (period + 1)
    ref = [PRICES[0]]
    for x in PRICES[1:]:
        ref.append(a * x + (1 - a) * ref[-1])
    got = run(ind.ema_series, PRICES, period)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("period", [1, 5, 20, 97])
def test_sma_equals_mean_of_last_period_values(period):
    got = run(ind.sma_series, PRICES, period)
    assert np.isnan(got[: period - 1]).all()
    ref = np.array([PRICES[i - period + 1: i + 1].mean() for i in range(period - 1, N)])
    np.testing.assert_allclose(got[period - 1:], ref, rtol=1e-12)


def test_bollinger_bands_use_population_std_of_the_window():
    period, k = 20, 2.0
    lo, mid, up = np.empty(N), np.empty(N), np.empty(N)
    ind.bollinger_series(PRICES, period, k, lo, mid, up)
    for i in range(period - 1, N):
        w = PRICES[i - period + 1: i + 1]
        m, s = w.mean(), w.std(ddof=0)
        assert mid[i] == pytest.approx(m, rel=1e-12)
        assert up[i] == pytest.approx(m + k * s, rel=1e-10)
        assert lo[i] == pytest.approx(m - k * s, rel=1e-10)
    assert np.isnan(mid[period - 2])


def reference_rsi(x, period):
    out = np.full(len(x), np.nan)
    ch = np.diff(x)
    gains, losses = np.maximum(ch, 0), np.maximum(-ch, 0)
    ag, al = gains[:period].mean(), losses[:period].mean()

    def value(g, l):
        if l == 0:
            return 50.0 if g == 0 else 100.0
        return 100 - 100 / (1 + g / l)

    out[period] = value(ag, al)
    for i in range(period, len(ch)):
        ag = (ag * (period - 1) + gains[i]) / period
        al = (al * (period - 1) + losses[i]) / period
        out[i + 1] = value(ag, al)
    return out


@pytest.mark.parametrize("period", [2, 14, 50])
def test_rsi_matches_wilder_reference(period):
    got = run(ind.rsi_series, PRICES, period)
    np.testing.assert_allclose(got, reference_rsi(PRICES, period), rtol=1e-9, equal_nan=True)


def test_rsi_of_a_rising_series_is_100_and_of_a_flat_one_is_50():
    assert run(ind.rsi_series, np.arange(N, dtype=float), 14)[-1] == 100.0
    assert run(ind.rsi_series, np.full(N, 3.0), 14)[-1] == 50.0


def test_atr_matches_wilder_reference():
    period = 14
    close = PRICES
    tr = np.empty(N)
    tr[0] = HIGH[0] - LOW[0]
    tr[1:] = np.maximum.reduce([HIGH[1:] - LOW[1:], abs(HIGH[1:] - close[:-1]), abs(LOW[1:] - close[:-1])])
    ref = np.full(N, np.nan)
    ref[period - 1] = tr[:period].mean()
    for i in range(period, N):
        ref[i] = (ref[i - 1] * (period - 1) + tr[i]) / period
    out = np.empty(N)
    ind.atr_series(HIGH, LOW, close, period, out)
    np.testing.assert_allclose(out, ref, rtol=1e-10, equal_nan=True)


def test_vwap_is_cumulative_quote_volume_over_volume():
    got = run(ind.vwap_series, PRICES, QTY)
    ref = np.cumsum(PRICES * QTY) / np.cumsum(QTY)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_rolling_volatility_is_sample_std_of_last_log_returns():
    period = 30
    got = run(ind.rvol_series, PRICES, period)
    r = np.diff(np.log(PRICES))
    assert np.isnan(got[:period]).all()
    for i in range(period, N):
        assert got[i] == pytest.approx(r[i - period: i].std(ddof=1), rel=1e-7)


def test_trade_flow_imbalance_over_last_trades():
    period = 50
    out = np.empty(N)
    ind.tfi_series(SIDE, QTY, period, out)
    signed = np.where(SIDE > 0, QTY, -QTY)
    for i in range(N):
        lo = max(0, i - period + 1)
        ref = signed[lo: i + 1].sum() / QTY[lo: i + 1].sum()
        assert out[i] == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_book_imbalance_and_microprice_reference():
    for bp, bq, ap, aq in [(100.0, 3.0, 100.5, 1.0), (10.0, 0.0, 11.0, 5.0), (1.0, 2.0, 1.1, 2.0)]:
        assert ind.book_imbalance(bq, aq) == pytest.approx((bq - aq) / (bq + aq))
        assert ind.microprice(bp, bq, ap, aq) == pytest.approx((bp * aq + ap * bq) / (bq + aq))
    assert ind.book_imbalance(0.0, 0.0) == 0.0
    assert ind.microprice(1.0, 0.0, 3.0, 0.0) == 2.0


def test_rolling_window_does_not_drift_over_a_million_updates():
    x = 50_000.0 + np.cumsum(RNG.normal(0.0, 5.0, 1_000_000))
    out = np.empty(x.size)
    ind.sma_series(x, 20, out)
    assert out[-1] == pytest.approx(x[-20:].mean(), rel=1e-13)
    assert math.isfinite(out[-1])
