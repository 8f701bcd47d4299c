"""Execution quality: what an order cost against the price when it was asked. Pure, Decimal, hand-checkable.

Formulas (bps = basis points, 1/10000; positive is always worse for the trader):

- slippage of a price p against a reference r: buy 10000 x (p - r) / r, sell 10000 x (r - p) / r;
- an order's average price is its filled notional / filled quantity (notional = sum of quantity x price);
- slippage vs arrival: of the average price against the arrival mid (the mid when the order was accepted); fees
  excluded;
- slippage vs touch (implementation shortfall against the price one could have taken at once): of the average
  price against the touch at acceptance - the ask for a buy, the bid for a sell (``touch_of``);
- fees in bps: 10000 x fees (in the quote currency) / filled notional; total cost = slippage vs arrival + fees bps;
- fill ratio: filled quantity / ordered quantity (an overfill shows above 1); time to fill: created -> last fill ms.

A figure that needs what is not known is None, never a guess: no book at acceptance (arrival mid or touch None) ->
the slippage against it is None; nothing filled -> average price, slippages, fees bps and time to fill None; a fee
in a currency that is neither the pair's base nor its quote (``fee_in_quote`` None) -> left out of ``fees`` and
counted in ``unpriced_fees``, and fees bps / total cost None.

``aggregate`` sums orders into the figures ``GET /api/execution/quality`` answers (``QualityStats``, its fields'
definitions there).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

ZERO = Decimal(0)
BPS = Decimal(10000)
P95 = Decimal("0.95")

Side = Literal["buy", "sell"]
QuoteFill = tuple[Decimal, Decimal, Decimal | None, int]  # (quantity, price, fee in quote | None, ts ms)


def _side(side: str) -> Side:
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    return side  # type: ignore[return-value]


def slippage_bps(side: str, reference: Decimal, price: Decimal) -> Decimal:
    """10000 x (price - reference) / reference for a buy, the opposite for a sell: positive = worse for the trader."""
    s = _side(side)
    if not reference.is_finite() or reference <= 0:
        raise ValueError(f"reference price must be > 0, got {reference}")
    diff = price - reference if s == "buy" else reference - price
    return BPS * diff / reference


def touch_of(side: str, bid: Decimal | None, ask: Decimal | None) -> Decimal | None:
    """The touch an order of ``side`` faces: the ask for a buy, the bid for a sell (None: that side was empty)."""
    return ask if _side(side) == "buy" else bid


def fee_in_quote(fee: Decimal, fee_currency: str, pair: str, price: Decimal) -> Decimal | None:
    """A fee in the quote currency of ``pair`` (``BASE_QUOTE``): as is in the quote, x price in the base, else None."""
    base, sep, quote = pair.upper().partition("_")
    if not sep or not base or not quote:
        raise ValueError(f"pair must be BASE_QUOTE, got {pair!r}")
    currency = fee_currency.upper()
    if currency == quote:
        return fee
    if currency == base:
        return fee * price
    return None


def _bps_or_none(side: Side, reference: Decimal | None, price: Decimal | None) -> Decimal | None:
    if reference is None or price is None:
        return None
    return slippage_bps(side, reference, price)


@dataclass(frozen=True, slots=True)
class FillQuality:
    """One fill's figures: slippage vs arrival and vs touch, its fee in bps of its notional, and their total."""

    slippage_bps: Decimal | None
    touch_slippage_bps: Decimal | None
    fee_bps: Decimal | None
    cost_bps: Decimal | None


def fill_slippage(
    side: str,
    quantity: Decimal,
    price: Decimal,
    fee: Decimal | None,
    arrival_mid: Decimal | None,
    touch: Decimal | None,
) -> FillQuality:
    """One fill of ``quantity`` at ``price`` with ``fee`` (in quote, None unknown) against the order's references."""
    s = _side(side)
    if quantity <= 0 or price <= 0:
        raise ValueError(f"a fill needs quantity > 0 and price > 0, got {quantity} @ {price}")
    slip = _bps_or_none(s, arrival_mid, price)
    fee_bps = None if fee is None else BPS * fee / (quantity * price)
    return FillQuality(
        slippage_bps=slip,
        touch_slippage_bps=_bps_or_none(s, touch, price),
        fee_bps=fee_bps,
        cost_bps=None if slip is None or fee_bps is None else slip + fee_bps,
    )


@dataclass(frozen=True, slots=True)
class OrderQuality:
    """One order's execution quality (formulas in the module docstring)."""

    side: Side
    quantity: Decimal
    arrival_mid: Decimal | None
    touch: Decimal | None
    filled_quantity: Decimal
    filled_notional: Decimal
    average_price: Decimal | None
    slippage_bps: Decimal | None  # vs arrival, fees excluded
    touch_slippage_bps: Decimal | None  # vs touch: implementation shortfall
    fees: Decimal  # in the quote currency, the fills whose fee could be converted
    unpriced_fees: int  # fills whose fee is in a currency that is neither base nor quote (not in ``fees``)
    fees_bps: Decimal | None
    cost_bps: Decimal | None  # slippage vs arrival + fees bps
    fill_ratio: Decimal
    time_to_fill_ms: int | None


