"""`python -m aegis warmup`: compile ahead everything a run compiles, so the next run starts from Numba's cache.

It starts the engine itself for half a second of running, once against the embedded venue (venue, Feed, Brain and
the order path, exactly as `python -m aegis` builds them) and once on the synthetic source, with its output
directory and journal in a temporary directory. What it compiles is therefore what a run uses, by construction.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

SOURCES = ("venue", "synthetic")


def main(argv: list[str]) -> int:
    from aegis.app import cli
    p = cli.OneLineParser(prog="python -m aegis warmup", description=__doc__.split("\n\n")[0],
                          epilog="A first run compiles for about 40 s on 2 idle cores (minutes on a busy "
                                 "machine); after `warmup` a run starts in about two seconds. Numba's cache sits in "
                                 "__pycache__ next to the sources (or in NUMBA_CACHE_DIR) and is rebuilt when a source "
                                 "changes.",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=SOURCES + ("all",), default="all",
                   help="which market-data source to compile for (default: all)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    for source in SOURCES if args.source == "all" else (args.source,):
        print(f"aegis: warmup: {source} source", flush=True)
        with tempfile.TemporaryDirectory(prefix="aegis-warmup-") as out:
            code = cli.main(["--source", source, "--duration", "0.5", "--out", out, "--status-interval", "5"])
        if code != 0:
            print(f"aegis: warmup: the {source} run failed (exit code {code})", file=sys.stderr)
            return code
    print(f"aegis: warmup done in {time.monotonic() - t0:.1f}s; the next run loads the compiled code from "
          "Numba's cache", flush=True)
    return 0
