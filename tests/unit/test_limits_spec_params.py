"""The enhanced-execution spec's risk parameters (issue 18) as pure limits and conversions.

- ``minAccountBalance`` = MIN_ACCOUNT_BALANCE (domain.limits.min_balance_denial): an opening order is refused
  when the equity right after it (its cost against the mark and its fee off) would be below the floor;
  exactly at the floor passes; orders that reduce a position always pass.
- ``maxLeverage`` = MAX_TOTAL_EXPOSURE: gross exposure / equity (no second limit).
- the spec's names in PUT /api/risk/config (gateway.risk.risk_limits): riskPerTrade percent -> fraction, the
  aliases, the USD amounts refused with the field named.
"""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.limits import Exposure, Intent, Limits, check_limits, equity_after
from gateway.problems import ApiError
from gateway.risk import ConfigBody, risk_limits

PAIR, BASE, QUOTE = "BTC_USDT", "BTC", "USDT"
CROSS = "ETH_BTC"


def limits(**kw: object) -> Limits:
    args: dict[str, object] = {"max_position_fraction": D("1000"), "max_daily_loss": D("0.5")}
    args.update(kw)
    return Limits(**args)  # type: ignore[arg-type]


def exposure(equity: str = "10000", **kw: object) -> Exposure:
    args: dict[str, object] = {
        "equity": D(equity),
        "day_start_equity": D(equity),
        "peak_equity": D(equity),
        "available": {QUOTE: D("1000000"), BASE: D("1000"), "ETH": D("1000")},
        "marks": {PAIR: D("100")},
    }
    args.update(kw)
    return Exposure(**args)  # type: ignore[arg-type]


def intent(side: str = "buy", quantity: str = "10", price: str = "100", fee: str = "0", **kw: object) -> Intent:
    return Intent(PAIR, side, D(quantity), D(price), None, QUOTE, BASE, fee_rate=D(fee), **kw)  # type: ignore[arg-type]


def floor(value: str) -> Limits:
    return limits(min_account_balance=D(value))


# -- MIN_ACCOUNT_BALANCE at its boundary ------------------------------------------------------------------


def test_an_order_at_the_mark_keeps_the_equity_exactly_at_the_floor_and_passes():
    # 10 @ 100 at the mark 100, no fee: the equity stays 10000
    assert check_limits(intent(), exposure(), floor("10000"), "ACTIVE", None) is None


def test_one_cent_over_the_equity_is_denied_with_no_field_when_already_below():
    d = check_limits(intent(), exposure(), floor("10000.01"), "ACTIVE", None)
    assert d is not None and (d.code, d.field) == ("MIN_ACCOUNT_BALANCE", None), d
    assert "10000.01" in d.reason and "only orders that reduce" in d.reason


@pytest.mark.parametrize(
    ("side", "price", "fee", "after"),
    [
        ("buy", "101", "0", "9990"),  # pays 1 over the mark on 10
        ("sell", "99", "0", "9990"),  # gets 1 under the mark on 10
        ("buy", "100", "0.001", "9999"),  # the fee: 10 x 100 x 0.001
        ("buy", "101", "0.001", "9988.99"),  # both: 10 + 1.01
    ],
)
def test_the_cost_of_the_order_counts(side, price, fee, after):
    i = intent(side, "10", price, fee)
    assert equity_after(i, exposure(), D("100"), D(1)) == D(after)
    assert check_limits(i, exposure(), floor(after), "ACTIVE", None) is None  # exactly at the floor
    d = check_limits(i, exposure(), floor(str(D(after) + D("0.01"))), "ACTIVE", None)
    assert d is not None and (d.code, d.field) == ("MIN_ACCOUNT_BALANCE", "quantity"), d  # the size is at fault
    assert f"would be {D(after).quantize(D('0.0001'))} USDT" in d.reason, d.reason


def test_a_price_better_than_the_mark_is_no_gain():
    # a limit buy far under the mark does not make an account under the floor rich enough to open
    i = intent("buy", "10", "50")
    assert equity_after(i, exposure("990"), D("100"), D(1)) == D("990")
    d = check_limits(i, exposure("990"), floor("1000"), "ACTIVE", None)
    assert d is not None and d.code == "MIN_ACCOUNT_BALANCE"


