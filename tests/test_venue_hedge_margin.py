"""Hedge mode, isolated margin, liquidation and open interest of the embedded venue's exchange (pure logic, a
hand-set book, so every number below is worked out by hand).

Where our reference is silent, shapes and codes follow Binance's public USD-M documentation as we know it: the
"Change Position Mode", "New Order", "Modify Isolated Position Margin", "User's Force Orders" and "Open Interest"
pages and the user-data "Event: Order Update" / "Event: Margin Call" pages (-4059/-4067/-4068 for the mode switch,
liquidation orders as LIMIT IOC "autoclose-..." with `o` LIQUIDATION and `x` CALCULATED on the stream).
"""
from __future__ import annotations

from decimal import Decimal

import pytest

from aegis.venue.exchange import DEFAULT_API_KEY as KEY, Exchange, ExchangeConfig, VenueError
from tests.test_venue_exchange import StaticBook, err, kinds, order

D = Decimal


@pytest.fixture
def book():
    b = StaticBook()
    b.set("BTCUSDT", [(89999.9, 5.0), (89999.0, 5.0)], [(90000.0, 5.0), (90001.0, 5.0)], mark=90000.0)
    b.set("ETHUSDT", [(2999.99, 50.0)], [(3000.0, 50.0)])
    return b


def make(book, **cfg) -> Exchange:
    clock = iter(range(1_700_000_000_000, 1_800_000_000_000))
    e = Exchange(book, cfg=ExchangeConfig(**cfg), clock_ms=lambda: next(clock))
    e.events = []
    e.add_listener(KEY, e.events.append)
    return e


@pytest.fixture
def ex(book):
    return make(book)


def hedge(ex) -> Exchange:
    assert ex.set_position_mode(KEY, {"dualSidePosition": "true"}) == {"code": 200, "msg": "success"}
    ex.events.clear()
    return ex


def rows(ex, version=3, **p):
    return {(r["symbol"], r["positionSide"]): r for r in ex.position_risk(KEY, p, version)}


def usdt(ex) -> dict:
    return next(r for r in ex.balances(KEY) if r["asset"] == "USDT")


# ----------------------------------------------------------------------------------------------- hedge mode

