"""The venue interface the order-router talks to, shaped after ccxt's unified API.

The router never knows whether it talks to the paper exchange or to a real one: both answer in these
types. Orders are always addressed by our client order id, so a retried command never makes a second
order at the venue. Venues that push updates (a resting order filled later; ccxt's ``watch_orders``)
call the listener given to ``set_listener``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

from schemas.messages import Book, Liquidity, MarketRules, Side

VenueOrderStatus = Literal["open", "closed", "canceled", "rejected", "expired"]


class VenueRefused(Exception):
    """The venue said no to a command (cancel, edit) for a reason; the order is unchanged."""


@dataclass(frozen=True, slots=True)
class VenueOrderRequest:
    client_order_id: str
    pair: str
    side: Side
    type: Literal["market", "limit"]
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str = "GTC"
    post_only: bool = False
    reduce_only: bool = False  # the venue must never fill it beyond the position (paper: it does not)


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
    """What the venue says about one order (ccxt's unified order, trimmed). ``trades``: all of them."""

    client_order_id: str
    venue_order_id: str
    pair: str
    status: VenueOrderStatus
    filled: Decimal
    trades: list[VenueTrade] = field(default_factory=list)
    reason: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None


Listener = Callable[[VenueOrder, list[VenueTrade]], Awaitable[None]]


class Venue(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_listener(self, listener: Listener) -> None:
        """``listener(order, new_trades)`` is awaited when an order changes without a command of ours."""
        ...

    async def markets(self) -> list[MarketRules]:
        """Tick, step, minimum notional and fees of every pair the venue trades."""
        ...

    async def create_order(self, req: VenueOrderRequest) -> VenueOrder:
        """Place an order; idempotent by ``client_order_id`` (a retry returns the first outcome)."""
        ...

    async def cancel_order(self, client_order_id: str, pair: str, reason: str = "canceled") -> VenueOrder:
        """Cancel an open order. VenueRefused if it is not open (already filled, canceled or unknown)."""
        ...

    async def edit_order(
        self, client_order_id: str, pair: str, quantity: Decimal | None = None, price: Decimal | None = None
    ) -> VenueOrder:
        """Change an open order's quantity and/or price, keeping its id. VenueRefused with the reason."""
        ...

    async def fetch_order(self, client_order_id: str, pair: str) -> VenueOrder | None:
        """The order with our client order id, or None when the venue never got it."""
        ...

    async def fetch_open_orders(self, pair: str | None = None) -> list[VenueOrder]: ...

    async def fetch_my_trades(self, pair: str, since: int = 0) -> list[VenueTrade]: ...

    async def fetch_balance(self) -> dict[str, Decimal]: ...

    async def fetch_order_book(self, pair: str) -> Book | None: ...
