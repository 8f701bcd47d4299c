"""Positions, balances and P&L: the book of record, as pure functions over fills and order states.

Rules (see ARCHITECTURE.md, "Money maths"):
- one net position per pair; the average open price moves only on fills that increase the position;
- a fill that crosses zero closes the position and opens the opposite one with the remainder, its fee
  split in proportion to the two parts (the closing part's share belongs to the closed cycle);
- realized P&L has fees subtracted; unrealized P&L (at the mark) does not include fees;
- balances move by the fill's cash flows: the quote leg, the base leg and the fee in its currency;
- a working buy locks quote (what is left to fill x its price), a working sell locks base (what is
  left to fill); a cancel or the last fill releases it (``apply_order``);
- an algorithm's parent (twap / vwap / iceberg) is never at the venue: what is left of it is **reserved**
  (``Balance.reserved``), less what its live children have still to fill - each child locks that itself, as any
  working order (``Balance.locked``: what the venue holds). So ``locked`` is what a live venue's reading is
  compared with (domain/reconcile.py) and ``available`` = total - held - reserved: a parent's whole unfilled
  quantity stays unavailable, once, and no reading ever takes its reservation for a difference with the venue;
- every position cycle (from flat to flat, or to a flip) is kept when it closes, with its realized
  P&L, fees, open and close times and average open and close prices.
- a live venue's balance that differs from the books is adopted as an adjustment
  (``apply_adjustment``, decided in domain/reconcile.py): the total moves by the difference, and a
  per-currency ``correction`` is added to what the working orders lock (``held`` = max(locked +
  correction, 0), ``available`` = total - held - reserved), so fills and lock changes that come later move the
  books as before, never undoing the adjustment nor counting it twice. The reservations are not the venue's
  business: an adjustment never touches them.
Exact Decimal throughout; nothing is rounded here (rounding is for the edge, see valuation).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from domain.algo_orders import parent_of_slice
from schemas.messages import ALGO_TYPES, BalanceAdjusted, Fill, Order, OrderStatus
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
S = OrderStatus
RECENT_ADJUSTMENTS = 20  # kept for GET /api/portfolio (balanceAdjustments)
ADJUSTMENT_IDS = 10_000  # adjustment ids remembered, so one stored twice is applied once
ENDED_PARENTS = 1_000  # algorithm parents remembered as ended, so a child's fill read after that is not kept for them

# orders at the venue or on their way there hold funds; contingent and untriggered ones do not
LOCKING = frozenset({S.SUBMITTED, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_UPDATE, S.PENDING_CANCEL})
HELD_BY_ROUTER = frozenset({"stop_loss", "stop_limit", "take_profit"})


class LedgerError(ValueError):
    """A fill the ledger cannot book (named reason)."""


@dataclass(frozen=True, slots=True)
class ClosedCycle:
    """One position from open to close (flat, or flipped to the other side)."""

    pair: str
    cycle: int
    side: str  # long | short
    quantity: Decimal  # opened in total
    average_open_price: Decimal
    average_close_price: Decimal | None
    realized_pnl: Decimal  # fees subtracted
    fees: Decimal  # in quote currency
    opened_at: int
    closed_at: int


@dataclass(slots=True)
class CycleStats:
    side: str
    opened_at: int
    open_qty: Decimal = ZERO
    open_cost: Decimal = ZERO
    close_qty: Decimal = ZERO
    close_value: Decimal = ZERO
    realized: Decimal = ZERO
    fees: Decimal = ZERO


@dataclass(slots=True)
class Position:
    pair: str
    quantity: Decimal = ZERO  # signed: > 0 long, < 0 short
    average_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO  # fees subtracted, for the pair's whole life
    fees: Decimal = ZERO  # in quote currency
    cycle: int = 0  # position cycles opened so far
    opened_at: int | None = None
    updated_at: int = 0
    last_price: Decimal | None = None
    current: CycleStats | None = None
    closed_cycles: list[ClosedCycle] = field(default_factory=list)  # drained by the Ledger

    @property
    def side(self) -> str:
        return "long" if self.quantity > 0 else "short" if self.quantity < 0 else "flat"

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.quantity * (mark - self.average_price) if self.quantity else ZERO

    # -- cycles ----------------------------------------------------------------------------------------
    def _open_cycle(self, side: str, ts: int) -> CycleStats:
        self.cycle += 1
        self.opened_at = ts
        self.current = CycleStats(side=side, opened_at=ts)
        return self.current

    def _close_cycle(self, ts: int) -> None:
        c = self.current
        if c is None:
            return
        self.closed_cycles.append(
            ClosedCycle(
                pair=self.pair,
                cycle=self.cycle,
                side=c.side,
                quantity=c.open_qty,
                average_open_price=c.open_cost / c.open_qty if c.open_qty else self.average_price,
                average_close_price=c.close_value / c.close_qty if c.close_qty else None,
                realized_pnl=c.realized,
                fees=c.fees,
                opened_at=c.opened_at,
                closed_at=ts,
            )
        )
        self.current = None

    def _cycle(self, side: str, ts: int) -> CycleStats:
        return self.current if self.current is not None else self._open_cycle(side, ts)

    # -- fills -----------------------------------------------------------------------------------------
    def apply(self, buy: bool, qty: Decimal, price: Decimal, fee_quote: Decimal, ts: int) -> Decimal:
        """Book one fill; returns the realized P&L it produced (fees subtracted)."""
        if qty <= ZERO:
            raise LedgerError("fill quantity must be positive")
        if price <= ZERO:
            raise LedgerError("fill price must be positive")
        signed = qty if buy else -qty
        q = self.quantity
        realized = ZERO
        if q == ZERO or (q > 0) == buy:
            # open or increase: the average price moves
            c = self._cycle("long" if buy else "short", ts)
            if q == ZERO:
                self.average_price = price
            else:
                self.average_price = (abs(q) * self.average_price + qty * price) / (abs(q) + qty)
            self.quantity = q + signed
            realized -= fee_quote
            c.open_qty += qty
            c.open_cost += qty * price
            c.realized -= fee_quote
            c.fees += fee_quote
        else:
            c = self._cycle("long" if q > 0 else "short", ts)
            closing = min(qty, abs(q))
            direction = Decimal(1) if q > 0 else Decimal(-1)
            fee_close = fee_quote if closing == qty else fee_quote * closing / qty
            closed_pnl = closing * (price - self.average_price) * direction - fee_close
            realized += closed_pnl
            c.close_qty += closing
            c.close_value += closing * price
            c.realized += closed_pnl
            c.fees += fee_close
            self.quantity = q + signed
            if self.quantity == ZERO:
                self._close_cycle(ts)
                self.average_price = ZERO
                self.opened_at = None
            elif (self.quantity > 0) != (q > 0):
                # crossed zero: the remainder opens the opposite position at this price
                self._close_cycle(ts)
                fee_open = fee_quote - fee_close
                n = self._open_cycle("long" if buy else "short", ts)
                self.average_price = price
                realized -= fee_open
                n.open_qty += qty - closing
                n.open_cost += (qty - closing) * price
                n.realized -= fee_open
                n.fees += fee_open
        self.realized_pnl += realized
        self.fees += fee_quote
        self.updated_at = ts
        self.last_price = price
        return realized

    def pay_base_fee(self, fee: Decimal, price: Decimal, ts: int) -> Decimal:
        """A fee paid in the base asset: ``fee`` units leave the position with no cash in return.

        Long: the units are disposed of at zero proceeds, so the loss is ``fee * average price``.
        Flat or short: the short grows by ``fee`` units entered at the fill price, and the fee costs
        ``fee * price``. Either way realized P&L falls by the fee's value and the books still balance.
        """
        realized = ZERO
        rest = fee
        if self.quantity > 0:
            c = self._cycle("long", ts)
            taken = min(rest, self.quantity)
            realized -= taken * self.average_price
            c.realized -= taken * self.average_price
            c.fees += taken * price
            self.quantity -= taken
            rest -= taken
            if self.quantity == ZERO:
                self._close_cycle(ts)
                self.average_price = ZERO
                self.opened_at = None
        if rest > ZERO:
            if self.quantity == ZERO:
                c = self._open_cycle("short", ts)
                self.average_price = price
            else:
                c = self._cycle("short", ts)
                q = abs(self.quantity)
                self.average_price = (q * self.average_price + rest * price) / (q + rest)
            c.open_qty += rest
            c.open_cost += rest * price
            c.realized -= rest * price
            c.fees += rest * price
            self.quantity -= rest
            realized -= rest * price
        self.realized_pnl += realized
        self.fees += fee * price
        self.updated_at = ts
        return realized


@dataclass(slots=True)
class Balance:
    total: Decimal = ZERO
    locked: Decimal = ZERO  # what the working orders lock, as the ledger knows them (what the venue holds for them)
    correction: Decimal = ZERO  # what the venue holds beyond (or short of) ``locked``, per the adjustments
    # what algorithm parents reserve beyond their live children (never at the venue: not in a reading's comparison)
    reserved: Decimal = ZERO

    @property
    def held(self) -> Decimal:
        """What is not available: the locks corrected by the venue's readings, never below zero."""
        if not self.correction:
            return self.locked
        h = self.locked + self.correction
        return h if h > ZERO else ZERO

    @property
    def unavailable(self) -> Decimal:
        """What is not available: held (at the venue, as corrected by its readings) and reserved (by parents)."""
        return self.held + self.reserved

    @property
    def available(self) -> Decimal:
        return self.total - self.held - self.reserved


