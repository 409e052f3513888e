"""Event bus of the Brain: asyncio-free, synchronous, prioritised, allocation-free in steady state.

WHERE THE BUS SITS (the split that keeps the hot path fast)
  * Hot path, never on the bus: ticks -> candles/indicators -> strategy -> signals -> risk check -> hand-off to the
    sender all happen inside ONE long @njit(nogil) call of the Brain (aegis.brain.process.brain_loop). A Python call per
    record (~0.3 us) would cost more than the whole pipeline per record, and leaving nogil code would make the
    sender thread wait for the GIL.
  * The bus is the Python edge for the RARE events: signals generated (logging, journal, UI), order requests
    handed off, risk rejections, fills coming back, control commands, timers/housekeeping. The jitted loop only
    PUSHES small fixed-size events (topic + three int64 arguments) into preallocated queues, from inside jitted
    code, with `push` below; the Brain returns to Python every few milliseconds (or when a queue fills up) and
    `EventBus.dispatch` delivers them to Python handlers. Event payloads that do not fit in three ints live in
    pools/arrays owned by the Brain (a SIGNAL_GENERATED event carries an index into the SignalPool; the bus gives
    the slot back to the pool after every handler has seen it).
  * TICK_UPDATE is therefore NOT one event per tick: the Brain publishes one per dispatch round with the number
    of records consumed since the previous one and the last record's seq.

PRIORITIES: three queues, drained strictly in order and re-checked after every event, so an ORDER_FILLED pushed
by a market-data handler is delivered before the next market-data event:
    PRIO_URGENT  ORDER_FILLED, RISK_REJECTED, CONTROL
    PRIO_MARKET  TICK_UPDATE, SIGNAL_GENERATED, ORDER_REQUEST
    PRIO_HOUSE   TIMER
The Brain's jitted loop follows the same order in each iteration (fills, then control, then market data).

NOBODY LISTENING: an event of a topic without handlers is not queued at all (`push` returns at once and jitted code
can ask `wanted(prio_of, topic)` before building a pooled payload), so an unobserved Brain pays nothing for the bus.

NO ALLOCATION: queues are int64 arrays allocated once ((3, capacity, 4) events and a (3, 8) header); a full
queue drops the event and counts it (never grows). Handlers are kept in per-topic tuples rebuilt only on
(un)subscribe. Dispatch itself creates no lasting object (a few transient Python ints per event).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from aegis.core.jit import njit

# --- topics ------------------------------------------------------------------------------------------------------
TICK_UPDATE = 0        # a = records consumed since the last TICK_UPDATE, b = last seq, c = batches
SIGNAL_GENERATED = 1   # a = SignalPool index (valid during dispatch only), b = risk verdict (0 = sent), c = client_id
ORDER_REQUEST = 2      # a = client_id, b = symbol, c = side (+1/-1) * action (ACTION_*)
ORDER_FILLED = 3       # a = index into the Brain's fill log (FILL_DTYPE), b = client_id, c = status (STATUS_*)
RISK_REJECTED = 4      # a = aegis.trade.risk reason code, b = symbol, c = client_id (0 if none was assigned)
CONTROL = 5            # a = CMD_* below, b, c = command arguments
TIMER = 6              # a = timer id, b = now (CLOCK_MONOTONIC ns), c = times fired
N_TOPICS = 7
TOPIC_NAMES = ("TICK_UPDATE", "SIGNAL_GENERATED", "ORDER_REQUEST", "ORDER_FILLED", "RISK_REJECTED", "CONTROL",
               "TIMER")

PRIO_URGENT, PRIO_MARKET, PRIO_HOUSE = 0, 1, 2
N_PRIOS = 3
# topic -> priority (index by topic)
TOPIC_PRIO = np.array([PRIO_MARKET, PRIO_MARKET, PRIO_MARKET, PRIO_URGENT, PRIO_URGENT, PRIO_URGENT, PRIO_HOUSE],
                      dtype=np.int64)

# CONTROL commands
CMD_STOP = 1
CMD_HALT = 2           # stop opening positions (risk HALTED)
CMD_RESUME = 3

# queue header slots (per priority row)
Q_HEAD = 0      # next event to deliver (count of events ever popped)
Q_TAIL = 1      # count of events ever pushed
Q_DROPPED = 2   # pushes refused because the queue was full
Q_PUSHED = 3
HEADER_SLOTS = 8
EVENT_WIDTH = 4  # topic, a, b, c


def new_queues(capacity: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(events int64[3, capacity, 4], header int64[3, 8]); capacity a power of two."""
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"bus queue capacity must be a power of two >= 2, got {capacity}")
    return np.zeros((N_PRIOS, capacity, EVENT_WIDTH), np.int64), np.zeros((N_PRIOS, HEADER_SLOTS), np.int64)


@njit(cache=True, nogil=True)
def wanted(prio_of, topic):
    """Does anyone listen to `topic`? (lets jitted code skip building a payload nobody will read)"""
    return prio_of[topic] >= 0


@njit(cache=True, nogil=True)
def push(events, header, prio_of, topic, a, b, c):
    """Queue one event (callable from jitted code and Python); False (and counted) when its queue is full.
    An event of a topic nobody subscribed to is not queued at all (returns True: nothing was lost)."""
    p = prio_of[topic]
    if p < 0:
        return True
    cap = events.shape[1]
    tail = header[p, Q_TAIL]
    if tail - header[p, Q_HEAD] >= cap:
        header[p, Q_DROPPED] += 1
        return False
    e = events[p, tail & (cap - 1)]
    e[0] = topic
    e[1] = a
    e[2] = b
    e[3] = c
    header[p, Q_TAIL] = tail + 1
    header[p, Q_PUSHED] += 1
    return True


