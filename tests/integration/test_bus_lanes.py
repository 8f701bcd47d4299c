"""Lanes (issue 22): a consumer or subscription with ``lane`` handles messages of different lanes side by side and
those of one lane one at a time, in order; retries, dead letters and stopping work as without lanes."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bus.client import Bus, Envelope
from bus.codec import encode
from schemas.messages import ExecutionReport, OrderRequest
from tests.helpers import eventually
from tests.integration.test_bus import _at_least, dead_letters


def report(order: str, n: int) -> ExecutionReport:
    return ExecutionReport(
        kind="trade", order_id=order, client_order_id=f"C{order}", pair="BTC_USDT", side="buy",
        order_quantity=Decimal(10), venue="test", ts=n, trade_id=f"{order}-{n}", quantity=Decimal(1),
        price=Decimal(100),
    )  # fmt: skip


def _order(r: ExecutionReport) -> str:
    return r.order_id


async def test_one_lane_in_order_lanes_side_by_side(make_bus):
    bus: Bus = await make_bus()
    s = bus.subjects
    log: list[str] = []
    in_hand = 0
    most = 0

    async def handler(r: ExecutionReport, env: Envelope) -> None:
        nonlocal in_hand, most
        in_hand += 1
        most = max(most, in_hand)
        log.append(f"start {r.trade_id}")
        await asyncio.sleep(0.05)
        log.append(f"done {r.trade_id}")
        in_hand -= 1

    await bus.consume(
        stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=handler, lane=_order
    )
    for n in range(5):
        for order in ("A", "B", "C"):
            await bus.js_publish(s.exec_reports("BTC_USDT"), report(order, n))
    await eventually(lambda: asyncio.sleep(0, len(log) == 30), timeout=20, what="every report handled")
    assert most > 1  # lanes side by side
    for order in ("A", "B", "C"):  # one lane: one at a time, in the order sent
        mine = [e for e in log if e.split()[1].startswith(order)]
        assert mine == [f"{w} {order}-{n}" for n in range(5) for w in ("start", "done")]


async def test_a_failing_laned_handler_is_retried_and_dead_lettered_and_stopping_waits(make_bus):
    bus: Bus = await make_bus()
    s = bus.subjects
    tries: dict[str, int] = {}
    done: list[str] = []

    async def handler(r: ExecutionReport, env: Envelope) -> None:
        tries[r.trade_id or ""] = tries.get(r.trade_id or "", 0) + 1
        if r.order_id == "B":
            raise RuntimeError("always broken")
        if r.order_id == "A" and tries[r.trade_id or ""] < 2:
            raise RuntimeError("flaky once")
        await asyncio.sleep(0.3)
        done.append(r.trade_id or "")

    await bus.consume(
        stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=handler,
        max_deliver=3, lane=_order,
    )  # fmt: skip
    await bus.js_publish(s.exec_reports("BTC_USDT"), report("A", 0))
    await bus.js_publish(s.exec_reports("BTC_USDT"), report("B", 0))
    await bus.js.publish(s.exec_reports("BTC_USDT"), b"{not json")
    await eventually(lambda: asyncio.sleep(0, done == ["A-0"]), timeout=15, what="A retried then done")
    letters = await eventually(lambda: _at_least(dead_letters(bus), 2), timeout=15, what="B and the bad body")
    assert tries["B-0"] == 3 and any("always broken" in d.reason for d in letters)

    await bus.js_publish(s.exec_reports("BTC_USDT"), report("C", 0))
    await eventually(lambda: asyncio.sleep(0, tries.get("C-0") == 1), what="C in hand")
    await bus.stop_consuming(grace=2.0)  # waits for the laned handler in hand
    assert done == ["A-0", "C-0"]


async def test_a_laned_subscription_answers_every_request(make_bus):
    bus: Bus = await make_bus()
    seen: list[str] = []

    async def handler(req: OrderRequest, env: Envelope) -> None:
        await asyncio.sleep(0.01 if req.client_order_id.endswith("0") else 0)
        seen.append(req.client_order_id)
        await bus.respond_to(env.reply or "", {"ok": True, "id": req.client_order_id})

    subject = f"{bus.subjects.prefix}.lanes.test"
    await bus.subscribe(subject, OrderRequest, handler, lane=lambda r: r.client_order_id)
    reqs = [
        OrderRequest(client_order_id=f"c{i}", pair="BTC_USDT", side="buy", quantity=Decimal(1), ts=1) for i in range(40)
    ]
    answers = await asyncio.gather(*(bus.nc.request(subject, encode(r), timeout=5) for r in reqs))
    assert sorted(a.data for a in answers) == sorted(f'{{"ok":true,"id":"c{i}"}}'.encode() for i in range(40))
    assert sorted(seen) == sorted(r.client_order_id for r in reqs)


async def test_stopping_cancels_what_outlives_the_grace_and_starts_nothing_queued(make_bus):
    """Review of issue 22, finding 1: laned handlers ran on after stop_consuming (the lease released, a standby
    taking over), and those queued in a lane started after the pause. Past the grace they are cancelled (as nats-py
    cancels its own handler in hand) and a queued one is handed back to JetStream, never started."""
    bus: Bus = await make_bus()
    s = bus.subjects
    started: list[str] = []
    release = asyncio.Event()

    async def handler(r: ExecutionReport, env: Envelope) -> None:
        started.append(r.trade_id or "")
        await release.wait()

    await bus.consume(
        stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=handler, lane=_order
    )
    for n in range(3):
        await bus.js_publish(s.exec_reports("BTC_USDT"), report("A", n))
    await eventually(lambda: asyncio.sleep(0, started == ["A-0"]), what="A-0 in hand")
    await eventually(lambda: asyncio.sleep(0, len(bus._lane_tasks) == 3), what="A-1 and A-2 queued in the lane")
    await bus.stop_consuming(grace=0.3)
    assert not bus._lane_tasks  # nothing of it runs on
    release.set()
    await asyncio.sleep(0.3)
    assert started == ["A-0"]  # and nothing queued started

    rest: list[str] = []

    async def quick(r: ExecutionReport, env: Envelope) -> None:
        rest.append(r.trade_id or "")

    again = await make_bus("again")
    await again.consume(
        stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=quick, lane=_order
    )
    await eventually(lambda: asyncio.sleep(0, sorted(rest) == ["A-0", "A-1", "A-2"]), timeout=40, what="all again")
