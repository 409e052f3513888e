"""Supervisor: creates the run's shared memory, starts Feed and Brain pinned to their cores, watches them, prints
status, and tears everything down on every exit path (duration over, Ctrl-C, SIGTERM, a child dying)."""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_sentinels

import numpy as np

from aegis.core import control
from aegis.core import latency
from aegis.app import preflight
from aegis.app import report
from aegis.app.preflight import SetupError
from aegis.core import shm
from aegis.core import wait
from aegis.core.config import EngineConfig
from aegis.core.startup import ProcessSpec
from aegis.core.ring import Ring
from aegis.core.shm import Segment

HEARTBEAT_TIMEOUT_S = 5.0   # a running process that has not beaten for this long is hung
# A starting process is judged by its progress (control.R_START_*), never by how long it takes: a first run compiles
# for ~40 s on 2 idle cores, minutes on a loaded box. It reports progress on every compiler pass (well under a second
# apart when it is working); one that reports nothing for this long (a compile or a connection that hangs, or an
# interpreter that never got as far as importing the engine) has failed.
START_SILENCE_S = 90.0
CLEAR_LINE = "\r\033[K"
STOP_TIMEOUT_S = 5.0        # orderly stop before SIGTERM, then SIGKILL


class CoreError(ValueError):
    pass


def parse_cores(text: str, available: list[int]) -> tuple[int, ...]:
    """'A,B' -> (A, B) or 'A,B,S' -> (A, B, S) (S: a core of its own for the sender thread, which then spins),
    validated against the cores this process may run on; CoreError says what is wrong."""
    avail = ",".join(map(str, available))
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3) or not all(p.lstrip("-").isdigit() for p in parts):
        raise CoreError(f"--cores takes two core numbers A,B (Feed on A, Brain on B), or three A,B,S (and the order "
                        f"sender spinning on S), got {text!r}; available cores: {avail}")
    cores = tuple(int(p) for p in parts)
    for c in cores:
        if c not in available:
            raise CoreError(f"core {c} does not exist or is not available to this process; available cores: {avail}")
    if len(set(cores)) < len(cores):
        raise CoreError(f"--cores names a core twice ({text}): Feed, Brain (and sender) need a core each; "
                        f"available cores: {avail}")
    return cores


def pick_cores(available: list[int]) -> tuple[int, int]:
    """Default placement: the two highest-numbered cores (core 0 usually takes most interrupts and housekeeping);
    with a single core both share it and `auto` waiting will not busy-spin."""
    if len(available) >= 2:
        return available[-2], available[-1]
    return available[0], available[0]


@dataclass
class Run:
    cfg: EngineConfig
    run_id: str = field(default_factory=shm.new_run_id)
    segments: list = field(default_factory=list)
    procs: dict = field(default_factory=dict)
    stop_reason: str | None = None
    exit_code: int = 0
    venue: object = None
    hist: np.ndarray | None = None
    running_since: float | None = None
    stopped_at: float = 0.0
    journal_failed: bool = False
    told: set = field(default_factory=set)   # processes told the venue (they start before): the Brain may trade


def _role_slot(ctl: np.ndarray, role: int, slot: int) -> int:
    return int(ctl[control.base(role) + slot])


def status_line(elapsed: float, ctl: np.ndarray, ring: Ring, prev: dict, dt: float,
                hist: np.ndarray | None = None) -> str:
    st = ring.stats()
    fed = _role_slot(ctl, control.ROLE_FEED, control.R_RECORDS)
    used = _role_slot(ctl, control.ROLE_BRAIN, control.R_RECORDS)
    rate_in = (fed - prev.get("fed", 0)) / dt if dt > 0 else 0.0
    rate_out = (used - prev.get("used", 0)) / dt if dt > 0 else 0.0
    prev.update(fed=fed, used=used)
    line = (f"[{elapsed:7.1f}s] feed {rate_in/1e3:7.1f}k rec/s | brain {rate_out/1e3:7.1f}k rec/s | "
            f"lag {st['lag']} | drops {st['dropped']} | conflated {st['conflated']}")
    if hist is not None:
        snap = latency.snapshot(hist)
        line += " | " + report.status_text(hist, prev.get("hist"))
        prev["hist"] = snap
    return line + feed_fields(ctl) + trading_fields(ctl) + model_fields(ctl)


