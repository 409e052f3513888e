"""Order bytes on the wire: the sender's fast path for new orders.

Why this module exists: from the moment the Brain hands an order over to the moment its bytes go into the socket,
the generic path (order_params dict -> journal dict -> orjson -> signed query -> `requests`) spends 0.1-0.7 ms in
Python. Here the whole request is built from the ORDER_REQUEST record inside nogil @njit code, from tables
prepared once per run: the exact REST query string or ws-fapi frame (decimal strings from integer ticks/steps,
HMAC-SHA256 signature resumed from a per-template midstate), copied from a prebuilt template per (symbol, side,
type/timeInForce, reduceOnly) with only the variable bytes written, and the journal's `req` line, stored into the
journal's shared-memory ring (or written with one write(2) under fsync = always) before anything is sent. The sender's Python
then only calls `sendall` on a prepared slice and reads the answer.

What is sent is byte-for-byte what aegis.binance.signing would produce for the same order (tests check it against
signed_query / ws_signed_params), so the venue-side rules (signature over the exact query, raw sorted params on
ws-fapi, decimal text from the filters' own strings) hold unchanged.

The sender's jitted code sends on plain connections itself; on TLS (every real Binance endpoint) the send goes from
Python, which has the ssl module, as does every answer. One request is in flight per connection (HTTP/1.1 pipelining
is not something Binance documents), so the sender keeps a small pool of REST order connections and sends each new
order on one whose answer has been read; ws-fapi keeps one order in flight (websocket-client serialises writers on
its own lock).
"""
from __future__ import annotations

import os
import select
import socket
import ssl
from collections import namedtuple
from urllib.parse import urlsplit

import numpy as np
import orjson
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from aegis.binance import sha256
from aegis.core.codecs import put_bytes, put_decimal, put_int, put_span
from aegis.core.jit import njit
from aegis.core.records import ORDER_MARKET, SIDE_BUY, TIF_FOK, TIF_GTX, TIF_IOC
from aegis.binance.signing import unit_parts, encode_params

TRANSPORT_REST, TRANSPORT_WS = 0, 1
MAX_REQUEST = 2048        # bytes of one prepared request (a REST order is ~400 B, a ws-fapi frame ~450 B)
MAX_JOURNAL_LINE = 512    # one `req` line is ~220 B
MASK_POOL = 1 << 16       # bytes of random websocket mask keys (16 k frames between refills)

# mutable per-run state (int64 slots), written by the sender's Python side between orders
ST_OFFSET_MS = 0          # exchange clock - local wall clock (BinanceClient.offset_ms)
ST_MASK_POS = 1           # next unused byte of the mask pool
ST_FSYNC = 2              # 1: fdatasync the journal before sending (journal fsync = "always")
ST_WRITE_ERRNO = 3        # last failed journal write: -errno, or the bytes the file took of it
ST_SENT_N = 5             # how many of the batch's first requests the sender's jitted code sent (or tried)
ST_IN_FLIGHT = 6          # orders the sender has in flight (their connections: aegis.trade.sender.OrderBuffers)
ST_BACKOFF_UNTIL_NS = 9   # CLOCK_MONOTONIC ns before which nothing may be sent (a 429/418 back-off, any thread)
ST_WARM_NS = 10           # a polling sender rebuilds the last order into scratch this often while it waits (0: never)
ST_WARMS = 11             # how many times it did
ST_LEN = 16
MSG_NOSIGNAL = 0x4000     # a reset peer gives EPIPE, not a process-killing SIGPIPE

_I32, _I64 = ir.IntType(32), ir.IntType(64)


