"""The valuation as it was before issue 22 (domain/valuation.py at 4da5e39), kept verbatim as the reference the
faster one is checked against, figure by figure (tests/unit/test_valuation_fast.py). Not used by the service."""
# ruff: noqa

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from domain.ledger import RECENT_ADJUSTMENTS, Balance, ClosedCycle, Ledger, Position
from domain.venue_ledgers import VenueLedgers
from schemas.messages import (
    BalanceAdjusted,
    BalanceView,
    CurrencyFigures,
    ExchangePortfolio,
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
DEFAULT_BRIDGE = "USDT"


@dataclass(frozen=True, slots=True)
class Rounding:
    """How numbers leave the books: amounts per currency, prices, ratios."""

    decimals: dict[str, int] = field(default_factory=dict)
    default: int = DEFAULT_DECIMALS

    def money(self, amount: Decimal, currency: str) -> Decimal:
        return amount.quantize(_EXP[self.decimals.get(currency, self.default)], ROUND_HALF_EVEN)

    def exponent(self, currency: str) -> Decimal:
        """The quantum amounts of ``currency`` are rounded to (for loops that round many of them)."""
        return _EXP[self.decimals.get(currency, self.default)]

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


def mark_of(ledger: Ledger, pair: str, marks: Mapping[str, Decimal]) -> Decimal | None:
    m = marks.get(pair)
    if m is not None:
        return m
    pos = ledger.positions.get(pair)
    return pos.last_price if pos else None


Leg = tuple[str, bool]  # (pair, inverted): a rate leg is the pair's mark, or 1 / mark when inverted
_MarkedLeg = tuple[str, bool, Decimal]


def _leg(frm: str, to: str, ledger: Ledger, marks: Mapping[str, Decimal]) -> _MarkedLeg | None:
    pair = f"{frm}_{to}"
    m = mark_of(ledger, pair, marks)
    if m is not None and m > ZERO:
        return (pair, False, m)
    pair = f"{to}_{frm}"
    m = mark_of(ledger, pair, marks)
    if m is not None and m > ZERO:
        return (pair, True, m)
    return None


def _route(
    currency: str, base: str, bridge: str, ledger: Ledger, marks: Mapping[str, Decimal]
) -> tuple[_MarkedLeg, ...] | None:
    if currency == base:
        return ()
    leg = _leg(currency, base, ledger, marks)
    if leg is not None:
        return (leg,)
    if bridge in (currency, base):
        return None
    first = _leg(currency, bridge, ledger, marks)
    if first is None:
        return None
    second = _leg(bridge, base, ledger, marks)
    return None if second is None else (first, second)


def conversion_route(
    currency: str, base: str, bridge: str, ledger: Ledger, marks: Mapping[str, Decimal]
) -> tuple[Leg, ...] | None:
    """The pairs whose marks convert ``currency`` into ``base``: none for the base itself; the direct
    pair X_BASE, else the inverse BASE_X, else X_BRIDGE or BRIDGE_X then BRIDGE_BASE or BASE_BRIDGE;
    None when there is no route. A pair is usable when it has a mark (a book's mid, or its last fill)."""
    route = _route(currency, base, bridge, ledger, marks)
    return None if route is None else tuple((pair, inverted) for pair, inverted, _ in route)


class Converter:
    """Rates into the base currency at the current marks, each currency's route found once (lazily)
    and kept for the life of this object: make one per valuation."""

    __slots__ = ("base", "bridge", "ledger", "marks", "rates")

    def __init__(self, ledger: Ledger, marks: Mapping[str, Decimal], bridge: str = DEFAULT_BRIDGE) -> None:
        self.ledger = ledger
        self.marks = marks
        self.base = ledger.base_currency
        self.bridge = bridge
        self.rates: dict[str, Decimal | None] = {self.base: ONE}

    def mark(self, pair: str) -> Decimal | None:
        return mark_of(self.ledger, pair, self.marks)

    def rate(self, currency: str) -> Decimal | None:
        """Units of the base currency per unit of ``currency``; None when it cannot be converted."""
        try:
            return self.rates[currency]
        except KeyError:
            pass
        route = _route(currency, self.base, self.bridge, self.ledger, self.marks)
        rate: Decimal | None = None
        if route is not None:
            rate = ONE
            for _, inverted, m in route:
                rate = rate / m if inverted else rate * m
        self.rates[currency] = rate
        return rate


def quote_rates(conv: Converter, pairs: Iterable[str]) -> dict[str, Decimal | None]:
    """Pair -> units of the base currency per unit of the pair's quote currency (None when the quote
    cannot be converted now): what the risk limits multiply a quote amount by to compare it with equity.
    Each currency's rate is found once (``conv`` keeps them)."""
    rates = conv.rates
    out: dict[str, Decimal | None] = {}
    for pair in pairs:
        quote = pair_currencies(pair)[1]
        out[pair] = rates[quote] if quote in rates else conv.rate(quote)
    return out


def equity(
    ledger: Ledger, marks: Mapping[str, Decimal], bridge: str = DEFAULT_BRIDGE, conv: Converter | None = None
) -> Decimal:
    """Total value in the base currency: cash plus open positions at their marks, every currency
    converted (see the module docstring); currencies that cannot be converted are left out. ``conv``:
    a Converter of the same ledger and marks to reuse (its rates are then shared with the caller)."""
    if conv is None:
        conv = Converter(ledger, marks, bridge)
    rates = conv.rates
    total = ZERO
    held: dict[str, Decimal] = {}
    for pair, pos in ledger.positions.items():
        q = pos.quantity
        if not q:
            continue
        base, quote = pair_currencies(pair)
        h = held.get(base)
        held[base] = q if h is None else h + q
        m = marks.get(pair)
        if m is None:
            m = pos.last_price
            if m is None:
                continue
        rate = rates[quote] if quote in rates else conv.rate(quote)
        if rate is ONE:
            total += q * m
        elif rate is not None:
            total += q * m * rate
    for currency, b in ledger.balances.items():
        h = held.get(currency)
        cash = b.total if h is None else b.total - h
        if cash:
            rate = conv.rate(currency)
            if rate is not None:
                total += cash if rate is ONE else cash * rate
    return total


def roll_day(
    ledger: Ledger, marks: Mapping[str, Decimal], start: DayStart, day: str, bridge: str = DEFAULT_BRIDGE
) -> DayStart:
    """The day-start record for ``day`` (YYYYMMDD): unchanged on the same or an earlier day (days only
    move forward), taken now on a new one."""
    if start.day >= day:
        return start
    return DayStart(
        day=day,
        equity=equity(ledger, marks, bridge) if ledger.fills_applied or ledger.adjustments else ledger.initial_balance,
        realized={p: pos.realized_pnl for p, pos in ledger.positions.items()},
        unrealized={
            p: pos.unrealized(m) for p, pos in ledger.positions.items() if (m := mark_of(ledger, p, marks)) is not None
        },
    )


def _view(
    pos: Position,
    pair: str,
    exp: Decimal,
    mark: Decimal | None,
    market_value: Decimal,
    unrealized: Decimal,
    rate: Decimal | None,
    day: DayStart,
    total_value: Decimal,
) -> PositionView:
    """One position's view; ``exp`` is the rounding quantum of its quote currency."""
    day_pnl = (pos.realized_pnl - day.realized.get(pair, ZERO)) + (unrealized - day.unrealized.get(pair, ZERO))
    value_base = market_value if rate is ONE else market_value * rate if rate is not None else ZERO
    realized = pos.realized_pnl.quantize(exp, ROUND_HALF_EVEN)
    fees = pos.fees.quantize(exp, ROUND_HALF_EVEN)
    cur = pos.current
    if cur is None or not pos.quantity:
        cycle_realized = cycle_fees = ZERO
    else:  # the pair's first cycle is its whole life: the same figures, rounded once
        cycle_realized = realized if cur.realized == pos.realized_pnl else cur.realized.quantize(exp, ROUND_HALF_EVEN)
        cycle_fees = fees if cur.fees == pos.fees else cur.fees.quantize(exp, ROUND_HALF_EVEN)
    return PositionView(
        id=f"POS_{pos.cycle:03d}_{pair}",
        pair=pair,
        side=pos.side,  # type: ignore[arg-type]
        quantity=abs(pos.quantity),
        average_price=pos.average_price.quantize(_PRICE_EXP, ROUND_HALF_EVEN),
        current_price=mark,
        market_value=market_value.quantize(exp, ROUND_HALF_EVEN),
        unrealized_pnl=unrealized.quantize(exp, ROUND_HALF_EVEN),
        realized_pnl=realized,
        day_pnl=day_pnl.quantize(exp, ROUND_HALF_EVEN),
        fees=fees,
        risk_metrics=RiskMetrics(
            position_size=(abs(value_base) / total_value).quantize(_RATIO_EXP, ROUND_HALF_EVEN)
            if total_value > ZERO
            else ZERO,
            leverage=ONE,
            liquidation_price=None,
        ),
        opened_at=pos.opened_at,
        updated_at=pos.updated_at,
        cycle_realized_pnl=cycle_realized,
        cycle_fees=cycle_fees,
        pair_realized_pnl=realized,
        pair_fees=fees,
    )


def position_view(
    ledger: Ledger,
    pair: str,
    marks: Mapping[str, Decimal],
    day: DayStart,
    total_value: Decimal,
    r: Rounding = EXACT_ENOUGH,
    bridge: str = DEFAULT_BRIDGE,
) -> PositionView:
    """One position, its figures in its pair's quote currency; ``riskMetrics.positionSize`` is its
    market value converted into the base currency over ``total_value`` (0 when it cannot be converted)."""
    conv = Converter(ledger, marks, bridge)
    pos = ledger.positions[pair]
    quote = pair_currencies(pair)[1]
    mark = conv.mark(pair)
    market_value = pos.quantity * mark if mark is not None else ZERO
    unrealized = pos.unrealized(mark) if mark is not None else ZERO
    return _view(pos, pair, r.exponent(quote), mark, market_value, unrealized, conv.rate(quote), day, total_value)


@dataclass(slots=True)
class _Figures:
    """The exact figures of one currency that pairs are quoted in, in its own units."""

    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    fees: Decimal = ZERO
    positions: Decimal = ZERO  # market value of the open positions quoted in it


_NONE = _Figures()


def snapshot(
    ledger: Ledger,
    marks: Mapping[str, Decimal],
    day: DayStart,
    ts: int,
    last_seq: int,
    r: Rounding = EXACT_ENOUGH,
    bridge: str = DEFAULT_BRIDGE,
) -> PortfolioSnapshot:
    """The whole portfolio in the seed's shape (open positions only; flat pairs are left out), its
    totals converted into the base currency (see the module docstring). One ledger: no ``exchange``."""
    conv = Converter(ledger, marks, bridge)
    val = _valuate([(None, ledger, day)], ledger.balances, marks, conv, r, _one_venue_id)
    return PortfolioSnapshot(
        summary=val.summary(r, conv, day.equity if day.day else None),
        positions=val.views(r, conv, val.total_value),
        balances=val.balance_views,
        fills_applied=ledger.fills_applied,
        last_fill_seq=last_seq,
        ts=ts,
        balance_adjustments=[adjustment_view(a, r) for a in reversed(ledger.adjustments)],
    )


def _one_venue_id(venue: str | None, pair: str, cycle: int) -> str:
    return f"POS_{cycle:03d}_{pair}"


def position_id(venue: str | None, pair: str, cycle: int, only_venue: str | None) -> str:
    """A position's id: ``POS_<cycle>_<pair>`` as before books were kept per venue when the venue is the
    deployment's only one (ids of one-venue deployments do not change), else ``POS_<cycle>_<pair>:<venue>``
    (the same pair on two venues is two positions)."""
    base = f"POS_{cycle:03d}_{pair}"
    return base if venue is None or venue == only_venue else f"{base}:{venue}"


def combined_marks(ledgers: Iterable[Ledger], marks: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """The marks, and for a pair without one the latest fill price booked on any venue: one set of prices
    for every venue's valuation, so the venues' figures add up to the totals."""
    last: dict[str, tuple[int, Decimal]] = {}
    for led in ledgers:
        for pair, pos in led.positions.items():
            if pos.last_price is not None and (pair not in last or pos.updated_at > last[pair][0]):
                last[pair] = (pos.updated_at, pos.last_price)
    out = {pair: p for pair, (_, p) in last.items()}
    out.update(marks)
    return out


def books_equity(books: VenueLedgers, marks: Mapping[str, Decimal], bridge: str = DEFAULT_BRIDGE) -> Decimal:
    """Total value of every venue's books in the base currency (the sum of the venues' equities, all valued
    at the same prices: ``combined_marks``)."""
    ledgers = [led for _, led in books]
    if not ledgers:
        return ZERO
    cm = combined_marks(ledgers, marks)
    conv = Converter(ledgers[0], cm, bridge)
    return sum((equity(led, cm, bridge, conv) for led in ledgers), ZERO)


def roll_days(
    books: VenueLedgers, marks: Mapping[str, Decimal], days: dict[str, DayStart], day: str, bridge: str = DEFAULT_BRIDGE
) -> dict[str, DayStart]:
    """``roll_day`` for every venue (a venue without a day start yet gets one now); days only move forward,
    all venues together."""
    target = max([day, *(d.day for d in days.values())])
    if all(days.get(v) is not None and days[v].day >= target for v, _ in books):
        return days
    cm = combined_marks((led for _, led in books), marks)
    return {v: roll_day(led, cm, days.get(v, DayStart()), target, bridge) for v, led in books}


def venue_position_view(
    books: VenueLedgers,
    venue: str,
    pair: str,
    marks: Mapping[str, Decimal],
    day: DayStart,
    total_value: Decimal,
    r: Rounding = EXACT_ENOUGH,
    bridge: str = DEFAULT_BRIDGE,
) -> PositionView:
    """One venue's position in a pair (``position_view``), naming its ``exchange``; ``total_value``: of
    every venue together."""
    cm = combined_marks((led for _, led in books), marks)
    view = position_view(books.of(venue), pair, cm, day, total_value, r, bridge)
    only = books.venues[0] if len(books.venues) == 1 else None
    pos = books.of(venue).positions[pair]
    return msgspec.structs.replace(view, id=position_id(venue, pair, pos.cycle, only), exchange=venue)


def books_snapshot(
    books: VenueLedgers,
    marks: Mapping[str, Decimal],
    days: Mapping[str, DayStart],
    ts: int,
    last_seq: int,
    r: Rounding = EXACT_ENOUGH,
    bridge: str = DEFAULT_BRIDGE,
) -> PortfolioSnapshot:
    """The portfolio of every venue: the top-level summary, positions and balances are all venues together
    (one position per venue and pair, each naming its ``exchange``; balances summed per currency; the
    summary's figures converted and summed as for one ledger, its ``dayPnL`` the sum of the venues'), and
    ``by_exchange`` the books of each venue (the configured ones, and any other with books), its
    ``riskMetrics.positionSize`` relative to the venue's own total value. Every venue is valued at the same
    prices (``combined_marks``), so a venue's figures add up to the totals (before rounding)."""
    ledgers = [led for _, led in books]
    cm = combined_marks(ledgers, marks)
    conv = Converter(ledgers[0] if ledgers else Ledger(books.base_currency, ZERO), cm, bridge)
    only = books.venues[0] if len(books.venues) == 1 else None

    def id_of(venue: str | None, pair: str, cycle: int) -> str:
        return position_id(venue, pair, cycle, only)

    parts = [(v, books.of(v), days.get(v, DayStart())) for v in books.names()]
    by_exchange: dict[str, ExchangePortfolio] = {}
    day_equity = ZERO
    val = None
    for v, led, day in parts:
        val = _valuate([(v, led, day)], led.balances, cm, conv, r, id_of)
        by_exchange[v] = ExchangePortfolio(
            summary=val.summary(r, conv, day.equity if day.day else None),
            positions=val.views(r, conv, val.total_value),
            balances=val.balance_views,
        )
        day_equity += day.equity if day.day else val.total_value  # a venue without a day start: no day P&L
    # one venue: its valuation is the total's (the same figures, valued once)
    every = val if val is not None and len(parts) == 1 else _valuate(parts, books.balances(), cm, conv, r, id_of)
    any_day = any(day.day for _, _, day in parts)
    return PortfolioSnapshot(
        summary=every.summary(r, conv, day_equity if any_day else None),
        positions=every.views(r, conv, every.total_value),
        balances=every.balance_views,
        fills_applied=books.fills_applied,
        last_fill_seq=last_seq,
        ts=ts,
        balance_adjustments=[adjustment_view(a, r) for a in reversed(books.recent_adjustments()[-RECENT_ADJUSTMENTS:])],
        by_exchange=by_exchange,
    )


_Opened = tuple[str | None, str, Position, DayStart, str, "Decimal | None", Decimal, Decimal]


@dataclass(slots=True)
class _Valued:
    """The exact figures of some books (one venue, or several together) before they are rounded."""

    base: str
    total_value: Decimal
    cash_total: Decimal
    positions_total: Decimal
    realized_total: Decimal
    unrealized_total: Decimal
    fees_total: Decimal
    by_currency: dict[str, CurrencyFigures]
    unconverted: list[str]
    used: dict[str, Decimal]
    balance_views: list[BalanceView]
    opened: list[_Opened]
    exps: dict[str, Decimal]
    id_of: Callable[[str | None, str, int], str]

    def summary(self, r: Rounding, conv: Converter, day_equity: Decimal | None) -> PortfolioSummary:
        base = self.base
        return PortfolioSummary(
            total_value=r.money(self.total_value, base),
            total_cash=r.money(self.cash_total, base),
            total_positions=r.money(self.positions_total, base),
            unrealized_pnl=r.money(self.unrealized_total, base),
            realized_pnl=r.money(self.realized_total, base),
            day_pnl=r.money(self.total_value - day_equity, base) if day_equity is not None else ZERO,
            fees_paid=r.money(self.fees_total, base),
            base_currency=base,
            by_currency=self.by_currency,
            unconverted=self.unconverted,
            conversion_rates={c: r.price(v) for c, v in self.used.items() if c != base},
        )

    def views(self, r: Rounding, conv: Converter, total_value: Decimal) -> list[PositionView]:
        rates = conv.rates
        out = []
        for venue, pair, pos, day, quote, mark, value, unrealized in self.opened:
            rate = rates[quote] if quote in rates else conv.rate(quote)
            view = _view(pos, pair, self.exps[quote], mark, value, unrealized, rate, day, total_value)
            if venue is not None:
                view = msgspec.structs.replace(view, id=self.id_of(venue, pair, pos.cycle), exchange=venue)
            out.append(view)
        return out


def _valuate(
    parts: Sequence[tuple[str | None, Ledger, DayStart]],
    balances: Mapping[str, Balance],
    marks: Mapping[str, Decimal],
    conv: Converter,
    r: Rounding,
    id_of: Callable[[str | None, str, int], str],
) -> _Valued:
    """Value the positions of ``parts`` (venue, ledger, its day start) and the ``balances`` (theirs,
    summed): one pass, exact sums, rounded once at the end (the summary in ``_Valued.summary``)."""
    base = conv.base
    figs: dict[str, _Figures] = {}  # by quote currency
    held: dict[str, Decimal] = {}  # units held as open positions, by base currency
    opened: list[_Opened] = []
    for venue, ledger, day in parts:
        for pair, pos in ledger.positions.items():
            base_c, quote = pair_currencies(pair)
            f = figs.get(quote)
            if f is None:
                f = figs[quote] = _Figures()
            f.realized += pos.realized_pnl
            f.fees += pos.fees
            q = pos.quantity
            if not q:
                continue
            h = held.get(base_c)
            held[base_c] = q if h is None else h + q
            mark = marks.get(pair)
            if mark is None:
                mark = pos.last_price
            value = unrealized = ZERO
            if mark is not None:
                value = q * mark
                unrealized = q * (mark - pos.average_price)
                f.positions += value
                f.unrealized += unrealized
            opened.append((venue, pair, pos, day, quote, mark, value, unrealized))

    cash_total = positions_total = realized_total = unrealized_total = fees_total = ZERO
    unconverted: list[str] = []
    used: dict[str, Decimal] = {}
    by_currency: dict[str, CurrencyFigures] = {}
    balance_views: list[BalanceView] = []
    zeros: dict[Decimal, Decimal] = {}
    for c in sorted(balances.keys() | figs.keys()):
        f = figs.get(c, _NONE)
        b = balances.get(c)
        balance = b.total if b is not None else ZERO
        h = held.get(c)
        cash = balance if h is None else balance - h
        if cash or (f is not _NONE and (f.positions or f.realized or f.unrealized or f.fees)):
            rate = conv.rate(c)
            if rate is None:
                unconverted.append(c)
            else:
                used[c] = rate
                cash_total += cash * rate
                if f is not _NONE:
                    positions_total += f.positions * rate
                    realized_total += f.realized * rate
                    unrealized_total += f.unrealized * rate
                    fees_total += f.fees * rate
        # else there is nothing in it to convert: its units are all held as positions, valued in their quote
        exp = r.exponent(c)
        total = balance.quantize(exp, ROUND_HALF_EVEN)
        if b is not None and (balance or b.unavailable or c == base):
            not_free = b.unavailable  # at the venue (held) and reserved by algorithm parents: not available
            locked = not_free.quantize(exp, ROUND_HALF_EVEN)
            available = total if not not_free else b.available.quantize(exp, ROUND_HALF_EVEN)
            reserved = b.reserved.quantize(exp, ROUND_HALF_EVEN)
            balance_views.append(
                BalanceView(currency=c, total=total, available=available, locked=locked, reserved=reserved)
            )
        if f is _NONE:
            if balance or c == base:
                zero = zeros.get(exp)
                if zero is None:
                    zero = zeros[exp] = ZERO.quantize(exp)
                by_currency[c] = CurrencyFigures(realized_pnl=zero, unrealized_pnl=zero, fees_paid=zero, balance=total)
        else:
            by_currency[c] = CurrencyFigures(
                realized_pnl=f.realized.quantize(exp, ROUND_HALF_EVEN),
                unrealized_pnl=f.unrealized.quantize(exp, ROUND_HALF_EVEN),
                fees_paid=f.fees.quantize(exp, ROUND_HALF_EVEN),
                balance=total,
            )
    if base in balances:  # the base currency's balance first
        i = next((i for i, v in enumerate(balance_views) if v.currency == base), None)
        if i is not None:
            balance_views.insert(0, balance_views.pop(i))
    opened.sort(key=lambda o: (o[1], o[0] or ""))
    return _Valued(
        base=base,
        total_value=cash_total + positions_total,
        cash_total=cash_total,
        positions_total=positions_total,
        realized_total=realized_total,
        unrealized_total=unrealized_total,
        fees_total=fees_total,
        by_currency=by_currency,
        unconverted=unconverted,
        used=used,
        balance_views=balance_views,
        opened=opened,
        exps={quote: r.exponent(quote) for quote in figs},
        id_of=id_of,
    )


def adjustment_view(a: BalanceAdjusted, r: Rounding = EXACT_ENOUGH) -> BalanceAdjusted:
    """An adjustment as it leaves the books: its amounts rounded to the currency's precision."""
    c = a.currency
    return msgspec.structs.replace(
        a,
        from_total=r.money(a.from_total, c),
        from_available=r.money(a.from_available, c),
        to_total=r.money(a.to_total, c),
        to_available=r.money(a.to_available, c),
        locked_delta=r.money(a.locked_delta, c),
    )


def cycle_view(c: ClosedCycle, r: Rounding = EXACT_ENOUGH, exchange: str | None = None) -> PositionCycleView:
    quote = pair_currencies(c.pair)[1]
    return PositionCycleView(
        exchange=exchange,
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
