"""Latency report: percentile table, HdrHistogram .hgrm files and a PNG plot of the per-stage histograms.

`python -m aegis report [--hist FILE] [--out DIR]` reads the histogram set the engine dumped at the end of a run
(save_histograms), prints the percentile table per stage, writes one .hgrm file per stage (HdrHistogram's
percentile-distribution text, readable by its online plotter) and latency.png (percentile curves on a
log 1/(1-p) axis, like HdrHistogram plots).

The PNG is drawn by a tiny rasteriser and written with zlib (no matplotlib): the picture is one fixed kind of
chart, and keeping the engine free of a plotting stack (and its import time, fonts and native wheels) is worth
more than prettier text. Labels use a built-in 5x7 upper-case bitmap font.
"""
from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from aegis.core import latency as L
from aegis.core.usage import OneLineParser, usage_error

PROG = "python -m aegis report"

REPORT_PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)
HIST_FILE_NAME = "latency.npz"
DEFAULT_HIST_PATH = f"aegis-out/{HIST_FILE_NAME}"   # EngineConfig.out_dir / HIST_FILE_NAME
DEFAULT_OUT_DIR = "aegis-out/latency"
FILE_VERSION = 1
PLOT_NAME = "latency.png"
NS_PER_US = 1000.0

# Bucket geometry stored next to the counts: a file written with another geometry must not be misread.
_LAYOUT = np.array([FILE_VERSION, L.SUB_BUCKET_BITS, L.MAX_SHIFT, L.HEADER_LEN, L.N_BUCKETS, L.N_STAGES],
                   dtype=np.int64)


class HistogramFileError(ValueError):
    """A histogram file that is missing, damaged or of another layout (a user mistake: one-line error)."""