def model_fields(ctl: np.ndarray) -> str:
    """The online strategy's prequential scores (aegis.brain.learn), when it has made predictions."""
    b = control.base(control.ROLE_BRAIN)
    n = int(ctl[b + control.R_BRAIN_MODEL_N])
    if n <= 0:
        return ""
    from aegis.brain import learn
    ctl_f = ctl.view(np.float64)
    return " | " + learn.status_text(n, int(ctl[b + control.R_BRAIN_MODEL_OK]), ctl_f[b + control.F_BRAIN_MODEL_LL],
                                     ctl_f[b + control.F_BRAIN_MODEL_BLL])


def feed_health(ctl: np.ndarray) -> dict:
    """The Feed's connection health counters (aegis.feed.process publishes them)."""
    b = control.base(control.ROLE_FEED)
    return {"reconnects": int(ctl[b + control.R_FEED_RECONNECTS]), "stalls": int(ctl[b + control.R_FEED_STALLS]),
            "resyncs": int(ctl[b + control.R_FEED_RESYNCS]), "malformed": int(ctl[b + control.R_FEED_BAD])}


def feed_fields(ctl: np.ndarray) -> str:
    """Status-line part of the Feed's health, only once something happened (a healthy feed adds nothing)."""
    h = feed_health(ctl)
    if not any(h.values()):
        return ""
    return " | feed " + " ".join(f"{k} {v}" for k, v in h.items())


def trading_fields(ctl: np.ndarray) -> str:
    b = control.base(control.ROLE_BRAIN)
    signals = int(ctl[b + control.R_BRAIN_SIGNALS])
    orders = int(ctl[b + control.R_BRAIN_ORDERS])
    if not (signals or orders):
        return ""
    ctl_f = ctl.view(np.float64)
    return (f" | signals {signals} orders {orders} fills {int(ctl[b + control.R_BRAIN_FILLS])} "
            f"refused {int(ctl[b + control.R_BRAIN_REJECTS])} | positions {int(ctl[b + control.R_BRAIN_POSITIONS])} "
            f"gross {ctl_f[b + control.F_BRAIN_GROSS]:.0f} PnL {ctl_f[b + control.F_BRAIN_PNL]:+.2f} "
            f"fees {ctl_f[b + control.F_BRAIN_FEES]:.2f}")


def startup_line(elapsed: float, ctl: np.ndarray) -> str:
    """One line on what each starting process is doing and how far along it is, e.g.
    `[  23.1s] starting: feed 2/3 ready; waiting for the brain ... | brain 3/3 brain loop: compiling
    aegis.brain.process.brain_loop (57 compiled)`."""
    return f"[{elapsed:7.1f}s] starting: " + " | ".join(
        start_part(ctl, role, rid) for role, rid in (("feed", control.ROLE_FEED), ("brain", control.ROLE_BRAIN)))


def start_part(ctl: np.ndarray, role: str, rid: int) -> str:
    """What one starting process is doing, for startup_line."""
    state = _role_slot(ctl, rid, control.R_STATE)
    if state == control.ST_NONE:
        return f"{role} loading Python and Numba"
    if state >= control.ST_RUNNING:
        return f"{role} {control.STATE_NAMES[state]}"
    k, n = _role_slot(ctl, rid, control.R_START_STEP), _role_slot(ctl, rid, control.R_START_STEPS)
    text = control.read_text(ctl, rid) or control.STATE_NAMES[state]
    compiled = _role_slot(ctl, rid, control.R_START_COMPILED)
    return f"{role} {f'{k}/{n} ' if n else ''}{text}{f' ({compiled} compiled)' if compiled else ''}"