@intrinsic
def _write(typingctx, fd, buf, n):
    """write(2) of buf[:n] by symbol name (cacheable, like aegis.core.clock)."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.uint8):
        return None
    sig = types.int64(fd, buf, n)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[1])(context, builder, args[1])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I32, _I64, _I64]), "write")
        f = builder.trunc(context.cast(builder, args[0], signature.args[0], types.int64), _I32)
        n = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.call(fn, [f, builder.ptrtoint(ary.data, _I64), n])

    return sig, codegen


@intrinsic
def _send(typingctx, fd, buf, off, n, flags):
    """send(2) of buf[off:off + n] by symbol name; returns the count or -errno."""
    if not (isinstance(buf, types.Array) and buf.dtype == types.uint8):
        return None
    sig = types.int64(fd, buf, off, n, flags)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[1])(context, builder, args[1])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I32, _I64, _I64, _I32]), "send")
        f = builder.trunc(context.cast(builder, args[0], signature.args[0], types.int64), _I32)
        off = context.cast(builder, args[2], signature.args[2], types.int64)
        n = context.cast(builder, args[3], signature.args[3], types.int64)
        fl = builder.trunc(context.cast(builder, args[4], signature.args[4], types.int64), _I32)
        r = builder.call(fn, [f, builder.add(builder.ptrtoint(ary.data, _I64), off), n, fl])
        errno_loc = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32.as_pointer(), []),
                                                   "__errno_location")
        err = builder.sext(builder.load(builder.call(errno_loc, [])), _I64)
        neg = builder.icmp_signed("<", r, ir.Constant(_I64, 0))
        return builder.select(neg, builder.neg(err), r)

    return sig, codegen


@intrinsic
def _memcpy(typingctx, dst, dpos, src, soff, n):
    """dst[dpos:dpos + n] = src[soff:soff + n] as one llvm.memcpy (uint8, C-contiguous, distinct arrays); returns
    dpos + n. A byte loop indexing with signed positions carries a negative-index check per byte that keeps LLVM
    from turning it into a copy. Bounds: the caller's."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == types.uint8
            and src.dtype == types.uint8 and dst.layout == "C" and src.layout == "C"):
        return None
    sig = types.intp(dst, dpos, src, soff, n)

    def codegen(context, builder, signature, args):
        da = context.make_array(signature.args[0])(context, builder, args[0])
        sa = context.make_array(signature.args[2])(context, builder, args[2])
        dp, so, cnt = (context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 3, 4))
        cgutils.raw_memcpy(builder, builder.gep(da.data, [dp]), builder.gep(sa.data, [so]), cnt, 1)
        return builder.add(dp, cnt)

    return sig, codegen


@intrinsic
def last_errno(typingctx):
    """The calling thread's errno (glibc's __errno_location), read right after a call that failed, so the journal's
    failure says why ("No space left on device") as Python's own writes do."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32.as_pointer(), []),
                                            "__errno_location")
        return builder.load(builder.call(fn, []))

    return sig, codegen


@intrinsic
def _poll(typingctx, pfds, n):
    """poll(2) with a zero timeout on pfds[:n], each int64 a struct pollfd (int fd | short events << 32 | short
    revents << 48, little-endian); returns how many are ready, or -1."""
    if not (isinstance(pfds, types.Array) and pfds.dtype == types.int64):
        return None
    sig = types.int64(pfds, n)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I64, _I64, _I32]), "poll")
        cnt = context.cast(builder, args[1], signature.args[1], types.int64)
        r = builder.call(fn, [builder.ptrtoint(ary.data, _I64), cnt, ir.Constant(_I32, 0)])
        return builder.sext(r, _I64)

    return sig, codegen


POLLIN = 1


def pollfd(fd: int) -> int:
    """The int64 struct pollfd asking whether fd is readable (a negative fd is skipped by poll(2))."""
    return (fd & 0xFFFFFFFF) | (POLLIN << 32)


@njit(cache=True, nogil=True)
def any_readable(pfds):
    """Whether one of the descriptors in pfds (pollfd entries) has something to read, or was closed."""
    return pfds.shape[0] > 0 and _poll(pfds, pfds.shape[0]) != 0


@njit(cache=True, nogil=True)
def send_now(fd, buf, off, n):
    """One send(2) from jitted code (the order path's own write); the caller finishes a partial send."""
    return _send(fd, buf, off, n, MSG_NOSIGNAL)


@intrinsic
def fdatasync(typingctx, fd):
    sig = types.int32(fd)

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32]), "fdatasync")
        return builder.call(fn, [builder.trunc(context.cast(builder, args[0], signature.args[0], types.int64),
                                               _I32)])

    return sig, codegen


@njit(cache=True, nogil=True)
def write_all(fd, buf, n):
    """Returns n, or a value != n if the file refused part of it (the caller must not send)."""
    done = 0
    while done < n:
        w = _write(fd, buf[done:], n - done)
        if w <= 0:
            return done if w == 0 else w
        done += w
    return done


# --------------------------------------------------------------------------------------------- literals
def _lit(text: str) -> np.ndarray:
    # module-level arrays are frozen into the compiled code as constants
    return np.frombuffer(text.encode(), np.uint8).copy()


L_POST = _lit("POST /fapi/v1/order?")
L_BUY, L_SELL, L_MARKET, L_LIMIT = _lit("BUY"), _lit("SELL"), _lit("MARKET"), _lit("LIMIT")
L_QTY, L_PRICE, L_SIG = _lit("&quantity="), _lit("&price="), _lit("&signature=")
L_HTTP_END = _lit("\r\nContent-Length: 0\r\nUser-Agent: aegis\r\nAccept: */*\r\nAccept-Encoding: identity\r\n"
                  "Connection: keep-alive\r\n\r\n")
