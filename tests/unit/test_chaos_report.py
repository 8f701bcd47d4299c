"""The chaos run's pure parts: the load plan, the stage gaps, the order counts, the books from the fill log."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.chaos.load import plan
from bench.chaos.report import (
    Gap,
    OrderFacts,
    Stored,
    books_from_fills,
    count_orders,
    last_line,
    longest_gaps,
    order_facts,
)


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


def order_event(cid: str, oid: str, status: str, qty: str = "1") -> Stored:
    return stored({"order": {"clientOrderId": cid, "orderId": oid, "status": status, "quantity": qty}})


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
