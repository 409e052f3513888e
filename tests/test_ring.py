"""The shared-memory ring: a single-writer single-reader Disruptor ring that loses nothing and keeps order."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from aegis.core import ring
from aegis.core import ringload
from aegis.core import shm
from aegis.core.clock import now_ns
from aegis.core.records import MARKET_DTYPE
from aegis.core.wait import SPIN_YIELD


@pytest.fixture
def make_ring():
    made = []

    def _make(capacity=4096):
        r = ring.Ring.create(shm.segment_name(shm.new_run_id(), "test"), capacity)
        made.append(r)
        return r

    yield _make
    for r in made:
        r.abort()
        name = r.segment.name
        r.close()
        shm.unlink(name, registered=True)


def deadline(seconds: float) -> int:
    return now_ns() + int(seconds * 1e9)


@pytest.mark.time_limit(120)
def test_ten_million_records_cross_processes_without_loss_in_order_with_equal_checksum(make_ring):
    total = 10_000_000
    r = make_ring(1 << 16)
    writer = ringload.start_writer(r.segment.name, total, batch_size=512, wait=SPIN_YIELD)
    got, disorder, chk, pxsum = ringload.consume_checked(r.header, r.records, total, 1024, SPIN_YIELD, deadline(90))
    writer.join(10)
    assert writer.exitcode == 0
    assert got == total
    assert disorder == 0
    assert (chk, pxsum) == ringload.expected_checksum(total)
    assert r.stats()["dropped"] == 0


def test_reader_sees_a_cursor_published_by_another_process(make_ring):
    # A jitted spin on a plain numpy load of the cursor is hoisted out of the loop by LLVM and never returns;
    # the acquire load must observe the other process's release store. The deadline keeps a regression from hanging.
    r = make_ring()
    writer = ringload.start_writer(r.segment.name, 1, batch_size=1, wait=SPIN_YIELD)
    got, disorder, _, _ = ringload.consume_checked(r.header, r.records, 1, 1, SPIN_YIELD, deadline(30))
    writer.join(10)
    assert got == 1 and disorder == 0


@njit(cache=True)
def _round_trip(header, records, total, wbatch, rbatch):
    src = np.zeros(wbatch, MARKET_DTYPE)
    dst = np.zeros(rbatch, MARKET_DTYPE)
    sent = 0
    got = 0
    bad = 0
    while got < total:
        n = min(wbatch, total - sent, ring.free_slots(header, wbatch))
        if n > 0:
            ringload.fill_sequence(src, sent, n)
            sent += ring.write_batch(header, records, src, n, ring.POLICY_DROP_NEWEST, 0)
        k = ring.read_batch(header, records, dst, rbatch)
        for i in range(k):
            if dst[i].seq != got + i:
                bad += 1
        got += k
    return got, bad


def test_wraps_around_the_ring_many_times_keeping_order(make_ring):
    r = make_ring(4096)
    got, bad = _round_trip(r.header, r.records, 4096 * 7 + 17, 1000, 333)
    assert (got, bad) == (4096 * 7 + 17, 0)
    assert r.stats()["dropped"] == 0
    assert r.stats()["published"] == 4096 * 7 + 17


@njit(cache=True)
def _every_batch_size(header, records, capacity):
    """For every batch size 1..capacity: write one batch of that size, read it back, check seqs."""
    src = np.zeros(capacity, MARKET_DTYPE)
    dst = np.zeros(capacity, MARKET_DTYPE)
    seq = 0
    for b in range(1, capacity + 1):
        ringload.fill_sequence(src, seq, b)
        if ring.write_batch(header, records, src, b, ring.POLICY_DROP_NEWEST, 0) != b:
            return b
        k = ring.read_batch(header, records, dst, capacity)
        if k != b:
            return b
        for i in range(k):
            if dst[i].seq != seq + i:
                return b
        seq += b
    return 0


def test_every_batch_size_from_one_to_capacity_round_trips(make_ring):
    r = make_ring(4096)
    assert _every_batch_size(r.header, r.records, 4096) == 0


@njit(cache=True)
def _write(header, records, n, seq0, policy):
    src = np.zeros(n, MARKET_DTYPE)
    ringload.fill_sequence(src, seq0, n)
    return ring.write_batch(header, records, src, n, policy, 0)


def test_full_ring_with_drop_newest_policy_keeps_unread_records_and_counts_drops(make_ring):
    r = make_ring(4096)
    assert _write(r.header, r.records, 4000, 0, ring.POLICY_DROP_NEWEST) == 4000
    assert _write(r.header, r.records, 200, 4000, ring.POLICY_DROP_NEWEST) == 96
    assert r.stats()["dropped"] == 104
    dst = np.zeros(4096, MARKET_DTYPE)
    assert ring.read_batch(r.header, r.records, dst, 4096) == 4096
    assert (dst["seq"] == np.arange(4096)).all()  # the oldest unread records were never overwritten


def test_full_ring_with_wait_policy_blocks_until_aborted_and_overwrites_nothing(make_ring):
    r = make_ring(4096)
    assert _write(r.header, r.records, 4096, 0, ring.POLICY_WAIT) == 4096
    r.abort()  # no reader: the writer must wait, and only an abort releases it
    assert _write(r.header, r.records, 10, 4096, ring.POLICY_WAIT) == 0
    st = r.stats()
    assert st["full_waits"] == 1 and st["dropped"] == 0
    dst = np.zeros(4096, MARKET_DTYPE)
    ring.read_batch(r.header, r.records, dst, 4096)
    assert (dst["seq"] == np.arange(4096)).all()


def test_full_ring_with_wait_policy_resumes_when_the_reader_frees_room(make_ring):
    r = make_ring(4096)
    writer = ringload.start_writer(r.segment.name, 3 * 4096, batch_size=4096, wait=SPIN_YIELD)
    got, disorder, _, _ = ringload.consume_checked(r.header, r.records, 3 * 4096, 7, SPIN_YIELD, deadline(30))
    writer.join(10)
    assert (got, disorder) == (3 * 4096, 0)
    assert r.stats()["dropped"] == 0


def test_reader_wait_returns_nothing_at_its_deadline_on_an_empty_ring(make_ring):
    r = make_ring()
    dst = np.zeros(8, MARKET_DTYPE)
    t0 = now_ns()
    assert ring.wait_batch(r.header, r.records, dst, 8, SPIN_YIELD, now_ns() + 50_000_000) == 0
    assert now_ns() - t0 >= 50_000_000


def test_stamp_and_write_sets_the_publish_timestamp(make_ring):
    r = make_ring()
    src = np.zeros(3, MARKET_DTYPE)
    t0 = now_ns()
    ring.stamp_and_write(r.header, r.records, src, 3, ring.POLICY_WAIT, 0)
    assert (r.records["pub_ts"][:3] >= t0).all()


@pytest.mark.parametrize("capacity", [0, 1000, 2048, 4097, 6000])
def test_capacity_must_be_a_power_of_two_of_at_least_4096(capacity):
    with pytest.raises(ValueError, match="power of two"):
        ring.check_capacity(capacity)


def test_cursors_live_on_separate_cache_lines():
    slots = {ring.H_WRITE // 8, ring.H_READ // 8, ring.H_DROPPED // 8, ring.H_WRITE_CACHE // 8, ring.H_ABORT // 8}
    assert len(slots) == 5


def test_attaching_to_a_ring_with_another_record_size_is_refused(make_ring):
    r = make_ring()
    with pytest.raises(ValueError, match="byte records"):
        ring.Ring(shm.Segment.attach(r.segment.name), dtype=np.dtype([("x", "<i8")]))
