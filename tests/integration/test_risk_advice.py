"""The risk-gate's sizing advice (``riskValidation``), the user's risk service and the alerts of the risk-gate
and the order-router, over a real NATS (and real HTTP where the gateway or the risk service is involved).

MARKET_DATA=none: the only books are the ones each test publishes, so every expected price and size is
computed by hand below. Both pairs trade on a 0.01 tick and a 0.001 step, taker fee 0.1%. The portfolio
limits are the service's defaults (MAX_POSITION_SIZE 0.25 of equity, no shorts); equity starts at 50000.
The user's risk service is played by a real aiohttp server on 127.0.0.1 that answers as each test tells it
and records what it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal as D
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from actors.order_router import OrderRouter
from actors.venues.base import VenueOrder, VenueOrderRequest
from actors.venues.paper import PaperVenue
from bus.client import Bus, Envelope
from bus.embedded import free_port
from gateway.app import Gateway
from schemas.messages import (
    AlertsPage,
    AlertsQuery,
    Empty,
    Heartbeat,
    OrderReply,
    OrdersPage,
    OrdersQuery,
    RiskAlert,
    RiskMetricsView,
)
from schemas.subjects import Subjects
from tbx.runner import ACTOR_CLASSES
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_gateway_orders import Api, assert_problem, num
from tests.integration.test_order_types import S, placed, publish_book, settings_for, submit, until

RULES = {"tickSize": "0.01", "amountStep": "0.001", "minNotional": "1", "makerFee": "0.0005", "takerFee": "0.001"}
# the service's default limits (settings_for relaxes them for the order-type tests), both pairs priced alike
EXTRA = {
    "PAPER_MARKETS": json.dumps({"BTC_USDT": RULES, "ETH_USDT": RULES}),
    "ALLOW_SHORT": "false",
    "MAX_POSITION_SIZE": "0.25",
    "MAX_DAILY_LOSS": "0.05",
    "PRICE_BAND_PERCENT": "10",
}
# mid 99.50; a market buy takes 30 at 100.00, then 101.00
BIDS = [("99.00", "1000")]
ASKS = [("100.00", "30"), ("101.00", "1000")]
SERVICE_TIMEOUT = "200"  # ms
SYSTEM_DEFAULTS = EXTRA  # for make_system (tests/integration/conftest.py)


# -- the system ------------------------------------------------------------------------------------------
@pytest.fixture
async def api(nats_url, prefix, make_bus) -> AsyncIterator[Api]:
    extra = {"MARKET_DATA": "none", "MAX_SLIPPAGE_PERCENT": "0", "DEFAULT_ORDER_TIMEOUT": "0"} | EXTRA
    sut = System(nats_url, settings_for(nats_url, prefix, **EXTRA))
    gw: Gateway | None = None
    try:
        await sut.start()
        gw, base = await start_gateway(nats_url, prefix, **extra)
        bus = await make_bus("client")
        async with aiohttp.ClientSession() as http:
            yield Api(http, base, bus, sut)
    finally:
        if gw is not None:
            await gw.stop()
        await sut.stop()


class Alerts:
    """Every RiskAlert heard on ``tbx.events.risk``, in the order published."""

    def __init__(self) -> None:
        self.heard: list[RiskAlert] = []

    async def on(self, a: RiskAlert, env: Envelope) -> None:
        self.heard.append(a)

    def of(self, code: str, since: int = 0) -> list[RiskAlert]:
        return [a for a in self.heard[since:] if a.code == code]

    async def wait(self, code: str, n: int = 1, since: int = 0) -> list[RiskAlert]:
        async def enough() -> list[RiskAlert] | None:
            found = self.of(code, since)
            return found if len(found) >= n else None

        return await eventually(enough, what=f"{n} {code} alert(s)")


async def listen(client: Bus) -> Alerts:
    alerts = Alerts()
    await client.subscribe(client.subjects.risk_events, RiskAlert, alerts.on)
    await client.nc.flush()
    return alerts


async def metrics(client: Bus) -> RiskMetricsView:
    return await client.request(client.subjects.query("risk"), Empty(), RiskMetricsView)


async def orders_of(client: Bus, coid: str) -> list:
    page = await client.request(client.subjects.query("orders"), OrdersQuery(client_order_id=coid), OrdersPage)
    return page.orders


def approved(r: OrderReply):
    assert r.ok and r.order is not None and r.risk_validation is not None, r
    assert r.risk_validation.passed is True
    return r.risk_validation


# -- the user's risk service -----------------------------------------------------------------------------
class RiskService:
    """``POST /api/risk/validate-trade`` on 127.0.0.1: records each JSON body (numbers kept exact) and answers
    per ``behaviour``: "verdict" (``verdict(body)`` as JSON), "slow" (the verdict, after far longer than
    RISK_SERVICE_TIMEOUT), "not_json" (HTTP 200 with HTML), "http_500", "wrong_shape" (JSON, but not a
    verdict). Not started, its port is closed: the service is down."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.behaviour = "verdict"
        self.verdict: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: {"approved": True}
        self.bodies: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.release = asyncio.Event()  # ends the slow answers at stop

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/risk/validate-trade", self._validate)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _validate(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read(), parse_float=D)
        self.bodies.append(body)
        if self.behaviour == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5)
        elif self.behaviour == "not_json":
            return web.Response(text="<html><body>risk service</body></html>", content_type="text/html")
        elif self.behaviour == "http_500":
            return web.json_response({"error": "internal"}, status=500)
        elif self.behaviour == "wrong_shape":
            return web.json_response({"approved": "perhaps", "recommendedSize": "lots"})
        return web.json_response(self.verdict(body))


