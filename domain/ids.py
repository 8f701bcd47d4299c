"""Identifier formats. Pure."""

from __future__ import annotations

import datetime as dt
import functools

UTC = dt.UTC


DAY_MS = 86_400_000  # epoch milliseconds have no leap seconds: every UTC day is this long


def day_key(ts_ms: int) -> str:
    """``YYYYMMDD`` of the UTC day of ``ts_ms``. Asked for several times per order, nearly always of the
    same day: the keys of the last few days are kept (formatting a date is the costly part)."""
    return _day_key(ts_ms // DAY_MS)


@functools.lru_cache(maxsize=8)
def _day_key(day: int) -> str:
    return dt.datetime.fromtimestamp(day * DAY_MS / 1000, UTC).strftime("%Y%m%d")


def order_id(day: str, n: int) -> str:
    """``ORD_YYYYMMDD_NNNNNN`` as in the seed; past 999,999 orders a day the number simply grows wider."""
    return f"ORD_{day}_{n:06d}"


def signal_id(day: str, n: int) -> str:
    return f"SIG_{day}_{n:06d}"
