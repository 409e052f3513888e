"""Account endpoints of the venue a mainstream client calls: leverageBracket, marginType, positionSide/dual,
positionMargin, multiAssetsMargin, allOrders, income, forceOrders, adlQuantile, accountConfig, symbolConfig,
countdownCancelAll; funding reaching balances and income; a fresh balance's updateTime. Driven through the official
binance-futures-connector (it builds and signs every request itself). Shapes and error codes not in our reference
file follow Binance's public USD-M documentation (Account/Trade REST pages)."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

um_futures = pytest.importorskip("binance.um_futures", reason="needs binance-futures-connector (test extra)")
from binance.error import ClientError  # noqa: E402

from aegis.venue import VenueConfig, start_venue  # noqa: E402

KEY, SECRET = "aegis-test-key", "aegis-test-secret"


@pytest.fixture
def venue():
    # no funding: a settlement at an 8 h boundary would put income in the wallet that no trade accounts for
    with start_venue(VenueConfig(rate=200.0, seed=12, funding_interval_s=1e9)) as v:
        yield v


@pytest.fixture
def client(venue):
    return um_futures.UMFutures(key=KEY, secret=SECRET, base_url=venue.rest_url, timeout=5)


def error_code(fn, *a, **kw) -> int:
    with pytest.raises(ClientError) as e:
        fn(*a, **kw)
    return e.value.error_code


def test_fresh_balance_carries_the_account_creation_time(venue, client):
    rows = client.balance()
    assert rows and all(r["updateTime"] == venue.exchange.created_ms > 0 for r in rows)
    assert all(a["updateTime"] > 0 for a in client.account()["assets"])


def test_leverage_brackets(client):
    one = client.leverage_brackets(symbol="BTCUSDT")
    assert one["symbol"] == "BTCUSDT" and one["brackets"][0]["bracket"] == 1
    b = one["brackets"]
    assert b[0]["notionalFloor"] == 0 and all(x["notionalFloor"] == y["notionalCap"] for y, x in zip(b, b[1:]))
    # cum keeps the maintenance margin continuous at every tier boundary
    for lo, hi in zip(b, b[1:]):
        at = hi["notionalFloor"]
        assert abs(at * lo["maintMarginRatio"] - lo["cum"] - (at * hi["maintMarginRatio"] - hi["cum"])) < 1e-6
    assert len(client.leverage_brackets()) > 10


def test_margin_type_and_symbol_config(client):
    assert client.symbol_configuration(symbol="ETHUSDT")[0]["marginType"] == "CROSSED"
    assert client.change_margin_type(symbol="ETHUSDT", marginType="ISOLATED") == {"code": 200, "msg": "success"}
    assert client.symbol_configuration(symbol="ETHUSDT")[0]["marginType"] == "ISOLATED"
    assert error_code(client.change_margin_type, symbol="ETHUSDT", marginType="ISOLATED") == -4046
    client.new_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity=0.01)
    assert error_code(client.change_margin_type, symbol="ETHUSDT", marginType="CROSSED") == -4048
    r = client.modify_isolated_position_margin(symbol="ETHUSDT", amount=5, type=1)
    assert r["code"] == 200 and r["type"] == 1
    assert error_code(client.modify_isolated_position_margin, symbol="BTCUSDT", amount=5, type=1) == -4049


def test_position_mode_and_multi_assets(client):
    assert client.get_position_mode() == {"dualSidePosition": False}
    assert error_code(client.change_position_mode, dualSidePosition="false") == -4059
    assert client.get_multi_asset_mode() == {"multiAssetsMargin": False}
    assert client.change_multi_asset_mode(multiAssetsMargin="true") == {"code": 200, "msg": "success"}
    assert client.get_multi_asset_mode() == {"multiAssetsMargin": True}
    cfg = client.futures_account_configuration()
    assert cfg["multiAssetsMargin"] is True and cfg["dualSidePosition"] is False


def test_all_orders_income_adl_and_force_orders(venue, client):
    o1 = client.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.002, newOrderRespType="RESULT")
    bid = Decimal(client.book_ticker(symbol="BTCUSDT")["bidPrice"])
    o2 = client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=0.002,
                          price=str(bid - 1000))
    o3 = client.new_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.002, newOrderRespType="RESULT")
    rows = client.get_all_orders(symbol="BTCUSDT")
    assert [r["orderId"] for r in rows] == [o1["orderId"], o2["orderId"], o3["orderId"]]
    assert [r["status"] for r in rows] == ["FILLED", "NEW", "FILLED"] and "time" in rows[0]
    assert [r["orderId"] for r in client.get_all_orders(symbol="BTCUSDT", orderId=o2["orderId"])] == \
        [o2["orderId"], o3["orderId"]]
    income = client.get_income_history(symbol="BTCUSDT")
    kinds = [r["incomeType"] for r in income]
    assert kinds.count("COMMISSION") >= 2 and "REALIZED_PNL" in kinds
    trades = client.get_account_trades(symbol="BTCUSDT")
    assert sum(Decimal(r["income"]) for r in income) == \
        sum(Decimal(t["realizedPnl"]) - Decimal(t["commission"]) for t in trades)
    wallet = Decimal(client.balance()[0]["balance"])
    assert wallet == Decimal("10000") + sum(Decimal(r["income"]) for r in income)
    assert client.get_income_history(incomeType="COMMISSION", limit=1)[0]["incomeType"] == "COMMISSION"
    assert client.force_orders() == []
    assert client.adl_quantile() == []       # the position was closed
    client.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.002)
    (adl,) = client.adl_quantile()
    assert adl["symbol"] == "BTCUSDT" and 1 <= adl["adlQuantile"]["LONG"] <= 4


def test_countdown_cancel_all_is_a_dead_man_switch(venue, client):
    bid = Decimal(client.book_ticker(symbol="BTCUSDT")["bidPrice"])
    for i in range(2):
        client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=0.002,
                         price=str(bid - 1000 - i))
    assert client.countdown_cancel_order(symbol="BTCUSDT", countdownTime=1000) == {"symbol": "BTCUSDT",
                                                                                   "countdownTime": "1000"}
    # heartbeats keep it from firing: 1.6 s of them, each well inside the 1 s countdown
    for _ in range(8):
        time.sleep(0.2)
        last_beat = time.monotonic()
        client.countdown_cancel_order(symbol="BTCUSDT", countdownTime=1000)
    assert len(client.get_orders(symbol="BTCUSDT")) == 2
    assert venue.exchange.countdown_deadline(KEY, "BTCUSDT") is not None
    deadline = time.monotonic() + 5.0      # silence: the venue cancels, 1 s after the last heartbeat
    while client.get_orders(symbol="BTCUSDT") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get_orders(symbol="BTCUSDT") == []
    assert time.monotonic() - last_beat >= 0.95    # not before its countdown ran out
    assert {o["status"] for o in client.get_all_orders(symbol="BTCUSDT")} == {"CANCELED"}
    # 0 disarms
    client.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=0.002,
                     price=str(bid - 1000))
    client.countdown_cancel_order(symbol="BTCUSDT", countdownTime=1000)
    client.countdown_cancel_order(symbol="BTCUSDT", countdownTime=0)
    time.sleep(1.3)
    assert len(client.get_orders(symbol="BTCUSDT")) == 1
    assert error_code(client.sign_request, "POST", "/fapi/v1/countdownCancelAll", {"symbol": "BTCUSDT"}) == -1102


def test_funding_reaches_balance_income_and_the_user_stream():
    with start_venue(VenueConfig(rate=100.0, seed=3, funding_interval_s=0.5)) as v:
        c = um_futures.UMFutures(key=KEY, secret=SECRET, base_url=v.rest_url, timeout=5)
        events = []
        v.exchange.add_listener(KEY, events.append)
        c.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01)
        time.sleep(1.3)
        fees = c.get_income_history(incomeType="FUNDING_FEE")
        assert len(fees) >= 2
        rates = {r["fundingTime"]: r for r in c.funding_rate(symbol="BTCUSDT", limit=1000)}
        for f in fees:
            r = rates[f["time"]]
            # a long pays notional x a positive rate
            expect = -(Decimal("0.01") * Decimal(r["markPrice"]) * Decimal(r["fundingRate"]))
            assert Decimal(f["income"]) == expect.quantize(Decimal("0.00000001"))
        # funding keeps settling every 0.5 s: compare the wallet with an income history read between two
        # equal wallet readings, so no settlement falls between the reads
        for _ in range(10):
            before = Decimal(c.balance()[0]["balance"])
            income = c.get_income_history(limit=1000)
            wallet = Decimal(c.balance()[0]["balance"])
            if wallet == before:
                break
        assert wallet == Decimal("10000") + sum(Decimal(r["income"]) for r in income)
        ff = [e for e in events if e["e"] == "ACCOUNT_UPDATE" and e["a"]["m"] == "FUNDING_FEE"]
        assert len(ff) >= 2 and ff[0]["a"]["P"] == [] and ff[0]["a"]["B"][0]["a"] == "USDT"
