"""SYNTHETIC_CLOCK=event: the md-feed steps a pair's book per order filled, and a restarted feed goes on with
the same books (it counts the stored fills before it publishes anything)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bus.client import Bus, Envelope
from config.settings import load_settings
from domain.synthetic import EventMarket
from schemas.messages import Book, Fill
from tests.helpers import eventually
from tests.integration.test_actors import System

PAIRS = "BTC_USDT,ETH_USDT"


def fill(n: int, order: str, complete: bool, pair: str = "BTC_USDT") -> Fill:
    return Fill(
        fill_id=f"T{n}", order_id=order, client_order_id=f"c-{order}", pair=pair, side="buy",
        quantity=Decimal("0.01"), price=Decimal("60000"), fee=Decimal("0.6"), fee_currency="USDT",
        liquidity="taker", venue="paper", timestamp=1, order_complete=complete,
    )  # fmt: skip


def levels(b: Book) -> tuple[object, object]:
    return (b.bids, b.asks)


async def test_books_step_per_order_filled_and_a_restart_goes_on_from_the_count(nats_url, prefix, client: Bus):
    settings = load_settings(
        {
            "NATS_URL": nats_url,
            "BUS_PREFIX": prefix,
            "PAIRS": PAIRS,
            "MARKET_DATA_INTERVAL": "50",
            "MARKET_DATA_SEED": "9",
            "SYNTHETIC_CLOCK": "event",
        }
    )
    expect = EventMarket(PAIRS.split(","), 9)
    books: list[Book] = []

    async def on_book(b: Book, env: Envelope) -> None:
        books.append(b)

    await client.subscribe(client.subjects.book(), Book, on_book)
    fills = client.subjects.fills("BTC_USDT")

    def latest(pair: str) -> Book | None:
        return next((b for b in reversed(books) if b.pair == pair), None)

    async def shows(pair: str, step: int) -> bool:
        b = latest(pair)
        return b is not None and levels(b) == levels(expect.book(pair, {pair: step}, 0))

    sut = System(nats_url, settings)
    await client.ensure_layout()
    await client.js_publish(fills, fill(1, "O1", True), msg_id="T1")  # stored before the feed starts: counted
    await sut.start("md-feed")
    try:
        await eventually(lambda: shows("BTC_USDT", 1), timeout=10, what="BTC_USDT at step 1")
        await eventually(lambda: shows("ETH_USDT", 0), timeout=10, what="ETH_USDT at step 0")
        assert all(levels(b) != levels(expect.book("BTC_USDT", {}, 0)) for b in books if b.pair == "BTC_USDT")

        await client.js_publish(fills, fill(2, "O2", False))  # a partial fill: no step
        await client.js_publish(fills, fill(3, "O1", True))  # an order counted already: no step
        await client.js_publish(fills, fill(4, "O2", True))  # O2 complete: step 2
        await eventually(lambda: shows("BTC_USDT", 2), timeout=10, what="BTC_USDT at step 2")
        await asyncio.sleep(0.3)  # several re-publications: still step 2 (nothing else steps it)
        assert await shows("BTC_USDT", 2)
        assert await shows("ETH_USDT", 0)

        await sut.stop("md-feed")
        await client.js_publish(fills, fill(5, "O3", True))  # while the feed is down
        books.clear()
        await sut.start("md-feed")
        await eventually(lambda: shows("BTC_USDT", 3), timeout=10, what="BTC_USDT at step 3 after the restart")
        first = next(b for b in books if b.pair == "BTC_USDT")
        assert levels(first) == levels(expect.book("BTC_USDT", {"BTC_USDT": 3}, 0))  # never an older book
    finally:
        await sut.stop()