def test_position_mode_switch_answers_4059_4067_4068_and_then_switches(ex, book):
    assert ex.position_mode(KEY, {}) == {"dualSidePosition": False}
    assert err(ex.set_position_mode, KEY, {"dualSidePosition": "false"}).code == -4059
    order(ex, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="80000")
    assert err(ex.set_position_mode, KEY, {"dualSidePosition": "true"}).code == -4067
    ex.cancel_all(KEY, {"symbol": "BTCUSDT"})
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert err(ex.set_position_mode, KEY, {"dualSidePosition": "true"}).code == -4068
    order(ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.01")
    hedge(ex)
    assert ex.position_mode(KEY, {}) == {"dualSidePosition": True}
    assert ex.account_config(KEY, {})["dualSidePosition"] is True
    assert err(ex.set_position_mode, KEY, {"dualSidePosition": "true"}).code == -4059


def test_a_conditional_order_also_blocks_the_mode_switch(ex):
    ex.algo.place(KEY, {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "BUY", "type": "STOP_MARKET",
                        "quantity": "0.01", "triggerPrice": "95000", "workingType": "MARK_PRICE"})
    assert err(ex.set_position_mode, KEY, {"dualSidePosition": "true"}).code == -4067


@pytest.mark.parametrize("extra, code", [({}, -4061), ({"positionSide": "BOTH"}, -4061),
                                         ({"positionSide": "LONG", "reduceOnly": "true"}, -1106),
                                         ({"positionSide": "LONG", "reduceOnly": "false"}, -1106),
                                         ({"positionSide": "SIDEWAYS"}, -1130)])
def test_hedge_mode_orders_name_long_or_short_and_never_reduce_only(ex, extra, code):
    hedge(ex)
    e = err(order, ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", **extra)
    assert e.code == code
    if code == -1106:
        assert e.msg == "Parameter 'reduceOnly' sent when not required."


def test_one_way_mode_refuses_long_and_short(ex):
    assert err(order, ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01",
               positionSide="LONG").code == -4061


def test_long_and_short_positions_live_side_by_side_and_close_separately(ex):
    hedge(ex)
    o = order(ex, symbol="BTCUSDT", side="BUY", positionSide="LONG", type="MARKET", quantity="0.010")
    assert o["positionSide"] == "LONG" and o["status"] == "FILLED"
    order(ex, symbol="BTCUSDT", side="SELL", positionSide="SHORT", type="MARKET", quantity="0.020")
    acc = ex.account(KEY)
    assert acc.positions["BTCUSDT", "LONG"].amt == D("0.010")
    assert acc.positions["BTCUSDT", "SHORT"].amt == D("-0.020")
    aus = [e for e in ex.events if e["e"] == "ACCOUNT_UPDATE"]
    assert [(e["a"]["P"][0]["ps"], e["a"]["P"][0]["pa"]) for e in aus] == [("LONG", "0.01"), ("SHORT", "-0.02")]
    otus = [e["o"] for e in ex.events if e["e"] == "ORDER_TRADE_UPDATE"]
    assert [o["ps"] for o in otus] == ["LONG", "LONG", "SHORT", "SHORT"] and not any(o["R"] for o in otus)
    # positionRisk lists a LONG and a SHORT row per symbol (v3 without a symbol: those with a position)
    assert list(rows(ex, 2, symbol="ETHUSDT")) == [("ETHUSDT", "LONG"), ("ETHUSDT", "SHORT")]
    v3 = rows(ex)
    assert set(v3) == {("BTCUSDT", "LONG"), ("BTCUSDT", "SHORT")}
    assert v3["BTCUSDT", "LONG"]["positionAmt"] == "0.01" and v3["BTCUSDT", "SHORT"]["positionAmt"] == "-0.02"
    assert v3["BTCUSDT", "SHORT"]["entryPrice"] == "89999.9"
    acct = ex.account_info(KEY)
    assert [(p["positionSide"], p["positionAmt"]) for p in acct["positions"]] == [("LONG", "0.01"), ("SHORT", "-0.02")]
    # closing more than the side holds, or a side that holds nothing, is a reduce-only reject
    assert err(order, ex, symbol="BTCUSDT", side="SELL", positionSide="LONG", type="MARKET",
               quantity="0.011").code == -2022
    assert err(order, ex, symbol="ETHUSDT", side="SELL", positionSide="LONG", type="MARKET",
               quantity="0.01").code == -2022
    ex.events.clear()
    c = order(ex, symbol="BTCUSDT", side="SELL", positionSide="LONG", type="MARKET", quantity="0.010")
    assert c["status"] == "FILLED" and c["reduceOnly"] is False
    assert acc.positions["BTCUSDT", "LONG"].amt == 0 and acc.positions["BTCUSDT", "SHORT"].amt == D("-0.020")
    trade = [e["o"] for e in ex.events if e["e"] == "ORDER_TRADE_UPDATE"][-1]
    assert trade["ps"] == "LONG" and trade["rp"] == "-0.00100000"       # 0.010 x (89999.9 - 90000)
    assert ex.user_trades(KEY, {"symbol": "BTCUSDT"})[-1]["positionSide"] == "LONG"
    assert ex.adl_quantile(KEY, {"symbol": "BTCUSDT"})[0]["adlQuantile"]["LONG"] == 0


def test_hedge_close_orders_need_no_margin_and_open_orders_of_the_other_side_do(book):
    ex = hedge(make(book, initial_balances={"USDT": "100", "USDC": "0"}))
    order(ex, symbol="BTCUSDT", side="BUY", positionSide="LONG", type="MARKET", quantity="0.020")  # IM 90
    assert err(order, ex, symbol="BTCUSDT", side="SELL", positionSide="SHORT", type="MARKET",
               quantity="0.020").code == -2019          # opening the SHORT side needs its own margin
    order(ex, symbol="BTCUSDT", side="SELL", positionSide="LONG", type="LIMIT", timeInForce="GTC",
          quantity="0.020", price="95000")            # closing the LONG side: no margin, rests
    assert ex.position_risk(KEY, {"symbol": "BTCUSDT"})[0]["openOrderInitialMargin"] == "0.00000000"


def test_resting_hedge_close_order_expires_when_its_side_is_closed(ex):
    hedge(ex)
    order(ex, symbol="BTCUSDT", side="BUY", positionSide="LONG", type="MARKET", quantity="0.010")
    r = order(ex, symbol="BTCUSDT", side="SELL", positionSide="LONG", type="LIMIT", timeInForce="GTC",
              quantity="0.010", price="95000")
    order(ex, symbol="BTCUSDT", side="SELL", positionSide="SHORT", type="MARKET", quantity="0.010")
    assert ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})["status"] == "NEW"
    amend = {"symbol": "BTCUSDT", "orderId": str(r["orderId"]), "side": "SELL", "price": "95000"}
    assert err(ex.modify_order, KEY, {**amend, "quantity": "0.011"}).code == -2022    # more than the LONG side
    assert ex.modify_order(KEY, {**amend, "quantity": "0.005"})["origQty"] == "0.005"
    order(ex, symbol="BTCUSDT", side="SELL", positionSide="LONG", type="MARKET", quantity="0.010")
    assert ex.query_order(KEY, {"symbol": "BTCUSDT", "orderId": str(r["orderId"])})["status"] == "EXPIRED"


