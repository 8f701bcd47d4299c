"""Performance metrics, hand-checkable. Pure.

Inputs: the equity curve (samples of total value over time), the initial balance, and the closed
position cycles (round trips). Formulas:

- period return: with E_k the last equity sample of period k (UTC day ``YYYY-MM-DD``, ISO week
  ``YYYY-Www``, month ``YYYY-MM``) and E_0 the initial balance, r_k = E_k / E_(k-1) - 1;
  the initial balance is INITIAL_BALANCE, or, once a live venue's opening balances replaced it, what
  they were worth in the base currency (``EquityTracker.open_at`` / ``settle``);
- total return = E_now / initial - 1;
- drawdown: with P the running peak of equity (starting at the initial balance), drawdown = P - E and
  drawdown % = (P - E) / P; max drawdown is the largest over the curve, current drawdown the last;
- Sharpe = mean(r_d) / stdev(r_d) x sqrt(365), over daily returns r_d, stdev the sample standard
  deviation (n - 1), risk-free rate 0; annualised with 365 because crypto trades every day;
- Sortino = mean(r_d) / downside deviation x sqrt(365), downside deviation = sqrt(sum(min(r_d, 0)^2) / n);
  both need at least two daily returns and are absent (null) when undefined (no dispersion / no loss);
- a round trip is a closed position cycle; a win has realized P&L (fees subtracted) > 0, a loss < 0;
  win rate = wins / round trips; profit factor = sum of wins / |sum of losses| (null without losses);
  expectancy = sum of realized P&L / round trips; average win = sum of wins / wins; average loss =
  sum of losses / losses (negative).

Currencies: equity is the converted total value (domain/valuation.py); a round trip's P&L and fees,
in its pair's quote currency, are converted into the base currency at the latest marks before they
are added up (overall and per pair). A pair quoted in a currency that cannot be converted keeps its
own figures, labelled with that currency, and stays out of the overall figures (``unconverted``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.ledger import ClosedCycle, Ledger, Position
from domain.valuation import DEFAULT_BRIDGE, EXACT_ENOUGH, Converter, Rounding, books_equity, combined_marks
from domain.valuation import equity as total_equity
from domain.venue_ledgers import VenueLedgers
from schemas.messages import EquityPoint, PairPerformance, Performance, PeriodReturn, TradeStatsView
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
ONE = Decimal(1)
DAYS_PER_YEAR = Decimal(365)
UTC = dt.UTC

Point = tuple[int, Decimal]  # (epoch ms, equity)


def day_of(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d")


def week_of(ts: int) -> str:
    y, w, _ = dt.datetime.fromtimestamp(ts / 1000, UTC).isocalendar()
    return f"{y}-W{w:02d}"


def month_of(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m")


def period_returns(
    points: Sequence[Point], initial: Decimal, period: Callable[[int], str]
) -> list[tuple[str, Decimal]]:
    """Return of each period from its last equity sample and the previous period's (initial for the first)."""
    closes: dict[str, Decimal] = {}
    for ts, e in points:
        closes[period(ts)] = e  # points are in time order: the last one of a period wins
    out = []
    prev = initial
    for key in sorted(closes):
        e = closes[key]
        out.append((key, e / prev - 1 if prev else ZERO))
        prev = e
    return out


@dataclass(frozen=True, slots=True)
class Drawdown:
    max_amount: Decimal
    max_pct: Decimal
    current_amount: Decimal
    current_pct: Decimal


def drawdown(points: Sequence[Point], initial: Decimal) -> Drawdown:
    peak = initial
    max_amount = max_pct = cur_amount = cur_pct = ZERO
    for _, e in points:
        peak = max(peak, e)
        cur_amount = peak - e
        cur_pct = cur_amount / peak if peak > ZERO else ZERO
        if cur_amount > max_amount:
            max_amount = cur_amount
        if cur_pct > max_pct:
            max_pct = cur_pct
    return Drawdown(max_amount, max_pct, cur_amount, cur_pct)


def mean(xs: Sequence[Decimal]) -> Decimal:
    return sum(xs, ZERO) / len(xs)


def sharpe(daily: Sequence[Decimal]) -> Decimal | None:
    if len(daily) < 2:
        return None
    m = mean(daily)
    var = sum(((r - m) ** 2 for r in daily), ZERO) / (len(daily) - 1)
    if var == ZERO:
        return None
    return m / var.sqrt() * DAYS_PER_YEAR.sqrt()


