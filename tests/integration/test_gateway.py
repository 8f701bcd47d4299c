"""The gateway over real HTTP, with the actors on a real NATS: shapes, errors and auth."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from bus.client import Bus
from bus.embedded import free_port
from config.settings import load_settings
from gateway.app import Gateway
from schemas.subjects import Subjects
from tests.helpers import eventually
from tests.integration.test_actors import System

JSON = {"Content-Type": "application/json"}


async def start_gateway(nats_url: str, prefix: str, **extra: str) -> tuple[Gateway, str]:
    port = free_port()
    settings = load_settings(
        {
            "NATS_URL": nats_url,
            "BUS_PREFIX": prefix,
            "PORT": str(port),
            "MARKET_DATA_INTERVAL": "50",
            "PAIRS": "BTC_USDT,ETH_USDT",
            **extra,
        }
    )
    bus = await Bus.connect(nats_url, name="gateway", subjects=Subjects(prefix))
    gw = Gateway(settings, bus)
    await gw.start()
    return gw, f"http://127.0.0.1:{port}"


@pytest.fixture
async def stack(nats_url, prefix):
    settings = load_settings(
        {"NATS_URL": nats_url, "BUS_PREFIX": prefix, "MARKET_DATA_INTERVAL": "50", "PAIRS": "BTC_USDT,ETH_USDT"}
    )
    sut = System(nats_url, settings)
    await sut.start()
    gw, base = await start_gateway(nats_url, prefix)
    async with aiohttp.ClientSession() as http:
        yield http, base
    await gw.stop()
    await sut.stop()


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, str, dict]:
    async with http.request(method, url, **kw) as r:
        return r.status, r.content_type, json.loads(await r.read() or b"{}")


async def test_health_is_healthy_when_every_actor_beats(stack):
    http, base = stack

    async def healthy():
        status, _, body = await call(http, "GET", f"{base}/api/health")
        return body if status == 200 else None

    body = await eventually(healthy, what="healthy")
    assert body["status"] == "healthy" and body["mode"] == "paper"
    assert set(body) >= {"status", "service", "exchanges", "services", "executionEngine", "actors"}
    assert body["services"]["risk"] == {"status": "not_configured", "lastCheck": None, "url": None, "error": None}
    assert all(a["status"] == "running" and a["ageMs"] < 3000 for a in body["actors"].values())


async def test_health_is_503_when_actors_are_missing(nats_url, prefix):
    gw, base = await start_gateway(nats_url, prefix)
    try:
        async with aiohttp.ClientSession() as http:
            status, _ctype, body = await call(http, "GET", f"{base}/api/health")
        assert status == 503 and body["status"] == "unhealthy"
        assert body["actors"]["order-router"]["status"] == "missing"
        assert body["exchanges"]["paper"]["status"] == "disconnected"
    finally:
        await gw.stop()


@pytest.mark.parametrize(
    ("body", "headers", "status", "field", "fragment"),
    [
        (
            b'{"pair":"BTC_USDT","side":"buy","quantity":1}',
            {"Content-Type": "text/plain"},
            415,
            None,
            "application/json",
        ),
        (b'{"pair": "BTC_USDT", "side": ', JSON, 400, None, "not valid JSON"),
        (b'{"pair":"BTC_USDT","side":"buy","quantity":1,"leverage":5}', JSON, 422, "leverage", "not part of"),
        (b'{"pair":"BTC_USDT","side":"buy"}', JSON, 422, "quantity", "required"),
        (b'{"pair":"BTC_USDT","side":"hold","quantity":1}', JSON, 422, "side", "side"),
        (b'{"pair":"BTC_USDT","side":"buy","quantity":"abc"}', JSON, 422, "quantity", "quantity"),
        (b'{"pair":"DOGE_USDT","side":"buy","quantity":1}', JSON, 422, "pair", "not traded"),
        (b'{"pair":"BTC_USDT","side":"buy","quantity":-1}', JSON, 422, "quantity", "positive"),
        (b'{"pair":"BTC_USDT","side":"buy","quantity":1,"paperTrade":false}', JSON, 422, "paperTrade", "paper mode"),
    ],
)
async def test_bad_orders_get_a_problem_naming_the_field(stack, body, headers, status, field, fragment):
    http, base = stack
    got, ctype, problem = await call(http, "POST", f"{base}/api/orders", data=body, headers=headers)
    assert got == status and ctype == "application/problem+json"
    assert problem["status"] == status and problem["title"] and problem["type"].startswith("https://")
    assert problem.get("field") == field
    assert fragment in problem["detail"]


async def test_routing_errors_are_problems_too(stack):
    http, base = stack
    status, ctype, p = await call(http, "GET", f"{base}/api/nope")
    assert (status, ctype) == (404, "application/problem+json") and "/api/nope" in p["detail"]
    status, ctype, p = await call(http, "DELETE", f"{base}/api/portfolio")
    assert (status, ctype) == (405, "application/problem+json")
    status, ctype, p = await call(http, "POST", f"{base}/api/orders", data=b"x" * (1024 * 1024 + 10), headers=JSON)
    assert (status, ctype) == (413, "application/problem+json")
    status, ctype, p = await call(http, "GET", f"{base}/api/orders?status=done")
    assert status == 422 and p["field"] == "status"
    status, ctype, p = await call(http, "GET", f"{base}/api/orders?limit=501")
    assert status == 422 and p["field"] == "limit"


async def test_auth_on_requires_the_bearer_token_except_for_health(nats_url, prefix):
    gw, base = await start_gateway(nats_url, prefix, API_TOKEN="s3cret-token")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/orders") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
                assert r.content_type == "application/problem+json"
            async with http.get(f"{base}/api/orders", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with http.get(f"{base}/api/health") as r:
                assert r.status in (200, 503)  # open, whatever the actors do
            async with http.get(f"{base}/api/orders", headers={"Authorization": "Bearer s3cret-token"}) as r:
                assert r.status == 503  # passed auth; no order-router on this prefix
    finally:
        await gw.stop()


async def test_reused_client_order_id_with_other_content_is_409(stack):
    http, base = stack
    body = b'{"pair":"BTC_USDT","side":"buy","quantity":0.01,"clientOrderId":"gw-dup-1"}'
    status, _, first = await call(http, "POST", f"{base}/api/orders", data=body, headers=JSON)
    assert status == 201 and first["clientOrderId"] == "gw-dup-1"
    status, _, again = await call(http, "POST", f"{base}/api/orders", data=body, headers=JSON)
    assert status == 201 and again["orderId"] == first["orderId"]  # same id, same content: the same order
    other = b'{"pair":"BTC_USDT","side":"buy","quantity":0.02,"clientOrderId":"gw-dup-1"}'
    status, ctype, p = await call(http, "POST", f"{base}/api/orders", data=other, headers=JSON)
    assert (status, ctype) == (409, "application/problem+json")
    assert p["code"] == "DUPLICATE_CLIENT_ORDER_ID" and p["field"] == "clientOrderId"


async def test_an_unknown_outcome_is_504_with_the_client_order_id_to_retry_with(nats_url, prefix, monkeypatch):
    import gateway.common

    monkeypatch.setattr(gateway.common, "REQUEST_TIMEOUT", 1.0)
    settings = load_settings(
        {"NATS_URL": nats_url, "BUS_PREFIX": prefix, "MARKET_DATA_INTERVAL": "50", "PAIRS": "BTC_USDT,ETH_USDT"}
    )
    sut = System(nats_url, settings)
    await sut.start("md-feed", "risk-gate")  # approvals are stored, but no order-router answers
    gw, base = await start_gateway(nats_url, prefix)
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(0.3)
            body = b'{"pair":"BTC_USDT","side":"buy","quantity":0.01}'
            status, _, p = await call(http, "POST", f"{base}/api/orders", data=body, headers=JSON)
            assert status == 504 and p["code"] == "UPSTREAM_TIMEOUT"
            assert p["clientOrderId"].startswith("api-") and "retry with the same clientOrderId" in p["detail"]
            await sut.start("order-router", "fill-tracker", "portfolio-ledger")
            retry = (
                b'{"pair":"BTC_USDT","side":"buy","quantity":0.01,"clientOrderId":"%s"}' % p["clientOrderId"].encode()
            )
            _, _, placed = await eventually(
                lambda: _posted(http, f"{base}/api/orders", retry), what="the retry answered"
            )
            assert placed["clientOrderId"] == p["clientOrderId"]
            status, _, page = await call(http, "GET", f"{base}/api/orders")
            assert [o["clientOrderId"] for o in page["orders"]] == [p["clientOrderId"]]  # one order, not two
    finally:
        await gw.stop()
        await sut.stop()


async def _posted(http, url, body):
    got = await call(http, "POST", url, data=body, headers=JSON)
    return got if got[0] == 201 else None


async def test_portfolio_history_performance_and_refresh_over_http(stack, make_bus):
    http, base = stack
    bus = await make_bus("feeder")
    from tests.helpers import fill

    for f in (fill("g1", "buy", "1", "100", "0.1"), fill("g2", "sell", "1", "110", "0.11")):
        await bus.js_publish(bus.subjects.fills(f.pair), f, msg_id=f.fill_id)

    async def history():
        status, _, body = await call(http, "GET", f"{base}/api/positions/history?pair=btc_usdt")
        return body if status == 200 and body["positions"] else None

    body = await eventually(history, what="the round trip in the history")
    assert body["positions"][0]["realizedPnL"] == 9.79 and body["positions"][0]["side"] == "long"
    status, _, perf = await call(http, "GET", f"{base}/api/performance")
    assert status == 200 and perf["trades"]["roundTrips"] == 1 and perf["trades"]["winRate"] == 1
    assert {
        "equityCurve",
        "dailyReturns",
        "weeklyReturns",
        "monthlyReturns",
        "maxDrawdown",
        "currentDrawdown",
        "sharpe",
        "sortino",
        "feesPaid",
        "perPair",
        "totalReturn",
    } <= set(perf)
    status, _, snap = await call(http, "POST", f"{base}/api/portfolio/refresh")
    assert status == 200 and set(snap["summary"]) >= {
        "totalValue",
        "totalCash",
        "totalPositions",
        "unrealizedPnL",
        "dayPnL",
    }
    status, _, p = await call(http, "GET", f"{base}/api/positions/history?limit=0")
    assert status == 422 and p["field"] == "limit"


async def test_risk_endpoints_over_http(stack):
    http, base = stack
    status, _, m = await call(http, "GET", f"{base}/api/risk/metrics")
    assert status == 200 and m["tradingState"] == "ACTIVE" and "MAX_POSITION_SIZE" in m["limits"]
    status, _, stop = await call(
        http, "POST", f"{base}/api/risk/emergency-stop", data=b'{"reason": "test"}', headers=JSON
    )
    assert status == 200 and stop["state"] == "HALTED" and "test" in stop["reason"]
    body = b'{"pair":"BTC_USDT","side":"buy","quantity":0.001}'
    status, _, p = await call(http, "POST", f"{base}/api/orders", data=body, headers=JSON)
    assert status == 503 and p["code"] == "TRADING_HALTED"  # halted is not the caller's mistake

    async def alerted():
        status, _, page = await call(http, "GET", f"{base}/api/alerts?severity=emergency")
        return page if status == 200 and page["alerts"] else None

    page = await eventually(alerted, what="the emergency alerts")
    assert {a["code"] for a in page["alerts"]} >= {"EMERGENCY_STOP", "TRADING_STATE"}
    status, _, resumed = await call(http, "POST", f"{base}/api/risk/resume")
    assert status == 200 and resumed["state"] == "ACTIVE"
    status, _, p = await call(http, "GET", f"{base}/api/alerts?severity=bad")
    assert status == 422 and p["field"] == "severity"


async def test_put_risk_config_validates_persists_and_applies(stack, nats_url, prefix):
    http, base = stack
    status, _, p = await call(http, "PUT", f"{base}/api/risk/config", data=b'{"maxPositionSize": 2}', headers=JSON)
    assert status == 422 and p["field"] == "maxPositionSize" and "<= 1" in p["detail"]
    status, _, p = await call(http, "PUT", f"{base}/api/risk/config", data=b'{"maxLeverage": 0}', headers=JSON)
    assert status == 422 and p["field"] == "maxLeverage"  # the spec's name of maxTotalExposure: (0, 100]
    status, _, p = await call(http, "PUT", f"{base}/api/risk/config", data=b'{"maxLeverageX": 2}', headers=JSON)
    assert status == 422 and p["field"] == "maxLeverageX"
    status, _, ok = await call(
        http,
        "PUT",
        f"{base}/api/risk/config",
        data=b'{"maxOrderNotional": "50", "maxOrdersPerSecond": 7}',
        headers=JSON,
    )
    assert status == 200 and ok["limits"]["MAX_ORDER_NOTIONAL"] == 50 and ok["limits"]["MAX_ORDERS_PER_SECOND"] == 7
    body = b'{"pair":"BTC_USDT","side":"buy","quantity":0.01}'  # about 600 at 60,000: over the new 50
    status, _, p = await call(http, "POST", f"{base}/api/orders", data=body, headers=JSON)
    assert status == 422 and p["code"] == "MAX_ORDER_NOTIONAL"
    status, _, m = await call(http, "GET", f"{base}/api/risk/metrics")
    assert m["limits"]["MAX_ORDER_NOTIONAL"] == 50
    from bus.client import Bus
    from schemas.subjects import Subjects

    bus = await Bus.connect(nats_url, name="check", subjects=Subjects(prefix))
    try:  # persisted: a restarted risk-gate reads it back
        kv = await bus.kv(bus.subjects.kv_state)
        assert b'"MAX_ORDER_NOTIONAL":"50"' in (await kv.get("risk.limits")).value
    finally:
        await bus.close()


async def test_status_shows_the_nats_url_without_credentials(nats_url, prefix):
    """The gateway alone against NATS_URL: natsUrl is that URL, and no secret of it is in the answer."""
    with_secret = nats_url.replace("nats://", "nats://tbx-user:hunter2-secret@")
    gw, base = await start_gateway(with_secret, prefix, API_TOKEN="tok")
    try:
        async with aiohttp.ClientSession() as http:
            status, _, body = await call(http, "GET", f"{base}/api/status", headers={"Authorization": "Bearer tok"})
    finally:
        await gw.stop()
    assert status == 200 and body["natsUrl"] == nats_url
    assert "hunter2" not in json.dumps(body) and "tbx-user" not in json.dumps(body)


async def test_exchanges_lists_the_paper_venue_up_and_its_connection_test_passes(stack):
    http, base = stack

    async def listed() -> dict | None:
        async with http.get(f"{base}/api/exchanges") as r:
            body = await r.json()
        return body if body["exchanges"] and body["exchanges"][0]["status"] == "up" else None

    body = await eventually(listed, what="paper up in /api/exchanges")
    assert body == {"exchanges": [{"id": "paper", "ccxtId": "paper", "status": "up", "updates": "stream",
                                   "latencyMs": None, "rateLimitUsed": None, "lastError": None, "lastErrorAt": None,
                                   "paper": True}]}  # fmt: skip
    async with http.post(f"{base}/api/exchanges/test") as r:
        assert r.status == 200
        [check] = (await r.json())["exchanges"]
    assert check["ok"] and check["id"] == "paper" and check["keysAccepted"] is None and check["balanceRead"]