# --- persistence ----------------------------------------------------------------------------------------------
def save_histograms(path, hist_set: np.ndarray) -> Path:
    """Write a histogram set (N_STAGES x HIST_LEN int64, e.g. the live shared-memory one) to `path` (.npz),
    atomically (a reader never sees half a file)."""
    hist = np.array(hist_set, dtype=np.int64, copy=True)
    if hist.shape != L.HIST_SET_SHAPE:
        raise ValueError(f"histogram set must have shape {L.HIST_SET_SHAPE}, got {hist.shape}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, hist=hist, layout=_LAYOUT, stages=np.array(L.STAGE_SLUGS))
    os.replace(tmp, path)
    return path


def load_histograms(path) -> np.ndarray:
    """Read a histogram set written by save_histograms, or a raw dump of the shared-memory block
    (exactly HIST_SET_NBYTES bytes of native int64). Raises HistogramFileError."""
    path = Path(path)
    if not path.is_file():
        raise HistogramFileError(f"no histogram file at {path}")
    if zipfile.is_zipfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                layout, hist = z["layout"], z["hist"]
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
            raise HistogramFileError(f"{path} is not an AEGIS histogram file ({e})") from None
        if not np.array_equal(layout, _LAYOUT):
            raise HistogramFileError(f"{path} was written with another histogram layout {layout.tolist()}")
    elif path.stat().st_size == L.HIST_SET_NBYTES:
        hist = np.fromfile(path, dtype=np.int64)
    else:
        raise HistogramFileError(f"{path} is neither an .npz histogram file nor a raw {L.HIST_SET_NBYTES}-byte dump")
    if hist.shape != L.HIST_SET_SHAPE and hist.size == L.N_STAGES * L.HIST_LEN:
        hist = hist.reshape(L.HIST_SET_SHAPE)
    if hist.shape != L.HIST_SET_SHAPE or hist.dtype != np.int64:
        raise HistogramFileError(f"{path} holds an array of shape {hist.shape}, expected {L.HIST_SET_SHAPE}")
    return np.ascontiguousarray(hist)


# --- numbers for people ---------------------------------------------------------------------------------------
def stage_summary(hist: np.ndarray) -> dict:
    """count, min, mean, the REPORT_PERCENTILES and max of one histogram, all in ns."""
    out = {"count": int(L.count(hist)), "min": int(L.min_value(hist)), "mean": float(L.mean(hist)),
           "max": int(L.max_value(hist))}
    for q in REPORT_PERCENTILES:
        out[q] = int(L.percentile(hist, q))
    return out


_UNITS = ((1, "ns"), (1_000, "us"), (1_000_000, "ms"), (1_000_000_000, "s"))
CELL_WIDTH = 11   # a 10-character cell (the widest table_duration writes below 31 years) and one space


def table_duration(ns: float) -> str:
    """A latency table cell: ns exact below 1 us, then us, ms, s with three decimals (ns resolution up to 1 ms),
    whole seconds from 10000 s: at most 10 characters for anything below 31 years. The unit is chosen after
    rounding, so 999_999.6 ns reads "1.000ms", never "1000.000us"."""
    ns = float(ns)
    if abs(ns) < 999.5:
        return f"{ns:.0f}ns"
    for scale, unit in _UNITS[1:-1]:
        text = f"{ns / scale:.3f}"
        if abs(float(text)) < 1000:
            return text + unit
    text = f"{ns / 1e9:.3f}"
    return (text if abs(float(text)) < 10_000 else f"{ns / 1e9:.0f}") + "s"


def format_table(hist_set: np.ndarray) -> str:
    """Percentile table of every stage, one line per stage, each value with its unit (ns, us, ms, s), empty stages
    shown as '-'. Columns are right-aligned in CELL_WIDTH characters for any value the histograms hold."""
    hist_set = L.snapshot(hist_set)
    head = ["stage", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"]
    w = CELL_WIDTH
    lines = [f"{head[0]:<17}{head[1]:>{w}}" + "".join(f"{h:>{w}}" for h in head[2:])]
    for st in range(L.N_STAGES):
        s = stage_summary(hist_set[st])
        if s["count"] == 0:
            cells = ["-"] * 6
        else:
            cells = [table_duration(s[q]) for q in REPORT_PERCENTILES] + [table_duration(s["max"])]
        lines.append(f"{L.STAGE_NAMES[st]:<17}{s['count']:>{w}}" + "".join(f" {c:>{w - 1}}" for c in cells))
        extra = []
        if hist_set[st, L.H_SATURATED]:
            extra.append(f"{hist_set[st, L.H_SATURATED]} above {L.HIGHEST_TRACKABLE_NS / 1e9:.0f} s")
        if hist_set[st, L.H_INVALID]:
            extra.append(f"{hist_set[st, L.H_INVALID]} negative (clock/stamp bug)")
        if extra:
            lines[-1] += "   ! " + ", ".join(extra)
    return "\n".join(lines) + "\n"


def status_fields(hist_set: np.ndarray, previous: np.ndarray | None = None) -> tuple[int, int]:
    """(p50_ns, p99_ns) of tick-to-trade for the live status line: since the start of the run, or since the
    snapshot `previous` (a copy of hist_set taken earlier with latency.snapshot) when given. (0, 0) if empty."""
    row = L.snapshot(hist_set[L.STAGE_TICK_TO_TRADE])
    if previous is not None:
        row = L.subtract(row, previous[L.STAGE_TICK_TO_TRADE])
    return int(L.percentile(row, 50.0)), int(L.percentile(row, 99.0))


def format_duration(ns: int) -> str:
    """Short human form for a status line: 850ns, 12.3us, 4.56ms, 1.20s."""
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


def status_text(hist_set: np.ndarray, previous: np.ndarray | None = None) -> str:
    """The tick-to-trade part of the live status line, e.g. 't2t p50 8.2us p99 25.1us' ('t2t -' when there is
    nothing to show: no orders yet, or none since `previous`)."""
    row = L.snapshot(hist_set[L.STAGE_TICK_TO_TRADE])
    if previous is not None:
        row = L.subtract(row, previous[L.STAGE_TICK_TO_TRADE])
    if L.count(row) == 0:
        return "t2t -"
    return f"t2t p50 {format_duration(L.percentile(row, 50.0))} p99 {format_duration(L.percentile(row, 99.0))}"


# --- HdrHistogram percentile distribution (.hgrm) ----------------------------------------------------------------
def hgrm_text(hist: np.ndarray, scaling_ratio: float = NS_PER_US, ticks_per_half_distance: int = 5,
              decimals: int = 3) -> str:
    """One histogram as HdrHistogram's percentile-distribution text (values divided by scaling_ratio: the
    default prints microseconds with ns resolution).

    Rows step through percentile levels that get denser towards 100 %: `ticks_per_half_distance` rows for every
    halving of the distance to 100 % (0, 10, ..., 50, 55, ..., 75, 77.5, ...). A level is reported at the first
    non-empty bucket whose cumulative count reaches it, with that bucket's highest equivalent value (clamped to
    the exact min/max); the last bucket closes the table with a 100 % row that has no 1/(1-p) column."""
    hist = np.asarray(hist, dtype=np.int64)
    counts = hist[L.HEADER_LEN:]
    total = int(counts.sum())
    vfmt = f"{{:12.{decimals}f}}"
    out = [f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}\n\n"]
    if total:
        _lo, hi = L.bucket_bounds()
        vmin, vmax = int(L.min_value(hist)), int(L.max_value(hist))
        nonzero = np.flatnonzero(counts)
        level = 0.0
        cum = 0
        last = nonzero[-1]
        for i in nonzero:
            cum += int(counts[i])
            value = vfmt.format(min(max(int(hi[i]), vmin), vmax) / scaling_ratio)
            while 100.0 * cum / total >= level:
                out.append(f"{value} {level / 100.0:2.12f} {cum:10d} {1.0 / (1.0 - level / 100.0):14.2f}\n")
                halvings = math.floor(math.log(100.0 / (100.0 - level)) / math.log(2.0))
                level += 100.0 / (ticks_per_half_distance * 2 ** (halvings + 1))
                if i == last:
                    out.append(f"{value} {1.0:2.12f} {total:10d}\n")
                    break
    mean = L.mean(hist) if total else 0.0
    std = L.stddev(hist) if total else 0.0
    out.append(f"#[Mean    = {vfmt.format(mean / scaling_ratio)}, StdDeviation   = "
               f"{vfmt.format(std / scaling_ratio)}]\n")
    out.append(f"#[Max     = {vfmt.format(L.max_value(hist) / scaling_ratio)}, Total count    = {total:12d}]\n")
    out.append(f"#[Buckets = {L.N_POW2_BUCKETS:12d}, SubBuckets     = {L.SUB_BUCKET_COUNT:12d}]\n")
    return "".join(out)


def write_hgrm_files(hist_set: np.ndarray, out_dir) -> list[Path]:
    """One <stage slug>.hgrm per stage (empty stages too, so the file set is always the same)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for st in range(L.N_STAGES):
        p = out_dir / f"{L.STAGE_SLUGS[st]}.hgrm"
        p.write_text(hgrm_text(hist_set[st]))
        paths.append(p)
    return paths


# --- PNG: a minimal RGB writer and rasteriser ---------------------------------------------------------------------
def png_bytes(img: np.ndarray) -> bytes:
    """Encode an (height, width, 3) uint8 RGB image as PNG (8-bit truecolour, no filtering)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w, _ = img.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1)  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB), deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


