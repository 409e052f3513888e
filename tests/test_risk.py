"""Pre-trade risk rules (aegis.trade.risk): one rule per test, each proven by a request that passes and one that fails."""
import numpy as np
import pytest

from aegis.trade import risk
from aegis.core.config import ConfigError
from aegis.core.records import (ACTION_CANCEL, ACTION_CANCEL_ALL, ACTION_NEW, FILL_DTYPE, ORDER_LIMIT, ORDER_MARKET,
                           ORDER_REQUEST_DTYPE, REQ_FLAG_FLATTEN, SIDE_BUY, SIDE_SELL, STATUS_CANCELED,
                           STATUS_FILLED, STATUS_PARTIALLY_FILLED, STATUS_REJECTED, STATUS_SNAPSHOT, TIF_GTC)

NOW = 10_000_000_000
BTC = risk.SymbolRules("BTCUSDT", tick_size="0.10", step_size="0.001", market_step_size="0.001", min_qty="0.001",
                       max_qty="1000", market_min_qty="0.001", market_max_qty="120", min_notional="50",
                       min_price="556.80", max_price="4529764")
ETH = risk.SymbolRules("ETHUSDT", tick_size="0.01", step_size="0.001", min_notional="20")


def book(**cfg):
    base = dict(max_position_notional=1e9, max_gross_notional=1e9, max_order_notional=1e9, daily_loss_limit=0.0,
                orders_per_second=1000)
    base.update(cfg)
    b = risk.RiskBook(risk.RiskConfig(**base), [BTC, ETH])
    quote(b, 0, 90000.0, 90000.1)
    quote(b, 1, 3000.0, 3000.01)
    return b


def quote(b, s, bid, ask, ts=NOW):
    risk.on_quote(b.rk, s, bid, ask, ts)


def req(symbol=0, side=SIDE_BUY, qty=0.01, price=90000.0, otype=ORDER_LIMIT, ro=0, flags=0):
    r = np.zeros(1, ORDER_REQUEST_DTYPE)
    r[0]["symbol"], r[0]["side"], r[0]["qty"], r[0]["price"] = symbol, side, qty, price
    r[0]["order_type"], r[0]["tif"], r[0]["reduce_only"], r[0]["flags"] = otype, TIF_GTC, ro, flags
    r[0]["action"] = ACTION_NEW
    return r


def check(b, r, now=NOW):
    return risk.REASONS[risk.check(b.rk, r[0], now)]


def fill(b, cid, side, qty, px, status=STATUS_FILLED, symbol=0, fee=0.0, now=NOW):
    f = np.zeros(1, FILL_DTYPE)
    f[0]["client_id"], f[0]["side"], f[0]["qty"], f[0]["price"], f[0]["status"] = cid, side, qty, px, status
    f[0]["symbol"], f[0]["fee"] = symbol, fee
    risk.on_fill(b.rk, f[0], now)


def test_buy_limit_rounds_price_down_to_tick_and_qty_down_to_step():
    b = book()
    r = req(price=90000.07, qty=0.0109)
    assert check(b, r) == "OK"
    assert (r[0]["price_ticks"], r[0]["qty_steps"]) == (900000, 10)
    assert r[0]["client_id"] == 1 and r[0]["risk_ts"] == NOW


def test_sell_limit_rounds_price_up_so_it_is_never_more_aggressive():
    b = book()
    r = req(side=SIDE_SELL, price=90000.01, qty=0.01)
    assert check(b, r) == "OK"
    assert r[0]["price_ticks"] == 900001


def test_float_noise_price_lands_on_the_intended_tick():
    b = book(price_band_bps=0)
    r = req(price=0.1 * 917399, qty=0.003)   # 91739.90000000001
    assert check(b, r) == "OK" and r[0]["price_ticks"] == 917399


def test_qty_below_one_step_is_refused():
    assert check(book(), req(qty=0.0009)) == "QTY_BELOW_STEP"


def test_market_qty_above_market_lot_max_is_refused_but_limit_max_is_larger():
    b = book(max_position_qty=0)
    assert check(b, req(otype=ORDER_MARKET, qty=121.0, price=0)) == "MAX_QTY"
    assert check(b, req(qty=121.0, price=90000.0)) == "OK"


