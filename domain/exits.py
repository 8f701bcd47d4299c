"""Reduce-only exits kept true as the position moves. Pure.

Spot venues know no reduce-only of their own, so the service is the only guard against an exit that
sells more than is held (or buys more than is short). The order-router keeps the pair's net position
(every fill on FILLS, the same fold as the ledger's quantity) and asks :func:`fit_exits` how much of
each working reduce-only order may still execute:

- **Sent** exits (triggered, at the venue or on their way: a market or limit reduce-only order, a stop
  once it fired) reduce the position one after the other, oldest first: together they never add up to
  more than the position. A new one is cut at send time to what the ones ahead of it leave, and canceled
  when nothing is left; when the position shrinks under them, the newest give way first.
- **Waiting** bracket legs (a stop-loss or take-profit of a bracket, not triggered yet) are alternatives
  to each other within a bracket (one-cancels-other), but the brackets of one pair protect one position:
  the stop-loss legs together never cover more than the position less what sent exits will already
  take, nor do the take-profit legs; the oldest bracket keeps its size, newer ones are cut (or canceled
  when nothing is left). A waiting leg whose sibling is already executing is left alone: it is that
  sibling's alternative and shrinks as it fills.
- Other waiting reduce-only orders (a stop the trader placed with ``reduceOnly``) keep their size while
  they wait and are cut when they trigger (they are sent then).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from domain.recent import RecentIds
from schemas.messages import Order
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
REDUCE_ONLY_WHY = "reduce-only:"  # how the reasons of cuts and cancels for want of a position start

Kind = Literal["sent", "stop", "take_profit", "waiting"]


def position_change(side: str, quantity: Decimal, fee: Decimal, fee_currency: str, base: str) -> Decimal:
    """The signed change a fill makes to its pair's net position: its quantity, less a fee paid in the
    base asset (those units leave the position, as the ledger books them)."""
    signed = quantity if side == "buy" else -quantity
    if fee_currency == base and fee > ZERO:
        signed -= fee
    return signed


def nothing_to_reduce(o: Order) -> str:
    """The reason an exit is canceled (or cut to nothing) when its pair has no position left to reduce."""
    held = "long" if o.side == "sell" else "short"
    return f"{REDUCE_ONLY_WHY} no {held} {o.pair} position left to reduce"


def reducible(position: Decimal, side: str) -> Decimal:
    """How much a reduce-only order of ``side`` could reduce: a sell reduces a long, a buy a short."""
    return max(position, ZERO) if side == "sell" else max(-position, ZERO)


def floor_step(quantity: Decimal, step: Decimal | None) -> Decimal:
    """``quantity`` rounded down to a multiple of the amount step (never below zero)."""
    if quantity <= ZERO:
        return ZERO
    if not step or step <= ZERO:
        return quantity
    return (quantity // step) * step


@dataclass(frozen=True, slots=True)
class Exit:
    """A working reduce-only order as the planner sees it.

    ``wanted``: what is left of it to execute if the position allowed all of it (for a bracket leg: what
    its entry filled less what its bracket already exited). ``kind``: ``sent``, or for a waiting order
    ``stop`` / ``take_profit`` (bracket legs, fitted together) or ``waiting`` (left alone until sent).
    ``rank``: older first (sent exits by the time they were sent). ``sibling_sent``: a waiting bracket leg
    whose other leg is executing (left alone)."""

    order_id: str
    side: str
    wanted: Decimal
    kind: Kind
    rank: tuple[int | str, ...]
    sibling_sent: bool = False


def fit_exits(position: Decimal, exits: Iterable[Exit], step: Decimal | None = None) -> dict[str, Decimal]:
    """How much of each exit may still execute (its allowed remaining, <= ``wanted``, on the step).

    Orders of kind ``waiting`` and legs whose sibling is executing get their ``wanted`` back unchanged
    (they are not fitted now); every other figure keeps the rules of the module docstring."""
    out: dict[str, Decimal] = {}
    by_side: dict[str, list[Exit]] = {}
    for e in exits:
        by_side.setdefault(e.side, []).append(e)
    for side, group in by_side.items():
        budget = reducible(position, side)
        for e in sorted((e for e in group if e.kind == "sent"), key=lambda e: e.rank):
            allowed = min(e.wanted, budget) if e.wanted <= budget else floor_step(budget, step)
            out[e.order_id] = max(allowed, ZERO)
            budget -= out[e.order_id]
        left = {"stop": budget, "take_profit": budget}
        for e in sorted((e for e in group if e.kind != "sent"), key=lambda e: e.rank):
            if e.kind == "waiting" or e.sibling_sent:
                out[e.order_id] = e.wanted
                continue
            room = left[e.kind]
            allowed = e.wanted if e.wanted <= room else floor_step(room, step)
            out[e.order_id] = max(allowed, ZERO)
            left[e.kind] = room - out[e.order_id]
    return out


def bookable(pair: str, quantity: Decimal, price: Decimal, fee: Decimal, fee_currency: str) -> bool:
    """Would the ledger book this fill (domain.ledger.Ledger.apply_fill's checks)? A fill it refuses moves
    no position."""
    base, quote = pair_currencies(pair)
    if not (base and quote and quantity.is_finite() and price.is_finite() and fee.is_finite()):
        return False
    if quantity <= ZERO or price <= ZERO:
        return False
    if fee == ZERO:
        return True
    return fee_currency == quote or (fee_currency == base and fee > ZERO)


class NetPositions:
    """The net position of every pair, folded from fills (each fill id once, within the last ``window``
    fills, as the ledger books them)."""

    __slots__ = ("positions", "seen")

    def __init__(self, window: int) -> None:
        self.positions: dict[str, Decimal] = {}
        self.seen = RecentIds(window)

    def get(self, pair: str) -> Decimal:
        return self.positions.get(pair, ZERO)

    def apply(
        self,
        fill_id: str,
        pair: str,
        side: str,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal,
        fee_currency: str,
        key: str | None = None,
    ) -> bool:
        """Fold one fill into the position of ``key`` (default: the pair; several venues: the venue's pair);
        False when it was seen before or is not a fill the ledger would book."""
        if fill_id in self.seen or not bookable(pair, quantity, price, fee, fee_currency):
            return False
        self.seen.add(fill_id)
        base = pair_currencies(pair)[0]
        key = key or pair
        self.positions[key] = self.get(key) + position_change(side, quantity, fee, fee_currency, base)
        return True
