"""risk-gate: every order passes here before it can reach a venue.

It serves ``tbx.orders.submit`` (request/reply, queue group): a denial is answered at once with its
code, field and reason; an approval is persisted on the durable hop to the order-router, which
answers the caller once the order exists. Nothing is approved without a price from market data.
"""

from __future__ import annotations

from actors.base import Actor
from actors.books import BookCache
from bus.client import Bus, Envelope
from config.settings import Settings
from domain.risk import Denial, check_order
from schemas.messages import ApprovedOrder, OrderReply, OrderRequest, RiskValidation, now_ms


class RiskGate(Actor):
    name = "risk-gate"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.books = BookCache(bus)
        self.trading_state = "ACTIVE"
        self.approved = 0
        self.denied = 0

    async def on_start(self) -> None:
        s = self.subjects
        await self.books.start()
        self.log.warning(
            "not enforced yet: MAX_POSITION_SIZE, MAX_DAILY_LOSS, MAX_ORDERS_PER_SECOND, ENABLE_RISK_CHECKS and "
            "STOP_LOSS_ENABLED are read and validated, but this risk-gate checks only the pair, quantity, prices "
            "and market data of market orders for now"
        )
        await self.bus.subscribe(s.orders_submit, OrderRequest, self._on_submit, queue=self.name)

    def stats(self) -> dict[str, int | float | str]:
        return {"approved": self.approved, "denied": self.denied, "tradingState": self.trading_state}

    async def _on_submit(self, req: OrderRequest, env: Envelope) -> None:
        decision = check_order(
            req,
            pairs=self.settings.PAIRS,
            book=await self.books.get(req.pair) if req.pair in self.settings.PAIRS else None,
            trading_state=self.trading_state,
        )
        if isinstance(decision, Denial):
            self.denied += 1
            self.log.info(
                "denied {} ({} {} {}): {} {}",
                req.client_order_id,
                req.side,
                req.quantity,
                req.pair,
                decision.code,
                decision.reason,
            )
            await self.bus.respond(
                env,
                OrderReply(
                    ok=False,
                    code=decision.code,
                    field=decision.field,
                    detail=decision.reason,
                    risk_validation=RiskValidation(passed=False, code=decision.code, reason=decision.reason),
                ),
            )
            return
        approved = ApprovedOrder(
            request=req,
            risk_validation=decision.validation,
            estimated_cost=decision.estimated_cost,
            reply_to=env.reply,
            approved_at=now_ms(),
        )
        await self.bus.js_publish(self.subjects.approved_orders(req.pair), approved)
        self.approved += 1
