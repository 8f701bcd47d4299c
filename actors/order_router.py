"""order-router: owns the working orders and their state machine; talks to the venue.

Path: approved order (durable hop from risk-gate) -> order created and persisted as an event ->
reply to the caller -> venue -> execution reports (durable hop to fill-tracker). Canonical fills come
back on the FILLS stream and move the order to PARTIALLY_FILLED / FILLED.

It also holds what the venue cannot: stop-loss, stop-limit and take-profit orders wait here and are
triggered from market data (domain.triggers); bracket orders (an entry with a stop-loss and a
take-profit leg, one-cancels-other); GTD expiry and DEFAULT_ORDER_TIMEOUT. Cancel, modify and
cancel-all are request/reply commands on ``tbx.orders.cancel`` / ``tbx.orders.modify``.

Durability rules kept here:
- a change is in memory only once its event is stored on ORDERS (publish, then keep); changes are
  serialised, so two handlers never build on the same version;
- the venue's trades are published as execution reports *before* the venue's answer is recorded on
  the order, so a crash in between leaves the answer unrecorded and the reconcile sends the trades
  again (duplicates are dropped by trade id downstream);
- on start, and every RECONCILE_EVERY_S, orders whose outcome is not fully known are reconciled with
  the venue by client order id; an order whose outcome is unknown stays in flight, never guessed;
- working stops and bracket legs are rebuilt from ORDERS on start, so they still trigger after a restart.

One order-router per bus prefix: its state is not shared between instances (see README).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import nats.js.errors

from actors.base import Actor
from actors.books import BookCache
from actors.ids import OrderIds
from actors.venues.base import Venue, VenueOrder, VenueOrderRequest, VenueRefused, VenueTrade
from actors.venues.paper import PaperVenue
from bus.client import Bus, Envelope
from bus.codec import DecodeFailure, decode
from bus.errors import Transient
from config.settings import Settings
from domain.exits import Exit, NetPositions, fit_exits, reducible
from domain.orders import IllegalTransition, Overfilled, apply_fill, back_from_pending, to_pending, transition, trigger
from domain.recent import FILL_DEDUPE_WINDOW, OrderTable
from domain.risk import RESERVED_CLIENT_PREFIX, is_multiple
from domain.triggers import TRIGGERED_TYPES, is_triggered, venue_leg, wrong_side
from schemas.messages import (
    TERMINAL_STATUSES,
    ApprovedOrder,
    Book,
    CancelOrder,
    CommandReply,
    Empty,
    ExecutionReport,
    Fill,
    FillRef,
    MarketRules,
    MarketsPage,
    ModifyOrder,
    Order,
    OrderEvent,
    OrderEventsPage,
    OrderEventsQuery,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    now_ms,
)

S = OrderStatus
ZERO = Decimal(0)
MAX_PAGE = 500
RECONCILE_EVERY_S = 10.0
RECONCILE_AFTER_MS = 5_000
CLOCK_EVERY_S = 0.25
KEEP_CLOSED = 1_000  # closed orders kept in memory; older ones are read back from ORDERS when asked for
SCAN_BATCH = 64  # orders read back from ORDERS at once when a list query goes beyond memory
MAX_SCAN = 20_000  # ... and at most this many per page (a page cut there is shorter; its cursor goes on)
CLOCK_SLACK_MS = 1_000  # creation times of orders read back may be this much out of id order
WORKING = frozenset({S.SUBMITTED, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_UPDATE, S.PENDING_CANCEL})


def same_order(o: Order, r: OrderRequest) -> bool:
    """Does a repeated client order id carry the same order? ``o`` is the order as first created."""
    price = r.price if r.type != "market" else None
    tif = r.time_in_force or o.time_in_force
    mine = (o.pair, o.side, o.type, o.quantity, o.price, o.stop_price, o.time_in_force, o.expire_at)
    theirs = (r.pair, r.side, r.type, r.quantity, price, r.stop_price, tif, r.expire_at)
    return mine == theirs and (o.post_only, o.reduce_only) == (r.post_only, r.reduce_only)


def at_venue(o: Order) -> bool:
    """Is the order (also) held by the venue, so that a cancel or modify must go there?"""
    return o.venue_status == "open"


def held_here(o: Order) -> bool:
    """A stop / take-profit not triggered yet, or a bracket leg waiting for its entry."""
    return o.status is S.INITIALIZED or (o.type in TRIGGERED_TYPES and o.triggered_at is None)


def opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


REDUCE_ONLY_WHY = "reduce-only:"  # how the reasons of cuts and cancels for want of a position start


def _nothing_to_reduce(o: Order) -> str:
    held = "long" if o.side == "sell" else "short"
    return f"{REDUCE_ONLY_WHY} no {held} {o.pair} position left to reduce"


def _event_in(msg: object | None) -> OrderEvent | None:
    """The event of a stored ORDERS message (None if missing or unreadable)."""
    if msg is None:
        return None
    try:
        return decode(getattr(msg, "data", None) or b"", OrderEvent)
    except DecodeFailure:
        return None


def _coid_key(client_order_id: str) -> str:
    """The KV key holding the order ids reserved for a client order id."""
    return "coid." + hashlib.sha1(client_order_id.encode()).hexdigest()


class OrderRouter(Actor):
    name = "order-router"

    def __init__(self, settings: Settings, bus: Bus, venue: Venue | None = None) -> None:
        super().__init__(settings, bus)
        self.books = BookCache(bus)
        self.venue: Venue = venue or PaperVenue(settings, bus, self.books)
        self.orders: dict[str, Order] = {}
        self.by_client: dict[str, str] = {}
        self.events: dict[str, list[OrderEvent]] = {}
        self.live: set[str] = set()  # orders that may still change: working, or waiting for fills
        self.cancelling: set[str] = set()  # cancels on their way to the venue
        self.sending: set[str] = set()  # creates on their way to the venue
        self.burned: dict[str, int] = {}  # order id -> a version whose publish may or may not be stored
        self.rules: dict[str, MarketRules] = {}
        # closed orders leave memory for the ORDERS stream (oldest first, KEEP_CLOSED kept): where each
        # order's events are stored there is all that stays, a few bytes per order
        self.closed: deque[str] = deque()
        self.first_seq = OrderTable("Q")
        self.last_seq = OrderTable("Q")
        self.evicted_created = 0  # the newest creation time among the orders that left memory
        self.lock = asyncio.Lock()
        self.processed = 0
        self.filled = 0
        self.rejected = 0
        self.venue_up: bool | None = None  # unknown until the venue is first asked
        # reduce-only exits: the net position of each pair (every fill on FILLS) and the live
        # reduce-only orders of each pair, so an exit never takes more than the position (domain.exits)
        self.positions = NetPositions(FILL_DEDUPE_WINDOW)
        self.exits: dict[str, set[str]] = {}
        self.shrinking: set[str] = set()  # reduce-only orders being cut at the venue

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.kv = await self.bus.kv(s.kv_state)
        self.ids = OrderIds(self.kv)
        await self.bus.replay(
            stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._rebuild, follow=False
        )
        self.log.info(
            "rebuilt {} orders ({} working) from the ORDERS stream",
            len(self.orders),
            sum(1 for o in self.orders.values() if o.status in WORKING or o.status is S.INITIALIZED),
        )
        await self.bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._fold_fill, follow=False)
        # the venue only after the rebuild: what it pushes is about orders we know
        self.venue.set_listener(self._on_venue_update)
        await self.venue.start()
        self.rules = {m.pair: m for m in await self.venue.markets()}
        await self._reconcile(min_age_ms=0)
        async with self.lock:  # bracket follow-ups a crash may have cut short (idempotent)
            plans: dict[str, dict[str, Decimal]] = {}
            for oid in list(self.live):
                if (o := self.orders[oid]).role is not None:
                    await self._after_change(o, plans.get(o.pair) or plans.setdefault(o.pair, self._fit(o.pair)))
            for pair in list(self.exits):  # exits the position no longer covers (fills while we were down)
                await self._refit(pair)
        self.books.add_hook(self._on_book)
        await self.books.start()
        await self.bus.subscribe(s.query("orders"), OrdersQuery, self._on_query, queue=self.name)
        await self.bus.subscribe(s.query("order_events"), OrderEventsQuery, self._on_events_query, queue=self.name)
        await self.bus.subscribe(s.query("markets"), Empty, self._on_markets_query, queue=self.name)
        await self.bus.subscribe(s.orders_cancel, CancelOrder, self._on_cancel, queue=self.name)
        await self.bus.subscribe(s.orders_modify, ModifyOrder, self._on_modify, queue=self.name)
        await self.bus.consume(
            stream=s.s_hops, durable="order-router", subject=s.approved_orders(), type_=ApprovedOrder,
            handler=self._on_approved,
        )  # fmt: skip
        await self.bus.consume(
            stream=s.s_fills, durable="order-router", subject=s.fills(), type_=Fill, handler=self._on_fill
        )
        self.spawn(self.every(RECONCILE_EVERY_S, self._reconcile, "reconcile"), "reconcile")
        self.spawn(self.every(CLOCK_EVERY_S, self._on_clock, "expiry and timeouts"), "clock")

    async def on_stop(self) -> None:
        await self.venue.stop()

    def stats(self) -> dict[str, int | float | str]:
        done = self.filled + self.rejected
        return {
            "ordersProcessed": self.processed,
            "ordersFilled": self.filled,
            "ordersRejected": self.rejected,
            "workingOrders": len(self.live),
            "successRate": round(100.0 * self.filled / done, 2) if done else 100.0,
        }

    # -- state -----------------------------------------------------------------------------------------
    async def _rebuild(self, ev: OrderEvent, env: Envelope) -> None:
        oid = ev.order.order_id
        self._stored_at(oid, env.seq or 0)
        known = self.orders.get(oid)
        if known is None or ev.order.version > known.version:
            self.events.setdefault(oid, []).append(ev)
            self._store(ev.order)

    def _stored_at(self, order_id: str, seq: int) -> None:
        if not self.first_seq.get(order_id):
            self.first_seq.set(order_id, seq)
        self.last_seq.set(order_id, max(seq, self.last_seq.get(order_id)))

    def _store(self, o: Order) -> None:
        prev = self.orders.get(o.order_id)
        self.orders[o.order_id] = o
        self.by_client[o.client_order_id] = o.order_id
        was_live = o.order_id in self.live
        if o.status in TERMINAL_STATUSES and (o.venue_filled is None or o.filled_quantity >= o.venue_filled):
            self.live.discard(o.order_id)
            if was_live or prev is None:
                self._retire(o.order_id)
        else:
            self.live.add(o.order_id)
        if o.reduce_only:
            if o.order_id in self.live:
                self.exits.setdefault(o.pair, set()).add(o.order_id)
            elif (ids := self.exits.get(o.pair)) is not None:
                ids.discard(o.order_id)
        if prev is None:
            self.processed += 1
        if o.status is S.FILLED and (prev is None or prev.status is not S.FILLED):
            self.filled += 1
        if o.status is S.REJECTED and (prev is None or prev.status is not S.REJECTED):
            self.rejected += 1

    def _retire(self, order_id: str) -> None:
        """An order is closed (all its fills in): it leaves memory once KEEP_CLOSED newer ones closed, and
        not while an order of its bracket still works (the bracket logic reads them together)."""
        self.closed.append(order_id)
        for _ in range(len(self.closed) - KEEP_CLOSED):
            oid = self.closed.popleft()
            o = self.orders.get(oid)
            if o is None or oid in self.live:
                continue
            if any(linked in self.live for linked in (o.linked_orders or {}).values()):
                self.closed.append(oid)  # looked at again later
                continue
            del self.orders[oid]
            self.events.pop(oid, None)
            self.burned.pop(oid, None)
            if self.by_client.get(o.client_order_id) == oid:
                del self.by_client[o.client_order_id]
            self.evicted_created = max(self.evicted_created, o.created_at)

    async def _recall(self, order_id: str) -> Order | None:
        """The order, from memory or - once it left memory - from its events on ORDERS (kept in memory
        again for a while). None if no such order was ever stored."""
        if (o := self.orders.get(order_id)) is not None:
            return o
        last = self.last_seq.get(order_id)
        if not last:
            return None
        events = await self._read_events(order_id, self.first_seq.get(order_id) or last, last)
        if (o := self.orders.get(order_id)) is not None:  # recalled by someone else meanwhile
            return o
        if not events:
            return None
        o = events[-1].order
        self.orders[order_id] = o
        self.events[order_id] = events
        self.by_client.setdefault(o.client_order_id, order_id)
        self._retire(order_id)
        return o

    async def _read_events(self, order_id: str, first: int, last: int) -> list[OrderEvent]:
        """An order's events, stored between ``first`` and ``last`` (its pair's events in between skipped)."""
        out: list[OrderEvent] = []
        seq, subject = first, None
        while seq <= last:
            msg = await self._stored(seq, subject)
            if msg is None or msg.seq is None or msg.seq > last:
                break
            seq = msg.seq + 1
            if (ev := _event_in(msg)) is None:
                continue
            subject = subject or self.subjects.order_events(ev.order.pair)
            if ev.order.order_id == order_id:
                out.append(ev)
        return out

    async def _order_of_client(self, client_order_id: str) -> str | None:
        """The order id a client order id names: memory, else its reservation in KV."""
        if (oid := self.by_client.get(client_order_id)) is not None:
            return oid
        if client_order_id.startswith(RESERVED_CLIENT_PREFIX):  # a bracket leg: tbx:<order id>:<role>
            oid = client_order_id.removeprefix(RESERVED_CLIENT_PREFIX).partition(":")[0]
            return oid if self.last_seq.get(oid) else None
        try:
            entry = await self.kv.get(_coid_key(client_order_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        ids = (entry.value or b"").decode().split(",")
        return ids[0] if ids and ids[0] and self.last_seq.get(ids[0]) else None

    async def _emit(self, order: Order, event: str) -> Order:
        """Persist a change as an event on ORDERS, then keep it. Call with ``self.lock`` held.

        A publish that fails may still have been stored: its version is burned, so the next change
        never reuses it (JetStream would drop it as a duplicate of the stored one)."""
        version = max(order.version, self.burned.get(order.order_id, 0)) + 1
        order = msgspec.structs.replace(order, version=version)
        ev = OrderEvent(event=event, order=order, ts=now_ms())  # when we recorded it (fills carry the venue's time)
        try:
            seq = await self.bus.js_publish(
                self.subjects.order_events(order.pair), ev, msg_id=f"{order.order_id}:{version}"
            )
        except Exception:
            self.burned[order.order_id] = version
            raise
        self._stored_at(order.order_id, seq)
        self.events.setdefault(order.order_id, []).append(ev)
        self._store(order)
        return order

    async def _update(self, order_id: str, change: Callable[[Order], Order], event: str | None = None) -> Order | None:
        """Apply ``change`` to the current order and persist the result (event named after its new
        status unless given). An illegal change is logged and ignored, never a crash."""
        async with self.lock:
            return await self._update_locked(order_id, change, event)

    async def _update_locked(
        self, order_id: str, change: Callable[[Order], Order], event: str | None = None
    ) -> Order | None:
        current = self.orders[order_id]
        try:
            new = change(current)
        except (IllegalTransition, Overfilled) as e:
            self.log.warning("ignored on {}: {}", order_id, e)
            return None
        if new is current:
            return None
        return await self._emit(new, event or new.status.value)

    # -- new orders ------------------------------------------------------------------------------------
    async def _on_approved(self, a: ApprovedOrder, env: Envelope) -> None:
        req = a.request
        async with self.lock:
            known = self.by_client.get(req.client_order_id)
            ids: list[str] = []
            if known is None:  # new, or one that left memory: its ids were reserved when it was created
                n_legs = (req.stop_loss is not None) + (req.take_profit is not None)
                ids, existed = await self._reserve_ids(req.client_order_id, 1 + n_legs)
                if existed and await self._recall(ids[0]) is not None:
                    known = ids[0]
            if known is None:
                ref = a.estimated_cost / req.quantity if a.estimated_cost and req.quantity else None
                order = await self._create(req, ids, ref)
            else:
                order = self.orders[known]
                first = self.events[known][0].order if self.events.get(known) else order
                if not same_order(first, req):
                    await self._refuse_duplicate(a, order)
                    return
                await self._ensure_legs(order, req)  # a crash between the entry and its legs
        await self._reply(a, order)
        if order.venue_status is None and order.status in (S.SUBMITTED, S.PENDING_CANCEL):
            # routed beside the consumer, so one slow venue call never holds up the next order;
            # a crash here leaves it SUBMITTED and the reconcile at start routes it
            self.spawn(self._route_logged(order.order_id), "route")

    async def _reserve_ids(self, client_order_id: str, n: int) -> tuple[list[str], bool]:
        """The order ids of this client order id, and whether they were reserved before: reserved once
        in KV, so a create retried after a lost publish (even one that was stored) reuses them and never
        makes a second order."""
        key = _coid_key(client_order_id)
        ids = [await self.ids.next() for _ in range(n)]
        try:
            await self.kv.create(key, ",".join(ids).encode())
            return ids, False
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self.kv.get(key)
            return (entry.value or b"").decode().split(","), True

    async def _create(self, req: OrderRequest, ids: list[str], reference_price: Decimal | None = None) -> Order:
        """Create the order (and the legs of a bracket) under its reserved ids and persist them. Call with
        the lock held."""
        ts = now_ms()
        order = Order(
            order_id=ids[0],
            client_order_id=req.client_order_id,
            pair=req.pair,
            side=req.side,
            type=req.type,
            quantity=req.quantity,
            price=req.price if req.type != "market" else None,
            stop_price=req.stop_price,
            time_in_force=req.time_in_force or self.settings.DEFAULT_TIME_IN_FORCE,  # type: ignore[arg-type]
            expire_at=req.expire_at,
            post_only=req.post_only,
            reduce_only=req.reduce_only,
            role="entry" if len(ids) > 1 else None,
            reference_price=reference_price,
            status=S.SUBMITTED,
            venue=self.venue.name,
            source=req.source,
            signal_id=req.signal_id,
            created_at=ts,
            updated_at=ts,
        )
        legs = self._legs(order, req, ids[1:], ts)
        if legs:
            names = {"stop_loss": "stopLoss", "take_profit": "takeProfit"}
            order = msgspec.structs.replace(order, linked_orders={names[str(leg.role)]: leg.order_id for leg in legs})
        order = await self._emit(order, "submitted")  # the entry first: then a retry finds it and adds the legs
        for leg in legs:
            await self._emit(leg, "initialized")
        self.log.info(
            "order {} ({}) submitted: {} {} {} {}{}", order.order_id, order.client_order_id, order.side,
            order.quantity, order.pair, order.type, f" with legs {order.linked_orders}" if legs else "",
        )  # fmt: skip
        return order

    def _legs(self, entry: Order, req: OrderRequest, ids: list[str], ts: int) -> list[Order]:
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
                venue=self.venue.name,
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

    async def _ensure_legs(self, entry: Order, req: OrderRequest) -> None:
        """Create the legs a crash kept from being stored (the entry names them). Lock held."""
        if not entry.linked_orders:
            return
        missing = [oid for oid in entry.linked_orders.values() if await self._recall(oid) is None]
        if not missing:
            return
        ids = [entry.linked_orders[k] for k in ("stopLoss", "takeProfit") if k in entry.linked_orders]
        for leg in self._legs(entry, req, ids, entry.created_at):
            if leg.order_id in missing:
                await self._emit(leg, "initialized")

    async def _refuse_duplicate(self, a: ApprovedOrder, order: Order) -> None:
        self.log.warning("client order id {} reused for a different order: refused", order.client_order_id)
        if a.reply_to:
            detail = (
                f"clientOrderId {order.client_order_id} already names order {order.order_id} "
                f"({order.side} {order.quantity} {order.pair} {order.type}) with other content"
            )
            reply = OrderReply(ok=False, code="DUPLICATE_CLIENT_ORDER_ID", field="clientOrderId", detail=detail)
            await self.bus.respond_to(a.reply_to, reply)

    async def _reply(self, a: ApprovedOrder, order: Order) -> None:
        if a.reply_to:
            reply = OrderReply(ok=True, order=order, risk_validation=a.risk_validation, estimated_cost=a.estimated_cost)
            await self.bus.respond_to(a.reply_to, reply)

    async def _route_logged(self, order_id: str) -> None:
        try:
            await self._route(order_id)
        except Transient as e:
            self.log.warning("{}; the reconcile will try again", e)

    async def _route(self, order_id: str) -> None:
        """Take a SUBMITTED order where it goes: the venue, or our trigger book (stops, take-profits)."""
        o = self.orders[order_id]
        if o.status is S.PENDING_CANCEL and o.venue_status is None and order_id not in self.sending:
            # canceled before we heard from the venue: ask it before calling it canceled
            found = await self.venue.fetch_order(o.client_order_id, o.pair)
            if found is not None:
                await self._on_venue_result(order_id, found, found.trades)  # then the pending cancel goes out
                return
            ts = now_ms()
            async with self.lock:
                new = await self._update_locked(
                    order_id, lambda cur: transition(cur, S.CANCELED, ts, cur.reason)
                    if cur.status is S.PENDING_CANCEL and cur.venue_status is None else cur,
                )  # fmt: skip
                if new is not None:
                    await self._after_change(new)
            return
        if o.status is not S.SUBMITTED or o.venue_status is not None:
            return
        if o.type in TRIGGERED_TYPES:
            ts = now_ms()
            await self._update(
                order_id, lambda cur: transition(cur, S.ACCEPTED, ts) if cur.status is S.SUBMITTED else cur
            )
            await self._check_triggers(o.pair, only=order_id)
            return
        await self._send(order_id, o.type, o.price)  # type: ignore[arg-type]

    async def _send(self, order_id: str, venue_type: str, price: Decimal | None) -> None:
        if self.orders[order_id].reduce_only:  # cut to the position under the lock (others may be sending)
            async with self.lock:
                if not await self._fit_to_position(self.orders[order_id]):
                    return  # nothing left to reduce: canceled here, never sent
                self.sending.add(order_id)
        else:
            self.sending.add(order_id)  # the hot path takes no lock
        o = self.orders[order_id]
        request = VenueOrderRequest(
            o.client_order_id, o.pair, o.side, venue_type, o.quantity, price,  # type: ignore[arg-type]
            "GTC" if o.time_in_force == "GTD" else o.time_in_force, o.post_only, o.reduce_only,
        )  # fmt: skip
        try:
            result = await self.venue.create_order(request)
        except Exception as e:
            await self._venue_answers(False, f"{type(e).__name__}: {e}")
            raise Transient(f"venue {self.venue.name} unavailable for {order_id}: {e}") from e
        finally:
            self.sending.discard(order_id)
        await self._venue_answers(True)
        await self._on_venue_result(order_id, result, result.trades)

    async def _venue_answers(self, up: bool, why: str = "") -> None:
        """A critical VENUE_DOWN alert when the venue stops answering, VENUE_UP when it is back: once per change."""
        was, self.venue_up = self.venue_up, up
        if not up and was is not False:
            await self.alert("critical", "VENUE_DOWN", f"venue {self.venue.name} unavailable: {why}")
        elif up and was is False:
            await self.alert("warning", "VENUE_UP", f"venue {self.venue.name} answers again")

    # -- what the venue says ---------------------------------------------------------------------------
    async def _on_venue_update(self, r: VenueOrder, new_trades: list[VenueTrade]) -> None:
        oid = self.by_client.get(r.client_order_id)
        if oid is None:
            self.log.warning("venue update for an unknown client order id {}", r.client_order_id)
            return
        await self._on_venue_result(oid, r, new_trades)

    async def _on_venue_result(
        self, order_id: str, r: VenueOrder, trades: list[VenueTrade], *, edit_answer: bool = False
    ) -> None:
        """Publish the venue's trades, then record its answer on the order."""
        o = self.orders[order_id]
        quantity = r.quantity if r.quantity is not None else o.quantity  # the venue's, after a modify too
        if trades and quantity > o.quantity:
            # a modify that enlarged the order and traded at once: the order must have its new size before
            # those trades come back as fills, or they would read as an overfill
            async with self.lock:
                grown = await self._update_locked(
                    order_id,
                    lambda cur: msgspec.structs.replace(cur, quantity=quantity, updated_at=now_ms())
                    if quantity > cur.quantity else cur,
                    "quantity_changed",
                )  # fmt: skip
                if grown is not None:
                    await self._after_change(grown)
        for t in trades:
            report = ExecutionReport(
                kind="trade", order_id=o.order_id, client_order_id=o.client_order_id, pair=o.pair,
                side=o.side, order_quantity=quantity, venue=self.venue.name, ts=t.ts,
                trade_id=t.trade_id, quantity=t.quantity, price=t.price, fee=t.fee,
                fee_currency=t.fee_currency, liquidity=t.liquidity,
            )  # fmt: skip
            await self.bus.js_publish(
                self.subjects.exec_reports(o.pair), report, msg_id=f"{self.venue.name}:{t.trade_id}"
            )
        async with self.lock:
            new = await self._update_locked(order_id, lambda cur: self._with_venue_answer(cur, r, edit_answer))
            if new is not None:
                await self._after_change(new)
                if new.reduce_only:  # an exit's answer moves what the others may take
                    await self._refit(new.pair)
        o = self.orders[order_id]
        if o.status is S.PENDING_CANCEL and o.venue_status == "open" and order_id not in self.cancelling:
            self.spawn(self._cancel_at_venue(order_id, o.reason or "canceled"), "cancel")  # asked while in flight

    def _with_venue_answer(self, cur: Order, r: VenueOrder, edit_answer: bool) -> Order:
        quantity = r.quantity if r.quantity is not None else cur.quantity
        price = r.price if r.price is not None and cur.type != "market" else cur.price
        same = (cur.venue_status, cur.venue_filled, cur.quantity, cur.price) == (r.status, r.filled, quantity, price)
        if same and cur.status is not S.SUBMITTED and not (edit_answer and cur.status is S.PENDING_UPDATE):
            return cur  # nothing new
        ts = now_ms()
        new = msgspec.structs.replace(
            cur, venue_order_id=r.venue_order_id, venue_status=r.status, venue_filled=r.filled, updated_at=ts,
            quantity=quantity, price=price,
        )  # fmt: skip
        if r.status == "rejected":
            self.log.warning("order {} rejected by {}: {}", cur.order_id, self.venue.name, r.reason)
            return transition(new, S.REJECTED, ts, r.reason)
        if r.status in ("canceled", "expired"):
            reason = cur.reason if cur.status is S.PENDING_CANCEL else (r.reason or cur.reason)
            if cur.filled_quantity >= r.filled:  # the venue's trades are all in: nothing more to wait for
                final = S.EXPIRED if r.status == "expired" or cur.reason == "expired" else S.CANCELED
                return transition(new, final, ts, reason)
            return msgspec.structs.replace(new, reason=reason)  # the fill handler ends it with the last fill
        if cur.status is S.SUBMITTED:
            return transition(new, S.ACCEPTED, ts, r.reason)
        if cur.status is S.PENDING_UPDATE and edit_answer:
            return back_from_pending(new, ts)  # the modify is done: quantity and price are the venue's
        return new

    # -- fills -----------------------------------------------------------------------------------------
    async def _fold_fill(self, f: Fill, env: Envelope) -> None:
        """A fill read back at start: the position it made. A fill of a known order that its order does not
        list yet is left for the FILLS consumer, which folds it together with the order (never twice)."""
        o = self.orders.get(f.order_id)
        if o is not None and all(ref.fill_id != f.fill_id for ref in o.fills):
            return
        self._fold_position(f)

    async def _on_fill(self, f: Fill, env: Envelope) -> None:
        if f.order_id not in self.orders:
            # a fill of an order that is not ours (an outside writer): the ledger books it, the position moves
            async with self.lock:
                if self._fold_position(f):
                    await self._refit(f.pair)
            return
        ref = FillRef(
            fill_id=f.fill_id, quantity=f.quantity, price=f.price, fee=f.fee, fee_currency=f.fee_currency,
            liquidity=f.liquidity, timestamp=f.timestamp,
        )  # fmt: skip

        def change(cur: Order) -> Order:
            new = apply_fill(cur, ref)
            if (
                new is not cur
                and new.status is S.PARTIALLY_FILLED
                and new.venue_status in ("canceled", "expired")
                and new.venue_filled is not None
                and new.filled_quantity >= new.venue_filled
            ):
                final = S.EXPIRED if new.venue_status == "expired" or cur.reason == "expired" else S.CANCELED
                new = transition(new, final, f.timestamp, cur.reason)
            return new

        async with self.lock:  # the position and the order's fills move together: an exit is never counted twice
            moved = self._fold_position(f)
            await self._update_locked(f.order_id, change)
            # also on a redelivered fill that changed nothing: finish what a crash may have cut short
            await self._after_change(self.orders[f.order_id])
            if moved:
                await self._refit(f.pair)

    def _fold_position(self, f: Fill) -> bool:
        return self.positions.apply(f.fill_id, f.pair, f.side, f.quantity, f.price, f.fee, f.fee_currency)

    # -- brackets --------------------------------------------------------------------------------------
    async def _after_change(self, o: Order, plan: dict[str, Decimal] | None = None) -> None:
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
        entry = o if o.role == "entry" else self.orders.get(o.linked_orders.get("entry", ""))
        if entry is None or not entry.linked_orders:
            return
        legs, exited, left = self._bracket(entry)
        entry_done = entry.status in TERMINAL_STATUSES
        ts = now_ms()
        if exited > ZERO and not entry_done and entry.status is not S.PENDING_CANCEL:
            self.spawn(self._cancel(entry.order_id, "bracket: an exit leg filled"), "bracket-entry")
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
                self.spawn(self._cancel(leg.order_id, why), "bracket-leg")
                continue
            if left <= ZERO:
                if leg.status is S.INITIALIZED and not entry_done and exited == ZERO:
                    continue  # still waiting for the entry's first fill
                why = "OCO: the other leg filled" if exited > ZERO else "bracket: the entry ended unfilled"
                self.spawn(self._cancel(leg.order_id, why), "bracket-leg")
                continue
            if plan is None:
                plan = self._fit(entry.pair)
            room = min(left, plan.get(leg.order_id, left))  # the pair's position caps the pair's exits
            if room <= ZERO:  # nothing of the position for it now: it waits as it is
                room = left if leg.status is S.INITIALIZED else min(left, leg.quantity - leg.filled_quantity)
            size = leg.filled_quantity + room
            if leg.status is S.INITIALIZED:

                def activate(cur: Order, size: Decimal = size) -> Order:
                    sized = msgspec.structs.replace(cur, quantity=size)
                    return transition(transition(sized, S.SUBMITTED, ts), S.ACCEPTED, ts)

                await self._update_locked(leg.order_id, activate, "activated")
                self.spawn(self._check_triggers(leg.pair, only=leg.order_id), "trigger")  # after we let go
            elif leg.triggered_at is None and leg.quantity != size:
                await self._update_locked(
                    leg.order_id, lambda cur, size=size: msgspec.structs.replace(cur, quantity=size, updated_at=ts),
                    "resized",
                )  # fmt: skip

    def _bracket(self, entry: Order) -> tuple[list[Order], Decimal, Decimal]:
        """A bracket's legs, what they exited, and what the entry filled that they still cover."""
        legs = [self.orders[i] for i in (entry.linked_orders or {}).values() if i in self.orders]
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
        entry = self.orders.get(links.get("entry", ""))
        if o.role not in ("stop_loss", "take_profit") or entry is None:
            return Exit(o.order_id, o.side, o.quantity - o.filled_quantity, "waiting", rank)
        sibling = self.orders.get(links.get("sibling", ""))
        busy = sibling is not None and sibling.order_id in self.live and not held_here(sibling)
        kind = "stop" if o.role == "stop_loss" else "take_profit"
        return Exit(o.order_id, o.side, max(self._bracket(entry)[2], ZERO), kind, rank, busy)

    def _fit(self, pair: str, instead: Exit | None = None) -> dict[str, Decimal]:
        """What each live reduce-only order of ``pair`` may still execute (``instead``: a changed one)."""
        exits = [self._exit_of(self.orders[oid]) for oid in self.exits.get(pair, ())]
        if instead is not None:
            exits = [instead if e.order_id == instead.order_id else e for e in exits]
        rules = self.rules.get(pair)
        return fit_exits(self.positions.get(pair), exits, rules.amount_step if rules else None)

    async def _fit_to_position(self, o: Order) -> bool:
        """A reduce-only order about to go to the venue: cut to what the position leaves once the exits
        ahead of it took theirs, or canceled here when nothing is left. False: do not send it. Lock held."""
        remaining = o.quantity - o.filled_quantity
        allowed = self._fit(o.pair).get(o.order_id, remaining)
        if allowed >= remaining:
            return True
        ts = now_ms()
        if allowed <= ZERO:
            new = await self._emit(transition(o, S.CANCELED, ts, _nothing_to_reduce(o)), "canceled")
            self.log.warning("order {} canceled before it was sent: {}", o.order_id, new.reason)
            await self._after_change(new)
            return False
        cut = o.filled_quantity + allowed
        why = f"reduce-only: cut from {o.quantity} to {cut}, what is left of the {o.pair} position to reduce"
        await self._emit(msgspec.structs.replace(o, quantity=cut, updated_at=ts, reason=why), "resized")
        self.log.warning("order {}: {}", o.order_id, why)
        return True

    async def _refit(self, pair: str) -> None:
        """The position of ``pair`` (or an exit of it) changed: bracket legs follow the position, and sent
        exits it no longer covers are cut at the venue (newest first) or canceled. Lock held."""
        ids = self.exits.get(pair)
        if not ids:
            return
        plan = self._fit(pair)
        entries = {self.orders[oid].parent_order_id for oid in ids}
        for eid in sorted(e for e in entries if e and e in self.orders):
            await self._after_change(self.orders[eid], plan)
        plan = self._fit(pair)  # with the legs as they are now
        for oid in list(self.exits.get(pair, ())):
            o = self.orders[oid]
            if o.status not in WORKING or o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE) or not at_venue(o):
                continue
            if oid in self.cancelling or oid in self.sending or oid in self.shrinking or held_here(o):
                continue
            allowed = plan.get(oid, o.quantity - o.filled_quantity)
            if allowed < o.quantity - o.filled_quantity:
                self.shrinking.add(oid)  # one cut at a time per order
                self.spawn(self._shrink_at_venue(oid, o.filled_quantity + allowed), "reduce-only")

    async def _shrink_at_venue(self, order_id: str, quantity: Decimal) -> None:
        """A reduce-only order at the venue the position no longer covers: cut there, or canceled."""
        try:
            await self._shrink_at_venue_once(order_id, quantity)
        finally:
            self.shrinking.discard(order_id)
        # the position may have moved again while we were at the venue (a venue that did not answer
        # raised above: the reconcile's refit tries again, no loop against a venue that is down)
        if (o := self.orders.get(order_id)) is not None:
            async with self.lock:
                await self._refit(o.pair)

    async def _shrink_at_venue_once(self, order_id: str, quantity: Decimal) -> None:
        o = self.orders.get(order_id)
        if o is None or o.status not in WORKING or o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE):
            return
        if quantity <= o.filled_quantity:
            await self._cancel(order_id, _nothing_to_reduce(o))
            return
        refusal = await self._edit_at_venue(o, quantity, None)
        if refusal is not None:
            self.log.warning("reduce-only {} could not be cut to {} ({}): canceled", order_id, quantity, refusal)
            await self._cancel(order_id, _nothing_to_reduce(o))
        else:
            self.log.warning("reduce-only {} cut to {}: the {} position shrank", order_id, quantity, o.pair)

    async def _edit_at_venue(self, o: Order, quantity: Decimal | None, price: Decimal | None) -> str | None:
        """Change an order the venue holds (through PENDING_UPDATE). The venue's refusal, or None."""
        ts = now_ms()
        pending = await self._update(
            o.order_id, lambda cur: to_pending(cur, S.PENDING_UPDATE, ts) if cur.status is o.status else cur
        )
        if pending is None:  # it changed meanwhile (filled, canceled)
            return "the order changed meanwhile; look at it and try again"
        try:
            result = await self.venue.edit_order(o.client_order_id, o.pair, quantity, price)
        except VenueRefused as e:
            ts = now_ms()
            await self._update(o.order_id, lambda cur: back_from_pending(cur, ts))
            return str(e)
        await self._on_venue_result(o.order_id, result, result.trades, edit_answer=True)
        return None

    # -- triggers, expiry, timeouts ----------------------------------------------------------------------
    async def _on_book(self, book: Book) -> None:
        await self._check_triggers(book.pair)

    def _sibling_busy(self, o: Order) -> bool:
        """A bracket leg must not fire while the other one is already executing."""
        sib = self.orders.get((o.linked_orders or {}).get("sibling", "")) if o.parent_order_id else None
        return sib is not None and sib.triggered_at is not None and sib.status not in TERMINAL_STATUSES

    async def _check_triggers(self, pair: str, only: str | None = None) -> None:
        book = self.books.books.get(pair)  # the latest, whenever this runs
        if book is None:
            return
        bid = book.bids[0][0] if book.bids else None
        ask = book.asks[0][0] if book.asks else None
        waiting = [
            o
            for o in ((self.orders[i] for i in self.live) if only is None else [self.orders[only]])
            if o.pair == pair and o.type in TRIGGERED_TYPES and o.status is S.ACCEPTED and not o.triggered_at
        ]
        waiting.sort(key=lambda o: (o.created_at, o.order_id))  # several firing on one book: oldest first
        for o in waiting:
            oid = o.order_id
            if not is_triggered(o, bid, ask) or self._sibling_busy(o):
                continue
            ts = now_ms()
            async with self.lock:
                cur = self.orders[oid]
                if cur.status is not S.ACCEPTED or cur.triggered_at is not None or self._sibling_busy(cur):
                    continue  # canceled or triggered meanwhile
                marked = await self._update_locked(oid, lambda c, ts=ts: trigger(c, ts))
            if marked is not None:
                self.log.info("order {} triggered at bid {} / ask {} (stop {})", oid, bid, ask, o.stop_price)
                kind, price = venue_leg(marked)
                self.spawn(self._send_triggered(oid, kind, price), "send-triggered")

    async def _send_triggered(self, order_id: str, kind: str, price: Decimal | None) -> None:
        try:
            await self._send(order_id, kind, price)
        except Transient as e:
            self.log.warning("{}; the reconcile will try again", e)

    async def _on_clock(self) -> None:
        now = now_ms()
        timeout = self.settings.DEFAULT_ORDER_TIMEOUT
        for oid in list(self.live):
            o = self.orders[oid]
            if o.status not in WORKING or o.status is S.PENDING_CANCEL:
                continue
            if o.expire_at is not None and now >= o.expire_at:
                await self._cancel(o.order_id, "expired")
            elif (
                timeout
                and o.expire_at is None
                and o.role is None
                and o.type not in TRIGGERED_TYPES
                and (now - o.created_at >= timeout)
            ):
                await self._cancel(o.order_id, f"timeout: still open after DEFAULT_ORDER_TIMEOUT={timeout} ms")

    # -- cancel and modify -----------------------------------------------------------------------------
    async def _cancel(self, order_id: str, reason: str) -> tuple[Order, str | None]:
        """Cancel one order. Returns the order after the attempt and why it was refused, if it was.
        Decided under the lock, on the order as it is now (a trigger may have just sent it out)."""
        ts = now_ms()
        final = S.EXPIRED if reason == "expired" else S.CANCELED
        async with self.lock:
            o = self.orders.get(order_id) or await self._recall(order_id)
            if o is None:
                raise KeyError(order_id)
            if o.status in TERMINAL_STATUSES:
                return o, f"order {order_id} is already {o.status.value}"
            if o.status is S.PENDING_CANCEL:
                return o, None
            if held_here(o):  # never sent anywhere: canceled here
                new = await self._emit(transition(o, final, ts, reason), final.value)
                await self._after_change(new)
                return new, None
            if o.venue_status is None:  # on its way to the venue: marked now, canceled there once it has it
                new = await self._emit(to_pending(o, S.PENDING_CANCEL, ts, reason), "pending_cancel")
                return new, None
            if not at_venue(o):
                return o, f"order {order_id} cannot be canceled now ({o.status.value}, venue: {o.venue_status})"
        return await self._cancel_at_venue(order_id, reason)

    async def _cancel_at_venue(self, order_id: str, reason: str) -> tuple[Order, str | None]:
        self.cancelling.add(order_id)
        try:
            return await self._cancel_at_venue_once(order_id, reason)
        finally:
            self.cancelling.discard(order_id)

    async def _cancel_at_venue_once(self, order_id: str, reason: str) -> tuple[Order, str | None]:
        o = self.orders[order_id]
        if o.status in TERMINAL_STATUSES:
            return o, f"order {order_id} is already {o.status.value}"
        if o.status is not S.PENDING_CANCEL:
            ts = now_ms()
            await self._update(order_id, lambda cur: to_pending(cur, S.PENDING_CANCEL, ts, reason))
        try:
            result = await self.venue.cancel_order(o.client_order_id, o.pair, reason)
        except VenueRefused as e:
            # the venue no longer has it open (filled meanwhile, say): back to where it was; fills finish it
            ts = now_ms()
            await self._update(order_id, lambda cur: back_from_pending(cur, ts))
            return self.orders[order_id], str(e)
        except Exception as e:
            self.log.warning(
                "cancel of {} at {} failed ({}); the reconcile will try again", order_id, self.venue.name, e
            )
            return self.orders[order_id], None
        await self._on_venue_result(order_id, result, [])
        return self.orders[order_id], None

    async def _on_cancel(self, cmd: CancelOrder, env: Envelope) -> None:
        reason = cmd.reason or "canceled by request"
        if cmd.all:
            ids = [
                o.order_id
                for o in sorted((self.orders[oid] for oid in self.live), key=lambda o: o.created_at)
                if (o.status in WORKING or o.status is S.INITIALIZED) and (cmd.pair is None or o.pair == cmd.pair)
            ]
            gate = asyncio.Semaphore(16)

            async def one(oid: str) -> Order:
                async with gate:
                    return (await self._cancel(oid, reason))[0]

            results = await asyncio.gather(*(one(oid) for oid in ids))
            await self.bus.respond(env, CommandReply(ok=True, orders=list(results)))
            return
        oid = cmd.order_id or await self._order_of_client(cmd.client_order_id or "")
        if oid is None or await self._recall(oid) is None:
            await self.bus.respond(
                env,
                CommandReply(
                    ok=False,
                    code="ORDER_NOT_FOUND",
                    field="orderId",
                    detail=f"no order {cmd.order_id or cmd.client_order_id}",
                ),
            )
            return
        order, refusal = await self._cancel(oid, reason)
        if refusal is not None:
            reply = CommandReply(ok=False, orders=[order], code="CANCEL_REFUSED", detail=refusal)
        else:
            reply = CommandReply(ok=True, orders=[order])
        await self.bus.respond(env, reply)

    async def _on_modify(self, cmd: ModifyOrder, env: Envelope) -> None:
        o = await self._recall(cmd.order_id)
        if o is None:
            await self.bus.respond(
                env, CommandReply(ok=False, code="ORDER_NOT_FOUND", field="orderId", detail=f"no order {cmd.order_id}")
            )
            return
        refusal, field = self._modify_refusal(o, cmd)
        if refusal is not None:
            await self.bus.respond(
                env, CommandReply(ok=False, orders=[o], code="MODIFY_REFUSED", field=field, detail=refusal)
            )
            return
        ts = now_ms()
        changes: dict[str, object] = {"updated_at": ts}
        if cmd.quantity is not None:
            changes["quantity"] = cmd.quantity
        if cmd.price is not None:
            changes["price"] = cmd.price
        if cmd.stop_price is not None:
            changes["stop_price"] = cmd.stop_price
        if held_here(o):
            await self._update(o.order_id, lambda cur: msgspec.structs.replace(cur, **changes), "modified")
            await self.bus.respond(env, CommandReply(ok=True, orders=[self.orders.get(o.order_id, o)]))
            return
        refusal = await self._edit_at_venue(o, cmd.quantity, cmd.price)
        if refusal is not None:
            await self.bus.respond(
                env,
                CommandReply(ok=False, orders=[self.orders.get(o.order_id, o)], code="MODIFY_REFUSED", detail=refusal),
            )
            return
        await self.bus.respond(env, CommandReply(ok=True, orders=[self.orders.get(o.order_id, o)]))

    def _modify_refusal(self, o: Order, cmd: ModifyOrder) -> tuple[str | None, str | None]:
        if o.status in TERMINAL_STATUSES:
            return f"order {o.order_id} is already {o.status.value}", "orderId"
        if o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE):
            return f"order {o.order_id} is {o.status.value}: wait for the venue's answer", "orderId"
        if cmd.quantity is None and cmd.price is None and cmd.stop_price is None:
            return "nothing to change: give quantity, price or stopPrice", None
        if cmd.quantity is not None:
            if o.role in ("stop_loss", "take_profit"):
                return "a bracket leg's quantity follows its entry's fills", "quantity"
            if not cmd.quantity.is_finite() or cmd.quantity <= o.filled_quantity:
                return f"quantity {cmd.quantity} must be above the filled {o.filled_quantity}", "quantity"
            if o.reduce_only and cmd.quantity > o.quantity and o.order_id in self.live:
                wanted = cmd.quantity - o.filled_quantity
                mine = self._exit_of(o)
                allowed = self._fit(o.pair, dataclasses.replace(mine, wanted=wanted)).get(o.order_id, wanted)
                room = min(allowed, reducible(self.positions.get(o.pair), o.side))
                if room < wanted:
                    most = o.filled_quantity + room
                    return f"reduceOnly: quantity {cmd.quantity} is above what the position leaves ({most})", "quantity"
        if cmd.price is not None:
            if o.type in ("market", "stop_loss") or (o.type == "take_profit" and o.price is None):
                return f"a {o.type} order trades at market: it has no price to change", "price"
            if not cmd.price.is_finite() or cmd.price <= ZERO:
                return "price must be a positive number", "price"
        if cmd.stop_price is not None and (not cmd.stop_price.is_finite() or cmd.stop_price <= ZERO):
            return "stopPrice must be a positive number", "stopPrice"
        rules = self.rules.get(o.pair)
        if rules is not None:
            for field, value, step in (
                ("quantity", cmd.quantity, rules.amount_step),
                ("price", cmd.price, rules.tick_size),
                ("stopPrice", cmd.stop_price, rules.tick_size),
            ):
                if value is not None and not is_multiple(value, step):
                    unit = "amount step" if field == "quantity" else "tick"
                    return f"{field} {value} is not a multiple of the {unit} {step} for {o.pair}", field
        if cmd.stop_price is not None:
            if o.type not in TRIGGERED_TYPES or o.triggered_at is not None:
                return "only a stop or take-profit that has not triggered has a stopPrice to change", "stopPrice"
            book = self.books.books.get(o.pair)
            bid = book.bids[0][0] if book and book.bids else None
            ask = book.asks[0][0] if book and book.asks else None
            if (why := wrong_side(o.type, o.side, cmd.stop_price, bid, ask)) is not None:
                return why, "stopPrice"
        if not held_here(o) and not at_venue(o):
            return f"order {o.order_id} cannot be modified now ({o.status.value})", "orderId"
        return None, None

    # -- reconcile -------------------------------------------------------------------------------------
    async def _reconcile(self, min_age_ms: int = RECONCILE_AFTER_MS) -> None:
        """Ask the venue about every order it may hold whose state we cannot be sure of: unanswered, open
        there (a lost push), pending a command, or missing fills. One failure never stops the pass."""
        now = now_ms()
        for oid in list(self.live):
            o = self.orders[oid]
            if now - o.updated_at < min_age_ms or held_here(o) or oid in self.sending or oid in self.cancelling:
                continue
            try:
                await self._reconcile_one(o)
            except Exception as e:
                self.log.warning("reconcile of {} failed ({}); next pass", oid, e)
                await self._venue_answers(False, f"{type(e).__name__}: {e}")
            else:
                await self._venue_answers(True)
        async with self.lock:  # a backstop: exits the position no longer covers are cut
            for pair in list(self.exits):
                await self._refit(pair)

    async def _reconcile_one(self, o: Order) -> None:
        unanswered = o.venue_status is None and o.status in (S.SUBMITTED, S.TRIGGERED, S.PENDING_CANCEL)
        found = await self.venue.fetch_order(o.client_order_id, o.pair)
        if found is not None:
            if (found.status, found.filled) != (o.venue_status, o.venue_filled) or o.status in (
                S.PENDING_UPDATE, S.SUBMITTED, S.TRIGGERED,
            ) or (o.venue_filled is not None and o.filled_quantity < o.venue_filled):  # fmt: skip
                self.log.info("reconciled {} with the venue: {}, filled {}", o.order_id, found.status, found.filled)
                await self._on_venue_result(o.order_id, found, found.trades, edit_answer=True)
            cur = self.orders[o.order_id]
            if cur.status is S.PENDING_CANCEL and found.status == "open" and o.order_id not in self.cancelling:
                await self._cancel_at_venue(o.order_id, cur.reason or "canceled")
        elif unanswered:
            self.log.info("order {} never reached the venue: routing it now", o.order_id)
            if o.status is S.TRIGGERED:
                kind, price = venue_leg(o)
                await self._send(o.order_id, kind, price)
            else:
                await self._route(o.order_id)  # a pending cancel of an order never sent: canceled here

    # -- queries ---------------------------------------------------------------------------------------
    async def _on_query(self, q: OrdersQuery, env: Envelope) -> None:
        if q.order_id or q.client_order_id:
            oid = q.order_id or await self._order_of_client(q.client_order_id or "")
            o = await self._recall(oid) if oid else None
            await self.bus.respond(env, OrdersPage(orders=[o] if o is not None else []))
            return
        after: tuple[int, str] | None = None
        if q.cursor:
            created, _, oid = q.cursor.partition(":")
            after = (int(created), oid) if created.isdigit() else None
        limit = max(1, min(q.limit, MAX_PAGE))
        page, cursor = await self._list(q, after, limit)
        await self.bus.respond(env, OrdersPage(orders=page, next_cursor=cursor))

    async def _list(self, q: OrdersQuery, after: tuple[int, str] | None, limit: int) -> tuple[list[Order], str | None]:
        """A page of the orders that match, newest first (by creation), and the cursor of the next one.

        Memory has the latest word on the orders it holds. Those that left it are read back from ORDERS
        by their last event's sequence, newest id first: order ids count up as orders are created, so
        once ``limit + 1`` of them matched, no older one can rank higher. At most MAX_SCAN are read per
        page; a page cut there is shorter and its cursor goes on from the last order read.
        """

        def wanted(o: Order) -> bool:
            return (
                (q.status is None or o.status is q.status)
                and (q.pair is None or o.pair == q.pair)
                and (q.side is None or o.side == q.side)
                and (q.since is None or o.created_at >= q.since)
                and (q.until is None or o.created_at < q.until)
                and (after is None or (o.created_at, o.order_id) < after)
            )

        def rank(o: Order) -> tuple[int, str]:
            return o.created_at, o.order_id

        def cursor_of(o: Order) -> str:
            return f"{o.created_at}:{o.order_id}"

        mine = heapq.nlargest(limit + 1, (o for o in self.orders.values() if wanted(o)), key=rank)
        if not self.evicted_created or (len(mine) > limit and mine[-1].created_at > self.evicted_created):
            return mine[:limit], cursor_of(mine[limit - 1]) if len(mine) > limit else None  # memory alone
        theirs: list[Order] = []
        ids = self.last_seq.ids_descending(after[1] if after else None)
        examined, last, done = 0, None, False
        while len(theirs) <= limit and not done and examined < MAX_SCAN:
            batch = list(itertools.islice(ids, SCAN_BATCH))
            if not batch:
                done = True
                break
            stored = await asyncio.gather(
                *(self._stored(self.last_seq.get(oid)) for oid in batch if oid not in self.orders)
            )
            for msg in stored:
                if (ev := _event_in(msg)) is None:
                    continue
                o = ev.order
                examined, last = examined + 1, o
                if wanted(o):
                    theirs.append(o)
                if q.since is not None and o.created_at < q.since - CLOCK_SLACK_MS:
                    done = True  # created before the window, and so was every order read after it
                    break
        merged = heapq.nlargest(limit + 1, mine + theirs, key=rank)
        if len(theirs) <= limit and not done and last is not None:  # cut at MAX_SCAN: go on from `last`
            page = [o for o in merged if rank(o) >= rank(last)][:limit]
            self.log.info("orders query read {} orders back from ORDERS: a shorter page", examined)
            return page, cursor_of(page[-1] if len(page) == limit else last)
        return merged[:limit], cursor_of(merged[limit - 1]) if len(merged) > limit else None

    async def _stored(self, seq: int, subject: str | None = None) -> Any:
        """The ORDERS message at ``seq`` (with ``subject``: the first one of that subject from ``seq`` on),
        or None."""
        if not seq:
            return None
        try:
            if subject is None:
                return await self.bus.js.get_msg(self.subjects.s_orders, seq)
            return await self.bus.js.get_msg(self.subjects.s_orders, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None

    async def _on_events_query(self, q: OrderEventsQuery, env: Envelope) -> None:
        await self._recall(q.order_id)
        await self.bus.respond(env, OrderEventsPage(events=self.events.get(q.order_id, [])))

    async def _on_markets_query(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, MarketsPage(venue=self.venue.name, markets=await self.venue.markets()))
