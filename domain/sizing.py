"""Position sizing. Pure; every method returns the quantity (rounded down to the amount step, never
up) and the amount at risk, and each formula is written out here.

- fixed quantity:   q = the given quantity;                          at risk = q x price
- fixed notional:   q = equity x fraction / price;                   at risk = q x price
- fixed fractional: q = equity x risk fraction / |entry - stop|;     at risk = q x |entry - stop|
  (lose exactly that fraction of equity if the stop is hit)
- Kelly:            f* = p - (1 - p) / b, with p the win probability (the signal's confidence) and b the
                    observed average win / average loss; f = min(cap, kelly_fraction x max(f*, 0));
                    q = equity x f / price;                          at risk = q x |price - stop| with a
                    stop, else q x price
- volatility scaled: the stop distance is k x sigma x price, sigma the standard deviation of recent
                    returns; q = equity x risk fraction / (k x sigma x price); at risk = q x k x sigma x price
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from itertools import pairwise

ZERO = Decimal(0)
ONE = Decimal(1)
QTY_STEP = Decimal("0.00000001")
DEFAULT_RISK_FRACTION = Decimal("0.02")
DEFAULT_KELLY_FRACTION = Decimal("0.5")
DEFAULT_KELLY_CAP = Decimal("0.25")
DEFAULT_VOL_MULTIPLE = Decimal(2)


class SizingError(ValueError):
    """The inputs cannot size a position (named reason)."""


@dataclass(frozen=True, slots=True)
class Sizing:
    quantity: Decimal
    risk_amount: Decimal
    method: str


def round_down(qty: Decimal, step: Decimal = QTY_STEP) -> Decimal:
    q = qty.quantize(QTY_STEP, rounding=ROUND_DOWN) if step == QTY_STEP else qty
    return (q // step) * step if step > ZERO else q


def _positive(**values: Decimal) -> None:
    for name, v in values.items():
        if not v.is_finite() or v <= ZERO:
            raise SizingError(f"{name} must be a positive number, got {v}")


def fixed_quantity(quantity: Decimal, price: Decimal, step: Decimal = QTY_STEP) -> Sizing:
    _positive(quantity=quantity, price=price)
    q = round_down(quantity, step)
    return Sizing(q, q * price, "fixed_quantity")


def fixed_notional(
    equity: Decimal, fraction: Decimal, price: Decimal, step: Decimal = QTY_STEP
) -> tuple[Decimal, Decimal]:
    """Spend ``fraction`` of ``equity`` at ``price``: (quantity rounded down to the amount ``step``,
    amount at risk)."""
    if price <= ZERO:
        raise ValueError("price must be positive")
    qty = round_down(equity * fraction / price, step)
    return qty, qty * price


def fixed_notional_sizing(equity: Decimal, fraction: Decimal, price: Decimal, step: Decimal = QTY_STEP) -> Sizing:
    _positive(equity=equity, fraction=fraction, price=price)
    q, risk = fixed_notional(equity, fraction, price, step)
    return Sizing(q, risk, "fixed_notional")


def fixed_fractional(
    equity: Decimal, risk_fraction: Decimal, entry: Decimal, stop: Decimal, step: Decimal = QTY_STEP
) -> Sizing:
    _positive(equity=equity, risk_fraction=risk_fraction, entry=entry, stop=stop)
    distance = abs(entry - stop)
    if distance == ZERO:
        raise SizingError("the stop must differ from the entry")
    q = round_down(equity * risk_fraction / distance, step)
    return Sizing(q, q * distance, "fixed_fractional")


def kelly_fraction(p: Decimal, b: Decimal) -> Decimal:
    """The Kelly fraction f* = p - (1 - p) / b (may be negative: no edge)."""
    if not ZERO <= p <= ONE:
        raise SizingError(f"the win probability must be within 0..1, got {p}")
    _positive(win_loss_ratio=b)
    return p - (ONE - p) / b


def kelly(
    equity: Decimal,
    confidence: Decimal,
    win_loss_ratio: Decimal,
    price: Decimal,
    step: Decimal = QTY_STEP,
    *,
    fraction: Decimal = DEFAULT_KELLY_FRACTION,
    cap: Decimal = DEFAULT_KELLY_CAP,
    stop: Decimal | None = None,
) -> Sizing:
    _positive(equity=equity, price=price)
    f = min(cap, fraction * max(kelly_fraction(confidence, win_loss_ratio), ZERO))
    q = round_down(equity * f / price, step)
    risk = q * abs(price - stop) if stop is not None else q * price
    return Sizing(q, risk, "kelly_criterion")


def volatility(prices: Sequence[Decimal]) -> Decimal | None:
    """Sample standard deviation of the simple returns of ``prices`` (None with fewer than 3 prices)."""
    rets = [b / a - ONE for a, b in pairwise(prices) if a > ZERO]
    if len(rets) < 2:
        return None
    m = sum(rets, ZERO) / len(rets)
    var = sum(((r - m) ** 2 for r in rets), ZERO) / (len(rets) - 1)
    return var.sqrt()


def volatility_scaled(
    equity: Decimal,
    risk_fraction: Decimal,
    price: Decimal,
    sigma: Decimal,
    step: Decimal = QTY_STEP,
    *,
    multiple: Decimal = DEFAULT_VOL_MULTIPLE,
) -> Sizing:
    _positive(equity=equity, risk_fraction=risk_fraction, price=price, sigma=sigma, multiple=multiple)
    distance = multiple * sigma * price
    q = round_down(equity * risk_fraction / distance, step)
    return Sizing(q, q * distance, "volatility_scaled")


# --------------------------------------------------------------------------------------------------
# Choosing a method (signals: riskParameters.positionSizeMethod, else POSITION_SIZE_METHOD)
# --------------------------------------------------------------------------------------------------
SIZING_METHODS = ("fixed_quantity", "fixed_notional", "fixed_fractional", "kelly_criterion", "volatility_scaled")
ALIASES = {
    "fixed": "fixed_quantity",
    "quantity": "fixed_quantity",
    "notional": "fixed_notional",
    "fractional": "fixed_fractional",
    "kelly": "kelly_criterion",
    "volatility": "volatility_scaled",
}


def method_name(raw: str | None, *, default: str = "auto", has_stop: bool = False) -> str:
    """The canonical method for ``raw`` (aliases accepted); ``auto``: fixed_fractional when there is a
    stop to measure the risk by, else fixed_notional."""
    name = (raw or default).strip().lower()
    name = ALIASES.get(name, name)
    if name == "auto":
        return "fixed_fractional" if has_stop else "fixed_notional"
    if name not in SIZING_METHODS:
        raise SizingError(f"positionSizeMethod must be one of {', '.join(SIZING_METHODS)} (or auto), got {raw!r}")
    return name


@dataclass(frozen=True, slots=True)
class SizingInputs:
    equity: Decimal
    price: Decimal
    risk_fraction: Decimal
    step: Decimal = QTY_STEP
    stop: Decimal | None = None
    quantity: Decimal | None = None
    confidence: Decimal = ZERO
    win_loss_ratio: Decimal = ONE  # no closed round trips yet: even odds
    sigma: Decimal | None = None


def size(method: str, x: SizingInputs) -> Sizing:
    """Size with one of SIZING_METHODS; a named SizingError when the method lacks what it needs."""
    if method == "fixed_quantity":
        if x.quantity is None:
            raise SizingError("fixed_quantity needs a quantity")
        return fixed_quantity(x.quantity, x.price, x.step)
    if method == "fixed_notional":
        return fixed_notional_sizing(x.equity, x.risk_fraction, x.price, x.step)
    if method == "fixed_fractional":
        if x.stop is None:
            raise SizingError("fixed_fractional needs a stop-loss price")
        return fixed_fractional(x.equity, x.risk_fraction, x.price, x.stop, x.step)
    if method == "kelly_criterion":
        return kelly(x.equity, x.confidence, x.win_loss_ratio, x.price, x.step, stop=x.stop)
    if method == "volatility_scaled":
        if x.sigma is None:
            raise SizingError("volatility_scaled needs recent market data (at least 3 prices)")
        return volatility_scaled(x.equity, x.risk_fraction, x.price, x.sigma, x.step)
    raise SizingError(f"unknown sizing method {method!r}")


def cap(s: Sizing, max_quantity: Decimal, step: Decimal = QTY_STEP) -> tuple[Sizing, bool]:
    """``s`` limited to ``max_quantity`` (rounded down to the step), the amount at risk scaled with it."""
    if s.quantity <= max_quantity:
        return s, False
    q = round_down(max(max_quantity, ZERO), step)
    risk = s.risk_amount * q / s.quantity if s.quantity > ZERO else ZERO
    return Sizing(q, risk, s.method), True
