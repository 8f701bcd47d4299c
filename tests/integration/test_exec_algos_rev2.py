"""Regression tests of the second s11 review of the execution algorithms' engine (issue 20): a child whose create
was not confirmed stored routed after its parent was canceled, at once or after a restart, or while the router
stops (R1, R4); a parent's cancel refused for a child only waiting for its fills (R2); an iceberg waiting forever
for a clip rejected as unknown to the venue (R3). Paper venue set-up as tests/integration/test_exec_algos.py
(BTC_USDT: tick 0.01, step 0.001), the live ones as tests/integration/test_live_binance.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal as D

from actors.order_router.actor import OrderRouter
from bus.client import Envelope
from schemas.messages import AlgoSpec, CancelOrder, CommandReply, Fill, Order, OrderStatus, RiskAlert
from tests.helpers import eventually
from tests.integration.test_exec_algos import children
from tests.integration.test_exec_algos_s11 import _trail
from tests.integration.test_live_binance import exchange, live  # noqa: F401 (the fixtures)
from tests.integration.test_live_binance import submit as live_submit
from tests.integration.test_order_types import order, placed, publish_book, until

S = OrderStatus
DONE = (S.CANCELED, S.FILLED, S.EXPIRED)
TWAP = AlgoSpec(duration_ms=8000, slices=4)


def _is_s1_create(msg: object) -> bool:
    o = getattr(msg, "order", None)
    return (
        o is not None
        and o.role == "slice"
        and o.client_order_id.endswith(":s1")
        and getattr(msg, "event", "") == "submitted"
    )


def _flaky_s1(bus, state: dict[str, bool], stored: bool) -> None:  # type: ignore[no-untyped-def]
    """The s1 child's create: its first publish raises (``stored``: after storing it, a lost ack), its
    re-publishes fail while ``state["hold"]`` (the bus slow)."""
    real = bus.js_publish

    async def flaky(subject, msg, **kw):  # type: ignore[no-untyped-def]
        if _is_s1_create(msg):
            if not state["lost"]:
                state["lost"] = True
                if stored:
                    await real(subject, msg, **kw)
                raise TimeoutError("nats: timeout" + (" (stored, ack lost)" if stored else " (not stored)"))
            if state["hold"]:
                raise TimeoutError("nats: timeout (still down)")
        return await real(subject, msg, **kw)

    bus.js_publish = flaky


async def _s1_lost(state: dict[str, bool]) -> None:
    async def lost() -> bool | None:
        return state["lost"] or None

    await eventually(lost, timeout=15, what="the s1 child's publish lost")


async def _cancel(client, order_id: str) -> CommandReply:  # type: ignore[no-untyped-def]
    r = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=order_id), CommandReply, timeout=10)
    assert isinstance(r, CommandReply)
    return r


def _s1(kids: list[Order]) -> Order | None:
    return next((k for k in kids if k.client_order_id.endswith(":s1")), None)


async def test_a_child_confirmed_stored_after_its_parent_was_canceled_is_canceled_never_sent(make_system, client):
    """R1: the s1 child's create was not confirmed stored; the trader canceled the parent; once the bus was back
    the child was stored and routed - a market child of a canceled parent bought 0.25 more. It is stored as it
    was, then canceled here (it never reached the venue)."""
    sut = await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    state = {"lost": False, "hold": True}
    _flaky_s1(sut.running["order-router"].bus, state, stored=False)  # type: ignore[attr-defined]
    p = await placed(client, "rev2-unsure", "buy", "1", "twap", algo=TWAP)
    await _s1_lost(state)
    r = await _cancel(client, p.order_id)
    assert r.ok, r
    at_cancel = await order(client, p.order_id)
    assert at_cancel.status is S.PENDING_CANCEL and at_cancel.filled_quantity == D("0.25"), at_cancel
    state["hold"] = False
    final = await until(client, p.order_id, *DONE, timeout=30)
    kids = await children(client, final)
    s1 = _s1(kids)
    assert final.status is S.CANCELED and final.filled_quantity == D("0.25"), (final.status, final.filled_quantity)
    assert s1 is not None and s1.status is S.CANCELED and s1.venue_status is None, s1
    assert s1.filled_quantity == 0 and (s1.reason or "").startswith(f"parent {p.order_id}"), s1.reason
    assert "never sent" in (s1.reason or ""), s1.reason


async def test_a_stored_child_of_a_canceled_parent_is_not_routed_after_a_restart(make_system, client):
    """R1: the s1 child's create was stored but its ack lost; the parent was canceled; the router restarted and
    its start-up reconcile routed the child ("never reached the venue: routing it now"), before the algorithms
    resumed: with the books there it bought for a canceled parent. It is canceled, never sent."""
    sut = await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    state = {"lost": False, "hold": True}
    _flaky_s1(sut.running["order-router"].bus, state, stored=True)  # type: ignore[attr-defined]
    p = await placed(client, "rev2-restart", "buy", "1", "twap", algo=TWAP)
    await _s1_lost(state)
    r = await _cancel(client, p.order_id)
    assert r.ok, r
    at_cancel = await order(client, p.order_id)
    assert at_cancel.status is S.PENDING_CANCEL, at_cancel.status
    await sut.stop("order-router")
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])  # the books are there at the restart
    await sut.start("order-router")
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    final = await until(client, p.order_id, *DONE, timeout=30)
    kids = await children(client, final)
    s1 = _s1(kids)
    assert s1 is not None and s1.status is S.CANCELED and s1.venue_status is None, s1
    assert final.status is S.CANCELED and final.filled_quantity == at_cancel.filled_quantity == D("0.25"), final
    assert all(k.status in DONE for k in kids), [(k.client_order_id, k.status) for k in kids]


async def test_a_canceled_parents_child_never_made_before_a_restart_is_not_made_after_it(make_system, client):
    """R1: the s1 child's create was never stored (the bus down) and the parent was canceled; after a restart the
    parent's last child, missing, was made and routed whatever the parent's state. It is dropped, the reason on the
    trail."""
    sut = await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    state = {"lost": False, "hold": True}
    _flaky_s1(sut.running["order-router"].bus, state, stored=False)  # type: ignore[attr-defined]
    p = await placed(client, "rev2-missing", "buy", "1", "twap", algo=TWAP)
    await _s1_lost(state)
    r = await _cancel(client, p.order_id)
    assert r.ok, r
    at_cancel = await order(client, p.order_id)
    assert at_cancel.status is S.PENDING_CANCEL and len(at_cancel.children) == 2, at_cancel
    await sut.stop("order-router")  # (the s1 child never stored)
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    await sut.start("order-router")
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    final = await until(client, p.order_id, *DONE, timeout=30)
    kids = await children(client, final)
    assert final.status is S.CANCELED and final.filled_quantity == D("0.25"), (final.status, final.filled_quantity)
    assert _s1(kids) is None and final.children == at_cancel.children[:1], (final.children, kids)
    notes = [why for ev, why in await _trail(client, p.order_id) if ev == "slice_sent"]
    assert any("not made before a restart and the parent no longer runs" in n for n in notes), notes


async def test_a_child_confirmed_stored_while_the_router_stops_is_never_sent(make_system, client):
    """R4: a child whose create is confirmed stored once the engine was closed (the router stopping) was routed to
    a venue that is stopping. It is canceled here (never sent: its quantity is carried by the next run)."""
    sut = await make_system()
    router = sut.running["order-router"]
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    state = {"lost": False, "hold": True}
    _flaky_s1(router.bus, state, stored=False)  # type: ignore[attr-defined]
    p = await placed(client, "rev2-closed", "buy", "1", "twap", algo=TWAP)
    await _s1_lost(state)
    await router.algos.close()  # type: ignore[attr-defined]
    at_close = await order(client, p.order_id)
    state["hold"] = False

    async def s1_ended() -> Order | None:
        kid = _s1(await children(client, await order(client, p.order_id)))
        return kid if kid is not None and kid.status in (*DONE, S.REJECTED) else None

    s1 = await eventually(s1_ended, timeout=20, what="the s1 child stored and ended")
    assert s1.status is S.CANCELED and s1.venue_status is None and s1.filled_quantity == 0, s1
    assert "the order-router is stopping" in (s1.reason or ""), s1.reason
    assert (await order(client, p.order_id)).filled_quantity == at_close.filled_quantity == D("0.25")


async def test_a_parents_cancel_while_its_child_waits_for_its_fills_is_not_refused(make_system, client, monkeypatch):
    """R2: the venue said a child filled (it ended there) and its fill is on its way: the parent's cancel answered
    CANCEL_REFUSED ("cannot be canceled now (accepted, venue: closed)") and that pointless cancel was sent again
    until the fill came. Nothing is left to cancel: the answer is ok, the parent ends canceled with the fill."""
    gate = asyncio.Event()
    real = OrderRouter._on_fill

    async def held(self: OrderRouter, f: Fill, env: Envelope) -> None:  # the router's fills come late
        await gate.wait()
        await real(self, f, env)

    monkeypatch.setattr(OrderRouter, "_on_fill", held)
    sut = await make_system()
    router = sut.running["order-router"]
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "rev2-refused", "buy", "1", "twap", algo=TWAP)

    async def filled_at_venue() -> Order | None:
        kids = await children(client, await order(client, p.order_id))
        return kids[0] if kids and kids[0].venue_status == "closed" else None

    kid = await eventually(filled_at_venue, timeout=15, what="the first child filled at the venue")
    assert kid.status is S.ACCEPTED and kid.filled_quantity == 0, kid  # (its fill held back)
    cancels: list[str] = []
    real_cancel: Callable[[str, str], Awaitable[tuple[Order, str | None]]] = router.algos.cancel  # type: ignore[attr-defined]

    async def counted(cid: str, reason: str) -> tuple[Order, str | None]:
        cancels.append(cid)
        return await real_cancel(cid, reason)

    router.algos.cancel = counted  # type: ignore[attr-defined]
    r = await _cancel(client, p.order_id)
    assert r.ok and r.code is None, r
    assert r.orders and r.orders[0].status is S.PENDING_CANCEL, r.orders
    assert cancels == [], cancels  # nothing to cancel: the child ended at the venue
    gate.set()
    final = await until(client, p.order_id, *DONE, timeout=20)
    assert final.status is S.CANCELED and final.filled_quantity == D("0.25"), (final.status, final.filled_quantity)
    assert [k.status for k in await children(client, final)] == [S.FILLED]
    assert cancels == [], cancels


async def test_an_iceberg_whose_clip_stays_unknown_to_the_venue_ends_expired_with_an_alert(live, client, exchange):  # noqa: F811
    """R3: a clip rejected as unknown to the venue held back the iceberg's next clip for good (it may be showing):
    the parent never ended, its reservation kept. 5 x VENUE_UNKNOWN_GRACE_MS after the rejection the clip is looked
    up once more; still unknown, the parent ends expired with the reason and a warning alert."""
    await live()
    got: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        if a.code == "ALGO_CLIP_UNKNOWN":
            got.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    exchange.inject_fault("unknown_status", placed=False, times=1)  # the first clip: no answer, never placed
    r = await live_submit(
        client, "lv-ice-gone", type="iceberg", quantity=D("0.03"), price=D("59000"),
        algo=AlgoSpec(display_quantity=D("0.01")),
    )  # fmt: skip
    assert r.ok and r.order is not None, r
    pid = r.order.order_id
    final = await until(client, pid, *DONE, timeout=40)
    assert final.status is S.EXPIRED and final.filled_quantity == 0, (final.status, final.reason)
    assert len(final.children) == 1, final.children  # never a second clip
    kid = await order(client, final.children[0])
    assert kid.status is S.REJECTED and (kid.reason or "").startswith("unknown to the venue:"), kid
    assert final.closed_at is not None and kid.closed_at is not None
    assert final.closed_at - kid.closed_at >= 5 * 1000, (final.closed_at, kid.closed_at)  # (5 x the 1 s grace)
    why = final.reason or ""
    assert f"clip {kid.order_id} unknown to" in why and "left unfilled" in why, why

    async def alerted() -> list[RiskAlert] | None:
        return got or None

    alerts = await eventually(alerted, timeout=10, what="the ALGO_CLIP_UNKNOWN alert")
    assert alerts[0].severity == "warning" and pid in alerts[0].message, alerts[0]
    assert not exchange.orders("BTC/USDT", open_only=True)
