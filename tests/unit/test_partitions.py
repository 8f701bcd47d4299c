"""domain/partitions.py: the pair -> partition hash (nats-server's partition()) and the merge of list pages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.partitions import durable, fnv1a_32, merge_newest_first, owns, partition_for, partition_of, suffix

PAIRS = st.from_regex(r"[A-Z0-9]{1,8}_[A-Z0-9]{1,8}", fullmatch=True)


def test_fnv1a_32_known_values():
    # the published FNV-1a 32-bit test vectors (offset basis for the empty input)
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_partition_of_known_pairs():
    assert [partition_of(p, 2) for p in ("BTC_USDT", "ETH_USDT", "SOL_USDT", "RVN_USDT")] == [1, 1, 0, 0]
    assert partition_of("BTC_USDT", 1) == 0


def test_partition_count_out_of_range_is_refused():
    for n in (0, 65, -1):
        try:
            partition_of("BTC_USDT", n)
        except ValueError as e:
            assert "1..64" in str(e)
        else:
            raise AssertionError(f"n={n} accepted")


@given(PAIRS, st.integers(1, 64))
def test_partition_is_in_range_and_stable(pair: str, n: int):
    k = partition_of(pair, n)
    assert 0 <= k < n and partition_of(pair, n) == k
    assert fnv1a_32(pair.encode()) % n == k


@given(PAIRS, st.integers(2, 64))
def test_exactly_one_partition_owns_each_pair(pair: str, n: int):
    assert [k for k in range(n) if owns(k, n, pair)] == [partition_of(pair, n)]
    assert partition_for(pair, n) == partition_of(pair, n)


@given(PAIRS)
def test_one_partition_changes_nothing(pair: str):
    assert partition_for(pair, 1) is None and owns(None, 1, pair) and suffix(None) == ""
    assert suffix(3) == ".p3"


def test_pairs_spread_over_partitions():
    pairs = [f"C{i}_USDT" for i in range(2000)]
    counts = [sum(1 for p in pairs if partition_of(p, 4) == k) for k in range(4)]
    assert min(counts) > 400  # 500 each on average


def _page(items: list[int], after: int | None, limit: int, scan: int) -> tuple[list[int], int | None]:
    """A partition's list query as the order store answers it: newest (highest) first below ``after``, at most
    ``limit``, and a page cut short after ``scan`` examined (its cursor at the last one examined)."""
    below = sorted((i for i in items if after is None or i < after), reverse=True)
    examined = below[:scan]
    if len(examined) > limit:
        return examined[:limit], examined[limit - 1]
    if len(below) > scan:
        return examined, examined[-1]
    return examined, None


@given(
    st.lists(st.lists(st.integers(0, 10_000), max_size=40), min_size=1, max_size=4),
    st.integers(1, 10),
    st.integers(1, 12),
)
def test_paging_on_the_merged_cursor_lists_every_item_once_newest_first(parts, limit, scan):
    # each item is in one partition only (as an order is)
    seen: set[int] = set()
    partitions = []
    for items in parts:
        mine = [i for i in dict.fromkeys(items) if i not in seen]
        seen.update(mine)
        partitions.append(mine)
    listed: list[int] = []
    after: int | None = None
    for _ in range(10_000):
        pages = [_page(items, after, limit, scan) for items in partitions]
        page, more = merge_newest_first(pages, limit, lambda i: i)
        assert len(page) <= limit
        listed += page
        if more is None:
            break
        assert after is None or more < after  # always progresses
        after = more
    assert listed == sorted(seen, reverse=True)


def test_merge_keeps_the_newest_of_all_partitions():
    page, more = merge_newest_first([([9, 5, 1], None), ([8, 7], None)], 3, lambda i: i)
    assert page == [9, 8, 7] and more == 7


def test_tbx_actor_of_a_partitioned_actor_needs_its_partition():
    import pytest

    from config.settings import ConfigError, load_settings
    from tbx.cli import _partition_of_actor

    s = load_settings({"PARTITIONS": "2"})
    with pytest.raises(ConfigError, match="PARTITION is not set"):
        _partition_of_actor(s, "order-router", None)
    with pytest.raises(ConfigError, match="--partition 2 is not allowed with PARTITIONS=2"):
        _partition_of_actor(s, "order-router", 2)
    assert _partition_of_actor(s, "order-router", 1).PARTITION == 1
    assert _partition_of_actor(s, "risk-gate", None).PARTITION is None  # not partitioned: one active for all
    with pytest.raises(ConfigError, match="PARTITION=2 is not allowed with PARTITIONS=2"):
        load_settings({"PARTITIONS": "2", "PARTITION": "2"})


def test_tbx_run_runs_every_partition_of_the_partitioned_actors():
    from actors.fill_tracker import FillTracker
    from actors.risk_gate import RiskGate
    from config.settings import load_settings
    from tbx.runner import instances_of

    s = load_settings({"PARTITIONS": "3"})
    assert [x.PARTITION for x in instances_of(FillTracker, s)] == [0, 1, 2]
    assert [x.PARTITION for x in instances_of(RiskGate, s)] == [None]
    assert [x.PARTITION for x in instances_of(FillTracker, load_settings({}))] == [None]


def test_one_partition_keeps_every_name_it_always_had():
    """PARTITIONS=1 (even with PARTITION=0 set): the subjects, durable names, queue groups and the paper account's KV
    key are those of an unpartitioned deployment."""
    from actors.books import BookCache
    from actors.order_router import OrderRouter
    from actors.venues.paper import PaperVenue
    from config.settings import load_settings
    from schemas.subjects import Subjects

    s = Subjects("tbx")
    k = partition_for("BTC_USDT", 1)
    assert s.approved_orders("BTC_USDT", k) == "tbx.hop.approved.BTC_USDT"
    assert s.exec_reports("BTC_USDT", k) == "tbx.hop.reports.BTC_USDT"
    assert s.approved_orders(partition=k) == "tbx.hop.approved.*" and s.exec_reports(partition=k) == "tbx.hop.reports.*"
    assert s.addressed(s.orders_cancel, k) == "tbx.orders.cancel" and s.addressed(s.query("orders"), k) == (
        "tbx.query.orders"
    )
    assert durable("order-router", k) == "order-router" and "order-router" + suffix(k) == "order-router"
    for env in ({}, {"PARTITIONS": "1", "PARTITION": "0"}):
        settings = load_settings(env)
        assert OrderRouter.partitioned and (settings.PARTITIONS <= 1 or settings.PARTITION is None)
        venue = PaperVenue(settings, None, books=BookCache(None, ("paper",)))  # type: ignore[arg-type]
        assert venue.balances_key == "balances" and venue.partition is None and venue.other_balance_keys == set()
