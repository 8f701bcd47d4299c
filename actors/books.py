"""The latest L2 book of each pair, as heard on ``tbx.md.book.*``: one cache every actor can hold."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

from bus.client import Bus, Envelope
from domain.book import mid_price
from schemas.messages import Book

BOOK_WAIT_S = 2.0


class BookCache:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.books: dict[str, Book] = {}
        self.mids: dict[str, Decimal] = {}
        self._seen: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        await self.bus.subscribe(self.bus.subjects.book(), Book, self._on_book)

    async def _on_book(self, book: Book, env: Envelope) -> None:
        self.books[book.pair] = book
        mid = mid_price(book.bids, book.asks)
        if mid is not None:
            self.mids[book.pair] = mid
        if (seen := self._seen.pop(book.pair, None)) is not None:
            seen.set()

    async def get(self, pair: str, wait: float = BOOK_WAIT_S) -> Book | None:
        """The latest book of ``pair``; if none was seen yet (an actor just started), wait up to ``wait`` s."""
        book = self.books.get(pair)
        if book is not None or wait <= 0:
            return book
        seen = self._seen.setdefault(pair, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), wait)
        return self.books.get(pair)

    async def mid(self, pair: str, wait: float = BOOK_WAIT_S) -> Decimal | None:
        if pair not in self.mids:
            await self.get(pair, wait)
        return self.mids.get(pair)
