"""What every execution algorithm's schedule is made of, and how its parameters are refused. Pure.

- ``Slice``: one child order of a schedule: its stable ``index`` (0..n-1: a child's client id is derived from it,
  so a schedule recomputed after a restart from the same inputs is the same, slice for slice), the epoch ms it is
  due at, and its quantity (a multiple of the venue's amount step).
- ``AlgoParamError``: a parameter that cannot make a schedule, with ``.field`` the request field it is about
  (``"algo.slices"``, ``"algo.durationMs"``, ``"quantity"``, ...) and a message naming the reason; the REST layer
  answers it as a 422 problem naming that field.
- the checks the algorithms share (quantity, step, minimum, duration, slice count) and exact unit arithmetic:
  a quantity is handled as a whole number of steps (``units``), never through float.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

MAX_SLICES = 10_000
MAX_DURATION_MS = 7 * 24 * 60 * 60 * 1000  # 7 days
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Slice:
    """One child order of a schedule: due at ``at_ms`` (epoch ms) for ``quantity``; ``index`` is stable."""

    index: int
    at_ms: int
    quantity: Decimal


class AlgoParamError(ValueError):
    """A parameter that cannot make a schedule: ``field`` names the request field, the message the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_decimal(value: object, field: str) -> Decimal:
    """``value`` as a finite Decimal (an int is accepted), else AlgoParamError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise AlgoParamError(field, f"must be a decimal number, got {type(value).__name__}")
    d = Decimal(value)
    if not d.is_finite():
        raise AlgoParamError(field, f"must be a finite number, got {d}")
    return d


def check_int(value: object, field: str, low: int, high: int, what: str) -> int:
    """``value`` as an int in [low, high], else AlgoParamError naming ``field`` (``what`` describes the range)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AlgoParamError(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise AlgoParamError(field, f"must be {what}, got {value}")
    return value


def check_step(step: object) -> Decimal:
    """The venue's amount step: a positive decimal (field ``step``)."""
    s = check_decimal(step, "step")
    if s <= 0:
        raise AlgoParamError("step", f"the amount step must be > 0, got {s}")
    return s


def units_of(value: Decimal, step: Decimal) -> Fraction:
    """``value`` counted in steps, exactly (a whole number when ``value`` is a multiple of ``step``)."""
    return Fraction(value) / Fraction(step)


def min_units(min_quantity: object, step: Decimal) -> int:
    """The smallest number of steps a child may have: at least one, and at least ``min_quantity``."""
    m = check_decimal(min_quantity, "minQuantity")
    if m < 0:
        raise AlgoParamError("minQuantity", f"must be >= 0, got {m}")
    u = units_of(m, step)
    return max(1, -(-u.numerator // u.denominator))  # ceil


def check_quantity(quantity: object, step: Decimal, min_qty_units: int) -> int:
    """The parent's quantity in whole steps: > 0, a multiple of ``step``, at least the minimum (field ``quantity``)."""
    q = check_decimal(quantity, "quantity")
    if q <= 0:
        raise AlgoParamError("quantity", f"must be > 0, got {q}")
    u = units_of(q, step)
    if u.denominator != 1:
        raise AlgoParamError("quantity", f"{q} is not a multiple of the amount step {step}")
    if u.numerator < min_qty_units:
        raise AlgoParamError("quantity", f"{q} is below the smallest order the venue accepts ({min_qty_units * step})")
    return u.numerator


def check_duration(duration_ms: object) -> int:
    """A schedule's length in ms: 1 ms .. 7 days (field ``algo.durationMs``)."""
    return check_int(duration_ms, "algo.durationMs", 1, MAX_DURATION_MS, f"between 1 and {MAX_DURATION_MS} ms (7 days)")


def check_count(count: object, field: str, duration_ms: int, noun: str = "slices") -> int:
    """A number of slices (or buckets, weights): 1..10000 and at most one per millisecond of the duration."""
    n = check_int(count, field, 1, MAX_SLICES, f"between 1 and {MAX_SLICES} {noun}")
    if n > duration_ms:
        raise AlgoParamError(
            field, f"{n} {noun} do not fit in algo.durationMs {duration_ms} (at most one per millisecond)"
        )
    return n


def check_start(start_ms: object, field: str = "startMs") -> int:
    """An epoch ms: an int."""
    if isinstance(start_ms, bool) or not isinstance(start_ms, int):
        raise AlgoParamError(field, f"must be an integer (epoch ms), got {type(start_ms).__name__}")
    return start_ms
