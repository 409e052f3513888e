"""`python -m aegis.venue`: run the embedded Binance USD-M venue alone on loopback."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from aegis.core.usage import OneLineParser, usage_error

PROG = "python -m aegis.venue"

EPILOG = """\
what it serves (one port, paths as on Binance):
  REST         http://HOST:PORT/fapi/v1/...   ping, time, exchangeInfo, depth, ticker/24hr, ticker/bookTicker,
                                              order, allOpenOrders, openOrders, listenKey; /fapi/v3/account ...
  market WS    ws://HOST:PORT/public/ws/btcusdt@bookTicker/btcusdt@depth@100ms   (raw, bare payloads)
               ws://HOST:PORT/public/stream?streams=btcusdt@bookTicker/ethusdt@depth5  ({"stream","data"})
               ws://HOST:PORT/market/stream?streams=btcusdt@aggTrade/btcusdt@markPrice@1s
               unrouted /ws/... and /stream?... deliver /public streams only (as on Binance since 2026-04)
  user data    ws://HOST:PORT/private/ws/<listenKey>
  trading WS   ws://HOST:PORT/ws-fapi/v1

examples:
  python -m aegis.venue                              default catalog, ~200 book events/s, port 8080
  python -m aegis.venue --port 0 --rate 250000       firehose on a free port (the URLs are printed)
  python -m aegis.venue --symbols 300 --rate 5000    300 synthetic USDT perpetuals
  python -m aegis.venue --lifetime 30 --ping-interval 5 --pong-timeout 10   short-lived sockets for tests
  python -m aegis.venue --replay rec.jsonl.gz --replay-speed 0   replay a recording as fast as possible
  python -m aegis.venue --orders-per-10s 10000 --orders-per-minute 60000 --weight-per-minute 100000
                                                     limits raised for hundreds of orders/s
  python -m aegis.venue --api-key mykey:mysecret     accept this key (repeatable; default aegis-test-key)

