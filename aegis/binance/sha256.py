"""SHA-256, HMAC-SHA256 and CRC32 as allocation-free @njit(nogil) kernels over numpy uint8 buffers.

Why our own: the order sender signs Binance requests (docs/binance-notes.md, Request signing: HMAC-SHA256 of the exact
bytes sent, lowercase hex) and checksums journal lines (zlib.crc32, 8 hex) from inside nogil jitted code, where
hashlib/hmac/zlib are out of reach without re-acquiring the GIL and leaving the jitted batch.

HMAC key handling: `hmac_key_state(secret)` runs once and precomputes the SHA-256 midstates after the (key XOR ipad)
and (key XOR opad) blocks (RFC 2104). Each signature then costs only the message blocks plus one outer block, never
the two key blocks. The midstate is as sensitive as the secret itself: never print, log or persist it.

Hot kernels allocate nothing: callers pass a `new_scratch()` array (SCRATCH_WORDS uint32) owned by one thread.
Messages of any length work (full blocks are read straight from the caller's buffer; only the padded tail is built, in
scratch or on the stack). Bounds are checked and raise ValueError: an out-of-range write from jitted code would corrupt
memory silently.

Two block compressions, one chosen per process at import:
- SHA-NI (x86 SHA extensions: sha256rnds2/msg1/msg2, emitted through LLVM intrinsics): ~37-40 ns per 64-byte block on
  the dev box (AMD EPYC, znver4; the chain of 32 dependent sha256rnds2 is the limit), ~275 ns for the HMAC of a
  250-byte message against ~1290 ns portable; cold compile of the HMAC kernels ~0.9 s against ~3.1 s.
  Used when /proc/cpuinfo lists `sha_ni` AND the CPU feature list Numba compiles for contains "+sha". The second
  condition matters: Numba's JIT targets the host
  CPU with the host's features (so LLVM may emit SHA instructions without any per-function "target-features"
  attribute), unless NUMBA_CPU_NAME/NUMBA_CPU_FEATURES narrow it, e.g. NUMBA_CPU_NAME=generic for caches shipped to
  other machines; there LLVM would abort the whole process ("Cannot select: intrinsic %llvm.x86.sha256rnds2"), so
  such a process takes the portable path. Numba keys its on-disk cache by CPU name and feature list, so SHA code
  cached here is never loaded on a CPU without SHA.
- Portable FIPS 180-4 code, everywhere else, or when AEGIS_SHA_PORTABLE=1 (any value but "" and "0").
The SHA kernels are separate functions that are only compiled when called, and the public names are bound to one set
at import: the other set is never compiled (a plain `if` on a global would freeze into Numba's on-disk cache, which
does not key on global values). Caveat (the cache gotcha in CONVENTIONS): a jitted caller in another module whose
cached machine code already holds the SHA kernels keeps them under AEGIS_SHA_PORTABLE=1 until its cache is deleted;
both paths give identical digests (tested), only speed differs.

Portable arithmetic: Numba widens uint32 (+, <<) to uint64, so every 32-bit result is narrowed with np.uint32(...)
explicitly; LLVM then emits plain 32-bit adds and recognises the shift/or pairs as rotates (rorx). Measured on the
dev box (shared, +-7% noise): ~185-215 ns per 64-byte block as written (8-way unrolled rounds), ~205 ns with a rolled
round loop, ~235-250 ns computing in int64/uint64 with 0xFFFFFFFF masks. Keeping the running state in registers
(tuples) instead of scratch made no measurable difference. An HMAC of a 250-byte message is 6 blocks.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

from aegis.core.jit import njit

# ---------------------------------------------------------------------------------------------------------------
# Constants, derived from their FIPS 180-4 definitions (§4.2.2, §5.3.3) rather than typed in: a wrong digit in a
# 64-entry hex table is easy to make and hard to see, an integer root is not.


def _first_primes(count: int) -> list[int]:
    primes: list[int] = []
    n = 2
    while len(primes) < count:
        if all(n % p for p in primes):
            primes.append(n)
        n += 1
    return primes


def _frac_root_bits(p: int, root: int) -> int:
    """First 32 bits of the fractional part of p**(1/root), exactly: floor(root(p * 2**(32*root))) mod 2**32."""
    target = p << (32 * root)
    lo, hi = 0, 1 << 40  # p < 400 so the root of p*2**(32*root) is below 2**(32+9)
    while lo < hi:
        mid = (lo + hi + 1) >> 1
        if mid**root <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo & 0xFFFFFFFF


_PRIMES = _first_primes(64)
SHA256_K = np.array([_frac_root_bits(p, 3) for p in _PRIMES], dtype=np.uint32)
SHA256_H0 = np.array([_frac_root_bits(p, 2) for p in _PRIMES[:8]], dtype=np.uint32)

SCRATCH_WORDS = 72  # uint32: [0:64] message schedule W, [64:72] running hash state
_ST = 64  # offset of the running state inside scratch
HEX_LEN = 64
DIGEST_LEN = 32
BLOCK_LEN = 64

_IPAD = 0x36
_OPAD = 0x5C


def _crc32_tables() -> np.ndarray:
    """Slicing-by-8 tables for the reflected CRC-32 polynomial 0xEDB88320 (zlib's): row k maps a byte to the CRC
    contribution of that byte followed by k zero bytes, so 8 independent lookups replace 8 serial ones."""
    t = np.zeros((8, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        t[0, i] = c
    for k in range(1, 8):
        for i in range(256):
            prev = int(t[k - 1, i])
            t[k, i] = (prev >> 8) ^ int(t[0, prev & 0xFF])
    return t


CRC32_TABLES = _crc32_tables()


def new_scratch() -> np.ndarray:
    """Work area for the SHA-256/HMAC kernels; one per thread (the kernels write into it)."""
    return np.zeros(SCRATCH_WORDS, dtype=np.uint32)


# ---------------------------------------------------------------------------------------------------------------
# Which block compression this process uses (see the module docstring)


def _cpuinfo_has_sha_ni() -> bool:
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "sha_ni" in line.partition(":")[2].split()
    except OSError:
        pass
    return False


def _numba_targets_sha() -> bool:
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return "+sha" in features.split(",")


CPU_HAS_SHA_NI = _cpuinfo_has_sha_ni() and _numba_targets_sha()
SHA_NI_ENABLED = CPU_HAS_SHA_NI and os.environ.get("AEGIS_SHA_PORTABLE", "").strip() in ("", "0")


# ---------------------------------------------------------------------------------------------------------------
# Portable SHA-256 block compression (FIPS 180-4 §6.2.2)


@njit(cache=True, nogil=True)
def _rotr(x, n):
    return np.uint32((x >> np.uint32(n)) | (x << np.uint32(32 - n)))


@njit(cache=True, nogil=True)
def _round(a, b, c, d, e, f, g, h, kw):
    """One FIPS round, returning only the two words that change (new e, new a); the caller renames the rest.
    Ch and Maj use the equivalent forms g^(e&(f^g)) and (a&b)|(c&(a|b)): one operation fewer each."""
    t1 = np.uint32(h + np.uint32(_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + np.uint32(g ^ (e & (f ^ g))) + kw)
    t2 = np.uint32(np.uint32(_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + np.uint32((a & b) | (c & (a | b))))
    return np.uint32(d + t1), np.uint32(t1 + t2)


@njit(cache=True, nogil=True)
def _load_block(w, buf, off):
    for t in range(16):
        p = off + 4 * t
        w[t] = ((np.uint32(buf[p]) << np.uint32(24)) | (np.uint32(buf[p + 1]) << np.uint32(16))
                | (np.uint32(buf[p + 2]) << np.uint32(8)) | np.uint32(buf[p + 3]))


@njit(cache=True, nogil=True)
def _schedule(w, t):
    x = w[t - 15]
    y = w[t - 2]
    s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> np.uint32(3))
    s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> np.uint32(10))
    w[t] = np.uint32(s1 + w[t - 7] + s0 + w[t - 16])


@njit(cache=True, nogil=True)
def _rounds(st, so, w):
    """Compress the block already loaded in w[0:16] into st[so:so+8]; overwrites w[16:64]."""
    a = st[so]
    b = st[so + 1]
    c = st[so + 2]
    d = st[so + 3]
    e = st[so + 4]
    f = st[so + 5]
    g = st[so + 6]
    h = st[so + 7]
    # unrolled by 8 with rotating argument order: no per-round register shuffle (measured ~8% faster than rolled).
    # The schedule is expanded 8 words ahead of use, inside the same loop, so the CPU overlaps it with the rounds'
    # dependency chain (~5% faster than expanding all 48 words first).
    for i in range(0, 64, 8):
        if i >= 16:
            for t in range(i, i + 8):
                _schedule(w, t)
        d, h = _round(a, b, c, d, e, f, g, h, np.uint32(SHA256_K[i] + w[i]))
        c, g = _round(h, a, b, c, d, e, f, g, np.uint32(SHA256_K[i + 1] + w[i + 1]))
        b, f = _round(g, h, a, b, c, d, e, f, np.uint32(SHA256_K[i + 2] + w[i + 2]))
        a, e = _round(f, g, h, a, b, c, d, e, np.uint32(SHA256_K[i + 3] + w[i + 3]))
        h, d = _round(e, f, g, h, a, b, c, d, np.uint32(SHA256_K[i + 4] + w[i + 4]))
        g, c = _round(d, e, f, g, h, a, b, c, np.uint32(SHA256_K[i + 5] + w[i + 5]))
        f, b = _round(c, d, e, f, g, h, a, b, np.uint32(SHA256_K[i + 6] + w[i + 6]))
        e, a = _round(b, c, d, e, f, g, h, a, np.uint32(SHA256_K[i + 7] + w[i + 7]))
    st[so] += a
    st[so + 1] += b
    st[so + 2] += c
    st[so + 3] += d
    st[so + 4] += e
    st[so + 5] += f
    st[so + 6] += g
    st[so + 7] += h


# ---------------------------------------------------------------------------------------------------------------
# SHA-NI compression, written directly in LLVM IR after Intel's SHA extensions paper (2013): the state lives in two
# vectors ABEF and CDGH, sha256rnds2 does two rounds, sha256msg1/msg2 expand the schedule four words at a time.
# The state stays in registers for a whole message: the padded tail is built in a stack buffer, and the HMAC outer
# block is formed from the inner state without touching memory. A first version that passed state, tail and outer
# block through scratch at every block took ~350 ns per 250-byte HMAC against ~275 ns for this one (vector loads of
# words just written by scalar stores cannot be store-forwarded, so each round trip stalls).
# Compiling any of this on a CPU without SHA aborts the process: only the SHA_NI_KERNELS reach it.

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V4 = ir.VectorType(_I32, 4)
_K_VECS = [ir.Constant(_V4, [ir.Constant(_I32, int(k)) for k in SHA256_K[4 * g: 4 * g + 4]]) for g in range(16)]


def _v4(*words):
    return ir.Constant(_V4, [ir.Constant(_I32, w) for w in words])


def _lanes(builder, x, y, order):
    """Lane i of the result is lane order[i] of the 8 lanes x ++ y (lane 0 = lowest 32 bits)."""
    return builder.shuffle_vector(x, y, _v4(*order))


class _ShaNi:
    """IR builders for one function being generated; values are <4 x i32> vectors, lane 0 first."""

    def __init__(self, context, builder):
        self.context = context
        self.builder = builder

        def declare(name, nargs):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V4, [_V4] * nargs), name)

        self.rnds2 = declare("llvm.x86.sha256rnds2", 3)
        self.msg1 = declare("llvm.x86.sha256msg1", 2)
        self.msg2 = declare("llvm.x86.sha256msg2", 2)
        self.bswap = declare("llvm.bswap.v4i32", 1)
        self.bswap64 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64]), "llvm.bswap.i64")

    def _item_ptr(self, aryty, ary, idx, extra=0):
        if extra:
            idx = self.builder.add(idx, ir.Constant(idx.type, extra))
        return cgutils.get_item_pointer(self.context, self.builder, aryty, ary, [idx], wraparound=False)

    def load_state(self, aryty, ary, idx):
        """st[idx:idx+8] (FIPS order a..h) as (ABEF, CDGH) = lanes (F,E,B,A), (H,G,D,C)."""
        b = self.builder
        if aryty.layout == "C":
            ptr = b.bitcast(self._item_ptr(aryty, ary, idx), _V4.as_pointer())
            abcd = b.load(ptr, align=4)
            efgh = b.load(b.gep(ptr, [ir.Constant(_I32, 1)]), align=4)
        else:  # a strided view: element by element
            abcd, efgh = (ir.Constant(_V4, ir.Undefined),) * 2
            for i in range(4):
                abcd = b.insert_element(abcd, b.load(self._item_ptr(aryty, ary, idx, i)), ir.Constant(_I32, i))
                efgh = b.insert_element(efgh, b.load(self._item_ptr(aryty, ary, idx, 4 + i)), ir.Constant(_I32, i))
        return _lanes(b, abcd, efgh, (5, 4, 1, 0)), _lanes(b, abcd, efgh, (7, 6, 3, 2))

    def fips_order(self, abef, cdgh):
        """(ABEF, CDGH) -> vectors (a,b,c,d), (e,f,g,h)."""
        return _lanes(self.builder, abef, cdgh, (3, 2, 7, 6)), _lanes(self.builder, abef, cdgh, (1, 0, 5, 4))

    def store_state(self, aryty, ary, idx, abef, cdgh):
        b = self.builder
        abcd, efgh = self.fips_order(abef, cdgh)
        if aryty.layout == "C":
            ptr = b.bitcast(self._item_ptr(aryty, ary, idx), _V4.as_pointer())
            b.store(abcd, ptr, align=4)
            b.store(efgh, b.gep(ptr, [ir.Constant(_I32, 1)]), align=4)
            return
        for i in range(8):
            word = b.extract_element(abcd if i < 4 else efgh, ir.Constant(_I32, i % 4))
            b.store(word, self._item_ptr(aryty, ary, idx, i))

    def hmac_outer(self, kty, kary, abef, cdgh, sty, sary, so_v):
        """The outer hash of an HMAC from the inner state (abef, cdgh): kary[8:16] holds the key's outer midstate;
        the result goes to sary[so:so+8]. The outer message is the 32-byte inner digest, whose big-endian words are
        the inner state words a..h: one padded block straight from registers."""
        w0, w1 = self.fips_order(abef, cdgh)
        w2 = _v4(0x80000000, 0, 0, 0)
        w3 = _v4(0, 0, 0, (BLOCK_LEN + DIGEST_LEN) * 8)
        abef, cdgh = self.load_state(kty, kary, ir.Constant(so_v.type, 8))
        abef, cdgh = self.compress(abef, cdgh, w0, w1, w2, w3)
        self.store_state(sty, sary, so_v, abef, cdgh)

    def compress(self, abef, cdgh, w0, w1, w2, w3):
        """64 rounds over the block whose message words 0..15 are the vectors w0..w3; returns the new state."""
        b = self.builder
        w = [w0, w1, w2, w3]
        s0, s1 = abef, cdgh
        for g in range(16):
            if g >= 4:
                x = b.call(self.msg1, [w[g - 4], w[g - 3]])
                x = b.add(x, _lanes(b, w[g - 2], w[g - 1], (1, 2, 3, 4)))  # + words 4g-7..4g-4
                w.append(b.call(self.msg2, [x, w[g - 1]]))
            kw = b.add(w[g], _K_VECS[g])
            # rounds 4g and 4g+1 take the low lanes of kw, 4g+2 and 4g+3 the high ones; two rounds turn the old
            # ABEF into the new CDGH, hence the alternating roles
            s1 = b.call(self.rnds2, [s1, s0, kw])
            s0 = b.call(self.rnds2, [s0, s1, _lanes(b, kw, kw, (2, 3, 2, 3))])
        return b.add(s0, abef), b.add(s1, cdgh)

    def absorb_contiguous(self, ptr, nblocks, abef, cdgh):
        """Absorb nblocks 64-byte blocks of big-endian message bytes at the i8* ptr."""
        b = self.builder
        vptr = b.bitcast(ptr, _V4.as_pointer())
        s0 = cgutils.alloca_once_value(b, abef)
        s1 = cgutils.alloca_once_value(b, cdgh)
        with cgutils.for_range(b, nblocks) as loop:
            first = b.mul(loop.index, ir.Constant(loop.index.type, 4))
            words = [b.call(self.bswap, [b.load(b.gep(vptr, [b.add(first, ir.Constant(first.type, g))]), align=1)])
                     for g in range(4)]
            new0, new1 = self.compress(b.load(s0), b.load(s1), *words)
            b.store(new0, s0)
            b.store(new1, s1)
        return b.load(s0), b.load(s1)

    def copy_bytes(self, aryty, ary, idx, count, dst):
        """dst[0:count] = ary[idx:idx+count] (dst: i8*)."""
        b = self.builder
        if aryty.layout == "C":
            cgutils.raw_memcpy(b, dst, self._item_ptr(aryty, ary, idx), count, 1)
            return
        with cgutils.for_range(b, count) as loop:
            b.store(b.load(self._item_ptr(aryty, ary, b.add(idx, loop.index))), b.gep(dst, [loop.index]))

    def absorb_array(self, aryty, ary, idx, nblocks, abef, cdgh):
        """Absorb the nblocks whole blocks at ary[idx:] (uint8)."""
        b = self.builder
        if aryty.layout == "C":
            return self.absorb_contiguous(self._item_ptr(aryty, ary, idx), nblocks, abef, cdgh)
        # a strided view: gather each block into a stack buffer first
        block = b.bitcast(cgutils.alloca_once(b, ir.ArrayType(_I8, BLOCK_LEN)), _I8.as_pointer())
        s0 = cgutils.alloca_once_value(b, abef)
        s1 = cgutils.alloca_once_value(b, cdgh)
        with cgutils.for_range(b, nblocks) as loop:
            start = b.add(idx, b.mul(loop.index, ir.Constant(idx.type, BLOCK_LEN)))
            self.copy_bytes(aryty, ary, start, ir.Constant(idx.type, BLOCK_LEN), block)
            new0, new1 = self.absorb_contiguous(block, ir.Constant(idx.type, 1), b.load(s0), b.load(s1))
            b.store(new0, s0)
            b.store(new1, s1)
        return b.load(s0), b.load(s1)

    def absorb_final(self, aryty, ary, off, length, prefix_len, abef, cdgh):
        """Absorb ary[off:off+length] plus FIPS padding; prefix_len bytes were absorbed before (the HMAC key block)
        and count in the encoded length (a Python int or an intp value). off, length: intp, length >= 0."""
        b = self.builder
        intp = length.type
        nfull = b.lshr(length, ir.Constant(intp, 6))
        abef, cdgh = self.absorb_array(aryty, ary, off, nfull, abef, cdgh)
        r = b.and_(length, ir.Constant(intp, BLOCK_LEN - 1))
        tail = b.bitcast(cgutils.alloca_once(b, ir.ArrayType(_I8, 2 * BLOCK_LEN)), _I8.as_pointer())
        cgutils.memset(b, tail, ir.Constant(intp, 2 * BLOCK_LEN), 0)
        self.copy_bytes(aryty, ary, b.add(off, b.shl(nfull, ir.Constant(intp, 6))), r, tail)
        b.store(ir.Constant(_I8, 0x80), b.gep(tail, [r]))
        # no room for the 8-byte length after r >= 56 bytes and the marker: it goes into an extra padding block
        ntail = b.select(b.icmp_unsigned(">=", r, ir.Constant(intp, 56)), ir.Constant(intp, 2), ir.Constant(intp, 1))
        pre = prefix_len if isinstance(prefix_len, ir.Value) else ir.Constant(intp, prefix_len)
        bits = b.mul(b.add(length, pre), ir.Constant(intp, 8))
        len_at = b.sub(b.shl(ntail, ir.Constant(intp, 6)), ir.Constant(intp, 8))
        b.store(b.call(self.bswap64, [b.zext(bits, _I64) if intp.width < 64 else bits]),
                b.bitcast(b.gep(tail, [len_at]), _I64.as_pointer()), align=1)
        return self.absorb_contiguous(tail, ntail, abef, cdgh)


def _is_1d(arr, dtype, writable=False) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == dtype and (arr.mutable or not writable)


def _intp_args(context, builder, signature, args, positions):
    return [context.cast(builder, args[i], signature.args[i], types.intp) for i in positions]


def _sha_ni_state_op(st, so, buf, off, count, absorb):
    """Typing and codegen shared by the two intrinsics below: load the state st[so:so+8], run
    absorb(sha, buf type, buf array, off, count, abef, cdgh) over buf, store the state back."""
    if not (_is_1d(st, types.uint32, writable=True) and _is_1d(buf, types.uint8)
            and all(isinstance(x, types.Integer) for x in (so, off, count))):
        return None

    def codegen(context, builder, signature, args):
        sty, _, bty, _, _ = signature.args
        so_v, off_v, n_v = _intp_args(context, builder, signature, args, (1, 3, 4))
        sha = _ShaNi(context, builder)
        sary = context.make_array(sty)(context, builder, args[0])
        bary = context.make_array(bty)(context, builder, args[2])
        abef, cdgh = sha.load_state(sty, sary, so_v)
        abef, cdgh = absorb(sha, bty, bary, off_v, n_v, abef, cdgh)
        sha.store_state(sty, sary, so_v, abef, cdgh)
        return context.get_dummy_value()

    return types.void(st, so, buf, off, count), codegen


@intrinsic
def _sha_ni_absorb(typingctx, st, so, buf, off, nblocks):
    """Absorb the nblocks whole blocks at buf[off:] (uint8) into st[so:so+8] (uint32). Bounds: the caller's."""
    return _sha_ni_state_op(st, so, buf, off, nblocks, lambda sha, bty, bary, o, n, a, c: sha.absorb_array(
        bty, bary, o, n, a, c))


@intrinsic
def _sha_ni_absorb_final(typingctx, st, so, buf, off, length):
    """Absorb buf[off:off+length] plus FIPS padding into st[so:so+8] (a fresh SHA-256). Bounds: the caller's."""
    return _sha_ni_state_op(st, so, buf, off, length, lambda sha, bty, bary, o, n, a, c: sha.absorb_final(
        bty, bary, o, n, 0, a, c))


@intrinsic
def _sha_ni_hmac(typingctx, kstate, msg, off, length, st, so):
    """The final HMAC state (digest words) of msg[off:off+length] into st[so:so+8]; kstate = hmac_key_state(...)
    (uint32[16]). Bounds: the caller's."""
    if not (_is_1d(kstate, types.uint32) and _is_1d(msg, types.uint8) and _is_1d(st, types.uint32, writable=True)
            and all(isinstance(x, types.Integer) for x in (off, length, so))):
        return None

    def codegen(context, builder, signature, args):
        kty, mty, _, _, sty, _ = signature.args
        off_v, len_v, so_v = _intp_args(context, builder, signature, args, (2, 3, 5))
        sha = _ShaNi(context, builder)
        kary = context.make_array(kty)(context, builder, args[0])
        mary = context.make_array(mty)(context, builder, args[1])
        sary = context.make_array(sty)(context, builder, args[4])
        intp = off_v.type
        abef, cdgh = sha.load_state(kty, kary, ir.Constant(intp, 0))
        abef, cdgh = sha.absorb_final(mty, mary, off_v, len_v, BLOCK_LEN, abef, cdgh)
        sha.hmac_outer(kty, kary, abef, cdgh, sty, sary, so_v)
        return context.get_dummy_value()

    return types.void(kstate, msg, off, length, st, so), codegen


@intrinsic
def _sha_ni_hmac_mid(typingctx, kstate, mid, mo, prefix_len, msg, off, length, st, so):
    """As _sha_ni_hmac, the inner hash resumed from the midstate mid[mo:mo+8], which has absorbed prefix_len bytes
    (the ipad block and whole blocks of a constant message prefix: hmac_midstate). Bounds: the caller's."""
    if not (_is_1d(kstate, types.uint32) and _is_1d(mid, types.uint32) and _is_1d(msg, types.uint8)
            and _is_1d(st, types.uint32, writable=True)
            and all(isinstance(x, types.Integer) for x in (mo, prefix_len, off, length, so))):
        return None

    def codegen(context, builder, signature, args):
        kty, mdty, _, _, mty, _, _, sty, _ = signature.args
        mo_v, pre_v, off_v, len_v, so_v = _intp_args(context, builder, signature, args, (2, 3, 5, 6, 8))
        sha = _ShaNi(context, builder)
        kary = context.make_array(kty)(context, builder, args[0])
        mdary = context.make_array(mdty)(context, builder, args[1])
        mary = context.make_array(mty)(context, builder, args[4])
        sary = context.make_array(sty)(context, builder, args[7])
        abef, cdgh = sha.load_state(mdty, mdary, mo_v)
        abef, cdgh = sha.absorb_final(mty, mary, off_v, len_v, pre_v, abef, cdgh)
        sha.hmac_outer(kty, kary, abef, cdgh, sty, sary, so_v)
        return context.get_dummy_value()

    return types.void(kstate, mid, mo, prefix_len, msg, off, length, st, so), codegen


# ---------------------------------------------------------------------------------------------------------------
# Portable padding and HMAC framing (the SHA-NI intrinsics do the same in registers)


@njit(cache=True, nogil=True)
def _absorb_final_portable(st, so, w, buf, off, length, prefix_len):
    """Absorb buf[off:off+length] plus FIPS padding into st[so:so+8]; prefix_len bytes were absorbed before (the
    HMAC key block), they count in the encoded message length."""
    p = off
    end = off + length
    while p + BLOCK_LEN <= end:
        _load_block(w, buf, p)
        _rounds(st, so, w)
        p += BLOCK_LEN
    r = end - p
    for i in range(16):
        w[i] = 0
    for i in range(r):
        w[i >> 2] |= np.uint32(buf[p + i]) << np.uint32(24 - 8 * (i & 3))
    w[r >> 2] |= np.uint32(0x80) << np.uint32(24 - 8 * (r & 3))
    if r >= 56:  # no room for the 8-byte length: it goes into an extra all-padding block
        _rounds(st, so, w)
        for i in range(16):
            w[i] = 0
    bits = (prefix_len + length) * 8
    w[14] = np.uint32(bits >> 32)
    w[15] = np.uint32(bits & 0xFFFFFFFF)
    _rounds(st, so, w)


@njit(cache=True, nogil=True)
def _check_kstate(kstate):
    if kstate.size < 16:
        raise ValueError("kstate must be hmac_key_state(secret)")


@njit(cache=True, nogil=True)
def _hmac_into_scratch_portable(kstate, msg, msg_off, msg_len, scratch):
    """Leaves the final HMAC state (the digest as big-endian words) in scratch[_ST:_ST+8]."""
    _check_kstate(kstate)
    _hmac_mid_into_scratch_portable(kstate, kstate, 0, BLOCK_LEN, msg, msg_off, msg_len, scratch)


@njit(cache=True, nogil=True)
def _hmac_mid_into_scratch_portable(kstate, mid, mo, prefix_len, msg, msg_off, msg_len, scratch):
    """The inner hash resumed from mid[mo:mo+8] (prefix_len bytes absorbed), then the outer one from kstate."""
    for i in range(8):
        scratch[_ST + i] = mid[mo + i]
    _absorb_final_portable(scratch, _ST, scratch, msg, msg_off, msg_len, prefix_len)
    # outer message = the 32-byte inner digest, whose big-endian words are exactly the inner state words:
    # build its single padded block directly in W, no byte round trip
    for i in range(8):
        scratch[i] = scratch[_ST + i]
        scratch[_ST + i] = kstate[8 + i]
    scratch[8] = 0x80000000
    for i in range(9, 15):
        scratch[i] = 0
    scratch[15] = (BLOCK_LEN + DIGEST_LEN) * 8
    _rounds(scratch, _ST, scratch)


@njit(cache=True, nogil=True)
def _check_args(buf, off, length, out, out_off, out_len, scratch):
    if off < 0 or length < 0 or off + length > buf.size:
        raise ValueError("message range outside the buffer")
    if out_off < 0 or out_off + out_len > out.size:
        raise ValueError("output range outside the buffer")
    if scratch.size < SCRATCH_WORDS:
        raise ValueError("scratch too small: use new_scratch()")


@njit(cache=True, nogil=True)
def _check_mid(kstate, mid, mo, prefix_len):
    if kstate.size < 16:
        raise ValueError("kstate must be hmac_key_state(secret)")
    if mo < 0 or mo + 8 > mid.size:
        raise ValueError("midstate range outside the array")
    if prefix_len < BLOCK_LEN or (prefix_len & (BLOCK_LEN - 1)) != 0:
        raise ValueError("prefix_len must be whole blocks, the ipad block included")


@njit(cache=True, nogil=True)
def _check_compress_args(state, buf, off, w):
    if off < 0 or off + BLOCK_LEN > buf.size or state.size < 8 or w.size < 64:
        raise ValueError("sha256_compress: block or work area out of range")


@njit(cache=True, nogil=True)
def _write_digest(st, so, out, out_off):
    for i in range(8):
        v = st[so + i]
        for j in range(4):
            out[out_off + 4 * i + j] = np.uint8((v >> np.uint32(24 - 8 * j)) & np.uint32(0xFF))


_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()


@njit(cache=True, nogil=True)
def _write_hex_words(st, so, nwords, out, out_off):
    for i in range(nwords):
        v = st[so + i]
        p = out_off + 8 * i
        for j in range(8):
            out[p + j] = _HEX_CHARS[(v >> np.uint32(28 - 4 * j)) & np.uint32(0xF)]


# The kernels, once per compression. Same signatures and behaviour; the public names below are bound to one set.

@njit(cache=True, nogil=True)
def _sha256_compress_portable(state, buf, off, w):
    _check_compress_args(state, buf, off, w)
    _load_block(w, buf, off)
    _rounds(state, 0, w)


@njit(cache=True, nogil=True)
def _sha256_digest_portable(buf, off, length, out, out_off, scratch):
    _check_args(buf, off, length, out, out_off, DIGEST_LEN, scratch)
    for i in range(8):
        scratch[_ST + i] = SHA256_H0[i]
    _absorb_final_portable(scratch, _ST, scratch, buf, off, length, 0)
    _write_digest(scratch, _ST, out, out_off)


@njit(cache=True, nogil=True)
def _hmac_sha256_hex_portable(kstate, msg, msg_off, msg_len, out, out_off, scratch):
    _check_args(msg, msg_off, msg_len, out, out_off, HEX_LEN, scratch)
    _hmac_into_scratch_portable(kstate, msg, msg_off, msg_len, scratch)
    _write_hex_words(scratch, _ST, 8, out, out_off)


@njit(cache=True, nogil=True)
def _hmac_sha256_digest_portable(kstate, msg, msg_off, msg_len, out, out_off, scratch):
    _check_args(msg, msg_off, msg_len, out, out_off, DIGEST_LEN, scratch)
    _hmac_into_scratch_portable(kstate, msg, msg_off, msg_len, scratch)
    _write_digest(scratch, _ST, out, out_off)


@njit(cache=True, nogil=True)
def _hmac_sha256_hex_mid_portable(kstate, mid, mo, prefix_len, msg, msg_off, msg_len, out, out_off, scratch):
    _check_args(msg, msg_off, msg_len, out, out_off, HEX_LEN, scratch)
    _check_mid(kstate, mid, mo, prefix_len)
    _hmac_mid_into_scratch_portable(kstate, mid, mo, prefix_len, msg, msg_off, msg_len, scratch)
    _write_hex_words(scratch, _ST, 8, out, out_off)


@njit(cache=True, nogil=True)
def _hmac_sha256_hex_mid_sha_ni(kstate, mid, mo, prefix_len, msg, msg_off, msg_len, out, out_off, scratch):
    _check_args(msg, msg_off, msg_len, out, out_off, HEX_LEN, scratch)
    _check_mid(kstate, mid, mo, prefix_len)
    _sha_ni_hmac_mid(kstate, mid, mo, prefix_len, msg, msg_off, msg_len, scratch, _ST)
    _write_hex_words(scratch, _ST, 8, out, out_off)


@njit(cache=True, nogil=True)
def _sha256_compress_sha_ni(state, buf, off, w):
    _check_compress_args(state, buf, off, w)
    _sha_ni_absorb(state, 0, buf, off, 1)


@njit(cache=True, nogil=True)
def _sha256_digest_sha_ni(buf, off, length, out, out_off, scratch):
    _check_args(buf, off, length, out, out_off, DIGEST_LEN, scratch)
    for i in range(8):
        scratch[_ST + i] = SHA256_H0[i]
    _sha_ni_absorb_final(scratch, _ST, buf, off, length)
    _write_digest(scratch, _ST, out, out_off)


@njit(cache=True, nogil=True)
def _hmac_sha256_hex_sha_ni(kstate, msg, msg_off, msg_len, out, out_off, scratch):
    _check_args(msg, msg_off, msg_len, out, out_off, HEX_LEN, scratch)
    _check_kstate(kstate)
    _sha_ni_hmac(kstate, msg, msg_off, msg_len, scratch, _ST)
    _write_hex_words(scratch, _ST, 8, out, out_off)


@njit(cache=True, nogil=True)
def _hmac_sha256_digest_sha_ni(kstate, msg, msg_off, msg_len, out, out_off, scratch):
    _check_args(msg, msg_off, msg_len, out, out_off, DIGEST_LEN, scratch)
    _check_kstate(kstate)
    _sha_ni_hmac(kstate, msg, msg_off, msg_len, scratch, _ST)
    _write_digest(scratch, _ST, out, out_off)


class Sha256Kernels(NamedTuple):
    """One implementation's jitted kernels (signatures as documented on the public names)."""
    sha256_compress: object
    sha256_digest: object
    hmac_sha256_hex: object
    hmac_sha256_digest: object
    hmac_sha256_hex_mid: object


PORTABLE_KERNELS = Sha256Kernels(_sha256_compress_portable, _sha256_digest_portable, _hmac_sha256_hex_portable,
                                 _hmac_sha256_digest_portable, _hmac_sha256_hex_mid_portable)
# None where calling them would abort the process (see the module docstring)
SHA_NI_KERNELS = (Sha256Kernels(_sha256_compress_sha_ni, _sha256_digest_sha_ni, _hmac_sha256_hex_sha_ni,
                                _hmac_sha256_digest_sha_ni, _hmac_sha256_hex_mid_sha_ni) if CPU_HAS_SHA_NI else None)
KERNELS = SHA_NI_KERNELS if SHA_NI_ENABLED else PORTABLE_KERNELS

# Public kernels (nogil, allocation-free, ValueError on out-of-range arguments):
# sha256_compress(state, buf, off, w): absorb the 64-byte block buf[off:off+64] into state (uint32[8], updated in
#     place); w is uint32[>=64] work.
# sha256_digest(buf, off, length, out, out_off, scratch): plain SHA-256 of buf[off:off+length]; writes the 32 raw
#     digest bytes to out[out_off:out_off+32].
# hmac_sha256_hex(kstate, msg, msg_off, msg_len, out, out_off, scratch): 64 lowercase hex chars of
#     HMAC-SHA256(key, msg[msg_off:msg_off+msg_len]) into out[out_off:out_off+64]; kstate = hmac_key_state(secret).
# hmac_sha256_digest(kstate, msg, msg_off, msg_len, out, out_off, scratch): the 32 raw bytes of that HMAC into
#     out[out_off:out_off+32].
sha256_compress = KERNELS.sha256_compress
sha256_digest = KERNELS.sha256_digest
hmac_sha256_hex = KERNELS.hmac_sha256_hex
hmac_sha256_digest = KERNELS.hmac_sha256_digest
# hmac_sha256_hex_mid(kstate, mid, mo, prefix_len, msg, msg_off, msg_len, out, out_off, scratch): as hmac_sha256_hex
#     of (P + msg[msg_off:msg_off+msg_len]), where mid[mo:mo+8], prefix_len = hmac_midstate(kstate, P): the whole
#     64-byte blocks of a constant prefix P are hashed once, not per message.
hmac_sha256_hex_mid = KERNELS.hmac_sha256_hex_mid


# ---------------------------------------------------------------------------------------------------------------
# HMAC key state (Python, once per key)


def hmac_key_state(secret: bytes | bytearray | memoryview | str) -> np.ndarray:
    """uint32[16]: SHA-256 midstate after (key XOR ipad) in words 0..7, after (key XOR opad) in words 8..15.
    A str secret is UTF-8 encoded (as Binance secrets are ASCII, this is the same bytes). Runs once per key."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) > BLOCK_LEN:
        key = hashlib.sha256(key).digest()
    block = np.zeros(BLOCK_LEN, dtype=np.uint8)
    block[: len(key)] = np.frombuffer(key, dtype=np.uint8)
    padded = np.empty(BLOCK_LEN, dtype=np.uint8)
    w = np.zeros(64, dtype=np.uint32)
    kstate = np.empty(16, dtype=np.uint32)
    kstate[:8] = SHA256_H0
    kstate[8:] = SHA256_H0
    np.bitwise_xor(block, np.uint8(_IPAD), out=padded)
    sha256_compress(kstate[:8], padded, 0, w)
    np.bitwise_xor(block, np.uint8(_OPAD), out=padded)
    sha256_compress(kstate[8:], padded, 0, w)
    # these buffers hold key material; do not leave it in freed memory for the next allocation to see
    block[:] = 0
    padded[:] = 0
    w[:] = 0
    return kstate


def hmac_midstate(kstate: np.ndarray, prefix: bytes) -> tuple[np.ndarray, int, int]:
    """(midstate uint32[8], prefix_len, skip): the inner SHA-256 state after the ipad block and the whole 64-byte
    blocks of `prefix`, prefix_len = the bytes it has absorbed (64 + skip), skip = the bytes of `prefix` it covers.
    A message starting with `prefix` then signs as hmac_sha256_hex_mid(kstate, mid, 0, prefix_len, msg, skip, ...).
    As sensitive as the key (see hmac_key_state)."""
    skip = len(prefix) // BLOCK_LEN * BLOCK_LEN
    st = kstate[:8].copy()
    buf = np.frombuffer(bytes(prefix[:skip]) or b"\0", dtype=np.uint8).copy()
    w = np.zeros(64, dtype=np.uint32)
    for off in range(0, skip, BLOCK_LEN):
        sha256_compress(st, buf, off, w)
    w[:] = 0
    return st, BLOCK_LEN + skip, skip


def hmac_hex_bytes(kstate: np.ndarray, data: bytes | bytearray | memoryview) -> str:
    """Python convenience for tests and tools (allocates; not for hot paths)."""
    # a writable copy: the hot path's callers pass writable buffers, so this reuses their compiled specialisation
    # instead of compiling (and caching) a second one for read-only arrays
    msg = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    out = np.zeros(HEX_LEN, dtype=np.uint8)
    hmac_sha256_hex(kstate, msg, 0, msg.size, out, 0, new_scratch())
    return out.tobytes().decode("ascii")


# ---------------------------------------------------------------------------------------------------------------
# CRC-32 (zlib.crc32 compatible)


@njit(cache=True, nogil=True)
def crc32(buf, off, length, init=0):
    """zlib.crc32(bytes(buf[off:off+length]), init): chain calls by passing the previous result as init."""
    if off < 0 or length < 0 or off + length > buf.size:
        raise ValueError("crc32: range outside the buffer")
    t = CRC32_TABLES
    c = np.uint32(np.int64(init) & 0xFFFFFFFF) ^ np.uint32(0xFFFFFFFF)
    p = off
    end = off + length
    while p + 8 <= end:
        lo = c ^ ((np.uint32(buf[p]) | (np.uint32(buf[p + 1]) << np.uint32(8))
                   | (np.uint32(buf[p + 2]) << np.uint32(16)) | (np.uint32(buf[p + 3]) << np.uint32(24))))
        c = (t[7, lo & np.uint32(0xFF)] ^ t[6, (lo >> np.uint32(8)) & np.uint32(0xFF)]
             ^ t[5, (lo >> np.uint32(16)) & np.uint32(0xFF)] ^ t[4, lo >> np.uint32(24)]
             ^ t[3, buf[p + 4]] ^ t[2, buf[p + 5]] ^ t[1, buf[p + 6]] ^ t[0, buf[p + 7]])
        p += 8
    while p < end:
        c = t[0, (c ^ np.uint32(buf[p])) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        p += 1
    return np.int64(c ^ np.uint32(0xFFFFFFFF))


@njit(cache=True, nogil=True)
def crc32_hex8(value, out, out_off):
    """8 lowercase hex digits of value (a crc32 result), as f"{value:08x}", into out[out_off:out_off+8]."""
    if out_off < 0 or out_off + 8 > out.size:
        raise ValueError("crc32_hex8: output range outside the buffer")
    v = np.uint32(np.int64(value) & 0xFFFFFFFF)
    for j in range(8):
        out[out_off + j] = _HEX_CHARS[(v >> np.uint32(28 - 4 * j)) & np.uint32(0xF)]
