"""VWAP: slices that follow a volume profile. Pure.

- ``profile_from_trades(trades, end_ms, duration_ms, buckets)``: the traded volume in each of ``buckets`` equal
  windows of [end_ms - duration_ms, end_ms) (bucket k is [ceil(k D / B), ceil((k + 1) D / B)) ms after the start);
  the recent market's shape, used as the shape of the next ``duration_ms``. Trades outside the window are ignored;
  no volume at all gives flat weights (every bucket 1).
- ``vwap_schedule(quantity, start_ms, duration_ms, weights, step, *, min_quantity)``: one slice per bucket, due at
  the bucket's start (the same bucket boundaries from ``start_ms``), quantities proportional to the weights.

Allocation (in whole amount steps, U = quantity / step, W = the sum of the weights): the cumulative target after
bucket k is T_k = U x (w_0 + ... + w_k) / W; the cumulative allocation A_k is T_k rounded half up to a whole step,
and bucket k gets A_k - A_(k-1). This is the largest-remainder idea applied to the running sum: every bucket gets
its share rounded down or up (never further off than one step), the shares sum to U exactly, a zero-weight bucket
gets nothing (and is skipped), and - unlike ranking the remainders over the whole day - the running total never
drifts from the profile by more than half a step. A bucket whose share is below the minimum child (m steps:
``min_quantity`` rounded up to a step, at least one) is merged into the next: its quantity waits and goes with the
next bucket that brings the waiting quantity to at least m; what still waits after the last bucket is added to the
last slice sent.

Tracking property (proved by the hypothesis tests in tests/unit/test_algo_vwap.py): with C_k the quantity of all
slices due at or before bucket k's start, after every bucket k

    | C_k / quantity - (w_0 + ... + w_k) / W |  <=  (m - 1/2) x step / quantity

i.e. the schedule is never more than (m - 1/2) steps ahead of or behind its profile: half a step without a
minimum, and always less than (step + min_quantity) / quantity. Why: A_k is within half a step of T_k; behind, at
most m - 1 steps wait for the next slice; ahead, the last slice carries the merged tail (at most m - 1 steps), and
after it C_k = quantity while U - T_k <= U - T_last < (m - 1) + 1/2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from fractions import Fraction

from domain.algos.schedule import (
    ZERO,
    AlgoParamError,
    Slice,
    check_count,
    check_duration,
    check_quantity,
    check_start,
    check_step,
    min_units,
)

PROFILE = "algo.profile"


def bucket_start(k: int, duration_ms: int, buckets: int) -> int:
    """The offset in ms of bucket k's start: ceil(k x duration / buckets)."""
    return -(-k * duration_ms // buckets)


def profile_from_trades(
    trades: Iterable[tuple[int, Decimal]], end_ms: int, duration_ms: int, buckets: int
) -> list[Decimal]:
    """The volume traded in each of ``buckets`` equal windows of [end_ms - duration_ms, end_ms); flat if none.

    ``trades`` are (epoch ms, quantity); a quantity that is not a finite number >= 0 is a ValueError (market data
    that cannot be a volume, reported rather than counted).
    """
    end = check_start(end_ms, "endMs")
    duration = check_duration(duration_ms)
    n = check_count(buckets, "algo.slices", duration, "buckets")
    start = end - duration
    volume = [ZERO] * n
    for ts, qty in trades:
        if not isinstance(qty, Decimal) or not qty.is_finite() or qty < 0:
            raise ValueError(f"trade quantity must be a finite Decimal >= 0, got {qty!r} at {ts}")
        if start <= ts < end:
            volume[(ts - start) * n // duration] += qty
    if not any(volume):
        return [Decimal(1)] * n
    return volume


def check_weights(weights: Sequence[Decimal], duration_ms: int) -> list[Fraction]:
    """The profile: 1..10000 finite weights >= 0, at least one > 0, at most one per ms (field ``algo.profile``)."""
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise AlgoParamError(PROFILE, "must be a list of weights")
    if not weights:
        raise AlgoParamError(PROFILE, "must have at least one weight")
    check_count(len(weights), PROFILE, duration_ms, "weights")
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, Decimal | int) or not Decimal(w).is_finite() or w < 0:
            raise AlgoParamError(PROFILE, f"weight {i} must be a finite number >= 0, got {w!r}")
        out.append(Fraction(w))
    if not any(out):
        raise AlgoParamError(PROFILE, "needs at least one weight > 0")
    return out


def allocate(units: int, weights: Sequence[Fraction]) -> list[int]:
    """``units`` split by the weights: bucket k gets round(T_k) - round(T_(k-1)), T the cumulative target."""
    total = sum(weights, Fraction(0))
    out = []
    running = Fraction(0)
    before = 0
    for w in weights:
        running += w
        now = int(units * running / total + Fraction(1, 2))  # round half up (>= 0: int() is floor)
        out.append(now - before)
        before = now
    return out


def vwap_schedule(
    quantity: Decimal,
    start_ms: int,
    duration_ms: int,
    weights: Sequence[Decimal],
    step: Decimal,
    *,
    min_quantity: Decimal = ZERO,
) -> list[Slice]:
    """The VWAP schedule (rules and tracking bound in the module docstring); AlgoParamError names the field."""
    start = check_start(start_ms)
    duration = check_duration(duration_ms)
    w = check_weights(weights, duration)
    s = check_step(step)
    m = min_units(min_quantity, s)
    units = check_quantity(quantity, s, m)
    shares = allocate(units, w)
    sent: list[tuple[int, int]] = []  # (at_ms, steps)
    waiting = 0
    for k, share in enumerate(shares):
        if not share:
            continue  # nothing in this bucket (zero weight, or a share rounded to nothing): skipped
        waiting += share
        if waiting >= m:
            sent.append((start + bucket_start(k, duration, len(w)), waiting))
            waiting = 0
    if waiting:  # the tail below the minimum goes with the last slice (there is one: units >= m)
        at, last = sent[-1]
        sent[-1] = (at, last + waiting)
    return [Slice(i, at, u * s) for i, (at, u) in enumerate(sent)]
