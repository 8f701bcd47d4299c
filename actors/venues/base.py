"""The venue interface the order-router talks to, shaped after ccxt's unified API.

The router never knows whether it talks to the paper exchange or to a real one: both answer in these
types. Orders are always addressed by our client order id, so a retried command never makes a second
order at the venue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

from schemas.messages import Book, Liquidity, OrderType, Side

VenueOrderStatus = Literal["open", "closed", "canceled", "rejected", "expired"]


@dataclass(frozen=True, slots=True)
class VenueOrderRequest:
    client_order_id: str
    pair: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str = "GTC"


@dataclass(frozen=True, slots=True)
class VenueTrade:
    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    ts: int


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """What the venue says about one order (ccxt's unified order, trimmed)."""

    client_order_id: str
    venue_order_id: str
    pair: str
    status: VenueOrderStatus
    filled: Decimal
    trades: list[VenueTrade] = field(default_factory=list)
    reason: str | None = None


class Venue(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create_order(self, req: VenueOrderRequest) -> VenueOrder:
        """Place an order; idempotent by ``client_order_id`` (a retry returns the first outcome)."""
        ...

    async def fetch_order(self, client_order_id: str, pair: str) -> VenueOrder | None:
        """The order with our client order id, or None when the venue never got it."""
        ...

    async def fetch_order_book(self, pair: str) -> Book | None: ...
