"""Regression tests of the execution algorithms' review findings (issue 20): the trading state and the
algorithms, a slice never above the parent's quantity, children never modified, ... Same set-up as
tests/integration/test_exec_algos.py (paper venue, the books the test publishes)."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from schemas.messages import (
    AlgoSpec,
    CommandReply,
    ModifyOrder,
    OrderEventsPage,
    OrderEventsQuery,
    OrderStatus,
    RiskCommand,
    RiskStateChange,
    now_ms,
)
from tests.helpers import eventually
from tests.integration.test_exec_algos import children
from tests.integration.test_order_types import order, placed, publish_book, until

S = OrderStatus


async def test_the_automatic_halt_stops_a_running_twap(make_system, client):
    """C1: MAX_DAILY_LOSS halts trading by itself (only the state changes): the TWAP must not buy on."""
    sut = await make_system(INITIAL_BALANCE="1000", MAX_DAILY_LOSS="0.01")
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "h1", "buy", "5", "twap", algo=AlgoSpec(duration_ms=5000, slices=10))

    async def two():
        o = await order(client, p.order_id)
        return o if len(o.children) >= 2 else None

    await eventually(two, timeout=10)
    await publish_book(client, [("80.00", "500")], [("81.00", "500")])  # the book drops: the daily loss is hit
    rg = sut.running["risk-gate"]

    async def halted():
        return rg.trading_state == "HALTED" or None  # type: ignore[attr-defined]

    await eventually(halted, timeout=10, what="halted")
    final = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=15)
    assert final.status is S.CANCELED and "HALTED" in (final.reason or ""), final.reason
    assert final.filled_quantity < D(5)
    kids = await children(client, final)
    after = [k for k in kids if k.created_at > final.closed_at]
    assert not after
    # nothing made after the state was stored: every child came before the halt's alert (at most one in flight)
    assert len(kids) <= 4, [str(k.quantity) for k in kids]


async def test_reducing_stops_a_running_buy_twap(make_system, client):
    """C1: REDUCING (only reducing orders pass): a running buy TWAP stops with the reason on its trail."""
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "r1", "buy", "0.5", "twap", algo=AlgoSpec(duration_ms=3000, slices=6))
    ch = await client.request(client.subjects.risk_command, RiskCommand(action="reduce"), RiskStateChange, timeout=5)
    assert ch.state == "REDUCING"
    final = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=15)
    assert final.status is S.CANCELED and "REDUCING" in (final.reason or ""), final.reason
    assert final.filled_quantity < D("0.5")


async def test_a_slice_never_sends_more_than_the_parent_when_its_sync_is_slow(make_system, client, monkeypatch):
    """C2: a filled child whose fill the parent has not followed yet (its sync delayed) is neither working nor in
    the parent's filledQuantity: the next slice must not ask for it again."""
    from actors.order_router import exec_algos

    orig = exec_algos.ExecAlgos.sync

    async def slow(self, pid):  # (the store's lock busy, a child recalled from the stream, ...)
        await asyncio.sleep(0.15)
        return await orig(self, pid)

    monkeypatch.setattr(exec_algos.ExecAlgos, "sync", slow)
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "two", "buy", "1", "twap", algo=AlgoSpec(duration_ms=200, slices=2))
    p = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=30)
    kids = await children(client, p)
    assert sum((k.quantity for k in kids), D(0)) <= p.quantity, [str(k.quantity) for k in kids]
    assert p.status is S.FILLED and p.filled_quantity == D(1)


async def test_a_failed_sync_of_the_parent_is_tried_again(make_system, client, monkeypatch):
    """C2: a parent's sync with its children that fails (the stream not answering, say) was only logged: with
    no later change of a child the parent never followed its fills nor ended."""
    from actors.order_router import exec_algos

    orig = exec_algos.ExecAlgos.sync
    failing = {"until": 0.0}

    async def flaky(self, pid):
        if asyncio.get_running_loop().time() < failing["until"]:
            raise TimeoutError("the ORDERS stream did not answer")
        return await orig(self, pid)

    monkeypatch.setattr(exec_algos.ExecAlgos, "sync", flaky)
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    failing["until"] = asyncio.get_running_loop().time() + 1.5  # every sync while the only child fills fails
    p = await placed(client, "flaky", "buy", "1", "twap", algo=AlgoSpec(duration_ms=100, slices=1))
    p = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=20)
    assert p.status is S.FILLED and p.filled_quantity == D(1)


