"""domain/backoff.py: 0.5 s doubling to 30 s, reset after an instance ran 60 s."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.backoff import CONNECT, RESTART, Backoff


def test_restart_delays_double_from_half_a_second_to_thirty() -> None:
    failures, delays = 0, []
    for _ in range(9):
        failures, d = RESTART.failed(failures, ran_for=1.0)
        delays.append(d)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_an_instance_that_ran_a_minute_starts_the_count_again() -> None:
    failures = 0
    for _ in range(6):
        failures, _ = RESTART.failed(failures, ran_for=5.0)
    assert failures == 6 and RESTART.delay(failures) == 16.0
    failures, d = RESTART.failed(failures, ran_for=60.0)
    assert (failures, d) == (1, 0.5)
    failures, d = RESTART.failed(failures, ran_for=59.9)
    assert (failures, d) == (2, 1.0)


def test_a_start_that_failed_counts_on() -> None:
    failures, d = RESTART.failed(3, ran_for=None)
    assert (failures, d) == (4, 4.0)


def test_connect_waits_at_most_five_seconds() -> None:
    assert [CONNECT.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


@given(
    st.floats(min_value=0.01, max_value=10),
    st.floats(min_value=0.01, max_value=100),
    st.integers(min_value=0, max_value=100_000),
)
def test_delay_is_within_bounds_and_never_shrinks_with_more_failures(first: float, cap: float, n: int) -> None:
    b = Backoff(first=first, cap=cap)
    d = b.delay(n)
    assert 0 < d <= cap
    assert d >= min(first, cap)
    assert b.delay(n + 1) >= d
