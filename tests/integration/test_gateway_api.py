"""The REST gateway against its own contract: every answer checked against the OpenAPI document it serves.

Everything is real: nats-server, every actor, the gateway on a TCP port, aiohttp as the client. The
document is fetched from ``GET /api/openapi.json`` of the gateway under test, and ``Api.call`` checks
every answer against it: the operation found by method and path template, the status documented for
it, the content type documented for that status (``application/problem+json`` for the errors) and the
JSON body valid against the schema (``jsonschema`` Draft 2020-12, ``#/components/schemas/X`` resolved
in the document). MARKET_DATA=none: the only books are the ones the tests publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jsonschema
import msgspec
import pytest
from jsonschema.exceptions import best_match
from loguru import logger
from multidict import CIMultiDictProxy

import gateway.streams
from bus.client import Bus
from config.settings import ConfigError, load_settings
from gateway.app import Gateway
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_order_types import publish_book, settings_for

RULES = {"tickSize": "0.01", "amountStep": "0.001", "minNotional": "1", "makerFee": "0.0005", "takerFee": "0.001"}
EXTRA = {
    "MARKET_DATA": "none",
    "PAIRS": "BTC_USDT,ETH_USDT",
    "PAPER_MARKETS": json.dumps({"BTC_USDT": RULES, "ETH_USDT": RULES}),
    "MAX_SLIPPAGE_PERCENT": "0",
    "DEFAULT_ORDER_TIMEOUT": "0",
    "MAX_ORDERS_PER_SECOND": "1000",
}
JSON_CT = "application/json"
PROBLEM_CT = "application/problem+json"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DASHBOARD = "http://localhost:3005"
MISSING_ORDER = "ORD_20990101_999999"
README = Path(__file__).resolve().parents[2] / "README.md"
TCP_ESTABLISHED = 1
STACK_FRAME = re.compile(r'File "[^"]+", line \d+')


# -- the contract -------------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    ctype: str
    headers: CIMultiDictProxy[str]
    raw: bytes
    body: Any = None


def _template_re(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


class Contract:
    """The OpenAPI document of one gateway, and the check of any answer against it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        # literal templates first: POST /api/orders/cancel-all is not POST /api/orders/{order_id}
        self.templates = sorted(doc["paths"], key=lambda t: (t.count("{"), t))
        self.patterns = {t: _template_re(t) for t in self.templates}
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}

    def validator(self, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            full = {"$schema": SCHEMA_DIALECT, "components": self.doc["components"], **schema}
            self._validators[key] = jsonschema.Draft202012Validator(full)
        return self._validators[key]

    def validate(self, schema: dict[str, Any], instance: object, what: str) -> None:
        error = best_match(self.validator(schema).iter_errors(instance))
        assert error is None, f"{what}: {error.message} at {list(error.absolute_path)} (schema {schema})"

    def component(self, name: str) -> dict[str, Any]:
        assert name in self.doc["components"]["schemas"], name
        return {"$ref": f"#/components/schemas/{name}"}

    def find(self, method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
        """(template, operation): (None, None) no such path; (template, None) no such method on it."""
        matching = [t for t in self.templates if self.patterns[t].fullmatch(path)]
        for t in matching:
            if (op := self.doc["paths"][t].get(method.lower())) is not None:
                return t, op
        return (matching[0] if matching else None), None

    def documented(self, method: str, path: str, status: int) -> dict[str, Any]:
        template, op = self.find(method, path)
        assert op is not None, f"{method} {path} is not an operation of the document"
        responses = op["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}; documented: {sorted(responses)}"
        return responses[str(status)]

    def check(self, method: str, path_qs: str, r: Reply) -> Any:
        """Every answer: documented status and content type, a body valid against the schema."""
        path = urlsplit(path_qs).path
        what = f"{method} {path_qs} -> {r.status}"
        text = r.raw.decode("utf-8", "replace")
        assert "Traceback" not in text and not STACK_FRAME.search(text), f"{what}: a stack trace in the body"
        assert r.headers.get("X-Request-Id"), f"{what}: no X-Request-Id"
        if 200 <= r.status < 300:
            assert r.ctype != PROBLEM_CT, f"{what}: a success answered as a problem"
        template, op = self.find(method, path)
        schema: dict[str, Any] | None
        if method == "OPTIONS" and template is not None:  # a CORS preflight, not an operation
            assert r.status in (200, 403), what
            schema = self.component("Problem") if r.ctype == PROBLEM_CT else None
        elif template is None:
            assert (r.status, r.ctype) == (404, PROBLEM_CT), f"{what}: no such path must be a 404 problem"
            schema = self.component("Problem")
        elif op is None:
            assert (r.status, r.ctype) == (405, PROBLEM_CT), f"{what}: no such method must be a 405 problem"
            allowed = {m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()}
            assert allowed and method not in allowed, f"{what}: Allow {allowed}"
            schema = self.component("Problem")
        else:
            resp = self.documented(method, path, r.status)
            content = resp.get("content")
            if content:
                assert r.ctype in content, f"{what}: content type {r.ctype}, documented {sorted(content)}"
                schema = content[r.ctype].get("schema")
            elif r.status >= 400:
                assert r.ctype == PROBLEM_CT, f"{what}: an error answered as {r.ctype}"
                schema = self.component("Problem")
            else:
                schema = None
        if r.status >= 400 and r.ctype != PROBLEM_CT:
            assert (method, path, r.status) == ("GET", "/api/health", 503), f"{what}: an error not as a problem"
        if r.ctype not in (JSON_CT, PROBLEM_CT):
            return text
        body = json.loads(r.raw)
        if schema is not None and schema.get("type") != "string":
            self.validate(schema, body, what)
        if r.ctype == PROBLEM_CT:
            assert body["status"] == r.status and body["title"] and body["detail"], what
            assert body["requestId"] == r.headers["X-Request-Id"], what
        return body


# -- the client -----------------------------------------------------------------------------------------------
@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    bus: Bus
    gateway: Gateway
    token: str | None = None
    contract: Contract = field(init=False)

    async def load_contract(self) -> None:
        async with self.http.get(self.base + "/api/openapi.json", headers=self._auth()) as r:
            reply = Reply(r.status, r.content_type, r.headers, await r.read())
        assert (reply.status, reply.ctype) == (200, JSON_CT)
        doc = json.loads(reply.raw)
        assert doc["openapi"] == "3.1.0"
        self.contract = Contract(doc)
        self.contract.check("GET", "/api/openapi.json", reply)  # the fetch itself answers by the contract

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(
        self, method: str, path: str, body: object = None, headers: dict[str, str | None] | None = None
    ) -> Reply:
        """One request, its answer checked against the contract. ``body``: bytes are sent as they are
        (as application/json unless ``headers`` say otherwise), anything else as JSON. A header set to
        None is not sent."""
        hdrs: dict[str, str | None] = dict(self._auth())
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = JSON_CT
        hdrs.update(headers or {})
        sent = {k: v for k, v in hdrs.items() if v is not None}
        async with self.http.request(method, self.base + path, data=data, headers=sent) as r:
            reply = Reply(r.status, r.content_type, r.headers, await r.read())
        reply.body = self.contract.check(method, path, reply)
        return reply

    async def ok(self, method: str, path: str, body: object = None, status: int = 200) -> Any:
        r = await self.call(method, path, body)
        assert (r.status, r.ctype) == (status, JSON_CT), (method, path, r.status, r.body)
        return r.body

    async def place(self, **body: object) -> dict[str, Any]:
        return await self.ok("POST", "/api/orders", body, 201)

    async def until(self, order_id: str, *statuses: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            o = await self.ok("GET", f"/api/orders/{order_id}")
            return o if o["status"] in statuses else None

        return await eventually(check, what=f"{order_id} in {statuses}")

    async def filled_buy(self, pair: str = "BTC_USDT", quantity: float = 0.1) -> str:
        """A market buy, waited for until its fill is in the FILLS stream."""
        oid = (await self.place(pair=pair, side="buy", quantity=quantity))["orderId"]
        await self.until(oid, "filled")

        async def stored() -> bool:
            return bool((await self.ok("GET", f"/api/trades?orderId={oid}"))["trades"])

        await eventually(stored, what=f"the fill of {oid}")
        return oid

    async def book(self, pair: str = "BTC_USDT", bid: str = "99.90", ask: str = "100.00", size: str = "50") -> None:
        await publish_book(self.bus, [(bid, size)], [(ask, size)], pair=pair)

    @contextlib.asynccontextmanager
    async def sse(self, query: str = "", headers: dict[str, str] | None = None) -> AsyncIterator[SseClient]:
        url = self.base + "/api/stream" + query
        timeout = aiohttp.ClientTimeout(total=60)
        async with self.http.get(url, headers={**self._auth(), **(headers or {})}, timeout=timeout) as r:
            self.contract.documented("GET", "/api/stream", r.status)
            assert (r.status, r.content_type) == (200, "text/event-stream"), r.status
            content = self.contract.documented("GET", "/api/stream", 200)["content"]
            assert "text/event-stream" in content
            yield SseClient(r)

    @contextlib.asynccontextmanager
    async def ws(
        self, query: str = "", headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        url = self.base + "/api/ws" + query
        async with self.http.ws_connect(url, headers={**self._auth(), **(headers or {})}) as sock:
            self.contract.documented("GET", "/api/ws", 101)  # ws_connect only returns on a 101
            yield sock


@dataclass
class SseClient:
    """text/event-stream read line by line: {"id", "event", "data"} per event, comments skipped."""

    resp: aiohttp.ClientResponse

    async def next(self, timeout: float = 10.0) -> dict[str, str]:
        async def read() -> dict[str, str]:
            event: dict[str, str] = {}
            data: list[str] = []
            while True:
                line = await self.resp.content.readline()
                if not line:
                    raise EOFError("the event stream ended")
                text = line.decode().rstrip("\r\n")
                if not text:
                    if data or event:
                        return {**event, "data": "\n".join(data)}
                    continue
                if text.startswith(":"):
                    continue
                name, _, value = text.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    event[name] = value

        return await asyncio.wait_for(read(), timeout)


Launch = Callable[..., Awaitable[Api]]


@pytest.fixture
async def launch(nats_url, prefix, make_bus) -> AsyncIterator[Launch]:
    """Start every actor (once) and a gateway with EXTRA and the given settings; everything stopped after."""
    gateways: list[Gateway] = []
    systems: list[System] = []
    clients: list[Bus] = []
    async with aiohttp.ClientSession() as http:

        async def start(**extra: str) -> Api:
            env = {**EXTRA, **extra}
            if not systems:
                sut = System(nats_url, settings_for(nats_url, prefix, **env))
                systems.append(sut)
                await sut.start()
            gw, base = await start_gateway(nats_url, prefix, **env)
            gateways.append(gw)
            if not clients:
                clients.append(await make_bus("client"))
            api = Api(http, base, clients[0], gw, token=extra.get("API_TOKEN") or None)
            await api.load_contract()
            return api

        try:
            yield start
        finally:
            for gw in gateways:
                await gw.stop()
            for sut in systems:
                await sut.stop()


@pytest.fixture
async def api(launch) -> Api:
    return await launch()


def problem(r: Reply, status: int, field: str | None = None, code: str | None = None) -> dict[str, Any]:
    assert (r.status, r.ctype) == (status, PROBLEM_CT), (r.status, r.body)
    p = r.body
    assert p.get("field") == field, p
    if code is not None:
        assert p["code"] == code, p
    return p


# -- the document ---------------------------------------------------------------------------------------------
def _readme_routes() -> set[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("## REST API") : text.index("### Live events")]
    found = re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^`\s]*)`", section)
    return {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in found}


async def test_the_openapi_document_is_3_1_and_names_every_route_of_the_app(api):
    r = await api.call("GET", "/api/openapi.json")
    assert (r.status, r.ctype) == (200, JSON_CT)
    doc = r.body
    assert doc == api.contract.doc and doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema({"$schema": SCHEMA_DIALECT, **schema})
    operations = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    every = {
        (r.method, r.resource.canonical) for r in api.gateway.app.router.routes() if r.method not in ("OPTIONS", "HEAD")
    }
    routes = {(m, p) for m, p in every if p.startswith("/api/")}
    assert operations == routes
    # the rest is the dashboard's page and files (gateway/dashboard: a page, not part of the API)
    assert every - routes == {("GET", "/"), ("GET", "/dashboard"), ("GET", "/dashboard/static/{name}")}
    assert {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in operations} == _readme_routes()
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for template, ops in doc["paths"].items():
        declared = set(re.findall(r"\{([^}]+)\}", template))
        for method, op in ops.items():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path" and p["required"]}
            assert params == declared, (method, template)
            assert op["responses"] and all(resp["description"] for resp in op["responses"].values())
            for status, resp in op["responses"].items():
                if int(status) >= 400 and (method, template) != ("get", "/api/health"):
                    assert resp["content"] == {PROBLEM_CT: {"schema": problem_ref}}, (method, template, status)
            for schema in [c["schema"] for resp in op["responses"].values() for c in resp.get("content", {}).values()]:
                api.contract.validator(schema)  # every $ref resolves
                if "$ref" in schema:
                    assert schema["$ref"].removeprefix("#/components/schemas/") in doc["components"]["schemas"]


async def test_the_docs_page_is_local_html_without_a_cdn(api):
    r = await api.call("GET", "/api/docs")
    assert (r.status, r.ctype) == (200, "text/html")
    page = r.body
    assert "<html" in page.lower() and "/api/openapi.json" in page
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page, flags=re.IGNORECASE)
    for tag in tags:
        for url in re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", tag, flags=re.IGNORECASE):
            assert not re.match(r"^(?:https?:)?//", url), tag
    assert not re.search(r"@import\s+(?:url\()?['\"]?(?:https?:)?//", page)
    assert not re.search(r"""\bimport\s*(?:\(|[^;]*?from\s*)['"](?:https?:)?//""", page)


# -- every endpoint, happy path -------------------------------------------------------------------------------
async def test_health_and_status(api):
    async def healthy() -> Any:
        r = await api.call("GET", "/api/health")
        return r.body if r.status == 200 else None

    health = await eventually(healthy, what="a healthy gateway")
    assert health["status"] == "healthy" and health["mode"] == "paper"
    assert "md-feed" not in health["actors"]  # MARKET_DATA=none
    status = await api.ok("GET", "/api/status")
    assert (status["mode"], status["venue"], status["tradingState"]) == ("paper", "paper", "ACTIVE")
    assert status["pairs"] == ["BTC_USDT", "ETH_USDT"] and status["baseCurrency"] == "USDT"
    assert status["actors"] and all(s == "running" for s in status["actors"].values())
    assert "MAX_POSITION_SIZE" in status["limits"] and status["uptimeMs"] >= 0


async def test_place_list_read_and_audit_an_order(api):
    await api.book()
    placed = await api.place(pair="BTC_USDT", side="buy", quantity=0.5, clientOrderId="api-life-1")
    oid = placed["orderId"]
    assert (placed["clientOrderId"], placed["status"], placed["type"]) == ("api-life-1", "submitted", "market")
    order = await api.until(oid, "filled")
    assert order["filledQuantity"] == 0.5 and len(order["fills"]) == 1
    page = await api.ok("GET", "/api/orders")
    assert [o["orderId"] for o in page["orders"]] == [oid]
    trail = await api.ok("GET", f"/api/orders/{oid}/events")
    assert trail["orderId"] == oid and trail["events"][0]["event"] == "submitted"
    assert trail["events"][-1]["event"] == "filled"


async def test_validate_places_nothing(api):
    await api.book()
    v = await api.ok("POST", "/api/orders/validate", {"pair": "BTC_USDT", "side": "buy", "quantity": 0.5})
    assert v["valid"] is True and v["estimatedCost"] == 50 and v["riskValidation"]["passed"] is True
    too_big = {"pair": "BTC_USDT", "side": "buy", "quantity": 1000, "type": "limit", "price": 99}  # 99,000 > 50,000
    v = await api.ok("POST", "/api/orders/validate", too_big)
    assert (v["valid"], v["code"], v["field"]) == (False, "INSUFFICIENT_BALANCE", "quantity")
    assert "INSUFFICIENT_BALANCE" in v["detail"]
    assert (await api.ok("GET", "/api/orders"))["orders"] == []  # neither was placed


async def test_modify_cancel_and_cancel_all_resting_limits(api):
    await api.book(bid="98.00", ask="100.00")
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=97))["orderId"]
    await api.until(oid, "accepted")
    o = await api.ok("PATCH", f"/api/orders/{oid}", {"price": 97.5})
    assert (o["orderId"], o["price"], o["status"]) == (oid, 97.5, "accepted")
    o = await api.ok("DELETE", f"/api/orders/{oid}")
    assert (o["orderId"], o["status"]) == (oid, "canceled")
    rest = [
        (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=price))["orderId"]
        for price in (95, 96)
    ]
    for other in rest:
        await api.until(other, "accepted")
    canceled = await api.ok("POST", "/api/orders/cancel-all", {})
    assert sorted(o["orderId"] for o in canceled["orders"]) == sorted(rest)
    assert all(o["status"] == "canceled" for o in canceled["orders"])
    assert (await api.ok("POST", "/api/orders/cancel-all")) == {"orders": []}


async def test_trades_page_newest_first_and_filter_by_pair_and_order(api):
    await api.book()
    await api.book(pair="ETH_USDT", bid="9.99", ask="10.00")
    first = await api.filled_buy("BTC_USDT")
    eth = await api.filled_buy("ETH_USDT", 1)
    last = await api.filled_buy("BTC_USDT")
    page = await api.ok("GET", "/api/trades?limit=1")
    assert [t["orderId"] for t in page["trades"]] == [last] and page["nextCursor"]
    page = await api.ok("GET", f"/api/trades?limit=1&cursor={page['nextCursor']}")
    assert [t["orderId"] for t in page["trades"]] == [eth]  # the older fill
    btc = await api.ok("GET", "/api/trades?pair=BTC_USDT&limit=1")
    assert [t["orderId"] for t in btc["trades"]] == [last]
    older = await api.ok("GET", f"/api/trades?pair=BTC_USDT&limit=1&cursor={btc['nextCursor']}")
    assert [(t["orderId"], t["pair"]) for t in older["trades"]] == [(first, "BTC_USDT")]
    assert older.get("nextCursor") is None  # nothing older: no cursor (left out, as every default)
    one = await api.ok("GET", f"/api/trades?orderId={first}")
    assert [t["orderId"] for t in one["trades"]] == [first] and one["trades"][0]["quantity"] == 0.1
    everything = await api.ok("GET", "/api/trades")
    assert [t["orderId"] for t in everything["trades"]] == [last, eth, first] and everything.get("nextCursor") is None


async def test_a_signal_executes_and_is_listed(api):
    await api.book()
    sid = f"SIG-API-{uuid.uuid4().hex[:8]}"
    body = {
        "pair": "BTC_USDT",
        "signal": "BUY",
        "confidence": 0.9,
        "source": "apitest",
        "quantity": 0.1,
        "signalId": sid,
    }
    ev = await api.ok("POST", "/api/signals/execute", body)
    assert (ev["signalId"], ev["status"], ev["pair"]) == (sid, "executed", "BTC_USDT") and ev["orders"]
    page = await api.ok("GET", f"/api/signals?signalId={sid}")
    assert [(s["signalId"], s["status"]) for s in page["signals"]] == [(sid, "executed")]
    assert sid in [s["signalId"] for s in (await api.ok("GET", "/api/signals?status=executed"))["signals"]]


async def test_portfolio_positions_close_and_history(launch):
    # 500 ms of venue latency: a close order is still working when it is asked for the second time
    api = await launch(PAPER_LATENCY_MS="500")
    await api.book()
    await api.book(pair="ETH_USDT", bid="9.99", ask="10.00")
    snap = await api.ok("GET", "/api/portfolio")
    assert snap["summary"]["totalValue"] == 50000 and snap["positions"] == []
    problem(await api.call("POST", "/api/positions/BTC_USDT/close"), 404, "pair", "NO_POSITION")
    await api.filled_buy("BTC_USDT", 0.5)

    async def position() -> Any:
        positions = (await api.ok("GET", "/api/positions?pair=BTC_USDT"))["positions"]
        return positions[0] if positions else None

    pos = await eventually(position, what="the BTC position")
    assert (pos["pair"], pos["side"], pos["quantity"]) == ("BTC_USDT", "long", 0.5)
    refreshed = await api.ok("POST", "/api/portfolio/refresh")
    assert [p["pair"] for p in refreshed["positions"]] == ["BTC_USDT"]
    close = await api.ok("POST", "/api/positions/BTC_USDT/close", status=201)
    again = await api.ok("POST", "/api/positions/btc_usdt/close", status=201)
    assert again["orderId"] == close["orderId"] and (close["side"], close["quantity"]) == ("sell", 0.5)
    await api.until(close["orderId"], "filled")

    async def closed() -> bool:
        return (await api.ok("GET", "/api/positions"))["positions"] == []

    await eventually(closed, what="no position left")
    problem(await api.call("POST", "/api/positions/BTC_USDT/close"), 404, "pair", "NO_POSITION")
    history = await api.ok("GET", "/api/positions/history?pair=BTC_USDT")
    assert [(c["pair"], c["side"]) for c in history["positions"]] == [("BTC_USDT", "long")]
    await api.filled_buy("ETH_USDT", 1)
    await eventually(lambda: _has_position(api, "ETH_USDT"), what="the ETH position")
    out = await api.ok("POST", "/api/positions/close-all")
    assert [(o["pair"], o["side"], o["quantity"]) for o in out["orders"]] == [("ETH_USDT", "sell", 1)]
    assert out.get("failed", {}) == {}
    perf = await api.ok("GET", "/api/performance")
    assert perf["trades"]["roundTrips"] >= 1


async def _has_position(api: Api, pair: str) -> bool:
    return bool((await api.ok("GET", f"/api/positions?pair={pair}"))["positions"])


async def test_risk_config_emergency_stop_alerts_and_resume(api):
    await api.book()
    metrics = await api.ok("GET", "/api/risk/metrics")
    assert metrics["tradingState"] == "ACTIVE"
    cfg = await api.ok("PUT", "/api/risk/config", {"maxOrdersPerSecond": 500})
    assert cfg["limits"]["MAX_ORDERS_PER_SECOND"] == 500
    stop = await api.ok("POST", "/api/risk/emergency-stop", {"reason": "api test"})
    assert stop["state"] == "HALTED" and "api test" in stop["reason"]
    p = problem(await api.call("POST", "/api/orders", {"pair": "BTC_USDT", "side": "buy", "quantity": 0.1}), 503)
    assert p["code"] == "TRADING_HALTED" and "halted" in p["detail"]

    async def alerted() -> Any:
        alerts = (await api.ok("GET", "/api/alerts"))["alerts"]
        return alerts if any(a["code"] == "EMERGENCY_STOP" for a in alerts) else None

    await eventually(alerted, what="the EMERGENCY_STOP alert")
    resumed = await api.ok("POST", "/api/risk/resume", {"reason": "done"})
    assert resumed["state"] == "ACTIVE"
    await api.place(pair="BTC_USDT", side="buy", quantity=0.1)
    assert (await api.ok("GET", "/api/risk/metrics"))["tradingState"] == "ACTIVE"


# -- errors -----------------------------------------------------------------------------------------------------
async def test_routing_errors_are_404_and_405_problems(api):
    p = problem(await api.call("GET", "/api/nope"), 404)
    assert "/api/nope" in p["detail"]
    r = await api.call("DELETE", "/api/portfolio")
    problem(r, 405)
    assert "GET" in r.headers["Allow"] and "DELETE" not in r.headers["Allow"]
    r = await api.call("PUT", "/api/orders/" + MISSING_ORDER)
    problem(r, 405)
    assert {"GET", "PATCH", "DELETE"} <= {m.strip() for m in r.headers["Allow"].split(",")}


ORDER = {"pair": "BTC_USDT", "side": "buy", "quantity": 0.1}


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "code"),
    [
        pytest.param(b'{"pair": "BTC_USDT", "side": ', None, 400, None, "MALFORMED_JSON", id="malformed-json"),
        pytest.param(json.dumps(ORDER).encode(), {"Content-Type": "text/plain"}, 415, None, None, id="text-plain"),
        pytest.param(json.dumps(ORDER).encode(), {"Content-Type": None}, 415, None, None, id="no-content-type"),
        pytest.param({**ORDER, "leverage": 5}, None, 422, "leverage", "UNKNOWN_FIELD", id="unknown-field"),
        pytest.param({**ORDER, "quantity": "abc"}, None, 422, "quantity", "INVALID_FIELD", id="bad-quantity"),
        pytest.param({"pair": "BTC_USDT", "side": "buy"}, None, 422, "quantity", "MISSING_FIELD", id="missing"),
        pytest.param({**ORDER, "side": "hold"}, None, 422, "side", "INVALID_FIELD", id="bad-side"),
    ],
)
async def test_bad_bodies_are_problems_naming_the_field(api, body, headers, status, field, code):
    r = await api.call("POST", "/api/orders", body, headers)
    p = problem(r, status, field, code)
    if field is not None:
        assert field in p["detail"]
    assert (await api.ok("GET", "/api/orders"))["orders"] == []


