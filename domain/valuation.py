"""Portfolio valuation at marks: the seed's portfolio shape computed from a Ledger. Pure.

Marks are the mid of the latest book (the last fill price when no book was seen). Values are in the
base currency; positions in pairs quoted in another currency are valued only if that currency is the
base currency (the others are listed with a zero market value until cross rates exist).

This is the edge: the books are exact, and only what leaves here is rounded (half-even): amounts to
their currency's precision (CURRENCY_PRECISION, 8 decimals by default), prices to PRICE_DECIMALS,
ratios and returns to RATIO_DECIMALS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from domain.ledger import ClosedCycle, Ledger
from schemas.messages import (
    BalanceView,
    PortfolioSnapshot,
    PortfolioSummary,
    PositionCycleView,
    PositionView,
    RiskMetrics,
)
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
ONE = Decimal(1)
DEFAULT_DECIMALS = 8
PRICE_DECIMALS = 10
RATIO_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Rounding:
    """How numbers leave the books: amounts per currency, prices, ratios."""

    decimals: dict[str, int] = field(default_factory=dict)
    default: int = DEFAULT_DECIMALS

    def money(self, amount: Decimal, currency: str) -> Decimal:
        return amount.quantize(_EXP[self.decimals.get(currency, self.default)], ROUND_HALF_EVEN)

    def price(self, price: Decimal) -> Decimal:
        return price.quantize(_PRICE_EXP, ROUND_HALF_EVEN)

    def ratio(self, ratio: Decimal) -> Decimal:
        return ratio.quantize(_RATIO_EXP, ROUND_HALF_EVEN)


_EXP = [Decimal(1).scaleb(-d) for d in range(19)]  # 10^-d for the 0..18 decimals allowed
_PRICE_EXP, _RATIO_EXP = _EXP[PRICE_DECIMALS], _EXP[RATIO_DECIMALS]


EXACT_ENOUGH = Rounding()


@dataclass(slots=True)
class DayStart:
    """What the books looked like when the (UTC) day began, for day P&L."""

    day: str = ""
    equity: Decimal = ZERO
    realized: dict[str, Decimal] = field(default_factory=dict)
    unrealized: dict[str, Decimal] = field(default_factory=dict)


def mark_of(ledger: Ledger, pair: str, marks: dict[str, Decimal]) -> Decimal | None:
    m = marks.get(pair)
    if m is not None:
        return m
    pos = ledger.positions.get(pair)
    return pos.last_price if pos else None


def equity(ledger: Ledger, marks: dict[str, Decimal]) -> Decimal:
    total = ledger.balance(ledger.base_currency).total
    for pair, pos in ledger.positions.items():
        if pos.quantity and pair_currencies(pair)[1] == ledger.base_currency:
            m = mark_of(ledger, pair, marks)
            if m is not None:
                total += pos.quantity * m
    return total


def roll_day(ledger: Ledger, marks: dict[str, Decimal], start: DayStart, day: str) -> DayStart:
    """The day-start record for ``day`` (YYYYMMDD): unchanged on the same or an earlier day (days only
    move forward), taken now on a new one."""
    if start.day >= day:
        return start
    return DayStart(
        day=day,
        equity=equity(ledger, marks) if ledger.fills_applied else ledger.initial_balance,
        realized={p: pos.realized_pnl for p, pos in ledger.positions.items()},
        unrealized={
            p: pos.unrealized(m) for p, pos in ledger.positions.items() if (m := mark_of(ledger, p, marks)) is not None
        },
    )


def position_view(
    ledger: Ledger,
    pair: str,
    marks: dict[str, Decimal],
    day: DayStart,
    total_value: Decimal,
    r: Rounding = EXACT_ENOUGH,
) -> PositionView:
    pos = ledger.positions[pair]
    quote = pair_currencies(pair)[1]
    mark = mark_of(ledger, pair, marks)
    valued = mark is not None and quote == ledger.base_currency
    market_value = pos.quantity * mark if valued and mark is not None else ZERO
    unrealized = pos.unrealized(mark) if mark is not None else ZERO
    day_pnl = (pos.realized_pnl - day.realized.get(pair, ZERO)) + (unrealized - day.unrealized.get(pair, ZERO))
    return PositionView(
        id=f"POS_{pos.cycle:03d}_{pair}",
        pair=pair,
        side=pos.side,  # type: ignore[arg-type]
        quantity=abs(pos.quantity),
        average_price=r.price(pos.average_price),
        current_price=mark,
        market_value=r.money(market_value, quote),
        unrealized_pnl=r.money(unrealized, quote),
        realized_pnl=r.money(pos.realized_pnl, quote),
        day_pnl=r.money(day_pnl, quote),
        fees=r.money(pos.fees, quote),
        risk_metrics=RiskMetrics(
            position_size=r.ratio(abs(market_value) / total_value) if total_value > ZERO else ZERO,
            leverage=ONE,
            liquidation_price=None,
        ),
        opened_at=pos.opened_at,
        updated_at=pos.updated_at,
    )


def snapshot(
    ledger: Ledger,
    marks: dict[str, Decimal],
    day: DayStart,
    ts: int,
    last_seq: int,
    r: Rounding = EXACT_ENOUGH,
) -> PortfolioSnapshot:
    """The whole portfolio in the seed's shape (open positions only; flat pairs are left out)."""
    base = ledger.base_currency
    total_value = equity(ledger, marks)
    open_pairs = [p for p in sorted(ledger.positions) if ledger.positions[p].quantity != ZERO]
    positions_value = ZERO
    unrealized_total = ZERO
    for pair in open_pairs:  # exact sums, rounded once at the end
        pos = ledger.positions[pair]
        mark = mark_of(ledger, pair, marks)
        if mark is not None and pair_currencies(pair)[1] == base:
            positions_value += pos.quantity * mark
            unrealized_total += pos.unrealized(mark)
    balances = [
        BalanceView(
            currency=c, total=r.money(b.total, c), available=r.money(b.available, c), locked=r.money(b.locked, c)
        )
        for c, b in sorted(ledger.balances.items(), key=lambda kv: (kv[0] != base, kv[0]))
        if b.total != ZERO or b.locked != ZERO or c == base
    ]
    return PortfolioSnapshot(
        summary=PortfolioSummary(
            total_value=r.money(total_value, base),
            total_cash=r.money(ledger.balance(base).total, base),
            total_positions=r.money(positions_value, base),
            unrealized_pnl=r.money(unrealized_total, base),
            realized_pnl=r.money(ledger.realized_pnl, base),
            day_pnl=r.money(total_value - day.equity, base) if day.day else ZERO,
            fees_paid=r.money(ledger.fees_paid, base),
            base_currency=base,
        ),
        positions=[position_view(ledger, p, marks, day, total_value, r) for p in open_pairs],
        balances=balances,
        fills_applied=ledger.fills_applied,
        last_fill_seq=last_seq,
        ts=ts,
    )


def cycle_view(c: ClosedCycle, r: Rounding = EXACT_ENOUGH) -> PositionCycleView:
    quote = pair_currencies(c.pair)[1]
    return PositionCycleView(
        pair=c.pair,
        cycle=c.cycle,
        side=c.side,  # type: ignore[arg-type]
        quantity=c.quantity,
        average_open_price=r.price(c.average_open_price),
        average_close_price=r.price(c.average_close_price) if c.average_close_price is not None else None,
        realized_pnl=r.money(c.realized_pnl, quote),
        fees=r.money(c.fees, quote),
        opened_at=c.opened_at,
        closed_at=c.closed_at,
    )