@pytest.mark.parametrize(("side", "held"), [("sell", "10"), ("buy", "-10")])
def test_reducing_orders_pass_under_the_floor(side, held):
    x = exposure("500", positions={PAIR: D(held)})
    assert check_limits(intent(side, "10"), x, floor("1000"), "ACTIVE", None) is None
    # the same order on a flat book opens a position: refused
    d = check_limits(intent(side, "10"), exposure("500"), floor("1000"), "ACTIVE", None)
    assert d is not None and (d.code, d.field) == ("MIN_ACCOUNT_BALANCE", None), d


def test_a_sell_that_opens_a_short_is_refused_under_the_floor():
    lim = limits(min_account_balance=D("1000"), allow_short=True)
    d = check_limits(intent("sell", "10"), exposure("500"), lim, "ACTIVE", None)
    assert d is not None and d.code == "MIN_ACCOUNT_BALANCE", d


def test_off_when_not_set():
    assert check_limits(intent(), exposure("1"), limits(), "ACTIVE", None) is None


def test_other_quote_currency_is_converted():
    # ETH_BTC: 10 ETH @ 0.051 BTC, mark 0.05: 0.01 BTC over the mark at 60000 USDT/BTC = 600 USDT off the equity
    i = Intent(CROSS, "buy", D("10"), D("0.051"), None, "BTC", "ETH")
    x = exposure(marks={CROSS: D("0.05")}, rates={CROSS: D("60000")}, available={"BTC": D("10")})
    assert equity_after(i, x, D("0.05"), D("60000")) == D("9400")
    assert check_limits(i, x, floor("9400"), "ACTIVE", None) is None
    d = check_limits(i, x, floor("9400.01"), "ACTIVE", None)
    assert d is not None and d.code == "MIN_ACCOUNT_BALANCE"


# -- orders that wait for a trigger -------------------------------------------------------------------------
# A stop (or take-profit) fills when the market reaches its trigger, at about the trigger: the distance from
# today's mark to the trigger is not lost when it is placed. What it costs at once against the market it fills
# in is its fee, and for a stop-limit the part of its limit beyond the trigger (a buy stop 110 limit 112 may pay
# 2 over the price that triggered it; a sell stop 90 limit 88 may get 2 under it).


def triggered(side: str, stop: str, limit: str | None = None, fee: str = "0") -> Intent:
    price = D(limit) if limit is not None else D(stop)  # the expected price, as the risk-gate's _intent sets it
    lim = D(limit) if limit is not None else None
    return Intent(PAIR, side, D("10"), price, lim, QUOTE, BASE, fee_rate=D(fee), trigger=D(stop))


@pytest.mark.parametrize(
    ("i", "after"),
    [
        (triggered("buy", "110"), "10000"),  # a buy stop 10 over the mark: nothing lost now (was 9900)
        (triggered("sell", "90"), "10000"),  # a sell stop 10 under the mark (was 9900)
        (triggered("buy", "110", fee="0.001"), "9998.9"),  # only its fee: 10 x 110 x 0.001
        (triggered("sell", "90", fee="0.001"), "9999.1"),  # 10 x 90 x 0.001
        (triggered("buy", "90"), "10000"),  # a take-profit buy under the mark
        (triggered("buy", "110", "112"), "9980"),  # stop-limit buy: 2 over the trigger on 10 (was 9880)
        (triggered("buy", "110", "109"), "10000"),  # a limit under its trigger: never pays more than it
        (triggered("sell", "90", "88"), "9980"),  # stop-limit sell: 2 under the trigger on 10 (was 9880)
        (triggered("sell", "90", "91"), "10000"),  # a limit over its trigger (was 9910)
        (triggered("buy", "110", "112", "0.001"), "9978.88"),  # 20 and the fee on 10 x 112
    ],
)
def test_an_order_with_a_trigger_costs_its_fee_and_its_limit_beyond_the_trigger(i, after):
    assert equity_after(i, exposure(), D("100"), D(1)) == D(after)
    assert check_limits(i, exposure(), floor(after), "ACTIVE", None) is None  # exactly at the floor
    d = check_limits(i, exposure(), floor(str(D(after) + D("0.01"))), "ACTIVE", None)
    at_fault = "quantity" if D(after) < D("10000") else None  # (costing nothing: the equity itself is under)
    assert d is not None and (d.code, d.field) == ("MIN_ACCOUNT_BALANCE", at_fault), d


