"""Routing: which venue an order that names none goes to (issue 17). Pure: no I/O, no clock, no asyncio.

The caller (the order-router) gives the order, the policy (``ROUTING``) and one :class:`Candidate` per venue
(its book side, taker fee, health, whether it lists the pair, and why an upstream check excluded it, if one
did); :func:`decide` returns a :class:`RoutingDecision`: the chosen venue, every venue ranked with its expected
price or why it was skipped, and a one-line ``reason`` for the order's audit trail (``Order.routing``).
:func:`next_venue` gives the fallback: the next eligible venue of the ranking that was not tried yet.

How a venue's expected price is found (the same for both policies):

- The order walks the venue's book side (asks for a buy, bids for a sell, best first) for its quantity
  (:func:`domain.book.walk_book`). A limit order's walk stops at its limit price.
- What the book cannot fill now is priced at the worst price the order could get for it: a market order's
  rest at the worst level it reached (the deepest level the book shows), a limit order's rest at the limit
  (where it would rest). Such a venue is **thin**.
- The expected average price includes the taker fee: a buy pays ``average * (1 + fee)``, a sell gets
  ``average * (1 - fee)``. The whole quantity is counted at the taker fee (a resting part may pay the maker
  fee instead: counting the taker fee never makes a venue look cheaper than it is).
- Money maths is exact: a venue's ``total`` (what the buy pays, what the sell gets, fees included) is
  computed without rounding and the ranking compares totals, so two venues tie only when they are equal to
  the last decimal. ``expected`` (= total / quantity) is that total divided out to 28 significant digits
  (Decimal's default), for reading.

``best_price`` ranks the eligible venues (up, listing the pair, not excluded upstream) in three groups:

1. venues whose book fills the whole quantity now: the lowest expected price first for a buy, the highest
   for a sell; equal prices by priority (then by name, so the result never depends on the input's order);
2. thin venues: the most of the quantity filled now first, then by expected price, then priority (a book
   that shows more depth is the surer price: the rest of a thin market order would walk deeper than the
   book shows);
3. venues with no book (or an empty side): by priority. They are never chosen over a venue with a price.

``priority`` ranks the eligible venues by priority alone (the expected prices are still computed and
reported: they cost nothing). With either policy, the skipped venues come last, by priority: ``down``,
``no_pair`` (the venue does not list it), ``excluded`` (with the upstream reason: balance, maintenance, ...).
The decision's venue is the first of the ranking when it is eligible, else None (no venue can take it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from typing import Literal

from domain.book import walk_book
from domain.decimals import shortest
from schemas.messages import Book, OrderRequest, Side

Policy = Literal["best_price", "priority"]
POLICIES: tuple[Policy, ...] = ("best_price", "priority")
Status = Literal["priced", "thin", "no_book", "down", "no_pair", "excluded"]
ELIGIBLE: frozenset[Status] = frozenset(("priced", "thin", "no_book"))
Level = tuple[Decimal, Decimal]

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
# products and sums of prices and sizes, never rounded (a Decimal result keeps at most this many digits)
EXACT = Context(prec=200)
SHOWN_DIGITS = 12  # significant digits of a price in the reason text


@dataclass(frozen=True, slots=True)
class RouteOrder:
    """What routing needs of an order. ``limit``: a limit price (limit, stop-limit), None: takes any price."""

    pair: str
    side: Side
    quantity: Decimal
    limit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One venue the order could go to.

    ``levels``: the side of its book the order would take (asks for a buy, bids for a sell), best first;
    None when there is no book. ``excluded``: why a check upstream (risk gate, maintenance) ruled it out.
    """

    venue: str
    priority: int
    levels: Sequence[Level] | None
    taker_fee: Decimal
    up: bool = True
    lists_pair: bool = True
    excluded: str | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One venue in a decision: its expected price for the order's quantity, or why it was skipped."""

    venue: str
    priority: int
    status: Status
    fee: Decimal
    fillable: Decimal | None = None  # what the book fills now (within the limit); None: no book
    average: Decimal | None = None  # the average price of the whole quantity, before the fee
    expected: Decimal | None = None  # the same, fee included (a buy pays it, a sell gets it)
    total: Decimal | None = None  # expected x quantity, exact: what the ranking compares
    why: str | None = None  # excluded: the upstream reason

    @property
    def eligible(self) -> bool:
        return self.status in ELIGIBLE


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    policy: Policy
    venue: str | None  # None: no venue can take the order (``reason`` says why for each)
    ranked: tuple[Ranked, ...]
    reason: str


def levels_for(book: Book | None, side: Side) -> list[Level] | None:
    """The side of ``book`` an order of ``side`` takes: the asks for a buy, the bids for a sell."""
    if book is None:
        return None
    return book.asks if side == "buy" else book.bids


def route_order(req: OrderRequest) -> RouteOrder:
    """The routing view of an order request: a limit or stop-limit order is priced up to its limit price, any
    other type (market, and a stop that becomes one when it triggers) takes the book as it is."""
    limit = req.price if req.type in ("limit", "stop_limit") else None
    return RouteOrder(pair=req.pair, side=req.side, quantity=req.quantity, limit=limit)


