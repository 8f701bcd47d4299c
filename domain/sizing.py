"""Position sizing for signals. Pure."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

ZERO = Decimal(0)
QTY_STEP = Decimal("0.00000001")
DEFAULT_RISK_FRACTION = Decimal("0.02")


def fixed_notional(
    equity: Decimal, fraction: Decimal, price: Decimal, step: Decimal = QTY_STEP
) -> tuple[Decimal, Decimal]:
    """Spend ``fraction`` of ``equity`` at ``price``: (quantity rounded down to the amount ``step``,
    amount at risk)."""
    if price <= ZERO:
        raise ValueError("price must be positive")
    amount = equity * fraction
    qty = (amount / price).quantize(QTY_STEP, rounding=ROUND_DOWN)
    if step != QTY_STEP and step > ZERO:
        qty = (qty // step) * step
    return qty, qty * price
