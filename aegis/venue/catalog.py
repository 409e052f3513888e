"""Instrument catalog of the embedded venue: the symbols it lists and their exchange filters.

Values are modelled on live Binance USD-M exchangeInfo rows (Binance docs: "Exchange Information"): tick/step sizes, lot
limits and minimum notionals are strings exactly as Binance sends them, so the venue's exchangeInfo and its filter
validation read the same source and a client that quantises with them produces orders the venue accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PERPETUAL_DELIVERY_MS = 4133404800000   # what Binance puts in deliveryDate for perpetuals
_ONBOARD_MS = 1567900800000             # 2019-09-08, BTCUSDT's onboarding day; fine for every listed symbol
ORDER_IDS_ABOVE_2_53 = 8389765612825190229   # a real-world order id magnitude (docs/binance-notes.md, Order ids)


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    pair: str
    status: str                     # TRADING, SETTLING, PENDING_TRADING, ...
    contract_type: str              # PERPETUAL, CURRENT_QUARTER, TRADIFI_PERPETUAL, ...
    base_asset: str
    quote_asset: str
    margin_asset: str
    price_precision: int
    quantity_precision: int
    tick_size: str
    step_size: str
    min_qty: str
    max_qty: str
    market_min_qty: str
    market_max_qty: str
    min_notional: str
    multiplier_up: str = "1.0500"
    multiplier_down: str = "0.9500"
    multiplier_decimal: str = "4"
    base_price: float = 1.0          # where the market generator starts
    daily_volume_quote: float = 1e8  # relative activity: the generator spreads its message rate by it
    min_price: str = "0"
    max_price: str = "0"
    max_num_orders: int = 200
    delivery_date: int = PERPETUAL_DELIVERY_MS
    onboard_date: int = _ONBOARD_MS
    first_order_id: int = 1         # some symbols hand out ids above 2**53 to catch float-parsing clients
    underlying_type: str = "COIN"
    underlying_sub_type: tuple[str, ...] = ()
    maint_margin_percent: str = "2.5000"
    required_margin_percent: str = "5.0000"
    trigger_protect: str = "0.0500"
    liquidation_fee: str = "0.012500"
    market_take_bound: str = "0.05"

    @property
    def is_trading(self) -> bool:
        return self.status == "TRADING"

    @property
    def tick(self) -> Decimal:
        return Decimal(self.tick_size)

    @property
    def step(self) -> Decimal:
        return Decimal(self.step_size)


def _usdt_perp(symbol: str, base: str, tick: str, step: str, min_qty: str, max_qty: str, mkt_max: str,
               notional: str, price: float, pp: int, qp: int, vol: float, **kw) -> SymbolSpec:
    quote = kw.pop("quote", "USDT")
    return SymbolSpec(symbol=symbol, pair=symbol.split("_")[0], status=kw.pop("status", "TRADING"),
                      contract_type=kw.pop("contract_type", "PERPETUAL"), base_asset=base, quote_asset=quote,
                      margin_asset=quote, price_precision=pp, quantity_precision=qp, tick_size=tick,
                      step_size=step, min_qty=min_qty, max_qty=max_qty, market_min_qty=min_qty,
                      market_max_qty=mkt_max, min_notional=notional, base_price=price,
                      daily_volume_quote=vol, min_price=kw.pop("min_price", tick), max_price=kw.pop("max_price",
                      _max_price(price)), **kw)


def _max_price(price: float) -> str:
    # Binance's maxPrice sits orders of magnitude above the trading range; keep it an integer string
    return str(int(max(price * 50, 10)))


_DEFAULT: tuple[SymbolSpec, ...] = (
    _usdt_perp("BTCUSDT", "BTC", "0.10", "0.001", "0.001", "1000", "120", "50", 90000.0, 2, 3, 1.3e10,
               min_price="556.80", max_price="4529764", underlying_sub_type=("PoW", "Crypto")),
    _usdt_perp("ETHUSDT", "ETH", "0.01", "0.001", "0.001", "10000", "2000", "20", 3000.0, 2, 3, 8e9,
               min_price="39.86", max_price="306177", underlying_sub_type=("Layer-1",)),
    _usdt_perp("BNBUSDT", "BNB", "0.010", "0.01", "0.01", "100000", "2000", "5", 900.0, 3, 2, 6e8),
    _usdt_perp("SOLUSDT", "SOL", "0.0100", "0.01", "0.01", "1000000", "5000", "5", 140.0, 4, 2, 2e9),
    _usdt_perp("XRPUSDT", "XRP", "0.0001", "0.1", "0.1", "10000000", "1000000", "5", 2.2, 4, 1, 1.5e9,
               first_order_id=ORDER_IDS_ABOVE_2_53),
    _usdt_perp("DOGEUSDT", "DOGE", "0.00001", "1", "1", "50000000", "30000000", "5", 0.16, 6, 0, 9e8,
               first_order_id=ORDER_IDS_ABOVE_2_53 + 1_000_000_000),
    _usdt_perp("ADAUSDT", "ADA", "0.00010", "1", "1", "10000000", "2000000", "5", 0.45, 5, 0, 4e8),
    _usdt_perp("LTCUSDT", "LTC", "0.01", "0.001", "0.001", "100000", "5000", "20", 85.0, 2, 3, 2e8),
    _usdt_perp("LINKUSDT", "LINK", "0.001", "0.01", "0.01", "200000", "20000", "20", 14.0, 3, 2, 3e8),
    _usdt_perp("AVAXUSDT", "AVAX", "0.0010", "1", "1", "1000000", "50000", "5", 15.0, 4, 0, 2.5e8),
    _usdt_perp("DOTUSDT", "DOT", "0.001", "0.1", "0.1", "1000000", "100000", "5", 2.5, 3, 1, 1e8),
    _usdt_perp("BCHUSDT", "BCH", "0.01", "0.001", "0.001", "10000", "850", "20", 450.0, 2, 3, 2e8),
    _usdt_perp("TRXUSDT", "TRX", "0.00001", "1", "1", "10000000", "5000000", "5", 0.28, 5, 0, 1e8),
    _usdt_perp("1000PEPEUSDT", "1000PEPE", "0.0000001", "1", "1", "800000000", "80000000", "5", 0.0058, 7, 0,
               6e8, first_order_id=ORDER_IDS_ABOVE_2_53 + 7_000_000_000, underlying_sub_type=("Meme",)),
    _usdt_perp("SUIUSDT", "SUI", "0.000100", "0.1", "0.1", "5000000", "500000", "5", 1.6, 6, 1, 4e8),
    _usdt_perp("ARBUSDT", "ARB", "0.000100", "0.1", "0.1", "5000000", "1000000", "5", 0.22, 6, 1, 1e8),
    _usdt_perp("OPUSDT", "OP", "0.0001000", "0.1", "0.1", "5000000", "500000", "5", 0.35, 7, 1, 8e7),
    _usdt_perp("NEARUSDT", "NEAR", "0.001", "1", "1", "1000000", "200000", "5", 2.0, 4, 0, 9e7),
    _usdt_perp("APTUSDT", "APT", "0.00010", "0.1", "0.1", "1000000", "100000", "5", 1.8, 5, 1, 7e7),
    _usdt_perp("ATOMUSDT", "ATOM", "0.001", "0.01", "0.01", "1000000", "50000", "5", 2.5, 3, 2, 5e7),
    _usdt_perp("FILUSDT", "FIL", "0.001", "0.1", "0.1", "1000000", "100000", "5", 1.6, 3, 1, 5e7),
    _usdt_perp("ETCUSDT", "ETC", "0.001", "0.01", "0.01", "500000", "10000", "20", 13.0, 3, 2, 6e7),
    _usdt_perp("UNIUSDT", "UNI", "0.0010", "1", "1", "1000000", "50000", "5", 6.0, 4, 0, 6e7),
    _usdt_perp("XAUUSDT", "XAU", "0.01", "0.001", "0.001", "1000", "200", "5", 4000.0, 2, 3, 3e8,
               contract_type="TRADIFI_PERPETUAL", underlying_type="COMMODITY"),
    # Chinese-character symbols are listed since 2025-10 and must be percent-encoded in requests (docs/binance-notes.md,
    # Request signing)
    _usdt_perp("币安人生USDT", "币安人生", "0.00001", "1", "1", "50000000", "5000000", "5", 0.12, 5, 0, 1e8,
               underlying_sub_type=("Meme",)),
    # not tradable: orders are refused, the row still appears in exchangeInfo
    _usdt_perp("FTTUSDT", "FTT", "0.0001", "0.1", "0.1", "1000000", "100000", "5", 0.9, 4, 1, 1e6,
               status="SETTLING"),
    _usdt_perp("NEWCOINUSDT", "NEWCOIN", "0.00001", "1", "1", "10000000", "1000000", "5", 0.05, 5, 0, 1e6,
               status="PENDING_TRADING"),
    # USDC-margined perpetuals
    _usdt_perp("BTCUSDC", "BTC", "0.1", "0.001", "0.001", "500", "50", "5", 90000.0, 1, 3, 1e9, quote="USDC"),
    _usdt_perp("ETHUSDC", "ETH", "0.01", "0.001", "0.001", "5000", "1000", "5", 3000.0, 2, 3, 5e8, quote="USDC"),
    # dated delivery contracts
    _usdt_perp("BTCUSDT_261225", "BTC", "0.1", "0.001", "0.001", "500", "50", "5", 91500.0, 1, 3, 2e8,
               contract_type="CURRENT_QUARTER", delivery_date=1798185600000),
    _usdt_perp("BTCUSDT_270326", "BTC", "0.1", "0.001", "0.001", "500", "50", "5", 93000.0, 1, 3, 5e7,
               contract_type="NEXT_QUARTER", delivery_date=1806048000000),
)


def default_catalog() -> tuple[SymbolSpec, ...]:
    return _DEFAULT


def catalog_with(n: int) -> tuple[SymbolSpec, ...]:
    """n TRADING USDT perpetuals (the real-looking ones first, then synthetic ones) for scale tests."""
    if n < 1:
        raise ValueError("catalog_with needs n >= 1")
    real = [s for s in _DEFAULT if s.is_trading and s.quote_asset == "USDT" and s.contract_type == "PERPETUAL"]
    out = real[:n]
    i = 0
    while len(out) < n:
        i += 1
        # prices spread over 6 decades so tick sizes and precisions vary like the real listing
        decade = i % 6
        price = round((1.0 + (i * 7919 % 997) / 100.0) * 10 ** (decade - 2), 8)
        pp = max(1, 6 - decade)
        tick = format(Decimal(1).scaleb(-pp), "f")
        qp = max(0, decade - 1)
        step = format(Decimal(1).scaleb(-qp), "f") if qp else "1"
        out.append(_usdt_perp(f"SYN{i:04d}USDT", f"SYN{i:04d}", tick, step, step, "10000000", "1000000", "5",
                              price, pp, qp, 1e6 * (1 + i % 50)))
    return tuple(out)


def by_symbol(catalog: tuple[SymbolSpec, ...]) -> dict[str, SymbolSpec]:
    return {s.symbol: s for s in catalog}


def filters_json(spec: SymbolSpec) -> list[dict]:
    # key order inside each filter copies the live BTCUSDT row (it varies on Binance; clients must not care)
    return [
        {"minPrice": spec.min_price, "tickSize": spec.tick_size, "filterType": "PRICE_FILTER",
         "maxPrice": spec.max_price},
        {"minQty": spec.min_qty, "filterType": "LOT_SIZE", "stepSize": spec.step_size, "maxQty": spec.max_qty},
        {"stepSize": spec.step_size, "maxQty": spec.market_max_qty, "filterType": "MARKET_LOT_SIZE",
         "minQty": spec.market_min_qty},
        {"filterType": "MAX_NUM_ORDERS", "limit": spec.max_num_orders},
        {"notional": spec.min_notional, "filterType": "MIN_NOTIONAL"},
        {"multiplierDown": spec.multiplier_down, "multiplierDecimal": spec.multiplier_decimal,
         "filterType": "PERCENT_PRICE", "multiplierUp": spec.multiplier_up},
        {"filterType": "POSITION_RISK_CONTROL", "positionControlSide": "NONE"},
    ]


def symbol_json(spec: SymbolSpec) -> dict:
    """One exchangeInfo `symbols[]` row, field order as in live rows (docs/binance-notes.md, Exchange information)."""
    return {
        "symbol": spec.symbol, "pair": spec.pair, "contractType": spec.contract_type,
        "deliveryDate": spec.delivery_date, "onboardDate": spec.onboard_date, "status": spec.status,
        "maintMarginPercent": spec.maint_margin_percent, "requiredMarginPercent": spec.required_margin_percent,
        "baseAsset": spec.base_asset, "quoteAsset": spec.quote_asset, "marginAsset": spec.margin_asset,
        "pricePrecision": spec.price_precision, "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": spec.underlying_type,
        "underlyingSubType": list(spec.underlying_sub_type), "triggerProtect": spec.trigger_protect,
        "liquidationFee": spec.liquidation_fee, "marketTakeBound": spec.market_take_bound,
        "maxMoveOrderLimit": 10000, "filters": filters_json(spec),
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY", "DCA", "PSB"],
    }


def margin_assets(catalog: tuple[SymbolSpec, ...]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for s in catalog:
        seen.setdefault(s.margin_asset, None)
    return tuple(seen)


__all__ = ["SymbolSpec", "default_catalog", "catalog_with", "by_symbol", "filters_json", "symbol_json",
           "margin_assets", "PERPETUAL_DELIVERY_MS", "ORDER_IDS_ABOVE_2_53"]