def test_hedge_mode_stop_with_close_position_closes_only_its_side(ex, book):
    hedge(ex)
    order(ex, symbol="BTCUSDT", side="BUY", positionSide="LONG", type="MARKET", quantity="0.010")
    order(ex, symbol="BTCUSDT", side="SELL", positionSide="SHORT", type="MARKET", quantity="0.030")
    base = {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "type": "STOP_MARKET", "triggerPrice": "89000",
            "workingType": "MARK_PRICE", "closePosition": "true"}
    assert err(ex.algo.place, KEY, {**base, "side": "SELL"}).code == -4061
    assert err(ex.algo.place, KEY, {**base, "side": "BUY", "positionSide": "LONG"}).code == -2022
    assert err(ex.algo.place, KEY, {**base, "side": "SELL", "positionSide": "LONG", "closePosition": "false",
                                    "quantity": "0.01", "reduceOnly": "true"}).code == -1106
    a = ex.algo.place(KEY, {**base, "side": "SELL", "positionSide": "LONG"})
    assert a["positionSide"] == "LONG" and a["reduceOnly"] is False
    ex.events.clear()
    book.set("BTCUSDT", [(88990.0, 5.0)], [(88991.0, 5.0)], mark=88990.0)
    algo = [e["o"] for e in ex.events if e["e"] == "ALGO_UPDATE"]
    assert [x["X"] for x in algo] == ["TRIGGERING", "TRIGGERED", "FINISHED"] and {x["ps"] for x in algo} == {"LONG"}
    acc = ex.account(KEY)
    assert acc.positions["BTCUSDT", "LONG"].amt == 0 and acc.positions["BTCUSDT", "SHORT"].amt == D("-0.030")


# ----------------------------------------------------------------------------------------------- isolated margin

