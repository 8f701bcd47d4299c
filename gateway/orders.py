"""Order endpoints: place (any type, brackets), read, list, audit trail, modify, cancel, cancel all."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from config.settings import Settings
from config.venues import venue_names
from domain.partitions import merge_newest_first
from gateway.common import BUS, SETTINGS, UNAVAILABLE, ask, choice, int_param, query_param, read_json
from gateway.partitions import ask_each, ask_every, ask_owner, first_found
from gateway.problems import ApiError, json_response
from gateway.spec import MAX_TIME, PAIR, TIME, Endpoint, add, limit, one_of, path, q
from schemas.messages import (
    AlgoSpec,
    CancelOrder,
    CommandReply,
    ModifyOrder,
    Order,
    OrderEventsPage,
    OrderEventsQuery,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    now_ms,
)
from schemas.rest import (
    SIDES,
    AlgoIn,
    CancelAllBody,
    ModifyBody,
    OrderEvents,
    OrderList,
    OrderValidation,
    PlacedOrder,
    PlaceOrder,
)

OPEN = "open"  # ?status=open: every working order (any status but the terminal ones), e.g. a dashboard's
STATUS_FILTER = (*(s.value for s in OrderStatus), OPEN)
CURSOR = r"^[0-9]{1,16}:[A-Za-z0-9_]{1,64}$"
CURSOR_RE = re.compile(CURSOR)


async def post_order(request: web.Request) -> web.Response:
    body: PlaceOrder = await read_json(request, PlaceOrder)  # type: ignore[assignment]
    settings = request.app[SETTINGS]
    if body.paper_trade is False and not settings.LIVE_TRADING:
        raise ApiError(
            422, "Validation failed",
            "paperTrade=false asks for a live order but the service runs in paper mode (PAPER_TRADING=true)",
            field="paperTrade", code="LIVE_TRADING_OFF",
        )  # fmt: skip
    req = _request(body, settings)
    bus = request.app[BUS]
    reply: OrderReply = await ask(  # type: ignore[assignment]
        request, bus.subjects.orders_submit, req, OrderReply, "the risk-gate", req.client_order_id
    )
    if not reply.ok or reply.order is None:
        raise denied(reply, "Order denied", req.client_order_id)
    placed = placed_order(reply)
    return json_response(placed, status=201)


RETRY_LATER = "RETRY_LATER"  # the risk-gate cannot know yet (its view of the books is catching up)
RETRY_AFTER_S = 1


def denied(reply: OrderReply, title: str, client_order_id: str | None = None) -> ApiError:
    """The problem for a refused order: 409 a reused client id, 503 when it cannot be decided now (with
    Retry-After when a retry in a second will be decided), else 422."""
    code = reply.code or "DENIED"
    status, title = (
        (409, "Conflict") if code == "DUPLICATE_CLIENT_ORDER_ID"
        else (503, "Service Unavailable") if code in UNAVAILABLE or code in ("LEDGER_UNAVAILABLE", RETRY_LATER)
        else (422, title)
    )  # fmt: skip
    return ApiError(
        status, title, reply.detail or "the order was denied", field=reply.field, code=code,
        client_order_id=client_order_id if code == RETRY_LATER else None,
        retry_after=RETRY_AFTER_S if code == RETRY_LATER else None,
    )  # fmt: skip


def placed_order(reply: OrderReply) -> PlacedOrder:
    """The seed's answer to a placed order."""
    o = reply.order
    assert o is not None
    return PlacedOrder(
        order_id=o.order_id, client_order_id=o.client_order_id, status=o.status, pair=o.pair, side=o.side,
        type=o.type, quantity=o.quantity, price=o.price, risk_validation=reply.risk_validation,
        estimated_cost=reply.estimated_cost, linked_orders=o.linked_orders, created_at=o.created_at,
        paper_trade=o.paper_trade, venue=o.venue, venue_order_id=o.venue_order_id, exchange=o.venue,
    )  # fmt: skip


