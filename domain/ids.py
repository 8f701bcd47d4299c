"""Identifier formats. Pure."""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


DAY_MS = 86_400_000  # epoch milliseconds have no leap seconds: every UTC day is this long
_day: tuple[int, str] = (-1, "")  # the last day asked for: (its number since the epoch, its key)


def day_key(ts_ms: int) -> str:
    """``YYYYMMDD`` of the UTC day of ``ts_ms``. Asked for several times per order, nearly always of the
    same day: that day's key is kept (formatting a date is the costly part)."""
    global _day
    n = ts_ms // DAY_MS
    if n == _day[0]:
        return _day[1]
    key = dt.datetime.fromtimestamp(n * DAY_MS / 1000, UTC).strftime("%Y%m%d")
    _day = (n, key)
    return key


def order_id(day: str, n: int) -> str:
    """``ORD_YYYYMMDD_NNNNNN`` as in the seed; past 999,999 orders a day the number simply grows wider."""
    return f"ORD_{day}_{n:06d}"


def signal_id(day: str, n: int) -> str:
    return f"SIG_{day}_{n:06d}"
