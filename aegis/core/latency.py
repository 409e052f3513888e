"""Per-stage latency histograms: log-linear (HDR-style) buckets in one flat int64 array.

Why a flat int64 array and not an object: the lead places the whole histogram set in a shared-memory segment, the
Feed, Brain and sender write into it from @njit code, and the supervisor reads it for the live status line and the
end-of-run report. A zero-filled array is a valid empty histogram, so a freshly created segment needs no init.

Bucketing (all integers, no floats on the recording path):
  * values 0..255 ns get one exact bucket each (index = value);
  * a value v >= 256 with bit length L is shifted right by s = L - 8, leaving a mantissa m in [128, 256);
    its index is s * 128 + m. Every doubling of the value range adds 128 linear sub-buckets, so a bucket is at
    most 1/128 (0.78 %) of its lowest value wide: any value reported from a bucket (we report its highest
    equivalent value, as HdrHistogram does, clamped to the exact recorded min/max) is within 0.78 % of the truth.
  * s goes up to 29, so values up to 2**37 - 1 ns (137 s) are tracked; larger values are clamped into the last
    bucket (and counted as saturated) so a stuck stage can never write out of bounds. Negative values (a clock
    or bookkeeping bug) are not bucketed, only counted as invalid.

Concurrency: every row has exactly ONE writer (plain read-modify-write, no atomics: the recording cost stays a few
ns). Readers in other processes may see a row mid-update; percentiles are computed from the bucket counts
themselves (not the header count) so a torn read shifts a percentile by at most one sample.

Suggested writers (one per row, see STAGE_*): Feed -> STAGE_FEED for every record it publishes; Brain ->
STAGE_RING for every record it consumes; the sender thread -> record_order_request() after the request bytes are
written, which fills STAGE_SIGNAL .. STAGE_WIRE and STAGE_TICK_TO_TRADE from the timestamps the request carries.
"""
from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from aegis.core.jit import njit

# --- bucket geometry ------------------------------------------------------------------------------------------
SUB_BUCKET_BITS = 7                        # 128 linear sub-buckets per power of two -> <= 1/128 relative width
SUB_BUCKET_HALF = 1 << SUB_BUCKET_BITS     # 128
SUB_BUCKET_COUNT = 2 * SUB_BUCKET_HALF     # 256: values below this are bucketed exactly
MAX_SHIFT = 29                             # last power-of-two bucket: [2**36, 2**37) ns
N_BUCKETS = (MAX_SHIFT + 2) * SUB_BUCKET_HALF   # 3968 counters
N_POW2_BUCKETS = MAX_SHIFT + 1             # HdrHistogram's "Buckets" figure (one per doubling, incl. the first)
HIGHEST_TRACKABLE_NS = (1 << (MAX_SHIFT + 8)) - 1   # 137.4 s
MAX_RELATIVE_ERROR = 1.0 / SUB_BUCKET_HALF  # 0.0078125

# --- header (one cache line) in front of the bucket counters --------------------------------------------------
H_COUNT = 0        # number of values bucketed (including saturated ones)
H_MIN = 1          # exact smallest recorded value (meaningless while H_COUNT == 0)
H_MAX = 2          # exact largest recorded value
H_SUM = 3          # exact sum of recorded values (mean); overflows only after ~9.2e18 ns of total latency
H_SATURATED = 4    # values > HIGHEST_TRACKABLE_NS, counted in the last bucket
H_INVALID = 5      # negative values, rejected
HEADER_LEN = 8     # indices 6, 7 reserved; 8 int64 = 64 bytes keeps the buckets cache-line aligned
HIST_LEN = HEADER_LEN + N_BUCKETS          # 3976 int64 = 31808 bytes = 497 cache lines per histogram

