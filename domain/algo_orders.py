"""Algorithm (parent) orders and their children: the pure rules the risk gate, the order-router's engine and the
read models share. The schedules themselves are in ``domain/algos`` (this module only applies them to orders).

- ``check_algo(req, step, min_quantity)``: an algorithm order's parameters (type twap / vwap / iceberg), refused
  with ``AlgoParamError`` naming the request field (``algo.durationMs``, ``algo.slices``, ``algo.profile``,
  ``algo.displayQuantity``, ``price``, ...) and the reason; the risk gate answers it as a denial (REST 422).
- ``slice_client_id(parent, k)`` / ``parent_of_slice(client_order_id)``: a child's client order id is
  ``tbx:<parent id>:s<k>`` (k the slice or clip index): the parent is known from any fill of a child.
- ``schedule_of(parent, step, min_quantity)``: the parent's schedule, recomputed identically after a restart
  (its seed, start and VWAP weights are stored on the parent).
- ``next_quantity(...)``: what the next child may be: the schedule's cumulative target through the slices sent now,
  less what is filled and what the working children still have - so whatever an earlier slice left unfilled is
  carried into the next one, and nothing is ever sent beyond the parent's quantity.
- ``child_min_quantity(rules, price)``: the smallest child the venue takes (its minimum amount and notional).
- ``trading_refusal(state, hours, timezone, now_ms)``: why an algorithm may not send a child now (the trading
  state HALTED or REDUCING, outside TRADING_HOURS) - children never pass the risk gate, so the engine asks this
  before each one and stops the parent when it answers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal

from domain.algos import (
    MAX_DURATION_MS,
    AlgoParamError,
    Slice,
    iceberg_clip,
    iceberg_clips,
    twap_schedule,
    vwap_schedule,
)
from domain.orders import revivable
from schemas.messages import ALGO_TYPES, TERMINAL_STATUSES, AlgoSpec, MarketRules, Order, OrderRequest

ZERO = Decimal(0)
SLICE_ID_RE = re.compile(r"^tbx:(.+):s(\d+)$")
TIMED = frozenset(("twap", "vwap"))


def is_algo(o: Order | OrderRequest) -> bool:
    return o.type in ALGO_TYPES


def slice_client_id(parent_id: str, index: int) -> str:
    """The client order id of a parent's child ``index`` (slice or clip)."""
    return f"tbx:{parent_id}:s{index}"


def parent_of_slice(client_order_id: str) -> str | None:
    """The parent order id named by a child's client order id, or None (not a child)."""
    m = SLICE_ID_RE.match(client_order_id)
    return m.group(1) if m else None


def seed_of(order_id: str) -> int:
    """The randomisation seed of a parent that asked for none: derived from its order id (stored on it)."""
    return int.from_bytes(hashlib.sha256(order_id.encode()).digest()[:4], "big")


def step_of(quantity: Decimal) -> Decimal:
    """A step when the venue's rules are not known: the quantity's own last digit (so it is a multiple of it)."""
    exp = quantity.normalize().as_tuple().exponent
    return Decimal(1).scaleb(min(int(exp), 0))


def child_min_quantity(rules: MarketRules | None, price: Decimal | None) -> Decimal:
    """The smallest child the venue takes: its minimum amount, and its minimum notional at ``price`` (rounded up to
    the amount step). Unknown rules or price: no minimum."""
    if rules is None:
        return ZERO
    least = rules.min_amount or ZERO
    if price is not None and price > ZERO and rules.min_notional > ZERO and rules.amount_step > ZERO:
        steps = (rules.min_notional / price / rules.amount_step).to_integral_value(rounding=ROUND_CEILING)
        least = max(least, steps * rules.amount_step)
    return least


def _not_for(spec: AlgoSpec, kind: str, names: Sequence[str]) -> None:
    defaults = AlgoSpec()
    for name in names:
        if getattr(spec, name) != getattr(defaults, name):
            camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
            raise AlgoParamError(f"algo.{camel}", f"does not apply to a {kind} order")


