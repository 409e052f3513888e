"""@njit kernels of the venue's market generator: book evolution, JSON payload encoding, frame selection.

Everything in integer units: prices as tick indices (price units = tick * tick_units, printed with pdec
decimals), quantities in step units (printed with qdec decimals). Payload bytes are written straight into
preallocated uint8 buffers, so a batch of thousands of events costs microseconds per message, which is what
lets one Python thread feed a firehose of >= 200 k messages/s.
"""
from __future__ import annotations

import numpy as np

from aegis.core.codecs import put_bytes, put_decimal, put_int, put_span
from aegis.core.jit import njit
from aegis.core.websocket import put_text_header

# stream kinds per symbol (sid = sid_base[s] + kind)
K_BOOKTICKER = 0
K_DEPTH0 = 1          # @depth@0ms (one diff per engine event)
K_AGGTRADE = 2
K_DEPTH100 = 3        # @depth@100ms
K_DEPTH250 = 4        # @depth      (250 ms)
K_DEPTH500 = 5        # @depth@500ms
K_PART = 6            # 6..14: depth{5,10,20} x {100ms, 250ms, 500ms}: 6 + level_idx*3 + speed_idx
K_MARK3S = 15
K_MARK1S = 16
K_TRADE = 17
K_KLINE = 18          # 18..32: kline_<interval> for KLINE_INTERVALS
KLINE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
K_TICKER = K_KLINE + len(KLINE_INTERVALS)      # @ticker (500 ms)
K_MINITICKER = K_TICKER + 1                      # @miniTicker (500 ms)
K_CKLINE = K_MINITICKER + 1   # <pair>_<contract type>@continuousKline_<interval>, same order as KLINE_INTERVALS
N_KINDS = K_CKLINE + len(KLINE_INTERVALS)
# kline state fields (int64 array [field, interval, symbol]); quote volumes live in a float64 array
KL_OPEN_T, KL_O, KL_H, KL_L, KL_C, KL_V, KL_N, KL_TBV, KL_F, KL_LAST, KL_LASTQ = range(11)
KL_FIELDS = 11
KL_SINCE_START = len(KLINE_INTERVALS)  # an extra "interval" that never rolls: the venue's 24 h ticker statistics
# trade ring fields (int64 array [symbol, slot, field]): aggregate id, first/last trade id, price tick, qty units,
# transaction time, buyer is maker
TR_AGG, TR_FIRST, TR_LAST, TR_PX, TR_QTY, TR_T, TR_M = range(7)
TR_FIELDS = 7
TRADE_RING = 1000     # the most a REST trades/aggTrades request may return
SPEEDS_MS = (100, 250, 500)
PART_LEVELS = (5, 10, 20)

MAXC = 24  # max level changes one engine event may produce