async def test_a_client_order_id_reused_for_other_content_is_409(api):
    await api.book()
    first = await api.place(**ORDER, clientOrderId="api-dup-1")
    again = await api.place(**ORDER, clientOrderId="api-dup-1")
    assert again["orderId"] == first["orderId"]
    r = await api.call("POST", "/api/orders", {**ORDER, "quantity": 0.2, "clientOrderId": "api-dup-1"})
    p = problem(r, 409, "clientOrderId", "DUPLICATE_CLIENT_ORDER_ID")
    assert first["orderId"] in p["detail"]


async def test_a_body_over_max_body_bytes_is_413(launch):
    api = await launch(MAX_BODY_BYTES="2048")
    await api.book()
    padded = json.dumps(ORDER).encode()[:-1] + b" " * 1800 + b"}"  # valid JSON, under 2048 bytes
    assert len(padded) < 2048
    await api.ok("POST", "/api/orders", padded, 201)
    big = json.dumps(ORDER).encode()[:-1] + b" " * 2100 + b"}"
    p = problem(await api.call("POST", "/api/orders", big), 413)
    assert "MAX_BODY_BYTES" in p["detail"]
    problem(await api.call("PUT", "/api/risk/config", b'{"maxOrdersPerSecond": 5' + b" " * 3000 + b"}"), 413)


