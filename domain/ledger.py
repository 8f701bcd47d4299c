"""Positions, balances and P&L: the book of record, as pure functions over fills.

Rules (see ARCHITECTURE.md, "Money maths"):
- one net position per pair; the average open price moves only on fills that increase the position;
- a fill that crosses zero closes the position and opens the opposite one with the remainder, its fee
  split in proportion to the two parts;
- realized P&L has fees subtracted; unrealized P&L (at the mark) does not include fees;
- balances move by the fill's cash flows: the quote leg, the base leg and the fee in its currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from schemas.messages import Fill
from schemas.subjects import pair_currencies

ZERO = Decimal(0)


class LedgerError(ValueError):
    """A fill the ledger cannot book (named reason)."""


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

    @property
    def side(self) -> str:
        return "long" if self.quantity > 0 else "short" if self.quantity < 0 else "flat"

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.quantity * (mark - self.average_price) if self.quantity else ZERO

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
            if q == ZERO:
                self.cycle += 1
                self.opened_at = ts
                self.average_price = price
            else:
                self.average_price = (abs(q) * self.average_price + qty * price) / (abs(q) + qty)
            self.quantity = q + signed
            realized -= fee_quote
        else:
            closing = min(qty, abs(q))
            direction = Decimal(1) if q > 0 else Decimal(-1)
            fee_close = fee_quote if closing == qty else fee_quote * closing / qty
            realized += closing * (price - self.average_price) * direction - fee_close
            self.quantity = q + signed
            if self.quantity == ZERO:
                self.average_price = ZERO
                self.opened_at = None
            elif (self.quantity > 0) != (q > 0):
                # crossed zero: the remainder opens the opposite position at this price
                self.cycle += 1
                self.opened_at = ts
                self.average_price = price
                realized -= fee_quote - fee_close
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
            taken = min(rest, self.quantity)
            realized -= taken * self.average_price
            self.quantity -= taken
            rest -= taken
            if self.quantity == ZERO:
                self.average_price = ZERO
                self.opened_at = None
        if rest > ZERO:
            if self.quantity == ZERO:
                self.cycle += 1
                self.opened_at = ts
                self.average_price = price
            else:
                q = abs(self.quantity)
                self.average_price = (q * self.average_price + rest * price) / (q + rest)
            self.quantity -= rest
            realized -= rest * price
        self.realized_pnl += realized
        self.fees += fee * price
        self.updated_at = ts
        return realized


@dataclass(slots=True)
class Balance:
    total: Decimal = ZERO
    locked: Decimal = ZERO

    @property
    def available(self) -> Decimal:
        return self.total - self.locked


@dataclass(slots=True)
class Ledger:
    base_currency: str
    initial_balance: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    fills_applied: int = 0

    def __post_init__(self) -> None:
        if not self.balances:
            self.balances[self.base_currency] = Balance(total=self.initial_balance)

    def balance(self, currency: str) -> Balance:
        b = self.balances.get(currency)
        if b is None:
            b = self.balances[currency] = Balance()
        return b

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
            realized = pos.apply(buy, fill.quantity, fill.price, ZERO, fill.timestamp)
            realized += pos.pay_base_fee(fill.fee, fill.price, fill.timestamp)
            fee_quote = fill.fee * fill.price
        else:
            fee_quote = fill.fee
            realized = pos.apply(buy, fill.quantity, fill.price, fee_quote, fill.timestamp)
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
        return realized
