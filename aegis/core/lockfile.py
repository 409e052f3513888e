"""Lock files: one engine per account and journal, and a record of how the last owner ended.

An flock(2) on an open file: the kernel drops it when the owning process dies, however it dies, so a stale lock
file never blocks a restart. The file's one line says who holds (or last held) it and in which state,
`<pid> <state>`; the state is what a successor needs to know, e.g. that the previous Brain was still trading when
it died (its orders may still rest on the exchange).
"""
from __future__ import annotations

import fcntl
import os
import time


class LockBusy(RuntimeError):
    """Another live process holds the lock; .pid is its pid (0 if unknown)."""

    def __init__(self, path: str, pid: int):
        super().__init__(f"{path} is held by pid {pid or '?'}")
        self.path = path
        self.pid = pid


class LockFile:
    def __init__(self, path: str):
        self.path = path
        self.fd = -1
        self.previous = read(path)     # (pid, state) left by the last owner, before we overwrite it

    def acquire(self, state: str, wait_s: float = 0.0) -> "LockFile":
        """Take the lock (waiting up to wait_s for a holder to go away) and record `state`; LockBusy if held,
        OSError if the file cannot be created (the caller reports it as a usage error)."""
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockBusy(self.path, read(self.path)[0]) from None
                time.sleep(0.1)
        self.previous = read(self.path)
        self.fd = fd
        self.mark(state)
        return self

    def mark(self, state: str) -> None:
        if self.fd < 0:
            return
        line = f"{os.getpid()} {state}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, line, 0)
        os.fdatasync(self.fd)      # the next start must read it even after a power loss

    def release(self, state: str | None = None) -> None:
        if self.fd < 0:
            return
        try:
            if state is not None:
                self.mark(state)
        except OSError:
            pass        # a full disk must not keep the lock: the kernel releases it with the close below
        os.close(self.fd)
        self.fd = -1

    @property
    def held(self) -> bool:
        return self.fd >= 0


def read(path: str) -> tuple[int, str]:
    """(pid, state) written by the lock's last owner; (0, "") when there is none."""
    try:
        with open(path, "rb") as f:
            parts = f.read(200).decode("ascii", "replace").split()
    except OSError:
        return 0, ""
    if len(parts) >= 2 and parts[0].isdigit():
        return int(parts[0]), parts[1]
    return 0, ""


def holder(path: str) -> int:
    """Pid of the live process holding the lock, 0 when it is free."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return 0
    except BlockingIOError:
        return read(path)[0] or -1
    finally:
        os.close(fd)
