"""Matching, filters, positions and PnL of the embedded venue's exchange (pure logic, no sockets).

Numbers in the PnL tests are computed by hand (and two come from Binance's live frames, docs/binance-notes.md, User data
events).
"""
from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from aegis.venue.catalog import ORDER_IDS_ABOVE_2_53, by_symbol, catalog_with, default_catalog, symbol_json
from aegis.venue.exchange import DEFAULT_API_KEY as KEY, Exchange, ExchangeConfig, VenueError


class StaticBook:
    """A hand-set order book with the market API the exchange uses (book_levels/best/mark_price/tick listeners)."""

    def __init__(self):
        self.asks: dict[str, list] = {}
        self.bids: dict[str, list] = {}
        self.marks: dict[str, float] = {}
        self.listeners = []
        self.ts = 1_700_000_000_000

    def set(self, symbol, bids, asks, mark=None):
        """A new book, delivered to the tick listeners as the venue's market delivers every change."""
        self.bids[symbol] = sorted(bids, key=lambda l: -l[0])
        self.asks[symbol] = sorted(asks, key=lambda l: l[0])
        if mark is not None:
            self.marks[symbol] = mark
        elif bids and asks:
            self.marks[symbol] = (bids[0][0] + asks[0][0]) / 2
        self.ts += 1
        for fn in self.listeners:
            fn(symbol, self.bids[symbol][0][0] if bids else 0.0, self.asks[symbol][0][0] if asks else 0.0, self.ts)

    def book_levels(self, symbol, side, n):
        return list((self.asks if side == "BUY" else self.bids).get(symbol, []))[:n]

    def best(self, symbol):
        b = self.bids.get(symbol) or [(0.0, 0.0)]
        a = self.asks.get(symbol) or [(0.0, 0.0)]
        return b[0][0], b[0][1], a[0][0], a[0][1]

    def mark_price(self, symbol):
        return self.marks[symbol]

    def add_tick_listener(self, fn):
        self.listeners.append(fn)


@pytest.fixture
def book():
    b = StaticBook()
    b.set("BTCUSDT", [(89999.9, 5.0), (89999.0, 5.0)], [(90000.0, 5.0), (90001.0, 5.0)])
    b.set("ETHUSDT", [(2999.99, 50.0)], [(3000.0, 50.0)])
    return b


@pytest.fixture
def ex(book):
    clock = iter(range(1_700_000_000_000, 1_800_000_000_000))
    e = Exchange(book, cfg=ExchangeConfig(), clock_ms=lambda: next(clock))
    e.events = []
    e.add_listener(KEY, e.events.append)
    return e


def order(ex, **p):
    params = {k: str(v) for k, v in p.items()}
    params.setdefault("newOrderRespType", "RESULT")
    return ex.place_order(KEY, params)


def err(fn, *a, **k) -> VenueError:
    with pytest.raises(VenueError) as ei:
        fn(*a, **k)
    return ei.value


def kinds(events):
    return [(e["e"], e["o"]["x"], e["o"]["X"]) if e["e"] == "ORDER_TRADE_UPDATE" else (e["e"],) for e in events]


# ----------------------------------------------------------------------------------------------- catalog

def test_default_catalog_lists_twenty_trading_usdt_perpetuals_and_others():
    cat = default_catalog()
    perps = [s for s in cat if s.is_trading and s.quote_asset == "USDT" and "PERPETUAL" in s.contract_type]
    assert len(perps) >= 20
    assert any(not s.is_trading for s in cat)
    assert any(s.quote_asset == "USDC" for s in cat)
    assert any(s.contract_type == "CURRENT_QUARTER" for s in cat)
    assert any(not s.symbol.isascii() for s in cat)
    assert by_symbol(cat)["BTCUSDT"].tick_size == "0.10" and by_symbol(cat)["BTCUSDT"].step_size == "0.001"


def test_exchange_info_row_carries_the_real_filter_objects():
    row = symbol_json(by_symbol(default_catalog())["BTCUSDT"])
    types = [f["filterType"] for f in row["filters"]]
    assert types[:6] == ["PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MAX_NUM_ORDERS", "MIN_NOTIONAL",
                         "PERCENT_PRICE"]
    assert row["filters"][4] == {"notional": "50", "filterType": "MIN_NOTIONAL"}
    assert row["filters"][5]["multiplierDecimal"] == "4"