@pytest.fixture
async def risk_service() -> AsyncIterator[RiskService]:
    svc = RiskService()
    yield svc
    await svc.stop()


# -- 1. the advice on an approved order --------------------------------------------------------------------
async def test_an_order_without_stop_loss_is_advised_its_own_quantity_with_its_cost_at_risk(make_system, client):
    await make_system()
    await publish_book(client, BIDS, ASKS)
    r = await submit(client, "adv-1", "buy", "10")
    rv = approved(r)
    # 10 at 100.00 (the first level): cost 1000.00; MAX_POSITION_SIZE allows 0.25 x 50000 / 99.50 = 125.6 more
    assert r.estimated_cost == D("1000.00")
    assert rv.recommended_size == D(10) and rv.max_risk == D("1000.00")
    assert rv.decided_by == "local" and rv.note is None
    assert r.order is not None and r.order.quantity == D(10)


async def test_an_order_within_the_position_headroom_is_advised_its_full_quantity(make_system, client):
    await make_system()
    await publish_book(client, BIDS, ASKS)
    # 100 x mid 99.50 = 9950 = 0.199 of equity: within MAX_POSITION_SIZE 0.25 (headroom 125.628...), so it passes
    r = await submit(client, "adv-full", "buy", "100")
    rv = approved(r)
    # cost: 30 x 100.00 + 70 x 101.00 = 10070.00
    assert r.estimated_cost == D("10070.00") and rv.max_risk == D("10070.00")
    assert rv.recommended_size == D(100)


async def test_a_stop_loss_recommends_the_fixed_fractional_size_while_the_order_keeps_its_quantity(make_system, client):
    await make_system()
    await publish_book(client, BIDS, ASKS)
    r = await submit(client, "adv-sl", "buy", "40", stop_loss="70.00")
    rv = approved(r)
    # entry = the VWAP of the asks walked: (30 x 100.00 + 10 x 101.00) / 40 = 4010 / 40 = 100.25
    # fixed fractional: 50000 x 0.02 / |100.25 - 70.00| = 1000 / 30.25 = 33.0578... -> 33.057 (step 0.001)
    assert r.estimated_cost == D("4010.00")
    assert rv.recommended_size == D("33.057")
    assert rv.max_risk == D("30.25") * 40  # what the order itself loses at its stop: 1210
    assert rv.decided_by == "local"
    assert r.order is not None and r.order.quantity == D(40)  # advice only