def startup_stalled(ctl: np.ndarray, now_ns: int, spawned_ns: int, limit_s: float = START_SILENCE_S) -> str | None:
    """The reason the run must stop if a starting process has reported no progress for limit_s (None if all are
    making progress)."""
    for role, rid in (("feed", control.ROLE_FEED), ("brain", control.ROLE_BRAIN)):
        if _role_slot(ctl, rid, control.R_STATE) >= control.ST_RUNNING:
            continue
        last = max(_role_slot(ctl, rid, control.R_HEARTBEAT), spawned_ns)
        if now_ns - last > limit_s * 1e9:
            doing = control.read_text(ctl, rid) or "starting the interpreter"
            return f"{role} process made no start-up progress for {limit_s:g}s (last: {doing})"
    return None


def _tty(out) -> bool:
    return getattr(out, "isatty", lambda: False)()


def _start_progress(out, t_start: float, interval: float):
    """Prints what is compiling while the embedded venue starts (the venue, and the Brain started alongside): in
    place on a terminal, else every few seconds. Returns show(text)."""
    in_place = _tty(out)
    due = [time.monotonic() + (0.5 if in_place else max(interval, 5.0))]

    def show(text: str) -> None:
        now = time.monotonic()
        if now < due[0]:
            return
        line = f"[{now - t_start:7.1f}s] starting: {text}"
        if in_place:
            print(CLEAR_LINE + line[:shutil.get_terminal_size().columns - 1], end="", file=out, flush=True)
            due[0] = now + 0.5
        else:
            print(line, file=out, flush=True)
            due[0] = now + max(interval, 5.0)

    return show


def summary(run: Run, ctl: np.ndarray, ring: Ring, elapsed: float) -> str:
    st = ring.stats()
    fed = _role_slot(ctl, control.ROLE_FEED, control.R_RECORDS)
    used = _role_slot(ctl, control.ROLE_BRAIN, control.R_RECORDS)
    fchk = _role_slot(ctl, control.ROLE_FEED, control.R_CHECKSUM)
    bchk = _role_slot(ctl, control.ROLE_BRAIN, control.R_CHECKSUM)
    same = "match" if (fed == used and fchk == bchk) else "MISMATCH"
    ran = run.stopped_at - run.running_since if run.running_since is not None else 0.0
    lines = [
        f"aegis: run {run.run_id} stopped ({run.stop_reason}) after {elapsed:.1f}s",
        f"  records: published {fed}, consumed {used}, dropped {st['dropped']}, conflated {st['conflated']}, "
        f"full-ring waits {st['full_waits']}",
        f"  checksum feed/brain: {same}; mean rate {used / ran / 1e3 if ran > 0 else 0:.1f}k rec/s over {ran:.1f}s "
        f"of running",
        "  feed health: " + ", ".join(f"{v} {k}" for k, v in feed_health(ctl).items()),
    ]
    return "\n".join(lines)


