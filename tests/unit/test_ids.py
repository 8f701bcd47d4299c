"""domain.ids: day_key keeps the keys of the last days asked for: it must equal the plain formatting for
any time, in any order of calls (crossing days both ways, and the edges of a day)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from domain.ids import DAY_MS, day_key, fill_id, trade_id_of

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


ID_TEXT = st.text(st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12)


def test_a_fill_id_carries_the_pair_as_venues_number_trades_per_symbol() -> None:
    assert fill_id("binance", "BTC_USDT", "123") != fill_id("binance", "ETH_USDT", "123")
    assert fill_id("binance", "BTC_USDT", "123") == "binance:BTC_USDT:123"


def test_the_trade_id_is_read_back_from_both_forms_and_an_outside_id_whole() -> None:
    assert trade_id_of("binance:BTC_USDT:123", "binance", "BTC_USDT") == "123"
    assert trade_id_of("binance:123", "binance", "BTC_USDT") == "123"  # stored before the pair was in the id
    assert trade_id_of("paper:BTC_USDT:V-9-1", "paper", "BTC_USDT") == "V-9-1"
    assert trade_id_of("outside-1", "binance", "BTC_USDT") == "outside-1"
    assert trade_id_of("kraken:7", "binance", "BTC_USDT") == "kraken:7"  # another venue's: not ours to strip


@given(venue=ID_TEXT, pair=ID_TEXT, trade=ID_TEXT)
def test_the_trade_id_of_a_fill_id_is_the_trade_id_it_was_made_of(venue: str, pair: str, trade: str) -> None:
    assert trade_id_of(fill_id(venue, pair, trade), venue, pair) == trade