def test_limit_qty_above_lot_max_is_refused():
    assert check(book(), req(qty=1001.0)) == "MAX_QTY"


def test_min_qty_filter():
    b = risk.RiskBook(risk.RiskConfig(max_order_notional=0), [risk.SymbolRules("X", tick_size="0.1", step_size="0.1",
                                                                               min_qty="1", min_notional="0")])
    quote(b, 0, 10.0, 10.1)
    assert check(b, req(qty=0.5, price=10.0)) == "MIN_QTY"
    assert check(b, req(qty=1.0, price=10.0)) == "OK"


def test_price_outside_price_filter_is_refused():
    b = book(price_band_bps=0)
    quote(b, 0, 500.0, 500.1)
    assert check(b, req(price=500.0, qty=0.2)) == "PRICE_FILTER"


def test_notional_below_min_notional_is_refused():
    b = book()
    # ETHUSDT min notional 20: 0.005 * 3000 = 15 fails, 0.007 * 3000 = 21 passes
    assert check(b, req(symbol=1, qty=0.005, price=3000.0)) == "MIN_NOTIONAL"
    assert check(b, req(symbol=1, qty=0.007, price=3000.0)) == "OK"


def test_market_order_notional_uses_the_mark_price():
    b = book()
    b.sym[1, risk.S_MARK] = 3000.0
    assert check(b, req(symbol=1, qty=0.006, price=0, otype=ORDER_MARKET)) == "MIN_NOTIONAL"   # 18 < 20
    assert check(b, req(symbol=1, qty=0.007, price=0, otype=ORDER_MARKET)) == "OK"


def test_reduce_only_is_exempt_from_min_notional():
    b = book()
    fill(b, 0, SIDE_BUY, 0.01, 3000.0, symbol=1)
    assert check(b, req(symbol=1, side=SIDE_SELL, qty=0.005, price=3000.0, ro=1)) == "OK"


def test_percent_price_uses_mark_multiplier():
    b = book(price_band_bps=0)
    b.sym[0, risk.S_MARK] = 90000.0
    assert check(b, req(price=94600.0, qty=0.001)) == "PERCENT_PRICE"   # > 1.05 * mark
    assert check(b, req(price=94400.0, qty=0.001)) == "OK"
    assert check(b, req(side=SIDE_SELL, price=85400.0, qty=0.001)) == "PERCENT_PRICE"


def test_price_band_vs_mid():
    b = book(price_band_bps=50)
    assert check(b, req(price=89500.0, qty=0.001)) == "PRICE_BAND"    # 0.56 % away
    assert check(b, req(price=89600.0, qty=0.001)) == "OK"            # 0.44 %


def test_stale_market_data_refuses_new_orders():
    b = book(max_md_age_ms=100)
    assert check(b, req(qty=0.001), now=NOW + 50_000_000) == "OK"
    assert check(b, req(qty=0.001), now=NOW + 200_000_000) == "STALE_MARKET_DATA"


def test_no_market_data_refuses_new_orders():
    b = risk.RiskBook(risk.RiskConfig(), [BTC])
    assert check(b, req()) == "NO_MARKET_DATA"


def test_symbol_not_trading_is_refused():
    b = risk.RiskBook(risk.RiskConfig(), [risk.SymbolRules("FTTUSDT", status="SETTLING")])
    quote(b, 0, 1.0, 1.01)
    assert check(b, req(price=1.0, qty=100)) == "SYMBOL_NOT_TRADING"


def test_unknown_symbol_is_refused():
    assert check(book(), req(symbol=7)) == "UNKNOWN_SYMBOL"


def test_max_order_qty_and_notional():
    b = book(max_order_qty=0.5)
    assert check(b, req(qty=0.6)) == "ORDER_QTY_LIMIT"
    b = book(max_order_notional=1000.0)
    assert check(b, req(qty=0.012)) == "ORDER_NOTIONAL_LIMIT"    # 1080
    assert check(b, req(qty=0.011)) == "OK"                      # 990