L_GTC, L_IOC, L_FOK, L_GTX = _lit("GTC"), _lit("IOC"), _lit("FOK"), _lit("GTX")
L_TRUE, L_FALSE = _lit("true"), _lit("false")
# ws-fapi (docs/binance-notes.md, Request signing): params sorted by name, signature over `k=v&...` of the raw values
L_WS_HEAD = _lit('{"id":"')
L_WS_METHOD = _lit('","method":"order.place","params":{')
L_WS_SIGNATURE = _lit(',"signature":"')
L_WS_END = _lit('"}}')
WS_KEYS = ("apiKey", "newClientOrderId", "newOrderRespType", "price", "quantity", "recvWindow", "reduceOnly",
           "side", "symbol", "timeInForce", "timestamp", "type")
assert list(WS_KEYS) == sorted(WS_KEYS)
_WK = [_lit(k) for k in WS_KEYS]
(WK_APIKEY, WK_COID, WK_RESP, WK_PRICE, WK_QTY, WK_RW, WK_RO, WK_SIDE, WK_SYMBOL, WK_TIF, WK_TS,
 WK_TYPE) = range(len(WS_KEYS))
WS_KEY_BLOB = np.concatenate(_WK)
WS_KEY_OFF = np.cumsum([0] + [len(k) for k in _WK[:-1]]).astype(np.int64)
WS_KEY_LEN = np.array([len(k) for k in _WK], np.int64)
# journal `req` line (aegis.trade.journal record kind "req"; read back by orjson, so only the JSON matters)
L_J_HEAD, L_J_ID, L_J_COID = _lit('{"k":"req","t":'), _lit(',"id":'), _lit(',"coid":"')
L_J_SYM, L_J_SIDE, L_J_TYPE = _lit('","sym":'), _lit(',"side":"'), _lit('","type":"')
L_J_TIF, L_J_QTY, L_J_PX = _lit('","tif":"'), _lit('","qty":"'), _lit('","px":"')
L_J_RO, L_J_X, L_J_END = _lit('","ro":'), _lit(',"act":"new","x":'), _lit('}')
L_ZERO = _lit("0")

# Everything the encoder reads, prepared once per run (immutable afterwards).
#   blob: per-symbol texts; sym_*: (offset, length) into blob for the REST (percent-encoded), raw (signature)
#   and JSON (quoted, escaped) forms; units: per symbol (limit qty m, d, market qty m, d, price m, d) where a
#   value is m * units / 10**d; consts: prefix, api key, host header, resp type; k: HMAC key state.
#   mid, mid_pre, mid_skip: HMAC midstates (sha256.hmac_midstate) of the constant start of each signed message, one
#   per template (_template: symbol, side, type and timeInForce, reduceOnly) and, at index n_templates, the ws-fapi
#   payload's; the REST query puts its constant params first (aegis.trade.sender.order_params) so that their whole
#   64-byte blocks are hashed once per run, not per order.
#   tblob, tpl: the prebuilt byte runs of every template (REST orders): tpl[t] = (offset, length) pairs into
#   tblob of TP_HEAD ("POST ...?" and the constant params, up to the client id's digits), TP_JMID (the journal
#   line from the coid's digits to the qty's value), TP_JEND (after the price to the exchange stamp); row n_templates
#   holds the per-run runs TP_RWTS ("&recvWindow=..&timestamp="), TP_TRAILER (" HTTP/1.1" and the headers) and
#   TP_JHEAD (the journal line's '","coid":"<prefix>').
Encoder = namedtuple("Encoder", "transport blob sym_rest sym_raw sym_json units consts c_off c_len kstate "
                                "recv_window scratch spans mid mid_pre mid_skip tblob tpl")
TP_HEAD, TP_JMID, TP_JEND = 0, 2, 4            # per template (column of the offset; length is the next column)
TP_RWTS, TP_TRAILER, TP_JHEAD = 0, 2, 4        # per run (row n_templates)
TPL_COLS = 6
C_PREFIX, C_APIKEY, C_HOST, C_RESP = range(4)
N_TYPE_TIF = 5            # MARKET, then LIMIT with GTC, IOC, FOK, GTX
_TYPE_TIF = (("MARKET", ""), ("LIMIT", "GTC"), ("LIMIT", "IOC"), ("LIMIT", "FOK"), ("LIMIT", "GTX"))
TEMPLATES_PER_SYMBOL = 2 * N_TYPE_TIF * 2


