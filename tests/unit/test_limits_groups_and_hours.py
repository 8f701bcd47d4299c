"""Correlation groups and trading hours of the risk limits."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from domain.limits import Exposure, Intent, Limits, check_limits, within_hours

BTC, ETH = "BTC_USDT", "ETH_USDT"


def x(**kw) -> Exposure:
    base = {
        "equity": D(10000),
        "day_start_equity": D(10000),
        "peak_equity": D(10000),
        "available": {"USDT": D(10**6), "BTC": D(100), "ETH": D(1000)},
        "marks": {BTC: D(100), ETH: D(10)},
    }
    return Exposure(**(base | kw))


def lim(**kw) -> Limits:
    return Limits(**({"max_position_fraction": D(1), "max_daily_loss": D(1)} | kw))


def buy(pair: str, qty: str, price: str) -> Intent:
    return Intent(pair, "buy", D(qty), D(price), None, "USDT", pair.split("_")[0])


def test_a_correlation_group_shares_one_limit():
    # majors may hold 40% of 10,000 = 4,000: ETH already holds 200 x 10 = 2,000
    groups = (("majors", frozenset({BTC, ETH}), D("0.4")),)
    held = x(positions={ETH: D(200)})
    assert check_limits(buy(BTC, "20", "100"), held, lim(groups=groups), "ACTIVE", None) is None  # 2,000 + 2,000
    d = check_limits(buy(BTC, "20.01", "100"), held, lim(groups=groups), "ACTIVE", None)
    assert d is not None and d.code == "CORRELATION_LIMIT" and "group majors exposure 0.4001" in d.reason
    # a pair outside the group is not held back by it
    assert check_limits(buy("XMR_USDT", "30", "100"), held, lim(groups=groups), "ACTIVE", None) is None


def ms(y: int, mo: int, d: int, h: int, mi: int, tz: str) -> int:
    import zoneinfo

    return int(dt.datetime(y, mo, d, h, mi, tzinfo=zoneinfo.ZoneInfo(tz)).timestamp() * 1000)


def test_within_hours_in_a_time_zone_and_across_midnight():
    ny = "America/New_York"
    hours = (9 * 60, 16 * 60)
    assert within_hours(ms(2026, 7, 1, 9, 0, ny), hours, ny)  # the start is in
    assert not within_hours(ms(2026, 7, 1, 16, 0, ny), hours, ny)  # the end is out
    assert not within_hours(ms(2026, 7, 1, 8, 59, ny), hours, ny)
    assert not within_hours(ms(2026, 7, 1, 9, 30, "UTC"), hours, ny)  # 05:30 in New York
    night = (22 * 60, 2 * 60)
    assert within_hours(ms(2026, 7, 1, 23, 0, "UTC"), night, "UTC")
    assert within_hours(ms(2026, 7, 1, 1, 59, "UTC"), night, "UTC")
    assert not within_hours(ms(2026, 7, 1, 2, 0, "UTC"), night, "UTC")


def test_outside_trading_hours_only_reducing_orders_pass():
    hours = lim(hours=(9 * 60, 16 * 60), timezone="UTC")
    late = ms(2026, 7, 1, 20, 0, "UTC")
    d = check_limits(buy(BTC, "1", "100"), x(), hours, "ACTIVE", None, late)
    assert d is not None and d.code == "TRADING_HOURS" and "09:00-16:00 UTC" in d.reason
    sell = Intent(BTC, "sell", D(1), D(100), None, "USDT", "BTC")
    assert check_limits(sell, x(positions={BTC: D(2)}), hours, "ACTIVE", None, late) is None  # reduces
    assert check_limits(buy(BTC, "1", "100"), x(), hours, "ACTIVE", None, ms(2026, 7, 1, 10, 0, "UTC")) is None