# 5x7 glyphs, rows top to bottom, '#' = ink. Upper case only: labels are upper-cased before drawing.
_GLYPHS = {
    " ": "..... ..... ..... ..... ..... ..... .....",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...##",
    "-": "..... ..... ..... ##### ..... ..... .....",
    "_": "..... ..... ..... ..... ..... ..... #####",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "=": "..... ..... ##### ..... ##### ..... .....",
}
_GLYPH_BITS = {c: np.array([[ch == "#" for ch in row] for row in g.split()], dtype=bool) for c, g in _GLYPHS.items()}
_FONT_SCALE = 2
_CHAR_W = 6 * _FONT_SCALE   # 5 columns of ink + 1 of spacing
_CHAR_H = 7 * _FONT_SCALE


def text_width(s: str) -> int:
    return len(s) * _CHAR_W - _FONT_SCALE


def draw_text(img: np.ndarray, x: int, y: int, s: str, color) -> None:
    """Draw `s` with its top-left corner at (x, y); characters without a glyph are drawn as '_' ."""
    for k, ch in enumerate(s.upper()):
        bits = _GLYPH_BITS.get(ch, _GLYPH_BITS["_"])
        big = np.kron(bits, np.ones((_FONT_SCALE, _FONT_SCALE), dtype=bool))
        x0 = x + k * _CHAR_W
        ys, xs = np.nonzero(big)
        ys, xs = ys + y, xs + x0
        ok = (ys >= 0) & (ys < img.shape[0]) & (xs >= 0) & (xs < img.shape[1])
        img[ys[ok], xs[ok]] = color


