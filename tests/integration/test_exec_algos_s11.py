"""Regression tests of the s11 review of the execution algorithms' engine (issue 20): a refused or lost child
cancel (M1), a child whose store outcome is unknown (M4), children read back from ORDERS under the store's lock
(M5), a reducing algorithm in REDUCING (m1), the HALTED grace (m2), a market slice below the venue's minimum
notional at the touch (m4). Same set-up as tests/integration/test_exec_algos.py (paper venue, the books the test
publishes; BTC_USDT: tick 0.01, step 0.001, minimum notional 1)."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from schemas.messages import (
    AlgoSpec,
    CancelOrder,
    CommandReply,
    OrderEventsPage,
    OrderEventsQuery,
    OrderStatus,
    RiskCommand,
    RiskStateChange,
)
from tests.helpers import eventually
from tests.integration.test_exec_algos import children
from tests.integration.test_live_binance import exchange, live  # noqa: F401 (the fixtures)
from tests.integration.test_live_binance import submit as live_submit
from tests.integration.test_order_types import order, placed, publish_book, submit, until

S = OrderStatus
DONE = (S.FILLED, S.EXPIRED, S.CANCELED)


async def _trail(client, oid: str) -> list[tuple[str, str]]:
    page = await client.request(client.subjects.query("order_events"), OrderEventsQuery(order_id=oid), OrderEventsPage)
    return [(e.event, e.order.reason or "") for e in page.events]


async def _resting_clip(venue):
    return await eventually(lambda: venue.fetch_open_orders("BTC_USDT"), what="a clip resting")


async def test_a_refused_child_cancel_is_reported_and_sent_again_until_the_clip_is_gone(make_system, client):
    """M1 (a): the venue refused the clip's cancel; the parent's cancel answered ok (pending_cancel) and nothing
    tried again: the clip rested and filled for a parent the trader canceled."""
    sut = await make_system()
    router = sut.running["order-router"]
    venue = router.venue  # type: ignore[attr-defined]
    await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    p = await placed(client, "ice-ref", "buy", "1", "iceberg", price="100.00", algo=AlgoSpec(display_quantity=D("0.3")))
    await _resting_clip(venue)
    real = router.algos.cancel  # type: ignore[attr-defined]
    refused = {"n": 0}

    async def refusing(cid: str, reason: str):  # the venue refuses the first two cancels (down, rate limited, ...)
        if refused["n"] < 2:
            refused["n"] += 1
            return router.store.orders[cid], "the venue did not answer"  # type: ignore[attr-defined]
        return await real(cid, reason)

    router.algos.cancel = refusing  # type: ignore[attr-defined]
    r = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=p.order_id), CommandReply, timeout=5)
    assert not r.ok and r.code == "CANCEL_REFUSED", r
    assert "the venue did not answer" in (r.detail or "") and "sent again" in (r.detail or ""), r.detail
    assert r.orders and r.orders[0].status is S.PENDING_CANCEL
    final = await until(client, p.order_id, S.CANCELED, S.FILLED, timeout=20)  # the engine kept trying
    assert final.status is S.CANCELED and final.filled_quantity == 0
    assert refused["n"] == 2 and not await venue.fetch_open_orders("BTC_USDT")


async def test_a_crash_between_the_parents_pending_cancel_and_its_clips_cancel_is_repaired_on_restart(
    make_system, client
):
    """M1 (b): the router died after the parent's pending_cancel, before the clip's cancel: on restart the parent
    was resumed, saw a live clip and did nothing - the clip rested for good and its fills landed on a canceled
    parent."""
    sut = await make_system()
    router = sut.running["order-router"]
    venue = router.venue  # type: ignore[attr-defined]
    await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    p = await placed(
        client, "ice-crash", "buy", "1", "iceberg", price="100.00", algo=AlgoSpec(display_quantity=D("0.3"))
    )
    await _resting_clip(venue)
    reached = asyncio.Event()

    async def dies(cid: str, reason: str):  # the process stops here: no child cancel goes out
        reached.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    router.algos.cancel = dies  # type: ignore[attr-defined]
    pending = asyncio.create_task(
        client.request(client.subjects.orders_cancel, CancelOrder(order_id=p.order_id), CommandReply, timeout=30)
    )
    await asyncio.wait_for(reached.wait(), 10)
    assert (await order(client, p.order_id)).status is S.PENDING_CANCEL
    await sut.stop("order-router")
    pending.cancel()
    await sut.start("order-router")
    venue = sut.running["order-router"].venue  # type: ignore[attr-defined]
    final = await until(client, p.order_id, S.CANCELED, S.FILLED, timeout=20)
    assert final.status is S.CANCELED and final.filled_quantity == 0
    assert not await venue.fetch_open_orders("BTC_USDT")
    kids = await children(client, final)
    assert [k.status for k in kids] == [S.CANCELED], [(k.status, k.reason) for k in kids]


async def test_a_child_whose_store_publish_raised_after_storing_is_never_sent_twice(make_system, client):
    """M4: a child's create published (stored) but its ack lost: the slice was carried on - its quantity sent
    again by the next child - and the stored child was routed after a restart: the children took more than the
    parent. It is stored again under the same version (JetStream keeps one copy) and sent once."""
    sut = await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    bus = sut.running["order-router"].bus  # type: ignore[attr-defined]
    real = bus.js_publish
    lost = {"done": False}

    async def ack_lost(subject, msg, **kw):
        seq = await real(subject, msg, **kw)
        order_ = getattr(msg, "order", None)
        s1 = order_ is not None and order_.role == "slice" and order_.client_order_id.endswith(":s1")
        if s1 and getattr(msg, "event", "") == "submitted" and not lost["done"]:
            lost["done"] = True
            raise TimeoutError("nats: timeout (the ack was lost, the event is stored)")
        return seq

    bus.js_publish = ack_lost
    p = await placed(client, "ghost", "buy", "1", "twap", algo=AlgoSpec(duration_ms=1600, slices=4))
    p = await until(client, p.order_id, *DONE, timeout=20)
    assert lost["done"]
    bus.js_publish = real
    await sut.stop("order-router")
    await sut.start("order-router")  # the rebuild finds every child stored: none is routed again
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])

    async def settled():
        kids = await children(client, await order(client, p.order_id))
        return kids if all(k.status in (S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED) for k in kids) else None

    kids = await eventually(settled, timeout=20, what="every child ended")
    p = await order(client, p.order_id)
    assert sum((k.quantity for k in kids), D(0)) <= p.quantity, [str(k.quantity) for k in kids]
    assert sum((k.filled_quantity for k in kids), D(0)) == p.filled_quantity == D(1)
    assert p.status is S.FILLED
    assert any("not confirmed stored" in why for ev, why in await _trail(client, p.order_id) if ev == "slice_carried")


async def test_a_twap_never_reads_its_children_back_from_orders_under_the_store_lock(make_system, client, monkeypatch):
    """M5: every slice and every child change read all the evicted children back from ORDERS, many of them under
    the router's global store lock (O(n^2) reads once more than KEEP_CLOSED orders closed)."""
    from actors.order_router import store as store_mod

    monkeypatch.setattr(store_mod, "KEEP_CLOSED", 3)  # (1,000 in production: a TWAP of > 1,000 slices, or many)
    orig = store_mod.OrderStore._read_events
    reads = {"n": 0, "locked": 0}
    read_ids: list[str] = []

    async def counted(self, order_id, first, last):
        read_ids.append(order_id)
        reads["n"] += 1
        reads["locked"] += self.lock.locked()
        return await orig(self, order_id, first, last)

    monkeypatch.setattr(store_mod.OrderStore, "_read_events", counted)
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "many", "buy", "2", "twap", algo=AlgoSpec(duration_ms=3000, slices=20))
    p = await until(client, p.order_id, *DONE, timeout=60)
    assert p.status is S.FILLED and len(p.children) == 20
    # (the test's own polls may read the parent back: with KEEP_CLOSED 3 it leaves memory as soon as it is filled)
    children = [r for r in read_ids if r != p.order_id]
    assert (len(children), reads["locked"]) == (0, 0), reads  # (without the fix: hundreds, a quarter under the lock)


