"""The router: which venue an order goes to, and where it goes next when its venue certainly did not take it.

An order naming its venue (``exchange``) goes there, and only there. An order naming none is routed by
ROUTING's policy among the venues the risk gate found able to take it (``ApprovedOrder.venues``: they list
the pair, their rules accept it, their balance pays), skipping those that are down (not answering, or their
health check failing): ``best_price`` picks the venue whose current book gives the best expected average
price for the quantity, fees included, ``priority`` the first venue of EXCHANGES; ties by EXCHANGES order.
A paper venue listed beside live venues takes only the orders naming it: an order meant for
real money never lands on paper by price or fallback. The decision (each venue's expected price, or why it
was skipped) is the order's ``routing`` text, and the other eligible venues, best first, its ``fallback``.
The decision itself is pure: domain/routing.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from actors.books import BookCache
from config.settings import Settings
from domain.exits import reducible
from domain.routing import Candidate, decide, levels_for, route_order
from schemas.messages import Book, Order, OrderRequest

if TYPE_CHECKING:
    from actors.order_router.session import VenueSession

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Choice:
    venue: str | None  # None: no venue can take it (``reason`` says why)
    reason: str | None  # the order's ``routing`` text (None: a one-venue deployment, nothing was decided)
    fallback: list[str]


class Router:
    def __init__(
        self,
        settings: Settings,
        sessions: dict[str, VenueSession],
        books: BookCache,
        position: Callable[[str, str], Decimal] | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions  # in priority order
        self.books = books
        self.position = position  # (venue, pair) -> the net position there (reduce-only orders go where it is)

    def book_of(self, venue: str, pair: str) -> Book | None:
        """The venue's latest book of the pair: its own (a live venue's md-feed names it), the paper venue's the
        books it trades on (PAPER_BOOKS); else an unnamed book (synthetic, replay, an outside publisher)."""
        session = self.sessions.get(venue)
        source = getattr(session.venue, "source", venue) if session is not None else venue
        return self.books.peek(pair, source) or (self.books.peek(pair, None) if source is not None else None)

    def lists(self, venue: str, pair: str) -> bool:
        session = self.sessions[venue]
        return pair in session.rules if session.rules else pair in session.pairs

    def choose(self, req: OrderRequest, allowed: list[str] | None) -> Choice:
        names = list(self.sessions)
        if req.exchange is not None:
            if req.exchange not in self.sessions:
                return Choice(None, f"exchange {req.exchange!r} is not a configured venue ({', '.join(names)})", [])
            return Choice(req.exchange, f"named by the order: {req.exchange}" if len(names) > 1 else None, [])
        if len(names) == 1 and allowed in (None, names):
            return Choice(names[0], None, [])
        candidates = []
        live = any(not s.venue.authoritative_lookup for s in self.sessions.values())
        for i, name in enumerate(names):
            session = self.sessions[name]
            rules = session.rules.get(req.pair)
            excluded = None if allowed is None or name in allowed else "ruled out by the risk gate (rules or balance)"
            if live and session.venue.authoritative_lookup:  # a paper venue beside live ones: never by surprise
                excluded = "paper: only orders naming it, beside live venues"
            elif req.reduce_only and not self._reduces(name, req):  # a reduce-only order reduces its own venue's
                excluded = f"no {req.pair} position there to reduce"
            candidates.append(
                Candidate(
                    venue=name,
                    priority=i,
                    levels=levels_for(self.book_of(name, req.pair), req.side),
                    taker_fee=rules.taker_fee if rules is not None else ZERO,
                    up=session.up(),
                    lists_pair=self.lists(name, req.pair),
                    excluded=excluded,
                )
            )
        try:
            d = decide(route_order(req), self.settings.ROUTING, candidates)  # type: ignore[arg-type]
        except ValueError as e:
            return Choice(None, f"not routed: {e}", [])
        if d.venue is None:
            return Choice(None, d.reason, [])
        return Choice(d.venue, d.reason, [r.venue for r in d.ranked if r.eligible and r.venue != d.venue])

    def _reduces(self, venue: str, req: OrderRequest) -> bool:
        return self.position is None or reducible(self.position(venue, req.pair), req.side) > 0

    def fallbacks(self, o: Order) -> Iterator[tuple[str, list[str]]]:
        """The venues of the order's fallback that can take it now (up, listing the pair), in order, each with
        those after it."""
        for i, name in enumerate(o.fallback):
            if name in self.sessions and name != o.venue and self.sessions[name].up() and self.lists(name, o.pair):
                yield name, o.fallback[i + 1 :]