def test_catalog_with_builds_hundreds_of_distinct_trading_symbols_on_their_tick_grid():
    cat = catalog_with(350)
    assert len(cat) == 350 and len({s.symbol for s in cat}) == 350
    for s in cat:
        assert s.is_trading and s.quote_asset == "USDT"
        assert Decimal(repr(s.base_price)) >= 10 * s.tick


# ----------------------------------------------------------------------------------------------- matching

def test_market_buy_sweeps_levels_and_reports_volume_weighted_average(ex, book):
    book.set("BTCUSDT", [(89999.9, 5.0)], [(90000.0, 0.001), (90000.1, 0.001), (90000.5, 0.005)])
    r = order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.003")
    assert r["status"] == "FILLED" and r["executedQty"] == "0.003"
    # (90000.0 + 90000.1 + 90000.5) / 3 = 90000.2
    assert r["avgPrice"] == "90000.20000" and r["cumQuote"] == "270.00060"
    trades = [e for e in ex.events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert [t["o"]["L"] for t in trades] == ["90000.00", "90000.10", "90000.50"]
    # taker fee 0.05% per fill: 0.045 + 0.04500005 + 0.04500025
    assert [t["o"]["n"] for t in trades] == ["0.04500000", "0.04500005", "0.04500025"]
    assert ex.account(KEY).wallet["USDT"] == Decimal("10000") - Decimal("0.1350003")


def test_market_remainder_expires_when_the_book_is_thinner_than_the_order(ex, book):
    book.set("BTCUSDT", [(89999.9, 5.0)], [(90000.0, 0.002)])
    r = order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.005")
    assert r["status"] == "EXPIRED" and r["executedQty"] == "0.002"
    last = ex.events[-1]["o"]
    assert (last["x"], last["X"], last["er"]) == ("EXPIRED", "EXPIRED", "9")


def test_ack_reply_shows_the_order_at_acceptance_even_when_it_filled(ex):
    r = ex.place_order(KEY, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"})
    assert r["status"] == "NEW" and r["executedQty"] == "0.000" and r["avgPrice"] == "0.00"
    q = ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert q["status"] == "FILLED" and q["executedQty"] == "0.001"


def test_gtc_limit_below_the_ask_rests_and_emits_only_new(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="89000")
    assert r["status"] == "NEW" and r["price"] == "89000.00"
    assert kinds(ex.events) == [("ORDER_TRADE_UPDATE", "NEW", "NEW")]
    assert [o["orderId"] for o in ex.open_orders(KEY, {"symbol": "BTCUSDT"})] == [r["orderId"]]


def test_resting_limit_fills_as_maker_at_its_own_price_when_the_market_crosses_it(ex, book):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="89000")
    ex.events.clear()
    book.set("BTCUSDT", [(88900.0, 5.0)], [(88950.0, 5.0)], mark=88950.0)
    q = ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert q["status"] == "FILLED" and q["avgPrice"] == "89000.00000"
    trade = ex.events[-1]["o"]
    assert trade["m"] is True and trade["L"] == "89000.00"
    # maker fee 0.02% of 178 = 0.0356
    assert trade["n"] == "0.03560000"
    assert ex.open_orders(KEY, {}) == []


def test_marketable_gtc_limit_fills_what_crosses_and_rests_the_remainder(ex, book):
    book.set("BTCUSDT", [(89999.9, 5.0)], [(90000.0, 0.001), (90000.5, 0.001), (90002.0, 9.0)])
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.005", price="90001")
    assert r["status"] == "PARTIALLY_FILLED" and r["executedQty"] == "0.002"
    opens = ex.open_orders(KEY, {"symbol": "BTCUSDT"})
    assert len(opens) == 1 and opens[0]["executedQty"] == "0.002" and "cumQty" not in opens[0]


def test_thin_book_on_a_tick_gives_a_partial_maker_fill_then_the_rest(ex, book):
    r = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.010", price="90100")
    book.set("BTCUSDT", [(90100.0, 0.004), (90000.0, 5.0)], [(90100.1, 1.0)], mark=90100.0)
    q = ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert q["status"] == "PARTIALLY_FILLED" and q["executedQty"] == "0.004"
    book.set("BTCUSDT", [(90150.0, 1.0)], [(90150.1, 1.0)], mark=90150.0)
    q = ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert q["status"] == "FILLED" and q["executedQty"] == "0.010"
    assert ex.account(KEY).positions["BTCUSDT", "BOTH"].amt == Decimal("-0.010")


def test_liquidity_scale_thins_the_book_to_force_partial_fills(ex, book):
    ex.set_liquidity_scale(0.001)          # 5 BTC per level -> 0.005
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="IOC", quantity="0.008", price="90000")
    assert r["status"] == "EXPIRED" and r["executedQty"] == "0.005"