async def test_a_child_cannot_be_modified(make_system, client):
    """M1: a child never passes the risk gate: a modify (an iceberg clip to 3 @ 100.90 for a parent of 1 capped
    at 100) would trade past the parent's quantity and cap. Refused naming why; the venue's clip unchanged."""
    sut = await make_system()
    venue = sut.running["order-router"].venue  # type: ignore[attr-defined]
    await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    p = await placed(client, "im", "buy", "1", "iceberg", price="100.00", algo=AlgoSpec(display_quantity=D("0.3")))
    await eventually(lambda: venue.fetch_open_orders("BTC_USDT"), what="a clip resting")
    cid = (await order(client, p.order_id)).children[0]
    r = await client.request(
        client.subjects.orders_modify, ModifyOrder(order_id=cid, quantity=D(3), price=D("100.90")), CommandReply
    )
    assert not r.ok and r.code == "MODIFY_REFUSED" and r.field == "orderId"
    assert "algorithm's child" in (r.detail or "")
    opens = await venue.fetch_open_orders("BTC_USDT")
    assert [(o.quantity, o.price) for o in opens] == [(D("0.3"), D(100))]


async def test_a_restart_while_the_venue_rules_are_unknown_keeps_every_algorithm(make_system, client, monkeypatch):
    """M3: a venue down when the router starts (its rules not loaded): the algorithms were rebuilt with the
    quantity's own step and no minimum - a TWAP's schedule changed (cached so), an iceberg's clip check raised in
    resume() and the router did not start. The step and minimum used at acceptance are stored on the parent."""
    from actors.order_router.actor import OrderRouter

    sut = await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    # (the quantities' own steps, 1 and 0.1, can make neither schedule)
    tw = await placed(client, "tw-m3", "buy", "1", "twap", algo=AlgoSpec(duration_ms=3000, slices=6))
    ice = await placed(
        client, "ice-m3", "buy", "0.5", "iceberg", price="98.00", algo=AlgoSpec(display_quantity=D("0.25"))
    )
    tw = await eventually(lambda: _has(client, tw.order_id, 2), what="two slices")
    assert tw.algo_state is not None and tw.algo_state.step == D("0.001")
    await sut.stop("order-router")
    blind = {"on": True}
    real = OrderRouter._rules_of
    monkeypatch.setattr(OrderRouter, "_rules_of", lambda self, o: None if blind["on"] else real(self, o))
    await sut.start("order-router")  # (without the fix: AlgoParamError from the iceberg's resume)
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    tw = await until(client, tw.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=20)
    blind["on"] = False
    assert tw.status is S.FILLED and tw.filled_quantity == D(1), (tw.status, tw.reason)
    kids = await children(client, tw)
    assert all(k.quantity >= D("0.01") and k.quantity % D("0.001") == 0 for k in kids), [k.quantity for k in kids]
    ice = await order(client, ice.order_id)
    assert ice.status is S.ACCEPTED and len(ice.children) == 1  # its clip still resting at 98


async def _has(client, oid: str, n: int):
    o = await order(client, oid)
    return o if len(o.children) >= n else None


