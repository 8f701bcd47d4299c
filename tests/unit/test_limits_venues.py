"""The risk limits with several venues (domain.limits: pays, candidates, no_venue; domain.risk: the rules of a
venue; domain.venue_ledgers: every venue together for the limits; actors.markets: rules per venue).

A balance on one venue never pays for an order on another: each venue's own available balance decides.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.markets import MarketRulesCache
from domain.limits import (
    ACTIVE,
    Exposure,
    Intent,
    Limits,
    VenueState,
    candidates,
    check_limits,
    no_venue,
    pays,
    venue_denial,
)
from domain.risk import check_order, rule_denial
from domain.valuation import equity
from domain.venue_ledgers import VenueLedgers
from schemas.messages import Fill, MarketRules, MarketsPage, OrderRequest

PAIR, BASE, QUOTE = "BTC_USDT", "BTC", "USDT"


def req(side: str = "buy", qty: str = "1", price: str | None = "100", pair: str = PAIR) -> OrderRequest:
    return OrderRequest(
        client_order_id="c-1", pair=pair, side=side, quantity=D(qty),  # type: ignore[arg-type]
        type="limit" if price else "market", price=D(price) if price else None,
    )  # fmt: skip


def intent(side: str = "buy", qty: str = "1", price: str = "100") -> Intent:
    return Intent(PAIR, side, D(qty), D(price), D(price), QUOTE, BASE)


def rules(
    venue: str | None, step: str = "0.001", tick: str = "0.01", min_notional: str = "1", **kw: str
) -> MarketRules:
    return MarketRules(
        pair=PAIR, tick_size=D(tick), amount_step=D(step), min_notional=D(min_notional), maker_fee=D(0),
        taker_fee=D(0), venue=venue, **{k: D(v) for k, v in kw.items()},  # type: ignore[arg-type]
    )  # fmt: skip


def venue(name: str, usdt: str = "0", btc: str = "0", pairs: tuple[str, ...] = (PAIR,), r: MarketRules | None = None):
    return VenueState(name, pairs, r, {QUOTE: D(usdt), BASE: D(btc)})


def exposure(available: dict[str, D]) -> Exposure:
    return Exposure(
        equity=D(100_000), day_start_equity=D(100_000), peak_equity=D(100_000), available=available,
        marks={PAIR: D(100)},
    )  # fmt: skip


LIMITS = Limits(max_position_fraction=D(1), max_daily_loss=D("0.5"))


def test_a_buy_on_a_with_quote_only_on_b_is_denied_naming_a() -> None:
    a, b = venue("alpha", usdt="0"), venue("beta", usdt="1000000")
    d = venue_denial(req(), intent(), a, allow_short=False)
    assert d is not None and (d.code, d.field) == ("INSUFFICIENT_BALANCE", "quantity")
    assert "0 available on alpha" in d.reason and "needs 100 USDT" in d.reason
    assert venue_denial(req(), intent(), b, allow_short=False) is None
    # the limits of an order named to alpha, with alpha's balance: denied, naming alpha
    d = check_limits(intent(), exposure(dict(a.available)), LIMITS, ACTIVE, None, None, "alpha")
    assert d is not None and d.code == "INSUFFICIENT_BALANCE" and "on alpha" in d.reason


def test_a_sell_needs_the_base_on_its_own_venue_unless_shorts_are_allowed() -> None:
    a, b = venue("alpha", btc="0"), venue("beta", btc="5")
    able, unable = candidates(req("sell"), intent("sell"), [a, b], allow_short=False)
    assert able == ["beta"] and [(n, d.code) for n, d in unable] == [("alpha", "INSUFFICIENT_BALANCE")]
    able, _ = candidates(req("sell"), intent("sell"), [a, b], allow_short=True)
    assert able == ["alpha", "beta"]


def test_one_venue_reason_reads_as_before() -> None:
    d = pays(intent(), {QUOTE: D(50)}, allow_short=False)
    assert d is not None and d.reason == "INSUFFICIENT_BALANCE: needs 100 USDT, 50 available after working orders"


def test_candidates_keep_priority_order_and_leave_out_pair_rules_and_balance() -> None:
    venues = [
        venue("first", usdt="10"),  # too poor
        venue("second", usdt="1000", pairs=("ETH_USDT",)),  # does not list the pair
        venue("third", usdt="1000", r=rules("third", step="1")),  # 1.5 is not a multiple of its step 1
        venue("fourth", usdt="1000", r=rules("fourth", min_notional="500")),  # 150 below its minimum notional
        venue("fifth", usdt="150", r=rules("fifth")),  # exactly enough
        venue("sixth", usdt="1000"),  # no rules known: the venue checks them
    ]
    able, unable = candidates(req(qty="1.5"), intent(qty="1.5"), venues, allow_short=False)
    assert able == ["fifth", "sixth"]
    assert [(n, d.code) for n, d in unable] == [
        ("first", "INSUFFICIENT_BALANCE"),
        ("second", "UNKNOWN_PAIR"),
        ("third", "INVALID_QUANTITY"),
        ("fourth", "MIN_NOTIONAL"),
    ]
    assert "third does not" not in unable[2][1].reason and "BTC_USDT on third" in unable[2][1].reason
    # the same venues in another priority order: the candidates follow it
    able, _ = candidates(req(qty="1.5"), intent(qty="1.5"), venues[::-1], allow_short=False)
    assert able == ["sixth", "fifth"]


def test_no_venue_denial_is_the_first_venues_with_every_reason() -> None:
    venues = [venue("alpha", usdt="10"), venue("beta", usdt="1000", pairs=("ETH_USDT",))]
    able, unable = candidates(req(), intent(), venues, allow_short=False)
    assert able == []
    d = no_venue(unable)
    assert (d.code, d.field) == ("INSUFFICIENT_BALANCE", "quantity")
    assert d.reason.startswith("no venue could take it (alpha: INSUFFICIENT_BALANCE: needs 100 USDT, 10 available")
    assert "beta: beta does not list BTC_USDT" in d.reason


def test_without_a_price_only_pair_and_rules_decide() -> None:
    able, unable = candidates(req(price=None), None, [venue("poor"), venue("other", pairs=())], allow_short=False)
    assert able == ["poor"] and unable[0][1].code == "UNKNOWN_PAIR"


def test_a_venues_rules_name_it_and_one_venues_read_as_before() -> None:
    d = rule_denial(req(qty="1.5"), rules("binance", step="1"))
    assert d is not None and d.reason == "quantity 1.5 is not a multiple of the amount step 1 for BTC_USDT on binance"
    d = check_order(req(qty="1.5"), pairs=(PAIR,), book=None, rules=rules(None, step="1"))
    assert not isinstance(d, type(None)) and getattr(d, "reason", "").endswith("amount step 1 for BTC_USDT")
    d = rule_denial(req(qty="5"), rules("binance", max_amount="2"))
    assert d is not None and d.code == "MAX_AMOUNT" and "on binance" in d.reason


AMOUNTS = st.integers(0, 2_000_000).map(lambda n: D(n).scaleb(-2))


@settings(max_examples=300, deadline=None)
@given(
    holdings=st.lists(st.tuples(AMOUNTS, AMOUNTS), min_size=1, max_size=5),
    side=st.sampled_from(["buy", "sell"]),
    qty=st.integers(1, 100_000).map(lambda n: D(n).scaleb(-3)),
    price=st.integers(1, 10_000_000).map(lambda n: D(n).scaleb(-2)),
)
def test_a_candidate_always_has_the_balance_whatever_the_venues_hold(
    holdings: list[tuple[D, D]], side: str, qty: D, price: D
) -> None:
    venues = [VenueState(f"v{k}", (PAIR,), None, {QUOTE: usdt, BASE: btc}) for k, (usdt, btc) in enumerate(holdings)]
    i = Intent(PAIR, side, qty, price, price, QUOTE, BASE)
    able, unable = candidates(req(side, str(qty), str(price)), i, venues, allow_short=False)
    need, cur = (qty * price, QUOTE) if side == "buy" else (qty, BASE)
    by_name = {v.name: v for v in venues}
    assert all(by_name[n].available[cur] >= need for n in able)  # every candidate pays on its own
    assert all(by_name[n].available[cur] < need for n, _ in unable)  # and no venue that could was left out
    assert able == [v.name for v in venues if v.name in able]  # priority order kept
    if not able:
        assert no_venue(unable).code == "INSUFFICIENT_BALANCE"


def vfill(fid: str, venue: str, side: str, qty: str, price: str, ts: int) -> Fill:
    return Fill(
        fill_id=fid, order_id=f"O-{fid}", client_order_id=f"C-{fid}", pair=PAIR, side=side,  # type: ignore[arg-type]
        quantity=D(qty), price=D(price), fee=D(0), fee_currency=QUOTE, liquidity="taker", venue=venue, timestamp=ts,
    )  # fmt: skip


def test_combined_is_the_only_ledger_itself_with_one_venue() -> None:
    books = VenueLedgers(QUOTE, D(1000), ("paper",))
    assert books.combined() is books.of("paper")


@settings(max_examples=200, deadline=None)
@given(
    fills=st.lists(
        st.tuples(
            st.sampled_from(["alpha", "beta"]),
            st.sampled_from(["buy", "sell"]),
            st.integers(1, 500).map(lambda n: D(n).scaleb(-2)),
            st.integers(50, 150).map(D),
        ),
        max_size=12,
    ),
    mark=st.integers(1, 300).map(D),
)
def test_combined_books_value_as_the_sum_of_the_venues(fills: list[tuple[str, str, D, D]], mark: D) -> None:
    books = VenueLedgers(QUOTE, D(10_000), ("alpha", "beta"))
    for k, (v, side, qty, price) in enumerate(fills):
        books.apply_fill(vfill(f"f{k}", v, side, str(qty), str(price), k + 1))
    total = books.combined()
    marks = {PAIR: mark}
    assert equity(total, marks) == sum(equity(led, marks) for _, led in books)
    net = books.net_positions().get(PAIR, D(0))
    assert total.positions.get(PAIR) is None or total.positions[PAIR].quantity == net
    assert books.position(PAIR) == net
    # unrealized P&L of the sum = sum of the venues' (to Decimal's precision: an average); positions that offset
    # each other across venues net to flat, their P&L already in the balances (the equity above)
    if PAIR in total.positions and total.positions[PAIR].quantity:
        pos = total.positions[PAIR]
        venues = sum((led.positions[PAIR].unrealized(mark) for _, led in books if PAIR in led.positions), D(0))
        assert abs(pos.unrealized(mark) - venues) <= D("1e-20")
    for name in ("alpha", "beta"):  # each venue's own position
        led = books.of(name)
        assert books.position(PAIR, name) == (led.positions[PAIR].quantity if PAIR in led.positions else 0)


def test_market_rules_are_kept_per_venue_and_pair() -> None:
    cache = MarketRulesCache(None)  # type: ignore[arg-type]
    # an order-router with one venue: its rules name none, the page names the venue
    cache.put(MarketsPage(venue="paper", markets=[rules(None, step="0.1")]))
    one = cache.get(PAIR)
    assert one is not None and one.amount_step == D("0.1") and cache.get(PAIR, "paper") is one
    # several venues: each entry names its venue; without a venue there is no single answer
    cache.put(MarketsPage(venue="binance", markets=[rules("binance", step="0.01"), rules("alpaca", step="1")]))
    b, a = cache.get(PAIR, "binance"), cache.get(PAIR, "alpaca")
    assert b is not None and a is not None and (b.amount_step, a.amount_step) == (D("0.01"), D(1))
    assert cache.get(PAIR) is None and cache.get(PAIR, "paper") is None
    coarse = cache.coarsest(PAIR)  # what a signal is sized in: a size in whole units suits both venues
    assert coarse is not None and coarse.amount_step == D(1) and cache.coarsest("NOPE_USDT") is None


@pytest.mark.parametrize("exchange", [None, "beta"])
def test_same_request_compares_the_named_venue(exchange: str | None) -> None:
    import msgspec

    from domain.risk import same_request

    base = msgspec.structs.replace(req(), exchange=exchange)
    assert same_request(base, msgspec.structs.replace(base, ts=5), "GTC")
    assert not same_request(base, msgspec.structs.replace(base, exchange="gamma"), "GTC")
