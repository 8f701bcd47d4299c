"""actors.books.BookCache: books per venue and each pair's reference book (unnamed if fresh, else the first venue
of the venue order with a fresh book). Plain calls of ``put`` with the receive time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.books import FRESH_MS, BookCache
from tests.helpers import book


def named(venue: str | None, bid: str, ask: str, pair: str = "BTC_USDT"):
    b = book(pair, bid, ask)
    b.venue = venue
    return b


def cache(*venues: str) -> BookCache:
    return BookCache(None, venues)  # type: ignore[arg-type]  # put() needs no bus


def test_books_are_kept_per_venue_and_unnamed_ones_under_none():
    c = cache("binance", "alpaca")
    c.put(named("binance", "100", "101"), received=0)
    c.put(named("alpaca", "99", "102"), received=1)
    c.put(named(None, "98", "103"), received=2)
    c.put(named("alpaca", "10", "11", pair="ETH_USDT"), received=3)
    assert c.by_venue["binance"]["BTC_USDT"].asks[0][0] == Decimal(101)
    assert c.by_venue["alpaca"]["BTC_USDT"].asks[0][0] == Decimal(102)
    assert c.by_venue[None]["BTC_USDT"].asks[0][0] == Decimal(103)
    assert c.peek("BTC_USDT", venue="alpaca") is c.by_venue["alpaca"]["BTC_USDT"]
    assert c.peek("BTC_USDT", venue=None) is c.by_venue[None]["BTC_USDT"]
    assert c.peek("ETH_USDT", venue="binance") is None
    assert c.venue_mids["alpaca"]["BTC_USDT"] == Decimal("100.5")


def test_a_fresh_unnamed_book_is_the_reference_whatever_came_later():
    c = cache("binance", "alpaca")
    c.put(named(None, "98", "103"), received=0)
    c.put(named("binance", "100", "101"), received=10)
    assert c.books["BTC_USDT"].venue is None and c.mids["BTC_USDT"] == Decimal("100.5")
    assert not c.is_reference(c.by_venue["binance"]["BTC_USDT"])


def test_without_unnamed_books_the_first_venue_in_order_wins_and_later_ones_wait():
    c = cache("binance", "alpaca")
    c.put(named("alpaca", "99", "102"), received=0)  # the only one so far: the reference
    assert c.books["BTC_USDT"].venue == "alpaca"
    c.put(named("binance", "100", "101"), received=10)  # first in EXCHANGES order
    c.put(named("alpaca", "97", "98"), received=20)
    assert c.books["BTC_USDT"].venue == "binance" and c.mids["BTC_USDT"] == Decimal("100.5")


def test_a_stale_reference_gives_way_to_the_best_fresh_one():
    c = cache("binance", "alpaca", "kraken")
    c.put(named(None, "98", "103"), received=0)
    c.put(named("alpaca", "99", "102"), received=FRESH_MS - 10)
    c.put(named("kraken", "96", "104"), received=FRESH_MS + 1)  # unnamed stale now: the best fresh is alpaca's
    assert c.books["BTC_USDT"].venue == "alpaca"
    c.put(named("binance", "100", "101"), received=FRESH_MS + 2)
    assert c.books["BTC_USDT"].venue == "binance"
    c.put(named(None, "50", "51"), received=FRESH_MS + 3)  # an unnamed book again: it wins at once
    assert c.books["BTC_USDT"].venue is None and c.mids["BTC_USDT"] == Decimal("50.5")


def test_a_book_after_every_other_went_stale_is_the_reference():
    c = cache("binance", "alpaca")
    c.put(named("binance", "100", "101"), received=0)
    c.put(named("alpaca", "99", "102"), received=3 * FRESH_MS)
    assert c.books["BTC_USDT"].venue == "alpaca"


def test_venues_not_in_the_order_come_after_those_in_it():
    c = cache("binance")
    c.put(named("outsider", "99", "102"), received=0)
    c.put(named("binance", "100", "101"), received=1)
    c.put(named("outsider", "98", "103"), received=2)
    assert c.books["BTC_USDT"].venue == "binance"


def test_the_venue_order_can_be_set_after_books_came():
    c = cache()
    c.put(named("alpaca", "99", "102"), received=0)
    c.put(named("binance", "100", "101"), received=1)  # learned order: alpaca first
    assert c.books["BTC_USDT"].venue == "alpaca"
    c.set_venues(["binance", "alpaca"])
    c.put(named("binance", "100", "101"), received=2)
    assert c.books["BTC_USDT"].venue == "binance"
    c.put(named("alpaca", "97", "98"), received=3)
    assert c.books["BTC_USDT"].venue == "binance"


steps = st.lists(
    st.tuples(st.integers(0, 3 * FRESH_MS), st.sampled_from([None, "binance", "alpaca", "bn2"])), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_reference_is_always_the_rule_applied_to_what_was_received(events):
    """For every sequence of books: the reference after each one is exactly the rule, computed from scratch."""
    order = ["binance", "alpaca", "bn2"]
    rank = {None: 0, **{v: i + 1 for i, v in enumerate(order)}}
    c = cache(*order)
    latest: dict[str | None, tuple[float, int]] = {}  # venue -> (received, id)
    now = 0
    for i, (gap, venue) in enumerate(events):
        now += gap
        b = named(venue, "100", str(101 + i))
        c.put(b, received=now)
        latest[venue] = (now, i)
        fresh = [(rank[v], v) for v, (at, _) in latest.items() if now - at < FRESH_MS]
        want = min(fresh)[1]  # the book just received is always fresh
        assert c.books["BTC_USDT"].venue == want
        assert c.books["BTC_USDT"].asks[0][0] == Decimal(101 + latest[want][1])


async def test_get_waits_for_a_first_book_of_the_named_venue():
    c = cache("binance")
    import asyncio

    async def later() -> None:
        await asyncio.sleep(0.05)
        c.put(named(None, "1", "2"))  # not the one asked for
        await asyncio.sleep(0.05)
        c.put(named("binance", "100", "101"))

    task = asyncio.create_task(later())
    got = await c.get("BTC_USDT", wait=5, venue="binance")
    await task
    assert got is not None and got.venue == "binance"
    assert await c.get("BTC_USDT", wait=0, venue="alpaca") is None
    assert await c.mid("BTC_USDT", wait=0, venue="binance") == Decimal("100.5")


@pytest.mark.parametrize("venue", ["binance", None])
def test_is_reference_names_the_book_just_kept(venue):
    c = cache("binance")
    b = named(venue, "100", "101")
    c.put(b, received=0)
    assert c.is_reference(b)