def rest_constant_params(symbol: str, side: str, otype: str, tif: str, reduce_only: bool, resp_type: str) -> list:
    """The params a new order's query starts with, in order: the same for every order of one template.
    aegis.trade.sender.order_params follows this order, then newClientOrderId, quantity, [price]."""
    p = [("symbol", symbol), ("side", side), ("type", otype)]
    if otype != "MARKET":
        p.append(("timeInForce", tif))
    p.append(("newOrderRespType", resp_type))
    if reduce_only:
        p.append(("reduceOnly", "true"))
    return p


def _rest_constant_start(symbol: str, side: str, tt: int, ro: int, prefix: str, resp_type: str) -> bytes:
    otype, tif = _TYPE_TIF[tt]
    return (encode_params(rest_constant_params(symbol, side, otype, tif, bool(ro), resp_type))
            + "&newClientOrderId=" + prefix).encode()


def build_encoder(transport: str, rules, prefix: str, api_key: str, secret: str, recv_window_ms: int,
                  resp_type: str, rest_url: str) -> Encoder:
    """Tables for one run. `rules` are aegis.trade.risk.SymbolRules in symbol-id order."""
    blob = bytearray()
    spans = np.zeros((3, len(rules), 2), np.int64)
    units = np.zeros((len(rules), 6), np.int64)
    for i, r in enumerate(rules):
        forms = (encode_params([("s", r.symbol)])[2:].encode(), r.symbol.encode("utf-8"), orjson.dumps(r.symbol))
        for f, text in enumerate(forms):
            spans[f, i] = (len(blob), len(text))
            blob += text
        units[i] = (*unit_parts(r.step_size), *unit_parts(r.market_step_size), *unit_parts(r.tick_size))
    for name, text in (("prefix", prefix), ("API key", api_key)):
        if encode_params([("s", text)])[2:] != text or orjson.dumps(text)[1:-1].decode() != text:
            raise ValueError(f"the {name} needs escaping, which the fast order path does not do")
    u = urlsplit(rest_url)
    default_port = 443 if u.scheme == "https" else 80
    host = u.hostname if (u.port or default_port) == default_port else f"{u.hostname}:{u.port}"
    consts = [prefix.encode(), api_key.encode(), host.encode(), resp_type.encode()]
    c_len = np.array([len(c) for c in consts], np.int64)
    c_off = np.concatenate([[0], np.cumsum(c_len)[:-1]]).astype(np.int64)
    kstate = sha256.hmac_key_state(secret.encode("utf-8"))
    nt = len(rules) * TEMPLATES_PER_SYMBOL
    mid = np.zeros((nt + 1) * 8, np.uint32)
    mid_pre = np.zeros(nt + 1, np.int64)
    mid_skip = np.zeros(nt + 1, np.int64)
    starts = []
    if transport != "ws":
        for i, r in enumerate(rules):
            for side in ("BUY", "SELL"):
                for tt in range(N_TYPE_TIF):
                    for ro in (0, 1):
                        starts.append(_rest_constant_start(r.symbol, side, tt, ro, prefix, resp_type))
    else:
        starts = [b""] * nt
    # ws-fapi signs the params sorted by name: apiKey and the newClientOrderId's prefix always come first
    starts.append(b"apiKey=" + api_key.encode() + b"&newClientOrderId=" + prefix.encode())
    for t, start in enumerate(starts):
        m, mid_pre[t], mid_skip[t] = sha256.hmac_midstate(kstate, start)
        mid[8 * t:8 * t + 8] = m
    # the prebuilt byte runs (tblob, tpl)
    tblob = bytearray()
    tpl = np.zeros((nt + 1, TPL_COLS), np.int64)

    def run(t, col, text: bytes):
        tpl[t, col], tpl[t, col + 1] = len(tblob), len(text)
        tblob.extend(text)

    if transport != "ws":
        t = 0
        for i, r in enumerate(rules):
            for side in ("BUY", "SELL"):
                for tt in range(N_TYPE_TIF):
                    for ro in (0, 1):
                        run(t, TP_HEAD, b"POST /fapi/v1/order?" + starts[t])
                        otype, tif = _TYPE_TIF[tt]
                        run(t, TP_JMID, b'","sym":' + orjson.dumps(r.symbol) + b',"side":"' + side.encode()
                            + b'","type":"' + otype.encode() + b'","tif":"' + tif.encode() + b'","qty":"')
                        run(t, TP_JEND, b'","ro":' + (b"true" if ro else b"false") + b',"act":"new","x":')
                        t += 1
    run(nt, TP_RWTS, b"&recvWindow=%d&timestamp=" % int(recv_window_ms))
    run(nt, TP_TRAILER, b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-MBX-APIKEY: " + api_key.encode()
        + L_HTTP_END.tobytes())
    run(nt, TP_JHEAD, b',"coid":"' + prefix.encode())
    return Encoder(TRANSPORT_WS if transport == "ws" else TRANSPORT_REST,
                   np.frombuffer(bytes(blob) or b"\0", np.uint8).copy(), spans[0].copy(), spans[1].copy(),
                   spans[2].copy(), units, np.frombuffer(b"".join(consts), np.uint8).copy(), c_off, c_len,
                   kstate, int(recv_window_ms), sha256.new_scratch(),
                   np.zeros((len(WS_KEYS), 2), np.int64), mid, mid_pre, mid_skip,
                   np.frombuffer(bytes(tblob), np.uint8).copy(), tpl)