async def test_post_orders_answers_the_sizing_advice_in_risk_validation(api):
    await api.book(BIDS, ASKS)
    # the stop-loss order first, while equity is exactly 50000 (see the sizing test above for the numbers)
    sl = await api.place(pair="BTC_USDT", side="buy", quantity=40, stopLoss=70, clientOrderId="http-sl")
    rv = sl["riskValidation"]
    assert rv["passed"] is True and rv["decidedBy"] == "local"
    assert num(rv["recommendedSize"]) == D("33.057") and num(rv["maxRisk"]) == D(1210)
    assert num(sl["quantity"]) == D(40)
    plain = await api.place(pair="BTC_USDT", side="buy", quantity=10, clientOrderId="http-plain")
    rv = plain["riskValidation"]
    # 10 fit easily in the headroom the 40 leave (about 125.6 - 40)
    assert num(rv["recommendedSize"]) == D(10) and num(rv["maxRisk"]) == num(plain["estimatedCost"]) == D(1000)
    assert rv["decidedBy"] == "local" and rv["note"] is None


# -- 2. riskCheck: false and ENABLE_RISK_CHECKS=false ------------------------------------------------------
async def test_risk_check_false_skips_the_advice_but_not_the_hard_limits(make_system, client):
    await make_system()
    await publish_book(client, BIDS, ASKS)
    r = await submit(client, "nocheck", "buy", "10", risk_check=False)
    rv = approved(r)
    assert rv.recommended_size is None and rv.max_risk is None
    assert "riskCheck: false" in (rv.note or "") and rv.decided_by == "local"
    # 200 x 99.50 = 19900 = 0.398 of equity > 0.25
    over = await submit(client, "nocheck-over", "buy", "200", risk_check=False)
    assert not over.ok and over.code == "MAX_POSITION_SIZE" and over.field == "quantity"
    assert await orders_of(client, "nocheck-over") == []


async def test_enable_risk_checks_false_skips_the_advice_but_not_the_hard_limits(make_system, client):
    await make_system(ENABLE_RISK_CHECKS="false")
    await publish_book(client, BIDS, ASKS)
    rv = approved(await submit(client, "disabled", "buy", "10"))
    assert rv.recommended_size is None and rv.max_risk is None
    assert "ENABLE_RISK_CHECKS=false" in (rv.note or "")
    over = await submit(client, "disabled-over", "buy", "200")
    assert not over.ok and over.code == "MAX_POSITION_SIZE"


async def test_post_orders_with_risk_check_false_answers_null_advice_and_still_denies_over_the_limit(api):
    await api.book(BIDS, ASKS)
    placed_ = await api.place(pair="BTC_USDT", side="buy", quantity=10, riskCheck=False, clientOrderId="h-nc")
    rv = placed_["riskValidation"]
    assert rv["passed"] is True
    assert "recommendedSize" in rv and rv["recommendedSize"] is None
    assert "maxRisk" in rv and rv["maxRisk"] is None
    assert "riskCheck: false" in rv["note"]
    got = await api.call(
        "POST", "/api/orders", {"pair": "BTC_USDT", "side": "buy", "quantity": 200, "riskCheck": False}
    )
    assert_problem(got, 422, "quantity", "MAX_POSITION_SIZE")


# -- 3. the user's risk service ----------------------------------------------------------------------------
async def test_the_risk_service_decides_and_its_advice_is_passed_on(make_system, client, risk_service):
    await risk_service.start()
    risk_service.verdict = lambda body: {"approved": True, "recommendedSize": 0.5, "maxRisk": 12.5, "extra": 1}
    await make_system(RISK_SERVICE_URL=risk_service.url, RISK_SERVICE_TIMEOUT=SERVICE_TIMEOUT)
    await publish_book(client, BIDS, ASKS)
    r = await submit(client, "svc-ok", "buy", "2")
    rv = approved(r)
    assert rv.decided_by == "risk_service"
    assert rv.recommended_size == D("0.5") and rv.max_risk == D("12.5")
    assert r.order is not None and r.order.quantity == D(2)
    assert len(risk_service.bodies) == 1
    body = risk_service.bodies[0]
    assert body["clientOrderId"] == "svc-ok" and body["pair"] == "BTC_USDT"
    assert (body["side"], body["type"], body["source"]) == ("buy", "market", "api")
    assert num(body["quantity"]) == D(2)
    assert num(body["equity"]) == D(50000)
    assert num(body["price"]) == D("100.00")  # the expected fill price
    assert not any("_" in k for k in body), body  # camelCase only


