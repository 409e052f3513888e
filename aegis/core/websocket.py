"""RFC 6455 websocket framing: the one frame encoder and decoder of the Feed (client) and the embedded venue (server).

Decoding is `split_frames`, jitted: it walks the frames in a byte buffer and returns (offset, length, opcode, flags)
per frame without copying a payload, unmasking client frames in place. Which side reads decides the masking rule
(RFC 6455 5.1): a server must close the connection on an unmasked client frame, and a client must close it on a
masked server frame; both are protocol errors (close code 1002). A frame longer than the reader accepts is refused
from its header alone (1009), before its payload is waited for.

Encoding is `encode_frame`: unmasked as a server sends, or masked with a fresh random key as a client must.
"""
from __future__ import annotations

import base64
import hashlib
import os
import struct

import numpy as np

from aegis.core.jit import njit

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# split_frames status, and the close code each one is answered with
SPLIT_OK = 0
SPLIT_PROTOCOL_ERROR = 1   # reserved bits or opcode, a bad length, a long or fragmented control frame: 1002
SPLIT_BAD_MASK = 2         # a client frame without the mask bit, or a server frame with it: 1002
SPLIT_TOO_BIG = 3          # a frame longer than the reader accepts: 1009
CLOSE_CODE = {SPLIT_PROTOCOL_ERROR: 1002, SPLIT_BAD_MASK: 1002, SPLIT_TOO_BIG: 1009}
SPLIT_PROBLEM = {SPLIT_PROTOCOL_ERROR: "frame breaks RFC 6455 (reserved bits or opcode, length, or control frame)",
                 SPLIT_BAD_MASK: "frame masked the wrong way for its direction (RFC 6455 5.1)",
                 SPLIT_TOO_BIG: "frame too big"}

# per-frame flag bits returned by the splitter
FR_FIN = 1
FR_SPECIAL = 2   # control frame or part of a fragmented message: the reader's slow path handles it

# masking rule of split_frames: what the reader expects of the frames it reads
FROM_CLIENT = 1  # the reader is a server: every frame must be masked
FROM_SERVER = 0  # the reader is a client: no frame may be masked

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@njit(cache=True, nogil=True)
def split_frames(buf, start, end, offs, lens, ops, flags, max_frames, from_client, max_len):
    """Walk complete frames in buf[start:end].

    Fills offs/lens/ops/flags for up to max_frames frames (payload offset and length into buf) and returns
    (frames found, position after the last complete frame, number of FR_SPECIAL frames, status). A trailing partial
    frame is left for the next call (the returned position is where it starts). from_client: FROM_CLIENT or
    FROM_SERVER (the masking rule); max_len: the longest payload accepted."""
    pos = start
    n = 0
    special = 0
    while n < max_frames:
        if end - pos < 2:
            break
        b0 = buf[pos]
        b1 = buf[pos + 1]
        if b0 & 0x70:
            return n, pos, special, SPLIT_PROTOCOL_ERROR
        op = b0 & 0x0F
        if (op > 2 and op < 8) or op > 10:
            return n, pos, special, SPLIT_PROTOCOL_ERROR
        fin = (b0 & 0x80) != 0
        masked = (b1 & 0x80) != 0
        ln = np.int64(b1 & 0x7F)
        h = pos + 2
        if ln == 126:
            if end - h < 2:
                break
            ln = (np.int64(buf[h]) << 8) | np.int64(buf[h + 1])
            h += 2
        elif ln == 127:
            if end - h < 8:
                break
            if buf[h] & 0x80:
                return n, pos, special, SPLIT_PROTOCOL_ERROR
            ln = np.int64(0)
            for k in range(8):
                ln = (ln << 8) | np.int64(buf[h + k])
            h += 8
        if op >= 8 and (ln > 125 or not fin):
            return n, pos, special, SPLIT_PROTOCOL_ERROR
        if ln > max_len:
            return n, pos, special, SPLIT_TOO_BIG
        if masked != (from_client != 0):
            return n, pos, special, SPLIT_BAD_MASK
        mk = h
        if masked:
            if end - h < 4:
                break
            h += 4
        if end - h < ln:
            break
        if masked:
            # unmasked exactly once: the returned position moves past this frame, so it is never split again
            for k in range(ln):
                buf[h + k] ^= buf[mk + (k & 3)]
        offs[n] = h
        lens[n] = ln
        ops[n] = op
        f = FR_FIN if fin else 0
        if op >= 8 or op == OP_CONT or not fin:
            f |= FR_SPECIAL
            special += 1
        flags[n] = f
        n += 1
        pos = h + ln
    return n, pos, special, SPLIT_OK


@njit(cache=True, nogil=True)
def put_text_header(out, pos, length):
    """The header of an unmasked, unfragmented text frame (a server's) at out[pos:]; returns the position after it."""
    out[pos] = 0x81
    if length < 126:
        out[pos + 1] = length
        return pos + 2
    if length < 65536:
        out[pos + 1] = 126
        out[pos + 2] = (length >> 8) & 0xFF
        out[pos + 3] = length & 0xFF
        return pos + 4
    out[pos + 1] = 127
    for j in range(8):
        out[pos + 2 + j] = (length >> (8 * (7 - j))) & 0xFF
    return pos + 10


def frame_header(opcode: int, length: int, fin: bool = True, masked: bool = False, rsv: int = 0) -> bytes:
    """The header of one frame (without the masking key); rsv sets reserved bits (only a fault injector does)."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    m = 0x80 if masked else 0
    if length < 126:
        return bytes((b0, m | length))
    if length < 65536:
        return struct.pack("!BBH", b0, m | 126, length)
    return struct.pack("!BBQ", b0, m | 127, length)


_SMALL_TEXT_HDR = [bytes((0x81, n)) for n in range(126)]   # the venue's common case: small unfragmented text


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """payload XOR the 4-byte masking key, repeated (its own inverse)."""
    n = len(payload)
    if not n:
        return b""
    p = np.frombuffer(payload, np.uint8)
    k = np.frombuffer((key * ((n + 3) // 4))[:n], np.uint8)
    return (p ^ k).tobytes()


def encode_frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True, key: bytes | None = None) -> bytes:
    """One frame: unmasked as a server sends it, or masked (with `key`, else a fresh random one) as a client must."""
    n = len(payload)
    if not masked:
        if opcode == OP_TEXT and fin and n < 126:
            return _SMALL_TEXT_HDR[n] + payload
        return frame_header(opcode, n, fin) + payload
    key = os.urandom(4) if key is None else key
    return frame_header(opcode, n, fin, masked=True) + key + mask_bytes(payload, key)


def encode_close(code: int | None = 1000, reason: str = "", *, masked: bool) -> bytes:
    """A CLOSE frame; code None sends none (an empty body). The reason is cut to fit a control frame."""
    body = b"" if code is None else struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, body, masked=masked)


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a CLOSE frame's payload; (None, "") when it carries no code."""
    if len(payload) >= 2:
        (code,) = struct.unpack("!H", payload[:2])
        return code, payload[2:].decode("utf-8", "replace")
    return None, ""


def accept_key(sec_websocket_key: str) -> str:
    """Sec-WebSocket-Accept of a handshake's Sec-WebSocket-Key."""
    digest = hashlib.sha1(sec_websocket_key.strip().encode("ascii") + WS_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_client_key(key: str) -> bool:
    """A Sec-WebSocket-Key is 16 random bytes in base64."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except Exception:
        return False