def sortino(daily: Sequence[Decimal]) -> Decimal | None:
    if len(daily) < 2:
        return None
    downside = (sum((min(r, ZERO) ** 2 for r in daily), ZERO) / len(daily)).sqrt()
    if downside == ZERO:
        return None
    return mean(daily) / downside * DAYS_PER_YEAR.sqrt()


@dataclass(frozen=True, slots=True)
class TradeStats:
    round_trips: int
    wins: int
    losses: int
    win_rate: Decimal | None
    profit_factor: Decimal | None
    expectancy: Decimal | None
    average_win: Decimal | None
    average_loss: Decimal | None
    gross_profit: Decimal
    gross_loss: Decimal
    realized_pnl: Decimal
    fees: Decimal


def trade_stats(cycles: Iterable[ClosedCycle], rate: Callable[[ClosedCycle], Decimal] | None = None) -> TradeStats:
    """Round-trip statistics; with ``rate``, each cycle's P&L and fees are first multiplied by its rate
    (e.g. into the base currency)."""
    cycles = list(cycles)
    if rate is None:
        pnls = [c.realized_pnl for c in cycles]
        fees = sum((c.fees for c in cycles), ZERO)
    else:
        rates = [rate(c) for c in cycles]
        pnls = [c.realized_pnl * x for c, x in zip(cycles, rates, strict=True)]
        fees = sum((c.fees * x for c, x in zip(cycles, rates, strict=True)), ZERO)
    wins = [p for p in pnls if p > ZERO]
    losses = [p for p in pnls if p < ZERO]
    gross_profit = sum(wins, ZERO)
    gross_loss = sum(losses, ZERO)
    n = len(pnls)
    return TradeStats(
        round_trips=n,
        wins=len(wins),
        losses=len(losses),
        win_rate=Decimal(len(wins)) / n if n else None,
        profit_factor=gross_profit / -gross_loss if losses else None,
        expectancy=sum(pnls, ZERO) / n if n else None,
        average_win=gross_profit / len(wins) if wins else None,
        average_loss=gross_loss / len(losses) if losses else None,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        realized_pnl=sum(pnls, ZERO),
        fees=fees,
    )


def downsample(points: Sequence[Point], at_most: int) -> list[Point]:
    """At most ``at_most`` points spread evenly over the curve, always keeping the first and the last."""
    n = len(points)
    if n <= at_most:
        return list(points)
    if at_most <= 1:
        return list(points[-1:]) if at_most == 1 else []
    step = (n - 1) / (at_most - 1)
    return [points[round(i * step)] for i in range(at_most)]


MAX_CURVE_POINTS = 10_000
CURVE_STEP_MS = 60_000
CURVE_OUTPUT_POINTS = 500


@dataclass(slots=True)
class EquityTracker:
    """The equity curve, sampled: at most one point a minute (the latest of that minute), the last
    MAX_CURVE_POINTS of them; the close of every UTC day for ever; the running peak and the worst
    drawdown seen."""

    initial: Decimal  # the starting equity: INITIAL_BALANCE, or the opening balances of a live venue
    curve: list[tuple[int, Decimal]] = field(default_factory=list)
    closes: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    # the highest and the lowest sample of every UTC day, for ever (with their times): a window longer than the
    # one-minute curve still sees each day's peak and trough (its drawdown: ``window_points``)
    highs: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    lows: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    peak: Decimal | None = None
    max_dd: Decimal = ZERO
    max_dd_pct: Decimal = ZERO
    opening: str | None = None  # the reading whose balances became the opening balances (venue:seq)
    opening_pending: bool = False  # the starting equity still follows the marks (not every currency converted yet)
    openings: list[str] = field(default_factory=list)  # every opening adopted (several venues: one each)

    def open_at(self, key: str, equity: Decimal) -> bool:
        """Start again from a venue's opening balances worth ``equity`` (provisional until ``settle``): the
        equity of every venue's books, so with several live venues each one's opening starts the figures
        again. False when that opening was adopted already (a replay, of any venue's opening)."""
        if self.opening == key or key in self.openings:
            return False
        self.openings.append(key)
        self.initial, self.opening, self.opening_pending = equity, key, True
        self.curve, self.closes, self.peak, self.max_dd, self.max_dd_pct = [], {}, None, ZERO, ZERO
        self.highs, self.lows = {}, {}
        return True

    def settle(self, equity: Decimal, complete: bool) -> None:
        """While the opening is provisional, its starting equity is the equity now (no trade yet counts
        as one); fixed at the first revaluation where every currency converts (``complete``)."""
        if self.opening_pending:
            self.initial = equity
            self.opening_pending = not complete

    def sample(self, ts: int, equity: Decimal) -> None:
        if self.curve and ts // CURVE_STEP_MS == self.curve[-1][0] // CURVE_STEP_MS:
            self.curve[-1] = (ts, equity)
        else:
            self.curve.append((ts, equity))
            if len(self.curve) > MAX_CURVE_POINTS:
                del self.curve[: len(self.curve) - MAX_CURVE_POINTS]
        day = day_of(ts)
        self.closes[day] = (ts, equity)
        if (hi := self.highs.get(day)) is None or equity >= hi[1]:
            self.highs[day] = (ts, equity)
        if (lo := self.lows.get(day)) is None or equity <= lo[1]:
            self.lows[day] = (ts, equity)
        peak = max(self.peak if self.peak is not None else self.initial, equity)
        self.peak = peak
        dd = peak - equity
        if dd > self.max_dd:
            self.max_dd = dd
        if peak > ZERO and dd / peak > self.max_dd_pct:
            self.max_dd_pct = dd / peak

    def daily_points(self) -> list[tuple[int, Decimal]]:
        return [self.closes[d] for d in sorted(self.closes)]

    def window_points(self, since: int) -> list[tuple[int, Decimal]]:
        """The equity samples known from ``since`` on, in time order: the one-minute curve (its last
        MAX_CURVE_POINTS) and, before it and beside it, each day's highest, lowest and closing sample - so a
        window's drawdown sees a fall of any day in it, not only of the days the curve still holds."""
        merged = dict(p for p in self.curve if p[0] >= since)
        for days in (self.highs, self.lows, self.closes):
            for ts, e in days.values():
                if ts >= since:
                    merged.setdefault(ts, e)
        return sorted(merged.items())


