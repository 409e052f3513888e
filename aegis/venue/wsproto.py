"""The venue's websocket reader (server side): client frames from a blocking socket, reassembled into messages.

Frames are split by the engine's one websocket codec (aegis.core.websocket.split_frames) with the server's rule:
every client frame must be masked (RFC 6455 5.1), so an unmasked one is a protocol error (close 1002).
"""
from __future__ import annotations

import numpy as np

from aegis.core import websocket as ws

CONTROL_OPCODES = (ws.OP_CLOSE, ws.OP_PING, ws.OP_PONG)

# A client can claim any payload length in the header; cap what we agree to buffer.
MAX_FRAME_PAYLOAD = 16 * 1024 * 1024
MAX_MESSAGE_PAYLOAD = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The peer broke RFC 6455; close_code says how we answer it."""

    def __init__(self, msg: str, close_code: int = 1002):
        super().__init__(msg)
        self.close_code = close_code


class FrameReader:
    """Reads client frames from a blocking socket and reassembles messages.

    next_message() returns (opcode, payload) for a complete data message or any
    control frame (control frames may arrive between fragments, RFC 6455 5.4).
    """

    def __init__(self, sock, require_mask: bool = True, pending: bytes = b"",
                 max_message: int = MAX_MESSAGE_PAYLOAD):
        self._sock = sock
        self._max_message = min(max_message, MAX_FRAME_PAYLOAD)   # larger frames: 1009 from the header
        self._rule = ws.FROM_CLIENT if require_mask else ws.FROM_SERVER
        self._buf = np.zeros(max(1 << 16, 2 * len(pending)), np.uint8)
        self._buf[:len(pending)] = np.frombuffer(bytes(pending), np.uint8)   # read along with the handshake
        self._head, self._tail = 0, len(pending)
        self._offs = np.zeros(1, np.int64)
        self._lens = np.zeros(1, np.int64)
        self._ops = np.zeros(1, np.uint8)
        self._flags = np.zeros(1, np.uint8)
        self._frag_opcode: int | None = None
        self._frag_parts: list[bytes] = []
        self._frag_len = 0

    def _recv(self) -> None:
        if self._head:
            rest = self._tail - self._head
            self._buf[:rest] = self._buf[self._head:self._tail].copy()
            self._head, self._tail = 0, rest
        if self._tail == len(self._buf):   # one frame larger than the buffer (split_frames capped its length)
            grown = np.zeros(2 * len(self._buf), np.uint8)
            grown[:self._tail] = self._buf[:self._tail]
            self._buf = grown
        got = self._sock.recv_into(memoryview(self._buf)[self._tail:])
        if not got:
            raise ConnectionError("peer closed the TCP connection")
        self._tail += got

    def read_frame(self) -> tuple[bool, int, bytes]:
        while True:
            n, end, _, status = ws.split_frames(self._buf, self._head, self._tail, self._offs, self._lens, self._ops,
                                                self._flags, 1, self._rule, self._max_message)
            if status != ws.SPLIT_OK:
                raise ProtocolError(ws.SPLIT_PROBLEM[status], ws.CLOSE_CODE[status])
            if n:
                o = int(self._offs[0])
                payload = self._buf[o:o + int(self._lens[0])].tobytes()
                self._head = end
                return bool(self._flags[0] & ws.FR_FIN), int(self._ops[0]), payload
            self._recv()

    def next_message(self) -> tuple[int, bytes]:
        while True:
            fin, opcode, payload = self.read_frame()
            if opcode in CONTROL_OPCODES:
                return opcode, payload
            if opcode == ws.OP_CONT:
                if self._frag_opcode is None:
                    raise ProtocolError("continuation frame without a started message")
                self._frag_parts.append(payload)
                self._frag_len += len(payload)
            else:
                if self._frag_opcode is not None:
                    raise ProtocolError("new data frame inside a fragmented message")
                if fin:
                    return self._checked(opcode, payload)
                self._frag_opcode = opcode
                self._frag_parts = [payload]
                self._frag_len = len(payload)
            if self._frag_len > self._max_message:
                raise ProtocolError("message too big", 1009)
            if fin:
                op = self._frag_opcode
                data = b"".join(self._frag_parts)
                self._frag_opcode, self._frag_parts, self._frag_len = None, [], 0
                return self._checked(op, data)

    @staticmethod
    def _checked(opcode: int, payload: bytes) -> tuple[int, bytes]:
        if opcode == ws.OP_TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("text message is not valid UTF-8", 1007) from None
        return opcode, payload
