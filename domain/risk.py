"""Pre-trade checks: pure functions from an order request and what is known to a decision.

Each denial carries a code, the offending field (camelCase, as the caller wrote it) and a sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from domain.algo_orders import check_algo, child_min_quantity, is_algo, step_of
from domain.algos import AlgoParamError
from domain.book import vwap, walk_book
from domain.triggers import TRIGGERED_TYPES, wrong_side
from schemas.messages import Book, MarketRules, OrderRequest, RiskValidation

ZERO = Decimal(0)
RESERVED_CLIENT_PREFIX = "tbx:"  # the client order ids of the orders the service makes itself
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-=]{1,64}$")
SUPPORTED_TYPES = frozenset({"market", "limit", "stop_loss", "stop_limit", "take_profit", "twap", "vwap", "iceberg"})
NEEDS_PRICE = frozenset({"limit", "stop_limit", "iceberg"})
AT_MARKET_WITHOUT_PRICE = frozenset({"twap", "vwap"})  # no price: children at market, priced like a market order
BRACKET_ENTRIES = frozenset({"market", "limit"})


@dataclass(frozen=True, slots=True)
class Denial:
    code: str
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Approval:
    validation: RiskValidation
    estimated_cost: Decimal | None
    venues: list[str] | None = None  # the venues able to take it, priority order (None: not decided here)
    reduces: bool = False  # it brings its pair's exposure closer to zero (domain.limits.is_reducing)


def _camel(name: str) -> str:
    return re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    try:
        return step <= ZERO or value % step == ZERO
    except ArithmeticError:  # too many digits to divide: certainly not an order anyone means
        return False


def check_order(
    req: OrderRequest,
    *,
    pairs: tuple[str, ...],
    book: Book | None,
    trading_state: str = "ACTIVE",
    rules: MarketRules | None = None,
    position: Decimal | None = None,
    now: int = 0,
) -> Denial | Approval:
    """The decision on one order; numbers too large or malformed to compute with are denied, not raised.

    ``rules``: the venue's tick, step and minimum notional for the pair (skipped when unknown; the venue
    checks them again). ``position``: the signed position, needed for reduce-only orders.
    """
    try:
        return _check(req, pairs, book, trading_state, rules, position, now)
    except ArithmeticError as e:  # decimal.Overflow, InvalidOperation ...
        return Denial("INVALID_NUMBER", None, f"a number of the order cannot be used: {type(e).__name__}")


def _check(
    req: OrderRequest,
    pairs: tuple[str, ...],
    book: Book | None,
    trading_state: str,
    rules: MarketRules | None,
    position: Decimal | None,
    now: int,
) -> Denial | Approval:
    if trading_state == "HALTED":
        return Denial("TRADING_HALTED", None, "trading is halted")
    if req.client_order_id.startswith(RESERVED_CLIENT_PREFIX):
        return Denial(
            "INVALID_CLIENT_ORDER_ID",
            "clientOrderId",
            f"clientOrderId must not start with {RESERVED_CLIENT_PREFIX!r} (ours)",
        )
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
        return Denial("UNSUPPORTED_ORDER_TYPE", "type", f"order type {req.type} is not supported")
    for name in ("price", "stop_price", "stop_loss", "take_profit"):
        v = getattr(req, name)
        if v is not None and (not v.is_finite() or v <= ZERO):
            return Denial("INVALID_PRICE", _camel(name), f"{_camel(name)} must be a positive number, got {v}")
    if req.type in NEEDS_PRICE and req.price is None:
        return Denial("MISSING_PRICE", "price", f"a {req.type} order needs a price")
    if req.type in TRIGGERED_TYPES and req.stop_price is None:
        return Denial("MISSING_STOP_PRICE", "stopPrice", f"a {req.type} order needs a stopPrice (its trigger)")
    if req.stop_price is not None and req.type not in TRIGGERED_TYPES:
        return Denial("UNEXPECTED_FIELD", "stopPrice", f"a {req.type} order has no stopPrice")
    if req.post_only and req.type != "limit":
        return Denial("INVALID_FLAGS", "postOnly", "postOnly is only for limit orders")
    tif = req.time_in_force
    if tif == "GTD" and (req.expire_at is None or req.expire_at <= now):
        return Denial("INVALID_EXPIRY", "expireAt", "timeInForce GTD needs expireAt (epoch ms) in the future")
    if req.expire_at is not None and tif != "GTD":
        return Denial("INVALID_EXPIRY", "expireAt", "expireAt is only for timeInForce GTD")
    if req.post_only and tif in ("IOC", "FOK"):
        return Denial("INVALID_FLAGS", "postOnly", f"a postOnly order cannot be {tif}: it would never rest")
    if rules is not None and (denial := rule_denial(req, rules)) is not None:
        return denial
    is_buy = req.side == "buy"
    bid = book.bids[0][0] if book is not None and book.bids else None
    ask = book.asks[0][0] if book is not None and book.asks else None
    touch = ask if is_buy else bid
    at_market = req.type == "market" or (req.type in AT_MARKET_WITHOUT_PRICE and req.price is None)
    if is_algo(req):  # the parent as a whole: its parameters must make a schedule the venue's rules can take
        step = rules.amount_step if rules is not None and rules.amount_step > ZERO else step_of(req.quantity)
        try:
            check_algo(req, step, child_min_quantity(rules, req.price or touch))
        except AlgoParamError as e:
            return Denial("INVALID_ALGO", e.field, str(e))
    elif req.algo is not None:
        return Denial("INVALID_ALGO", "algo", f"a {req.type} order has no algo (only twap, vwap and iceberg)")
    if touch is None and (at_market or req.type in TRIGGERED_TYPES):
        return Denial("NO_MARKET_DATA", "pair", f"no market data for {req.pair}: cannot price the order")
    if req.stop_price is not None and (why := wrong_side(req.type, req.side, req.stop_price, bid, ask)):
        return Denial("STOP_WRONG_SIDE", "stopPrice", why)
    # reference price: what the order is expected to trade at
    if at_market and book is not None:
        slices, _ = walk_book(book.asks if is_buy else book.bids, req.quantity, is_buy=is_buy)
        ref = vwap(slices) or touch
    else:
        ref = req.price or req.stop_price or touch
    if ref is None:
        return Denial("NO_MARKET_DATA", "pair", f"no market data for {req.pair}: cannot price the order")
    cost = req.quantity * ref
    if rules is not None and (denial := notional_denial(req, rules, cost)) is not None:
        return denial
    if req.stop_loss is not None or req.take_profit is not None:
        if req.type not in BRACKET_ENTRIES:
            return Denial("INVALID_BRACKET", "type", "a bracket's entry is a market or limit order")
        entry = req.price if req.type == "limit" else touch
        assert entry is not None
        for name, level, below in (("stopLoss", req.stop_loss, is_buy), ("takeProfit", req.take_profit, not is_buy)):
            if level is None:
                continue
            if below and level >= entry:
                return Denial(
                    "INVALID_BRACKET", name, f"{name} {level} of a {req.side} must be below the entry {entry}"
                )
            if not below and level <= entry:
                return Denial(
                    "INVALID_BRACKET", name, f"{name} {level} of a {req.side} must be above the entry {entry}"
                )
    if req.reduce_only:
        held = position or ZERO
        if held == ZERO or (held > 0) == is_buy:
            return Denial(
                "REDUCE_ONLY", "reduceOnly", f"reduceOnly {req.side} would not reduce the {req.pair} position ({held})"
            )
        if req.quantity > abs(held):
            return Denial(
                "REDUCE_ONLY", "quantity", f"reduceOnly quantity {req.quantity} is above the position {abs(held)}"
            )
    max_risk = abs(ref - req.stop_loss) * req.quantity if req.stop_loss is not None else cost
    return Approval(RiskValidation(passed=True, recommended_size=req.quantity, max_risk=max_risk), cost)


def _on(req: OrderRequest, rules: MarketRules) -> str:
    """``BTC_USDT`` (one venue), ``BTC_USDT on binance`` (rules that name their venue)."""
    return f"{req.pair} on {rules.venue}" if rules.venue else req.pair


def rule_denial(req: OrderRequest, rules: MarketRules) -> Denial | None:
    """The venue's amount step, minimum / maximum amount and price tick for the order (its own numbers)."""
    if not is_multiple(req.quantity, rules.amount_step):
        return Denial(
            "INVALID_QUANTITY",
            "quantity",
            f"quantity {req.quantity} is not a multiple of the amount step {rules.amount_step} for {_on(req, rules)}",
        )
    if rules.min_amount is not None and req.quantity < rules.min_amount:
        return Denial(
            "MIN_AMOUNT",
            "quantity",
            f"quantity {req.quantity} is below the venue's minimum amount {rules.min_amount} for {_on(req, rules)}",
        )
    if rules.max_amount is not None and rules.max_amount > ZERO and req.quantity > rules.max_amount:
        return Denial(
            "MAX_AMOUNT",
            "quantity",
            f"quantity {req.quantity} is above the venue's maximum amount {rules.max_amount} for {_on(req, rules)}",
        )
    for name in ("price", "stop_price", "stop_loss", "take_profit"):
        v = getattr(req, name)
        if v is not None and not is_multiple(v, rules.tick_size):
            return Denial(
                "INVALID_PRICE",
                _camel(name),
                f"{_camel(name)} {v} is not a multiple of the tick {rules.tick_size} for {_on(req, rules)}",
            )
    return None


def notional_denial(req: OrderRequest, rules: MarketRules, cost: Decimal) -> Denial | None:
    """The venue's minimum notional against the order's expected cost."""
    if cost < rules.min_notional:
        return Denial(
            "MIN_NOTIONAL",
            "quantity",
            f"notional {cost} is below the minimum {rules.min_notional} for {_on(req, rules)}",
        )
    return None


def same_request(first: OrderRequest, again: OrderRequest, default_tif: str) -> bool:
    """Does ``again`` (a retry under the same client order id) carry the same order as ``first``? The
    fields the order-router compares for a repeated client order id (a market order's price is only a
    reference; a missing time in force is the default), plus the bracket's exits."""

    def key(r: OrderRequest) -> tuple[object, ...]:
        price = r.price if r.type != "market" else None
        return (
            r.pair, r.side, r.type, r.quantity, price, r.stop_price, r.time_in_force or default_tif, r.expire_at,
            r.post_only, r.reduce_only, r.stop_loss, r.take_profit, r.exchange, r.algo,
        )  # fmt: skip

    return key(first) == key(again)
