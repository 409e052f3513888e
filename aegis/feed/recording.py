"""`--record DIR`: what the Feed receives, with receive timestamps, as gzip JSON lines the replay reads back.

One line per market-data message: {"t": <recv CLOCK_MONOTONIC ns>, "stream": "<stream name>", "data": <payload>}
(the venue's replay and aegis.replay.run read that shape). Two kinds of line make a recording replay on its own:
  * "stream": "!exchangeInfo", first line of every file: the exchange filters of the recorded symbols (the
    exchangeInfo body with its "symbols" list cut to them), so replay sizes and rounds orders as the run did, and
    "parse": the Feed's parse settings (aegis.feed.parse.Parser keywords), so replay makes the same records;
  * "stream": "<symbol>@depthSnapshot", when the Feed applied a REST depth snapshot: {"lastUpdateId", "E" (ms),
    "bids", "asks"} with the levels as [price, qty] numbers, at the time the Feed applied it, so replay rebuilds
    the same books from the same diffs. The combined-stream wrapper Binance sends is already
{"stream": ..., "data": ...}, so a line is made by splicing the "t" member into the received bytes -- no JSON
decode/encode on the hot path; other payloads are wrapped with an empty stream name. Control replies are not
recorded. Files rotate by size (feed-<UTC time>-<n>.jsonl.gz) and are closed cleanly on stop, so every file is
a complete gzip stream; a crash loses at most the unflushed tail of the current file.
"""
from __future__ import annotations

import gzip
import os
import time
from pathlib import Path
from typing import Iterator

import orjson

_PREFIX = b'{"stream"'
EXCHANGE_INFO_STREAM = "!exchangeInfo"
SNAPSHOT_SUFFIX = "@depthSnapshot"


class Recorder:
    def __init__(self, directory: str | os.PathLike, max_bytes: int = 256 << 20, compresslevel: int = 1):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.level = compresslevel
        self.count = 0
        self.files: list[Path] = []
        self._f = None
        self._written = 0
        self._n = 0
        self.exchange_info: dict | None = None
        self.parse: dict = {}

    def _open(self, recv_ns: int) -> None:
        self._n += 1
        name = time.strftime("feed-%Y%m%d-%H%M%S", time.gmtime()) + f"-{self._n:04d}.jsonl.gz"
        path = self.dir / name
        self._f = gzip.open(path, "wb", compresslevel=self.level)
        self.files.append(path)
        self._written = 0
        if self.exchange_info is not None:
            self._line(recv_ns, EXCHANGE_INFO_STREAM, self.exchange_info, parse=self.parse)

    def write_payloads(self, recv_ns: int, payloads) -> None:
        """Record a batch of received text payloads (bytes-like objects) sharing one receive timestamp."""
        head = b'{"t":%d,' % recv_ns
        lines = []
        for p in payloads:
            p = bytes(p)
            if p.startswith(_PREFIX):
                lines.append(head + p[1:] + b"\n")
            elif p.startswith(b"{") and b'"e":' in p[:64]:   # a bare payload (raw /ws mode)
                lines.append(head + b'"stream":"","data":' + p + b"}\n")
            # anything else (control replies, junk) is not market data: not recorded
        if not lines:
            return
        if self._f is None or self._written >= self.max_bytes:
            self.close()
            self._open(recv_ns)
        blob = b"".join(lines)
        self._f.write(blob)
        self._written += len(blob)
        self.count += len(lines)

    def _line(self, recv_ns: int, stream: str, data, **extra) -> None:
        blob = orjson.dumps({"t": recv_ns, "stream": stream, "data": data, **extra},
                            option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        self._f.write(blob)
        self._written += len(blob)

    def set_exchange_info(self, body: dict, symbols, parse: dict) -> None:
        """Keep the exchangeInfo rows of `symbols`, and the Feed's parse settings (`parse`: Parser keywords), to
        head every file (the current one too, if one is open)."""
        wanted = set(symbols)
        rows = [r for r in body.get("symbols", []) if isinstance(r, dict) and r.get("symbol") in wanted]
        self.exchange_info = {"serverTime": body.get("serverTime"), "symbols": rows}
        self.parse = dict(parse)
        if self._f is not None:
            self._line(time.monotonic_ns(), EXCHANGE_INFO_STREAM, self.exchange_info, parse=self.parse)

    def write_snapshot(self, recv_ns: int, symbol: str, last_update_id: int, bids, asks, exch_ns: int) -> None:
        """A REST depth snapshot as the Feed applied it at recv_ns (bids/asks: float64 rows (price, qty))."""
        if self._f is None or self._written >= self.max_bytes:
            self.close()
            self._open(recv_ns)
        self._line(recv_ns, symbol.lower() + SNAPSHOT_SUFFIX,
                   {"lastUpdateId": int(last_update_id), "E": int(exch_ns // 1_000_000), "bids": bids, "asks": asks})
        self.count += 1

    def write(self, recv_ns: int, stream: str, data) -> None:
        """Record one already-decoded message (slow paths, tests)."""
        self.write_payloads(recv_ns, [orjson.dumps({"stream": stream, "data": data})])

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def recorded_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        return sorted(p.glob("feed-*.jsonl.gz"))
    return [p]


def read_recording(path: str | os.PathLike) -> Iterator[tuple[int, str, object]]:
    """(recv_ns, stream, data) of every recorded line, files in name (= time) order; bad lines are skipped."""
    for f in recorded_files(path):
        try:
            with gzip.open(f, "rb") as fh:
                for line in fh:
                    try:
                        obj = orjson.loads(line)
                        yield int(obj["t"]), str(obj.get("stream", "")), obj["data"]
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue
        except (OSError, EOFError):
            continue   # truncated tail of a file written by a crashed run
