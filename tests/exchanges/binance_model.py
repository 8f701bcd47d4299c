"""Binance spot's data and rules for the local test exchange: errors, symbols and their filters,
orders and trades in Binance's JSON shapes, and request parameters parsed as Binance parses them.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

ZERO = Decimal(0)
EIGHT = Decimal("0.00000001")
DAY_MS = 24 * 60 * 60 * 1000
CLIENT_ID_PATTERN = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
NUMBER_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
ORDER_TYPES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
LIMIT_TYPES = ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
STP_MODES = ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT")

# The parameters each signed endpoint reads; anything else is -1104 as on Binance.
AUTH_PARAMS = frozenset({"timestamp", "recvWindow", "signature"})
ORDER_PARAMS = frozenset(
    {
        "symbol",
        "side",
        "type",
        "timeInForce",
        "quantity",
        "quoteOrderQty",
        "price",
        "newClientOrderId",
        "strategyId",
        "strategyType",
        "stopPrice",
        "trailingDelta",
        "icebergQty",
        "newOrderRespType",
        "selfTradePreventionMode",
        "pegPriceType",
        "pegOffsetValue",
        "pegOffsetType",
    }
)
CANCEL_REPLACE_PARAMS = ORDER_PARAMS | {
    "cancelReplaceMode",
    "cancelNewClientOrderId",
    "cancelOrigClientOrderId",
    "cancelOrderId",
    "cancelRestrictions",
    "orderRateLimitExceededMode",
}


class BinanceError(Exception):
    """An answer Binance gives as ``{"code": -NNNN, "msg": "..."}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, status: int = 400, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.data = data

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            out["data"] = self.data
        return out


def insufficient_balance() -> BinanceError:
    return BinanceError(-2010, "Account has insufficient balance for requested action.")


def fmt(value: Decimal | None) -> str:
    """Binance's decimal strings: always 8 places (``"0.01000000"``)."""
    return format((value or ZERO).quantize(EIGHT), "f")


def dec(value: Decimal | str | int | float) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def random_client_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(22))


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