async def test_a_refusal_by_the_risk_service_denies_the_order_and_frees_its_reservation(
    make_system, client, risk_service
):
    await risk_service.start()
    risk_service.verdict = lambda body: (
        {"approved": False, "reason": "too risky"}
        if body["clientOrderId"].startswith("refused")
        else {"approved": True}
    )
    await make_system(RISK_SERVICE_URL=risk_service.url, RISK_SERVICE_TIMEOUT=SERVICE_TIMEOUT)
    await publish_book(client, BIDS, ASKS)
    # 100 x 99.50 = 0.199 of equity passes alone; two of them (0.398) would not
    r = await submit(client, "refused-1", "buy", "100")
    assert not r.ok and r.code == "RISK_SERVICE" and "too risky" in (r.detail or "")
    assert r.risk_validation is not None and r.risk_validation.passed is False
    assert r.risk_validation.decided_by == "risk_service"
    assert await orders_of(client, "refused-1") == []
    assert (await metrics(client)).pending_approvals == 0
    after = await submit(client, "after-refusal", "buy", "100")
    assert approved(after).decided_by == "risk_service"
    assert [b["clientOrderId"] for b in risk_service.bodies] == ["refused-1", "after-refusal"]


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("down", "ClientConnectorError"),
        ("slow", f"no answer within {SERVICE_TIMEOUT} ms"),
        ("not_json", "unusable answer"),
        ("http_500", "HTTP 500"),
        ("wrong_shape", "unusable answer"),
    ],
    ids=["down", "slow", "not_json", "http_500", "wrong_shape"],
)
async def test_the_local_rules_decide_when_the_risk_service_gives_no_usable_answer(
    make_system, client, risk_service, behaviour, why
):
    if behaviour != "down":  # down: nothing listens on its port
        await risk_service.start()
        risk_service.behaviour = behaviour
    await make_system(RISK_SERVICE_URL=risk_service.url, RISK_SERVICE_TIMEOUT=SERVICE_TIMEOUT)
    await publish_book(client, BIDS, ASKS)
    r = await submit(client, f"fallback-{behaviour}", "buy", "10")
    rv = approved(r)
    assert rv.decided_by == "local"
    assert rv.recommended_size == D(10) and rv.max_risk == D("1000.00")  # the local advice
    note = rv.note or ""
    assert "risk service unavailable" in note and "local rules decided" in note and why in note, note
    assert len(risk_service.bodies) == (0 if behaviour == "down" else 1)


@pytest.mark.parametrize("how", ["riskCheck false", "ENABLE_RISK_CHECKS=false"])
async def test_the_risk_service_is_not_called_when_the_risk_check_is_off(make_system, client, risk_service, how):
    await risk_service.start()
    risk_service.verdict = lambda body: {"approved": False, "reason": "never asked"}
    extra = {"ENABLE_RISK_CHECKS": "false"} if how.startswith("ENABLE") else {}
    await make_system(RISK_SERVICE_URL=risk_service.url, RISK_SERVICE_TIMEOUT=SERVICE_TIMEOUT, **extra)
    await publish_book(client, BIDS, ASKS)
    kw = {"risk_check": False} if how == "riskCheck false" else {}
    rv = approved(await submit(client, "unasked", "buy", "1", **kw))
    assert rv.decided_by == "local" and how.split()[0] in (rv.note or "")
    assert risk_service.bodies == []