def test_a_trigger_in_another_quote_currency_is_converted():
    # ETH_BTC stop-limit buy: trigger 0.051, limit 0.052 BTC: 0.001 BTC x 10 at 60000 USDT/BTC = 600 USDT
    i = Intent(CROSS, "buy", D("10"), D("0.052"), D("0.052"), "BTC", "ETH", trigger=D("0.051"))
    x = exposure(marks={CROSS: D("0.05")}, rates={CROSS: D("60000")}, available={"BTC": D("10")})
    assert equity_after(i, x, D("0.05"), D("60000")) == D("9400")


# -- for every order: the equity after its fill, computed from the books ------------------------------------


@hsettings(max_examples=400, deadline=None)
@given(
    equity=st.decimals("1", "100000", places=2),
    qty=st.decimals("0.001", "50", places=3),
    price=st.decimals("50", "150", places=2),
    fee=st.sampled_from([D(0), D("0.001"), D("0.0025")]),
    side=st.sampled_from(["buy", "sell"]),
    held=st.decimals("-20", "20", places=3),
    bar=st.decimals("0", "100000", places=2),
    rate=st.sampled_from([D(1), D("0.9"), D("2.5")]),
)
def test_min_account_balance_denies_exactly_the_opening_orders_whose_fill_leaves_the_equity_under_it(
    equity, qty, price, fee, side, held, bar, rate
):
    """The equity after the fill is computed here from the books, not with the code under test: the account
    is cash (in the pair's quote currency) and ``held`` at the mark 100, worth ``equity`` in BASE_CURRENCY at
    ``rate``. The fill moves cash and position, its fee comes off the cash, the position is revalued at the
    mark, the whole converted; a fill better than the mark is not counted as a gain (the equity before, less
    the fee). An order that opens exposure is denied MIN_ACCOUNT_BALANCE if and only if that equity is under
    the floor; one that reduces the position never is."""
    mark = D("100")
    cash = equity / rate - held * mark  # in the quote currency
    signed = qty if side == "buy" else -qty
    fee_paid = qty * price * fee
    cash_after = cash - signed * price - fee_paid
    held_after = held + signed
    after_fill = (cash_after + held_after * mark) * rate
    expected = min(after_fill, equity - fee_paid * rate)
    # ``equity / rate`` above is rounded to 28 digits (rate 0.9): within that rounding of the floor, this oracle
    # cannot tell which side the exact figure is on (equity 100.00 at rate 0.9 comes back as 99.999...9)
    assume(abs(expected - bar) > D("1e-20"))

    x = exposure(str(equity), positions={PAIR: held}, rates={PAIR: rate})
    i = intent(side, str(qty), str(price), str(fee))
    d = check_limits(i, x, limits(min_account_balance=bar, allow_short=True), "ACTIVE", None)
    floor_hit = d is not None and d.code == "MIN_ACCOUNT_BALANCE"
    reducing = abs(held_after) <= abs(held) and (held_after == 0 or (held_after > 0) == (held > 0))
    if reducing:
        assert not floor_hit, d
        return
    assert floor_hit == (expected < bar), (expected, bar, d)
    if floor_hit:
        assert d is not None and d.field == (None if equity < bar else "quantity"), d


# -- maxLeverage is MAX_TOTAL_EXPOSURE ---------------------------------------------------------------------


