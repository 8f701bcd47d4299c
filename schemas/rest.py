"""Shapes of the REST API (the seeds' JSON), as msgspec Structs. Numbers are JSON numbers here."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from schemas.messages import (
    Fill,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    PositionView,
    RiskConfigReply,
    RiskMetricsView,
    RiskValidation,
    Side,
    TimeInForce,
)  # fmt: skip

# a limit or setting as REST shows it: a boolean as a JSON boolean, a number as a JSON number
LimitValue = bool | Decimal


def any_case_pattern(allowed: tuple[str, ...]) -> str:
    """A JSON Schema pattern that matches exactly the ``allowed`` words in any case (``^(?:[Bb][Uu][Yy])$``)."""
    words = ["".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in a) for a in allowed]
    return "^(?:" + "|".join(words) + ")$"


def any_case(allowed: tuple[str, ...], what: str) -> object:
    """A string field that takes one of ``allowed`` in any case (the gateway answers the canonical one)."""
    schema = {"pattern": any_case_pattern(allowed), "examples": list(allowed)}
    return Annotated[
        str, msgspec.Meta(description=f"{what}: {', '.join(allowed)}, in any case", extra_json_schema=schema)
    ]


SIDES = ("buy", "sell")
SIGNALS = ("BUY", "SELL", "HOLD", "CLOSE")
AnySide = any_case(SIDES, "the side")
AnySignal = any_case(SIGNALS, "the signal")


VenueName = Annotated[
    str,
    msgspec.Meta(
        max_length=40,
        description=(
            "the venue the order must go to: one of the configured venues (EXCHANGES, or the single EXCHANGE), any "
            "case; absent: the router picks among the venues able to take it. Not configured: 422 UNKNOWN_EXCHANGE"
        ),
        examples=["binance"],
    ),
]


class Rest(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    pass


class RestIn(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A request body: unknown fields are refused, with their name."""


class AlgoIn(RestIn):
    """``algo`` of a twap / vwap / iceberg order (README: Execution algorithms)."""

    duration_ms: (
        Annotated[int, msgspec.Meta(ge=1, le=604_800_000, description="twap / vwap: the schedule's length (ms)")] | None
    ) = None
    slices: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="twap / vwap: how many children")] | None = None
    size_jitter: Annotated[Decimal, msgspec.Meta(description="twap: 0..0.5 of the even slice size")] = Decimal(0)
    time_jitter: Annotated[Decimal, msgspec.Meta(description="twap: 0..0.5 of the interval")] = Decimal(0)
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, description="twap: the jitter's seed")] | None = None
    profile: (
        Annotated[
            list[Decimal], msgspec.Meta(min_length=1, max_length=10_000, description="vwap: one weight per slice")
        ]
        | None
    ) = None
    lookback_ms: (
        Annotated[int, msgspec.Meta(ge=1, le=604_800_000, description="vwap: the recent trades' window (ms)")] | None
    ) = None
    display_quantity: Annotated[Decimal, msgspec.Meta(description="iceberg: the most shown at once")] | None = None


class PlaceOrder(RestIn):
    """Body of ``POST /api/orders`` (the seed's)."""

    pair: str
    side: AnySide  # type: ignore[valid-type]
    quantity: Decimal
    type: OrderType = "market"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: TimeInForce | None = None
    expire_at: int | None = None
    post_only: bool = False
    reduce_only: bool = False
    paper_trade: bool | None = None
    risk_check: bool = True
    client_order_id: str | None = None
    exchange: VenueName | None = (
        None  # the venue it must go to (a name in EXCHANGES); absent: the router's policy picks
    )
    algo: AlgoIn | None = None  # twap / vwap / iceberg: the algorithm's parameters


class ModifyBody(RestIn):
    """Body of ``PATCH /api/orders/{id}``."""

    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None


class CancelAllBody(RestIn):
    """Body of ``POST /api/orders/cancel-all`` (optional)."""

    pair: str | None = None


class OrderEvents(Rest):
    order_id: str
    events: list[OrderEvent]


class OrderList(Rest):
    orders: list[Order]


class PlacedOrder(Rest):
    """Answer of ``POST /api/orders`` (the seed's shape)."""

    order_id: str
    client_order_id: str
    status: OrderStatus
    pair: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    risk_validation: RiskValidation | None = None
    estimated_cost: Decimal | None = None
    linked_orders: dict[str, str] | None = None
    created_at: int = 0
    paper_trade: bool | None = None  # false: a live order at a real venue (always set)
    venue: str | None = None
    venue_order_id: str | None = None  # the venue's id once it answered
    exchange: Annotated[str, msgspec.Meta(description="the order's venue (the same name as venue)")] | None = None


class OrderValidation(Rest, kw_only=True):
    """Answer of ``POST /api/orders/validate``: what ``POST /api/orders`` would decide now."""

    valid: bool
    code: str | None = None
    field: str | None = None
    detail: str | None = None
    risk_validation: RiskValidation | None = None
    estimated_cost: Decimal | None = None


class Positions(Rest):
    positions: list[PositionView]


class ClosedPositions(Rest):
    """Answer of ``POST /api/positions/close-all``: the closing orders (and the pairs that failed)."""

    orders: list[PlacedOrder]
    failed: dict[str, str]  # pair -> why


class Trades(Rest):
    """``GET /api/trades``: fills, newest first."""

    trades: list[Fill]  # each with its venue as ``exchange`` too (= ``venue``)
    next_cursor: str | None = None


