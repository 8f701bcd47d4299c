"""A retry of an order that exists is answered with that order (issue 15, 1b), over HTTP and over NATS.

Each test places an order that passes a limit, then changes the world so that the same order would now be
denied by that limit (balance, position, exposure, rate, halted, trading hours), and sends it again under
the same clientOrderId: the answer is the order it names (201 / ``ok``), before any check; other content
under the same id stays a 409. Every actor and the gateway are real, on a real nats-server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal as D
from typing import Any

import aiohttp
import pytest

from actors.risk_gate import RiskGate
from bus.client import Envelope
from bus.errors import RequestFailed
from domain.recent import RecentIds
from gateway.app import Gateway
from schemas.messages import (
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    RiskCommand,
    RiskStateChange,
    Signal,
    SignalEvent,
    SignalReply,
    now_ms,
)
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_gateway_orders import EXTRA, Api, assert_problem
from tests.integration.test_order_types import settings_for, submit
from tests.integration.test_risk import metrics

# the service's defaults for the limits (settings_for relaxes them for the order-type tests)
LIMITS = {"ALLOW_SHORT": "false", "MAX_POSITION_SIZE": "0.25", "MAX_DAILY_LOSS": "0.05", "PRICE_BAND_PERCENT": "10"}


class Retries(Api):
    async def post(self, **body: object) -> tuple[int, str, Any]:
        return await self.call("POST", "/api/orders", body)

    async def same_over_http(self, placed: dict[str, Any], **body: object) -> None:
        """The retry over HTTP answers 201 with the order placed first."""
        status, _, again = await self.post(**body)
        assert status == 201, again
        assert again["orderId"] == placed["orderId"] and again["clientOrderId"] == placed["clientOrderId"]

    async def same_over_nats(self, placed: dict[str, Any], side: str, qty: str, type_: str = "market", **kw: object):
        """The retry over NATS (the bus contract) answers ok with the order placed first."""
        r = await submit(self.bus, placed["clientOrderId"], side, qty, type_, **kw)
        assert r.ok and r.order is not None, r
        assert r.order.order_id == placed["orderId"]

    async def orders_named(self, coid: str) -> int:
        page = await self.bus.request(self.bus.subjects.query("orders"), OrdersQuery(limit=500), OrdersPage)
        return sum(o.client_order_id == coid for o in page.orders)


MakeApi = Callable[..., Awaitable[Retries]]


@pytest.fixture
async def make_api(nats_url, prefix, make_bus) -> AsyncIterator[MakeApi]:
    systems: list[System] = []
    gateways: list[Gateway] = []
    async with aiohttp.ClientSession() as http:

        async def make(**extra: str) -> Retries:
            settings = EXTRA | LIMITS | extra
            sut = System(nats_url, settings_for(nats_url, prefix, **settings))
            systems.append(sut)
            await sut.start()
            gw, base = await start_gateway(nats_url, prefix, **settings)
            gateways.append(gw)
            client = await make_bus("client")
            api = Retries(http, base, client, sut)
            await api.book([("99.00", "100")], [("100.00", "100")])
            return api

        yield make
    for gw in gateways:
        await gw.stop()
    for sut in systems:
        await sut.stop()


async def halt(api: Api) -> RiskStateChange:
    return await api.bus.request(
        api.bus.subjects.risk_command, RiskCommand(action="emergency_stop"), RiskStateChange, timeout=15
    )


# -- each limit --------------------------------------------------------------------------------------------
async def test_balance_a_sale_sent_again_after_it_filled_is_answered_with_it(make_api: MakeApi):
    """The issue's case: buy 1, sell 1 as r-sell, send r-sell again -> it was 422 INSUFFICIENT_BALANCE."""
    api = await make_api(INITIAL_BALANCE="10000")
    bought = await api.place(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="r-buy")
    await api.until(bought["orderId"], "filled")
    sold = await api.place(pair="BTC_USDT", side="sell", type="market", quantity=1, clientOrderId="r-sell")
    await api.until(sold["orderId"], "filled")
    await api.same_over_http(sold, pair="BTC_USDT", side="sell", type="market", quantity=1, clientOrderId="r-sell")
    await api.same_over_nats(sold, "sell", "1")
    # a new sale of what is not held is still denied
    status, _, p = await api.post(pair="BTC_USDT", side="sell", type="market", quantity=1, clientOrderId="r-new")
    assert status == 422 and p["code"] == "INSUFFICIENT_BALANCE", p
    # other content under the same id stays a conflict
    got = await api.post(pair="BTC_USDT", side="sell", type="market", quantity=2, clientOrderId="r-sell")
    assert_problem(got, 409, "clientOrderId", "DUPLICATE_CLIENT_ORDER_ID")
    got = await api.post(pair="BTC.>", side="sell", type="market", quantity=1, clientOrderId="r-sell")
    assert_problem(got, 409, "clientOrderId", "DUPLICATE_CLIENT_ORDER_ID")
    assert await api.orders_named("r-sell") == 1
    m = await metrics(api.bus)
    assert m.pending_approvals == 0  # a retry reserves nothing


