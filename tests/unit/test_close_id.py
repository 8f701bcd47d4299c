"""A close order's client order id is named after the position, within the 64 characters a client order id may
have, however long the venue's name."""

from __future__ import annotations

from decimal import Decimal

from gateway.positions import _close_id
from schemas.messages import PositionView, RiskMetrics

D = Decimal


def view(pid: str) -> PositionView:
    return PositionView(
        id=pid, pair="BTC_USDT", side="long", quantity=D("0.012345678"), average_price=D(1), current_price=D(1),
        market_value=D(1), unrealized_pnl=D(0), realized_pnl=D(0), day_pnl=D(0), fees=D(0),
        risk_metrics=RiskMetrics(position_size=D(0), leverage=D(1)),
    )  # fmt: skip


def test_a_close_id_is_the_position_and_quantity_or_their_digest_when_too_long() -> None:
    short = _close_id(view("POS_001_BTC_USDT:binance"))
    assert short == "close-POS_001_BTC_USDT:binance-0.012345678"
    long_name = "POS_001_BTC_USDT:" + "a_very_long_venue_name_of_forty_chars_xx"
    long = _close_id(view(long_name))
    assert len(long) <= 64 and long.startswith("close-") and long == _close_id(view(long_name))  # stable
    assert long != _close_id(view(long_name[:-1] + "y"))
