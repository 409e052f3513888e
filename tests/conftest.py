"""Every test is bounded in time by pytest-timeout (pyproject.toml: 60 s, thread method).

`@pytest.mark.time_limit(s)` gives a test its own limit (it becomes pytest-timeout's `timeout` marker); `--timeout`
or PYTEST_TIMEOUT changes the default. The thread method is used because a hang is most likely inside jitted code,
which no signal handler can interrupt: a watchdog thread dumps every thread's stack and ends the run. Jitted loops
under test still carry their own deadline, so a slow test fails on its own instead of ending the whole run.
"""
from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): fail the test if it runs longer than this")


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("time_limit")
        if marker is not None:
            item.add_marker(pytest.mark.timeout(marker.args[0]))


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    """Compile the sender's jitted order path before the first test that needs it starts its clock: ~15 s on a
    cold Numba cache, which no single test's limit should pay."""
    if any("compiled_order_path" in getattr(item, "fixturenames", ()) for item in session.items) \
            and not session.config.option.collectonly:
        from aegis.trade import sender as trade
        trade.warm_fast_path()
    return (yield)


@pytest.fixture(scope="session")
def compiled_order_path():
    """The sender's jitted fast path (aegis.trade.sender.wait_and_prepare) compiled: pytest_runtestloop did it before
    any test's clock started, so here it is loaded, and every later process loads it from Numba's on-disk cache."""
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
