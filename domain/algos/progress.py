"""What an algorithm does next given what already happened: pure, so a restarted algorithm resumes from its trail.

- ``due(schedule, now_ms, sent)``: the slices due at ``now_ms`` that were not sent yet, in order (a slice is sent at
  most once: its index is in ``sent`` from the moment its child is sent).
- ``remaining_after(total, filled)``: what the parent still has to fill.
- ``carry(schedule, index, unfilled, *, sent)``: a slice that ended partly unfilled (an IOC, or a capped limit that
  did not fill) rolls its unfilled quantity into the next slice not sent yet; when there is none (it was the last
  slice, or every later one is already out) ``Leftover`` is raised with the quantity, for the caller to put on the
  trail and report - it is never silently dropped.

Conservation (the property test in tests/unit/test_algo_progress.py): at every moment, filled + working (children
out) + unsent slices + reported leftovers == the parent's quantity, so nothing is sent beyond the parent's quantity
and each index is sent at most once.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import replace
from decimal import Decimal

from domain.algos.schedule import Slice


class Leftover(Exception):
    """Unfilled quantity of slice ``index`` with no later unsent slice to carry it: the caller reports it."""

    def __init__(self, index: int, quantity: Decimal) -> None:
        super().__init__(f"slice {index} left {quantity} unfilled and no later slice is left to carry it")
        self.index = index
        self.quantity = quantity


def due(schedule: Sequence[Slice], now_ms: int, sent: Set[int]) -> list[Slice]:
    """The slices due at or before ``now_ms`` whose index is not in ``sent``, in schedule order."""
    return [s for s in schedule if s.at_ms <= now_ms and s.index not in sent]


def remaining_after(total: Decimal, filled: Decimal) -> Decimal:
    """``total - filled``; a negative fill or more filled than the total is a ValueError (an overfill to report)."""
    if filled < 0:
        raise ValueError(f"filled must be >= 0, got {filled}")
    if filled > total:
        raise ValueError(f"filled {filled} exceeds the parent's quantity {total} (overfill)")
    return total - filled


def carry(schedule: Sequence[Slice], index: int, unfilled: Decimal, *, sent: Set[int] = frozenset()) -> list[Slice]:
    """The schedule with slice ``index``'s ``unfilled`` quantity added to the next slice not in ``sent``.

    ``unfilled`` is 0 .. the slice's quantity (else ValueError); 0 changes nothing. No later unsent slice:
    ``Leftover(index, unfilled)``.
    """
    position = next((i for i, s in enumerate(schedule) if s.index == index), None)
    if position is None:
        raise ValueError(f"no slice {index} in the schedule")
    if not 0 <= unfilled <= schedule[position].quantity:
        raise ValueError(
            f"unfilled must be between 0 and slice {index}'s quantity {schedule[position].quantity}, got {unfilled}"
        )
    out = list(schedule)
    if not unfilled:
        return out
    for i in range(position + 1, len(out)):
        if out[i].index not in sent:
            out[i] = replace(out[i], quantity=out[i].quantity + unfilled)
            return out
    raise Leftover(index, unfilled)
