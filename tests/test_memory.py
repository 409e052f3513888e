"""The Feed's preallocated buffers are resident from the start (aegis.core.memory.prefault).

Residency is read from the kernel with mincore(2), page by page: a buffer that is only zero-mapped and would page
in during the first backlog reads as not resident.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aegis.binance.symbols import SymbolTable
from aegis.core import ring as R
from aegis.core.memory import prefault
from aegis.core.records import MARKET_DTYPE
from aegis.core.wait import SLEEP
from aegis.feed.process import FeedConfig, FeedEngine
from aegis.feed.wsframes import FrameReader

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))


def resident_fraction(a: np.ndarray) -> float:
    """Share of the array's whole pages that are resident in this process."""
    page = mmap.PAGESIZE
    start = (a.ctypes.data + page - 1) // page * page           # whole pages only: neighbours share the edges
    end = (a.ctypes.data + a.nbytes) // page * page
    n = (end - start) // page
    assert n > 0, "array smaller than a page"
    vec = (ctypes.c_ubyte * n)()
    if _libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(end - start), vec) != 0:
        pytest.skip(f"mincore failed: errno {ctypes.get_errno()}")
    return sum(v & 1 for v in vec) / n


def test_prefault_makes_every_page_resident_and_keeps_the_contents():
    # a fresh anonymous mapping: np.zeros may reuse heap pages an earlier test already made resident
    m = mmap.mmap(-1, 8 << 20)
    a = np.frombuffer(m, np.uint8)
    assert resident_fraction(a) < 0.5        # lazily mapped: the premise of the test
    rec = np.zeros(50_000, MARKET_DTYPE)
    rec["seq"] = np.arange(len(rec))
    rec["bid_px"] = np.linspace(1, 2, len(rec))
    before = rec.copy()
    assert prefault(a, rec) == a.nbytes + rec.nbytes
    assert resident_fraction(a) == 1.0
    assert resident_fraction(rec) == 1.0
    assert (rec == before).all()


def feed_buffers_resident() -> dict:
    """Resident share of each of a freshly built FeedEngine's (300 symbols, depth subscribed) and FrameReader's
    preallocated buffers."""
    table = SymbolTable.build((f"SYN{i:04d}USDT", "0.01", "0.001") for i in range(300))
    cfg = FeedConfig(streams=("bookTicker", "depth"))
    header = np.zeros(R.HEADER_SLOTS, np.int64)
    R.init_header(header, 1024, MARKET_DTYPE.itemsize)
    eng = FeedEngine(table, cfg, header, np.zeros(1024, MARKET_DTYPE), "http://127.0.0.1:9", "ws://127.0.0.1:9",
                     SLEEP)
    b = eng.books
    out = {name: resident_fraction(a) for name, a in (
        ("conflation FIFO", eng.conflation.pend), ("parser output", eng.parser.out), ("depth books", b.px),
        ("depth book sizes", b.qty), ("buffered depth levels", b.pend_lv))}
    s, peer = socket.socketpair()
    try:
        r = FrameReader(s)
        out.update({name: resident_fraction(a) for name, a in (
            ("read buffer", r.buf), ("frame offsets", r.offs), ("frame lengths", r.lens))})
    finally:
        s.close()
        peer.close()
    return out


def test_the_feeds_buffers_are_resident_before_the_first_backlog():
    # in a process of its own: in this one, freed heap pages of earlier tests would be resident anyway
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", "import json, tests.test_memory as t; "
                          "print(json.dumps(t.feed_buffers_resident()))"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    fractions = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(fractions) == 8
    assert {k: v for k, v in fractions.items() if v != 1.0} == {}