def test_per_symbol_limit_overrides_global():
    cfg = risk.RiskConfig(max_order_notional=1e9, max_position_notional=1e9, max_gross_notional=1e9,
                          symbols={"BTCUSDT": {"max_order_qty": 0.001}})
    b = risk.RiskBook(cfg, [BTC, ETH])
    quote(b, 0, 90000.0, 90000.1)
    quote(b, 1, 3000.0, 3000.01)
    assert check(b, req(qty=0.002)) == "ORDER_QTY_LIMIT"
    assert check(b, req(symbol=1, qty=1.0, price=3000.0)) == "OK"


def test_position_qty_limit_counts_open_orders_on_the_same_side():
    b = book(max_position_qty=0.02)
    assert check(b, req(qty=0.015)) == "OK"
    assert check(b, req(qty=0.01)) == "POSITION_QTY_LIMIT"      # 0.015 open + 0.01 > 0.02
    assert check(b, req(side=SIDE_SELL, qty=0.01, price=90001.0)) == "OK"   # other side: worst case stays 0.015


def test_position_notional_limit_includes_the_filled_position():
    b = book(max_position_notional=2000.0)
    fill(b, 0, SIDE_BUY, 0.02, 90000.0)                          # 1800 long
    assert check(b, req(qty=0.003)) == "POSITION_NOTIONAL_LIMIT"  # 0.023 * 90000 = 2070
    assert check(b, req(qty=0.002)) == "OK"


def test_gross_notional_limit_sums_every_symbol():
    b = book(max_gross_notional=3000.0)
    fill(b, 0, SIDE_BUY, 0.02, 90000.0)                          # 1800
    assert check(b, req(symbol=1, qty=0.5, price=3000.0)) == "GROSS_NOTIONAL_LIMIT"   # +1500
    assert check(b, req(symbol=1, qty=0.3, price=3000.0)) == "OK"                     # +900


def test_reduce_only_without_position_is_refused():
    assert check(book(), req(side=SIDE_SELL, ro=1, qty=0.01, price=90001.0)) == "REDUCE_ONLY_NO_POSITION"


def test_reduce_only_is_clipped_to_the_uncovered_position():
    b = book()
    fill(b, 0, SIDE_BUY, 0.01, 90000.0)
    r1 = req(side=SIDE_SELL, ro=1, qty=0.006, price=90001.0)
    assert check(b, r1) == "OK" and r1[0]["qty_steps"] == 6
    r2 = req(side=SIDE_SELL, ro=1, qty=0.01, price=90001.0)
    assert check(b, r2) == "OK" and r2[0]["qty_steps"] == 4      # only 0.004 left uncovered
    assert check(b, req(side=SIDE_SELL, ro=1, qty=0.01, price=90001.0)) == "REDUCE_ONLY_NO_POSITION"


def test_reduce_only_is_exempt_from_position_limits():
    b = book(max_position_qty=0.005)
    b.restore_position("BTCUSDT", 0.02, 90000.0)
    assert check(b, req(side=SIDE_BUY, qty=0.001)) == "POSITION_QTY_LIMIT"
    assert check(b, req(side=SIDE_SELL, ro=1, qty=0.01, price=90001.0)) == "OK"


def test_our_order_rate_throttle_over_one_second():
    b = book(orders_per_second=3)
    for _ in range(3):
        assert check(b, req(qty=0.001)) == "OK"
    assert check(b, req(qty=0.001)) == "RATE_OURS"
    assert check(b, req(qty=0.001), now=NOW + 1_000_000_001) == "OK"


def test_binance_ten_second_order_limit():
    b = book(orders_per_second=1000, binance_orders_10s=5, max_md_age_ms=0)
    for i in range(5):
        assert check(b, req(qty=0.001), now=NOW + i) == "OK"
    assert check(b, req(qty=0.001), now=NOW + 9_000_000_000) == "RATE_BINANCE_10S"
    assert check(b, req(qty=0.001), now=NOW + 10_000_000_001) == "OK"


def test_binance_one_minute_order_limit():
    b = book(orders_per_second=1000, binance_orders_10s=1000, binance_orders_1m=4, max_md_age_ms=0)
    for i in range(4):
        assert check(b, req(qty=0.001), now=NOW + i * 11_000_000_000) == "OK"
    assert check(b, req(qty=0.001), now=NOW + 50_000_000_000) == "RATE_BINANCE_1M"


