"""aegis.sha256 against the standard library (hashlib, hmac, zlib) as the reference implementation."""
from __future__ import annotations

import hashlib
import hmac
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from numba import njit

from aegis.sha256 import (
    SCRATCH_WORDS,
    SHA256_H0,
    SHA256_K,
    crc32,
    crc32_hex8,
    hmac_hex_bytes,
    hmac_key_state,
    hmac_sha256_digest,
    hmac_sha256_hex,
    new_scratch,
    sha256_compress,
    sha256_digest,
)

KEY = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"  # 64 bytes
BOUNDARY_LENGTHS = [55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192]


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 131 + seed * 7 + 1) & 0xFF for i in range(n))


def as_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def our_sha256(data: bytes) -> bytes:
    out = np.zeros(32, dtype=np.uint8)
    sha256_digest(as_array(data), 0, len(data), out, 0, new_scratch())
    return out.tobytes()


def ref_hmac_hex(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# --- constants and the compression function -------------------------------------------------------------------

def test_derived_constants_match_fips_180_4_published_values():
    assert SHA256_K[0] == 0x428A2F98 and SHA256_K[1] == 0x71374491 and SHA256_K[63] == 0xC67178F2
    assert SHA256_H0[0] == 0x6A09E667 and SHA256_H0[7] == 0x5BE0CD19


def test_compressing_the_padded_abc_block_from_h0_gives_the_sha256_of_abc():
    block = as_array(b"abc" + b"\x80" + bytes(52) + (24).to_bytes(8, "big"))
    state = SHA256_H0.copy()
    sha256_compress(state, block, 0, np.zeros(64, dtype=np.uint32))
    assert state.astype(">u4").tobytes() == hashlib.sha256(b"abc").digest()


def test_compress_reads_the_block_at_the_given_offset():
    block = b"abc" + b"\x80" + bytes(52) + (24).to_bytes(8, "big")
    buf = as_array(b"\xff" * 13 + block + b"\xff" * 5)
    state = SHA256_H0.copy()
    sha256_compress(state, buf, 13, np.zeros(64, dtype=np.uint32))
    assert state.astype(">u4").tobytes() == hashlib.sha256(b"abc").digest()


def test_compress_rejects_a_block_running_past_the_buffer():
    with pytest.raises(ValueError):
        sha256_compress(SHA256_H0.copy(), np.zeros(100, dtype=np.uint8), 40, np.zeros(64, dtype=np.uint32))


# --- plain SHA-256 ---------------------------------------------------------------------------------------------

def test_sha256_of_empty_message_matches_hashlib():
    assert our_sha256(b"") == hashlib.sha256(b"").digest()


def test_sha256_matches_hashlib_for_every_length_from_0_to_200():
    for n in range(201):
        data = pattern(n)
        assert our_sha256(data) == hashlib.sha256(data).digest(), n


@pytest.mark.parametrize("n", BOUNDARY_LENGTHS + [4096, 5000])
def test_sha256_matches_hashlib_around_block_boundaries(n):
    data = pattern(n, seed=n)
    assert our_sha256(data) == hashlib.sha256(data).digest()


# --- HMAC-SHA256 ------------------------------------------------------------------------------------------------

def test_binance_documented_signing_example_gives_the_documented_signature():
    # API.md §4.2 test vector (the official SIGNED endpoint example)
    secret = b"2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
    query = (b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
             b"&recvWindow=5000&timestamp=1591702613943")
    expected = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    assert hmac_hex_bytes(hmac_key_state(secret), query) == expected


def test_hmac_of_empty_message_matches_hmac_module():
    assert hmac_hex_bytes(hmac_key_state(KEY), b"") == ref_hmac_hex(KEY, b"")


def test_hmac_matches_hmac_module_for_every_length_from_0_to_200():
    kstate = hmac_key_state(KEY)
    for n in range(201):
        data = pattern(n)
        assert hmac_hex_bytes(kstate, data) == ref_hmac_hex(KEY, data), n


@pytest.mark.parametrize("n", BOUNDARY_LENGTHS + [4096, 4097, 10_000])
def test_hmac_matches_hmac_module_around_block_boundaries_and_for_long_messages(n):
    data = pattern(n, seed=n)
    assert hmac_hex_bytes(hmac_key_state(KEY), data) == ref_hmac_hex(KEY, data)


@pytest.mark.parametrize("key_len", [65, 100, 128, 300])
def test_key_longer_than_a_block_is_replaced_by_its_sha256(key_len):
    key = pattern(key_len, seed=3)
    data = b"symbol=BTCUSDT&side=SELL&timestamp=1"
    assert hmac_hex_bytes(hmac_key_state(key), data) == ref_hmac_hex(key, data)


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64])
def test_keys_up_to_a_block_long_are_used_zero_padded(key_len):
    key = pattern(key_len, seed=5)
    data = pattern(250, seed=1)
    assert hmac_hex_bytes(hmac_key_state(key), data) == ref_hmac_hex(key, data)


