"""The risk gate's working orders: what is left of each, and the sum of those per pair kept in step. Pure.

Every limit check needs the signed quantity still working per pair. Summing every working order at each check
made a check cost O(working orders): with thousands working (a burst ahead of its fills, many resting limit
orders) the gate slowed down as the book grew (issue 22). ``WorkingOrders`` keeps ``per_pair`` exact on every
change instead (Decimal, each change adds the difference of one order's share), so a check reads it in O(pairs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(slots=True)
class Working:
    """A working order as the read model counts it: what is left is its quantity less the larger of
    what its last event and the fills seen since say is filled (a fill lands before the order's event)."""

    pair: str
    sign: int
    quantity: Decimal
    filled_events: Decimal
    filled_fills: Decimal
    venue: str = ""

    @property
    def left(self) -> Decimal:
        return self.quantity - max(self.filled_events, self.filled_fills)

    @property
    def share(self) -> Decimal:
        """What it adds to its pair's working sum: its signed quantity left."""
        return self.sign * self.left


class WorkingOrders:
    """Working orders by order id (only those with something left), and ``per_pair``: the sum of their shares,
    a pair whose sum is zero left out."""

    def __init__(self) -> None:
        self._by_id: dict[str, Working] = {}
        self.per_pair: dict[str, Decimal] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._by_id

    def get(self, order_id: str) -> Working | None:
        return self._by_id.get(order_id)

    def values(self) -> Iterator[Working]:
        return iter(list(self._by_id.values()))

    def put(self, order_id: str, w: Working) -> None:
        """Replace the order's entry with ``w``; kept only if something of it is left."""
        self.pop(order_id)
        if w.left > ZERO:
            self._by_id[order_id] = w
            self._add(w.pair, w.share)

    def pop(self, order_id: str) -> Working | None:
        w = self._by_id.pop(order_id, None)
        if w is not None:
            self._add(w.pair, -w.share)
        return w

    def add_fill(self, order_id: str, quantity: Decimal) -> bool:
        """A fill of the order seen: what is left of it shrinks (gone once nothing is). False if not working."""
        w = self._by_id.get(order_id)
        if w is None:
            return False
        before = w.share
        w.filled_fills += quantity
        if w.left <= ZERO:
            del self._by_id[order_id]
            self._add(w.pair, -before)
        else:
            self._add(w.pair, w.share - before)
        return True

    def _add(self, pair: str, delta: Decimal) -> None:
        if not delta:
            return
        total = self.per_pair.get(pair, ZERO) + delta
        if total:
            self.per_pair[pair] = total
        else:
            del self.per_pair[pair]
