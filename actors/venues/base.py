"""The venue interface the order-router talks to, shaped after ccxt's unified API.

The router never knows whether it talks to the paper exchange or to a real one: both answer in these
types. Orders are always addressed by our client order id, so a retried command never makes a second
order at the venue. Venues that push updates (a resting order filled later; ccxt's ``watch_orders``)
call the listener given to ``set_listener``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

from schemas.messages import Book, Liquidity, MarketRules, Side, VenueCheck

VenueOrderStatus = Literal["open", "closed", "canceled", "rejected", "expired"]
# what a request may ask the venue to hold: the triggered kinds only where ``Venue.native_types`` lists them
VenueOrderType = Literal["market", "limit", "stop_loss", "stop_loss_limit", "take_profit", "take_profit_limit"]
UpdateMode = Literal["push", "stream", "polling"]


class VenueRefused(Exception):
    """The venue said no to a command (cancel, edit) for a reason; the order is unchanged."""


class OutcomeUnknown(Exception):
    """A command may or may not have taken effect at the venue (timeout, lost connection, "execution status
    unknown"). Never retried blind: the order is looked up by its client order id until the venue says."""


class VenueUnavailable(Exception):
    """The venue did not process the command (rate limited after the back-off, refused to connect, under
    maintenance): nothing changed there, so it may be sent again later."""


class VenueStartError(Exception):
    """The venue cannot be used (unknown pair, keys refused, clock skew, markets not loaded): one line saying what.
    ``retryable``: the venue did not answer (markets or balance not read) - it may answer later; otherwise the
    settings are wrong (keys refused, a pair not listed, the clock) and nothing will change by waiting."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class KeysUnavailable(VenueStartError):
    """The venue's keys cannot be known now (the credential store cannot be read): it is not started - on no
    keys rather than on possibly stale ones - and is tried again, however many venues there are."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass(frozen=True, slots=True)
class VenueOrderRequest:
    client_order_id: str
    pair: str
    side: Side
    type: VenueOrderType
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str = "GTC"
    post_only: bool = False
    reduce_only: bool = False  # the venue must never fill it beyond the position (paper: it does not)
    stop_price: Decimal | None = None  # the trigger of a stop / take-profit the venue holds natively


@dataclass(frozen=True, slots=True)
class VenueTrade:
    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    ts: int
    # whose trade it is (set by venues that list trades of several orders: fetch_my_trades, polling)
    venue_order_id: str | None = None
    client_order_id: str | None = None
    side: Side | None = None
    pair: str | None = None


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
    code: str | None = None  # why a rejected order was rejected: INSUFFICIENT_FUNDS, INVALID_ORDER, BAD_SYMBOL...
    side: Side | None = None
    type: str | None = None  # the venue's order type, unified (market, limit, stop_loss_limit, ...)
    stop_price: Decimal | None = None
    created_at: int | None = None
    external: bool = False  # not placed by this service (its client order id is not one of ours)


@dataclass(frozen=True, slots=True)
class VenueBalance:
    free: Decimal
    total: Decimal


@dataclass(slots=True)
class VenueHealth:
    """How the venue session is doing, for /api/health."""

    name: str
    connected: bool | None = None  # None: not asked yet
    last_latency_ms: float | None = None  # the last call's round trip
    rate_limit_used: float | None = None  # share of the venue's request budget in use (0..1)
    update_mode: UpdateMode = "push"
    last_error: str | None = None
    last_error_at: int | None = None
    keys_refused: bool = False  # the venue refused the keys on its last private call


Listener = Callable[[VenueOrder, list[VenueTrade]], Awaitable[None]]


class Venue(Protocol):
    name: str
    # the order types the venue holds itself (stops, take-profits); the others the order-router emulates
    native_types: frozenset[str]
    # True when ``fetch_order`` returning None proves the venue never got the order (so it may be sent
    # again); a live venue's answer may lag an order whose answer was lost: never resent, rejected after
    # a grace period
    authoritative_lookup: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def set_listener(self, listener: Listener) -> None:
        """``listener(order, new_trades)`` is awaited when an order changes without a command of ours."""
        ...

    def track(self, client_order_ids: Iterable[str]) -> None:
        """Our live client order ids (the router's, at start, before the first command): a venue that sends
        another id for some of them (shortened to its limit) maps its ids back to these; the venue's orders
        with other client ids are passed to the listener as ``external``."""
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

    async def fetch_balance(self) -> dict[str, VenueBalance]: ...

    async def fetch_order_book(self, pair: str) -> Book | None: ...

    def health(self) -> VenueHealth: ...

    def describe(self, e: BaseException) -> str:
        """An error of this venue as it may be shown (logs, alerts, reasons): no secret, no signed URL."""
        ...

    async def check(self) -> VenueCheck:
        """Test the connection now: markets, pairs, keys, balance, clock skew, latency (never raises)."""
        ...
