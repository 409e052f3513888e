"""Every test is bounded in time: a SIGALRM per test (default 60 s, `@pytest.mark.time_limit(s)` to change).

Jitted loops under test always carry their own deadline too: a signal handler only runs between Python bytecodes,
so it cannot interrupt a thread that is inside compiled code.
"""
from __future__ import annotations

import os
import signal

import pytest

DEFAULT_LIMIT_S = int(os.environ.get("AEGIS_TEST_TIME_LIMIT", "60"))


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): fail the test if it runs longer than this")


def pytest_collection_modifyitems(config, items):
    """Soak tests run only when asked for (`-m soak`): they take half an hour by default."""
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak test: opt in with `-m soak` (AEGIS_SOAK_S sets its length)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _time_limit(request):
    marker = request.node.get_closest_marker("time_limit")
    limit = int(marker.args[0]) if marker else DEFAULT_LIMIT_S

    def expired(signum, frame):
        raise TimeoutError(f"test exceeded its {limit}s time limit")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def compiled_order_path():
    """The sender's jitted fast path (aegis.trade.sender.wait_and_prepare) compiled once per session, outside any test's
    time limit: ~15 s on a cold Numba cache (CI), after which every process loads it from the on-disk cache."""
    from aegis.trade import sender as trade
    trade.warm_fast_path()


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