def test_ioc_fills_what_crosses_and_expires_the_rest_with_reason_2(ex, book):
    book.set("BTCUSDT", [(89999.9, 5.0)], [(90000.0, 0.003), (90005.0, 5.0)])
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="IOC", quantity="0.005", price="90000")
    assert r["status"] == "EXPIRED" and r["executedQty"] == "0.003"
    assert ex.events[-1]["o"]["er"] == "2"
    assert ex.open_orders(KEY, {}) == []


def test_fok_that_cannot_fill_completely_is_rejected_and_not_recorded(ex, book):
    book.set("BTCUSDT", [(89999.9, 5.0)], [(90000.0, 0.003), (90005.0, 5.0)])
    e = err(order, ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="FOK", quantity="0.005",
            price="90000", newClientOrderId="fok1")
    assert e.code == -5021
    assert ex.events == []
    assert err(ex.query_order, KEY, {"symbol": "BTCUSDT", "origClientOrderId": "fok1"}).code == -2013


def test_fok_that_can_fill_completely_fills(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="FOK", quantity="0.005", price="90000")
    assert r["status"] == "FILLED"


def test_post_only_that_would_take_is_rejected_with_5022(ex):
    e = err(order, ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTX", quantity="0.001",
            price="90000")
    assert e.code == -5022 and e.msg.startswith("Due to the order could not be executed as maker")
    assert ex.events == []


def test_post_only_that_would_not_take_rests(ex):
    r = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTX", quantity="0.001",
              price="90000")
    assert r["status"] == "NEW" and r["timeInForce"] == "GTX"


# ----------------------------------------------------------------------------------------------- reduceOnly

def test_reduce_only_without_a_position_is_rejected(ex):
    e = err(order, ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.001", reduceOnly="true")
    assert (e.code, e.msg) == (-2022, "ReduceOnly Order is rejected.")


def test_reduce_only_in_the_direction_of_the_position_is_rejected(ex):
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    e = err(order, ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001", reduceOnly="true")
    assert e.code == -2022


def test_reduce_only_larger_than_the_position_only_closes_it(ex):
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    r = order(ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.005", reduceOnly="true")
    assert r["executedQty"] == "0.002" and r["reduceOnly"] is True
    assert ex.account(KEY).positions["BTCUSDT", "BOTH"].amt == 0


def test_reduce_only_is_exempt_from_min_notional(ex):
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")   # 90 USDT >= 50
    ex.set_liquidity_scale(1.0)
    r = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.001",
              price="99000", reduceOnly="true")
    assert r["status"] == "NEW"


def test_resting_reduce_only_expires_when_the_position_is_closed_by_another_order(ex):
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    ro = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.002",
               price="91000", reduceOnly="true")
    order(ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002")
    q = ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(ro["orderId"])})
    assert q["status"] == "EXPIRED"
    assert any(e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["i"] == ro["orderId"] and e["o"]["er"] == "4"
               for e in ex.events)


# ----------------------------------------------------------------------------------------------- filters & errors

@pytest.mark.parametrize("params,code", [
    (dict(price="90000.05"), -4014),                      # 2 decimals allowed, but tick is 0.10
    (dict(quantity="0.0015"), -1111),                     # 4 decimals > quantityPrecision 3
    (dict(price="90000.001"), -1111),
    (dict(quantity="0.0005"), -1111),
    (dict(quantity="1001"), -1013),                       # LOT_SIZE maxQty 1000
    (dict(quantity="0"), -4003),
    (dict(quantity="abc"), -1102),
    (dict(price="95000"), -4016),                         # > mark * 1.05 (94500)
    (dict(side="SELL", price="85000"), -4024),            # < mark * 0.95 (85500)
    (dict(quantity="0.0001"), -1111),
    (dict(price="500"), -1013),                           # below minPrice 556.80
])
def test_limit_filter_violations_answer_the_binance_codes(ex, params, code):
    p = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000")
    p.update(params)
    assert err(order, ex, **p).code == code


