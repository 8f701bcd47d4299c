"""What we send to the family's other services over HTTP, and what we expect back (README: "The
risk and ML services"). Answers may carry more fields than these; those are ignored."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec


class Out(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    pass


class In(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class TradeCheck(Out, kw_only=True):
    """``POST {RISK_SERVICE_URL}/api/risk/validate-trade``: may this order go out?"""

    client_order_id: str
    pair: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None = None  # the limit price, else the expected fill price
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    equity: Decimal
    source: str


class TradeVerdict(In, kw_only=True):
    approved: bool
    reason: str | None = None
    recommended_size: Decimal | None = None
    max_risk: Decimal | None = None


class SizeQuestion(Out, kw_only=True):
    """``POST {RISK_SERVICE_URL}/api/risk/position-size``: how much should this signal trade?"""

    pair: str
    signal: str
    confidence: Decimal
    price: Decimal
    stop_loss: Decimal | None = None
    equity: Decimal
    max_risk_percent: Decimal
    method: str


class SizeAnswer(In, kw_only=True):
    recommended_size: Decimal
    risk_amount: Decimal | None = None
    method: str | None = None


class PredictionQuestion(Out, kw_only=True):
    """``POST {ML_SERVICE_URL}/api/predict``: what does the model think of this pair now?"""

    pair: str
    signal: str
    confidence: Decimal
    source: str
    strategy: str
    price: Decimal | None = None


class Prediction(In, kw_only=True):
    signal: Literal["BUY", "SELL", "HOLD"]
    confidence: Decimal
