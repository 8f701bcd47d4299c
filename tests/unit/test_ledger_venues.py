"""Books per venue (issue 17): VenueLedgers, its valuation (byExchange and the totals), performance over
venues. Pure functions, with hypothesis for what must hold for every sequence of fills and orders."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.portfolio_ledger import LedgerState, _journal_of, _of_venue
from domain.ledger import Ledger
from domain.performance import EquityTracker, report
from domain.reconcile import Journal
from domain.valuation import (
    DayStart,
    books_equity,
    books_snapshot,
    combined_marks,
    equity,
    roll_days,
    snapshot,
    venue_position_view,
)
from domain.venue_ledgers import VenueLedgers
from schemas.messages import BalanceAdjusted, Fill, Order, OrderStatus
from tests.helpers import fill

S = OrderStatus
ZERO = D(0)


def books(*venues: str, initial: str = "1000") -> VenueLedgers:
    return VenueLedgers("USDT", D(initial), venues)


def order(
    order_id: str,
    venue: str,
    side: str = "buy",
    qty: str = "2",
    price: str = "100",
    status: S = S.ACCEPTED,
    filled: str = "0",
    pair: str = "BTC_USDT",
) -> Order:
    return Order(
        order_id=order_id, client_order_id=f"C-{order_id}", pair=pair, side=side, type="limit",  # type: ignore[arg-type]
        quantity=D(qty), status=status, price=D(price), filled_quantity=D(filled), venue=venue,
    )  # fmt: skip


def of_order(f: Fill, order_id: str) -> Fill:
    return msgspec.structs.replace(f, order_id=order_id)


def of(b: VenueLedgers, venue: str, currency: str) -> tuple[D, D, D]:
    bal = b.of(venue).balance(currency)
    return bal.total, bal.available, bal.held


# -- never mixed ------------------------------------------------------------------------------------------
def test_a_fill_on_one_venue_moves_only_that_venues_books() -> None:
    b = books("binance", "alpaca")
    b.apply_fill(fill("f1", "buy", "2", "100", "0.2", venue="binance"))
    assert of(b, "binance", "USDT") == (D("799.8"), D("799.8"), ZERO)
    assert of(b, "binance", "BTC") == (D(2), D(2), ZERO)
    assert of(b, "alpaca", "USDT") == (D(1000), D(1000), ZERO)
    assert "BTC" not in b.of("alpaca").balances and "BTC_USDT" not in b.of("alpaca").positions
    assert [(v, p, q) for v, p, q in b.positions()] == [("binance", "BTC_USDT", D(2))]
    summed = b.balances()
    assert (summed["USDT"].total, summed["BTC"].total) == (D("1799.8"), D(2))


def test_a_lock_on_one_venue_leaves_the_others_available_untouched() -> None:
    b = books("binance", "alpaca")
    b.apply_order(order("O1", "binance", qty="9", price="100"))  # locks 900 USDT on binance
    assert b.available("binance")["USDT"] == D(100)
    assert b.available("alpaca")["USDT"] == D(1000)  # the lock on binance pays for nothing on alpaca
    assert b.balances()["USDT"].available == D(1100)


def test_a_venues_balance_below_zero_is_a_breach_even_when_another_venue_holds_the_currency() -> None:
    b = books("binance", "alpaca")
    b.apply_fill(fill("f1", "buy", "11", "100", venue="alpaca"))  # spends 1100 of alpaca's 1000
    assert b.balances()["USDT"].total == D(900)  # together there is enough; alpaca alone has not
    assert b.breaches(allow_short=False) == [("alpaca", "USDT")]
    assert b.breaches(allow_short=True) == [("alpaca", "USDT")]


def test_a_lock_follows_an_order_moved_to_another_venue_and_leaves_nothing_behind() -> None:
    b = books("binance", "alpaca")
    b.apply_order(order("O1", "binance", qty="3", price="100"))
    assert b.of("binance").balance("USDT").locked == D(300)
    b.apply_order(order("O1", "alpaca", qty="3", price="100"))  # the fallback: sent to alpaca instead
    assert b.of("binance").balance("USDT").locked == ZERO and "O1" not in b.of("binance").locks
    assert b.of("alpaca").balance("USDT").locked == D(300) and b.lock_venue["O1"] == "alpaca"
    assert b.available("binance")["USDT"] == D(1000)
    b.apply_fill(of_order(fill("O1f", "buy", "1", "100", venue="alpaca"), "O1"))
    assert b.of("alpaca").balance("USDT").locked == D(200)  # the fill spent a third of the lock, on alpaca
    b.apply_order(order("O1", "alpaca", qty="3", price="100", status=S.CANCELED, filled="1"))
    assert b.of("alpaca").balance("USDT").locked == ZERO and "O1" not in b.lock_venue
    assert all(not led.locks and not led.filled_by_fills for _, led in b)


def test_a_moved_order_with_a_fill_booked_before_its_event_keeps_what_the_fill_spent() -> None:
    b = books("binance", "alpaca")
    b.apply_order(order("O2", "binance", qty="2", price="100"))
    b.apply_order(order("O2", "alpaca", qty="2", price="100"))
    b.apply_fill(of_order(fill("O2f", "buy", "1", "100", venue="alpaca"), "O2"))
    b.apply_order(order("O2", "alpaca", qty="2", price="100", status=S.PARTIALLY_FILLED, filled="1"))
    assert b.of("alpaca").balance("USDT").locked == D(100) and b.of("binance").balance("USDT").locked == ZERO


def test_a_one_venue_deployment_books_every_fill_on_its_venue_whatever_it_names() -> None:
    b = books("paper")
    b.apply_fill(fill("x1", "sell", "1", "100", venue="elsewhere"))
    assert b.names() == ["paper"] and of(b, "paper", "USDT") == (D(1100), D(1100), ZERO)


def test_a_fill_from_a_venue_not_configured_is_booked_on_books_of_its_own_that_start_empty() -> None:
    b = books("paper", "binance")
    b.apply_fill(fill("x1", "sell", "1", "100", venue="elsewhere"))
    assert b.names() == ["paper", "binance", "elsewhere"]
    assert of(b, "elsewhere", "USDT") == (D(100), D(100), ZERO) and of(b, "elsewhere", "BTC")[0] == D(-1)
    assert b.of("elsewhere").initial_balance == ZERO and b.initial_total == D(2000)
    assert of(b, "paper", "USDT") == (D(1000), D(1000), ZERO)
    assert b.fills_applied == 1
    assert books().of("any").initial_balance == D(1000)  # no venues configured: every venue starts as one


def test_adjustments_go_to_their_venue() -> None:
    b = books("binance", "paper")
    adj = BalanceAdjusted(
        adjustment_id="binance:1:USDT", venue="binance", currency="USDT", from_total=D(1000),
        from_available=D(1000), to_total=D(700), to_available=D(600), locked_delta=D(100), reason="opening",
        fills_seq=0, reading_fills_seq=0, reading_seq=1, reading_ts=1, ts=1,
    )  # fmt: skip
    assert b.apply_adjustment(adj) and not b.apply_adjustment(adj)
    assert of(b, "binance", "USDT") == (D(700), D(600), D(100))
    assert of(b, "paper", "USDT") == (D(1000), D(1000), ZERO)
    assert b.recent_adjustments() == [adj]


def _random_events() -> st.SearchStrategy[list[tuple[str, object]]]:
    venue = st.sampled_from(["binance", "alpaca", "paper", "other"])
    qty = st.integers(1, 40).map(lambda n: D(n) / 10)
    price = st.integers(50, 150).map(D)
    fill_ev = st.tuples(venue, st.sampled_from(["buy", "sell"]), qty, price, st.sampled_from(["BTC_USDT", "ETH_BTC"]))
    order_ev = st.tuples(
        st.sampled_from(["O1", "O2", "O3"]),
        venue,
        st.sampled_from(["buy", "sell"]),
        qty,
        price,
        st.sampled_from([S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED]),
    )
    return st.lists(st.one_of(fill_ev.map(lambda f: ("fill", f)), order_ev.map(lambda o: ("order", o))), max_size=40)


def _apply(b: VenueLedgers, events: list[tuple[str, object]]) -> list[Fill]:
    fills = []
    for i, (kind, ev) in enumerate(events):
        if kind == "fill":
            v, side, q, p, pair = ev  # type: ignore[misc]
            fee_ccy = pair.split("_")[1]
            f = fill(f"F{i}", side, str(q), str(p), str(q / 100), pair=pair, fee_currency=fee_ccy, ts=i, venue=v)
            b.apply_fill(f)
            fills.append(f)
        else:
            oid, v, side, q, p, status = ev  # type: ignore[misc]
            filled = q / 2 if status == S.PARTIALLY_FILLED else ZERO
            b.apply_order(order(oid, v, side, str(q), str(p), status, str(filled)))
    return fills


@settings(max_examples=200, deadline=None)
@given(_random_events())
def test_totals_are_the_sum_of_the_venues_and_a_venues_books_are_its_fills_alone(events) -> None:
    b = books("binance", "alpaca", "paper")
    fills = _apply(b, events)
    summed = b.balances()
    for c in summed.keys() | {c for _, led in b for c in led.balances}:
        parts = [led.balances[c] for _, led in b if c in led.balances]
        assert summed[c].total == sum((p.total for p in parts), ZERO)
        assert summed[c].locked == sum((p.locked for p in parts), ZERO)
        assert summed[c].held == sum((p.held for p in parts), ZERO)
        assert summed[c].available == sum((p.available for p in parts), ZERO)
    assert b.fills_applied == len(fills)
    # a venue's positions and balances are those of its fills alone (locks aside: orders move between venues)
    for v, led in b:
        alone = Ledger("USDT", led.initial_balance)
        for f in fills:
            if f.venue == v:
                alone.apply_fill(f)
        assert {p: (x.quantity, x.average_price, x.realized_pnl) for p, x in led.positions.items()} == {
            p: (x.quantity, x.average_price, x.realized_pnl) for p, x in alone.positions.items()
        }
        assert {c: x.total for c, x in led.balances.items() if x.total} == {
            c: x.total for c, x in alone.balances.items() if x.total
        }
    # every lock is on one venue only: the venue the order was last seen on
    for oid, v in b.lock_venue.items():
        assert [w for w, led in b if oid in led.locks or oid in led.filled_by_fills] == [v]
    marks = {"BTC_USDT": D(101), "ETH_BTC": D("0.05")}
    cm = combined_marks([led for _, led in b], marks)
    assert books_equity(b, marks) == sum((equity(led, cm) for _, led in b), ZERO)


@settings(max_examples=100, deadline=None)
@given(_random_events())
def test_an_order_that_ends_anywhere_leaves_no_lock_behind(events) -> None:
    b = books("binance", "alpaca", "paper")
    _apply(b, events)
    for oid in ("O1", "O2", "O3"):  # every order ends (canceled) on some venue
        b.apply_order(order(oid, "paper", status=S.CANCELED))
    assert b.lock_venue == {}
    assert all(not led.locks and not led.filled_by_fills for _, led in b)
    assert all(bal.locked == ZERO for _, led in b for bal in led.balances.values())


# -- valuation: byExchange and the totals ------------------------------------------------------------------
def two_venues() -> VenueLedgers:
    b = books("binance", "alpaca", "paper")
    b.apply_fill(fill("b1", "buy", "2", "100", "0.2", venue="binance", ts=1))
    b.apply_fill(fill("a1", "buy", "1", "110", "0.11", venue="alpaca", ts=2))
    b.apply_fill(fill("a2", "buy", "1", "50", pair="ETH_USDT", venue="alpaca", ts=3))
    return b


def test_the_snapshot_has_each_venues_books_and_the_totals() -> None:
    b = two_venues()
    snap = books_snapshot(b, {"BTC_USDT": D(120), "ETH_USDT": D(50)}, {}, 9, 3)
    assert list(snap.by_exchange) == ["binance", "alpaca", "paper"]
    bn, al, pa = (snap.by_exchange[v] for v in ("binance", "alpaca", "paper"))
    # binance: 1000 - 200 - 0.2 cash, 2 BTC at 120
    assert (bn.summary.total_cash, bn.summary.total_positions, bn.summary.total_value) == (
        D("799.8"), D(240), D("1039.8"))  # fmt: skip
    assert [(p.exchange, p.pair, p.quantity, p.average_price, p.unrealized_pnl) for p in bn.positions] == [
        ("binance", "BTC_USDT", D(2), D(100), D(40))
    ]
    assert [(x.currency, x.total) for x in bn.balances] == [("USDT", D("799.8")), ("BTC", D(2))]
    # alpaca: 1000 - 110 - 0.11 - 50 cash, 1 BTC at 120, 1 ETH at 50
    assert al.summary.total_cash == D("839.89") and al.summary.total_value == D("1009.89")
    assert [(p.exchange, p.pair, p.quantity) for p in al.positions] == [
        ("alpaca", "BTC_USDT", D(1)), ("alpaca", "ETH_USDT", D(1))]  # fmt: skip
    assert pa.positions == [] and pa.summary.total_value == D(1000)
    # the totals: one position per venue and pair, balances summed, figures summed
    assert [(p.pair, p.exchange, p.quantity) for p in snap.positions] == [
        ("BTC_USDT", "alpaca", D(1)), ("BTC_USDT", "binance", D(2)), ("ETH_USDT", "alpaca", D(1))]  # fmt: skip
    assert [(x.currency, x.total) for x in snap.balances] == [
        ("USDT", D("2639.69")), ("BTC", D(3)), ("ETH", D(1))]  # fmt: skip
    s = snap.summary
    assert s.total_value == D("3049.69") == bn.summary.total_value + al.summary.total_value + pa.summary.total_value
    assert s.unrealized_pnl == D(50) and s.fees_paid == D("0.31")
    assert s.realized_pnl == bn.summary.realized_pnl + al.summary.realized_pnl == D("-0.31")
    assert snap.fills_applied == 3
    # ids: unique, stable, naming the venue (several venues)
    assert {p.id for p in snap.positions} == {"POS_001_BTC_USDT:alpaca", "POS_001_BTC_USDT:binance",
                                              "POS_001_ETH_USDT:alpaca"}  # fmt: skip
    # positionSize: of the total value at the top level, of the venue's in byExchange
    top = next(p for p in snap.positions if p.exchange == "binance")
    assert top.risk_metrics.position_size == D("0.078697")  # 240 / 3049.69
    assert bn.positions[0].risk_metrics.position_size == D("0.230814")  # 240 / 1039.8


def test_one_venue_keeps_the_ids_and_figures_of_one_ledger() -> None:
    b = books("paper")
    single = Ledger("USDT", D(1000))
    for f in (fill("p1", "buy", "2", "100", "0.2", ts=1), fill("p2", "sell", "1", "110", "0.1", ts=2)):
        b.apply_fill(f)
        single.apply_fill(f)
    marks = {"BTC_USDT": D(105)}
    day = DayStart(day="20261207", equity=D(990))
    got = books_snapshot(b, marks, {"paper": day}, 5, 2)
    old = snapshot(single, marks, day, 5, 2)
    assert got.summary == old.summary and got.balances == old.balances
    assert [msgspec.structs.replace(p, exchange=None) for p in got.positions] == old.positions
    assert got.positions[0].id == "POS_001_BTC_USDT" and got.positions[0].exchange == "paper"
    assert got.by_exchange["paper"].summary == old.summary


def test_day_pnl_is_per_venue_and_summed() -> None:
    b = books("binance", "paper")
    days = roll_days(b, {}, {}, "20261207")
    assert {v: d.equity for v, d in days.items()} == {"binance": D(1000), "paper": D(1000)}
    b.apply_fill(fill("d1", "buy", "1", "100", venue="binance"))
    snap = books_snapshot(b, {"BTC_USDT": D(130)}, days, 1, 1)
    assert snap.by_exchange["binance"].summary.day_pnl == D(30)
    assert snap.by_exchange["paper"].summary.day_pnl == ZERO
    assert snap.summary.day_pnl == D(30)
    assert roll_days(b, {}, days, "20261206") is days  # days only move forward
    b.apply_fill(fill("d2", "sell", "1", "100", venue="new"))  # a venue first seen: its day starts now
    later = roll_days(b, {}, days, "20261207")
    assert later["new"].day == "20261207" and later["binance"] is days["binance"]


def test_a_position_event_names_its_venue() -> None:
    b = two_venues()
    view = venue_position_view(b, "alpaca", "BTC_USDT", {"BTC_USDT": D(120)}, DayStart(), D(3000))
    assert (view.exchange, view.id, view.quantity, view.unrealized_pnl) == (
        "alpaca", "POS_001_BTC_USDT:alpaca", D(1), D(10))  # fmt: skip


def test_without_a_book_every_venue_is_valued_at_the_latest_fill_price_of_the_pair() -> None:
    b = books("binance", "alpaca")
    b.apply_fill(fill("m1", "buy", "1", "100", venue="binance", ts=1))
    b.apply_fill(fill("m2", "buy", "1", "120", venue="alpaca", ts=2))
    snap = books_snapshot(b, {}, {}, 1, 2)
    assert {p.exchange: p.current_price for p in snap.positions} == {"binance": D(120), "alpaca": D(120)}
    assert snap.summary.total_value == snap.by_exchange["binance"].summary.total_value + (
        snap.by_exchange["alpaca"].summary.total_value
    )


def test_performance_counts_every_venues_round_trips_and_sums_the_pair() -> None:
    b = books("binance", "alpaca")
    b.apply_fill(fill("r1", "buy", "1", "100", venue="binance", ts=1))
    b.apply_fill(fill("r2", "sell", "1", "110", venue="binance", ts=2))  # +10
    b.apply_fill(fill("r3", "buy", "1", "100", venue="alpaca", ts=3))
    b.apply_fill(fill("r4", "sell", "1", "95", venue="alpaca", ts=4))  # -5
    b.apply_fill(fill("r5", "buy", "1", "100", venue="alpaca", ts=5))  # open
    perf = report(b, EquityTracker(b.initial_total), {"BTC_USDT": D(104)}, 10)
    assert perf.initial_balance == D(2000) and perf.equity == D(2009)  # 2000 + 10 - 5 + 4
    assert (perf.trades.round_trips, perf.trades.wins, perf.trades.losses) == (2, 1, 1)
    [btc] = perf.per_pair
    assert (btc.realized_pnl, btc.unrealized_pnl) == (D(5), D(4))
    assert [(v, c.realized_pnl) for v, c in b.history()] == [("binance", D(10)), ("alpaca", D(-5))]


# -- snapshots -------------------------------------------------------------------------------------------
def test_the_books_of_every_venue_survive_a_snapshot_exactly() -> None:
    b = two_venues()
    b.apply_order(order("O9", "alpaca", qty="1", price="90"))
    state = LedgerState(
        EquityTracker(D(3000)), ["b1", "a1", "a2"], 3, 1, books=b, days={"alpaca": DayStart("20261207", D(1))}
    )
    back = msgspec.json.decode(msgspec.json.encode(state), type=LedgerState)
    assert back.books == b and back.days == state.days and back.ledger is None
    assert back.books is not None and back.books.lock_venue == {"O9": "alpaca"}


def test_a_snapshot_written_before_books_per_venue_still_decodes() -> None:
    """The shape every snapshot had before (``ledger`` and ``day`` of one Ledger)."""
    led = Ledger("USDT", D(1000))
    led.apply_fill(fill("o1", "buy", "1", "100", venue="binance"))
    old = {
        "ledger": msgspec.to_builtins(led), "day": msgspec.to_builtins(DayStart("20261207", D(1000))),
        "tracker": msgspec.to_builtins(EquityTracker(D(1000))), "applied": ["o1"], "fills_seq": 1, "orders_seq": 0,
        "fold": 3, "adjustments_seq": 0, "fill_journal": None, "order_journal": None, "readings": {},
    }  # fmt: skip
    st_ = msgspec.json.decode(msgspec.json.encode(old), type=LedgerState)
    assert st_.books is None and st_.ledger == led and st_.day == DayStart("20261207", D(1000))


def test_an_old_journal_becomes_its_venues_journal() -> None:
    j = Journal()
    j.record(5, {"USDT": (D(10), ZERO)}, {"USDT": (D(7), ZERO)})
    moved = _journal_of(j, "binance")
    assert moved is not None and moved.floor == j.floor
    assert _of_venue(moved.since(4), "binance") == {"USDT": (D(-3), ZERO)}
    assert _of_venue(moved.since(4), "alpaca") == {}
