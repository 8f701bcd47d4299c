"""Bounded memory of what was seen: the last N ids, and a compact table keyed by order id. Pure.

Closed orders and old fills leave memory for JetStream (the record); what an actor still needs of
them is kept here in a size that does not grow with every order (issue 7: memory flat from 50,000
to 100,000 orders).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from domain.ids import order_id


class RecentIds:
    """The last ``limit`` distinct ids added, oldest forgotten first (insertion order)."""

    __slots__ = ("_ids", "limit")

    def __init__(self, limit: int, ids: Iterable[str] = ()) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._ids: dict[str, None] = {}
        for i in ids:
            self.add(i)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def add(self, item: str) -> None:
        if item in self._ids:
            return
        self._ids[item] = None
        if len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]


class FirstSeen:
    """Where each of the last ``limit`` distinct ids was first seen (a stream sequence), oldest forgotten
    first: an id stored again later is recognised as a copy of the first."""

    __slots__ = ("_at", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._at: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._at)

    def saw(self, item: str, seq: int) -> None:
        first = self._at.get(item)
        if first is not None and first <= seq:
            return
        self._at[item] = seq
        if len(self._at) > self.limit:
            del self._at[next(iter(self._at))]

    def first(self, item: str) -> int | None:
        return self._at.get(item)


def _digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def split_order_id(order_id: str) -> tuple[str, int] | None:
    """``ORD_YYYYMMDD_NNNNNN`` (as ``domain.ids.order_id`` writes it) -> (day, n); None for any other
    shape or spelling, so two spellings never share a slot."""
    head, _, number = order_id.rpartition("_")
    prefix, _, day = head.partition("_")
    if prefix != "ORD" or len(day) != 8 or not _digits(day) or not _digits(number):
        return None
    n = int(number)
    return (day, n) if number == f"{n:06d}" else None


class OrderTable:
    """One unsigned integer per order id, in a few bytes per order instead of a dict entry.

    Order ids are ``ORD_<day>_<n>`` with n counting up from 1 each day, so each day is an array indexed
    by n (0 means "nothing"). Ids of any other shape (none are made today) go to a plain dict.
    ``typecode`` is an ``array`` typecode: "Q" (8 bytes, e.g. a stream sequence) or "B" (1 byte, flags).
    """

    __slots__ = ("_days", "_other", "typecode")

    def __init__(self, typecode: str = "Q") -> None:
        self.typecode = typecode
        self._days: dict[str, array[int]] = {}
        self._other: dict[str, int] = {}

    def get(self, order_id: str) -> int:
        key = split_order_id(order_id)
        if key is None:
            return self._other.get(order_id, 0)
        day, n = key
        a = self._days.get(day)
        return a[n] if a is not None and n < len(a) else 0

    def set(self, order_id: str, value: int) -> None:
        key = split_order_id(order_id)
        if key is None:
            if value:
                self._other[order_id] = value
            else:
                self._other.pop(order_id, None)
            return
        day, n = key
        a = self._days.get(day)
        if a is None:
            a = self._days[day] = array(self.typecode)
        if n >= len(a):
            if not value:
                return
            a.frombytes(bytes(a.itemsize * (max(n + 1, 2 * len(a)) - len(a))))  # doubling: amortised
        a[n] = value

    def ids_descending(self, below: str | None = None) -> Iterator[str]:
        """The ids holding a value, newest first (days, then numbers, counting down); only those before
        ``below`` when given. Ids of other shapes come last."""
        start = split_order_id(below) if below is not None else None
        for day in sorted(self._days, reverse=True):
            if start is not None and day > start[0]:
                continue
            a = self._days[day]
            top = len(a) - 1 if start is None or day < start[0] else min(start[1] - 1, len(a) - 1)
            for n in range(top, -1, -1):
                if a[n]:
                    yield order_id(day, n)
        for other in sorted(self._other, reverse=True):
            if below is None or other < below:
                yield other

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in self._days.values()) + 100 * len(self._other)


# How many of the latest fill ids the books remember to refuse a fill stored twice. The fill-tracker
# never writes a trade twice (JetStream also drops a repeated fill id within its duplicate window), so
# this only guards against an outside writer repeating itself; both the ledger and the risk-gate's read
# model use the same window over the same stream order, so they book the very same fills.
FILL_DEDUPE_WINDOW = 20_000
