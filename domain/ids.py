"""Identifier formats. Pure."""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC


def day_key(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y%m%d")


def order_id(day: str, n: int) -> str:
    """``ORD_YYYYMMDD_NNNNNN`` as in the seed; past 999,999 orders a day the number simply grows wider."""
    return f"ORD_{day}_{n:06d}"


def signal_id(day: str, n: int) -> str:
    return f"SIG_{day}_{n:06d}"