def test_exchange_order_limits_come_from_exchange_info_and_config_only_lowers_them():
    info = {"rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                           {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 60000},
                           {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 10000}]}
    listed = risk.exchange_order_limits(info)
    assert listed == (10000, 60000)
    assert risk.exchange_order_limits({}) == (0, 0)
    cfg = risk.RiskConfig()
    assert risk.RiskBook(cfg, [BTC], exchange_limits=listed).order_limits == (10000, 60000)   # raised venue: ours too
    assert risk.RiskBook(cfg, [BTC]).order_limits == (300, 1200)                               # none listed: Binance's
    assert risk.RiskBook(risk.RiskConfig(binance_orders_10s=50), [BTC], exchange_limits=listed).order_limits == \
        (50, 60000)                                                                           # config lowers
    assert risk.RiskBook(risk.RiskConfig(binance_orders_1m=5000), [BTC],
                         exchange_limits=(300, 1200)).order_limits == (300, 1200)             # never raises
    assert risk.RiskBook(cfg, [BTC], exchange_limits=(10**6, 10**7)).order_limits == (risk.RATE_CAP, risk.RATE_CAP)


def test_hundreds_of_orders_per_second_pass_with_raised_limits():
    b = risk.RiskBook(risk.RiskConfig(max_position_notional=1e9, max_gross_notional=1e9, max_order_notional=1e9,
                                      daily_loss_limit=0.0, orders_per_second=500, max_md_age_ms=0,
                                      max_open_orders=risk.MAX_OPEN),
                      [risk.SymbolRules("BTCUSDT", tick_size="0.10", step_size="0.001", max_num_orders=risk.MAX_OPEN)],
                      exchange_limits=(10000, 60000))
    quote(b, 0, 90000.0, 90000.1)
    ok = sum(check(b, req(qty=0.001, ro=0), now=NOW + i * 1_000_000) == "OK" for i in range(1000))   # 1000/s asked
    assert ok == 500                                                                                # ours: 500/s


def test_refused_orders_do_not_use_the_rate_budget():
    b = book(orders_per_second=2)
    for _ in range(5):
        assert check(b, req(qty=0.0001)) == "QTY_BELOW_STEP"
    assert check(b, req(qty=0.001)) == "OK"
    assert check(b, req(qty=0.001)) == "OK"


def test_max_open_orders_per_symbol():
    b = book(max_open_orders=2)
    assert check(b, req(qty=0.001)) == "OK"
    assert check(b, req(qty=0.001)) == "OK"
    assert check(b, req(qty=0.001)) == "MAX_OPEN_ORDERS"


def test_halted_refuses_new_orders_and_says_why():
    b = book()
    risk.kill(b.g, NOW)
    assert check(b, req(qty=0.001)) == "HALTED"
    assert b.state == "HALTED" and b.state_reason == "kill switch"


def test_reducing_allows_only_orders_that_shrink_the_position():
    b = book(start_state="REDUCING")
    assert check(b, req(qty=0.001)) == "REDUCING"
    fill(b, 0, SIDE_BUY, 0.01, 90000.0)
    assert check(b, req(side=SIDE_BUY, qty=0.001)) == "REDUCING"
    r = req(side=SIDE_SELL, qty=0.02, price=90001.0)
    assert check(b, r) == "OK"
    assert r[0]["reduce_only"] == 1 and r[0]["qty_steps"] == 10     # became reduce-only, clipped to the position


def test_kill_switch_cancels_all_symbols_with_open_orders_and_flattens_when_configured():
    b = book(flatten_on_halt=True)
    assert check(b, req(qty=0.001)) == "OK"                           # open order on BTC
    fill(b, 0, SIDE_BUY, 0.5, 3000.0, symbol=1)                       # position on ETH
    risk.kill(b.g, NOW)
    out = np.zeros(8, ORDER_REQUEST_DTYPE)
    n = risk.halt_requests(b.rk, out, NOW)
    assert n == 2
    assert out[0]["action"] == ACTION_CANCEL_ALL and out[0]["symbol"] == 0
    flat = out[1]
    assert flat["action"] == ACTION_NEW and flat["symbol"] == 1 and flat["side"] == SIDE_SELL
    assert flat["flags"] == REQ_FLAG_FLATTEN and flat["order_type"] == ORDER_MARKET
    assert risk.REASONS[risk.check(b.rk, out[1], NOW)] == "OK"     # flatten passes HALTED
    assert out[1]["qty_steps"] == 500 and out[1]["reduce_only"] == 1
    assert risk.halt_requests(b.rk, out, NOW) == 0          # once


