"""Every record layout of the engine, defined once.

All dtypes are numpy structured dtypes with explicit offsets so the byte layout is the same in every process
that maps a shared-memory segment, and so a reader of this file can see which fields share a cache line.
Sizes are multiples of 64 bytes (one x86-64 cache line): a record never straddles a line boundary it does not
own, so the ring writer and reader never false-share a line that holds two different records.
"""
from __future__ import annotations

import numpy as np

CACHE_LINE = 64


def _layout(fields: list[tuple[str, str]], size: int) -> np.dtype:
    """Pack fields in the order given and pad to `size`, failing loudly if the fields do not fit."""
    names, formats, offsets = [], [], []
    off = 0
    for name, fmt in fields:
        dt = np.dtype(fmt)
        if off % dt.alignment:
            raise ValueError(f"field {name} at offset {off} is not {dt.alignment}-byte aligned")
        names.append(name)
        formats.append(fmt)
        offsets.append(off)
        off += dt.itemsize
    if off > size or size % CACHE_LINE:
        raise ValueError(f"layout of {off} bytes does not fit a {size}-byte, cache-line multiple record")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size}, align=True)


# --- market record kinds -----------------------------------------------------------------------------
KIND_NONE = 0
KIND_QUOTE = 1   # <symbol>@bookTicker: bid/ask px+qty, last_id = u
KIND_TRADE = 2   # <symbol>@aggTrade: px, qty, side (+1 buyer aggressor, -1 seller), last_id = aggregate id
KIND_MARK = 3    # <symbol>@markPrice: px = mark price, qty = funding rate, bid_px = index price
KIND_BOOK = 4    # top of the Feed's local L2 book after a depth diff was applied: bid/ask px+qty, U/u/pu
KIND_DEPTH = 5   # one changed depth level: side (+1 bid, -1 ask), px, qty (0 = removed), U/u/pu of its event
KIND_STATUS = 6  # book resync / connection state change for a symbol (flags say which)

SIDE_BUY = 1
SIDE_SELL = -1

FLAG_SNAPSHOT = 1       # level comes from a REST snapshot, not a diff
FLAG_RESYNC = 2         # book was discarded and is being rebuilt: consumers must not trust it
FLAG_CONFLATED = 4      # this quote replaced one or more older quotes that never reached the ring
FLAG_SYNTHETIC = 8      # produced by the built-in synthetic source, not an exchange
FLAG_LAST_IN_EVENT = 16  # last depth level of one exchange event (a batch boundary for book consumers)

# Market record: 128 bytes = two cache lines.
# Line 0 is everything the quote hot path needs (times, BBO, symbol, kind), so a strategy that only trades on
# quotes touches one line per record. Line 1 holds trade/mark/depth payload and exchange update ids, read only
# for the kinds that need them. 24 bytes of line 1 are padding, left free for future fields without changing
# the record size (which would change the ring's byte layout and every shared segment).
MARKET_DTYPE = _layout([
    # line 0 (bytes 0..63)
    ("exch_ts", "<i8"),      # exchange event time E, ns since the Unix epoch (ms * 1e6)
    ("recv_ts", "<i8"),      # CLOCK_MONOTONIC ns when the bytes carrying it arrived (comparable across processes)
    ("pub_ts", "<i8"),       # CLOCK_MONOTONIC ns when the Feed published it into the ring
    ("bid_px", "<f8"),
    ("bid_qty", "<f8"),
    ("ask_px", "<f8"),
    ("ask_qty", "<f8"),
    ("symbol", "<i4"),       # stable small integer shared by Feed and Brain (see aegis.binance.symbols)
    ("kind", "u1"),
    ("side", "i1"),
    ("flags", "<u2"),
    # line 1 (bytes 64..127)
    ("px", "<f8"),           # trade price / mark price / depth level price
    ("qty", "<f8"),          # trade qty / funding rate / depth level qty
    ("first_id", "<i8"),     # depth U
    ("last_id", "<i8"),      # depth u, bookTicker u, aggTrade a
    ("prev_id", "<i8"),      # depth pu
    ("seq", "<i8"),          # Feed-side sequence number of this record (monotone, gap = loss)
], 128)

