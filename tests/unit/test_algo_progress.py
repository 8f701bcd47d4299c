"""Algorithm progress (domain/algos/progress.py): what is due, what remains, unfilled quantity carried to the next
slice or reported, and - over any sequence of clock ticks, fills and partial fills - nothing sent beyond the
parent's quantity and no slice sent twice. Pure: no bus."""

from __future__ import annotations

import contextlib
from decimal import ROUND_DOWN
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.algos import Leftover, Slice, carry, due, remaining_after, twap_schedule

S = [Slice(0, 100, D(3)), Slice(1, 200, D(3)), Slice(2, 300, D(4))]


def test_due_lists_the_unsent_slices_due_now_in_order():
    assert due(S, 99, set()) == []
    assert due(S, 100, set()) == [S[0]]
    assert due(S, 250, set()) == [S[0], S[1]]
    assert due(S, 250, {0}) == [S[1]]
    assert due(S, 10**9, {1}) == [S[0], S[2]]  # a restart long after: everything not sent, in order
    assert due(S, 10**9, {0, 1, 2}) == []


def test_remaining_after():
    assert remaining_after(D(10), D(0)) == D(10)
    assert remaining_after(D(10), D("2.5")) == D("7.5")
    assert remaining_after(D(10), D(10)) == D(0)
    with pytest.raises(ValueError, match="overfill"):
        remaining_after(D(10), D("10.01"))
    with pytest.raises(ValueError, match=">= 0"):
        remaining_after(D(10), D(-1))


def test_carry_rolls_unfilled_into_the_next_slice():
    assert carry(S, 0, D(1)) == [Slice(0, 100, D(3)), Slice(1, 200, D(4)), Slice(2, 300, D(4))]
    assert carry(S, 0, D(0)) == S
    # the next one already sent (the previous child was still working when it was due): the one after
    assert carry(S, 0, D(2), sent={0, 1}) == [Slice(0, 100, D(3)), Slice(1, 200, D(3)), Slice(2, 300, D(6))]
    assert S[1].quantity == D(3)  # the input is not changed


def test_the_last_slices_leftover_is_reported_not_dropped():
    with pytest.raises(Leftover) as err:
        carry(S, 2, D("1.5"))
    assert (err.value.index, err.value.quantity) == (2, D("1.5"))
    assert "slice 2 left 1.5 unfilled" in str(err.value)
    with pytest.raises(Leftover):
        carry(S, 1, D(1), sent={0, 1, 2})  # every later slice is out already
    assert carry(S, 2, D(0)) == S  # nothing unfilled: nothing to report


def test_carry_refuses_what_cannot_be():
    with pytest.raises(ValueError, match="no slice 7"):
        carry(S, 7, D(1))
    with pytest.raises(ValueError, match="between 0 and slice 0's quantity 3"):
        carry(S, 0, D(4))
    with pytest.raises(ValueError, match="between 0"):
        carry(S, 0, D(-1))


# --- any sequence of events ----------------------------------------------------------------------------------------

tick = st.tuples(st.just("tick"), st.integers(0, 3000))
end = st.tuples(st.just("end"), st.integers(0, 10**6), st.integers(0, 1000))  # (which working child, fill per mille)
restart = st.tuples(st.just("restart"))


@settings(max_examples=300, deadline=None)
@given(
    units=st.integers(1, 5000),
    slices=st.integers(1, 40),
    seed=st.integers(0, 1000),
    events=st.lists(st.one_of(tick, end, restart), max_size=120),
    finals=st.lists(st.integers(0, 1000), min_size=60, max_size=60),
)
def test_nothing_is_sent_beyond_the_parent_and_no_slice_twice(units, slices, seed, events, finals):
    step = D("0.01")
    total = units * step
    start, duration = 1000, 10_000

    def fresh() -> list[Slice]:
        return twap_schedule(total, start, duration, slices, step, size_jitter=D("0.3"), seed=seed)

    schedule = fresh()
    now = start
    sent: set[int] = set()
    sent_log: list[int] = []
    working: dict[int, D] = {}  # index -> quantity of the child out
    trail: list[tuple[int, D, frozenset[int]]] = []  # (index, unfilled, sent then): carried or reported
    filled = leftover = D(0)

    def check() -> None:
        unsent = sum((x.quantity for x in schedule if x.index not in sent), D(0))
        assert filled + sum(working.values(), D(0)) + unsent + leftover == total
        assert filled + sum(working.values(), D(0)) <= total  # never more out (filled or working) than the parent
        assert remaining_after(total, filled) == total - filled
        assert len(sent_log) == len(set(sent_log))

    def send_due() -> None:
        for x in due(schedule, now, sent):
            assert x.index not in sent
            sent.add(x.index)
            sent_log.append(x.index)
            working[x.index] = x.quantity

    def end_child(which: int, per_mille: int) -> None:
        nonlocal schedule, filled, leftover
        index = sorted(working)[which % len(working)]
        qty = working.pop(index)
        got = (qty * per_mille / 1000).quantize(step, rounding=ROUND_DOWN)
        filled += got
        trail.append((index, qty - got, frozenset(sent)))
        try:
            schedule = carry(schedule, index, qty - got, sent=sent)
        except Leftover as e:
            assert e.quantity == qty - got > 0
            leftover += e.quantity

    for event in events:
        if event[0] == "tick":
            now += event[1]
            send_due()
        elif event[0] == "end" and working:
            end_child(event[1], event[2])
        elif event[0] == "restart":
            # the process dies and comes back: the schedule is recomputed from the same inputs and the trail
            # (which indexes were sent, what was carried where) is replayed onto it
            rebuilt = fresh()
            for index, unfilled, sent_then in trail:
                with contextlib.suppress(Leftover):  # reported then, reported again: it changes no slice
                    rebuilt = carry(rebuilt, index, unfilled, sent=sent_then)
            assert rebuilt == schedule
        check()

    # the schedule runs out: every slice is sent, every child ends
    now += duration
    send_due()
    for per_mille in finals:
        if not working:
            break
        end_child(0, per_mille)
        send_due()
    check()
    assert not working
    assert sorted(sent_log) == [x.index for x in schedule]  # every slice sent, each exactly once
    assert filled + leftover == total
