"""Frame splitter and bulk reader of aegis.feed.wsframes."""
from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from aegis.feed.wsframes import (FR_FIN, FR_SPECIAL, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                            SPLIT_OK, SPLIT_PROTOCOL_ERROR, ConnectionClosed, FrameReader, encode_frame,
                            split_frames)


def _split_all(data: bytes, max_frames: int = 1024):
    buf = np.frombuffer(data, np.uint8).copy()
    offs = np.zeros(max_frames, np.int64)
    lens = np.zeros(max_frames, np.int64)
    ops = np.zeros(max_frames, np.uint8)
    flags = np.zeros(max_frames, np.uint8)
    n, pos, special, status = split_frames(buf, 0, len(buf), offs, lens, ops, flags, max_frames)
    frames = [(int(ops[i]), bytes(buf[offs[i]:offs[i] + lens[i]]), int(flags[i])) for i in range(n)]
    return frames, pos, special, status


def _decode_client_frame(data: bytes) -> tuple[int, bytes, bool]:
    b0, b1 = data[0], data[1]
    ln = b1 & 0x7F
    h = 2
    if ln == 126:
        ln = struct.unpack(">H", data[2:4])[0]
        h = 4
    elif ln == 127:
        ln = struct.unpack(">Q", data[2:10])[0]
        h = 10
    masked = bool(b1 & 0x80)
    key = data[h:h + 4] if masked else b"\0\0\0\0"
    h += 4 if masked else 0
    payload = bytes(c ^ key[i % 4] for i, c in enumerate(data[h:h + ln]))
    return b0 & 0x0F, payload, masked


def test_splitter_reads_7_16_and_64_bit_payload_lengths():
    payloads = [b"x" * 5, b"y" * 125, b"z" * 126, b"w" * 65535, b"v" * 65536, b"u" * 200_000]
    data = b"".join(encode_frame(OP_TEXT, p, mask=False) for p in payloads)
    frames, pos, special, status = _split_all(data)
    assert status == SPLIT_OK and pos == len(data) and special == 0
    assert [p for _, p, _ in frames] == payloads


def test_splitter_leaves_a_partial_frame_for_the_next_read():
    data = encode_frame(OP_TEXT, b'{"a":1}', mask=False) + encode_frame(OP_TEXT, b"b" * 300, mask=False)
    cut = len(data) - 10
    frames, pos, _, status = _split_all(data[:cut])
    assert status == SPLIT_OK and len(frames) == 1 and pos == 9  # 2 header bytes + 7 payload bytes


def test_a_masked_server_frame_is_a_protocol_error_that_fails_the_connection():
    # RFC 6455 5.1: a client must close the connection when a server frame is masked
    good = encode_frame(OP_TEXT, b"fine", mask=False)
    frames, _, _, status = _split_all(good + encode_frame(OP_TEXT, b"hello masked", mask=True))
    assert status == SPLIT_PROTOCOL_ERROR and [f[1] for f in frames] == [b"fine"]


def test_splitter_flags_control_and_fragmented_frames_as_special():
    data = (encode_frame(OP_PING, b"p", mask=False) + encode_frame(OP_TEXT, b"part1", mask=False, fin=False)
            + encode_frame(OP_CONT, b"part2", mask=False) + encode_frame(OP_TEXT, b"whole", mask=False))
    frames, _, special, status = _split_all(data)
    assert status == SPLIT_OK and special == 3
    assert [f & FR_SPECIAL != 0 for _, _, f in frames] == [True, True, True, False]
    assert frames[3][2] & FR_FIN


@pytest.mark.parametrize("bad", [bytes([0x80 | 0x40 | OP_TEXT, 0]),      # RSV1 without an extension
                                 bytes([0x80 | 0x3, 0]),                 # reserved opcode
                                 bytes([OP_PING, 1, 0x41]),              # fragmented control frame
                                 bytes([0x80 | OP_PING, 126, 0, 200])])  # control frame > 125 bytes
def test_splitter_reports_protocol_errors(bad):
    _, _, _, status = _split_all(bad + b"\0" * 300)
    assert status == SPLIT_PROTOCOL_ERROR


@settings(max_examples=60, deadline=None)
@given(payloads=hst.lists(hst.binary(min_size=0, max_size=70_000), min_size=1, max_size=6),
       cuts=hst.lists(hst.integers(min_value=1, max_value=90_000), min_size=0, max_size=12),
       ops=hst.lists(hst.sampled_from([OP_TEXT, OP_BINARY]), min_size=6, max_size=6))
