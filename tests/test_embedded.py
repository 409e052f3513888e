"""The embedded venue as the supervisor starts it: below the engine's priority, reporting start-up progress."""
from __future__ import annotations

import os

import pytest

from aegis.app import embedded

pytestmark = pytest.mark.time_limit(300)


def test_the_embedded_venue_runs_below_the_engines_priority_and_reports_progress():
    seen = []
    venue = embedded.start({"rate": 100.0}, lambda text, n: seen.append((text, n)))
    try:
        with open(f"/proc/{venue.process.pid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
        assert nice == min(19, os.nice(0) + embedded.VENUE_NICE)
        assert venue.rest_url.startswith("http://127.0.0.1:")
    finally:
        venue.stop()
    # progress arrives only for what is compiled (nothing when the cache is warm); each report names a function
    assert all(text.startswith("compiling") and n >= 0 for text, n in seen)
