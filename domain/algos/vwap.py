"""VWAP: slices that follow a volume profile. Pure.

- ``MarketVolume``: one market's recent traded volume (one venue's public trades of one pair), summed per time cell
  (100 ms cells for the last 6 minutes, 1 s for the last 61 minutes, 1 min for the last 7 days and an hour:
  ``VOLUME_TIERS``), so its memory is bounded however busy the pair; each tier knows from when it is complete.
- ``recent_profile(market, end_ms, lookback_ms, buckets, watched_from, now_ms, what)``: the weights of ``buckets``
  equal windows of [end_ms - lookback_ms, end_ms) (bucket k is [ceil(k D / B), ceil((k + 1) D / B)) ms after the
  start), the recent market's shape, used as the shape of the next schedule. **Coverage rule**: a bucket speaks by
  its volume only when every trade in it was seen: it starts at or after ``watched_from`` (since when the caller
  saw every trade: the order-router's subscription) and the tier's floor, rounded up to a whole cell. The buckets
  before that (after a restart, or beyond the history kept) get their time share, 1/B each (as if they traded the
  mean of the watched ones), and the watched ones share the rest in proportion to their volume (``blend``); when
  no bucket is watched in full, or the watched ones had no volume, the profile is flat. Never does an unwatched
  bucket get 0, so a window not covered never puts the quantity into its last bucket. The weights are shares of
  1 in steps of 1e-12 that sum to 1 exactly (``volume_weights``).
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

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import MAX_PREC, Context, Decimal, Inexact
from fractions import Fraction
from typing import Literal

from domain.algos.schedule import (
    MAX_DURATION_MS,
    MAX_SLICES,
    ZERO,
    AlgoParamError,
    Slice,
    check_count,
    check_duration,
    check_int,
    check_quantity,
    check_start,
    check_step,
    min_units,
)

PROFILE = "algo.profile"
LOOKBACK = "algo.lookbackMs"


def bucket_start(k: int, duration_ms: int, buckets: int) -> int:
    """The offset in ms of bucket k's start: ceil(k x duration / buckets)."""
    return -(-k * duration_ms // buckets)


# -- the recent traded volume (a VWAP without ``profile``) --------------------------------------------------------

# (cell width ms, kept for ms): each market's volume is summed per cell at three resolutions; a cell older than its
# tier keeps is dropped when a newer trade comes (so a tier holds at most keep / width + 2 cells, however busy)
VOLUME_TIERS: tuple[tuple[int, int], ...] = (
    (100, 6 * 60_000),  # 100 ms cells, the last 6 minutes
    (1_000, 61 * 60_000),  # 1 s cells, the last 61 minutes
    (60_000, MAX_DURATION_MS + 60 * 60_000),  # 1 min cells, the last 7 days and an hour (the longest lookbackMs)
)
WEIGHT_UNITS = 10**12  # a profile made from volume: weights are shares of 1 in steps of 1e-12, summing to 1 exactly
ProfileSource = Literal["request", "volume", "blend", "flat"]


def first_bucket_from(offset_ms: int, duration_ms: int, buckets: int) -> int:
    """The first bucket whose start is at or after ``offset_ms`` (ms after the window's start); ``buckets`` when
    none is: the smallest k with ceil(k D / B) >= offset."""
    if offset_ms <= 0:
        return 0
    return min(buckets, (offset_ms - 1) * buckets // duration_ms + 1)  # ceil(x) >= o  <=>  x > o - 1


class MarketVolume:
    """The traded volume of one market (one venue's public trades of one pair), summed per time cell at the
    resolutions of ``VOLUME_TIERS``: bounded memory however many trades come. Pure: the time is given.

    Each tier knows from when it is complete (``floor``): its dropped cells' end, the latest first (a late trade
    older than that is not counted there). Who feeds it knows since when it saw every trade (``watched_from`` of
    ``volumes``): both bound the part of a window the volume may speak for."""

    def __init__(self) -> None:
        self.cells: list[OrderedDict[int, Decimal]] = [OrderedDict() for _ in VOLUME_TIERS]  # cell -> volume
        self.floor: list[int | None] = [None] * len(VOLUME_TIERS)  # ms: the tier holds every trade from here

    def add(self, ts: int, quantity: Decimal, now_ms: int) -> None:
        """One trade (epoch ms, quantity); a quantity that is not a finite Decimal >= 0 is a ValueError (market
        data that cannot be a volume: reported, not counted)."""
        if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity < 0:
            raise ValueError(f"trade quantity must be a finite Decimal >= 0, got {quantity!r} at {ts}")
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise ValueError(f"trade time must be an integer (epoch ms), got {ts!r}")
        for i, (width, keep) in enumerate(VOLUME_TIERS):
            floor = self.floor[i]
            if floor is not None and ts < floor:
                continue  # (its cell was dropped: the tier no longer speaks for that time)
            cells = self.cells[i]
            k = ts // width
            if k in cells:
                cells[k] = _EXACT.add(cells[k], quantity)
                continue
            cells[k] = quantity
            cutoff, cap = now_ms - keep, keep // width + 2
            while cells:
                first = next(iter(cells))  # the oldest cell made (cells are made in about time order)
                if (first + 1) * width > cutoff and len(cells) <= cap:
                    break
                cells.popitem(last=False)
                end = (first + 1) * width
                if floor is None or end > floor:
                    self.floor[i] = floor = end

    def size(self) -> int:
        """How many cells are held (all tiers)."""
        return sum(len(c) for c in self.cells)

    def volumes(
        self, start_ms: int, duration_ms: int, buckets: int, watched_from: int | None, now_ms: int
    ) -> tuple[list[Fraction], int, int | None]:
        """(volume per bucket, the first bucket watched in full, from when): the volume of the market in each of
        ``buckets`` equal windows of [start_ms, start_ms + duration_ms) (bucket k is [ceil(k D / B),
        ceil((k + 1) D / B)) ms after the start), counted only from the first bucket that starts when the volume is
        complete: at or after ``watched_from`` (None: not watched at all) and the tier's floor, rounded up to its
        cell. The buckets before it are 0 here (unknown). The tier used is the one that covers the most buckets
        (the finest of those). A cell split by a bucket boundary counts in proportion to its time (the cell that
        holds ``now_ms``: its time up to now)."""
        if watched_from is None:
            return [Fraction(0)] * buckets, buckets, None
        best: tuple[int, int, int] | None = None  # (first covered bucket, tier, covered from)
        for i, (width, _) in enumerate(VOLUME_TIERS):
            floor = self.floor[i]
            since = max(watched_from, floor) if floor is not None else watched_from
            since = -(-since // width) * width  # a whole cell
            first = first_bucket_from(since - start_ms, duration_ms, buckets)
            if best is None or first < best[0]:
                best = (first, i, since)
        assert best is not None
        first, tier, since = best
        if first == buckets:
            return [Fraction(0)] * buckets, first, since
        width = VOLUME_TIERS[tier][0]
        lo, hi = start_ms + bucket_start(first, duration_ms, buckets), start_ms + duration_ms
        cells: list[tuple[int, int, int, int, tuple[int, int]]] = []  # (start, end, from, to, volume) in [lo, hi)
        for k, v in self.cells[tier].items():
            a = k * width
            b = a + width if now_ms < a else min(a + width, now_ms + 1)  # the time its trades are spread over
            x, y = max(a, lo), min(b, hi)
            if x < y and v:
                cells.append((a, b, x, y, v.as_integer_ratio()))
        # in whole numbers (exact, and fast for 10,000 buckets): a volume v is v x scale units; a whole cell's
        # part of overlap ms is v x scale x overlap / width, counted in 1 / (scale x width)
        scale = math.lcm(*{den for *_, (_, den) in cells}) if cells else 1
        sums = [0] * buckets
        now_cell = [Fraction(0)] * buckets  # the cell still trading now: spread over its time so far
        for a, b, x, y, (num, den) in cells:
            v, j = num * (scale // den), (x - start_ms) * buckets // duration_ms
            while x < y:
                nxt = min(y, start_ms + bucket_start(j + 1, duration_ms, buckets))
                if b - a == width:
                    sums[j] += v * (nxt - x)
                else:
                    now_cell[j] += Fraction(v * (nxt - x), scale * (b - a))
                x, j = nxt, j + 1
        unit = scale * width
        return [Fraction(n, unit) + c for n, c in zip(sums, now_cell, strict=True)], first, since


def volume_weights(volumes: Sequence[Fraction | Decimal], first_covered: int) -> list[Decimal]:
    """A profile from bucket volumes whose buckets before ``first_covered`` are not known: each unknown bucket gets
    its time share (1/B: as if it traded the mean of the known ones), the known ones split the rest (their time
    share) in proportion to their volume; nothing known, or no volume in what is known: flat. Rounded to shares
    of 1 in steps of 1e-12 by the running total (``allocate``): the weights sum to 1 exactly, each within 1e-12
    of its exact share, a known bucket without volume gets 0."""
    n = len(volumes)
    if n == 0:
        raise ValueError("a profile needs at least one bucket")
    if not 0 <= first_covered <= n:
        raise ValueError(f"first_covered must be within 0..{n}, got {first_covered}")
    known = [Fraction(v) for v in volumes[first_covered:]]
    if any(v < 0 for v in known):
        raise ValueError("a volume must be >= 0")
    scale = math.lcm(*{v.denominator for v in known}) if known else 1
    ints = [v.numerator * (scale // v.denominator) for v in known]  # the volumes as whole numbers of 1/scale
    total = sum(ints)
    # the exact shares over the common denominator B x total: an unknown bucket total, a known one c x its volume
    exact = [1] * n if not total else [total] * first_covered + [len(ints) * v for v in ints]
    return [_share(u) for u in allocate(WEIGHT_UNITS, exact)]


_EXACT = Context(prec=MAX_PREC, traps=[Inexact])  # sums of volumes: never rounded (raises rather than round)


def _share(units: int) -> Decimal:
    return (Decimal(units) / WEIGHT_UNITS).normalize() if units else Decimal(0)


def _at(ms: int) -> str:
    """An epoch ms as UTC ISO 8601 (for the trail notes), with the ms."""
    try:
        iso = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):  # (beyond the calendar: the number alone)
        return f"{ms} ms"
    return f"{iso} ({ms} ms)"


@dataclass(frozen=True, slots=True)
class RecentProfile:
    """A VWAP's weights from the recent traded volume, and what they stand on (``algoState``, the trail)."""

    weights: list[Decimal]
    source: ProfileSource  # volume: every bucket by volume; blend: the unwatched ones at their time share; flat
    covered_from: int | None  # epoch ms from which the volume was complete (None: trades not watched at all)
    covered: int  # how many buckets (the last ones) were watched in full
    note: str | None  # for the trail when the weights are not all the volume's (None: they are)


def recent_profile(
    market: MarketVolume | None,
    end_ms: int,
    lookback_ms: int,
    buckets: int,
    watched_from: int | None,
    now_ms: int,
    what: str,
) -> RecentProfile:
    """The profile of [end_ms - lookback_ms, end_ms) in ``buckets`` from ``market``'s volume (None: no trade of it
    seen) watched since ``watched_from`` (``volumes``, ``volume_weights``); ``what`` names the trades in the note
    (``BTC_USDT trades at binance``). AlgoParamError naming the field for a window that cannot make buckets."""
    end = check_start(end_ms, "endMs")
    duration = check_int(lookback_ms, LOOKBACK, 1, MAX_DURATION_MS, f"between 1 and {MAX_DURATION_MS} ms (7 days)")
    n = check_int(buckets, "algo.slices", 1, MAX_SLICES, f"between 1 and {MAX_SLICES} buckets")
    if n > duration:
        raise AlgoParamError("algo.slices", f"{n} buckets do not fit in {LOOKBACK} {duration} (at most one per ms)")
    start = end - duration
    volume, first, since = (market or MarketVolume()).volumes(start, duration, n, watched_from, now_ms)
    weights = volume_weights(volume, first)
    covered = n - first
    known = sum(volume[first:], Fraction(0))
    window = f"the lookback window of {duration} ms ({n} buckets)"
    if since is None:
        return RecentProfile(weights, "flat", None, 0, f"vwap profile flat: {what} are not watched yet ({window})")
    if covered == 0:
        note = (
            f"vwap profile flat: {what} watched in full only since {_at(since)}, after every bucket of {window} "
            "began (a restart, or the history kept)"
        )
        return RecentProfile(weights, "flat", since, 0, note)
    if not known:
        note = f"vwap profile flat: no volume of {what} in the {covered} of {n} buckets watched in full ({window})"
        return RecentProfile(weights, "flat", since, covered, note)
    if first == 0:
        return RecentProfile(weights, "volume", since, covered, None)
    note = (
        f"vwap profile blended: {what} watched in full since {_at(since)}: the last {covered} of {n} buckets of "
        f"{window} follow the volume, the first {first} (not watched in full) get their time share, 1/{n} each"
    )
    return RecentProfile(weights, "blend", since, covered, note)


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


def allocate(units: int, weights: Sequence[Fraction | int]) -> list[int]:
    """``units`` split by the weights: bucket k gets round(T_k) - round(T_(k-1)), T the cumulative target."""
    scale = math.lcm(*{Fraction(w).denominator for w in weights})  # in whole numbers: exact and fast
    ints = [int(w * scale) for w in weights]
    total = sum(ints)
    out = []
    running = before = 0
    for w in ints:
        running += w
        now = (2 * units * running + total) // (2 * total)  # units x running / total rounded half up
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
