"""fill-tracker: turns the venue's trades into canonical fills, exactly once.

A fill is identified by the venue's trade id: a replayed or duplicated report never counts twice.
A trade beyond the order's quantity is refused, dead-lettered and raised as a critical risk alert.
For each order it keeps the cumulative filled quantity, the volume-weighted average price and the
fees, and writes them on each canonical fill (``orderFilledQuantity``, ``orderAveragePrice``...).

Memory: an order's trade ids and totals stay while it can still fill; once complete it leaves memory
after KEEP_COMPLETE newer ones did, leaving one byte behind (``done``): a report about it after that
is a repeat (the reconcile sends an order's trades again) and is dropped. An order that ends partly
filled (canceled) keeps its totals, since the venue could in principle still report a trade of it.

Recovery: its state is rebuilt from the FILLS stream it writes; the report consumer is durable, and a
fill is published before its report is acknowledged, so a crash in between only causes a redelivery
that the trade-id check drops.
"""

from __future__ import annotations

from collections import deque

from actors.base import Actor
from bus.client import Bus, Envelope
from config.settings import Settings
from domain.fills import OrderFills, Overfill
from domain.ids import fill_id, trade_id_of
from domain.partitions import durable
from domain.recent import OrderTable
from schemas.messages import ExecutionReport, Fill, RiskAlert, now_ms

KEEP_COMPLETE = 1_000  # complete orders whose trade ids stay in memory


class FillTracker(Actor):
    name = "fill-tracker"
    partitioned = True  # PARTITIONS > 1: the reports of its partition's pairs only (``tbx.hop.reports.p<k>.*``)

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.orders: dict[str, OrderFills] = {}
        self.complete: deque[str] = deque()  # complete orders still in memory, oldest first
        self.done = OrderTable("B")  # 1: complete, and out of memory
        self.published = 0
        self.duplicates = 0
        self.overfills = 0

    async def on_start(self) -> None:
        s = self.subjects
        await self.bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._rebuild, follow=False)
        self.log.info("rebuilt fill totals of {} orders from the FILLS stream", len(self.orders))
        await self.bus.consume(
            stream=s.s_hops,
            durable=durable(self.name, self.partition),
            subject=s.exec_reports(partition=self.partition),
            type_=ExecutionReport,
            handler=self._on_report,
            lane=_order_id,  # one order's reports one after the other (its fills add up), orders side by side
        )

    def stats(self) -> dict[str, int | float | str]:
        return {"fills": self.published, "duplicates": self.duplicates, "overfills": self.overfills}

    async def _rebuild(self, f: Fill, env: Envelope) -> None:
        if not self.owns(f.pair):  # another partition's
            return
        quantity = f.order_filled_quantity if f.order_complete else None
        of = self.orders.get(f.order_id)
        if of is None:
            of = self.orders[f.order_id] = OrderFills(quantity or f.quantity)
        trade_id = trade_id_of(f.fill_id, f.venue, f.pair)
        # a rebuilt order's quantity is unknown until a report says it: allow what the log holds
        of.order_quantity = max(of.order_quantity, of.filled + f.quantity)
        of.add(trade_id, f.quantity, f.price, f.fee)
        if f.order_complete:  # as the fill says: the quantity above is only a floor for a working order
            self._retire(f.order_id)

    def _retire(self, order_id: str) -> None:
        self.complete.append(order_id)
        while len(self.complete) > KEEP_COMPLETE:
            oid = self.complete.popleft()
            of = self.orders.get(oid)
            if of is not None:
                del self.orders[oid]
                self.done.set(oid, 1)

    async def _on_report(self, r: ExecutionReport, env: Envelope) -> None:
        if r.kind != "trade" or r.trade_id is None:
            return
        of = self.orders.get(r.order_id)
        if of is None and self.done.get(r.order_id):
            self.duplicates += 1  # every trade of it was counted, long ago
            self.log.info("trade {} of {}, complete long ago: dropped as a repeat", r.trade_id, r.order_id)
            return
        if of is None:
            of = OrderFills(r.order_quantity)
        else:
            of.order_quantity = r.order_quantity
        if r.trade_id in of.trade_ids:
            self.duplicates += 1
            return
        trial = OrderFills(of.order_quantity, set(of.trade_ids), of.filled, of.cost, of.fees)
        try:
            trial.add(r.trade_id, r.quantity, r.price, r.fee)
        except Overfill as e:
            self.overfills += 1
            await self._alert_overfill(r, str(e))
            await self.bus.dead_letter(env.subject, f"overfill: {e}", env.raw.data, env.seq)
            return
        fill = Fill(
            fill_id=fill_id(r.venue, r.pair, r.trade_id),
            order_id=r.order_id,
            client_order_id=r.client_order_id,
            pair=r.pair,
            side=r.side,
            quantity=r.quantity,
            price=r.price,
            fee=r.fee,
            fee_currency=r.fee_currency,
            liquidity=r.liquidity,
            venue=r.venue,
            timestamp=r.ts,
            order_filled_quantity=trial.filled,
            order_average_price=trial.average_price,
            order_fees=trial.fees,
            order_complete=trial.complete,
        )
        await self.bus.js_publish(self.subjects.fills(r.pair), fill, msg_id=fill.fill_id)
        self.orders[r.order_id] = trial  # committed only once the fill is stored
        self.published += 1
        if trial.complete:
            self._retire(r.order_id)

    async def _alert_overfill(self, r: ExecutionReport, why: str) -> None:
        self.log.error("OVERFILL refused on {} ({}): {}", r.order_id, r.pair, why)
        alert = RiskAlert(
            severity="critical", code="OVERFILL", message=why, ts=now_ms(), pair=r.pair, order_id=r.order_id
        )
        await self.bus.js_publish(self.subjects.risk_events, alert)


def _order_id(r: ExecutionReport) -> str:
    return r.order_id