# --- stages -----------------------------------------------------------------------------------------------------
# Stage i (i < 6) is the time between timestamp point i and point i + 1 of one tick's life; tick-to-trade spans
# point 0 to point 6. Point names match the ORDER_REQUEST_DTYPE fields in aegis.core.records.
STAGE_FEED = 0           # bytes received -> record published into the ring   (Feed)
STAGE_RING = 1           # published -> consumed by the Brain                  (Brain)
STAGE_SIGNAL = 2         # consumed -> signal generated                        (sender, from the request)
STAGE_RISK = 3           # signal -> risk checks passed                        (sender, from the request)
STAGE_HANDOFF = 4        # risk passed -> handed to the sender queue           (sender, from the request)
STAGE_WIRE = 5           # handed off -> request bytes written to the socket   (sender)
STAGE_TICK_TO_TRADE = 6  # bytes received -> request bytes written             (sender)
N_STAGES = 7
HIST_SET_SHAPE = (N_STAGES, HIST_LEN)
HIST_SET_NBYTES = N_STAGES * HIST_LEN * 8

STAGE_NAMES = (
    "recv->publish",
    "publish->consume",
    "consume->signal",
    "signal->risk",
    "risk->handoff",
    "handoff->wire",
    "tick-to-trade",
)
# File-name-safe names (used for .hgrm files and the .npz layout check).
STAGE_SLUGS = ("feed", "ring", "signal", "risk", "handoff", "wire", "tick_to_trade")


# --- allocation (Python side, never on a hot path) ---------------------------------------------------------------
def new_histogram() -> np.ndarray:
    return np.zeros(HIST_LEN, dtype=np.int64)


def new_set() -> np.ndarray:
    return np.zeros(HIST_SET_SHAPE, dtype=np.int64)


def as_set(buf) -> np.ndarray:
    """View a buffer of at least HIST_SET_NBYTES bytes (e.g. a shared-memory slice) as a histogram set."""
    return np.ndarray(HIST_SET_SHAPE, dtype=np.int64, buffer=buf)


# --- bucket arithmetic -------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def bucket_index(value: int) -> int:
    """Counter index of a value in 0 .. HIGHEST_TRACKABLE_NS."""
    if value < SUB_BUCKET_COUNT:
        return value
    shift = (64 - leading_zeros(np.uint64(value))) - (SUB_BUCKET_BITS + 1)
    return shift * SUB_BUCKET_HALF + (value >> shift)


@njit(cache=True, nogil=True)
def lowest_equivalent(index: int) -> int:
    """Smallest value that lands in counter `index`."""
    if index < SUB_BUCKET_COUNT:
        return index
    shift = (index >> SUB_BUCKET_BITS) - 1
    return (index - shift * SUB_BUCKET_HALF) << shift


@njit(cache=True, nogil=True)
def highest_equivalent(index: int) -> int:
    """Largest value that lands in counter `index`."""
    if index < SUB_BUCKET_COUNT:
        return index
    shift = (index >> SUB_BUCKET_BITS) - 1
    return ((index - shift * SUB_BUCKET_HALF + 1) << shift) - 1