async def test_every_answer_has_a_request_id_and_yours_comes_back(api):
    a, b = await api.call("GET", "/api/risk/metrics"), await api.call("GET", "/api/risk/metrics")
    assert a.headers["X-Request-Id"] != b.headers["X-Request-Id"]
    r = await api.call("GET", "/api/portfolio", headers={"X-Request-Id": "mine-123"})
    assert r.status == 200 and r.headers["X-Request-Id"] == "mine-123"
    r = await api.call("GET", "/api/orders/" + MISSING_ORDER, headers={"X-Request-Id": "mine-456"})
    p = problem(r, 404, "orderId", "ORDER_NOT_FOUND")
    assert r.headers["X-Request-Id"] == p["requestId"] == "mine-456"
    r = await api.call("GET", "/api/nope", headers={"X-Request-Id": "mine-789"})
    assert r.headers["X-Request-Id"] == r.body["requestId"] == "mine-789"


async def test_the_live_streams_carry_a_request_id_too(api):
    async with api.sse("?types=fill", headers={"X-Request-Id": "sse-1"}) as events:
        sse_id = events.resp.headers.get("X-Request-Id")
    async with api.ws("?types=fill", headers={"X-Request-Id": "ws-1"}) as sock:
        ws_id = sock._response.headers.get("X-Request-Id")  # the 101 answer (no public accessor)
    assert (sse_id, ws_id) == ("sse-1", "ws-1")


