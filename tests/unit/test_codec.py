"""Unit tests of bus.codec: exact Decimals as strings, camelCase names, typed decoding, clear failures."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from bus.codec import DecodeFailure, decode, encode
from schemas.messages import (
    Book,
    Fill,
    FillRef,
    Order,
    OrderRequest,
    OrderStatus,
    RiskParameters,
    Signal,
)


def make_signal(**kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "pair": "BTC_USDT",
        "signal": "BUY",
        "confidence": Decimal("0.85"),
        "source": "ml-service",
        "strategy": "momentum",
        "signal_id": "sig-1",
        "price": Decimal("65000.5"),
        "stop_loss": Decimal("63000"),
        "take_profit": Decimal("70000.00"),
        "risk_parameters": RiskParameters(max_risk_percent=Decimal("2.5"), position_size_method="fixed"),
        "quantity": Decimal("0.00000001"),
        "timestamp": 1_700_000_000_000,
    }
    return Signal(**(fields | kw))


def make_book(**kw: Any) -> Book:
    fields: dict[str, Any] = {
        "pair": "ETH_USDT",
        "bids": [(Decimal("3000.1"), Decimal("1.5")), (Decimal("2999.99"), Decimal("0.00000001"))],
        "asks": [(Decimal("3000.2"), Decimal("2")), (Decimal("3001"), Decimal("123456789012345678.123456789"))],
        "ts": 1_700_000_000_123,
    }
    return Book(**(fields | kw))


def make_fill(**kw: Any) -> Fill:
    fields: dict[str, Any] = {
        "fill_id": "F1",
        "order_id": "O1",
        "client_order_id": "C1",
        "pair": "BTC_USDT",
        "side": "buy",
        "quantity": Decimal("0.1"),
        "price": Decimal("65000.12345678"),
        "fee": Decimal("0.0065000"),
        "fee_currency": "USDT",
        "liquidity": "taker",
        "venue": "paper",
        "timestamp": 1_700_000_000_456,
    }
    return Fill(**(fields | kw))


def make_order(**kw: Any) -> Order:
    fields: dict[str, Any] = {
        "order_id": "O1",
        "client_order_id": "C1",
        "pair": "BTC_USDT",
        "side": "sell",
        "type": "limit",
        "quantity": Decimal("0.3"),
        "status": OrderStatus.PARTIALLY_FILLED,
        "price": Decimal("65000"),
        "time_in_force": "IOC",
        "filled_quantity": Decimal("0.1"),
        "average_price": Decimal("65000"),
        "total_cost": Decimal("6500.0"),
        "fees": Decimal("6.5"),
        "fee_currency": "USDT",
        "venue_order_id": "V9",
        "version": 3,
        "created_at": 1,
        "updated_at": 2,
        "fills": [
            FillRef(
                fill_id="F1",
                quantity=Decimal("0.1"),
                price=Decimal("65000"),
                fee=Decimal("6.5"),
                fee_currency="USDT",
                liquidity="maker",
                timestamp=2,
            )
        ],
    }
    return Order(**(fields | kw))


def make_order_request(**kw: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "client_order_id": "C1",
        "pair": "BTC_USDT",
        "side": "buy",
        "quantity": Decimal("0.1"),
        "type": "stop_limit",
        "price": Decimal("123456789012345678.123456789"),
        "stop_price": Decimal("0.00000001"),
        "time_in_force": "GTD",
        "risk_check": False,
        "paper_trade": True,
        "signal_id": "sig-1",
        "ts": 5,
    }
    return OrderRequest(**(fields | kw))


MESSAGES = [make_signal(), make_book(), make_fill(), make_order(), make_order_request()]


def wire(msg: Any) -> dict[str, Any]:
    """The encoded message as plain JSON (Decimals stay the strings they are on the wire)."""
    return json.loads(encode(msg))


# ------------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_equals_the_original(msg):
    back = decode(encode(msg), type(msg))
    assert back == msg
    assert type(back) is type(msg)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_is_stable(msg):
    data = encode(msg)
    assert encode(decode(data, type(msg))) == data


def test_round_trip_keeps_types_of_nested_values():
    order = decode(encode(make_order()), Order)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert isinstance(order.fills[0], FillRef)
    assert type(order.fills[0].price) is Decimal
    book = decode(encode(make_book()), Book)
    assert book.bids[0] == (Decimal("3000.1"), Decimal("1.5"))
    assert isinstance(book.bids[0], tuple)
    signal = decode(encode(make_signal()), Signal)
    assert signal.risk_parameters == RiskParameters(max_risk_percent=Decimal("2.5"), position_size_method="fixed")


def test_order_defaults_survive_a_round_trip():
    order = Order(
        order_id="O2", client_order_id="C2", pair="BTC_USDT", side="buy", type="market", quantity=Decimal("1"),
        status=OrderStatus.INITIALIZED,
    )  # fmt: skip
    back = decode(encode(order), Order)
    assert back == order
    assert back.fills == []
    assert back.filled_quantity == Decimal(0)


# ------------------------------------------------------------------------------------------------------
# Decimal exactness
# ------------------------------------------------------------------------------------------------------
EXACT_DECIMALS = [
    Decimal("0.1"),
    Decimal("0.00000001"),
    Decimal("123456789012345678.123456789"),
    Decimal("0.10"),
    Decimal("-0.0000000000000000000000000001"),
    Decimal("1E+30"),
    Decimal("-0"),
    Decimal("99999999999999999999999999999999999999.99999999999999999999"),
]


def _written_as_is(value: Decimal) -> bool:
    """Not zero and written without an exponent by str(): the bus keeps exactly these digits."""
    return bool(value) and "E" not in str(value)


@pytest.mark.parametrize("value", EXACT_DECIMALS, ids=str)
def test_decimal_survives_exactly(value):
    back = decode(encode(make_fill(price=value, quantity=value, fee=value)), Fill)
    for got in (back.price, back.quantity, back.fee):
        assert type(got) is Decimal
        assert got == value
        if _written_as_is(value):
            assert got.as_tuple() == value.as_tuple()  # same digits, exponent and sign, not just equal


@pytest.mark.parametrize("value", EXACT_DECIMALS, ids=str)
def test_decimal_is_a_json_string_on_the_wire(value):
    on_wire = wire(make_fill(price=value))["price"]
    assert isinstance(on_wire, str)
    assert Decimal(on_wire) == value
    assert ("E" not in on_wire and not on_wire.startswith("-0")) or on_wire.startswith("-0.")
    if _written_as_is(value):
        assert Decimal(on_wire).as_tuple() == value.as_tuple()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0E-8", "0"), ("-0E-8", "0"), ("-0.00", "0"), ("-0", "0"), ("0E+3", "0"), ("0.000", "0"),
        ("1E-8", "0.00000001"), ("1.0E-7", "0.00000010"), ("1E+3", "1000"), ("-1.20E+5", "-120000"),
        ("0.50000000", "0.50000000"), ("60162", "60162"), ("-0.1", "-0.1"),
    ],
)  # fmt: skip
def test_bus_decimal_strings_have_no_exponent_and_no_negative_zero(value, text):
    """Issue 15: what the ledger rounds left as 0E-8 / -0.00 on the bus; exponents for tiny amounts."""
    fill = make_fill(price=Decimal(value), fee=Decimal(value), client_order_id="0E-8")
    on_wire = wire(fill)
    assert (on_wire["price"], on_wire["fee"]) == (text, text)
    assert on_wire["clientOrderId"] == "0E-8"  # a string that only looks like a decimal is left alone
    assert decode(encode(fill), Fill) == fill


@hsettings(max_examples=300, deadline=None, database=None)
@given(value=st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_on_the_bus_is_plain_and_exact(value):
    on_wire = wire(make_fill(price=value))["price"]
    assert Decimal(on_wire) == value
    assert "E" not in on_wire and "e" not in on_wire
    assert on_wire == "0" if value == 0 else not on_wire.startswith("-0") or on_wire.startswith("-0.")


def test_raw_bytes_hold_decimals_as_strings():
    data = encode(make_fill(quantity=Decimal("0.1"), price=Decimal("123456789012345678.123456789")))
    assert b'"quantity":"0.1"' in data
    assert b'"price":"123456789012345678.123456789"' in data
    assert b'"quantity":0.1' not in data


def test_book_levels_are_string_pairs_on_the_wire():
    assert wire(make_book())["bids"][0] == ["3000.1", "1.5"]


def test_json_number_decodes_to_the_exact_decimal():
    data = (
        b'{"clientOrderId":"C1","pair":"BTC_USDT","side":"buy","quantity":0.1,'
        b'"price":123456789012345678.123456789,"stopPrice":1e-8}'
    )
    req = decode(data, OrderRequest)
    assert req.quantity == Decimal("0.1")
    assert str(req.quantity) == "0.1"  # not 0.1000000000000000055511151231257827...
    assert req.price == Decimal("123456789012345678.123456789")
    assert req.stop_price == Decimal("1E-8")


def test_json_number_in_a_fill_decodes_exactly():
    data = (
        b'{"fillId":"F1","orderId":"O1","clientOrderId":"C1","pair":"BTC_USDT","side":"buy","quantity":0.1,'
        b'"price":65000.12,"fee":0.0001,"feeCurrency":"USDT","liquidity":"taker","venue":"paper","timestamp":1}'
    )
    fill = decode(data, Fill)
    assert fill.quantity == Decimal("0.1")
    assert fill.price == Decimal("65000.12")
    assert fill.fee == Decimal("0.0001")
    assert fill.quantity + Decimal("0.2") == Decimal("0.3")


@hsettings(max_examples=300, deadline=None, database=None)
@given(
    price=st.decimals(allow_nan=False, allow_infinity=False),
    quantity=st.decimals(allow_nan=False, allow_infinity=False),
)
def test_any_finite_decimal_round_trips_exactly_in_a_fill(price, quantity):
    fill = make_fill(price=price, quantity=quantity)
    data = encode(fill)
    back = decode(data, Fill)
    assert back == fill
    for got, sent in ((back.price, price), (back.quantity, quantity)):
        if _written_as_is(sent):
            assert got.as_tuple() == sent.as_tuple()
    assert isinstance(json.loads(data)["price"], str)


# ------------------------------------------------------------------------------------------------------
# camelCase on the wire
# ------------------------------------------------------------------------------------------------------
def test_fill_fields_are_camel_case():
    keys = set(wire(make_fill(order_complete=True)))
    assert {"fillId", "orderId", "clientOrderId", "feeCurrency", "orderComplete"} <= keys
    assert not {k for k in keys if "_" in k}


def test_signal_fields_are_camel_case():
    on_wire = wire(make_signal())
    assert on_wire["signalId"] == "sig-1"
    assert on_wire["stopLoss"] == "63000"
    assert on_wire["takeProfit"] == "70000.00"
    assert on_wire["riskParameters"] == {"maxRiskPercent": "2.5", "positionSizeMethod": "fixed"}
    assert "signal_id" not in on_wire
    assert "stop_loss" not in on_wire


def test_order_and_request_fields_are_camel_case():
    order = wire(make_order())
    assert order["clientOrderId"] == "C1"
    assert order["filledQuantity"] == "0.1"
    assert order["fills"][0]["feeCurrency"] == "USDT"
    assert order["status"] == "partially_filled"
    request = wire(make_order_request())
    assert request["stopPrice"] == "0.00000001"
    assert request["timeInForce"] == "GTD"
    assert request["riskCheck"] is False


def test_snake_case_keys_are_not_the_wire_names():
    data = b'{"client_order_id":"C1","pair":"BTC_USDT","side":"buy","quantity":"1"}'
    with pytest.raises(DecodeFailure) as info:
        decode(data, OrderRequest)
    assert "clientOrderId" in info.value.reason


# ------------------------------------------------------------------------------------------------------
# Public contracts are forward compatible
# ------------------------------------------------------------------------------------------------------
README_SIGNAL = b"""{
  "pair": "BTC_USDT",
  "signal": "BUY",
  "confidence": 0.85,
  "source": "ml-service",
  "strategy": "momentum",
  "price": "65000.50",
  "stopLoss": "63000",
  "takeProfit": "70000",
  "riskParameters": {"maxRiskPercent": 2, "positionSizeMethod": "fixed"}
}"""


def test_plain_json_signal_decodes():
    s = decode(README_SIGNAL, Signal)
    assert s == Signal(
        pair="BTC_USDT",
        signal="BUY",
        confidence=Decimal("0.85"),
        source="ml-service",
        strategy="momentum",
        price=Decimal("65000.50"),
        stop_loss=Decimal("63000"),
        take_profit=Decimal("70000"),
        risk_parameters=RiskParameters(max_risk_percent=Decimal("2"), position_size_method="fixed"),
    )
    assert s.signal_id is None
    assert s.timestamp is None


def test_minimal_signal_gets_defaults():
    s = decode(b'{"pair":"ETH_USDT","signal":"HOLD","confidence":"0"}', Signal)
    assert s.source == "unknown"
    assert s.strategy == ""
    assert s.confidence == Decimal(0)


def test_signal_accepts_unknown_fields():
    data = (
        b'{"pair":"BTC_USDT","signal":"SELL","confidence":"0.5","futureField":{"nested":[1,2,{"x":null}]},'
        b'"anotherOne":"x","riskParameters":{"maxRiskPercent":"1","newKnob":true}}'
    )
    s = decode(data, Signal)
    assert s.signal == "SELL"
    assert s.confidence == Decimal("0.5")
    assert s.risk_parameters == RiskParameters(max_risk_percent=Decimal("1"))


@pytest.mark.parametrize("msg", [make_book(), make_fill()], ids=lambda m: type(m).__name__)
def test_book_and_fill_accept_unknown_fields(msg):
    on_wire = wire(msg) | {"addedLater": {"a": 1}, "venueExtra": "x"}
    assert decode(json.dumps(on_wire).encode(), type(msg)) == msg


# ------------------------------------------------------------------------------------------------------
# Failures
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"",
        b"not json",
        b'{"pair":}',
        b'{"pair":"BTC_USDT",}',
        b"\xff\xfe",
        b'{"pair":"BTC_USDT","signal":"BUY","confidence":"1"} x',
    ],
)
def test_broken_json_is_malformed(data):
    with pytest.raises(DecodeFailure) as info:
        decode(data, Signal)
    assert info.value.reason.startswith("malformed JSON")
    assert str(info.value) == info.value.reason
    assert isinstance(info.value, ValueError)


def test_a_signal_value_outside_the_actions_decodes_and_is_rejected_by_signal_intake_with_a_result():
    # any case is taken (buy, Buy); a value that is none of them gets a rejected result naming the field,
    # so it is not a decoding failure (which has no result, only a dead letter)
    assert decode(b'{"pair":"BTC_USDT","signal":"MAYBE","confidence":"0.5"}', Signal).signal == "MAYBE"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"pair":"BTC_USDT","signal":"BUY","confidence":true}', "$.confidence"),
        (b'{"pair":"BTC_USDT","signal":"BUY","confidence":"high"}', "$.confidence"),
        (b'{"pair":"BTC_USDT","signal":"BUY","confidence":[0.5]}', "$.confidence"),
        (b'{"pair":"BTC_USDT","signal":5,"confidence":"0.5"}', "$.signal"),
        (b'{"pair":42,"signal":"BUY","confidence":"0.5"}', "$.pair"),
        (b'{"pair":"BTC_USDT","signal":"BUY","confidence":"0.5","timestamp":"soon"}', "$.timestamp"),
        (
            b'{"pair":"BTC_USDT","signal":"BUY","confidence":"0.5","riskParameters":{"maxRiskPercent":[]}}',
            "$.riskParameters.maxRiskPercent",
        ),
    ],
)
def test_wrong_type_names_the_field(data, field):
    with pytest.raises(DecodeFailure) as info:
        decode(data, Signal)
    assert field in info.value.reason
    assert "Signal" in info.value.reason
    assert not info.value.reason.startswith("malformed JSON")


@pytest.mark.parametrize("missing", ["pair", "signal", "confidence"])
def test_missing_required_field_is_named(missing):
    body = {"pair": "BTC_USDT", "signal": "BUY", "confidence": "0.5"}
    del body[missing]
    with pytest.raises(DecodeFailure) as info:
        decode(json.dumps(body).encode(), Signal)
    assert f"`{missing}`" in info.value.reason
    assert "missing required field" in info.value.reason


def test_missing_field_of_a_fill_uses_the_wire_name():
    body = wire(make_fill())
    del body["feeCurrency"]
    with pytest.raises(DecodeFailure) as info:
        decode(json.dumps(body).encode(), Fill)
    assert "feeCurrency" in info.value.reason
    assert "invalid Fill" in info.value.reason


def test_wrong_type_inside_a_book_level_names_the_path():
    data = b'{"pair":"BTC_USDT","bids":[["1","2"],["x","3"]],"asks":[],"ts":1}'
    with pytest.raises(DecodeFailure) as info:
        decode(data, Book)
    assert "$.bids[1][0]" in info.value.reason


def test_not_an_object_is_invalid_not_malformed():
    with pytest.raises(DecodeFailure) as info:
        decode(b"[]", Signal)
    assert info.value.reason.startswith("invalid Signal")


def test_order_status_must_be_a_known_status():
    body = wire(make_order())
    body["status"] = "exploded"
    with pytest.raises(DecodeFailure) as info:
        decode(json.dumps(body).encode(), Order)
    assert "$.status" in info.value.reason


def test_decode_failure_is_not_a_msgspec_error():
    with pytest.raises(DecodeFailure) as info:
        decode(b"{", Fill)
    assert not isinstance(info.value, msgspec.MsgspecError)
