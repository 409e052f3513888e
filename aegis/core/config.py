"""Immutable engine configuration: defaults < TOML file (--config) < command-line options.

Engine-level settings are fields of EngineConfig. Each subsystem's own table ([feed], [brain], [strategy], [risk],
[trade], [venue], [replay]) is kept raw in `sections` and validated by the module that owns it, so a
subsystem's options live next to the code that uses them.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aegis.core.ring import MIN_CAPACITY, POLICIES
from aegis.core.wait import CHOICES as WAIT_CHOICES

VENUES = ("embedded", "binance-testnet", "binance")
SECTION_NAMES = ("feed", "brain", "strategy", "risk", "trade", "venue", "replay")


class ConfigError(ValueError):
    """A user mistake in configuration: reported as one line, exit code 2."""


# ===================================================================================== typed section loader
# Every config table ([engine] and each subsystem's) is a frozen dataclass read by `load_section`: the field's
# annotation gives the type a value must have, `checks` the rule it must also obey. Every mistake reads
#     [table] key must be <what it must be>, got <what it was>
# so the user sees the same sentence whichever subsystem owns the table.

@dataclass(frozen=True)
class Check:
    """A rule a value must obey; `wants` completes "[table] key must be ..."."""
    ok: Callable[[Any], bool]
    wants: str


def one_of(*allowed) -> Check:
    return Check(lambda v: v in allowed, "one of " + ", ".join(repr(a) if isinstance(a, str) else str(a)
                                                              for a in allowed))


def at_least(lo) -> Check:
    return Check(lambda v: v >= lo, f">= {lo}")


def between(lo, hi) -> Check:
    return Check(lambda v: lo <= v <= hi, f"between {lo} and {hi}")


def power_of_two(lo: int) -> Check:
    return Check(lambda v: v >= lo and not v & (v - 1), f"a power of two >= {lo}")


POSITIVE = Check(lambda v: v > 0, "> 0")
NON_NEGATIVE = at_least(0)


def section_error(table: str, key: str, wants: str, got: Any = ...) -> ConfigError:
    """The one error format of a bad config value (got omitted for rules spanning several keys)."""
    return ConfigError(f"[{table}] {key} must be {wants}" + ("" if got is ... else f", got {got!r}"))


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a table", tuple: "a list"}


def _words(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_words(a) for a in args)
    origin = typing.get_origin(tp) or tp
    if origin is tuple and args:
        return f"a list of {_words(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return _TYPE_WORDS.get(origin, str(tp))


def _convert(tp, v):
    """v as type tp, or raise TypeError. TOML has no null, so `X | None` takes an X."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(arg, v)
            except TypeError:
                pass
        raise TypeError
    if tp is Any or tp is object:
        return v
    base = origin or tp
    if base is bool:
        if isinstance(v, bool):
            return v
    elif base is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif base is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    elif base is str:
        if isinstance(v, str):
            return v
    elif base is dict or base is collections.abc.Mapping:
        if isinstance(v, dict):
            return dict(v)
    elif base is tuple:
        elem = (typing.get_args(tp) or (Any,))[0]
        if isinstance(v, str) and elem is str:   # "a, b" on a command line or in TOML
            v = [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(v, (list, tuple)):
            return tuple(_convert(elem, x) for x in v)
    else:
        raise TypeError(f"unsupported config field type {tp!r}")  # a programming error, not a user's
    raise TypeError


def section_values(cls, table: str, values: Any, checks: dict[str, Check] | None = None,
                   numbers: Check | None = None, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments of dataclass `cls` given by config table `table`, type-converted and checked.

    checks: a rule per key; numbers: the rule of every int/float key that has none; exclude: fields a config
    file may not set (objects built by code). Raises ConfigError in the one format above."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"[{table}] must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"[{table}] unknown key(s): {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    checks = checks or {}
    out = {}
    for key, v in values.items():
        tp = hints[key]
        try:
            v = _convert(tp, v)
        except TypeError:
            raise section_error(table, key, _words(tp), v) from None
        check = checks.get(key)
        if check is None and numbers is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            check = numbers
        if check is not None and not check.ok(v):
            raise section_error(table, key, check.wants, v)
        out[key] = v
    return out


def load_section(cls, table: str, values: Any, checks: dict[str, Check] | None = None,
                 numbers: Check | None = None, exclude: tuple[str, ...] = ()):
    """cls(**section_values(...)): a typed, checked, immutable view of one config table."""
    return cls(**section_values(cls, table, values, checks, numbers, exclude))


# ===================================================================================== durations
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*(ns|us|µs|ms|s|m|h|d)?\s*$")


def parse_duration_ns(text: Any, bare_unit: str | None = None) -> int:
    """The one duration grammar: a non-negative number and a unit, ns us µs ms s m (minutes) h d, e.g. 250us,
    1.5s, 1m, 2h. A bare number is in `bare_unit` (refused when None). A TOML number is taken as bare.
    Raises ValueError with a one-line message."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(text)
    m = _DURATION_RE.match(text) if isinstance(text, str) else None
    unit = (m.group(2) or bare_unit) if m else None
    if unit is None:
        units = "ns, us, ms, s, m, h or d"
        raise ValueError(f"a duration like 250us, 2ms, 1.5s, 1m or 1h ({units}"
                         f"{', no unit: ' + bare_unit if bare_unit else ''}), got {text!r}")
    number = m.group(0).strip()
    if m.group(2):
        number = number[: -len(m.group(2))]
    return int(round(float(number) * _DURATION_UNITS[unit]))


@dataclass(frozen=True)
class EngineConfig:
    cores: tuple[int, ...] | None = None   # (feed core, brain core); None: the supervisor picks
    duration: float | None = None          # seconds; None: until Ctrl-C / SIGTERM
    wait: str = "auto"
    ring_capacity: int = 1 << 16
    ring_policy: str = "wait"
    venue: str = "embedded"
    live: bool = False
    source: str = "venue"                  # "venue" (websocket market data) or "synthetic" (built-in generator)
    symbols: int | tuple[str, ...] = 20    # top N by volume, or an explicit list
    strategy: str = "ema_cross"
    status_interval: float = 1.0
    record_dir: str | None = None
    out_dir: str = "aegis-out"
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name, {}))

    def replace(self, **changes) -> "EngineConfig":
        return validate(dataclasses.replace(self, **changes))


_ENGINE_CHECKS = {
    "wait": one_of(*WAIT_CHOICES), "ring_policy": one_of(*POLICIES), "ring_capacity": power_of_two(MIN_CAPACITY),
    "venue": one_of(*VENUES), "source": one_of("venue", "synthetic"), "duration": POSITIVE,
    "status_interval": POSITIVE,
}


def load(path: str | None, overrides: dict[str, Any] | None = None) -> EngineConfig:
    """Build the configuration from an optional TOML file and command-line overrides (None values ignored)."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    engine = data.pop("engine", {})
    if not isinstance(engine, dict):
        raise ConfigError(f"[engine] must be a table, got {engine!r}")
    engine = dict(engine)
    sections = {}
    for name, table in data.items():
        if name not in SECTION_NAMES:
            raise ConfigError(f"unknown config table [{name}] (known: engine, {', '.join(SECTION_NAMES)})")
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table, got {table!r}")
        sections[name] = table
    engine_keys = {f.name for f in dataclasses.fields(EngineConfig)} - {"sections"}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k in engine_keys:
            engine[k] = v
        else:  # "section.key"
            sec, _, key = k.partition(".")
            sections.setdefault(sec, {})[key] = v
    if isinstance(engine.get("duration"), str):
        try:
            engine["duration"] = parse_duration_ns(engine["duration"], bare_unit="s") / 1e9
        except ValueError as e:
            raise section_error("engine", "duration", str(e)) from None
    kw = section_values(EngineConfig, "engine", engine, _ENGINE_CHECKS, exclude=("sections",))
    return validate(EngineConfig(**kw, sections=sections))


def validate(cfg: EngineConfig) -> EngineConfig:
    """Rules spanning several keys, and the checks again for EngineConfig.replace()."""
    for key, check in _ENGINE_CHECKS.items():
        v = getattr(cfg, key)
        if v is not None and not check.ok(v):
            raise section_error("engine", key, check.wants, v)
    if cfg.venue == "binance" and not cfg.live:
        raise ConfigError("--venue binance trades real money: add --live to confirm")
    if isinstance(cfg.symbols, int):
        if cfg.symbols < 1:
            raise section_error("engine", "symbols", "at least 1", cfg.symbols)
    elif not cfg.symbols or not all(isinstance(s, str) and s for s in cfg.symbols):
        raise section_error("engine", "symbols", "a count or a non-empty list of symbol names", cfg.symbols)
    return cfg