def test_daily_loss_limit_halts_on_unrealized_loss():
    b = book(daily_loss_limit=100.0)
    fill(b, 0, SIDE_BUY, 0.1, 90000.0)
    quote(b, 0, 89100.0, 89100.1)                                    # -90
    assert not risk.check_daily_loss(b.rk, NOW)
    quote(b, 0, 88900.0, 88900.1)                                    # -110
    assert risk.check_daily_loss(b.rk, NOW)
    assert b.state == "HALTED" and b.state_reason == "daily loss limit"
    assert b.g[risk.G_HALT_PENDING] == 1


def test_daily_loss_counts_from_the_start_of_the_utc_day():
    b = book(daily_loss_limit=100.0)
    fill(b, 0, SIDE_BUY, 0.1, 90000.0)
    quote(b, 0, 88950.0, 88950.1)                                    # -105 on day 0
    risk.roll_day(b.g, b.gf, b.sym, 5 * risk.NS_PER_DAY)             # new day: baseline = -105
    assert not risk.check_daily_loss(b.rk, NOW)


def test_rejections_are_counted_per_reason_and_logged_with_symbol():
    b = book(max_order_qty=0.5)
    check(b, req(qty=0.6))
    check(b, req(qty=0.7))
    check(b, req(symbol=1, qty=0.0001, price=3000.0))
    assert b.reject_counts() == {"ORDER_QTY_LIMIT": 2, "QTY_BELOW_STEP": 1}
    recent = b.recent_rejections()
    assert [(s, r) for _, s, r, _ in recent] == [("BTCUSDT", "ORDER_QTY_LIMIT"), ("BTCUSDT", "ORDER_QTY_LIMIT"),
                                                   ("ETHUSDT", "QTY_BELOW_STEP")]


def test_cancel_of_unknown_order_is_refused_and_known_one_allowed_even_when_halted():
    b = book()
    r = req(qty=0.001)
    check(b, r)
    risk.kill(b.g, NOW)
    c = np.zeros(1, ORDER_REQUEST_DTYPE)
    c[0]["action"], c[0]["target_id"] = ACTION_CANCEL, 999
    assert check(b, c) == "UNKNOWN_ORDER"
    c[0]["target_id"] = r[0]["client_id"]
    assert check(b, c) == "OK"


def test_fills_update_position_average_price_realized_pnl_fees_and_open_orders():
    b = book()
    r = req(qty=0.02)
    check(b, r)
    cid = int(r[0]["client_id"])
    fill(b, cid, SIDE_BUY, 0.01, 90000.0, STATUS_PARTIALLY_FILLED, fee=0.5)
    assert b.sym[0, risk.S_OPEN_BUY] == pytest.approx(0.01)
    fill(b, cid, SIDE_BUY, 0.01, 91000.0, STATUS_FILLED, fee=0.5)
    assert b.position("BTCUSDT") == pytest.approx(0.02)
    assert b.sym[0, risk.S_AVG_PX] == pytest.approx(90500.0)
    assert b.sym[0, risk.S_OPEN_BUY] == 0 and b.sym[0, risk.S_OPEN_COUNT] == 0
    fill(b, 0, SIDE_SELL, 0.03, 92000.0)                               # close 0.02 (+30), flip to -0.01 @ 92000
    assert b.gf[risk.GF_REALIZED] == pytest.approx(30.0)
    assert b.position("BTCUSDT") == pytest.approx(-0.01) and b.sym[0, risk.S_AVG_PX] == 92000.0
    assert b.gf[risk.GF_FEES] == pytest.approx(1.0)