def check_algo(req: OrderRequest, step: Decimal, min_quantity: Decimal = ZERO) -> None:
    """Refuse an algorithm order that cannot run (AlgoParamError naming the field). Builds its schedule with the
    venue's amount ``step`` and smallest child ``min_quantity``: what cannot be scheduled is refused now."""
    kind = req.type
    spec = req.algo
    if spec is None:
        need = "displayQuantity" if kind == "iceberg" else "durationMs and slices"
        raise AlgoParamError("algo", f"a {kind} order needs algo with {need}")
    if req.stop_loss is not None or req.take_profit is not None:
        field = "stopLoss" if req.stop_loss is not None else "takeProfit"
        raise AlgoParamError(field, f"a {kind} order cannot carry a bracket: place the exits once it has filled")
    if req.post_only:
        raise AlgoParamError("postOnly", f"a {kind} order chooses its children's kind itself")
    if req.reduce_only:
        raise AlgoParamError("reduceOnly", f"reduceOnly is not supported for a {kind} order")
    if req.expire_at is not None or req.time_in_force == "GTD":
        raise AlgoParamError("expireAt", f"a {kind} order ends with its schedule: no expireAt / GTD")
    if kind == "iceberg":
        if req.price is None:
            raise AlgoParamError("price", "an iceberg order needs a price (its clips rest at it)")
        _not_for(spec, kind, ("duration_ms", "slices", "size_jitter", "time_jitter", "seed", "profile", "lookback_ms"))
        if spec.display_quantity is None:
            raise AlgoParamError("algo.displayQuantity", "an iceberg order needs algo.displayQuantity")
        iceberg_clips(req.quantity, spec.display_quantity, step, min_quantity=min_quantity)
        return
    _not_for(spec, kind, ("display_quantity",))
    if spec.duration_ms is None:
        raise AlgoParamError("algo.durationMs", f"a {kind} order needs algo.durationMs (ms)")
    if kind == "twap":
        _not_for(spec, kind, ("profile", "lookback_ms"))
        if spec.slices is None:
            raise AlgoParamError("algo.slices", "a twap order needs algo.slices")
        twap_schedule(
            req.quantity, 0, spec.duration_ms, spec.slices, step, min_quantity=min_quantity,
            size_jitter=spec.size_jitter, time_jitter=spec.time_jitter, seed=spec.seed or 0,
        )  # fmt: skip
        return
    _not_for(spec, kind, ("size_jitter", "time_jitter", "seed"))
    if spec.lookback_ms is not None and not 1 <= spec.lookback_ms <= MAX_DURATION_MS:
        raise AlgoParamError("algo.lookbackMs", f"must be between 1 and {MAX_DURATION_MS} ms (7 days)")
    if spec.profile is not None:
        if spec.slices is not None and spec.slices != len(spec.profile):
            raise AlgoParamError(
                "algo.slices", f"{spec.slices} slices but algo.profile has {len(spec.profile)} weights (one per slice)"
            )
        weights = spec.profile
    else:
        if spec.slices is None:
            raise AlgoParamError("algo.slices", "a vwap order needs algo.slices (or algo.profile: one weight each)")
        if not 1 <= spec.slices <= 10_000:
            raise AlgoParamError("algo.slices", f"must be between 1 and 10000 slices, got {spec.slices}")
        weights = [Decimal(1)] * spec.slices
    vwap_schedule(req.quantity, 0, spec.duration_ms, weights, step, min_quantity=min_quantity)


def schedule_of(parent: Order, step: Decimal, min_quantity: Decimal = ZERO) -> list[Slice]:
    """A twap / vwap parent's schedule (the same after a restart: seed, start and weights are on the parent)."""
    spec, state = parent.algo, parent.algo_state
    assert spec is not None and state is not None and spec.duration_ms is not None
    if parent.type == "twap":
        assert spec.slices is not None
        return twap_schedule(
            parent.quantity, state.start_ms, spec.duration_ms, spec.slices, step, min_quantity=min_quantity,
            size_jitter=spec.size_jitter, time_jitter=spec.time_jitter, seed=spec.seed or 0,
        )  # fmt: skip
    weights = state.weights or spec.profile or [Decimal(1)] * (spec.slices or 1)
    return vwap_schedule(parent.quantity, state.start_ms, spec.duration_ms, weights, step, min_quantity=min_quantity)


def target_through(schedule: Sequence[Slice], index: int) -> Decimal:
    """The schedule's cumulative quantity through slice ``index`` (inclusive)."""
    return sum((s.quantity for s in schedule if s.index <= index), ZERO)


