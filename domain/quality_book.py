"""Execution quality as a read model: one row per completed order, kept by the portfolio-ledger. Pure.

The figures of one order and of a group of orders are domain/quality.py's (``order_quality``, ``aggregate``); this
module decides which orders count, what each one's fills are, and keeps the rows:

- A row is made when an order reaches a final state (filled, canceled, expired, rejected, denied) from the order
  as the ORDERS stream carries it (its fills are on it), and made again when it reaches one again (a late fill
  moves a canceled order back to partially filled, then to canceled): the latest final state wins, so folding an
  event twice changes nothing and a replay from any snapshot builds the same rows.
- Counted: an order that has fills, or that worked at a venue and ended without any (canceled / expired there:
  its fill ratio is 0), or an algorithm's parent. Not counted: an algorithm's children (role ``slice``: their
  fills count in their parent's row, which is made with every fill of the parent and of its children, each
  fill once by its id), orders denied or rejected without a fill, and orders that never left the router (a
  bracket leg or a stop that was never triggered, canceled).
- The arrival (``Order.arrival_mid / bid / ask``) is the venue's book when the router accepted the order; for a
  stop or take-profit the router triggers itself it is the book at the trigger (the router records it then).
  A stop held by the venue (native trigger, ``triggered_at`` unknown) has no usable arrival: its slippage is
  None, never measured against a book from long before it fired.
- Fees: each fill's fee in the pair's quote currency (``fee_in_quote``: the quote as is, the base at the fill's
  price); a fee in any other currency is left out and that currency named (``unconverted``). Sums across pairs
  (by venue, by type, overall) are in the valuation currency (BASE_CURRENCY), each quote currency converted at
  the current marks as every total of the ledger (domain/valuation.py ``Converter``); a quote currency that
  cannot be converted now is left out of those sums and named; a pair's own figures are then in its quote
  currency (``feesCurrency``).
- Bounded: the last ``max_rows`` (QUALITY_ORDERS_KEPT = 10,000) completed orders, oldest completion dropped
  first; the children's fills of parents not completed yet: the last ``max_pending`` (10,000) parents; the ids of
  the orders alerted (SLIPPAGE, once per order): the last 20,000.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from domain.quality import (
    OrderQuality,
    QualityStats,
    aggregate,
    fee_in_quote,
    fill_slippage,
    order_quality,
    touch_of,
)
from domain.triggers import TRIGGERED_TYPES
from schemas.messages import (
    ALGO_TYPES,
    TERMINAL_STATUSES,
    ExecutionQuality,
    FillQualityView,
    Order,
    OrderQualityView,
    OrderStatus,
    QualityFigures,
)
from schemas.subjects import pair_currencies

QUALITY_ORDERS_KEPT = 10_000
PENDING_PARENTS_KEPT = 10_000
ALERTED_KEPT = 20_000  # the orders a SLIPPAGE alert was raised for (never twice), the latest
BPS_EXP = Decimal("0.0001")  # basis points leave here with 4 decimals
RATIO_EXP = Decimal("0.000001")
ZERO = Decimal(0)
ONE = Decimal(1)

Level = tuple[Decimal, Decimal]


def arrival(bids: Sequence[Level], asks: Sequence[Level]) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """(mid, best bid, best ask) of a book: the mid only when both sides have a level, a side None when empty."""
    bid = bids[0][0] if bids else None
    ask = asks[0][0] if asks else None
    mid = (bid + ask) / 2 if bid is not None and ask is not None else None
    return mid, bid, ask


def with_arrival(new: Order, old: Order, at: tuple[Decimal | None, Decimal | None, Decimal | None]) -> Order:
    """``new`` (a change of ``old``) with the arrival ``at`` (``arrival(...)``); unchanged when nothing changed."""
    if new is old:
        return new
    mid, bid, ask = at
    return msgspec.structs.replace(new, arrival_mid=mid, arrival_bid=bid, arrival_ask=ask)


class QFill(msgspec.Struct, array_like=True, gc=False):
    """One fill of a row: quantity, price, fee in the quote currency (None: in ``currency``, not convertible)."""

    quantity: Decimal
    price: Decimal
    fee: Decimal | None
    ts: int
    currency: str  # the fee's own currency


class QualityRow(msgspec.Struct, kw_only=True, array_like=True, dict=True):
    """One completed order: what it is, its fills (by fill id, its children's included) and its figures
    (``quality``: computed from the rest when made or decoded, never stored: a snapshot holds the fills only)."""

    order_id: str
    pair: str
    exchange: str
    type: str
    side: str
    quantity: Decimal
    created_at: int
    completed_at: int
    arrival_mid: Decimal | None
    touch: Decimal | None
    fills: dict[str, QFill]

    def __post_init__(self) -> None:
        self.refigure()

    def refigure(self) -> None:
        self.__dict__["quality"] = _figures(
            self.side, self.quantity, self.arrival_mid, self.touch, self.fills, self.created_at
        )

    @property
    def quality(self) -> OrderQuality:
        return self.__dict__["quality"]  # type: ignore[no-any-return]

    def unpriced(self) -> set[str]:
        return {f.currency for f in self.fills.values() if f.fee is None}


def counts(order: Order, has_fills: bool) -> bool:
    """Is this order (in a final state) a row? (module docstring)"""
    if order.role == "slice" or order.status not in TERMINAL_STATUSES:
        return False
    if has_fills:
        return True
    if order.status in (OrderStatus.REJECTED, OrderStatus.DENIED):
        return False
    if order.type in ALGO_TYPES:
        return True
    return order.venue_order_id is not None or order.venue_status is not None


def _qfills(order: Order) -> dict[str, QFill]:
    return {
        f.fill_id: QFill(f.quantity, f.price, fee_in_quote(f.fee, f.fee_currency, order.pair, f.price), f.timestamp,
                         f.fee_currency.upper())
        for f in order.fills
    }  # fmt: skip


def _reference(order: Order) -> tuple[Decimal | None, Decimal | None]:
    """(arrival mid, touch) the order is measured against (None: not known)."""
    if order.type in TRIGGERED_TYPES and order.triggered_at is None:
        return None, None  # held by the venue: its book when it fired is not known
    return order.arrival_mid, touch_of(order.side, order.arrival_bid, order.arrival_ask)


def _figures(
    side: str, quantity: Decimal, mid: Decimal | None, touch: Decimal | None, fills: dict[str, QFill], created: int
) -> OrderQuality:
    quote_fills = [(f.quantity, f.price, f.fee, f.ts) for f in fills.values()]
    return order_quality(side, quantity, mid, touch, quote_fills, created_ms=created)


class QualityBook(msgspec.Struct, kw_only=True):
    """The rows (oldest completion first) and the children's fills of parents not completed yet."""

    rows: dict[str, QualityRow] = msgspec.field(default_factory=dict)
    pending: dict[str, dict[str, QFill]] = msgspec.field(default_factory=dict)  # parent id -> its children's fills
    alerted: dict[str, None] = msgspec.field(default_factory=dict)  # orders a SLIPPAGE alert was decided for
    max_rows: int = QUALITY_ORDERS_KEPT
    max_pending: int = PENDING_PARENTS_KEPT
    max_alerted: int = ALERTED_KEPT

    def fold(self, order: Order, alert_bps: Decimal | None = None) -> QualityRow | None:
        """Take one state of an order (from the ORDERS stream). Returns the row to raise a SLIPPAGE alert for:
        a row whose slippage against arrival is above ``alert_bps`` (None or 0: no alerts), once per order (of the
        last ``max_alerted`` alerted: an order made a row again - a late fill - is not alerted again)."""
        if order.role == "slice":
            return self._child(order, alert_bps)
        if order.status not in TERMINAL_STATUSES:
            return None
        old = self.rows.get(order.order_id)
        fills = {**(old.fills if old is not None else {}), **self.pending.get(order.order_id, {}), **_qfills(order)}
        if not counts(order, bool(fills)):
            return None
        self.pending.pop(order.order_id, None)
        mid, touch = _reference(order)
        row = QualityRow(
            order_id=order.order_id, pair=order.pair, exchange=order.venue, type=order.type, side=order.side,
            quantity=order.quantity, created_at=order.created_at, completed_at=order.closed_at or order.updated_at,
            arrival_mid=mid, touch=touch, fills=fills,
        )  # fmt: skip
        self.rows[order.order_id] = row  # (made again: keeps its place)
        while len(self.rows) > self.max_rows:
            del self.rows[next(iter(self.rows))]
        return self._alert(row, alert_bps)

    def _child(self, order: Order, alert_bps: Decimal | None) -> QualityRow | None:
        parent = order.parent_order_id
        fills = _qfills(order)
        if parent is None or not fills:
            return None
        row = self.rows.get(parent)
        if row is None:  # the parent is still working: its children's fills wait for it
            waiting = self.pending.pop(parent, {})  # (moved to the end: the latest parents are kept)
            self.pending[parent] = waiting | fills
            while len(self.pending) > self.max_pending:
                del self.pending[next(iter(self.pending))]
            return None
        if fills.keys() <= row.fills.keys():
            return None
        row.fills = row.fills | fills  # a child's fill after its parent completed
        row.refigure()
        return self._alert(row, alert_bps)

    def _alert(self, row: QualityRow, alert_bps: Decimal | None) -> QualityRow | None:
        slip = row.quality.slippage_bps
        if not alert_bps or slip is None or slip <= alert_bps or row.order_id in self.alerted:
            return None
        self.alerted[row.order_id] = None
        while len(self.alerted) > self.max_alerted:
            del self.alerted[next(iter(self.alerted))]
        return row

    def select(
        self,
        since: int | None = None,
        until: int | None = None,
        pair: str | None = None,
        exchanges: Iterable[str] | None = None,
        order_id: str | None = None,
    ) -> list[QualityRow]:
        """The rows of the orders created from ``since`` (inclusive) until ``until`` (exclusive), of ``pair``, of
        one of ``exchanges``, the order ``order_id`` (None: any)."""
        venues = None if exchanges is None else set(exchanges)
        found = self.rows.values() if order_id is None else [r for r in [self.rows.get(order_id)] if r is not None]
        return [
            r
            for r in found
            if (since is None or r.created_at >= since)
            and (until is None or r.created_at < until)
            and (pair is None or r.pair == pair)
            and (venues is None or r.exchange in venues)
        ]


def order_view(row: QualityRow, money: Callable[[Decimal, str], Decimal] = lambda a, c: a) -> OrderQualityView:
    """One row as ``GET /api/execution/quality?orderId=`` shows it: the order's figures and each fill's."""
    q = row.quality
    quote = pair_currencies(row.pair)[1]
    fills = []
    for fill_id, f in sorted(row.fills.items(), key=lambda kv: (kv[1].ts, kv[0])):
        fq = fill_slippage(row.side, f.quantity, f.price, f.fee, row.arrival_mid, row.touch)
        view = FillQualityView(
            fill_id=fill_id, quantity=f.quantity, price=f.price, fee=f.fee, timestamp=f.ts,
            slippage_bps=_bps(fq.slippage_bps), touch_slippage_bps=_bps(fq.touch_slippage_bps),
            fee_bps=_bps(fq.fee_bps), cost_bps=_bps(fq.cost_bps),
        )  # fmt: skip
        fills.append(view)
    return OrderQualityView(
        order_id=row.order_id, pair=row.pair, exchange=row.exchange, type=row.type, side=row.side,
        quantity=row.quantity, filled_quantity=q.filled_quantity, average_price=q.average_price,
        arrival_mid=row.arrival_mid, touch=row.touch, slippage_bps=_bps(q.slippage_bps),
        touch_slippage_bps=_bps(q.touch_slippage_bps), fees=money(q.fees, quote), fees_currency=quote,
        fees_bps=_bps(q.fees_bps), cost_bps=_bps(q.cost_bps), fill_ratio=q.fill_ratio.quantize(RATIO_EXP),
        time_to_fill_ms=q.time_to_fill_ms, created_at=row.created_at, completed_at=row.completed_at, fills=fills,
    )  # fmt: skip


def _bps(v: Decimal | None) -> Decimal | None:
    return None if v is None else v.quantize(BPS_EXP, ROUND_HALF_EVEN)


def _view(stats: QualityStats, currency: str, money: Callable[[Decimal, str], Decimal]) -> QualityFigures:
    return QualityFigures(
        orders=stats.orders,
        avg_slippage_bps=_bps(stats.avg_slippage_bps),
        p95_slippage_bps=_bps(stats.p95_slippage_bps),
        fill_ratio=None if stats.fill_ratio is None else stats.fill_ratio.quantize(RATIO_EXP, ROUND_HALF_EVEN),
        avg_time_to_fill_ms=stats.avg_time_to_fill_ms,
        fees=money(stats.fees, currency),
        fees_currency=currency,
    )


def report(
    rows: Iterable[QualityRow],
    base: str,
    rate: Callable[[str], Decimal | None],
    money: Callable[[Decimal, str], Decimal] = lambda amount, currency: amount,
) -> ExecutionQuality:
    """The figures of ``rows`` by pair, by venue, by type and overall (``aggregate``). ``rate(currency)``: units of
    ``base`` per unit of ``currency`` now (None: cannot be converted); ``money(amount, currency)``: how an amount
    leaves (rounded to its currency's precision)."""
    rows = list(rows)
    rates: dict[str, Decimal | None] = {}
    unconverted: set[str] = set()
    # each row's figures with its fees and filled notional in ``base`` (0: not convertible, out of the sums)
    converted: list[OrderQuality] = []
    for r in rows:
        unconverted |= r.unpriced()
        quote = pair_currencies(r.pair)[1]
        if quote not in rates:
            rates[quote] = ONE if quote == base else rate(quote)
        k = rates[quote]
        if k is None:
            unconverted.add(quote)
        q = r.quality
        if k is None:  # its fees and its weight stay out of the sums across pairs (its quote listed in unconverted)
            converted.append(dataclasses.replace(q, fees=ZERO, filled_notional=ZERO))
        elif k != ONE:  # fees and the notional that weighs its slippage, in ``base``: pairs weigh by value
            converted.append(dataclasses.replace(q, fees=q.fees * k, filled_notional=q.filled_notional * k))
        else:
            converted.append(q)

    def group(key: Callable[[QualityRow], str]) -> dict[str, QualityFigures]:
        members: dict[str, list[OrderQuality]] = {}
        for r, q in zip(rows, converted, strict=True):
            members.setdefault(key(r), []).append(q)
        return {k: _view(aggregate(qs), base, money) for k, qs in sorted(members.items())}

    by_pair: dict[str, QualityFigures] = {}
    pairs: dict[str, list[OrderQuality]] = {}
    for r, q in zip(rows, converted, strict=True):
        quote = pair_currencies(r.pair)[1]
        pairs.setdefault(r.pair, []).append(q if rates[quote] is not None else r.quality)
    for pair, qs in sorted(pairs.items()):
        quote = pair_currencies(pair)[1]
        by_pair[pair] = _view(aggregate(qs), base if rates[quote] is not None else quote, money)
    return ExecutionQuality(
        by_pair=by_pair,
        by_exchange=group(lambda r: r.exchange),
        by_type=group(lambda r: r.type),
        overall=_view(aggregate(converted), base, money),
        currency=base,
        unconverted=sorted(unconverted),
    )
