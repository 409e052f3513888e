"""Embedded Binance USD-M compatible venue on loopback: one port, REST + market streams + user data + ws-fapi.

    from aegis.venue import VenueConfig, start_venue
    with start_venue(VenueConfig(rate=1000, conn_lifetime_s=30)) as v:
        v.rest_url, v.ws_market_url, v.ws_api_url      # http://127.0.0.1:P, ws://127.0.0.1:P, .../ws-fapi/v1
        v.skip_depth(1)                                  # fault knobs, see Venue
        v.drive("BTCUSDT", -1)                           # push a market down through one-sided trading (tests)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import exchange as exchange_mod
from . import rest, userdata, wsapi
from . import streams as _streams
from .catalog import catalog_with, default_catalog
from .market import Market, MarketConfig
from .server import Router, VenueServer, WsPolicy

from .exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET


@dataclass(frozen=True)
class VenueConfig:
    host: str = "127.0.0.1"
    port: int = 0                       # 0 = any free port
    catalog: tuple | None = None        # SymbolSpec tuple; None = default_catalog() (or catalog_with(symbols))
    symbols: int | None = None          # n synthetic-but-realistic TRADING USDT perpetuals instead of the default
    rate: float = 200.0                 # average book events/s over all symbols (>= 200_000 for a firehose)
    bursts: bool = True                 # volatility bursts (per symbol) and venue-wide rate bursts
    seed: int = 1
    book_depth_ticks: int = 400         # book levels live within this many ticks of the best price
    api_keys: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_API_KEY: DEFAULT_API_SECRET})
    conn_lifetime_s: float = 86400.0    # the 24 h cut of every websocket
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    max_incoming_per_s: int = 10        # market-stream connections: ping + pong + control messages per second
    max_streams: int = 1024
    strict_ids: bool = False            # reject string ids in SUBSCRIBE & co. (the lenient default accepts them)
    backpressure: bool = False          # True: generator waits for slow stream clients (benches); False: drop them
    max_queue_bytes: int = 256 * 1024 * 1024
    replay_path: str | None = None      # JSON lines (gzip or plain) {"t": ns, "stream": name, "data": payload}
    replay_speed: float = 1.0           # 0 = as fast as possible
    replay_loop: bool = False
    clock_skew_ms: int = 0              # initial E/T offset of market payloads
    fields_2026: bool = False           # add the 2026 "st"/"ps" fields to bookTicker, depth, aggTrade, markPrice
    listen_key_validity_s: float = 3600.0
    rate_limits: Any = None             # aegis.venue.ratelimit.RateLimitConfig (venue-exchange), None = Binance's
    exchange_cfg: Any = None            # aegis.venue.exchange.ExchangeConfig; None = built from the fields above
    ws_api_max_request_bytes: int = 4096   # ws-fapi: a bigger request frame closes the connection (1009)
    funding_interval_s: float = 8 * 3600.0  # funding settles at multiples of this (Binance: 8 h); shorten in tests
    max_order_history: int = 200_000    # closed orders (and trades, income rows) kept queryable per account:
                                        # ~2.8 KB per order, so memory grows until this many, then stays flat


class Venue:
    def __init__(self, cfg: VenueConfig, server: VenueServer, market: Market, hub: _streams.StreamHub,
                 exchange, services: list):
        self.cfg = cfg
        self.server = server
        self.market = market
        self.hub = hub
        self.exchange = exchange
        self._services = services
        self.port = server.port
        self.host = cfg.host
        self.rest_url = f"http://{cfg.host}:{server.port}"
        self.ws_market_url = f"ws://{cfg.host}:{server.port}"
        self.ws_api_url = f"ws://{cfg.host}:{server.port}/ws-fapi/v1"
        self._stopped = False

    # ---- fault knobs (venue-wide; route None = every market-stream connection, or "public"/"market"/"legacy") ----
    def stream_connections(self, route: str | None = None) -> list[_streams.StreamConn]:
        """Live market-stream connections, for per-connection knobs: .drop(), .stall(s), .skip_depth(n),
        .duplicate_depth(n), .send_malformed(kind); and .subs, .combined, .frames_sent."""
        return self.hub.connections(route)

    def drop_connections(self, route: str | None = None) -> int:
        return self.hub.drop_connections(route)

    def stall(self, seconds: float, route: str | None = None) -> int:
        return self.hub.stall(seconds, route)

    def skip_depth(self, n: int = 1, route: str | None = None) -> int:
        return self.hub.skip_depth(n, route)

    def duplicate_depth(self, n: int = 1, route: str | None = None) -> int:
        return self.hub.duplicate_depth(n, route)

    def send_malformed(self, kind: str = "bad_json", route: str | None = None) -> int:
        return self.hub.send_malformed(kind, route)

    def skew_clock(self, ms: int) -> None:
        self.hub.skew_clock(ms)

    def set_rate(self, rate: float) -> None:
        self.market.set_rate(rate)

    def drive(self, symbol: str, direction: int | None) -> None:
        """Move a symbol's market up (+1) or down (-1) through ordinary one-sided trading; None stops it."""
        self.market.drive(symbol, direction)

    def pause_market(self) -> None:
        self.market.pause()

    def resume_market(self) -> None:
        self.market.resume()

    # ---- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.hub.closing = True
        self.hub.stop_replay()
        self.market.stop()
        for svc in self._services:
            stop = getattr(svc, "stop", None)
            if callable(stop):
                stop()
        self.server.stop()

    def __enter__(self) -> "Venue":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _catalog_of(cfg: VenueConfig):
    if cfg.catalog is not None:
        return tuple(cfg.catalog)
    if cfg.symbols is not None:
        return catalog_with(int(cfg.symbols))
    return default_catalog()


