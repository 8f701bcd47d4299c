"""A deposed order-router sends no order, cancel or edit to a live venue (issue 19 review, finding 6).

The fence was asked when a call was queued; ccxt's rate limiter can hold an order's call for a whole window and a
429 backs it off for the venue's Retry-After. Here the lease (a real one, over the real nats-server) is taken away
while the call waits: real ccxt against the local Binance test exchange, whose request log shows what was sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec
import nats.js.errors
import pytest

from actors.order_router.actor import OrderRouter
from actors.venues.ccxt_venue import CcxtVenue
from bus.client import Bus
from bus.errors import LeaseLost
from bus.lease import LeaseDriver
from domain.lease import Phase
from schemas.messages import LeaseRecord, OrderStatus
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually
from tests.integration.test_ccxt_venue import make, req
from tests.integration.test_live_binance import KEY, SECRET, exchange, live, posts, submit, until  # noqa: F401

D = Decimal
FAILOVER_MS = 600  # the lease is lost within a renewal (60 ms) of its key being taken: long before any wait ends
WINDOW_MS = 4_000  # ccxt's rolling window in the limiter tests: an order waits up to this long for room
RETRY_AFTER_S = 5  # the venue's Retry-After on a 429: the back-off (the venue's cap, backoff_max_s, is 5 s too)


def _now(fn: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return fn()

    return check


async def take_lease(client: Bus, role: str) -> None:
    """Another instance takes the key (as a standby does once the active is silent): the holder is deposed."""
    kv = await client.kv(client.subjects.kv_lease(role))
    for _ in range(50):  # (a renewal of the holder between the read and the write: read again)
        entry = await kv.get(role)
        record = msgspec.json.decode(entry.value or b"", type=LeaseRecord)
        taken = msgspec.json.encode(msgspec.structs.replace(record, holder="the-new-active"))
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await kv.update(role, taken, last=entry.revision)
            return
    raise AssertionError(f"the key {role} could not be taken")


@pytest.fixture
async def fenced(make_bus) -> AsyncIterator[tuple[Bus, LeaseDriver]]:
    """A bus whose writes ask a real lease, held and renewed (role ``order-router``)."""
    bus = await make_bus("order-router")
    lease = LeaseDriver(
        bus, role="order-router", actor="order-router", partition=None, holder="A", failover_ms=FAILOVER_MS,
        on_lost=lambda _: None,
    )  # fmt: skip
    bus.set_fence(lease.check)
    await lease.acquire()
    runner = asyncio.create_task(lease.run())
    yield bus, lease
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner


async def _venue(ex: BinanceTestExchange, bus: Bus, window_ms: int | None = None, *, limiter: bool = True) -> CcxtVenue:
    ccxt_config = {"rateLimit": 5, "enableRateLimit": limiter}
    v = make(ex, api_key=KEY, secret=SECRET, poll_ms=3_600_000, ccxt_config=ccxt_config)  # no poll of its own
    v.fence = bus.check_fence  # as the order-router's venue session sets it
    await v.start()
    if window_ms is not None:  # ccxt's rolling window as the service configures it, 4 cost units per window
        v.ex.rateLimit, v.ex.rollingWindowSize, v.ex.tokenBucket = window_ms / 4, window_ms, None
        v.ex.init_rest_rate_limiter()
        assert v.ex.throttler.config["maxWeight"] == pytest.approx(4)
    return v


@dataclass
class Rig:
    exchange: BinanceTestExchange
    lease: LeaseDriver
    client: Bus
    venue: Callable[..., Awaitable[CcxtVenue]]  # ``await rig.venue(...)``: a started venue asking ``lease``


@pytest.fixture
async def rig(
    exchange: BinanceTestExchange,  # noqa: F811
    fenced: tuple[Bus, LeaseDriver],
    client: Bus,
) -> AsyncIterator[Rig]:
    made: list[CcxtVenue] = []

    async def venue(**kw: Any) -> CcxtVenue:
        made.append(await _venue(exchange, fenced[0], **kw))
        return made[-1]

    yield Rig(exchange, fenced[1], client, venue)
    for v in made:
        await v.stop()


async def _deposed(client: Bus, lease: LeaseDriver) -> None:
    await take_lease(client, "order-router")
    await eventually(_now(lambda: lease.lease.phase is Phase.LOST), what="the lease lost")


async def _lease_lost_in_the_limiter(
    v: CcxtVenue, client: Bus, lease: LeaseDriver, call: Callable[[], Awaitable[object]]
) -> None:
    """``call`` waits in ccxt's limiter behind a full window when the lease is lost: it raises ``LeaseLost``."""
    await v.fetch_balance()  # Binance's account read: 4 of the window's 4
    waiting = asyncio.create_task(call())
    await eventually(_now(lambda: bool(v.ex.throttler.queue)), what="the call waiting in ccxt's limiter")
    await _deposed(client, lease)
    assert not waiting.done()  # still waiting for room
    with pytest.raises(LeaseLost):  # not a rejection, not an unknown outcome: not sent
        await asyncio.wait_for(waiting, 3 * WINDOW_MS / 1000)