def _check(order: RouteOrder, policy: str, candidates: Sequence[Candidate]) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if order.side not in ("buy", "sell"):
        raise ValueError(f"side must be buy or sell, got {order.side!r}")
    if not order.quantity.is_finite() or order.quantity <= ZERO:
        raise ValueError(f"quantity must be a positive number, got {order.quantity}")
    if order.limit is not None and (not order.limit.is_finite() or order.limit <= ZERO):
        raise ValueError(f"limit must be a positive price or None, got {order.limit}")
    seen: set[str] = set()
    for c in candidates:
        if c.venue in seen:
            raise ValueError(f"venue {c.venue!r} is a candidate twice")
        seen.add(c.venue)
        if not c.taker_fee.is_finite() or not -ONE < c.taker_fee < ONE:
            raise ValueError(f"taker_fee of venue {c.venue!r} must be a rate between -1 and 1, got {c.taker_fee}")


def _price(order: RouteOrder, c: Candidate, status: Status) -> Ranked:
    """The venue's expected price for the order (its status kept when it is skipped anyway)."""
    if not c.levels:
        return Ranked(c.venue, c.priority, "no_book" if status == "priced" else status, c.taker_fee)
    is_buy = order.side == "buy"
    with localcontext(EXACT):
        slices, left = walk_book(c.levels, order.quantity, order.limit, is_buy=is_buy)
        if left > ZERO:
            if order.limit is not None:
                rest_price = order.limit
            elif slices:
                rest_price = slices[-1][0]
            else:  # every level empty: no price to give
                return Ranked(c.venue, c.priority, "no_book" if status == "priced" else status, c.taker_fee)
        else:
            rest_price = ZERO
        gross = sum((p * q for p, q in slices), ZERO) + rest_price * left
        total = gross * (ONE + c.taker_fee if is_buy else ONE - c.taker_fee)
    average = gross / order.quantity
    expected = total / order.quantity
    if status == "priced" and left > ZERO:
        status = "thin"
    return Ranked(c.venue, c.priority, status, c.taker_fee, order.quantity - left, average, expected, total)


def _status(c: Candidate) -> Status:
    if c.excluded is not None:
        return "excluded"
    if not c.up:
        return "down"
    if not c.lists_pair:
        return "no_pair"
    return "priced"


def decide(order: RouteOrder, policy: Policy, candidates: Sequence[Candidate]) -> RoutingDecision:
    """Rank ``candidates`` for ``order`` under ``policy`` and choose (see the module's docstring)."""
    _check(order, policy, candidates)
    ranked = []
    for c in candidates:
        status = _status(c)
        if status == "excluded" or status == "no_pair":
            r = Ranked(c.venue, c.priority, status, c.taker_fee, why=c.excluded)
        else:  # a venue that is down keeps its status, with the price its last book gives (for the record)
            r = _price(order, c, status)
        ranked.append(r)
    is_buy = order.side == "buy"

    def key(r: Ranked) -> tuple[int, Decimal, Decimal, int, str]:
        tie = (r.priority, r.venue)
        if not r.eligible:
            return (3, ZERO, ZERO, *tie)
        if policy == "priority" or r.total is None:
            return (0 if policy == "priority" else 2, ZERO, ZERO, *tie)
        price = r.total if is_buy else -r.total  # the lower the better
        if r.status == "priced":
            return (0, ZERO, price, *tie)
        assert r.fillable is not None
        return (1, -r.fillable, price, *tie)

    ranked.sort(key=key)
    chosen = ranked[0].venue if ranked and ranked[0].eligible else None
    return RoutingDecision(policy, chosen, tuple(ranked), _reason(order, policy, ranked, chosen))


def next_venue(decision: RoutingDecision, tried: Iterable[str]) -> str | None:
    """Fallback: the first eligible venue of the ranking not in ``tried`` (None when every one was tried)."""
    done = set(tried)
    for r in decision.ranked:
        if r.eligible and r.venue not in done:
            return r.venue
    return None


# -- the audit line ------------------------------------------------------------------------------------------
def _shown(price: Decimal) -> str:
    digits = max(0, SHOWN_DIGITS - 1 - price.adjusted())
    return shortest(round(price, digits))


def _entry(order: RouteOrder, r: Ranked) -> str:
    if r.status == "excluded":
        return f"{r.venue} excluded ({r.why})"
    if r.status == "no_pair":
        return f"{r.venue} lacks {order.pair}"
    if r.status == "down":
        return f"{r.venue} down"
    if r.expected is None:
        return f"{r.venue} no book"
    notes = [f"fee {shortest(r.fee * HUNDRED)}%"]
    if r.status == "thin":
        assert r.fillable is not None
        rest = "rest at the limit" if order.limit is not None else "rest at its worst level"
        notes.append(f"thin: {shortest(r.fillable)} of {shortest(order.quantity)} now, {rest}")
    return f"{r.venue} {_shown(r.expected)} ({', '.join(notes)})"


def _reason(order: RouteOrder, policy: Policy, ranked: Sequence[Ranked], chosen: str | None) -> str:
    head = f"{policy} {order.side} {shortest(order.quantity)} {order.pair}"
    if order.limit is not None:
        head += f" limit {shortest(order.limit)}"
    body = ", ".join(_entry(order, r) for r in ranked) or "no venue configured"
    return f"{head}: {body} -> {chosen if chosen is not None else 'none can take it'}"