# -- auth -------------------------------------------------------------------------------------------------------
def _concrete(template: str) -> str:
    return template.replace("{order_id}", MISSING_ORDER).replace("{pair}", "BTC_USDT")


async def test_with_api_token_every_operation_but_health_needs_it(launch):
    api = await launch(API_TOKEN="tok")
    anonymous = Api(api.http, api.base, api.bus, api.gateway)
    anonymous.contract = api.contract
    operations = [(m.upper(), t, op) for t, ops in api.contract.doc["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 28
    for method, template, op in operations:
        path = _concrete(template)
        body = {} if "requestBody" in op else None
        for auth in (None, "Bearer wrong", "tok", "Basic dG9rOnRvaw=="):
            r = await anonymous.call(method, path, body, {"Authorization": auth})
            if template == "/api/health":
                assert r.status in (200, 503), r.status  # open
                assert "security" not in op
                continue
            p = problem(r, 401, None, "UNAUTHORIZED")
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), (method, template)
            assert p["requestId"] and op["security"] == [{"bearer": []}]
        if template == "/api/stream":
            async with api.sse("?types=fill") as events:
                assert (await events.next())["event"] == "hello"
        elif template == "/api/ws":
            async with api.ws("?types=fill") as sock:
                assert (await sock.receive_json(timeout=10))["type"] == "hello"
        else:
            r = await api.call(method, path, body)
            assert r.status != 401, (method, template)
            assert r.status < 500 or template == "/api/health", (method, template, r.status, r.body)
    assert api.contract.doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    # a browser's preflight carries no token: it passes
    r = await anonymous.call(
        "OPTIONS", "/api/orders", headers={"Origin": DASHBOARD, "Access-Control-Request-Method": "POST"}
    )
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == DASHBOARD


async def test_another_host_without_api_token_refuses_to_start(nats_url, prefix):
    env = {"NATS_URL": nats_url, "BUS_PREFIX": prefix, "HOST": "0.0.0.0"}
    with pytest.raises(ConfigError) as refused:
        load_settings(env)
    assert "HOST" in str(refused.value) and "API_TOKEN" in str(refused.value)
    with pytest.raises(ConfigError, match="API_TOKEN"):
        await start_gateway(nats_url, prefix, HOST="0.0.0.0")
    assert load_settings({**env, "API_TOKEN": "tok"}).HOST == "0.0.0.0"  # with a token: allowed


# -- CORS -------------------------------------------------------------------------------------------------------
async def test_cors_lets_the_dashboard_in_and_nobody_else(api):
    preflight = {
        "Origin": DASHBOARD,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    r = await api.call("OPTIONS", "/api/orders", headers=preflight)
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == DASHBOARD
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    r = await api.call("GET", "/api/orders", headers={"Origin": DASHBOARD})
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == DASHBOARD
    exposed = {h.strip().lower() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert "x-request-id" in exposed
    r = await api.call("GET", f"/api/orders/{MISSING_ORDER}", headers={"Origin": DASHBOARD})  # problems too
    assert r.status == 404 and r.headers.get("Access-Control-Allow-Origin") == DASHBOARD
    evil = "http://evil.example.com"
    r = await api.call("GET", "/api/orders", headers={"Origin": evil})
    assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = await api.call("OPTIONS", "/api/orders", headers={**preflight, "Origin": evil})
    assert "Access-Control-Allow-Origin" not in r.headers


# -- live events ------------------------------------------------------------------------------------------------
def _fill_of(contract: Contract, data: str) -> dict[str, Any]:
    fill = json.loads(data)
    contract.validate(contract.component("Fill"), fill, "a fill event")
    return fill


async def test_an_sse_client_receives_the_fill_of_an_order_placed_after_it_connected(api):
    await api.book()
    async with api.sse("?types=fill") as events:
        hello = await events.next()
        assert hello["event"] == "hello" and re.fullmatch(r"f\d+", hello["id"])
        assert json.loads(hello["data"]) == {"kinds": ["fill"], "pairs": []}
        oid = (await api.place(**ORDER))["orderId"]
        ev = await events.next()
        assert ev["event"] == "fill" and re.fullmatch(r"f\d+", ev["id"]) and ev["id"] != hello["id"]
        fill = _fill_of(api.contract, ev["data"])
        assert (fill["orderId"], fill["pair"], fill["side"]) == (oid, "BTC_USDT", "buy")


async def test_a_websocket_client_receives_the_fill_of_an_order_placed_after_it_connected(api):
    await api.book()
    async with api.ws("?types=fill") as sock:
        hello = await sock.receive_json(timeout=10)
        assert hello["type"] == "hello" and re.fullmatch(r"f\d+", hello["id"])
        oid = (await api.place(**ORDER))["orderId"]
        frame = await sock.receive_json(timeout=10)
        assert set(frame) == {"id", "type", "data"} and frame["type"] == "fill"
        assert re.fullmatch(r"f\d+", frame["id"]) and frame["data"]["orderId"] == oid
        api.contract.validate(api.contract.component("Fill"), frame["data"], "a fill frame")


async def test_an_sse_client_resumes_after_last_event_id_and_misses_nothing(api):
    await api.book()
    async with api.sse("?types=fill") as events:
        await events.next()  # hello
        first = (await api.place(**ORDER))["orderId"]
        seen = await events.next()
        assert json.loads(seen["data"])["orderId"] == first
    away = [await api.filled_buy() for _ in range(2)]  # filled while it is away
    async with api.sse("?types=fill", headers={"Last-Event-ID": seen["id"]}) as events:
        hello = await events.next()
        assert hello["event"] == "hello" and hello["id"] == seen["id"]
        got = [await events.next() for _ in range(2)]
        assert [json.loads(e["data"])["orderId"] for e in got] == away
        assert all(e["event"] == "fill" for e in got) and len({seen["id"], *(e["id"] for e in got)}) == 3
        with pytest.raises(TimeoutError):
            await events.next(timeout=0.5)  # nothing more: no duplicate of the first


async def test_a_websocket_client_resumes_after_last_event_id_and_misses_nothing(api):
    await api.book()
    async with api.ws("?types=fill") as sock:
        await sock.receive_json(timeout=10)  # hello
        first = (await api.place(**ORDER))["orderId"]
        seen = await sock.receive_json(timeout=10)
        assert seen["data"]["orderId"] == first
    away = [await api.filled_buy() for _ in range(2)]
    async with api.ws(f"?types=fill&lastEventId={seen['id']}") as sock:
        hello = await sock.receive_json(timeout=10)
        assert (hello["type"], hello["id"]) == ("hello", seen["id"])
        got = [await sock.receive_json(timeout=10) for _ in range(2)]
        assert [(f["type"], f["data"]["orderId"]) for f in got] == [("fill", oid) for oid in away]
        with pytest.raises(TimeoutError):
            await sock.receive(timeout=0.5)


async def test_the_pairs_filter_keeps_other_pairs_out(api):
    await api.book()
    await api.book(pair="ETH_USDT", bid="9.99", ask="10.00")
    async with api.sse("?types=fill&pairs=ETH_USDT") as events, api.ws("?types=fill&pairs=eth_usdt") as sock:
        assert json.loads((await events.next())["data"]) == {"kinds": ["fill"], "pairs": ["ETH_USDT"]}
        assert (await sock.receive_json(timeout=10))["data"] == {"kinds": ["fill"], "pairs": ["ETH_USDT"]}
        await api.filled_buy("BTC_USDT")
        eth = await api.filled_buy("ETH_USDT", 1)
        ev = await events.next()
        assert (ev["event"], json.loads(ev["data"])["orderId"]) == ("fill", eth)
        frame = await sock.receive_json(timeout=10)
        assert (frame["type"], frame["data"]["orderId"], frame["data"]["pair"]) == ("fill", eth, "ETH_USDT")


@pytest.mark.parametrize(
    ("path", "headers", "field"),
    [
        pytest.param("/api/stream?types=fill", {"Last-Event-ID": "nonsense"}, "lastEventId", id="sse-last-event-id"),
        pytest.param("/api/stream?types=fill&lastEventId=f1.x2", None, "lastEventId", id="sse-query-id"),
        pytest.param("/api/ws?types=fill&lastEventId=12", None, "lastEventId", id="ws-last-event-id"),
        # an id ahead of what the stream holds: the streams were reset since (a client must reload, not wait)
        pytest.param("/api/stream?types=fill", {"Last-Event-ID": "f999999999"}, "lastEventId", id="sse-id-ahead"),
        pytest.param("/api/ws?types=fill&lastEventId=f999999999", None, "lastEventId", id="ws-id-ahead"),
        pytest.param("/api/stream?types=fills", None, "types", id="sse-types"),
        pytest.param("/api/ws?pairs=BTCUSDT", None, "pairs", id="ws-pairs"),
    ],
)
async def test_bad_stream_parameters_are_422_problems(api, path, headers, field):
    problem(await api.call("GET", path, headers=headers), 422, field, "INVALID_FIELD")


# -- a slow client ------------------------------------------------------------------------------------------------
class RawSse:
    """An SSE client on a bare socket with a small receive buffer, which reads only when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    async def open(cls, base: str, query: str) -> RawSse:
        url = urlsplit(base)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (url.hostname, url.port))
        request = f"GET /api/stream{query} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        raw = cls(sock)
        await raw.read_until(b"event: hello", timeout=10)  # its consumers exist: from now on it reads nothing
        return raw

    async def read_until(self, marker: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} within {timeout}s"
            chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), left)
            assert chunk, "the connection closed"
            self.buf += chunk

    def established(self) -> bool:
        return struct.unpack("B", self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0] == TCP_ESTABLISHED

    async def drain(self, timeout: float) -> tuple[list[dict[str, str]], bool]:
        """Read what is left: (the events, whether the response ended)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), deadline - time.monotonic())
            except TimeoutError:
                break
            except ConnectionResetError:
                return self._events(), True
            self.buf += chunk
            if not chunk or self.buf.endswith(b"\r\n0\r\n\r\n"):
                return self._events(), True
        return self._events(), False

    def _events(self) -> list[dict[str, str]]:
        head, _, body = self.buf.partition(b"\r\n\r\n")
        assert b"chunked" in head.lower()
        text, rest = b"", body
        while rest:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if size == 0:
                break
            text, rest = text + rest[:size], rest[size + 2 :]
        blocks = text.decode().replace("\r\n", "\n").split("\n\n")[:-1]  # the last one is unfinished
        events = []
        for block in blocks:
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line and line[0] != ":")
            if "event" in fields:
                events.append(fields)
        return events

    def close(self) -> None:
        self.sock.close()