def test_isolated_position_holds_its_own_margin(ex, book):
    ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "10"})
    ex.set_margin_type(KEY, {"symbol": "BTCUSDT", "marginType": "ISOLATED"})
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")    # 9000 notional, fee 4.5
    au = [e for e in ex.events if e["e"] == "ACCOUNT_UPDATE"][-1]["a"]
    assert au["P"][0]["mt"] == "isolated" and au["P"][0]["iw"] == "900.00000000"
    assert au["B"][0]["wb"] == "9995.50000000" and au["B"][0]["cw"] == "9095.50000000"
    row = rows(ex, 2, symbol="BTCUSDT")["BTCUSDT", "BOTH"]
    assert (row["marginType"], row["isolatedWallet"], row["isolatedMargin"]) == ("isolated", "900.00000000",
                                                                                 "900.00000000")
    assert usdt(ex)["availableBalance"] == "9095.50000000"     # the isolated margin is not available
    # the mark falls 1000: the isolated position loses 100, the cross side does not see it
    book.set("BTCUSDT", [(88999.9, 5.0)], [(89000.0, 5.0)], mark=89000.0)
    b = usdt(ex)
    assert (b["crossWalletBalance"], b["crossUnPnl"], b["availableBalance"]) == ("9095.50000000", "0.00000000",
                                                                                 "9095.50000000")
    v3 = rows(ex, symbol="BTCUSDT")["BTCUSDT", "BOTH"]
    assert (v3["isolatedWallet"], v3["isolatedMargin"], v3["unRealizedProfit"]) == (
        "900.00000000", "800.00000000", "-100.00000000")
    acct = ex.account_info(KEY)
    assert acct["totalCrossWalletBalance"] == "9095.50000000" and acct["totalUnrealizedProfit"] == "-100.00000000"
    assert acct["totalMarginBalance"] == "9895.50000000"
    assert acct["positions"][0]["isolatedWallet"] == "900.00000000"
    # liquidation price: 900 + 0.1 (p - 90000) = 0.1 p 0.004  ->  p = 8100 / 0.0996
    assert D(v3["liquidationPrice"]) == (D(8100) / D("0.0996")).quantize(D("0.00000001"))
    # positionMargin moves cross <-> isolated
    ex.position_margin(KEY, {"symbol": "BTCUSDT", "amount": "100", "type": "1"})
    assert usdt(ex)["availableBalance"] == "8995.50000000"
    assert ex.events[-1]["a"]["m"] == "MARGIN_TRANSFER" and ex.events[-1]["a"]["P"][0]["iw"] == "1000.00000000"
    # may take out what stays above the initial margin (890 at the mark): 1000 - 100 - 890 = 10
    assert err(ex.position_margin, KEY, {"symbol": "BTCUSDT", "amount": "11", "type": "2"}).code == -4051
    ex.position_margin(KEY, {"symbol": "BTCUSDT", "amount": "10", "type": "2"})
    assert rows(ex, symbol="BTCUSDT")["BTCUSDT", "BOTH"]["isolatedWallet"] == "990.00000000"
    # closing half settles the PnL in the isolated wallet and releases half of it; closing the rest releases all
    order(ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.050")    # at 88999.9: rp -50.005
    assert rows(ex, symbol="BTCUSDT")["BTCUSDT", "BOTH"]["isolatedWallet"] == "469.99750000"
    order(ex, symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.050")
    b = usdt(ex)
    assert b["balance"] == b["crossWalletBalance"] == b["availableBalance"]
    income = sum(D(r["income"]) for r in ex.income_history(KEY, {}))
    assert D(b["balance"]) == 10000 + income


def test_funding_of_an_isolated_position_settles_in_its_wallet(ex, book):
    ex.set_margin_type(KEY, {"symbol": "BTCUSDT", "marginType": "ISOLATED"})
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")
    iw = ex.account(KEY).positions["BTCUSDT", "BOTH"].iso
    book.premium_index = lambda s: {"lastFundingRate": "0.0001", "markPrice": "90000"}
    ex.catalog = tuple(s for s in ex.catalog if s.symbol == "BTCUSDT")
    ex.events.clear()
    ex._settle_funding(1_700_000_000_000)
    assert ex.account(KEY).positions["BTCUSDT", "BOTH"].iso == iw - D("0.9")
    (ev,) = ex.events
    assert ev["a"]["m"] == "FUNDING_FEE" and ev["a"]["P"][0]["iw"] == format(iw - D("0.9"), ".8f")


# ----------------------------------------------------------------------------------------------- liquidation

def test_isolated_position_is_liquidated_below_maintenance_after_a_margin_call(ex, book):
    ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "50"})
    ex.set_margin_type(KEY, {"symbol": "BTCUSDT", "marginType": "ISOLATED"})
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")     # iso 180, fee 4.5
    order(ex, symbol="ETHUSDT", side="BUY", type="MARKET", quantity="1")         # a cross position stays
    rest = order(ex, symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.100",
                 price="95000")
    ex.events.clear()
    # at 88700 the margin is 180 - 130 = 50 against 35.48 maintenance: 71%, nothing happens
    book.set("BTCUSDT", [(88700.0, 5.0)], [(88700.1, 5.0)], mark=88700.0)
    ex.check_liquidations()
    assert ex.events == []
    # at 88600: 40 against 35.44 = 89%: one MARGIN_CALL, not repeated
    book.set("BTCUSDT", [(88600.0, 5.0)], [(88600.1, 5.0)], mark=88600.0)
    ex.check_liquidations()
    ex.check_liquidations()
    (mc,) = ex.events
    assert mc["e"] == "MARGIN_CALL" and "cw" not in mc
    assert mc["p"] == [{"s": "BTCUSDT", "ps": "BOTH", "pa": "0.1", "mt": "ISOLATED", "iw": "180.00000000",
                        "mp": "88600.00000000", "up": "-140.00000000", "mm": "35.44000000"}]
    ex.events.clear()
    wallet_before = ex.account(KEY).wallet["USDT"]
    # at 88500: 30 against 35.4: liquidated; the book bids 88500, above the bankruptcy price 88200
    book.set("BTCUSDT", [(88500.0, 5.0)], [(88500.1, 5.0)], mark=88500.0)
    ex.check_liquidations()
    assert kinds(ex.events) == [("ORDER_TRADE_UPDATE", "EXPIRED", "EXPIRED"), ("ORDER_TRADE_UPDATE", "NEW", "NEW"),
                                ("ACCOUNT_UPDATE",), ("ORDER_TRADE_UPDATE", "CALCULATED", "FILLED"),
                                ("ACCOUNT_UPDATE",)]
    expired, new, fill = (e["o"] for e in ex.events if e["e"] == "ORDER_TRADE_UPDATE")
    assert expired["i"] == rest["orderId"] and expired["er"] == "5"
    assert new["c"].startswith("autoclose-") and new["o"] == new["ot"] == "LIQUIDATION" and new["f"] == "IOC"
    assert (fill["L"], fill["l"], fill["rp"], fill["n"], fill["p"]) == ("88500.00", "0.100", "-150.00000000", "0",
                                                                        "88200.00")
    clear = ex.events[-1]["a"]
    assert clear["m"] == "INSURANCE_CLEAR" and clear["B"][0]["bc"] == "-30.00000000" and clear["P"] == []
    acc = ex.account(KEY)
    assert acc.positions["BTCUSDT", "BOTH"].amt == 0 and acc.positions["ETHUSDT", "BOTH"].amt == 1
    # the whole isolated margin (180) is gone, nothing more: 150 loss + 30 clearance
    assert acc.wallet["USDT"] == wallet_before - 180
    (fo,) = ex.force_orders(KEY, {"symbol": "BTCUSDT"})
    assert (fo["clientOrderId"], fo["type"], fo["timeInForce"], fo["status"], fo["side"]) == (
        new["c"], "LIMIT", "IOC", "FILLED", "SELL")
    assert (fo["price"], fo["avgPrice"], fo["executedQty"], fo["positionSide"]) == ("88200.00", "88500.00000", "0.100",
                                                                                    "BOTH")
    assert list(fo) == ["orderId", "symbol", "status", "clientOrderId", "price", "avgPrice", "origQty", "executedQty",
                        "cumQuote", "timeInForce", "type", "reduceOnly", "closePosition", "side", "positionSide",
                        "stopPrice", "workingType", "origType", "time", "updateTime"]
    assert ex.force_orders(KEY, {"autoCloseType": "ADL"}) == []
    assert ex.force_orders(KEY, {"symbol": "ETHUSDT"}) == []
    assert err(ex.force_orders, KEY, {"autoCloseType": "X"}).code == -1130
    ins = ex.income_history(KEY, {"incomeType": "INSURANCE_CLEAR"})
    assert [(r["symbol"], r["income"]) for r in ins] == [("BTCUSDT", "-30.00000000")]
    assert ex.query_order(KEY, {"symbol": "BTCUSDT", "origClientOrderId": new["c"]})["status"] == "FILLED"


