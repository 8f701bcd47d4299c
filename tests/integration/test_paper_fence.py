"""A paper fill that cannot be stored must not stay in memory (issue 19 review, finding 5): otherwise the order's
record stays "open", memory thinks it filled, and the next rebuild (a restart, a failover) fills it again."""

from __future__ import annotations

import contextlib
from decimal import Decimal as D

from actors.venues.base import VenueOrder, VenueOrderRequest, VenueTrade
from actors.venues.paper import PaperVenue, _dec_balances, _dec_order, _key
from bus.client import Bus
from bus.errors import LeaseLost
from domain.matching import SimOrder
from schemas.messages import Book, now_ms
from tests.integration.test_order_types import levels, settings_for


class Fence:
    """A lease fence the test opens and closes; ``deny_calls``: the numbers of the calls (from 1) refused."""

    def __init__(self) -> None:
        self.open = True
        self.calls = 0
        self.deny_calls: set[int] = set()

    def __call__(self) -> str:
        self.calls += 1
        if not self.open or self.calls in self.deny_calls:
            raise LeaseLost("order-router: this instance may not write now (test)")
        return "order-router:1"


async def _venue(nats_url: str, prefix: str, bus: Bus) -> tuple[PaperVenue, list[str]]:
    venue = PaperVenue(settings_for(nats_url, prefix), bus)
    await venue.start()
    pushed: list[str] = []

    async def listener(o: VenueOrder, trades: list[VenueTrade]) -> None:
        pushed.append(o.client_order_id)

    venue.set_listener(listener)
    await venue._on_book(_book("100.00"))  # asks above every bid of the tests
    return venue, pushed


def _book(ask: str) -> Book:
    return Book(pair="BTC_USDT", bids=levels(("90.00", "5")), asks=levels((ask, "5")), ts=now_ms())


async def _stored(venue: PaperVenue, coid: str) -> SimOrder:
    return _dec_order.decode((await venue.kv.get(_key(coid))).value or b"")


async def test_a_fill_refused_by_the_fence_is_neither_kept_nor_filled_twice(nats_url, prefix, make_bus):
    bus = await make_bus("venue")
    fence = Fence()
    bus.set_fence(fence)
    venue, pushed = await _venue(nats_url, prefix, bus)
    await venue.create_order(VenueOrderRequest("rest-1", "BTC_USDT", "buy", "limit", D("1"), D("99.00")))

    fence.open = False  # the lease lapsed: the book that crosses it must change nothing
    with contextlib.suppress(LeaseLost):  # (it may say so, but it must not keep a fill it could not store)
        await venue._on_book(_book("99.00"))
    assert (await _stored(venue, "rest-1")).status == "open"
    got = await venue.fetch_order("rest-1", "BTC_USDT")
    assert got is not None and (got.status, got.filled) == ("open", D(0))
    assert [o.client_order_id for o in await venue.fetch_open_orders()] == ["rest-1"]
    assert pushed == []

    fence.open = True  # renewed: the next crossing book fills it, once, and that fill is stored
    await venue._on_book(_book("99.00"))
    stored = await _stored(venue, "rest-1")
    assert (stored.status, stored.filled, len(stored.trades)) == ("closed", D("1"), 1)
    assert pushed == ["rest-1"]

    again = PaperVenue(settings_for(nats_url, prefix), bus)  # a rebuild from what is stored fills nothing again
    await again.start()
    assert await again.fetch_open_orders() == []
    await again._on_book(_book("99.00"))
    assert (await _stored(again, "rest-1")).trades == stored.trades


async def test_one_fill_not_stored_is_rolled_back_and_stops_neither_the_others_nor_the_listener(
    nats_url, prefix, make_bus
):
    bus = await make_bus("venue")
    fence = Fence()
    bus.set_fence(fence)
    venue, pushed = await _venue(nats_url, prefix, bus)
    await venue.create_order(VenueOrderRequest("first", "BTC_USDT", "buy", "limit", D("1"), D("99.50")))
    await venue.create_order(VenueOrderRequest("second", "BTC_USDT", "buy", "limit", D("1"), D("99.00")))
    balances = dict(venue.balances)

    fence.deny_calls = {fence.calls + 2}  # the fence check passes, the first order's write is refused
    await venue._on_book(_book("99.00"))  # crosses both: "first" has priority (the better price)
    assert (await _stored(venue, "first")).status == "open"
    assert (await _stored(venue, "second")).status == "closed"
    assert pushed == ["second"]
    first = await venue.fetch_order("first", "BTC_USDT")
    assert first is not None and (first.status, first.filled, first.trades) == ("open", D(0), [])
    assert [o.client_order_id for o in await venue.fetch_open_orders()] == ["first"]
    assert venue.matchers["BTC_USDT"].position == D("1")  # the second's fill only
    assert venue.balances["BTC"] == balances.get("BTC", D(0)) + D("1")
    assert _dec_balances.decode((await venue.kv.get(venue.balances_key)).value or b"") == venue.balances

    await venue._on_book(_book("99.00"))  # the next book fills the first, once
    assert (await _stored(venue, "first")).trades and (await _stored(venue, "first")).status == "closed"
    assert pushed == ["second", "first"]
    assert venue.matchers["BTC_USDT"].position == D("2")