_T_BT0 = np.frombuffer(b'{"e":"bookTicker","u":', dtype=np.uint8)
_T_BT1 = np.frombuffer(b',"s":"', dtype=np.uint8)
_T_BT2 = np.frombuffer(b'","b":"', dtype=np.uint8)
_T_BT3 = np.frombuffer(b'","B":"', dtype=np.uint8)
_T_BT4 = np.frombuffer(b'","a":"', dtype=np.uint8)
_T_BT5 = np.frombuffer(b'","A":"', dtype=np.uint8)
_T_BT6 = np.frombuffer(b'","T":', dtype=np.uint8)
_T_E = np.frombuffer(b',"E":', dtype=np.uint8)
_T_D0 = np.frombuffer(b'{"e":"depthUpdate","E":', dtype=np.uint8)
_T_D1 = np.frombuffer(b',"T":', dtype=np.uint8)
_T_D2 = np.frombuffer(b',"s":"', dtype=np.uint8)
_T_D3 = np.frombuffer(b'","U":', dtype=np.uint8)
_T_D4 = np.frombuffer(b',"u":', dtype=np.uint8)
_T_D5 = np.frombuffer(b',"pu":', dtype=np.uint8)
_T_D6 = np.frombuffer(b',"b":[', dtype=np.uint8)
_T_D7 = np.frombuffer(b'],"a":[', dtype=np.uint8)
_T_D8 = np.frombuffer(b']', dtype=np.uint8)
_T_A0 = np.frombuffer(b'{"e":"aggTrade","E":', dtype=np.uint8)
_T_A1 = np.frombuffer(b',"s":"', dtype=np.uint8)
_T_A2 = np.frombuffer(b'","a":', dtype=np.uint8)
_T_A3 = np.frombuffer(b',"p":"', dtype=np.uint8)
_T_A4 = np.frombuffer(b'","q":"', dtype=np.uint8)
_T_A5 = np.frombuffer(b'","nq":"', dtype=np.uint8)
_T_A6 = np.frombuffer(b'","f":', dtype=np.uint8)
_T_A7 = np.frombuffer(b',"l":', dtype=np.uint8)
_T_A8 = np.frombuffer(b',"T":', dtype=np.uint8)
_T_A9 = np.frombuffer(b',"m":true', dtype=np.uint8)
_T_A10 = np.frombuffer(b',"m":false', dtype=np.uint8)
_T_TR0 = np.frombuffer(b'{"e":"trade","E":', dtype=np.uint8)
_T_TR1 = np.frombuffer(b',"T":', dtype=np.uint8)
_T_TR2 = np.frombuffer(b',"s":"', dtype=np.uint8)
_T_TR3 = np.frombuffer(b'","t":', dtype=np.uint8)
_T_TR4 = np.frombuffer(b',"p":"', dtype=np.uint8)
_T_TR5 = np.frombuffer(b'","q":"', dtype=np.uint8)
_T_TR6 = np.frombuffer(b'","X":"MARKET","m":true}', dtype=np.uint8)
_T_TR7 = np.frombuffer(b'","X":"MARKET","m":false}', dtype=np.uint8)


@njit(cache=True)
def seed_rng(seed):
    np.random.seed(seed)


@njit(cache=True)
def _rand_qty(qbase):
    q = int(qbase * np.exp(np.random.standard_normal() * 0.9))
    return q if q >= 1 else 1


@njit(cache=True)
def encode_depth_msg(buf, pos, sym_buf, so, sl, pdec, tu, qdec, E, T, U, u, pu,
                     b_tick, b_qty, nb, a_tick, a_qty, na, tail_buf, to, tl):
    pos = put_bytes(buf, pos, _T_D0)
    pos = put_int(buf, pos, E)
    pos = put_bytes(buf, pos, _T_D1)
    pos = put_int(buf, pos, T)
    pos = put_bytes(buf, pos, _T_D2)
    pos = put_span(buf, pos, sym_buf, so, sl)
    pos = put_bytes(buf, pos, _T_D3)
    pos = put_int(buf, pos, U)
    pos = put_bytes(buf, pos, _T_D4)
    pos = put_int(buf, pos, u)
    pos = put_bytes(buf, pos, _T_D5)
    pos = put_int(buf, pos, pu)
    pos = put_bytes(buf, pos, _T_D6)
    for i in range(nb):
        if i > 0:
            buf[pos] = 44
            pos += 1
        buf[pos] = 91
        buf[pos + 1] = 34
        pos = put_decimal(buf, pos + 2, b_tick[i] * tu, pdec)
        buf[pos] = 34
        buf[pos + 1] = 44
        buf[pos + 2] = 34
        pos = put_decimal(buf, pos + 3, b_qty[i], qdec)
        buf[pos] = 34
        buf[pos + 1] = 93
        pos += 2
    pos = put_bytes(buf, pos, _T_D7)
    for i in range(na):
        if i > 0:
            buf[pos] = 44
            pos += 1
        buf[pos] = 91
        buf[pos + 1] = 34
        pos = put_decimal(buf, pos + 2, a_tick[i] * tu, pdec)
        buf[pos] = 34
        buf[pos + 1] = 44
        buf[pos + 2] = 34
        pos = put_decimal(buf, pos + 3, a_qty[i], qdec)
        buf[pos] = 34
        buf[pos + 1] = 93
        pos += 2
    pos = put_bytes(buf, pos, _T_D8)
    pos = put_span(buf, pos, tail_buf, to, tl)
    buf[pos] = 125
    return pos + 1