async def test_in_reducing_a_reducing_sell_twap_runs_and_a_buy_twap_is_denied(make_system, client):
    """m1: in REDUCING the gate approved a reducing sell TWAP (201) and the router canceled it at its first step
    with nothing filled. It runs now (recorded as reducing on the parent); a non-reducing one is denied."""
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    b = await placed(client, "long", "buy", "1")
    await until(client, b.order_id, S.FILLED)

    ch = await client.request(client.subjects.risk_command, RiskCommand(action="reduce"), RiskStateChange, timeout=5)
    assert ch.state == "REDUCING"
    sell = await eventually(
        lambda: _accepted(client, "unwind", "sell", "0.5"),
        timeout=10,
        what="the sell twap accepted (the gate saw the position)",
    )
    assert sell.algo_state is not None and sell.algo_state.reduces
    final = await until(client, sell.order_id, *DONE, timeout=20)
    assert final.status is S.FILLED and final.filled_quantity == D("0.5"), (final.status, final.reason)
    r = await submit(client, "more", "buy", "0.5", "twap", algo=AlgoSpec(duration_ms=3000, slices=3))
    assert not r.ok and r.code == "REDUCING_ONLY", r


async def _accepted(client, coid: str, side: str, qty: str):
    r = await submit(client, coid, side, qty, "twap", algo=AlgoSpec(duration_ms=2000, slices=3))
    return r.order if r.ok else None


