"""A per-key throttle that never sends a stale value: at most one value per key every ``interval``.

A value offered when its key sent nothing for ``interval`` goes out at once (the leading edge); one offered
sooner is held, replacing any value held before for that key, and goes out when the interval since the
last one sent ends (the trailing edge: the latest state, never one superseded by a newer). So a burst of
values within one interval sends at most two: its first and its last. Times are whatever unit the caller
uses (the gateway: milliseconds), only compared and added. Pure: the caller owns the clock and the timer
(``next_due`` says when to call ``flush``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Throttle(Generic[K, V]):
    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval: must be positive")
        self.interval = interval
        self.sent_at: dict[K, float] = {}  # key -> when its last value was sent
        self.held: dict[K, V] = {}  # key -> its latest value not sent yet

    def offer(self, key: K, value: V, now: float) -> V | None:
        """``value`` is ``key``'s latest: returned when it is to be sent now, else held (None)."""
        last = self.sent_at.get(key)
        if last is None or now - last >= self.interval:
            self.sent_at[key] = now
            self.held.pop(key, None)
            return value
        self.held[key] = value
        return None

    def next_due(self) -> float | None:
        """When the earliest held value is due (None: nothing held)."""
        if not self.held:
            return None
        return min(self.sent_at[k] for k in self.held) + self.interval

    def flush(self, now: float) -> list[tuple[K, V]]:
        """The held values due at ``now``, each now sent."""
        due = [k for k in self.held if now - self.sent_at[k] >= self.interval]
        out = []
        for k in due:
            self.sent_at[k] = now
            out.append((k, self.held.pop(k)))
        return out

    def forget(self, key: K) -> None:
        self.sent_at.pop(key, None)
        self.held.pop(key, None)
