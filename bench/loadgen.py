"""Cheap market-data load for the Feed: prebuilt websocket frames replayed at a set rate, in a process of its own at
lower priority (nice 10), so the generating side costs little next to the engine it loads.

It is a websocket server that speaks just enough RFC 6455 for the Feed (handshake, unmasked server frames, the
client's frames read and dropped) on the Feed's routes (`/public/stream?streams=...`, `/market/stream?...`,
`/stream?...`). Every frame is a bookTicker of one of N symbols, built once; per batch only the fixed-width update
ids are rewritten in place (vectorised), so the Feed's de-duplication sees new events and publishes them.

    python bench/loadgen.py --symbols 300 --rate 100000 --port 9555        # serve until Ctrl-C
    python bench/loadgen.py --selftest --rate 100000 --seconds 10          # cost of the generator alone

Point the engine at it with `[feed] ws_url = "ws://127.0.0.1:9555"` (the symbol table still comes from the venue:
use symbol names the venue lists: `[venue] symbols = 300` lists SYN0001USDT..SYN0280USDT after 20 real ones, so
`--symbols SYN0001USDT,...,SYN0280USDT` with `--first 1 --symbols 280` here; and `[feed] streams = ["bookTicker"]`,
the only stream this serves).
--selftest runs the generator against a reader that drops everything and prints the generator's CPU per second of
wall time at the rate asked, and the rate reached.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import resource
import socket
import sys
import threading
import time

import numpy as np

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
U_DIGITS = 13                    # fixed-width update id: 10**12 .. 10**13 - 1, rewritten in place per batch
BATCH_MS = 1.0


def symbol_names(n: int, first: int = 0) -> list[str]:
    """The names the embedded venue gives its synthetic symbols (aegis.venue.catalog: SYN0001USDT ...)."""
    return [f"SYN{i:04d}USDT" for i in range(first, first + n)]


def build_frames(names: list[str], copies: int = 4):
    """One long buffer of `copies` frames per symbol (server frames: unmasked) and the offsets of their update ids."""
    frames, u_offs, pos = [], [], 0
    for c in range(copies):
        for k, s in enumerate(names):
            px = 100.0 + k + c * 0.01
            body = (b'{"stream":"' + s.lower().encode() + b'@bookTicker","data":{"e":"bookTicker","u":' +
                    b"1" + b"0" * (U_DIGITS - 1) + b',"s":"' + s.encode() + b'","b":"' + f"{px:.2f}".encode() +
                    b'","B":"1.000","a":"' + f"{px + 0.01:.2f}".encode() + b'","A":"2.000","T":1,"E":1}}')
            n = len(body)
            head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126, n >> 8, n & 0xFF])
            u_at = body.index(b'"u":') + 4
            frames.append(head + body)
            u_offs.append(pos + len(head) + u_at)
            pos += len(head) + n
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    ends = np.cumsum([len(f) for f in frames])
    return buf, np.array(u_offs, np.int64), ends


def stamp_ids(buf: np.ndarray, u_offs: np.ndarray, first: int) -> None:
    """Write update ids first, first+1, ... (U_DIGITS ASCII digits each) at u_offs, vectorised."""
    ids = first + np.arange(len(u_offs), dtype=np.int64)
    p = 10 ** np.arange(U_DIGITS - 1, -1, -1, dtype=np.int64)
    digits = (ids[:, None] // p[None, :]) % 10 + 48
    idx = u_offs[:, None] + np.arange(U_DIGITS)[None, :]
    buf[idx] = digits.astype(np.uint8)


def handshake(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    key = b""
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return True


def serve_connection(conn: socket.socket, names: list[str], rate: float, stop: threading.Event, stats: dict) -> None:
    buf, u_offs, ends = build_frames(names)
    n_frames = len(u_offs)
    per_batch = max(1, int(rate * BATCH_MS / 1000.0))
    conn.setblocking(True)
    next_id = 10 ** (U_DIGITS - 1)
    pos = 0                       # next frame index in the cyclic buffer
    t_next = time.perf_counter()
    mv = memoryview(buf)
    while not stop.is_set():
        k = min(per_batch, n_frames - pos)
        stamp_ids(buf, u_offs[pos:pos + k], next_id)
        start = 0 if pos == 0 else int(ends[pos - 1])
        try:
            conn.sendall(mv[start:int(ends[pos + k - 1])])
        except OSError:
            return
        next_id += k
        stats["sent"] += k
        pos = (pos + k) % n_frames
        t_next += BATCH_MS / 1000.0 * k / per_batch
        delay = t_next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:        # cannot keep up: do not build a backlog, report the rate reached instead
            t_next = time.perf_counter()


def serve(port: int, names: list[str], rate: float, stop: threading.Event, stats: dict) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    srv.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        if handshake(conn):
            # every connection gets the whole rate: the Feed opens one per route, give the rate to the first
            if stats.get("conns", 0) == 0:
                threading.Thread(target=serve_connection, args=(conn, names, rate, stop, stats), daemon=True).start()
            stats["conns"] = stats.get("conns", 0) + 1
    srv.close()


def selftest(rate: float, seconds: float, n_symbols: int) -> None:
    """The generator in this process (nice 10) against a reader process that drops everything."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:                  # the sink
        a.close()
        while b.recv(1 << 20):
            pass
        os._exit(0)
    b.close()
    os.nice(10)
    stop = threading.Event()
    stats = {"sent": 0}
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    th = threading.Thread(target=serve_connection, args=(a, symbol_names(n_symbols), rate, stop, stats), daemon=True)
    th.start()
    time.sleep(seconds)
    stop.set()
    th.join(2)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    a.close()
    os.waitpid(pid, 0)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    wall = t1 - t0
    print(f"loadgen selftest: asked {rate:.0f} msg/s over {n_symbols} symbols for {wall:.1f}s: sent "
          f"{stats['sent'] / wall:.0f} msg/s; generator CPU {cpu / wall * 100:.1f}% of one core "
          f"(user {r1.ru_utime - r0.ru_utime:.2f}s sys {r1.ru_stime - r0.ru_stime:.2f}s); load average "
          f"{os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/loadgen.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--symbols", type=int, default=300)
    p.add_argument("--rate", type=float, default=100_000, help="messages per second (all symbols together)")
    p.add_argument("--first", type=int, default=1, help="number of the first SYNnnnnUSDT symbol (the venue's start at 1)")
    p.add_argument("--port", type=int, default=9555)
    p.add_argument("--selftest", action="store_true", help="measure the generator alone and exit")
    p.add_argument("--seconds", type=float, default=10.0, help="--selftest length")
    a = p.parse_args(argv)
    if a.symbols < 1 or a.rate <= 0:
        print("loadgen: error: --symbols and --rate must be positive", file=sys.stderr)
        return 2
    if a.selftest:
        selftest(a.rate, a.seconds, a.symbols)
        return 0
    os.nice(10)
    stop, stats = threading.Event(), {"sent": 0}
    try:
        serve(a.port, symbol_names(a.symbols, a.first), a.rate, stop, stats)
    except KeyboardInterrupt:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
