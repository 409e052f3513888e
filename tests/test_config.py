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


def test_auto_wait_busy_spins_only_with_a_spare_core_and_otherwise_yields_on_an_idle_box(monkeypatch):
    monkeypatch.setattr(wait, "usable_cores", lambda: [0, 1, 2, 3])
    assert wait.resolve("auto", (2, 3), idle=False) == wait.BUSY_SPIN
    monkeypatch.setattr(wait, "usable_cores", lambda: [0, 1])
    assert wait.resolve("auto", (0, 1), idle=False) == wait.SLEEP
    assert wait.resolve("auto", (1, 1), idle=False) == wait.SLEEP
    assert wait.resolve("auto", (0, 1), idle=True) == wait.SPIN_YIELD
    assert wait.resolve("auto", (1, 1), idle=True) == wait.SPIN_YIELD
    # not told: it reads the box
    monkeypatch.setattr(wait, "box_idle", lambda: (True, "idle box: load 0.10"))
    assert wait.resolve("auto", (0, 1)) == wait.SPIN_YIELD
    monkeypatch.setattr(wait, "box_idle", lambda: (False, "busy box: load 3.00"))
    assert wait.resolve("auto", (0, 1)) == wait.SLEEP


PSI = "some avg10=0.00 avg60={} avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


@pytest.mark.parametrize("loadavg,pressure,idle,says", [
    ("0.31 0.50 0.60 1/70 123", PSI.format("0.40"), True, "idle box: load 0.31, cpu pressure 0.4 %"),
    ("1.20 0.50 0.60 1/70 123", PSI.format("0.40"), False, "busy box: load 1.20, cpu pressure 0.4 %"),
    ("0.31 0.50 0.60 1/70 123", PSI.format("12.50"), False, "busy box: load 0.31, cpu pressure 12.5 %"),
    ("0.31 0.50 0.60 1/70 123", "", True, "idle box: load 0.31"),             # a kernel without PSI
    ("", PSI.format("0.40"), False, "load average unknown"),
])
def test_an_idle_box_is_told_by_the_load_average_and_the_cpu_pressure(loadavg, pressure, idle, says):
    assert wait.box_idle(loadavg, pressure) == (idle, says)


def test_explicit_wait_strategies_are_honoured_whatever_the_core_count():
    assert wait.resolve("busy-spin", (0, 1)) == wait.BUSY_SPIN
    assert wait.resolve("spin-yield", (0, 1)) == wait.SPIN_YIELD
    assert wait.resolve("sleep", (0, 1)) == wait.SLEEP
