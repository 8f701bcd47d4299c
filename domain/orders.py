"""The order state machine: an explicit transition table, fill application, and what an order's state
says (working, held here, at the venue). Pure.

Real-world transitions are allowed on purpose: a fill that arrives after a cancel was requested or done
is applied (CANCELED / PENDING_CANCEL -> PARTIALLY_FILLED / FILLED); a rejected cancel or modify
returns the order to its previous state (the caller passes that state back in).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from domain.triggers import TRIGGERED_TYPES
from schemas.messages import ALGO_TYPES, TERMINAL_STATUSES, FillRef, Order, OrderRequest, OrderStatus

S = OrderStatus
ZERO = Decimal(0)
WORKING = frozenset({S.SUBMITTED, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_UPDATE, S.PENDING_CANCEL})

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.INITIALIZED: frozenset({S.DENIED, S.SUBMITTED, S.REJECTED, S.CANCELED, S.EXPIRED, S.TRIGGERED}),
    S.SUBMITTED: frozenset(
        {S.ACCEPTED, S.REJECTED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL, S.PARTIALLY_FILLED, S.FILLED}
    ),
    S.ACCEPTED: frozenset(
        {
            S.TRIGGERED,
            S.PENDING_UPDATE,
            S.PENDING_CANCEL,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.CANCELED,
            S.EXPIRED,
            S.REJECTED,
        }
    ),
    S.TRIGGERED: frozenset(
        {S.PENDING_UPDATE, S.PENDING_CANCEL, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
    ),
    S.PENDING_UPDATE: frozenset(
        {S.ACCEPTED, S.TRIGGERED, S.PENDING_CANCEL, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}
    ),
    S.PENDING_CANCEL: frozenset(
        {S.CANCELED, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED, S.REJECTED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_UPDATE, S.PENDING_CANCEL, S.CANCELED, S.EXPIRED}
    ),
    # terminal states: only a late fill may still arrive after a cancel / expiry
    S.CANCELED: frozenset({S.PARTIALLY_FILLED, S.FILLED}),
    S.EXPIRED: frozenset({S.PARTIALLY_FILLED, S.FILLED}),
    S.FILLED: frozenset(),
    S.REJECTED: frozenset(),
    S.DENIED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new in TRANSITIONS[current]


def transition(order: Order, new: OrderStatus, ts: int, reason: str | None = None) -> Order:
    """The order in state ``new``; raises IllegalTransition if the table forbids it."""
    if not can_transition(order.status, new):
        raise IllegalTransition(f"{order.order_id}: {order.status.value} -> {new.value} is not allowed")
    changes: dict[str, object] = {"status": new, "updated_at": ts}
    if reason is not None:
        changes["reason"] = reason
    if new in TERMINAL_STATUSES and order.closed_at is None:
        changes["closed_at"] = ts
    return msgspec.structs.replace(order, **changes)


UNKNOWN_TO_VENUE = "unknown to the venue:"  # how the reason of an order rejected for want of an answer starts


def revivable(order: Order) -> bool:
    """Rejected because a live venue did not know it after its send went unanswered (never answered since)."""
    return (
        order.status is S.REJECTED and order.venue_status is None and (order.reason or "").startswith(UNKNOWN_TO_VENUE)
    )


def revive(order: Order, ts: int) -> Order:
    """A ``revivable`` order the venue shows after all (its send did reach it): working again, ACCEPTED, so
    its answer and fills are applied. Nothing else leaves a terminal state this way."""
    if not revivable(order):
        raise IllegalTransition(f"{order.order_id}: {order.status.value} cannot be revived")
    why = "the venue showed it after it was rejected as unknown: working again"
    return msgspec.structs.replace(order, status=S.ACCEPTED, closed_at=None, updated_at=ts, reason=why)


class Overfilled(ValueError):
    """A fill would take an order past its quantity."""


def apply_fill(order: Order, fill: FillRef) -> Order:
    """The order after one of its fills: running quantity, cost, average price and fees.

    A fill already listed (same fill id) changes nothing (the same object is returned). Status moves to
    PARTIALLY_FILLED or FILLED, also from CANCELED / EXPIRED: a late fill is applied; the router moves an
    order the venue canceled or expired back to that final state once the fills the venue reported are
    all in. A fill beyond the order's quantity raises Overfilled.
    """
    if any(f.fill_id == fill.fill_id for f in order.fills):
        return order
    filled = order.filled_quantity + fill.quantity
    if filled > order.quantity:
        raise Overfilled(f"{order.order_id}: fill {fill.fill_id} would fill {filled} of {order.quantity}")
    new_status = S.FILLED if filled == order.quantity else S.PARTIALLY_FILLED
    if not can_transition(order.status, new_status):
        raise IllegalTransition(f"{order.order_id}: fill in state {order.status.value}")
    total_cost = order.total_cost + fill.quantity * fill.price
    closed = new_status is S.FILLED
    return msgspec.structs.replace(
        order,
        status=new_status,
        filled_quantity=filled,
        average_price=total_cost / filled,
        total_cost=total_cost,
        fees=order.fees + fill.fee,
        fee_currency=fill.fee_currency,
        fills=[*order.fills, fill],
        updated_at=fill.timestamp,
        closed_at=fill.timestamp if closed else order.closed_at,
        execution_time=(fill.timestamp - order.created_at) if closed else order.execution_time,
    )


def to_pending(order: Order, pending: OrderStatus, ts: int, reason: str | None = None) -> Order:
    """Into PENDING_CANCEL / PENDING_UPDATE, remembering where to go back if the venue says no (a cancel
    asked while a modify is pending goes back to where the order was before the modify)."""
    back = order.previous_status if order.status in (S.PENDING_CANCEL, S.PENDING_UPDATE) else order.status
    return msgspec.structs.replace(transition(order, pending, ts, reason), previous_status=back)


def back_from_pending(order: Order, ts: int, reason: str | None = None) -> Order:
    """A refused cancel or modify: the order returns to its previous state (PARTIALLY_FILLED if it has
    fills by now). Orders not pending are returned unchanged."""
    if order.status not in (S.PENDING_CANCEL, S.PENDING_UPDATE):
        return order
    back = order.previous_status or S.ACCEPTED
    if back in (S.SUBMITTED, S.INITIALIZED):  # it was in flight then; the venue has it now
        back = S.ACCEPTED
    if order.filled_quantity and back in (S.ACCEPTED, S.TRIGGERED):
        back = S.PARTIALLY_FILLED
    return msgspec.structs.replace(transition(order, back, ts, reason), previous_status=None)


def trigger(order: Order, ts: int) -> Order:
    """A working stop or take-profit whose trigger price was reached (unchanged if it is not waiting)."""
    if order.status is not S.ACCEPTED or order.triggered_at is not None:
        return order
    return msgspec.structs.replace(transition(order, S.TRIGGERED, ts), triggered_at=ts)


def same_order(o: Order, r: OrderRequest) -> bool:
    """Does a repeated client order id carry the same order? ``o`` is the order as first created."""
    price = r.price if r.type != "market" else None
    tif = r.time_in_force or o.time_in_force
    mine = (o.pair, o.side, o.type, o.quantity, o.price, o.stop_price, o.time_in_force, o.expire_at)
    theirs = (r.pair, r.side, r.type, r.quantity, price, r.stop_price, tif, r.expire_at)
    if mine != theirs or (o.post_only, o.reduce_only) != (r.post_only, r.reduce_only):
        return False
    asked = r.algo
    if asked is not None and asked.seed is None and o.algo is not None:  # the parent stores the seed it derived
        asked = msgspec.structs.replace(asked, seed=o.algo.seed)
    return asked == o.algo


def at_venue(o: Order) -> bool:
    """Is the order (also) held by the venue, so that a cancel or modify must go there?"""
    return o.venue_status == "open"


def held_here(o: Order) -> bool:
    """A stop / take-profit not triggered yet (and not held by the venue), a bracket leg waiting for its entry, or an
    algorithm's parent order (never sent anywhere itself: its children are)."""
    return (
        o.status is S.INITIALIZED
        or o.type in ALGO_TYPES
        or (o.type in TRIGGERED_TYPES and o.triggered_at is None and not o.native_trigger)
    )


def opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


def with_venue_answer(
    cur: Order,
    status: str,
    filled: Decimal,
    venue_order_id: str,
    quantity: Decimal | None,
    price: Decimal | None,
    reason: str | None,
    ts: int,
    edit_answer: bool = False,
) -> Order:
    """The order after the venue said ``status`` with ``filled`` executed (an answer, an update, a lookup): the
    same object when nothing is new. A rejection ends it; canceled / expired end it once its fills are all in
    (else the last fill ends it); a first answer accepts it; an edit's answer ends PENDING_UPDATE. A revivable
    order the venue shows after all works again; an order already ended here only records what the venue says
    (a cancel confirmed at the venue after it was canceled here, say)."""
    if revivable(cur) and status != "rejected":
        cur = revive(cur, ts)
    quantity = quantity if quantity is not None else cur.quantity
    price = price if price is not None and cur.type != "market" else cur.price
    same = (cur.venue_status, cur.venue_filled, cur.quantity, cur.price) == (status, filled, quantity, price)
    if same and cur.status is not S.SUBMITTED and not (edit_answer and cur.status is S.PENDING_UPDATE):
        return cur  # nothing new
    new = msgspec.structs.replace(
        cur, venue_order_id=venue_order_id, venue_status=status, venue_filled=filled, updated_at=ts,
        quantity=quantity, price=price,
    )  # fmt: skip
    if cur.status in TERMINAL_STATUSES:
        return new  # ended here already: what the venue says is recorded, fills still come by the fill path
    if status == "rejected":
        return transition(new, S.REJECTED, ts, reason)
    if status in ("canceled", "expired"):
        why = cur.reason if cur.status is S.PENDING_CANCEL else (reason or cur.reason)
        if cur.filled_quantity >= filled:  # the venue's trades are all in: nothing more to wait for
            final = S.EXPIRED if status == "expired" or cur.reason == "expired" else S.CANCELED
            return transition(new, final, ts, why)
        return msgspec.structs.replace(new, reason=why)  # the fill handler ends it with the last fill
    if cur.status is S.SUBMITTED:
        return transition(new, S.ACCEPTED, ts, reason)
    if cur.status is S.PENDING_UPDATE and edit_answer:
        return back_from_pending(new, ts)  # the modify is done: quantity and price are the venue's
    return new
