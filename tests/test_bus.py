import tracemalloc

import numpy as np
from numba import njit

from aegis.brain import bus
from aegis.brain.bus import (CONTROL, ORDER_FILLED, ORDER_REQUEST, RISK_REJECTED, SIGNAL_GENERATED, TICK_UPDATE, TIMER,
                       EventBus)


def test_handlers_receive_only_their_topic_with_arguments():
    b = EventBus(16)
    got = []
    b.subscribe(SIGNAL_GENERATED, lambda t, x, y, z: got.append(("sig", t, x, y, z)))
    b.subscribe(ORDER_REQUEST, lambda t, x, y, z: got.append(("req", t, x, y, z)))
    b.publish(SIGNAL_GENERATED, 1, 2, 3)
    b.publish(ORDER_REQUEST, 4, 5, 6)
    assert b.publish(TICK_UPDATE, 7)     # nobody subscribed: not even queued
    assert b.dispatch() == 2
    assert got == [("sig", SIGNAL_GENERATED, 1, 2, 3), ("req", ORDER_REQUEST, 4, 5, 6)]


def test_fills_and_control_are_delivered_before_market_data_before_timers():
    b = EventBus(16)
    order = []
    for topic in range(bus.N_TOPICS):
        b.subscribe(topic, lambda t, a, x, y: order.append(bus.TOPIC_NAMES[t]))
    b.publish(TIMER)
    b.publish(TICK_UPDATE)
    b.publish(SIGNAL_GENERATED)
    b.publish(ORDER_FILLED)
    b.publish(CONTROL)
    b.dispatch()
    assert order == ["ORDER_FILLED", "CONTROL", "TICK_UPDATE", "SIGNAL_GENERATED", "TIMER"]


def test_urgent_event_published_by_a_handler_jumps_ahead_of_queued_market_events():
    b = EventBus(16)
    order = []
    b.subscribe(TICK_UPDATE, lambda t, a, x, y: (order.append(("tick", a)), a == 0 and b.publish(ORDER_FILLED, 9)))
    b.subscribe(ORDER_FILLED, lambda t, a, x, y: order.append(("fill", a)))
    b.publish(TICK_UPDATE, 0)
    b.publish(TICK_UPDATE, 1)
    b.dispatch()
    assert order == [("tick", 0), ("fill", 9), ("tick", 1)]


def test_full_queue_drops_and_counts_without_growing():
    b = EventBus(4)
    seen = []
    b.subscribe(TICK_UPDATE, lambda t, a, x, y: seen.append(a))
    b.subscribe(ORDER_FILLED, lambda t, a, x, y: None)
    assert all(b.publish(TICK_UPDATE, i) for i in range(4))
    assert not b.publish(TICK_UPDATE, 99)
    assert b.publish(ORDER_FILLED, 1)    # other priorities have their own room
    assert b.stats()["dropped"] == 1
    b.dispatch()
    assert seen == [0, 1, 2, 3]


def test_release_hook_gets_payload_after_all_handlers():
    b = EventBus(8)
    log = []
    b.subscribe(SIGNAL_GENERATED, lambda t, a, x, y: log.append(("h1", a)))
    b.subscribe(SIGNAL_GENERATED, lambda t, a, x, y: log.append(("h2", a)))
    b.set_release(SIGNAL_GENERATED, lambda a: log.append(("release", a)))
    b.publish(SIGNAL_GENERATED, 42)
    b.dispatch()
    assert log == [("h1", 42), ("h2", 42), ("release", 42)]


def test_a_failing_handler_is_counted_and_the_others_still_run():
    b = EventBus(8)
    seen = []

    def bad(t, a, x, y):
        raise RuntimeError("boom")

    b.subscribe(RISK_REJECTED, bad)
    b.subscribe(RISK_REJECTED, lambda t, a, x, y: seen.append(a))
    b.publish(RISK_REJECTED, 3)
    b.dispatch()
    assert seen == [3] and b.handler_errors == 1


def test_dispatch_respects_max_events():
    b = EventBus(8)
    b.subscribe(TICK_UPDATE, lambda t, a, x, y: None)
    for i in range(5):
        b.publish(TICK_UPDATE, i)
    assert b.dispatch(2) == 2 and b.pending() == 3


def test_topics_without_handlers_are_not_queued_and_wanted_says_so():
    b = EventBus(8)
    assert not bus.wanted(b.prio_of, SIGNAL_GENERATED)
    b.publish(SIGNAL_GENERATED, 1)
    assert b.pending() == 0
    h = lambda t, a, x, y: None
    b.subscribe(SIGNAL_GENERATED, h)
    assert bus.wanted(b.prio_of, SIGNAL_GENERATED)
    b.publish(SIGNAL_GENERATED, 1)
    b.unsubscribe(SIGNAL_GENERATED, h)
    assert not bus.wanted(b.prio_of, SIGNAL_GENERATED) and b.pending() == 1


def test_timers_fire_once_per_due_period():
    b = EventBus(8)
    fired = []
    b.subscribe(TIMER, lambda t, a, now, k: fired.append((a, now, k)))
    t0 = b.add_timer(100, 1000)
    t1 = b.add_timer(1000, 1500)
    b.fire_timers(999)
    b.fire_timers(1000)
    b.fire_timers(1050)
    b.fire_timers(1600)      # both due; timer 0 is late by several periods: fires once
    b.dispatch()
    assert fired == [(t0, 1000, 1), (t0, 1600, 2), (t1, 1600, 1)]
    assert b.next_timer_ns() == 1700


@njit
def _push_many(events, header, prio_of, n):
    ok = 0
    for i in range(n):
        ok += bus.push(events, header, prio_of, bus.SIGNAL_GENERATED, i, 0, 0)
    return ok


def test_jitted_code_pushes_into_the_same_queues():
    b = EventBus(64)
    seen = []
    b.subscribe(SIGNAL_GENERATED, lambda t, a, x, y: seen.append(a))
    assert _push_many(b.events, b.header, b.prio_of, 10) == 10
    b.dispatch()
    assert seen == list(range(10))


def test_steady_state_dispatch_does_not_allocate():
    b = EventBus(1024)
    count = np.zeros(1, np.int64)

    def h(t, a, x, y):
        count[0] += a

    for topic in range(bus.N_TOPICS):
        b.subscribe(topic, h)
    for _ in range(3):   # warm up
        for i in range(1000):
            b.publish(i % bus.N_TOPICS, 1, 2, 3)
        b.dispatch()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(50):
        for i in range(1000):
            b.publish(i % bus.N_TOPICS, 1, 2, 3)
        b.dispatch()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert count[0] == 53_000
    assert grown < 16_384, f"dispatching 50k events grew the heap by {grown} bytes"
