"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright for Python).

The service is real: every actor on the session's nats-server (each test its own bus prefix) and the gateway
over real HTTP on a free port; the browser loads the page from it. Playwright's own browser download is not
used: ``CHROMIUM`` (default ``/usr/bin/chromium``, which ``make setup`` installs when it is missing).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from bus.client import Bus
from bus.embedded import free_port
from config.settings import load_settings
from gateway.app import Gateway
from schemas.subjects import Subjects
from tests.helpers import eventually
from tests.integration.test_actors import System

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PAIRS = "BTC_USDT,ETH_USDT"


@dataclass
class Service:
    """The actors, a gateway on ``port``, and a client of its bus."""

    nats_url: str
    prefix: str
    port: int
    env: dict[str, str]
    system: System
    client: Bus
    http: aiohttp.ClientSession
    gateway: Gateway | None = None
    token: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start_gateway(self) -> None:
        settings = load_settings(self.env)
        bus = await Bus.connect(self.nats_url, name="gateway", subjects=Subjects(self.prefix))
        self.gateway = Gateway(settings, bus)
        await self.gateway.start()

    async def stop_gateway(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, (await r.json(content_type=None) if r.content_length != 0 else None)

    async def order(self, **body: Any) -> dict[str, Any]:
        status, answer = await self.call("POST", "/api/orders", body)
        assert status == 201, answer
        return answer

    async def healthy(self) -> None:
        async def ok() -> bool:
            status, _ = await self.call("GET", "/api/health")
            return status == 200

        await eventually(ok, timeout=20, what="GET /api/health 200")

    async def mid(self, pair: str = "BTC_USDT") -> float:
        """About the pair's price now (the estimated cost of a tiny buy, nothing placed): for a limit that rests."""
        status, answer = await self.call(
            "POST", "/api/orders/validate", {"pair": pair, "side": "buy", "type": "market", "quantity": 0.001}
        )
        assert status == 200 and answer["valid"], answer
        return float(answer["estimatedCost"]) / 0.001


@pytest.fixture
async def make_service(nats_url, prefix, make_bus) -> AsyncIterator[Any]:
    """``await make_service(**settings)``: every actor and a gateway (synthetic market data every 50 ms)."""
    made: list[Service] = []
    async with aiohttp.ClientSession() as http:

        async def make(**extra: str) -> Service:
            env = {
                "NATS_URL": nats_url, "BUS_PREFIX": prefix, "PORT": str(free_port()), "MARKET_DATA_INTERVAL": "50",
                "PAIRS": PAIRS, "PRICE_EVENT_MS": "250", **extra,
            }  # fmt: skip
            system = System(nats_url, load_settings(env))
            await system.start()
            svc = Service(nats_url, prefix, int(env["PORT"]), env, system, await make_bus("client"), http)
            svc.token = extra.get("API_TOKEN", "")
            made.append(svc)
            await svc.start_gateway()
            await svc.healthy()
            return svc

        try:
            yield make
        finally:
            for svc in made:
                await svc.stop_gateway()
                await svc.system.stop()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once per session)
        pytest.fail(f"no Chromium at {CHROMIUM}: `make setup` installs Debian's chromium (or set CHROMIUM)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    async def ready(self, timeout_ms: float = 20_000) -> None:
        await self.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=timeout_ms)

    async def stats(self) -> dict[str, Any]:
        return await self.page.evaluate("() => window.tbx.stats()")

    async def fill_ids(self) -> list[str]:
        return await self.page.locator("#fills tbody tr").evaluate_all("rows => rows.map(r => r.dataset.fillId)")


@pytest.fixture
async def tab(browser) -> AsyncIterator[Any]:
    """``await tab(width=..., height=...)``: a fresh browser context (its own sessionStorage) and page."""
    contexts = []

    async def open_tab(width: int = 1400, height: int = 1800) -> Tab:
        ctx = await browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = await ctx.new_page()
        t = Tab(page)

        def on_console(m: ConsoleMessage) -> None:
            if m.type == "error":
                t.errors.append(f"console: {m.text} at {m.location}")

        page.on("console", on_console)
        page.on("pageerror", lambda e: t.errors.append(f"uncaught: {e}"))
        return t

    try:
        yield open_tab
    finally:
        for ctx in contexts:
            await ctx.close()