@dataclass(slots=True)
class Lock:
    """What one working order holds: ``unit`` of ``currency`` for each unit still to fill. An algorithm's parent
    (``reserve``) holds what is left of it less what its live children have still to fill (``working``: they hold
    that themselves), in ``Balance.reserved``; any other order in ``Balance.locked``."""

    currency: str
    unit: Decimal
    quantity: Decimal
    filled: Decimal
    sell: bool = False  # a working sell, holding the base it sells
    reserve: bool = False  # an algorithm's parent: a reservation, not at the venue
    working: Decimal = ZERO  # a parent: what its live children have still to fill

    @property
    def amount(self) -> Decimal:
        left = self.quantity - self.filled - self.working
        return left * self.unit if left > ZERO else ZERO


def lock_of(order: Order) -> Lock | None:
    """What a working order holds, or None when it holds nothing.

    A buy holds quote: what is left to fill times its limit price, or for a market order its reference
    price (the risk-gate's estimate). A sell holds base: what is left to fill. Orders the router still
    holds (a stop not triggered, a bracket leg waiting for its entry) hold nothing until they go out. An algorithm's
    parent (twap / vwap / iceberg) holds what is left of its whole quantity (at its cap, else its reference price;
    ``reserve``: the ledger takes off what its live children hold themselves, ``child_lock_of``); its children
    (role "slice") hold nothing *here*: the parent's quantity covers them (the risk gate's working exposure).
    """
    if order.role == "slice":  # an algorithm's child: its parent's quantity covers it (see child_lock_of)
        return None
    lock = _lock(order, None)
    if lock is not None and order.type in ALGO_TYPES:
        lock.reserve = True
    return lock


