"""The exchange against the venue's real moving market: resting orders fill as the generator crosses them, and the
user-data events alone reconstruct the account exactly (what a client's reconciliation relies on)."""
from __future__ import annotations

import time
from decimal import Decimal

from aegis.venue import VenueConfig, start_venue
from aegis.venue.exchange import DEFAULT_API_KEY as KEY, VenueError


def test_events_reconstruct_wallet_and_position_while_the_market_moves():
    # no funding: a settlement at an 8 h boundary would move the wallet with no trade behind it
    with start_venue(VenueConfig(rate=3000.0, seed=21, catalog=None, funding_interval_s=1e9)) as v:
        ex = v.exchange
        events = []
        ex.add_listener(KEY, events.append)
        deadline = time.monotonic() + 2.0
        n = 0
        while time.monotonic() < deadline:
            bid, _, ask, _ = v.market.best("ETHUSDT")
            side = "BUY" if n % 2 == 0 else "SELL"
            # quotes at the touch: the next moves of the generator cross some of them
            px = f"{(bid if side == 'BUY' else ask):.2f}"
            try:
                ex.place_order(KEY, dict(symbol="ETHUSDT", side=side, type="LIMIT", timeInForce="GTC",
                                         quantity="0.050", price=px))
                if n % 7 == 0:
                    ex.place_order(KEY, dict(symbol="ETHUSDT", side=side, type="MARKET", quantity="0.020"))
            except VenueError as e:
                assert e.code in (-2019, -4016, -4024, -2025), e
            n += 1
            time.sleep(0.01)
        ex.cancel_all(KEY, {"symbol": "ETHUSDT"})
        with ex.lock:
            acc = ex.account(KEY)
            wallet, pos = acc.wallet["USDT"], acc.positions["ETHUSDT", "BOTH"].amt
    trades = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    makers = [t for t in trades if t["m"]]
    assert len(trades) > 10 and makers, "the moving market should have crossed some resting quotes"
    signed = sum(Decimal(t["l"]) * (1 if t["S"] == "BUY" else -1) for t in trades)
    realized = sum(Decimal(t["rp"]) for t in trades)
    fees = sum(Decimal(t["n"]) for t in trades)
    assert signed == pos
    assert Decimal(10000) + realized - fees == wallet
    last_au = [e for e in events if e["e"] == "ACCOUNT_UPDATE"][-1]["a"]
    assert Decimal(last_au["B"][0]["wb"]) == wallet and Decimal(last_au["P"][0]["pa"]) == pos
    # every order ends in exactly one final state and fills never exceed the order
    final = {}
    for e in events:
        if e["e"] == "ORDER_TRADE_UPDATE":
            o = e["o"]
            assert Decimal(o["z"]) <= Decimal(o["q"])
            if o["X"] in ("FILLED", "CANCELED", "EXPIRED"):
                assert o["i"] not in final, o
                final[o["i"]] = o["X"]
