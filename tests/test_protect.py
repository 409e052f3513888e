"""aegis.trade.protect against the embedded venue over real REST: protective stops follow the position (placed,
re-placed when it changes, cancelled when it closes, adopted after a restart), the dead-man countdown is kept
armed and disarmed on an orderly stop, and the [trade] settings are validated."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from aegis.binance.client import Endpoints, BinanceClient
from aegis.core.config import ConfigError
from aegis.binance import keys
from aegis.trade.protect import PREFIX, Protector, parse_distance, stop_price
from aegis.trade.sender import TradeConfig
from aegis.venue import DEFAULT_API_KEY as KEY, DEFAULT_API_SECRET as SECRET, VenueConfig, start_venue

SYM = "DOTUSDT"
TICK = Decimal("0.001")


@pytest.fixture
def venue():
    with start_venue(VenueConfig(rate=300.0, seed=41)) as v:
        yield v


@pytest.fixture
def client(venue):
    c = BinanceClient(Endpoints("embedded", venue.rest_url, venue.ws_market_url, venue.ws_api_url),
                      keys.from_strings(KEY, SECRET))
    c.sync_time()
    yield c
    c.close()


def exchange_positions(venue):
    def read():
        return {r["symbol"]: (float(r["positionAmt"]), float(r["entryPrice"]))
                for r in venue.exchange.position_risk(KEY, {}, version=3)}
    return read


def stops(venue):
    return [o for o in venue.exchange.algo.open_orders(KEY, {"symbol": SYM}) if o["clientAlgoId"].startswith(PREFIX)]


def market(venue, side, qty):
    venue.exchange.place_order(KEY, {"symbol": SYM, "side": side, "type": "MARKET", "quantity": str(qty)})


def entry(venue) -> Decimal:
    return Decimal(venue.exchange.position_risk(KEY, {"symbol": SYM}, version=3)[0]["entryPrice"])


def test_parse_distance_and_config():
    assert parse_distance("1%") == pytest.approx(0.01) and parse_distance(0.02) == 0.02
    assert parse_distance(0) == 0.0 and parse_distance("off") == 0.0
    for bad in ("abc", "60%", -0.1, True):
        with pytest.raises(ValueError):
            parse_distance(bad)
    assert TradeConfig.from_section({"protect": "0.5%"}).protect == pytest.approx(0.005)
    assert TradeConfig.from_section({}).protect == 0.0 and TradeConfig.from_section({}).deadman is True
    with pytest.raises(ConfigError):
        TradeConfig.from_section({"protect": "lots"})
    with pytest.raises(ConfigError):
        TradeConfig.from_section({"deadman_s": 0})


def test_stop_price_rounds_away_from_the_market():
    assert stop_price(Decimal("2.5"), True, 0.01, TICK) == Decimal("2.475")
    assert stop_price(Decimal("2.5003"), True, 0.01, TICK) == Decimal("2.475")     # 2.475297 -> down
    assert stop_price(Decimal("2.5003"), False, 0.01, TICK) == Decimal("2.526")    # 2.525303 -> up


def test_stop_follows_the_position(venue, client):
    p = Protector(client, [SYM], {SYM: TICK}, exchange_positions(venue), distance=0.01)
    p.sync()
    assert stops(venue) == []                      # no position, no stop
    market(venue, "BUY", 10)
    p.sync()
    (s,) = stops(venue)
    assert s["side"] == "SELL" and s["closePosition"] and s["workingType"] == "MARK_PRICE"
    assert Decimal(s["triggerPrice"]) == stop_price(entry(venue), True, 0.01, TICK)
    p.sync()
    assert [x["algoId"] for x in stops(venue)] == [s["algoId"]]        # unchanged position: left alone
    venue.drive(SYM, +1)
    time.sleep(0.3)
    venue.drive(SYM, None)
    market(venue, "BUY", 10)                        # a new entry price
    p.sync()
    (s2,) = stops(venue)
    assert s2["algoId"] != s["algoId"] and Decimal(s2["triggerPrice"]) == stop_price(entry(venue), True, 0.01, TICK)
    market(venue, "SELL", 30)                       # flipped short
    p.sync()
    (s3,) = stops(venue)
    assert s3["side"] == "BUY" and Decimal(s3["triggerPrice"]) == stop_price(entry(venue), False, 0.01, TICK)
    market(venue, "BUY", 10)                        # closed
    p.sync()
    assert stops(venue) == [] and p.stats["failed"] == 0


def test_a_restarted_protector_adopts_the_stop_left_behind(venue, client):
    market(venue, "BUY", 10)
    first = Protector(client, [SYM], {SYM: TICK}, exchange_positions(venue), distance=0.01)
    first.sync()
    (s,) = stops(venue)
    second = Protector(client, [SYM], {SYM: TICK}, exchange_positions(venue), distance=0.01)
    second.adopt()
    second.sync()
    assert [x["algoId"] for x in stops(venue)] == [s["algoId"]] and second.stats["placed"] == 0


def test_a_triggered_stop_is_forgotten_and_the_closed_position_needs_none(venue, client):
    market(venue, "BUY", 10)
    p = Protector(client, [SYM], {SYM: TICK}, exchange_positions(venue), distance=0.004)
    p.sync()
    venue.drive(SYM, -1)
    end = time.monotonic() + 15
    while time.monotonic() < end and venue.exchange.position_risk(KEY, {"symbol": SYM}, version=3)[0][
            "positionAmt"] != "0":
        time.sleep(0.05)
    venue.drive(SYM, None)
    assert venue.exchange.position_risk(KEY, {"symbol": SYM}, version=3)[0]["positionAmt"] == "0"
    p.verify()
    p.sync()
    assert p.stops == {} and stops(venue) == []


def test_dead_man_heartbeat_arms_and_an_orderly_stop_disarms(venue, client):
    p = Protector(client, [SYM, "BTCUSDT"], {SYM: TICK, "BTCUSDT": Decimal("0.1")}, lambda: {}, deadman_s=0.8,
                  period_s=0.05, weight_budget=100_000).start()      # the venue here allows it: beat every 0.2 s
    try:
        first = venue.exchange.countdown_deadline(KEY, SYM)
        assert first is not None and venue.exchange.countdown_deadline(KEY, "BTCUSDT") is not None
        time.sleep(0.5)
        assert venue.exchange.countdown_deadline(KEY, SYM) > first        # re-armed every deadman_s / 4
    finally:
        p.stop()
    assert venue.exchange.countdown_deadline(KEY, SYM) is None and p.stats["heartbeat_failures"] == 0


def test_many_symbols_stretch_the_heartbeat_within_the_weight_budget(client):
    syms = [f"S{i}USDT" for i in range(120)]
    p = Protector(client, syms, {}, lambda: {}, deadman_s=120.0)
    # 120 symbols x 10 weight per beat within 600 weight a minute: one beat every 120 s, a 240 s countdown
    assert p.beat_s == 120.0 and p.deadman_s == 240.0
    q = Protector(client, syms[:4], {}, lambda: {}, deadman_s=120.0)
    assert q.beat_s == 30.0 and q.deadman_s == 120.0
