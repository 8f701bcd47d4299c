"""domain.ids.day_key keeps the keys of the last days asked for: it must equal the plain formatting for
any time, in any order of calls (crossing days both ways, and the edges of a day)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from domain.ids import DAY_MS, day_key

MIN_MS = -62_135_596_800_000 + DAY_MS  # the second day of year 1 ...
MAX_MS = 253_402_300_799_999  # ... to the last millisecond of year 9999


def plain(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y%m%d")


@given(st.lists(st.integers(MIN_MS, MAX_MS), min_size=1, max_size=50))
def test_same_as_formatting_the_time(times: list[int]) -> None:
    for ts in times:
        assert day_key(ts) == plain(ts)


@given(st.integers(-20_000, 2_900_000).map(lambda n: n * DAY_MS), st.sampled_from([-1, 0, 1, DAY_MS - 1]))
def test_the_edges_of_a_day(start: int, offset: int) -> None:
    ts = start + offset
    assert day_key(ts) == plain(ts)
    assert day_key(start - 1) == plain(start - 1)  # the day before, right after
    assert day_key(ts) == plain(ts)


def test_known_days() -> None:
    assert day_key(0) == "19700101"
    assert day_key(-1) == "19691231"
    assert day_key(1_795_000_000_000) == "20261118"
    assert day_key(1_795_000_000_000) == "20261118"  # kept
    assert day_key(1_795_000_000_000 + DAY_MS) == "20261119"