def new_state() -> np.ndarray:
    return np.zeros(ST_LEN, np.int64)


def new_mask_pool() -> np.ndarray:
    return np.frombuffer(os.urandom(MASK_POOL), np.uint8).copy()


# --------------------------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True)
def _put_const(out, pos, enc, c):
    return put_span(out, pos, enc.consts, enc.c_off[c], enc.c_len[c])


# (helpers take the encoder's arrays they use, not the encoder: a namedtuple is passed by value, ~20 array structs
# copied per call where LLVM does not inline)
@njit(cache=True, nogil=True)
def _qty(out, pos, units, req):
    s = req.symbol
    if req.order_type == ORDER_MARKET:
        return put_decimal(out, pos, req.qty_steps * units[s, 2], units[s, 3])
    return put_decimal(out, pos, req.qty_steps * units[s, 0], units[s, 1])


@njit(cache=True, nogil=True)
def _price(out, pos, units, req):
    s = req.symbol
    return put_decimal(out, pos, req.price_ticks * units[s, 4], units[s, 5])


@njit(cache=True, nogil=True)
def _tif(out, pos, tif):
    if tif == TIF_IOC:
        return put_bytes(out, pos, L_IOC)
    if tif == TIF_FOK:
        return put_bytes(out, pos, L_FOK)
    if tif == TIF_GTX:
        return put_bytes(out, pos, L_GTX)
    return put_bytes(out, pos, L_GTC)


@njit(cache=True, nogil=True)
def _template(req):
    """Which of a symbol's TEMPLATES_PER_SYMBOL constant query starts this order has (see rest_constant_params)."""
    tt = 0
    if req.order_type != ORDER_MARKET:
        tt = 2 if req.tif == TIF_IOC else 3 if req.tif == TIF_FOK else 4 if req.tif == TIF_GTX else 1
    side = 0 if req.side == SIDE_BUY else 1
    return ((np.int64(req.symbol) * 2 + side) * N_TYPE_TIF + tt) * 2 + (1 if req.reduce_only else 0)


@njit(cache=True, nogil=True)
def _run(out, pos, tblob, tpl, t, col):
    return _memcpy(out, pos, tblob, tpl[t, col], tpl[t, col + 1])


@njit(cache=True, nogil=True)
def encode_rest_order(enc, req, ts_ms, out, pos):
    """The complete HTTP request for POST /fapi/v1/order at out[pos:]; returns the end position. Query order as
    aegis.trade.sender.order_params + signing.signed_query: the constant params first (symbol, side, type,
    [timeInForce], newOrderRespType, [reduceOnly], and newClientOrderId up to its run prefix), then the rest of
    newClientOrderId, quantity, [price], recvWindow, timestamp, signature. Everything but the client id's digits,
    the quantity, the price, the timestamp and the signature is copied from the order's prebuilt template, and
    the signature resumes from the template's midstate, past the constant start's whole blocks."""
    t = _template(req)
    nt = enc.mid_pre.shape[0] - 1
    tblob, tpl = enc.tblob, enc.tpl
    q0 = pos + L_POST.shape[0]
    pos = _run(out, pos, tblob, tpl, t, TP_HEAD)
    pos = put_int(out, pos, req.client_id)
    pos = put_bytes(out, pos, L_QTY)
    pos = _qty(out, pos, enc.units, req)
    if req.order_type != ORDER_MARKET:
        pos = put_bytes(out, pos, L_PRICE)
        pos = _price(out, pos, enc.units, req)
    pos = _run(out, pos, tblob, tpl, nt, TP_RWTS)
    pos = put_int(out, pos, ts_ms)
    q1 = pos
    pos = put_bytes(out, pos, L_SIG)
    skip = enc.mid_skip[t]
    sha256.hmac_sha256_hex_mid(enc.kstate, enc.mid, 8 * t, enc.mid_pre[t], out, q0 + skip, q1 - q0 - skip, out, pos,
                               enc.scratch)
    return _run(out, pos + 64, tblob, tpl, nt, TP_TRAILER)


