"""Immutable engine configuration: defaults < TOML file (--config) < command-line options.

Engine-level settings are fields of EngineConfig. Each subsystem's own table ([feed], [brain], [strategy], [risk],
[trade], [venue], [replay]) is kept raw in `sections` and validated by the module that owns it, so a
subsystem's options live next to the code that uses them.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aegis.core.ring import MIN_CAPACITY, POLICIES
from aegis.core.wait import CHOICES as WAIT_CHOICES

VENUES = ("embedded", "binance-testnet", "binance")
SECTION_NAMES = ("feed", "brain", "strategy", "risk", "trade", "venue", "replay")


class ConfigError(ValueError):
    """A user mistake in configuration: reported as one line, exit code 2."""


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


_ENGINE_KEYS = {f.name for f in dataclasses.fields(EngineConfig)} - {"sections"}


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
    engine = dict(data.pop("engine", {}))
    sections = {}
    for name, table in data.items():
        if name not in SECTION_NAMES:
            raise ConfigError(f"unknown config table [{name}] (known: engine, {', '.join(SECTION_NAMES)})")
        if not isinstance(table, dict):
            raise ConfigError(f"config entry {name} must be a table [{name}]")
        sections[name] = table
    unknown = set(engine) - _ENGINE_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) in [engine]: {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_ENGINE_KEYS))})")
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k in _ENGINE_KEYS:
            engine[k] = v
        else:  # "section.key"
            sec, _, key = k.partition(".")
            sections.setdefault(sec, {})[key] = v
    if isinstance(engine.get("cores"), list):
        engine["cores"] = tuple(engine["cores"])
    if isinstance(engine.get("symbols"), list):
        engine["symbols"] = tuple(engine["symbols"])
    return validate(EngineConfig(**engine, sections=sections))


def validate(cfg: EngineConfig) -> EngineConfig:
    if cfg.wait not in WAIT_CHOICES:
        raise ConfigError(f"wait must be one of {', '.join(WAIT_CHOICES)}, got {cfg.wait!r}")
    if cfg.ring_policy not in POLICIES:
        raise ConfigError(f"ring_policy must be one of {', '.join(POLICIES)}, got {cfg.ring_policy!r}")
    cap = cfg.ring_capacity
    if not isinstance(cap, int) or cap < MIN_CAPACITY or cap & (cap - 1):
        raise ConfigError(f"ring_capacity must be a power of two >= {MIN_CAPACITY}, got {cap!r}")
    if cfg.venue not in VENUES:
        raise ConfigError(f"venue must be one of {', '.join(VENUES)}, got {cfg.venue!r}")
    if cfg.venue == "binance" and not cfg.live:
        raise ConfigError("--venue binance trades real money: add --live to confirm")
    if cfg.source not in ("venue", "synthetic"):
        raise ConfigError(f"source must be 'venue' or 'synthetic', got {cfg.source!r}")
    if cfg.duration is not None and not cfg.duration > 0:
        raise ConfigError(f"duration must be a positive number of seconds, got {cfg.duration!r}")
    if not cfg.status_interval > 0:
        raise ConfigError(f"status_interval must be positive, got {cfg.status_interval!r}")
    if isinstance(cfg.symbols, int):
        if cfg.symbols < 1:
            raise ConfigError(f"symbols must be at least 1, got {cfg.symbols}")
    elif not cfg.symbols or not all(isinstance(s, str) and s for s in cfg.symbols):
        raise ConfigError("symbols must be a count or a non-empty list of symbol names")
    return cfg
