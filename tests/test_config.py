"""Configuration is immutable, layered (defaults < TOML < command line) and validated with clear messages."""
from __future__ import annotations

import dataclasses
import os
import time

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


class _Look:
    def __init__(self, idle):
        self.idle = idle

    def verdict(self):
        return self.idle, "test"


def test_auto_wait_busy_spins_only_with_a_spare_core_and_otherwise_yields_on_an_idle_box(monkeypatch):
    monkeypatch.setattr(wait, "usable_cores", lambda: [0, 1, 2, 3])
    assert wait.resolve("auto", (2, 3), _Look(False)) == wait.BUSY_SPIN
    monkeypatch.setattr(wait, "usable_cores", lambda: [0, 1])
    assert wait.resolve("auto", (0, 1), _Look(False)) == wait.SLEEP
    assert wait.resolve("auto", (1, 1), _Look(False)) == wait.SLEEP
    assert wait.resolve("auto", (0, 1), _Look(True)) == wait.SPIN_YIELD
    assert wait.resolve("auto", (1, 1), _Look(True)) == wait.SPIN_YIELD


STAT = """cpu  900 0 300 5000 10 0 5 7 0 0
cpu0 {} 0 {} 2500 5 0 {} 3 0 0
cpu1 400 0 100 2500 5 0 2 4 0 0
intr 12345
"""


def test_the_busy_time_of_the_cores_is_read_from_proc_stat_without_idle_iowait_or_stolen_time():
    hz = os.sysconf("SC_CLK_TCK")
    assert wait.busy_seconds(STAT.format(500, 200, 3), [0]) == pytest.approx(703 / hz)
    assert wait.busy_seconds(STAT.format(500, 200, 3), [0, 1]) == pytest.approx((703 + 502) / hz)
    assert wait.busy_seconds(STAT.format(500, 200, 3), [5]) == 0.0


def test_a_look_at_the_box_subtracts_this_process_and_judges_the_others_share():
    assert wait.judge(0.03, 0.21) == (True, "idle box: others used 3% of the cores over 0.21s")
    assert wait.judge(0.40, 0.21) == (False, "busy box: others used 40% of the cores over 0.21s")
    # this process burning CPU while it looks is not someone else's work
    look = wait.BoxLook()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    idle, why = look.verdict()
    assert look.verdict() == (idle, why)               # decided once
    share = float(why.split("others used ")[1].split("%")[0]) / 100
    assert share < 0.3, why    # our 0.3 s on one core: ~50 % of 2 cores (100 % of 1) if it were counted


def test_explicit_wait_strategies_are_honoured_whatever_the_core_count():
    assert wait.resolve("busy-spin", (0, 1)) == wait.BUSY_SPIN
    assert wait.resolve("spin-yield", (0, 1)) == wait.SPIN_YIELD
    assert wait.resolve("sleep", (0, 1)) == wait.SLEEP
