"""The aiohttp gateway: REST in, bus requests out. It imports no actor and keeps no trading state.

Every route is registered through the endpoint table (``gateway/spec.py``), from which the OpenAPI
document is generated. Middlewares, outermost first: problem+json for every error and the request id
(on the answer and on every log line of the request), then the Bearer token when API_TOKEN is set.
CORS (``aiohttp-cors``) lets the dashboard's origins (CORS_ORIGINS) call the API from a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp_cors
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from loguru import logger

from bus.client import Bus
from bus.errors import RequestFailed
from config.settings import Settings, without_credentials
from config.venues import venue_names
from gateway import (
    credentials,
    dashboard,
    exchanges,
    facade,
    openapi,
    orders,
    portfolio,
    positions,
    quality,
    risk,
    signals,
    streams,
    trades,
    transition,
)
from gateway.common import BUS, HEALTH, SETTINGS, SHUTDOWN_GRACE_S, typed_limits
from gateway.health import VERSION, HealthBook
from gateway.problems import REQUEST_ID, auth_middleware, json_response, problem_middleware
from gateway.spec import ENDPOINTS, Endpoint, add
from schemas.messages import Empty, RiskMetricsView, now_ms
from schemas.rest import Health, Status

STARTED_AT: web.AppKey[int] = web.AppKey("started_at", int)


async def get_health(request: web.Request) -> web.Response:
    report = request.app[HEALTH].report()
    return json_response(report, status=200 if report.status == "healthy" else 503)


async def get_status(request: web.Request) -> web.Response:
    """What runs and how it is set: mode, venue, trading state, each actor's status, the limits."""
    s = request.app[SETTINGS]
    report = request.app[HEALTH].report()
    bus = request.app[BUS]
    state, limits = "unknown", {}
    with contextlib.suppress(RequestFailed):
        view = await bus.request(bus.subjects.query("risk"), Empty(), RiskMetricsView, timeout=2.0)
        state, limits = view.trading_state, view.limits
    started = request.app[STARTED_AT]
    return json_response(
        Status(
            service="trading-bot-execution",
            version=VERSION,
            mode=report.mode,
            status=report.status,
            trading_state=state,
            venue=venue_names(s)[0],
            exchanges=venue_names(s),
            pairs=list(s.PAIRS),
            base_currency=s.BASE_CURRENCY,
            bus_prefix=s.BUS_PREFIX,
            nats_url=without_credentials(s.NATS_URL),
            started_at=started,
            uptime_ms=now_ms() - started,
            actors={name: a.status for name, a in report.actors.items()},
            limits=typed_limits(limits),
            services={name: svc.status for name, svc in report.services.items()},
        )
    )


class AccessLog(AbstractAccessLogger):
    """One line per request, with its request id, through loguru."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = response.headers.get("X-Request-Id", "")
        logger.bind(actor="gateway", request_id=rid).info(
            "{} {} {} {:.1f} ms", request.method, request.path_qs, response.status, time * 1000
        )


async def _request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """The request id on every answer, also on streams (SSE, WebSocket) sent before the middleware returns."""
    rid = request.get(REQUEST_ID)
    if rid and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = rid


def create_app(settings: Settings, bus: Bus) -> web.Application:
    middlewares = [problem_middleware]
    if settings.API_TOKEN:
        middlewares.append(auth_middleware(settings.API_TOKEN))
    app = web.Application(middlewares=middlewares, client_max_size=settings.MAX_BODY_BYTES)
    app[BUS] = bus
    app[SETTINGS] = settings
    app[HEALTH] = HealthBook(settings, bus)
    app[ENDPOINTS] = []
    app[STARTED_AT] = now_ms()
    app.on_response_prepare.append(_request_id_header)
    t = "service"
    add(
        app,
        Endpoint(
            "GET",
            "/api/health",
            get_health,
            "Health in the seed's shape (503 when a part is down)",
            t,
            {200: (Health, "Every part up"), 503: (Health, "A required part is down or stale")},
            open=True,
            description="An actor is up when an active instance heartbeats (standbys never make the service "
            "unhealthy); with PARTITIONS > 1 a partitioned actor (signal-intake, order-router, fill-tracker) is up "
            "only when every partition has a fresh active instance. `actors.<name>.instances` lists every instance "
            "(active and hot standbys) heard lately.",
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/status",
            get_status,
            "Mode, venue, trading state, actors, limits",
            t,
            {200: (Status, "The service's status")},
        ),
    )
    orders.register(app)
    signals.register(app)
    portfolio.register(app)
    quality.register(app)
    positions.register(app)
    trades.register(app)
    exchanges.register(app)
    credentials.register(app)
    risk.register(app)
    transition.register(app)
    streams.register(app)
    facade.register(app)
    add(
        app,
        Endpoint(
            "GET",
            "/api/openapi.json",
            openapi.get_openapi,
            "This document (OpenAPI 3.1)",
            t,
            {200: (None, "The OpenAPI document")},
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/docs",
            openapi.get_docs,
            "A browsable page of this document",
            t,
            {200: (None, "HTML")},
            media="text/html",
        ),
    )
    dashboard.register(app)  # the page (not in the OpenAPI document: not part of the API)
    if settings.CORS_ORIGINS:
        options = aiohttp_cors.ResourceOptions(
            allow_credentials=False, expose_headers=("X-Request-Id",), allow_headers="*", max_age=600
        )
        cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(settings.CORS_ORIGINS, options))
        for route in list(app.router.routes()):
            cors.add(route)
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
        # as an actor's: resolved with the reason when this instance cannot go on (its supervisor restarts it)
        self.died: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def fail(self, reason: str) -> None:
        if not self.died.done():
            self.log.error("gateway cannot go on: {}", reason)
            self.died.set_result(reason)

    async def start(self) -> None:
        self.bus.on_lost(self.fail)
        await self.app[HEALTH].start()
        await self.app[trades.FILL_INDEX].start()
        # requests in flight at a stop get SHUTDOWN_GRACE_S to finish (the actors still run then)
        self.runner = web.AppRunner(
            self.app, access_log=logging.getLogger("aiohttp.access"), access_log_class=AccessLog,
            handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S,
        )  # fmt: skip
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.HOST, self.settings.PORT, reuse_address=True)
        await site.start()
        self.log.info("REST API on http://{}:{}/api (docs at /api/docs)", self.settings.HOST, self.settings.PORT)

    async def stop(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
        await self.app[HEALTH].stop()
        await self.bus.close()
        self.log.info("gateway stopped")

    async def abort(self) -> None:
        """As ``Actor.abort``: nothing of this instance runs any more (its supervisor is about to start a fresh
        one): the connection closed at once, the REST site closed, the handlers in hand cancelled and awaited."""
        handlers = self.bus.handler_tasks()
        await self.bus.abort()
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runner.cleanup(), SHUTDOWN_GRACE_S + 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.app[HEALTH].stop(), 1.0)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers)
