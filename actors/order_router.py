"""order-router: owns the working orders and their state machine; talks to the venue.

Path: approved order (durable hop from risk-gate) -> order created and persisted as an event ->
reply to the caller -> venue -> execution reports (durable hop to fill-tracker). Canonical fills come
back on the FILLS stream and move the order to PARTIALLY_FILLED / FILLED.

Durability rules kept here:
- a change is in memory only once its event is stored on ORDERS (publish, then keep); changes are
  serialised, so two handlers never build on the same version;
- the venue's trades are published as execution reports *before* the venue's answer is recorded on
  the order, so a crash in between leaves the order "unanswered" and the reconcile sends the
  trades again (duplicates are dropped by trade id downstream);
- on start, and every RECONCILE_EVERY_S, orders whose outcome is not fully known are reconciled with
  the venue by client order id; an order whose outcome is unknown stays in flight, never guessed.

One order-router per bus prefix: its state is not shared between instances (see README).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from actors.base import Actor
from actors.ids import OrderIds
from actors.venues.base import Venue, VenueOrder, VenueOrderRequest
from actors.venues.paper import PaperVenue
from bus.client import Bus, Envelope
from bus.errors import Transient
from config.settings import Settings
from domain.orders import IllegalTransition, Overfilled, apply_fill, transition
from schemas.messages import (
    TERMINAL_STATUSES,
    ApprovedOrder,
    ExecutionReport,
    Fill,
    FillRef,
    Order,
    OrderEvent,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    now_ms,
)

S = OrderStatus
MAX_PAGE = 500
RECONCILE_EVERY_S = 10.0
RECONCILE_AFTER_MS = 5_000


def same_order(o: Order, r: OrderRequest) -> bool:
    """Does a repeated client order id carry the same order?"""
    return (o.pair, o.side, o.type, o.quantity, o.price, o.stop_price) == (
        r.pair, r.side, r.type, r.quantity, r.price, r.stop_price,
    )  # fmt: skip


class OrderRouter(Actor):
    name = "order-router"

    def __init__(self, settings: Settings, bus: Bus, venue: Venue | None = None) -> None:
        super().__init__(settings, bus)
        self.venue: Venue = venue or PaperVenue(settings, bus)
        self.orders: dict[str, Order] = {}
        self.by_client: dict[str, str] = {}
        self.lock = asyncio.Lock()
        self.processed = 0
        self.filled = 0
        self.rejected = 0

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.ids = OrderIds(await self.bus.kv(s.kv_state))
        await self.venue.start()
        await self.bus.replay(
            stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._rebuild, follow=False
        )
        self.log.info("rebuilt {} orders from the ORDERS stream", len(self.orders))
        await self._reconcile(min_age_ms=0)
        await self.bus.subscribe(s.query("orders"), OrdersQuery, self._on_query, queue=self.name)
        await self.bus.consume(
            stream=s.s_hops, durable="order-router", subject=s.approved_orders(), type_=ApprovedOrder,
            handler=self._on_approved,
        )  # fmt: skip
        await self.bus.consume(
            stream=s.s_fills, durable="order-router", subject=s.fills(), type_=Fill, handler=self._on_fill
        )
        self.spawn(self.every(RECONCILE_EVERY_S, self._reconcile, "reconcile"), "reconcile")

    async def on_stop(self) -> None:
        await self.venue.stop()

    def stats(self) -> dict[str, int | float | str]:
        done = self.filled + self.rejected
        return {
            "ordersProcessed": self.processed,
            "ordersFilled": self.filled,
            "ordersRejected": self.rejected,
            "workingOrders": sum(1 for o in self.orders.values() if o.closed_at is None),
            "successRate": round(100.0 * self.filled / done, 2) if done else 100.0,
        }

    async def _rebuild(self, ev: OrderEvent, env: Envelope) -> None:
        known = self.orders.get(ev.order.order_id)
        if known is None or ev.order.version > known.version:
            self._store(ev.order)

    def _store(self, o: Order) -> None:
        prev = self.orders.get(o.order_id)
        self.orders[o.order_id] = o
        self.by_client[o.client_order_id] = o.order_id
        if prev is None:
            self.processed += 1
        if o.status is S.FILLED and (prev is None or prev.status is not S.FILLED):
            self.filled += 1
        if o.status is S.REJECTED and (prev is None or prev.status is not S.REJECTED):
            self.rejected += 1

    async def _emit(self, order: Order, event: str) -> Order:
        """Persist a change as an event on ORDERS, then keep it. Call with ``self.lock`` held."""
        order = msgspec.structs.replace(order, version=order.version + 1)
        await self.bus.js_publish(
            self.subjects.order_events(order.pair),
            OrderEvent(event=event, order=order, ts=order.updated_at or now_ms()),
            msg_id=f"{order.order_id}:{order.version}",
        )
        self._store(order)
        return order

    async def _update(self, order_id: str, change: Callable[[Order], Order], event: str | None = None) -> Order | None:
        """Apply ``change`` to the current order and persist the result (event named after its new
        status unless given). An illegal change is logged and ignored, never a crash."""
        async with self.lock:
            current = self.orders[order_id]
            try:
                new = change(current)
            except (IllegalTransition, Overfilled) as e:
                self.log.warning("ignored on {}: {}", order_id, e)
                return None
            if new is current:
                return None
            return await self._emit(new, event or new.status.value)

    # -- approved orders -------------------------------------------------------------------------------
    async def _on_approved(self, a: ApprovedOrder, env: Envelope) -> None:
        req = a.request
        async with self.lock:
            known = self.by_client.get(req.client_order_id)
            if known is None:
                order = await self._emit(self._new_order(req, await self.ids.next()), "submitted")
                self.log.info(
                    "order {} ({}) submitted: {} {} {} {}", order.order_id, order.client_order_id, order.side,
                    order.quantity, order.pair, order.type,
                )  # fmt: skip
        if known is not None:
            order = self.orders[known]
            if not same_order(order, req):
                await self._refuse_duplicate(a, order)
                return
        await self._reply(a, order)
        if order.status is S.SUBMITTED and order.venue_status is None:
            await self._send(order.order_id)  # new, or we went down between persisting and routing

    def _new_order(self, req: OrderRequest, order_id: str) -> Order:
        ts = now_ms()
        return Order(
            order_id=order_id,
            client_order_id=req.client_order_id,
            pair=req.pair,
            side=req.side,
            type=req.type,
            quantity=req.quantity,
            price=req.price,
            stop_price=req.stop_price,
            time_in_force=req.time_in_force or self.settings.DEFAULT_TIME_IN_FORCE,  # type: ignore[arg-type]
            status=S.SUBMITTED,
            venue=self.venue.name,
            source=req.source,
            signal_id=req.signal_id,
            created_at=ts,
            updated_at=ts,
        )

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

    async def _send(self, order_id: str) -> None:
        o = self.orders[order_id]
        request = VenueOrderRequest(o.client_order_id, o.pair, o.side, o.type, o.quantity, o.price, o.time_in_force)
        try:
            result = await self.venue.create_order(request)
        except Exception as e:
            raise Transient(f"venue {self.venue.name} unavailable for {order_id}: {e}") from e
        await self._on_venue_result(order_id, result)

    async def _on_venue_result(self, order_id: str, r: VenueOrder) -> None:
        """Publish the venue's trades, then record its answer on the order."""
        o = self.orders[order_id]
        for t in r.trades:
            report = ExecutionReport(
                kind="trade", order_id=o.order_id, client_order_id=o.client_order_id, pair=o.pair,
                side=o.side, order_quantity=o.quantity, venue=self.venue.name, ts=t.ts,
                trade_id=t.trade_id, quantity=t.quantity, price=t.price, fee=t.fee,
                fee_currency=t.fee_currency, liquidity=t.liquidity,
            )  # fmt: skip
            await self.bus.js_publish(
                self.subjects.exec_reports(o.pair), report, msg_id=f"{self.venue.name}:{t.trade_id}"
            )
        await self._update(order_id, lambda cur: self._with_venue_answer(cur, r))

    def _with_venue_answer(self, cur: Order, r: VenueOrder) -> Order:
        if cur.venue_status is not None:
            return cur  # already recorded
        ts = now_ms()
        base = msgspec.structs.replace(
            cur, venue_order_id=r.venue_order_id, venue_status=r.status, venue_filled=r.filled, updated_at=ts
        )
        if r.status == "rejected":
            self.log.warning("order {} rejected by {}: {}", cur.order_id, self.venue.name, r.reason)
            return transition(base, S.REJECTED, ts, r.reason)
        if r.status in ("canceled", "expired") and cur.filled_quantity >= r.filled:
            # nothing (more) to wait for: the venue's trades are all in
            return transition(base, S.CANCELED if r.status == "canceled" else S.EXPIRED, ts, r.reason)
        if cur.status is S.SUBMITTED:
            return transition(base, S.ACCEPTED, ts, r.reason)
        return base  # fills overtook the venue's answer: keep the fill state

    async def _reconcile(self, min_age_ms: int = RECONCILE_AFTER_MS) -> None:
        """Ask the venue about every order whose outcome we do not fully know yet."""
        now = now_ms()
        for o in list(self.orders.values()):
            if o.status in TERMINAL_STATUSES and (o.venue_filled is None or o.filled_quantity >= o.venue_filled):
                continue
            if now - o.updated_at < min_age_ms:
                continue
            unanswered = o.venue_status is None
            missing_fills = o.venue_filled is not None and o.filled_quantity < o.venue_filled
            if not (unanswered or missing_fills):
                continue
            found = await self.venue.fetch_order(o.client_order_id, o.pair)
            if found is not None:
                self.log.info("reconciled {} with the venue: {}, filled {}", o.order_id, found.status, found.filled)
                await self._on_venue_result(o.order_id, found)
            elif unanswered and o.status is S.SUBMITTED:
                self.log.info("order {} never reached the venue: routing it now", o.order_id)
                await self._send(o.order_id)

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
                final = S.CANCELED if new.venue_status == "canceled" else S.EXPIRED
                new = transition(new, final, f.timestamp, cur.reason)
            return new

        await self._update(f.order_id, change)

    # -- queries ---------------------------------------------------------------------------------------
    async def _on_query(self, q: OrdersQuery, env: Envelope) -> None:
        if q.order_id or q.client_order_id:
            oid = q.order_id or self.by_client.get(q.client_order_id or "")
            found = [self.orders[oid]] if oid in self.orders else []
        else:
            found = [
                o
                for o in self.orders.values()
                if (q.status is None or o.status is q.status)
                and (q.pair is None or o.pair == q.pair)
                and (q.side is None or o.side == q.side)
            ]
            found.sort(key=lambda o: (o.created_at, o.order_id), reverse=True)
            found = found[: max(1, min(q.limit, MAX_PAGE))]
        await self.bus.respond(env, OrdersPage(orders=found))