async def test_an_algorithm_halted_then_resumed_within_the_grace_keeps_running(make_system, client):
    """m2: after HALT_GRACE_S the algorithms were stopped without reading the state again: halted and resumed at
    once (an automatic halt the operator lifts), the TWAP was canceled 'trading state HALTED' while ACTIVE."""
    sut = await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "hr", "buy", "1", "twap", algo=AlgoSpec(duration_ms=9000, slices=6))
    router = sut.running["order-router"]
    trading = router.trading  # type: ignore[attr-defined]

    async def state(s: str):
        return trading.state == s or None

    # the gate's own automatic halt (MAX_DAILY_LOSS's: only the state changes, no cancel-all), then a resume
    rg = sut.running["risk-gate"]
    await rg._set_state("HALTED", "test: an automatic halt")  # type: ignore[attr-defined]
    await eventually(lambda: state("HALTED"), timeout=5, what="HALTED followed by the router")
    ch = await client.request(client.subjects.risk_command, RiskCommand(action="resume"), RiskStateChange, timeout=5)
    assert ch.state == "ACTIVE"
    await eventually(lambda: state("ACTIVE"), timeout=5, what="ACTIVE followed by the router")
    final = await until(client, p.order_id, *DONE, timeout=30)
    assert final.status is S.FILLED and final.filled_quantity == D(1), (final.status, final.reason)


async def test_a_market_slice_below_the_minimum_notional_at_the_touch_is_carried(make_system, client):
    """m4: a market child's minimum notional was sized at the acceptance price: after the price fell, a slice was
    below the venue's minimum notional, the venue rejected it and the whole algorithm was canceled. It is carried
    into the next slice (on the trail); the last slice sends the rest if the venue takes it, else the parent ends
    expired saying why."""
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    a = await placed(client, "mn-a", "buy", "0.05", "twap", algo=AlgoSpec(duration_ms=3000, slices=5))
    b = await placed(client, "mn-b", "buy", "0.04", "twap", algo=AlgoSpec(duration_ms=2400, slices=4))

    async def first_filled():
        kids = [await children(client, await order(client, p.order_id)) for p in (a, b)]
        return kids if all(k and k[0].status is S.FILLED for k in kids) else None

    await eventually(first_filled, timeout=10, what="both first slices filled at 100")
    await publish_book(client, [("49.00", "500")], [("50.00", "500")])  # 0.01 x 50 = 0.5 < 1 (the minimum)
    a = await until(client, a.order_id, *DONE, timeout=20)
    b = await until(client, b.order_id, *DONE, timeout=20)
    assert a.status is S.FILLED and a.filled_quantity == D("0.05"), (a.status, a.reason)
    kids = await children(client, a)
    assert [k.quantity for k in kids] == [D("0.01"), D("0.02"), D("0.02")], [k.quantity for k in kids]
    notes = [why for ev, why in await _trail(client, a.order_id) if ev == "slice_sent"]
    assert any("minimum notional 1" in n and "carried to the next slice" in n for n in notes), notes
    # the last slice's rest (0.01 x 50) is still too small: not sent, the parent ends saying why
    assert b.status is S.EXPIRED and b.filled_quantity == D("0.03"), (b.status, b.reason)
    assert (
        "0.010 left" in (b.reason or "") and "the last" in (b.reason or "") and "minimum notional" in (b.reason or "")
    )
    assert all(k.status is S.FILLED for k in await children(client, b))


