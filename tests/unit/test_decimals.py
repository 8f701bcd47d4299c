"""How decimals leave the service (issue 15): REST answers as JSON numbers in the shortest exact form
(``0``, ``0.1``, ``60162``), bus strings without exponent or negative zero. Exact: never through float."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.decimals import plain, shortest
from gateway.problems import rest_json
from schemas.messages import PortfolioSummary
from schemas.rest import Status

SHORTEST = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0E-8", "0"), ("-0E-8", "0"), ("-0.00", "0"), ("0.10000", "0.1"), ("60162", "60162"),
        ("6.0162E+4", "60162"), ("1E-8", "0.00000001"), ("-1.50", "-1.5"), ("1E+3", "1000"), ("100", "100"),
        ("123456789012345678.123456789000", "123456789012345678.123456789"),
    ],
)  # fmt: skip
def test_shortest_examples(value, text):
    assert shortest(Decimal(value)) == text


@hsettings(max_examples=500, deadline=None, database=None)
@given(value=st.decimals(allow_nan=False, allow_infinity=False))
def test_shortest_is_exact_and_has_one_spelling_per_value(value):
    text = shortest(value)
    assert SHORTEST.match(text) and text != "-0", text
    assert Decimal(text) == value
    sign, digits, exponent = value.as_tuple()
    padded = Decimal((sign, (*digits, 0, 0), exponent - 2))  # the same value with two more zeros
    assert shortest(padded) == text  # equal values, one spelling


@hsettings(max_examples=500, deadline=None, database=None)
@given(value=st.decimals(allow_nan=False, allow_infinity=False))
def test_plain_is_exact_without_exponent_or_negative_zero(value):
    text = plain(value)
    assert Decimal(text) == value and "E" not in text
    assert text == "0" if value == 0 else re.match(r"^-?[0-9]+(\.[0-9]+)?$", text)


def test_a_rest_answer_writes_every_decimal_in_the_shortest_form_and_leaves_strings_alone():
    summary = PortfolioSummary(
        total_value=Decimal("60162.00000000"), total_cash=Decimal("0E-8"), total_positions=Decimal("-0E-8"),
        unrealized_pnl=Decimal("-0.00"), realized_pnl=Decimal("0.10000"), day_pnl=Decimal("1E-8"),
        fees_paid=Decimal("12.3400"), base_currency="0E-8",
    )  # fmt: skip
    raw = rest_json(summary)
    assert raw.startswith(
        b'{"totalValue":60162,"totalCash":0,"totalPositions":0,"unrealizedPnL":0,"realizedPnL":0.1,'
        b'"dayPnL":0.00000001,"feesPaid":12.34,"baseCurrency":"0E-8"'
    )  # (then the per-currency figures, empty here)
    assert json.loads(raw)["realizedPnL"] == 0.1


@hsettings(max_examples=300, deadline=None, database=None)
@given(values=st.lists(st.decimals(allow_nan=False, allow_infinity=False), min_size=1, max_size=8))
def test_rest_numbers_are_exact(values):
    raw = rest_json({"v": values, "s": [str(v) for v in values]})
    back = msgspec.json.Decoder(float_hook=Decimal).decode(raw)
    assert [Decimal(x) for x in back["v"]] == values
    assert back["s"] == [str(v) for v in values]  # strings untouched
    for literal in re.findall(rb"(?<=[\[,])[^,\]\"]+(?=[,\]])", raw.split(b'"s"')[0]):
        assert SHORTEST.match(literal.decode()), literal


def test_a_non_finite_decimal_leaves_as_null_not_invalid_json():
    assert json.loads(rest_json({"a": Decimal("NaN"), "b": Decimal("0.50")})) == {"a": None, "b": 0.5}


def test_status_limits_are_typed():
    status = Status(
        service="s", version="1", mode="paper", status="healthy", trading_state="ACTIVE", venue="paper",
        pairs=[], base_currency="USDT", bus_prefix="tbx", started_at=0, uptime_ms=0, actors={}, nats_url="nats://x",
        limits={"ALLOW_SHORT": False, "MAX_POSITION_SIZE": Decimal("0.250"), "MAX_ORDERS_PER_SECOND": 50},
    )  # fmt: skip
    limits = json.loads(rest_json(status))["limits"]
    assert limits == {"ALLOW_SHORT": False, "MAX_POSITION_SIZE": 0.25, "MAX_ORDERS_PER_SECOND": 50}


def test_an_absurd_exponent_keeps_it_instead_of_writing_megabytes_of_digits():
    from domain.decimals import MAX_PLAIN

    for text in ("1E+50000000", "1E-50000000", "-7.5E+999999999999999999"):
        d = Decimal(text)
        assert plain(d) == shortest(d) == str(d) and Decimal(plain(d)) == d
    edge = Decimal(10) ** (MAX_PLAIN - 1)
    assert plain(edge) == "1" + "0" * (MAX_PLAIN - 1)  # up to the bound: written out
    assert "E" not in shortest(Decimal(1).scaleb(-MAX_PLAIN))
    from bus.codec import encode

    assert len(encode({"v": Decimal("1E+50000000")})) < 100
