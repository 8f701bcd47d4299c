"""Back-off for retries and restarts. Pure.

A part that fails is tried again after ``first`` seconds, then twice as long each time, never longer
than ``cap``; once an instance has run ``reset_after`` seconds, its failure counts as the first again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 0.5
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        """The wait before the next try after ``failures`` failures in a row (1 = the first failure)."""
        if failures <= 1:
            return min(self.first, self.cap)
        # (no float overflow for a part that has failed for days: the exponent stops growing at the cap)
        n = 0
        d = self.first
        while n < failures - 1 and d < self.cap:
            d *= 2
            n += 1
        return min(d, self.cap)

    def failed(self, failures: int, ran_for: float | None = None) -> tuple[int, float]:
        """One more failure after ``failures`` in a row; ``ran_for``: how long the instance that failed ran
        (None: it never started). Returns the new count and the wait before the next try."""
        if ran_for is not None and ran_for >= self.reset_after:
            failures = 0
        failures += 1
        return failures, self.delay(failures)


RESTART = Backoff(first=0.5, cap=30.0, reset_after=60.0)  # a part that died or could not start
CONNECT = Backoff(first=0.5, cap=5.0, reset_after=60.0)  # NATS not reachable (yet): asked again soon
