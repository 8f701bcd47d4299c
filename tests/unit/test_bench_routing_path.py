"""The routing-path bench stage's checks of each order (bench/routing_path.py), as plain functions: a routed
order passes only when best_price priced all three venues at one price and picked alpha; a named order only when
its routing says so; either only when answered ok on alpha and completely filled there. The routing text is read
back the way domain.routing writes it (property: the pick read from any decision's text is the decision's)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bench.routing_path import (
    NAMED,
    VENUES,
    Done,
    OrderLite,
    ReplyLite,
    best_price_pick,
    check_order,
    check_routing,
    parse_routing,
)
from domain.routing import Candidate, RouteOrder, decide

FEE = Decimal("0.001")
QTY = Decimal("0.001")
ASKS = [(Decimal("60000.50"), Decimal("0.3")), (Decimal("60001.50"), Decimal("0.4"))]
BIDS = [(Decimal("59999.50"), Decimal("0.3")), (Decimal("59998.50"), Decimal("0.4"))]


def reason(side: str = "buy", **over: Candidate) -> str:
    """The routing text the router writes for the stage's order: three venues on the same book and fee."""
    levels = ASKS if side == "buy" else BIDS
    cands = [over.get(v, Candidate(v, i, levels, FEE)) for i, v in enumerate(VENUES)]
    return decide(RouteOrder("BTC_USDT", side, QTY), "best_price", cands).reason  # type: ignore[arg-type]


def routed(text: str | None, venue: str = NAMED) -> ReplyLite:
    return ReplyLite(ok=True, order=OrderLite(venue=venue, quantity=QTY, routing=text))


def filled(venue: str = NAMED, qty: Decimal | None = QTY) -> Done:
    return Done(1.0, venue, qty)


def test_the_stage_s_routed_orders_pass_a_tie_to_alpha_on_either_side() -> None:
    for side in ("buy", "sell"):
        text = reason(side)
        assert text.endswith(f"-> {NAMED}")
        assert check_routing(side, text) is None
        assert check_order("on", side, QTY, routed(text), filled()) is None


def test_a_routed_order_fails_unless_every_venue_is_priced_at_one_price_and_alpha_is_picked() -> None:
    text = reason()
    assert check_routing("sell", text) == "routed: not a best_price decision of its side"
    assert check_routing("buy", None) == "routed: not a best_price decision of its side"
    assert check_routing("buy", text.replace("best_price", "priority")) == (
        "routed: not a best_price decision of its side"
    )
    down = reason(gamma=Candidate("gamma", 2, ASKS, FEE, up=False))
    assert check_routing("buy", down) == "routed: not every venue priced"
    cheaper = reason(beta=Candidate("beta", 1, [(Decimal("59000"), Decimal("1"))], FEE))
    assert cheaper.endswith("-> beta")
    assert check_routing("buy", cheaper) == "routed: not a tie (the venues' prices or fees differ)"
    dearer_fee = reason(gamma=Candidate("gamma", 2, ASKS, Decimal("0.002")))
    assert check_routing("buy", dearer_fee) == "routed: not a tie (the venues' prices or fees differ)"
    assert check_routing("buy", text.replace(f"-> {NAMED}", "-> beta")) == "routed: picked beta, best_price picks alpha"


def test_an_order_fails_unless_ok_on_alpha_and_completely_filled_there() -> None:
    text = reason()
    assert check_order("on", "buy", QTY, ReplyLite(ok=False, code="RISK_LIMIT"), None) == "denied RISK_LIMIT"
    assert check_order("on", "buy", QTY, ReplyLite(ok=True), None) == "answered ok without the order"
    assert check_order("on", "buy", QTY, routed(text, "beta"), filled()) == "on: on venue beta, not alpha"
    assert check_order("on", "buy", QTY, routed(text), None) == "on: no complete fill within 10 s"
    assert check_order("on", "buy", QTY, routed(text), filled("gamma")) == "on: filled on gamma, not alpha"
    assert check_order("on", "buy", QTY, routed(text), filled(qty=Decimal("0.0005"))) == ("on: filled 0.0005 of 0.001")
    assert check_order("on", "buy", QTY, routed(text), filled(qty=None)) == "on: filled None of 0.001"
    small = ReplyLite(ok=True, order=OrderLite(venue=NAMED, quantity=Decimal("0.0001"), routing=text))
    assert check_order("on", "buy", QTY, small, filled()) == "on: quantity 0.0001, not 0.001"


def test_a_named_order_passes_only_with_its_named_routing() -> None:
    named = f"named by the order: {NAMED}"
    assert check_order("off", "sell", QTY, routed(named), filled()) is None
    assert check_order("off", "sell", QTY, routed(reason("sell")), filled()) == (
        "named: routing text is not 'named by the order'"
    )
    assert check_order("off", "sell", QTY, routed(None), filled()) == "named: routing text is not 'named by the order'"
    assert check_order("off", "sell", QTY, routed(named), None) == "off: no complete fill within 10 s"


def test_best_price_pick_lowest_for_a_buy_highest_for_a_sell_ties_by_priority() -> None:
    priced = [("gamma", Decimal(5)), ("beta", Decimal(4)), ("alpha", Decimal(5))]
    assert best_price_pick("buy", priced) == "beta"
    assert best_price_pick("sell", priced) == "alpha"
    assert best_price_pick("sell", [("gamma", Decimal(5)), ("beta", Decimal(5))]) == "beta"


prices = st.decimals(min_value=Decimal("1.00"), max_value=Decimal("999999.99"), places=2)


@given(side=st.sampled_from(["buy", "sell"]), ps=st.lists(prices, min_size=3, max_size=3))
def test_the_pick_read_from_any_decision_s_text_is_the_decision_s(side: str, ps: list[Decimal]) -> None:
    cands = [Candidate(v, i, [(p, Decimal(1))], FEE) for i, (v, p) in enumerate(zip(VENUES, ps, strict=True))]
    d = decide(RouteOrder("BTC_USDT", side, QTY), "best_price", cands)  # type: ignore[arg-type]
    parsed = parse_routing(d.reason)
    assert parsed is not None
    got_side, priced, chosen = parsed
    assert (got_side, chosen) == (side, d.venue)
    assert sorted(v for v, _, _ in priced) == sorted(VENUES)
    assert {f for _, _, f in priced} == {Decimal("0.1")}  # percent
    assert best_price_pick(side, [(v, p) for v, p, _ in priced]) == d.venue
