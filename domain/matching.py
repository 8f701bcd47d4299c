"""The paper exchange's matching: our orders against the latest L2 book of a pair. Pure and deterministic.

- A taker order (market, or a limit that crosses the book) walks the opposite side level by level,
  one trade per level, at the level's price, paying the taker fee.
- A resting limit order fills at its own price, as maker, when a later book crosses it, against the size
  the book shows at or better than its price.
- Liquidity taken from a book is not taken twice: what our orders took from a snapshot is remembered
  until the next snapshot replaces it.
- Market orders never fill worse than the touch at submission +/- ``max_slippage_pct``: the part that
  would is not filled and follows the time in force (IOC / FOK: canceled; GTC / GTD: keeps working
  within the same band on the next books).
- IOC fills what it can now and cancels the rest; FOK fills entirely now or not at all; GTC and GTD
  rest (GTD expiry is the router's job, like for any venue without native GTD).
- Rules: price on the tick, quantity on the step, notional at least the minimum; a post-only order that
  would take liquidity is rejected. Breaking a rule rejects the order with the reason; nothing is
  rounded into a different order.
- Fees are charged in the quote currency: quantity x price x rate, exact.
- A reduce-only order never fills beyond the pair's position (what our orders bought less what they
  sold): with nothing to reduce it is rejected, and once the position is gone what is left of it is
  canceled (as a derivatives venue does; spot venues have no reduce-only, so this is the paper guard).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import msgspec

from domain.exits import reducible
from domain.risk import is_multiple
from schemas.messages import Book

ZERO = Decimal(0)
HUNDRED = Decimal(100)
NOTHING_TO_REDUCE = "reduce-only: no position to reduce"
POSITION_CLOSED = "reduce-only: the position is closed, nothing left to reduce"

SimStatus = Literal["open", "closed", "canceled", "rejected", "expired"]


@dataclass(frozen=True, slots=True)
class MarketSpec:
    tick_size: Decimal
    amount_step: Decimal
    min_notional: Decimal
    maker_fee: Decimal
    taker_fee: Decimal


class SimTrade(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Literal["maker", "taker"]
    ts: int


class SimOrder(msgspec.Struct, kw_only=True, gc=False):  # plain data: no GC tracking
    """The paper exchange's record of one order."""

    client_order_id: str
    venue_order_id: str
    pair: str
    side: Literal["buy", "sell"]
    type: Literal["market", "limit"]
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: str = "GTC"
    post_only: bool = False
    reduce_only: bool = False  # never fills beyond the pair's position (Matcher.position)
    seq: int = 0
    band: Decimal | None = None  # market orders: the worst price they may fill at
    status: SimStatus = "open"
    filled: Decimal = ZERO
    cost: Decimal = ZERO
    reason: str | None = None
    trades: list[SimTrade] = msgspec.field(default_factory=list)
    created_at: int = 0
    updated_at: int = 0

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_buy(self) -> bool:
        return self.side == "buy"


