"""The latest L2 books, as heard on ``tbx.md.book.*``: one cache every actor can hold.

Books are kept per venue (``Book.venue``: the live venue whose md-feed published it; ``None`` for an
unnamed book - the synthetic feed, a replay file, an outside publisher): ``by_venue[venue][pair]``,
``get(pair, venue=...)``.

``books[pair]`` / ``mids[pair]`` (and ``get(pair)`` / ``mid(pair)`` without a venue) are the pair's
**reference book**, the one marks, stop triggers and price bands read: an unnamed book if one is fresh,
else the fresh book of the first venue in the venue order (EXCHANGES order; venues not listed there after
those, in the order first heard). Fresh: received less than FRESH_MS (5 s) ago. It is decided as each book
arrives (a dict lookup per book; the venues are looked through only when the reference has gone stale), so
reading it costs nothing: a book that is not the reference replaces it once the reference is stale, and when
every source of a pair falls silent the last reference stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from enum import Enum
from typing import Final, Literal

from bus.client import Bus, Envelope
from domain.book import book_problem, mid_price
from schemas.messages import Book, now_ms

BOOK_WAIT_S = 2.0
BAD_BOOK_LETTER_EVERY_MS = 60_000
FRESH_MS = 5_000  # a book younger than this (since received) may be a pair's reference book


class _Ref(Enum):
    REFERENCE = "reference"


REFERENCE: Final = _Ref.REFERENCE  # ``get(pair, venue=REFERENCE)`` (the default): the pair's reference book
VenueSel = str | None | Literal[_Ref.REFERENCE]


def _mono_ms() -> float:
    return time.monotonic() * 1000


class BookCache:
    def __init__(self, bus: Bus, venues: Iterable[str] = (), fresh_ms: int = FRESH_MS) -> None:
        """``venues``: the venue order of the reference rule (``config.venues.venue_names(settings)``)."""
        self.bus = bus
        self.hooks: list[Callable[[Book], Awaitable[None]]] = []
        self.started = False
        self.fresh_ms = fresh_ms
        self.books: dict[str, Book] = {}  # pair -> its reference book
        self.mids: dict[str, Decimal] = {}  # pair -> the reference book's mid
        self.by_venue: dict[str | None, dict[str, Book]] = {}
        self.venue_mids: dict[str | None, dict[str, Decimal]] = {}
        self._rank: dict[str | None, int] = {None: 0}
        self._received: dict[tuple[str | None, str], float] = {}  # (venue, pair) -> when received (monotonic ms)
        self._ref: dict[str, tuple[int, float]] = {}  # pair -> (rank, received) of its reference book
        self._seen: dict[tuple[str | None, str] | str, asyncio.Event] = {}
        self._last_letter: dict[str, int] = {}
        self.refused = 0
        self.set_venues(venues)

    def set_venues(self, venues: Iterable[str]) -> None:
        """The venue order of the reference rule (EXCHANGES order); venues heard before and not listed go after."""
        others = [v for v in sorted(self._rank, key=lambda v: self._rank[v]) if v is not None]
        order = list(dict.fromkeys([*venues, *others]))
        self._rank = {None: 0, **{v: i + 1 for i, v in enumerate(order)}}
        for pair in list(self._ref):
            self._ref[pair] = (self._rank_of(self.books[pair].venue), self._ref[pair][1])

    def _rank_of(self, venue: str | None) -> int:
        rank = self._rank.get(venue)
        if rank is None:  # a venue not in the order: after every one known, in the order first heard
            rank = self._rank[venue] = len(self._rank)
        return rank

    def add_hook(self, hook: Callable[[Book], Awaitable[None]]) -> None:
        """``hook(book)`` is awaited with every usable book of every venue (``book.venue`` says whose), after the
        cache has it, in the order added. ``is_reference(book)`` tells whether it is now its pair's reference."""
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
        self.put(book)
        for hook in self.hooks:
            await hook(book)

    def put(self, book: Book, received: float | None = None) -> None:
        """Keep ``book`` (a usable one) as its venue's latest and update the pair's reference book. ``received``:
        monotonic ms (now by default)."""
        now = _mono_ms() if received is None else received
        venue, pair = book.venue, book.pair
        mid = mid_price(book.bids, book.asks)
        self.by_venue.setdefault(venue, {})[pair] = book
        if mid is not None:
            self.venue_mids.setdefault(venue, {})[pair] = mid
        self._received[(venue, pair)] = now
        rank = self._rank_of(venue)
        ref = self._ref.get(pair)
        if ref is None or rank <= ref[0]:
            self._set_ref(pair, book, rank, now)
        elif now - ref[1] >= self.fresh_ms:  # the reference went stale: the best fresh one now (this one is)
            self._set_ref(pair, *self._best(pair, now))
        if (seen := self._seen.pop((venue, pair), None)) is not None:
            seen.set()
        if (seen := self._seen.pop(pair, None)) is not None:
            seen.set()

    def _best(self, pair: str, now: float) -> tuple[Book, int, float]:
        best: tuple[Book, int, float] | None = None
        for venue, books in self.by_venue.items():
            b = books.get(pair)
            if b is None:
                continue
            received = self._received[(venue, pair)]
            if now - received >= self.fresh_ms:
                continue
            rank = self._rank_of(venue)
            if best is None or rank < best[1]:
                best = (b, rank, received)
        assert best is not None  # called with a fresh book just kept
        return best

    def _set_ref(self, pair: str, book: Book, rank: int, received: float) -> None:
        self._ref[pair] = (rank, received)
        self.books[pair] = book
        mid = self.venue_mids.get(book.venue, {}).get(pair)
        if mid is not None:  # a one-sided book leaves the last mid (as before venues)
            self.mids[pair] = mid

    def is_reference(self, book: Book) -> bool:
        """Is ``book`` its pair's reference book now?"""
        return self.books.get(book.pair) is book

    def peek(self, pair: str, venue: VenueSel = REFERENCE) -> Book | None:
        """The latest book of ``pair`` of ``venue`` (None: an unnamed book; REFERENCE: the pair's reference book)."""
        if venue is REFERENCE:
            return self.books.get(pair)
        return self.by_venue.get(venue, {}).get(pair)

    async def get(self, pair: str, wait: float = BOOK_WAIT_S, venue: VenueSel = REFERENCE) -> Book | None:
        """As ``peek``; if none was seen yet (an actor just started), wait up to ``wait`` s for one."""
        book = self.peek(pair, venue)
        if book is not None or wait <= 0:
            return book
        key: tuple[str | None, str] | str = pair if venue is REFERENCE else (venue, pair)
        seen = self._seen.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), wait)
        return self.peek(pair, venue)

    async def mid(self, pair: str, wait: float = BOOK_WAIT_S, venue: VenueSel = REFERENCE) -> Decimal | None:
        mids = self.mids if venue is REFERENCE else self.venue_mids.get(venue, {})
        if pair not in mids:
            await self.get(pair, wait, venue)
            mids = self.mids if venue is REFERENCE else self.venue_mids.get(venue, {})
        return mids.get(pair)
