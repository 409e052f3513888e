"""Which symbols the engine trades, and the small integer ids the Feed and the Brain share for them.

Discovery asks the venue (GET /fapi/v1/exchangeInfo, GET /fapi/v1/ticker/24hr): TRADING USDT-quoted PERPETUAL
contracts, ranked by 24 h quote volume, top N -- or an explicit list. Any failure (connection refused, timeout,
HTTP error such as a 403/451 geo-block, a body that is not the JSON we expect) falls back to a built-in list of
20 major USDT perpetuals, and the reason is logged once: a market-data process that cannot start because a
metadata endpoint is down would be worse than one that starts on a known-good universe.

Ids are assigned by sorting the selected names (code-point order), so the same selection always gives the same
ids, whatever order the venue listed them in. The SymbolTable is an immutable, picklable value: the supervisor
hands the same table to both processes, so the Feed's `symbol` field means the same thing in the Brain.

The table also carries the arrays the jitted parser needs to map the symbol bytes of a payload to an id without
creating a Python string: the UTF-8 names laid end to end, and an open-addressing hash table over them.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np

from aegis.core.jit import njit

log = logging.getLogger("aegis.binance.symbols")

DEFAULT_TOP_N = 20

# name, tickSize, stepSize (values from live exchangeInfo rows; only used when discovery fails)
BUILTIN_SYMBOLS: tuple[tuple[str, str, str], ...] = (
    ("BTCUSDT", "0.10", "0.001"), ("ETHUSDT", "0.01", "0.001"), ("BNBUSDT", "0.010", "0.01"),
    ("SOLUSDT", "0.0100", "0.01"), ("XRPUSDT", "0.0001", "0.1"), ("DOGEUSDT", "0.00001", "1"),
    ("ADAUSDT", "0.00010", "1"), ("LTCUSDT", "0.01", "0.001"), ("LINKUSDT", "0.001", "0.01"),
    ("AVAXUSDT", "0.0010", "1"), ("DOTUSDT", "0.001", "0.1"), ("BCHUSDT", "0.01", "0.001"),
    ("TRXUSDT", "0.00001", "1"), ("1000PEPEUSDT", "0.0000001", "1"), ("SUIUSDT", "0.000100", "0.1"),
    ("ARBUSDT", "0.000100", "0.1"), ("OPUSDT", "0.0001000", "0.1"), ("NEARUSDT", "0.001", "1"),
    ("APTUSDT", "0.00010", "0.1"), ("ETCUSDT", "0.001", "0.01"),
)


class DiscoveryError(Exception):
    """Discovery could not produce a universe (the caller falls back to BUILTIN_SYMBOLS)."""


@dataclass(frozen=True)
class SymbolInfo:
    id: int
    name: str            # exchange spelling, upper case, may be non-ASCII (e.g. "币安人生USDT")
    tick_size: str       # exact strings from exchangeInfo: quantise prices with Decimal(tick_size)
    step_size: str

    @property
    def stream(self) -> str:
        """Stream-name prefix: Binance stream names are the lower-cased symbol (str.lower() handles non-ASCII)."""
        return self.name.lower()


def _hash_bytes(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@njit(cache=True, nogil=True, inline="always")
def hash_span(buf, start, end):
    """FNV-1a 64 of buf[start:end] (same function as _hash_bytes, used by the jitted lookup)."""
    h = np.uint64(0xCBF29CE484222325)
    prime = np.uint64(0x100000001B3)
    for i in range(start, end):
        h = (h ^ np.uint64(buf[i])) * prime
    return h


@njit(cache=True, nogil=True, inline="always")
def lookup_span(buf, start, end, names, name_off, table):
    """Symbol id of the UTF-8 bytes buf[start:end], or -1 if the name is not in the table."""
    mask = np.uint64(table.shape[0] - 1)
    slot = hash_span(buf, start, end) & mask
    n = end - start
    while True:
        sid = table[slot]
        if sid < 0:
            return -1
        o = name_off[sid]
        if name_off[sid + 1] - o == n:
            same = True
            for k in range(n):
                if names[o + k] != buf[start + k]:
                    same = False
                    break
            if same:
                return sid
        slot = (slot + np.uint64(1)) & mask


@dataclass(frozen=True)
class SymbolTable:
    """names <-> ids (0..n-1), tick/step sizes, and the arrays of the jitted name lookup."""
    symbols: tuple[SymbolInfo, ...]
    source: str = "explicit"          # "discovered", "explicit", "builtin" (fallback), "catalog"
    names_utf8: np.ndarray = field(default=None, repr=False, compare=False)
    name_off: np.ndarray = field(default=None, repr=False, compare=False)
    hash_table: np.ndarray = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, rows, source: str = "explicit") -> "SymbolTable":
        """rows: iterable of (name, tick_size, step_size); duplicates collapse, ids follow sorted names."""
        uniq: dict[str, tuple[str, str]] = {}
        for name, tick, step in rows:
            if not isinstance(name, str) or not name or name != name.strip():
                raise ValueError(f"bad symbol name {name!r}")
            uniq.setdefault(name.upper(), (str(tick), str(step)))
        if not uniq:
            raise ValueError("a symbol table needs at least one symbol")
        infos = tuple(SymbolInfo(i, n, *uniq[n]) for i, n in enumerate(sorted(uniq)))
        encoded = [s.name.encode() for s in infos]
        off = np.zeros(len(infos) + 1, np.int64)
        off[1:] = np.cumsum([len(e) for e in encoded])
        names = np.frombuffer(b"".join(encoded), np.uint8).copy()
        size = 1 << max(4, (len(infos) * 4 - 1).bit_length())  # load factor <= 1/4: short probe chains
        table = np.full(size, -1, np.int32)
        for s, e in zip(infos, encoded):
            slot = _hash_bytes(e) & (size - 1)
            while table[slot] >= 0:
                slot = (slot + 1) & (size - 1)
            table[slot] = s.id
        return cls(infos, source, names, off, table)

    def __len__(self) -> int:
        return len(self.symbols)

    def __iter__(self):
        return iter(self.symbols)

    def __getstate__(self):
        # the lookup arrays are derived: rebuild them on unpickle instead of shipping them
        return {"rows": [(s.name, s.tick_size, s.step_size) for s in self.symbols], "source": self.source}

    def __setstate__(self, state):
        t = SymbolTable.build(state["rows"], state["source"])
        for k in ("symbols", "source", "names_utf8", "name_off", "hash_table"):
            object.__setattr__(self, k, getattr(t, k))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.symbols)

    def id_of(self, name: str) -> int:
        """Id of a symbol (case-insensitive: stream names are lower case); KeyError if unknown."""
        sid = self.find(name)
        if sid < 0:
            raise KeyError(name)
        return sid

    def find(self, name: str) -> int:
        """Id of a symbol, or -1 if it is not in the table."""
        e = name.upper().encode()
        return int(lookup_span(np.frombuffer(e, np.uint8), 0, len(e), self.names_utf8, self.name_off,
                               self.hash_table)) if e else -1

    def name_of(self, sid: int) -> str:
        return self.symbols[sid].name

    def info(self, sid: int) -> SymbolInfo:
        return self.symbols[sid]

    def to_dict(self) -> dict:
        return {"source": self.source,
                "symbols": [{"id": s.id, "name": s.name, "tick_size": s.tick_size, "step_size": s.step_size}
                            for s in self.symbols]}


def builtin_table() -> SymbolTable:
    return SymbolTable.build(BUILTIN_SYMBOLS, "builtin")


# ------------------------------------------------------------------------------------------- discovery
def _filters(row: dict) -> tuple[str, str]:
    tick = step = None
    for f in row.get("filters") or ():
        if not isinstance(f, dict):
            continue
        if f.get("filterType") == "PRICE_FILTER":
            tick = f.get("tickSize")
        elif f.get("filterType") == "LOT_SIZE":
            step = f.get("stepSize")
    for v in (tick, step):
        try:
            if v is None or not Decimal(v) > 0:
                raise DiscoveryError(f"symbol {row.get('symbol')!r} has no usable PRICE_FILTER/LOT_SIZE")
        except InvalidOperation:
            raise DiscoveryError(f"symbol {row.get('symbol')!r} has a non-decimal tick/step size") from None
    return tick, step


def eligible_rows(exchange_info) -> dict[str, tuple[str, str]]:
    """name -> (tick, step) of every TRADING USDT-quoted PERPETUAL in an exchangeInfo body."""
    if not isinstance(exchange_info, dict) or not isinstance(exchange_info.get("symbols"), list):
        raise DiscoveryError("exchangeInfo body has no 'symbols' list")
    out = {}
    for row in exchange_info["symbols"]:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            continue
        if row.get("status") == "TRADING" and row.get("contractType") == "PERPETUAL" \
                and row.get("quoteAsset") == "USDT":
            out[row["symbol"]] = _filters(row)
    if not out:
        raise DiscoveryError("exchangeInfo lists no TRADING USDT perpetual")
    return out


def quote_volumes(tickers) -> dict[str, float]:
    """symbol -> 24 h quote volume from a /fapi/v1/ticker/24hr array (unparseable rows count as 0)."""
    if not isinstance(tickers, list):
        raise DiscoveryError("ticker/24hr body is not a list")
    out = {}
    for t in tickers:
        if isinstance(t, dict) and isinstance(t.get("symbol"), str):
            try:
                v = float(t.get("quoteVolume", 0))
            except (TypeError, ValueError):
                v = 0.0
            out[t["symbol"]] = v if math.isfinite(v) else 0.0
    return out


def rank(eligible: dict[str, tuple[str, str]], volumes: dict[str, float], top_n: int) -> list[str]:
    """Top N by quote volume, ties and missing tickers broken by name so the choice is deterministic."""
    return sorted(eligible, key=lambda s: (-volumes.get(s, 0.0), s))[:top_n]


def _get_json(session, url: str, timeout: float, ledger=None):
    import orjson
    r = session.get(url, timeout=timeout)
    if ledger is not None:
        ledger.note_response(r)
    if r.status_code != 200:
        raise DiscoveryError(f"GET {url} -> HTTP {r.status_code}")
    try:
        return orjson.loads(r.content)
    except orjson.JSONDecodeError as e:
        raise DiscoveryError(f"GET {url} -> body is not JSON ({e})") from None


def discover(rest_url: str, top_n: int = DEFAULT_TOP_N, symbols: list[str] | tuple[str, ...] | None = None,
             timeout: float = 5.0, logger: logging.Logger | None = None, strict: bool = False,
             ledger=None, out=None) -> SymbolTable:
    """The engine's universe: `symbols` if given (validated against exchangeInfo when it is reachable), else the
    top `top_n` TRADING USDT perpetuals by 24 h quote volume. Never raises for venue trouble: falls back to the
    built-in list and logs the reason once. Raises ValueError for a bad argument (top_n < 1, empty list).
    strict (a run that will trade there): raises DiscoveryError instead of falling back, when the venue cannot be
    reached or does not list a requested symbol as a TRADING USDT perpetual.
    ledger (aegis.binance.weight.WeightLedger of a venue shared across runs): wait for room in the minute's REST
    weight first, take exchangeInfo from the disk cache when it is fresh, record the weight the answers report."""
    import requests

    lg = logger or log
    if symbols is not None:
        wanted = [s.strip().upper() for s in symbols if s.strip()]
        if not wanted:
            raise ValueError("the explicit symbol list is empty")
    elif top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    base = rest_url.rstrip("/")
    try:
        with requests.Session() as s:
            s.trust_env = False if base.startswith(("http://127.", "http://localhost")) else True
            if ledger is not None:
                from aegis.binance.weight import cached_exchange_info
                ledger.wait_for(1 if symbols is not None else 41, share=0.9, out=out)
                info = cached_exchange_info(base, lambda: _get_json(s, base + "/fapi/v1/exchangeInfo", timeout,
                                                                    ledger))
                ledger.set_limit(info)
            else:
                info = _get_json(s, base + "/fapi/v1/exchangeInfo", timeout)
            eligible = eligible_rows(info)
            if symbols is not None:
                unknown = [w for w in wanted if w not in eligible]
                if unknown:
                    names = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                    if strict:
                        raise DiscoveryError(f"not TRADING USDT perpetuals on {base}: {names}")
                    lg.warning("symbols: not TRADING USDT perpetuals on %s, skipped: %s", base, names)
                rows = [(w, *eligible[w]) for w in wanted if w in eligible]
                if not rows:
                    raise DiscoveryError("none of the requested symbols is a TRADING USDT perpetual")
                return SymbolTable.build(rows, "explicit")
            volumes = quote_volumes(_get_json(s, base + "/fapi/v1/ticker/24hr", timeout, ledger))
            chosen = rank(eligible, volumes, top_n)
            return SymbolTable.build([(n, *eligible[n]) for n in chosen], "discovered")
    except (DiscoveryError, requests.RequestException, ValueError, OSError) as e:
        reason = str(e) or type(e).__name__
        if strict and isinstance(e, DiscoveryError):
            raise
        if strict:
            raise DiscoveryError(f"cannot reach the venue at {base}: {_short(e)}") from None
    if symbols is not None:
        known = {n: (t, st) for n, t, st in BUILTIN_SYMBOLS}
        lg.warning("symbols: discovery failed (%s); using the requested list with built-in/unknown filters",
                   reason)
        return SymbolTable.build([(w, *known.get(w, ("0", "0"))) for w in wanted], "explicit")
    lg.warning("symbols: discovery failed (%s); using the built-in list of %d USDT perpetuals",
               reason, len(BUILTIN_SYMBOLS))
    table = builtin_table()
    if top_n < len(table):
        keep = [s for s, _, _ in BUILTIN_SYMBOLS[:top_n]]
        table = SymbolTable.build([r for r in BUILTIN_SYMBOLS if r[0] in keep], "builtin")
    return table


def _short(e: Exception) -> str:
    """One line for a network error (requests nests the OS error several levels deep)."""
    import requests
    if isinstance(e, requests.ConnectionError):
        text = str(e)
        for known in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                      "Network is unreachable", "timed out", "No route to host"):
            if known in text:
                return known
        return "connection failed"
    if isinstance(e, requests.Timeout):
        return "timed out"
    return (str(e) or type(e).__name__).splitlines()[0][:200]


def parse_symbols_option(value: str) -> tuple[int | None, tuple[str, ...] | None]:
    """`--symbols 50` -> (50, None); `--symbols BTCUSDT,ETHUSDT` -> (None, ('BTCUSDT','ETHUSDT')).

    Raises ValueError with a one-line message on a bad value (the CLI turns it into exit code 2)."""
    v = value.strip()
    if not v:
        raise ValueError("--symbols needs a number or a comma-separated list")
    if v.isdigit():
        n = int(v)
        if n < 1:
            raise ValueError("--symbols N needs N >= 1")
        return n, None
    names = tuple(s.strip().upper() for s in v.split(",") if s.strip())
    if not names:
        raise ValueError("--symbols list is empty")
    return None, names