def child_lock_of(order: Order, parent_unit: Decimal | None = None) -> Lock | None:
    """What an algorithm's live child holds at the venue (in ``Balance.locked``, as any working order: what a
    reading of the venue shows held for it): a buy its quote at its limit, else its reference price (else its
    parent's unit), a sell its base. Its parent's reservation is that much smaller while it works."""
    return _lock(order, parent_unit)


def _lock(order: Order, fallback: Decimal | None) -> Lock | None:
    if order.status not in LOCKING:
        return None
    if order.type in HELD_BY_ROUTER and order.triggered_at is None:
        return None
    if order.quantity - order.filled_quantity <= ZERO:
        return None
    base, quote = pair_currencies(order.pair)
    if order.side == "sell":
        return Lock(base, Decimal(1), order.quantity, order.filled_quantity, sell=True)
    price = order.price or order.reference_price or order.stop_price or fallback
    return Lock(quote, price, order.quantity, order.filled_quantity) if price is not None else None


class Changes:
    """What changed in one Ledger's books, newest last: each pair whose position a fill moved and each
    currency whose balance anything moved (a fill, a lock, an adjustment, a new currency), with the number
    of the change (``rev``, counting up). Kept by the Ledger once a reader asked for it (``Ledger.watch``):
    a valuation cache (domain/valuation.py) reads what changed since the number it saw last, so that only
    those are valued again. One entry per pair and currency (the latest change moves it to the end)."""

    __slots__ = ("currencies", "pairs", "rev")

    def __init__(self) -> None:
        self.rev = 0
        self.pairs: dict[str, int] = {}
        self.currencies: dict[str, int] = {}

    def note(self, pair: str | None, currencies: Iterable[str]) -> None:
        self.rev += 1
        rev = self.rev
        if pair is not None:
            self.pairs.pop(pair, None)
            self.pairs[pair] = rev
        for c in currencies:
            self.currencies.pop(c, None)
            self.currencies[c] = rev

    def since(self, seen: int) -> tuple[list[str], list[str]]:
        """The pairs and the currencies changed after change number ``seen``."""
        pairs = []
        for pair, rev in reversed(self.pairs.items()):
            if rev <= seen:
                break
            pairs.append(pair)
        currencies = []
        for c, rev in reversed(self.currencies.items()):
            if rev <= seen:
                break
            currencies.append(c)
        return pairs, currencies


