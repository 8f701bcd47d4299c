"""Iceberg: a resting limit that shows at most a display quantity and refills when it fills. Pure.

In whole amount steps (R what remains, D the display, m the smallest child: ``min_quantity`` rounded up to a
step, at least one): a quantity R can be shown in clips all within [m, D] exactly when K m <= R with
K = ceil(R / D) the fewest clips it needs. The next clip is then the largest that keeps the rest showable:

    clip = R                              when R <= D
    clip = min(D, R - (K - 1) m)          otherwise (the rest, R - clip, fills K - 1 clips within [m, D])

so every clip is > 0, <= display, a multiple of the step and >= min_quantity, the remainder after a clip is 0 or
>= min_quantity (the last clip can be sent), and the clips sum to the total. With D >= 2m - 1 every R >= m can be
shown; a smaller display leaves gaps (steps 5, display 4, minimum 3 cannot be shown: 4 + 1 and 3 + 2 both leave a
clip below the minimum), refused by ``iceberg_clips`` naming ``algo.displayQuantity`` and the display that would do.

``iceberg_clip`` is also called at run time with what a fill left, which may not be showable (a clip canceled
after a partial fill): then it shows min(display, remaining) and what is finally left below the minimum is the
caller's to report; a remainder already below the minimum is returned whole, and nothing left gives 0.
"""

from __future__ import annotations

from decimal import Decimal

from domain.algos.schedule import (
    ZERO,
    AlgoParamError,
    check_decimal,
    check_quantity,
    check_step,
    min_units,
    units_of,
)

DISPLAY = "algo.displayQuantity"


def showable(units: int, display: int, floor_units: int) -> bool:
    """Whether ``units`` steps split into clips all within [floor_units, display] steps."""
    return -(-units // display) * floor_units <= units


def clip_units(units: int, display: int, floor_units: int) -> int:
    if units <= display:
        return units
    if not showable(units, display, floor_units):
        return display
    return min(display, units - (-(-units // display) - 1) * floor_units)


def _steps(value: object, step: Decimal, field: str) -> int:
    d = check_decimal(value, field)
    u = units_of(d, step)
    if u.denominator != 1:
        raise AlgoParamError(field, f"{d} is not a multiple of the amount step {step}")
    return u.numerator


def iceberg_clip(remaining: Decimal, display: Decimal, step: Decimal, *, min_quantity: Decimal = ZERO) -> Decimal:
    """The next visible quantity for ``remaining`` (rules in the module docstring); 0 when nothing remains."""
    s = check_step(step)
    m = min_units(min_quantity, s)
    r = _steps(remaining, s, "remaining")
    if r < 0:
        raise AlgoParamError("remaining", f"must be >= 0, got {remaining}")
    d = _steps(display, s, DISPLAY)
    if d <= 0:
        raise AlgoParamError(DISPLAY, f"must be > 0, got {display}")
    if d < m:
        raise AlgoParamError(DISPLAY, f"{display} is below the smallest order the venue accepts ({m * s})")
    return clip_units(r, d, m) * s


def iceberg_clips(total: Decimal, display: Decimal, step: Decimal, *, min_quantity: Decimal = ZERO) -> list[Decimal]:
    """Every clip of an iceberg of ``total`` in order; a display that cannot show it is an AlgoParamError."""
    s = check_step(step)
    m = min_units(min_quantity, s)
    t = check_quantity(total, s, m)
    d = _steps(display, s, DISPLAY)
    if d <= 0:
        raise AlgoParamError(DISPLAY, f"must be > 0, got {display}")
    if d > t:
        raise AlgoParamError(DISPLAY, f"{display} is more than the order's quantity {total}")
    if d < m:
        raise AlgoParamError(DISPLAY, f"{display} is below the smallest order the venue accepts ({m * s})")
    if not showable(t, d, m):
        enough = -(-t // (t // m))  # the fewest steps per clip with the most clips (t // m) the minimum allows
        raise AlgoParamError(
            DISPLAY,
            f"{total} cannot be shown in clips of at most {display} and at least the venue's minimum {m * s}; "
            f"a display of at least {enough * s} can",
        )
    clips = []
    while t:
        c = clip_units(t, d, m)
        clips.append(c * s)
        t -= c
    return clips
