"""Websocket client transport for the Feed: the library does the handshake, we read frames in bulk.

websocket-client's `recv()` costs tens of microseconds per message (a Python object per frame, per-frame socket
reads, UTF-8 validation). After its handshake (which also does TLS and proxies) the Feed takes the raw socket and
calls `recv_into` on one large preallocated buffer; the engine's websocket codec (aegis.core.websocket.split_frames,
jitted) walks the RFC 6455 frame headers in that buffer and returns (offset, length, opcode) triples without copying
a payload. A frame cut by a read boundary stays in the buffer and is completed by the next read.

Server frames are never masked: a masked one fails the connection (close 1002, RFC 6455 5.1), as does any other
protocol error. Control frames (PING, PONG, CLOSE) and fragmented messages are rare and handled in Python: a PING is
answered at once with a PONG carrying the same payload (Binance disconnects clients that do not echo it), masked as
every client frame must be; a CLOSE is echoed and the connection reported closed.
"""
from __future__ import annotations

import select
import socket
import ssl
import struct
import time

import numpy as np
from numba.experimental import structref

from aegis.core import websocket as ws
from aegis.core.bundle import BundleType
from aegis.core.jit import njit
from aegis.core.memory import prefault
from aegis.core.websocket import (FR_FIN, FR_SPECIAL, FROM_SERVER, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG,
                                  OP_TEXT, SPLIT_OK, split_frames)

DEFAULT_BUFFER = 4 << 20
MAX_FRAME = 64 << 20        # longest server frame accepted (Binance's largest, !markPrice@arr, is ~100 kB)

# FrameReader.pos slots: the reader's cursors live in an int64 array so jitted code (aegis.feed.process's fused ingest)
# can advance them without a round trip through Python attributes
POS_HEAD, POS_TAIL, POS_N, POS_SPECIAL = range(4)
POS_COUNT = 4


@structref.register
class FrameStateType(BundleType):
    """Numba type of FrameState: the reader's buffer, frame tables and cursors as one argument."""


class FrameState(structref.StructRefProxy):
    """One FrameReader's arrays bundled for jitted callers: passing one StructRef costs one unboxing instead of
    six array unboxings per call (each ~30-50 ns on the Python -> jitted boundary)."""


structref.define_proxy(FrameState, FrameStateType, ["buf", "offs", "lens", "ops", "flags", "pos"])


@njit(cache=True)
def make_frame_state(buf, offs, lens, ops, flags, pos):
    # a cached constructor: the proxy's own one is compiled afresh in every process (~0.4 s)
    return FrameState(buf, offs, lens, ops, flags, pos)


