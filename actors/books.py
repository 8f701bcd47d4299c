"""The latest L2 book of each pair, as heard on ``tbx.md.book.*``: one cache every actor can hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from decimal import Decimal

from bus.client import Bus, Envelope
from domain.book import book_problem, mid_price
from schemas.messages import Book, now_ms

BOOK_WAIT_S = 2.0
BAD_BOOK_LETTER_EVERY_MS = 60_000


class BookCache:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.hooks: list[Callable[[Book], Awaitable[None]]] = []
        self.started = False
        self.books: dict[str, Book] = {}
        self.mids: dict[str, Decimal] = {}
        self._seen: dict[str, asyncio.Event] = {}
        self._last_letter: dict[str, int] = {}
        self.refused = 0

    def add_hook(self, hook: Callable[[Book], Awaitable[None]]) -> None:
        """``hook(book)`` is awaited with every usable book, after the cache has it, in the order added."""
        self.hooks.append(hook)

    async def start(self) -> None:
        if not self.started:  # one cache may serve several parts of an actor
            self.started = True
            await self.bus.subscribe(self.bus.subjects.book(), Book, self._on_book)

    async def _on_book(self, book: Book, env: Envelope) -> None:
        problem = book_problem(book.bids, book.asks)
        if problem is not None:
            self.refused += 1
            now = now_ms()
            if now - self._last_letter.get(env.subject, 0) >= BAD_BOOK_LETTER_EVERY_MS:  # no flood
                self._last_letter[env.subject] = now
                await self.bus.dead_letter(env.subject, f"unusable book: {problem}", env.raw.data)
            return
        self.books[book.pair] = book
        mid = mid_price(book.bids, book.asks)
        if mid is not None:
            self.mids[book.pair] = mid
        if (seen := self._seen.pop(book.pair, None)) is not None:
            seen.set()
        for hook in self.hooks:
            await hook(book)

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
