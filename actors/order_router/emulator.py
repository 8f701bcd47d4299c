"""The order emulator: what a venue cannot hold, held here.

- stop-loss, stop-limit and take-profit orders wait here and are triggered from market data
  (domain.triggers), oldest first when several fire on one book;
- bracket orders: an entry with a stop-loss and a take-profit leg, one-cancels-other;
- reduce-only exits kept true as the position moves: the net position of each pair (every fill on
  FILLS) and the live reduce-only orders of each pair, so an exit never takes more than the position
  (domain.exits);
- GTD expiry and DEFAULT_ORDER_TIMEOUT (the clock).

Working stops and bracket legs are rebuilt from ORDERS on start (they are orders in the store), so they
still trigger after a restart; ``resume`` finishes the bracket follow-ups a crash may have cut short.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from actors.books import BookCache
from actors.order_router.store import OrderStore
from config.settings import Settings
from domain.exits import REDUCE_ONLY_WHY, Exit, NetPositions, fit_exits, nothing_to_reduce, reducible
from domain.orders import WORKING, at_venue, held_here, opposite, revivable, transition, trigger
from domain.quality_book import arrival, with_arrival
from domain.recent import FILL_DEDUPE_WINDOW
from domain.risk import RESERVED_CLIENT_PREFIX
from domain.triggers import TRIGGERED_TYPES, is_triggered, venue_leg
from schemas.messages import ALGO_TYPES, TERMINAL_STATUSES, Book, Fill, Order, OrderRequest, OrderStatus, now_ms

if TYPE_CHECKING:
    from loguru import Logger

    from actors.order_router.session import VenueSession

S = OrderStatus
ZERO = Decimal(0)
CLOCK_EVERY_S = 0.25

Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]  # the actor's guarded background task
Cancel = Callable[[str, str], Awaitable[tuple[Order, str | None]]]  # the router's cancel of one order
SessionOf = Callable[[Order], "VenueSession"]  # the venue session an order belongs to
BookOf = Callable[[str, str], Book | None]  # (venue, pair) -> the book that venue's orders trigger on


def slot(venue: str, pair: str) -> str:
    """What a position and the exits of it are kept under: a pair at one venue (positions are per venue)."""
    return f"{venue} {pair}"


class Emulator:
    def __init__(self, settings: Settings, store: OrderStore, books: BookCache, log: Logger, spawn: Spawn) -> None:
        self.settings = settings
        self.store = store
        self.books = books
        self.log = log
        self.spawn = spawn
        # reduce-only exits: the net position of each pair at each venue (every fill on FILLS) and the live
        # reduce-only orders of each, so an exit never takes more than the position (domain.exits). Keyed by
        # ``slot(venue, pair)``: a position on one venue is never reduced by an order on another
        self.positions = NetPositions(FILL_DEDUPE_WINDOW)
        self.exits: dict[str, set[str]] = {}
        self.shrinking: set[str] = set()  # reduce-only orders being cut at the venue

    def connect(self, session_of: SessionOf, cancel: Cancel, book_of: BookOf | None = None) -> None:
        """The venue session of an order (sends what triggers, cuts exits there), the router's cancel, and the book
        a venue's orders trigger on (default: the pair's reference book)."""
        self.session_of = session_of
        self.cancel = cancel
        self.book_of = book_of or (lambda venue, pair: self.books.books.get(pair))

    only: str | None = None  # the venue of a one-venue deployment (every fill is its)

    def track(self, o: Order) -> None:
        """An order was stored: follow the live reduce-only ones of each pair."""
        if o.reduce_only:
            key = slot(o.venue, o.pair)
            if o.order_id in self.store.live:
                for other, ids in self.exits.items():  # an order that moved venue leaves its old slot
                    if other != key:
                        ids.discard(o.order_id)
                self.exits.setdefault(key, set()).add(o.order_id)
            else:
                for ids in self.exits.values():
                    ids.discard(o.order_id)

    def position_at(self, venue: str, pair: str) -> Decimal:
        """The net position of ``pair`` at ``venue``, as the fills say."""
        return self.positions.get(slot(self.only or venue, pair))

    def fold_position(self, f: Fill) -> str | None:
        """Fold a fill into its venue's position (a one-venue deployment: the venue's, whatever the fill names): the
        slot that moved, or None (seen before, or not bookable)."""
        key = slot(self.only or f.venue, f.pair)
        moved = self.positions.apply(f.fill_id, f.pair, f.side, f.quantity, f.price, f.fee, f.fee_currency, key)
        return key if moved else None

    async def resume(self) -> None:
        """At start: bracket follow-ups a crash may have cut short (idempotent), and exits the position no
        longer covers (fills while we were down)."""
        orders = self.store.orders
        async with self.store.lock:
            plans: dict[str, dict[str, Decimal]] = {}
            for oid in list(self.store.live):
                if (o := orders[oid]).role is not None:
                    key = slot(o.venue, o.pair)
                    await self.after_change(o, plans.get(key) or plans.setdefault(key, self.fit(key)))
            await self.refit_all()

    # -- brackets --------------------------------------------------------------------------------------
    def legs(self, entry: Order, req: OrderRequest, ids: list[str], ts: int) -> list[Order]:
        """The exit legs of a bracket: opposite side, reduce-only, waiting for the entry's fills."""
        specs = [(r, t) for r, t in (("stop_loss", req.stop_loss), ("take_profit", req.take_profit)) if t is not None]
        legs = [
            Order(
                order_id=oid,
                client_order_id=f"{RESERVED_CLIENT_PREFIX}{oid}:{role}",  # a namespace callers cannot use
                pair=entry.pair,
                side=opposite(entry.side),  # type: ignore[arg-type]
                type=role,  # type: ignore[arg-type]
                quantity=entry.quantity,  # sized to the entry's fills once it has some
                stop_price=trigger,
                time_in_force="GTC",
                reduce_only=True,
                role=role,  # type: ignore[arg-type]
                parent_order_id=entry.order_id,
                status=S.INITIALIZED,
                venue=entry.venue,
                paper_trade=entry.paper_trade,
                source=entry.source,
                signal_id=entry.signal_id,
                created_at=ts,
                updated_at=ts,
            )
            for oid, (role, trigger) in zip(ids, specs, strict=True)
        ]
        out = []
        for leg in legs:
            links = {"entry": entry.order_id}
            for other in legs:
                if other is not leg:
                    links["sibling"] = other.order_id
            out.append(msgspec.structs.replace(leg, linked_orders=links))
        return out

    async def ensure_legs(self, entry: Order, req: OrderRequest) -> None:
        """Create the legs a crash kept from being stored (the entry names them). Lock held."""
        if not entry.linked_orders:
            return
        missing = [oid for oid in entry.linked_orders.values() if await self.store.recall(oid) is None]
        if not missing:
            return
        ids = [entry.linked_orders[k] for k in ("stopLoss", "takeProfit") if k in entry.linked_orders]
        for leg in self.legs(entry, req, ids, entry.created_at):
            if leg.order_id in missing:
                await self.store.emit(leg, "initialized")

    async def after_change(self, o: Order, plan: dict[str, Decimal] | None = None) -> None:
        """Keep a bracket consistent with its fills. Idempotent; call with the lock held.

        Exits cover what the entry filled minus what the exits already closed: a waiting leg is activated
        (and sized) by the entry's first fill and resized by the next ones; when a leg fills, its sibling
        shrinks by as much and is canceled once nothing is left to cover, and what is left of a working
        entry is canceled (the trade is being exited); when the entry is done and nothing is left to cover,
        the legs still waiting are canceled. Waiting legs are also sized to the pair's position (``plan``,
        domain.exits); a leg the position leaves nothing to now keeps its size and waits (it is cut when
        it triggers), so a position that grows back is still protected.
        """
        if o.role is None or not o.linked_orders:
            return
        entry = o if o.role == "entry" else self.store.orders.get(o.linked_orders.get("entry", ""))
        if entry is None or not entry.linked_orders:
            return
        legs, exited, left = self._bracket(entry)
        # an entry rejected as unknown to the venue may still show up there (and fill): its legs wait for it
        entry_done = entry.status in TERMINAL_STATUSES and not revivable(entry)
        ts = now_ms()
        if exited > ZERO and not entry_done and entry.status is not S.PENDING_CANCEL:
            self.spawn(self.cancel(entry.order_id, "bracket: an exit leg filled"), "bracket-entry")
        # one leg is done - it filled, or it fired with nothing of the position left to reduce and its
        # entry is done too: the bracket is over, the other leg goes (one-cancels-other)
        over = next(
            (
                leg for leg in legs
                if leg.status is S.FILLED
                or (entry_done and leg.status is S.CANCELED and (leg.reason or "").startswith(REDUCE_ONLY_WHY))
            ),
            None,
        )  # fmt: skip
        for leg in legs:
            if leg.status in TERMINAL_STATUSES or leg.status is S.PENDING_CANCEL:
                continue
            if over is not None:
                why = "OCO: the other leg filled" if over.status is S.FILLED else f"OCO: the other leg: {over.reason}"
                self.spawn(self.cancel(leg.order_id, why), "bracket-leg")
                continue
            if left <= ZERO:
                if leg.status is S.INITIALIZED and not entry_done and exited == ZERO:
                    continue  # still waiting for the entry's first fill
                why = "OCO: the other leg filled" if exited > ZERO else "bracket: the entry ended unfilled"
                self.spawn(self.cancel(leg.order_id, why), "bracket-leg")
                continue
            if plan is None:
                plan = self.fit(slot(entry.venue, entry.pair))
            room = min(left, plan.get(leg.order_id, left))  # the pair's position caps the pair's exits
            if room <= ZERO:  # nothing of the position for it now: it waits as it is
                room = left if leg.status is S.INITIALIZED else min(left, leg.quantity - leg.filled_quantity)
            size = leg.filled_quantity + room
            if leg.status is S.INITIALIZED:

                def activate(cur: Order, size: Decimal = size) -> Order:
                    sized = msgspec.structs.replace(cur, quantity=size)
                    return transition(transition(sized, S.SUBMITTED, ts), S.ACCEPTED, ts)

                await self.store.update_locked(leg.order_id, activate, "activated")
                self.spawn(self.check_triggers(leg.pair, only=leg.order_id), "trigger")  # after we let go
            elif leg.triggered_at is None and leg.quantity != size:
                await self.store.update_locked(
                    leg.order_id, lambda cur, size=size: msgspec.structs.replace(cur, quantity=size, updated_at=ts),
                    "resized",
                )  # fmt: skip

    def _bracket(self, entry: Order) -> tuple[list[Order], Decimal, Decimal]:
        """A bracket's legs, what they exited, and what the entry filled that they still cover."""
        orders = self.store.orders
        legs = [orders[i] for i in (entry.linked_orders or {}).values() if i in orders]
        exited = sum((leg.filled_quantity for leg in legs), ZERO)
        return legs, exited, entry.filled_quantity - exited

    # -- reduce-only exits -----------------------------------------------------------------------------
    def _exit_of(self, o: Order) -> Exit:
        """A live reduce-only order as domain.exits plans it."""
        if not held_here(o):  # triggered, at the venue or on its way: what it may still execute
            ended = o.venue_status in ("closed", "canceled", "expired", "rejected") and o.venue_filled is not None
            left = (o.venue_filled if ended else o.quantity) - o.filled_quantity  # type: ignore[operator]
            resting = venue_leg(o)[0] == "limit" if o.type in TRIGGERED_TYPES else o.type == "limit"
            # executing (market) exits before resting limits: a stop that fires is not starved by a
            # take-profit resting above the market (that one is cut at the venue instead)
            rank = (int(resting), o.triggered_at or o.created_at, o.order_id)
            return Exit(o.order_id, o.side, max(left, ZERO), "sent", rank)
        rank = (0, o.created_at, o.order_id)
        links = o.linked_orders or {}
        entry = self.store.orders.get(links.get("entry", ""))
        if o.role not in ("stop_loss", "take_profit") or entry is None:
            return Exit(o.order_id, o.side, o.quantity - o.filled_quantity, "waiting", rank)
        sibling = self.store.orders.get(links.get("sibling", ""))
        busy = sibling is not None and sibling.order_id in self.store.live and not held_here(sibling)
        kind = "stop" if o.role == "stop_loss" else "take_profit"
        return Exit(o.order_id, o.side, max(self._bracket(entry)[2], ZERO), kind, rank, busy)

    def fit(self, key: str, instead: Exit | None = None) -> dict[str, Decimal]:
        """What each live reduce-only order of the slot ``key`` (a pair at a venue) may still execute (``instead``:
        a changed one)."""
        ids = self.exits.get(key, ())
        exits = [self._exit_of(self.store.orders[oid]) for oid in ids]
        if instead is not None:
            exits = [instead if e.order_id == instead.order_id else e for e in exits]
        rules = None
        if exits:
            o = self.store.orders[exits[0].order_id]
            rules = self.session_of(o).rules.get(o.pair)
        return fit_exits(self.positions.get(key), exits, rules.amount_step if rules else None)

    def room_to_grow(self, o: Order, wanted: Decimal) -> Decimal:
        """How much of ``wanted`` (more than it has now) a live reduce-only order may take: what the exits
        ahead of it and the position leave."""
        mine = dataclasses.replace(self._exit_of(o), wanted=wanted)
        key = slot(o.venue, o.pair)
        allowed = self.fit(key, mine).get(o.order_id, wanted)
        return min(allowed, reducible(self.positions.get(key), o.side))

    async def fit_to_position(self, o: Order) -> bool:
        """A reduce-only order about to go to the venue: cut to what the position leaves once the exits
        ahead of it took theirs, or canceled here when nothing is left. False: do not send it. Lock held."""
        remaining = o.quantity - o.filled_quantity
        allowed = self.fit(slot(o.venue, o.pair)).get(o.order_id, remaining)
        if allowed >= remaining:
            return True
        ts = now_ms()
        if allowed <= ZERO:
            new = await self.store.emit(transition(o, S.CANCELED, ts, nothing_to_reduce(o)), "canceled")
            self.log.warning("order {} canceled before it was sent: {}", o.order_id, new.reason)
            await self.after_change(new)
            return False
        cut = o.filled_quantity + allowed
        why = f"reduce-only: cut from {o.quantity} to {cut}, what is left of the {o.pair} position to reduce"
        await self.store.emit(msgspec.structs.replace(o, quantity=cut, updated_at=ts, reason=why), "resized")
        self.log.warning("order {}: {}", o.order_id, why)
        return True

    async def refit(self, key: str) -> None:
        """The position of the slot ``key`` (a pair at a venue, or an exit of it) changed: bracket legs follow the
        position, and sent exits it no longer covers are cut at the venue (newest first) or canceled. Lock held."""
        ids = self.exits.get(key)
        if not ids:
            return
        orders = self.store.orders
        plan = self.fit(key)
        entries = {orders[oid].parent_order_id for oid in ids}
        for eid in sorted(e for e in entries if e and e in orders):
            await self.after_change(orders[eid], plan)
        plan = self.fit(key)  # with the legs as they are now
        for oid in list(self.exits.get(key, ())):
            o = orders[oid]
            if o.status not in WORKING or o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE) or not at_venue(o):
                continue
            if self.session_of(o).in_flight(oid) or oid in self.shrinking or held_here(o):
                continue
            allowed = plan.get(oid, o.quantity - o.filled_quantity)
            if allowed < o.quantity - o.filled_quantity:
                self.shrinking.add(oid)  # one cut at a time per order
                self.spawn(self._shrink_at_venue(oid, o.filled_quantity + allowed), "reduce-only")

    async def refit_all(self) -> None:
        """Every slot with live exits refitted to its position. Lock held."""
        for key in list(self.exits):
            await self.refit(key)

    async def _shrink_at_venue(self, order_id: str, quantity: Decimal) -> None:
        """A reduce-only order at the venue the position no longer covers: cut there, or canceled."""
        try:
            await self._shrink_at_venue_once(order_id, quantity)
        finally:
            self.shrinking.discard(order_id)
        # the position may have moved again while we were at the venue (a venue that did not answer
        # raised above: the reconcile's refit tries again, no loop against a venue that is down)
        if (o := self.store.orders.get(order_id)) is not None:
            async with self.store.lock:
                await self.refit(slot(o.venue, o.pair))

    async def _shrink_at_venue_once(self, order_id: str, quantity: Decimal) -> None:
        o = self.store.orders.get(order_id)
        if o is None or o.status not in WORKING or o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE):
            return
        if quantity <= o.filled_quantity:
            await self.cancel(order_id, nothing_to_reduce(o))
            return
        refusal = await self.session_of(o).edit_at_venue(o, quantity, None)
        if refusal is not None:
            self.log.warning("reduce-only {} could not be cut to {} ({}): canceled", order_id, quantity, refusal)
            await self.cancel(order_id, nothing_to_reduce(o))
        else:
            self.log.warning("reduce-only {} cut to {}: the {} position shrank", order_id, quantity, o.pair)

    # -- triggers, expiry, timeouts ----------------------------------------------------------------------
    async def on_book(self, book: Book) -> None:
        await self.check_triggers(book.pair)

    def _sibling_busy(self, o: Order) -> bool:
        """A bracket leg must not fire while the other one is already executing."""
        orders = self.store.orders
        sib = orders.get((o.linked_orders or {}).get("sibling", "")) if o.parent_order_id else None
        return sib is not None and sib.triggered_at is not None and sib.status not in TERMINAL_STATUSES

    async def check_triggers(self, pair: str, only: str | None = None) -> None:
        orders = self.store.orders
        waiting = [
            o
            for o in ((orders[i] for i in self.store.live) if only is None else [orders[only]])
            if o.pair == pair
            and o.type in TRIGGERED_TYPES
            and o.status is S.ACCEPTED
            and not o.triggered_at
            and not o.native_trigger
        ]
        waiting.sort(key=lambda o: (o.created_at, o.order_id))  # several firing on one book: oldest first
        for o in waiting:
            oid = o.order_id
            book = self.book_of(o.venue, pair)  # the latest of the order's venue, whenever this runs
            if book is None:
                continue
            bid = book.bids[0][0] if book.bids else None
            ask = book.asks[0][0] if book.asks else None
            if not is_triggered(o, bid, ask) or self._sibling_busy(o):
                continue
            ts = now_ms()
            async with self.store.lock:
                cur = orders[oid]
                if cur.status is not S.ACCEPTED or cur.triggered_at is not None or self._sibling_busy(cur):
                    continue  # canceled or triggered meanwhile
                at = arrival(book.bids, book.asks)  # its arrival: the book it fired on (execution quality)
                marked = await self.store.update_locked(
                    oid, lambda c, ts=ts, at=at: with_arrival(trigger(c, ts), c, at)
                )
            if marked is not None:
                self.log.info("order {} triggered at bid {} / ask {} (stop {})", oid, bid, ask, o.stop_price)
                kind, price = venue_leg(marked)
                self.spawn(self.session_of(marked).send_triggered(oid, kind, price), "send-triggered")

    async def on_clock(self) -> None:
        now = now_ms()
        timeout = self.settings.DEFAULT_ORDER_TIMEOUT
        for oid in list(self.store.live):
            o = self.store.orders[oid]
            if o.status not in WORKING or o.status is S.PENDING_CANCEL:
                continue
            if o.expire_at is not None and now >= o.expire_at:
                await self.cancel(o.order_id, "expired")
            elif (
                timeout
                and o.expire_at is None
                and o.role is None
                and o.type not in TRIGGERED_TYPES
                and o.type not in ALGO_TYPES  # an algorithm's parent ends with its schedule
                and (now - o.created_at >= timeout)
            ):
                await self.cancel(o.order_id, f"timeout: still open after DEFAULT_ORDER_TIMEOUT={timeout} ms")
