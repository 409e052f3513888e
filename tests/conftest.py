"""Every test is bounded in time by pytest-timeout (pyproject.toml: 60 s, thread method).

`@pytest.mark.time_limit(s)` gives a test its own limit (it becomes pytest-timeout's `timeout` marker); `--timeout`
or PYTEST_TIMEOUT changes the default. The thread method is used because a hang is most likely inside jitted code,
which no signal handler can interrupt: a watchdog thread dumps every thread's stack and ends the run. Jitted loops
under test still carry their own deadline, so a slow test fails on its own instead of ending the whole run.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): fail the test if it runs longer than this")


def pytest_collection_modifyitems(config, items):
    """A test's `time_limit` becomes its pytest-timeout; soak tests run only when asked for (`-m soak`): they take
    half an hour by default."""
    for item in items:
        marker = item.get_closest_marker("time_limit")
        if marker is not None:
            item.add_marker(pytest.mark.timeout(marker.args[0]))
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak test: opt in with `-m soak` (AEGIS_SOAK_S sets its length)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


# Jitted code a test needs compiled before its clock starts: 15-60 s each on a cold Numba cache, which no single
# test's limit should pay. Each is warmed once per run, before the first test, and only when a collected test uses
# the fixture of the same name (directly or through another fixture).
def _warm_order_path() -> None:
    from aegis.trade import sender
    sender.warm_fast_path()        # the sender's order path (wait_and_prepare)


def _warm_feed() -> None:
    from aegis.feed import process
    process.warm_up()              # the Feed's parse / book / ingest kernels


def _warm_replay() -> None:
    """The replay core and the Feed's parser, through the replay command on one CSV file and one recording."""
    from aegis.feed.recording import Recorder
    from aegis.replay import run as replay
    t0 = 1_704_067_200_000
    with tempfile.TemporaryDirectory() as d:
        csv_path = Path(d) / "BTCUSDT-bookTicker-2024-01-01.csv"
        csv_path.write_text("update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,"
                            "event_time\n" + "".join(f"{i + 1},100.0,5,100.2,5,{t0 + i},{t0 + i}\n" for i in range(3)))
        rec = Recorder(Path(d) / "rec")
        rec.write(1, "btcusdt@bookTicker", {"e": "bookTicker", "u": 1, "s": "BTCUSDT", "b": "1.0", "B": "1",
                                             "a": "1.1", "A": "1", "T": t0, "E": t0})
        rec.close()
        args = ["--param", "fast=1", "--param", "slow=2", "--brain", "unit_notional=0", "--out", str(Path(d) / "o"),
                "--no-progress", "--latency", "1ms"]
        for source in (str(csv_path), str(rec.files[0])):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert replay.main([source, *args]) == 0


WARM_UPS = {"compiled_order_path": _warm_order_path, "compiled_feed": _warm_feed, "compiled_replay": _warm_replay}
_warmed: set[str] = set()


def _ensure(name: str) -> None:
    if name not in _warmed:
        WARM_UPS[name]()
        _warmed.add(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    if not session.config.option.collectonly:
        for name in WARM_UPS:
            if any(name in getattr(item, "fixturenames", ()) for item in session.items):
                _ensure(name)
    return (yield)


@pytest.fixture(scope="session", autouse=True)
def _journal_rings_of_this_session_removed(tmp_path_factory):
    """A journal's ring (shared memory, aegis.trade.journal) outlives a writer that was killed or never closed, as it
    must; the rings of the journals this session made under its temporary directory go with it."""
    yield
    import os
    from aegis.trade import journal
    base = os.path.realpath(tmp_path_factory.getbasetemp()).encode() + b"/"
    d = journal.ring_dir()
    for name in os.listdir(d):
        if name.startswith("aegis-journal-"):
            try:
                with open(os.path.join(d, name), "rb") as f:
                    head = f.read(journal.RING_HEADER)
                if head[journal.H_PATH_AT:].startswith(base):
                    os.unlink(os.path.join(d, name))
            except OSError:
                pass


@pytest.fixture(scope="session")
def compiled_order_path():
    _ensure("compiled_order_path")


@pytest.fixture(scope="session")
def compiled_feed():
    _ensure("compiled_feed")


@pytest.fixture(scope="session")
def compiled_replay():
    _ensure("compiled_replay")


@pytest.fixture
def own_venue():
    """Start embedded venues with the given VenueConfig fields; all stopped after the test, which fails if a
    market generator thread raised."""
    from aegis.venue import VenueConfig, start_venue
    made = []

    def make(**kw):
        kw.setdefault("rate", 3000)
        v = start_venue(VenueConfig(**kw))
        made.append(v)
        return v

    yield make
    for v in made:
        v.stop()
    assert all(v.market.errors == 0 for v in made), "the generator thread raised (traceback on stderr)"
