"""`python -m aegis [venue|report|replay|data|sweep|warmup] ...`: the engine run by default, tools as subcommands."""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "venue": "aegis.venue.__main__",
    "report": "aegis.app.report",
    "replay": "aegis.replay.run",
    "data": "aegis.replay.store",
    "sweep": "aegis.research.sweep",
    "warmup": "aegis.app.warmup",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        return int(module.main(argv[1:]) or 0)
    if argv and argv[0] == "run":
        argv = argv[1:]
    from aegis.app import cli
    return cli.main(argv)


def _entry() -> int:
    try:
        return main()
    except BrokenPipeError:  # `python -m aegis --help | head`: the reader left, nothing is wrong
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(_entry())
