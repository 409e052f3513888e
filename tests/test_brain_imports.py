"""The Brain process loads only what it runs: no Feed code, no `requests`, no embedded venue, no replay.

Each process of a real engine run writes its sys.modules at exit (a sitecustomize on PYTHONPATH that only this test
installs); the Brain's list is read back by its process name.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

HOOK = '''
import atexit, os, sys
def _dump():
    import multiprocessing
    name = multiprocessing.current_process().name
    with open(os.path.join(os.environ["AEGIS_TEST_MODULES_DIR"], name + "-" + str(os.getpid())), "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(_dump)
'''


@pytest.mark.time_limit(300)
def test_a_trading_brain_process_loads_no_feed_requests_venue_or_replay_module(tmp_path):
    hook, dumps = tmp_path / "hook", tmp_path / "modules"
    hook.mkdir()
    dumps.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "AEGIS_TEST_MODULES_DIR": str(dumps)}
    r = subprocess.run([sys.executable, "-m", "aegis", "--duration", "4", "--symbols", "BTCUSDT,ETHUSDT",
                        "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "orders" in r.stdout
    brains = [p for p in dumps.iterdir() if p.name.startswith("aegis-brain-")]
    feeds = [p for p in dumps.iterdir() if p.name.startswith("aegis-feed-")]
    assert len(brains) == 1 and len(feeds) == 1, sorted(p.name for p in dumps.iterdir())
    brain = set(brains[0].read_text().split())
    assert "aegis.brain.pipeline" in brain and "aegis.trade.sender" in brain and "aegis.binance.client" in brain
    assert "aegis.feed.process" in set(feeds[0].read_text().split())      # the hook sees what a process loads
    unwanted = sorted(m for m in brain if m.split(".")[0] in ("requests", "urllib3")
                      or m.startswith(("aegis.feed", "aegis.venue", "aegis.replay")))
    assert unwanted == []
