"""Regressions found in review of the ledger maths."""

from __future__ import annotations

from decimal import Decimal as D

from domain.ledger import Ledger
from tests.helpers import fill


def books_balance(ledger: Ledger, mark: D) -> D:
    """cash + positions at mark - (initial + realized + unrealized): zero when the books balance."""
    pos = ledger.positions["BTC_USDT"]
    cash = ledger.balance("USDT").total
    return cash + pos.quantity * mark - (ledger.initial_balance + ledger.realized_pnl + pos.unrealized(mark))


def test_a_buy_that_only_just_covers_a_short_pays_its_base_fee_once():
    ledger = Ledger("USDT", D(10000))
    ledger.apply_fill(fill("s", "sell", "1", "100"))
    # buy 1.0001 with a 0.001 BTC fee: 1 closes the short, the fee's closing share (0.00099990...) is more
    # than the 0.0001 left over, so the position ends short 1 - 1.0001 + 0.001 = 0.0009
    ledger.apply_fill(fill("b", "buy", "1.0001", "100", "0.001", fee_currency="BTC"))
    pos = ledger.positions["BTC_USDT"]
    assert pos.quantity == D("-0.0009") == ledger.balance("BTC").total
    assert ledger.realized_pnl == D("-0.1000")  # the fee's value, once: 0.001 x 100
    for mark in (D(90), D(100), D(123)):
        assert abs(books_balance(ledger, mark)) < D("1e-20")


def test_a_fill_booked_before_its_order_event_releases_the_lock_it_spends():
    from schemas.messages import Order, OrderStatus

    ledger = Ledger("USDT", D(1000))
    order = Order(
        order_id="O1",
        client_order_id="c",
        pair="BTC_USDT",
        side="buy",
        type="limit",
        quantity=D(9),
        price=D(100),
        status=OrderStatus.ACCEPTED,
    )
    ledger.apply_order(order)
    assert ledger.balance("USDT").available == D(100)
    f = fill("f1", "buy", "9", "100")
    f.order_id, f.order_filled_quantity, f.order_complete = "O1", D(9), True
    ledger.apply_fill(f)  # the order event saying "filled" has not come yet
    assert ledger.balance("USDT").locked == 0 and ledger.negative() == []
    ledger.apply_order(order)  # a late, older event of the order does not lock again what was spent
    assert ledger.balance("USDT").locked == 0
