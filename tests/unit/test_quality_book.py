"""domain/quality_book.py: which orders are rows, children in their parent, alerts once, bounded, replayable."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.quality_book import QualityBook, arrival, order_view, report, with_arrival
from schemas.messages import FillRef, Order, OrderStatus

S = OrderStatus


def ref(fill_id: str, qty: str, price: str, fee: str = "0", currency: str = "USDT", ts: int = 1_000) -> FillRef:
    return FillRef(
        fill_id=fill_id, quantity=D(qty), price=D(price), fee=D(fee), fee_currency=currency, liquidity="taker",
        timestamp=ts,
    )  # fmt: skip


def order(oid: str, status: S, fills: list[FillRef] = (), **kw: object) -> Order:  # type: ignore[assignment]
    base: dict[str, object] = dict(
        order_id=oid, client_order_id=f"c-{oid}", pair="BTC_USDT", side="buy", type="market", quantity=D(2),
        status=status, venue="paper", created_at=0, updated_at=2_000, arrival_mid=D(100), arrival_bid=D("99.95"),
        arrival_ask=D("100.05"), venue_order_id=f"v-{oid}", fills=list(fills),
    )  # fmt: skip
    base.update(kw)
    return Order(**base)  # type: ignore[arg-type]


def test_arrival_is_the_mid_only_with_both_sides_never_a_guess():
    assert arrival([(D(99), D(1))], [(D(101), D(1))]) == (D(100), D(99), D(101))
    assert arrival([(D(99), D(1))], []) == (None, D(99), None)
    assert arrival([], [(D(101), D(1))]) == (None, None, D(101))
    assert arrival([], []) == (None, None, None)


def test_with_arrival_changes_only_a_changed_order():
    o = order("a", S.ACCEPTED)
    assert with_arrival(o, o, (D(1), D(1), D(1))) is o
    new = msgspec.structs.replace(o, status=S.TRIGGERED)
    got = with_arrival(new, o, (D(7), D(6), D(8)))
    assert (got.arrival_mid, got.arrival_bid, got.arrival_ask, got.status) == (D(7), D(6), D(8), S.TRIGGERED)


def test_a_filled_market_order_checked_by_hand():
    # buy 2 @ arrival mid 100.00 (ask 100.05): fills 1 @ 100.10 and 1 @ 100.30, fee 0.1 % in USDT
    # average 100.20; vs arrival 10000 x 0.20 / 100 = 20 bps; vs touch 10000 x 0.15 / 100.05 = 14.9925 bps;
    # fees 0.1001 + 0.1003 = 0.2004 USDT = 10000 x 0.2004 / 200.40 = 10 bps; cost 30 bps; time to fill 1500 ms
    book = QualityBook()
    fills = [ref("f1", "1", "100.10", "0.1001", ts=1_000), ref("f2", "1", "100.30", "0.1003", ts=1_500)]
    assert book.fold(order("a", S.PARTIALLY_FILLED, fills[:1])) is None
    assert book.rows == {}  # not complete yet
    book.fold(order("a", S.FILLED, fills, closed_at=1_500))
    view = order_view(book.rows["a"])
    assert (view.average_price, view.slippage_bps, view.touch_slippage_bps) == (D("100.2"), D(20), D("14.9925"))
    assert (view.fees, view.fees_bps, view.cost_bps, view.fill_ratio) == (D("0.2004"), D(10), D(30), D(1))
    assert (view.time_to_fill_ms, view.completed_at) == (1_500, 1_500)
    # per fill: 10 bps and 30 bps against arrival; 4.9975 and 24.9875 against the touch; 10 bps of fees each
    assert [(f.slippage_bps, f.touch_slippage_bps, f.fee_bps, f.cost_bps) for f in view.fills] == [
        (D(10), D("4.9975"), D(10), D(20)),
        (D(30), D("24.9875"), D(10), D(40)),
    ]
    q = report(book.select(), "USDT", lambda c: None)
    for figures in (q.by_pair["BTC_USDT"], q.by_exchange["paper"], q.by_type["market"], q.overall):
        assert msgspec.to_builtins(figures) == {
            "orders": 1, "avgSlippageBps": "20.0000", "p95SlippageBps": "20.0000", "fillRatio": "1.000000",
            "avgTimeToFillMs": 1500, "fees": "0.2004", "feesCurrency": "USDT",
        }  # fmt: skip


def test_which_orders_count():
    book = QualityBook()
    book.fold(order("rejected", S.REJECTED, venue_order_id=None))  # never worked: no row
    book.fold(order("denied", S.DENIED, venue_order_id=None))
    book.fold(order("working", S.ACCEPTED))  # not complete
    # a bracket leg never triggered, canceled with its entry: never left the router
    book.fold(order("leg", S.CANCELED, type="stop_loss", role="stop_loss", venue_order_id=None, parent_order_id="e"))
    book.fold(order("ioc", S.CANCELED, venue_status="canceled"))  # worked at the venue, nothing filled
    assert list(book.rows) == ["ioc"]
    assert book.rows["ioc"].quality.fill_ratio == 0 and book.rows["ioc"].quality.slippage_bps is None


def test_a_stop_the_venue_held_has_no_arrival_one_the_router_triggered_has_its_trigger_book():
    book = QualityBook()
    fills = [ref("n1", "2", "90")]
    book.fold(order("native", S.FILLED, fills, type="stop_loss", side="sell", native_trigger=True))
    assert book.rows["native"].quality.slippage_bps is None  # never against the book of long before it fired
    book.fold(order("emulated", S.FILLED, [ref("e1", "2", "89.91")], type="stop_loss", side="sell",
                    triggered_at=1_000, arrival_mid=D(90), arrival_bid=D("89.95"), arrival_ask=D("90.05")))  # fmt: skip
    assert book.rows["emulated"].quality.slippage_bps == D(10)  # sold 0.09 under the mid of 90: 10 bps


def test_children_are_counted_in_their_parent_each_fill_once():
    book = QualityBook()
    parent = order("p", S.ACCEPTED, type="twap", venue_order_id=None, arrival_mid=D(100))
    kid = dict(role="slice", parent_order_id="p", quantity=D(1), arrival_mid=D(101))
    book.fold(parent)
    book.fold(order("p:s0", S.FILLED, [ref("k1", "1", "100.10", ts=500)], **kid))
    book.fold(order("p:s1", S.PARTIALLY_FILLED, [ref("k2", "0.5", "100.50", ts=900)], **kid))
    assert book.rows == {} and set(book.pending["p"]) == {"k1", "k2"}
    # the parent completes; it lists one child fill itself too (aggregated by the router): counted once
    book.fold(order("p", S.CANCELED, [ref("k1", "1", "100.10", ts=500)], type="twap", venue_order_id=None))
    row = book.rows["p"]
    assert list(book.rows) == ["p"] and book.pending == {}
    assert (row.type, row.quality.filled_quantity, row.quality.fill_ratio) == ("twap", D("1.5"), D("0.75"))
    # average (100.10 + 0.5 x 100.50) / 1.5 = 100.2333...; against the parent's arrival 100 (not a child's)
    assert row.quality.slippage_bps.quantize(D("0.0001")) == D("23.3333")
    # a child's late fill after the parent completed lands in the parent's row
    book.fold(order("p:s1", S.FILLED, [ref("k2", "0.5", "100.50", ts=900), ref("k3", "0.5", "100.20", ts=950)], **kid))
    assert book.rows["p"].quality.filled_quantity == D(2) and "p:s1" not in book.rows


def test_the_slippage_alert_is_raised_once_per_order():
    book = QualityBook()
    fills = [ref("a1", "2", "100.60")]  # 60 bps above the arrival mid of 100
    first = book.fold(order("a", S.FILLED, fills), D(50))
    assert first is not None and first.order_id == "a" and list(book.alerted) == ["a"]
    assert book.fold(order("a", S.FILLED, fills), D(50)) is None  # the same event again
    # a late fill makes it complete again: still no second alert
    book.fold(order("a", S.PARTIALLY_FILLED, fills, quantity=D(3)), D(50))
    assert book.fold(order("a", S.CANCELED, fills, quantity=D(3)), D(50)) is None
    assert book.fold(order("b", S.FILLED, [ref("b1", "2", "100.40")]), D(50)) is None  # 40 bps: below
    assert book.fold(order("c", S.FILLED, [ref("c1", "2", "101")]), D(0)) is None  # 0: alerts off
    assert book.fold(order("d", S.FILLED, [ref("d1", "2", "101")], arrival_mid=None), D(50)) is None  # no arrival


def test_report_groups_and_converts_fees_across_quote_currencies():
    book = QualityBook()
    book.fold(order("u", S.FILLED, [ref("u1", "2", "100.10", "0.2")], venue="binance"))  # 10 bps, 0.2 USDT
    # ETH_BTC: fee 0.001 ETH at the fill's price = 0.0000499 BTC = 2.994 USDT at 60000; 20 bps (0.0499 vs 0.05)
    book.fold(order("b", S.FILLED, [ref("b1", "2", "0.0499", "0.001", "ETH")], pair="ETH_BTC", side="sell",
                    type="limit", arrival_mid=D("0.05"), arrival_bid=D("0.0499"), arrival_ask=D("0.0501")))  # fmt: skip
    book.fold(order("x", S.FILLED, [ref("x1", "2", "10", "0.5", "BNB")], pair="XMR_EUR"))  # EUR: no rate
    rates = {"BTC": D(60000)}
    q = report(book.select(), "USDT", rates.get)
    assert q.currency == "USDT" and q.unconverted == ["BNB", "EUR"]
    assert (q.by_pair["ETH_BTC"].fees, q.by_pair["ETH_BTC"].fees_currency) == (D("2.994"), "USDT")
    assert (q.by_pair["XMR_EUR"].fees, q.by_pair["XMR_EUR"].fees_currency) == (D(0), "EUR")  # in its own quote
    assert q.overall.fees == D("3.194") and q.overall.orders == 3  # 0.2 + 2.994 (the EUR fees left out)
    assert {k: v.orders for k, v in q.by_exchange.items()} == {"binance": 1, "paper": 2}
    assert {k: v.orders for k, v in q.by_type.items()} == {"limit": 1, "market": 2}
    # notional-weighted: (10 x 200.20 + 20 x 0.0998) / (200.20 + 0.0998); the XMR order has slippage 0 x 20
    assert q.by_exchange["binance"].avg_slippage_bps == D(10)
    assert q.by_type["limit"].avg_slippage_bps == D(20)


def test_slippage_across_pairs_is_weighted_by_the_filled_notional_in_base_currency():
    # review s11 M6: BTC_USDT 10 bps worse on 60,060 USDT; ETH_BTC 50 bps worse on 0.05025 BTC = 3,015 USDT at 60000.
    # Weighted by value: (10 x 60060 + 50 x 3015) / (60060 + 3015) = 11.912 bps (by raw notionals it was 10.0000)
    book = QualityBook()
    book.fold(order("a", S.FILLED, [ref("f1", "1", "60060")], quantity=D(1), arrival_mid=D(60000)))
    book.fold(order("b", S.FILLED, [ref("f2", "1", "0.05025", currency="BTC")], pair="ETH_BTC", quantity=D(1),
                    arrival_mid=D("0.05")))  # fmt: skip
    q = report(book.select(), "USDT", lambda c: D(60000) if c == "BTC" else None)
    assert {k: v.avg_slippage_bps for k, v in q.by_pair.items()} == {"BTC_USDT": D(10), "ETH_BTC": D(50)}
    expected = ((D(10) * 60060 + D(50) * D("0.05025") * 60000) / (60060 + D("0.05025") * 60000)).quantize(D("0.0001"))
    assert expected == D("11.9120")
    for figures in (q.overall, q.by_exchange["paper"], q.by_type["market"]):
        assert figures.avg_slippage_bps == expected
    # a pair whose quote cannot be converted stays out of the weighted mean (its quote listed in unconverted); its
    # own group keeps its figures in its own quote currency
    book.fold(order("x", S.FILLED, [ref("x1", "1", "10.5", currency="EUR")], pair="XMR_EUR", quantity=D(1),
                    arrival_mid=D(10)))  # 500 bps worse  # fmt: skip
    q = report(book.select(), "USDT", lambda c: D(60000) if c == "BTC" else None)
    assert q.unconverted == ["EUR"] and q.overall.orders == 3
    assert q.overall.avg_slippage_bps == expected and q.by_type["market"].avg_slippage_bps == expected
    assert (q.by_pair["XMR_EUR"].avg_slippage_bps, q.by_pair["XMR_EUR"].fees_currency) == (D(500), "EUR")
    assert q.overall.p95_slippage_bps == D(500)  # the percentile of bps needs no weight: every order is in it
    # nothing convertible in a group: nothing to weigh, null
    only = report([r for r in book.select() if r.pair == "XMR_EUR"], "USDT", lambda c: None)
    assert only.overall.avg_slippage_bps is None and only.by_pair["XMR_EUR"].avg_slippage_bps == D(500)


def test_select_filters_by_creation_pair_venue_and_order():
    book = QualityBook()
    for i, (pair, venue) in enumerate([("BTC_USDT", "paper"), ("ETH_USDT", "paper"), ("BTC_USDT", "binance")]):
        book.fold(order(f"o{i}", S.FILLED, [ref(f"f{i}", "2", "100")], pair=pair, venue=venue, created_at=i * 10))
    ids = lambda rows: [r.order_id for r in rows]  # noqa: E731
    assert ids(book.select(since=10)) == ["o1", "o2"]
    assert ids(book.select(until=10)) == ["o0"]  # until: exclusive
    assert ids(book.select(pair="BTC_USDT")) == ["o0", "o2"]
    assert ids(book.select(exchanges=["binance"])) == ["o2"]
    assert ids(book.select(order_id="o1")) == ["o1"] and book.select(order_id="nope") == []


# -- every sequence of order events ------------------------------------------------------------------------------
STATUSES = [S.SUBMITTED, S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED]


@st.composite
def events(draw: st.DrawFn) -> list[Order]:
    out = []
    for _ in range(draw(st.integers(0, 40))):
        n = draw(st.integers(0, 7))
        child = n >= 5
        oid = f"o{n}"
        fills = [
            ref(f"{oid}:{k}", "0.25", str(draw(st.sampled_from(["99.5", "100", "100.7"]))), "0.01", ts=k)
            for k in range(draw(st.integers(0, 3)))
        ]
        status = draw(st.sampled_from(STATUSES))
        venue_order_id = draw(st.sampled_from([None, "v"]))
        kind = dict(role="slice", parent_order_id="o0") if child else {}
        kind["type"] = "twap" if n == 0 else "market"
        out.append(order(oid, status, fills, venue_order_id=venue_order_id, **kind))
    return out


def _state(book: QualityBook) -> bytes:
    return msgspec.json.encode(book)


@settings(max_examples=100, deadline=None)
@given(events(), st.integers(0, 40), st.integers(1, 4))
def test_any_sequence_replays_the_same_is_bounded_and_alerts_once(evs, cut, kept):
    book = QualityBook(max_rows=kept, max_pending=kept)
    alerted = []
    for e in evs:
        hit = book.fold(e, D(30))
        if hit is not None:
            alerted.append(hit.order_id)
        assert len(book.rows) <= kept and len(book.pending) <= kept
        assert all(r.order_id not in ("o5", "o6", "o7") for r in book.rows.values())  # children never rows
    assert len(alerted) == len(set(alerted))  # once per order
    # each event twice (a redelivery): the same rows
    twice = QualityBook(max_rows=kept, max_pending=kept)
    for e in evs:
        twice.fold(e, D(30))
        twice.fold(e, D(30))
    assert _state(twice) == _state(book)
    # a snapshot anywhere, decoded, then the rest: the same rows
    cut = min(cut, len(evs))
    first = QualityBook(max_rows=kept, max_pending=kept)
    for e in evs[:cut]:
        first.fold(e, D(30))
    restored = msgspec.json.decode(_state(first), type=QualityBook)
    for e in evs[cut:]:
        restored.fold(e, D(30))
    assert _state(restored) == _state(book)
    for r in book.rows.values():  # each fill once, and what the figures say is what the fills say
        assert r.quality.filled_quantity == sum((f.quantity for f in r.fills.values()), D(0))
