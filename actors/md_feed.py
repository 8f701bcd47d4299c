"""md-feed: market data for the paper venue and the marks, with no setup.

MARKET_DATA=synthetic publishes a seeded random-walk L2 book (10 levels a side) for each pair in
PAIRS every MARKET_DATA_INTERVAL ms on ``tbx.md.book.<pair>``. MARKET_DATA=replay:FILE publishes
the books of a JSON-lines file (one ``Book`` per line) at their recorded pace, then keeps
re-publishing the last book of each pair. MARKET_DATA=none publishes nothing: any outside publisher
of ``tbx.md.book.<pair>`` can feed the service instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.base import Actor
from bus.codec import decode
from domain.synthetic import SyntheticBook
from schemas.messages import Book, now_ms


class MarketDataFeed(Actor):
    name = "md-feed"

    async def on_start(self) -> None:
        self.published = 0
        self.last: dict[str, Book] = {}
        if self.settings.MARKET_DATA == "synthetic":
            self.spawn(self._synthetic(), "synthetic")
        elif (path := self.settings.replay_file) is not None:
            if not path.is_file():
                raise FileNotFoundError(f"MARKET_DATA={self.settings.MARKET_DATA!r}: no such file")
            self.spawn(self._replay(path), "replay")

    def stats(self) -> dict[str, int | float | str]:
        return {"booksPublished": self.published, "mode": self.settings.MARKET_DATA}

    async def _publish(self, book: Book) -> None:
        await self.bus.publish(self.subjects.book(book.pair), book)
        self.last[book.pair] = book
        self.published += 1

    async def _synthetic(self) -> None:
        gens = [SyntheticBook(p, self.settings.MARKET_DATA_SEED) for p in self.settings.PAIRS]
        interval = self.settings.MARKET_DATA_INTERVAL / 1000
        while True:
            ts = now_ms()
            for g in gens:
                await self._publish(g.next(ts))
            await asyncio.sleep(interval)

    async def _replay(self, path: Path) -> None:
        prev_ts: int | None = None
        with path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                book = decode(line, Book)
                if prev_ts is not None and book.ts > prev_ts:
                    await asyncio.sleep(min((book.ts - prev_ts) / 1000, 5.0))
                prev_ts = book.ts
                await self._publish(book)
        self.log.info("replay of {} done; re-publishing the last books", path)
        while True:
            await asyncio.sleep(self.settings.MARKET_DATA_INTERVAL / 1000)
            for book in list(self.last.values()):
                await self._publish(Book(pair=book.pair, bids=book.bids, asks=book.asks, ts=now_ms()))
