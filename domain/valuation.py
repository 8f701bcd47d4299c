"""Portfolio valuation at marks: the seed's portfolio shape computed from a Ledger. Pure.

Marks are the mid of the latest book (the last fill price when no book was seen).

Currencies. Every amount is kept in its own currency: a position's figures (market value, realized
and unrealized P&L, fees) in its pair's quote currency, balances in theirs. The totals are in the
base currency: each amount is converted at the latest marks, with one rate per currency found once
per valuation (``Converter``):

- the direct pair ``X_BASE`` (rate = its mark), else the inverse ``BASE_X`` (rate = 1 / its mark),
- else through the bridge currency (CONVERSION_BRIDGE, USDT by default): ``X_BRIDGE`` or ``BRIDGE_X``,
  then ``BRIDGE_BASE`` or ``BASE_BRIDGE`` (rate = the product of the two legs),
- else the currency cannot be converted: it is listed in ``unconverted`` and left out of the totals,
  never added as if it were the base currency.

Value. An open position is worth ``quantity x mark`` in its quote currency; cash is what each balance
holds beyond the open positions in pairs based on that currency (``balance - sum of those positions``;
buying ETH with BTC in ETH_BTC moves that BTC out of cash into the ETH_BTC position). ``totalValue``
= cash + positions, each converted; so, at any marks, totalValue = initial + realized + unrealized
(all converted), when every currency converts.

This is the edge: the books are exact, and only what leaves here is rounded (half-even): amounts to
their currency's precision (CURRENCY_PRECISION, 8 decimals by default), prices to PRICE_DECIMALS,
ratios and returns to RATIO_DECIMALS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import islice
from typing import Any

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
_ZEROS = {exp: ZERO.quantize(exp) for exp in _EXP}  # 0 to each quantum


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
    split = _SPLIT
    get_mark = marks.get
    for pair, pos in ledger.positions.items():
        q = pos.quantity
        if not q:
            continue
        cs = split.get(pair)
        if cs is None:
            if len(split) > 65_536:
                split.clear()
            cs = split[pair] = pair_currencies(pair)
        base, quote = cs
        h = held.get(base)
        held[base] = q if h is None else h + q
        m = get_mark(pair)
        if m is None:
            m = pos.last_price
            if m is None:
                continue
        rate = rates.get(quote, _UNSET)
        if rate is _UNSET:
            rate = conv.rate(quote)
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


_SPLIT: dict[str, tuple[str, str]] = {}  # pair -> (base, quote), as pair_currencies splits it


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


def _position_size(value: Decimal, rate: Decimal | None, total: Decimal) -> Decimal:
    """``riskMetrics.positionSize``: abs(``value`` converted at ``rate`` into the base currency, 0 when it cannot
    be) / ``total`` (> 0), rounded."""
    value_base = value if rate is ONE else value * rate if rate is not None else ZERO
    return (abs(value_base) / total).quantize(_RATIO_EXP, ROUND_HALF_EVEN)


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
            position_size=_position_size(market_value, rate, total_value) if total_value > ZERO else ZERO,
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
_UNSET: Any = object()  # an input no figure was made from yet: the first use makes it


class _Entry:
    """One position's figures as the last valuation made them, and the inputs they were made from.

    The inputs are remembered as the very objects (a Decimal or an int is immutable, so the same object
    is the same value, and the entry holds it, so it cannot be freed and its id reused): a figure is
    reused only while every one of its inputs *is* the object it was made from, else it is made again
    the same way. An equal value in another object (``1.50`` for ``1.5``, ``-0`` for ``0``) is made
    again: it may print differently.

    Its parts: ``m_*`` the exact market value and unrealized P&L (``value``, ``unrealized``) from the mark,
    quantity and average price; ``r_*`` those rounded (``market_value``, ``unrealized_pnl``); ``d_*`` the
    day P&L, rounded; ``p_*`` ``riskMetrics.positionSize`` (``size``) from the value, the rate and the
    total value, these two by value (the rounded quotient depends on the numbers only); ``s_*`` the view
    without its marked figures (``view``), from the position alone. ``mark`` and ``day``: the mark and
    day start of the valuation that listed it last."""

    __slots__ = (
        "at",
        "base",
        "d_dr",
        "d_du",
        "d_exp",
        "d_real",
        "d_unr",
        "day",
        "day_pnl",
        "is_marked",
        "is_open",
        "m_avg",
        "m_mark",
        "m_q",
        "mark",
        "market_value",
        "mi",
        "p_hi",
        "p_lo",
        "p_rate",
        "p_value",
        "pair",
        "pos",
        "qi",
        "quote",
        "r_exp",
        "r_unrealized",
        "r_value",
        "s_avg",
        "s_cur",
        "s_cur_fees",
        "s_cur_real",
        "s_cycle",
        "s_exp",
        "s_fees",
        "s_only",
        "s_opened",
        "s_q",
        "s_real",
        "s_updated",
        "size",
        "unrealized",
        "unrealized_pnl",
        "value",
        "venue",
        "view",
    )

    def __init__(self, pos: Position, pair: str, venue: str | None) -> None:
        self.pos = pos
        self.pair = pair
        self.venue = venue
        self.base, self.quote = pair_currencies(pair)
        self.m_mark = self.m_q = self.m_avg = _UNSET
        self.value = self.unrealized = ZERO
        self.r_exp = self.r_value = self.r_unrealized = _UNSET
        self.market_value = self.unrealized_pnl = ZERO
        self.d_dr = self.d_du = self.d_real = self.d_unr = self.d_exp = self.day_pnl = _UNSET
        self.p_value = self.p_rate = self.p_lo = self.p_hi = self.size = _UNSET
        self.is_open = self.is_marked = False
        self.at = self.qi = self.mi = 0  # its place in the open positions, by_quote and marked (_Live)
        self.s_q = self.s_avg = self.s_real = self.s_fees = self.s_cycle = self.s_opened = _UNSET
        self.s_updated = self.s_cur = self.s_cur_real = self.s_cur_fees = self.s_exp = _UNSET
        self.s_only = _UNSET
        self.view: PositionView | None = None
        self.mark: Decimal | None = None
        self.day: DayStart | None = None


class ViewCache:
    """What the valuations of some books made per position (``_Entry``), kept from one valuation to
    the next so that only the figures whose inputs changed are made again: a position that no fill
    moved keeps its view, one whose mark did not move keeps its market value and P&L. Every figure is
    made from the books and marks of the valuation itself whenever any input differs (see ``_Entry``),
    so the output is the same with a cache, a fresh one or none. One per holder of books (the ledger
    actor keeps one); not shared between threads."""

    __slots__ = ("currencies", "live", "money", "orders", "venues")

    def __init__(self) -> None:
        self.live: dict[str | None, _Live] = {}  # venue (None: one Ledger) -> its valuation kept up to date
        # per valuation of these venues: each currency's entry; the currencies listed (balances, quoted), sorted
        self.money: dict[tuple[str | None, ...], dict[str, _Money]] = {}
        self.currencies: dict[tuple[str | None, ...], tuple[list[str], tuple[str, ...], list[str]]] = {}
        self.venues: dict[str | None, dict[str, _Entry]] = {}  # venue (None: one Ledger) -> pair -> entry
        # the open positions of a valuation of these venues, as listed, and sorted (pair, venue)
        self.orders: dict[tuple[str | None, ...], tuple[list[_Entry], list[_Entry]]] = {}


def snapshot(
    ledger: Ledger,
    marks: Mapping[str, Decimal],
    day: DayStart,
    ts: int,
    last_seq: int,
    r: Rounding = EXACT_ENOUGH,
    bridge: str = DEFAULT_BRIDGE,
    cache: ViewCache | None = None,
) -> PortfolioSnapshot:
    """The whole portfolio in the seed's shape (open positions only; flat pairs are left out), its
    totals converted into the base currency (see the module docstring). One ledger: no ``exchange``.
    ``cache``: kept from one call to the next for the same books, it spares the work on what did not
    change (``ViewCache``); the output is the same without it."""
    conv = Converter(ledger, marks, bridge)
    val = _valuate([(None, ledger, day)], ledger.balances, marks, conv, r, None, cache)
    return PortfolioSnapshot(
        summary=val.summary(r, conv, day.equity if day.day else None),
        positions=val.views(r, conv, val.total_value),
        balances=val.balance_views,
        fills_applied=ledger.fills_applied,
        last_fill_seq=last_seq,
        ts=ts,
        balance_adjustments=[adjustment_view(a, r) for a in reversed(ledger.adjustments)],
    )


def position_id(venue: str | None, pair: str, cycle: int, only_venue: str | None) -> str:
    """A position's id: ``POS_<cycle>_<pair>`` as before books were kept per venue when the venue is the
    deployment's only one (ids of one-venue deployments do not change), else ``POS_<cycle>_<pair>:<venue>``
    (the same pair on two venues is two positions)."""
    base = f"POS_{cycle:03d}_{pair}"
    return base if venue is None or venue == only_venue else f"{base}:{venue}"


def combined_marks(ledgers: Iterable[Ledger], marks: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """The marks, and for a pair without one the latest fill price booked on any venue: one set of prices
    for every venue's valuation, so the venues' figures add up to the totals."""
    out: dict[str, Decimal] = {}
    at: dict[str, int] = {}
    for led in ledgers:
        for pair, pos in led.positions.items():
            price = pos.last_price
            if price is not None:
                t = at.get(pair)
                if t is None or pos.updated_at > t:
                    at[pair] = pos.updated_at
                    out[pair] = price
    out.update(marks)
    return out


def _marks_of(ledgers: Sequence[Ledger], marks: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    """``combined_marks`` as a valuation reads them: for one ledger the marks themselves, since a pair
    without a mark is valued at its own last fill price anyway (``mark_of``), the same price."""
    return marks if len(ledgers) == 1 else combined_marks(ledgers, marks)


def books_equity(books: VenueLedgers, marks: Mapping[str, Decimal], bridge: str = DEFAULT_BRIDGE) -> Decimal:
    """The total value of every venue's books in the base currency (each venue's ``equity``, all valued
    at the same prices: ``combined_marks``)."""
    ledgers = [led for _, led in books]
    if not ledgers:
        return ZERO
    cm = _marks_of(ledgers, marks)
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
    cache: ViewCache | None = None,
) -> PortfolioSnapshot:
    """The portfolio of every venue: the top-level summary, positions and balances are all venues together
    (one position per venue and pair, each naming its ``exchange``; balances summed per currency; the
    summary's figures converted and summed as for one ledger, its ``dayPnL`` the sum of the venues'), and
    ``by_exchange`` the books of each venue (the configured ones, and any other with books), its
    ``riskMetrics.positionSize`` relative to the venue's own total value. Every venue is valued at the same
    prices (``combined_marks``), so a venue's figures add up to the totals (before rounding). ``cache``: as
    for ``snapshot``, the same output with or without it."""
    ledgers = [led for _, led in books]
    cm = _marks_of(ledgers, marks)
    conv = Converter(ledgers[0] if ledgers else Ledger(books.base_currency, ZERO), cm, bridge)
    only = books.venues[0] if len(books.venues) == 1 else None
    parts = [(v, books.of(v), days.get(v, DayStart())) for v in books.names()]
    by_exchange: dict[str, ExchangePortfolio] = {}
    day_equity = ZERO
    val = None
    for v, led, day in parts:
        val = _valuate([(v, led, day)], led.balances, cm, conv, r, only, cache)
        by_exchange[v] = ExchangePortfolio(
            summary=val.summary(r, conv, day.equity if day.day else None),
            positions=val.views(r, conv, val.total_value),
            balances=val.balance_views,
        )
        day_equity += day.equity if day.day else val.total_value  # a venue without a day start: no day P&L
    # one venue: its valuation is the total's (the same figures, valued once)
    every = val if val is not None and len(parts) == 1 else _valuate(parts, books.balances(), cm, conv, r, only, cache)
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
    opened: list[_Entry]  # the open positions, by pair then venue (their mark, day start and venue set)
    exps: dict[str, Decimal]
    only: str | None  # the deployment's only venue (ids: ``position_id``)
    made: list[PositionView] | None = None  # the views at ``total_value``, made already (``_Live``)
    plain: list[_Opened] | None = None  # the open positions as ``_valuate_plain`` lists them (no cache)

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
        """The open positions' views (the figures of ``_view``, made the same way), each figure made
        again only when one of its inputs changed since its entry made it (``_Entry``). Called before
        the next valuation with the same cache (the entries hold this valuation's marks)."""
        if self.made is not None and total_value is self.total_value:
            return list(self.made)
        rates = conv.rates
        if self.plain is not None:  # no cache: each view made by ``_view``, straight from its figures
            only = self.only
            out = []
            for venue, pair, pos, day, quote, mark, value, unrealized in self.plain:
                rate = rates[quote] if quote in rates else conv.rate(quote)
                view = _view(pos, pair, self.exps[quote], mark, value, unrealized, rate, day, total_value)
                if venue is not None:
                    view = msgspec.structs.replace(view, id=position_id(venue, pair, pos.cycle, only), exchange=venue)
                out.append(view)
            return out
        exps = self.exps
        only = self.only
        positive = total_value > ZERO
        out: list[PositionView] = []
        for e in self.opened:
            quote = e.quote
            rate = rates[quote] if quote in rates else conv.rate(quote)
            out.append(_marked_view(e, exps[quote], rate, total_value, positive, only))
        return out


def _same_rate(a: Decimal | None, b: Decimal | None) -> bool:
    """The same rate for positionSize (the same number: the rounded quotient depends on it alone)."""
    return a == b if a is not None and b is not None else a is b


def _size(e: _Entry, value: Decimal, rate: Decimal | None, total: Decimal) -> Decimal:
    """``riskMetrics.positionSize``: abs(value in the base currency) / ``total`` (> 0), rounded. The rounded
    quotient never rises as the total rises (a correctly rounded quotient, then rounded again), so once two
    totals gave the same size every total between them gives it too: the entry keeps that range
    (``p_lo``..``p_hi``) for its value and rate and divides only for a total outside it."""
    if e.p_value is value and _same_rate(rate, e.p_rate):
        if e.p_lo <= total <= e.p_hi:
            return e.size  # type: ignore[no-any-return]
        size = _position_size(value, rate, total)
        if size == e.size:
            if total < e.p_lo:
                e.p_lo = total
            else:
                e.p_hi = total
            return e.size  # type: ignore[no-any-return]
    else:
        size = _position_size(value, rate, total)
    e.p_value, e.p_rate, e.p_lo, e.p_hi, e.size = value, rate, total, total, size
    # the totals that give this size reach about |value| / (size +- half its last digit): taken (a little
    # inside) when the size there is this one too, so that every total between gives it (see above)
    v = abs(value if rate is ONE else value * rate if rate is not None else ZERO)
    lo = v / (size + _HALF_RATIO) * _INSIDE_UP
    if ZERO < lo < total and (v / lo).quantize(_RATIO_EXP, ROUND_HALF_EVEN) == size:
        e.p_lo = lo
    if size <= _HALF_RATIO:  # 0: any larger total gives 0 too
        e.p_hi = _INFINITY
    else:
        hi = v / (size - _HALF_RATIO) * _INSIDE_DOWN
        if hi > total and (v / hi).quantize(_RATIO_EXP, ROUND_HALF_EVEN) == size:
            e.p_hi = hi
    return size


_HALF_RATIO = _RATIO_EXP / 2
_INSIDE_UP, _INSIDE_DOWN = ONE + Decimal("1e-18"), ONE - Decimal("1e-18")
_INFINITY = Decimal("Infinity")


def _marked_view(
    e: _Entry,
    exp: Decimal,
    rate: Decimal | None,
    total: Decimal,
    positive: bool,
    only: str | None,
    check: bool = True,
) -> PositionView:
    """One open position's view at this valuation (``_view``'s figures), from its entry: what depends on
    the position alone, its marked figures, its day P&L and its positionSize, each made again only when
    one of its inputs is another object (``_Entry``); ``check`` false: the position is known unchanged
    since its view was made (``_Live``: no fill noted for it), only its marked figures are looked at."""
    pos = e.pos
    q = pos.quantity
    realized = pos.realized_pnl
    cur = pos.current
    if e.view is None or (
        check
        and (  # what depends on the position alone
            e.s_q is not q
            or e.s_avg is not pos.average_price
            or e.s_real is not realized
            or e.s_fees is not pos.fees
            or e.s_cycle is not pos.cycle
            or e.s_opened is not pos.opened_at
            or e.s_updated is not pos.updated_at
            or e.s_cur is not cur
            or (cur is not None and (e.s_cur_real is not cur.realized or e.s_cur_fees is not cur.fees))
            or e.s_exp is not exp
            or e.s_only != only
        )
    ):
        _static_view(e, pos, exp, only)
    value = e.value
    unrealized = e.unrealized
    if e.r_value is not value or e.r_unrealized is not unrealized or e.r_exp is not exp:
        e.r_value, e.r_unrealized, e.r_exp = value, unrealized, exp
        e.market_value = value.quantize(exp, ROUND_HALF_EVEN)
        e.unrealized_pnl = unrealized.quantize(exp, ROUND_HALF_EVEN)
    day = e.day
    dr = day.realized.get(e.pair, ZERO)  # type: ignore[union-attr]
    du = day.unrealized.get(e.pair, ZERO)  # type: ignore[union-attr]
    if (
        e.d_dr is not dr
        or e.d_du is not du
        or e.d_real is not realized
        or e.d_unr is not unrealized
        or e.d_exp is not exp
    ):
        e.d_dr, e.d_du, e.d_real, e.d_unr, e.d_exp = dr, du, realized, unrealized, exp
        e.day_pnl = ((realized - dr) + (unrealized - du)).quantize(exp, ROUND_HALF_EVEN)
    size = _size(e, value, rate, total) if positive else ZERO
    view = e.view.__copy__()  # type: ignore[union-attr]
    view.current_price = e.mark
    view.market_value = e.market_value
    view.unrealized_pnl = e.unrealized_pnl
    view.day_pnl = e.day_pnl
    view.risk_metrics = RiskMetrics(position_size=size, leverage=ONE, liquidation_price=None)
    return view


def _static_view(e: _Entry, pos: Position, exp: Decimal, only: str | None) -> None:
    """The part of a position's view that depends on the position alone, made by ``_view`` (the one function
    that makes a position's view, as the valuation without a cache does) without a mark: its marked figures
    are filled in by ``_marked_view``. Remembered with what it was made from."""
    e.s_q, e.s_avg, e.s_real, e.s_fees = pos.quantity, pos.average_price, pos.realized_pnl, pos.fees
    e.s_cycle, e.s_opened, e.s_updated, e.s_cur = pos.cycle, pos.opened_at, pos.updated_at, pos.current
    e.s_exp, e.s_only = exp, only
    cur = pos.current
    if cur is not None:
        e.s_cur_real, e.s_cur_fees = cur.realized, cur.fees
    view = _view(pos, e.pair, exp, None, ZERO, ZERO, None, _NO_DAY, ZERO)
    view.id = position_id(e.venue, e.pair, pos.cycle, only)
    view.exchange = e.venue
    e.view = view


_NO_DAY = DayStart()  # (read only)


class _Money:
    """One currency's balance view and figures as the last valuation made them (see ``_Entry``: an input is
    the very object it was made from, or the view is made again): from the ``Balance`` (its total, locked,
    correction and reserved), the rounding quantum and whether it is the base currency."""

    __slots__ = (
        "b",
        "base",
        "correction",
        "exp",
        "figures",
        "listed",
        "locked",
        "reserved",
        "rounded",
        "total",
        "view",
        "zero_figures",
    )

    def __init__(self) -> None:
        self.b: Balance | Any | None = _UNSET
        self.total = self.locked = self.correction = self.reserved = self.exp = self.base = _UNSET
        self.rounded = ZERO
        self.view: BalanceView | None = None
        self.zero_figures: CurrencyFigures | None = None
        self.figures: CurrencyFigures | None = None  # as listed in byCurrency (_Live)
        self.listed = False


def _money_view(m: _Money, c: str, b: Balance | None, balance: Decimal, exp: Decimal, base: str) -> None:
    """``m`` made again from ``b`` (``balance``: its total, 0 without one): the balance view (None when
    it lists nothing) and the figures of a currency no pair is quoted in (None when it is not listed)."""
    m.b, m.total, m.exp, m.base = b, balance, exp, base
    total = m.rounded = balance.quantize(exp, ROUND_HALF_EVEN)
    m.view = None
    if b is not None:
        m.locked, m.correction, m.reserved = b.locked, b.correction, b.reserved
        if balance or b.unavailable or c == base:
            not_free = b.unavailable  # at the venue (held) and reserved by algorithm parents: not available
            locked = not_free.quantize(exp, ROUND_HALF_EVEN)
            available = total if not not_free else b.available.quantize(exp, ROUND_HALF_EVEN)
            reserved = b.reserved.quantize(exp, ROUND_HALF_EVEN)
            m.view = BalanceView(currency=c, total=total, available=available, locked=locked, reserved=reserved)
    m.zero_figures = None
    if balance or c == base:
        zero = _ZEROS[exp]
        m.zero_figures = CurrencyFigures(realized_pnl=zero, unrealized_pnl=zero, fees_paid=zero, balance=total)


class _Live:
    """The valuation of one ledger (one venue's books, or a lone Ledger) kept from one call to the next
    (``ViewCache``): each call reads what changed since the last one - the pairs and currencies the ledger
    noted (``Ledger.watch``) and the marks that are other objects than last time - and makes again only
    the figures that depend on them; every sum the valuation reports is made again, in the books' order,
    whenever one of its terms changed (so it is the very sum ``_valuate`` makes), and each open position's
    positionSize is checked against the new total (``_size``). Anything else (another ledger, rounding,
    day start, venue or base currency; a position or balance gone or replaced) starts it afresh."""

    __slots__ = (
        "balance_views",
        "base",
        "by_base",
        "by_currency",
        "by_quote",
        "cash",
        "changes",
        "contributing",
        "currencies",
        "day",
        "entries",
        "fees",
        "held",
        "index",
        "ledger",
        "marked",
        "marks",
        "money",
        "n_balances",
        "only",
        "opened",
        "positions_value",
        "positive",
        "r",
        "rates",
        "realized",
        "seen",
        "terms",
        "total",
        "unrealized",
        "venue",
        "views",
        "vterms",
    )

    def __init__(self, ledger: Ledger, day: DayStart, r: Rounding, only: str | None, venue: str | None) -> None:
        self.ledger = ledger
        self.changes = ledger.watch()
        self.seen = -1  # nothing valued yet: everything is new
        self.day, self.r, self.only, self.venue, self.base = day, r, only, venue, ledger.base_currency
        self.entries: dict[str, _Entry] = {}  # in the ledger's order
        self.by_quote: dict[str, list[_Entry]] = {}  # every position, by quote currency, in the ledger's order
        self.by_base: dict[str, list[_Entry]] = {}  # every position, by base currency, in the ledger's order
        self.marked: dict[str, list[_Entry]] = {}  # the open positions with a mark, by quote, in order
        # the terms of the sums, in the order of by_quote (realized, fees) and of marked (value, unrealized)
        self.terms: dict[str, tuple[list[Decimal], list[Decimal]]] = {}
        self.vterms: dict[str, tuple[list[Decimal], list[Decimal]]] = {}
        self.realized: dict[str, Decimal] = {}
        self.fees: dict[str, Decimal] = {}
        self.positions_value: dict[str, Decimal] = {}
        self.unrealized: dict[str, Decimal] = {}
        self.held: dict[str, Decimal] = {}
        self.money: dict[str, _Money] = {}
        self.cash: dict[str, Decimal] = {}
        self.contributing: set[str] = set()  # currencies with cash or figures to convert
        self.currencies: list[str] = []  # sorted
        self.n_balances = 0
        self.balance_views: list[BalanceView] = []
        self.index: dict[str, int] = {}  # currency -> its place in balance_views
        self.by_currency: dict[str, CurrencyFigures] = {}
        self.opened: list[_Entry] = []  # sorted by pair
        self.views: list[PositionView] = []
        self.marks: dict[str, Decimal] = {}  # the marks of the last call
        self.rates: dict[str, Decimal | None] = {}  # per quote, the rate the sizes were made with
        self.total: Decimal | None = None  # the total value the views were sized for
        self.positive: bool | None = None  # whether it was above zero (positionSize 0 otherwise)

    def fits(self, ledger: Ledger, day: DayStart, r: Rounding, only: str | None) -> bool:
        return (
            ledger is self.ledger
            and (day is self.day or (_no_day(day) and _no_day(self.day)))
            and r is self.r
            and only == self.only
            and ledger.base_currency == self.base
            and len(ledger.positions) >= len(self.entries)
            and len(ledger.balances) >= self.n_balances
        )

    def value(self, marks: Mapping[str, Decimal], conv: Converter) -> _Valued | None:
        """This call's valuation; None when the books changed in a way it does not follow (start afresh)."""
        led = self.ledger
        positions = led.positions
        balances = led.balances
        entries = self.entries
        fresh = self.seen < 0
        pairs, currencies = self.changes.since(self.seen)
        self.seen = self.changes.rev
        changed = set(pairs)
        refresh = set(currencies)
        # positions new since the last call (the ledger only adds them, at the end)
        if len(positions) > len(entries):
            venue, day = self.venue, self.day
            for pair, pos in islice(positions.items(), len(entries), None):
                e = entries[pair] = _Entry(pos, pair, venue)
                e.day = day
                self.by_quote.setdefault(e.quote, []).append(e)
                self.by_base.setdefault(e.base, []).append(e)
                changed.add(pair)
        # marks that are other objects than last time
        prev = self.marks
        moved = [p for p, m in marks.items() if prev.get(p) is not m]
        added = sum(1 for p in moved if p not in prev)
        gone = [p for p in prev if p not in marks] if len(prev) + added != len(marks) else []
        for p in moved:
            prev[p] = marks[p]
        for p in gone:
            del prev[p]
        touched = changed.union(p for p in moved if p in entries)
        touched.update(p for p in gone if p in entries)

        dirty: set[_Entry] = set()
        state_quotes: set[str] = set()
        value_quotes: set[str] = set()
        marked_quotes: set[str] = set()
        bases: set[str] = set()
        reopened = fresh
        for pair in touched:
            e = entries[pair]
            pos = positions.get(pair)
            if pos is not e.pos:
                return None  # replaced: start afresh
            quote = e.quote
            if pair in changed:
                state_quotes.add(quote)
                bases.add(e.base)
            q = pos.quantity
            mark = marks.get(pair)
            if mark is None:
                mark = pos.last_price
            is_open = bool(q)
            is_marked = is_open and mark is not None
            if is_marked:
                avg = pos.average_price
                if e.m_mark is not mark or e.m_q is not q or e.m_avg is not avg:
                    e.m_mark, e.m_q, e.m_avg = mark, q, avg
                    e.value = q * mark
                    e.unrealized = q * (mark - avg)
                    value_quotes.add(quote)
            else:
                if e.value is not ZERO or e.unrealized is not ZERO:
                    value_quotes.add(quote)
                e.value = e.unrealized = ZERO
                e.m_mark = _UNSET
            if is_marked != e.is_marked:
                e.is_marked = is_marked
                marked_quotes.add(quote)
                value_quotes.add(quote)
            if is_open != e.is_open:
                e.is_open = is_open
                reopened = True
            e.mark = mark
            dirty.add(e)

        # the sums, each in the books' order as _valuate makes it
        for quote in state_quotes:
            if quote not in self.marked:  # a new quote currency
                marked_quotes.add(quote)
                value_quotes.add(quote)
        terms = self.terms
        for quote in state_quotes:
            lst = self.by_quote[quote]
            t = terms.get(quote)
            if t is None or len(t[0]) != len(lst):
                for i, e in enumerate(lst):
                    e.qi = i
                t = terms[quote] = ([e.pos.realized_pnl for e in lst], [e.pos.fees for e in lst])
        for pair in changed:
            e = entries[pair]
            t = terms[e.quote]
            t[0][e.qi] = e.pos.realized_pnl
            t[1][e.qi] = e.pos.fees
        for quote in state_quotes:
            t = terms[quote]
            self.realized[quote] = sum(t[0], ZERO)
            self.fees[quote] = sum(t[1], ZERO)
        vterms = self.vterms
        for quote in marked_quotes:
            m = self.marked[quote] = [e for e in self.by_quote[quote] if e.is_marked]
            for i, e in enumerate(m):
                e.mi = i
            vterms[quote] = ([e.value for e in m], [e.unrealized for e in m])
        for e in dirty:
            if e.is_marked and e.quote not in marked_quotes:
                vt = vterms[e.quote]
                vt[0][e.mi] = e.value
                vt[1][e.mi] = e.unrealized
        for quote in value_quotes:
            vt = vterms[quote]
            self.positions_value[quote] = sum(vt[0], ZERO)
            self.unrealized[quote] = sum(vt[1], ZERO)
        held = self.held
        for c in bases:
            h = None
            for e in self.by_base[c]:
                q = e.pos.quantity
                if q:
                    h = q if h is None else h + q
            if h is None:
                held.pop(c, None)
            else:
                held[c] = h
        refresh |= bases
        refresh |= state_quotes
        refresh |= value_quotes

        # the currencies: each refreshed one's cash, balance view and figures
        base = self.base
        by_quote = self.by_quote
        new_currencies = fresh or len(balances) != self.n_balances or any(q not in self.money for q in by_quote)
        if new_currencies:
            self.currencies = sorted(balances.keys() | by_quote.keys())
            self.n_balances = len(balances)
            refresh = set(self.currencies)
        decimals, default = self.r.decimals, self.r.default
        money = self.money
        relist = new_currencies
        for c in refresh:
            b = balances.get(c)
            balance = b.total if b is not None else ZERO
            h = held.get(c)
            cash = balance if h is None else balance - h
            self.cash[c] = cash
            quoted = c in by_quote
            if cash or (quoted and (self.positions_value[c] or self.realized[c] or self.unrealized[c] or self.fees[c])):
                self.contributing.add(c)
            else:
                self.contributing.discard(c)
            exp = _EXP[decimals.get(c, default)]
            m = money.get(c)
            if m is None:
                m = money[c] = _Money()
            was = (m.view is not None, m.listed)
            if (
                m.b is not b
                or m.total is not balance
                or m.exp is not exp
                or m.base != base
                or (
                    b is not None
                    and (m.locked is not b.locked or m.correction is not b.correction or m.reserved is not b.reserved)
                )
            ):
                _money_view(m, c, b, balance, exp, base)
            if quoted:
                m.figures = CurrencyFigures(
                    realized_pnl=self.realized[c].quantize(exp, ROUND_HALF_EVEN),
                    unrealized_pnl=self.unrealized[c].quantize(exp, ROUND_HALF_EVEN),
                    fees_paid=self.fees[c].quantize(exp, ROUND_HALF_EVEN),
                    balance=m.rounded,
                )
            else:
                m.figures = m.zero_figures
            m.listed = m.figures is not None
            if relist:
                continue
            if (m.view is not None, m.listed) != was:
                relist = True
                continue
            if m.view is not None:
                self.balance_views[self.index[c]] = m.view
            if m.figures is not None:
                self.by_currency[c] = m.figures
        if relist:  # a currency listed or unlisted: the lists made again, in order
            views = [money[c].view for c in self.currencies if money[c].view is not None]
            at = next((i for i, v in enumerate(views) if v.currency == base), None)  # type: ignore[union-attr]
            if at:  # the base currency's balance first
                views.insert(0, views.pop(at))
            self.balance_views = views  # type: ignore[assignment]
            self.index = {v.currency: i for i, v in enumerate(self.balance_views)}
            self.by_currency = {c: money[c].figures for c in self.currencies if money[c].figures is not None}  # type: ignore[misc]

        # the totals, over the currencies in order
        cash_total = positions_total = realized_total = unrealized_total = fees_total = ZERO
        unconverted: list[str] = []
        used: dict[str, Decimal] = {}
        for c in sorted(self.contributing):
            rate = conv.rate(c)
            if rate is None:
                unconverted.append(c)
            else:
                used[c] = rate
                cash_total += self.cash[c] * rate
                if c in by_quote:
                    positions_total += self.positions_value[c] * rate
                    realized_total += self.realized[c] * rate
                    unrealized_total += self.unrealized[c] * rate
                    fees_total += self.fees[c] * rate
        total_value = cash_total + positions_total
        exps = {quote: _EXP[decimals.get(quote, default)] for quote in by_quote}

        # the views: those whose position or mark changed made again, the others' positionSize checked
        only = self.only
        positive = total_value > ZERO
        rates = {quote: conv.rate(quote) for quote in by_quote}
        stale = {quote for quote, rate in rates.items() if not _same_rate(rate, self.rates.get(quote, _UNSET))}
        self.rates = rates
        if reopened or positive is not self.positive:
            self.opened = sorted((e for e in entries.values() if e.is_open), key=_order_key)
            views = self.views = []
            for i, e in enumerate(self.opened):
                e.at = i
                views.append(_marked_view(e, exps[e.quote], rates[e.quote], total_value, positive, only))
        else:
            views = self.views
            if stale:
                dirty.update(e for e in self.opened if e.quote in stale)
            for e in dirty:
                if e.is_open:
                    quote = e.quote
                    check = e.pair in changed or e.quote in stale
                    views[e.at] = _marked_view(e, exps[quote], rates[quote], total_value, positive, only, check)
            if positive and total_value != self.total:  # every positionSize checked against the new total
                for i, e in enumerate(self.opened):
                    if e.p_lo <= total_value <= e.p_hi:  # (made at this total already, or sized alike for it)
                        continue
                    size = _size(e, e.value, rates[e.quote], total_value)
                    view = views[i]
                    if size is not view.risk_metrics.position_size:
                        view = views[i] = view.__copy__()
                        view.risk_metrics = RiskMetrics(position_size=size, leverage=ONE, liquidation_price=None)
        self.positive = positive
        self.total = total_value
        return _Valued(
            base=base,
            total_value=total_value,
            cash_total=cash_total,
            positions_total=positions_total,
            realized_total=realized_total,
            unrealized_total=unrealized_total,
            fees_total=fees_total,
            by_currency=dict(self.by_currency),
            unconverted=unconverted,
            used=used,
            balance_views=list(self.balance_views),
            opened=self.opened,
            exps=exps,
            only=only,
            made=self.views,
        )


def _no_day(day: DayStart) -> bool:
    """A day start that is none yet (``DayStart()``): any two of them value alike."""
    return not day.day and not day.realized and not day.unrealized


def _order_key(e: _Entry) -> tuple[str, str]:
    return (e.pair, e.venue or "")


def _valuate(
    parts: Sequence[tuple[str | None, Ledger, DayStart]],
    balances: Mapping[str, Balance],
    marks: Mapping[str, Decimal],
    conv: Converter,
    r: Rounding,
    only: str | None,
    cache: ViewCache | None,
) -> _Valued:
    """Value the positions of ``parts`` (venue, ledger, its day start) and the ``balances`` (theirs,
    summed): one pass, exact sums, rounded once at the end (the summary in ``_Valued.summary``). Each
    position's market value and unrealized P&L are made again only when its mark, quantity or average
    price is another object than the entry made them from; every sum is made afresh, in the books' order.
    With a cache, the books of one ledger are valued by its ``_Live`` (only what changed since its last call).
    Without one (the first valuation after a start, books made for one call): ``_valuate_plain``."""
    if cache is None:
        return _valuate_plain(parts, balances, marks, conv, r, only)
    if len(parts) == 1 and balances is parts[0][1].balances:
        venue, ledger, day = parts[0]
        live = cache.live.get(venue)
        if live is None or not live.fits(ledger, day, r, only):
            live = cache.live[venue] = _Live(ledger, day, r, only, venue)
        val = live.value(marks, conv)
        if val is None:  # the books changed in a way it does not follow: afresh
            live = cache.live[venue] = _Live(ledger, day, r, only, venue)
            val = live.value(marks, conv)
        if val is not None:
            return val
    base = conv.base
    figs: dict[str, _Figures] = {}  # by quote currency
    held: dict[str, Decimal] = {}  # units held as open positions, by base currency
    opened: list[_Entry] = []
    append = opened.append
    for venue, ledger, day in parts:
        positions = ledger.positions
        entries = cache.venues.get(venue)
        if entries is None or len(entries) > len(positions):  # (a position gone: its entry too)
            entries = cache.venues[venue] = {p: e for p, e in (entries or {}).items() if positions.get(p) is e.pos}
        for pair, pos in positions.items():
            e = entries.get(pair)
            if e is None or e.pos is not pos:
                e = entries[pair] = _Entry(pos, pair, venue)
            quote = e.quote
            f = figs.get(quote)
            if f is None:
                f = figs[quote] = _Figures()
            f.realized += pos.realized_pnl
            f.fees += pos.fees
            q = pos.quantity
            if not q:
                continue
            base_c = e.base
            h = held.get(base_c)
            held[base_c] = q if h is None else h + q
            mark = marks.get(pair)
            if mark is None:
                mark = pos.last_price
            if mark is None:
                e.value = e.unrealized = ZERO
                e.m_mark = _UNSET
            else:
                avg = pos.average_price
                if e.m_mark is not mark or e.m_q is not q or e.m_avg is not avg:
                    e.m_mark, e.m_q, e.m_avg = mark, q, avg
                    e.value = q * mark
                    e.unrealized = q * (mark - avg)
                f.positions += e.value
                f.unrealized += e.unrealized
            e.mark = mark
            e.day = day
            append(e)
    order_key = tuple(v for v, _, _ in parts)
    last = cache.orders.get(order_key)
    if last is not None and last[0] == opened:  # the same positions open as last time: the same order
        ordered = last[1]
    else:
        ordered = sorted(opened, key=_order_key)
        cache.orders[order_key] = (opened, ordered)

    cash_total = positions_total = realized_total = unrealized_total = fees_total = ZERO
    unconverted: list[str] = []
    used: dict[str, Decimal] = {}
    by_currency: dict[str, CurrencyFigures] = {}
    balance_views: list[BalanceView] = []
    decimals, default = r.decimals, r.default
    money = cache.money.get(order_key)
    if money is None:
        money = cache.money[order_key] = {}
    elif len(money) > len(balances) + len(figs):  # (a currency gone: its entry too)
        money = cache.money[order_key] = {c: m for c, m in money.items() if c in balances or c in figs}
    listed = list(balances)
    quoted = tuple(figs)
    known = cache.currencies.get(order_key)
    if known is not None and known[0] == listed and known[1] == quoted:  # the same currencies as last time
        currencies = known[2]
    else:
        currencies = sorted(balances.keys() | figs.keys())
        cache.currencies[order_key] = (listed, quoted, currencies)
    base_at = None
    for c in currencies:
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
        exp = _EXP[decimals.get(c, default)]
        m = money.get(c)
        if m is None:
            m = money[c] = _Money()
        if (
            m.b is not b
            or m.total is not balance
            or m.exp is not exp
            or m.base != base
            or (
                b is not None
                and (m.locked is not b.locked or m.correction is not b.correction or m.reserved is not b.reserved)
            )
        ):
            _money_view(m, c, b, balance, exp, base)
        if m.view is not None:
            if c == base:
                base_at = len(balance_views)
            balance_views.append(m.view.__copy__())
        if f is _NONE:
            if m.zero_figures is not None:
                by_currency[c] = m.zero_figures.__copy__()
        else:
            by_currency[c] = CurrencyFigures(
                realized_pnl=f.realized.quantize(exp, ROUND_HALF_EVEN),
                unrealized_pnl=f.unrealized.quantize(exp, ROUND_HALF_EVEN),
                fees_paid=f.fees.quantize(exp, ROUND_HALF_EVEN),
                balance=m.rounded,
            )
    if base_at:  # the base currency's balance first
        balance_views.insert(0, balance_views.pop(base_at))
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
        opened=ordered,
        exps={quote: r.exponent(quote) for quote in figs},
        only=only,
    )


_Opened = tuple[str | None, str, Position, DayStart, str, "Decimal | None", Decimal, Decimal]


def _valuate_plain(
    parts: Sequence[tuple[str | None, Ledger, DayStart]],
    balances: Mapping[str, Balance],
    marks: Mapping[str, Decimal],
    conv: Converter,
    r: Rounding,
    only: str | None,
) -> _Valued:
    """``_valuate`` without a cache: every figure made straight from the books and marks, in one pass, exact
    sums, rounded once at the end. The valuation's plain form: the cached one (``_valuate`` with a
    ``ViewCache``, ``_Live``) gives the very same output (tests/unit/test_valuation_fast.py)."""
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
                zero = _ZEROS[exp]
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
        opened=[],
        exps={quote: r.exponent(quote) for quote in figs},
        only=only,
        plain=opened,
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