@njit(cache=True)
def _set_level(s, side, tick, qty, base, bidq, askq, c_side, c_tick, c_qty, nch):
    # a change that cannot be published is not made either: the diffs must describe every book change
    if nch >= MAXC:
        return nch
    slot = tick - base[s]
    if slot < 0 or slot >= bidq.shape[1] or tick <= 0:  # never write outside the ladder (no bounds checks here)
        return nch
    if side == 0:
        bidq[s, slot] = qty
    else:
        askq[s, slot] = qty
    c_side[nch] = side
    c_tick[nch] = tick
    c_qty[nch] = qty
    return nch + 1


@njit(cache=True)
def _shift_row(row, shift):
    # new_row[i] = old_row[i + shift], zero-filled
    w = row.shape[0]
    if shift > 0:
        for i in range(w):
            j = i + shift
            row[i] = row[j] if j < w else 0
    elif shift < 0:
        for i in range(w - 1, -1, -1):
            j = i + shift
            row[i] = row[j] if j >= 0 else 0


@njit(cache=True)
def _recenter(s, base, bb, ba, bidq, askq, flags):
    w = bidq.shape[1]
    new_base = (bb[s] + ba[s]) // 2 - w // 2
    shift = new_base - base[s]
    if shift == 0:
        return
    _shift_row(bidq[s], shift)
    _shift_row(askq[s], shift)
    for k in range(flags.shape[0]):
        _shift_row(flags[k, s, 0], shift)
        _shift_row(flags[k, s, 1], shift)
    base[s] = new_base


@njit(cache=True)
def init_books(base, bidq, askq, bb, ba, start_tick, qbase, depth, fill_p):
    S, W = bidq.shape
    for s in range(S):
        t0 = start_tick[s]
        base[s] = t0 - W // 2
        bb[s] = t0
        ba[s] = t0 + 1
        for d in range(depth):
            if d == 0 or np.random.random() < fill_p:
                bidq[s, t0 - d - base[s]] = _rand_qty(qbase[s])
            if d == 0 or np.random.random() < fill_p:
                askq[s, t0 + 1 + d - base[s]] = _rand_qty(qbase[s])


@njit(cache=True)
def _scan_bid(s, start, base, bidq, depth):
    # highest nonzero bid at or below start, within depth ticks; -1 if none
    lo = max(start - depth, base[s] + 1)
    t = start
    while t >= lo:
        if bidq[s, t - base[s]] > 0:
            return t
        t -= 1
    return -1


@njit(cache=True)
def _scan_ask(s, start, base, askq, depth):
    hi = min(start + depth, base[s] + askq.shape[1] - 2)
    t = start
    while t <= hi:
        if askq[s, t - base[s]] > 0:
            return t
        t += 1
    return -1


