"""Ledger.selling (issue 22): the working sells' locks summed per currency, kept in step by ``_set_lock``, equal
the walk over every lock after every step; ``breaches`` with shorts allowed reads it instead of walking the locks
(it ran after every fill and order event: quadratic once many orders worked)."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import Ledger
from schemas.messages import OrderStatus
from tests.helpers import fill
from tests.unit.test_valuation_fast import Books, adjusts, amounts, cancels, fills, order, orders

order_fills = st.tuples(st.just("order_fill"), st.integers(0, 5), amounts, st.booleans())


def _walked(led: Ledger) -> dict[str, D]:
    out: dict[str, D] = {}
    for lock in led.locks.values():
        if lock.sell:
            out[lock.currency] = out.get(lock.currency, D(0)) + lock.amount
    return {c: v for c, v in out.items() if v}


@settings(max_examples=200, deadline=None)
@given(script=st.lists(st.one_of(orders, orders, cancels, fills, adjusts, order_fills), max_size=40))
def test_selling_is_always_the_walk(script: list) -> None:  # type: ignore[type-arg]
    led = Ledger("USDT", D(100_000))
    led.selling()  # kept in step from the start
    books = Books(led)
    n = 0
    for s in script:
        if s[0] == "order_fill":
            _, k, qty, complete = s
            n += 1
            o = order(f"o{k}", "BTC_USDT", "sell", D(1), OrderStatus.ACCEPTED)
            f = fill(f"of{n}", "sell", str(qty), "10.5", ts=n)
            led.apply_fill(msgspec.structs.replace(f, order_id=o.order_id, client_order_id=o.client_order_id,
                                                   order_complete=complete))  # fmt: skip
        else:
            books.step(s)
        assert {c: v for c, v in led.selling().items() if v} == _walked(led)
        fresh = Ledger("USDT", D(0))
        fresh.locks = dict(led.locks)  # a ledger read back (a snapshot): worked out from its locks when asked
        assert {c: v for c, v in fresh.selling().items() if v} == _walked(led)