# -- 4. the service's alerts --------------------------------------------------------------------------------
async def test_one_service_down_alert_while_it_stays_down_then_one_service_up(make_system, client, risk_service):
    alerts = await listen(client)
    await make_system(RISK_SERVICE_URL=risk_service.url, RISK_SERVICE_TIMEOUT=SERVICE_TIMEOUT)
    await publish_book(client, BIDS, ASKS)
    for i in range(3):  # down: nothing listens on its port yet
        rv = approved(await submit(client, f"while-down-{i}", "buy", "1"))
        assert rv.decided_by == "local" and "risk service unavailable" in (rv.note or "")
    (down,) = await alerts.wait("SERVICE_DOWN")
    assert down.severity == "critical" and risk_service.url in down.message
    await risk_service.start()  # the same port: it answers again
    for i in range(2):
        assert approved(await submit(client, f"while-up-{i}", "buy", "1")).decided_by == "risk_service"
    (up,) = await alerts.wait("SERVICE_UP")
    assert up.severity == "warning"
    # published in this order by one connection: once SERVICE_UP is heard, every earlier alert has been too
    assert len(alerts.of("SERVICE_DOWN")) == 1 and len(alerts.of("SERVICE_UP")) == 1
    codes = [a.code for a in alerts.heard if a.code.startswith("SERVICE_")]
    assert codes == ["SERVICE_DOWN", "SERVICE_UP"]

    async def listed() -> AlertsPage | None:  # what GET /api/alerts answers
        page = await client.request(client.subjects.query("alerts"), AlertsQuery(), AlertsPage)
        return page if any(a.code == "SERVICE_UP" for a in page.alerts) else None

    page = await eventually(listed, what="the alerts in the risk-gate's list")
    assert [a.code for a in page.alerts if a.code.startswith("SERVICE_")] == ["SERVICE_UP", "SERVICE_DOWN"]


# -- 5. exposure over the limit after the market moved ------------------------------------------------------
async def test_exposure_over_the_limit_after_the_market_moves_is_alerted_once(make_system, client):
    alerts = await listen(client)
    beats: list[Heartbeat] = []

    async def on_beat(hb: Heartbeat, env: Envelope) -> None:
        beats.append(hb)

    await client.subscribe(client.subjects.health("risk-gate"), Heartbeat, on_beat)
    await make_system()
    await publish_book(client, [("99.00", "1000")], [("100.00", "1000")])
    await publish_book(client, [("99.00", "1000")], [("100.00", "1000")], pair="ETH_USDT")
    # BTC 60 and ETH 50 at 100.00, fees 6 + 5: cash 38989; at the mids 99.50 BTC is 5970 of equity 49934 (0.12)
    # (small enough that even counted twice for a moment, as position and as working order, it is not over)
    btc = await placed(client, "exp-btc", "buy", "60")
    eth = await placed(client, "exp-eth", "buy", "50", pair="ETH_USDT")
    await until(client, btc.order_id, S.FILLED)
    await until(client, eth.order_id, S.FILLED)

    async def booked() -> RiskMetricsView | None:
        m = await metrics(client)
        held = {p.pair: (p.position, p.working) for p in m.pairs}
        return m if held == {"BTC_USDT": (D(60), D(0)), "ETH_USDT": (D(50), D(0))} else None

    await eventually(booked, what="both positions in the risk-gate's books")
    assert alerts.of("EXPOSURE_LIMIT") == []
    # BTC to the mid 499.50: 29970 of equity 38989 + 29970 + 4975 = 73934 -> 0.40536 > 0.25
    mark = len(alerts.heard)
    await publish_book(client, [("499.00", "1000")], [("500.00", "1000")])
    (btc_alert,) = await alerts.wait("EXPOSURE_LIMIT", since=mark)
    assert btc_alert.severity == "warning" and btc_alert.pair == "BTC_USDT"
    assert btc_alert.message == "BTC_USDT exposure 0.4054 of equity is over MAX_POSITION_SIZE 0.25"
    # ETH to the mid 599.50: 29975 of equity 98934 -> 0.30298 > 0.25; BTC stays over (29970 / 98934 = 0.30293)
    await publish_book(client, [("599.00", "1000")], [("600.00", "1000")], pair="ETH_USDT")
    found = await alerts.wait("EXPOSURE_LIMIT", n=2, since=mark)  # so a later watch tick ran
    assert found[1].pair == "ETH_USDT" and found[1].severity == "warning"
    assert found[1].message == "ETH_USDT exposure 0.3030 of equity is over MAX_POSITION_SIZE 0.25"
    beat = len(beats)
    await eventually(lambda: _true(len(beats) >= beat + 3), what="three more risk-gate heartbeats (1 s apart)")
    # the watch ran again every second meanwhile: both still over, neither alerted again
    assert [a.pair for a in alerts.of("EXPOSURE_LIMIT", since=mark)] == ["BTC_USDT", "ETH_USDT"]
    m = await metrics(client)
    assert all(p.fraction > D("0.25") for p in m.pairs)