def test_cross_liquidation_closes_every_cross_position_and_never_leaves_a_debt(book):
    ex = make(book, initial_balances={"USDT": "100", "USDC": "0"})
    ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "100"})
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")   # wallet 95.5 after the fee
    ex.events.clear()
    # the book gaps far below the bankruptcy price (90000 - 95.5 / 0.1 = 89045): the insurance fund takes the
    # position at 89045, the wallet ends at exactly 0
    book.set("BTCUSDT", [(85000.0, 5.0)], [(85000.1, 5.0)], mark=85000.0)
    ex.check_liquidations()
    fills = [e["o"] for e in ex.events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "CALCULATED"]
    assert [(f["L"], f["X"]) for f in fills] == [("89045.00", "FILLED")]
    assert ex.account(KEY).wallet["USDT"] == 0 and ex.account(KEY).positions["BTCUSDT", "BOTH"].amt == 0
    assert ex.income_history(KEY, {"incomeType": "INSURANCE_CLEAR"}) == []


def test_cross_liquidation_into_a_book_above_bankruptcy_pays_the_clearance_fee(book):
    ex = make(book, initial_balances={"USDT": "100", "USDC": "0"})
    ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "100"})
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")
    book.set("BTCUSDT", [(89050.0, 5.0)], [(89050.1, 5.0)], mark=89050.0)
    ex.check_liquidations()
    # realized 0.1 x -950 = -95; 0.5 left pays (part of) the 111.31 clearance fee
    assert [(r["incomeType"], r["income"]) for r in ex.income_history(KEY, {})][-2:] == [
        ("REALIZED_PNL", "-95.00000000"), ("INSURANCE_CLEAR", "-0.50000000")]
    assert ex.account(KEY).wallet["USDT"] == 0


