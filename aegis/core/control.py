"""Control block: one small shared-memory array through which the supervisor and the engine processes talk.

Heartbeats, pids, lifecycle states, the stop request and the counters the status line prints. Each role's slots
start on their own cache line (64 slots = 8 lines per role) so the Feed's counters never share a line with the
Brain's, and neither shares one with the supervisor's stop flag. Floats (PnL, positions) live in the same memory
seen through a float64 view: one segment, one layout, two types.
"""
from __future__ import annotations

import numpy as np

from aegis.core.atomics import load_acquire, store_release
from aegis.core.clock import now_ns
from aegis.core.jit import njit

MAGIC = 0x41454749535F4354  # "AEGIS_CT"
ROLE_SLOTS = 64             # 8 cache lines per role
ROLES = ("feed", "brain", "sender")
ROLE_FEED, ROLE_BRAIN, ROLE_SENDER = 0, 1, 2
SLOTS = ROLE_SLOTS * (1 + len(ROLES))

# global region (first 64 slots)
G_MAGIC = 0
G_STOP = 8          # own line: written by the supervisor, polled by everyone
G_STOP_BY = 9       # 1 + the role of an engine process that got SIGTERM and asked for the stop (0: supervisor)
G_START_NS = 16
G_SYMBOLS = 17      # number of symbols the Feed resolved (the Brain sizes its state from it)
G_SYMBOLS_READY = 18

# lifecycle states
ST_NONE, ST_STARTING, ST_READY, ST_RUNNING, ST_STOPPED, ST_FAILED = 0, 1, 2, 3, 4, 5
STATE_NAMES = ("spawning", "starting", "ready", "running", "stopped", "failed")

# per-role slots (offsets within the role's region)
R_HEARTBEAT = 0     # CLOCK_MONOTONIC ns of the last beat
R_PID = 1
R_STATE = 2
R_CORE = 3
R_WAIT = 4
R_RECORDS = 8       # line 1: records produced (feed) / consumed (brain) / requests sent (sender)
R_BATCHES = 9
R_CHECKSUM = 10     # order-sensitive checksum of record seqs (proves no loss / no reorder end to end)
R_ERRORS = 11
R_IDLE = 12         # empty polls
# --- feed section (owner: feed) -------------------------------------------------------------------------
R_FEED_MSGS = 16         # websocket messages parsed
R_FEED_BYTES = 17
R_FEED_BAD = 18          # malformed / unknown / out-of-range messages skipped
R_FEED_RECONNECTS = 19
R_FEED_RESYNCS = 20
R_FEED_GAPS = 21
R_FEED_STALLS = 22       # connections closed for silence (also counted in R_FEED_RECONNECTS)
# --- brain section (owner: brain) -----------------------------------------------------------------------
R_BRAIN_SIGNALS = 16
R_BRAIN_ORDERS = 17
R_BRAIN_REJECTS = 18
R_BRAIN_FILLS = 19
R_BRAIN_POSITIONS = 20   # symbols with a non-zero position
R_BRAIN_MODEL_N = 21     # online strategy: labelled events predicted (prequential, all symbols)
R_BRAIN_MODEL_OK = 22    # ... of which the direction was right
# float64 view slots (same memory, read through control_f)
F_BRAIN_PNL = 32         # realized + unrealized, quote currency
F_BRAIN_FEES = 33
F_BRAIN_GROSS = 34       # gross position notional
F_BRAIN_MODEL_LL = 35    # online strategy: sum of the model's log-loss
F_BRAIN_MODEL_BLL = 36   # ... and of the base rate's
# --- sender section (owner: trade) ----------------------------------------------------------------------
R_SENDER_SENT = 16
R_SENDER_ACKS = 17
R_SENDER_REJECTS = 18
R_SENDER_TRADING_STATE = 19   # aegis.trade.risk state (0 ACTIVE, 1 REDUCING, 2 HALTED), mirrored by the Brain for status
R_SENDER_STATE_REASON = 20    # aegis.trade.risk.WHY_* of the last state change
R_SENDER_FAILSAFE = 21        # 1: the order journal cannot be written; trading halted, orders cancelled without it
R_SENDER_FLAGS = 24           # 8 slots (own cache line) = aegis.trade.sender.TradeSession.flags: [0] kill switch request
                              # (1 halt + cancel all, 2 also flatten; the supervisor may write it), [1] seen by Brain
# --- start-up section (every role; written by that role's process until it runs) ------------------------------
# Start-up is progress, not a deadline: a first run compiles for ~40 s on 2 idle cores (minutes on a loaded box), so the
# supervisor judges a starting process by how recently it reported progress here, not by how long it has taken.
R_START_PHASE = 40       # PH_* below
R_START_COMPILED = 41    # functions Numba compiled so far in this process (loads from its cache are not counted)
R_START_STEP = 42        # start-up step being done (1-based), of R_START_STEPS
R_START_STEPS = 43
R_START_SILENCE_NS = 44  # longest time so far between two progress reports of this process
R_START_TEXT = 48        # 16 slots (2 cache lines) = 128 bytes of UTF-8, NUL-padded: what is being done now
START_TEXT_BYTES = 128
PH_PREPARING, PH_COMPILING, PH_WAITING_FOR_BRAIN, PH_CONNECTING = 0, 1, 2, 3


def base(role: int) -> int:
    return ROLE_SLOTS * (1 + role)


def new_block() -> np.ndarray:
    return np.zeros(SLOTS, dtype=np.int64)


def init(ctl: np.ndarray, start_ns: int) -> None:
    ctl[:] = 0
    ctl[G_START_NS] = start_ns
    ctl[G_MAGIC] = MAGIC


@njit(cache=True, nogil=True)
def beat(ctl, role):
    store_release(ctl, ROLE_SLOTS * (1 + role) + R_HEARTBEAT, now_ns())


@njit(cache=True, nogil=True)
def stop_requested(ctl):
    return load_acquire(ctl, G_STOP) != 0


@njit(cache=True, nogil=True)
def request_stop(ctl):
    store_release(ctl, G_STOP, 1)


@njit(cache=True, nogil=True)
def set_slot(ctl, role, slot, value):
    store_release(ctl, ROLE_SLOTS * (1 + role) + slot, value)


@njit(cache=True, nogil=True)
def get_slot(ctl, role, slot):
    return load_acquire(ctl, ROLE_SLOTS * (1 + role) + slot)


def write_text(ctl: np.ndarray, role: int, text: str) -> None:
    """Put `text` (truncated to START_TEXT_BYTES of UTF-8) in the role's start-up text slots. A reader racing this
    store may see a mix of two texts for one status line; nothing else reads them."""
    raw = text.encode("utf-8", "replace")[:START_TEXT_BYTES]
    start = base(role) + R_START_TEXT
    view = ctl[start:start + START_TEXT_BYTES // 8].view(np.uint8)
    view[:len(raw)] = np.frombuffer(raw, np.uint8)
    view[len(raw):] = 0


def read_text(ctl: np.ndarray, role: int) -> str:
    start = base(role) + R_START_TEXT
    raw = ctl[start:start + START_TEXT_BYTES // 8].view(np.uint8).tobytes()
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