async def _true(value: bool) -> bool:
    return value


# -- 6. the venue down, then back -----------------------------------------------------------------------------
class FlakyVenue:
    """A real PaperVenue whose create_order cannot be reached while ``down`` is set."""

    def __init__(self, inner: PaperVenue) -> None:
        self.inner = inner
        self.name = inner.name
        self.down = False
        self.refused: list[str] = []

    async def create_order(self, req: VenueOrderRequest) -> VenueOrder:
        if self.down:
            self.refused.append(req.client_order_id)
            raise ConnectionError("venue unreachable")
        return await self.inner.create_order(req)

    def __getattr__(self, name: str) -> Any:  # everything else: the paper venue itself
        return getattr(self.inner, name)


async def test_venue_down_is_alerted_once_and_venue_up_when_it_answers_again(nats_url, prefix, client):
    alerts = await listen(client)
    settings = settings_for(nats_url, prefix)
    sut = System(nats_url, settings)
    try:
        names = list(ACTOR_CLASSES)
        at = names.index(OrderRouter.name)
        await sut.start(*names[:at])
        bus = await Bus.connect(nats_url, name=OrderRouter.name, subjects=Subjects(prefix))
        await bus.ensure_layout()
        venue = FlakyVenue(PaperVenue(settings, bus))
        router = OrderRouter(settings, bus, venue=venue)  # type: ignore[arg-type]
        sut.running[router.name] = router  # stopped with the others, in reverse start order
        await router.start()
        await sut.start(*names[at + 1 :])
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])

        venue.down = True
        stuck = [await placed(client, f"while-venue-down-{i}", "buy", "1") for i in range(2)]
        assert all(o.status is S.SUBMITTED for o in stuck)  # created and answered; the venue is the problem
        await eventually(lambda: _true(len(venue.refused) == 2), what="both creates tried at the venue")
        (down,) = await alerts.wait("VENUE_DOWN")
        assert down.severity == "critical" and "paper" in down.message and "ConnectionError" in down.message

        venue.down = False
        fresh = await placed(client, "venue-back", "buy", "1")
        await until(client, fresh.order_id, S.FILLED)
        (up,) = await alerts.wait("VENUE_UP")
        assert up.severity == "warning"
        # the orders refused meanwhile go out on the router's reconcile (every 10 s, orders 5 s old)
        for o in stuck:
            await until(client, o.order_id, S.FILLED, timeout=25)
        assert len(alerts.of("VENUE_DOWN")) == 1 and len(alerts.of("VENUE_UP")) == 1
        assert [a.code for a in alerts.heard if a.code.startswith("VENUE_")] == ["VENUE_DOWN", "VENUE_UP"]
    finally:
        await sut.stop()


