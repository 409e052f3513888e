"""Feed fast path vs websocket-client, in the same run, over loopback.

A local websocket server process (real RFC 6455 handshake, then pre-encoded unmasked frames sent in bulk) streams
combined-stream bookTicker messages ({"stream": ..., "data": {...}}, 20 symbols, increasing u). Two clients
read the same kind of stream:
  baseline   websocket-client's plain `ws.recv()` loop (one Python str per message, nothing else done with it)
  fast path  the Feed's own read path: websocket-client handshake, then per read FrameReader.read (recv_into),
             a receive stamp and FeedEngine.ingest, the one jitted call that splits, parses, conflates and
             publishes into the ring and records recv->publish latency (the ring is consumed as it fills)
and the messages/s of both and their ratio are printed. Target: fast path >= 1 M bookTicker msgs/s on one core.

A second test (test_recv_to_publish_by_arrival) feeds the same read path from a paced sender on the other core, one
frame a read every 500 us, or seven a read every 3.5 ms (a read of quotes in the default run holds ~7), and prints
the engine's recv -> publish percentiles of each (issue 15, item 3).

    python bench/bench_feed.py                                  # figures, < 60 s including compilation
    pytest bench/bench_feed.py --benchmark-min-rounds=1 -q -s   # same, as a pytest-benchmark run
"""
from __future__ import annotations

import base64
import hashlib
import multiprocessing as mp
import os
import socket
import sys
import time
import uuid

import numpy as np
from aegis.core.jit import njit

from aegis.core import latency
from aegis.core import ring as R
from aegis.core.clock import py_now_ns
from aegis.feed.parse import ST_QUOTES
from aegis.feed.process import FeedConfig, FeedEngine, warm_up
from aegis.binance.symbols import BUILTIN_SYMBOLS, SymbolTable
from aegis.core.wait import SLEEP
from aegis.core.websocket import OP_TEXT, encode_frame
from aegis.feed.wsframes import ConnectionClosed, FrameReader, connect
from benchmode import size

N_FAST = size(2_000_000, 20_000)
N_BASELINE = size(100_000, 2_000)
TARGET = 1_000_000
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def prebuilt_frames(n_distinct: int = 20_000, u0: int = 10_708_444_522_016) -> list[bytes]:
    """n_distinct server frames with realistic bookTicker payloads; u grows by block so repeats stay unique."""
    parts = []
    rng = np.random.default_rng(1)
    names = [n for n, _, _ in BUILTIN_SYMBOLS]
    for i in range(n_distinct):
        s = names[i % len(names)]
        px = 100.0 + rng.integers(0, 10_000) / 100
        payload = (b'{"stream":"%s@bookTicker","data":{"e":"bookTicker","u":%d,"s":"%s","b":"%.2f","B":"%.3f",'
                   b'"a":"%.2f","A":"%.3f","T":1780563843114,"E":1780563843114}}'
                   % (s.lower().encode(), u0 + i, s.encode(), px, rng.random() * 10, px + 0.01, rng.random() * 10))
        parts.append(encode_frame(OP_TEXT, payload, masked=False))
    return parts