# --- brain records (owner: brain) ----------------------------------------------------------------------
# Candle: one bar of one symbol and interval. 128 bytes: OHLCV + VWAP accumulators on line 0, bookkeeping on line 1.
CANDLE_DTYPE = _layout([
    ("open", "<f8"),
    ("high", "<f8"),
    ("low", "<f8"),
    ("close", "<f8"),
    ("volume", "<f8"),        # base asset volume
    ("quote_volume", "<f8"),  # sum(px * qty): VWAP = quote_volume / volume
    ("vwap", "<f8"),
    ("trades", "<i8"),
    ("open_ts", "<i8"),       # bar start, exchange time ns
    ("close_ts", "<i8"),      # bar end (exclusive), exchange time ns
    ("symbol", "<i4"),
    ("interval", "<i4"),      # index into the configured interval list
    ("next", "<i4"),          # pool free-list link (-1 = end)
    ("closed", "u1"),
], 128)

# Signal: one strategy decision, emitted by a jitted strategy kernel into a preallocated batch array and, for
# the Python edge (event bus), copied into a SignalPool slot. 128 bytes: line 0 is the trigger record's stage
# timestamps plus price/qty (everything the order path copies into an ORDER_REQUEST), line 1 the rest; 23 bytes of
# line 1 are padding kept free for future fields without changing the size.
SIGNAL_DTYPE = _layout([
    # line 0 (bytes 0..63)
    ("ts", "<i8"),            # CLOCK_MONOTONIC ns when the signal was generated (stamped by the Brain, 0 in replay)
    ("recv_ts", "<i8"),       # recv_ts of the record that triggered it (tick-to-trade starts here)
    ("pub_ts", "<i8"),        # pub_ts of that record
    ("consume_ts", "<i8"),    # when the Brain consumed the batch holding it (stamped by the Brain)
    ("exch_ts", "<i8"),       # exchange time of the trigger record (replay's clock)
    ("seq", "<i8"),           # Feed sequence number of the trigger record
    ("price", "<f8"),         # limit price, or reference price for market orders (the touch it would take)
    ("qty", "<f8"),           # order quantity (always > 0; direction is `side`)
    # line 1 (bytes 64..127)
    ("strength", "<f8"),      # strategy-specific score, for logs and risk sizing
    ("position", "<f8"),      # position the strategy targets once this order fills (signed, base units)
    ("target_id", "<i8"),     # action ACTION_CANCEL: client id of the working order to cancel (0 otherwise)
    ("symbol", "<i4"),
    ("strategy", "<i4"),      # strategy id (aegis.brain.strategy registry)
    ("next", "<i4"),          # pool free-list link (aegis.brain.pools)
    ("side", "i1"),           # SIDE_BUY / SIDE_SELL
    ("order_type", "u1"),     # ORDER_MARKET / ORDER_LIMIT
    ("tif", "u1"),            # TIF_* below (0 for market orders)
    ("reduce_only", "u1"),
    ("action", "u1"),         # 0 / ACTION_NEW: a new order; ACTION_CANCEL: cancel order target_id (same values as
                              # ORDER_REQUEST.action, defined in the trade block below)
], 128)

# --- trade records (owner: trade) ----------------------------------------------------------------------
ORDER_MARKET = 1
ORDER_LIMIT = 2
TIF_GTC = 1
TIF_IOC = 2
TIF_FOK = 3
TIF_GTX = 4   # post-only