def start_venue(cfg: VenueConfig | None = None) -> Venue:
    cfg = cfg or VenueConfig()
    catalog = _catalog_of(cfg)
    market = Market(catalog, MarketConfig(rate=0.0 if cfg.replay_path else cfg.rate, seed=cfg.seed,
                                          depth=cfg.book_depth_ticks, bursts=cfg.bursts,
                                          fields_2026=cfg.fields_2026))
    market.skew_ms = int(cfg.clock_skew_ms)
    market.funding_interval_ms = max(1, int(cfg.funding_interval_s * 1000))
    hub = _streams.StreamHub(market, _streams.HubConfig(strict_ids=cfg.strict_ids, max_queue_bytes=cfg.max_queue_bytes,
                                                        backpressure=cfg.backpressure, max_streams=cfg.max_streams))
    base_policy = WsPolicy(ping_interval_s=cfg.ping_interval_s, pong_timeout_s=cfg.pong_timeout_s,
                           lifetime_s=cfg.conn_lifetime_s)
    market_policy = WsPolicy(ping_interval_s=cfg.ping_interval_s, pong_timeout_s=cfg.pong_timeout_s,
                             lifetime_s=cfg.conn_lifetime_s, max_incoming_per_s=cfg.max_incoming_per_s)
    router = Router()
    _streams.install_market_rest(router, market, hub=hub)
    _streams.install(router, hub, market_policy)

    ex_cfg = cfg.exchange_cfg
    if ex_cfg is None:
        ex_cfg = exchange_mod.ExchangeConfig(api_keys=dict(cfg.api_keys),
                                             listen_key_validity_s=cfg.listen_key_validity_s, seed=cfg.seed,
                                             max_order_history=cfg.max_order_history)
    exchange = exchange_mod.Exchange(market, catalog, ex_cfg, clock_ms=market.now_ms)
    if not cfg.replay_path:       # replay owns the streams
        exchange.force_order_listeners.append(hub.force_order)
    api = rest.install(router, exchange, market, cfg)
    # market data shares the IP weight budget (and header) with the rest of the REST API
    _streams.install_market_rest(router, market, api.limiter, hub=hub)
    services = [exchange_mod.ExchangeTimers(exchange), api, userdata.install(router, exchange, cfg),
                wsapi.install(router, exchange, cfg)]

    server = VenueServer(router, cfg.host, cfg.port, ws_policy=base_policy).start()
    venue = Venue(cfg, server, market, hub, exchange, services)
    try:
        # replay owns the streams: the generator's periodic messages would mix with the recorded ones
        market.start(extra_tick=None if cfg.replay_path else hub.tick)
        if cfg.replay_path:
            hub.start_replay(cfg.replay_path, cfg.replay_speed, cfg.replay_loop)
    except BaseException:
        venue.stop()
        raise
    return venue


__all__ = ["VenueConfig", "Venue", "start_venue", "DEFAULT_API_KEY", "DEFAULT_API_SECRET"]