def _serve(port_q, n_messages: int):
    """One connection: handshake, then n_messages frames in bulk, then a close frame."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_q.put(srv.getsockname()[1])
    frames = prebuilt_frames()
    blob, per_blob = b"".join(frames), len(frames)
    conn, _ = srv.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += conn.recv(4096)
    key = [ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sent = 0
    try:
        while sent + per_blob <= n_messages:
            conn.sendall(blob)
            sent += per_blob
        if sent < n_messages:   # the tail: whole frames only
            conn.sendall(b"".join(frames[:n_messages - sent]))
        conn.sendall(b"\x88\x02\x03\xe8")
        time.sleep(1.0)
    except OSError:
        pass
    finally:
        conn.close()
        srv.close()


def _server(n_messages: int):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_serve, args=(q, n_messages), daemon=True)
    p.start()
    return p, q.get(timeout=10)


def run_baseline(n: int = N_BASELINE) -> float:
    import websocket

    p, port = _server(n)
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/public/stream", timeout=10)
    got = 0
    t0 = time.perf_counter()
    try:
        while got < n:
            ws.recv()
            got += 1
    finally:
        dt = time.perf_counter() - t0
        ws.close()
        p.join(5)
    return got / dt


@njit(cache=True, nogil=True)
def _consume_all(header):
    n = R.available(header)
    if n:
        R.consume(header, n)
    return n


def _read_loop(eng, reader, header, keep_going, spin_yield: bool = False) -> None:
    """The Feed's read step, as FeedEngine._read does it: read, stamp, one ingest per read; the ring is consumed as it
    fills. Ends when keep_going() is false or the connection closes (the peer's close frame or its TCP close)."""
    while keep_going():
        try:
            if not reader.read():
                if spin_yield:
                    os.sched_yield()
                continue
            eng.ingest(reader, py_now_ns())
        except ConnectionClosed:
            return
        _consume_all(header)


def run_fast(n: int = N_FAST) -> tuple[float, int]:
    table = SymbolTable.build(BUILTIN_SYMBOLS)
    rg = R.Ring.create("aegis-bench-feed-" + uuid.uuid4().hex[:8], 1 << 16)
    # the server repeats one block of 20 000 frames, so update ids repeat: dedupe would drop the repeats after
    # parsing them (same work, different counter); it is off so every message also goes through the ring
    eng = FeedEngine(table, FeedConfig(streams=("bookTicker",), dedupe=False), rg.header, rg.records, "", "",
                     wait=SLEEP, latency_set=latency.new_set())
    p, port = _server(n)
    reader = connect(f"ws://127.0.0.1:{port}/public/stream", buffer_size=8 << 20)
    header = rg.header
    quotes = eng.parser.stats
    t0 = time.perf_counter()
    try:
        _read_loop(eng, reader, header, lambda: quotes[ST_QUOTES] < n)
    finally:
        dt = time.perf_counter() - t0
        eng.close()
        reader.close()
        p.join(5)
        _consume_all(header)
        got = int(quotes[ST_QUOTES])
        del eng, quotes, header
        rg.close()
        rg.unlink()
    return got / dt, got


def measure() -> dict:
    warm_up()     # the Feed's own warm-up: compiles (or loads) every kernel of the read path
    base = run_baseline()
    fast, quotes = run_fast()
    return {"baseline_msgs_per_s": base, "fast_msgs_per_s": fast, "ratio": fast / base, "fast_quotes": quotes,
            "target_met": fast >= TARGET}


def report(m: dict) -> str:
    return (f"websocket-client recv(): {m['baseline_msgs_per_s']:,.0f} msgs/s | aegis fast path: "
            f"{m['fast_msgs_per_s']:,.0f} bookTicker msgs/s ({m['fast_quotes']:,} parsed into the ring) | "
            f"ratio {m['ratio']:.1f}x | target {TARGET:,}/s {'met' if m['target_met'] else 'NOT met'}")


def test_feed_fast_path_against_websocket_client(benchmark):
    m = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(m)
    print("\n" + report(m))
    assert m["fast_quotes"] == N_FAST


# ------------------------------------------------------------------ recv -> publish by the way frames arrive
ARRIVALS = (  # (label, frames per send, microseconds between sends, yield while waiting)
    ("1 frame a read, every 500 us, busy-spin", 1, 500, False),
    ("1 frame a read, every 500 us, spin-yield", 1, 500, True),
    ("7 frames a read, every 3.5 ms, spin-yield", 7, 3500, True),
)
N_ARRIVAL = size(6_000, 210)


def _paced_sender(sock, per_send: int, gap_us: int, n: int, core: int | None):
    """Send n prebuilt bookTicker frames, per_send at a time, gap_us apart (sleeping, then spinning the last 0.2 ms:
    the sender takes little CPU, as a remote exchange would take none of ours)."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    frames = prebuilt_frames(n)
    time.sleep(0.2)
    t = time.perf_counter()
    for i in range(0, n, per_send):
        t += gap_us / 1e6
        while True:
            d = t - time.perf_counter()
            if d <= 0:
                break
            if d > 0.0002:
                time.sleep(d - 0.0002)
        sock.sendall(b"".join(frames[i:i + per_send]))
    sock.close()


def run_arrival(per_send: int, gap_us: int, spin_yield: bool, n: int = N_ARRIVAL) -> dict:
    """The Feed's read loop (FrameReader.read on a non-blocking loopback TCP socket, receive stamp, FeedEngine.ingest)
    on one core, fed by a paced sender on another: the engine's recv -> publish histogram of those frames."""
    table = SymbolTable.build(BUILTIN_SYMBOLS)
    rg = R.Ring.create("aegis-bench-arrival-" + uuid.uuid4().hex[:8], 1 << 16)
    hset = latency.new_set()
    eng = FeedEngine(table, FeedConfig(streams=("bookTicker",), dedupe=False), rg.header, rg.records, "", "",
                     wait=SLEEP, latency_set=hset)
    srv = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    srv.close()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.setblocking(False)
    mine = os.sched_getaffinity(0)
    cores = sorted(mine)
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[0]})
    p = mp.get_context("fork").Process(target=_paced_sender, daemon=True,
                                       args=(conn, per_send, gap_us, n, cores[1] if len(cores) > 1 else None))
    p.start()
    conn.close()
    reader = FrameReader(client, buffer_size=1 << 20)
    deadline = time.monotonic() + 30 + n * gap_us / per_send / 1e6
    try:
        _read_loop(eng, reader, rg.header, lambda: time.monotonic() < deadline, spin_yield)
    finally:
        os.sched_setaffinity(0, mine)
        p.join(5)
        reader.close()
        eng.close()
    h = hset[latency.STAGE_FEED]
    out = {"records": int(latency.count(h))}
    for q in (50.0, 90.0, 99.0):
        out[f"p{q:g}_us"] = latency.percentile(h, q) / 1e3
    del eng, h, hset
    rg.close()
    rg.unlink()
    return out


def test_recv_to_publish_by_arrival(benchmark):
    """Issue 15, item 3: how much of the live recv -> publish is the way frames arrive. Every record of a read is
    stamped when the read returns, so a frame that arrives with six others waits for their parse."""
    warm_up()

    def measure_all():
        return {label: run_arrival(per, gap, y) for label, per, gap, y in ARRIVALS}

    res = benchmark.pedantic(measure_all, rounds=1, iterations=1)
    print()
    for label, r in res.items():
        print(f"{label:44s} recv->publish p50 {r['p50_us']:6.2f} us  p90 {r['p90_us']:6.2f} us  "
              f"p99 {r['p99_us']:7.2f} us  ({r['records']} records)")
        benchmark.extra_info[label] = r
    single, burst = res[ARRIVALS[1][0]], res[ARRIVALS[2][0]]
    print(f"bursts of 7 against single frames, p50: x{burst['p50_us'] / single['p50_us']:.2f}")
    for r in res.values():
        assert r["records"] == N_ARRIVAL


if __name__ == "__main__":
    m = measure()
    print(report(m))
    sys.exit(0)