def test_splitter_recovers_every_frame_from_any_fragmentation_of_the_stream(payloads, cuts, ops):
    stream = b"".join(encode_frame(ops[i], p, mask=False) for i, p in enumerate(payloads))
    # feed the stream in arbitrary pieces to a buffer the way FrameReader does (keep the unsplit tail)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {len(stream)})
    buf = np.zeros(len(stream) + 16, np.uint8)
    offs, lens = np.zeros(64, np.int64), np.zeros(64, np.int64)
    opa, flags = np.zeros(64, np.uint8), np.zeros(64, np.uint8)
    head = tail = 0
    got = []
    prev = 0
    for b in bounds:
        piece = stream[prev:b]
        prev = b
        buf[tail:tail + len(piece)] = np.frombuffer(piece, np.uint8)
        tail += len(piece)
        n, pos, _, status = split_frames(buf, head, tail, offs, lens, opa, flags, 64)
        assert status == SPLIT_OK
        got += [(int(opa[i]), bytes(buf[offs[i]:offs[i] + lens[i]])) for i in range(n)]
        head = pos
    assert got == [(ops[i], p) for i, p in enumerate(payloads)]
    assert head == len(stream)


def _pair():
    a, b = socket.socketpair()
    return FrameReader(a, buffer_size=1 << 16), b


def _read_frames(reader: FrameReader, deadline_s: float = 2.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if reader.read():
            n = reader.frames()
            return [(int(reader.ops[i]), bytes(reader.buf[reader.offs[i]:reader.offs[i] + reader.lens[i]]))
                    for i in range(n)]
        time.sleep(0.001)
    return []


def test_reader_answers_ping_with_a_masked_pong_of_the_same_payload():
    reader, server = _pair()
    try:
        server.sendall(encode_frame(OP_PING, b"ping-payload-42", mask=False))
        frames = _read_frames(reader)
        assert frames == [(OP_PING, b"ping-payload-42")]
        reader.handle_special(lambda m: None)
        server.settimeout(2)
        op, payload, masked = _decode_client_frame(server.recv(1024))
        assert (op, payload, masked) == (OP_PONG, b"ping-payload-42", True)
    finally:
        reader.close()
        server.close()


def test_reader_echoes_close_and_reports_the_connection_closed():
    reader, server = _pair()
    try:
        server.sendall(encode_frame(OP_CLOSE, struct.pack(">H", 1001) + b"bye", mask=False))
        _read_frames(reader)
        with pytest.raises(ConnectionClosed):
            reader.handle_special(lambda m: None)
        assert reader.close_code == 1001 and reader.closed
        server.settimeout(2)
        op, payload, _ = _decode_client_frame(server.recv(1024))
        assert op == OP_CLOSE and payload == struct.pack(">H", 1001)
    finally:
        reader.close()
        server.close()


def test_reader_reassembles_a_fragmented_message():
    reader, server = _pair()
    try:
        server.sendall(encode_frame(OP_TEXT, b'{"a":', mask=False, fin=False)
                       + encode_frame(OP_CONT, b"1", mask=False, fin=False)
                       + encode_frame(OP_CONT, b"}", mask=False))
        got = []
        end = time.monotonic() + 2
        while not got and time.monotonic() < end:
            _read_frames(reader, 0.2)
            reader.handle_special(got.append)
        assert got == [b'{"a":1}']
    finally:
        reader.close()
        server.close()


def test_reader_reports_peer_close_as_connection_closed():
    reader, server = _pair()
    server.close()
    with pytest.raises(ConnectionClosed):
        end = time.monotonic() + 2
        while time.monotonic() < end:
            reader.read()
            time.sleep(0.001)
    reader.close()


def test_reader_grows_its_buffer_for_a_frame_larger_than_the_buffer():
    reader, server = _pair()
    big = b"q" * 300_000
    try:
        server.setblocking(True)
        import threading
        t = threading.Thread(target=server.sendall, args=(encode_frame(OP_TEXT, big, mask=False),))
        t.start()
        got = []
        end = time.monotonic() + 5
        while not got and time.monotonic() < end:
            if reader.read():
                n = reader.frames()
                got = [bytes(reader.buf[reader.offs[i]:reader.offs[i] + reader.lens[i]]) for i in range(n)]
        t.join()
        assert got == [big]
    finally:
        reader.close()
        server.close()
