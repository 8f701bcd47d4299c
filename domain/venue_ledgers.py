"""Books per venue: one ``Ledger`` for each venue, so a balance on one venue never pays for an order on another.

Fills are booked on the ledger of their ``venue``, order locks on the ledger of the order's ``venue`` (an
order that moves to another venue before it was taken - a fallback - takes its lock with it), a venue's
balance adjustments on that venue's. Each venue's ledger starts with ``initial_balance`` of
``base_currency`` (a live venue's opening balance reading replaces it, see domain/reconcile.py).
Totals over the venues are the sums of the venues' figures (``totals``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from domain.ledger import Balance, Ledger, Position
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
        for v in self.venues:
            self.of(v)

    def of(self, venue: str) -> Ledger:
        """The venue's ledger (made on first use: a fill from a venue not configured is still booked)."""
        led = self.ledgers.get(venue)
        if led is None:
            led = self.ledgers[venue] = Ledger(self.base_currency, self.initial_balance)
        return led

    def __iter__(self) -> Iterator[tuple[str, Ledger]]:
        return iter(self.ledgers.items())

    def apply_fill(self, fill: Fill) -> Decimal:
        return self.of(fill.venue).apply_fill(fill)

    def apply_order(self, order: Order) -> None:
        moved_from = self.lock_venue.get(order.order_id)
        if moved_from is not None and moved_from != order.venue:
            old = self.ledgers[moved_from]
            old._set_lock(order.order_id, None)  # the lock goes with the order to its new venue
            old.filled_by_fills.pop(order.order_id, None)
        led = self.of(order.venue)
        led.apply_order(order)
        if order.order_id in led.locks or order.order_id in led.filled_by_fills:
            self.lock_venue[order.order_id] = order.venue
        else:
            self.lock_venue.pop(order.order_id, None)

    def apply_adjustment(self, adj: BalanceAdjusted) -> bool:
        return self.of(adj.venue).apply_adjustment(adj)

    def balances(self) -> dict[str, Balance]:
        """Per currency, summed over the venues."""
        out: dict[str, Balance] = {}
        for _, led in self:
            for c, b in led.balances.items():
                t = out.setdefault(c, Balance())
                t.total += b.total
                t.locked += b.locked
                t.correction += b.held - b.locked  # so that the sum's ``held`` is the sum of the venues' held
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