def test_cancel_event_releases_the_open_order():
    b = book(max_open_orders=1)
    r = req(qty=0.001)
    check(b, r)
    assert check(b, req(qty=0.001)) == "MAX_OPEN_ORDERS"
    fill(b, int(r[0]["client_id"]), SIDE_BUY, 0.0, 0.0, STATUS_CANCELED)
    assert check(b, req(qty=0.001)) == "OK"


def test_exchange_reject_releases_the_order_and_is_counted():
    b = book()
    r = req(qty=0.001)
    check(b, r)
    fill(b, int(r[0]["client_id"]), SIDE_BUY, 0.0, 0.0, STATUS_REJECTED)
    assert b.reject_counts() == {"EXCHANGE_REJECT": 1}
    assert b.sym[0, risk.S_OPEN_COUNT] == 0


def test_position_snapshot_from_reconciliation_replaces_the_position():
    b = book()
    fill(b, 0, SIDE_BUY, 0.01, 90000.0)
    fill(b, -1, SIDE_BUY, -0.03, 88000.0, STATUS_SNAPSHOT)
    assert b.position("BTCUSDT") == pytest.approx(-0.03) and b.sym[0, risk.S_AVG_PX] == 88000.0


def test_symbol_rules_parse_a_live_exchange_info_row():
    row = {"symbol": "BTCUSDT", "status": "TRADING", "filters": [
        {"minPrice": "556.80", "tickSize": "0.10", "filterType": "PRICE_FILTER", "maxPrice": "4529764"},
        {"minQty": "0.001", "filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000"},
        {"stepSize": "0.001", "maxQty": "120", "filterType": "MARKET_LOT_SIZE", "minQty": "0.001"},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200}, {"notional": "50", "filterType": "MIN_NOTIONAL"},
        {"multiplierDown": "0.9500", "multiplierDecimal": "4", "filterType": "PERCENT_PRICE", "multiplierUp": "1.0500"},
        {"filterType": "POSITION_RISK_CONTROL", "positionControlSide": "NONE"}]}
    r = risk.SymbolRules.from_exchange_info(row)
    assert (r.tick_size, r.step_size, r.market_max_qty, r.min_notional, r.multiplier_up, r.min_price) == \
        ("0.10", "0.001", "120", "50", "1.0500", "556.80")


def test_risk_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key"):
        risk.RiskConfig.from_section({"max_posiion": 1})
    with pytest.raises(ConfigError, match="number"):
        risk.RiskConfig.from_section({"max_order_notional": "lots"})
    with pytest.raises(ConfigError, match="start_state"):
        risk.RiskConfig.from_section({"start_state": "YOLO"})
    cfg = risk.RiskConfig.from_section({"daily_loss_limit": 50, "symbols": {"BTCUSDT": {"max_order_qty": 0.01}}})
    assert cfg.daily_loss_limit == 50 and cfg.symbols["BTCUSDT"]["max_order_qty"] == 0.01


def test_assess_gives_checks_verdict_and_rounded_order_and_records_nothing():
    """risk.assess_new is check without the recording: the Brain rehearses it between orders (warm_signal_path)."""
    cases = [req(price=90000.07, qty=0.0109), req(side=SIDE_SELL, price=90000.03, qty=0.0109),
             req(otype=ORDER_MARKET, qty=0.0051, price=0.0), req(qty=0.0001), req(price=1.0),
             req(qty=0.0001, price=90000.0, otype=ORDER_MARKET), req(symbol=7), req(ro=1),
             req(symbol=1, qty=0.001, price=3000.0)]
    for r in cases:
        b = book()
        arrays = [a.copy() for a in b.rk if isinstance(a, np.ndarray)]
        dry = r.copy()
        verdict = risk.assess_new(b.rk, dry[0], NOW)
        assert all((x == y).all() for x, y in zip((a for a in b.rk if isinstance(a, np.ndarray)), arrays))
        assert check(b, r) == risk.REASONS[verdict]
        if verdict == 0:     # the order as it would leave; only check gives it a client id and a risk stamp
            for f in ("qty_steps", "qty", "price_ticks", "price", "reduce_only"):
                assert dry[0][f] == r[0][f], f
            assert dry[0]["client_id"] == 0 and r[0]["client_id"] == 1
        else:
            assert dry[0] == r[0]           # a refusal leaves the request as it was, in both
