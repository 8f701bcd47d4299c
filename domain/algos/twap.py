"""TWAP: a total quantity spread evenly over a duration in N slices, optionally randomised within bounds. Pure.

``twap_schedule(quantity, start_ms, duration_ms, slices, step, *, min_quantity, size_jitter, time_jitter, seed)``

Sizes (everything counted in whole amount steps, U = quantity / step):

- n = min(slices, U // m), m the smallest child in steps (``min_quantity`` rounded up to a step, at least one step):
  too many slices for the quantity gives fewer, larger slices, never one below the minimum;
- without size jitter the even split: every slice U // n steps, the first U % n of them one step more (sizes equal
  up to one step);
- with size jitter j (0..0.5) each slice lies in [floor(E (1 - j)), ceil(E (1 + j))] steps, E = U / n the even size,
  and never below m: starting from the even split, the slices are paired at random and each pair moves a random
  number of steps from one to the other within those bounds, so the sum stays exactly the quantity.

Times (integer ms): the interval is duration_ms // n; slice i is due at start_ms + i x interval; with time jitter t
(0..0.5) slices after the first move by a random whole number of ms of at most t x interval (and less than half an
interval, so times stay strictly increasing); the first is never moved, and every slice is due before
start_ms + duration_ms.

Randomness comes only from ``random.Random(seed)``: the same inputs always give the same schedule (a child's client
id is derived from its slice index, so the schedule recomputed after a restart must be identical).
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

from domain.algos.schedule import (
    ZERO,
    AlgoParamError,
    Slice,
    check_count,
    check_decimal,
    check_duration,
    check_quantity,
    check_start,
    check_step,
    min_units,
)

MAX_JITTER = Decimal("0.5")


def check_jitter(value: object, field: str) -> Decimal:
    j = check_decimal(value, field)
    if not ZERO <= j <= MAX_JITTER:
        raise AlgoParamError(field, f"must be between 0 and {MAX_JITTER} (a fraction), got {j}")
    return j


def even_split(units: int, n: int) -> list[int]:
    """``units`` in ``n`` parts equal up to one: the first ``units % n`` one larger."""
    base, extra = divmod(units, n)
    return [base + 1 if i < extra else base for i in range(n)]


def jitter_sizes(units: int, n: int, jitter: Decimal, floor_units: int, rng: random.Random) -> list[int]:
    """The even split moved at random within [floor(E (1 - j)), ceil(E (1 + j))] (and >= floor_units), same sum."""
    sizes = even_split(units, n)
    if not jitter or n < 2:
        return sizes
    even = Fraction(units, n)
    lo = max(floor_units, math.floor(even * (1 - Fraction(jitter))))
    hi = math.ceil(even * (1 + Fraction(jitter)))
    order = list(range(n))
    rng.shuffle(order)
    for a, b in zip(order[0::2], order[1::2], strict=False):
        # a gains t steps and b loses them (t < 0: the other way), both staying within [lo, hi]
        t = rng.randint(-min(sizes[a] - lo, hi - sizes[b]), min(hi - sizes[a], sizes[b] - lo))
        sizes[a] += t
        sizes[b] -= t
    return sizes


def jitter_times(start_ms: int, interval: int, n: int, jitter: Decimal, rng: random.Random) -> list[int]:
    """start + i x interval, slices after the first moved by at most jitter x interval (< interval / 2) ms."""
    bound = min(math.floor(Fraction(jitter) * interval), (interval - 1) // 2) if jitter else 0
    times = [start_ms]
    for i in range(1, n):
        times.append(start_ms + i * interval + (rng.randint(-bound, bound) if bound else 0))
    return times


def twap_schedule(
    quantity: Decimal,
    start_ms: int,
    duration_ms: int,
    slices: int,
    step: Decimal,
    *,
    min_quantity: Decimal = ZERO,
    size_jitter: Decimal = ZERO,
    time_jitter: Decimal = ZERO,
    seed: int = 0,
) -> list[Slice]:
    """The TWAP schedule (rules in the module docstring); AlgoParamError names the field of a bad parameter."""
    start = check_start(start_ms)
    duration = check_duration(duration_ms)
    wanted = check_count(slices, "algo.slices", duration)
    s = check_step(step)
    m = min_units(min_quantity, s)
    units = check_quantity(quantity, s, m)
    sj = check_jitter(size_jitter, "algo.sizeJitter")
    tj = check_jitter(time_jitter, "algo.timeJitter")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AlgoParamError("algo.seed", f"must be an integer, got {type(seed).__name__}")
    n = min(wanted, units // m)
    rng = random.Random(seed)
    sizes = jitter_sizes(units, n, sj, m, rng)
    times = jitter_times(start, duration // n, n, tj, rng)
    return [Slice(i, at, u * s) for i, (at, u) in enumerate(zip(times, sizes, strict=True))]