# -- the read model: a fill that lands before its order's next event ------------------------------------
async def test_a_fill_seen_before_its_order_event_is_not_counted_twice(nats_url, prefix, make_bus):
    """The position takes a fill at once; what is left to fill must shrink at once too, and the order's
    later event (which includes that fill) must not take it off a second time."""
    from actors.risk_gate import Pending, RiskGate
    from schemas.messages import Fill, Order, OrderEvent, now_ms

    gate = RiskGate(settings_for(nats_url, prefix), await make_bus("read-model"))
    env = Envelope(subject="t", reply=None, headers=None, seq=1, delivered=1, raw=None)  # type: ignore[arg-type]

    def order(coid: str, oid: str, filled: str) -> OrderEvent:
        o = Order(
            order_id=oid, client_order_id=coid, pair="BTC_USDT", side="buy", type="limit", quantity=D(10),
            status=S.PARTIALLY_FILLED if D(filled) else S.ACCEPTED, price=D(100), filled_quantity=D(filled),
        )  # fmt: skip
        return OrderEvent(event="update", order=o, ts=now_ms())

    def fill(coid: str, oid: str, fid: str, qty: str) -> Fill:
        return Fill(
            fill_id=fid, order_id=oid, client_order_id=coid, pair="BTC_USDT", side="buy", quantity=D(qty),
            price=D(100), fee=D(0), fee_currency="USDT", liquidity="maker", venue="paper", timestamp=now_ms(),
        )  # fmt: skip

    def counted() -> tuple[D, D]:
        x = gate.exposure()
        return x.positions.get("BTC_USDT", D(0)), x.working.get("BTC_USDT", D(0))

    # a working order: 10 left; a fill of 4 before the order's event: 4 held, 6 left (not 10)
    await gate._on_order(order("c1", "O1", "0"), env)
    await gate._on_fill(fill("c1", "O1", "f1", "4"), env)
    assert counted() == (D(4), D(6))
    await gate._on_order(order("c1", "O1", "4"), env)  # the event that includes it: still 6, not 2
    assert counted() == (D(4), D(6))
    await gate._on_fill(fill("c1", "O1", "f2", "6"), env)
    assert counted() == (D(10), D(0)) and "O1" not in gate.working

    # an approval whose order was never announced yet: its reservation shrinks with the fill
    gate.pending["c2"] = Pending("BTC_USDT", D(10), "USDT", D(1000), now_ms())
    await gate._on_fill(fill("c2", "O2", "f3", "4"), env)
    assert counted() == (D(14), D(6)) and gate.pending["c2"].amount == D(600)
    await gate._on_order(order("c2", "O2", "4"), env)  # the reservation becomes the order: 6 left
    assert counted() == (D(14), D(6)) and "c2" not in gate.pending


async def test_an_approved_stop_reserves_nothing_before_its_order_is_seen(nats_url, prefix, make_bus):
    """A stop the router holds locks nothing until it triggers (ledger.lock_of); nor may its approval while its
    order's event is on its way: a CI run under load denied a second stop-loss 'INSUFFICIENT_BALANCE 0.000
    available' right after the first was approved, though stops held by the router hold nothing."""
    from actors.risk_gate import Approval, RiskGate
    from schemas.messages import Book, Fill, OrderRequest, now_ms

    gate = RiskGate(settings_for(nats_url, prefix), await make_bus("held-stop"))
    gate.books.put(Book(pair="BTC_USDT", bids=[(D(59990), D(1))], asks=[(D(60010), D(1))], ts=now_ms()))
    env = Envelope(subject="t", reply=None, headers=None, seq=1, delivered=1, raw=None)  # type: ignore[arg-type]
    long = Fill(
        fill_id="f1", order_id="O1", client_order_id="long", pair="BTC_USDT", side="buy", quantity=D("0.05"),
        price=D(60000), fee=D(0), fee_currency="USDT", liquidity="taker", venue="paper", timestamp=now_ms(),
    )  # fmt: skip
    await gate._on_fill(long, env)
    before = gate.available()["BTC"]
    assert before == D("0.05")
    for coid, stop in (("stop-b", "59000"), ("stop-c", "58900")):
        req = OrderRequest(
            client_order_id=coid, pair="BTC_USDT", side="sell", type="stop_loss", quantity=D("0.05"),
            stop_price=D(stop), reduce_only=True,
        )  # fmt: skip
        verdict = await gate._check(req, dry_run=False)
        assert isinstance(verdict, Approval), verdict
        assert gate.available()["BTC"] == before  # each stop alone may sell the long: cut at trigger time
