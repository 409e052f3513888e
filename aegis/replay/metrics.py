"""Backtest results: trade and order lists, PnL per symbol, drawdown, Sharpe, turnover, equity curve (CSV + PNG).

Everything written here is a pure function of the replay's simulated state, never of the wall clock, and every
float is written with repr() (shortest round-trip text), so the same replay gives byte-identical files.

Definitions (quote currency, USDT for USD-M):
  * net PnL = realized + unrealized - fees; unrealized marks open positions at the last mid (last trade price
    when a symbol never had a quote).
  * equity curve: net PnL sampled on a fixed grid of replay time (--sample, default 1 s): each grid time holds
    the equity just before the first record at or after it; grid times without records in between hold the
    value of the next sample (nothing happened); the last point is the equity after the last record.
  * max drawdown: largest fall of the equity curve from a previous peak (absolute, and as a fraction of that
    peak's equity when it was positive).
  * Sharpe: mean / standard deviation (ddof 1) of the per-interval equity changes of the grid, times
    sqrt(intervals per 365-day year) (crypto trades around the clock); null with fewer than 2 changes or no
    variation. It is a ratio of PnL changes, not of returns on capital (a replay has no capital base).
  * turnover: traded notional (sum of price * qty of all fills).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from aegis.core.codecs import put_decimal, put_int, put_utc_ms, shortest_decimal
from aegis.core.jit import njit
from aegis.trade import risk as R
from aegis.replay import simexec as X
from aegis.core.records import ORDER_LIMIT, ORDER_MARKET, SIDE_BUY, STATUS_REJECTED, TIF_FOK, TIF_GTC, TIF_GTX, TIF_IOC

NS_PER_YEAR = 365 * 86_400 * 1_000_000_000
TRADES_FILE = "trades.csv"
ORDERS_FILE = "orders.csv"
EQUITY_FILE = "equity.csv"
EQUITY_PLOT = "equity.png"
LEARNING_PLOT = "learning_curve.png"   # strategies that learn (summary "model"): log-loss per window vs base rate
SUMMARY_FILE = "summary.json"
# written at the end of a replay, summary.json last: a directory without summary.json holds no finished result
FINAL_FILES = (EQUITY_FILE, EQUITY_PLOT, LEARNING_PLOT, SUMMARY_FILE)

TRADES_HEADER = ("time_ns,time_utc,symbol,client_id,order_id,trade_id,side,price,qty,notional,fee,realized_pnl,"
                 "maker,position_after\n")
ORDERS_HEADER = ("client_id,symbol,action,side,type,tif,reduce_only,price,qty,send_ns,arrive_ns,done_ns,status,"
                 "reason,filled_qty,avg_price,fee,trigger_exch_ns\n")

_TYPES = {ORDER_MARKET: "MARKET", ORDER_LIMIT: "LIMIT"}
_TIFS = {0: "", TIF_GTC: "GTC", TIF_IOC: "IOC", TIF_FOK: "FOK", TIF_GTX: "GTX"}
_ACTIONS = {0: "NEW", 1: "NEW", 2: "CANCEL", 3: "CANCEL_ALL"}


def utc(ns: int) -> str:
    """ISO-8601 UTC with milliseconds, from ns since the epoch (deterministic, locale-free)."""
    s, rem = divmod(int(ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{rem // 1_000_000:03d}Z"


# field kinds of csv_rows
INT, UTC, FLOAT, LABEL = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _shortest_all(x, units, dec):
    """shortest_decimal of every value; returns how many it leaves to repr() (dec -1)."""
    misses = 0
    for i in range(x.shape[0]):
        units[i], dec[i] = shortest_decimal(x[i])
        if dec[i] < 0:
            misses += 1
    return misses


@njit(cache=True, nogil=True)
def _csv_rows(n, spec, ints, text, starts, out):
    """n CSV lines into out; returns the bytes written. Field f of a line is spec[f] = (kind, column, entry): INT
    the decimal of ints[column, row], UTC its ISO-8601 time ("...T00:00:00.000Z"), FLOAT the decimal units /
    10**dec of units = ints[column, row] and dec = ints[column + 1, row], or where dec is -1 the next line of text
    entry `entry` (text[starts[entry]:], its lines ended by newlines), LABEL text entry entry + ints[column, row]
    (each label an entry of its own)."""
    at = starts.copy()
    pos = 0
    nf = spec.shape[0]
    for i in range(n):
        for f in range(nf):
            if f:
                out[pos] = 44         # ','
                pos += 1
            kind = spec[f, 0]
            c = spec[f, 1]
            if kind == INT:
                pos = put_int(out, pos, ints[c, i])
            elif kind == UTC:
                pos = put_utc_ms(out, pos, ints[c, i])
                out[pos] = 90         # 'Z'
                pos += 1
            elif kind == FLOAT and ints[c + 1, i] >= 0:
                d = ints[c + 1, i]
                pos = put_decimal(out, pos, ints[c, i], d)
                if d == 0:
                    out[pos] = 46     # ".0", as repr writes a whole number
                    out[pos + 1] = 48
                    pos += 2
            elif kind == LABEL:
                k = starts[spec[f, 2] + ints[c, i]]
                while text[k] != 10:
                    out[pos] = text[k]
                    pos += 1
                    k += 1
            else:                     # FLOAT left to repr(): the next of its texts
                c = spec[f, 2]
                k = at[c]
                while text[k] != 10:
                    out[pos] = text[k]
                    pos += 1
                    k += 1
                at[c] = k + 1
        out[pos] = 10
        pos += 1
    return pos


def csv_rows(n: int, fields: list) -> bytes:
    """The CSV lines of n rows whose fields are, in order, (INT or UTC, int64 values), (FLOAT, float64 values),
    or (LABEL, (int codes, label: code -> str)).

    Numbers and times are written by jitted code: a float as repr() writes it (its shortest round-trip text, -0.0
    as 0.0), by aegis.core.codecs.shortest_decimal, and by repr() itself where that leaves it (17 significant
    digits, exponents); a label is made once per distinct code and copied to each row by the same code. Written
    an f-string per line before, the trade and order lists took ~10 us a line, most of a month's replay; then
    repr() of every float and the joins of label lists were most of what was left (bench/MEASURED.md)."""
    if n == 0:
        return b""
    spec = np.zeros((len(fields), 3), np.int64)
    ints, texts = [], []
    room = 0   # bytes the labels take, written once a row
    for f, (kind, values) in enumerate(fields):
        if kind == LABEL:
            idx, labels = _label_table(*values)
            spec[f] = (LABEL, len(ints), len(texts))
            ints.append(idx)
            texts += [(t + "\n").encode("ascii") for t in labels]
            room += n * max(map(len, labels))
        elif kind == FLOAT:
            x = np.asarray(values, np.float64)
            x = np.where(x == 0.0, 0.0, x)
            units, dec = np.empty(n, np.int64), np.empty(n, np.int64)
            missed = _shortest_all(x, units, dec)
            spec[f] = (FLOAT, len(ints), len(texts))
            ints += [units, dec]
            texts.append(("\n".join(map(repr, x[dec < 0].tolist())) + "\n").encode("ascii") if missed else b"\n")
        else:
            spec[f] = (kind, len(ints), 0)
            ints.append(np.asarray(values, np.int64))
    starts = np.cumsum([0] + [len(t) for t in texts[:-1]], dtype=np.int64)
    text = np.frombuffer(b"".join(texts) or b"\n", np.uint8)
    ints_2d = np.stack(ints) if ints else np.zeros((0, n), np.int64)
    # <= 20 digits and a sign, or 24 bytes of time, per int column
    out = np.empty(len(text) + room + n * (len(fields) + 25 * len(ints)), np.uint8)
    return out[:_csv_rows(n, spec, ints_2d, text, starts, out)].tobytes()


def _label_table(codes, label) -> tuple[np.ndarray, list[str]]:
    """(each row's index into the labels, label(code) of each distinct code, made once)."""
    codes = np.asarray(codes, np.int64)
    lo, hi = int(codes.min()), int(codes.max())
    if hi - lo < 1 << 16:   # a small range of codes (all of them here): counted, not sorted
        uniq = np.flatnonzero(np.bincount(codes - lo)) + lo
        at = np.zeros(hi - lo + 1, np.int64)
        at[uniq - lo] = np.arange(len(uniq))
        idx = at[codes - lo]
    else:
        uniq, idx = np.unique(codes, return_inverse=True)
        idx = idx.reshape(-1).astype(np.int64)
    return idx, [label(int(u)) for u in uniq]


def equity_lines(ts: np.ndarray, eq: np.ndarray) -> bytes:
    """The equity.csv lines "time_ns,time_utc,equity" of samples (ts, eq)."""
    return csv_rows(len(ts), [(INT, ts), (UTC, ts), (FLOAT, eq)])


@njit(cache=True, nogil=True)
def _positions_after(sym, side, qty, pos, out):
    """Each fill's symbol position after it, into out; pos (per symbol) carried from fill to fill. A position
    within FLAT_EPS of a fill's quantity of zero is zero (the float residue of +0.1 - 0.1)."""
    for i in range(sym.shape[0]):
        s = sym[i]
        p = pos[s] + (qty[i] if side[i] == SIDE_BUY else -qty[i])
        if abs(p) <= X.FLAT_EPS * qty[i]:
            p = 0.0
        pos[s] = p
        out[i] = p


def reason_text(code: int) -> str:
    code = int(code)
    if code >= 100:
        return X.WHY_NAMES.get(code, str(code))
    if code == 0:
        return ""
    return R.REASONS[code] if code < len(R.REASONS) else str(code)


# ------------------------------------------------------------------------------------------- pure statistics
def dense_equity(ts: np.ndarray, val: np.ndarray, sample_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """The equity curve on its full grid (see module doc): grid points back-filled, last point appended."""
    ts = np.asarray(ts, np.int64)
    val = np.asarray(val, np.float64)
    if len(ts) == 0:
        return ts, val
    grid_pts = ts[:-1]          # the last point is the end-of-data equity, not a grid time
    if len(grid_pts) == 0:
        return ts, val
    grid = np.arange(grid_pts[0], grid_pts[-1] + 1, sample_ns, dtype=np.int64)
    idx = np.searchsorted(grid_pts, grid, side="left")
    out_ts = np.concatenate((grid, ts[-1:]))
    out_val = np.concatenate((val[:-1][idx], val[-1:]))
    return out_ts, out_val


def max_drawdown(values: np.ndarray) -> tuple[float, float | None]:
    """(largest fall from a running peak, that fall / the peak when the peak was > 0 else None)."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return 0.0, None
    peak = np.maximum.accumulate(v)
    dd = peak - v
    i = int(np.argmax(dd))
    worst = float(dd[i])
    rel = worst / float(peak[i]) if peak[i] > 0 and worst > 0 else None
    return worst, rel


def sharpe(values: np.ndarray, sample_ns: int) -> float | None:
    d = np.diff(np.asarray(values, np.float64))
    if len(d) < 2:
        return None
    sd = float(np.std(d, ddof=1))
    if not sd > 0:
        return None
    return float(np.mean(d)) / sd * math.sqrt(NS_PER_YEAR / sample_ns)


def _r(x: float) -> float:
    """JSON-safe float: -0.0 -> 0.0 (same bytes whatever the sign of a zero sum)."""
    x = float(x)
    return 0.0 if x == 0.0 else x


# ------------------------------------------------------------------------------------------- collector
class Collector:
    """Receives the simulated exchange's output as the replay drains it; writes trades/orders CSV as it goes."""

    def __init__(self, names, sample_ns: int, out_dir: str | Path | None = None):
        self.names = tuple(names)
        self.sample_ns = int(sample_ns)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.eq_ts: list[np.ndarray] = []
        self.eq_val: list[np.ndarray] = []
        self.n_fills = 0
        self.n_maker = 0
        self.status_counts: dict[str, int] = {}
        self.order_counts: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.pos = np.zeros(len(self.names))
        self.first_fill_ns = None
        self._trades = self._orders = None
        if self.out_dir is not None:
            # a previous replay's into this directory: trades.csv and orders.csv are rewritten from here on, and the
            # rest must not sit next to them as if they belonged together until this replay's replace them
            self._remove(FINAL_FILES)
            self._trades = open(self.out_dir / TRADES_FILE, "wb")    # csv_rows writes bytes, as equity.csv's
            self._trades.write(TRADES_HEADER.encode("ascii"))
            self._orders = open(self.out_dir / ORDERS_FILE, "wb")
            self._orders.write(ORDERS_HEADER.encode("ascii"))

    def fills(self, f: np.ndarray) -> None:
        traded = f["qty"] > 0.0
        self.n_fills += int(traded.sum())
        self.n_maker += int((f["maker"][traded] != 0).sum())
        for code, cnt in zip(*np.unique(f["status"], return_counts=True)):
            st = X.STATUS_NAMES.get(int(code), str(code))
            self.status_counts[st] = self.status_counts.get(st, 0) + int(cnt)
        if self._trades is None or not traded.any():
            return
        t = f[traded]
        ts, sym, px, qty = t["ts"], t["symbol"], t["price"], t["qty"]
        pos_after = np.empty(len(t))
        _positions_after(sym, t["side"], qty, self.pos, pos_after)
        self._trades.write(csv_rows(len(t), [
            (INT, ts), (UTC, ts), (LABEL, (sym, self._name)), (INT, t["client_id"]), (INT, t["order_id"]),
            (INT, t["trade_id"]), (LABEL, (t["side"], lambda c: "BUY" if c == SIDE_BUY else "SELL")),
            (FLOAT, px), (FLOAT, qty), (FLOAT, px * qty),
            (FLOAT, t["fee"]), (FLOAT, t["realized_pnl"]), (INT, t["maker"]),
            (FLOAT, pos_after)]))

    def _name(self, s: int) -> str:
        return self.names[s] if 0 <= s < len(self.names) else str(s)

    def orders(self, li: np.ndarray, lf: np.ndarray) -> None:
        action = li[:, X.I_ACTION]
        is_new = (action == 0) | (action == 1)
        status = li[:, X.I_STATUS]
        reason = li[:, X.I_REASON]
        keys = np.where(is_new, status, -1000 * action - np.where(reason == 0, 1, 2))
        for k, cnt in zip(*np.unique(keys, return_counts=True)):
            k = int(k)
            if k > -1000:
                name = X.STATUS_NAMES.get(k, str(k))
            else:
                name = f"{_ACTIONS.get(-k // 1000, '?')} {'DONE' if -k % 1000 == 1 else 'FAILED'}"
            self.order_counts[name] = self.order_counts.get(name, 0) + int(cnt)
        rej = reason[is_new & (status == STATUS_REJECTED)]
        for code, cnt in zip(*np.unique(rej, return_counts=True)):
            why = reason_text(code)
            self.refusals[why] = self.refusals.get(why, 0) + int(cnt)
        if self._orders is None or not len(li):
            return
        filled, notional = lf[:, X.F_FILLED], lf[:, X.F_NOTIONAL]
        avg = np.where(filled > 0, notional / np.where(filled > 0, filled, 1.0), 0.0)
        self._orders.write(csv_rows(len(li), [
            (INT, li[:, X.I_CID]), (LABEL, (li[:, X.I_SYM], self._name)),
            (LABEL, (action, lambda c: _ACTIONS.get(c, str(c)))),
            (LABEL, (li[:, X.I_SIDE], lambda c: "BUY" if c == SIDE_BUY else ("SELL" if c else ""))),
            (LABEL, (li[:, X.I_TYPE], lambda c: _TYPES.get(c, ""))),
            (LABEL, (li[:, X.I_TIF], lambda c: _TIFS.get(c, ""))), (INT, li[:, X.I_RO]),
            (FLOAT, lf[:, X.F_PRICE]), (FLOAT, lf[:, X.F_QTY]), (INT, li[:, X.I_SEND_TS]),
            (INT, li[:, X.I_ARRIVE_TS]), (INT, li[:, X.I_DONE_TS]),
            # the counts' keys: a NEW order's status is the exchange's, a cancel's whether it was done
            (LABEL, (keys, lambda k: X.STATUS_NAMES.get(k, str(k)) if k > -1000
                           else ("DONE" if -k % 1000 == 1 else "FAILED"))),
            (LABEL, (reason, reason_text)), (FLOAT, filled), (FLOAT, avg),
            (FLOAT, lf[:, X.F_FEE]), (INT, li[:, X.I_EXCH_TS])]))

    def equity(self, ts: np.ndarray, val: np.ndarray) -> None:
        self.eq_ts.append(ts)
        self.eq_val.append(val)

    def close(self) -> None:
        for f in (self._trades, self._orders):
            if f is not None:
                f.close()
        self._trades = self._orders = None

    def discard(self) -> None:
        """The replay failed (a damaged input found at the end of a partition, Ctrl-C, ...): no file it wrote may
        look like a result, so every output file goes."""
        self.close()
        self._remove((TRADES_FILE, ORDERS_FILE, *FINAL_FILES))

    def _remove(self, names) -> None:
        if self.out_dir is None:
            return
        for name in names:
            (self.out_dir / name).unlink(missing_ok=True)

    def equity_curve(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.eq_ts:
            return np.zeros(0, np.int64), np.zeros(0)
        return dense_equity(np.concatenate(self.eq_ts), np.concatenate(self.eq_val), self.sample_ns)

    # -------------------------------------------------------------------------------------------- summary
    def summary(self, sim, riskbook, counts: dict, inputs: list, cfg) -> dict:
        acct, book = sim.acct, sim.book
        per = {}
        tot = dict(realized=0.0, unrealized=0.0, fees=0.0, notional=0.0)
        for s, name in enumerate(self.names):
            a = acct[s]
            m = X.mark_price(book, s)
            unreal = a[X.A_POS] * (m - a[X.A_AVG]) if a[X.A_POS] != 0.0 and m > 0 else 0.0
            if a[X.A_FILLS] == 0 and a[X.A_POS] == 0.0:
                continue
            per[name] = {"position": _r(a[X.A_POS]), "avg_entry_price": _r(a[X.A_AVG]), "last_mark": _r(m),
                         "realized": _r(a[X.A_REALIZED]), "unrealized": _r(unreal), "fees": _r(a[X.A_FEES]),
                         "net": _r(a[X.A_REALIZED] + unreal - a[X.A_FEES]), "fills": int(a[X.A_FILLS]),
                         "maker_fills": int(a[X.A_MAKER_FILLS]), "volume": _r(a[X.A_VOLUME]),
                         "turnover": _r(a[X.A_NOTIONAL])}
            tot["realized"] += a[X.A_REALIZED]
            tot["unrealized"] += unreal
            tot["fees"] += a[X.A_FEES]
            tot["notional"] += a[X.A_NOTIONAL]
        ts, eq = self.equity_curve()
        dd, dd_rel = max_drawdown(eq)
        sh = sharpe(eq, self.sample_ns)
        net = tot["realized"] + tot["unrealized"] - tot["fees"]
        s_cfg = cfg.strategy
        out = {
            "strategy": {"name": s_cfg.name,
                         "params": {p.name: p.show(v) for p, v in zip(s_cfg.spec.params, s_cfg.params)}},
            "execution": {"slippage_bps": cfg.sim.slippage_bps, "maker_fee": cfg.sim.maker_fee,
                          "taker_fee": cfg.sim.taker_fee,
                          "latency": ("histogram" if cfg.sim.latency_hist is not None
                                      else f"{cfg.sim.latency_ns} ns"),
                          "latency_seed": cfg.sim.seed, "equity_sample_ns": self.sample_ns},
            "period": {"first_ns": int(ts[0]) if len(ts) else None, "last_ns": int(ts[-1]) if len(ts) else None,
                       "first_utc": utc(ts[0]) if len(ts) else None, "last_utc": utc(ts[-1]) if len(ts) else None},
            "counts": dict(counts, fills=self.n_fills, maker_fills=self.n_maker,
                           taker_fills=self.n_fills - self.n_maker),
            "orders": dict(sorted(self.order_counts.items())),
            "refusals": dict(sorted(self.refusals.items())),
            "risk_state": riskbook.state,
            "pnl": {"net": _r(net), "realized": _r(tot["realized"]), "unrealized": _r(tot["unrealized"]),
                    "fees": _r(tot["fees"])},
            "max_drawdown": _r(dd), "max_drawdown_of_peak": dd_rel, "sharpe": sh,
            "turnover": _r(tot["notional"]),
            "per_symbol": per,
            "inputs": inputs,
        }
        return out

    def write_summary(self, summary: dict) -> None:
        if self.out_dir is None:
            return
        ts, eq = self.equity_curve()
        with open(self.out_dir / EQUITY_FILE, "wb") as f:
            f.write(b"time_ns,time_utc,equity\n")
            for i in range(0, len(ts), 1 << 16):   # in blocks: a month of 1 s samples is 2.6 M lines
                f.write(equity_lines(ts[i:i + (1 << 16)], eq[i:i + (1 << 16)]))
        (self.out_dir / EQUITY_PLOT).write_bytes(equity_png(ts, eq, summary))
        model = summary.get("model")
        if model is not None:
            (self.out_dir / LEARNING_PLOT).write_bytes(learning_png(model))
        # last (FINAL_FILES): a replay killed while writing the files above leaves no summary.json
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n",
                                                  encoding="ascii")


def format_summary(s: dict) -> str:
    """Human summary for stdout."""
    def f(x):
        return "-" if x is None else f"{x:,.4f}"
    c = s["counts"]
    lines = [
        f"strategy   {s['strategy']['name']} " + " ".join(f"{k}={v}" for k, v in s["strategy"]["params"].items()),
        f"period     {s['period']['first_utc']} .. {s['period']['last_utc']}",
        f"records    {c['records']:,}   signals {c['signals']:,}   orders accepted {c['orders_accepted']:,}   "
        f"refused by risk {c['orders_refused_by_risk']:,}",
        f"fills      {c['fills']:,} (maker {c['maker_fills']:,}, taker {c['taker_fills']:,})   "
        f"turnover {f(s['turnover'])}",
        f"PnL        net {f(s['pnl']['net'])}   realized {f(s['pnl']['realized'])}   "
        f"unrealized {f(s['pnl']['unrealized'])}   fees {f(s['pnl']['fees'])}",
        f"risk       max drawdown {f(s['max_drawdown'])}   Sharpe {f(s['sharpe'])}   state {s['risk_state']}",
    ]
    m = s.get("model")
    if m is not None:
        if m["predictions"]:
            lines.append(f"model      {m['predictions']:,} predictions   accuracy {m['accuracy'] * 100:.2f}%   "
                         f"log-loss {m['log_loss']:.5f} (base rate {m['baseline_log_loss']:.5f})   "
                         f"{m['feature_set']}")
        else:
            lines.append("model      no predictions (no mid moved)")
    if s["refusals"]:
        lines.append("refusals   " + ", ".join(f"{k} {v}" for k, v in s["refusals"].items()))
    for name, p in s["per_symbol"].items():
        lines.append(f"  {name:<14} net {f(p['net']):>14}  pos {p['position']:g}  fills {p['fills']}  "
                     f"fees {f(p['fees'])}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- plot
def equity_png(ts: np.ndarray, eq: np.ndarray, summary: dict | None = None, width: int = 960,
               height: int = 540) -> bytes:
    """Equity curve as PNG bytes, drawn with aegis.app.report's rasteriser and PNG writer (no matplotlib)."""
    title = "EQUITY (NET PNL)"
    if summary is not None:
        title += f"   NET {summary['pnl']['net']:.2f}   MAX DD {summary['max_drawdown']:.2f}"
    return curve_png(ts, [(eq, (31, 119, 180))], title, width, height, zero=True)


def learning_png(model: dict, width: int = 960, height: int = 540) -> bytes:
    """Learning curve: the model's prequential log-loss per window (blue) against the base rate's (grey)."""
    w = model.get("windows") or []
    ts = np.array([(x["start_ns"] + x["end_ns"]) // 2 for x in w], np.int64)
    ll = np.array([x["log_loss"] for x in w], np.float64)
    base = np.array([x["baseline_log_loss"] for x in w], np.float64)
    title = "LOG-LOSS PER WINDOW: MODEL (BLUE) VS BASE RATE (GREY)"
    if model.get("predictions"):
        title += f"   ACC {model['accuracy'] * 100:.1f}%"
    return curve_png(ts, [(base, (150, 150, 150)), (ll, (31, 119, 180))], title, width, height, zero=False,
                     fmt="{:.4f}")


def curve_png(ts: np.ndarray, series: list, title: str, width: int = 960, height: int = 540, zero: bool = True,
              fmt: str = "{:.2f}") -> bytes:
    """Time series (one or more (values, rgb) sharing ts) as PNG bytes, drawn with aegis.app.report's rasteriser
    and PNG writer (no matplotlib). zero: the value axis always includes 0 and draws it."""
    from aegis.app import report
    draw_line, draw_text = report.draw_polyline, report.draw_text
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 110, 20, 40, 50
    pw, ph = width - left - right, height - top - bottom
    ink, grid = (0, 0, 0), (225, 225, 225)
    draw_text(img, left, 12, title, ink)
    img[top:top + ph, left] = ink
    img[top + ph, left:left + pw] = ink
    if len(ts) == 0:
        draw_text(img, left + 20, top + ph // 2, "NO DATA", ink)
        return report.png_bytes(img)
    lo = min(float(np.min(v)) for v, _ in series)
    hi = max(float(np.max(v)) for v, _ in series)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        hi, lo = hi + 1.0, lo - 1.0
    t0, t1 = int(ts[0]), int(ts[-1])
    span = max(t1 - t0, 1)

    def y_of(v):
        return top + (hi - np.asarray(v, np.float64)) / (hi - lo) * (ph - 1)

    for k in range(5):   # horizontal grid lines with their values
        v = lo + (hi - lo) * k / 4
        y = int(round(float(y_of(v))))
        img[y, left + 1:left + pw] = grid
        draw_text(img, 4, max(0, y - 7), fmt.format(v)[:15], ink)
    if zero:
        y0 = int(round(float(y_of(0.0))))
        img[y0, left + 1:left + pw] = (150, 150, 150)
    # at most two points per pixel column: min and max of the samples that fall in it, in time order
    x = left + 1 + (ts - t0) / span * (pw - 2)
    col = np.floor(x).astype(np.int64)
    for eq, curve in series:
        if len(eq) > 2 * pw:
            xs, ys = [], []
            starts = np.flatnonzero(np.diff(col, prepend=col[0] - 1))
            ends = np.append(starts[1:], len(col))
            for a, b in zip(starts.tolist(), ends.tolist()):
                seg = eq[a:b]
                i_lo, i_hi = int(np.argmin(seg)), int(np.argmax(seg))
                for i in sorted((i_lo, i_hi)):
                    xs.append(float(col[a]))
                    ys.append(float(seg[i]))
            xs, ys = np.array(xs), np.array(ys)
        else:
            xs, ys = x, eq
        draw_line(img, xs, y_of(ys), curve, 2)
    draw_text(img, left, top + ph + 10, utc(t0)[:16].replace("T", " "), ink)
    end = utc(t1)[:16].replace("T", " ")
    draw_text(img, width - right - len(end) * 12, top + ph + 10, end, ink)
    return report.png_bytes(img)
