"""domain.recent: the bounded memories of issue 7 (RecentIds, OrderTable, split_order_id). Pure, no bus."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ids import order_id
from domain.recent import FILL_DEDUPE_WINDOW, OrderTable, RecentIds, split_order_id


# -- RecentIds ---------------------------------------------------------------------------------------------
def test_recent_ids_keeps_the_last_n_in_insertion_order():
    r = RecentIds(3)
    for i in "abcde":
        r.add(i)
    assert list(r) == ["c", "d", "e"] and len(r) == 3
    assert "a" not in r and "b" not in r and "c" in r and "e" in r


def test_recent_ids_readding_a_present_id_neither_refreshes_nor_duplicates_it():
    r = RecentIds(3, ["a", "b", "c"])
    r.add("a")  # already there: stays the oldest
    assert list(r) == ["a", "b", "c"] and len(r) == 3
    r.add("d")
    assert list(r) == ["b", "c", "d"]  # "a" went first, although it was added again last


def test_recent_ids_from_an_iterable_keeps_only_the_last_n():
    r = RecentIds(2, ["x", "y", "x", "z"])
    assert list(r) == ["y", "z"]
    assert list(RecentIds(5, [])) == [] and len(RecentIds(1)) == 0


def test_recent_ids_limit_one_keeps_only_the_latest():
    r = RecentIds(1)
    r.add("a")
    r.add("b")
    assert list(r) == ["b"] and r.limit == 1


@pytest.mark.parametrize("limit", [0, -1])
def test_recent_ids_limit_below_one_is_refused(limit):
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(limit)


def test_fill_dedupe_window_is_the_documented_size():
    assert FILL_DEDUPE_WINDOW == 20_000


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.lists(st.sampled_from("abcdefghij"), max_size=60))
def test_recent_ids_is_the_last_n_distinct_first_sightings(limit, adds):
    r = RecentIds(limit)
    model: list[str] = []
    for i in adds:
        r.add(i)
        if i not in model:
            model.append(i)
            model = model[-limit:]
    assert list(r) == model and len(r) == len(model) <= limit
    assert all(i in r for i in model) and not any(i in r for i in set(adds) - set(model))


# -- split_order_id ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("oid", "expected"),
    [
        ("ORD_20260101_000001", ("20260101", 1)),
        ("ORD_20261231_999999", ("20261231", 999_999)),
        ("ORD_20260101_1234567", ("20260101", 1_234_567)),  # wider past 999,999 a day
        ("ORD_20260101_000000", ("20260101", 0)),
    ],
)
def test_split_order_id_of_order_ids(oid, expected):
    assert split_order_id(oid) == expected


@pytest.mark.parametrize(
    "oid",
    [
        "",
        "ORD",
        "ORD_",
        "ORD__",
        "ORD_20260101_",  # no number
        "ORD__000001",  # no day
        "ORD_2026011_000001",  # 7-digit day
        "ORD_202601011_000001",  # 9-digit day
        "ORD_2026010a_000001",
        "ORD_20260101_00000x",
        "ORD_20260101_-1",
        "ORD_20260101_+1",
        "ORD_20260101_1_2",
        "SIG_20260101_000001",
        "ord_20260101_000001",
        "XORD_20260101_000001",
        "ORD-20260101-000001",
        "ORD_20260101_ 1",
        "api-0f3c",
        "20260101_000001",
    ],
)
def test_split_order_id_of_other_shapes_is_none(oid):
    assert split_order_id(oid) is None


def test_split_order_id_of_a_non_decimal_digit_is_none():
    assert split_order_id("ORD_20260101_²") is None


def test_only_the_canonical_spelling_of_an_order_id_is_an_order_id():
    assert split_order_id("ORD_20260101_1") is None
    assert split_order_id("ORD_20260101_١") is None


# -- OrderTable --------------------------------------------------------------------------------------------
def test_order_table_get_and_set_across_days():
    t = OrderTable()
    t.set("ORD_20260101_000001", 11)
    t.set("ORD_20260101_000002", 12)
    t.set("ORD_20260102_000001", 21)
    assert t.get("ORD_20260101_000001") == 11
    assert t.get("ORD_20260101_000002") == 12
    assert t.get("ORD_20260102_000001") == 21  # same n, another day: its own slot
    assert t.get("ORD_20260102_000002") == 0
    assert t.get("ORD_20260103_000001") == 0  # a day never seen
    t.set("ORD_20260101_000001", 99)  # overwritten
    assert t.get("ORD_20260101_000001") == 99 and t.get("ORD_20260102_000001") == 21


def test_order_table_zero_means_absent():
    t = OrderTable()
    assert t.get("ORD_20260101_000005") == 0
    t.set("ORD_20260101_000005", 7)
    t.set("ORD_20260101_000005", 0)
    assert t.get("ORD_20260101_000005") == 0
    before = t.nbytes()
    t.set("ORD_20260101_900000", 0)  # setting nothing far away does not grow the day
    assert t.get("ORD_20260101_900000") == 0 and t.nbytes() == before
    t.set("ORD_20260109_000001", 0)
    assert t.get("ORD_20260109_000001") == 0


def test_order_table_grows_past_its_array_size():
    t = OrderTable()
    for n in range(1, 300):
        t.set(order_id("20260101", n), n * 10)
    assert all(t.get(order_id("20260101", n)) == n * 10 for n in range(1, 300))
    assert t.get(order_id("20260101", 300)) == 0 and t.get(order_id("20260101", 10_000)) == 0
    t.set(order_id("20260101", 5_000), 1)  # a jump far past the end
    assert t.get(order_id("20260101", 5_000)) == 1
    assert t.get(order_id("20260101", 4_999)) == 0 and t.get(order_id("20260101", 5_001)) == 0
    assert all(t.get(order_id("20260101", n)) == n * 10 for n in range(1, 300))  # nothing lost in the growth


def test_order_table_large_n_and_large_values():
    t = OrderTable()
    big = order_id("20260101", 1_234_567)
    assert big == "ORD_20260101_1234567"
    t.set(big, 2**64 - 1)  # "Q": a full unsigned 64-bit stream sequence
    assert t.get(big) == 2**64 - 1
    assert t.get(order_id("20260101", 1_234_566)) == 0 and t.get(order_id("20260101", 1_234_568)) == 0
    with pytest.raises(OverflowError):
        t.set(big, 2**64)


def test_order_table_keeps_ids_of_other_shapes_aside():
    t = OrderTable()
    t.set("api-abc", 3)
    t.set("ORD_2026_1", 4)
    t.set("ORD_20260101_000001", 5)
    assert (t.get("api-abc"), t.get("ORD_2026_1"), t.get("ORD_20260101_000001")) == (3, 4, 5)
    assert t.get("api-abd") == 0
    t.set("api-abc", 0)
    assert t.get("api-abc") == 0
    t.set("never-set", 0)
    assert t.get("never-set") == 0


def test_order_table_of_bytes_refuses_256():
    t = OrderTable("B")
    t.set("ORD_20260101_000001", 255)
    assert t.get("ORD_20260101_000001") == 255
    with pytest.raises(OverflowError):
        t.set("ORD_20260101_000002", 256)
    assert t.get("ORD_20260101_000002") == 0


def test_order_table_is_small():
    q = OrderTable("Q")
    b = OrderTable("B")
    for n in range(1, 100_001):
        q.set(order_id("20260101", n), n)
        b.set(order_id("20260101", n), 1)
    assert q.get(order_id("20260101", 100_000)) == 100_000 and b.get(order_id("20260101", 77_777)) == 1
    assert q.nbytes() < 2_000_000  # 8 bytes per order, doubling at most twice the need
    assert b.nbytes() < 300_000
    assert OrderTable().nbytes() == 0


order_ids = st.builds(order_id, st.sampled_from(["20260101", "20260102", "20991231"]), st.integers(0, 3_000))
other_ids = st.sampled_from(["api-1", "api-2", "x", "ORD_1_2", "ORD_20260101_"])
ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "get"]),
        st.one_of(order_ids, other_ids),
        st.one_of(st.just(0), st.integers(1, 2**64 - 1)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_order_table_behaves_like_a_dict(steps):
    t = OrderTable()
    model: dict[str, int] = {}
    for op, oid, value in steps:
        if op == "set":
            t.set(oid, value)
            if value:
                model[oid] = value
            else:
                model.pop(oid, None)
        else:
            assert t.get(oid) == model.get(oid, 0)
    for oid, value in model.items():
        assert t.get(oid) == value


def test_first_seen_keeps_the_first_sequence_of_the_last_ids():
    from domain.recent import FirstSeen

    f = FirstSeen(2)
    f.saw("a", 5)
    f.saw("a", 9)  # a copy stored later: the first stays
    f.saw("b", 3)
    assert (f.first("a"), f.first("b")) == (5, 3)
    f.saw("a", 2)  # read back from earlier in the stream: earlier wins
    assert f.first("a") == 2
    f.saw("c", 10)  # the oldest id leaves
    assert len(f) == 2 and f.first("a") is None and f.first("c") == 10
