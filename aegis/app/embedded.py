"""The embedded venue as a child process of the supervisor (not pinned: it is the "exchange", not the engine).

It runs in its own process so its Python threads never compete with the supervisor's watch loop for a GIL, and so
the engine talks to it exactly as it would to Binance: over loopback sockets.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import secrets
import signal
from dataclasses import dataclass

from aegis.core.config import NON_NEGATIVE, POSITIVE, ConfigError, at_least, between, section_values

VENUE_NICE = 10          # scheduling priority below the engine's (see _venue_main)
START_SILENCE_S = 90.0   # no start-up progress (compiler passes, reported over the pipe) for this long: failed
DEFAULT_RATE = 2_000.0  # book events/s over all symbols: lively, and light enough for a 2-core box
# [venue] keys of its rate limits (aegis.venue.ratelimit.RateLimitConfig; Binance's 2400 / 300 / 1200 by default)
LIMIT_KEYS = ("weight_per_minute", "orders_per_10s", "orders_per_minute")


@dataclass(frozen=True)
class VenueHandle:
    process: mp.Process | None           # None: a venue already running elsewhere ([venue] url)
    rest_url: str
    ws_market_url: str
    ws_api_url: str
    api_key: str
    api_secret: str = dataclasses.field(repr=False)

    @property
    def urls(self) -> tuple[str, str, str]:
        return self.rest_url, self.ws_market_url, self.ws_api_url

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:         # not ours to stop
            return
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)


def venue_settings(section: dict) -> dict:
    """The [venue] table, typed and checked against VenueConfig's fields, as VenueConfig keyword arguments."""
    from aegis.venue import VenueConfig
    if isinstance(section, dict) and "url" in section:
        # an embedded venue started separately (`python -m aegis.venue`): it outlives the engine, so what the
        # exchange does without the engine (protective stops, the dead-man switch) can be watched and tested
        url = section["url"]
        if not isinstance(url, str) or not url.startswith("http://") or set(section) != {"url"}:
            raise ConfigError("[venue] url must be the http://host:port of a running `python -m aegis.venue`, "
                              "and alone in [venue] (the other settings belong to that venue's own command line)")
        return {"url": url.rstrip("/")}
    checks = {"port": between(0, 65535), "replay_speed": NON_NEGATIVE, "symbols": at_least(1),
              "book_depth_ticks": at_least(1), "max_incoming_per_s": at_least(1), "max_streams": at_least(1),
              "max_queue_bytes": at_least(1), "max_order_history": at_least(1)}
    for k in ("rate", "conn_lifetime_s", "ping_interval_s", "pong_timeout_s", "listen_key_validity_s"):
        checks[k] = POSITIVE
    section = dict(section or {}) if isinstance(section, dict) else section
    limits = {k: section.pop(k) for k in LIMIT_KEYS if k in section} if isinstance(section, dict) else {}
    try:
        values = section_values(VenueConfig, "venue", section, checks,
                                exclude=("api_keys", "exchange_cfg", "rate_limits", "catalog"))
    except ConfigError as e:
        if "unknown key" in str(e):
            raise ConfigError(f"{str(e)[:-1]}, {', '.join(LIMIT_KEYS)})") from None
        raise
    if limits:
        # the venue's rate limits (Binance's by default), listed in its exchangeInfo: the engine takes its ORDERS
        # limits from there, so raising them here raises ours (with [risk] orders_per_second for our own)
        from aegis.venue.ratelimit import RateLimitConfig
        kw = section_values(RateLimitConfig, "venue", limits, {k: at_least(1) for k in LIMIT_KEYS},
                            exclude=tuple(f for f in RateLimitConfig.__dataclass_fields__ if f not in LIMIT_KEYS))
        values["rate_limits"] = RateLimitConfig(**kw)
    return {"rate": DEFAULT_RATE, **values}


def _venue_main(conn, settings: dict, api_key: str, api_secret: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when the venue stops
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda s, f: stop.update(now=True))
    from aegis.core.startup import progress_over
    from aegis.venue import VenueConfig, start_venue
    watch = progress_over(conn)
    watch.start()
    try:
        venue = start_venue(VenueConfig(**settings, api_keys={api_key: api_secret}))
    finally:
        watch.stop()   # before the URLs: nothing reads the pipe once start() has them
    lower_priority(VENUE_NICE)
    try:
        conn.send((venue.rest_url, venue.ws_market_url, venue.ws_api_url))
        while not stop["now"]:
            if conn.poll(0.2):  # the supervisor closes its end when it goes away
                try:
                    conn.recv()
                except EOFError:
                    break
    except (BrokenPipeError, EOFError):
        pass
    finally:
        venue.stop()


def lower_priority(by: int) -> None:
    """The venue stands in for a remote exchange: once it runs, on a small box it must not take the engine's cores
    from it (on Linux a nice-10 thread gets about a tenth of the CPU share of a nice-0 one when both want to run).
    Its start, though, is compiling the engine waits for: under other load a nice-10 compile took ~290 s of a
    372 s cold start here, so the venue lowers itself only now. Linux keeps a nice value per thread, and the
    venue's threads are running by now: each one is lowered; threads started later inherit it from their creator."""
    for tid in os.listdir("/proc/self/task"):
        try:
            now = os.getpriority(os.PRIO_PROCESS, int(tid))
            os.setpriority(os.PRIO_PROCESS, int(tid), min(19, now + by))
        except (OSError, ValueError):
            pass   # a thread that ended meanwhile


def start(section: dict, on_progress=None) -> VenueHandle:
    """Start the embedded venue with a fresh random API key for this run; returns once it listens.
    on_progress(text, compiled) is called with what the venue is compiling while it starts. With [venue] url,
    use that running venue instead, with the keys of aegis.binance.keys.load (environment, else the venue's
    built-in test key)."""
    settings = venue_settings(section)
    if "url" in settings:
        from aegis.binance import keys
        k = keys.load("embedded")
        ws = "ws://" + settings["url"][len("http://"):]
        return VenueHandle(None, settings["url"], ws, ws + "/ws-fapi/v1", k.key.reveal(), k.secret.reveal())
    api_key, api_secret = secrets.token_hex(16), secrets.token_hex(32)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_venue_main, args=(child, settings, api_key, api_secret), name="aegis-venue", daemon=True)
    p.start()
    child.close()
    while True:
        if not parent.poll(START_SILENCE_S):
            p.kill()
            raise RuntimeError(f"the embedded venue made no start-up progress for {START_SILENCE_S:g}s")
        try:
            msg = parent.recv()
        except EOFError:
            p.join(1)
            raise RuntimeError(f"the embedded venue exited during start (exit code {p.exitcode})") from None
        if msg[0] != "progress":
            break
        if on_progress is not None and msg[1]:
            on_progress(msg[1], msg[2])
    rest, ws_market, ws_api = msg
    handle = VenueHandle(p, rest, ws_market, ws_api, api_key, api_secret)
    object.__setattr__(handle, "_conn", parent)  # keeps the pipe open for the venue's lifetime
    return handle