def bucket_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) equivalent value of every counter, as int64 arrays of length N_BUCKETS."""
    idx = np.arange(N_BUCKETS, dtype=np.int64)
    shift = np.maximum((idx >> SUB_BUCKET_BITS) - 1, 0)
    mant = idx - shift * SUB_BUCKET_HALF
    lo = np.where(idx < SUB_BUCKET_COUNT, idx, mant << shift)
    hi = np.where(idx < SUB_BUCKET_COUNT, idx, ((mant + 1) << shift) - 1)
    return lo, hi


# --- recording (hot path: no allocation, a handful of integer ops) -------------------------------------------------
@njit(cache=True, nogil=True)
def record_n(hist, value, n) -> None:
    """Add `n` occurrences of `value` (ns) to the 1-D histogram `hist`."""
    if n <= 0:
        return
    if value < 0:
        hist[H_INVALID] += n
        return
    if value > HIGHEST_TRACKABLE_NS:
        hist[HEADER_LEN + N_BUCKETS - 1] += n
        hist[H_SATURATED] += n
    else:
        hist[HEADER_LEN + bucket_index(value)] += n
    if hist[H_COUNT] == 0 or value < hist[H_MIN]:
        hist[H_MIN] = value
    if value > hist[H_MAX]:
        hist[H_MAX] = value
    hist[H_COUNT] += n
    hist[H_SUM] += value * n


@njit(cache=True, nogil=True)
def record(hist, value) -> None:
    """Add one value (ns) to the 1-D histogram `hist`."""
    record_n(hist, value, 1)


@njit(cache=True, nogil=True)
def record_stage(hset, stage, value) -> None:
    """Add one value (ns) to row `stage` of a histogram set (2-D), without creating a row view."""
    if value < 0:
        hset[stage, H_INVALID] += 1
        return
    if value > HIGHEST_TRACKABLE_NS:
        hset[stage, HEADER_LEN + N_BUCKETS - 1] += 1
        hset[stage, H_SATURATED] += 1
    else:
        hset[stage, HEADER_LEN + bucket_index(value)] += 1
    if hset[stage, H_COUNT] == 0 or value < hset[stage, H_MIN]:
        hset[stage, H_MIN] = value
    if value > hset[stage, H_MAX]:
        hset[stage, H_MAX] = value
    hset[stage, H_COUNT] += 1
    hset[stage, H_SUM] += value


@njit(cache=True, nogil=True)
def record_span(hset, stage, start_ns, end_ns) -> None:
    """Record end - start into `stage`; a zero/negative timestamp means "not stamped" and records nothing."""
    if start_ns > 0 and end_ns > 0:
        record_stage(hset, stage, end_ns - start_ns)


@njit(cache=True, nogil=True)
def record_spans(hset, stage, starts, ends) -> None:
    """Batch form of record_span over two equally long int64 arrays."""
    for i in range(min(starts.shape[0], ends.shape[0])):
        record_span(hset, stage, starts[i], ends[i])


@njit(cache=True, nogil=True)
def record_order_request(hset, req, wire_ns) -> None:
    """Close the measurement of one order request (an ORDER_REQUEST_DTYPE record) whose bytes were written at
    `wire_ns`: records consume->signal, signal->risk, risk->handoff, handoff->wire and tick-to-trade. Requests not
    triggered by a tick (recv_ts == 0, e.g. a cancel-all) only contribute the stages they have timestamps for."""
    record_span(hset, STAGE_SIGNAL, req.consume_ts, req.signal_ts)
    record_span(hset, STAGE_RISK, req.signal_ts, req.risk_ts)
    record_span(hset, STAGE_HANDOFF, req.risk_ts, req.handoff_ts)
    record_span(hset, STAGE_WIRE, req.handoff_ts, wire_ns)
    record_span(hset, STAGE_TICK_TO_TRADE, req.recv_ts, wire_ns)


@njit(cache=True, nogil=True)
def reset(hist) -> None:
    """Empty a histogram or a whole set (any shape)."""
    flat = hist.reshape(-1)
    for i in range(flat.shape[0]):
        flat[i] = 0


@njit(cache=True, nogil=True)
def merge(dst, src) -> None:
    """dst += src for two 1-D histograms (counts, min, max, sum, saturated, invalid)."""
    if src[H_COUNT] > 0:
        if dst[H_COUNT] == 0 or src[H_MIN] < dst[H_MIN]:
            dst[H_MIN] = src[H_MIN]
        if dst[H_COUNT] == 0 or src[H_MAX] > dst[H_MAX]:
            dst[H_MAX] = src[H_MAX]
    dst[H_COUNT] += src[H_COUNT]
    dst[H_SUM] += src[H_SUM]
    dst[H_SATURATED] += src[H_SATURATED]
    dst[H_INVALID] += src[H_INVALID]
    for i in range(HEADER_LEN, HIST_LEN):
        dst[i] += src[i]


@njit(cache=True, nogil=True)
def merge_set(dst, src) -> None:
    """Row-wise merge of two histogram sets of the same shape."""
    for s in range(dst.shape[0]):
        merge(dst[s], src[s])


# --- queries (pure; safe on a live shared-memory row) -------------------------------------------------------------
@njit(cache=True, nogil=True)
def count(hist) -> int:
    return hist[H_COUNT]


@njit(cache=True, nogil=True)
def min_value(hist) -> int:
    """Exact smallest recorded value, 0 when empty."""
    return hist[H_MIN] if hist[H_COUNT] > 0 else 0


@njit(cache=True, nogil=True)
def max_value(hist) -> int:
    """Exact largest recorded value, 0 when empty."""
    return hist[H_MAX] if hist[H_COUNT] > 0 else 0


@njit(cache=True, nogil=True)
def mean(hist) -> float:
    """Exact mean of the recorded values (ns), 0.0 when empty."""
    n = hist[H_COUNT]
    return hist[H_SUM] / n if n > 0 else 0.0


@njit(cache=True, nogil=True)
def stddev(hist) -> float:
    """Population standard deviation (ns) using each bucket's midpoint, 0.0 when empty."""
    total = 0
    for i in range(N_BUCKETS):
        total += hist[HEADER_LEN + i]
    if total == 0:
        return 0.0
    mu = mean(hist)
    acc = 0.0
    for i in range(N_BUCKETS):
        c = hist[HEADER_LEN + i]
        if c:
            mid = 0.5 * (lowest_equivalent(i) + highest_equivalent(i))
            acc += c * (mid - mu) * (mid - mu)
    return np.sqrt(acc / total)