@njit(cache=True)
def gen_events(n, t0_ms, t1_ms, skew_ms, cumw,
               base, bidq, askq, bb, ba, next_id, last_u, regime, trend, qbase, agg_id, trade_id, depth,
               flags, win_U, track, want, pu, sid_base,
               sym_buf, sym_off, sym_len, pdec, tick_units, qdec,
               out_buf, out_off, out_len, out_sid, touched, bursts, status, kl, klq, tail_buf, tail_off, tail_len,
               tr_ring, tr_head):
    """Run n engine events; append encoded payloads for wanted real-time streams. Returns message count.
    Every trade is also written to the symbol's ring tr_ring[s, tr_head[s] % R] (TR_* fields), the REST history.
    status[0] = index of the event it stopped before (an aggregation window must be flushed before that symbol's
    ladder is recentered, or touched slots would be shifted out of it), -1 when all n ran."""
    status[0] = -1
    c_side = np.empty(MAXC, np.int64)
    c_tick = np.empty(MAXC, np.int64)
    c_qty = np.empty(MAXC, np.int64)
    b_tick = np.empty(MAXC, np.int64)
    b_qty = np.empty(MAXC, np.int64)
    a_tick = np.empty(MAXC, np.int64)
    a_qty = np.empty(MAXC, np.int64)
    S, W = bidq.shape
    total_w = cumw[S - 1]
    nmsg = 0
    pos = 0
    for i in range(n):
        # pick a symbol, weighted by activity (bursting symbols are 5x more active)
        r = np.random.random() * total_w
        s = np.searchsorted(cumw, r, side="right")
        if s >= S:
            s = S - 1
        if cumw[s] - (cumw[s - 1] if s > 0 else 0.0) <= 0.0:
            continue
        T = t0_ms + ((t1_ms - t0_ms) * i) // max(n, 1) + skew_ms
        E = T + (1 if np.random.random() < 0.3 else 0)
        # volatility regimes: 0 calm, 1 normal, 2 burst (trending, big trades)
        reg = regime[s]
        x = np.random.random()
        if reg == 0 and x < 0.002:
            reg = 1
        elif reg == 1 and x < 0.001:
            reg = 0
        elif reg == 1 and bursts and x < 0.0015:
            reg = 2
            trend[s] = 1 if np.random.random() < 0.5 else -1
        elif reg == 2 and x < 0.004:
            reg = 1
        regime[s] = reg
        # margin: one event can move a best price by ~depth ticks and then refill another depth ticks beyond it
        if bb[s] - base[s] < 2 * depth + 40 or ba[s] - base[s] > W - 2 * depth - 40:
            if win_U[0, s] != 0 or win_U[1, s] != 0 or win_U[2, s] != 0:
                status[0] = i
                return nmsg
            _recenter(s, base, bb, ba, bidq, askq, flags)
        old_bb = bb[s]
        old_ba = ba[s]
        old_bq = bidq[s, old_bb - base[s]]
        old_aq = askq[s, old_ba - base[s]]
        nch = 0
        p_trade = 0.08 if reg == 0 else (0.15 if reg == 1 else 0.4)
        is_trade = False
        tr_px = 0
        tr_qty = 0
        tr_m = False
        x = np.random.random()
        if x < p_trade:
            is_trade = True
            if reg == 2:
                buy = np.random.random() < (0.8 if trend[s] > 0 else 0.2)
            else:
                buy = np.random.random() < 0.5
            want_q = _rand_qty(qbase[s]) * (3 if reg == 2 else 1)
            if buy:
                lvl = askq[s, old_ba - base[s]]
                take = min(lvl, want_q)
                tr_px = old_ba
                tr_qty = take
                tr_m = False
                nch = _set_level(s, 1, old_ba, lvl - take, base, bidq, askq, c_side, c_tick, c_qty, nch)
            else:
                lvl = bidq[s, old_bb - base[s]]
                take = min(lvl, want_q)
                tr_px = old_bb
                tr_qty = take
                tr_m = True
                nch = _set_level(s, 0, old_bb, lvl - take, base, bidq, askq, c_side, c_tick, c_qty, nch)
        elif x < p_trade + 0.25:
            if old_ba - old_bb > 1:
                # price improvement inside the spread
                if np.random.random() < 0.5:
                    nch = _set_level(s, 0, old_bb + 1, _rand_qty(qbase[s]), base, bidq, askq,
                                     c_side, c_tick, c_qty, nch)
                else:
                    nch = _set_level(s, 1, old_ba - 1, _rand_qty(qbase[s]), base, bidq, askq,
                                     c_side, c_tick, c_qty, nch)
            else:
                # the best level on one side is pulled
                if np.random.random() < 0.5:
                    nch = _set_level(s, 0, old_bb, 0, base, bidq, askq, c_side, c_tick, c_qty, nch)
                else:
                    nch = _set_level(s, 1, old_ba, 0, base, bidq, askq, c_side, c_tick, c_qty, nch)
        else:
            # quantity change near the top; distance from the best is geometric
            d = 0
            while np.random.random() < 0.55 and d < depth - 1:
                d += 1
            side = 0 if np.random.random() < 0.5 else 1
            q = 0 if (d > 0 and np.random.random() < 0.15) else _rand_qty(qbase[s])
            if side == 0:
                nch = _set_level(s, 0, old_bb - d, q, base, bidq, askq, c_side, c_tick, c_qty, nch)
            else:
                nch = _set_level(s, 1, old_ba + d, q, base, bidq, askq, c_side, c_tick, c_qty, nch)
        # new best prices (a level emptied at the top, or an improvement)
        nb_ = _scan_bid(s, max(old_bb + 1, bb[s] + 1), base, bidq, depth + 2)
        if nb_ < 0:
            nb_ = old_bb - 1
            nch = _set_level(s, 0, nb_, _rand_qty(qbase[s]), base, bidq, askq, c_side, c_tick, c_qty, nch)
        na_ = _scan_ask(s, min(old_ba - 1, ba[s] - 1), base, askq, depth + 2)
        if na_ < 0:
            na_ = old_ba + 1
            nch = _set_level(s, 1, na_, _rand_qty(qbase[s]), base, bidq, askq, c_side, c_tick, c_qty, nch)
        # the emptied best may not be the highest anymore: rescan from the old best downwards
        if bidq[s, nb_ - base[s]] == 0:
            nb_ = _scan_bid(s, nb_, base, bidq, depth)
            if nb_ < 0:
                nb_ = old_bb - 1
                nch = _set_level(s, 0, nb_, _rand_qty(qbase[s]), base, bidq, askq, c_side, c_tick, c_qty, nch)
        if askq[s, na_ - base[s]] == 0:
            na_ = _scan_ask(s, na_, base, askq, depth)
            if na_ < 0:
                na_ = old_ba + 1
                nch = _set_level(s, 1, na_, _rand_qty(qbase[s]), base, bidq, askq, c_side, c_tick, c_qty, nch)
        bb[s] = nb_
        ba[s] = na_
        # keep the book within `depth` ticks of the best: trim what falls out, refill what comes into range
        if nb_ > old_bb:
            for t in range(old_bb - depth, nb_ - depth):
                if bidq[s, t - base[s]] > 0:
                    nch = _set_level(s, 0, t, 0, base, bidq, askq, c_side, c_tick, c_qty, nch)
        elif nb_ < old_bb:
            for t in range(nb_ - depth, old_bb - depth):
                if nch < MAXC - 2 and np.random.random() < 0.6:
                    nch = _set_level(s, 0, t, _rand_qty(qbase[s]), base, bidq, askq, c_side, c_tick, c_qty, nch)
        if na_ < old_ba:
            for t in range(na_ + depth + 1, old_ba + depth + 1):
                if askq[s, t - base[s]] > 0:
                    nch = _set_level(s, 1, t, 0, base, bidq, askq, c_side, c_tick, c_qty, nch)
        elif na_ > old_ba:
            for t in range(old_ba + depth + 1, na_ + depth + 1):
                if nch < MAXC - 2 and np.random.random() < 0.6:
                    nch = _set_level(s, 1, t, _rand_qty(qbase[s]), base, bidq, askq, c_side, c_tick, c_qty, nch)
        if nch == 0:
            continue
        # update ids: invisible changes (other books, RPI) consume ids too, so U - pu > 1 most of the time
        gap = 0 if np.random.random() < 0.15 else np.random.randint(1, 60)
        U = next_id[s] + gap
        u = U + nch - 1
        next_id[s] = u + 1
        last_u[s] = u
        touched[s] = True
        so = sym_off[s]
        sl = sym_len[s]
        pd = pdec[s]
        tu = tick_units[s]
        qd = qdec[s]
        sb = sid_base[s]
        for k in range(3):
            if track[k, s]:
                if win_U[k, s] == 0:
                    win_U[k, s] = U
                for c in range(nch):
                    flags[k, s, c_side[c], c_tick[c] - base[s]] = 1
        # bookTicker only when the BBO changed (its u is the id at which it changed)
        new_bq = bidq[s, nb_ - base[s]]
        new_aq = askq[s, na_ - base[s]]
        if want[sb + K_BOOKTICKER] and (nb_ != old_bb or na_ != old_ba or new_bq != old_bq or new_aq != old_aq):
            start = pos
            pos = put_bytes(out_buf, pos, _T_BT0)
            pos = put_int(out_buf, pos, u)
            pos = put_bytes(out_buf, pos, _T_BT1)
            pos = put_span(out_buf, pos, sym_buf, so, sl)
            pos = put_bytes(out_buf, pos, _T_BT2)
            pos = put_decimal(out_buf, pos, nb_ * tu, pd)
            pos = put_bytes(out_buf, pos, _T_BT3)
            pos = put_decimal(out_buf, pos, new_bq, qd)
            pos = put_bytes(out_buf, pos, _T_BT4)
            pos = put_decimal(out_buf, pos, na_ * tu, pd)
            pos = put_bytes(out_buf, pos, _T_BT5)
            pos = put_decimal(out_buf, pos, new_aq, qd)
            pos = put_bytes(out_buf, pos, _T_BT6)
            pos = put_int(out_buf, pos, T)
            pos = put_bytes(out_buf, pos, _T_E)
            pos = put_int(out_buf, pos, E)
            pos = put_span(out_buf, pos, tail_buf, tail_off[s, 0], tail_len[s, 0])
            out_buf[pos] = 125
            pos += 1
            out_off[nmsg] = start
            out_len[nmsg] = pos - start
            out_sid[nmsg] = sb + K_BOOKTICKER
            nmsg += 1
        if want[sb + K_DEPTH0]:
            nb = 0
            na = 0
            for c in range(nch):
                if c_side[c] == 0:
                    b_tick[nb] = c_tick[c]
                    b_qty[nb] = c_qty[c]
                    nb += 1
                else:
                    a_tick[na] = c_tick[c]
                    a_qty[na] = c_qty[c]
                    na += 1
            start = pos
            pos = encode_depth_msg(out_buf, pos, sym_buf, so, sl, pd, tu, qd, E, T, U, u, pu[K_DEPTH0, s],
                                   b_tick, b_qty, nb, a_tick, a_qty, na, tail_buf, tail_off[s, 0], tail_len[s, 0])
            pu[K_DEPTH0, s] = u
            out_off[nmsg] = start
            out_len[nmsg] = pos - start
            out_sid[nmsg] = sb + K_DEPTH0
            nmsg += 1
        if is_trade and tr_qty > 0:
            agg_id[s] += 1
            f = trade_id[s] + 1
            l = f + (np.random.randint(0, 4) if np.random.random() < 0.4 else 0)
            trade_id[s] = l
            slot = tr_head[s] % tr_ring.shape[1]
            tr_ring[s, slot, TR_AGG] = agg_id[s]
            tr_ring[s, slot, TR_FIRST] = f
            tr_ring[s, slot, TR_LAST] = l
            tr_ring[s, slot, TR_PX] = tr_px
            tr_ring[s, slot, TR_QTY] = tr_qty
            tr_ring[s, slot, TR_T] = T
            tr_ring[s, slot, TR_M] = 1 if tr_m else 0
            tr_head[s] += 1
            # every open kline of this symbol takes the trade (candles are rolled by the caller between batches)
            quote = float(tr_px * tu) * float(tr_qty)
            for iv in range(kl.shape[1]):
                if kl[KL_N, iv, s] == 0:
                    kl[KL_O, iv, s] = tr_px
                    kl[KL_H, iv, s] = tr_px
                    kl[KL_L, iv, s] = tr_px
                    kl[KL_F, iv, s] = f
                else:
                    if tr_px > kl[KL_H, iv, s]:
                        kl[KL_H, iv, s] = tr_px
                    if tr_px < kl[KL_L, iv, s]:
                        kl[KL_L, iv, s] = tr_px
                kl[KL_C, iv, s] = tr_px
                kl[KL_V, iv, s] += tr_qty
                kl[KL_N, iv, s] += l - f + 1
                kl[KL_LAST, iv, s] = l
                kl[KL_LASTQ, iv, s] = tr_qty
                klq[0, iv, s] += quote
                if not tr_m:  # the buyer was the taker
                    kl[KL_TBV, iv, s] += tr_qty
                    klq[1, iv, s] += quote
            if want[sb + K_AGGTRADE]:
                start = pos
                pos = put_bytes(out_buf, pos, _T_A0)
                pos = put_int(out_buf, pos, E)
                pos = put_bytes(out_buf, pos, _T_A1)
                pos = put_span(out_buf, pos, sym_buf, so, sl)
                pos = put_bytes(out_buf, pos, _T_A2)
                pos = put_int(out_buf, pos, agg_id[s])
                pos = put_bytes(out_buf, pos, _T_A3)
                pos = put_decimal(out_buf, pos, tr_px * tu, pd)
                pos = put_bytes(out_buf, pos, _T_A4)
                pos = put_decimal(out_buf, pos, tr_qty, qd)
                pos = put_bytes(out_buf, pos, _T_A5)
                pos = put_decimal(out_buf, pos, tr_qty, qd)
                pos = put_bytes(out_buf, pos, _T_A6)
                pos = put_int(out_buf, pos, f)
                pos = put_bytes(out_buf, pos, _T_A7)
                pos = put_int(out_buf, pos, l)
                pos = put_bytes(out_buf, pos, _T_A8)
                pos = put_int(out_buf, pos, T)
                pos = put_bytes(out_buf, pos, _T_A9 if tr_m else _T_A10)
                pos = put_span(out_buf, pos, tail_buf, tail_off[s, 1], tail_len[s, 1])
                out_buf[pos] = 125
                pos += 1
                out_off[nmsg] = start
                out_len[nmsg] = pos - start
                out_sid[nmsg] = sb + K_AGGTRADE
                nmsg += 1
            if want[sb + K_TRADE]:
                start = pos
                pos = put_bytes(out_buf, pos, _T_TR0)
                pos = put_int(out_buf, pos, E)
                pos = put_bytes(out_buf, pos, _T_TR1)
                pos = put_int(out_buf, pos, T)
                pos = put_bytes(out_buf, pos, _T_TR2)
                pos = put_span(out_buf, pos, sym_buf, so, sl)
                pos = put_bytes(out_buf, pos, _T_TR3)
                pos = put_int(out_buf, pos, l)
                pos = put_bytes(out_buf, pos, _T_TR4)
                pos = put_decimal(out_buf, pos, tr_px * tu, pd)
                pos = put_bytes(out_buf, pos, _T_TR5)
                pos = put_decimal(out_buf, pos, tr_qty, qd)
                pos = put_bytes(out_buf, pos, _T_TR6 if tr_m else _T_TR7)
                out_off[nmsg] = start
                out_len[nmsg] = pos - start
                out_sid[nmsg] = sb + K_TRADE
                nmsg += 1
    return nmsg


