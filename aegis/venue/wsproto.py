"""RFC 6455 websocket framing for the embedded venue (server side).

Server frames are never masked; client frames must be masked (RFC 6455 5.1), so a
client frame without the mask bit is a protocol error (close 1002).
"""
from __future__ import annotations

import base64
import hashlib
import struct

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# A client can claim any payload length in the header; cap what we agree to buffer.
MAX_FRAME_PAYLOAD = 16 * 1024 * 1024
MAX_MESSAGE_PAYLOAD = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The peer broke RFC 6455; close_code says how we answer it."""

    def __init__(self, msg: str, close_code: int = 1002):
        super().__init__(msg)
        self.close_code = close_code


def accept_key(sec_websocket_key: str) -> str:
    digest = hashlib.sha1(sec_websocket_key.strip().encode("ascii") + WS_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_client_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except Exception:
        return False


# Precomputed 2-byte headers for the common small unfragmented text frames.
_SMALL_TEXT_HDR = [bytes((0x81, n)) for n in range(126)]


def frame_header(opcode: int, length: int, fin: bool = True, rsv: int = 0, masked: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    m = 0x80 if masked else 0
    if length < 126:
        return bytes((b0, m | length))
    if length < 65536:
        return struct.pack("!BBH", b0, m | 126, length)
    return struct.pack("!BBQ", b0, m | 127, length)


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    if opcode == OP_TEXT and fin and n < 126:
        return _SMALL_TEXT_HDR[n] + payload
    return frame_header(opcode, n, fin) + payload


def encode_close(code: int | None = 1000, reason: str = "") -> bytes:
    if code is None:
        return encode_frame(OP_CLOSE, b"")
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, body)


def mask_bytes(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    reps = (mask * ((n + 3) // 4))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(reps, "little")).to_bytes(n, "little")


def encode_client_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04", fin: bool = True) -> bytes:
    """Masked frame as a client would send it (used by tests and tools)."""
    return frame_header(opcode, len(payload), fin, masked=True) + mask + mask_bytes(payload, mask)


class FrameReader:
    """Reads client frames from a blocking socket and reassembles messages.

    next_message() returns (opcode, payload) for a complete data message or any
    control frame (control frames may arrive between fragments, RFC 6455 5.4).
    """

    def __init__(self, sock, require_mask: bool = True, max_message: int = MAX_MESSAGE_PAYLOAD):
        self._sock = sock
        self._max_message = max_message
        self._buf = bytearray()
        self._require_mask = require_mask
        self._frag_opcode: int | None = None
        self._frag_parts: list[bytes] = []
        self._frag_len = 0

    def _fill(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("peer closed the TCP connection")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._fill(2)
        fin = bool(b0 & 0x80)
        if b0 & 0x70:
            raise ProtocolError("reserved bits set without a negotiated extension")
        opcode = b0 & 0x0F
        if opcode not in CONTROL_OPCODES and opcode not in DATA_OPCODES:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        masked = bool(b1 & 0x80)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._fill(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._fill(8))
        if opcode in CONTROL_OPCODES:
            if length > 125:
                raise ProtocolError("control frame payload > 125 bytes")
            if not fin:
                raise ProtocolError("fragmented control frame")
        if length > MAX_FRAME_PAYLOAD or (opcode not in CONTROL_OPCODES and length > self._max_message):
            raise ProtocolError("frame too big", 1009)     # refused from its header, before reading it
        if self._require_mask and not masked:
            raise ProtocolError("client frame not masked")
        mask = self._fill(4) if masked else b""
        payload = self._fill(length) if length else b""
        if masked:
            payload = mask_bytes(payload, mask)
        return fin, opcode, payload

    def next_message(self) -> tuple[int, bytes]:
        while True:
            fin, opcode, payload = self.read_frame()
            if opcode in CONTROL_OPCODES:
                return opcode, payload
            if opcode == OP_CONT:
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
        if opcode == OP_TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("text message is not valid UTF-8", 1007) from None
        return opcode, payload


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    if len(payload) >= 2:
        (code,) = struct.unpack("!H", payload[:2])
        return code, payload[2:].decode("utf-8", "replace")
    return None, ""