def exchange_of(raw: str | None, settings: Settings) -> str | None:
    """The venue an order names (``exchange``, any case), checked against the configured venues: a name not
    among them is a 422 naming the field and the venues there are. None: not named (the router's policy)."""
    if raw is None:
        return None
    name = raw.strip().lower()
    names = venue_names(settings)
    if name not in names:
        raise ApiError(
            422, "Validation failed",
            f"exchange {raw!r} is not a configured venue (EXCHANGES: {', '.join(names)})",
            field="exchange", code="UNKNOWN_EXCHANGE",
        )  # fmt: skip
    return name


def _request(body: PlaceOrder, settings: Settings) -> OrderRequest:
    exchange = exchange_of(body.exchange, settings)
    return OrderRequest(
        client_order_id=body.client_order_id or f"api-{uuid.uuid4().hex}",
        pair=body.pair.upper(),
        side=choice("side", body.side, SIDES),  # type: ignore[arg-type]
        quantity=body.quantity,
        type=body.type,
        price=body.price,
        stop_price=body.stop_price,
        stop_loss=body.stop_loss,
        take_profit=body.take_profit,
        time_in_force=body.time_in_force or settings.DEFAULT_TIME_IN_FORCE,  # type: ignore[arg-type]
        expire_at=body.expire_at,
        post_only=body.post_only,
        reduce_only=body.reduce_only,
        risk_check=body.risk_check,
        paper_trade=body.paper_trade,
        source="api",
        ts=now_ms(),
        exchange=exchange,
        algo=_algo(body.algo),
    )


def _algo(body: AlgoIn | None) -> AlgoSpec | None:
    if body is None:
        return None
    return AlgoSpec(
        duration_ms=body.duration_ms, slices=body.slices, size_jitter=body.size_jitter, time_jitter=body.time_jitter,
        seed=body.seed, profile=body.profile, lookback_ms=body.lookback_ms, display_quantity=body.display_quantity,
    )  # fmt: skip


async def get_orders(request: web.Request) -> web.Response:
    status = query_param(request, "status", STATUS_FILTER)
    side = query_param(request, "side", ("buy", "sell"))
    pair = query_param(request, "pair")
    q = OrdersQuery(
        status=OrderStatus(status) if status and status != OPEN else None,
        open=status == OPEN,
        side=side,  # type: ignore[arg-type]
        pair=pair.upper() if pair else None,
        since=int_param(request, "since", 0, MAX_TIME),
        until=int_param(request, "until", 0, MAX_TIME),
        cursor=_cursor(request),
        limit=int_param(request, "limit", 1, 500, 50) or 50,
    )
    bus = request.app[BUS]
    if q.pair is not None or request.app[SETTINGS].PARTITIONS <= 1:  # one partition has them all
        subject = bus.subjects.query("orders")
        page = await ask_owner(request, subject, q.pair or "", q, OrdersPage, "the order-router")
        return json_response(page)
    # every partition's page, merged newest first (a partition whose page stopped early bounds the merged one)
    pages: list[OrdersPage] = await ask_every(request, bus.subjects.query("orders"), q, OrdersPage, "the order-router")
    orders, more = merge_newest_first(
        [(p.orders, _cursor_rank(p.next_cursor)) for p in pages], q.limit, lambda o: (o.created_at, o.order_id)
    )
    return json_response(OrdersPage(orders=orders, next_cursor=f"{more[0]}:{more[1]}" if more else None))