@njit(cache=True, nogil=True)
def split_server_frames(buf, start, end, offs, lens, ops, flags, max_frames):
    """split_frames with a client's rule: server frames, unmasked, at most MAX_FRAME bytes each."""
    return split_frames(buf, start, end, offs, lens, ops, flags, max_frames, FROM_SERVER, MAX_FRAME)


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A frame as this client sends it: masked."""
    return ws.encode_frame(opcode, payload, masked=True, fin=fin)


class ConnectionClosed(Exception):
    pass


class FrameReader:
    """Bulk frame reader over one connected (post-handshake) socket.

    read() pulls whatever the kernel has into the buffer and returns the bytes read; frames() splits it.
    The payload views (offs/lens into self.buf) stay valid until the next read(). `state` bundles the arrays for
    jitted callers that split in place of frames() (aegis.feed.process's fused ingest); it is rebuilt when the buffer
    grows, so it always holds the current buffer, and its numba type never changes.
    """

    def __init__(self, sock, buffer_size: int = DEFAULT_BUFFER, max_frames: int = 1 << 16, owner=None):
        self.sock = sock
        self._owner = owner  # the websocket-client object: keeps the socket from being closed by its finaliser
        self.buf = np.zeros(buffer_size, np.uint8)
        self._mv = memoryview(self.buf)
        self.pos = np.zeros(POS_COUNT, np.int64)   # head (first byte not yet split), tail (end of received data),
        #                                            frames and special frames of the last split
        self.offs = np.zeros(max_frames, np.int64)
        self.lens = np.zeros(max_frames, np.int64)
        self.ops = np.zeros(max_frames, np.uint8)
        self.flags = np.zeros(max_frames, np.uint8)
        # a backlog fills the buffer deep: its pages are made resident here, not during that backlog
        prefault(self.buf, self.offs, self.lens, self.ops, self.flags)
        self.state = make_frame_state(self.buf, self.offs, self.lens, self.ops, self.flags, self.pos)
        self.closed = False
        self.close_code = None
        self.bytes_in = 0
        self._frag_op = 0
        self._frag = bytearray()
        self._is_ssl = isinstance(sock, ssl.SSLSocket)
        sock.setblocking(False)

    @property
    def head(self) -> int:
        return int(self.pos[POS_HEAD])

    @head.setter
    def head(self, v: int) -> None:
        self.pos[POS_HEAD] = v

    @property
    def tail(self) -> int:
        return int(self.pos[POS_TAIL])

    @tail.setter
    def tail(self, v: int) -> None:
        self.pos[POS_TAIL] = v

    @property
    def n(self) -> int:
        return int(self.pos[POS_N])

    @property
    def special(self) -> int:
        return int(self.pos[POS_SPECIAL])

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> bool:
        """TLS may hold decrypted bytes that select() cannot see."""
        return self._is_ssl and self.sock.pending() > 0

    def _make_room(self) -> None:
        head, tail = self.head, self.tail
        if head > 0:
            rem = tail - head
            if rem:
                self.buf[:rem] = self.buf[head:tail].copy()
            self.head, self.tail = 0, rem
        if self.tail == len(self.buf):  # one frame larger than the buffer: grow
            nb = np.zeros(len(self.buf) * 2, np.uint8)
            prefault(nb)
            nb[:self.tail] = self.buf[:self.tail]
            self.buf = nb
            self._mv = memoryview(nb)
            self.state = make_frame_state(nb, self.offs, self.lens, self.ops, self.flags, self.pos)

    def read(self) -> int:
        """Receive what is available without blocking: bytes read (0 = nothing yet). Raises ConnectionClosed."""
        if self.closed:
            raise ConnectionClosed("closed")
        pos = self.pos
        if pos[POS_HEAD] == pos[POS_TAIL]:
            pos[POS_HEAD] = pos[POS_TAIL] = 0
        elif len(self.buf) - pos[POS_TAIL] < 65536:
            self._make_room()
        try:
            got = self.sock.recv_into(self._mv[int(pos[POS_TAIL]):])
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return 0
        except (OSError, ssl.SSLError) as e:
            self.closed = True
            raise ConnectionClosed(f"recv failed: {e}") from None
        if got == 0:
            self.closed = True
            raise ConnectionClosed("peer closed the TCP connection")
        pos[POS_TAIL] += got
        self.bytes_in += got
        return got

    def frames(self) -> int:
        """Split the received bytes into frames; returns the count. Raises ConnectionClosed on a protocol error."""
        pos = self.pos
        n, end, special, status = split_server_frames(self.buf, pos[POS_HEAD], pos[POS_TAIL], self.offs, self.lens,
                                                      self.ops, self.flags, len(self.offs))
        if status != SPLIT_OK:
            self.protocol_error(status)
        pos[POS_HEAD] = end
        pos[POS_N] = n
        pos[POS_SPECIAL] = special
        return n

    def protocol_error(self, status: int = ws.SPLIT_PROTOCOL_ERROR) -> None:
        """The server broke RFC 6455 (a split_frames status): answer CLOSE 1002 (1009: frame too big) and raise
        ConnectionClosed."""
        self.closed = True
        self._try_send(encode_frame(OP_CLOSE, struct.pack(">H", ws.CLOSE_CODE[status])))
        raise ConnectionClosed(f"websocket protocol error from the server: {ws.SPLIT_PROBLEM[status]}")

    def handle_special(self, on_message) -> None:
        """Answer PINGs, handle CLOSE, reassemble fragmented messages (delivered through on_message(bytes))."""
        for i in range(self.n):
            if not self.flags[i] & FR_SPECIAL:
                continue
            op = int(self.ops[i])
            payload = bytes(self._mv[self.offs[i]:self.offs[i] + self.lens[i]])
            if op == OP_PING:
                self.send(encode_frame(OP_PONG, payload))
            elif op == OP_PONG:
                pass
            elif op == OP_CLOSE:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self._try_send(encode_frame(OP_CLOSE, payload[:2]))
                self.closed = True
                raise ConnectionClosed(f"server sent CLOSE {self.close_code}")
            elif op in (OP_TEXT, OP_BINARY):  # first fragment
                self._frag_op, self._frag = op, bytearray(payload)
            elif op == OP_CONT:
                self._frag += payload
                if self.flags[i] & FR_FIN:
                    msg, self._frag = bytes(self._frag), bytearray()
                    on_message(msg)

    def send(self, data: bytes, timeout: float = 2.0) -> None:
        """Send all bytes on the non-blocking socket (control frames and subscriptions: small and rare)."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                k = self.sock.send(view)
                view = view[k:]
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionClosed("send timed out") from None
                select.select([], [self.sock], [], min(left, 0.05))
            except OSError as e:
                self.closed = True
                raise ConnectionClosed(f"send failed: {e}") from None

    def _try_send(self, data: bytes) -> None:
        try:
            self.send(data, 0.2)
        except ConnectionClosed:
            pass

    def send_text(self, text: bytes | str) -> None:
        self.send(encode_frame(OP_TEXT, text.encode() if isinstance(text, str) else text))

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            self._try_send(encode_frame(OP_CLOSE, struct.pack(">H", code)))
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        self._owner = None


def connect(url: str, timeout: float = 10.0, buffer_size: int = DEFAULT_BUFFER, **ws_options) -> FrameReader:
    """Handshake with websocket-client (TLS, proxy options pass through), then hand the socket to a FrameReader.

    websocket-client reads the HTTP response headers one byte at a time, so no frame bytes are left in its
    buffers when we take the socket over.
    """
    import websocket

    ws = websocket.create_connection(url, timeout=timeout, skip_utf8_validation=True,
                                     enable_multithread=False, **ws_options)
    sock = ws.sock
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    except OSError:
        pass
    return FrameReader(sock, buffer_size, owner=ws)
