"""HMAC-SHA256 request signing for Binance USD-M (API.md §4.2 REST, §5.3 ws-fapi), and the decimal wire format.

REST: the signature covers exactly the bytes sent (the query string, percent-encoded as sent) and is appended
last as `&signature=<hex>`. ws-fapi: the signature covers every param except `signature`, sorted by name,
`k=v` joined with `&`, raw (not percent-encoded) values, and includes `apiKey` and `timestamp`.

Numbers on the wire are decimal strings built from integer ticks/steps and the filter's own string
(`units_to_str(1234, "0.10") -> "123.40"`): never `repr(float)` (API.md §7.8: `0.02999999999999` -> -1111).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from decimal import Decimal
from functools import lru_cache
from urllib.parse import quote

from aegis.binance.keys import Secret

# characters Binance sends unescaped in query strings (and what `requests` would leave alone)
_SAFE = "-_.~"
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*\Z")   # values that percent-encoding leaves unchanged (the common case)


def hmac_hex(secret: Secret, payload: str | bytes) -> str:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(secret.reveal().encode("utf-8"), data, hashlib.sha256).hexdigest()


def encode_params(params) -> str:
    """`k=v&...` in the given order, values percent-encoded as UTF-8 (non-ASCII symbols, API.md §4.1)."""
    parts = []
    for k, v in (params.items() if isinstance(params, dict) else params):
        if isinstance(v, bool):
            v = "true" if v else "false"
        v = str(v)
        parts.append(f"{k}={v}" if _PLAIN.match(v) else f"{k}={quote(v, safe=_SAFE)}")
    return "&".join(parts)


def signed_query(secret: Secret, params, timestamp_ms: int, recv_window_ms: int | None = None) -> str:
    """The full query string to send: params, recvWindow, timestamp, then the signature of all that."""
    items = list(params.items() if isinstance(params, dict) else params)
    if recv_window_ms is not None:
        items.append(("recvWindow", int(recv_window_ms)))
    items.append(("timestamp", int(timestamp_ms)))
    qs = encode_params(items)
    return f"{qs}&signature={hmac_hex(secret, qs)}"


def ws_signed_params(api_key: Secret, secret: Secret, params: dict, timestamp_ms: int,
                     recv_window_ms: int | None = None) -> dict:
    """ws-fapi params with apiKey, timestamp and signature (sorted-params rule, raw values)."""
    p = dict(params)
    p["apiKey"] = api_key.reveal()
    p["timestamp"] = int(timestamp_ms)
    if recv_window_ms is not None:
        p["recvWindow"] = int(recv_window_ms)
    payload = "&".join(f"{k}={_raw(p[k])}" for k in sorted(p))
    p["signature"] = hmac_hex(secret, payload)
    return p


def _raw(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def decimals_of(unit: str) -> int:
    """Decimal places of a filter string: "0.10" -> 2, "1" -> 0, "0.001" -> 3, "1E-8" -> 8."""
    exp = Decimal(unit).normalize().as_tuple().exponent
    text_dec = len(unit.split(".", 1)[1]) if "." in unit and "e" not in unit.lower() else 0
    return max(text_dec, -exp if exp < 0 else 0)


@lru_cache(maxsize=4096)
def _unit_parts(unit: str) -> tuple[int, int]:
    """unit = mantissa / 10**decimals, both integers ("0.10" -> (10, 2), "1E-8" -> (1, 8), "10" -> (10, 0))."""
    d = decimals_of(unit)
    m = Decimal(unit).scaleb(d)
    if m != m.to_integral_value():
        raise ValueError(f"filter value {unit!r} has more digits than its decimals")
    return int(m), d


def units_to_str(units: int, unit: str) -> str:
    """Exact decimal text of `units * unit`, with the unit's number of decimals (how Binance writes it).
    Integer arithmetic only (this runs on every order): no float, no Decimal on the hot path."""
    m, d = _unit_parts(unit)
    n = int(units) * m
    if d == 0:
        return str(n)
    sign = "-" if n < 0 else ""
    q, r = divmod(abs(n), 10 ** d)
    return f"{sign}{q}.{r:0{d}d}"


def to_units(value: str | float, unit: str, rounding: str = "down") -> int:
    """How many whole `unit`s fit in `value` (decimal arithmetic): 'down', 'up' or 'nearest'."""
    q = Decimal(str(value)) / Decimal(unit)
    if rounding == "down":
        return int(q.to_integral_value(rounding="ROUND_FLOOR"))
    if rounding == "up":
        return int(q.to_integral_value(rounding="ROUND_CEILING"))
    return int(q.to_integral_value(rounding="ROUND_HALF_EVEN"))
