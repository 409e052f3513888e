"""The Brain's order path compiled ahead, in a child process of its own, while the embedded venue starts.

On a cold Numba cache the venue compiles its market kernels for ~17 s before it listens, and nothing else can start
before it does: Feed and Brain need its symbols. One core sat idle meanwhile. The order path (the sender's jitted
fast path, `aegis.trade.sender.warm_fast_path`, ~20 s of the Brain's ~55 s of compiling) needs no venue, so this
child compiles it into Numba's on-disk cache on that idle core, and the Brain, started once the child is done,
loads it from the cache in well under a second. With a warm cache the child only loads and exits (~1 s, while the
venue starts). If it fails or falls silent the Brain simply compiles the order path itself.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time

SILENCE_S = 90.0     # no compile progress for this long: the child is killed and the Brain compiles it itself


def wanted(cfg) -> bool:
    """Whether the Brain of run `cfg` will build orders on the jitted fast path (else there is nothing to compile
    ahead). A setting that does not validate says no: the Brain reports it."""
    if cfg.source != "venue":
        return False
    from aegis.brain.process import BrainConfig
    from aegis.core.config import ConfigError
    from aegis.trade.sender import TradeConfig
    try:
        return BrainConfig.from_section(cfg.section("brain")).trading and \
            TradeConfig.from_section(cfg.section("trade")).fast_path
    except ConfigError:
        return False


def _main(conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the supervisor stops it
    from aegis.core.startup import progress_over
    watch = progress_over(conn)
    watch.start()
    try:
        from aegis.trade.sender import warm_fast_path
        warm_fast_path()
    finally:
        watch.stop()
    conn.send(("done", None, watch.compiled))


class Ahead:
    """The running child: `poll()` takes its messages without waiting, `wait()` until it is done."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_main, args=(child,), name="aegis-ahead", daemon=True)
        self.process.start()
        child.close()
        self.text = "loading Python and Numba"
        self.compiled = 0
        self.done = False
        self.failed: str | None = None
        self._heard = time.monotonic()

    def poll(self, timeout: float = 0.0) -> bool:
        """Take what the child has sent (waiting up to `timeout` for the first message); True once it is over."""
        while not self.done and self._conn.poll(timeout):
            timeout = 0.0
            try:
                kind, text, compiled = self._conn.recv()
            except (EOFError, OSError):
                self._end(f"exited (code {self._exitcode()})")
                break
            self._heard = time.monotonic()
            self.compiled = compiled or self.compiled
            if text:
                self.text = text
            if kind == "done":
                self.done = True
                self.text = f"done ({self.compiled} compiled)"
                self.process.join(5.0)
        if not self.done and time.monotonic() - self._heard > SILENCE_S:
            self._end(f"no compile progress for {SILENCE_S:g}s")
        return self.done

    def wait(self, on_progress, stop) -> None:
        """Until the child is done (or failed, or `stop()` says the run is over); on_progress(text, compiled) with
        every message."""
        while not self.poll(0.2) and not stop():
            on_progress(self.text, self.compiled)
        if not self.done:
            self._end("stopped")

    def _exitcode(self):
        self.process.join(1.0)
        return self.process.exitcode

    def _end(self, why: str) -> None:
        self.done = True
        self.failed = why
        self.stop()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(1.0)
        self._conn.close()