class Status(Rest, kw_only=True):
    """``GET /api/status``: what runs and how it is set."""

    service: str
    version: str
    mode: Literal["paper", "live"]
    status: Literal["healthy", "degraded", "unhealthy"]
    trading_state: str
    venue: str  # the first venue (priority order)
    exchanges: list[str] = msgspec.field(default_factory=list)  # every venue (EXCHANGES), priority order
    pairs: list[str]
    base_currency: str
    bus_prefix: str
    nats_url: str  # the NATS this gateway uses (the embedded one's, or NATS_URL), never with credentials
    started_at: int
    uptime_ms: int
    actors: dict[str, str]
    limits: dict[str, LimitValue] = msgspec.field(default_factory=dict)
    services: dict[str, str] = msgspec.field(default_factory=dict)


class RiskMetrics(RiskMetricsView):
    """``GET /api/risk/metrics``: the risk-gate's view, its limits typed (booleans, numbers)."""

    limits: dict[str, LimitValue]


class RiskConfig(RiskConfigReply):
    """``PUT /api/risk/config``: the limits now in force, typed (booleans, numbers)."""

    limits: dict[str, LimitValue] = msgspec.field(default_factory=dict)


class Problem(Rest):
    """``application/problem+json`` (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    code: str | None = None
    request_id: str | None = None
    client_order_id: str | None = None  # when the outcome of an order is unknown: retry with it
    signal_id: str | None = None  # a rejected signal: its id (GET /api/signals?signalId=)


class RateLimit(msgspec.Struct, kw_only=True, rename="camel"):
    remaining: int | None = None
    reset_time: int | None = None


class ExchangeView(msgspec.Struct, kw_only=True, rename="camel"):
    """One venue in ``GET /api/exchanges``."""

    id: str
    ccxt_id: str
    status: Literal["up", "down", "degraded"]
    updates: Literal["stream", "polling"] | None  # how order updates reach us (pushed, as paper's: stream)
    latency_ms: float | None = None  # the last call's round trip
    rate_limit_used: float | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    paper: bool = True


class ExchangeList(msgspec.Struct, kw_only=True, rename="camel"):
    exchanges: list[ExchangeView]


class ExchangeHealth(msgspec.Struct, kw_only=True, rename="camel"):
    status: Literal["connected", "disconnected"]
    last_ping: int | None
    rate_limit: RateLimit
    connected: bool | None = None  # the venue answered its last call (None: not asked yet)
    last_latency_ms: float | None = None  # that call's round trip
    rate_limit_used: float | None = None  # share of the venue's request budget in use (0..1)
    update_mode: Literal["push", "stream", "polling"] | None = None  # how order updates reach us
    last_error: str | None = None
    last_error_at: int | None = None
    paper: bool = True
    ccxt_id: str | None = None  # the venue's ccxt exchange id ("paper" for the paper venue)


class ServiceHealth(msgspec.Struct, kw_only=True, rename="camel"):
    status: Literal["healthy", "unhealthy", "not_configured"]
    last_check: int | None
    url: str | None = None
    error: str | None = None


class EngineHealth(msgspec.Struct, kw_only=True, rename="camel"):
    status: Literal["operational", "degraded", "down"]
    orders_processed: int
    success_rate: float


class InstanceHealth(msgspec.Struct, kw_only=True, rename="camel"):
    """One running instance of an actor: the active one or a hot standby (README "High availability")."""

    instance: Annotated[str, msgspec.Meta(description="the instance's id (also in its lease and its logs)")]
    role: Annotated[
        Literal["active", "standby"],
        msgspec.Meta(description="active: holds the actor's lease (of its partition) and works; standby: waits"),
    ]
    partition: Annotated[
        int | None, msgspec.Meta(description="the partition it serves (PARTITIONS > 1), null when not partitioned")
    ]
    status: Annotated[
        str,
        msgspec.Meta(
            description="as its last heartbeat said (running, starting, standby, stopping), or stale when not heard "
            "for 3 s; an instance not heard for 30 s is no longer listed"
        ),
    ]
    age_ms: Annotated[int, msgspec.Meta(description="ms since its last heartbeat")]


class ActorHealth(msgspec.Struct, kw_only=True, rename="camel"):
    status: str
    last_heartbeat: int | None
    age_ms: int | None
    instance: str | None = None  # the active instance (the one the other fields are about)
    stats: dict[str, int | float | str] = msgspec.field(default_factory=dict)
    instances: Annotated[
        list[InstanceHealth],
        msgspec.Meta(description="every instance heard lately, active ones first; the other fields are the active's"),
    ] = msgspec.field(default_factory=list)


class Health(msgspec.Struct, kw_only=True, rename="camel"):
    status: Literal["healthy", "degraded", "unhealthy"]
    service: str
    version: str
    mode: Literal["paper", "live"]
    exchanges: dict[str, ExchangeHealth]
    services: dict[str, ServiceHealth]
    execution_engine: EngineHealth
    actors: dict[str, ActorHealth]
    nats: dict[str, str | bool]
    timestamp: int


class RiskParametersIn(RestIn, kw_only=True):
    max_risk_percent: Decimal | None = None
    position_size_method: str | None = None


class ExecuteSignal(RestIn, kw_only=True):
    """Body of ``POST /api/signals/execute`` (the seed's), the same fields as a signal on the bus."""

    pair: str
    signal: AnySignal  # type: ignore[valid-type]
    confidence: Decimal
    source: str = "api"
    strategy: str = ""
    signal_id: str | None = None
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    risk_parameters: RiskParametersIn | None = None
    quantity: Decimal | None = None


class SignalAccepted(Rest, kw_only=True):
    """202: stored, but its result did not come back in time; it will be on GET /api/signals."""

    signal_id: str
    status: Literal["accepted"]
    detail: str
