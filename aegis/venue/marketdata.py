"""REST market data built from the venue's own generated trades and quotes: klines (trade, continuous, mark and index
price), trades, aggTrades, premiumIndex, fundingInfo and ticker/price.

Shapes, weights and errors follow Binance's USD-M "Market Data" REST pages (Kline/Candlestick Data, Recent Trades
List, Old Trades Lookup, Compressed/Aggregate Trades List, Mark Price, Get Funding Rate Info, Symbol Price Ticker and
Symbol Price Ticker V2). Klines and trades come from the same counters as the streams, so REST and streams agree.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Callable, Mapping

from . import _mdkernels as K
from .market import Market

MAX_KLINES = 1500
MAX_TRADES = 1000
AGG_WINDOW_MS = 3_600_000    # aggTrades: startTime and endTime at most one hour apart


class ParamError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def mandatory(name: str) -> ParamError:
    return ParamError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def int_param(p: Mapping[str, str], name: str) -> int | None:
    raw = p.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise ParamError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def limit_param(p: Mapping[str, str], default: int, maximum: int) -> int:
    n = int_param(p, "limit")
    if n is None:
        return default
    if n < 1 or n > maximum:
        raise ParamError(-1130, "Data sent for parameter 'limit' is not valid.")
    return n


def time_window(p: Mapping[str, str]) -> tuple[int | None, int | None]:
    start, end = int_param(p, "startTime"), int_param(p, "endTime")
    if start is not None and end is not None and start > end:
        raise ParamError(-1023, "Start time is greater than end time.")
    return start, end


def kline_weight(p: Mapping[str, str]) -> int:
    """Kline weights by limit: [1,100) 1, [100,500) 2, [500,1000] 5, > 1000 10."""
    try:
        n = int(p.get("limit") or 500)
    except ValueError:
        return 1
    return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10


def trade_rows(market: Market, symbol: str) -> list[tuple[int, ...]]:
    return market.recent_trades(symbol)


def trade_json(market: Market, symbol: str, r: tuple[int, ...]) -> dict:
    """A /trades or /historicalTrades element; the id is the one the @trade stream shows for the same trade."""
    px = market.price_str(symbol, r[K.TR_PX])
    qty = market.qty_str(symbol, r[K.TR_QTY])
    return {"id": r[K.TR_LAST], "price": px, "qty": qty, "quoteQty": format(Decimal(px) * Decimal(qty), "f"),
            "time": r[K.TR_T], "isBuyerMaker": bool(r[K.TR_M])}


def historical_trades(market: Market, symbol: str, p: Mapping[str, str]) -> list[dict]:
    limit = limit_param(p, 500, MAX_TRADES)
    from_id = int_param(p, "fromId")
    rows = trade_rows(market, symbol)
    if from_id is not None:
        rows = [r for r in rows if r[K.TR_LAST] >= from_id][:limit]
    else:
        rows = rows[-limit:]
    return [trade_json(market, symbol, r) for r in rows]


def market_data_endpoints(market: Market, endpoint: Callable, symbol_of: Callable) -> list:
    """MarketEndpoint objects (built by `endpoint(method, path, weight, handler)`) for the routes of this module.
    Handlers return (http status, body); symbol_of(p) -> (symbol, error tuple or None) is the shared validation."""

    def guarded(fn):
        def run(p):
            try:
                return 200, fn(p)
            except ParamError as e:
                return e.status, {"code": e.code, "msg": e.msg}
        return run

    def need_symbol(p) -> str:
        sym, err = symbol_of(p)
        if err:
            raise ParamError(err[1]["code"], err[1]["msg"], err[0])
        return sym

    def interval_of(p) -> str:
        iv = p.get("interval")
        if not iv:
            raise mandatory("interval")
        if iv not in K.KLINE_INTERVALS:
            raise ParamError(-1120, "Invalid interval.")
        return iv

    def klines(p):
        sym = need_symbol(p)
        iv = interval_of(p)
        start, end = time_window(p)
        return market.klines(sym, iv, start, end, limit_param(p, 500, MAX_KLINES))

    def continuous_klines(p):
        pair = p.get("pair")
        if not pair:
            raise mandatory("pair")
        ct = p.get("contractType")
        if not ct:
            raise mandatory("contractType")
        iv = interval_of(p)
        matches = [s for s in market.symbols if market.specs[s].pair == pair]
        if not matches:
            raise ParamError(-1121, "Invalid symbol.")
        sym = next((s for s in matches if market.specs[s].contract_type == ct), None)
        if sym is None:
            raise ParamError(-1130, "Data sent for parameter 'contractType' is not valid.")
        start, end = time_window(p)
        return market.klines(sym, iv, start, end, limit_param(p, 500, MAX_KLINES))

    def price_klines(kind: int):
        def run(p):
            # indexPriceKlines takes the pair; markPriceKlines the symbol
            if kind == 1:
                pair = p.get("pair")
                if not pair:
                    raise mandatory("pair")
                sym = next((s for s in market.symbols if market.specs[s].pair == pair
                            and market.specs[s].contract_type == "PERPETUAL"), None)
                if sym is None:
                    raise ParamError(-1121, "Invalid symbol.")
            else:
                sym = need_symbol(p)
            iv = interval_of(p)
            start, end = time_window(p)
            return market.price_klines(kind, sym, iv, start, end, limit_param(p, 500, MAX_KLINES))
        return run

    def trades(p):
        sym = need_symbol(p)
        limit = limit_param(p, 500, MAX_TRADES)
        return [trade_json(market, sym, r) for r in trade_rows(market, sym)[-limit:]]

    def agg_trades(p):
        sym = need_symbol(p)
        limit = limit_param(p, 500, MAX_TRADES)
        from_id = int_param(p, "fromId")
        start, end = time_window(p)
        if start is not None and end is not None and end - start > AGG_WINDOW_MS:
            raise ParamError(-1127, "More than 1 hours between startTime and endTime.")
        rows = trade_rows(market, sym)
        if from_id is not None:
            rows = [r for r in rows if r[K.TR_AGG] >= from_id][:limit]
        else:
            if start is not None:
                rows = [r for r in rows if r[K.TR_T] >= start]
            if end is not None:
                rows = [r for r in rows if r[K.TR_T] <= end]
            rows = rows[:limit] if start is not None else rows[-limit:]
        return [{"a": r[K.TR_AGG], "p": market.price_str(sym, r[K.TR_PX]), "q": market.qty_str(sym, r[K.TR_QTY]),
                 "f": r[K.TR_FIRST], "l": r[K.TR_LAST], "T": r[K.TR_T], "m": bool(r[K.TR_M])} for r in rows]

    def listed():
        return [s for s in market.symbols if market.specs[s].status == "TRADING"]

    def premium_index(p):
        if p.get("symbol") in (None, ""):
            return [market.premium_index(s) for s in listed()]
        return market.premium_index(need_symbol(p))

    def funding_info(p):
        # `?symbol=` is ignored, as on Binance
        hours = max(1, round(market.funding_interval_ms / 3_600_000))
        cap = f"{0.02:.8f}"
        return [{"symbol": s, "adjustedFundingRateCap": cap, "adjustedFundingRateFloor": "-" + cap,
                 "fundingIntervalHours": hours, "disclaimer": False} for s in listed()
                if market.specs[s].contract_type == "PERPETUAL"]

    def ticker_price(p):
        if p.get("symbol") in (None, ""):
            return [market.ticker_price(s) for s in listed()]
        return market.ticker_price(need_symbol(p))

    one_or = lambda many: (lambda p: 1 if p.get("symbol") else many)   # noqa: E731
    return [
        endpoint("GET", "/fapi/v1/klines", kline_weight, guarded(klines)),
        endpoint("GET", "/fapi/v1/continuousKlines", kline_weight, guarded(continuous_klines)),
        endpoint("GET", "/fapi/v1/markPriceKlines", kline_weight, guarded(price_klines(0))),
        endpoint("GET", "/fapi/v1/indexPriceKlines", kline_weight, guarded(price_klines(1))),
        endpoint("GET", "/fapi/v1/trades", lambda p: 5, guarded(trades)),
        endpoint("GET", "/fapi/v1/aggTrades", lambda p: 20, guarded(agg_trades)),
        endpoint("GET", "/fapi/v1/premiumIndex", one_or(10), guarded(premium_index)),
        endpoint("GET", "/fapi/v1/fundingInfo", lambda p: 1, guarded(funding_info)),
        endpoint("GET", "/fapi/v1/ticker/price", one_or(2), guarded(ticker_price)),
        endpoint("GET", "/fapi/v2/ticker/price", one_or(2), guarded(ticker_price)),
    ]