def test_str_secret_is_keyed_by_its_utf8_bytes():
    data = b"timestamp=1"
    assert hmac_hex_bytes(hmac_key_state(KEY.decode()), data) == ref_hmac_hex(KEY, data)


def test_key_state_is_sixteen_uint32_words_that_differ_per_key():
    a, b = hmac_key_state(b"key-a"), hmac_key_state(b"key-b")
    assert a.dtype == np.uint32 and a.shape == (16,)
    assert not np.array_equal(a[:8], b[:8]) and not np.array_equal(a[8:], b[8:])


@settings(max_examples=150, deadline=None)
@given(key=hst.binary(max_size=150), data=hst.binary(max_size=600))
def test_hmac_matches_hmac_module_for_random_keys_and_messages(key, data):
    assert hmac_hex_bytes(hmac_key_state(key), data) == ref_hmac_hex(key, data)


def test_hmac_signs_only_the_message_range_at_a_nonzero_offset():
    body = b"symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.01&timestamp=1700000000000"
    buf = as_array(b"POST /fapi/v1/order?" + body + b"&signature=")
    off = len(b"POST /fapi/v1/order?")
    out = np.zeros(64, dtype=np.uint8)
    hmac_sha256_hex(hmac_key_state(KEY), buf, off, len(body), out, 0, new_scratch())
    assert out.tobytes().decode() == ref_hmac_hex(KEY, body)


def test_hmac_hex_is_written_at_the_output_offset_and_nothing_else_changes():
    data = pattern(300)
    out = np.full(100, ord("#"), dtype=np.uint8)
    hmac_sha256_hex(hmac_key_state(KEY), as_array(data), 0, len(data), out, 20, new_scratch())
    assert out[20:84].tobytes().decode() == ref_hmac_hex(KEY, data)
    assert (out[:20] == ord("#")).all() and (out[84:] == ord("#")).all()


def test_hmac_digest_writes_the_32_raw_bytes_at_the_output_offset():
    data = pattern(77)
    out = np.zeros(40, dtype=np.uint8)
    hmac_sha256_digest(hmac_key_state(KEY), as_array(data), 0, len(data), out, 8, new_scratch())
    assert out[8:].tobytes() == hmac.digest(KEY, data, "sha256")
    assert (out[:8] == 0).all()


def test_result_does_not_depend_on_what_the_scratch_held_before():
    kstate = hmac_key_state(KEY)
    scratch = np.full(SCRATCH_WORDS, 0xFFFFFFFF, dtype=np.uint32)
    out = np.zeros(64, dtype=np.uint8)
    for data in (pattern(1000), b"", pattern(57), pattern(3)):
        hmac_sha256_hex(kstate, as_array(data), 0, len(data), out, 0, scratch)
        assert out.tobytes().decode() == ref_hmac_hex(KEY, data)


def test_message_range_past_the_buffer_is_rejected():
    out = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError):
        hmac_sha256_hex(hmac_key_state(KEY), np.zeros(10, dtype=np.uint8), 5, 6, out, 0, new_scratch())


