"""Routing decision (interim, replaced by the routing part's module at merge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Candidate:
    venue: str
    priority: int
    levels: list[tuple[Decimal, Decimal]] | None
    taker_fee: Decimal | None
    up: bool
    lists_pair: bool
    excluded: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    venue: str | None
    reason: str
    fallback: list[str] = field(default_factory=list)


def _expected(levels: list[tuple[Decimal, Decimal]], qty: Decimal) -> Decimal | None:
    left, cost = qty, ZERO
    for price, size in levels:
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= ZERO:
            return cost / qty
    return None


def decide(
    side: str, quantity: Decimal, limit: Decimal | None, policy: str, candidates: list[Candidate], pair: str
) -> Decision:
    priced: list[tuple[Decimal, int, str]] = []
    unpriced: list[tuple[int, str]] = []
    notes = []
    for c in candidates:
        if c.excluded or not c.up or not c.lists_pair:
            notes.append(f"{c.venue} {c.excluded or ('down' if not c.up else 'lacks the pair')}")
            continue
        avg = _expected(c.levels, quantity) if c.levels else None
        if avg is None:
            unpriced.append((c.priority, c.venue))
            notes.append(f"{c.venue} no book")
            continue
        fee = c.taker_fee or ZERO
        px = avg * (1 + fee) if side == "buy" else avg * (1 - fee)
        priced.append((px if side == "buy" else -px, c.priority, c.venue))
        notes.append(f"{c.venue} {px:.8f}")
    if policy == "priority":
        order = sorted([(p, v) for _, p, v in priced] + unpriced)
        ranked = [v for _, v in order]
    else:
        ranked = [v for _, _, v in sorted(priced)] + [v for _, v in sorted(unpriced)]
    if not ranked:
        return Decision(None, f"{policy} {side} {quantity} {pair}: no venue can take it ({'; '.join(notes)})")
    return Decision(ranked[0], f"{policy} {side} {quantity} {pair}: {', '.join(notes)} -> {ranked[0]}", ranked[1:])
