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


def fill_id(venue: str, pair: str, trade_id: str) -> str:
    """``<venue>:<pair>:<trade id>``: the id of the fill a venue's trade becomes (the FILLS message id and every
    booker's dedupe key). The pair is part of it because venues number trades per symbol (Binance's BTCUSDT trade 123
    and ETHUSDT trade 123 are two trades)."""
    return f"{venue}:{pair}:{trade_id}"


def trade_id_of(fill_id: str, venue: str, pair: str) -> str:
    """The venue's trade id inside ``fill_id``: ``<venue>:<pair>:<id>``, or ``<venue>:<id>`` as stored before the pair
    was part of the id; anything else (an outside writer's id) is taken whole."""
    for prefix in (f"{venue}:{pair}:", f"{venue}:"):
        if fill_id.startswith(prefix):
            return fill_id[len(prefix) :]
    return fill_id