def draw_polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, color, width: int = 2) -> None:
    """Connect consecutive points with `width`-pixel lines (sampled at one point per pixel step)."""
    px, py = [], []
    for i in range(len(xs) - 1):
        n = int(max(abs(xs[i + 1] - xs[i]), abs(ys[i + 1] - ys[i]))) + 1
        px.append(np.linspace(xs[i], xs[i + 1], n))
        py.append(np.linspace(ys[i], ys[i + 1], n))
    if not px:
        px, py = [np.asarray(xs, float)], [np.asarray(ys, float)]
    px = np.rint(np.concatenate(px)).astype(np.int64)
    py = np.rint(np.concatenate(py)).astype(np.int64)
    for dx in range(width):
        for dy in range(width):
            qx, qy = px + dx - width // 2, py + dy - width // 2
            ok = (qy >= 0) & (qy < img.shape[0]) & (qx >= 0) & (qx < img.shape[1])
            img[qy[ok], qx[ok]] = color


STAGE_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (0, 0, 0),
)
_GRID = (225, 225, 225)
_INK = (0, 0, 0)


def _decade_label(k: int) -> str:
    """Label of 10**k microseconds."""
    return str(10 ** k) if k >= 0 else f"{10.0 ** k:.{-k}f}"


def _percentile_label(decade: int) -> str:
    """Percentile at 1/(1-p) = 10**decade: 0 -> 0%, 1 -> 90%, 3 -> 99.9%."""
    if decade == 0:
        return "0%"
    if decade <= 2:
        return f"{100 - 10 ** (2 - decade)}%"
    return "99." + "9" * (decade - 2) + "%"


