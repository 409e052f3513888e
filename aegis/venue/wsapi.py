"""ws-fapi trading API of the venue (Binance docs: "WebSocket API General Info"): order.place, order.cancel,
order.status, account views and userDataStream.* over one websocket at /ws-fapi/v1.

Same filters, errors and (shared) rate limits as REST; signatures use the sorted-params rule of §5.3. One request
is answered at a time per connection, in order, on the connection's handler thread.
"""
from __future__ import annotations

import time
from typing import Callable

import orjson

from aegis.venue.exchange import Exchange, VenueError
from aegis.venue.rest import services
from aegis.venue.server import WsPolicy
from aegis.venue.streams import market_endpoints

_BAD_JSON = VenueError(-1000, "Invalid JSON request.")


def _str_params(params: dict) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif v is None:
            continue
        else:
            out[k] = str(v)
    return out


class WsApiService:
    def __init__(self, exchange: Exchange, cfg=None):
        self.exchange = exchange
        svc = services(exchange, cfg)
        self.auth = svc.auth
        self.limiter = svc.limiter
        ex = exchange
        self.market_data = self._market_data_methods(exchange.market)
        # method -> (weight, signed, counts_order, fn(account_key, params) -> result)
        self.methods: dict[str, tuple[int, bool, bool, Callable]] = {
            "order.place": (0, True, True, ex.place_order),
            "order.cancel": (1, True, False, ex.cancel_order),
            "order.modify": (1, True, True, ex.modify_order),
            "order.status": (1, True, False, ex.query_order),
            "algoOrder.place": (0, True, True, ex.algo.place),
            "algoOrder.cancel": (1, True, False, ex.algo.cancel),
            "account.position": (5, True, False, lambda k, p: ex.position_risk(k, p, version=3)),
            "v2/account.position": (5, True, False, lambda k, p: ex.position_risk(k, p, version=3)),
            "account.status": (5, True, False, lambda k, p: ex.account_info(k, version=3)),
            "v2/account.status": (5, True, False, lambda k, p: ex.account_info(k, version=3)),
            "account.balance": (5, True, False, lambda k, p: ex.balances(k)),
            "v2/account.balance": (5, True, False, lambda k, p: ex.balances(k)),
            "userDataStream.start": (1, False, False, lambda k, p: {"listenKey": ex.listen_key_create(k)}),
            "userDataStream.ping": (1, False, False, lambda k, p: {"listenKey": ex.listen_key_keepalive(k)}),
            "userDataStream.stop": (1, False, False, lambda k, p: ex.listen_key_delete(k) or {}),
        }

    @staticmethod
    def _market_data_methods(market) -> dict[str, tuple[Callable, Callable]]:
        """depth, ticker.price and ticker.book: the REST market-data endpoints' weights, checks and results."""
        if market is None or not hasattr(market, "index"):
            return {}
        by_path = {ep.path: ep for ep in market_endpoints(market)}

        def call(path):
            ep = by_path[path]

            def fn(p):
                status, body = ep.handler(p)
                if status != 200:
                    raise VenueError(body["code"], body["msg"], status)
                return body
            return ep.weight, fn
        return {"depth": call("/fapi/v1/depth"), "ticker.price": call("/fapi/v2/ticker/price"),
                "ticker.book": call("/fapi/v1/ticker/bookTicker")}

    def handle(self, ws, req) -> None:
        return_limits = "returnRateLimits=false" not in (req.query or "")
        try:
            self.limiter.charge_weight(req.client_ip, 5)     # "WebSocket handshake attempt costs 5 weight"
        except VenueError as e:
            ws.send_text(orjson.dumps({"id": None, "status": e.http_status,
                                       "error": {"code": e.code, "msg": e.msg}}))
            ws.close(1008, "rate limited")
            return
        while not ws.closed:
            msg = ws.recv(timeout=0.2)
            if msg is None:
                continue
            ws.send_text(self.answer(msg[1], req.client_ip, return_limits))

    def answer(self, payload: bytes, client_ip: str, return_limits: bool = True) -> bytes:
        rid = None
        key = None
        try:
            try:
                req = orjson.loads(payload)
                if not isinstance(req, dict):
                    raise _BAD_JSON
            except orjson.JSONDecodeError:
                raise _BAD_JSON from None
            rid = req.get("id")
            method = req.get("method")
            params = req.get("params") or {}
            if not isinstance(params, dict):
                raise VenueError(-1102, "Mandatory parameter 'params' was not sent, was empty/null, or malformed.")
            if "returnRateLimits" in params:     # a signed param like any other; not an order field
                return_limits = params["returnRateLimits"] not in (False, "false")
            public = self.market_data.get(method) if isinstance(method, str) else None
            if public is not None:          # market data: no key, no signature
                weight_of, fn = public
                sparams = _str_params(params)
                self.limiter.charge_weight(client_ip, weight_of(sparams))
                out = {"id": rid, "status": 200, "result": fn(sparams)}
                if return_limits:
                    out["rateLimits"] = self.limiter.rate_limits_status(client_ip, None)
                return orjson.dumps(out)
            spec = self.methods.get(method) if isinstance(method, str) else None
            if spec is None:
                raise VenueError(-1102, "Mandatory parameter 'method' was not sent, was empty/null, or malformed.")
            weight, signed, counts_order, fn = spec
            self.limiter.charge_weight(client_ip, weight)
            if signed:
                key = self.auth.verify_ws(params)
            else:
                key = self.auth.api_key(params.get("apiKey") if isinstance(params.get("apiKey"), str) else None)
            sparams = _str_params({k: v for k, v in params.items()
                                   if k not in ("apiKey", "signature", "returnRateLimits")})
            if counts_order:
                self.limiter.charge_order(key)
                delay, execute, fault = self.exchange.faults.take()
                if delay:
                    time.sleep(delay)
                    if execute:
                        self.auth.check_matching_engine_window(params)
                result = fn(key, sparams) if execute else None
                if fault is not None:
                    raise fault
            else:
                result = fn(key, sparams)
            out = {"id": rid, "status": 200, "result": result}
        except VenueError as e:
            out = {"id": rid, "status": e.http_status, "error": {"code": e.code, "msg": e.msg}}
        if return_limits:
            out["rateLimits"] = self.limiter.rate_limits_status(client_ip, key)
        return orjson.dumps(out)


# Largest request frame accepted; a bigger one closes the connection with 1009. Binance documents no number for
# ws-fapi; clients report a 4096-byte cap on Binance websocket requests, and no single request here comes near it.
MAX_REQUEST_BYTES = 4096


def install(router, exchange: Exchange, cfg=None) -> WsApiService:
    svc = WsApiService(exchange, cfg)
    policy = WsPolicy(ping_interval_s=getattr(cfg, "ping_interval_s", 180.0),
                      pong_timeout_s=getattr(cfg, "pong_timeout_s", 600.0),
                      lifetime_s=getattr(cfg, "conn_lifetime_s", 86400.0),
                      max_message_bytes=getattr(cfg, "ws_api_max_request_bytes", MAX_REQUEST_BYTES))
    router.add_ws("/ws-fapi/v1", svc.handle, policy)
    return svc
