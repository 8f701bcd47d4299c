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
from collections.abc import Callable
from decimal import Decimal

import msgspec

from actors.base import Actor
from actors.books import BookCache
from actors.ids import OrderIds
from actors.venues.base import Venue, VenueOrder, VenueOrderRequest, VenueRefused, VenueTrade
from actors.venues.paper import PaperVenue
from bus.client import Bus, Envelope
from bus.errors import Transient
from config.settings import Settings
from domain.orders import IllegalTransition, Overfilled, apply_fill, back_from_pending, to_pending, transition, trigger
from domain.risk import is_multiple
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
WORKING = frozenset({S.SUBMITTED, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_UPDATE, S.PENDING_CANCEL})


def same_order(o: Order, r: OrderRequest) -> bool:
    """Does a repeated client order id carry the same order?"""
    return (o.pair, o.side, o.type, o.quantity, o.price, o.stop_price) == (
        r.pair, r.side, r.type, r.quantity, r.price, r.stop_price,
    )  # fmt: skip


def at_venue(o: Order) -> bool:
    """Is the order (also) held by the venue, so that a cancel or modify must go there?"""
    return o.venue_status == "open"


def held_here(o: Order) -> bool:
    """A stop / take-profit not triggered yet, or a bracket leg waiting for its entry."""
    return o.status is S.INITIALIZED or (o.type in TRIGGERED_TYPES and o.triggered_at is None)


def opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


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
        self.rules: dict[str, MarketRules] = {}
        self.lock = asyncio.Lock()
        self.processed = 0
        self.filled = 0
        self.rejected = 0

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.ids = OrderIds(await self.bus.kv(s.kv_state))
        self.venue.set_listener(self._on_venue_update)
        await self.venue.start()
        self.rules = {m.pair: m for m in await self.venue.markets()}
        await self.bus.replay(
            stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._rebuild, follow=False
        )
        self.log.info(
            "rebuilt {} orders ({} working) from the ORDERS stream",
            len(self.orders),
            sum(1 for o in self.orders.values() if o.status in WORKING or o.status is S.INITIALIZED),
        )
        await self._reconcile(min_age_ms=0)
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
        known = self.orders.get(ev.order.order_id)
        if known is None or ev.order.version > known.version:
            self._store(ev.order)
            self.events.setdefault(ev.order.order_id, []).append(ev)

    def _store(self, o: Order) -> None:
        prev = self.orders.get(o.order_id)
        self.orders[o.order_id] = o
        self.by_client[o.client_order_id] = o.order_id
        if o.status in TERMINAL_STATUSES and (o.venue_filled is None or o.filled_quantity >= o.venue_filled):
            self.live.discard(o.order_id)
        else:
            self.live.add(o.order_id)
        if prev is None:
            self.processed += 1
        if o.status is S.FILLED and (prev is None or prev.status is not S.FILLED):
            self.filled += 1
        if o.status is S.REJECTED and (prev is None or prev.status is not S.REJECTED):
            self.rejected += 1

    async def _emit(self, order: Order, event: str) -> Order:
        """Persist a change as an event on ORDERS, then keep it. Call with ``self.lock`` held."""
        order = msgspec.structs.replace(order, version=order.version + 1)
        ev = OrderEvent(event=event, order=order, ts=now_ms())  # when we recorded it (fills carry the venue's time)
        await self.bus.js_publish(
            self.subjects.order_events(order.pair), ev, msg_id=f"{order.order_id}:{order.version}"
        )
        self._store(order)
        self.events.setdefault(order.order_id, []).append(ev)
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
            if known is None:
                ref = a.estimated_cost / req.quantity if a.estimated_cost and req.quantity else None
                order = await self._create(req, ref)
        if known is not None:
            order = self.orders[known]
            if not same_order(order, req):
                await self._refuse_duplicate(a, order)
                return
        await self._reply(a, order)
        await self._route(order.order_id)

    async def _create(self, req: OrderRequest, reference_price: Decimal | None = None) -> Order:
        """Create the order (and the legs of a bracket) and persist them. Call with the lock held."""
        ts = now_ms()
        bracket = req.stop_loss is not None or req.take_profit is not None
        order = Order(
            order_id=await self.ids.next(),
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
            role="entry" if bracket else None,
            reference_price=reference_price,
            status=S.SUBMITTED,
            venue=self.venue.name,
            source=req.source,
            signal_id=req.signal_id,
            created_at=ts,
            updated_at=ts,
        )
        legs: list[Order] = []
        if bracket:
            for role, kind, trigger, suffix in (
                ("stop_loss", "stop_loss", req.stop_loss, "sl"),
                ("take_profit", "take_profit", req.take_profit, "tp"),
            ):
                if trigger is None:
                    continue
                legs.append(
                    Order(
                        order_id=await self.ids.next(),
                        client_order_id=f"{req.client_order_id}.{suffix}",
                        pair=req.pair,
                        side=opposite(req.side),  # type: ignore[arg-type]
                        type=kind,  # type: ignore[arg-type]
                        quantity=req.quantity,  # sized to the entry's fills once it has some
                        stop_price=trigger,
                        time_in_force="GTC",
                        reduce_only=True,
                        role=role,  # type: ignore[arg-type]
                        parent_order_id=order.order_id,
                        status=S.INITIALIZED,
                        venue=self.venue.name,
                        source=req.source,
                        signal_id=req.signal_id,
                        created_at=ts,
                        updated_at=ts,
                    )
                )
            names = {"stop_loss": "stopLoss", "take_profit": "takeProfit"}
            order = msgspec.structs.replace(order, linked_orders={names[leg.role]: leg.order_id for leg in legs})  # type: ignore[index]
            if len(legs) == 2:
                legs = [
                    msgspec.structs.replace(
                        legs[0], linked_orders={"entry": order.order_id, "sibling": legs[1].order_id}
                    ),
                    msgspec.structs.replace(
                        legs[1], linked_orders={"entry": order.order_id, "sibling": legs[0].order_id}
                    ),
                ]
            else:
                legs = [msgspec.structs.replace(leg, linked_orders={"entry": order.order_id}) for leg in legs]
        for leg in legs:
            await self._emit(leg, "initialized")
        order = await self._emit(order, "submitted")
        self.log.info(
            "order {} ({}) submitted: {} {} {} {}{}", order.order_id, order.client_order_id, order.side,
            order.quantity, order.pair, order.type, f" with legs {order.linked_orders}" if legs else "",
        )  # fmt: skip
        return order

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

    async def _route(self, order_id: str) -> None:
        """Take a SUBMITTED order where it goes: the venue, or our trigger book (stops, take-profits)."""
        o = self.orders[order_id]
        if o.status is S.PENDING_CANCEL and o.venue_status is None:  # canceled before it was ever sent
            ts = now_ms()
            new = await self._update(order_id, lambda cur: transition(cur, S.CANCELED, ts, cur.reason))
            if new is not None:
                async with self.lock:
                    await self._after_change(new)
            return
        if o.status is not S.SUBMITTED or o.venue_status is not None:
            return
        if o.type in TRIGGERED_TYPES:
            await self._update(
                order_id, lambda cur: transition(cur, S.ACCEPTED, now_ms()) if cur.status is S.SUBMITTED else cur
            )
            book = self.books.books.get(o.pair)
            if book is not None:
                await self._check_triggers(book, only=order_id)
            return
        await self._send(order_id, o.type, o.price)  # type: ignore[arg-type]

    async def _send(self, order_id: str, venue_type: str, price: Decimal | None) -> None:
        o = self.orders[order_id]
        request = VenueOrderRequest(
            o.client_order_id, o.pair, o.side, venue_type, o.quantity, price,  # type: ignore[arg-type]
            "GTC" if o.time_in_force == "GTD" else o.time_in_force, o.post_only,
        )  # fmt: skip
        try:
            result = await self.venue.create_order(request)
        except Exception as e:
            raise Transient(f"venue {self.venue.name} unavailable for {order_id}: {e}") from e
        await self._on_venue_result(order_id, result, result.trades)

    # -- what the venue says ---------------------------------------------------------------------------
    async def _on_venue_update(self, r: VenueOrder, new_trades: list[VenueTrade]) -> None:
        oid = self.by_client.get(r.client_order_id)
        if oid is None:
            self.log.warning("venue update for an unknown client order id {}", r.client_order_id)
            return
        await self._on_venue_result(oid, r, new_trades)

    async def _on_venue_result(self, order_id: str, r: VenueOrder, trades: list[VenueTrade]) -> None:
        """Publish the venue's trades, then record its answer on the order."""
        o = self.orders[order_id]
        for t in trades:
            report = ExecutionReport(
                kind="trade", order_id=o.order_id, client_order_id=o.client_order_id, pair=o.pair,
                side=o.side, order_quantity=o.quantity, venue=self.venue.name, ts=t.ts,
                trade_id=t.trade_id, quantity=t.quantity, price=t.price, fee=t.fee,
                fee_currency=t.fee_currency, liquidity=t.liquidity,
            )  # fmt: skip
            await self.bus.js_publish(
                self.subjects.exec_reports(o.pair), report, msg_id=f"{self.venue.name}:{t.trade_id}"
            )
        async with self.lock:
            new = await self._update_locked(order_id, lambda cur: self._with_venue_answer(cur, r))
            if new is not None:
                await self._after_change(new)
        o = self.orders[order_id]
        if o.status is S.PENDING_CANCEL and o.venue_status == "open" and order_id not in self.cancelling:
            self.spawn(self._cancel_at_venue(order_id, o.reason or "canceled"), "cancel")  # asked while in flight

    def _with_venue_answer(self, cur: Order, r: VenueOrder) -> Order:
        if (cur.venue_status, cur.venue_filled, cur.quantity) == (r.status, r.filled, r.quantity or cur.quantity) and (
            cur.status not in (S.PENDING_UPDATE, S.PENDING_CANCEL, S.SUBMITTED)
        ):
            return cur  # nothing new
        ts = now_ms()
        new = msgspec.structs.replace(
            cur, venue_order_id=r.venue_order_id, venue_status=r.status, venue_filled=r.filled, updated_at=ts
        )
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
        if cur.status is S.PENDING_UPDATE and r.status == "open":
            changed = msgspec.structs.replace(new, quantity=r.quantity or cur.quantity, price=r.price)
            return back_from_pending(changed, ts)
        return new

    # -- fills -----------------------------------------------------------------------------------------
    async def _on_fill(self, f: Fill, env: Envelope) -> None:
        if f.order_id not in self.orders:
            return  # a fill of an order that is not ours (an outside writer): the ledger still books it
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

        async with self.lock:
            new = await self._update_locked(f.order_id, change)
            if new is not None:
                await self._after_change(new)

    # -- brackets --------------------------------------------------------------------------------------
    async def _after_change(self, o: Order) -> None:
        """Keep a bracket consistent after a change of one of its orders. Call with the lock held."""
        if o.role == "entry" and o.linked_orders:
            for leg_id in o.linked_orders.values():
                await self._size_leg(leg_id, o)
        elif o.role in ("stop_loss", "take_profit") and o.linked_orders and o.filled_quantity:
            sibling_id = o.linked_orders.get("sibling")
            entry = self.orders.get(o.linked_orders.get("entry", ""))
            if sibling_id and entry is not None:
                await self._oco(sibling_id, o, entry)

    async def _size_leg(self, leg_id: str, entry: Order) -> None:
        leg = self.orders.get(leg_id)
        if leg is None or leg.status in TERMINAL_STATUSES or leg.triggered_at is not None:
            return
        ts = now_ms()
        if entry.filled_quantity == ZERO:
            if entry.status in TERMINAL_STATUSES:
                await self._update_locked(
                    leg_id, lambda cur: transition(cur, S.CANCELED, ts, "the entry ended unfilled")
                )
            return
        sibling = self.orders.get((leg.linked_orders or {}).get("sibling", ""))
        taken = sibling.filled_quantity if sibling is not None else ZERO
        size = entry.filled_quantity - taken  # a partial entry fill sizes the exit legs
        if leg.status is S.INITIALIZED:

            def activate(cur: Order) -> Order:
                sized = msgspec.structs.replace(cur, quantity=size)
                return transition(transition(sized, S.SUBMITTED, ts), S.ACCEPTED, ts)

            await self._update_locked(leg_id, activate, "activated")
            book = self.books.books.get(leg.pair)
            if book is not None:  # it may be triggered already: check now (after we let go of the lock)
                self.spawn(self._check_triggers(book, only=leg_id), "trigger")
        elif leg.quantity != size and size > leg.filled_quantity:
            await self._update_locked(
                leg_id, lambda cur: msgspec.structs.replace(cur, quantity=size, updated_at=ts), "resized"
            )

    async def _oco(self, sibling_id: str, filled_leg: Order, entry: Order) -> None:
        """One leg filled (some or all): the other shrinks by as much, and is canceled once one leg is done."""
        sib = self.orders.get(sibling_id)
        if sib is None or sib.status in TERMINAL_STATUSES:
            return
        ts = now_ms()
        left = entry.filled_quantity - filled_leg.filled_quantity
        if filled_leg.status is S.FILLED or left <= ZERO:
            if at_venue(sib):
                self.spawn(self._cancel_at_venue(sibling_id, "OCO: the other leg filled"), "oco-cancel")
            else:
                await self._update_locked(
                    sibling_id, lambda cur: transition(cur, S.CANCELED, ts, "OCO: the other leg filled")
                )
        elif sib.triggered_at is None and sib.status is not S.INITIALIZED and left != sib.quantity:
            await self._update_locked(
                sibling_id, lambda cur: msgspec.structs.replace(cur, quantity=left, updated_at=ts), "resized"
            )

    # -- triggers, expiry, timeouts ----------------------------------------------------------------------
    async def _on_book(self, book: Book) -> None:
        await self._check_triggers(book)

    async def _check_triggers(self, book: Book, only: str | None = None) -> None:
        bid = book.bids[0][0] if book.bids else None
        ask = book.asks[0][0] if book.asks else None
        ids = [only] if only else list(self.live)
        candidates = [o for oid in ids if (o := self.orders[oid]).pair == book.pair and o.type in TRIGGERED_TYPES]
        for o in candidates:
            if o.status is S.ACCEPTED and o.triggered_at is None and is_triggered(o, bid, ask):
                ts = now_ms()
                marked = await self._update(o.order_id, lambda cur, ts=ts: trigger(cur, ts))
                if marked is not None:
                    self.log.info("order {} triggered at bid {} / ask {} (stop {})", o.order_id, bid, ask, o.stop_price)
                    kind, price = venue_leg(marked)
                    self.spawn(self._send_triggered(o.order_id, kind, price), "send-triggered")

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
        """Cancel one order. Returns the order after the attempt and why it was refused, if it was."""
        o = self.orders[order_id]
        ts = now_ms()
        if o.status in TERMINAL_STATUSES:
            return o, f"order {order_id} is already {o.status.value}"
        if o.status is S.PENDING_CANCEL:
            return o, None
        final = S.EXPIRED if reason == "expired" else S.CANCELED
        if held_here(o) or (o.status is S.SUBMITTED and o.venue_status is None and o.type in TRIGGERED_TYPES):
            new = await self._update(o.order_id, lambda cur: transition(cur, final, ts, reason))
            if new is not None:
                async with self.lock:
                    await self._after_change(new)
            return self.orders[order_id], None
        if o.status is S.SUBMITTED and o.venue_status is None:
            # on its way to the venue: marked now, canceled there as soon as the venue has it
            await self._update(order_id, lambda cur: to_pending(cur, S.PENDING_CANCEL, ts, reason))
            return self.orders[order_id], None
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
            results = [(await self._cancel(oid, reason))[0] for oid in ids]
            await self.bus.respond(env, CommandReply(ok=True, orders=results))
            return
        oid = cmd.order_id or self.by_client.get(cmd.client_order_id or "")
        if oid is None or oid not in self.orders:
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
        o = self.orders.get(cmd.order_id)
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
            await self.bus.respond(env, CommandReply(ok=True, orders=[self.orders[o.order_id]]))
            return
        await self._update(
            o.order_id,
            lambda cur: to_pending(cur, S.PENDING_UPDATE, ts),
        )
        try:
            result = await self.venue.edit_order(o.client_order_id, o.pair, cmd.quantity, cmd.price)
        except VenueRefused as e:
            ts = now_ms()
            await self._update(o.order_id, lambda cur: back_from_pending(cur, ts))
            await self.bus.respond(
                env, CommandReply(ok=False, orders=[self.orders[o.order_id]], code="MODIFY_REFUSED", detail=str(e))
            )
            return
        await self._on_venue_result(o.order_id, result, result.trades)
        await self.bus.respond(env, CommandReply(ok=True, orders=[self.orders[o.order_id]]))

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
        """Ask the venue about every order whose outcome we do not fully know yet."""
        now = now_ms()
        for oid in list(self.live):
            o = self.orders[oid]
            if now - o.updated_at < min_age_ms or held_here(o):
                continue
            unanswered = o.venue_status is None and o.status in (S.SUBMITTED, S.TRIGGERED, S.PENDING_CANCEL)
            missing_fills = o.venue_filled is not None and o.filled_quantity < o.venue_filled
            pending = o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE)
            if not (unanswered or missing_fills or pending):
                continue
            found = await self.venue.fetch_order(o.client_order_id, o.pair)
            if found is not None:
                self.log.info("reconciled {} with the venue: {}, filled {}", o.order_id, found.status, found.filled)
                await self._on_venue_result(o.order_id, found, found.trades)
                if o.status is S.PENDING_CANCEL and found.status == "open":
                    await self._cancel_at_venue(o.order_id, o.reason or "canceled")
                elif o.status is S.PENDING_UPDATE and found.status == "open":
                    await self._update(
                        o.order_id, lambda cur: back_from_pending(cur, now_ms(), "modify outcome unknown")
                    )
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
            oid = q.order_id or self.by_client.get(q.client_order_id or "")
            await self.bus.respond(env, OrdersPage(orders=[self.orders[oid]] if oid in self.orders else []))
            return
        after: tuple[int, str] | None = None
        if q.cursor:
            created, _, oid = q.cursor.partition(":")
            after = (int(created), oid) if created.isdigit() else None
        found = [
            o
            for o in self.orders.values()
            if (q.status is None or o.status is q.status)
            and (q.pair is None or o.pair == q.pair)
            and (q.side is None or o.side == q.side)
            and (q.since is None or o.created_at >= q.since)
            and (q.until is None or o.created_at < q.until)
            and (after is None or (o.created_at, o.order_id) < after)
        ]
        found.sort(key=lambda o: (o.created_at, o.order_id), reverse=True)
        limit = max(1, min(q.limit, MAX_PAGE))
        page = found[:limit]
        cursor = f"{page[-1].created_at}:{page[-1].order_id}" if len(found) > limit else None
        await self.bus.respond(env, OrdersPage(orders=page, next_cursor=cursor))

    async def _on_events_query(self, q: OrderEventsQuery, env: Envelope) -> None:
        await self.bus.respond(env, OrderEventsPage(events=self.events.get(q.order_id, [])))

    async def _on_markets_query(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, MarketsPage(venue=self.venue.name, markets=await self.venue.markets()))