@dataclass(slots=True)
class Matcher:
    """One pair's matching state: the latest book, what we took from it, and our resting orders."""

    pair: str
    quote: str
    spec: MarketSpec
    max_slippage_pct: Decimal | None = None
    book: Book | None = None
    consumed: dict[tuple[str, Decimal], Decimal] = field(default_factory=dict)
    resting: dict[str, SimOrder] = field(default_factory=dict)
    seq: int = 0  # arrival counter: time priority among equal prices
    position: Decimal = ZERO  # net base bought less sold by our orders on this pair (reduce-only's limit)

    # -- rules ----------------------------------------------------------------------------------------
    def rule_violation(self, o: SimOrder) -> str | None:
        s = self.spec
        if o.quantity <= ZERO:
            return f"quantity must be positive, got {o.quantity}"
        if not is_multiple(o.quantity, s.amount_step):
            return f"quantity {o.quantity} is not a multiple of the amount step {s.amount_step} for {self.pair}"
        if o.type == "limit":
            if o.price is None or o.price <= ZERO:
                return "a limit order needs a positive price"
            if not is_multiple(o.price, s.tick_size):
                return f"price {o.price} is not a multiple of the tick {s.tick_size} for {self.pair}"
            ref: Decimal | None = o.price
        else:
            ref = self.touch(o.is_buy)
        if ref is not None and o.quantity * ref < s.min_notional:
            return f"notional {o.quantity * ref} is below the minimum {s.min_notional} for {self.pair}"
        return None

    # -- book ------------------------------------------------------------------------------------------
    def touch(self, is_buy: bool) -> Decimal | None:
        if self.book is None:
            return None
        levels = self.book.asks if is_buy else self.book.bids
        return levels[0][0] if levels else None

    def _levels(self, is_buy: bool) -> list[tuple[Decimal, Decimal]]:
        if self.book is None:
            return []
        return self.book.asks if is_buy else self.book.bids

    def _available(self, is_buy: bool, price: Decimal, size: Decimal) -> Decimal:
        return size - self.consumed.get(("ask" if is_buy else "bid", price), ZERO)

    def _take_level(self, is_buy: bool, price: Decimal, qty: Decimal) -> None:
        key = ("ask" if is_buy else "bid", price)
        self.consumed[key] = self.consumed.get(key, ZERO) + qty

    def _bound(self, o: SimOrder) -> Decimal | None:
        """The worst price this order may trade at now (limit price, or the market order's band)."""
        return o.price if o.type == "limit" else o.band

    def _within(self, is_buy: bool, price: Decimal, bound: Decimal | None) -> bool:
        return bound is None or (price <= bound if is_buy else price >= bound)

    def _cap(self, o: SimOrder) -> Decimal:
        """What ``o`` may still fill: its remaining, and for a reduce-only order no more than the position."""
        if not o.reduce_only:
            return o.remaining
        return min(o.remaining, reducible(self.position, o.side))

    def fillable(self, o: SimOrder) -> Decimal:
        """How much of ``o`` could trade against the book right now (for FOK), level by level as _take would."""
        total = ZERO
        bound = self._bound(o)
        for price, size in self._levels(o.is_buy):
            if not self._within(o.is_buy, price, bound):
                break
            total += self._step_down(max(ZERO, self._available(o.is_buy, price, size)))
        return min(total, self._cap(o)) if o.reduce_only else total

    def marketable(self, o: SimOrder) -> bool:
        t = self.touch(o.is_buy)
        return t is not None and self._within(o.is_buy, t, self._bound(o))

    # -- trading ---------------------------------------------------------------------------------------
    def _trade(
        self, o: SimOrder, qty: Decimal, price: Decimal, liquidity: Literal["maker", "taker"], ts: int
    ) -> SimTrade:
        rate = self.spec.maker_fee if liquidity == "maker" else self.spec.taker_fee
        t = SimTrade(
            trade_id=f"{o.venue_order_id}-{len(o.trades) + 1}",
            quantity=qty,
            price=price,
            fee=qty * price * rate,
            fee_currency=self.quote,
            liquidity=liquidity,
            ts=ts,
        )
        o.trades.append(t)
        self.position += qty if o.is_buy else -qty
        o.filled += qty
        o.cost += qty * price
        o.updated_at = ts
        if o.filled == o.quantity:
            o.status = "closed"
        return t

    def _step_down(self, qty: Decimal) -> Decimal:
        step = self.spec.amount_step
        return (qty // step) * step if step > ZERO else qty

    def _take(self, o: SimOrder, ts: int) -> list[SimTrade]:
        """``o`` takes liquidity as a taker, level by level, within its bound."""
        out: list[SimTrade] = []
        bound = self._bound(o)
        for price, size in self._levels(o.is_buy):
            cap = self._cap(o)
            if cap <= ZERO or not self._within(o.is_buy, price, bound):
                break
            qty = self._step_down(min(self._available(o.is_buy, price, size), cap))
            if qty <= ZERO:
                continue
            self._take_level(o.is_buy, price, qty)
            out.append(self._trade(o, qty, price, "taker", ts))
        return out

    def _make(self, o: SimOrder, ts: int) -> list[SimTrade]:
        """A resting limit crossed by the book fills at its own price, as maker."""
        assert o.price is not None
        avail = ZERO
        crossed: list[tuple[Decimal, Decimal]] = []
        for price, size in self._levels(o.is_buy):
            if not self._within(o.is_buy, price, o.price):
                break
            a = self._available(o.is_buy, price, size)
            if a > ZERO:
                crossed.append((price, a))
                avail += a
        qty = self._step_down(min(avail, self._cap(o)))
        if qty <= ZERO:
            return []
        left = qty
        for price, a in crossed:  # the liquidity it used is gone for the others
            used = min(a, left)
            self._take_level(o.is_buy, price, used)
            left -= used
            if left <= ZERO:
                break
        return [self._trade(o, qty, o.price, "maker", ts)]

    def submit(self, o: SimOrder, ts: int) -> list[SimTrade]:
        """A new order arrives. Sets its status; returns the trades it made at once."""
        o.created_at = o.updated_at = ts
        self.seq += 1
        o.seq = self.seq
        if (why := self.rule_violation(o)) is not None:
            return self._end(o, "rejected", why, ts)
        if o.reduce_only and self._cap(o) <= ZERO:
            return self._end(o, "rejected", NOTHING_TO_REDUCE, ts)
        if o.type == "market":
            touch = self.touch(o.is_buy)
            if touch is None:
                return self._end(o, "rejected", f"no market data for {self.pair}", ts)
            if self.max_slippage_pct is not None:
                k = self.max_slippage_pct / HUNDRED
                o.band = touch * (1 + k) if o.is_buy else touch * (1 - k)
        if o.post_only and self.marketable(o):
            return self._end(o, "rejected", "post-only order would take liquidity", ts)
        if o.time_in_force == "FOK" and self.fillable(o) < o.quantity:
            return self._end(o, "canceled", "FOK: not enough liquidity to fill it entirely now", ts)
        trades = self._take(o, ts) if self.marketable(o) else []
        if o.status == "open":
            if o.reduce_only and self._cap(o) <= ZERO:  # it took the whole position: the rest can never fill
                return trades + self._end(o, "canceled", POSITION_CLOSED, ts)
            if o.time_in_force in ("IOC", "FOK"):
                reason = "IOC: the rest was canceled" if o.filled else "IOC: nothing to fill now"
                return trades + self._end(o, "canceled", reason, ts)
            self.resting[o.client_order_id] = o
        return trades

    def _end(self, o: SimOrder, status: SimStatus, reason: str, ts: int) -> list[SimTrade]:
        o.status, o.reason, o.updated_at = status, reason, ts
        self.resting.pop(o.client_order_id, None)
        return []

    def on_book(self, book: Book, ts: int) -> list[tuple[SimOrder, list[SimTrade]]]:
        """A new snapshot: what we took from the old one is forgotten; resting orders may fill now."""
        self.book = book
        self.consumed.clear()
        out = []
        for o in self._by_priority():
            trades = self._take(o, ts) if o.type == "market" else (self._make(o, ts) if self.marketable(o) else [])
            if trades:
                if o.status != "open":
                    self.resting.pop(o.client_order_id, None)
                out.append((o, trades))
        for o in [o for o in self.resting.values() if o.reduce_only and self._cap(o) <= ZERO]:
            self._end(o, "canceled", POSITION_CLOSED, ts)  # nothing left to reduce: it can never fill
            if not any(done is o for done, _ in out):
                out.append((o, []))
        return out

    def _by_priority(self) -> list[SimOrder]:
        """Market orders first, then limits by price (best first), then by arrival."""

        def key(o: SimOrder) -> tuple[int, Decimal, int]:
            if o.type == "market":
                return (0, ZERO, o.seq)
            assert o.price is not None
            return (1, -o.price if o.is_buy else o.price, o.seq)

        return sorted(self.resting.values(), key=key)

    def cancel(self, client_order_id: str, ts: int, reason: str = "canceled") -> SimOrder | None:
        o = self.resting.get(client_order_id)
        if o is None:
            return None
        self._end(o, "canceled", reason, ts)
        return o

    def edit(
        self, client_order_id: str, ts: int, quantity: Decimal | None = None, price: Decimal | None = None
    ) -> tuple[SimOrder | None, str | None, list[SimTrade]]:
        """Change a resting order's quantity and/or price (it keeps its id). Returns (order, refusal, trades)."""
        o = self.resting.get(client_order_id)
        if o is None:
            return None, "the order is not open", []
        new_qty = quantity if quantity is not None else o.quantity
        new_price = price if price is not None else o.price
        if new_qty <= o.filled:
            return o, f"quantity {new_qty} is not above the filled {o.filled}", []
        trial = msgspec.structs.replace(o, quantity=new_qty, price=new_price, trades=list(o.trades))
        if (why := self.rule_violation(trial)) is not None:
            return o, why, []
        if trial.post_only and self.marketable(trial):
            return o, "post-only order would take liquidity", []
        o.quantity, o.price, o.updated_at = new_qty, new_price, ts
        if price is not None:  # a new price loses its place in the queue
            self.seq += 1
            o.seq = self.seq
        trades = self._take(o, ts) if self.marketable(o) else []
        if o.status != "open":
            self.resting.pop(o.client_order_id, None)
        return o, None, trades
