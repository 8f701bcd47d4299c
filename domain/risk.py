"""Pre-trade checks: pure functions from an order request and what is known to a decision.

Each denial carries a code, the offending field and a sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from domain.book import vwap, walk_book
from schemas.messages import Book, OrderRequest, RiskValidation

ZERO = Decimal(0)
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-=]{1,64}$")
SUPPORTED_TYPES = frozenset({"market"})


@dataclass(frozen=True, slots=True)
class Denial:
    code: str
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Approval:
    validation: RiskValidation
    estimated_cost: Decimal | None


def check_order(
    req: OrderRequest, *, pairs: tuple[str, ...], book: Book | None, trading_state: str = "ACTIVE"
) -> Denial | Approval:
    """The decision on one order; numbers too large or malformed to compute with are denied, not raised."""
    try:
        return _check(req, pairs=pairs, book=book, trading_state=trading_state)
    except ArithmeticError as e:  # decimal.Overflow, InvalidOperation ...
        return Denial("INVALID_NUMBER", None, f"a number of the order cannot be used: {type(e).__name__}")


def _check(req: OrderRequest, *, pairs: tuple[str, ...], book: Book | None, trading_state: str) -> Denial | Approval:
    if trading_state == "HALTED":
        return Denial("TRADING_HALTED", None, "trading is halted")
    if not CLIENT_ID_RE.match(req.client_order_id):
        return Denial(
            "INVALID_CLIENT_ORDER_ID",
            "clientOrderId",
            "clientOrderId must be 1-64 characters of letters, digits and _ . : - =",
        )
    if req.pair not in pairs:
        return Denial("UNKNOWN_PAIR", "pair", f"pair {req.pair} is not traded here (PAIRS: {', '.join(pairs)})")
    if not req.quantity.is_finite() or req.quantity <= ZERO:
        return Denial("INVALID_QUANTITY", "quantity", f"quantity must be a positive number, got {req.quantity}")
    if req.type not in SUPPORTED_TYPES:
        return Denial("UNSUPPORTED_ORDER_TYPE", "type", f"order type {req.type} is not supported yet")
    for name in ("price", "stop_price", "stop_loss", "take_profit"):
        v = getattr(req, name)
        if v is not None and (not v.is_finite() or v <= ZERO):
            field = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
            return Denial("INVALID_PRICE", field, f"{field} must be a positive number, got {v}")
    if book is None or not (book.asks if req.side == "buy" else book.bids):
        return Denial("NO_MARKET_DATA", "pair", f"no market data for {req.pair}: cannot price the order")
    is_buy = req.side == "buy"
    slices, _left = walk_book(book.asks if is_buy else book.bids, req.quantity, is_buy=is_buy)
    ref = vwap(slices) or (book.asks[0][0] if is_buy else book.bids[0][0])
    cost = req.quantity * ref
    max_risk = abs(ref - req.stop_loss) * req.quantity if req.stop_loss is not None else cost
    return Approval(RiskValidation(passed=True, recommended_size=req.quantity, max_risk=max_risk), cost)
