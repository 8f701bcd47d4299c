"""Every sizing method against hand-computed numbers."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from domain.sizing import (
    SizingError,
    fixed_fractional,
    fixed_notional_sizing,
    fixed_quantity,
    kelly,
    kelly_fraction,
    round_down,
    volatility,
    volatility_scaled,
)


def test_round_down_never_rounds_up():
    assert round_down(D("1.23456789999")) == D("1.23456789")
    assert round_down(D("0.0999"), D("0.01")) == D("0.09")
    assert round_down(D("7"), D("5")) == D("5")


def test_fixed_quantity():
    s = fixed_quantity(D("0.1234"), D("100"), D("0.001"))
    assert (s.quantity, s.risk_amount, s.method) == (D("0.123"), D("12.300"), "fixed_quantity")


def test_fixed_notional():
    # 2% of 50,000 = 1,000 at 60,000 -> 0.01666... -> 0.01666 on a 0.00001 step
    s = fixed_notional_sizing(D("50000"), D("0.02"), D("60000"), D("0.00001"))
    assert (s.quantity, s.risk_amount) == (D("0.01666"), D("999.60000"))


def test_fixed_fractional_risks_exactly_the_fraction_over_the_stop():
    # 1% of 50,000 = 500 risked over a 100 -> 95 stop (distance 5): 100 units, 500 at risk
    s = fixed_fractional(D("50000"), D("0.01"), D("100"), D("95"))
    assert (s.quantity, s.risk_amount, s.method) == (D("100"), D("500"), "fixed_fractional")
    with pytest.raises(SizingError):
        fixed_fractional(D("50000"), D("0.01"), D("100"), D("100"))


def test_kelly_fraction_and_sizing():
    # p = 0.6, b = 2: f* = 0.6 - 0.4 / 2 = 0.4; half Kelly 0.2 (under the 0.25 cap)
    assert kelly_fraction(D("0.6"), D("2")) == D("0.4")
    s = kelly(D("10000"), D("0.6"), D("2"), D("50"))
    assert (s.quantity, s.risk_amount, s.method) == (D("40"), D("2000"), "kelly_criterion")  # 2,000 / 50
    capped = kelly(D("10000"), D("0.9"), D("3"), D("50"))  # f* = 0.8667, half 0.433 -> cap 0.25 -> 2,500 / 50
    assert capped.quantity == D("50")
    with_stop = kelly(D("10000"), D("0.6"), D("2"), D("50"), stop=D("48"))
    assert with_stop.risk_amount == D("80")  # 40 units x 2
    no_edge = kelly(D("10000"), D("0.3"), D("1"), D("50"))  # f* = 0.3 - 0.7 = -0.4 -> nothing
    assert no_edge.quantity == D(0)


def test_volatility_and_volatility_scaled():
    # returns +10%, -10%: mean 0, sample variance (0.01 + 0.01) / 1 = 0.02 -> sigma = sqrt(0.02)
    assert volatility([D(100), D(110), D(99)]) == D("0.02").sqrt()
    assert volatility([D(100), D(101)]) is None
    # 2% of 10,000 = 200 over a 2 x 0.01 x 100 = 2 stop distance: 100 units
    s = volatility_scaled(D("10000"), D("0.02"), D("100"), D("0.01"))
    assert (s.quantity, s.risk_amount, s.method) == (D("100"), D("200.00"), "volatility_scaled")


@pytest.mark.parametrize("bad", [D(0), D(-1), D("NaN")])
def test_non_positive_inputs_are_refused(bad):
    with pytest.raises(SizingError):
        fixed_quantity(bad, D(1))
    with pytest.raises(SizingError):
        volatility_scaled(D(1), D("0.01"), D(1), bad)