@njit(cache=True, nogil=True)
def _ws_values(enc, req, ts_ms, tmp, p, spans):
    """Every ws param's raw value once, at tmp[p:], spans[k] = (offset, length), length -1 when absent; returns
    the end. Only the symbol needs a different JSON form (escaped); the rest is JSON-safe by construction
    (build_encoder refuses a prefix or key that is not)."""
    limit = req.order_type != ORDER_MARKET
    for k in range(WS_KEY_LEN.shape[0]):
        start = p
        if k == WK_APIKEY:
            p = _put_const(tmp, p, enc, C_APIKEY)
        elif k == WK_COID:
            p = _put_const(tmp, p, enc, C_PREFIX)
            p = put_int(tmp, p, req.client_id)
        elif k == WK_RESP:
            p = _put_const(tmp, p, enc, C_RESP)
        elif k == WK_PRICE:
            if limit:
                p = _price(tmp, p, enc.units, req)
        elif k == WK_QTY:
            p = _qty(tmp, p, enc.units, req)
        elif k == WK_RW:
            p = put_int(tmp, p, enc.recv_window)
        elif k == WK_RO:
            if req.reduce_only:
                p = put_bytes(tmp, p, L_TRUE)
        elif k == WK_SIDE:
            p = put_bytes(tmp, p, L_BUY if req.side == SIDE_BUY else L_SELL)
        elif k == WK_SYMBOL:
            p = put_span(tmp, p, enc.blob, enc.sym_raw[req.symbol, 0], enc.sym_raw[req.symbol, 1])
        elif k == WK_TIF:
            if limit:
                p = _tif(tmp, p, req.tif)
        elif k == WK_TS:
            p = put_int(tmp, p, ts_ms)
        else:
            p = put_bytes(tmp, p, L_LIMIT if limit else L_MARKET)
        spans[k, 0] = start
        spans[k, 1] = p - start if p > start else -1
    return p


@njit(cache=True, nogil=True)
def encode_ws_order(enc, req, ts_ms, mask_pool, state, out, pos, tmp):
    """One masked ws-fapi text frame carrying order.place (Binance docs: "New Order (TRADE)", WebSocket API) at
    out[pos:]; the request id is the newClientOrderId (unique per journal), so the answer is matched without a second
    counter. `tmp` is scratch (>= 2 * MAX_REQUEST bytes). Returns the end position."""
    spans = enc.spans
    half = tmp.shape[0] // 2
    _ws_values(enc, req, ts_ms, tmp, half, spans)
    # signature payload: k=v&... over the sorted params, raw values
    p = 0
    for k in range(WS_KEY_LEN.shape[0]):
        if spans[k, 1] < 0:
            continue
        if p > 0:
            tmp[p] = 38    # '&'
            p += 1
        p = put_span(tmp, p, WS_KEY_BLOB, WS_KEY_OFF[k], WS_KEY_LEN[k])
        tmp[p] = 61        # '='
        p = put_span(tmp, p + 1, tmp, spans[k, 0], spans[k, 1])
    payload_len = p
    # the frame header, then the JSON straight into out; masked in place at the end
    n_max = half - payload_len      # JSON room (the payload and the values share tmp)
    hdr = 4 if n_max >= 126 else 2
    j0 = pos + hdr + 4
    j = put_bytes(out, j0, L_WS_HEAD)
    j = _put_const(out, j, enc, C_PREFIX)
    j = put_int(out, j, req.client_id)
    j = put_bytes(out, j, L_WS_METHOD)
    first = True
    for k in range(WS_KEY_LEN.shape[0]):
        if spans[k, 1] < 0:
            continue
        if not first:
            out[j] = 44    # ','
            j += 1
        first = False
        out[j] = 34
        j = put_span(out, j + 1, WS_KEY_BLOB, WS_KEY_OFF[k], WS_KEY_LEN[k])
        out[j] = 34
        out[j + 1] = 58    # ':'
        j += 2
        if k == WK_SYMBOL:
            j = put_span(out, j, enc.blob, enc.sym_json[req.symbol, 0], enc.sym_json[req.symbol, 1])
        elif k == WK_RW or k == WK_TS:
            j = put_span(out, j, tmp, spans[k, 0], spans[k, 1])
        else:
            out[j] = 34
            j = put_span(out, j + 1, tmp, spans[k, 0], spans[k, 1])
            out[j] = 34
            j += 1
    j = put_bytes(out, j, L_WS_SIGNATURE)
    t = enc.mid_pre.shape[0] - 1     # the payload's constant start: apiKey, the newClientOrderId's prefix
    skip = enc.mid_skip[t]
    sha256.hmac_sha256_hex_mid(enc.kstate, enc.mid, 8 * t, enc.mid_pre[t], tmp, skip, payload_len - skip, out, j,
                               enc.scratch)
    j = put_bytes(out, j + 64, L_WS_END)
    n = j - j0
    if hdr == 4 and n < 126:        # a short frame after all: move it down to the 2-byte header
        for b in range(n):
            out[pos + 6 + b] = out[j0 + b]
        hdr = 2
        j0 = pos + 6
    # RFC 6455 §5.2: FIN + text; client frames are masked with a fresh key from the random pool
    out[pos] = 0x81
    if hdr == 2:
        out[pos + 1] = 0x80 | n
    else:
        out[pos + 1] = 0x80 | 126
        out[pos + 2] = (n >> 8) & 0xFF
        out[pos + 3] = n & 0xFF
    mp = state[ST_MASK_POS]
    if mp + 4 > mask_pool.shape[0]:
        mp = 0               # the Python side refills long before this; wrapping only reuses random keys
    state[ST_MASK_POS] = mp + 4
    m = pos + hdr
    for b in range(4):
        out[m + b] = mask_pool[mp + b]
    m0, m1, m2, m3 = mask_pool[mp], mask_pool[mp + 1], mask_pool[mp + 2], mask_pool[mp + 3]
    b = 0
    while b + 4 <= n:
        out[j0 + b] ^= m0
        out[j0 + b + 1] ^= m1
        out[j0 + b + 2] ^= m2
        out[j0 + b + 3] ^= m3
        b += 4
    while b < n:
        out[j0 + b] ^= mask_pool[mp + (b & 3)]
        b += 1
    return j0 + n


