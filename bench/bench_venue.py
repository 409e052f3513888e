"""Sustained messages/s the embedded venue emits to ONE websocket client (the market-data firehose).

Run:  python -m pytest bench/bench_venue.py -s --benchmark-columns=min,mean,max
Quick check that it runs:  python -m pytest bench/bench_venue.py --benchmark-min-rounds=1 -q

The client reads with sock.recv_into into one big buffer and counts complete websocket frames with a jitted header
walker, so the reader is not the bottleneck. The generator runs with backpressure (it slows down to what the
client drains) and the rate set far above what one core can produce, so the figure is the venue's ceiling:
generation + encoding + per-connection framing + sendall, all in the venue's Python threads.
"""
from __future__ import annotations

import base64
import os
import socket
import time

import numpy as np
import pytest
from aegis.core.jit import njit

from aegis.venue import VenueConfig, start_venue
from aegis.venue.catalog import default_catalog
from benchmode import size

WINDOW_S = size(2.0, 0.3)
RESULTS: dict = {}


@njit(cache=True)
def count_frames(buf, n):
    """(complete frames in buf[:n], bytes consumed); server frames are unmasked."""
    pos = 0
    frames = 0
    while pos + 2 <= n:
        ln = buf[pos + 1] & 0x7F
        hl = 2
        if ln == 126:
            if pos + 4 > n:
                break
            ln = (np.int64(buf[pos + 2]) << 8) | buf[pos + 3]
            hl = 4
        elif ln == 127:
            if pos + 10 > n:
                break
            ln = 0
            for j in range(8):
                ln = (ln << 8) | np.int64(buf[pos + 2 + j])
            hl = 10
        if pos + hl + ln > n:
            break
        pos += hl + ln
        frames += 1
    return frames, pos


def _open(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _measure(sock: socket.socket, seconds: float) -> tuple[int, int, float]:
    buf = np.zeros(16 << 20, np.uint8)
    mv = memoryview(buf)
    have = frames = nbytes = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n = sock.recv_into(mv[have:])
        if n == 0:
            raise ConnectionError("venue closed the stream")
        have += n
        nbytes += n
        f, used = count_frames(buf, have)
        frames += f
        if used:
            rest = have - used
            buf[:rest] = buf[used:have]
            have = rest
    return frames, nbytes, time.perf_counter() - t0


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if RESULTS:
        print("\nvenue firehose to one client")
        for name, (fps, mbps) in RESULTS.items():
            print(f"  {name:<10} {fps / 1e3:9.1f} k msgs/s  {mbps:7.1f} MB/s")


@pytest.mark.parametrize("mode", ["raw", "combined"])
def test_venue_firehose_messages_per_second(benchmark, mode):
    syms = [s.symbol.lower() for s in default_catalog() if s.status == "TRADING"]
    names = "/".join(f"{s}@bookTicker/{s}@depth@0ms/{s}@aggTrade" for s in syms)
    path = f"/public/ws/{names}" if mode == "raw" else f"/public/stream?streams={names}"
    count_frames(np.zeros(16, np.uint8), 0)  # compile outside the measurement
    with start_venue(VenueConfig(rate=2_000_000, backpressure=True, bursts=False, max_queue_bytes=8 << 20)) as v:
        sock = _open(v.port, path)
        _measure(sock, 0.3)  # warm-up: queues and socket buffers fill
        samples = []

        def run():
            samples.append(_measure(sock, WINDOW_S))

        benchmark.pedantic(run, rounds=size(3, 1), iterations=1)
        sock.close()
    frames = sum(s[0] for s in samples)
    nbytes = sum(s[1] for s in samples)
    secs = sum(s[2] for s in samples)
    RESULTS[mode] = (frames / secs, nbytes / secs / 1e6)
    benchmark.extra_info["msgs_per_s"] = frames / secs
    benchmark.extra_info["MB_per_s"] = nbytes / secs / 1e6
    assert frames > 0
