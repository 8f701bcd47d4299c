"""domain.rate_window: when a call fits in ccxt's rolling request window. Property: the wait it gives is the
shortest one (the call fits then, and not a moment sooner), for any window contents."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.rate_window import spent, wait_for_room_ms

WINDOW = 2000.0
MOST = 30.0  # the order-router's share of Binance's budget per 2 s in ccxt's units


def test_a_call_that_fits_goes_now() -> None:
    assert wait_for_room_ms([(900.0, 4.0), (950.0, 0.2)], 1000.0, WINDOW, MOST, 4.0) == 0.0
    assert wait_for_room_ms([], 1000.0, WINDOW, MOST, MOST) == 0.0  # exactly the budget fits


def test_a_full_window_makes_room_when_enough_of_its_oldest_calls_leave() -> None:
    # the bench's stall: a window full of orders (0.2 each, 10 ms apart) and a trades poll of 4 to go
    orders = [(1000.0 + 10 * i, 0.25) for i in range(120)]  # 30 in all (0.25: exact in binary)
    now = 2200.0
    assert spent(orders, now, WINDOW) == MOST
    assert wait_for_room_ms(orders, now, WINDOW, MOST, 0.25) == 1000.0 + WINDOW - now  # the oldest leaves
    # 4 needs 16 of them gone: the 16th oldest (at 1150) leaves at 3150
    assert wait_for_room_ms(orders, now, WINDOW, MOST, 4.0) == 1150.0 + WINDOW - now


def test_calls_already_out_of_the_window_count_for_nothing() -> None:
    assert spent([(0.0, 30.0), (500.0, 1.0)], 2000.0, WINDOW) == 1.0  # the one at 0 left at 2000 (strictly later)
    assert wait_for_room_ms([(0.0, 30.0)], 2000.0, WINDOW, MOST, 30.0) == 0.0


def test_a_call_over_the_whole_budget_never_fits() -> None:
    assert wait_for_room_ms([], 0.0, WINDOW, MOST, MOST + 1) is None


entries = st.lists(
    st.tuples(st.integers(0, 4000).map(float), st.sampled_from([0.25, 0.5, 1.0, 1.25, 4.0])), max_size=60
)


@given(entries, st.integers(2000, 6000).map(float), st.sampled_from([0.25, 1.25, 4.0, 8.0]))
def test_the_wait_is_the_shortest_after_which_the_call_fits(
    window: list[tuple[float, float]], now: float, cost: float
) -> None:
    wait = wait_for_room_ms(window, now, WINDOW, MOST, cost)
    assert wait is not None  # every cost here fits an empty window
    assert wait >= 0
    assert spent(window, now + wait, WINDOW) + cost <= MOST
    if wait > 0:  # a moment sooner (1 ms: the times are whole ms) it would not have fitted
        assert spent(window, now + wait - 1, WINDOW) + cost > MOST