PAD = msgspec.json.encode({"pad": "x" * 300_000})


async def _fall_behind(api: Api, orders: int) -> tuple[RawSse, list[str]]:
    """A client that reads nothing falls ~7 MB behind, then misses ``orders`` fills; a second client reads
    each fill before the next order is placed.

    On loopback the socket buffers take ~3-4 MB before the gateway's writes to a silent client block, so
    real events of a few hundred bytes would need thousands of orders: the slow client also follows
    position events, and 300 KB ones are published (paced, so that its writer blocks on the full socket
    before its buffer overflows) on a pair nobody trades, which only stream clients see."""
    await api.book(size="100")
    slow = await RawSse.open(api.base, "?types=fill,position")
    async with api.sse("?types=fill") as reader:
        await reader.next()  # hello
        for _ in range(24):
            await api.bus.js.publish(api.bus.subjects.position_events("ZZZ_USDT"), PAD)
            await asyncio.sleep(0.02)
        placed = []
        for _ in range(orders):
            oid = (await api.place(**ORDER))["orderId"]
            ev = await reader.next()
            assert (ev["event"], json.loads(ev["data"])["orderId"]) == ("fill", oid)  # the reading client: every fill
            placed.append(oid)
    return slow, placed


@pytest.fixture
def small_buffer(monkeypatch) -> int:
    # Feed's queue is built by its default_factory at each connection, reading gateway.streams.MAX_BUFFER
    # then (the subscriptions' pending_msgs_limit too): patched before any client connects.
    monkeypatch.setattr(gateway.streams, "MAX_BUFFER", 5)
    return 5