def order_quality(
    side: str,
    quantity: Decimal,
    arrival_mid: Decimal | None,
    touch: Decimal | None,
    fills: Iterable[QuoteFill],
    *,
    created_ms: int,
) -> OrderQuality:
    """An order's figures from its fills (quantity, price, fee in quote | None, ts ms)."""
    s = _side(side)
    if not quantity.is_finite() or quantity <= 0:
        raise ValueError(f"quantity must be > 0, got {quantity}")
    filled = notional = fees = ZERO
    unpriced = 0
    last: int | None = None
    for qty, price, fee, ts in fills:
        if not qty.is_finite() or qty <= 0 or not price.is_finite() or price <= 0:
            raise ValueError(f"a fill needs quantity > 0 and price > 0, got {qty} @ {price}")
        filled += qty
        notional += qty * price
        if fee is None:
            unpriced += 1
        else:
            fees += fee
        last = ts if last is None else max(last, ts)
    average = notional / filled if filled else None
    slip = _bps_or_none(s, arrival_mid, average)
    fees_bps = BPS * fees / notional if notional and not unpriced else None
    return OrderQuality(
        side=s,
        quantity=quantity,
        arrival_mid=arrival_mid,
        touch=touch,
        filled_quantity=filled,
        filled_notional=notional,
        average_price=average,
        slippage_bps=slip,
        touch_slippage_bps=_bps_or_none(s, touch, average),
        fees=fees,
        unpriced_fees=unpriced,
        fees_bps=fees_bps,
        cost_bps=None if slip is None or fees_bps is None else slip + fees_bps,
        fill_ratio=filled / quantity,
        time_to_fill_ms=None if last is None else last - created_ms,
    )


def nearest_rank(values: Sequence[Decimal], fraction: Decimal) -> Decimal | None:
    """The nearest-rank percentile: the ceil(fraction x n)-th smallest value (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class QualityStats:
    """A group of orders' execution quality, the fields of ``GET /api/execution/quality`` (``as_json``).

    - ``orders``: how many orders;
    - ``avg_slippage_bps``: notional-weighted mean of slippage vs arrival over the orders with fills and an
      arrival mid: sum(slippage x filled notional) / sum(filled notional); None if there is none (rows of several
      quote currencies: the caller converts their notionals into one currency first, see quality_book.report);
    - ``p95_slippage_bps``: the nearest-rank 95th percentile of slippage vs arrival over those orders
      (the ceil(0.95 n)-th smallest); None if there is none;
    - ``fill_ratio``: the mean over all orders of each order's filled quantity / ordered quantity (a ratio per
      order, so pairs with different units and prices weigh the same; no arrival price needed); None without
      orders;
    - ``avg_time_to_fill_ms``: mean created -> last fill over the orders with fills, rounded half-even to a whole
      ms; None if none filled;
    - ``fees``: the sum of the orders' ``fees`` (in the one currency the caller converted them to; fees in an
      unknown currency are not in it - the orders' ``unpriced_fees`` count them).
    """

    orders: int
    avg_slippage_bps: Decimal | None
    p95_slippage_bps: Decimal | None
    fill_ratio: Decimal | None
    avg_time_to_fill_ms: int | None
    fees: Decimal

    def as_json(self) -> dict[str, object]:
        return {
            "orders": self.orders,
            "avgSlippageBps": self.avg_slippage_bps,
            "p95SlippageBps": self.p95_slippage_bps,
            "fillRatio": self.fill_ratio,
            "avgTimeToFillMs": self.avg_time_to_fill_ms,
            "fees": self.fees,
        }


def aggregate(rows: Iterable[OrderQuality]) -> QualityStats:
    """The ``QualityStats`` of ``rows`` (definitions in its docstring)."""
    orders = 0
    ratios = ZERO
    weighted = notional = fees = ZERO
    slips: list[Decimal] = []
    times: list[int] = []
    for row in rows:
        orders += 1
        ratios += row.fill_ratio
        fees += row.fees
        if row.slippage_bps is not None:
            slips.append(row.slippage_bps)
            weighted += row.slippage_bps * row.filled_notional
            notional += row.filled_notional
        if row.time_to_fill_ms is not None:
            times.append(row.time_to_fill_ms)
    avg_time = int((Decimal(sum(times)) / len(times)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)) if times else None
    return QualityStats(
        orders=orders,
        avg_slippage_bps=weighted / notional if notional else None,
        p95_slippage_bps=nearest_rank(slips, P95),
        fill_ratio=ratios / orders if orders else None,
        avg_time_to_fill_ms=avg_time,
        fees=fees,
    )