class _Watched:
    """Slots for what a Ledger derives and is not one of its fields (so never in its snapshots): its ``Changes``,
    and the sum of its working sells' locks per currency (``selling``)."""

    __slots__ = ("_changes", "_selling")


@dataclass(slots=True)
class Ledger(_Watched):
    """The books of one venue. Change them only through these methods: each notes what it changed
    (``Changes``) for the readers that watch the ledger (``watch``)."""

    base_currency: str
    initial_balance: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    # summed over the pairs as they are, whatever their quote currency: the portfolio's totals are
    # converted per currency by domain.valuation, never taken from these two
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    fills_applied: int = 0
    history: list[ClosedCycle] = field(default_factory=list)
    locks: dict[str, Lock] = field(default_factory=dict)  # order id -> what it holds
    filled_by_fills: dict[str, Decimal] = field(default_factory=dict)  # order id -> filled, as the fills say
    # an algorithm's parent order id -> its children's fills seen (fill id -> quantity), while it locks
    parent_fills: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    # an algorithm's parent order id -> its live children (child order id -> what it has still to fill, as locked)
    children: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    # the last ENDED_PARENTS algorithm parents that ended, oldest first: a child's fill read after its parent's last
    # event has nothing left to spend (and nothing to wait for)
    ended_parents: dict[str, bool] = field(default_factory=dict)
    adjustments: list[BalanceAdjusted] = field(default_factory=list)  # the last RECENT_ADJUSTMENTS, oldest first
    adjustment_ids: list[str] = field(default_factory=list)  # the last ADJUSTMENT_IDS applied, oldest first
    opened_at_venue: str | None = None  # the venue whose balances replaced INITIAL_BALANCE (opening)

    def __post_init__(self) -> None:
        if not self.balances:
            self.balances[self.base_currency] = Balance(total=self.initial_balance)

    def watch(self) -> Changes:
        """What changes in these books from now on (one ``Changes`` for every reader: each keeps the number
        of the last change it saw)."""
        ch: Changes | None = getattr(self, "_changes", None)
        if ch is None:
            ch = self._changes = Changes()
        return ch

    def _note(self, pair: str | None, *currencies: str) -> None:
        ch: Changes | None = getattr(self, "_changes", None)
        if ch is not None:
            ch.note(pair, currencies)

    def balance(self, currency: str) -> Balance:
        b = self.balances.get(currency)
        if b is None:
            b = self.balances[currency] = Balance()
            self._note(None, currency)
        return b

    def negative(self) -> list[str]:
        """Currencies whose total or available balance is below zero."""
        return [c for c, b in self.balances.items() if b.total < ZERO or b.available < ZERO]

    def breaches(self, allow_short: bool) -> list[str]:
        """Currencies whose balance is below what the settings allow (to be alerted).

        Without shorts (``allow_short`` false) that is any total or available balance below zero. With
        shorts allowed, a short position is not a negative balance: a currency's total may go as far
        below zero as the short positions of the pairs based on it, and working sells of it may take
        its available further down; below that is a breach (spending, or locking for a buy, what is not
        there).
        """
        if not allow_short:
            return self.negative()
        shorts: dict[str, Decimal] = {}
        for pair, pos in self.positions.items():
            if pos.quantity < ZERO:
                base = pair_currencies(pair)[0]
                shorts[base] = shorts.get(base, ZERO) + pos.quantity
        selling = self.selling()
        out = []
        for c, b in self.balances.items():
            floor = shorts.get(c, ZERO)
            if b.total < floor or b.available + selling.get(c, ZERO) < floor:
                out.append(c)
        return out

    def apply_adjustment(self, adj: BalanceAdjusted) -> bool:
        """Set one currency's books to a venue's reading: the total moves by ``to_total - from_total``,
        the correction of what is locked by ``locked_delta``. Both are differences, so the result is the
        same whichever fills and order changes come before or after it. False (nothing changed) for an
        adjustment already applied (the same id)."""
        if adj.adjustment_id in self.adjustment_ids:
            return False
        b = self.balance(adj.currency)
        b.total += adj.to_total - adj.from_total
        b.correction += adj.locked_delta
        if adj.reason == "opening":
            self.opened_at_venue = adj.venue
        self.adjustments.append(adj)
        if len(self.adjustments) > RECENT_ADJUSTMENTS:
            del self.adjustments[: len(self.adjustments) - RECENT_ADJUSTMENTS]
        self.adjustment_ids.append(adj.adjustment_id)
        if len(self.adjustment_ids) > ADJUSTMENT_IDS:
            del self.adjustment_ids[: len(self.adjustment_ids) - ADJUSTMENT_IDS]
        self._note(None, adj.currency)
        return True

    def figures(self, currencies: Iterable[str]) -> dict[str, tuple[Decimal, Decimal]]:
        """(total, locked) of each currency: what a fill or an order change moves (see domain/reconcile.py); the
        parents' reservations are not in it (never at the venue)."""
        out = {}
        for c in currencies:
            b = self.balances.get(c)
            out[c] = (b.total, b.locked) if b is not None else (ZERO, ZERO)
        return out

    def selling(self) -> dict[str, Decimal]:
        """What the working sells hold, per currency: the sum of their locks' amounts. Kept in step by ``_set_lock``
        (the only way a lock changes: a Lock is never changed once set), so ``breaches`` - after every fill and order
        event - no longer walks every working order; worked out once from the locks when first asked for."""
        selling: dict[str, Decimal] | None = getattr(self, "_selling", None)
        if selling is None:
            selling = {}
            for lock in self.locks.values():
                if lock.sell:
                    selling[lock.currency] = selling.get(lock.currency, ZERO) + lock.amount
            self._selling = selling
        return selling

    def _sold(self, lock: Lock, sign: int) -> None:
        selling: dict[str, Decimal] | None = getattr(self, "_selling", None)
        if selling is not None and lock.sell:
            total = selling.get(lock.currency, ZERO) + sign * lock.amount
            if total:
                selling[lock.currency] = total
            else:
                selling.pop(lock.currency, None)

    def _set_lock(self, order_id: str, lock: Lock | None) -> None:
        old = self.locks.pop(order_id, None)
        if old is not None:
            self._sold(old, -1)
            b = self.balance(old.currency)
            if old.reserve:
                b.reserved -= old.amount
            else:
                b.locked -= old.amount
            self._note(None, old.currency)
        # a parent's reservation is kept while it works even when its children hold all of it (0 now): a child
        # that ends unfilled gives its quantity back to it
        if lock is not None and (lock.amount > ZERO or lock.reserve):
            self.locks[order_id] = lock
            self._sold(lock, 1)
            b = self.balance(lock.currency)
            if lock.reserve:
                b.reserved += lock.amount
            else:
                b.locked += lock.amount
            self._note(None, lock.currency)

    def apply_order(self, order: Order) -> None:
        """Track what a working order locks (idempotent: the latest state of the order wins). Fills may
        be booked before the order event that shows them: the larger filled quantity counts."""
        if order.role == "slice" and (parent := order.parent_order_id or parent_of_slice(order.client_order_id)):
            self._apply_child(order, parent)
            return
        lock = lock_of(order)
        seen = self.filled_by_fills.get(order.order_id)
        if lock is None:
            if order.status not in LOCKING:  # the order is done: nothing more to remember of it
                self.filled_by_fills.pop(order.order_id, None)
                self.parent_fills.pop(order.order_id, None)
                if order.type in ALGO_TYPES and order.order_id not in self.ended_parents:
                    self.ended_parents[order.order_id] = True
                    if len(self.ended_parents) > ENDED_PARENTS:
                        del self.ended_parents[next(iter(self.ended_parents))]
                for child in order.children:  # a child's fill remembered after its last event: nothing to wait for
                    if child not in self.locks:
                        self.filled_by_fills.pop(child, None)
        elif lock.reserve:  # its children's fills: those it lists and those booked before it lists them
            merged = self.parent_fills.setdefault(order.order_id, {})
            merged.update((ref.fill_id, ref.quantity) for ref in order.fills)
            lock = self._parent_lock(order.order_id, lock)
        elif seen is not None:
            lock.filled = max(lock.filled, seen)
        self._set_lock(order.order_id, lock)

    def _apply_child(self, order: Order, parent: str) -> None:
        """An algorithm's child: it locks what it has still to fill (what the venue holds for it), and its parent
        reserves that much less while it works."""
        p = self.locks.get(parent)
        lock = child_lock_of(order, p.unit if p is not None and not p.sell else None)
        if lock is None:
            if order.status not in LOCKING:
                self.filled_by_fills.pop(order.order_id, None)
        elif (seen := self.filled_by_fills.get(order.order_id)) is not None:
            lock.filled = max(lock.filled, seen)
        self._set_lock(order.order_id, lock)
        self._set_working(parent, order.order_id)

    def _set_working(self, parent: str, child: str) -> None:
        """What ``child`` has still to fill (its lock) taken off its parent's reservation."""
        lock = self.locks.get(child)
        left = lock.quantity - lock.filled if lock is not None else ZERO
        kids = self.children.get(parent)
        if left > ZERO:
            if kids is None:
                kids = self.children[parent] = {}
            kids[child] = left
        elif kids is not None:
            kids.pop(child, None)
            if not kids:
                del self.children[parent]
        if (p := self.locks.get(parent)) is not None:
            self._set_lock(parent, self._parent_lock(parent, p))

    def _parent_lock(self, parent: str, lock: Lock) -> Lock | None:
        """A parent's reservation less every fill of its children seen (by fill id: each counted once, whichever
        of the child's fill and the parent's event showing it is seen first) and less what its live children have
        still to fill (they lock that themselves). None once its children filled all of it."""
        filled = sum(self.parent_fills.get(parent, {}).values(), ZERO)
        if filled >= lock.quantity:
            return None
        working = sum(self.children.get(parent, {}).values(), ZERO)
        return Lock(lock.currency, lock.unit, lock.quantity, filled, lock.sell, reserve=True, working=working)

    def _release_by_fill(self, fill: Fill) -> None:
        """A fill spends what its order locked, even before the order event that shows it arrives. A child's fill
        (client order id ``tbx:<parent>:s<k>``) spends its own lock and its parent's quantity (so the parent's
        reservation, the parent's quantity less its fills less its live children's, moves only when the child's
        lock is not known yet)."""
        parent = parent_of_slice(fill.client_order_id)
        if parent is not None:
            if parent not in self.ended_parents:  # (a fill may come before its parent's first event: kept for it)
                self.parent_fills.setdefault(parent, {})[fill.fill_id] = fill.quantity
            if fill.order_id in self.locks or parent in self.locks:  # (a child's event may come after its fill)
                self._release_own(fill, remember=True)
            self._set_working(parent, fill.order_id)
            return
        self._release_own(fill)

    def _release_own(self, fill: Fill, remember: bool = False) -> None:
        known = self.locks.get(fill.order_id)
        if (
            known is None
            and not remember
            and fill.order_id not in self.filled_by_fills
            and fill.order_filled_quantity is None
        ):
            return  # an outside fill of no order we know: nothing to remember
        before = self.filled_by_fills.get(fill.order_id, known.filled if known else ZERO)
        told = fill.order_filled_quantity if fill.order_filled_quantity is not None else before + fill.quantity
        filled = max(before, told)
        self.filled_by_fills[fill.order_id] = filled
        if known is not None:
            done = bool(fill.order_complete) or filled >= known.quantity
            left = None if done else Lock(known.currency, known.unit, known.quantity, filled, known.sell)
            self._set_lock(fill.order_id, left)

    @staticmethod
    def _with_base_fee(pos: Position, buy: bool, fill: Fill) -> Decimal:
        """A fill whose fee is paid in the base asset. On a fill that crosses zero the fee is split in
        proportion: the closing share is charged (at the fill price) to the cycle it closes, and those
        units shift the new position (a buy opens that much less, a sell shorts that much more); the
        opening share is paid out of the new position."""
        q, price, ts = pos.quantity, fill.price, fill.timestamp
        if q == ZERO or (q > 0) == buy or fill.quantity <= abs(q):
            return pos.apply(buy, fill.quantity, price, ZERO, ts) + pos.pay_base_fee(fill.fee, price, ts)
        closing = abs(q)
        fee_close = fill.fee * closing / fill.quantity
        realized = pos.apply(buy, closing, price, fee_close * price, ts)
        opening = fill.quantity - closing + (-fee_close if buy else fee_close)
        if opening > ZERO:
            realized += pos.apply(buy, opening, price, ZERO, ts)
        elif opening < ZERO:  # the closing share of the fee is more than the buy left over: a short of the rest
            realized += pos.apply(not buy, -opening, price, ZERO, ts)
        return realized + pos.pay_base_fee(fill.fee - fee_close, price, ts)

    def apply_fill(self, fill: Fill) -> Decimal:
        """Book a fill: position, balances and P&L. Returns the realized P&L it produced."""
        base, quote = pair_currencies(fill.pair)
        if not (fill.quantity.is_finite() and fill.price.is_finite() and fill.fee.is_finite()):
            raise LedgerError("fill quantity, price and fee must be finite numbers")
        if fill.quantity <= ZERO or fill.price <= ZERO:
            raise LedgerError("fill quantity and price must be positive")
        if not base or not quote:
            raise LedgerError(f"pair {fill.pair!r} is not written BASE_QUOTE")
        fee_in_base = fill.fee_currency == base and fill.fee != ZERO
        if fee_in_base and fill.fee < ZERO:
            raise LedgerError("a negative fee (rebate) in the base currency is not supported")
        if not fee_in_base and fill.fee != ZERO and fill.fee_currency != quote:
            raise LedgerError(f"fee currency {fill.fee_currency!r} is neither {base} nor {quote}")
        buy = fill.side == "buy"
        pos = self.positions.get(fill.pair)
        if pos is None:
            pos = self.positions[fill.pair] = Position(fill.pair)
        if fee_in_base:
            fee_quote = fill.fee * fill.price
            realized = self._with_base_fee(pos, buy, fill)
        else:
            fee_quote = fill.fee
            realized = pos.apply(buy, fill.quantity, fill.price, fee_quote, fill.timestamp)
        if pos.closed_cycles:
            self.history.extend(pos.closed_cycles)
            pos.closed_cycles.clear()
        notional = fill.quantity * fill.price
        q, b = self.balance(quote), self.balance(base)
        if buy:
            q.total -= notional
            b.total += fill.quantity
        else:
            q.total += notional
            b.total -= fill.quantity
        if fill.fee:
            self.balance(base if fee_in_base else quote).total -= fill.fee
        self.realized_pnl += realized
        self.fees_paid += fee_quote
        self.fills_applied += 1
        self._note(fill.pair, base, quote)
        self._release_by_fill(fill)  # what was locked for this part of the order is spent now
        return realized