@njit(cache=True, nogil=True)
def pending(header):
    n = 0
    for p in range(header.shape[0]):
        n += header[p, Q_TAIL] - header[p, Q_HEAD]
    return n


@njit(cache=True, nogil=True)
def room(header, events, prio):
    return events.shape[1] - (header[prio, Q_TAIL] - header[prio, Q_HEAD])


Handler = Callable[[int, int, int, int], None]


class EventBus:
    """Synchronous bus: handler(topic, a, b, c) per subscribed topic, called by dispatch() in priority order."""

    def __init__(self, capacity: int = 4096):
        self.events, self.header = new_queues(capacity)
        # this bus's topic -> priority map; -1 while a topic has neither handler nor release hook
        self.prio_of = np.full(N_TOPICS, -1, np.int64)
        self._handlers: list[tuple[Handler, ...]] = [() for _ in range(N_TOPICS)]
        self._release: list[Callable[[int], object] | None] = [None] * N_TOPICS
        self._timers: list[list[int]] = []   # [period_ns, next_ns, fired]; fixed after setup
        self.delivered = 0
        self.handler_errors = 0
        self.on_error: Callable[[int, BaseException], None] | None = None

    # --- setup (not steady state) ---------------------------------------------------------------------------
    def subscribe(self, topic: int, handler: Handler) -> None:
        self._check(topic)
        self._handlers[topic] = self._handlers[topic] + (handler,)
        self._update_wanted(topic)

    def unsubscribe(self, topic: int, handler: Handler) -> None:
        self._check(topic)
        self._handlers[topic] = tuple(h for h in self._handlers[topic] if h is not handler)
        self._update_wanted(topic)

    def _update_wanted(self, topic: int) -> None:
        # events already queued for a topic that loses its last handler are still delivered (to no one) and
        # released, so pooled payloads always go back
        self.prio_of[topic] = TOPIC_PRIO[topic] if self._handlers[topic] else -1

    def set_release(self, topic: int, release: Callable[[int], object] | None) -> None:
        """Called with the event's `a` after all handlers of that event ran (e.g. SignalPool.give)."""
        self._check(topic)
        self._release[topic] = release

    def add_timer(self, period_ns: int, first_ns: int) -> int:
        """A TIMER event every period_ns (checked by fire_timers); returns the timer id (event arg a)."""
        if period_ns <= 0:
            raise ValueError("timer period must be positive")
        self._timers.append([int(period_ns), int(first_ns), 0])
        return len(self._timers) - 1

    def subscribed(self, topic: int) -> bool:
        return bool(self._handlers[topic])

    @staticmethod
    def _check(topic: int) -> None:
        if not 0 <= topic < N_TOPICS:
            raise ValueError(f"unknown topic {topic}")

    # --- steady state ---------------------------------------------------------------------------------------
    def publish(self, topic: int, a: int = 0, b: int = 0, c: int = 0) -> bool:
        self._check(topic)
        return bool(push(self.events, self.header, self.prio_of, topic, a, b, c))

    def fire_timers(self, now_ns: int) -> int:
        """Queue a TIMER event for every timer that is due (one per timer however late it is)."""
        fired = 0
        for tid, t in enumerate(self._timers):
            if now_ns >= t[1]:
                t[2] += 1
                nxt = t[1] + t[0]
                t[1] = nxt if nxt > now_ns else now_ns + t[0]
                if push(self.events, self.header, self.prio_of, TIMER, tid, now_ns, t[2]):
                    fired += 1
        return fired

    def next_timer_ns(self) -> int:
        return min((t[1] for t in self._timers), default=0)

    def dispatch(self, max_events: int = 1 << 30) -> int:
        """Deliver queued events, highest priority first, until the queues are empty or max_events were
        delivered; returns how many. A handler that raises is counted (and reported to on_error), never fatal
        to the loop, and does not stop the other handlers of the event."""
        ev, hd = self.events, self.header
        mask = ev.shape[1] - 1
        handlers, release = self._handlers, self._release
        done = 0
        while done < max_events:
            p = 0
            while p < N_PRIOS and hd[p, Q_HEAD] == hd[p, Q_TAIL]:
                p += 1
            if p == N_PRIOS:
                break
            head = int(hd[p, Q_HEAD])
            row = ev[p, head & mask]
            topic, a, b, c = int(row[0]), int(row[1]), int(row[2]), int(row[3])
            hd[p, Q_HEAD] = head + 1     # popped before the handlers run: a handler may publish
            for h in handlers[topic]:
                try:
                    h(topic, a, b, c)
                except Exception as e:   # one faulty observer must not stop the Brain
                    self.handler_errors += 1
                    if self.on_error is not None:
                        self.on_error(topic, e)
            rel = release[topic]
            if rel is not None:
                rel(a)
            done += 1
        self.delivered += done
        return done

    def pending(self) -> int:
        return int(pending(self.header))

    def stats(self) -> dict:
        h = self.header
        return {"delivered": self.delivered, "pending": self.pending(),
                "dropped": int(h[:, Q_DROPPED].sum()), "pushed": int(h[:, Q_PUSHED].sum()),
                "handler_errors": self.handler_errors}