def test_step_size_violation_answers_4023(book):
    # real rows have step == 10**-quantityPrecision; a coarser step isolates the step rule from precision
    ex2 = Exchange(book, catalog=(dataclasses.replace(by_symbol(default_catalog())["BTCUSDT"],
                                                           step_size="0.002", min_qty="0.002"),))
    e = err(ex2.place_order, KEY, dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                       quantity="0.003", price="89000"))
    assert (e.code, e.msg) == (-4023, "Qty not increased by step size.")


def test_generic_filter_mode_answers_1013_filter_failure(book):
    ex = Exchange(book, cfg=ExchangeConfig(filter_errors="generic"))
    e = err(ex.place_order, KEY, dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                      quantity="0.001", price="89000.05"))
    assert (e.code, e.msg) == (-1013, "Filter failure: PRICE_FILTER")


def test_min_notional_reject_quotes_the_symbol_filter_value(ex):
    # 0.006 * 3000 = 18 < 20
    e = err(order, ex, symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.006",
            price="3000")
    assert (e.code, e.msg) == (-4164, "Order's notional must be no smaller than 20 (unless you choose reduce "
                                      "only).")


def test_market_lot_size_applies_to_market_orders(ex):
    assert err(order, ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="121").code == -1013


def test_market_order_is_rejected_when_the_book_is_outside_the_percent_price_band(ex, book):
    book.set("BTCUSDT", [(80000.0, 5.0)], [(99000.0, 5.0)], mark=90000.0)
    e = err(order, ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
    assert e.code == -4131


@pytest.mark.parametrize("params,code", [
    (dict(type="STOP_MARKET"), -4120),
    (dict(type="MARKET", timeInForce="GTC"), -1106),
    (dict(type="LIMIT", price="89000"), -1102),            # no timeInForce
    (dict(type="LIMIT", timeInForce="GTC"), -1102),        # no price
    (dict(type="LIMIT", timeInForce="XYZ", price="1"), -1115),
    (dict(side="HOLD"), -1117),
    (dict(type="ICEBERG"), -1116),
    (dict(symbol="NOPEUSDT"), -1121),
    (dict(symbol="FTTUSDT"), -4140),
    (dict(positionSide="LONG"), -4061),
    (dict(newClientOrderId="bad id!"), -1100),
])
def test_malformed_orders_answer_the_binance_codes(ex, params, code):
    p = dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
    p.update(params)
    assert err(order, ex, **p).code == code


def test_duplicate_client_order_id_among_open_orders_is_rejected_until_it_is_closed(ex):
    p = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000",
             newClientOrderId="my-id-1")
    order(ex, **p)
    assert err(order, ex, **p).code == -4116
    ex.cancel_order(KEY, {"symbol": "BTCUSDT", "origClientOrderId": "my-id-1"})
    assert order(ex, **p)["status"] == "NEW"


def test_max_num_orders_per_symbol_answers_2025(book):
    spec = dataclasses.replace(by_symbol(default_catalog())["BTCUSDT"], max_num_orders=2)
    ex = Exchange(book, catalog=(spec,))
    p = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000")
    ex.place_order(KEY, p)
    ex.place_order(KEY, p)
    assert err(ex.place_order, KEY, p).code == -2025


def test_margin_check_rejects_orders_beyond_the_balance_with_2019(book):
    ex = Exchange(book, cfg=ExchangeConfig(initial_balances={"USDT": "100"}))
    # 0.03 BTC at 89000 = 2670 notional, /20 leverage = 133.5 > 100
    e = err(ex.place_order, KEY, dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                      quantity="0.030", price="89000"))
    assert (e.code, e.msg) == (-2019, "Margin is insufficient.")


def test_order_ids_exceed_2_pow_53_on_some_symbols_and_increase_per_symbol(ex, book):
    book.set("XRPUSDT", [(2.1999, 1e6)], [(2.2, 1e6)])
    a = order(ex, symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="10", price="2.1")
    b = order(ex, symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="10", price="2.1")
    assert a["orderId"] == ORDER_IDS_ABOVE_2_53 > 2 ** 53 and b["orderId"] == a["orderId"] + 1
    c = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000")
    assert c["orderId"] == 1


