"""Shared-memory segments: created owner-only, named per run, removed on every exit path.

We use POSIX shm directly (not multiprocessing.shared_memory.SharedMemory in the children) because attaching
through SharedMemory registers the segment with the resource tracker a second time, and the tracker keeps a set,
not a count: the child's exit would then unlink (or warn about) a segment the supervisor still owns.
The creator does register with the resource tracker, which is a separate process: if the supervisor itself is
killed with SIGKILL the tracker still unlinks its segments when it notices the supervisor is gone.
"""
from __future__ import annotations

import mmap
import os
import secrets
import stat
from multiprocessing import resource_tracker

import _posixshmem  # CPython's own binding of shm_open/shm_unlink (what SharedMemory uses)
import numpy as np

PREFIX = "aegis"
SHM_DIR = "/dev/shm"


def new_run_id() -> str:
    """Unique per run, and carries the supervisor pid so stale segments of dead runs can be recognised."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def segment_name(run_id: str, role: str) -> str:
    return f"{PREFIX}.{run_id}.{role}"


class Segment:
    """One mapped POSIX shared-memory object."""

    def __init__(self, name: str, size: int, fd: int, owner: bool):
        self.name = name
        self.size = size
        self.owner = owner
        self._mm = mmap.mmap(fd, size)
        os.close(fd)
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    @classmethod
    def create(cls, name: str, size: int) -> "Segment":
        # 0o600: market data is not secret, but order state and positions are, and other users have no business
        # writing into our ring. O_EXCL: never adopt a segment someone else made under our name.
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        resource_tracker.register("/" + name, "shared_memory")
        return cls(name, size, fd, owner=True)

    @classmethod
    def attach(cls, name: str) -> "Segment":
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0)
        size = os.fstat(fd).st_size
        return cls(name, size, fd, owner=False)

    def view(self, dtype, offset: int = 0, count: int = -1) -> np.ndarray:
        return np.frombuffer(self._mm, dtype=dtype, count=count, offset=offset)

    def close(self) -> None:
        """Unmap. Views into the segment must be dropped first; mmap refuses to close while they live."""
        self.buf = None
        try:
            self._mm.close()
        except BufferError:
            pass  # a numpy view is still alive; the mapping goes away with the process

    def unlink(self) -> None:
        unlink(self.name, registered=self.owner)


def unlink(name: str, registered: bool = False) -> bool:
    """Remove a segment by name; `registered` only for the process that created it (see the module doc)."""
    try:
        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False
    finally:
        if registered:
            resource_tracker.unregister("/" + name, "shared_memory")


def list_segments(run_id: str | None = None) -> list[str]:
    prefix = f"{PREFIX}." if run_id is None else f"{PREFIX}.{run_id}."
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_stale() -> list[str]:
    """Remove segments left by runs whose supervisor no longer exists (e.g. the box lost power mid-run)."""
    removed = []
    for name in list_segments():
        try:
            pid = int(name.split(".")[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            if unlink(name):
                removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mode_of(name: str) -> int:
    return stat.S_IMODE(os.stat(os.path.join(SHM_DIR, name)).st_mode)
