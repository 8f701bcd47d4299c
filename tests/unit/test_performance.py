"""Performance metrics (domain/performance.py) and the rounding at the edge (domain/valuation.Rounding).

Every expected number is worked out by hand in the comments, with the formulas of the module docstring of
domain/performance.py. Pure: no bus.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import performance as perf
from domain.ledger import ClosedCycle, Ledger
from domain.performance import (
    EquityTracker,
    day_of,
    downsample,
    drawdown,
    month_of,
    period_returns,
    report,
    sharpe,
    sortino,
    trade_stats,
    week_of,
)
from domain.valuation import Rounding, cycle_view
from schemas.messages import Fill

D = Decimal
SQRT_365 = D(365).sqrt()  # 19.10497317454280...


def ms(iso: str) -> int:
    """Epoch milliseconds of a UTC time written ``YYYY-MM-DDTHH:MM[:SS]``."""
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp() * 1000)


def fill(
    side: str,
    qty: str,
    price: str,
    fee: str = "0",
    pair: str = "BTC_USDT",
    ts: int = 1,
) -> Fill:
    return Fill(
        fill_id=f"{pair}-{ts}",
        order_id="o",
        client_order_id="c",
        pair=pair,
        side=side,  # type: ignore[arg-type]
        quantity=D(qty),
        price=D(price),
        fee=D(fee),
        fee_currency="USDT",
        liquidity="taker",
        venue="paper",
        timestamp=ts,
    )


def closed(pnl: str, fees: str = "0", pair: str = "BTC_USDT", n: int = 1) -> ClosedCycle:
    return ClosedCycle(
        pair=pair,
        cycle=n,
        side="long",
        quantity=D(1),
        average_open_price=D(100),
        average_close_price=D(100),
        realized_pnl=D(pnl),
        fees=D(fees),
        opened_at=1,
        closed_at=2,
    )


# --------------------------------------------------------------------------------------------------
# Period keys and period returns
# --------------------------------------------------------------------------------------------------
def test_period_keys_are_utc_and_iso_weeks():
    assert day_of(ms("2024-05-01T23:59:59")) == "2024-05-01"
    assert day_of(ms("2024-05-02T00:00")) == "2024-05-02"
    assert month_of(ms("2024-01-31T23:59:59")) == "2024-01"
    assert week_of(ms("2024-05-05T23:59")) == "2024-W18"  # a Sunday ends ISO week 18
    assert week_of(ms("2024-05-06T00:00")) == "2024-W19"  # Monday
    assert week_of(ms("2024-12-30T00:00")) == "2025-W01"  # ISO year, not the calendar year
    assert week_of(ms("2021-01-03T12:00")) == "2020-W53"


def test_daily_returns():
    points = [
        (ms("2024-05-01T09:00"), D("1010")),
        (ms("2024-05-01T23:59"), D("1020")),  # the last point of the day wins
        (ms("2024-05-02T12:00"), D("1071")),
        (ms("2024-05-04T00:00"), D("1017.45")),  # 3 May has no point: no period
    ]
    assert period_returns(points, D("1000"), day_of) == [
        ("2024-05-01", D("0.02")),  # 1020 / 1000 - 1 (the first period against the initial balance)
        ("2024-05-02", D("0.05")),  # 1071 / 1020 - 1
        ("2024-05-04", D("-0.05")),  # 1017.45 / 1071 - 1 = 0.95 - 1
    ]


def test_weekly_returns_across_the_year_end():
    points = [
        (ms("2024-12-28T12:00"), D("1100")),  # Saturday, 2024-W52
        (ms("2024-12-30T12:00"), D("1210")),  # Monday, 2025-W01
        (ms("2025-01-05T23:00"), D("1155")),  # Sunday, 2025-W01: the week's last point
        (ms("2025-01-06T01:00"), D("1386")),  # 2025-W02
    ]
    assert period_returns(points, D("1000"), week_of) == [
        ("2024-W52", D("0.1")),  # 1100 / 1000 - 1
        ("2025-W01", D("0.05")),  # 1155 / 1100 - 1
        ("2025-W02", D("0.2")),  # 1386 / 1155 - 1
    ]


def test_monthly_returns():
    points = [
        (ms("2024-01-02T00:00"), D("900")),
        (ms("2024-01-31T23:59:59"), D("1200")),
        (ms("2024-02-01T00:00"), D("1300")),
        (ms("2024-02-29T12:00"), D("1500")),
        (ms("2024-04-10T00:00"), D("1200")),
    ]
    assert period_returns(points, D("1000"), month_of) == [
        ("2024-01", D("0.2")),  # 1200 / 1000 - 1
        ("2024-02", D("0.25")),  # 1500 / 1200 - 1
        ("2024-04", D("-0.2")),  # 1200 / 1500 - 1 (March has no point)
    ]


def test_period_returns_edge_cases():
    assert period_returns([], D("1000"), day_of) == []
    # a previous equity of zero gives a return of 0 rather than a division by zero
    points = [(ms("2024-05-01T00:00"), D("0")), (ms("2024-05-02T00:00"), D("50"))]
    assert period_returns(points, D("100"), day_of) == [("2024-05-01", D("-1")), ("2024-05-02", D("0"))]


# --------------------------------------------------------------------------------------------------
# Drawdown
# --------------------------------------------------------------------------------------------------
def test_drawdown_by_hand():
    # initial 100: the peak starts there
    curve = [(1, D("80")), (2, D("1000")), (3, D("850")), (4, D("900"))]
    dd = drawdown(curve, D("100"))
    # point 1: 100 - 80 = 20, 20 / 100 = 0.2      <- the largest percentage
    # point 3: 1000 - 850 = 150, 150 / 1000 = 0.15 <- the largest amount
    # point 4: 1000 - 900 = 100, 100 / 1000 = 0.1 (current)
    assert dd == perf.Drawdown(max_amount=D("150"), max_pct=D("0.2"), current_amount=D("100"), current_pct=D("0.1"))


def test_drawdown_at_a_new_peak_and_empty():
    dd = drawdown([(1, D("90")), (2, D("120"))], D("100"))
    # 100 -> 90: 10 / 100 = 0.1; then a new peak 120: current 0
    assert (dd.max_amount, dd.max_pct, dd.current_amount, dd.current_pct) == (D("10"), D("0.1"), 0, 0)
    assert drawdown([], D("100")) == perf.Drawdown(D(0), D(0), D(0), D(0))


# --------------------------------------------------------------------------------------------------
# Sharpe and Sortino
# --------------------------------------------------------------------------------------------------
def test_sharpe_by_hand():
    # mean = (0.02 + 0 + 0.04) / 3 = 0.02; deviations 0, -0.02, 0.02
    # sample variance = (0 + 0.0004 + 0.0004) / (3 - 1) = 0.0004; stdev 0.02
    # Sharpe = 0.02 / 0.02 x sqrt(365) = sqrt(365)
    s = sharpe([D("0.02"), D("0"), D("0.04")])
    assert s == SQRT_365
    assert Rounding().ratio(s) == D("19.104973")
    # the same returns shifted down by 0.04: mean -0.02, same stdev: -sqrt(365)
    assert sharpe([D("-0.02"), D("-0.04"), D("0")]) == -SQRT_365
    # mean = (0.01 + 0.03) / 2 = 0.02; variance = (0.0001 + 0.0001) / 1 = 0.0002, stdev = sqrt(0.0002)
    # (with n instead of n - 1 it would be 0.01 and Sharpe 2 x sqrt(365))
    assert sharpe([D("0.01"), D("0.03")]) == D("0.02") / D("0.0002").sqrt() * SQRT_365


def test_sortino_by_hand():
    # mean = (0.05 - 0.03 + 0.04 - 0.04) / 4 = 0.005
    # downside deviation = sqrt((0.03^2 + 0.04^2) / 4) = sqrt(0.0025 / 4) = sqrt(0.000625) = 0.025
    # Sortino = 0.005 / 0.025 x sqrt(365) = 0.2 x sqrt(365)
    assert sortino([D("0.05"), D("-0.03"), D("0.04"), D("-0.04")]) == D("0.2") * SQRT_365
    # all losing the same: no dispersion (no Sharpe) but a downside: -0.01 / sqrt(0.0002 / 2) = -1
    same_loss = [D("-0.01"), D("-0.01")]
    assert sortino(same_loss) == -SQRT_365
    assert sharpe(same_loss) is None


@pytest.mark.parametrize(
    "returns",
    [
        pytest.param([], id="none"),
        pytest.param([D("0.05")], id="one"),
    ],
)
def test_sharpe_and_sortino_need_two_returns(returns):
    assert sharpe(returns) is None
    assert sortino(returns) is None


def test_sharpe_without_dispersion_and_sortino_without_downside():
    flat = [D("0.01"), D("0.01"), D("0.01")]
    assert sharpe(flat) is None  # stdev 0
    assert sortino(flat) is None  # no negative return
    gains = [D("0.01"), D("0"), D("0.03")]  # a zero return is no loss
    assert sortino(gains) is None
    assert sharpe(gains) is not None


# --------------------------------------------------------------------------------------------------
# Trade statistics
# --------------------------------------------------------------------------------------------------
def test_trade_stats_by_hand():
    cycles = [closed("30", "1"), closed("-10", "1"), closed("20", "2"), closed("0", "0.5"), closed("-5", "0.5")]
    t = trade_stats(cycles)
    # 5 round trips; wins 30, 20; losses -10, -5; a zero is neither
    assert (t.round_trips, t.wins, t.losses) == (5, 2, 2)
    assert t.win_rate == D("0.4")  # 2 / 5
    assert (t.gross_profit, t.gross_loss) == (D("50"), D("-15"))
    assert t.profit_factor == D(50) / D(15)  # 50 / |-15| = 3.333...
    assert Rounding().ratio(t.profit_factor) == D("3.333333")
    assert t.expectancy == D("7")  # (30 - 10 + 20 + 0 - 5) / 5 = 35 / 5
    assert t.average_win == D("25")  # 50 / 2
    assert t.average_loss == D("-7.5")  # -15 / 2
    assert t.realized_pnl == D("35")
    assert t.fees == D("5")  # 1 + 1 + 2 + 0.5 + 0.5


def test_trade_stats_without_losses_without_wins_and_empty():
    t = trade_stats([closed("10", "1"), closed("20", "1")])
    assert t.profit_factor is None and t.average_loss is None
    assert (t.win_rate, t.expectancy, t.average_win, t.gross_loss) == (D(1), D(15), D(15), D(0))

    t = trade_stats(iter([closed("-4"), closed("-6")]))  # any iterable
    assert (t.wins, t.losses, t.win_rate, t.profit_factor) == (0, 2, D(0), D(0))
    assert (t.average_win, t.average_loss, t.expectancy) == (None, D(-5), D(-5))

    t = trade_stats([])
    assert t == perf.TradeStats(0, 0, 0, None, None, None, None, None, D(0), D(0), D(0), D(0))


# --------------------------------------------------------------------------------------------------
# EquityTracker
# --------------------------------------------------------------------------------------------------
def test_tracker_keeps_one_point_a_minute_the_latest():
    t = EquityTracker(D("1000"))
    t.sample(0, D("1000"))
    t.sample(30_000, D("1010"))  # same minute: replaces
    t.sample(59_999, D("1020"))  # still minute 0
    assert t.curve == [(59_999, D("1020"))]
    t.sample(60_000, D("1030"))  # minute 1 (minutes of the epoch, not 60 s after the last point)
    t.sample(119_999, D("1025"))
    t.sample(120_000, D("1040"))
    assert t.curve == [(59_999, D("1020")), (119_999, D("1025")), (120_000, D("1040"))]


def test_tracker_daily_closes_peak_and_max_drawdown():
    t = EquityTracker(D("1000"))
    assert t.peak is None and t.daily_points() == []
    t.sample(ms("2024-05-01T10:00"), D("800"))  # 200 below the initial balance: 0.2
    t.sample(ms("2024-05-01T23:00"), D("5000"))  # the day's close, a new peak
    t.sample(ms("2024-05-02T08:00"), D("4500"))  # 500 below the peak: 0.1
    t.sample(ms("2024-05-02T08:00:30"), D("4600"))  # same minute: replaces the point, the drawdown stays
    t.sample(ms("2024-05-03T00:00"), D("4900"))
    assert t.curve == [
        (ms("2024-05-01T10:00"), D("800")),
        (ms("2024-05-01T23:00"), D("5000")),
        (ms("2024-05-02T08:00:30"), D("4600")),
        (ms("2024-05-03T00:00"), D("4900")),
    ]
    assert t.closes == {
        "2024-05-01": (ms("2024-05-01T23:00"), D("5000")),
        "2024-05-02": (ms("2024-05-02T08:00:30"), D("4600")),
        "2024-05-03": (ms("2024-05-03T00:00"), D("4900")),
    }
    assert t.daily_points() == [t.closes[d] for d in ("2024-05-01", "2024-05-02", "2024-05-03")]
    assert t.peak == D("5000")
    assert t.max_dd == D("500")  # 5000 - 4500, seen even though that point was replaced
    assert t.max_dd_pct == D("0.2")  # (1000 - 800) / 1000, a different point than the largest amount


def test_tracker_curve_is_bounded_but_daily_closes_are_kept():
    t = EquityTracker(D("100"))
    n = perf.MAX_CURVE_POINTS + 5
    start = ms("2024-05-01T00:00")
    for i in range(n):  # one point a minute: about 6.9 days
        t.sample(start + i * 60_000, D(100 + i % 7))
    assert len(t.curve) == perf.MAX_CURVE_POINTS
    assert t.curve[0] == (start + 5 * 60_000, D(100 + 5 % 7))  # the 5 oldest went
    assert t.curve[-1] == (start + (n - 1) * 60_000, D(100 + (n - 1) % 7))
    # 10005 minutes from 1 May 00:00 ends on 7 May at 22:44: 7 days, the first one no longer in the curve
    assert sorted(t.closes) == [f"2024-05-0{d}" for d in range(1, 8)]
    assert t.closes["2024-05-01"] == (start + 1439 * 60_000, D(100 + 1439 % 7))
    assert t.peak == D("106")
    assert t.max_dd == D("6")  # 106 -> 100


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def _report_ledger() -> Ledger:
    ledger = Ledger("USDT", D("10000"))
    # BTC: buy 0.1 @ 50000 fee 5, sell 0.1 @ 52100 fee 5.2: realized = -5 + 0.1*2100 - 5.2 = 199.8, fees 10.2
    ledger.apply_fill(fill("buy", "0.1", "50000", "5", ts=ms("2024-05-01T10:00")))
    ledger.apply_fill(fill("sell", "0.1", "52100", "5.2", ts=ms("2024-05-02T10:00")))
    # ETH: sell 2 @ 3000 fee 3, buy 2 @ 3100 fee 3.1: realized = -3 + 2*(3100-3000)*(-1) - 3.1 = -206.1, fees 6.1
    ledger.apply_fill(fill("sell", "2", "3000", "3", pair="ETH_USDT", ts=ms("2024-05-02T11:00")))
    ledger.apply_fill(fill("buy", "2", "3100", "3.1", pair="ETH_USDT", ts=ms("2024-05-03T10:00")))
    # ETH again: buy 1 @ 3050 fee 1.525 (open, realized -1.525)
    ledger.apply_fill(fill("buy", "1", "3050", "1.525", pair="ETH_USDT", ts=ms("2024-05-03T12:00")))
    # USDT = 10000 - 5000 - 5 + 5210 - 5.2 + 6000 - 3 - 6200 - 3.1 - 3050 - 1.525 = 6942.175
    # realized = 199.8 - 206.1 - 1.525 = -7.825 (not just minus the fees: gross 10 + 200 - 200 = 10)
    return ledger


def test_report_by_hand():
    ledger = _report_ledger()
    assert ledger.balance("USDT").total == D("6942.175")
    assert (ledger.realized_pnl, ledger.fees_paid) == (D("-7.825"), D("17.825"))
    tracker = EquityTracker(D("10000"))
    tracker.sample(ms("2024-05-01T12:00"), D("9995"))
    tracker.sample(ms("2024-05-02T12:00"), D("10196.8"))  # 16196.8 USDT - 2 ETH at 3000: the peak
    tracker.sample(ms("2024-05-03T13:00"), D("10020"))  # 176.8 below it
    now = ms("2024-05-03T18:00")
    r = report(ledger, tracker, {"ETH_USDT": D("3101.01")}, now, Rounding({"USDT": 2}))

    # equity = 6942.175 + 1 * 3101.01 = 10043.185 -> 10043.18 (half-even: 8 is even; half-up would say .19)
    # = 10000 + realized (-7.825) + unrealized (1 * (3101.01 - 3050) = 51.01)
    assert (r.base_currency, r.initial_balance, r.equity, r.ts) == ("USDT", D("10000"), D("10043.18"), now)
    # total return = 10043.185 / 10000 - 1 = 0.0043185 -> 0.004318 (half-even)
    assert r.total_return == D("0.004318")
    # fees = 5 + 5.2 + 3 + 3.1 + 1.525 = 17.825 -> 17.82
    assert r.fees_paid == D("17.82")
    # the curve: the three samples and now, in money rounding (two decimals, so 9995 is 9995.00)
    assert [(p.ts, str(p.equity)) for p in r.equity_curve] == [
        (ms("2024-05-01T12:00"), "9995.00"),
        (ms("2024-05-02T12:00"), "10196.80"),
        (ms("2024-05-03T13:00"), "10020.00"),
        (now, "10043.18"),
    ]
    # daily: today's close is now (10043.185), not the 13:00 sample
    # 9995 / 10000 - 1 = -0.0005; 10196.8 / 9995 - 1 = 0.0201900950... ; 10043.185 / 10196.8 - 1 = -0.0150650203...
    assert [(p.period, p.value, p.equity) for p in r.daily_returns] == [
        ("2024-05-01", D("-0.000500"), D("9995.00")),
        ("2024-05-02", D("0.020190"), D("10196.80")),
        ("2024-05-03", D("-0.015065"), D("10043.18")),
    ]
    # one ISO week (W18: Wed 1 May - Sun 5 May) and one month: the total return
    assert [(p.period, p.value, p.equity) for p in r.weekly_returns] == [("2024-W18", D("0.004318"), D("10043.18"))]
    assert [(p.period, p.value, p.equity) for p in r.monthly_returns] == [("2024-05", D("0.004318"), D("10043.18"))]
    # drawdown: peak 10196.8; worst seen 10196.8 - 10020 = 176.8 (176.8 / 10196.8 = 0.0173387...)
    # current 10196.8 - 10043.185 = 153.615 -> 153.62 (0.0150650...)
    assert (r.max_drawdown, r.max_drawdown_pct) == (D("176.80"), D("0.017339"))
    assert (r.current_drawdown, r.current_drawdown_pct) == (D("153.62"), D("0.015065"))
    # Sharpe and Sortino over those three exact daily returns
    daily = [D("-0.0005"), D("201.8") / D("9995"), D("-153.615") / D("10196.8")]
    assert r.sharpe == Rounding().ratio(sharpe(daily)) == D("1.662562")
    assert r.sortino == Rounding().ratio(sortino(daily)) == D("3.384510")

    # round trips: BTC +199.8, ETH -206.1 (the open ETH cycle is not one)
    t = r.trades
    assert (t.round_trips, t.wins, t.losses, t.win_rate) == (2, 1, 1, D("0.500000"))
    assert t.profit_factor == D("0.969432")  # 199.8 / 206.1 = 0.96943231...
    assert t.expectancy == D("-3.15")  # (199.8 - 206.1) / 2
    assert (t.average_win, t.average_loss) == (D("199.80"), D("-206.10"))
    assert (t.gross_profit, t.gross_loss, t.realized_pnl, t.fees_paid) == (
        D("199.80"),
        D("-206.10"),
        D("-6.30"),
        D("16.30"),  # 10.2 + 6.1: the open cycle's 1.525 is not in a round trip
    )

    btc, eth = r.per_pair
    assert (btc.pair, btc.trades.round_trips, btc.trades.wins, btc.trades.profit_factor) == ("BTC_USDT", 1, 1, None)
    assert (btc.unrealized_pnl, btc.realized_pnl, btc.fees_paid) == (D("0.00"), D("199.80"), D("10.20"))
    assert (eth.pair, eth.trades.round_trips, eth.trades.losses, eth.trades.average_win) == ("ETH_USDT", 1, 1, None)
    # ETH realized = -206.1 - 1.525 = -207.625 -> -207.62; fees 6.1 + 1.525 = 7.625 -> 7.62 (half-even)
    assert (eth.unrealized_pnl, eth.realized_pnl, eth.fees_paid) == (D("51.01"), D("-207.62"), D("7.62"))
    # every money figure has the currency's two decimals
    for x in (r.equity, r.fees_paid, r.max_drawdown, t.expectancy, eth.realized_pnl, btc.unrealized_pnl):
        assert x.as_tuple().exponent == -2


def test_report_totals_are_consistent():
    ledger = _report_ledger()
    tracker = EquityTracker(D("10000"))
    marks = {"ETH_USDT": D("2990")}
    now = ms("2024-05-04T00:00")
    r = report(ledger, tracker, marks, now)  # exact enough: 8 decimals
    # equity = 6942.175 + 2990 = 9932.175 = 10000 - 7.825 + 1 * (2990 - 3050)
    assert r.equity == D("9932.175")
    # total return = 9932.175 / 10000 - 1 = -0.0067825 -> -0.006782 (half-even: 2 is even)
    assert r.total_return == Rounding().ratio(r.equity / D("10000") - 1) == D("-0.006782")
    assert r.fees_paid == sum((p.fees_paid for p in r.per_pair), D(0)) == D("17.825")
    assert r.trades.round_trips == sum(p.trades.round_trips for p in r.per_pair) == len(ledger.history) == 2
    assert r.trades.realized_pnl == sum((p.trades.realized_pnl for p in r.per_pair), D(0))
    realized = sum((p.realized_pnl for p in r.per_pair), D(0))
    unrealized = sum((p.unrealized_pnl for p in r.per_pair), D(0))
    assert r.equity == r.initial_balance + realized + unrealized
    # an empty tracker: the curve is now alone, the only day is today
    assert [(p.ts, p.equity) for p in r.equity_curve] == [(now, D("9932.175"))]
    assert [p.period for p in r.daily_returns] == ["2024-05-04"]
    assert r.daily_returns[0].value == r.total_return
    # no peak above the initial balance: drawdown from 10000
    assert r.current_drawdown == r.max_drawdown == D("67.825")
    assert r.sharpe is None and r.sortino is None  # one daily return


def test_report_of_a_fresh_ledger():
    ledger = Ledger("USDT", D("500"))
    r = report(ledger, EquityTracker(D("500")), {}, 1_000, Rounding({"USDT": 2}))
    assert (r.equity, r.total_return, r.fees_paid, r.max_drawdown, r.current_drawdown_pct) == (
        D("500.00"),
        D("0"),
        D("0"),
        D("0"),
        D("0"),
    )
    assert r.per_pair == [] and r.trades.round_trips == 0 and r.trades.win_rate is None
    assert r.sharpe is None and r.sortino is None


# --------------------------------------------------------------------------------------------------
# downsample
# --------------------------------------------------------------------------------------------------
def test_downsample_by_hand():
    points = [(i, D(i)) for i in range(10)]
    # step (10 - 1) / (4 - 1) = 3: indices 0, 3, 6, 9
    assert downsample(points, 4) == [points[0], points[3], points[6], points[9]]
    assert downsample(points, 2) == [points[0], points[9]]
    assert downsample(points, 10) == points
    assert downsample(points, 50) == points
    assert downsample([], 5) == []


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3_000), at_most=st.integers(2, 600))
def test_downsample_keeps_first_last_and_at_most_n(n, at_most):
    points = [(i, D(i)) for i in range(n)]
    out = downsample(points, at_most)
    assert len(out) == min(n, at_most)
    if n:
        assert out[0] == points[0] and out[-1] == points[-1]
    indices = [ts for ts, _ in out]
    assert indices == sorted(set(indices))  # a subsequence: in order, no point twice


# --------------------------------------------------------------------------------------------------
# Rounding at the edge (valuation)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USDT", "1.00"),  # half-even: 0 is even, stays
        ("1.015", "USDT", "1.02"),  # 1 is odd, goes up
        ("-1.005", "USDT", "-1.00"),
        ("-1.015", "USDT", "-1.02"),
        ("1.0051", "USDT", "1.01"),  # above the half: up
        ("7", "USDT", "7.00"),
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("0.123456785", "BTC", "0.12345678"),  # default 8 decimals
        ("0.123456775", "BTC", "0.12345678"),
        ("0.123456795", "ETH", "0.12345680"),
        ("1", "ETH", "1.00000000"),
    ],
)
def test_money_rounds_half_even_to_the_currency(amount, currency, expected):
    r = Rounding({"USDT": 2, "JPY": 0})
    out = r.money(D(amount), currency)
    assert str(out) == expected  # the value and its number of decimals


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("123.45678901235", "123.4567890124"),  # 10 decimals, half-even: 3 -> 4
        ("123.45678901245", "123.4567890124"),  # 4 stays
        ("0.00000000015", "2E-10"),
        ("0.00000000005", "0E-10"),
        ("50000", "50000.0000000000"),
    ],
)
def test_price_rounds_to_ten_decimals(price, expected):
    assert str(Rounding({"USDT": 2}).price(D(price))) == expected


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        ("0.1234565", "0.123456"),
        ("0.1234575", "0.123458"),
        ("-0.0033185", "-0.003318"),
        ("0.0000015", "0.000002"),
        ("2", "2.000000"),
    ],
)
def test_ratio_rounds_to_six_decimals(ratio, expected):
    assert str(Rounding().ratio(D(ratio))) == expected


def test_rounding_default_is_configurable_and_per_currency():
    r = Rounding({"USDT": 2}, default=4)
    assert str(r.money(D("0.12345"), "BTC")) == "0.1234"
    assert str(r.money(D("0.12345"), "USDT")) == "0.12"
    assert str(Rounding().money(D("0.123456789"), "USDT")) == "0.12345679"  # no entry: 8


def test_cycle_view_is_rounded():
    c = ClosedCycle(
        pair="ETH_USDT",
        cycle=3,
        side="short",
        quantity=D("3"),
        average_open_price=D(10) / D(3),  # 3.3333...
        average_close_price=D(2) / D(3),  # 0.6666...
        realized_pnl=D("8.005"),
        fees=D("0.015"),
        opened_at=5,
        closed_at=9,
    )
    v = cycle_view(c, Rounding({"USDT": 2}))
    assert (v.pair, v.cycle, v.side, v.quantity, v.opened_at, v.closed_at) == ("ETH_USDT", 3, "short", D(3), 5, 9)
    assert str(v.average_open_price) == "3.3333333333"
    assert str(v.average_close_price) == "0.6666666667"
    assert (str(v.realized_pnl), str(v.fees)) == ("8.00", "0.02")
    assert cycle_view(dataclasses.replace(c, average_close_price=None)).average_close_price is None