@dataclass(frozen=True)
class SymbolSpec:
    """A spot symbol and its filters (PRICE_FILTER, LOT_SIZE, NOTIONAL)."""

    base: str
    quote: str
    tick_size: Decimal = Decimal("0.01")
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    min_notional: Decimal = Decimal("5")
    max_notional: Decimal = Decimal("9000000")
    status: str = "TRADING"

    @property
    def symbol(self) -> str:
        return self.base + self.quote

    @classmethod
    def of(cls, value: SymbolSpec | str | Mapping[str, Any]) -> SymbolSpec:
        """``SymbolSpec``, ``"BTC/USDT"`` (default filters) or a mapping of the fields (strings allowed)."""
        if isinstance(value, SymbolSpec):
            return value
        if isinstance(value, str):
            base, sep, quote = value.partition("/")
            if not sep or not base or not quote:
                raise ValueError(f"symbol {value!r}: expected BASE/QUOTE, e.g. 'BTC/USDT'")
            return cls(base=base.upper(), quote=quote.upper())
        fields = {k: (v if k in ("base", "quote", "status") else dec(v)) for k, v in value.items()}
        return cls(**fields)

    def info_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "status": self.status,
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", *STOP_TYPES],
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": fmt(self.min_price),
                    "maxPrice": fmt(self.max_price),
                    "tickSize": fmt(self.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt(self.min_qty),
                    "maxQty": fmt(self.max_qty),
                    "stepSize": fmt(self.step_size),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt(self.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": fmt(self.max_notional),
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": list(STP_MODES),
        }


@dataclass
class Order:
    symbol: str
    order_id: int
    client_order_id: str
    side: str  # BUY | SELL
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    stop_price: Decimal
    time: int
    update_time: int
    working_time: int  # -1 while a stop order waits for its trigger
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    reserved: Decimal = ZERO  # still locked for this order, in reserve_asset
    reserve_asset: str = ""
    stp_mode: str = "EXPIRE_MAKER"
    strategy_id: int | None = None
    strategy_type: int | None = None
    external: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_working(self) -> bool:
        return self.working_time != -1

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    def query_json(self) -> dict[str, Any]:
        """The shape of GET /api/v3/order, /openOrders, /allOrders."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": fmt(self.stop_price),
            "icebergQty": fmt(ZERO),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": self.is_working,
            "workingTime": self.working_time,
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "selfTradePreventionMode": self.stp_mode,
        }
        self._strategy(out)
        return out

    def result_json(self, transact_time: int, resp_type: str, fills: list[Trade]) -> dict[str, Any]:
        """The answer of POST /api/v3/order for newOrderRespType ACK, RESULT or FULL."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "transactTime": transact_time,
        }
        if resp_type == "ACK":
            return out
        out.update(
            {
                "price": fmt(self.price),
                "origQty": fmt(self.orig_qty),
                "executedQty": fmt(self.executed_qty),
                "origQuoteOrderQty": fmt(self.orig_quote_qty),
                "cummulativeQuoteQty": fmt(self.cum_quote),
                "status": self.status,
                "timeInForce": self.time_in_force,
                "type": self.type,
                "side": self.side,
                "workingTime": self.working_time,
                "selfTradePreventionMode": self.stp_mode,
            }
        )
        if self.type in STOP_TYPES:
            out["stopPrice"] = fmt(self.stop_price)
        self._strategy(out)
        if resp_type == "FULL":
            out["fills"] = [t.fill_json() for t in fills]
        return out

    def cancel_json(self, transact_time: int, cancel_client_id: str) -> dict[str, Any]:
        """The answer of DELETE /api/v3/order: ``clientOrderId`` is the cancel request's own id."""
        out: dict[str, Any] = {
            "symbol": self.symbol,
            "origClientOrderId": self.client_order_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": cancel_client_id,
            "transactTime": transact_time,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "selfTradePreventionMode": self.stp_mode,
        }
        if self.type in STOP_TYPES:
            out["stopPrice"] = fmt(self.stop_price)
        return out

    def _strategy(self, out: dict[str, Any]) -> None:
        if self.strategy_id is not None:
            out["strategyId"] = self.strategy_id
        if self.strategy_type is not None:
            out["strategyType"] = self.strategy_type


@dataclass
class Trade:
    symbol: str
    trade_id: int
    order_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def fill_json(self) -> dict[str, Any]:
        return {
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.trade_id,
        }

    def my_trade_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "quoteQty": fmt(self.quote_qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }


@dataclass
class Book:
    bids: list[list[Decimal]] = field(default_factory=list)  # [price, qty], best (highest) first
    asks: list[list[Decimal]] = field(default_factory=list)  # best (lowest) first
    update_id: int = 0

    def best(self, side: str) -> Decimal | None:
        levels = self.bids if side == "bid" else self.asks
        return levels[0][0] if levels else None


# --- parameter parsing, as Binance validates -------------------------------------------------------


def mandatory_param(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def param_not_required(name: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{name}' sent when not required.")


def illegal_param(name: str, legal: str) -> BinanceError:
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def param_decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not NUMBER_RE.match(raw):
        raise illegal_param(name, NUMBER_RE.pattern)
    value = Decimal(raw)
    if -value.normalize().as_tuple().exponent > 8:  # type: ignore[operator]
        raise BinanceError(-1111, f"Parameter '{name}' has too much precision.")
    return value


def param_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise illegal_param(name, "^-?[0-9]{1,20}$") from None


def check_unread(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    unread = [k for k in params if k not in allowed]
    if unread:
        read = len(params) - len(unread)
        raise BinanceError(
            -1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{len(params)}'."
        )


@dataclass
class NewOrder:
    """A validated order request, before any balance check or matching."""

    spec: SymbolSpec
    side: str
    type: str
    time_in_force: str
    quantity: Decimal | None
    quote_qty: Decimal | None
    price: Decimal | None
    stop_price: Decimal | None
    client_order_id: str
    resp_type: str
    stp_mode: str
    strategy_id: int | None
    strategy_type: int | None