# Order request handed from the Brain to the sender thread. Stage timestamps travel with it so the sender can
# close the tick-to-trade measurement when the request bytes are written.
# Line 0: timestamps; line 1: what goes on the wire. price/qty are kept for humans and PnL, but the wire value is
# price_ticks * tickSize and qty_steps * stepSize, formatted from the filter strings (aegis.trade.risk rounds in integer
# ticks/steps so no float ever reaches the wire, API.md §7.8). 14 bytes of line 1 are padding for future fields.
ORDER_REQUEST_DTYPE = _layout([
    # line 0 (bytes 0..63)
    ("client_id", "<i8"),     # numeric part of newClientOrderId, unique per run and journaled
    ("recv_ts", "<i8"),       # bytes received (tick-to-trade start)
    ("pub_ts", "<i8"),        # record published into the ring
    ("consume_ts", "<i8"),    # record consumed by the Brain
    ("signal_ts", "<i8"),
    ("risk_ts", "<i8"),       # risk checks passed
    ("handoff_ts", "<i8"),    # put on the sender queue
    ("target_id", "<i8"),     # ACTION_CANCEL: client_id of the order to cancel
    # line 1 (bytes 64..127)
    ("price", "<f8"),         # = price_ticks * tick (0 for MARKET)
    ("qty", "<f8"),           # = qty_steps * step
    ("price_ticks", "<i8"),   # limit price in ticks of the symbol's PRICE_FILTER tickSize
    ("qty_steps", "<i8"),     # quantity in steps of LOT_SIZE (LIMIT) / MARKET_LOT_SIZE (MARKET) stepSize
    ("exch_ts", "<i8"),       # exchange time of the market record whose signal made it (0: halt / shutdown)
    ("symbol", "<i4"),
    ("side", "i1"),
    ("order_type", "u1"),
    ("tif", "u1"),
    ("reduce_only", "u1"),
    ("action", "u1"),         # ACTION_NEW / ACTION_CANCEL / ACTION_CANCEL_ALL
    ("flags", "u1"),          # REQ_FLAG_* below
], 128)

ACTION_NEW = 1
ACTION_CANCEL = 2
ACTION_CANCEL_ALL = 3
REQ_FLAG_FLATTEN = 1          # generated by the kill switch to flatten a position (bypasses HALTED, reduce-only)

# A fill or an order state change coming back from the user data stream (status tells which; qty 0 = no trade).
# 32 bytes of line 1 are padding.
FILL_DTYPE = _layout([
    # line 0 (bytes 0..63)
    ("client_id", "<i8"),     # numeric part of our newClientOrderId (-1: not one of ours, e.g. a liquidation)
    ("order_id", "<i8"),      # exchange order id (can exceed 2**53: int64, never float)
    ("trade_id", "<i8"),      # 0 when the event is not a trade
    ("ts", "<i8"),            # exchange trade time, ns since epoch
    ("recv_ts", "<i8"),       # CLOCK_MONOTONIC ns when the fill event arrived
    ("price", "<f8"),         # last filled price
    ("qty", "<f8"),           # last filled qty
    ("cum_qty", "<f8"),
    # line 1 (bytes 64..127)
    ("fee", "<f8"),           # commission of this trade, in quote currency when the commission asset is the quote
    ("realized_pnl", "<f8"),
    ("orig_qty", "<f8"),      # order quantity (remaining open = orig_qty - cum_qty)
    ("symbol", "<i4"),
    ("side", "i1"),
    ("status", "u1"),         # STATUS_* below
    ("maker", "u1"),
    ("reduce_only", "u1"),
], 128)

STATUS_NEW = 1
STATUS_PARTIALLY_FILLED = 2
STATUS_FILLED = 3
STATUS_CANCELED = 4
STATUS_EXPIRED = 5
STATUS_REJECTED = 6
STATUS_SNAPSHOT = 7     # not an order event: the exchange's position (qty signed, price = entry) after reconciliation

ALL_DTYPES = {
    "market": MARKET_DTYPE,
    "candle": CANDLE_DTYPE,
    "signal": SIGNAL_DTYPE,
    "order_request": ORDER_REQUEST_DTYPE,
    "fill": FILL_DTYPE,
}
