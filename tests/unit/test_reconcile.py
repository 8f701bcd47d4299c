"""Balances reconciled with a venue (domain/reconcile.py, Ledger.apply_adjustment): plain functions and
hypothesis properties."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import Ledger
from domain.performance import EquityTracker
from domain.reconcile import Books, Journal, adjusted, as_of, changes, dust_of, reading_problem
from schemas.messages import BalanceAdjusted, Order, OrderStatus, VenueBalanceFigures, VenueBalances
from tests.helpers import fill

NO_DUST = D(0)


def adjustment(ch, i: int = 1, fills_seq: int = 0) -> BalanceAdjusted:
    return BalanceAdjusted(
        adjustment_id=f"v:{i}:{ch.currency}", venue="v", currency=ch.currency, from_total=ch.ledger_total,
        from_available=ch.ledger_available, to_total=ch.venue_total, to_available=ch.venue_free,
        locked_delta=ch.locked_delta, reason="mismatch", fills_seq=fills_seq, reading_fills_seq=fills_seq,
        reading_seq=i, reading_ts=1, ts=1,
    )  # fmt: skip


def books_of(ledger: Ledger) -> dict[str, Books]:
    return {c: Books(b.total, b.locked, b.correction) for c, b in ledger.balances.items()}


def limit_buy(order_id: str, qty: str, price: str, status: OrderStatus = OrderStatus.ACCEPTED) -> Order:
    return Order(
        order_id=order_id, client_order_id=f"c-{order_id}", pair="BTC_USDT", side="buy", type="limit",
        quantity=D(qty), price=D(price), status=status, created_at=1, updated_at=1,
    )  # fmt: skip


def test_zero_and_absent_are_no_difference_and_dust_is_allowed():
    books = {"USDT": Books(D(100)), "ETH": Books(D(0))}
    venue = {"USDT": (D("100.000000005"), D("100.000000005")), "SOL": (D(0), D(0))}
    assert changes(books, venue, lambda c: D("0.00000001")) == []
    assert [c.currency for c in changes(books, venue, lambda c: NO_DUST)] == ["USDT"]


def test_a_currency_only_the_venue_holds_is_a_difference():
    (ch,) = changes({"USDT": Books(D(100))}, {"USDT": (D(100), D(100)), "BNB": (D("0.5"), D("0.5"))}, lambda c: NO_DUST)
    assert (ch.currency, ch.ledger_total, ch.venue_total, ch.total_delta, ch.locked_delta) == (
        "BNB", D(0), D("0.5"), D("0.5"), D(0),
    )  # fmt: skip


def test_dust_per_currency_star_and_precision():
    dust = {"USDT": D("0.01"), "*": D("0.001")}
    assert dust_of("USDT", dust, {}) == D("0.01")
    assert dust_of("BTC", dust, {}) == D("0.001")
    assert dust_of("BTC", {}, {"BTC": 6}) == D("0.000001")
    assert dust_of("ETH", {}, {}) == D("0.00000001")


def test_the_venue_wins_for_available_and_the_correction_survives_later_locks_and_fills():
    ledger = Ledger("USDT", D(1000))
    ledger.apply_order(limit_buy("o1", "1", "100"))  # locks 100 USDT
    # the venue holds 150: our order and 50 for an order placed on its website
    (ch,) = changes(books_of(ledger), {"USDT": (D(1000), D(850))}, lambda c: NO_DUST)
    assert (ch.ledger_available, ch.venue_free, ch.total_delta, ch.locked_delta) == (D(900), D(850), D(0), D(50))
    assert ledger.apply_adjustment(adjustment(ch))
    assert ledger.balance("USDT").available == D(850)
    # our order fills (100 spent, its lock released): the outside order's 50 stays held, nothing undone
    ledger.apply_fill(msgspec.structs.replace(fill("x", "buy", "1", "100"), order_id="o1", order_complete=True))
    b = ledger.balance("USDT")
    assert (b.total, b.locked, b.held, b.available) == (D(900), D(0), D(50), D(850))
    # a new order locks as before, on top of it
    ledger.apply_order(limit_buy("o2", "2", "100"))
    assert ledger.balance("USDT").available == D(650)


def test_a_correction_that_went_below_the_locks_never_makes_held_negative():
    ledger = Ledger("USDT", D(1000))
    ledger.apply_order(limit_buy("o1", "1", "100"))
    (ch,) = changes(books_of(ledger), {"USDT": (D(1000), D(940))}, lambda c: NO_DUST)  # the venue holds 60
    ledger.apply_adjustment(adjustment(ch))
    assert ledger.balance("USDT").available == D(940)
    ledger.apply_order(limit_buy("o1", "1", "100", OrderStatus.CANCELED))  # released on both sides
    assert ledger.balance("USDT").held == D(0) and ledger.balance("USDT").available == D(1000)


def test_the_same_adjustment_twice_is_applied_once():
    ledger = Ledger("USDT", D(1000))
    (ch,) = changes(books_of(ledger), {"USDT": (D(990), D(990))}, lambda c: NO_DUST)
    assert ledger.apply_adjustment(adjustment(ch)) and not ledger.apply_adjustment(adjustment(ch))
    assert ledger.balance("USDT").total == D(990)


def test_the_journal_looks_back_to_a_readings_point_and_knows_what_it_forgot():
    j = Journal(size=2)
    j.record(1, {"USDT": (D(10), D(0))}, {"USDT": (D(5), D(0))})
    j.record(2, {"USDT": (D(5), D(0))}, {"USDT": (D(5), D(0))})  # nothing changed: nothing recorded
    j.record(3, {"BTC": (D(0), D(0))}, {"BTC": (D(1), D("0.5"))})
    assert j.since(0) == {"USDT": (D(-5), D(0)), "BTC": (D(1), D("0.5"))} and j.covers(0)
    j.record(4, {"BTC": (D(1), D("0.5"))}, {"BTC": (D(2), D("0.5"))})
    assert not j.covers(0) and j.covers(1) and j.since(3) == {"BTC": (D(1), D(0))}
    now = {"BTC": (D(2), D("0.5"), D(0))}
    assert as_of(now, j.since(1)) == {"BTC": Books(D(0), D(0), D(0))}


def test_a_reading_that_cannot_be_compared_names_the_field():
    def r(**b: VenueBalanceFigures) -> VenueBalances:
        return VenueBalances(venue="binance", balances=b, ts=1, fills_seq=0)

    assert reading_problem(r(USDT=VenueBalanceFigures(free=D(2), total=D(1)))) == (
        "balances.USDT.free", "2 is more than the total 1",
    )  # fmt: skip
    assert reading_problem(r(usdt=VenueBalanceFigures(free=D(1), total=D(1))))[0] == "balances.usdt"  # type: ignore[index]
    assert reading_problem(r(), "kraken") == ("venue", "'binance' is not the venue of the subject ('kraken')")
    assert reading_problem(r(BTC=VenueBalanceFigures(free=D(0), total=D(1)))) is None


def test_an_opening_starts_the_performance_figures_again_once():
    t = EquityTracker(D(50000))
    t.sample(1, D(50000))
    assert t.open_at("binance:1", D(1000)) and t.curve == [] and t.initial == D(1000)
    t.settle(D(1050), complete=False)
    t.settle(D(1100), complete=True)
    t.settle(D(1200), complete=True)
    assert t.initial == D(1100) and not t.opening_pending
    assert not t.open_at("binance:1", D(5))  # a replay of the same opening
    assert t.initial == D(1100)


# -- properties -------------------------------------------------------------------------------------
amounts = st.decimals(min_value=D(0), max_value=D(10**6), places=8, allow_nan=False, allow_infinity=False)
currencies = st.sampled_from(["USDT", "BTC", "ETH", "BNB"])
ledger_books = st.dictionaries(
    currencies,
    st.builds(Books, amounts, amounts, st.decimals(min_value=D(-1000), max_value=D(1000), places=8)),
    max_size=4,
)


@st.composite
def venue_figures(draw: st.DrawFn) -> dict[str, tuple[D, D]]:
    out = {}
    for c in draw(st.lists(currencies, unique=True, max_size=4)):
        total = draw(amounts)
        out[c] = (total, draw(st.decimals(min_value=D(0), max_value=total, places=8)))
    return out


dusts = st.sampled_from([D(0), D("0.00000001"), D("0.01")])


@given(ledger_books, venue_figures(), dusts)
@settings(max_examples=300)
def test_after_the_adjustments_the_books_are_the_venues_beyond_dust_and_twice_changes_nothing(books, venue, dust):
    found = changes(books, venue, lambda c: dust)
    after = dict(books)
    for ch in found:
        after[ch.currency] = adjusted(books.get(ch.currency, Books()), ch)
    for c in after.keys() | venue.keys():
        b = after.get(c, Books())
        vt, vf = venue.get(c, (D(0), D(0)))
        assert abs(b.total - vt) <= dust and abs(b.available - vf) <= dust
        if c in {ch.currency for ch in found}:
            assert (b.total, b.available) == (vt, vf)  # adopted exactly
    assert changes(after, venue, lambda c: dust) == []  # the same reading again: nothing more


fill_steps = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 50), st.integers(90, 110)), max_size=8)


@given(fill_steps, st.integers(0, 8), venue_figures())
@settings(max_examples=150)
def test_an_adjustment_lands_the_same_wherever_it_falls_among_the_fills(steps, at, venue):
    """Adjustments are differences: made live after some fills, or replayed at its point, the books
    come out the same; and the books as of the reading (journal) are what the venue said."""
    at = min(at, len(steps))
    fills = [fill(f"f{i}", side, f"0.{q:02d}", str(p), "0.01") for i, (side, q, p) in enumerate(steps)]
    live, journal = Ledger("USDT", D(1000)), Journal()
    for i, f in enumerate(fills[:at]):
        before = live.figures(("BTC", "USDT"))
        live.apply_fill(f)
        journal.record(i + 1, before, live.figures(("BTC", "USDT")))
    reading_books = books_of(live)
    for i, f in enumerate(fills[at:], start=at):  # booked before the reading was compared
        before = live.figures(("BTC", "USDT"))
        live.apply_fill(f)
        journal.record(i + 1, before, live.figures(("BTC", "USDT")))
    now = {c: (b.total, b.locked, b.correction) for c, b in live.balances.items()}
    looked_back = as_of(now, journal.since(at))
    assert {c: b for c, b in looked_back.items() if b != Books()} == {
        c: b for c, b in reading_books.items() if b != Books()
    }
    adjs = [adjustment(ch, fills_seq=at) for ch in changes(looked_back, venue, lambda c: NO_DUST)]
    for a in adjs:
        live.apply_adjustment(a)
    replayed = Ledger("USDT", D(1000))
    for f in fills[:at]:
        replayed.apply_fill(f)
    for a in adjs:
        replayed.apply_adjustment(a)
    for f in fills[at:]:
        replayed.apply_fill(f)
    assert books_of(replayed) == books_of(live)
    # as of the reading, the venue's figures
    now = {c: (b.total, b.locked, b.correction) for c, b in live.balances.items()}
    for c, b in as_of(now, journal.since(at)).items():
        assert (b.total, b.available) == venue.get(c, (D(0), D(0)))