def test_max_total_exposure_is_gross_exposure_over_equity():
    # long 30 ETH @ 100 and a short of 20 BTC-units @ 100 elsewhere: gross 5000 on equity 10000 = leverage 0.5;
    # a buy of 10 more @ 100 makes 0.6: passes at 0.6, denied at 0.5999
    eth = "ETH_USDT"
    x = exposure(
        positions={eth: D("30"), "SOL_USDT": D("-20")}, marks={PAIR: D("100"), eth: D("100"), "SOL_USDT": D("100")}
    )
    assert check_limits(intent("buy", "10"), x, limits(max_total_exposure=D("0.6")), "ACTIVE", None) is None
    d = check_limits(intent("buy", "10"), x, limits(max_total_exposure=D("0.5999")), "ACTIVE", None)
    assert d is not None and d.code == "MAX_TOTAL_EXPOSURE", d


# -- the spec's names in PUT /api/risk/config --------------------------------------------------------------


def body(**kw: object) -> ConfigBody:
    return msgspec.json.decode(msgspec.json.encode(kw), type=ConfigBody)


def test_risk_per_trade_is_a_percent_converted_to_the_fraction():
    assert risk_limits(body(riskPerTrade=1)).risk_per_trade == D("0.01")
    assert risk_limits(body(riskPerTrade="2.5")).risk_per_trade == D("0.025")
    assert risk_limits(body(riskPerTrade=100)).risk_per_trade == D(1)


def test_the_spec_names_map_onto_the_settings():
    r = risk_limits(
        body(maxLeverage=3, maxOrderSize=5000, minAccountBalance=1000, stopLossPercentage=2, takeProfitPercentage=4)
    )
    assert (r.max_total_exposure, r.max_order_notional, r.min_account_balance) == (D(3), D(5000), D(1000))
    assert (r.default_stop_loss_percent, r.default_take_profit_percent) == (D(2), D(4))
    assert r.risk_per_trade is None and r.max_position_size is None  # what is left out stays as it is


def test_two_names_of_one_limit_must_agree():
    assert risk_limits(body(maxLeverage=2, maxTotalExposure=2)).max_total_exposure == D(2)
    with pytest.raises(ApiError) as e:
        risk_limits(body(maxLeverage=3, maxTotalExposure=2))
    assert (e.value.status, e.value.field) == (422, "maxLeverage")
    with pytest.raises(ApiError) as e:
        risk_limits(body(maxOrderSize=1, maxOrderNotional=2))
    assert e.value.field == "maxOrderSize"


@pytest.mark.parametrize(("field", "value"), [("maxDailyLoss", 1000), ("maxPositionSize", 10000)])
def test_the_spec_s_usd_amounts_are_refused_naming_the_field(field, value):
    assert risk_limits(body(**{field: 1})) is not None  # 1 = 100 %: the top of the range
    with pytest.raises(ApiError) as e:
        risk_limits(body(**{field: value}))
    assert (e.value.status, e.value.field) == (422, field)
    assert "fraction" in e.value.detail and "USD" in e.value.detail


def test_max_correlated_positions_is_refused_with_the_reason():
    with pytest.raises(ApiError) as e:
        risk_limits(body(maxCorrelatedPositions=50000))
    assert (e.value.status, e.value.field, e.value.code) == (422, "maxCorrelatedPositions", "UNSUPPORTED_FIELD")
    assert "CORRELATION_GROUPS" in e.value.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxLeverage", 0),
        ("maxLeverage", 101),
        ("maxOrderSize", -1),
        ("minAccountBalance", -1),
        ("stopLossPercentage", 0),
        ("stopLossPercentage", 100),
        ("takeProfitPercentage", -1),
        ("riskPerTrade", 0),
        ("riskPerTrade", "100.01"),
    ],
)
def test_the_spec_names_are_bounded_as_their_settings_and_named_in_the_problem(field, value):
    with pytest.raises(ApiError) as e:
        risk_limits(body(**{field: value}))
    assert (e.value.status, e.value.field) == (422, field), e.value.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [("maxLeverage", 100), ("maxOrderSize", 0), ("minAccountBalance", 0), ("stopLossPercentage", 99)],
)
def test_the_spec_names_at_their_bounds_pass(field, value):
    assert risk_limits(body(**{field: value})) is not None
