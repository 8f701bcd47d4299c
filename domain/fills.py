"""Fill accounting per order: dedupe by venue trade id, overfill guard, running totals. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)


class Overfill(ValueError):
    """A fill would take the order beyond its quantity."""


@dataclass(slots=True)
class OrderFills:
    order_quantity: Decimal
    trade_ids: set[str] = field(default_factory=set)
    filled: Decimal = ZERO
    cost: Decimal = ZERO  # sum of qty * price
    fees: Decimal = ZERO

    @property
    def average_price(self) -> Decimal | None:
        return self.cost / self.filled if self.filled else None

    @property
    def complete(self) -> bool:
        return self.filled >= self.order_quantity

    def add(self, trade_id: str, qty: Decimal, price: Decimal, fee: Decimal) -> bool:
        """Count a trade. False if this trade id was already counted; Overfill if it would overfill."""
        if trade_id in self.trade_ids:
            return False
        if qty <= ZERO or price <= ZERO:
            raise ValueError("trade quantity and price must be positive")
        if self.filled + qty > self.order_quantity:
            raise Overfill(
                f"trade {trade_id} of {qty} would fill {self.filled + qty} of an order for {self.order_quantity}"
            )
        self.trade_ids.add(trade_id)
        self.filled += qty
        self.cost += qty * price
        self.fees += fee
        return True
