"""domain.working.WorkingOrders: the per-pair sum kept in step equals the sum over the working orders, for every
sequence of changes (issue 22: the risk gate reads it at each check instead of walking every working order)."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from domain.working import Working, WorkingOrders

PAIRS = ("BTC_USDT", "ETH_USDT", "ETH_BTC")
qty = st.decimals(min_value=D("0"), max_value=D("1000"), places=8, allow_nan=False, allow_infinity=False)
oid = st.sampled_from([f"o{i}" for i in range(8)])
put = st.tuples(st.just("put"), oid, st.sampled_from(PAIRS), st.sampled_from((1, -1)), qty, qty, qty)
pop = st.tuples(st.just("pop"), oid)
fill = st.tuples(st.just("fill"), oid, qty)


def _walked(w: WorkingOrders) -> dict[str, D]:
    out: dict[str, D] = {}
    for x in w.values():
        out[x.pair] = out.get(x.pair, D(0)) + x.sign * x.left
    return {p: v for p, v in out.items() if v}


@given(st.lists(st.one_of(put, pop, fill), max_size=60))
def test_the_sum_per_pair_is_always_the_walk(ops: list[tuple]) -> None:
    w = WorkingOrders()
    for op in ops:
        if op[0] == "put":
            _, o, pair, sign, q, fe, ff = op
            w.put(o, Working(pair, sign, q, fe, ff))
        elif op[0] == "pop":
            w.pop(op[1])
        else:
            w.add_fill(op[1], op[2])
        assert w.per_pair == _walked(w)
        assert all(x.left > 0 for x in w.values())  # nothing kept with nothing left


def test_a_fill_that_completes_an_order_drops_it() -> None:
    w = WorkingOrders()
    w.put("a", Working("BTC_USDT", 1, D("2"), D("0"), D("0")))
    w.put("b", Working("BTC_USDT", -1, D("0.5"), D("0"), D("0")))
    assert w.per_pair == {"BTC_USDT": D("1.5")}
    assert w.add_fill("a", D("2")) and "a" not in w
    assert w.per_pair == {"BTC_USDT": D("-0.5")}
    assert not w.add_fill("zz", D("1"))
    w.put("b", Working("BTC_USDT", -1, D("0.5"), D("0.5"), D("0")))  # its event says filled: not kept
    assert w.per_pair == {} and len(w) == 0