def test_non_ascii_symbol_trades(ex, book):
    book.set("币安人生USDT", [(0.11999, 1e6)], [(0.12, 1e6)])
    r = order(ex, symbol="币安人生USDT", side="BUY", type="MARKET", quantity="100")
    assert r["status"] == "FILLED" and r["symbol"] == "币安人生USDT"


# ----------------------------------------------------------------------------------------------- cancel & query

def test_cancel_reports_canceled_and_a_second_cancel_is_unknown(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000")
    c = ex.cancel_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert c["status"] == "CANCELED"
    assert ex.events[-1]["o"]["x"] == "CANCELED"
    e = err(ex.cancel_order, KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert (e.code, e.msg) == (-2011, "Unknown order sent.")


def test_cancel_all_answers_code_200_and_closes_every_open_order_of_the_symbol(ex):
    for px in ("88000", "88500"):
        order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price=px)
    assert ex.cancel_all(KEY, {"symbol": "BTCUSDT"}) == {"code": 200, "msg": "The operation of cancel all open "
                                                                          "order is done."}
    assert ex.open_orders(KEY, {}) == []


def test_query_by_client_order_id_finds_the_order(ex):
    order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price="89000",
          newClientOrderId="q1")
    q = ex.query_order(KEY, {"symbol": "BTCUSDT", "origClientOrderId": "q1"})
    assert q["clientOrderId"] == "q1" and q["status"] == "NEW" and "time" in q


def test_query_of_unknown_order_answers_2013(ex):
    assert err(ex.query_order, KEY, {"symbol": "BTCUSDT", "orderId": "12345"}).code == -2013


# ----------------------------------------------------------------------------------------------- PnL & events