@njit(cache=True)
def flush_depth(k, E, T, base, bidq, askq, bb, ba, last_u, depth, flags, win_U, want, pu, sid_base,
                sym_buf, sym_off, sym_len, pdec, tick_units, qdec, out_buf, out_off, out_len, out_sid,
                tail_buf, tail_off, tail_len):
    """Close the speed-k aggregation window of every symbol: one diff (last qty per price wins, i.e. the
    book's current qty at each touched price) plus top-N partial pictures, all with U = first id of the
    window, u = the book's last id, pu = previous u on that same stream."""
    S, W = bidq.shape
    b_tick = np.empty(W, np.int64)
    b_qty = np.empty(W, np.int64)
    a_tick = np.empty(W, np.int64)
    a_qty = np.empty(W, np.int64)
    nmsg = 0
    pos = 0
    kd = K_DEPTH100 + k
    for s in range(S):
        U = win_U[k, s]
        if U == 0:
            continue
        win_U[k, s] = 0
        u = last_u[s]
        sb = sid_base[s]
        if want[sb + kd]:
            nb = 0
            for slot in range(W - 1, -1, -1):
                if flags[k, s, 0, slot]:
                    b_tick[nb] = slot + base[s]
                    b_qty[nb] = bidq[s, slot]
                    nb += 1
            na = 0
            for slot in range(W):
                if flags[k, s, 1, slot]:
                    a_tick[na] = slot + base[s]
                    a_qty[na] = askq[s, slot]
                    na += 1
            start = pos
            pos = encode_depth_msg(out_buf, pos, sym_buf, sym_off[s], sym_len[s], pdec[s], tick_units[s], qdec[s],
                                   E, T, U, u, pu[kd, s], b_tick, b_qty, nb, a_tick, a_qty, na,
                                   tail_buf, tail_off[s, 0], tail_len[s, 0])
            pu[kd, s] = u
            out_off[nmsg] = start
            out_len[nmsg] = pos - start
            out_sid[nmsg] = sb + kd
            nmsg += 1
        flags[k, s, 0, :] = 0
        flags[k, s, 1, :] = 0
        for li in range(3):
            kp = K_PART + li * 3 + k
            if not want[sb + kp]:
                continue
            nlev = 5 if li == 0 else (10 if li == 1 else 20)
            nb = 0
            t = bb[s]
            while nb < nlev and t - base[s] >= 0:
                q = bidq[s, t - base[s]]
                if q > 0:
                    b_tick[nb] = t
                    b_qty[nb] = q
                    nb += 1
                t -= 1
            na = 0
            t = ba[s]
            while na < nlev and t - base[s] < W:
                q = askq[s, t - base[s]]
                if q > 0:
                    a_tick[na] = t
                    a_qty[na] = q
                    na += 1
                t += 1
            start = pos
            pos = encode_depth_msg(out_buf, pos, sym_buf, sym_off[s], sym_len[s], pdec[s], tick_units[s], qdec[s],
                                   E, T, U, u, pu[kp, s], b_tick, b_qty, nb, a_tick, a_qty, na,
                                   tail_buf, tail_off[s, 0], tail_len[s, 0])
            pu[kp, s] = u
            out_off[nmsg] = start
            out_len[nmsg] = pos - start
            out_sid[nmsg] = sb + kp
            nmsg += 1
    return nmsg


