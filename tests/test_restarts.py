"""A crash loop stays within the venue's REST weight limit: the weight of the minute is carried across restarts
(X-MBX-USED-WEIGHT-1M into a small ledger file, aegis.binance.weight), so start-up requests wait for the next
minute instead of earning 429s and then a 418 IP ban."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from aegis.venue import VenueConfig, start_venue
from aegis.venue.ratelimit import RateLimitConfig

pytestmark = [pytest.mark.time_limit(600), pytest.mark.usefixtures("compiled_order_path")]

RESTARTS = int(os.environ.get("AEGIS_RESTARTS", "10"))
SYMBOLS = "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT"


def test_ten_restarts_in_a_minute_never_get_the_ip_banned(tmp_path):
    # a venue on a fixed address that outlives the runs, with a weight limit low enough that the restarts of one
    # minute would spend it several times over: each start takes 5 depth snapshots of weight 20 (100 > 120 / 2)
    limits = RateLimitConfig(weight_per_minute=120, requests_over_limit_before_ban=2, ban_s=120)
    with start_venue(VenueConfig(rate=200, rate_limits=limits)) as venue:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[feed]\nrest_url = "{venue.rest_url}"\nws_url = "{venue.ws_market_url}"\n')
        env = {**os.environ, "AEGIS_STATE_DIR": str(tmp_path / "state")}
        t0 = time.monotonic()
        outputs = []
        for i in range(RESTARTS):
            p = subprocess.run([sys.executable, "-m", "aegis", "--duration", "2", "--symbols", SYMBOLS,
                                "--config", str(cfg), "--out", str(tmp_path / "out"), "--status-interval", "5"],
                               capture_output=True, text=True, env=env, timeout=120)
            outputs.append(p.stdout + p.stderr)
            assert p.returncode == 0, f"run {i}: exit {p.returncode}\n{outputs[-1]}"
        took = time.monotonic() - t0
        text = "\n".join(outputs)
        assert "HTTP 418" not in text and "banned" not in text, text
        r = requests.get(venue.rest_url + "/fapi/v1/time", timeout=5)
        assert r.status_code == 200, (r.status_code, r.text)        # not banned now either
        print(f"{RESTARTS} restarts in {took:.0f}s; 429 answers seen: {text.count('HTTP 429')}")
        assert text.count("HTTP 429") == 0, text