async def test_position_size_a_filled_buy_sent_again_is_answered_with_it(make_api: MakeApi):
    api = await make_api(INITIAL_BALANCE="1000")
    body = {"pair": "BTC_USDT", "side": "buy", "type": "limit", "price": 100, "quantity": 2.4, "clientOrderId": "p-1"}
    placed = await api.place(**body)  # 2.4 x 99.5 / 1000 = 0.24 of equity: passes MAX_POSITION_SIZE 0.25
    await api.until(placed["orderId"], "filled")
    status, _, p = await api.post(**(body | {"clientOrderId": "p-2"}))  # the same order again would be 0.48
    assert status == 422 and p["code"] == "MAX_POSITION_SIZE", p
    await api.same_over_http(placed, **body)
    await api.same_over_nats(placed, "buy", "2.4", "limit", price="100")
    assert await api.orders_named("p-1") == 1


async def test_total_exposure_a_filled_buy_sent_again_is_answered_with_it(make_api: MakeApi):
    api = await make_api(INITIAL_BALANCE="1000", MAX_POSITION_SIZE="1", MAX_TOTAL_EXPOSURE="0.3")
    body = {"pair": "BTC_USDT", "side": "buy", "type": "limit", "price": 100, "quantity": 2.5, "clientOrderId": "x-1"}
    placed = await api.place(**body)
    await api.until(placed["orderId"], "filled")
    status, _, p = await api.post(**(body | {"clientOrderId": "x-2"}))
    assert status == 422 and p["code"] == "MAX_TOTAL_EXPOSURE", p
    await api.same_over_http(placed, **body)
    await api.same_over_nats(placed, "buy", "2.5", "limit", price="100")


async def test_rate_a_retry_is_answered_and_does_not_count_against_the_rate(make_api: MakeApi):
    api = await make_api(MAX_ORDERS_PER_SECOND="1")
    body = {"pair": "BTC_USDT", "side": "buy", "type": "limit", "price": 95, "quantity": 0.1, "clientOrderId": "q-1"}
    placed = await api.place(**body)  # the one order of this second
    for _ in range(3):
        await api.same_over_http(placed, **body)
        await api.same_over_nats(placed, "buy", "0.1", "limit", price="95")
    assert (await metrics(api.bus)).orders_last_second <= 1  # the retries took no slot