@njit(cache=True, nogil=True)
def _rank_value(hist, rank) -> int:
    """Value of the rank-th smallest sample (1-based), as the highest equivalent value of its bucket clamped to
    the exact min/max."""
    seen = 0
    for i in range(N_BUCKETS):
        seen += hist[HEADER_LEN + i]
        if seen >= rank:
            v = highest_equivalent(i)
            if hist[H_COUNT] > 0:
                if v > hist[H_MAX]:
                    v = hist[H_MAX]
                if v < hist[H_MIN]:
                    v = hist[H_MIN]
            return v
    return max_value(hist)


@njit(cache=True, nogil=True)
def percentile(hist, q) -> int:
    """Value (ns) at percentile q in [0, 100]: the smallest recorded value v such that at least q % of the
    samples are <= v (the inverted-CDF definition), within MAX_RELATIVE_ERROR. 0 when empty."""
    total = 0
    for i in range(N_BUCKETS):
        total += hist[HEADER_LEN + i]
    if total == 0:
        return 0
    if q <= 0.0:
        return min_value(hist)
    if q >= 100.0:
        return max_value(hist)
    # The 1e-9 guard keeps e.g. 99.9 % of 1000 at rank 999 despite 99.9 / 100 * 1000 = 999.0000000000001.
    rank = np.int64(np.ceil(q / 100.0 * total - 1e-9))
    if rank < 1:
        rank = 1
    return _rank_value(hist, rank)


@njit(cache=True, nogil=True)
def percentiles(hist, qs, out) -> None:
    """out[i] = percentile(hist, qs[i]) for a float64 array qs and an int64 array out (no allocation)."""
    for i in range(qs.shape[0]):
        out[i] = percentile(hist, qs[i])


# --- Python-side helpers for readers (supervisor / report) -------------------------------------------------------
def snapshot(hset: np.ndarray) -> np.ndarray:
    """Private copy of a live (shared-memory) histogram or set, so a report sees one consistent-enough state."""
    return np.array(hset, dtype=np.int64, copy=True)


def subtract(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Histogram of the values recorded between two snapshots of the same 1-D histogram (for interval stats).
    The exact min/max of the interval are unknown, so they are taken from the first and last non-empty bucket
    (clamped to the later snapshot's exact extremes)."""
    out = np.asarray(now, dtype=np.int64) - np.asarray(before, dtype=np.int64)
    counts = out[HEADER_LEN:]
    np.maximum(counts, 0, out=counts)   # a torn read of a live row must not produce negative counts
    nz = np.flatnonzero(counts)
    out[H_COUNT] = counts.sum()
    if nz.size:
        lo, hi = bucket_bounds()
        out[H_MIN] = max(int(lo[nz[0]]), int(now[H_MIN]) if now[H_COUNT] else 0)
        out[H_MAX] = min(int(hi[nz[-1]]), int(now[H_MAX]))
        out[H_MIN] = min(out[H_MIN], out[H_MAX])
    else:
        out[H_MIN] = out[H_MAX] = out[H_SUM] = 0
    for h in (H_SATURATED, H_INVALID):
        out[h] = max(int(out[h]), 0)
    return out