def run(cfg: EngineConfig, out=sys.stdout) -> int:
    """Run the engine until the duration is over or a stop is asked for; returns the process exit code."""
    look = wait.BoxLook() if cfg.wait == "auto" else None   # what else runs on the cores while we start
    r = Run(cfg)
    try:     # usage and environment mistakes: one line and exit 2, before anything is started or created
        preflight.check(cfg)
        engine_lock = preflight.engine_lock(cfg, r.run_id, out)
    except SetupError as e:
        print(f"aegis: error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        return _run(cfg, r, out, look)
    finally:
        if engine_lock is not None:
            engine_lock.release("stopped")


def _run(cfg: EngineConfig, r: Run, out, look: wait.BoxLook | None) -> int:
    stale = shm.remove_stale()
    if stale:
        print(f"aegis: removed {len(stale)} shared-memory segment(s) left by dead runs", file=out)
    available = wait.usable_cores()
    cores = cfg.cores or pick_cores(available)
    stop_signal = {"name": None}

    def on_signal(signum, frame):
        stop_signal["name"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    kill = {"flatten": None}

    def on_kill(signum, frame):  # the manual kill switch from outside: `kill -USR1 <supervisor pid>`
        kill["flatten"] = signum == signal.SIGUSR2

    old.update({s: signal.signal(s, on_kill) for s in (signal.SIGUSR1, signal.SIGUSR2)})
    ring = ctl_seg = venue = urls = None
    tell: dict = {}
    t_start = time.monotonic()
    show = _start_progress(out, t_start, cfg.status_interval)
    ctx = mp.get_context("spawn")
    try:
        with preflight.shared_memory():
            ring = Ring.create(shm.segment_name(r.run_id, "ring"), cfg.ring_capacity)
            r.segments.append(ring.segment)
            ctl_seg = Segment.create(shm.segment_name(r.run_id, "control"), control.SLOTS * 8)
            r.segments.append(ctl_seg)
            lat_seg = Segment.create(shm.segment_name(r.run_id, "latency"), latency.HIST_SET_NBYTES)
            r.segments.append(lat_seg)
        ctl = ctl_seg.view(np.int64, 0, control.SLOTS)
        control.init(ctl, time.monotonic_ns())
        r.hist = latency.as_set(lat_seg.view(np.int64))  # zero bytes are empty histograms: no init needed
        from aegis.brain import process as brain
        from aegis.feed import process as feed

        strategy = wait.resolve(cfg.wait, tuple(cores), look)
        chosen = f"{cfg.wait}: {look.verdict()[1]}" if cfg.wait == "auto" and strategy != wait.BUSY_SPIN else cfg.wait

        def spawn(role, target, core, **known):
            spec = ProcessSpec(run_id=r.run_id, role=role, core=core, wait=strategy, ring_name=ring.segment.name,
                               control_name=ctl_seg.name, latency_name=lat_seg.name, config=cfg, **known)
            p = ctx.Process(target=_child_main, args=(target, spec), name=f"aegis-{role}", daemon=False)
            p.start()
            r.procs[role] = p

        # Both start before there is a venue to ask: loading Python and Numba, and the Brain's compile of its order
        # path (~20 s of a cold start), need none, so they overlap the embedded venue's own start (~17 s of
        # compiling on a cold cache, on the other core). The Feed compiles nothing before it is told the venue: its
        # ~38 s would take that core from the venue. The venue's addresses, the symbols and the keys follow on a
        # pipe to each (aegis.core.startup.receive_rest).
        for role, target, core in (("brain", brain.run, cores[1]), ("feed", feed.run, cores[0])):
            receiving, tell[role] = ctx.Pipe(duplex=False)
            spawn(role, target, core, rest=receiving)
            receiving.close()
        if cfg.source == "venue" and cfg.venue == "embedded":
            from aegis.app import embedded
            venue = embedded.start(cfg.section("venue"), lambda text, compiled: show(
                f"embedded venue: {text} ({compiled} compiled) | {start_part(ctl, 'brain', control.ROLE_BRAIN)}"))
            r.venue = venue
            print(f"{CLEAR_LINE if _tty(out) else ''}aegis: embedded venue at {venue.rest_url} "
                  f"(market data {venue.ws_market_url})", file=out, flush=True)
        urls = venue.urls if venue else _exchange_urls(cfg)
        table = _symbol_table(cfg, urls, out)
        print(f"aegis: run {r.run_id}: feed on core {cores[0]}, brain on core {cores[1]}, "
              f"wait {wait.name_of(strategy)} ({chosen}), ring {cfg.ring_capacity} x {ring.dtype.itemsize} B, "
              f"policy {cfg.ring_policy}, source {cfg.source}", file=out, flush=True)
        known = dict(venue_urls=urls, symbols=table, api_key=venue.api_key if venue else None,
                     api_secret=venue.api_secret if venue else None)
        for role, conn in tell.items():
            try:
                conn.send(known)
                r.told.add(role)
            except OSError:     # gone already (e.g. a setting it refused): the watch below says why
                pass
        _watch(r, ctl, ring, out, stop_signal, t_start, kill)
    except SetupError as e:    # found once the venue answers (unknown symbol, unreachable venue), or no shm
        r.stop_reason = str(e)
        r.exit_code = 2
        print(f"aegis: error: {e}", file=sys.stderr, flush=True)
    except RuntimeError as e:  # e.g. the embedded venue could not start
        r.stop_reason = str(e)
        r.exit_code = 1
        print(f"aegis: error: {e}", file=out, flush=True)
    finally:
        for conn in tell.values():
            conn.close()     # told, or still waiting for the venue's addresses: then there will be none
        r.stopped_at = time.monotonic()
        elapsed = r.stopped_at - t_start
        _stop_children(r, ctl if ctl_seg else None, ring)
        if ctl_seg is not None and not r.journal_failed and \
                _role_slot(ctl, control.ROLE_SENDER, control.R_SENDER_FAILSAFE):
            r.journal_failed, r.exit_code = True, 1
            print("aegis: error: THE ORDER JOURNAL COULD NOT BE WRITTEN during the run: trading was halted and open "
                  "orders cancelled without it -- check the disk and the exchange", file=out, flush=True)
        _cancel_orphaned_orders(r, urls if ring is not None else None, out)
        never_ran = r.exit_code == 2 and r.running_since is None   # a setup error: its one line says it all
        if ring is not None and ctl_seg is not None and not never_ran:
            print(summary(r, ctl, ring, elapsed), file=out, flush=True)
        if r.hist is not None and not never_ran:
            _final_latency_report(r, out)
        ctl = None
        if ring is not None:
            ring.header = ring.records = None
        for seg in r.segments:
            seg.close()
            seg.unlink()
        if venue is not None:
            venue.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return r.exit_code


def _cancel_orphaned_orders(r: Run, urls, out) -> None:
    """The Brain cancels its own orders when it stops; if it died instead, its orders would stay on the exchange
    unattended. Then the supervisor cancels them itself, with its own copy of the keys."""
    brain = r.procs.get("brain")
    if brain is None or "brain" not in r.told or (brain.exitcode == 0 and not r.journal_failed) or urls is None \
            or r.cfg.source != "venue":
        return
    if brain.exitcode == 2 and r.running_since is None:
        return      # it refused to start (a setup error) before it could place anything
    from aegis.binance import keys
    from aegis.trade import sender as trade
    try:
        api = keys.from_strings(r.venue.api_key, r.venue.api_secret) if r.venue else None
        key_file = r.cfg.section("trade").get("key_file") or None
        done = trade.emergency_cancel_all(r.cfg.venue, r.cfg.live, key_file, urls=urls, api_keys=api)
        why = "the order journal failed" if r.journal_failed else "the brain did not stop cleanly"
        print(f"aegis: {why}; cancelled its open orders on the exchange: {done}", file=out, flush=True)
    except Exception as e:  # noqa: BLE001 - report whatever failed; the run is already ending with an error
        print(f"aegis: error: could not cancel open orders after the brain died: {e} -- CHECK THE EXCHANGE",
              file=out, flush=True)


def _exchange_urls(cfg: EngineConfig) -> tuple[str, str, str] | None:
    """Base URLs of a real Binance venue (None for the embedded one, which reports its own when it starts)."""
    if cfg.venue == "embedded":
        return None
    from aegis.binance.client import endpoints
    ep = endpoints(cfg.venue, cfg.live)
    return ep.rest_url, ep.ws_market_url, ep.ws_api_url


def _symbol_table(cfg: EngineConfig, urls, out):
    """Resolve the universe once, here, so the Feed and the Brain agree on every symbol id."""
    if cfg.source != "venue" or urls is None:
        return None
    from aegis.feed import process as feed
    from aegis.binance import symbols
    fcfg = feed.FeedConfig.from_section(cfg.section("feed"))
    rest = fcfg.rest_url or urls[0]
    from aegis.binance.weight import ledger_for
    ledger = ledger_for(rest, self_started_venue=cfg.venue == "embedded" and not fcfg.rest_url)
    try:    # strict: the engine trades on this venue, so it must answer and list every symbol asked for
        if isinstance(cfg.symbols, int):
            table = symbols.discover(rest, top_n=cfg.symbols, timeout=fcfg.discovery_timeout, strict=True,
                                     ledger=ledger, out=out)
        else:
            table = symbols.discover(rest, symbols=list(cfg.symbols), timeout=fcfg.discovery_timeout, strict=True,
                                     ledger=ledger, out=out)
    except symbols.DiscoveryError as e:
        raise SetupError(str(e)) from None
    shown = ", ".join(table.names[:5]) + (" ..." if len(table) > 5 else "")
    print(f"aegis: {len(table)} symbols ({table.source}): {shown}", file=out, flush=True)
    return table


def _final_latency_report(r: Run, out) -> None:
    print(report.format_table(r.hist), file=out)
    try:
        written = report.write_run_report(r.hist, r.cfg.out_dir)
        print(f"aegis: latency histograms written to {r.cfg.out_dir} ({len(written)} files; "
              f"`python -m aegis report --hist {r.cfg.out_dir}/latency.npz` prints them again)", file=out, flush=True)
    except OSError as e:
        print(f"aegis: warning: could not write the latency report to {r.cfg.out_dir}: {e}", file=out, flush=True)
    r.hist = None


def _child_main(target, spec: ProcessSpec) -> None:
    code = 1
    try:
        code = target(spec)
    except KeyboardInterrupt:
        code = 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def _watch(r: Run, ctl: np.ndarray, ring: Ring, out, stop_signal: dict, t_start: float, kill: dict) -> None:
    cfg = r.cfg
    next_status = t_start + cfg.status_interval
    prev: dict = {}
    last_status = t_start
    t_running = None
    spawned_ns = time.monotonic_ns()
    in_place = _tty(out)   # a terminal gets one start-up line, rewritten in place
    sentinels = {p.sentinel: role for role, p in r.procs.items()}
    if r.venue is not None and r.venue.process is not None:   # None: a venue running elsewhere ([venue] url)
        sentinels[r.venue.process.sentinel] = "venue"
    while True:
        ready = wait_sentinels(list(sentinels), timeout=0.1)
        now = time.monotonic()
        if stop_signal["name"]:  # first: a signal to the whole process group also ends the children
            r.stop_reason = stop_signal["name"]
            return
        if ready:
            role = sentinels[ready[0]]
            p = r.procs[role] if role in r.procs else r.venue.process
            p.join(0.1)
            if p.exitcode == 0 and control.stop_requested(ctl):
                # a child that was asked to stop (SIGTERM sent to it directly) stops the run in order; the first
                # process to exit is not necessarily the one that got the signal
                by = int(ctl[control.G_STOP_BY])
                r.stop_reason = (f"SIGTERM to the {control.ROLES[by - 1]} process" if 0 < by <= len(control.ROLES)
                                 else f"stop requested through the {role} process")
                return
            if p.exitcode == 2 and r.running_since is None:
                # a usage or setup error of that process (unreachable market data, keys the venue refuses): it
                # said so in one line; the run ends the same way as any other usage error
                r.stop_reason = f"the {role} process could not start"
                r.exit_code = 2
                return
            how = f"was killed by signal {-p.exitcode}" if (p.exitcode or 0) < 0 else f"exited with code {p.exitcode}"
            r.stop_reason = f"{role} process {how}"
            r.exit_code = 1
            print(f"aegis: error: the {role} process {how}; stopping the run", file=out, flush=True)
            return
        if _role_slot(ctl, control.ROLE_SENDER, control.R_SENDER_FAILSAFE):
            r.journal_failed = True
            r.stop_reason = "the order journal cannot be written"
            r.exit_code = 1
            print("aegis: error: THE ORDER JOURNAL CANNOT BE WRITTEN: trading halted and open orders cancelled "
                  "without it; stopping the run -- check the disk and the exchange", file=out, flush=True)
            return
        if kill["flatten"] is not None:
            from aegis.trade.sender import request_kill
            request_kill(ctl, flatten=kill["flatten"])
            print(f"aegis: kill switch pulled{' (flatten)' if kill['flatten'] else ''}: trading halts, open orders "
                  "are cancelled", file=out, flush=True)
            kill["flatten"] = None
        states = [_role_slot(ctl, rid, control.R_STATE) for rid in (control.ROLE_FEED, control.ROLE_BRAIN)]
        if t_running is None and all(st_ == control.ST_RUNNING for st_ in states):
            t_running = now
            r.running_since = now
            compiled = [_role_slot(ctl, rid, control.R_START_COMPILED)
                        for rid in (control.ROLE_FEED, control.ROLE_BRAIN)]
            how = (f": compiled {compiled[0]} + {compiled[1]} functions, cached for the next run" if any(compiled)
                   else "")
            print(f"{CLEAR_LINE if in_place else ''}aegis: engine running (start-up took {now - t_start:.1f}s{how})",
                  file=out, flush=True)
            next_status, last_status = now + cfg.status_interval, now
        # --duration counts running time: a first run spends tens of seconds compiling before it trades
        if cfg.duration is not None and t_running is not None and now - t_running >= cfg.duration:
            r.stop_reason = f"duration {cfg.duration:g}s reached"
            return
        for role, rid in (("feed", control.ROLE_FEED), ("brain", control.ROLE_BRAIN)):
            state = _role_slot(ctl, rid, control.R_STATE)
            beat = _role_slot(ctl, rid, control.R_HEARTBEAT)
            if state == control.ST_RUNNING and time.monotonic_ns() - beat > HEARTBEAT_TIMEOUT_S * 1e9:
                r.stop_reason = f"{role} process stopped beating for {HEARTBEAT_TIMEOUT_S:g}s (hung)"
                r.exit_code = 1
                print(f"aegis: error: {r.stop_reason}; stopping the run", file=out, flush=True)
                return
        stalled = startup_stalled(ctl, time.monotonic_ns(), spawned_ns) if t_running is None else None
        if stalled:
            r.stop_reason = stalled
            r.exit_code = 1
            print(f"{CLEAR_LINE if in_place else ''}aegis: error: {stalled}", file=out, flush=True)
            return
        if now >= next_status and t_running is None:
            line = startup_line(now - t_start, ctl)
            if in_place:
                width = shutil.get_terminal_size().columns - 1
                print(CLEAR_LINE + line[:width], end="", file=out, flush=True)
                next_status = now + 0.5
            else:
                print(line, file=out, flush=True)
                next_status = now + max(cfg.status_interval, 5.0)
        elif now >= next_status:
            print(status_line(now - t_start, ctl, ring, prev, now - last_status, r.hist), file=out, flush=True)
            last_status = now
            next_status = now + cfg.status_interval


def _stop_children(r: Run, ctl, ring) -> None:
    for role, p in r.procs.items():
        if role not in r.told and p.is_alive():
            # started before the venue answered and never told it: it cannot have traded or published, so there
            # is nothing to stop in order, and a SIGTERM landing in its imports would only print a traceback
            p.kill()
            p.join(1.0)
    if ctl is not None:
        control.request_stop(ctl)
    if ring is not None and any(not p.is_alive() for p in r.procs.values()):
        ring.abort()  # a side is gone: release the other from any wait on the ring now, not after the timeout
    if ctl is not None:
        for role, p in r.procs.items():   # still starting: SIGTERM now (it leaves at once), not after the timeout
            if p.is_alive() and _role_slot(ctl, control.ROLES.index(role), control.R_STATE) < control.ST_RUNNING:
                p.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in r.procs.values():
        p.join(max(0.0, deadline - time.monotonic()))
    if ring is not None:
        ring.abort()  # releases a writer blocked on a full ring whose reader is gone
    for p in r.procs.values():
        if p.is_alive():
            p.terminate()
            p.join(1.0)
        if p.is_alive():
            p.kill()
            p.join(1.0)
