"""Order book walking: how a taker order consumes the levels of an L2 book. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

ZERO = Decimal(0)

Level = tuple[Decimal, Decimal]


def walk_book(
    levels: Sequence[Level], quantity: Decimal, limit: Decimal | None = None, *, is_buy: bool = True
) -> tuple[list[Level], Decimal]:
    """Take ``quantity`` from ``levels`` (best first). Returns the (price, qty) slices and what is left.

    ``limit`` stops at the first level worse than the limit price (above it for a buy, below for a sell).
    """
    if quantity <= ZERO:
        raise ValueError("quantity must be positive")
    slices: list[Level] = []
    left = quantity
    for price, size in levels:
        if left <= ZERO:
            break
        if limit is not None and (price > limit if is_buy else price < limit):
            break
        if size <= ZERO:
            continue
        take = size if size < left else left
        slices.append((price, take))
        left -= take
    return slices, left


def vwap(slices: Sequence[Level]) -> Decimal | None:
    qty = sum((q for _, q in slices), ZERO)
    if qty == ZERO:
        return None
    return sum((p * q for p, q in slices), ZERO) / qty


def mid_price(bids: Sequence[Level], asks: Sequence[Level]) -> Decimal | None:
    if bids and asks:
        return (bids[0][0] + asks[0][0]) / 2
    if bids:
        return bids[0][0]
    if asks:
        return asks[0][0]
    return None


def book_problem(bids: Sequence[Level], asks: Sequence[Level]) -> str | None:
    """Why a book cannot be used (None when it can): prices and sizes finite and positive, bids strictly
    descending, asks strictly ascending, best bid below best ask."""
    for side, levels in (("bids", bids), ("asks", asks)):
        for i, (price, size) in enumerate(levels):
            if not (price.is_finite() and size.is_finite()) or price <= ZERO or size <= ZERO:
                return f"{side}[{i}] must have a positive finite price and size, got [{price}, {size}]"
            if i and (price >= levels[i - 1][0] if side == "bids" else price <= levels[i - 1][0]):
                order = "descending" if side == "bids" else "ascending"
                return f"{side} must be strictly {order} (best first): {side}[{i}] = {price}"
    if bids and asks and bids[0][0] >= asks[0][0]:
        return f"crossed book: best bid {bids[0][0]} >= best ask {asks[0][0]}"
    return None