def render_plot(hist_set: np.ndarray, width: int = 960, height: int = 600) -> np.ndarray:
    """RGB image of every non-empty stage's percentile curve: x = 1/(1-p) on a log scale (one decade per
    'nine'), y = latency in microseconds on a log scale."""
    hist_set = np.asarray(hist_set, dtype=np.int64)
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 96, 24, 52, 64
    pw, ph = width - left - right, height - top - bottom
    stages = [st for st in range(L.N_STAGES) if L.count(hist_set[st]) > 0]
    title = "AEGIS LATENCY BY STAGE"
    draw_text(img, (width - text_width(title)) // 2, 14, title, _INK)
    if not stages:
        draw_text(img, left + 20, top + ph // 2, "NO SAMPLES RECORDED", _INK)
        return img

    total_max = max(int(L.count(hist_set[st])) for st in stages)
    x_decades = int(min(max(math.ceil(math.log10(max(total_max, 1))), 2), 7))
    vmin = min(max(int(L.min_value(hist_set[st])), 1) for st in stages) / NS_PER_US
    vmax = max(max(int(L.max_value(hist_set[st])), 1) for st in stages) / NS_PER_US
    y_lo, y_hi = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
    if y_hi <= y_lo:
        y_hi = y_lo + 1

    def to_y(v_us: np.ndarray) -> np.ndarray:
        lv = np.log10(np.maximum(v_us, 10.0 ** y_lo))
        return top + ph - (lv - y_lo) / (y_hi - y_lo) * ph

    for d in range(x_decades + 1):  # vertical grid + percentile labels
        gx = left + round(d / x_decades * pw)
        img[top:top + ph, gx] = _GRID
        lab = _percentile_label(d)
        lx = min(gx - text_width(lab) // 2, width - 4 - text_width(lab))
        draw_text(img, lx, top + ph + 8, lab, _INK)
    for k in range(y_lo, y_hi + 1):  # horizontal grid + microsecond labels
        gy = int(round(float(to_y(np.array([10.0 ** k]))[0])))
        img[min(gy, top + ph - 1), left:left + pw] = _GRID
        lab = _decade_label(k)
        draw_text(img, left - 8 - text_width(lab), gy - _CHAR_H // 2, lab, _INK)
    img[top:top + ph + 1, left] = _INK  # axes
    img[top + ph, left:left + pw + 1] = _INK
    draw_text(img, left, top - 22, "MICROSECONDS (LOG)", _INK)
    xl = "PERCENTILE, LOG 1/(1-P)"
    draw_text(img, left + (pw - text_width(xl)) // 2, height - 24, xl, _INK)

    cols = np.arange(pw + 1)
    decades = cols / pw * x_decades
    qs = 100.0 * (1.0 - 10.0 ** (-decades))
    vals = np.zeros(qs.size, dtype=np.int64)
    for st in stages:
        L.percentiles(hist_set[st], qs, vals)
        draw_polyline(img, left + cols.astype(float), to_y(vals / NS_PER_US), STAGE_COLORS[st],
                       width=3 if st == L.STAGE_TICK_TO_TRADE else 2)

    # Legend in the bottom-right corner: percentile curves rise to the right, so the space under the lowest
    # curve is widest there.
    box_w = 40 + max(text_width(L.STAGE_NAMES[st]) for st in stages) + 12
    lx, ly = left + pw - box_w - 6, top + ph - len(stages) * 20 - 8
    img[ly - 6:ly + len(stages) * 20 + 2, lx - 6:lx + box_w] = (255, 255, 255)
    for n, st in enumerate(stages):
        y = ly + n * 20
        img[y + 5:y + 9, lx:lx + 28] = STAGE_COLORS[st]
        draw_text(img, lx + 36, y, L.STAGE_NAMES[st], _INK)
    return img


def write_plot(hist_set: np.ndarray, path) -> Path:
    path = Path(path)
    path.write_bytes(png_bytes(render_plot(hist_set)))
    return path


def write_run_report(hist_set: np.ndarray, out_dir, plot: bool = True) -> list[Path]:
    """Everything the end of a run leaves behind, in one call for the supervisor: <out_dir>/latency.npz (input of
    `aegis report`) plus <out_dir>/latency/*.hgrm and latency.png. Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hist_set = L.snapshot(hist_set)
    paths = [save_histograms(out_dir / HIST_FILE_NAME, hist_set)]
    paths += write_hgrm_files(hist_set, out_dir / "latency")
    if plot:
        paths.append(write_plot(hist_set, out_dir / "latency" / PLOT_NAME))
    return paths


# --- CLI ------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Per-stage latency percentiles, .hgrm files and a plot.")
    p.add_argument("--hist", default=DEFAULT_HIST_PATH,
                   help=f"histogram file dumped by the engine (default {DEFAULT_HIST_PATH})")
    p.add_argument("--out", default=DEFAULT_OUT_DIR, help=f"output directory (default {DEFAULT_OUT_DIR})")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m aegis report ...`; argv holds the arguments after `report`."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        hist_set = load_histograms(args.hist)
    except HistogramFileError as e:
        return usage_error(PROG, str(e))
    try:
        paths = write_hgrm_files(hist_set, args.out)
        if not args.no_plot:
            paths.append(write_plot(hist_set, Path(args.out) / PLOT_NAME))
    except OSError as e:
        return usage_error(PROG, f"cannot write to {args.out}: {e.strerror or e}")
    sys.stdout.write(format_table(hist_set))
    print(f"wrote {len(paths)} files to {args.out}: " + ", ".join(p.name for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