def next_quantity(parent: Order, target: Decimal, working: Decimal, step: Decimal) -> Decimal:
    """What the next child may be: the cumulative ``target`` less what the parent filled and what its working
    children still have open (``working``), never beyond what the parent has left, in whole steps; never < 0."""
    left = parent.quantity - parent.filled_quantity - working
    q = min(target - parent.filled_quantity - working, left)
    if q <= ZERO:
        return ZERO
    return (q // step) * step if step > ZERO else q


def next_clip(parent: Order, working: Decimal, step: Decimal, min_quantity: Decimal = ZERO) -> Decimal:
    """An iceberg's next clip: at most its display quantity of what is left (nothing while a clip works)."""
    assert parent.algo is not None and parent.algo.display_quantity is not None
    if working > ZERO:
        return ZERO
    remaining = parent.quantity - parent.filled_quantity
    return iceberg_clip(remaining, parent.algo.display_quantity, step, min_quantity=min_quantity)


def unfilled_of(child: Order) -> Decimal:
    """What a child leaves to its parent's next slice: its quantity less its fills (0 when filled)."""
    left = child.quantity - child.filled_quantity
    return left if left > ZERO else ZERO


def trading_refusal(
    state: str | None, hours: tuple[int, int] | None, timezone: str, now_ms: int, reduces: bool = False
) -> str | None:
    """Why an algorithm's next child may not go now (None: it may). Its children never pass the risk gate, so
    what the gate would refuse to a new order stops the algorithm: the trading state HALTED (emergency stop,
    MAX_DAILY_LOSS, MAX_DRAWDOWN) always; REDUCING or outside TRADING_HOURS unless the gate found the parent
    reducing when it approved it (``reduces``, ``algoState.reduces``: what the gate lets through then - its
    children are capped by the parent, so they never trade beyond what the gate checked)."""
    from domain.limits import HALTED, REDUCING, within_hours  # (domain.limits imports this module)

    if state == HALTED:
        return "trading state HALTED: the algorithm stopped (its children never pass the risk gate)"
    if reduces:
        return None
    if state == REDUCING:
        return "trading state REDUCING: the algorithm stopped (it does not reduce a position)"
    if hours is not None and not within_hours(now_ms, hours, timezone):
        h = hours
        span = f"{h[0] // 60:02d}:{h[0] % 60:02d}-{h[1] // 60:02d}:{h[1] % 60:02d} {timezone}"
        return f"TRADING_HOURS: outside {span}: the algorithm stopped"
    return None


def committed_of(children: Sequence[Order | None]) -> Decimal:
    """What a parent's children have taken of its quantity, from the children themselves (never from the
    parent's own figures, which follow its children's fills a moment later): a live one its whole quantity; one
    rejected as unknown to the venue (``revivable``: it may still show up there and fill) its whole quantity too;
    another ended one its fills, or what the venue reported filled when that is more (its fills still on their
    way). A child recorded but never made (None) took nothing."""
    total = ZERO
    for c in children:
        if c is None:
            continue
        if c.status in TERMINAL_STATUSES and not revivable(c):
            total += max(c.filled_quantity, c.venue_filled or ZERO)
        else:
            total += max(c.quantity, c.filled_quantity)
    return total


def capped_quantity(wanted: Decimal, target: Decimal, quantity: Decimal, committed: Decimal, step: Decimal) -> Decimal:
    """The next child: ``wanted`` but never beyond the cumulative ``target`` (nor the parent's ``quantity``) less
    what the children already took (``committed_of``), in whole steps; never < 0. So the parent's quantity is
    never exceeded, whatever the parent's own figures say."""
    room = min(target, quantity) - committed
    q = min(wanted, room)
    if q <= ZERO:
        return ZERO
    return (q // step) * step if step > ZERO else q


def catchup_cap(merged: Sequence[Slice], left: Decimal, later: int, step: Decimal) -> Decimal:
    """The most a child of a schedule that is catching up after a restart may be: slices that fell due while the
    router was down are never sent as one big order. ``merged``: the slices this child stands for (one, or the
    overdue ones merged), ``left``: what the parent still has to send, ``later``: how many slices are still to come
    after it. What is left is spread evenly over this child and the later slices (never less than one scheduled
    slice's size); with no later slice (the router came back after the schedule's last slice) one slice's size at
    most: the rest is left unfilled (the parent ends expired)."""
    one = max((s.quantity for s in merged), default=ZERO)
    if later <= 0:
        return one if len(merged) > 1 else max(one, left)
    share = left / (later + 1)
    if step > ZERO:
        share = (share / step).to_integral_value(rounding=ROUND_CEILING) * step
    return max(one, share)
