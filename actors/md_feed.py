"""md-feed: market data for the paper venue and the marks, with no setup.

MARKET_DATA=synthetic publishes a seeded random-walk L2 book (10 levels a side) for each pair in
PAIRS every MARKET_DATA_INTERVAL ms on ``tbx.md.book.<pair>``; a cross whose currencies both have a
pair in the main quote currency follows them (ETH_BTC mid = ETH_USDT mid / BTC_USDT mid).
MARKET_DATA=replay:FILE publishes the lines of a JSON-lines file at their recorded pace (by
``ts``; gaps over 5 s are cut to 5 s): a line with ``bids``/``asks`` is a book
(``tbx.md.book.<pair>``), a line with ``price``/``quantity`` is a public trade
(``tbx.md.trades.<pair>``); blank lines and lines starting with ``#`` are skipped. After the last
line it keeps re-publishing the last book of each pair. MARKET_DATA=venue (live trading) publishes
the live venue's own books: each pair's top 10 levels read through ccxt every MARKET_DATA_INTERVAL
ms (its own ccxt instance, without the keys where books are public, so its calls never wait behind
the order-router's orders in one rate limiter; Alpaca's need the keys). Where the venue counts its
request budget per IP (Binance), this instance keeps to a quarter of it and the order-router's to the
rest (actors/venues/factory.py). MARKET_DATA=none publishes nothing: any
outside publisher of ``tbx.md.book.<pair>`` can feed the service instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from actors.base import Actor
from actors.venues.factory import BOOKS_SHARE, make_ccxt_venue
from bus.codec import DecodeFailure, decode
from domain.synthetic import SyntheticMarket
from schemas.messages import Book, Trade, now_ms

if TYPE_CHECKING:
    from actors.venues.ccxt_venue import CcxtVenue


BOOK_DEPTH = 10
KEYED_MARKET_DATA = frozenset({"alpaca"})  # venues whose markets and books need the account's keys


class MarketDataFeed(Actor):
    name = "md-feed"

    async def on_start(self) -> None:
        self.published = 0
        self.failed = 0
        self.venue: CcxtVenue | None = None
        self.last: dict[str, Book] = {}
        if self.settings.MARKET_DATA == "synthetic":
            self.spawn(self._synthetic(), "synthetic")
        elif self.settings.MARKET_DATA == "venue":
            # without the keys where the books are public (its own rate limiter, never in the way of orders);
            # Alpaca serves markets and books to key holders only
            keyed = self.settings.EXCHANGE in KEYED_MARKET_DATA
            self.venue = make_ccxt_venue(self.settings, keys=keyed, share=BOOKS_SHARE)
            await self.venue.load_markets()
            self.spawn(self._venue_books(), "venue books")
        elif (path := self.settings.replay_file) is not None:
            if not path.is_file():
                raise FileNotFoundError(f"MARKET_DATA={self.settings.MARKET_DATA!r}: no such file")
            self.spawn(self._replay(path), "replay")

    def stats(self) -> dict[str, int | float | str]:
        return {"booksPublished": self.published, "booksFailed": self.failed, "mode": self.settings.MARKET_DATA}

    async def _publish(self, book: Book) -> None:
        await self.bus.publish(self.subjects.book(book.pair), book)
        self.last[book.pair] = book
        self.published += 1

    async def _synthetic(self) -> None:
        market = SyntheticMarket(self.settings.PAIRS, self.settings.MARKET_DATA_SEED)
        interval = self.settings.MARKET_DATA_INTERVAL / 1000
        while True:
            for book in market.next(now_ms()):
                await self._publish(book)
            await asyncio.sleep(interval)

    async def on_stop(self) -> None:
        if self.venue is not None:
            await self.venue.stop()

    async def _venue_books(self) -> None:
        assert self.venue is not None
        interval = self.settings.MARKET_DATA_INTERVAL / 1000
        while True:
            for pair in self.settings.PAIRS:
                try:
                    book = await self.venue.fetch_order_book(pair, depth=BOOK_DEPTH)
                except Exception as e:  # no book this round: the next one tries again
                    self.failed += 1
                    self.log.warning("book of {} not read from {}: {}", pair, self.venue.name, self.venue.describe(e))
                    continue
                if book is not None and (book.bids or book.asks):
                    await self._publish(book)
            await asyncio.sleep(interval)

    async def _replay(self, path: Path) -> None:
        prev_ts: int | None = None
        with path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith(b"#"):
                    continue
                try:
                    item = replay_line(line)
                except ValueError as e:
                    await self.bus.dead_letter(f"replay.{path.name}", f"line {n}: {e}", line)
                    continue
                if prev_ts is not None and item.ts > prev_ts:
                    await asyncio.sleep(min((item.ts - prev_ts) / 1000, 5.0))
                prev_ts = item.ts
                if isinstance(item, Book):
                    await self._publish(item)
                else:
                    await self.bus.publish(self.subjects.trades(item.pair), item)
        self.log.info("replay of {} done; re-publishing the last books", path)
        while True:
            await asyncio.sleep(self.settings.MARKET_DATA_INTERVAL / 1000)
            for book in list(self.last.values()):
                await self._publish(Book(pair=book.pair, bids=book.bids, asks=book.asks, ts=now_ms()))


def replay_line(line: bytes) -> Book | Trade:
    """One line of a replay file: a book (has ``bids``) or a trade (has ``price``)."""
    try:
        raw = msgspec.json.decode(line)
    except msgspec.DecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("a line is a JSON object")
    try:
        return decode(line, Book) if "bids" in raw or "asks" in raw else decode(line, Trade)
    except DecodeFailure as e:
        raise ValueError(e.reason) from None
