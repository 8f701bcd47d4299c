"""Portfolio valuation at marks: the seed's portfolio shape computed from a Ledger. Pure.

Marks are the mid of the latest book (the last fill price when no book was seen). Values are in the
base currency; positions in pairs quoted in another currency are valued only if that currency is the
base currency (the others are listed with a zero market value until cross rates exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from domain.ledger import Ledger
from schemas.messages import BalanceView, PortfolioSnapshot, PortfolioSummary, PositionView, RiskMetrics
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
ONE = Decimal(1)
RATIO_STEP = Decimal("0.000001")


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
    ledger: Ledger, pair: str, marks: dict[str, Decimal], day: DayStart, total_value: Decimal
) -> PositionView:
    pos = ledger.positions[pair]
    mark = mark_of(ledger, pair, marks)
    valued = mark is not None and pair_currencies(pair)[1] == ledger.base_currency
    market_value = pos.quantity * mark if valued and mark is not None else ZERO
    unrealized = pos.unrealized(mark) if mark is not None else ZERO
    day_pnl = (pos.realized_pnl - day.realized.get(pair, ZERO)) + (unrealized - day.unrealized.get(pair, ZERO))
    return PositionView(
        id=f"POS_{pos.cycle:03d}_{pair}",
        pair=pair,
        side=pos.side,  # type: ignore[arg-type]
        quantity=abs(pos.quantity),
        average_price=pos.average_price,
        current_price=mark,
        market_value=market_value,
        unrealized_pnl=unrealized,
        realized_pnl=pos.realized_pnl,
        day_pnl=day_pnl,
        fees=pos.fees,
        risk_metrics=RiskMetrics(
            position_size=(abs(market_value) / total_value).quantize(RATIO_STEP) if total_value > ZERO else ZERO,
            leverage=ONE,
            liquidation_price=None,
        ),
        opened_at=pos.opened_at,
        updated_at=pos.updated_at,
    )


def snapshot(ledger: Ledger, marks: dict[str, Decimal], day: DayStart, ts: int, last_seq: int) -> PortfolioSnapshot:
    """The whole portfolio in the seed's shape (open positions only; flat pairs are left out)."""
    total_value = equity(ledger, marks)
    positions = [
        position_view(ledger, pair, marks, day, total_value)
        for pair in sorted(ledger.positions)
        if ledger.positions[pair].quantity != ZERO
    ]
    positions_value = sum((p.market_value for p in positions), ZERO)
    unrealized_total = sum((p.unrealized_pnl for p in positions if p.market_value != ZERO), ZERO)
    balances = [
        BalanceView(currency=c, total=b.total, available=b.available, locked=b.locked)
        for c, b in sorted(ledger.balances.items(), key=lambda kv: (kv[0] != ledger.base_currency, kv[0]))
        if b.total != ZERO or b.locked != ZERO or c == ledger.base_currency
    ]
    return PortfolioSnapshot(
        summary=PortfolioSummary(
            total_value=total_value,
            total_cash=ledger.balance(ledger.base_currency).total,
            total_positions=positions_value,
            unrealized_pnl=unrealized_total,
            realized_pnl=ledger.realized_pnl,
            day_pnl=total_value - day.equity if day.day else ZERO,
            fees_paid=ledger.fees_paid,
            base_currency=ledger.base_currency,
        ),
        positions=positions,
        balances=balances,
        fills_applied=ledger.fills_applied,
        last_fill_seq=last_seq,
        ts=ts,
    )