async def test_halted_an_existing_buy_sent_again_after_the_emergency_stop_is_answered_with_it(make_api: MakeApi):
    """The issue's case: after an emergency stop, resending an existing buy was 503."""
    api = await make_api()
    body = {"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 1, "clientOrderId": "h-1"}
    placed = await api.place(**body)
    await api.until(placed["orderId"], "filled")
    assert (await halt(api)).state == "HALTED"
    await api.same_over_http(placed, **body)
    await api.same_over_nats(placed, "buy", "1")
    got = await api.post(**(body | {"quantity": 2}))
    assert_problem(got, 409, "clientOrderId", "DUPLICATE_CLIENT_ORDER_ID")
    got = await api.post(**(body | {"clientOrderId": "h-2"}))  # a new order is still refused
    assert_problem(got, 503, None, "TRADING_HALTED")


async def test_trading_hours_an_order_sent_again_outside_the_hours_is_answered_with_it(
    make_api: MakeApi, nats_url, prefix
):
    api = await make_api()
    body = {"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 1, "clientOrderId": "t-1"}
    placed = await api.place(**body)
    await api.until(placed["orderId"], "filled")
    # the risk-gate comes back with trading hours that exclude now (one minute, twelve hours away)
    away = dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
    hours = f"{away:%H:%M}-{away + dt.timedelta(minutes=1):%H:%M}"
    await api.system.stop("risk-gate")
    gate = System(nats_url, settings_for(nats_url, prefix, **(EXTRA | LIMITS | {"TRADING_HOURS": hours})))
    await gate.start("risk-gate")
    try:
        await api.book([("99.00", "100")], [("100.00", "100")])
        status, _, p = await api.post(**(body | {"clientOrderId": "t-2"}))
        assert status == 422 and p["code"] == "TRADING_HOURS", p
        await api.same_over_http(placed, **body)
        await api.same_over_nats(placed, "buy", "1")
    finally:
        await gate.stop()


# -- ids the gate does not remember, orders on their way, signals -----------------------------------------
async def test_an_id_the_gate_no_longer_remembers_is_looked_up_before_a_denial(make_api: MakeApi):
    """Past the gate's memory of client order ids (the latest 20,000 orders), the order-router is asked,
    only when the answer would otherwise be a denial."""
    api = await make_api()
    body = {"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 1, "clientOrderId": "old-1"}
    placed = await api.place(**body)
    await api.until(placed["orderId"], "filled")
    gate = api.system.running["risk-gate"]
    assert isinstance(gate, RiskGate)
    gate.client_ids = RecentIds(1)  # as if 20,000 orders came after it
    assert "old-1" not in gate.client_ids
    await halt(api)
    await api.same_over_http(placed, **body)
    await api.same_over_nats(placed, "buy", "1")
    got = await api.post(**(body | {"clientOrderId": "old-2"}))
    assert_problem(got, 503, None, "TRADING_HALTED")


async def test_a_retry_the_gate_no_longer_remembers_that_passes_leaves_no_reservation(make_api: MakeApi):
    """Passing every check, a retry of an order past the gate's memory is approved and answered with the
    order by the order-router; no event of it follows, so the gate asks and releases the reservation."""
    api = await make_api()
    body = {"pair": "BTC_USDT", "side": "buy", "type": "limit", "price": 95, "quantity": 1, "clientOrderId": "f-1"}
    placed = await api.place(**body)
    await api.until(placed["orderId"], "accepted")
    gate = api.system.running["risk-gate"]
    assert isinstance(gate, RiskGate)

    async def read_all() -> bool:  # the gate has every event of the order (none left to release anything)
        info = await api.bus.js.stream_info(api.bus.subjects.s_orders)
        return gate.orders_seq >= (info.state.last_seq or 0)

    await eventually(read_all, what="the gate reading ORDERS")
    gate.client_ids = RecentIds(1)  # as if 20,000 orders came after it
    await api.same_over_http(placed, **body)
    assert (await metrics(api.bus)).pending_approvals == 1  # approved again: the router answered the order

    async def released() -> bool:
        return (await metrics(api.bus)).pending_approvals == 0

    await eventually(released, what="the retry's reservation released")
    assert await api.orders_named("f-1") == 1


async def test_a_retry_of_an_approved_order_not_yet_created_waits_for_it_and_reserves_nothing(make_api: MakeApi):
    """The order-router is down: the approval waits on its durable hop. Retries are handed on too (the
    router answers each with the one order once it is back); other content is refused at once; the
    reservation is the first approval's alone."""
    api = await make_api(INITIAL_BALANCE="1000", MAX_POSITION_SIZE="1")
    await api.system.stop("order-router")
    with pytest.raises(RequestFailed):  # the router is down: no answer in time
        await api.bus.request(api.bus.subjects.orders_submit, _req("w-1", "5"), OrderReply, timeout=1.0)
    assert (await metrics(api.bus)).pending_approvals == 1
    # 5 x 95 = 475 of 1000 is reserved: checked again, three retries would be denied for the balance
    late = [
        asyncio.create_task(api.bus.request(api.bus.subjects.orders_submit, _req("w-1", "5"), OrderReply, timeout=20))
        for _ in range(3)
    ]
    other = await submit(api.bus, "w-1", "buy", "6", "limit", price="95.00")
    assert not other.ok and other.code == "DUPLICATE_CLIENT_ORDER_ID" and other.field == "clientOrderId"
    assert (await metrics(api.bus)).pending_approvals == 1
    await api.system.start("order-router")
    replies = await asyncio.gather(*late)
    assert all(r.ok and r.order is not None for r in replies), replies
    assert len({r.order.order_id for r in replies if r.order}) == 1
    assert await api.orders_named("w-1") == 1

    async def released():
        return (await metrics(api.bus)).pending_approvals == 0

    await eventually(released, what="the reservation released once the order is seen")


def _req(coid: str, qty: str) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid, pair="BTC_USDT", side="buy", quantity=D(qty), type="limit", price=D("95.00"),
        ts=now_ms(),
    )  # fmt: skip


async def test_a_signal_whose_order_exists_is_executed_with_it_even_when_halted(make_api: MakeApi):
    """signal-intake sends a signal's order again under the same client order id (after a timeout): when
    that order exists, the signal's result is executed with it, whatever the limits say now."""
    api = await make_api(STOP_LOSS_ENABLED="false")
    await api.book([("99.00", "100")], [("100.00", "100")], pair="ETH_USDT")
    # the orders that the first attempts of two signals made (their answers lost): <signalId>-1
    nats_order = await api.place(pair="BTC_USDT", side="buy", type="market", quantity=0.5, clientOrderId="sig-n-1")
    http_order = await api.place(pair="ETH_USDT", side="buy", type="market", quantity=0.5, clientOrderId="sig-h-1")
    await halt(api)
    sig = Signal(
        pair="BTC_USDT", signal="BUY", confidence=D("0.9"), source="retry-test", signal_id="sig-n", quantity=D("0.5")
    )
    result = await api.bus.request(api.bus.subjects.signals_submit, sig, SignalReply, timeout=15)
    assert result.status == "executed", result
    assert [o.order_id for o in result.orders] == [nats_order["orderId"]]
    status, _, ev = await api.call(
        "POST", "/api/signals/execute",
        {"pair": "ETH_USDT", "signal": "BUY", "confidence": 0.9, "source": "retry-http", "signalId": "sig-h",
         "quantity": 0.5},
    )  # fmt: skip
    assert status == 200 and ev["status"] == "executed", ev
    assert [o["orderId"] for o in ev["orders"]] == [http_order["orderId"]]


async def test_the_emergency_stop_answers_closing_orders_a_client_can_look_up(make_api: MakeApi):
    api = await make_api()
    bought = await api.place(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="e-1")
    await api.until(bought["orderId"], "filled")
    status, _, change = await api.call("POST", "/api/risk/emergency-stop", {"closePositions": True})
    assert status == 200 and change["state"] == "HALTED", change
    assert len(change["closingOrders"]) == 1
    closing = await api.until(change["closingOrders"][0], "filled")  # GET /api/orders/{id} finds it
    assert closing["side"] == "sell" and closing["reduceOnly"] is True and closing["pair"] == "BTC_USDT"
    assert closing["quantity"] == 1


async def test_a_signal_is_never_rejected_with_cannot_know_yet(make_api: MakeApi):
    """Halted, with the order-router down, the gate cannot tell whether the signal's order exists
    (RETRY_LATER): signal-intake asks again instead of publishing that as the signal's result; once the
    router is back the answer is final (TRADING_HALTED: no such order)."""
    api = await make_api(STOP_LOSS_ENABLED="false")
    results: list[SignalEvent] = []

    async def on_result(ev: SignalEvent, env: Envelope) -> None:
        results.append(ev)

    await api.bus.subscribe(api.bus.subjects.signal_events(), SignalEvent, on_result)
    await halt(api)
    await api.system.stop("order-router")
    sig = Signal(
        pair="BTC_USDT", signal="BUY", confidence=D("0.9"), source="later", signal_id="sig-l", quantity=D("0.5")
    )
    await api.bus.publish(api.bus.subjects.signals_submit, sig)  # the stream stores it (no_ack: no answer)
    gate = api.system.running["risk-gate"]

    async def asked_twice() -> bool:
        return gate.denied >= 2  # type: ignore[attr-defined]

    await eventually(asked_twice, what="signal-intake asking the gate again")
    assert results == []  # "cannot know yet" is no result
    await api.system.start("order-router")

    async def final() -> list[SignalEvent]:
        return results

    (ev,) = await eventually(final, what="the signal's result")
    assert ev.status == "rejected" and ev.code == "TRADING_HALTED", ev


async def test_a_denial_of_the_request_itself_needs_no_lookup_a_denial_of_the_moment_does(make_api: MakeApi):
    """With the order-router down: an order its own content denies (its identical first sending was denied
    too) gets its 422 at once; one the moment denies (halted) cannot be told from a retry of an order that
    exists, so it is RETRY_LATER (503 with Retry-After), never a final no."""
    api = await make_api()
    await api.system.stop("order-router")
    got = await api.post(pair="BTC_USDT", side="buy", type="limit", quantity=1, clientOrderId="s-1")
    assert_problem(got, 422, "price", "MISSING_PRICE")
    await halt(api)
    status, _, p = await api.post(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="s-2")
    assert status == 503 and p["code"] == "RETRY_LATER" and p["clientOrderId"] == "s-2", p
    async with api.http.post(
        api.base + "/api/orders", json={"pair": "BTC_USDT", "side": "buy", "quantity": 1, "clientOrderId": "s-2"}
    ) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"


async def test_a_message_on_fills_that_does_not_decode_leaves_denials_final(make_api: MakeApi):
    """An outside writer's broken message on FILLS is dead-lettered; the gate's view counts it as read, so a
    sale of what is not held stays a final 422, never a 'cannot know yet' 503 until the next fill."""
    api = await make_api()
    await api.bus.js.publish(api.bus.subjects.fills("BTC_USDT"), b'{"not": "a fill"}')
    # and one the stream stores on a subject nobody follows (events.fills.> holds it, readers read fills.*)
    await api.bus.js.publish(api.bus.subjects.fills("BTC_USDT") + ".x", b'{"not": "followed"}')
    await asyncio.sleep(0.2)
    for i in range(3):
        status, _, p = await api.post(pair="BTC_USDT", side="sell", type="market", quantity=1, clientOrderId=f"x{i}")
        assert status == 422 and p["code"] == "INSUFFICIENT_BALANCE", p


async def test_a_signal_handled_again_after_the_market_moved_is_executed_with_its_first_order(make_api: MakeApi):
    """The signal's first attempt made its order (<signalId>-1) and the answer was lost; handled again, the
    signal is sized anew at the new price, with new default exits: still the same signal, so its result is
    the order that exists, never a 409 'rejected'."""
    api = await make_api(STOP_LOSS_ENABLED="true")
    first = await api.place(
        pair="BTC_USDT", side="buy", type="market", quantity=0.5, clientOrderId="sig-m-1", stopLoss=90, takeProfit=120
    )
    await api.book([("101.00", "100")], [("102.00", "100")])  # the market moved: other size, other exits
    sig = Signal(pair="BTC_USDT", signal="BUY", confidence=D("0.9"), source="moved", signal_id="sig-m")
    result = await api.bus.request(api.bus.subjects.signals_submit, sig, SignalReply, timeout=15)
    assert result.status == "executed", result
    assert [o.order_id for o in result.orders] == [first["orderId"]]
    assert await api.orders_named("sig-m-1") == 1


async def test_an_approval_whose_ack_is_lost_is_published_again_and_stored_once(make_api: MakeApi, monkeypatch):
    """The gate's publish of an approval is stored but its ack is lost (a NATS restart): it is published
    again under the same Nats-Msg-Id, which JetStream drops as a duplicate, so the order is made once and
    the caller gets it."""
    import nats.errors

    api = await make_api(INITIAL_BALANCE="10000")
    gate = api.system.running["risk-gate"]
    real = gate.bus.js_publish
    lost: list[str] = []

    async def ack_lost(subject: str, msg: object, *, msg_id: str | None = None) -> int:
        seq = await real(subject, msg, msg_id=msg_id)  # stored...
        if not lost:
            lost.append(subject)
            raise nats.errors.TimeoutError  # ...but the ack never came
        return seq

    monkeypatch.setattr(gate.bus, "js_publish", ack_lost)
    placed = await api.place(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="lost-1")
    assert lost, "the approval went out"
    await api.until(placed["orderId"], "filled")
    assert await api.orders_named("lost-1") == 1

    async def released() -> bool:
        return (await metrics(api.bus)).pending_approvals == 0

    await eventually(released, timeout=10, what="the reservation released once the order is seen")


async def test_an_approval_never_stored_is_no_pass_for_a_later_retry(make_api: MakeApi, monkeypatch):
    """The approval cannot be stored at all: the caller gets 503 RETRY_LATER; a retry after an emergency
    stop is checked again (denied), never sent on unchecked; what it reserved is released."""
    import nats.errors

    api = await make_api(INITIAL_BALANCE="10000")
    gate = api.system.running["risk-gate"]
    real = gate.bus.js_publish

    async def never(subject: str, msg: object, *, msg_id: str | None = None) -> int:
        if (msg_id or "").startswith("approval:"):
            raise nats.errors.TimeoutError
        return await real(subject, msg, msg_id=msg_id)

    monkeypatch.setattr(gate.bus, "js_publish", never)
    status, _, first = await api.post(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="gone-1")
    assert status == 503 and (first["code"], first["clientOrderId"]) == ("RETRY_LATER", "gone-1"), first
    monkeypatch.setattr(gate.bus, "js_publish", real)
    await halt(api)
    status, _, again = await api.post(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="gone-1")
    assert status == 503 and again["code"] == "TRADING_HALTED", again
    assert await api.orders_named("gone-1") == 0

    async def released() -> bool:
        return (await metrics(api.bus)).pending_approvals == 0

    await eventually(released, timeout=10, what="the reservation of the approval never stored released")


async def test_an_emergency_stop_with_the_router_away_says_what_it_could_not_do_in_time(make_api: MakeApi):
    """The order-router is down: the stop still halts and answers in time (no 504), naming the closes it
    sent that are not confirmed yet (closingPending) and the cancel it could not make (errors); the close
    is made once the router is back."""
    api = await make_api()
    bought = await api.place(pair="BTC_USDT", side="buy", type="market", quantity=1, clientOrderId="e-2")
    await api.until(bought["orderId"], "filled")
    await api.system.stop("order-router")
    status, _, change = await api.call("POST", "/api/risk/emergency-stop", {"closePositions": True})
    assert status == 200 and change["state"] == "HALTED", change
    assert change["closingOrders"] == [] and len(change["closingPending"]) == 1, change
    assert any("not canceled" in e for e in change["errors"]) and any("closingPending" in e for e in change["errors"])
    await api.system.start("order-router")

    async def made() -> Any:
        page = await api.bus.request(
            api.bus.subjects.query("orders"), OrdersQuery(client_order_id=change["closingPending"][0]), OrdersPage
        )
        return page.orders[0] if page.orders else None

    close = await eventually(made, timeout=15, what="the pending close made once the router is back")
    assert (close.side, close.quantity, close.reduce_only) == ("sell", D(1), True)


async def test_no_source_skips_the_limits_over_nats(make_api: MakeApi):
    """Any NATS client may name its source: "emergency" is no key to skip the limits (the emergency stop's
    own closes go straight to the order-router)."""
    api = await make_api(INITIAL_BALANCE="10000")
    r = await submit(api.bus, "not-an-emergency", "buy", "50", source="emergency")
    assert not r.ok and r.code == "MAX_POSITION_SIZE", r