async def test_an_order_queued_in_the_rate_limiter_when_the_lease_is_lost_is_never_sent(rig: Rig) -> None:
    v = await rig.venue(window_ms=WINDOW_MS)
    await _lease_lost_in_the_limiter(
        v, rig.client, rig.lease, lambda: v.create_order(req("fence-q-1", quantity=D("0.001")))
    )
    assert posts(rig.exchange, "fence-q-1") == 0 and not rig.exchange.orders(client_order_id="fence-q-1")
    assert "LeaseLost" not in (v.health().last_error or "")  # nothing learnt about the venue


async def test_a_cancel_queued_in_the_rate_limiter_when_the_lease_is_lost_is_never_sent(rig: Rig) -> None:
    v = await rig.venue(window_ms=WINDOW_MS)
    rest = await v.create_order(req("fence-c-1", type="limit", price=D(59000), quantity=D("0.001")))
    assert rest.status == "open"
    await _lease_lost_in_the_limiter(v, rig.client, rig.lease, lambda: v.cancel_order("fence-c-1", "BTC_USDT"))
    assert not rig.exchange.requests_for("DELETE", "/api/v3/order", origClientOrderId="fence-c-1")
    assert [o.status for o in rig.exchange.orders(client_order_id="fence-c-1")] == ["NEW"]  # still open there


async def test_an_order_backing_off_after_a_429_when_the_lease_is_lost_is_not_sent_again(rig: Rig) -> None:
    v = await rig.venue(limiter=False)  # (only the re-send asks the fence: no limiter to ask it)
    rig.exchange.inject_fault("http_429", times=1, retry_after=RETRY_AFTER_S)
    sending = asyncio.create_task(v.create_order(req("fence-b-1", quantity=D("0.001"))))
    await eventually(_now(lambda: posts(rig.exchange, "fence-b-1") == 1), what="the first send (429)")
    await _deposed(rig.client, rig.lease)
    assert not sending.done()  # backing off
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(sending, 3 * RETRY_AFTER_S)
    [refused] = rig.exchange.requests_for("POST", "/api/v3/order", newClientOrderId="fence-b-1")
    assert refused.status == 429 and not rig.exchange.orders(client_order_id="fence-b-1")


async def test_a_deposed_router_leaves_the_order_in_flight_and_the_new_active_resolves_it(
    live: Callable[..., Awaitable[object]],  # noqa: F811
    exchange: BinanceTestExchange,  # noqa: F811
    client: Bus,
) -> None:
    """The whole service: the order-router's send is backing off after a 429 when its lease is taken. It sends
    nothing more, records no rejection and no venue down; the order stays in flight; the next active looks it up
    by its client order id, and - the venue never had it - rejects it as unknown there, never sending it twice."""
    sut = await live()
    a = sut.running["order-router"]  # type: ignore[attr-defined]
    assert isinstance(a, OrderRouter)
    session = a.sessions["binance"]
    exchange.inject_fault("http_429", times=1, retry_after=RETRY_AFTER_S)
    replying = asyncio.create_task(submit(client, "fence-sys-1"))
    try:
        await eventually(_now(lambda: posts(exchange, "fence-sys-1") == 1), what="the first send (429)")
        order_id = next(oid for oid, o in a.store.orders.items() if o.client_order_id == "fence-sys-1")
        await take_lease(client, a.role)
        reason = await asyncio.wait_for(a.died, 10)
        assert reason.startswith("lease lost")
        await eventually(_now(lambda: order_id not in session.sending), timeout=3 * RETRY_AFTER_S, what="send over")
        assert posts(exchange, "fence-sys-1") == 1 and not exchange.orders(client_order_id="fence-sys-1")
        assert order_id in session.fresh  # known not sent: no unknown outcome (nor a venue down) made of it
        o = a.store.orders[order_id]
        assert (o.status, o.venue_status) == (OrderStatus.SUBMITTED, None)  # in flight: not rejected, not guessed

        await sut.stop("order-router")  # type: ignore[attr-defined]
        await sut.start("order-router")  # type: ignore[attr-defined]  # the new active (after the key's holder)
        done = await until(client, "fence-sys-1", "rejected", timeout=30)
        assert "never sent twice" in (done.reason or "")
        assert posts(exchange, "fence-sys-1") == 1 and not exchange.orders(client_order_id="fence-sys-1")
    finally:
        replying.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await replying