def _cursor_rank(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    created, _, oid = cursor.partition(":")
    return int(created), oid


def _cursor(request: web.Request) -> str | None:
    cursor = query_param(request, "cursor")
    if cursor is not None and not CURSOR_RE.fullmatch(cursor):
        raise ApiError(
            422,
            "Validation failed",
            "cursor must be a nextCursor from a previous page",
            field="cursor",
            code="INVALID_FIELD",
        )
    return cursor


async def _one(request: web.Request) -> Order:
    oid = request.match_info["order_id"]
    bus = request.app[BUS]
    # every partition is asked (an order id does not name its pair): the one that has it answers with it
    answers = await ask_each(
        request, bus.subjects.query("orders"), OrdersQuery(order_id=oid), OrdersPage, "the order-router"
    )
    page: OrdersPage | None = first_found(answers, lambda p: bool(p.orders))
    if page is None:
        raise ApiError(404, "Not Found", f"no order {oid}", field="orderId", code="ORDER_NOT_FOUND")
    return page.orders[0]


async def get_order(request: web.Request) -> web.Response:
    return json_response(await _one(request))


async def get_order_events(request: web.Request) -> web.Response:
    order = await _one(request)
    bus = request.app[BUS]
    page: OrderEventsPage = await ask_owner(  # (the partition of the order's pair)
        request, bus.subjects.query("order_events"), order.pair, OrderEventsQuery(order_id=order.order_id),
        OrderEventsPage, "the order-router",
    )  # fmt: skip
    return json_response(OrderEvents(order_id=order.order_id, events=page.events))


def _command_failed(reply: CommandReply) -> ApiError:
    code = reply.code or "REFUSED"
    closed = bool(reply.orders) and reply.orders[0].closed_at is not None
    if code == "ORDER_NOT_FOUND":
        return ApiError(404, "Not Found", reply.detail or "no such order", field="orderId", code=code)
    if closed:
        return ApiError(409, "Conflict", reply.detail or "the order is closed", field=reply.field, code=code)
    return ApiError(422, "Refused", reply.detail or "refused", field=reply.field, code=code)


async def delete_order(request: web.Request) -> web.Response:
    oid = request.match_info["order_id"]
    bus = request.app[BUS]
    cmd = CancelOrder(order_id=oid, reason="canceled by request")
    reply = await _command(request, bus.subjects.orders_cancel, cmd)
    if not reply.ok:
        raise _command_failed(reply)
    return json_response(reply.orders[0])


async def patch_order(request: web.Request) -> web.Response:
    oid = request.match_info["order_id"]
    body: ModifyBody = await read_json(request, ModifyBody)  # type: ignore[assignment]
    bus = request.app[BUS]
    cmd = ModifyOrder(order_id=oid, quantity=body.quantity, price=body.price, stop_price=body.stop_price)
    reply = await _command(request, bus.subjects.orders_modify, cmd)
    if not reply.ok:
        raise _command_failed(reply)
    return json_response(reply.orders[0])


async def cancel_all(request: web.Request) -> web.Response:
    body = CancelAllBody()
    if request.can_read_body:
        body = await read_json(request, CancelAllBody)  # type: ignore[assignment]
    bus = request.app[BUS]
    cmd = CancelOrder(all=True, pair=body.pair.upper() if body.pair else None, reason="cancel-all")
    if cmd.pair is not None:
        reply = await ask_owner(request, bus.subjects.orders_cancel, cmd.pair, cmd, CommandReply, "the order-router")
        return json_response(OrderList(orders=reply.orders))
    # every partition's working orders (a partition that does not answer: its problem, after the others canceled;
    # a cancel-all asked again is harmless)
    replies = await ask_every(request, bus.subjects.orders_cancel, cmd, CommandReply, "the order-router")
    orders = sorted((o for r in replies for o in r.orders), key=lambda o: (o.created_at, o.order_id))
    return json_response(OrderList(orders=orders))


async def _command(request: web.Request, subject: str, cmd: CancelOrder | ModifyOrder) -> CommandReply:
    """A cancel or modify of one order by id, asked of every partition: the answer of the one that has the order;
    ORDER_NOT_FOUND only when every partition said so."""
    answers = await ask_each(request, subject, cmd, CommandReply, "the order-router")
    found = first_found(answers, lambda r: r.ok or r.code != "ORDER_NOT_FOUND")
    return found if found is not None else answers[0]


async def validate_order(request: web.Request) -> web.Response:
    """Every check of ``POST /api/orders`` (the order's own, the portfolio limits, the sizing advice and
    the user's risk service), nothing placed, nothing reserved: 200 with ``valid`` and the reasons."""
    body: PlaceOrder = await read_json(request, PlaceOrder)  # type: ignore[assignment]
    req = _request(body, request.app[SETTINGS])
    bus = request.app[BUS]
    reply: OrderReply = await ask(request, bus.subjects.orders_validate, req, OrderReply, "the risk-gate")  # type: ignore[assignment]
    return json_response(
        OrderValidation(
            valid=reply.ok,
            code=reply.code,
            field=reply.field,
            detail=reply.detail,
            risk_validation=reply.risk_validation,
            estimated_cost=reply.estimated_cost,
        )
    )


ORDER_ID = path("order_id", "ORD_YYYYMMDD_NNNNNN")
ORDER_FILTERS = (
    q("status", one_of(STATUS_FILTER), "a status, or open: every working order (not filled, canceled, rejected, "
      "expired or denied)"), PAIR, q("side", one_of(["buy", "sell"])),
    q("since", TIME, "created at or after (epoch ms)"), q("until", TIME, "created before (epoch ms)"),
    limit(500, 50), q("cursor", {"type": "string", "pattern": CURSOR}, "nextCursor of the previous page"),
)  # fmt: skip


def register(app: web.Application) -> None:
    t = "orders"
    add(
        app,
        Endpoint(
            "POST",
            "/api/orders",
            post_order,
            "Place an order (any type; a bracket with stopLoss / takeProfit; twap / vwap / iceberg with algo)",
            t,
            {201: (PlacedOrder, "The order exists (the seed's answer)")},
            body=PlaceOrder,
            errors=(409, 502, 503, 504),
            description=(
                "A clientOrderId that already names an order is answered with that order (201), before any "
                "limit, state or rate check; other content under that id is a 409. 503 with code RETRY_LATER "
                "and a Retry-After header: the risk-gate cannot know yet (its view of the books is catching "
                "up, e.g. after a NATS reconnect); retry after that many seconds with the same clientOrderId. "
                "type twap | vwap | iceberg: an execution algorithm (a parent order whose children trade), its "
                "parameters in algo (durationMs, slices, sizeJitter, timeJitter, seed, profile, lookbackMs, "
                "displayQuantity); a parameter that cannot make a schedule is a 422 naming the field "
                "(e.g. algo.slices). GET /api/orders/{id} of a parent lists its children."
            ),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/orders/validate",
            validate_order,
            "Every check of an order, nothing placed",
            t,
            {200: (OrderValidation, "The verdict: valid, or the denial's code, field and reason")},
            body=PlaceOrder,
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/orders",
            get_orders,
            "Orders, newest first, paged",
            t,
            {200: (OrdersPage, "A page of orders with their fills")},
            params=ORDER_FILTERS,
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/orders/cancel-all",
            cancel_all,
            "Cancel every working order (or one pair's)",
            t,
            {200: (OrderList, "The orders canceled")},
            body=CancelAllBody,
            body_required=False,
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/orders/{order_id}",
            get_order,
            "One order, with its fills",
            t,
            {200: (Order, "The order")},
            params=(ORDER_ID,),
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "PATCH",
            "/api/orders/{order_id}",
            patch_order,
            "Modify a working order",
            t,
            {200: (Order, "The order after the change")},
            body=ModifyBody,
            params=(ORDER_ID,),
            errors=(409, 503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "DELETE",
            "/api/orders/{order_id}",
            delete_order,
            "Cancel an order",
            t,
            {200: (Order, "The order, canceled")},
            params=(ORDER_ID,),
            errors=(409, 503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/orders/{order_id}/events",
            get_order_events,
            "An order's audit trail",
            t,
            {200: (OrderEvents, "Every state change, with the order after it")},
            params=(ORDER_ID,),
            errors=(503, 504),
        ),
    )