async def test_an_iceberg_clip_unknown_to_a_live_venue_is_never_followed_by_a_second_clip(live, client, exchange):  # noqa: F811
    """M3: a clip whose create's answer was lost and that the live venue did not show within the grace is rejected
    "unknown to the venue" - but it may rest there all the same. The next clip went out at once: when the first
    showed up (revived) two clips rested, twice the display quantity. A clip that may be showing blocks the next."""
    await live()
    exchange.inject_fault("unknown_status", placed=False, times=1)  # the first clip's create: no answer, not placed
    r = await live_submit(
        client, "lv-ice-unknown", type="iceberg", quantity=D("0.03"), price=D("59000"),
        algo=AlgoSpec(display_quantity=D("0.01")),
    )  # fmt: skip
    assert r.ok and r.order is not None, r
    pid = r.order.order_id

    async def first_unknown():
        p = await order(client, pid)
        kid = await order(client, p.children[0]) if p.children else None
        return p if kid is not None and (kid.reason or "").startswith("unknown to the venue:") else None

    p = await eventually(first_unknown, timeout=20, what="the first clip rejected as unknown to the venue")
    coid = (await order(client, p.children[0])).client_order_id
    # (no condition to await for the absence of a second clip: a bounded look, long enough for one to go out)
    deadline = asyncio.get_running_loop().time() + 2.0
    while asyncio.get_running_loop().time() < deadline:
        assert len((await order(client, pid)).children) == 1, "a second clip while the first may be showing"
        await asyncio.sleep(0.1)
    exchange.place_external_order(
        "BTC/USDT", "buy", "LIMIT", "0.01", price="59000", time_in_force="GTC", client_order_id=coid
    )  # it rests there after all

    async def revived():
        kid = await order(client, (await order(client, pid)).children[0])
        return kid if kid.status is S.ACCEPTED else None

    await eventually(revived, timeout=20, what="the first clip working again")
    assert len(exchange.orders("BTC/USDT", open_only=True)) == 1
    assert len((await order(client, pid)).children) == 1
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=pid), CommandReply, timeout=10)
    assert reply.ok, reply
    await until(client, pid, S.CANCELED, timeout=20)
    assert not exchange.orders("BTC/USDT", open_only=True)


async def test_a_stop_that_failed_while_halted_is_tried_again(make_system, client, monkeypatch):
    """m2: a stop (cancel_parent) that failed while HALTED armed a step, and a step while HALTED only armed again:
    the parent was never stopped (an iceberg's clip rested through the halt)."""
    from actors.order_router import exec_algos

    real = exec_algos.ExecAlgos.cancel_parent
    failed = {"n": 0}

    async def flaky(self, pid, reason):
        if "HALTED" in reason and failed["n"] == 0:
            failed["n"] += 1
            raise TimeoutError("the ORDERS stream did not answer")
        return await real(self, pid, reason)

    monkeypatch.setattr(exec_algos.ExecAlgos, "cancel_parent", flaky)
    sut = await make_system()
    venue = sut.running["order-router"].venue  # type: ignore[attr-defined]
    await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    p = await placed(client, "ice-h", "buy", "1", "iceberg", price="100.00", algo=AlgoSpec(display_quantity=D("0.3")))
    await _resting_clip(venue)
    rg = sut.running["risk-gate"]
    await rg._set_state("HALTED", "test: an automatic halt")  # type: ignore[attr-defined]
    final = await until(client, p.order_id, S.CANCELED, S.FILLED, timeout=30)
    assert failed["n"] == 1 and final.status is S.CANCELED and "HALTED" in (final.reason or ""), final.reason
    assert not await venue.fetch_open_orders("BTC_USDT")


async def test_a_canceled_iceberg_whose_unknown_clip_shows_up_later_has_that_clip_canceled(
    live,  # noqa: F811
    client,
    exchange,  # noqa: F811
):
    """M1 / M3: the parent canceled while its clip is unknown to the venue ends canceled (nothing to cancel here);
    when the clip shows up at the venue after all, it is canceled there - never left resting for a parent the
    trader canceled."""
    await live()
    exchange.inject_fault("unknown_status", placed=False, times=1)
    r = await live_submit(
        client, "lv-ice-late", type="iceberg", quantity=D("0.03"), price=D("59000"),
        algo=AlgoSpec(display_quantity=D("0.01")),
    )  # fmt: skip
    assert r.ok and r.order is not None, r
    pid = r.order.order_id

    async def first_unknown():
        p = await order(client, pid)
        kid = await order(client, p.children[0]) if p.children else None
        return kid if kid is not None and (kid.reason or "").startswith("unknown to the venue:") else None

    kid = await eventually(first_unknown, timeout=20, what="the first clip rejected as unknown to the venue")
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=pid), CommandReply, timeout=10)
    assert reply.ok, reply
    p = await until(client, pid, S.CANCELED, timeout=20)
    assert p.children == [kid.order_id]
    exchange.place_external_order(
        "BTC/USDT", "buy", "LIMIT", "0.01", price="59000", time_in_force="GTC", client_order_id=kid.client_order_id
    )  # it rests there after all

    async def gone():
        k = await order(client, kid.order_id)
        return k if k.status is S.CANCELED and not exchange.orders("BTC/USDT", open_only=True) else None

    await eventually(gone, timeout=20, what="the clip that showed up canceled at the venue")
    assert (await order(client, pid)).status is S.CANCELED
