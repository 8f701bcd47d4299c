"""ccxt's markets as our MarketRules, our pairs as ccxt symbols, and the order types a venue holds itself.

Steps come from ccxt's ``precision`` in the exchange's ``precisionMode``: TICK_SIZE (the step itself,
Binance and Alpaca), DECIMAL_PLACES (``n`` digits: ccxt's ``parse_precision`` turns it into a step) or
SIGNIFICANT_DIGITS (no fixed step: 0, i.e. not checked by the risk-gate; ccxt's helpers still decide
before an order is sent). Numbers go through ccxt's ``number_to_string`` (no float artefacts, no exponent).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ccxt.base.decimal_to_precision import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE, number_to_string
from ccxt.base.exchange import Exchange

from schemas.messages import MarketRules

ZERO = Decimal(0)
_CCXT = Exchange()  # for its precision helpers (no I/O)


def symbol_of(pair: str) -> str:
    """``BTC_USDT`` -> ``BTC/USDT`` (ccxt's unified spot symbol)."""
    base, _, quote = pair.partition("_")
    return f"{base}/{quote}"


def pair_of(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTC_USDT`` (a derivative's ``:SETTLE`` suffix is dropped)."""
    return symbol.split(":")[0].replace("/", "_")


def _dec(v: Any) -> Decimal | None:
    if v is None:
        return None
    s = number_to_string(v) if not isinstance(v, str) else v
    if s is None:
        return None
    return Decimal(s)


def step_of(precision: Any, mode: int) -> Decimal:
    """The step a ccxt ``precision`` value means in ``mode``; 0 when there is none."""
    if precision is None:
        return ZERO
    if mode == TICK_SIZE:
        return _dec(precision) or ZERO
    if mode == DECIMAL_PLACES:
        return Decimal(_CCXT.parse_precision(number_to_string(precision)))
    if mode == SIGNIFICANT_DIGITS:
        return ZERO
    raise ValueError(f"unknown ccxt precisionMode {mode}")


def market_rules(
    pair: str, market: dict[str, Any], mode: int, default_fees: dict[str, Any] | None = None
) -> MarketRules:
    """Our rules for ``pair`` from one ccxt market dict (``ex.markets[symbol]``)."""
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    amount = limits.get("amount") or {}
    cost = limits.get("cost") or {}
    fees = default_fees or {}
    maker = market.get("maker", fees.get("maker"))
    taker = market.get("taker", fees.get("taker"))
    min_amount = _dec(amount.get("min"))
    max_amount = _dec(amount.get("max"))
    return MarketRules(
        pair=pair,
        tick_size=step_of(precision.get("price"), mode),
        amount_step=step_of(precision.get("amount"), mode),
        min_notional=_dec(cost.get("min")) or ZERO,
        maker_fee=_dec(maker) or ZERO,
        taker_fee=_dec(taker) or ZERO,
        min_amount=min_amount if min_amount else None,
        max_amount=max_amount if max_amount else None,
    )


# what each of our venue order types is in ccxt: (ccxt type, the param that carries the trigger)
CCXT_TYPES: dict[str, tuple[str, str | None]] = {
    "market": ("market", None),
    "limit": ("limit", None),
    "stop_loss": ("market", "stopLossPrice"),
    "stop_loss_limit": ("limit", "stopLossPrice"),
    "take_profit": ("market", "takeProfitPrice"),
    "take_profit_limit": ("limit", "takeProfitPrice"),
}
# Binance spot's own names of those types (exchangeInfo ``orderTypes`` of a symbol)
BINANCE_TYPES = {
    "stop_loss": "STOP_LOSS",
    "stop_loss_limit": "STOP_LOSS_LIMIT",
    "take_profit": "TAKE_PROFIT",
    "take_profit_limit": "TAKE_PROFIT_LIMIT",
}


def native_types(venue: str, features: dict[str, Any], markets: list[dict[str, Any]]) -> frozenset[str]:
    """The triggered order types ``venue`` holds itself, from ccxt's ``features['spot']['createOrder']`` (and,
    on Binance, every traded market's ``orderTypes``); the others the order-router emulates.

    - binance: STOP_LOSS / STOP_LOSS_LIMIT / TAKE_PROFIT / TAKE_PROFIT_LIMIT when ccxt offers stopLossPrice /
      takeProfitPrice and every pair lists the type;
    - alpaca: only stop_loss_limit (a limit with ``triggerPrice`` is Alpaca's stop_limit; ccxt refuses a
      market with a trigger, and a stop_limit sell triggers at or below its stop: not a take-profit);
    - any other venue: stop_loss_limit / take_profit_limit when ccxt offers stopLossPrice / takeProfitPrice
      (market stops emulated: ccxt does not say whether a venue holds them).
    """
    create = ((features or {}).get("spot") or {}).get("createOrder") or {}
    if venue == "alpaca":
        return frozenset({"stop_loss_limit"}) if create.get("triggerPrice") else frozenset()
    out: set[str] = set()
    if create.get("stopLossPrice"):
        out |= {"stop_loss", "stop_loss_limit"}
    if create.get("takeProfitPrice"):
        out |= {"take_profit", "take_profit_limit"}
    if venue in ("binance", "binanceus"):
        for m in markets:
            listed = set((m.get("info") or {}).get("orderTypes") or [])
            out = {t for t in out if BINANCE_TYPES[t] in listed}
        return frozenset(out)
    return frozenset(out & {"stop_loss_limit", "take_profit_limit"})
