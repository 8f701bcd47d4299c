"""tbx/supervisor.py over a real nats-server: a part that dies is stopped and a fresh instance (a new object on
a new connection) started after the back-off; an essential task that ends fails its actor; a stop signal ends
every wait at once."""

from __future__ import annotations

import asyncio

from actors.base import Actor
from actors.md_feed import MarketDataFeed
from bus.client import Bus
from domain.backoff import Backoff
from schemas.subjects import Subjects
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
