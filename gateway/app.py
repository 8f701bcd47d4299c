"""The aiohttp gateway: REST in, bus requests out. It imports no actor and keeps no trading state."""

from __future__ import annotations

import contextlib

from aiohttp import web
from loguru import logger

from bus.client import Bus
from config.settings import Settings
from gateway import orders, portfolio, risk, signals
from gateway.common import BUS, HEALTH, MAX_BODY, SETTINGS, SHUTDOWN_GRACE_S
from gateway.health import HealthBook
from gateway.problems import auth_middleware, json_response, problem_middleware


async def get_health(request: web.Request) -> web.Response:
    report = request.app[HEALTH].report()
    return json_response(report, status=200 if report.status == "healthy" else 503)


def create_app(settings: Settings, bus: Bus) -> web.Application:
    middlewares = [problem_middleware]
    if settings.API_TOKEN:
        middlewares.append(auth_middleware(settings.API_TOKEN))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[BUS] = bus
    app[SETTINGS] = settings
    app[HEALTH] = HealthBook(settings, bus)
    app.router.add_get("/api/health", get_health)
    orders.register(app)
    portfolio.register(app)
    risk.register(app)
    signals.register(app)
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
