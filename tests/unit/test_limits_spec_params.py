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
from hypothesis import given
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
    d = check_limits(
        intent(side, "10"),
        exposure("500"),
        floor(
            "1000",
        ),
        "ACTIVE",
        None,
    )
    assert d is not None and d.code in ("MIN_ACCOUNT_BALANCE", "INSUFFICIENT_BALANCE")


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


@hsettings(max_examples=300, deadline=None)
@given(
    equity=st.decimals("1", "100000", places=2),
    qty=st.decimals("0.001", "50", places=3),
    price=st.decimals("50", "150", places=2),
    fee=st.sampled_from([D(0), D("0.001"), D("0.0025")]),
    side=st.sampled_from(["buy", "sell"]),
    held=st.decimals("-20", "20", places=3),
    bar=st.decimals("0", "100000", places=2),
)
def test_an_approved_opening_order_never_leaves_the_equity_under_the_floor(equity, qty, price, fee, side, held, bar):
    """For every order: approved and opening => the equity after it is at least the floor; a denial for
    MIN_ACCOUNT_BALANCE never hits an order that reduces the position."""
    x = exposure(str(equity), positions={PAIR: held})
    i = intent(side, str(qty), str(price), str(fee))
    lim = limits(min_account_balance=bar, allow_short=True)
    d = check_limits(i, x, lim, "ACTIVE", None)
    after = held + (qty if side == "buy" else -qty)
    reducing = abs(after) <= abs(held) and (after == 0 or (after > 0) == (held > 0))
    if reducing:
        assert d is None or d.code != "MIN_ACCOUNT_BALANCE", d
    elif d is None:
        assert equity_after(i, x, D("100"), D(1)) >= bar
    if d is not None and d.code == "MIN_ACCOUNT_BALANCE":
        assert equity_after(i, x, D("100"), D(1)) < bar


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