async def test_a_restart_after_the_schedule_sends_one_slice_not_the_backlog(make_system, client):
    """M4: every overdue slice went out as ONE uncapped order after a restart (a 12 h outage: half a 24 h TWAP at
    once). Back after the schedule's last slice: one slice's size, the rest left unfilled (expired, the reason on
    the trail)."""
    sut = await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    tw = await placed(client, "tw-m4", "buy", "1", "twap", algo=AlgoSpec(duration_ms=2000, slices=10))
    tw = await eventually(lambda: _has(client, tw.order_id, 1), what="a slice")
    await sut.stop("order-router")
    assert tw.algo_state is not None
    await asyncio.sleep(max(0.0, (tw.algo_state.start_ms + 2300 - now_ms()) / 1000))  # the schedule is over
    await sut.start("order-router")
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    tw = await until(client, tw.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=20)
    kids = await children(client, tw)
    assert all(k.quantity <= D("0.1") for k in kids), [k.quantity for k in kids]
    assert tw.status is S.EXPIRED and "unfilled at the end of the schedule" in (tw.reason or "")
    page = await client.request(
        client.subjects.query("order_events"), OrderEventsQuery(order_id=tw.order_id), OrderEventsPage
    )
    notes = [e.order.reason or "" for e in page.events if e.event == "slice_sent"]
    assert any("catching up after a restart" in n and "left unfilled" in n for n in notes), notes


async def test_a_child_made_but_not_sent_before_a_crash_does_not_stop_its_parent(make_system, client, monkeypatch):
    """m1: on paper, the child made before a crash is sent on restart before the books are read: rejected 'no
    market data', which stopped the whole algorithm. It is carried to the next slice instead."""
    from actors.order_router import exec_algos

    orig = exec_algos.ExecAlgos._route_logged
    held = asyncio.Event()

    async def route(self, cid):
        if self.store.orders[cid].client_order_id.endswith(":s1"):
            held.set()
            await asyncio.sleep(3600)  # "crash" before the send
        return await orig(self, cid)

    monkeypatch.setattr(exec_algos.ExecAlgos, "_route_logged", route)
    sut = await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "cb", "buy", "0.9", "twap", algo=AlgoSpec(duration_ms=6000, slices=3))
    await asyncio.wait_for(held.wait(), 10)
    await sut.stop("order-router")
    monkeypatch.setattr(exec_algos.ExecAlgos, "_route_logged", orig)
    await sut.start("order-router")
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=20)
    assert p.status is S.FILLED and p.filled_quantity == D("0.9"), (p.status, p.reason)


async def test_a_child_that_could_not_be_stored_is_on_the_parents_trail(make_system, client, monkeypatch):
    """m2: the parent's slice_sent stored, its child's create failed: the slice had no child and nothing said so."""
    from actors.order_router.store import OrderStore

    orig = OrderStore.emit
    state = {"done": False}

    async def emit(self, order, event):
        s1 = order.role == "slice" and event == "submitted" and order.client_order_id.endswith(":s1")
        if s1 and not state["done"]:
            state["done"] = True
            raise TimeoutError("nats: timeout")
        return await orig(self, order, event)

    monkeypatch.setattr(OrderStore, "emit", emit)
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "la", "buy", "1", "twap", algo=AlgoSpec(duration_ms=1600, slices=4))
    p = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=20)
    assert p.status is S.FILLED and p.filled_quantity == D(1)  # (its quantity carried: nothing lost)
    page = await client.request(
        client.subjects.query("order_events"), OrderEventsQuery(order_id=p.order_id), OrderEventsPage
    )
    notes = [e.order.reason or "" for e in page.events if e.event == "slice_carried"]
    assert any("slice 1: its child" in n and "could not be stored" in n for n in notes), notes


async def test_an_overfilling_child_fill_stops_the_algorithm(make_system, client, monkeypatch):
    """C2: a child's fill that would take the parent past its quantity was logged and dropped, the algorithm went
    on. It stops now (canceled, reason 'overfilled: ...'). (apply_fill made to refuse the parent's second fill:
    the state a double count would leave.)"""
    from actors.order_router import exec_algos
    from domain.orders import Overfilled

    real = exec_algos.apply_fill

    def apply(o, ref):
        if o.type == "twap" and o.fills and ref.fill_id not in {f.fill_id for f in o.fills}:
            raise Overfilled(f"fill {ref.fill_id} would take {o.order_id} past its quantity")
        return real(o, ref)

    monkeypatch.setattr(exec_algos, "apply_fill", apply)
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "of", "buy", "1", "twap", algo=AlgoSpec(duration_ms=1500, slices=4))
    p = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=20)
    assert p.status is S.CANCELED and (p.reason or "").startswith("overfilled"), (p.status, p.reason)
    assert len(p.children) <= 3