def test_live_open_and_close_reproduce_binance_fee_realized_pnl_and_break_even(ex, book):
    # live frames (docs/binance-notes.md, User data events): BUY 0.002 @ 91739.90, then reduce-only MARKET SELL @
    # 90853.20
    book.set("BTCUSDT", [(91739.8, 5.0)], [(91739.9, 5.0)], mark=91739.9)
    order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="91739.90")
    assert kinds(ex.events) == [("TRADE_LITE",), ("ORDER_TRADE_UPDATE", "NEW", "NEW"), ("ACCOUNT_UPDATE",),
                                ("ORDER_TRADE_UPDATE", "TRADE", "FILLED")]
    au = ex.events[2]["a"]
    assert au["m"] == "ORDER" and au["P"][0]["pa"] == "0.002" and au["P"][0]["ep"] == "91739.9"
    assert au["P"][0]["bep"] == "91785.76995"
    fill = ex.events[3]["o"]
    assert fill["n"] == "0.09173990" and fill["ap"] == "91739.90000" and fill["rp"] == "0"
    assert ex.events[1]["o"]["b"] == "183.47980"
    ex.events.clear()
    book.set("BTCUSDT", [(90853.2, 5.0)], [(90853.3, 5.0)], mark=90853.2)
    order(ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", reduceOnly="true")
    fill = ex.events[-1]["o"]
    assert fill["rp"] == "-1.77340000" and fill["n"] == "0.09085320" and fill["ap"] == "90853.20000"
    assert ex.events[-2]["a"]["P"][0]["pa"] == "0" and ex.events[-2]["a"]["P"][0]["cr"] == "-1.77340000"
    # 10000 - 0.0917399 - 1.7734 - 0.0908532
    assert ex.account(KEY).wallet["USDT"] == Decimal("9998.0440069")


def test_entry_price_averages_and_realized_pnl_follows_partial_closes_and_flips(ex, book):
    def trade(side, qty, px):
        if side == "BUY":
            book.set("ETHUSDT", [(px - 0.01, 100.0)], [(px, 100.0)], mark=px)
        else:
            book.set("ETHUSDT", [(px, 100.0)], [(px + 0.01, 100.0)], mark=px)
        return order(ex, symbol="ETHUSDT", side=side, type="MARKET", quantity=qty)

    pos = lambda: ex.account(KEY).positions["ETHUSDT", "BOTH"]
    trade("BUY", "1", 2900.0)
    trade("BUY", "3", 3000.0)
    assert (pos().amt, pos().entry) == (4, Decimal("2975"))            # (2900 + 3*3000) / 4
    trade("SELL", "2", 3050.0)
    assert (pos().amt, pos().entry, pos().realized) == (2, Decimal("2975"), Decimal("150"))   # 2 * 75
    trade("SELL", "4", 2950.0)
    # closes 2 at -25 each (-50), then opens a 2 short at 2950
    assert (pos().amt, pos().entry, pos().realized) == (-2, Decimal("2950"), Decimal("100"))
    fees = Decimal("0.0005") * (2900 + 9000 + 6100 + 11800)
    assert ex.account(KEY).wallet["USDT"] == Decimal("10000") + 100 - fees


def test_position_risk_and_account_report_unrealized_pnl_at_the_mark(ex, book):
    book.set("ETHUSDT", [(2999.99, 50.0)], [(3000.0, 50.0)], mark=3000.0)
    order(ex, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="2")
    book.set("ETHUSDT", [(3009.99, 50.0)], [(3010.0, 50.0)], mark=3010.0)
    (row,) = ex.position_risk(KEY, {}, version=3)
    assert row["symbol"] == "ETHUSDT" and row["positionAmt"] == "2" and row["entryPrice"] == "3000"
    assert row["unRealizedProfit"] == "20.00000000" and row["markPrice"] == "3010.00000000"
    assert row["notional"] == "6020.00000000" and row["positionInitialMargin"] == "301.00000000"
    acct = ex.account_info(KEY, version=3)
    # wallet 10000 - fee 3.0 (0.05% of 6000)
    assert acct["totalWalletBalance"] == "9997.00000000" and acct["totalUnrealizedProfit"] == "20.00000000"
    assert acct["availableBalance"] == "9716.00000000"       # 9997 + 20 - 301
    assert [p["symbol"] for p in acct["positions"]] == ["ETHUSDT"]
    v2 = ex.position_risk(KEY, {"symbol": "ETHUSDT"}, version=2)[0]
    assert v2["leverage"] == "20" and v2["marginType"] == "cross" and v2["isAutoAddMargin"] == "false"


def test_events_go_only_to_the_account_that_traded(book):
    ex = Exchange(book, cfg=ExchangeConfig(api_keys={"a": "sa", "b": "sb"}))
    seen = {"a": [], "b": []}
    ex.add_listener("a", seen["a"].append)
    ex.add_listener("b", seen["b"].append)
    ex.place_order("a", dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001"))
    assert seen["a"] and not seen["b"]
    assert err(ex.place_order, "zzz", {}).code == -2015


# ----------------------------------------------------------------------------------------------- listen keys

def test_listen_key_post_twice_returns_the_same_key_and_keepalive_of_unknown_key_fails(ex):
    k1 = ex.listen_key_create(KEY)
    assert ex.listen_key_create(KEY) == k1 and len(k1) == 64
    assert ex.listen_key_keepalive(KEY) == k1
    assert err(ex.listen_key_keepalive, KEY, "nope").code == -1125


def test_expired_listen_key_is_announced_and_can_no_longer_be_kept_alive(ex):
    got = []
    ex.add_expiry_listener(lambda lk, owner, ev: got.append((lk, owner, ev)))
    k = ex.listen_key_create(KEY)
    assert ex.expire_listen_key(k)
    assert got[0][0] == k and got[0][1] == KEY and got[0][2]["e"] == "listenKeyExpired"
    assert got[0][2]["listenKey"] == k
    assert ex.listen_key_owner(k) is None
    assert err(ex.listen_key_keepalive, KEY, k).code == -1125
    assert ex.listen_key_create(KEY) != k


def test_listen_key_expires_by_itself_after_its_validity(book):
    import time
    ex = Exchange(book, cfg=ExchangeConfig(listen_key_validity_s=0.5))   # a stall between the lines stays inside it
    k = ex.listen_key_create(KEY)
    assert ex.expire_due_listen_keys() == []
    time.sleep(0.6)
    assert ex.expire_due_listen_keys() == [k]


def test_closed_order_history_is_bounded_oldest_first(book):
    ex = Exchange(book, cfg=ExchangeConfig(max_order_history=2))
    ids = [ex.place_order(KEY, dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                                    newClientOrderId=f"h{i}"))["orderId"] for i in range(3)]
    assert err(ex.query_order, KEY, {"symbol": "BTCUSDT", "orderId": str(ids[0])}).code == -2013
    assert err(ex.query_order, KEY, {"symbol": "BTCUSDT", "origClientOrderId": "h0"}).code == -2013
    assert ex.query_order(KEY, {"symbol": "BTCUSDT", "origClientOrderId": "h2"})["status"] == "FILLED"


# ----------------------------------------------------------------------------------------------- modify, leverage, trades

def test_modify_moves_a_resting_order_and_emits_amendment(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="89000")
    m = ex.modify_order(KEY, dict(symbol="BTCUSDT", orderId=str(r["orderId"]), side="BUY", quantity="0.003",
                                  price="89100"))
    assert (m["price"], m["origQty"], m["status"]) == ("89100.00", "0.003", "NEW")
    assert (ex.events[-1]["o"]["x"], ex.events[-1]["o"]["X"]) == ("AMENDMENT", "NEW")
    assert ex.open_orders(KEY, {})[0]["price"] == "89100.00"


def test_modify_to_a_crossing_price_trades_at_once(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="89000")
    m = ex.modify_order(KEY, dict(symbol="BTCUSDT", origClientOrderId=r["clientOrderId"], side="BUY",
                                  quantity="0.002", price="90000"))
    assert m["status"] == "FILLED" and m["avgPrice"] == "90000.00000"
    assert ex.events[-1]["o"]["m"] is False


def test_modify_of_post_only_into_the_book_is_rejected_and_leaves_it(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTX", quantity="0.002", price="89000")
    e = err(ex.modify_order, KEY, dict(symbol="BTCUSDT", orderId=str(r["orderId"]), side="BUY",
                                       quantity="0.002", price="90000"))
    assert e.code == -5022
    assert ex.open_orders(KEY, {})[0]["price"] == "89000.00"


def test_modify_without_change_answers_5027_and_of_closed_order_2013(ex):
    r = order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002", price="89000")
    p = dict(symbol="BTCUSDT", orderId=str(r["orderId"]), side="BUY", quantity="0.002", price="89000")
    assert err(ex.modify_order, KEY, p).code == -5027
    ex.cancel_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert err(ex.modify_order, KEY, p).code == -2013


def test_lower_leverage_needs_more_margin(book):
    ex = Exchange(book, cfg=ExchangeConfig(initial_balances={"USDT": "100"}))
    p = dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="89000")
    assert ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "5"}) == {
        "leverage": 5, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}
    assert err(ex.place_order, KEY, p).code == -2019          # 890 / 5 = 178 > 100
    ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "10"})
    assert ex.place_order(KEY, p)["status"] == "NEW"           # 890 / 10 = 89 <= 100
    assert ex.position_risk(KEY, {"symbol": "BTCUSDT"}, version=2)[0]["leverage"] == "10"
    assert err(ex.set_leverage, KEY, {"symbol": "BTCUSDT", "leverage": "126"}).code == -4028