def test_output_too_short_for_64_hex_chars_is_rejected():
    out = np.zeros(70, dtype=np.uint8)
    with pytest.raises(ValueError):
        hmac_sha256_hex(hmac_key_state(KEY), np.zeros(10, dtype=np.uint8), 0, 10, out, 7, new_scratch())


def test_scratch_smaller_than_scratch_words_is_rejected():
    out = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError):
        hmac_sha256_hex(hmac_key_state(KEY), np.zeros(10, dtype=np.uint8), 0, 10, out, 0,
                        np.zeros(SCRATCH_WORDS - 1, dtype=np.uint32))


# --- CRC32 --------------------------------------------------------------------------------------------------------

def test_crc32_of_empty_range_is_the_initial_value_like_zlib():
    buf = np.zeros(4, dtype=np.uint8)
    assert crc32(buf, 0, 0) == zlib.crc32(b"") == 0
    assert crc32(buf, 0, 0, 0xDEADBEEF) == zlib.crc32(b"", 0xDEADBEEF)


def test_crc32_matches_zlib_for_every_length_from_0_to_200():
    for n in range(201):
        data = pattern(n)
        assert crc32(as_array(data), 0, n) == zlib.crc32(data), n


def test_crc32_of_a_range_at_a_nonzero_offset_ignores_bytes_outside_it():
    body = b'{"k":"req","id":7,"coid":"x7","sym":"BTCUSDT"}'
    buf = as_array(b"garbage" + body + b"\tmore")
    assert crc32(buf, 7, len(body)) == zlib.crc32(body)


def test_crc32_chains_incrementally_like_zlib_with_a_start_value():
    data = pattern(1000)
    buf = as_array(data)
    value = 0
    for start in range(0, 1000, 37):
        value = crc32(buf, start, min(37, 1000 - start), value)
    assert value == zlib.crc32(data)


@settings(max_examples=200, deadline=None)
@given(data=hst.binary(max_size=500), split=hst.integers(0, 500), init=hst.integers(0, 0xFFFFFFFF))
def test_crc32_matches_zlib_for_random_data_split_points_and_start_values(data, split, init):
    cut = min(split, len(data))
    buf = as_array(data)
    assert crc32(buf, 0, len(data), init) == zlib.crc32(data, init)
    assert crc32(buf, cut, len(data) - cut, crc32(buf, 0, cut, init)) == zlib.crc32(data, init)


def test_crc32_range_past_the_buffer_is_rejected():
    with pytest.raises(ValueError):
        crc32(np.zeros(8, dtype=np.uint8), 4, 5)


@pytest.mark.parametrize("value", [0, 1, 0xA, 0xDEADBEEF, 0x0F0F0F0F, 0xFFFFFFFF])
def test_crc32_hex8_writes_the_same_digits_as_format_08x(value):
    out = np.full(12, ord("#"), dtype=np.uint8)
    crc32_hex8(value, out, 2)
    assert out.tobytes() == b"##" + f"{value:08x}".encode() + b"##"


def test_crc32_hex8_of_a_journal_line_body_matches_zlib_formatting():
    body = b'{"k":"fill","id":12,"px":"42088.10","qty":"0.010"}'
    out = np.zeros(8, dtype=np.uint8)
    crc32_hex8(crc32(as_array(body), 0, len(body)), out, 0)
    assert out.tobytes() == f"{zlib.crc32(body):08x}".encode()


# --- usable from nogil jitted code ---------------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def _sign_and_checksum(kstate, msg, out, scratch):
    hmac_sha256_hex(kstate, msg, 0, msg.size, out, 0, scratch)
    crc32_hex8(crc32(msg, 0, msg.size, 0), out, 64)


def test_signing_and_checksum_kernels_run_inside_a_nogil_jitted_caller():
    data = b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timestamp=1591702613943"
    out = np.zeros(72, dtype=np.uint8)
    _sign_and_checksum(hmac_key_state(KEY), as_array(data), out, new_scratch())
    assert out.tobytes().decode() == ref_hmac_hex(KEY, data) + f"{zlib.crc32(data):08x}"
