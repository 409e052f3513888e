"""The one command-line parser of every `python -m aegis ...` command: a usage mistake is one line and exit 2."""
from __future__ import annotations

import argparse
import sys


def command_name(prog: str) -> str:
    """'python -m aegis replay' -> 'aegis replay': how error lines name the command."""
    return prog.removeprefix("python -m ").strip()


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake gets one line naming the problem and pointing at --help (exit 2), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{command_name(self.prog)}: error: {message} (see {self.prog} --help)\n")


def usage_error(prog: str, message: str) -> int:
    """Print the one-line error of command `prog` and return its exit code, 2."""
    print(f"{command_name(prog)}: error: {message}", file=sys.stderr)
    return 2
