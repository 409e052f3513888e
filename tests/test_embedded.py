"""The embedded venue as the supervisor starts it: below the engine's priority, reporting start-up progress."""
from __future__ import annotations

import os

import pytest

from aegis.app import embedded

pytestmark = pytest.mark.time_limit(300)


def test_the_embedded_venue_runs_below_the_engines_priority_once_started_and_reports_progress():
    seen = []
    venue = embedded.start({"rate": 100.0}, lambda text, n: seen.append((text, n)))
    try:
        # every thread of it, the ones it started before it lowered itself too (Linux keeps nice per thread)
        tids = os.listdir(f"/proc/{venue.process.pid}/task")
        assert len(tids) > 1
        for tid in tids:
            with open(f"/proc/{venue.process.pid}/task/{tid}/stat") as f:
                nice = int(f.read().rsplit(")", 1)[1].split()[16])
            assert nice == min(19, os.nice(0) + embedded.VENUE_NICE), tid
        assert venue.rest_url.startswith("http://127.0.0.1:")
    finally:
        venue.stop()
    # progress arrives only for what is compiled (nothing when the cache is warm); each report names a function
    assert all(text.startswith("compiling") and n >= 0 for text, n in seen)


def test_raised_venue_limits_reach_exchange_info_and_the_engines_risk_limits():
    # [venue] orders_per_10s / orders_per_minute -> the venue's exchangeInfo rateLimits -> risk's ORDERS limits:
    # the config path to hundreds of orders per second (README, Trading)
    import json
    import urllib.request

    from aegis.trade import risk
    venue = embedded.start({"rate": 100.0, "orders_per_10s": 20000, "orders_per_minute": 60000,
                            "weight_per_minute": 1000000})
    try:
        with urllib.request.urlopen(venue.rest_url + "/fapi/v1/exchangeInfo", timeout=10) as r:
            info = json.load(r)
    finally:
        venue.stop()
    limits = {(x["rateLimitType"], x["interval"], x["intervalNum"]): x["limit"] for x in info["rateLimits"]}
    assert limits[("REQUEST_WEIGHT", "MINUTE", 1)] == 1000000
    listed = risk.exchange_order_limits(info)
    assert listed == (20000, 60000)
    book = risk.RiskBook(risk.RiskConfig(orders_per_second=1000), [risk.SymbolRules("BTCUSDT")], exchange_limits=listed)
    assert book.order_limits == (20000, 60000)
