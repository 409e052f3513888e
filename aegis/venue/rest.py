"""REST half of the venue: /fapi/v1/ping|time|exchangeInfo, orders, account views and listenKey endpoints.

Every request goes through the same pipeline as on Binance: IP weight (429/418), API key (-2014/-2015), signature and
timestamp for SIGNED endpoints (-1022/-1021), order-count limits (-1015) for new orders, then the exchange. Replies
are compact JSON with string numbers; every reply carries X-MBX-USED-WEIGHT-1M, accepted orders also
X-MBX-ORDER-COUNT-10S/-1M. Parameters come from the query string and/or a form body; the query string wins.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import parse_qsl

import orjson

from aegis.venue.auth import Authenticator, MAX_RECV_WINDOW_MS
from aegis.venue.catalog import margin_assets, symbol_json
from aegis.venue.exchange import Exchange, VenueError
from aegis.venue.marketdata import ParamError, historical_trades
from aegis.venue.ratelimit import RateLimitConfig, RateLimiter
from aegis.venue.server import Request, Response

NONE, USER_STREAM, MARKET_DATA, SIGNED = "NONE", "USER_STREAM", "MARKET_DATA", "SIGNED"  # the middle two: key only


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    security: str
    weight: Callable[[Mapping[str, str]], int]
    handler: Callable[[str | None, Mapping[str, str]], object]
    counts_order: bool = False


class Services:
    """Authentication and rate limits shared by REST and ws-fapi (Binance shares the limits between them)."""

    def __init__(self, exchange: Exchange, cfg=None):
        rl = getattr(cfg, "rate_limits", None)
        self.limits_cfg = rl if isinstance(rl, RateLimitConfig) else RateLimitConfig()
        self.limiter = RateLimiter(self.limits_cfg)
        self.auth = Authenticator(exchange.cfg.api_keys, clock_ms=exchange.clock_ms,
                                  max_recv_window_ms=getattr(cfg, "max_recv_window_ms", MAX_RECV_WINDOW_MS))


_SERVICES: "weakref.WeakKeyDictionary[Exchange, Services]" = weakref.WeakKeyDictionary()


def services(exchange: Exchange, cfg=None) -> Services:
    """The one Services object of an exchange (created by whichever install() runs first)."""
    svc = _SERVICES.get(exchange)
    if svc is None:
        svc = _SERVICES[exchange] = Services(exchange, cfg)
    return svc


def parse_params(query: str, body: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    if body:
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if query:
        # the server hands the query over latin-1 decoded (bytes intact); unencoded UTF-8 must come back as UTF-8
        params.update(parse_qsl(query.encode("latin-1", "replace").decode("utf-8", "replace"),
                                keep_blank_values=True))
    return params


def _plain(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def error_body(e: VenueError) -> bytes:
    return orjson.dumps({"code": e.code, "msg": e.msg})


class RestApi:
    def __init__(self, exchange: Exchange, market=None, cfg=None):
        self.exchange = exchange
        self.market = market
        svc = services(exchange, cfg)
        self.auth = svc.auth
        self.limiter = svc.limiter
        self.limits_cfg = svc.limits_cfg
        self._info_tail = self._build_info_tail()
        ex = exchange
        one = lambda p: 1
        self.endpoints = [
            Endpoint("GET", "/fapi/v1/ping", NONE, one, lambda k, p: {}),
            Endpoint("GET", "/fapi/v1/time", NONE, one, lambda k, p: {"serverTime": ex.clock_ms()}),
            Endpoint("GET", "/fapi/v1/exchangeInfo", NONE, one, self._exchange_info),
            Endpoint("POST", "/fapi/v1/order", SIGNED, lambda p: 0, ex.place_order, counts_order=True),
            Endpoint("POST", "/fapi/v1/order/test", SIGNED, one, ex.test_order),
            Endpoint("DELETE", "/fapi/v1/order", SIGNED, one, ex.cancel_order),
            Endpoint("PUT", "/fapi/v1/order", SIGNED, lambda p: 1, ex.modify_order, counts_order=True),
            Endpoint("POST", "/fapi/v1/batchOrders", SIGNED, lambda p: 5, self._batch_place, counts_order=True),
            Endpoint("DELETE", "/fapi/v1/batchOrders", SIGNED, one, self._batch_cancel),
            Endpoint("POST", "/fapi/v1/leverage", SIGNED, one, ex.set_leverage),
            Endpoint("GET", "/fapi/v1/commissionRate", SIGNED, lambda p: 20, ex.commission_rate),
            Endpoint("GET", "/fapi/v1/userTrades", SIGNED, lambda p: 5, ex.user_trades),
            Endpoint("GET", "/fapi/v1/order", SIGNED, one, ex.query_order),
            Endpoint("GET", "/fapi/v1/openOrder", SIGNED, one, ex.query_open_order),
            Endpoint("DELETE", "/fapi/v1/allOpenOrders", SIGNED, one, ex.cancel_all),
            Endpoint("GET", "/fapi/v1/openOrders", SIGNED, lambda p: 1 if p.get("symbol") else 40, ex.open_orders),
            Endpoint("GET", "/fapi/v2/positionRisk", SIGNED, lambda p: 10,
                     lambda k, p: ex.position_risk(k, p, version=2)),
            Endpoint("GET", "/fapi/v3/positionRisk", SIGNED, lambda p: 5,
                     lambda k, p: ex.position_risk(k, p, version=3)),
            Endpoint("GET", "/fapi/v2/account", SIGNED, lambda p: 10, lambda k, p: ex.account_info(k, version=2)),
            Endpoint("GET", "/fapi/v3/account", SIGNED, lambda p: 5, lambda k, p: ex.account_info(k, version=3)),
            Endpoint("GET", "/fapi/v2/balance", SIGNED, lambda p: 5, lambda k, p: ex.balances(k)),
            Endpoint("GET", "/fapi/v3/balance", SIGNED, lambda p: 5, lambda k, p: ex.balances(k)),
            Endpoint("GET", "/fapi/v1/rateLimit/order", SIGNED, one, lambda k, p: self._order_limits()),
            Endpoint("GET", "/fapi/v1/historicalTrades", MARKET_DATA, lambda p: 20, self._historical_trades),
            Endpoint("GET", "/fapi/v1/fundingRate", NONE, one, lambda k, p: ex.funding_rates(p)),
            Endpoint("GET", "/fapi/v1/openInterest", NONE, one, lambda k, p: ex.open_interest(p)),
            Endpoint("GET", "/fapi/v1/leverageBracket", SIGNED, one, ex.leverage_brackets),
            Endpoint("POST", "/fapi/v1/marginType", SIGNED, one, ex.set_margin_type),
            Endpoint("GET", "/fapi/v1/positionSide/dual", SIGNED, lambda p: 30, ex.position_mode),
            Endpoint("POST", "/fapi/v1/positionSide/dual", SIGNED, one, ex.set_position_mode),
            Endpoint("POST", "/fapi/v1/positionMargin", SIGNED, one, ex.position_margin),
            Endpoint("GET", "/fapi/v1/multiAssetsMargin", SIGNED, lambda p: 30, ex.multi_assets_mode),
            Endpoint("POST", "/fapi/v1/multiAssetsMargin", SIGNED, one, ex.set_multi_assets_mode),
            Endpoint("GET", "/fapi/v1/allOrders", SIGNED, lambda p: 5, ex.all_orders),
            Endpoint("GET", "/fapi/v1/income", SIGNED, lambda p: 30, ex.income_history),
            Endpoint("GET", "/fapi/v1/forceOrders", SIGNED, lambda p: 20 if p.get("symbol") else 50, ex.force_orders),
            Endpoint("GET", "/fapi/v1/adlQuantile", SIGNED, lambda p: 5, ex.adl_quantile),
            Endpoint("GET", "/fapi/v1/accountConfig", SIGNED, lambda p: 5, ex.account_config),
            Endpoint("GET", "/fapi/v1/symbolConfig", SIGNED, lambda p: 5, ex.symbol_config),
            Endpoint("POST", "/fapi/v1/countdownCancelAll", SIGNED, lambda p: 10, ex.countdown_cancel_all),
            Endpoint("POST", "/fapi/v1/algoOrder", SIGNED, lambda p: 0, ex.algo.place, counts_order=True),
            Endpoint("DELETE", "/fapi/v1/algoOrder", SIGNED, one, ex.algo.cancel),
            Endpoint("GET", "/fapi/v1/algoOrder", SIGNED, one, ex.algo.query),
            Endpoint("GET", "/fapi/v1/openAlgoOrders", SIGNED, lambda p: 1 if p.get("symbol") else 40,
                     ex.algo.open_orders),
            Endpoint("GET", "/fapi/v1/allAlgoOrders", SIGNED, lambda p: 5, ex.algo.all_orders),
            Endpoint("DELETE", "/fapi/v1/algoOpenOrders", SIGNED, one, ex.algo.cancel_all),
            Endpoint("POST", "/fapi/v1/listenKey", USER_STREAM, one,
                     lambda k, p: {"listenKey": ex.listen_key_create(k)}),
            Endpoint("PUT", "/fapi/v1/listenKey", USER_STREAM, one,
                     lambda k, p: {"listenKey": ex.listen_key_keepalive(k, p.get("listenKey") or None)}),
            Endpoint("DELETE", "/fapi/v1/listenKey", USER_STREAM, one,
                     lambda k, p: ex.listen_key_delete(k, p.get("listenKey") or None) or {}),
        ]

    def install(self, router) -> None:
        for ep in self.endpoints:
            router.add_http(ep.method, ep.path, self._bind(ep))
        router.unmatched_headers = lambda req: {"X-MBX-USED-WEIGHT-1M": str(self.limiter.used_weight(req.client_ip))}

    def _bind(self, ep: Endpoint) -> Callable[[Request], Response]:
        return lambda req: self.handle(ep, req)

    def handle(self, ep: Endpoint, req: Request) -> Response:
        headers: dict[str, str] = {}
        try:
            params = parse_params(req.query, req.body)
            used = self.limiter.charge_weight(req.client_ip, ep.weight(params))
            headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            key = None
            if ep.security != NONE:
                key = self.auth.api_key(req.headers.get("x-mbx-apikey"))
                if ep.security == SIGNED:
                    self.auth.verify_rest(key, req.query, req.body, params)
            if ep.counts_order:
                body = self._new_order(ep, key, params, headers)
            else:
                body = ep.handler(key, params)
            if isinstance(body, (bytes, bytearray)):
                return Response(200, bytes(body), headers)
            return Response(200, orjson.dumps(body), headers)
        except VenueError as e:
            for k, v in e.headers.items():
                headers[k] = v
            if "X-MBX-USED-WEIGHT-1M" not in headers:
                headers["X-MBX-USED-WEIGHT-1M"] = str(self.limiter.used_weight(req.client_ip))
            return Response(e.http_status, error_body(e), headers)

    def _new_order(self, ep: Endpoint, key: str, params: Mapping[str, str], headers: dict[str, str]) -> object:
        c10, c1m = self.limiter.charge_order(key)
        headers["X-MBX-ORDER-COUNT-10S"] = str(c10)
        headers["X-MBX-ORDER-COUNT-1M"] = str(c1m)
        delay, execute, fault = self.exchange.faults.take()
        if delay:
            time.sleep(delay)
            if execute:
                self.auth.check_matching_engine_window(params)
        body = ep.handler(key, params) if execute else None
        if fault is not None:
            raise fault
        return body

    @staticmethod
    def _json_list(params: Mapping[str, str], name: str, max_len: int) -> list | None:
        raw = params.get(name)
        if not raw:
            return None
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise VenueError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        if not isinstance(items, list) or not items:
            raise VenueError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        if len(items) > max_len:
            raise VenueError(-1130, f"Data sent for parameter '{name}' is not valid.")
        return items

    def _batch_place(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """POST /fapi/v1/batchOrders: up to 5 orders, one result or error object each, in order."""
        items = self._json_list(params, "batchOrders", 5)
        if items is None:
            raise VenueError(-1102, "Mandatory parameter 'batchOrders' was not sent, was empty/null, or malformed.")
        out = []
        for i, item in enumerate(items):
            try:
                if i:     # the first one was counted by the request itself
                    self.limiter.charge_order(key)
                if not isinstance(item, dict):
                    raise VenueError(-1102, "Mandatory parameter 'batchOrders' was not sent, was empty/null, or "
                                            "malformed.")
                out.append(self.exchange.place_order(key, {k: _plain(v) for k, v in item.items()}))
            except VenueError as e:
                out.append({"code": e.code, "msg": e.msg})
        return out

    def _batch_cancel(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """DELETE /fapi/v1/batchOrders: orderIdList or origClientOrderIdList (max 10)."""
        ids = self._json_list(params, "orderIdList", 10)
        field = "orderId"
        if ids is None:
            ids = self._json_list(params, "origClientOrderIdList", 10)
            field = "origClientOrderId"
        if ids is None:
            raise VenueError(-1102, "Param 'origClientOrderIdList' or 'orderIdList' must be sent, but both were "
                                    "empty/null!")
        out = []
        for oid in ids:
            try:
                out.append(self.exchange.cancel_order(key, {"symbol": params.get("symbol", ""), field: str(oid)}))
            except VenueError as e:
                out.append({"code": e.code, "msg": e.msg})
        return out

    def _historical_trades(self, key: str, params: Mapping[str, str]) -> list[dict]:
        """GET /fapi/v1/historicalTrades (MARKET_DATA: API key, no signature)."""
        sym = params.get("symbol")
        if not sym:
            raise VenueError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if self.market is None or sym not in self.market.index:
            raise VenueError(-1121, "Invalid symbol.")
        try:
            return historical_trades(self.market, sym, params)
        except ParamError as e:
            raise VenueError(e.code, e.msg, e.status) from None

    def _order_limits(self) -> list[dict]:
        c = self.limits_cfg
        return [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": c.orders_per_10s},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": c.orders_per_minute}]

    def _build_info_tail(self) -> bytes:
        # exchangeInfo is ~1 MB on Binance and identical on every call except serverTime: encode it once
        cat = self.exchange.catalog
        assets = [{"asset": a, "marginAvailable": True, "autoAssetExchange": "-10000" if a == "USDT" else "0"}
                  for a in margin_assets(cat)]
        rest = orjson.dumps({"futuresType": "U_MARGINED", "rateLimits": self.limits_cfg.rate_limits_json(),
                             "exchangeFilters": [], "assets": assets,
                             "symbols": [symbol_json(s) for s in cat]})
        return b"," + rest[1:]

    def _exchange_info(self, key, params) -> bytes:
        # `?symbol=` is ignored on Binance too (docs/binance-notes.md, Exchange information)
        return b'{"timezone":"UTC","serverTime":%d' % self.exchange.clock_ms() + self._info_tail


def install(router, exchange: Exchange, market=None, cfg=None) -> RestApi:
    api = RestApi(exchange, market, cfg)
    api.install(router)
    return api