def test_user_trades_list_each_fill_with_commission_and_realized_pnl(ex, book):
    order(ex, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1")
    book.set("ETHUSDT", [(3010.0, 50.0)], [(3010.01, 50.0)], mark=3010.0)
    sell = order(ex, symbol="ETHUSDT", side="SELL", type="MARKET", quantity="1")
    trades = ex.user_trades(KEY, {"symbol": "ETHUSDT"})
    assert [(t["side"], t["price"], t["qty"], t["realizedPnl"]) for t in trades] == [
        ("BUY", "3000.00", "1.000", "0.00000000"), ("SELL", "3010.00", "1.000", "10.00000000")]
    assert trades[1]["commission"] == "1.50500000" and trades[1]["orderId"] == sell["orderId"]
    assert ex.user_trades(KEY, {"symbol": "ETHUSDT", "orderId": str(sell["orderId"])}) == trades[1:]


def test_one_tick_closing_a_position_expires_the_other_reduce_only_orders(ex, book):
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    a = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.002",
              price="90100", reduceOnly="true")
    b = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.002",
              price="90200", reduceOnly="true")
    book.set("BTCUSDT", [(90300.0, 5.0)], [(90300.1, 5.0)], mark=90300.0)
    st = {o: ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(o)})["status"]
          for o in (a["orderId"], b["orderId"])}
    assert st == {a["orderId"]: "FILLED", b["orderId"]: "EXPIRED"}
    assert ex.account(KEY).positions["BTCUSDT", "BOTH"].amt == 0
