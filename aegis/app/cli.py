"""Command line of `python -m aegis` (the engine run). Subcommands are dispatched in aegis.__main__."""
from __future__ import annotations

import argparse

from aegis.core import wait
from aegis.core.config import VENUES, ConfigError, load
from aegis.core.ring import POLICIES
from aegis.core.usage import OneLineParser, usage_error

PROG = "python -m aegis"

DESCRIPTION = """\
AEGIS: a low-latency trading engine for Binance USD-M perpetual futures.

Two processes, each pinned to its own core, busy-poll a shared-memory ring:
  Feed  (websocket market data -> ring records)      on core A
  Brain (indicators, strategy, risk, orders)          on core B
With no venue option the engine starts its embedded Binance-compatible venue on
loopback and paper-trades against it; nothing leaves the machine.
"""

EPILOG = """\
examples:
  python -m aegis --duration 10                 run 10 s on the embedded venue, cores chosen for you
  python -m aegis --cores 2,3                   Feed on core 2, Brain on core 3, until Ctrl-C
  python -m aegis --source synthetic --wait busy-spin --cores 0,1 --duration 5
  python -m aegis --config prod.toml --venue binance-testnet
  python -m aegis --strategy obi --param threshold=0.7 --symbols BTCUSDT,ETHUSDT
  python -m aegis --strategy list               strategies and their parameters
  python -m aegis venue --help                  run the embedded venue alone
  python -m aegis report --help                 latency report of the last run
  python -m aegis replay --help                 backtest recorded or Binance public data
  python -m aegis data --help                   market-data store for replay and sweeps (import, verify)
  python -m aegis sweep --help                  parameter sweeps / walk-forward on Ray Tune ([research] extra)
  python -m aegis warmup                        compile everything ahead (a first run compiles for about 40 s
                                                on 2 idle cores, longer on a busy box; then a run starts in about
                                                two seconds)

wait strategies (what a process does when it has nothing to do):
  busy-spin   spin on the ring cursor; lowest latency, burns the whole core
  spin-yield  spin briefly, then give the core to anything else runnable
  sleep       spin briefly, then sleep 20 us; least CPU, adds wake-up latency
  auto        busy-spin only if every engine process has a core to itself and a core
              is left for everything else; otherwise sleep (the default)

config file (TOML): an [engine] table with the options below (cores = [2, 3], duration,
wait, ring_capacity, ring_policy, venue, symbols, strategy ...) and one table per
subsystem: [feed], [brain], [strategy], [risk], [trade], [venue] ([replay] for replay).
Command-line options override the file.

order rate: risk refuses orders past our own [risk] orders_per_second (default 10/s) and
the exchange's ORDERS limits, which the engine reads from the venue's exchangeInfo
(Binance: 300 per 10 s, 1200 per minute). For hundreds of orders/s on the embedded venue
raise both, e.g. [venue] orders_per_10s = 20000, orders_per_minute = 120000,
weight_per_minute = 1000000 and [risk] orders_per_second = 1000 (the start log prints the
limits in force). On Binance itself its own limits stay the ceiling.

API keys for binance / binance-testnet come from BINANCE_API_KEY and
BINANCE_API_SECRET; they are never printed or logged.
Exit codes: 0 orderly stop (duration, Ctrl-C, SIGTERM), 1 an engine process failed,
2 a usage or configuration error.
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", metavar="A,B[,S]",
                   help="pin Feed to core A and Brain to core B (default: the two highest cores available); with S, "
                   "the order sender gets core S to itself and spins there (a box with a spare core)")
    p.add_argument("--duration", metavar="DURATION", help="stop after this long: seconds, or with a unit "
                   "(90s, 15m, 2h; default: run until Ctrl-C or SIGTERM)")
    p.add_argument("--wait", choices=wait.CHOICES, help="wait strategy of the spin loops (default: auto)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--source", choices=("venue", "synthetic"),
                   help="market data from the venue's websocket streams, or the built-in synthetic generator")
    p.add_argument("--venue", choices=VENUES, help="where to trade (default: embedded, a local paper venue)")
    p.add_argument("--live", action="store_true", default=None, help="confirm trading real money on --venue binance")
    p.add_argument("--symbols", metavar="N|LIST",
                   help="top N USDT perpetuals by 24h volume (default 20), or a comma-separated list")
    p.add_argument("--strategy", metavar="NAME", help="strategy to run: ema_cross (default), mean_reversion, obi, "
                   "online (learns as it runs); "
                   "`--strategy list` shows them with their parameters")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", default=[],
                   help="strategy parameter, repeatable (e.g. --param fast=10 --param slow=50)")
    p.add_argument("--model", metavar="FILE", help="--strategy online: start from this model file (e.g. from "
                   "`replay --save-model`) and save the model back to it at shutdown")
    p.add_argument("--save-model", metavar="FILE", help="--strategy online: save the model here at shutdown "
                   "(without --model: start from zero)")
    t = p.add_argument_group("trading")
    t.add_argument("--kill-switch", metavar="FILE", help="halt trading (cancel all open orders, refuse new ones) as "
                   "soon as FILE exists; `kill -USR1 <pid>` of the supervisor does the same, -USR2 also flattens")
    t.add_argument("--flatten-on-halt", action="store_true", default=None,
                   help="when trading halts (kill switch, daily loss limit), also close every position")
    t.add_argument("--resume", action="store_true", default=None,
                   help="rebuild orders and positions from the journal and the exchange before trading")
    t.add_argument("--journal", metavar="FILE", help="order journal (default <out>/journal-<venue>.jsonl)")
    t.add_argument("--transport", choices=("rest", "ws"), help="order path: signed REST (default) or the websocket "
                   "trading API (ws-fapi)")
    t.add_argument("--key-file", metavar="FILE", help="API key file (mode 0600: key on line 1, secret on line 2) "
                   "instead of BINANCE_API_KEY / BINANCE_API_SECRET")
    p.add_argument("--record", metavar="DIR", help="also write everything the Feed receives (with receive "
                   "timestamps) to compressed files in DIR, readable by `replay` and the venue's --replay")
    p.add_argument("--out", metavar="DIR", help="where run outputs go: latency histograms, report (default aegis-out)")
    p.add_argument("--ring-capacity", type=int, metavar="N", help="ring slots, a power of two >= 4096 (default 65536)")
    p.add_argument("--ring-policy", choices=tuple(POLICIES), help="when the ring is full: wait (lose nothing, "
                   "default) or drop-newest (count drops)")
    p.add_argument("--status-interval", type=float, metavar="SECONDS", help="seconds between status lines "
                   "(default 1)")
    return p


def _symbols(text: str | None):
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = tuple(s.strip().upper() for s in text.split(",") if s.strip())
    if not names:
        raise ConfigError(f"--symbols takes a count or a comma-separated list of symbols, got {text!r}")
    return names


def _check_trading(cfg) -> None:
    """[risk]/[trade] mistakes and missing Binance keys are usage errors: report them before starting anything."""
    from aegis.binance import keys
    from aegis.trade.risk import RiskConfig
    from aegis.trade.sender import TradeConfig
    RiskConfig.from_section(cfg.section("risk"))
    tcfg = TradeConfig.from_section(cfg.section("trade"))
    if cfg.venue != "embedded" and cfg.source == "venue":
        try:
            keys.load(cfg.venue, tcfg.key_file or None)
        except keys.ApiKeyError as e:  # a user mistake too
            raise ConfigError(str(e)) from None


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.strategy == "list":
        from aegis.brain import strategy
        print(strategy.help_text())
        return 0
    # imported late: --help and usage errors must not pay for numba
    from aegis.app import supervisor
    from aegis.brain import process as brain
    from aegis.brain import strategy
    from aegis.feed import process as feed
    try:
        overrides = {
            "duration": args.duration, "wait": args.wait, "source": args.source, "venue": args.venue,
            "live": args.live, "symbols": _symbols(args.symbols), "ring_capacity": args.ring_capacity,
            "ring_policy": args.ring_policy, "status_interval": args.status_interval, "strategy": args.strategy,
            "record_dir": args.record, "out_dir": args.out,
            "risk.kill_switch_file": args.kill_switch, "risk.flatten_on_halt": args.flatten_on_halt,
            "trade.resume": args.resume, "trade.journal": args.journal, "trade.transport": args.transport,
            "trade.key_file": args.key_file,
            "brain.model_file": args.model, "brain.save_model_file": args.save_model,
            **strategy.param_overrides(args.param),
        }
        if args.cores is not None:
            cores = supervisor.parse_cores(args.cores, wait.usable_cores())
            overrides["cores"] = cores[:2]
            if len(cores) == 3:        # the sender's own core: [trade] cores, where it spins (trade.resolve_wait)
                overrides["trade.cores"] = [cores[2]]
        cfg = load(args.config, overrides)
        if cfg.cores is not None and args.cores is None:  # cores from the config file: same validation
            supervisor.parse_cores(",".join(map(str, cfg.cores)), wait.usable_cores())
        if cfg.source == "venue" and cfg.venue == "embedded":
            from aegis.app import embedded
            embedded.venue_settings(cfg.section("venue"))
        feed.FeedConfig.from_section(cfg.section("feed"))
        _check_trading(cfg)
        brain.validate(cfg)  # strategy and [brain] mistakes are reported here, not inside a child process
    except (ConfigError, supervisor.CoreError) as e:
        return usage_error(PROG, str(e))
    return supervisor.run(cfg)
