"""Configuration is immutable, layered (defaults < TOML < command line) and validated with clear messages."""
from __future__ import annotations

import dataclasses

import pytest

from aegis.core.config import ConfigError, EngineConfig, load
from aegis.core import wait


def test_defaults_are_sensible():
    cfg = load(None)
    assert cfg.venue == "embedded" and cfg.wait == "auto" and cfg.symbols == 20 and cfg.ring_policy == "wait"


def test_command_line_overrides_the_file(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text('[engine]\nduration = 5\nwait = "sleep"\n[risk]\nmax_position = 3\n')
    cfg = load(str(f), {"duration": 2.0, "wait": None})
    assert cfg.duration == 2.0 and cfg.wait == "sleep"
    assert cfg.section("risk") == {"max_position": 3}


def test_configuration_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EngineConfig().duration = 3


def test_an_unknown_table_is_refused(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text("[riks]\nx = 1\n")
    with pytest.raises(ConfigError, match="riks"):
        load(str(f))


@pytest.mark.parametrize("change,fragment", [
    ({"wait": "spin"}, "wait"), ({"ring_policy": "overwrite"}, "ring_policy"), ({"duration": -1.0}, "duration"),
    ({"symbols": 0}, "symbols"), ({"venue": "ftx"}, "venue"),
])
def test_bad_values_are_refused_with_the_option_named(change, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load(None, change)


def test_auto_wait_busy_spins_only_with_a_spare_core(monkeypatch):
    monkeypatch.setattr(wait, "usable_cores", lambda: [0, 1, 2, 3])
    assert wait.resolve("auto", (2, 3)) == wait.BUSY_SPIN
    monkeypatch.setattr(wait, "usable_cores", lambda: [0, 1])
    assert wait.resolve("auto", (0, 1)) == wait.SLEEP
    assert wait.resolve("auto", (1, 1)) == wait.SLEEP


def test_explicit_wait_strategies_are_honoured_whatever_the_core_count():
    assert wait.resolve("busy-spin", (0, 1)) == wait.BUSY_SPIN
    assert wait.resolve("spin-yield", (0, 1)) == wait.SPIN_YIELD
    assert wait.resolve("sleep", (0, 1)) == wait.SLEEP
