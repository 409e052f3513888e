"""The venue's own request authentication: API key, HMAC-SHA256 signature and the timestamp window.

Written from the server's side of docs/binance-notes.md (Request signing, Timing security) and deliberately independent
of any client signer: REST signs the raw bytes as received (query string, then body, no separator, minus the `signature`
pair), ws-fapi signs the params sorted by name. If both sides shared code, a bug in it would pass every test.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable, Mapping

from aegis.venue.exchange import VenueError

DEFAULT_RECV_WINDOW_MS = 5000
# undocumented, what client libraries state (docs/binance-notes.md, Timing security); configurable
MAX_RECV_WINDOW_MS = 60000


def key_format_invalid() -> VenueError:
    return VenueError(-2014, "API-key format invalid.", 401)


def key_rejected() -> VenueError:
    return VenueError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def bad_signature() -> VenueError:
    return VenueError(-1022, "Signature for this request is not valid.")


def strip_signature(raw: str) -> tuple[str, str | None]:
    """(raw string without its `signature=` pair, the signature value) — bytes kept exactly as sent otherwise."""
    if not raw:
        return raw, None
    parts = raw.split("&")
    sig = None
    kept = []
    for part in parts:
        if part.startswith("signature="):
            sig = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), sig


def _hmac_hex(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


class Authenticator:
    def __init__(self, keys: Mapping[str, str], clock_ms: Callable[[], int] | None = None,
                 max_recv_window_ms: int = MAX_RECV_WINDOW_MS):
        self._keys = dict(keys)
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.max_recv_window_ms = max_recv_window_ms

    def api_key(self, key: str | None) -> str:
        """The account key if it is configured; -2014 for a missing/garbled key, -2015 for an unknown one."""
        if not key or any(c.isspace() for c in key) or len(key) > 128:
            raise key_format_invalid()
        if key not in self._keys:
            raise key_rejected()
        return key

    def check_timestamp(self, params: Mapping[str, str]) -> None:
        raw_ts = params.get("timestamp")
        if raw_ts is None or raw_ts == "" or not str(raw_ts).lstrip("-").isdigit():
            raise VenueError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        raw_rw = params.get("recvWindow")
        if raw_rw is None or raw_rw == "":
            recv_window = DEFAULT_RECV_WINDOW_MS
        else:
            if not str(raw_rw).isdigit() or int(raw_rw) <= 0 or int(raw_rw) > self.max_recv_window_ms:
                raise VenueError(-1130, "Data sent for parameter 'recvWindow' is not valid.")
            recv_window = int(raw_rw)
        ts = int(raw_ts)
        server = self.clock_ms()
        # the documented server rule, verbatim: timestamp < serverTime + 1000 && serverTime - timestamp <= recvWindow
        if ts >= server + 1000:
            raise VenueError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - ts > recv_window:
            raise VenueError(-1021, "Timestamp for this request is outside of the recvWindow.")

    def check_matching_engine_window(self, params: Mapping[str, object]) -> None:
        """Second recvWindow check when an order reaches the matching engine (since 2023-04, docs/binance-notes.md,
        Timing security): an order delayed inside the venue past its window is rejected with -5028."""
        raw_ts = params.get("timestamp")
        if raw_ts is None or not str(raw_ts).isdigit():
            return
        raw_rw = params.get("recvWindow")
        rw = int(raw_rw) if raw_rw is not None and str(raw_rw).isdigit() else DEFAULT_RECV_WINDOW_MS
        if self.clock_ms() - int(raw_ts) > rw:
            raise VenueError(-5028, "Timestamp for this request is outside of the ME recvWindow.")

    def verify_rest(self, key: str, raw_query: str, body: bytes, params: Mapping[str, str]) -> None:
        """SIGNED REST request: HMAC over totalParams = query string + body as received, signature removed."""
        query, sig_q = strip_signature(raw_query)
        body_s = body.decode("latin-1") if body else ""
        body_s, sig_b = strip_signature(body_s)
        sig = sig_q if sig_q is not None else sig_b
        if not sig:
            raise bad_signature()
        payload = query.encode("latin-1") + body_s.encode("latin-1")
        if not hmac.compare_digest(_hmac_hex(self._keys[key], payload), sig.lower()):
            raise bad_signature()
        self.check_timestamp(params)

    def verify_ws(self, params: Mapping[str, object]) -> str:
        """ws-fapi signed request: payload = params except signature, sorted by name, `k=v` joined by `&`."""
        key = self.api_key(params.get("apiKey") if isinstance(params.get("apiKey"), str) else None)
        sig = params.get("signature")
        if not isinstance(sig, str) or not sig:
            raise bad_signature()
        payload = "&".join(f"{k}={ws_value(v)}" for k, v in sorted(params.items()) if k != "signature")
        if not hmac.compare_digest(_hmac_hex(self._keys[key], payload.encode("utf-8")), sig.lower()):
            raise bad_signature()
        self.check_timestamp({k: ws_value(v) for k, v in params.items()})
        return key


def ws_value(v: object) -> str:
    """A JSON param value as the signer wrote it in the payload (JSON booleans as true/false)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
