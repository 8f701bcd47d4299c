"""domain/routing.py: the routing decision (best_price / priority), its audit line and the fallback order.

The properties check the decision against an independent oracle in exact fractions (a plain walk of each
book written here, not domain.book's), for every mix of venues hypothesis finds: up or down, listing the pair
or not, excluded upstream, with a full, thin, empty or no book, market or limit, buy or sell.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.routing import (
    Candidate,
    RouteOrder,
    decide,
    levels_for,
    next_venue,
    route_order,
)
from schemas.messages import Book, OrderRequest

D = Decimal
PAIR = "BTC_USDT"


def lv(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(q)) for p, q in pairs]


def buy(qty: str, limit: str | None = None) -> RouteOrder:
    return RouteOrder(PAIR, "buy", D(qty), D(limit) if limit else None)


def sell(qty: str, limit: str | None = None) -> RouteOrder:
    return RouteOrder(PAIR, "sell", D(qty), D(limit) if limit else None)


# --------------------------------------------------------------------------------------------------
# the oracle: each venue's total for the order, in fractions, by a plain walk
# --------------------------------------------------------------------------------------------------
def oracle(order: RouteOrder, c: Candidate) -> tuple[Fraction, Fraction] | None:
    """(total fees included, quantity the book fills now); None when the venue gives no price."""
    if not c.levels:
        return None
    q = Fraction(order.quantity)
    limit = None if order.limit is None else Fraction(order.limit)
    left, cost, last = q, Fraction(0), None
    for p, s in c.levels:
        price, size = Fraction(p), Fraction(s)
        if left == 0:
            break
        if limit is not None and (price > limit if order.side == "buy" else price < limit):
            break
        if size <= 0:
            continue
        take = min(size, left)
        cost += price * take
        left -= take
        last = price
    if left:
        rest = limit if limit is not None else last
        if rest is None:
            return None
        cost += rest * left
    fee = Fraction(c.taker_fee)
    return cost * (1 + fee if order.side == "buy" else 1 - fee), q - left


def eligible(c: Candidate) -> bool:
    return c.up and c.lists_pair and c.excluded is None


# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------
prices = st.integers(min_value=100, max_value=10_000_000).map(lambda n: D(n).scaleb(-2))  # 1.00 .. 100000.00
sizes = st.integers(min_value=1, max_value=500_000_000).map(lambda n: D(n).scaleb(-8))  # 1e-8 .. 5
fees = st.sampled_from([D(0), D("0.0001"), D("0.00075"), D("0.001"), D("0.0025"), D("0.005"), D("0.01")])
quantities = st.integers(min_value=1, max_value=1_000_000_000).map(lambda n: D(n).scaleb(-8))  # .. 10


@st.composite
def orders(draw: st.DrawFn, limit: bool | None = None) -> RouteOrder:
    side = draw(st.sampled_from(["buy", "sell"]))
    with_limit = draw(st.booleans()) if limit is None else limit
    return RouteOrder(PAIR, side, draw(quantities), draw(prices) if with_limit else None)


@st.composite
def book_sides(draw: st.DrawFn, side: str) -> list[tuple[Decimal, Decimal]] | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    ps = sorted(set(draw(st.lists(prices, min_size=0, max_size=8))), reverse=side == "sell")
    return [(p, draw(sizes)) for p in ps]


@st.composite
def candidates(draw: st.DrawFn, side: str, n_min: int = 1, n_max: int = 5, healthy: bool = False) -> list[Candidate]:
    n = draw(st.integers(n_min, n_max))
    out = []
    for i in range(n):
        sick = not healthy and draw(st.integers(0, 4)) == 0
        out.append(
            Candidate(
                venue=f"v{i}",
                priority=draw(st.integers(0, 3)),  # repeated priorities too: ties fall to the name
                levels=draw(book_sides(side)),
                taker_fee=draw(fees),
                up=not (sick and draw(st.booleans())),
                lists_pair=not (sick and draw(st.booleans())),
                excluded=draw(st.sampled_from([None, "balance", "maintenance"])) if sick else None,
            )
        )
    return out


@st.composite
def cases(draw: st.DrawFn, limit: bool | None = None, healthy: bool = False) -> tuple[RouteOrder, list[Candidate]]:
    order = draw(orders(limit))
    return order, draw(candidates(order.side, healthy=healthy))


def by_name(cs: list[Candidate]) -> dict[str, Candidate]:
    return {c.venue: c for c in cs}


def better(order: RouteOrder, a: Fraction, b: Fraction) -> bool:
    """``a`` is a strictly better total than ``b`` for this order."""
    return a < b if order.side == "buy" else a > b


# --------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------
@given(cases(), st.sampled_from(["best_price", "priority"]))
def test_the_choice_is_never_down_lacking_the_pair_or_excluded(case, policy):
    order, cs = case
    d = decide(order, policy, cs)
    if any(eligible(c) for c in cs):
        assert d.venue is not None
        assert eligible(by_name(cs)[d.venue])
    else:
        assert d.venue is None
        assert d.reason.endswith("-> none can take it")
    assert sorted(r.venue for r in d.ranked) == sorted(c.venue for c in cs)  # every venue is reported
    for r in d.ranked:
        assert r.eligible == eligible(by_name(cs)[r.venue])


@given(cases())
def test_best_price_chooses_the_best_expected_price_among_full_depth_venues(case):
    order, cs = case
    d = decide(order, "best_price", cs)
    full = {}
    for c in cs:
        o = oracle(order, c)
        if eligible(c) and o is not None and o[1] == Fraction(order.quantity):
            full[c.venue] = (o[0], c.priority)
    assume(full)
    assert d.venue in full
    chosen_total, chosen_priority = full[d.venue]
    for venue, (total, priority) in full.items():
        assert not better(order, total, chosen_total), f"{venue} is better than {d.venue}"
        if total == chosen_total:  # a tie to the last decimal: priority, then the name
            assert (chosen_priority, d.venue) <= (priority, venue)


@given(cases(), st.sampled_from(["best_price", "priority"]), st.randoms(use_true_random=False))
def test_reordering_the_candidates_changes_nothing(case, policy, rnd):
    order, cs = case
    shuffled = list(cs)
    rnd.shuffle(shuffled)
    a, b = decide(order, policy, cs), decide(order, policy, shuffled)
    assert a == b


@given(cases())
def test_every_expected_price_is_exact_and_includes_the_fee(case):
    order, cs = case
    d = decide(order, "best_price", cs)
    for r in d.ranked:
        c = by_name(cs)[r.venue]
        o = oracle(order, c) if r.status not in ("no_pair", "excluded") else None
        if o is None:
            assert r.total is None and r.expected is None
            continue
        total, fillable = o
        assert r.total is not None and r.average is not None and r.expected is not None
        assert Fraction(r.total) == total  # exact, not close
        assert r.fillable == fillable
        fee_factor = 1 + Fraction(c.taker_fee) if order.side == "buy" else 1 - Fraction(c.taker_fee)
        rebuilt = Fraction(r.average) * Fraction(order.quantity) * fee_factor  # the average is divided out
        assert abs(rebuilt - total) <= total * Fraction(1, 10**25)  # to 28 digits: only the display rounds
        assert r.expected == r.total / order.quantity


@given(cases())
def test_best_price_groups_full_depth_then_thin_then_no_book_then_skipped(case):
    order, cs = case
    d = decide(order, "best_price", cs)
    group = {"priced": 0, "thin": 1, "no_book": 2, "down": 3, "no_pair": 3, "excluded": 3}
    groups = [group[r.status] for r in d.ranked]
    assert groups == sorted(groups)
    thin = [r for r in d.ranked if r.status == "thin"]
    assert [r.fillable for r in thin] == sorted((r.fillable for r in thin), reverse=True)  # the deepest first
    no_book = [(r.priority, r.venue) for r in d.ranked if r.status == "no_book"]
    assert no_book == sorted(no_book)
    skipped = [(r.priority, r.venue) for r in d.ranked if not r.eligible]
    assert skipped == sorted(skipped)


@given(cases())
def test_priority_chooses_the_first_eligible_venue_by_priority_and_still_reports_prices(case):
    order, cs = case
    d = decide(order, "priority", cs)
    ok = sorted((c.priority, c.venue) for c in cs if eligible(c))
    assert [(r.priority, r.venue) for r in d.ranked if r.eligible] == ok
    assert d.venue == (ok[0][1] if ok else None)
    for r in d.ranked:
        if r.eligible and oracle(order, by_name(cs)[r.venue]) is not None:
            assert r.expected is not None


@given(cases(), st.sampled_from(["best_price", "priority"]))
def test_the_fallback_sequence_visits_each_eligible_venue_once_in_ranking_order(case, policy):
    order, cs = case
    d = decide(order, policy, cs)
    tried: list[str] = []
    while (v := next_venue(d, tried)) is not None:
        assert v not in tried
        tried.append(v)
        assert len(tried) <= len(cs)
    assert tried == [r.venue for r in d.ranked if r.eligible]
    assert set(tried) == {c.venue for c in cs if eligible(c)}
    assert (tried[0] if tried else None) == d.venue


@given(orders(), st.lists(prices, min_size=1, max_size=5, unique=True), sizes, fees, fees)
def test_with_the_same_book_the_lower_fee_wins(order, ps, size, fee_a, fee_b):
    assume(fee_a != fee_b)
    levels = [(p, size) for p in sorted(ps, reverse=order.side == "sell")]
    cs = [Candidate("a", 0, levels, fee_a), Candidate("b", 1, levels, fee_b)]
    d = decide(order, "best_price", cs)
    assert d.venue == ("a" if fee_a < fee_b else "b")


@given(cases(limit=True))
def test_a_limit_order_never_expects_worse_than_its_limit_before_the_fee(case):
    order, cs = case
    assert order.limit is not None
    for r in decide(order, "best_price", cs).ranked:
        if r.average is not None:
            assert r.average <= order.limit if order.side == "buy" else r.average >= order.limit


# --------------------------------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------------------------------
def test_the_audit_line_names_each_venue_with_its_expected_price_or_why_it_was_skipped():
    cs = [
        Candidate("binance", 0, lv(("50000", "0.3"), ("50010", "1")), D("0.001")),
        Candidate("alpaca", 1, lv(("49990", "2")), D("0.0025")),
        Candidate("paper", 2, None, D("0")),
        Candidate("kraken", 3, lv(("40000", "9")), D("0"), up=False),
        Candidate("bn2", 4, lv(("40000", "9")), D("0"), excluded="balance"),
        Candidate("okx", 5, None, D("0.001"), lists_pair=False),
    ]
    d = decide(buy("0.5"), "best_price", cs)
    # binance: (0.3 x 50000 + 0.2 x 50010) / 0.5 = 50004 x 1.001 = 50054.004; alpaca 49990 x 1.0025 = 50114.975
    assert d.venue == "binance"
    assert d.reason == (
        "best_price buy 0.5 BTC_USDT: binance 50054.004 (fee 0.1%), alpaca 50114.975 (fee 0.25%), paper no book, "
        "kraken down, bn2 excluded (balance), okx lacks BTC_USDT -> binance"
    )
    assert [r.status for r in d.ranked] == ["priced", "priced", "no_book", "down", "excluded", "no_pair"]
    assert d.ranked[0].expected == D("50054.004") and d.ranked[0].average == D("50004")


def test_a_cheaper_book_with_a_higher_fee_loses():
    cs = [
        Candidate("cheap_book", 0, lv(("100.00", "10")), D("0.01")),  # 101.00 with its fee
        Candidate("dear_book", 1, lv(("100.50", "10")), D("0.001")),  # 100.6005
    ]
    assert decide(buy("1"), "best_price", cs).venue == "dear_book"
    # a sell: 100.00 bid x 0.99 = 99.00 against 99.90 bid x 0.999 = 99.8001
    cs = [
        Candidate("high_bid", 0, lv(("100.00", "10")), D("0.01")),
        Candidate("low_bid", 1, lv(("99.90", "10")), D("0.001")),
    ]
    assert decide(sell("1"), "best_price", cs).venue == "low_bid"


def test_a_sell_takes_the_highest_expected_price():
    cs = [
        Candidate("a", 0, lv(("99", "5")), D("0.001")),
        Candidate("b", 1, lv(("100", "0.5"), ("98", "5")), D("0.001")),  # avg 99.0 for 1: tie before fee
        Candidate("c", 2, lv(("99.5", "5")), D("0.002")),  # 99.5 x 0.998 = 99.301 > 99 x 0.999 = 98.901
    ]
    d = decide(sell("1"), "best_price", cs)
    assert [r.venue for r in d.ranked] == ["c", "a", "b"]  # a and b tie to the last decimal: priority


def test_ties_to_the_last_decimal_go_by_priority_a_difference_in_the_last_decimal_does_not():
    tie = [
        Candidate("late", 5, lv(("100.00", "1")), D("0.001")),
        Candidate("early", 1, lv(("100.00", "1")), D("0.001")),
    ]
    assert decide(buy("1"), "best_price", tie).venue == "early"
    near = [
        Candidate("late", 5, lv(("100.00000001", "1")), D("0.001")),
        Candidate("early", 1, lv(("100.00000002", "1")), D("0.001")),
    ]
    assert decide(buy("1"), "best_price", near).venue == "late"


def test_a_thin_book_is_priced_at_its_worst_level_and_ranked_after_the_books_with_the_depth():
    cs = [
        Candidate("thin", 0, lv(("90", "0.4"), ("91", "0.1")), D("0")),  # cheaper, but only 0.5 of 1
        Candidate("deep", 1, lv(("100", "5")), D("0")),
    ]
    d = decide(buy("1"), "best_price", cs)
    assert d.venue == "deep"
    thin = d.ranked[1]
    assert (thin.status, thin.fillable) == ("thin", D("0.5"))
    assert thin.average == D("90.6")  # 0.4 x 90 + 0.1 x 91 + the rest 0.5 at 91 = 90.6
    assert "thin 90.6 (fee 0%, thin: 0.5 of 1 now, rest at its worst level)" in d.reason
    only_thin = decide(buy("1"), "best_price", cs[:1])
    assert only_thin.venue == "thin"  # a thin book still beats having none
    # among thin books, the one that shows more of the quantity first
    cs2 = [
        Candidate("shallow_cheap", 0, lv(("90", "0.1")), D("0")),
        Candidate("deeper_dear", 1, lv(("95", "0.8")), D("0")),
    ]
    assert decide(buy("1"), "best_price", cs2).venue == "deeper_dear"


def test_a_limit_order_walks_to_its_limit_and_prices_the_rest_at_the_limit():
    cs = [
        Candidate("a", 0, lv(("100", "1"), ("101", "1"), ("103", "5")), D("0")),
        Candidate("b", 1, lv(("100.5", "5")), D("0")),
    ]
    d = decide(buy("3", limit="102"), "best_price", cs)
    assert d.venue == "b"  # fills all 3 now at 100.5
    a = next(r for r in d.ranked if r.venue == "a")
    assert (a.status, a.fillable, a.average) == ("thin", D("2"), D("101"))  # (100 + 101 + 102) / 3
    assert d.reason.startswith("best_price buy 3 BTC_USDT limit 102: b 100.5 (fee 0%), a 101 (fee 0%, thin: 2 of 3")
    assert "rest at the limit" in d.reason
    # a limit no book crosses: the whole quantity would rest at the limit
    rests = decide(sell("1", limit="200"), "best_price", [Candidate("a", 0, lv(("199", "1")), D("0.001"))])
    r = rests.ranked[0]
    assert (rests.venue, r.status, r.fillable, r.expected) == ("a", "thin", D("0"), D("199.8"))


def test_a_venue_without_a_book_is_never_chosen_over_a_priced_one_but_is_one_when_none_has_a_book():
    cs = [
        Candidate("nobook", 0, None, D("0")),
        Candidate("empty", 1, [], D("0")),
        Candidate("dear", 9, lv(("1000000", "10")), D("0.01")),
    ]
    assert decide(buy("1"), "best_price", cs).venue == "dear"
    d = decide(buy("1"), "best_price", cs[:2])
    assert d.venue == "nobook"
    assert [r.status for r in d.ranked] == ["no_book", "no_book"]
    assert d.reason.endswith("nobook no book, empty no book -> nobook")
    assert decide(buy("1"), "priority", cs).venue == "nobook"  # priority does not look at books
    # a limit buy that crosses nothing still has a price (the limit): it goes before the venue with no book
    rest = [Candidate("nobook", 0, None, D("0")), Candidate("above", 1, lv(("120", "5")), D("0.001"))]
    d = decide(buy("1", limit="110"), "best_price", rest)
    assert (d.venue, [r.status for r in d.ranked]) == ("above", ["thin", "no_book"])


def test_no_venue_can_take_it():
    cs = [
        Candidate("a", 0, lv(("100", "1")), D("0"), up=False),
        Candidate("b", 1, None, D("0"), lists_pair=False),
        Candidate("c", 2, lv(("100", "1")), D("0"), excluded="maintenance"),
    ]
    d = decide(buy("1"), "best_price", cs)
    assert d.venue is None and next_venue(d, ()) is None
    assert (
        d.reason == "best_price buy 1 BTC_USDT: a down, b lacks BTC_USDT, c excluded (maintenance) -> none can take it"
    )
    assert decide(buy("1"), "priority", []).reason == "priority buy 1 BTC_USDT: no venue configured -> none can take it"


def test_fallback_skips_what_was_tried_and_never_offers_a_skipped_venue():
    cs = [
        Candidate("a", 0, lv(("101", "5")), D("0")),
        Candidate("b", 1, lv(("100", "5")), D("0")),
        Candidate("c", 2, lv(("99", "5")), D("0"), up=False),
        Candidate("d", 3, None, D("0")),
    ]
    d = decide(buy("1"), "best_price", cs)
    assert [next_venue(d, t) for t in ((), {"b"}, {"b", "a"}, {"a", "b", "d"})] == ["b", "a", "d", None]


def test_the_reason_shows_small_and_large_prices_readably():
    cs = [Candidate("a", 0, lv(("0.00001234", "1000000")), D("0.001"))]
    assert "a 0.00001235234 (fee 0.1%)" in decide(buy("3"), "best_price", cs).reason
    cs = [Candidate("a", 0, lv(("100", "1"), ("200", "2")), D("0"))]
    assert "a 166.666666667 (fee 0%)" in decide(buy("3"), "best_price", cs).reason  # 12 significant digits


@pytest.mark.parametrize(
    ("order", "policy", "cs", "message"),
    [
        (buy("0"), "best_price", [], "quantity must be a positive number, got 0"),
        (RouteOrder(PAIR, "buy", D("NaN")), "best_price", [], "quantity must be a positive number"),
        (buy("1", limit="-1"), "best_price", [], "limit must be a positive price or None, got -1"),
        (buy("1"), "split", [], "policy must be one of best_price, priority, got 'split'"),
        (RouteOrder(PAIR, "hold", D(1)), "priority", [], "side must be buy or sell, got 'hold'"),  # type: ignore[arg-type]
        (
            buy("1"),
            "best_price",
            [Candidate("a", 0, None, D(0)), Candidate("a", 1, None, D(0))],
            "venue 'a' is a candidate twice",
        ),
        (
            buy("1"),
            "best_price",
            [Candidate("a", 0, None, D(1))],
            "taker_fee of venue 'a' must be a rate between -1 and 1, got 1",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(order, policy, cs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decide(order, policy, cs)


def test_levels_for_and_route_order():
    book = Book(pair=PAIR, bids=lv(("99", "1")), asks=lv(("101", "2")), ts=0, venue="binance")
    assert levels_for(book, "buy") == lv(("101", "2"))
    assert levels_for(book, "sell") == lv(("99", "1"))
    assert levels_for(None, "buy") is None
    req = OrderRequest(client_order_id="c", pair=PAIR, side="sell", quantity=D("2"), type="limit", price=D("99"))
    assert route_order(req) == RouteOrder(PAIR, "sell", D("2"), D("99"))
    stop = OrderRequest(client_order_id="c", pair=PAIR, side="sell", quantity=D("2"), type="stop_loss", price=D("9"))
    assert route_order(stop) == RouteOrder(PAIR, "sell", D("2"), None)
    stop_limit = OrderRequest(
        client_order_id="c", pair=PAIR, side="buy", quantity=D("1"), type="stop_limit", price=D("5"), stop_price=D("4")
    )
    assert route_order(stop_limit) == RouteOrder(PAIR, "buy", D("1"), D("5"))


@settings(max_examples=50)
@given(cases(healthy=True))
def test_healthy_venues_with_books_are_all_priced(case):
    order, cs = case
    d = decide(order, "best_price", cs)
    for r in d.ranked:
        has_price = oracle(order, by_name(cs)[r.venue]) is not None
        assert (r.status in ("priced", "thin")) == has_price