def _stats_view(t: TradeStats, r: Rounding, currency: str) -> TradeStatsView:
    def money(x: Decimal | None) -> Decimal | None:
        return None if x is None else r.money(x, currency)

    def ratio(x: Decimal | None) -> Decimal | None:
        return None if x is None else r.ratio(x)

    return TradeStatsView(
        round_trips=t.round_trips,
        wins=t.wins,
        losses=t.losses,
        win_rate=ratio(t.win_rate),
        profit_factor=ratio(t.profit_factor),
        expectancy=money(t.expectancy),
        average_win=money(t.average_win),
        average_loss=money(t.average_loss),
        gross_profit=r.money(t.gross_profit, currency),
        gross_loss=r.money(t.gross_loss, currency),
        realized_pnl=r.money(t.realized_pnl, currency),
        fees_paid=r.money(t.fees, currency),
    )


def report(
    ledger: Ledger | VenueLedgers,
    tracker: EquityTracker,
    marks: dict[str, Decimal],
    ts: int,
    r: Rounding = EXACT_ENOUGH,
    bridge: str = DEFAULT_BRIDGE,
    since: int | None = None,
) -> Performance:
    """Everything ``GET /api/performance`` shows, from the books, the equity samples and the closed cycles.

    Books per venue (``VenueLedgers``): every figure is a total over the venues - the equity (their sum,
    every venue valued at the same prices), the round trips of every venue, and per pair the figures of
    that pair on every venue added up (each venue's position is its own round trips).

    ``since`` (epoch ms): the figures over the window from then: the round trips closed since, the equity
    curve since (its start is the last equity sample before ``since``, else the initial balance), drawdowns
    and returns over that curve. ``firstTradeAt`` / ``lastTradeAt``: the first round trip's opening and the
    last one's close (in the window): the days of trading history."""
    if isinstance(ledger, VenueLedgers):
        ledgers = [led for _, led in ledger]
        marks = combined_marks(ledgers, marks)
        base = ledger.base_currency
        now_equity = books_equity(ledger, marks, bridge)
    else:
        ledgers = [ledger]
        base = ledger.base_currency
        now_equity = total_equity(ledger, marks, bridge)
    conv = Converter(ledgers[0] if ledgers else Ledger(base, ZERO), marks, bridge)
    points = [*tracker.curve, (ts, now_equity)] if not tracker.curve or tracker.curve[-1][0] < ts else tracker.curve
    daily_points = tracker.daily_points()
    if not daily_points or daily_points[-1][0] < ts:
        daily_points = [*[p for p in daily_points if day_of(p[0]) != day_of(ts)], (ts, now_equity)]
    initial = tracker.initial  # INITIAL_BALANCE, or what the opening balances of a live venue were worth
    if since is not None:
        before = [p for p in (*tracker.curve, *daily_points) if p[0] < since]
        if before:
            initial = max(before, key=lambda p: p[0])[1]
        points = tracker.window_points(since)
        if not points or points[-1][0] < ts:
            points = [*points, (ts, now_equity)]
        daily_points = [p for p in daily_points if p[0] >= since] or [(ts, now_equity)]
    daily = period_returns(daily_points, initial, day_of)
    weekly = period_returns(daily_points, initial, week_of)
    monthly = period_returns(daily_points, initial, month_of)
    if since is None:
        peak = max(tracker.peak if tracker.peak is not None else initial, now_equity)
        max_dd, max_dd_pct = tracker.max_dd, tracker.max_dd_pct
    else:  # over the window's own curve
        window_dd = drawdown(points, initial)
        peak = max([initial, *(e for _, e in points)])
        max_dd, max_dd_pct = window_dd.max_amount, window_dd.max_pct
    cur = peak - now_equity
    cur_pct = cur / peak if peak > ZERO else ZERO
    rets = [v for _, v in daily]
    s, so = sharpe(rets), sortino(rets)

    def returns(items: list[tuple[str, Decimal]], period: Callable[[int], str]) -> list[PeriodReturn]:
        last: dict[str, Decimal] = {}
        for t, e in daily_points:
            last[period(t)] = e
        return [PeriodReturn(period=k, value=r.ratio(v), equity=r.money(last[k], base)) for k, v in items]

    by_pair: dict[str, list[ClosedCycle]] = {}
    for led in ledgers:
        for c in led.history:
            if since is None or c.closed_at >= since:
                by_pair.setdefault(c.pair, []).append(c)
    for cycles in by_pair.values():
        cycles.sort(key=lambda c: c.closed_at)
    positions: dict[str, list[Position]] = {}
    for led in ledgers:
        for pair, p in led.positions.items():
            positions.setdefault(pair, []).append(p)
    per_pair = []
    unconverted: set[str] = set()
    converted_cycles: list[ClosedCycle] = []
    rate_of: dict[str, Decimal] = {}
    fees_paid = ZERO
    for pair in sorted(by_pair.keys() | positions.keys()):
        held = positions.get(pair, [])
        quote = pair_currencies(pair)[1]
        mark = conv.mark(pair)
        unrealized = sum((p.unrealized(mark) for p in held), ZERO) if mark is not None else ZERO
        realized = sum((p.realized_pnl for p in held), ZERO)
        fees = sum((p.fees for p in held), ZERO)
        cycles = by_pair.get(pair, [])
        rate = conv.rate(quote)
        currency = base
        if rate is None:
            currency = quote
            rate = ONE
            if unrealized or realized or fees or cycles:
                unconverted.add(quote)
        else:
            rate_of[pair] = rate
            converted_cycles.extend(cycles)
            fees_paid += fees * rate
        per_pair.append(
            PairPerformance(
                pair=pair,
                trades=_stats_view(trade_stats(cycles, lambda c, x=rate: x), r, currency),
                unrealized_pnl=r.money(unrealized * rate, currency),
                realized_pnl=r.money(realized * rate, currency),
                fees_paid=r.money(fees * rate, currency),
                currency=currency,
            )
        )
    return Performance(
        base_currency=base,
        initial_balance=r.money(initial, base) if tracker.opening else initial,
        equity=r.money(now_equity, base),
        total_return=r.ratio(now_equity / initial - 1) if initial else ZERO,
        equity_curve=[EquityPoint(ts=t, equity=r.money(e, base)) for t, e in downsample(points, CURVE_OUTPUT_POINTS)],
        daily_returns=returns(daily, day_of),
        weekly_returns=returns(weekly, week_of),
        monthly_returns=returns(monthly, month_of),
        max_drawdown=r.money(max(max_dd, cur), base),
        max_drawdown_pct=r.ratio(max(max_dd_pct, cur_pct)),
        current_drawdown=r.money(cur, base),
        current_drawdown_pct=r.ratio(cur_pct),
        sharpe=r.ratio(s) if s is not None else None,
        sortino=r.ratio(so) if so is not None else None,
        annualization="daily returns (UTC days), x sqrt(365), risk-free rate 0",
        trades=_stats_view(trade_stats(converted_cycles, lambda c: rate_of[c.pair]), r, base),
        fees_paid=r.money(fees_paid, base),
        per_pair=per_pair,
        ts=ts,
        unconverted=sorted(unconverted),
        since=since,
        first_trade_at=min((c.opened_at for cs in by_pair.values() for c in cs), default=None),
        last_trade_at=max((c.closed_at for cs in by_pair.values() for c in cs), default=None),
    )
