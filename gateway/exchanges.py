"""The venues: how each one is doing (``GET /api/exchanges``) and a connection test now (``POST
/api/exchanges/test``, the spec's test-connections)."""

from __future__ import annotations

from aiohttp import web

from gateway.common import BUS, HEALTH, ask
from gateway.problems import json_response
from gateway.spec import Endpoint, add
from schemas.messages import Empty, VenueChecks, now_ms
from schemas.rest import ExchangeList, ExchangeView

ROUTER = "the order-router"
DEGRADED_FOR_MS = 60_000  # a venue that failed a call this recently (or uses most of its budget) is degraded
BUSY_BUDGET = 0.9
TEST_TIMEOUT_S = 30.0  # markets read again, balance, clock: a slow venue takes a while


async def get_exchanges(request: web.Request) -> web.Response:
    report = request.app[HEALTH].report()
    now = now_ms()
    views = []
    for name, h in report.exchanges.items():
        if h.status == "disconnected" or h.connected is False:
            status = "down"
        elif (h.last_error_at is not None and now - h.last_error_at < DEGRADED_FOR_MS) or (
            h.rate_limit_used is not None and h.rate_limit_used >= BUSY_BUDGET
        ):
            status = "degraded"
        else:
            status = "up"
        views.append(
            ExchangeView(
                id=name,
                ccxt_id=h.ccxt_id or name,
                status=status,
                updates="stream" if h.update_mode == "push" else h.update_mode,  # (paper pushes: a stream)
                latency_ms=h.last_latency_ms,
                rate_limit_used=h.rate_limit_used,
                last_error=h.last_error,
                last_error_at=h.last_error_at,
                paper=h.paper,
            )
        )
    return json_response(ExchangeList(exchanges=views))


async def test_exchanges(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    checks = await ask(request, bus.subjects.query("venues_test"), Empty(), VenueChecks, ROUTER, timeout=TEST_TIMEOUT_S)
    return json_response(checks)


def register(app: web.Application) -> None:
    t = "exchanges"
    add(
        app,
        Endpoint(
            "GET", "/api/exchanges", get_exchanges, "Each venue: up, down or degraded, updates, latency, last error",
            t, {200: (ExchangeList, "The venues as their sessions last reported")},
        ),
    )  # fmt: skip
    add(
        app,
        Endpoint(
            "POST", "/api/exchanges/test", test_exchanges,
            "Test each venue's connection now: markets, pairs, keys, balance, clock skew, latency", t,
            {200: (VenueChecks, "One result per venue; ok false names the first step that failed")},
            body=None, body_required=False, errors=(503, 504),
        ),
    )  # fmt: skip
