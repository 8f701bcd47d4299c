"""The aiohttp gateway: REST in, bus requests out. It imports no actor and keeps no trading state."""

from __future__ import annotations

import contextlib
import uuid

import msgspec
from aiohttp import web
from loguru import logger

from bus.client import Bus
from bus.errors import RequestFailed
from config.settings import Settings
from gateway.health import HealthBook
from gateway.problems import ApiError, auth_middleware, json_response, problem_middleware, validation_error
from schemas.messages import (
    Empty,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    PortfolioSnapshot,
    now_ms,
)
from schemas.rest import PlacedOrder, PlaceOrder

MAX_BODY = 1024 * 1024
REQUEST_TIMEOUT = 5.0
SHUTDOWN_GRACE_S = 1.5

BUS: web.AppKey[Bus] = web.AppKey("bus", Bus)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
HEALTH: web.AppKey[HealthBook] = web.AppKey("health", HealthBook)


async def read_json(request: web.Request, type_: type) -> object:
    ctype = request.content_type
    if ctype != "application/json":
        raise ApiError(415, "Unsupported Media Type", f"send the body as application/json, not {ctype or 'nothing'}")
    raw = await request.read()
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as e:
        raise validation_error(e) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "Malformed JSON", f"the body is not valid JSON: {e}", code="MALFORMED_JSON") from None


async def ask(
    request: web.Request, subject: str, msg: object, reply_type: type, what: str, client_order_id: str | None = None
) -> object:
    """A bus request on behalf of a REST call; failures become problems. For an order, the problem
    carries its clientOrderId: when the outcome is unknown (504, 502) the caller retries with it."""
    try:
        return await request.app[BUS].request(subject, msg, reply_type, timeout=REQUEST_TIMEOUT)
    except RequestFailed as e:
        unknown = " The order may still be placed: retry with the same clientOrderId." if client_order_id else ""
        if e.timeout:
            detail = f"{what} did not answer within {REQUEST_TIMEOUT:g}s.{unknown}"
            raise ApiError(
                504, "Gateway Timeout", detail, code="UPSTREAM_TIMEOUT", client_order_id=client_order_id
            ) from None
        if e.no_responders:
            raise ApiError(
                503,
                "Service Unavailable",
                f"{what} is not running",
                code="UPSTREAM_DOWN",
                client_order_id=client_order_id,
            ) from None
        raise ApiError(
            502,
            "Bad Gateway",
            f"{what} failed: {e.reason}.{unknown}",
            code="UPSTREAM_ERROR",
            client_order_id=client_order_id,
        ) from None


# codes of order denials that are not the caller's mistake
UNAVAILABLE = frozenset({"NO_MARKET_DATA", "TRADING_HALTED"})


# -- endpoints ---------------------------------------------------------------------------------------------
async def get_health(request: web.Request) -> web.Response:
    report = request.app[HEALTH].report()
    return json_response(report, status=200 if report.status == "healthy" else 503)


