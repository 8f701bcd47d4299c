"""The paper venue makes an order once per client order id, ever, with one write per new order: its first record is
written with a KV create (it exists already -> the earlier run's order is the answer, and what this try matched is
undone). Issue 22 took the read before every create off the hot path; these pin what that read guaranteed."""

from __future__ import annotations

from decimal import Decimal as D

from actors.venues.base import VenueOrderRequest
from actors.venues.paper import PaperVenue
from tests.integration.test_order_types import settings_for
from tests.integration.test_paper_fence import _book, _stored, _venue


async def test_a_market_order_retried_after_a_restart_is_not_traded_again(nats_url, prefix, make_bus):
    bus = await make_bus("venue")
    venue, _ = await _venue(nats_url, prefix, bus)
    first = await venue.create_order(VenueOrderRequest("mkt-1", "BTC_USDT", "buy", "market", D("1")))
    assert (first.status, first.filled) == ("closed", D("1"))
    balances = dict(venue.balances)

    again = PaperVenue(settings_for(nats_url, prefix), bus)  # a restart: the order is in no memory, only stored
    await again.start()
    await again._on_book(_book("100.00"))
    position = again._matcher("BTC_USDT").position
    retried = await again.create_order(VenueOrderRequest("mkt-1", "BTC_USDT", "buy", "market", D("1")))
    assert (retried.venue_order_id, retried.status, retried.filled) == (first.venue_order_id, "closed", D("1"))
    assert len(retried.trades) == 1 and retried.trades[0].trade_id == first.trades[0].trade_id
    assert again._matcher("BTC_USDT").position == position  # what the retry matched was undone
    assert again.balances == balances
    assert len((await _stored(again, "mkt-1")).trades) == 1
    # and the next new order still trades normally
    fresh = await again.create_order(VenueOrderRequest("mkt-2", "BTC_USDT", "buy", "market", D("1")))
    assert (fresh.status, fresh.filled) == ("closed", D("1"))
    assert again._matcher("BTC_USDT").position == position + 1


async def test_a_resting_order_retried_after_a_restart_stays_the_one_resting(nats_url, prefix, make_bus):
    bus = await make_bus("venue")
    venue, _ = await _venue(nats_url, prefix, bus)
    await venue.create_order(VenueOrderRequest("rest-9", "BTC_USDT", "buy", "limit", D("1"), D("95.00")))

    again = PaperVenue(settings_for(nats_url, prefix), bus)
    await again.start()
    retried = await again.create_order(VenueOrderRequest("rest-9", "BTC_USDT", "buy", "limit", D("1"), D("95.00")))
    assert retried.status == "open"
    assert [o.client_order_id for o in await again.fetch_open_orders()] == ["rest-9"]
    await again._on_book(_book("95.00"))  # it still fills, once
    stored = await _stored(again, "rest-9")
    assert (stored.status, stored.filled, len(stored.trades)) == ("closed", D("1"), 1)


async def test_a_retry_undone_gives_the_book_its_liquidity_back(nats_url, prefix, make_bus):
    """Review of issue 22, finding 3: the undone retry's trades kept their liquidity taken from the book until the
    next one, so a new order on that book filled less (or worse) than the book offered."""
    bus = await make_bus("venue")
    venue, _ = await _venue(nats_url, prefix, bus)
    await venue.create_order(VenueOrderRequest("mkt-x", "BTC_USDT", "buy", "market", D("1")))

    again = PaperVenue(settings_for(nats_url, prefix), bus)
    await again.start()
    await again._on_book(_book("100.00"))  # 5 at the ask
    await again.create_order(VenueOrderRequest("mkt-x", "BTC_USDT", "buy", "market", D("1")))  # stored: undone
    y = await again.create_order(VenueOrderRequest("mkt-y", "BTC_USDT", "buy", "market", D("5")))
    assert (y.status, y.filled) == ("closed", D("5"))