@njit(cache=True, nogil=True, inline="always")
def _end_journal_line(out, j0, pos):
    """A journal line's tail after its JSON, out[j0:pos]: a tab, the CRC-32 of the JSON in hex, a newline."""
    crc = sha256.crc32(out, j0, pos - j0, 0)
    out[pos] = 9           # '\t'
    sha256.crc32_hex8(crc, out, pos + 1)
    out[pos + 9] = 10      # '\n'
    return pos + 10


@njit(cache=True, nogil=True)
def encode_journal_req(enc, req, wall_ms, out, pos):
    """The journal's `req` line for a new order (aegis.trade.journal: `<json>\\t<crc32 hex>\\n`)."""
    if enc.transport != TRANSPORT_REST:
        return _journal_req_built(enc, req, wall_ms, out, pos)
    # its constant runs copied from the order's template
    t = _template(req)
    nt = enc.mid_pre.shape[0] - 1
    tblob, tpl = enc.tblob, enc.tpl
    j0 = pos
    pos = put_bytes(out, pos, L_J_HEAD)
    pos = put_int(out, pos, wall_ms)
    pos = put_bytes(out, pos, L_J_ID)
    pos = put_int(out, pos, req.client_id)
    pos = _run(out, pos, tblob, tpl, nt, TP_JHEAD)
    pos = put_int(out, pos, req.client_id)
    pos = _run(out, pos, tblob, tpl, t, TP_JMID)
    pos = _qty(out, pos, enc.units, req)
    pos = put_bytes(out, pos, L_J_PX)
    pos = _price(out, pos, enc.units, req) if req.order_type != ORDER_MARKET else put_bytes(out, pos, L_ZERO)
    pos = _run(out, pos, tblob, tpl, t, TP_JEND)
    pos = put_int(out, pos, req.exch_ts)
    out[pos] = 125         # '}'
    pos += 1
    return _end_journal_line(out, j0, pos)


