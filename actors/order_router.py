"""order-router: owns the working orders and their state machine; talks to the venue.

Path: approved order (durable hop from risk-gate) -> order created and persisted as an event ->
reply to the caller -> venue -> execution reports (durable hop to fill-tracker). Canonical fills come
back on the FILLS stream and move the order to PARTIALLY_FILLED / FILLED.

Recovery: on start the orders are rebuilt from the ORDERS stream (every event carries the whole
order); orders the venue may not have seen are reconciled by client order id; the approved-order
consumer is durable, so an order approved while the router was down is routed when it is back.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from actors.base import Actor
from actors.ids import OrderIds
from actors.venues.base import Venue, VenueOrder, VenueOrderRequest
from actors.venues.paper import PaperVenue
from bus.client import Bus, Envelope
from bus.errors import Transient
from config.settings import Settings
from domain.orders import IllegalTransition, apply_fill, transition
from schemas.messages import (
    ApprovedOrder,
    ExecutionReport,
    Fill,
    FillRef,
    Order,
    OrderEvent,
    OrderReply,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    now_ms,
)

S = OrderStatus
MAX_PAGE = 500


class OrderRouter(Actor):
    name = "order-router"

    def __init__(self, settings: Settings, bus: Bus, venue: Venue | None = None) -> None:
        super().__init__(settings, bus)
        self.venue: Venue = venue or PaperVenue(settings, bus)
        self.orders: dict[str, Order] = {}
        self.by_client: dict[str, str] = {}
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
        await self._reconcile()
        await self.bus.subscribe(s.query("orders"), OrdersQuery, self._on_query, queue=self.name)
        await self.bus.consume(
            stream=s.s_hops,
            durable="order-router",
            subject=s.approved_orders(),
            type_=ApprovedOrder,
            handler=self._on_approved,
        )
        await self.bus.consume(
            stream=s.s_fills, durable="order-router", subject=s.fills(), type_=Fill, handler=self._on_fill
        )

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
        o = ev.order
        known = self.orders.get(o.order_id)
        if known is None or o.version >= known.version:
            self._store(o, count=known is None)

    def _store(self, o: Order, *, count: bool = False) -> None:
        prev = self.orders.get(o.order_id)
        self.orders[o.order_id] = o
        self.by_client[o.client_order_id] = o.order_id
        if count:
            self.processed += 1
        if o.status is S.FILLED and (prev is None or prev.status is not S.FILLED):
            self.filled += 1
        if o.status is S.REJECTED and (prev is None or prev.status is not S.REJECTED):
            self.rejected += 1

    async def _emit(self, order: Order, event: str) -> Order:
        """Record a change: bump the version, keep it, persist it as an event on ORDERS."""
        order = msgspec.structs.replace(order, version=order.version + 1)
        self._store(order)
        await self.bus.js_publish(
            self.subjects.order_events(order.pair),
            OrderEvent(event=event, order=order, ts=order.updated_at or now_ms()),
            msg_id=f"{order.order_id}:{order.version}",
        )
        return order

    async def _update(self, order_id: str, change: Callable[[Order], Order], event: str) -> Order | None:
        current = self.orders[order_id]
        try:
            new = change(current)
        except IllegalTransition as e:
            self.log.warning("ignored: {}", e)
            return None
        if new is current:
            return None
        return await self._emit(new, event)

    # -- approved orders -------------------------------------------------------------------------------
    async def _on_approved(self, a: ApprovedOrder, env: Envelope) -> None:
        req = a.request
        known = self.by_client.get(req.client_order_id)
        if known is not None:
            order = self.orders[known]
            await self._reply(a, order)
            if order.status is S.SUBMITTED and order.venue_status is None:
                await self._send(order.order_id)  # we went down between persisting and routing
            return
        ts = now_ms()
        order = Order(
            order_id=await self.ids.next(),
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
        self.processed += 1
        order = await self._emit(order, "submitted")
        self.log.info(
            "order {} ({}) submitted: {} {} {} {}",
            order.order_id,
            order.client_order_id,
            order.side,
            order.quantity,
            order.pair,
            order.type,
        )
        await self._reply(a, order)
        await self._send(order.order_id)

    async def _reply(self, a: ApprovedOrder, order: Order) -> None:
        if a.reply_to:
            await self.bus.respond_to(
                a.reply_to,
                OrderReply(ok=True, order=order, risk_validation=a.risk_validation, estimated_cost=a.estimated_cost),
            )

    async def _send(self, order_id: str) -> None:
        o = self.orders[order_id]
        try:
            result = await self.venue.create_order(
                VenueOrderRequest(o.client_order_id, o.pair, o.side, o.type, o.quantity, o.price, o.time_in_force)
            )
        except Exception as e:
            raise Transient(f"venue {self.venue.name} unavailable for {order_id}: {e}") from e
        await self._on_venue_result(order_id, result)

    async def _on_venue_result(self, order_id: str, r: VenueOrder) -> None:
        o = self.orders[order_id]
        if o.venue_status is None:
            ts = now_ms()
            base = msgspec.structs.replace(
                o, venue_order_id=r.venue_order_id, venue_status=r.status, venue_filled=r.filled, updated_at=ts
            )
            if r.status == "rejected":
                self.log.warning("order {} rejected by {}: {}", order_id, self.venue.name, r.reason)
                await self._update(order_id, lambda _: transition(base, S.REJECTED, ts, r.reason), "rejected")
            elif r.status in ("canceled", "expired") and r.filled == 0:
                final = S.CANCELED if r.status == "canceled" else S.EXPIRED
                await self._update(order_id, lambda _: transition(base, final, ts, r.reason), r.status)
            elif o.status is S.SUBMITTED:
                await self._update(order_id, lambda _: transition(base, S.ACCEPTED, ts, r.reason), "accepted")
            else:  # fills overtook the venue's answer: keep the fill state, note what the venue said
                await self._update(order_id, lambda _: base, "venue_update")
        for t in r.trades:
            report = ExecutionReport(
                kind="trade",
                order_id=o.order_id,
                client_order_id=o.client_order_id,
                pair=o.pair,
                side=o.side,
                order_quantity=o.quantity,
                venue=self.venue.name,
                ts=t.ts,
                trade_id=t.trade_id,
                quantity=t.quantity,
                price=t.price,
                fee=t.fee,
                fee_currency=t.fee_currency,
                liquidity=t.liquidity,
            )
            await self.bus.js_publish(
                self.subjects.exec_reports(o.pair), report, msg_id=f"{self.venue.name}:{t.trade_id}"
            )

    async def _reconcile(self) -> None:
        """Orders persisted but never answered by the venue: ask the venue by client order id."""
        for o in list(self.orders.values()):
            if o.status is S.SUBMITTED and o.venue_status is None:
                found = await self.venue.fetch_order(o.client_order_id, o.pair)
                if found is not None:
                    self.log.info("reconciled {} with the venue: {}", o.order_id, found.status)
                    await self._on_venue_result(o.order_id, found)
                else:
                    self.log.info("order {} never reached the venue: routing it now", o.order_id)
                    await self._send(o.order_id)

    # -- fills -----------------------------------------------------------------------------------------
    async def _on_fill(self, f: Fill, env: Envelope) -> None:
        o = self.orders.get(f.order_id)
        if o is None:
            return  # a fill of an order that is not ours (an outside writer): the ledger still books it
        ref = FillRef(
            fill_id=f.fill_id,
            quantity=f.quantity,
            price=f.price,
            fee=f.fee,
            fee_currency=f.fee_currency,
            liquidity=f.liquidity,
            timestamp=f.timestamp,
        )
        filled = f.order_filled_quantity if f.order_filled_quantity is not None else o.filled_quantity + f.quantity
        if f.order_average_price is not None:
            avg = f.order_average_price
        else:
            avg = (o.total_cost + f.quantity * f.price) / filled
        fees = f.order_fees if f.order_fees is not None else o.fees + f.fee

        def change(cur: Order) -> Order:
            new = apply_fill(cur, ref, filled=filled, average=avg, fees=fees)
            if (
                new is not cur
                and new.status is S.PARTIALLY_FILLED
                and new.venue_status in ("canceled", "expired")
                and new.venue_filled is not None
                and filled >= new.venue_filled
            ):
                final = S.CANCELED if new.venue_status == "canceled" else S.EXPIRED
                new = transition(new, final, f.timestamp, cur.reason)
            return new

        await self._update(f.order_id, change, "fill")

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
