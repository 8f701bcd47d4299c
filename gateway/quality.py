"""Execution quality (issue 20): ``GET /api/execution/quality``, answered by the portfolio-ledger."""

from __future__ import annotations

import re

from aiohttp import web

from gateway.common import BUS, ask, int_param, query_param
from gateway.exchange_param import EXCHANGE, exchange_param
from gateway.problems import ApiError, json_response
from gateway.spec import MAX_TIME, PAIR, TIME, Endpoint, Param, add, q
from schemas.messages import ExecutionQuality, ExecutionQualityQuery

LEDGER = "the portfolio-ledger"
PAIR_RE = re.compile(PAIR.schema["pattern"])
ORDER_ID_RE = re.compile(r"[A-Za-z0-9_:.\-]{1,128}")
ORDER_ID = Param(
    "orderId", "query", {"type": "string", "pattern": "^[A-Za-z0-9_:.\\-]{1,128}$"},
    "one completed order: its figures and each fill's in ``order`` (404: not a completed order kept)",
)  # fmt: skip


def invalid(field: str, detail: str) -> ApiError:
    """The 422 problem of a bad query parameter ``field``."""
    return ApiError(422, "Validation failed", detail, field=field, code="INVALID_FIELD")


def quality_query(request: web.Request) -> ExecutionQualityQuery:
    """The filters of ``?since=&until=&pair=&exchange=``; a bad one is a 422 naming it."""
    since = int_param(request, "since", 0, MAX_TIME)
    until = int_param(request, "until", 0, MAX_TIME)
    if since is not None and until is not None and until <= since:
        raise invalid("until", f"until must be after since ({until} <= {since})")
    pair = query_param(request, "pair")
    if pair is not None and not PAIR_RE.fullmatch(pair):
        raise invalid("pair", f"pair must be BASE_QUOTE (e.g. BTC_USDT), not {pair[:40]!r}")
    order_id = query_param(request, "orderId")
    if order_id is not None and not ORDER_ID_RE.fullmatch(order_id):
        raise invalid("orderId", f"orderId must be an order id (letters, digits, _ : . -), not {order_id[:40]!r}")
    return ExecutionQualityQuery(
        since=since, until=until, pair=pair.upper() if pair else None, exchange=exchange_param(request),
        order_id=order_id,
    )  # fmt: skip


async def get_execution_quality(request: web.Request) -> web.Response:
    query = quality_query(request)
    bus = request.app[BUS]
    answer = await ask(request, bus.subjects.query("execution_quality"), query, ExecutionQuality, LEDGER)
    if query.order_id is not None and answer.order is None:
        raise ApiError(
            404, "Not Found", f"order {query.order_id} is not a completed order of the execution quality kept "
            "(working, unknown, an algorithm's child - see its parent - or outside the filters)",
            field="orderId", code="ORDER_NOT_FOUND",
        )  # fmt: skip
    return json_response(answer)


def register(app: web.Application) -> None:
    add(
        app,
        Endpoint(
            "GET",
            "/api/execution/quality",
            get_execution_quality,
            "Execution quality: slippage against arrival, fill ratio, time to fill, fees",
            "portfolio",
            {200: (ExecutionQuality, "byPair, byExchange, byType, overall: defined in the README")},
            params=(
                q("since", TIME, "orders created at or after (epoch ms)"),
                q("until", TIME, "orders created before (epoch ms); after since"),
                PAIR,
                EXCHANGE,
                ORDER_ID,
            ),
            errors=(404, 422, 503, 504),
            description=(
                "The completed orders the portfolio-ledger keeps (the last 10,000; an algorithm's children counted "
                "in their parent). Slippage in basis points against the arrival mid (the venue's book when the order "
                "was accepted), positive = worse for the trader, fees excluded."
            ),
        ),
    )
