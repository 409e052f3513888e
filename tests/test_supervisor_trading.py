"""The supervisor's trading duties on the embedded venue: one symbol universe, the kill switch, orphaned orders."""
from __future__ import annotations

import os
import re
import signal

import pytest

from aegis.core import control
from tests.enginerun import EngineRun

pytestmark = [pytest.mark.time_limit(180), pytest.mark.usefixtures("compiled_order_path")]
# a lively market on two symbols with a fast strategy, so orders flow within seconds
ARGS = ("--symbols", "BTCUSDT,ETHUSDT", "--param", "fast=2", "--param", "slow=5", "--status-interval", "0.5")


@pytest.fixture
def engine(tmp_path):
    runs = []

    def _start(*args):
        run = EngineRun(*ARGS, "--out", str(tmp_path), *args)
        runs.append(run)
        return run

    yield _start
    for run in runs:
        run.kill()


def _orders(run: EngineRun) -> int:
    return int(run.ctl[control.base(control.ROLE_BRAIN) + control.R_BRAIN_ORDERS])


def _wait_orders(run: EngineRun, n: int, timeout: float = 60) -> None:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end and _orders(run) < n:
        time.sleep(0.1)
    assert _orders(run) >= n, run.output


def test_feed_and_brain_share_one_symbol_table_resolved_by_the_supervisor(engine):
    run = engine("--duration", "4")
    assert run.finish(120) == 0
    assert "2 symbols (explicit): BTCUSDT, ETHUSDT" in run.output
    assert re.search(r"brain: .*2 symbols, trading", run.output)


def test_sigusr1_pulls_the_kill_switch_and_the_brain_refuses_new_orders_as_halted(engine):
    run = engine()
    run.wait_running()
    _wait_orders(run, 1)
    os.kill(run.proc.pid, signal.SIGUSR1)
    run.wait_for("kill switch pulled", 10)
    run.wait_for("HALTED", 20)
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.finish(60) == 0
    assert re.search(r"refused \(.*HALTED \d+", run.output), run.output


def test_a_killed_brain_has_its_open_orders_cancelled_by_the_supervisor(engine):
    run = engine()
    run.wait_running()
    _wait_orders(run, 1)
    os.kill(run.pid(control.ROLE_BRAIN), signal.SIGKILL)
    assert run.finish(60) == 1
    assert "the brain process was killed by signal 9" in run.output
    assert "cancelled its open orders on the exchange" in run.output, run.output
    assert "could not cancel" not in run.output