def test_hedge_mode_liquidation_names_the_side(book):
    ex = hedge(make(book, initial_balances={"USDT": "100", "USDC": "0"}))
    ex.set_leverage(KEY, {"symbol": "BTCUSDT", "leverage": "100"})
    order(ex, symbol="BTCUSDT", side="SELL", positionSide="SHORT", type="MARKET", quantity="0.100")
    book.set("BTCUSDT", [(95000.0, 5.0)], [(95000.1, 5.0)], mark=95000.0)
    ex.check_liquidations()
    (fo,) = ex.force_orders(KEY, {})
    assert (fo["side"], fo["positionSide"]) == ("BUY", "SHORT")
    assert ex.account(KEY).positions["BTCUSDT", "SHORT"].amt == 0


def test_a_healthy_account_is_not_liquidated(ex, book):
    order(ex, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.100")
    book.set("BTCUSDT", [(60000.0, 5.0)], [(60000.1, 5.0)], mark=60000.0)     # -3000 on a 10000 wallet
    ex.check_liquidations()
    assert ex.account(KEY).positions["BTCUSDT", "BOTH"].amt == D("0.1") and ex.force_orders(KEY, {}) == []


# ----------------------------------------------------------------------------------------------- open interest

def test_open_interest_moves_exactly_with_the_accounts_positions(book):
    other = "second-key"
    ex = make(book, api_keys={KEY: "s1", other: "s2"})
    spec = ex.specs["BTCUSDT"]
    base = ex.base_open_interest(spec)
    assert base > 0

    def oi():
        return D(ex.open_interest({"symbol": "BTCUSDT"})["openInterest"]) - base

    def trade(key, side, qty):
        ex.place_order(key, {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": qty})

    assert oi() == 0
    trade(KEY, "BUY", "0.010")          # the generated market is short 0.010 against it
    assert oi() == D("0.010")
    trade(other, "SELL", "0.004")       # takes over part of the generator's short
    assert oi() == D("0.010")
    trade(other, "SELL", "0.010")       # now the accounts are net short 0.004
    assert oi() == D("0.014")
    trade(KEY, "SELL", "0.010")         # the long closes: only the short of 0.014 stays open
    assert oi() == D("0.014")
    trade(other, "BUY", "0.014")
    assert oi() == 0
