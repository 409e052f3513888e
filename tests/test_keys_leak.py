"""The API key and secret never appear in logs, stdout/stderr or the journal, even on error paths."""
import logging

import pytest

from aegis.binance import keys
from aegis.core.records import SIDE_BUY, SIDE_SELL
from aegis.venue import VenueConfig, start_venue

from tests.trade_rig import Rig, wait_for

pytestmark = [pytest.mark.time_limit(30), pytest.mark.usefixtures("compiled_order_path")]

KEY = "LEAKTESTKEY-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
SECRET = "LEAKTESTSECRET-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def test_secret_and_key_never_leak_into_logs_output_or_journal(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)          # urllib3, requests, websocket and our own modules at DEBUG
    with start_venue(VenueConfig(rate=50, api_keys={KEY: SECRET})) as v:
        r = Rig(v, keys.from_strings(KEY, SECRET), tmp_path / "j.jsonl",
                trade_cfg={"fsync": "always", "timeout_s": 0.3}).start()
        try:
            print(r.ts.keys, r.ts.client.keys.secret, repr(r.ts.client.keys))
            logging.getLogger("aegis.test").info("keys: %s %r", r.ts.keys.key, r.ts.keys.secret)
            r.market("BTCUSDT", SIDE_BUY, 0.002)                           # fill path
            assert r.wait_position("BTCUSDT", 0.002)
            r.book.restore_position("ETHUSDT", 1.0, 3000.0)
            r.order("ETHUSDT", SIDE_SELL, 0.5, r.below_bid("ETHUSDT", -0.01), ro=1)   # exchange reject path
            v.exchange.faults.fail_next(1, "unknown")                       # 503 + lookup path
            r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
            assert wait_for(lambda: r.ts.sender.rejects == 1 and r.ts.sender.acks >= 2, 10)
            r.ts.client.offset_ms -= 60_000                                 # -1021 resync path
            r.order("BTCUSDT", SIDE_BUY, 0.002, r.below_bid("BTCUSDT"))
            assert wait_for(lambda: r.ts.sender.acks >= 3, 10)
            r.ts.kill(flatten=True)
            assert r.wait_position("BTCUSDT", 0.0)
        finally:
            r.stop()
    out, err = capfd.readouterr()
    journal_text = (tmp_path / "j.jsonl").read_text()
    logs = "\n".join(f"{rec.getMessage()} {rec.exc_text or ''}" for rec in caplog.records)
    assert "Secret('***" in out                     # the print above really happened, masked
    assert "fill" in journal_text
    # the error paths above were logged (so their lines were searched below): the exchange's reject, the resync
    warned = "\n".join(rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING)
    assert "rejected by the exchange: -2022" in warned and "-1021 from the exchange" in warned, warned
    for name, text in (("stdout", out), ("stderr", err), ("logs", logs), ("journal", journal_text)):
        assert SECRET not in text, name
        assert KEY not in text, name