async def test_a_slow_sse_client_is_dropped_while_a_reading_one_gets_every_fill(api, small_buffer, monkeypatch):
    orders = 3 * small_buffer
    slow, placed = await _fall_behind(api, orders)
    try:
        events, ended = await slow.drain(timeout=20)  # reading again: the gateway ends the response
        assert ended, "the slow client's response did not end"
        fills = [json.loads(e["data"])["orderId"] for e in events if e["event"] == "fill"]
        assert len(fills) < orders and fills == placed[: len(fills)], fills  # dropped, not merely late
        last = events[-1]["id"]
    finally:
        slow.close()
    # back to the real buffer: a client catching up on 15 stored fills gets them in one burst, which a buffer
    # of 5 cannot hold (at 1,000 a burst is bounded by what one read from NATS brings)
    monkeypatch.setattr(gateway.streams, "MAX_BUFFER", 1_000)
    async with api.sse("?types=fill", headers={"Last-Event-ID": last}) as again:  # it misses nothing
        assert (await again.next())["event"] == "hello"
        rest = [json.loads((await again.next())["data"])["orderId"] for _ in range(orders - len(fills))]
        assert rest == placed[len(fills) :]
        with pytest.raises(TimeoutError):
            await again.next(timeout=0.5)


async def test_a_stalled_sse_client_is_disconnected_once_its_buffer_is_full(api, small_buffer):
    slow, _ = await _fall_behind(api, 3 * small_buffer)
    try:
        deadline = time.monotonic() + 5
        while slow.established() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not slow.established(), "the stalled client is still connected 5 s after falling behind"
    finally:
        slow.close()


@pytest.fixture
def gateway_log() -> Iterator[list[Any]]:
    records: list[Any] = []
    sink = logger.add(lambda m: records.append(m.record), level="INFO", filter="gateway")
    yield records
    logger.remove(sink)


async def test_a_client_leaving_a_blocked_stream_is_not_an_error(api, small_buffer, gateway_log):
    slow, _ = await _fall_behind(api, 0)
    slow.close()

    async def logged() -> Any:
        return next((r for r in gateway_log if r["message"].startswith("GET /api/stream?types=fill,position ")), None)

    line = await eventually(logged, what="the access log line of the slow client")
    errors = [r["message"] for r in gateway_log if r["level"].name == "ERROR"]
    assert (line["message"].split()[2], errors) == ("200", [])