@njit(cache=True, nogil=True)
def _journal_req_built(enc, req, wall_ms, out, pos):
    j0 = pos
    pos = put_bytes(out, pos, L_J_HEAD)
    pos = put_int(out, pos, wall_ms)
    pos = put_bytes(out, pos, L_J_ID)
    pos = put_int(out, pos, req.client_id)
    pos = put_bytes(out, pos, L_J_COID)
    pos = _put_const(out, pos, enc, C_PREFIX)
    pos = put_int(out, pos, req.client_id)
    pos = put_bytes(out, pos, L_J_SYM)
    pos = put_span(out, pos, enc.blob, enc.sym_json[req.symbol, 0], enc.sym_json[req.symbol, 1])
    pos = put_bytes(out, pos, L_J_SIDE)
    pos = put_bytes(out, pos, L_BUY if req.side == SIDE_BUY else L_SELL)
    pos = put_bytes(out, pos, L_J_TYPE)
    limit = req.order_type != ORDER_MARKET
    pos = put_bytes(out, pos, L_LIMIT if limit else L_MARKET)
    pos = put_bytes(out, pos, L_J_TIF)
    if limit:
        pos = _tif(out, pos, req.tif)
    pos = put_bytes(out, pos, L_J_QTY)
    pos = _qty(out, pos, enc.units, req)
    pos = put_bytes(out, pos, L_J_PX)
    pos = _price(out, pos, enc.units, req) if limit else put_bytes(out, pos, L_ZERO)
    pos = put_bytes(out, pos, L_J_RO)
    pos = put_bytes(out, pos, L_TRUE if req.reduce_only else L_FALSE)
    pos = put_bytes(out, pos, L_J_X)
    pos = put_int(out, pos, req.exch_ts)
    pos = put_bytes(out, pos, L_J_END)
    return _end_journal_line(out, j0, pos)


@njit(cache=True, nogil=True)
def encode_order(enc, req, ts_ms, mask_pool, state, out, pos, tmp):
    if enc.transport == TRANSPORT_WS:
        return encode_ws_order(enc, req, ts_ms, mask_pool, state, out, pos, tmp)
    return encode_rest_order(enc, req, ts_ms, out, pos)


# --------------------------------------------------------------------------------------------- Python side
class WireError(OSError):
    """Writing an order request failed part-way: some of its bytes may have left, so its outcome is unknown."""


class RestConnection:
    """One keep-alive HTTP/1.1 connection for prepared order requests (plain or TLS), with the minimal response
    reader an order answer needs: status line, headers, Content-Length or chunked body."""

    def __init__(self, rest_url: str, timeout_s: float = 5.0):
        u = urlsplit(rest_url)
        self.tls = u.scheme == "https"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.tls else 80)
        self.timeout_s = timeout_s
        self.sock = None
        self._buf = bytearray()
        self.reconnects = 0
        self.awaiting = False     # a request was sent on it and its answer is not read yet

    def connect(self) -> None:
        self.close()
        s = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            s = ssl.create_default_context().wrap_socket(s, server_hostname=self.host)
        self.sock = s
        self._buf = bytearray()
        self.reconnects += 1

    def usable(self) -> bool:
        """False when the server has closed an idle keep-alive connection (readable with nothing asked)."""
        if self.sock is None:
            return False
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not r

    def send(self, data) -> None:
        """sendall on the open connection (the caller connects first, before it stamps the send)."""
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.close()
            raise WireError(f"send: {type(e).__name__}") from e

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self._buf += chunk

    def _read_line_block(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self._buf[:i])
                del self._buf[:i + 4]
                return head
            if len(self._buf) > 65536:
                raise ConnectionError("response headers too long")
            self._fill()

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_crlf_line(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return line
            self._fill()

    def read_response(self, timeout_s: float | None = None) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body), waiting up to timeout_s (default: the connection's) for
        each read. Raises OSError/ConnectionError/socket.timeout."""
        try:
            self.sock.settimeout(self.timeout_s if timeout_s is None else timeout_s)
            while True:
                head = self._read_line_block()
                lines = head.split(b"\r\n")
                parts = lines[0].split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                    raise ConnectionError("not an HTTP response")
                status = int(parts[1])
                headers = {}
                for ln in lines[1:]:
                    k, _, v = ln.partition(b":")
                    headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
                if 100 <= status < 200:
                    continue          # 100 Continue and friends precede the real answer
                break
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = bytearray()
                while True:
                    size = int(self._read_crlf_line().split(b";")[0], 16)
                    if size == 0:
                        while self._read_crlf_line():
                            pass      # trailers
                        break
                    body += self._read_exact(size)
                    self._read_crlf_line()
                body = bytes(body)
            elif "content-length" in headers:
                body = self._read_exact(int(headers["content-length"]))
            else:                     # length by close
                while True:
                    try:
                        self._fill()
                    except ConnectionError:
                        break
                body, self._buf = bytes(self._buf), bytearray()
                headers["connection"] = "close"
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
            self._buf = bytearray()
        self.awaiting = False