@njit(cache=True)
def book_side(s, side, n, base, bidq, askq, bb, ba, depth, out_tick, out_qty):
    """Top n levels of one side (0 bids, 1 asks), best first. Returns the level count."""
    W = bidq.shape[1]
    cnt = 0
    if side == 0:
        t = bb[s]
        while cnt < n and t - base[s] >= 0:
            q = bidq[s, t - base[s]]
            if q > 0:
                out_tick[cnt] = t
                out_qty[cnt] = q
                cnt += 1
            t -= 1
    else:
        t = ba[s]
        while cnt < n and t - base[s] < W:
            q = askq[s, t - base[s]]
            if q > 0:
                out_tick[cnt] = t
                out_qty[cnt] = q
                cnt += 1
            t += 1
    return cnt


@njit(cache=True)
def frame_select(pbuf, poff, plen, psid, n, mask, is_depth, combined, pre_buf, pre_off, pre_len, out,
                 skip_n, dup_n):
    """Frame the messages this connection subscribed to into `out` (raw or combined wrapper).
    skip_n / dup_n drop or repeat the next depth diffs (fault injection). Returns (bytes, frames, skip_n, dup_n)."""
    pos = 0
    frames = 0
    nm = min(mask.shape[0], pre_len.shape[0], is_depth.shape[0])
    for i in range(n):
        sid = psid[i]
        if sid < 0 or sid >= nm or not mask[sid]:
            continue
        reps = 1
        if is_depth[sid]:
            if skip_n > 0:
                skip_n -= 1
                continue
            if dup_n > 0:
                dup_n -= 1
                reps = 2
        for _ in range(reps):
            if combined:
                pl = pre_len[sid]
                pos = put_text_header(out, pos, pl + plen[i] + 1)
                out[pos:pos + pl] = pre_buf[pre_off[sid]:pre_off[sid] + pl]
                pos += pl
                out[pos:pos + plen[i]] = pbuf[poff[i]:poff[i] + plen[i]]
                pos += plen[i]
                out[pos] = 125
                pos += 1
            else:
                pos = put_text_header(out, pos, plen[i])
                out[pos:pos + plen[i]] = pbuf[poff[i]:poff[i] + plen[i]]
                pos += plen[i]
            frames += 1
    return pos, frames, skip_n, dup_n
