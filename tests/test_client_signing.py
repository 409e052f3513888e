"""Request signing (API.md §4.2, §5.3) and the decimal wire format."""
import hashlib
import hmac
from urllib.parse import unquote

import pytest

from aegis.binance.keys import Secret
from aegis.binance.signing import (decimals_of, encode_params, hmac_hex, signed_query, to_units, units_to_str,
                           ws_signed_params)

DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_STRING = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000"
              "&timestamp=1591702613943")
DOC_SIG = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_signature_matches_the_documented_binance_example():
    assert hmac_hex(Secret(DOC_SECRET), DOC_STRING) == DOC_SIG


def test_signed_query_reproduces_the_documented_request_and_puts_signature_last():
    params = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"), ("price", "9000"),
              ("timeInForce", "GTC")]
    qs = signed_query(Secret(DOC_SECRET), params, 1591702613943, 5000)
    assert qs == DOC_STRING + "&signature=" + DOC_SIG


def test_non_ascii_symbol_is_percent_encoded_and_the_signature_covers_the_encoded_bytes():
    qs = signed_query(Secret("x"), {"symbol": "币安人生USDT"}, 1, None)
    body, sig = qs.rsplit("&signature=", 1)
    assert body.startswith("symbol=%E5%B8%81") and unquote(body.split("&")[0][7:]) == "币安人生USDT"
    assert sig == hmac.new(b"x", body.encode(), hashlib.sha256).hexdigest()


def test_booleans_are_sent_as_lowercase_words():
    assert encode_params({"reduceOnly": True}) == "reduceOnly=true"


def test_ws_signature_covers_sorted_params_including_api_key_with_raw_values():
    p = ws_signed_params(Secret("KEY"), Secret("SEC"), {"symbol": "币安人生USDT", "side": "BUY", "quantity": "1"},
                         1700000000000, 5000)
    payload = "apiKey=KEY&quantity=1&recvWindow=5000&side=BUY&symbol=币安人生USDT&timestamp=1700000000000"
    assert p["signature"] == hmac.new(b"SEC", payload.encode(), hashlib.sha256).hexdigest()
    assert p["apiKey"] == "KEY" and isinstance(p["timestamp"], int)


@pytest.mark.parametrize("units,unit,text", [(917399, "0.10", "91739.90"), (3, "0.001", "0.003"),
                                             (29, "0.001", "0.029"), (5, "1", "5"), (123, "0.00001000", "0.00123000"),
                                             (7, "1E-8", "0.00000007"), (0, "0.01", "0.00")])
def test_units_format_exactly_with_the_filter_decimals(units, unit, text):
    assert units_to_str(units, unit) == text


def test_float_noise_never_reaches_the_text():
    # the classic -1111: 0.03 - 0.001 in floats is 0.028999999999999998
    assert units_to_str(round((0.03 - 0.001) / 0.001), "0.001") == "0.029"


def test_decimals_of_filter_strings():
    assert [decimals_of(u) for u in ("0.10", "1", "0.001", "10", "1E-8")] == [2, 0, 3, 0, 8]


def test_to_units_rounds_in_decimal_in_the_requested_direction():
    assert to_units("91739.95", "0.10", "down") == 917399
    assert to_units("91739.95", "0.10", "up") == 917400
    assert to_units(0.1 + 0.2, "0.1", "nearest") == 3
