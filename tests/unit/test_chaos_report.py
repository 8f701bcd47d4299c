"""The chaos run's pure parts: the load plan, the stage gaps, the order counts, the books from the fill log."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.chaos.kills import Kill, KillRecord, KillSelectionError, kill_problems, parse_only, schedule
from bench.chaos.load import book_levels, plan
from bench.chaos.report import (
    Gap,
    OrderFacts,
    Stored,
    books_from_fills,
    compare_fills,
    count_orders,
    credit_stalls,
    fills_by_order,
    last_line,
    longest_gaps,
    order_facts,
    order_misses,
)
from bench.chaos.run import expected_steps, touch_of
from bench.chaos.topology import PAIRS, SEED
from domain.synthetic import EventMarket


def test_the_plan_is_deterministic_and_never_sells_more_than_was_bought() -> None:
    a = plan(["BTC_USDT", "ETH_USDT"], ["AAA_USDT"], 50, 3)
    assert a == plan(["BTC_USDT", "ETH_USDT"], ["AAA_USDT"], 50, 3)
    assert a != plan(["BTC_USDT", "ETH_USDT"], ["AAA_USDT"], 50, 4)
    for pair, steps in a.items():
        position = Decimal(0)
        for s in steps:
            assert s.quantity >= 0
            position += s.quantity if s.side == "buy" else -s.quantity
            assert position >= 0, pair
        assert {s.via for s in steps} == {"signal" if pair == "AAA_USDT" else "rest"}
    assert a["AAA_USDT"][0].order_cid == "sx-AAA_USDT-0-1"  # a signal's order: <signalId>-1
    assert a["BTC_USDT"][0].order_cid == a["BTC_USDT"][0].cid == "cx-BTC_USDT-0"


def test_gaps_measure_waiting_without_progress() -> None:
    # A waits 0..10, B 1..2: after B's exit at 2 nothing comes out until 10 -> 8 s
    gaps = longest_gaps("s", [(0.0, 10.0), (1.0, 2.0)], end=20.0)
    assert max(g.end - g.start for g in gaps) == 8.0
    # nothing waiting between 3 and 5: no gap there (idle is not unavailable)
    assert longest_gaps("s", [(0.0, 1.0), (5.0, 5.5)], end=9.0) == [Gap("s", 0.0, 1.0), Gap("s", 5.0, 5.5)]
    # never out: waiting counts up to the end
    assert longest_gaps("s", [(2.0, None)], end=7.0) == [Gap("s", 2.0, 7.0)]
    assert longest_gaps("s", [], end=7.0) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.one_of(st.none(), st.integers(0, 30))), max_size=12))
def test_the_longest_gap_matches_a_brute_force_scan(raw: list[tuple[int, int | None]]) -> None:
    items = [(float(a), None if d is None else float(a + d)) for a, d in raw]
    end = 100.0
    got = max((g.end - g.start for g in longest_gaps("s", items, end)), default=0.0)
    # brute force on a 0.5 grid: the longest run of half-steps with something waiting and no exit inside
    best = run = 0.0
    t = 0.0
    exits = {b for _, b in items if b is not None}
    while t < end:
        waiting = any(a <= t and (b is None or t < b) for a, b in items)
        run = run + 0.5 if waiting else 0.0
        best = max(best, run)
        if t + 0.5 in exits:
            run = 0.0
        t += 0.5
    assert got == best


def stored(body: dict[str, object], at: float = 0.0) -> Stored:
    return Stored("x", None, body, at, 1)


def order_event(cid: str, oid: str, status: str, qty: str = "1", version: int = 0) -> Stored:
    order = {"clientOrderId": cid, "orderId": oid, "status": status, "quantity": qty, "version": version}
    return stored({"order": order})


def fill(cid: str, fid: str, qty: str = "1", side: str = "buy", price: str = "10", fee: str = "0.01") -> Stored:
    return stored({"clientOrderId": cid, "fillId": fid, "quantity": qty, "pair": "BTC_USDT", "side": side,
                   "price": price, "fee": fee, "feeCurrency": "USDT"})  # fmt: skip


def test_counts_follow_the_readme_definitions() -> None:
    events = [
        order_event("ok", "O1", "submitted"), order_event("ok", "O1", "filled"),
        order_event("twice", "O2", "filled"), order_event("twice", "O3", "filled"),  # two orders for one id
        order_event("open", "O4", "open"),  # working at the end
        order_event("gone", "O5", "canceled"),  # accepted, ended without its fill
        order_event("short", "O6", "filled", qty="2"),  # filled, but a fill missing from the log
    ]  # fmt: skip
    fills = [fill("ok", "T1"), fill("ok", "T1"), fill("twice", "T2"), fill("short", "T6")]
    facts = order_facts(events, fills)
    outcomes = {c: "accepted" for c in ("ok", "twice", "open", "gone", "short", "never")}
    outcomes["denied"] = "denied"
    c = count_orders(outcomes, facts)
    assert (c.submitted, c.accepted, c.denied) == (7, 6, 1)
    assert c.filled == 2  # ok, twice
    assert c.duplicated == 1  # twice
    assert c.fills_duplicated == 1  # T1 stored twice
    assert c.stuck == 1  # open
    assert c.lost == 3  # gone, short, never (accepted, unknown at the end)
    assert set(c.examples["lost"]) == {"gone", "short", "never"}


def test_an_overfill_counts_as_a_duplicated_fill() -> None:
    facts = {"o": OrderFacts(order_ids={"O"}, status="filled", quantity=Decimal(1),
                             fills={"T1": Decimal(1), "T2": Decimal(1)}, fill_copies=2)}  # fmt: skip
    assert count_orders({"o": "accepted"}, facts).fills_duplicated == 1


def test_books_from_the_fill_log_count_each_fill_once() -> None:
    fills = [fill("a", "T1", "2", "buy", "10", "0.02"), fill("a", "T1", "2", "buy", "10", "0.02"),
             fill("b", "T2", "0.5", "sell", "12", "0.006")]  # fmt: skip
    assert books_from_fills(fills, {"USDT": Decimal(100)}) == {
        "BTC": Decimal("1.5"),
        "USDT": Decimal(100) - 20 - Decimal("0.02") + 6 - Decimal("0.006"),
    }


def test_the_last_line_is_exactly_the_issues() -> None:
    want = "chaos: lost=0 duplicated=1 stuck=2 books_equal=yes max_unavailable_ms=1234"
    assert last_line(0, 1, 2, True, 1234) == want
    assert last_line(0, 0, 0, False, 0).endswith("books_equal=no max_unavailable_ms=0")


# -- the review of issue 19's chaos run: each finding's pure part ---------------------------------------------
def test_a_run_where_nothing_trades_misses_its_targets() -> None:
    """300 orders all denied: nothing lost, doubled or stuck - and still a miss (the plan is all acceptable)."""
    c = count_orders({f"cx-{i}": "denied" for i in range(300)}, order_facts([], []))
    assert (c.lost, c.duplicated, c.stuck, c.filled, c.denied) == (0, 0, 0, 0, 300)
    misses = order_misses(c, 300)
    assert any("300 orders denied" in m for m in misses)
    assert any("0 orders filled of 0 accepted" in m for m in misses)
    # accepted but not all filled (without being lost: still working is stuck; here one was never known)
    c = count_orders(
        {"a": "accepted", "b": "accepted"}, order_facts([order_event("a", "O1", "filled")], [fill("a", "T")])
    )
    assert c.filled == 1 and any("1 orders filled of 2 accepted" in m for m in order_misses(c, 2))
    # fewer sent than planned, with the prefix of the undisturbed run
    ok = count_orders({"a": "accepted"}, order_facts([order_event("a", "O1", "filled")], [fill("a", "T")]))
    assert order_misses(ok, 1) == []
    assert order_misses(ok, 3, "undisturbed run: ") == ["undisturbed run: 1 of 3 planned orders sent"]


def test_an_order_under_a_client_id_the_plan_never_sent_is_a_duplicate() -> None:
    events = [order_event("sx-AAA-0-1", "O1", "filled"), order_event("sx-AAA-0-2", "O2", "filled")]
    fills = [fill("sx-AAA-0-1", "T1"), fill("sx-AAA-0-2", "T2")]
    c = count_orders({"sx-AAA-0-1": "accepted"}, order_facts(events, fills))
    assert (c.duplicated, c.unexpected, c.filled, c.lost) == (1, 1, 1, 0)
    assert c.examples["duplicated"] == ["sx-AAA-0-2"]
    # a fill under an unplanned id with no order event is one too
    c = count_orders(
        {"a": "accepted"}, order_facts([order_event("a", "O1", "filled")], [fill("a", "T"), fill("z", "Z")])
    )
    assert (c.duplicated, c.unexpected) == (1, 1)


def test_the_status_is_the_one_of_the_highest_version_not_the_last_stored() -> None:
    events = [order_event("c", "O1", "filled", version=3), order_event("c", "O1", "submitted", version=1)]
    facts = order_facts(events, [fill("c", "T1")])
    assert facts["c"].status == "filled"
    c = count_orders({"c": "accepted"}, facts)
    assert (c.stuck, c.lost, c.filled) == (0, 0, 1)


ACTORS = ("md-feed", "order-router")


def test_a_kill_selection_that_selects_nothing_or_names_nothing_is_refused() -> None:
    full = schedule(ACTORS, 0)
    assert [k.kind for k in parse_only("order-router,nats-node", full, ACTORS)] == ["actor", "nats-node"]
    with pytest.raises(KillSelectionError, match="CHAOS_STANDBYS"):
        parse_only("standby", full, ACTORS)  # no standbys in this topology
    with pytest.raises(KillSelectionError, match="order-ruoter"):
        parse_only("order-router,order-ruoter", full, ACTORS)
    with pytest.raises(KillSelectionError, match="selects no kill"):
        parse_only(",", full, ACTORS)
    assert [k.kind for k in parse_only("standby", schedule(ACTORS, 1), ACTORS)] == ["standby"]
    assert Kill("gateway", "gateway").label == "a gateway"  # not "gateway #1" (it kills whichever is alive)
    # the node leading the most lease buckets is killed last (issue 19: the leases' leader), and can be chosen alone
    assert [k.kind for k in full[-3:]] == ["nats-node", "stream-leader", "lease-leader"]
    assert [k.kind for k in parse_only("lease-leader", full, ACTORS)] == ["lease-leader"]


def test_a_kill_not_applied_is_a_problem() -> None:
    planned = schedule(ACTORS, 0)
    good = [KillRecord(k, float(i), f"victim {i}") for i, k in enumerate(planned)]
    assert kill_problems(planned, good) == []
    no_victim = [*good[:1], KillRecord(planned[1], 1.0, "-", error="no such process alive"), *good[2:]]
    assert kill_problems(planned, no_victim) == ["order-router (active): no such process alive"]
    failed_restart = [*good[:-1], KillRecord(planned[-1], 9.0, "nats n3 pid 7", error="nats n3 not started again")]
    assert kill_problems(planned, failed_restart) == ["the leases' leader: nats n3 not started again"]
    cut = good[:3]  # the schedule stopped (a kill raised, or the time ran out)
    assert kill_problems(planned, cut) == [
        f"3 of {len(planned)} kills applied (not applied: a NATS node, the stream leader, the leases' leader)"
    ]


def test_a_stall_is_credited_to_the_kill_it_overlaps_most() -> None:
    kills = [10.0, 20.0, 30.0]
    gaps = [
        Gap("ledger", 19.0, 29.5),  # began just before the 2nd kill, lasted through its window: the 2nd
        Gap("router", 11.0, 12.0),  # the 1st
        Gap("gw", 28.0, 45.0),  # mostly after the 3rd
        Gap("md", 1.0, 2.0),  # before any kill
    ]
    got = credit_stalls(kills, gaps)
    assert {i: [g.stage for g in v] for i, v in got.items()} == {0: ["router"], 1: ["ledger"], 2: ["gw"], -1: ["md"]}


def test_fills_at_another_steps_book_are_told_apart_from_real_differences() -> None:
    market = EventMarket(PAIRS, SEED)
    touch = touch_of(market)
    p, buy = "BTC_USDT", "buy"
    at = {k: touch(p, buy, k) for k in range(30)}
    assert len(set(at.values())) > 1  # the book moves from step to step

    def f(cid: str, fid: str, price: object, qty: str = "0.002", side: str = buy) -> Stored:
        body = {"clientOrderId": cid, "fillId": fid, "quantity": qty, "pair": p, "side": side, "price": str(price),
                "fee": "0.1", "feeCurrency": "USDT"}  # fmt: skip
        return stored(body)

    k = next(k for k in range(1, 30) if at[k] != at[k - 1])
    ref = fills_by_order(
        [f("same", "R1", at[3]), f("slip", "R2", at[k]), f("wrong", "R3", at[5]), f("gone", "R4", at[6])]
    )
    chaos = fills_by_order([f("same", "C1", at[3]), f("slip", "C2", at[k - 1]), f("wrong", "C3", at[5], qty="0.003")])
    d = compare_fills(chaos, ref, {"same": 3, "slip": k, "wrong": 5, "gone": 6}, touch)
    assert [x.split(":")[0] for x in d.other_step] == ["slip"] and f"step {k - 1}'s book" in d.other_step[0]
    assert sorted(x.split(":")[0] for x in d.other) == ["gone", "wrong"]


def test_the_expected_step_counts_the_pairs_earlier_fills_in_the_reference() -> None:
    orders = plan(["BTC_USDT"], ["AAA_USDT"], 3, 1)
    facts = {
        "cx-BTC_USDT-0": OrderFacts(status="filled"),
        "cx-BTC_USDT-1": OrderFacts(status="rejected"),
        "sx-AAA_USDT-0-1": OrderFacts(status="filled"),
    }
    assert expected_steps(orders, facts) == {
        "cx-BTC_USDT-0": 0, "cx-BTC_USDT-1": 1, "cx-BTC_USDT-2": 1,
        "sx-AAA_USDT-0-1": 0, "sx-AAA_USDT-1-1": 1, "sx-AAA_USDT-2-1": 1,
    }  # fmt: skip


def test_a_venues_book_is_compared_level_by_level() -> None:
    market = EventMarket(PAIRS, SEED)
    b = market.book("ETH_USDT", {"ETH_USDT": 4}, 123)
    as_json = {
        "pair": "ETH_USDT",
        "bids": [[str(p), str(q)] for p, q in b.bids],
        "asks": [[str(p), str(q)] for p, q in b.asks],
    }
    assert book_levels(as_json) == book_levels({**as_json, "ts": 999})
    assert book_levels(None) is None and book_levels({"bids": []}) is None
