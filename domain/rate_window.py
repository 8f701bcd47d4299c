"""A rolling request window (ccxt's ``rollingWindow`` limiter): when a call of a given cost fits in it. Pure.

The window holds the calls of the last ``window_ms`` as (time ms, cost); one stays in it while its time is later
than ``now - window_ms``. A call fits when the cost still in the window plus its own is at most ``max_cost``
(ccxt 4.5.64, ``ccxt/async_support/base/throttler.py``, ``rolling_window_loop``: ``totalCost + cost <= maxWeight``).
"""

from __future__ import annotations

from collections.abc import Iterable


def spent(entries: Iterable[tuple[float, float]], now_ms: float, window_ms: float) -> float:
    """The cost still in the window at ``now_ms``."""
    return sum(cost for at, cost in entries if at > now_ms - window_ms)


def wait_for_room_ms(
    entries: Iterable[tuple[float, float]], now_ms: float, window_ms: float, max_cost: float, cost: float
) -> float | None:
    """How long from ``now_ms`` until a call of ``cost`` fits (0: now), if no other call comes meanwhile; None when
    it never fits (its cost alone is over ``max_cost``)."""
    if cost > max_cost:
        return None
    live = sorted((at, c) for at, c in entries if at > now_ms - window_ms)
    if sum(c for _, c in live) + cost <= max_cost:
        return 0.0
    # the calls leave the window oldest first: the one whose leaving makes room decides
    for i, (at, _) in enumerate(live):
        if sum(c for _, c in live[i + 1 :]) + cost <= max_cost:
            return at + window_ms - now_ms
    return None  # pragma: no cover - the last one leaving empties the window, and cost <= max_cost
