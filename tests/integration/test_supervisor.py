"""tbx/supervisor.py over a real nats-server: a part that dies is stopped and a fresh instance (a new object on
a new connection) started after the back-off; an essential task that ends fails its actor; a stop signal ends
every wait at once."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from actors.base import Actor
from actors.md_feed import MarketDataFeed
from bus.client import Bus, Envelope
from domain.backoff import Backoff
from schemas.messages import Empty
from schemas.subjects import Subjects
from tbx import supervisor
from tbx.supervisor import Supervisor
from tests.helpers import eventually
from tests.integration.test_order_types import settings_for

QUICK = Backoff(first=0.05, cap=0.2, reset_after=60.0)


def supervised(nats_url: str, prefix: str, stop: asyncio.Event, policy: Backoff = QUICK, **env: str) -> Supervisor:
    settings = settings_for(nats_url, prefix, MARKET_DATA="synthetic", MARKET_DATA_INTERVAL="50", **env)

    async def connect() -> Bus:
        return await Bus.connect(nats_url, name="md-feed", subjects=Subjects(prefix))

    return Supervisor("md-feed", connect, lambda bus: MarketDataFeed(settings, bus), stop, policy=policy)


async def test_a_part_that_dies_is_stopped_and_a_fresh_instance_started(nats_url, prefix, make_bus) -> None:
    await make_bus("layout")  # the streams
    stop = asyncio.Event()
    sup = supervised(nats_url, prefix, stop)
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.started.wait(), 30)
        first = sup.part
        assert isinstance(first, MarketDataFeed) and first.status == "running"
        first.fail("a test says so")
        fresh = await eventually(
            lambda: asyncio.sleep(0, sup.part if sup.part not in (None, first) else None), what="a fresh instance"
        )
        assert fresh.status == "running" and fresh.bus is not first.bus and fresh.instance != first.instance
        assert first.status == "stopped" and first.bus.nc.is_closed
        assert sup.instances == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        if sup.part is not None:
            await sup.part.stop()


async def test_an_essential_task_that_ends_fails_its_actor_and_a_plain_one_does_not(nats_url, prefix, make_bus) -> None:
    bus = await make_bus("actor")

    class Fragile(Actor):
        name = "fragile"

        async def on_start(self) -> None:
            async def boom() -> None:
                await asyncio.sleep(0.05)
                raise RuntimeError("the loop broke")

            self.spawn(boom(), "a side job")  # not essential: logged, the actor goes on
            self.spawn(boom(), "its loop", essential=True)

    actor = Fragile(settings_for(nats_url, prefix), bus)
    await actor.start()
    try:
        reason = await asyncio.wait_for(actor.died, 10)
        assert reason == "background task its loop failed: RuntimeError: the loop broke"
    finally:
        await actor.stop()


async def test_a_stop_signal_during_the_back_off_stops_at_once(nats_url, prefix, make_bus) -> None:
    await make_bus("layout")
    stop = asyncio.Event()
    sup = supervised(nats_url, prefix, stop, policy=Backoff(first=30.0, cap=30.0))
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(sup.started.wait(), 30)
    first = sup.part
    assert first is not None
    first.fail("dies")
    await eventually(lambda: asyncio.sleep(0, first.status == "stopped"), what="the instance stopped")
    assert sup.part is None  # backing off (30 s)
    t0 = asyncio.get_running_loop().time()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert asyncio.get_running_loop().time() - t0 < 1.0


# -- a discarded instance never runs beside the fresh one ------------------------------------------------------
class Slow(Actor):
    """Its stop is slow (on_stop 5 s: a snapshot put while NATS is in trouble), its loop goes on until cancelled
    (a reconcile against the venue), and a request handler in hand finishes its venue call for 3 s when cancelled."""

    name = "slow"
    ticks: ClassVar[dict[str, int]] = {}
    events: ClassVar[list[tuple[str, str]]] = []

    async def on_start(self) -> None:
        Slow.events.append(("started", self.instance))

        async def loop() -> None:
            while True:
                await asyncio.sleep(0.05)
                Slow.ticks[self.instance] = Slow.ticks.get(self.instance, 0) + 1

        self.spawn(loop(), "venue loop", essential=True)

        async def handler(_: Empty, env: Envelope) -> None:
            Slow.events.append(("in hand", self.instance))
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(3.0)  # the venue call in flight is seen to its end (longer than the stop)
                Slow.events.append(("handler over", self.instance))
                raise

        await self.bus.subscribe(f"{self.subjects.prefix}.slow.work", Empty, handler)

    async def on_stop(self) -> None:
        await asyncio.sleep(5)


@pytest.mark.parametrize("cut_short", [False, True], ids=["whole stop", "stop cut short"])
async def test_a_discarded_instance_runs_nothing_once_the_fresh_one_starts(
    nats_url, prefix, make_bus, monkeypatch, cut_short
) -> None:
    """Regression (review of issue 19 part A, finding 1): the supervisor cut an instance's stop after 2 s, and
    whatever the stop had not ended yet (its loop, a handler in hand) kept running next to the fresh instance."""
    if cut_short:  # the stop takes longer than the supervisor grants: abort() ends the rest
        monkeypatch.setattr(supervisor, "DISCARD_TIMEOUT_S", 0.3)
    client = await make_bus("client")
    Slow.ticks.clear()
    Slow.events.clear()
    stop = asyncio.Event()
    settings = settings_for(nats_url, prefix)

    async def connect() -> Bus:
        return await Bus.connect(nats_url, name="slow", subjects=Subjects(prefix))

    sup = Supervisor("slow", connect, lambda bus: Slow(settings, bus), stop, policy=QUICK)
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.started.wait(), 30)
        first = sup.part
        assert first is not None
        await first.bus.nc.flush()  # its subscription known to the server before the work is sent (core NATS)
        await client.nc.publish(f"{prefix}.slow.work", b"{}")
        await eventually(lambda: asyncio.sleep(0, ("in hand", first.instance) in Slow.events), what="in hand")
        first.fail("a test says so")
        fresh = await eventually(
            lambda: asyncio.sleep(0, sup.part if sup.part not in (None, first) else None), 30, what="a fresh one"
        )
        assert ("handler over", first.instance) in Slow.events, "the fresh instance started while a handler ran"
        assert Slow.events.index(("handler over", first.instance)) < Slow.events.index(("started", fresh.instance))
        n = Slow.ticks.get(first.instance, 0)
        await eventually(lambda: asyncio.sleep(0, Slow.ticks.get(fresh.instance, 0) >= 10), what="fresh ticks")
        assert Slow.ticks.get(first.instance, 0) == n, "the discarded instance's loop still runs"
        assert first.status == "stopped" and first.bus.nc.is_closed
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        if sup.part is not None:
            await sup.part.stop()
