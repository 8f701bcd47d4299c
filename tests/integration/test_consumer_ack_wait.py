"""What a dead active held comes back soon, and a long handler is not raced by a redelivery (issue 19 review,
finding 4): a leased actor's durable consumers wait 2 x FAILOVER_MS (at least 5 s) for an ack, and the message in
hand is kept alive (``in_progress``) while its handler runs."""

from __future__ import annotations

import asyncio
import time

from actors.fill_tracker import FillTracker
from actors.fill_tracker import durable as tracker_durable
from bus.client import Bus, Envelope
from config.settings import load_settings
from domain.lease import ack_wait_s
from schemas.messages import ExecutionReport
from schemas.subjects import Subjects
from tests.helpers import eventually
from tests.integration.test_bus import report


async def _v(value: object) -> object:
    return value


async def test_a_long_handler_is_kept_alive_and_not_delivered_again(make_bus):
    bus: Bus = await make_bus("worker")
    s = bus.subjects
    seen: list[int] = []
    done: list[str] = []

    async def slow(r: ExecutionReport, env: Envelope) -> None:
        seen.append(env.delivered)
        await asyncio.sleep(2.5)  # well past the ack wait of 1 s
        done.append(r.order_id)

    await bus.consume(
        stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=slow, ack_wait=1.0
    )
    await bus.js_publish(s.exec_reports("BTC_USDT"), report(1))
    await eventually(lambda: _v(done == ["O1"]), timeout=20, what="the slow handler done")
    await asyncio.sleep(1.5)  # (a redelivery made while it ran would be handled by now: the ack wait is 1 s)
    assert seen == [1]


async def test_what_a_dead_consumer_held_comes_back_after_the_derived_ack_wait(make_bus):
    assert ack_wait_s(2000) == 5.0 and ack_wait_s(300) == 5.0 and ack_wait_s(4000) == 8.0
    dead: Bus = await make_bus("dead")
    dead.ack_wait = ack_wait_s(2000)  # what a leased actor sets (Actor.start)
    s = dead.subjects
    taken = asyncio.Event()

    async def hang(r: ExecutionReport, env: Envelope) -> None:
        taken.set()
        await asyncio.Event().wait()  # never acks: the instance dies with it in hand

    await dead.consume(stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=hang)
    await dead.js_publish(s.exec_reports("BTC_USDT"), report(1))
    await asyncio.wait_for(taken.wait(), 20)
    t_dead = time.monotonic()
    await dead.nc.close()  # gone with it in hand: nothing acks it or keeps it alive any more

    got: list[str] = []

    async def handle(r: ExecutionReport, env: Envelope) -> None:
        got.append(r.order_id)

    heir: Bus = await make_bus("heir")
    heir.ack_wait = ack_wait_s(2000)  # the standby that took over (the same settings)
    await heir.consume(stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=handle)
    await eventually(lambda: _v(got == ["O1"]), timeout=40, what="the held message delivered again")
    # the old 30 s ack wait would take ~30 s; 5 s plus a generous margin for a noisy machine
    assert time.monotonic() - t_dead < 5.0 + 10.0


async def test_a_leased_actor_consumes_with_the_derived_ack_wait_and_updates_an_old_durable(nats_url, prefix, make_bus):
    client: Bus = await make_bus("client")
    s = client.subjects
    name = tracker_durable("fill-tracker", None)
    old = await make_bus("old")  # a durable made before (30 s ack wait)
    await old.consume(
        stream=s.s_hops, durable=name, subject=s.exec_reports(), type_=ExecutionReport, handler=lambda r, e: _v(None)
    )
    assert (await client.js.consumer_info(s.s_hops, name)).config.ack_wait == 30.0
    await old.close()

    settings = load_settings({"NATS_URL": nats_url, "BUS_PREFIX": prefix, "FAILOVER_MS": "4000"})
    bus = await Bus.connect(nats_url, name="fill-tracker", subjects=Subjects(prefix))
    tracker = FillTracker(settings, bus)
    await tracker.start()
    try:
        assert (await client.js.consumer_info(s.s_hops, name)).config.ack_wait == 8.0
    finally:
        await tracker.stop()
