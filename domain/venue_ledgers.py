"""Books per venue: one ``Ledger`` for each venue, so a balance on one venue never pays for an order on another.

Fills are booked on the ledger of their ``venue``, order locks on the ledger of the order's ``venue`` (an
order that moves to another venue before it was taken - a fallback - takes its lock with it), a venue's
balance adjustments on that venue's. Each configured venue's ledger starts with ``initial_balance`` of
``base_currency`` (a live venue's opening balance reading replaces it, see domain/reconcile.py). A fill
from a venue that is not configured is still booked, on a ledger of its own that starts empty: money the
deployment never had is not made up (without configured venues, ``venues=()``, every venue starts with
``initial_balance``).

What is per venue and what is a total:
- per venue: positions (one per venue and pair), balances, locks, what is available (``available``), the
  negative-balance breaches (``breaches``: a venue's balance below zero is a breach even when another
  venue holds the currency), the closed position cycles (``history`` tags each with its venue);
- totals: ``balances()`` summed per currency, ``net_positions()`` summed per pair, ``fills_applied``,
  ``initial_total`` (what the performance figures start from).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from domain.ledger import Balance, ClosedCycle, Ledger, Position
from schemas.messages import BalanceAdjusted, Fill, Order

ZERO = Decimal(0)


@dataclass(slots=True)
class VenueLedgers:
    base_currency: str
    initial_balance: Decimal
    venues: tuple[str, ...] = ()  # the configured venues, in priority order (ledgers made up front)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    lock_venue: dict[str, str] = field(default_factory=dict)  # order id -> the venue whose ledger has its lock

    def __post_init__(self) -> None:
        self.venues = tuple(self.venues)
        for v in self.venues:
            self.of(v)

    def configure(self, venues: Iterable[str]) -> None:
        """The venues configured now (e.g. after a restart from a snapshot taken with other settings): a
        new one gets its ledger with ``initial_balance``; the books of one no longer listed are kept."""
        self.venues = tuple(venues)
        for v in self.venues:
            self.of(v)

    def of(self, venue: str) -> Ledger:
        """The venue's ledger (made on first use: a fill from a venue not configured is still booked)."""
        led = self.ledgers.get(venue)
        if led is None:
            start = self.initial_balance if (not self.venues or venue in self.venues) else ZERO
            led = self.ledgers[venue] = Ledger(self.base_currency, start)
        return led

    def __iter__(self) -> Iterator[tuple[str, Ledger]]:
        return iter(self.ledgers.items())

    def names(self) -> list[str]:
        """The configured venues in priority order, then any other venue with books (by name)."""
        return [*self.venues, *sorted(v for v in self.ledgers if v not in self.venues)]

    def venue_of(self, name: str) -> str:
        """Where a fill, order or adjustment naming ``name`` is booked: its venue; in a one-venue deployment the
        only venue, whatever it names (an outside writer of fills on a one-venue deployment trades there)."""
        return self.venues[0] if len(self.venues) == 1 else name

    def apply_fill(self, fill: Fill) -> Decimal:
        return self.of(self.venue_of(fill.venue)).apply_fill(fill)

    def apply_order(self, order: Order) -> None:
        venue = self.venue_of(order.venue)
        moved_from = self.lock_venue.get(order.order_id)
        if moved_from is not None and moved_from != venue:
            old = self.ledgers[moved_from]
            old._set_lock(order.order_id, None)  # the lock goes with the order to its new venue
            old.filled_by_fills.pop(order.order_id, None)
        led = self.of(venue)
        led.apply_order(order)
        if order.order_id in led.locks or order.order_id in led.filled_by_fills:
            self.lock_venue[order.order_id] = venue
        else:
            self.lock_venue.pop(order.order_id, None)

    def lock_venues(self, order: Order) -> list[str]:
        """The venues whose books an order change may move: where its lock is now, and its venue."""
        venue = self.venue_of(order.venue)
        was = self.lock_venue.get(order.order_id)
        return [venue] if was is None or was == venue else [was, venue]

    def apply_adjustment(self, adj: BalanceAdjusted) -> bool:
        return self.of(self.venue_of(adj.venue)).apply_adjustment(adj)

    def balances(self) -> dict[str, Balance]:
        """Per currency, summed over the venues."""
        out: dict[str, Balance] = {}
        for _, led in self:
            for c, b in led.balances.items():
                t = out.setdefault(c, Balance())
                t.total += b.total
                t.locked += b.locked
                t.correction += b.held - b.locked  # so that the sum's ``held`` is the sum of the venues' held
                t.reserved += b.reserved
        return out

    def available(self, venue: str) -> dict[str, Decimal]:
        return {c: b.available for c, b in self.of(venue).balances.items()}

    def positions(self) -> Iterable[tuple[str, str, Decimal]]:
        """(venue, pair, quantity) of every open position."""
        for v, led in self:
            for pair, pos in led.positions.items():
                if pos.quantity:
                    yield v, pair, pos.quantity

    def net_positions(self) -> dict[str, Decimal]:
        """Per pair, the quantity summed over the venues (what exposure limits look at)."""
        out: dict[str, Decimal] = {}
        for _, pair, q in self.positions():
            out[pair] = out.get(pair, ZERO) + q
        return {p: q for p, q in out.items() if q}

    def breaches(self, allow_short: bool) -> list[tuple[str, str]]:
        """(venue, currency) of every balance below what the settings allow, per venue (``Ledger.breaches``):
        a currency short on one venue is a breach even when another venue holds it."""
        return [(v, c) for v, led in self for c in led.breaches(allow_short)]

    def history(self) -> list[tuple[str, ClosedCycle]]:
        """Every venue's closed position cycles with their venue, oldest first (by close time, then venue)."""
        out = [(v, c) for v, led in self for c in led.history]
        out.sort(key=lambda vc: (vc[1].closed_at, vc[0]))
        return out

    def recent_adjustments(self) -> list[BalanceAdjusted]:
        """The latest adjustments of every venue, oldest first (by when they were made)."""
        out = [a for _, led in self for a in led.adjustments]
        out.sort(key=lambda a: (a.ts, a.adjustment_id))
        return out

    @property
    def locks(self) -> int:
        """Working orders locking funds, on every venue."""
        return sum(len(led.locks) for _, led in self)

    @property
    def initial_total(self) -> Decimal:
        """What the venues' books started with, in the base currency (the sum of their initial balances)."""
        return sum((led.initial_balance for _, led in self), ZERO)

    @property
    def fills_applied(self) -> int:
        return sum(led.fills_applied for _, led in self)

    # -- risk gate (part E): every venue together, as one Ledger (valuation, limits) -------------------------
    def combined(self) -> Ledger:
        """Every venue's books as one ``Ledger`` to value (equity, marks, conversion, day start): the only
        ledger itself when there is one; else a new Ledger (not to be booked on) with the balances summed
        per currency (``balances``), one position per pair (quantities, realized P&L and fees summed, the
        average price such that its unrealized P&L is the sum of the venues', the last price of the venue
        that traded it last), the fills and adjustments of all."""
        if len(self.ledgers) == 1:
            return next(iter(self.ledgers.values()))
        out = Ledger(self.base_currency, self.initial_balance * len(self.ledgers), balances=self.balances())
        cost: dict[str, Decimal] = {}
        for _, led in self:
            out.fills_applied += led.fills_applied
            out.adjustments.extend(led.adjustments)
            out.realized_pnl += led.realized_pnl
            out.fees_paid += led.fees_paid
            for pair, pos in led.positions.items():
                t = out.positions.get(pair)
                if t is None:
                    t = out.positions[pair] = Position(pair)
                t.quantity += pos.quantity
                t.realized_pnl += pos.realized_pnl
                t.fees += pos.fees
                cost[pair] = cost.get(pair, ZERO) + pos.quantity * pos.average_price
                if pos.last_price is not None and (t.last_price is None or pos.updated_at >= t.updated_at):
                    t.last_price, t.updated_at = pos.last_price, pos.updated_at
        for pair, t in out.positions.items():
            t.average_price = cost[pair] / t.quantity if t.quantity else ZERO
        return out

    def position(self, pair: str, venue: str | None = None) -> Decimal:
        """The signed position of ``pair`` on ``venue`` (None: every venue's together)."""
        if venue is not None:
            pos = self.ledgers[venue].positions.get(pair) if venue in self.ledgers else None
            return pos.quantity if pos is not None else ZERO
        return sum((led.positions[pair].quantity for _, led in self if pair in led.positions), ZERO)

    # -- end of part E's block ----------------------------------------------------------------------------