Ctrl-C or SIGTERM stops it cleanly.
"""


def _positive(kind, name):
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return v
    return conv


def _key_pair(text: str) -> tuple[str, str]:
    key, sep, secret = text.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError("--api-key takes KEY:SECRET")
    return key, secret


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Run the embedded Binance USD-M futures venue (REST + websockets on one "
                "loopback port) for paper trading, the engine's tests, or any Binance client.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; keep it on loopback)")
    p.add_argument("--port", type=_positive(int, "--port"), default=8080, help="TCP port, 0 = any free port (default 8080)")
    p.add_argument("--rate", type=_positive(float, "--rate"), default=200.0,
                   help="average book events per second over all symbols; each yields a bookTicker and a "
                        "depth@0ms diff (default 200; 250000 for a firehose)")
    p.add_argument("--symbols", type=_positive(int, "--symbols"), default=None,
                   help="list N TRADING USDT perpetuals (real ones first, then synthetic) instead of the default "
                        "catalog (which also has USDC, quarterly and non-trading symbols)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the market generator (default 1)")
    p.add_argument("--no-bursts", action="store_true", help="no volatility bursts (steadier message rate)")
    p.add_argument("--lifetime", type=_positive(float, "--lifetime"), default=86400.0,
                   help="seconds before the server closes a websocket (Binance: 86400)")
    p.add_argument("--ping-interval", type=_positive(float, "--ping-interval"), default=180.0,
                   help="seconds between server pings (Binance: 180)")
    p.add_argument("--pong-timeout", type=_positive(float, "--pong-timeout"), default=600.0,
                   help="seconds a ping may stay unanswered before the server disconnects (Binance: 600)")
    p.add_argument("--replay", metavar="FILE", default=None,
                   help='replay recorded JSON lines (gzip or plain) {"t": ns, "stream": name, "data": payload} '
                        "instead of generating data")
    p.add_argument("--replay-speed", type=_positive(float, "--replay-speed"), default=1.0,
                   help="replay speed factor, 0 = as fast as possible (default 1)")
    p.add_argument("--replay-loop", action="store_true", help="start the recording again at its end")
    p.add_argument("--api-key", type=_key_pair, action="append", metavar="KEY:SECRET",
                   help="accepted API key and secret (repeatable; default aegis-test-key:aegis-test-secret)")
    p.add_argument("--funding-interval", type=_positive(float, "--funding-interval"), default=28800.0,
                   help="seconds between funding settlements (Binance: 28800 = 8 h; shorten to watch funding)")
    p.add_argument("--orders-per-10s", type=_positive(int, "--orders-per-10s"), default=300,
                   help="orders per account per 10 s before 429 -1015 (Binance: 300); listed in exchangeInfo's "
                        "rateLimits, which the engine takes its own limits from")
    p.add_argument("--orders-per-minute", type=_positive(int, "--orders-per-minute"), default=1200,
                   help="orders per account per minute (Binance: 1200)")
    p.add_argument("--weight-per-minute", type=_positive(int, "--weight-per-minute"), default=2400,
                   help="REST request weight per IP per minute before 429 (Binance: 2400)")
    p.add_argument("--backpressure", action="store_true",
                   help="let slow stream clients slow the generator down instead of disconnecting them")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.replay and not os.path.isfile(args.replay):
        return usage_error(PROG, f"--replay file not found: {args.replay}")
    if args.symbols is not None and args.symbols < 1:
        return usage_error(PROG, "--symbols must be >= 1")
    if args.port > 65535:
        return usage_error(PROG, "--port must be <= 65535")
    if min(args.orders_per_10s, args.orders_per_minute, args.weight_per_minute) < 1:
        return usage_error(PROG, "--orders-per-10s, --orders-per-minute and --weight-per-minute must be >= 1")
    from aegis.venue import VenueConfig, start_venue
    from aegis.venue.ratelimit import RateLimitConfig

    kw = {}
    if args.api_key:
        kw["api_keys"] = dict(args.api_key)
    cfg = VenueConfig(host=args.host, port=args.port, rate=args.rate, symbols=args.symbols, seed=args.seed,
                      bursts=not args.no_bursts, conn_lifetime_s=args.lifetime, ping_interval_s=args.ping_interval,
                      pong_timeout_s=args.pong_timeout, replay_path=args.replay, replay_speed=args.replay_speed,
                      replay_loop=args.replay_loop, backpressure=args.backpressure,
                      funding_interval_s=args.funding_interval,
                      rate_limits=RateLimitConfig(weight_per_minute=args.weight_per_minute,
                                                  orders_per_10s=args.orders_per_10s,
                                                  orders_per_minute=args.orders_per_minute), **kw)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        venue = start_venue(cfg)
    except OSError as e:
        return usage_error(PROG, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    except ValueError as e:  # e.g. an unreadable replay file
        return usage_error(PROG, str(e))
    try:
        print(f"aegis venue listening on {venue.host}:{venue.port}", flush=True)
        print(f"  rest_url      {venue.rest_url}", flush=True)
        print(f"  ws_market_url {venue.ws_market_url}   (e.g. {venue.ws_market_url}/public/stream?streams="
              f"btcusdt@bookTicker)", flush=True)
        print(f"  ws_api_url    {venue.ws_api_url}", flush=True)
        if args.api_key:
            # keys given on the command line are the user's own: never echoed
            print(f"  api keys      {len(args.api_key)} accepted (given with --api-key)", flush=True)
        else:
            # the built-in test key is public (it is in --help); without it nobody can sign a request
            from aegis.venue import DEFAULT_API_KEY, DEFAULT_API_SECRET
            print(f"  api key       {DEFAULT_API_KEY}  secret {DEFAULT_API_SECRET}  (built-in test key; "
                  "--api-key KEY:SECRET to choose)", flush=True)
        print(f"  symbols {len(venue.market.symbols)}, rate {args.rate:g} events/s; Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        venue.stop()
    print("aegis venue stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
