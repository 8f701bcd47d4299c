"""Stop and take-profit triggers, held by the router for venues that cannot hold them. Pure.

Sells trigger on the best bid, buys on the best ask (the price the triggered order would trade at):
- stop_loss / stop_limit: a sell triggers when bid <= stopPrice, a buy when ask >= stopPrice;
- take_profit: a sell triggers when bid >= stopPrice, a buy when ask <= stopPrice.
"""

from __future__ import annotations

from decimal import Decimal

from schemas.messages import Order

TRIGGERED_TYPES = frozenset({"stop_loss", "stop_limit", "take_profit"})


def is_triggered(order: Order, best_bid: Decimal | None, best_ask: Decimal | None) -> bool:
    if order.type not in TRIGGERED_TYPES or order.stop_price is None:
        return False
    sell = order.side == "sell"
    ref = best_bid if sell else best_ask
    if ref is None:
        return False
    if order.type == "take_profit":
        return ref >= order.stop_price if sell else ref <= order.stop_price
    return ref <= order.stop_price if sell else ref >= order.stop_price


def wrong_side(
    order_type: str, side: str, stop_price: Decimal, best_bid: Decimal | None, best_ask: Decimal | None
) -> str | None:
    """Why a stop price would trigger at once (None when it is on the right side of the market)."""
    sell = side == "sell"
    ref = best_bid if sell else best_ask
    if ref is None or order_type not in TRIGGERED_TYPES:
        return None
    which = "bid" if sell else "ask"
    if order_type == "take_profit":
        bad = stop_price <= ref if sell else stop_price >= ref
        want = "above" if sell else "below"
    else:
        bad = stop_price >= ref if sell else stop_price <= ref
        want = "below" if sell else "above"
    if bad:
        return f"stopPrice {stop_price} of a {side} {order_type} must be {want} the best {which} {ref}"
    return None


def native_kind(order: Order) -> str:
    """The venue order type that holds this stop / take-profit natively (ccxt's unified names)."""
    if order.type == "stop_limit":
        return "stop_loss_limit"
    if order.type == "take_profit":
        return "take_profit" if order.price is None else "take_profit_limit"
    return "stop_loss"


def venue_leg(order: Order) -> tuple[str, Decimal | None]:
    """What a triggered order becomes at the venue: (type, limit price)."""
    if order.type == "stop_limit" or (order.type == "take_profit" and order.price is not None):
        return "limit", order.price
    return "market", None
