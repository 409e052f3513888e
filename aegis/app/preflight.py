"""What the supervisor checks before it starts anything: every usage or environment mistake becomes one line and
exit code 2, with nothing left behind (no venue, no shared memory, no half-written files, no child process).

Config-file validation is aegis.core.config's; this covers what only shows when the run tries to use the machine:
output and recording directories, the journal and its lock (one engine per account), shared memory.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time

from aegis.core.config import EngineConfig

BRAIN_LOCK_WAIT_S = 15.0    # an earlier engine whose supervisor died stops by itself; give its Brain this long


class SetupError(RuntimeError):
    """The run cannot be set up as asked: one line on stderr, exit code 2."""


def _writable_dir(path: str, what: str) -> None:
    """Create `path` if needed and prove a file can be written in it (then remove the probe)."""
    created = not os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aegis-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if created and os.path.isdir(path):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise SetupError(f"{what} {path}: cannot write there: {e.strerror or e}") from None


def check(cfg: EngineConfig) -> None:
    """Directories the run writes to must be writable before anything starts."""
    _writable_dir(cfg.out_dir, "--out")
    if cfg.record_dir:
        _writable_dir(cfg.record_dir, "--record")


@contextlib.contextmanager
def shared_memory():
    """Creating the run's shared memory failed (e.g. /dev/shm full or too small): one line, exit 2."""
    try:
        yield
    except OSError as e:
        raise SetupError(f"cannot create the run's shared memory in /dev/shm: {e.strerror or e} (is /dev/shm full, "
                         "or limited by the container?)") from None


def engine_lock(cfg: EngineConfig, run_id: str, out=sys.stdout):
    """Hold the journal's supervisor lock for the whole run, after any Brain of an earlier engine on the same
    journal has let go of it. None when this run cannot trade on a shared journal (synthetic data; an embedded
    venue with its per-run journal trades a fresh account)."""
    if cfg.source != "venue" or (cfg.venue == "embedded" and not cfg.section("trade").get("journal")):
        return None
    from aegis.core.lockfile import LockBusy, LockFile, holder
    from aegis.trade.sender import brain_lock_path, journal_path, supervisor_lock_path
    path = journal_path(cfg, run_id)
    try:
        lock = LockFile(supervisor_lock_path(path)).acquire("running")
    except LockBusy as e:
        raise SetupError(f"another engine (pid {e.pid}) is running on journal {path}; stop it first, or give this "
                         "run its own --journal") from None
    except OSError as e:
        raise SetupError(f"cannot write the journal {path}: {e.strerror or e}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)   # writable at all?
        os.close(fd)
    except OSError as e:
        lock.release()
        raise SetupError(f"cannot write the journal {path}: {e.strerror or e}") from None
    pid = holder(brain_lock_path(path))
    if pid:
        print(f"aegis: the Brain of an earlier engine (pid {pid}) still holds journal {path}; waiting up to "
              f"{BRAIN_LOCK_WAIT_S:g}s for it to stop", file=out, flush=True)
        deadline = time.monotonic() + BRAIN_LOCK_WAIT_S
        while pid and time.monotonic() < deadline:
            time.sleep(0.2)
            pid = holder(brain_lock_path(path))
        if pid:
            lock.release()
            raise SetupError(f"the Brain of an earlier engine (pid {pid}) still trades on journal {path}; "
                             "stop it first")
    return lock
