"""The data of the local Alpaca test exchange: Alpaca's errors, decimals and times, assets, orders, books.

JSON shaped as Alpaca's trading API v2 answers it: decimals as strings without an exponent, RFC3339
times, ``BTC/USD`` symbols. The state and the matching are in ``alpaca_engine.py``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

D0 = Decimal(0)

OPEN_STATUSES = frozenset(
    {"new", "partially_filled", "pending_new", "accepted", "pending_cancel", "pending_replace", "held"}
)
CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected", "done_for_day", "stopped"})
CRYPTO_TIME_IN_FORCE = ("gtc", "ioc")
ORDER_TYPES = ("market", "limit", "stop_limit")
MAX_CLIENT_ORDER_ID = 128
SYMBOL_RE = re.compile(r"^[A-Z]+/[A-Z]+$")


class AlpacaError(Exception):
    """An answer Alpaca gives instead of a result: HTTP status and JSON body."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message, **extra}


def bad_request(message: str) -> AlpacaError:
    """A request Alpaca refuses as malformed (ccxt: code 40010001 -> BadRequest)."""
    return AlpacaError(422, 40010001, message)


def unprocessable(message: str) -> AlpacaError:
    """A request valid in form that the account's state refuses (ccxt: plain ExchangeError)."""
    return AlpacaError(422, 42210000, message)


def not_found(message: str = "order not found") -> AlpacaError:
    """Unknown order (ccxt: code 40410000 -> InvalidOrder)."""
    return AlpacaError(404, 40410000, message)


def dstr(value: Decimal | None) -> str | None:
    """A decimal as Alpaca writes it: plain digits (never an exponent), no trailing zeros."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def rfc3339(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str, name: str) -> datetime:
    """RFC3339 (``Z`` or an offset, any fraction) or a date; a clear error naming the parameter."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        text = text.replace("Z", "+00:00")
        m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
        if m and m.group(2) and len(m.group(2)) > 7:  # nanoseconds: Python keeps microseconds
            text = m.group(1) + m.group(2)[:7] + m.group(3)
        ts = datetime.fromisoformat(text)
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    except ValueError as e:
        raise AlpacaError(422, 40010001, f"Invalid format for parameter {name}: {value!r} is not RFC3339") from e


def to_decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise bad_request(f"{name} must be a decimal number")
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError) as e:
        raise bad_request(f"invalid {name}: {value!r} is not a number") from e
    if not result.is_finite():
        raise bad_request(f"invalid {name}: {value!r} is not a finite number")
    return result


def is_multiple(value: Decimal, step: Decimal) -> bool:
    return step <= 0 or (value % step) == 0


@dataclass
class AssetSpec:
    """One tradable crypto pair as ``GET /v2/assets`` lists it."""

    symbol: str
    min_order_size: Decimal
    min_trade_increment: Decimal
    price_increment: Decimal
    name: str = ""
    status: str = "active"
    tradable: bool = True
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "class": "crypto",
            "exchange": "CRYPTO",
            "symbol": self.symbol,
            "name": self.name or f"{self.base} / {self.quote}",
            "status": self.status,
            "tradable": self.tradable,
            "marginable": False,
            "maintenance_margin_requirement": 100,
            "margin_requirement_long": "100",
            "margin_requirement_short": "100",
            "shortable": False,
            "easy_to_borrow": False,
            "fractionable": True,
            "attributes": [],
            "min_order_size": dstr(self.min_order_size),
            "min_trade_increment": dstr(self.min_trade_increment),
            "price_increment": dstr(self.price_increment),
        }


def default_assets() -> list[AssetSpec]:
    """BTC/USD, ETH/USD and ETH/BTC with increments like Alpaca's (BTC/USD tick 1)."""
    return [
        AssetSpec("BTC/USD", Decimal("0.0001"), Decimal("0.000000001"), Decimal("1"), "Bitcoin / US Dollar"),
        AssetSpec("ETH/USD", Decimal("0.001"), Decimal("0.000000001"), Decimal("0.1"), "Ethereum / US Dollar"),
        AssetSpec("ETH/BTC", Decimal("0.001"), Decimal("0.000000001"), Decimal("0.00001"), "Ethereum / Bitcoin"),
    ]


@dataclass
class Order:
    id: str
    client_order_id: str
    asset: AssetSpec
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    created_at: datetime
    source: str = "api"
    status: str = "pending_new"
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    filled_qty: Decimal = D0
    filled_cost: Decimal = D0
    reserve_price: Decimal = D0  # quote per unit reserved for an open buy (limit price or the estimate)
    triggered: bool = False
    resting: bool = False  # passed its first match: later fills against a new book are maker fills

    @property
    def symbol(self) -> str:
        return self.asset.symbol

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining_qty(self) -> Decimal | None:
        return None if self.qty is None else self.qty - self.filled_qty

    @property
    def avg_price(self) -> Decimal | None:
        return None if self.filled_qty == 0 else self.filled_cost / self.filled_qty

    def reserved_quote(self) -> Decimal:
        """Quote this open buy still holds back from buying power."""
        if not self.is_open or self.side != "buy":
            return D0
        if self.notional is not None:
            return max(D0, self.notional - self.filled_cost)
        remaining = self.remaining_qty or D0
        return remaining * self.reserve_price

    def reserved_base(self) -> Decimal:
        if not self.is_open or self.side != "sell":
            return D0
        if self.notional is not None:  # a notional sell: its estimate in coin
            return (self.notional - self.filled_cost) / self.reserve_price if self.reserve_price else D0
        return self.remaining_qty or D0

    def to_json(self) -> dict[str, Any]:
        avg = self.avg_price
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at or self.created_at),
            "submitted_at": rfc3339(self.created_at),
            "filled_at": rfc3339(self.filled_at),
            "expired_at": rfc3339(self.expired_at),
            "canceled_at": rfc3339(self.canceled_at),
            "failed_at": None,
            "replaced_at": rfc3339(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": self.asset.id,
            "symbol": self.asset.symbol,
            "asset_class": "crypto",
            "notional": dstr(self.notional),
            "qty": dstr(self.qty),
            "filled_qty": dstr(self.filled_qty),
            "filled_avg_price": dstr(avg.quantize(Decimal("1e-9")).normalize()) if avg is not None else None,
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": dstr(self.limit_price),
            "stop_price": dstr(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
            "expires_at": None,
        }


@dataclass
class Level:
    price: Decimal
    size: Decimal


@dataclass
class Book:
    bids: list[Level] = field(default_factory=list)  # best (highest) first
    asks: list[Level] = field(default_factory=list)  # best (lowest) first
    ts: datetime | None = None

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None


def levels_of(raw: Iterable[Iterable[object]], name: str) -> list[Level]:
    out = []
    for entry in raw:
        price, size = (to_decimal(x, name) for x in entry)
        if price <= 0 or size <= 0:
            raise ValueError(f"{name}: price and size must be > 0, got {price} x {size}")
        out.append(Level(price, size))
    return out
