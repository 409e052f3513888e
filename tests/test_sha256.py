"""aegis.binance.sha256 against the standard library (hashlib, hmac, zlib) as the reference implementation."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from numba import njit

from aegis.binance import sha256 as sha
from aegis.binance.sha256 import (
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


# Both block compressions are tested in every process that can run them: the portable one everywhere, the SHA-NI one
# where the CPU (and Numba's compile target) has the SHA extensions.
KERNEL_SETS = [
    pytest.param(sha.PORTABLE_KERNELS, id="portable"),
    pytest.param(sha.SHA_NI_KERNELS, id="sha_ni",
                 marks=pytest.mark.skipif(sha.SHA_NI_KERNELS is None, reason="no SHA extensions on this CPU/target")),
]
with_each_kernel_set = pytest.mark.parametrize("kernels", KERNEL_SETS)


def sha256_with(kernels, data: bytes) -> bytes:
    out = np.zeros(32, dtype=np.uint8)
    kernels.sha256_digest(as_array(data), 0, len(data), out, 0, new_scratch())
    return out.tobytes()


def hmac_hex_with(kernels, kstate, data: bytes) -> str:
    out = np.zeros(64, dtype=np.uint8)
    kernels.hmac_sha256_hex(kstate, as_array(data), 0, len(data), out, 0, new_scratch())
    return out.tobytes().decode()


# --- constants and the compression function -------------------------------------------------------------------

def test_derived_constants_match_fips_180_4_published_values():
    assert SHA256_K[0] == 0x428A2F98 and SHA256_K[1] == 0x71374491 and SHA256_K[63] == 0xC67178F2
    assert SHA256_H0[0] == 0x6A09E667 and SHA256_H0[7] == 0x5BE0CD19


@with_each_kernel_set
def test_compressing_the_padded_abc_block_from_h0_gives_the_sha256_of_abc(kernels):
    block = as_array(b"abc" + b"\x80" + bytes(52) + (24).to_bytes(8, "big"))
    state = SHA256_H0.copy()
    kernels.sha256_compress(state, block, 0, np.zeros(64, dtype=np.uint32))
    assert state.astype(">u4").tobytes() == hashlib.sha256(b"abc").digest()


@with_each_kernel_set
def test_compress_reads_the_block_at_the_given_offset(kernels):
    block = b"abc" + b"\x80" + bytes(52) + (24).to_bytes(8, "big")
    buf = as_array(b"\xff" * 13 + block + b"\xff" * 5)
    state = SHA256_H0.copy()
    kernels.sha256_compress(state, buf, 13, np.zeros(64, dtype=np.uint32))
    assert state.astype(">u4").tobytes() == hashlib.sha256(b"abc").digest()


@with_each_kernel_set
def test_compress_of_a_strided_block_into_a_strided_state_reads_and_writes_only_the_view(kernels):
    block = b"abc" + b"\x80" + bytes(52) + (24).to_bytes(8, "big")
    interleaved = np.zeros(128, dtype=np.uint8)
    interleaved[::2] = as_array(block)
    interleaved[1::2] = 0xEE
    state_slots = np.full(16, 7, dtype=np.uint32)
    state_slots[::2] = SHA256_H0
    kernels.sha256_compress(state_slots[::2], interleaved[::2], 0, np.zeros(64, dtype=np.uint32))
    assert state_slots[::2].astype(">u4").tobytes() == hashlib.sha256(b"abc").digest()
    assert (state_slots[1::2] == 7).all()


@with_each_kernel_set
def test_compress_rejects_a_block_running_past_the_buffer(kernels):
    with pytest.raises(ValueError):
        kernels.sha256_compress(SHA256_H0.copy(), np.zeros(100, dtype=np.uint8), 40, np.zeros(64, dtype=np.uint32))


# --- plain SHA-256 ---------------------------------------------------------------------------------------------

def test_sha256_of_empty_message_matches_hashlib():
    assert our_sha256(b"") == hashlib.sha256(b"").digest()


@with_each_kernel_set
def test_sha256_matches_hashlib_for_every_length_from_0_to_200(kernels):
    for n in range(201):
        data = pattern(n)
        assert sha256_with(kernels, data) == hashlib.sha256(data).digest(), n


@with_each_kernel_set
@pytest.mark.parametrize("n", BOUNDARY_LENGTHS + [4096, 5000])
def test_sha256_matches_hashlib_around_block_boundaries(kernels, n):
    data = pattern(n, seed=n)
    assert sha256_with(kernels, data) == hashlib.sha256(data).digest()


# --- HMAC-SHA256 ------------------------------------------------------------------------------------------------

def test_binance_documented_signing_example_gives_the_documented_signature():
    # the test vector of Binance docs "SIGNED Endpoint Examples for POST /fapi/v1/order"
    secret = b"2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
    query = (b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
             b"&recvWindow=5000&timestamp=1591702613943")
    expected = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    assert hmac_hex_bytes(hmac_key_state(secret), query) == expected


def test_hmac_of_empty_message_matches_hmac_module():
    assert hmac_hex_bytes(hmac_key_state(KEY), b"") == ref_hmac_hex(KEY, b"")


@with_each_kernel_set
def test_hmac_matches_hmac_module_for_every_length_from_0_to_200(kernels):
    kstate = hmac_key_state(KEY)
    for n in range(201):
        data = pattern(n)
        assert hmac_hex_with(kernels, kstate, data) == ref_hmac_hex(KEY, data), n


@with_each_kernel_set
@pytest.mark.parametrize("n", BOUNDARY_LENGTHS + [4096, 4097, 10_000])
def test_hmac_matches_hmac_module_around_block_boundaries_and_for_long_messages(kernels, n):
    data = pattern(n, seed=n)
    assert hmac_hex_with(kernels, hmac_key_state(KEY), data) == ref_hmac_hex(KEY, data)


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


@with_each_kernel_set
@settings(max_examples=150, deadline=None)
@given(key=hst.binary(max_size=150), data=hst.binary(max_size=600))
def test_hmac_matches_hmac_module_for_random_keys_and_messages(kernels, key, data):
    assert hmac_hex_with(kernels, hmac_key_state(key), data) == ref_hmac_hex(key, data)


@with_each_kernel_set
@settings(max_examples=100, deadline=None)
@given(data=hst.binary(max_size=400), lead=hst.integers(0, 70), trail=hst.integers(0, 70))
def test_hmac_digest_of_a_range_inside_a_larger_buffer_matches_hmac_module(kernels, data, lead, trail):
    buf = as_array(bytes(range(lead)) + data + b"\xa5" * trail)
    out = np.zeros(32, dtype=np.uint8)
    kernels.hmac_sha256_digest(hmac_key_state(KEY), buf, lead, len(data), out, 0, new_scratch())
    assert out.tobytes() == hmac.digest(KEY, data, "sha256")


@with_each_kernel_set
def test_hmac_of_a_strided_message_with_a_strided_key_state_matches_hmac_module(kernels):
    data = pattern(300, seed=9)
    interleaved = np.zeros(2 * len(data), dtype=np.uint8)
    interleaved[1::2] = as_array(data)
    kslots = np.zeros(48, dtype=np.uint32)
    kslots[::3] = hmac_key_state(KEY)
    out = np.zeros(64, dtype=np.uint8)
    kernels.hmac_sha256_hex(kslots[::3], interleaved[1::2], 0, len(data), out, 0, new_scratch())
    assert out.tobytes().decode() == ref_hmac_hex(KEY, data)


def test_key_state_is_the_same_from_either_compression():
    if sha.SHA_NI_KERNELS is None:
        pytest.skip("no SHA extensions on this CPU/target")
    block = as_array(pattern(64, seed=4))
    states = []
    for kernels in (sha.PORTABLE_KERNELS, sha.SHA_NI_KERNELS):
        state = SHA256_H0.copy()
        kernels.sha256_compress(state, block, 0, np.zeros(64, dtype=np.uint32))
        states.append(state)
    assert np.array_equal(states[0], states[1])


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


@with_each_kernel_set
def test_result_does_not_depend_on_what_the_scratch_held_before(kernels):
    kstate = hmac_key_state(KEY)
    scratch = np.full(SCRATCH_WORDS, 0xFFFFFFFF, dtype=np.uint32)
    out = np.zeros(64, dtype=np.uint8)
    for data in (pattern(1000), b"", pattern(57), pattern(3)):
        kernels.hmac_sha256_hex(kstate, as_array(data), 0, len(data), out, 0, scratch)
        assert out.tobytes().decode() == ref_hmac_hex(KEY, data)


@with_each_kernel_set
def test_message_range_past_the_buffer_is_rejected(kernels):
    out = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError):
        kernels.hmac_sha256_hex(hmac_key_state(KEY), np.zeros(10, dtype=np.uint8), 5, 6, out, 0, new_scratch())


@with_each_kernel_set
def test_output_too_short_for_64_hex_chars_is_rejected(kernels):
    out = np.zeros(70, dtype=np.uint8)
    with pytest.raises(ValueError):
        kernels.hmac_sha256_hex(hmac_key_state(KEY), np.zeros(10, dtype=np.uint8), 0, 10, out, 7, new_scratch())


@with_each_kernel_set
def test_scratch_smaller_than_scratch_words_is_rejected(kernels):
    out = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError):
        kernels.hmac_sha256_hex(hmac_key_state(KEY), np.zeros(10, dtype=np.uint8), 0, 10, out, 0,
                                np.zeros(SCRATCH_WORDS - 1, dtype=np.uint32))


@with_each_kernel_set
def test_key_state_shorter_than_sixteen_words_is_rejected(kernels):
    out = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError):
        kernels.hmac_sha256_hex(hmac_key_state(KEY)[:15].copy(), np.zeros(10, dtype=np.uint8), 0, 10, out, 0,
                                new_scratch())


# --- which compression a process uses ---------------------------------------------------------------------------

def _cpuinfo_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def test_sha_ni_kernels_exist_only_where_the_cpu_lists_the_sha_ni_flag():
    if sha.CPU_HAS_SHA_NI:
        assert "sha_ni" in _cpuinfo_flags() and sha.SHA_NI_KERNELS is not None
    else:
        assert sha.SHA_NI_KERNELS is None


def test_public_kernels_are_the_selected_set_and_sha_ni_is_selected_unless_forced_portable():
    forced = os.environ.get("AEGIS_SHA_PORTABLE", "").strip() not in ("", "0")
    assert sha.SHA_NI_ENABLED == (sha.CPU_HAS_SHA_NI and not forced)
    assert sha.KERNELS is (sha.SHA_NI_KERNELS if sha.SHA_NI_ENABLED else sha.PORTABLE_KERNELS)
    assert tuple(sha.KERNELS) == (sha256_compress, sha256_digest, hmac_sha256_hex, hmac_sha256_digest,
                                  sha.hmac_sha256_hex_mid)


@with_each_kernel_set
@pytest.mark.parametrize("prefix_len", [0, 10, 63, 64, 65, 100, 128, 200])
@pytest.mark.parametrize("rest_len", [0, 1, 55, 56, 64, 130])
def test_hmac_resumed_from_a_prefix_midstate_is_the_hmac_of_prefix_plus_rest(kernels, prefix_len, rest_len):
    key = b"midstate-key-0123"
    prefix, rest = pattern(prefix_len, seed=3), pattern(rest_len, seed=4)
    kstate = sha.hmac_key_state(key)
    mid, absorbed, skip = sha.hmac_midstate(kstate, prefix)
    assert skip == prefix_len // 64 * 64 and absorbed == 64 + skip
    msg = as_array(b"\xee" * 7 + prefix + rest)
    out = np.zeros(70, dtype=np.uint8)
    kernels.hmac_sha256_hex_mid(kstate, mid, 0, absorbed, msg, 7 + skip, prefix_len - skip + rest_len, out, 3,
                                new_scratch())
    assert out[3:67].tobytes().decode() == hmac.new(key, prefix + rest, hashlib.sha256).hexdigest()


@with_each_kernel_set
def test_hmac_from_a_midstate_refuses_a_prefix_length_that_is_not_whole_blocks(kernels):
    kstate = sha.hmac_key_state(b"k")
    out = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError):
        kernels.hmac_sha256_hex_mid(kstate, kstate, 0, 70, as_array(b"x"), 0, 1, out, 0, new_scratch())
    with pytest.raises(ValueError):
        kernels.hmac_sha256_hex_mid(kstate, kstate, 12, 64, as_array(b"x"), 0, 1, out, 0, new_scratch())


_CHILD_CASES = [(KEY, b""), (KEY, pattern(55)), (KEY, pattern(250, seed=2)), (pattern(100, seed=1), pattern(1000))]

_CHILD = """
import json, sys
from aegis.binance import sha256 as sha
cases = [(bytes.fromhex(k), bytes.fromhex(d)) for k, d in json.loads(sys.stdin.read())]
print(json.dumps({"sha_ni": sha.SHA_NI_ENABLED, "portable": sha.KERNELS is sha.PORTABLE_KERNELS,
                  "macs": [sha.hmac_hex_bytes(sha.hmac_key_state(k), d) for k, d in cases]}))
"""


def _run_child(env_extra: dict[str, str]) -> dict:
    env = {**os.environ, **env_extra}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    cases = json.dumps([(k.hex(), d.hex()) for k, d in _CHILD_CASES])
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=cases, capture_output=True, text=True, env=env,
                          timeout=50)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_a_process_forced_portable_computes_the_same_macs_as_this_one():
    child = _run_child({"AEGIS_SHA_PORTABLE": "1"})
    assert child["portable"] and not child["sha_ni"]
    ours = [hmac_hex_bytes(hmac_key_state(k), d) for k, d in _CHILD_CASES]
    assert child["macs"] == ours == [ref_hmac_hex(k, d) for k, d in _CHILD_CASES]


def test_a_process_whose_numba_target_lacks_sha_takes_the_portable_path_instead_of_aborting(tmp_path):
    # NUMBA_CPU_NAME=generic: compiling a SHA intrinsic for it would abort the process inside LLVM; a private cache
    # dir keeps these generic-target entries out of the shared one
    child = _run_child({"NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path), "AEGIS_SHA_PORTABLE": ""})
    assert child["portable"] and not child["sha_ni"]
    assert child["macs"] == [ref_hmac_hex(k, d) for k, d in _CHILD_CASES]


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