async def post_order(request: web.Request) -> web.Response:
    body: PlaceOrder = await read_json(request, PlaceOrder)  # type: ignore[assignment]
    settings = request.app[SETTINGS]
    if body.paper_trade is False and not settings.LIVE_TRADING:
        raise ApiError(
            422,
            "Validation failed",
            "paperTrade=false asks for a live order but the service runs in paper mode (PAPER_TRADING=true)",
            field="paperTrade",
            code="LIVE_TRADING_OFF",
        )
    for name, value in (("stopLoss", body.stop_loss), ("takeProfit", body.take_profit)):
        if value is not None:  # never accept a protective order we would not place
            raise ApiError(
                422,
                "Validation failed",
                f"{name} is not supported yet: bracket orders are not available in this version",
                field=name,
                code="UNSUPPORTED_FIELD",
            )
    req = OrderRequest(
        client_order_id=body.client_order_id or f"api-{uuid.uuid4().hex}",
        pair=body.pair,
        side=body.side,
        quantity=body.quantity,
        type=body.type,
        price=body.price,
        stop_price=body.stop_price,
        stop_loss=body.stop_loss,
        take_profit=body.take_profit,
        time_in_force=body.time_in_force,
        risk_check=body.risk_check,
        paper_trade=body.paper_trade,
        source="api",
        ts=now_ms(),
    )
    bus = request.app[BUS]
    reply: OrderReply = await ask(  # type: ignore[assignment]
        request, bus.subjects.orders_submit, req, OrderReply, "the risk-gate", req.client_order_id
    )
    if not reply.ok or reply.order is None:
        code = reply.code or "DENIED"
        status, title = (
            (409, "Conflict") if code == "DUPLICATE_CLIENT_ORDER_ID"
            else (503, "Service Unavailable") if code in UNAVAILABLE
            else (422, "Order denied")
        )  # fmt: skip
        raise ApiError(status, title, reply.detail or "the order was denied", field=reply.field, code=code)
    o = reply.order
    placed = PlacedOrder(
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        status=o.status,
        pair=o.pair,
        side=o.side,
        type=o.type,
        quantity=o.quantity,
        price=o.price,
        risk_validation=reply.risk_validation,
        estimated_cost=reply.estimated_cost,
        created_at=o.created_at,
    )
    return json_response(placed, status=201)


def _query_param(request: web.Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if allowed is not None and value not in allowed:
        raise ApiError(
            422, "Validation failed", f"{name} must be one of {', '.join(allowed)}", field=name, code="INVALID_FIELD"
        )
    return value


async def get_orders(request: web.Request) -> web.Response:
    status = _query_param(request, "status", tuple(s.value for s in OrderStatus))
    side = _query_param(request, "side", ("buy", "sell"))
    pair = _query_param(request, "pair")
    limit_raw = _query_param(request, "limit") or "50"
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 500:
        raise ApiError(
            422, "Validation failed", "limit must be an integer from 1 to 500", field="limit", code="INVALID_FIELD"
        )
    q = OrdersQuery(
        status=OrderStatus(status) if status else None,
        side=side,
        pair=pair.upper() if pair else None,  # type: ignore[arg-type]
        limit=int(limit_raw),
    )
    bus = request.app[BUS]
    page: OrdersPage = await ask(request, bus.subjects.query("orders"), q, OrdersPage, "the order-router")  # type: ignore[assignment]
    return json_response(page)


async def get_portfolio(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    snap: PortfolioSnapshot = await ask(
        request,
        bus.subjects.query("portfolio"),
        Empty(),
        PortfolioSnapshot,  # type: ignore[assignment]
        "the portfolio-ledger",
    )
    return json_response(snap)


def create_app(settings: Settings, bus: Bus) -> web.Application:
    middlewares = [problem_middleware]
    if settings.API_TOKEN:
        middlewares.append(auth_middleware(settings.API_TOKEN))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[BUS] = bus
    app[SETTINGS] = settings
    app[HEALTH] = HealthBook(settings, bus)
    app.router.add_get("/api/health", get_health)
    app.router.add_post("/api/orders", post_order)
    app.router.add_get("/api/orders", get_orders)
    app.router.add_get("/api/portfolio", get_portfolio)
    return app


class Gateway:
    """The REST gateway as a component with a start/stop lifecycle, like an actor."""

    name = "gateway"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.app = create_app(settings, bus)
        self.runner: web.AppRunner | None = None
        self.log = logger.bind(actor=self.name)

    async def start(self) -> None:
        await self.app[HEALTH].start()
        # requests in flight at a stop get SHUTDOWN_GRACE_S to finish (the actors still run then)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.HOST, self.settings.PORT, reuse_address=True)
        await site.start()
        self.log.info("REST API on http://{}:{}/api", self.settings.HOST, self.settings.PORT)

    async def stop(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
        await self.app[HEALTH].stop()
        await self.bus.close()
        self.log.info("gateway stopped")
