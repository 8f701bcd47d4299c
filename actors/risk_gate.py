"""risk-gate: every order passes here before it can reach a venue.

It serves ``tbx.orders.submit`` (request/reply, queue group): a denial is answered at once with its
code, field and reason; an approval is persisted on the durable hop to the order-router, which
answers the caller once the order exists. The checks are ``domain.risk.check_order``; the venue's
market rules (tick, step, minimum notional) come from the order-router (``tbx.query.markets``) and
the position for reduce-only orders from the portfolio-ledger.
"""

from __future__ import annotations

from decimal import Decimal

from actors.base import Actor
from actors.books import BookCache
from actors.markets import MarketRulesCache
from bus.client import Bus, Envelope
from bus.errors import RequestFailed
from config.settings import Settings
from domain.risk import Denial, check_order
from schemas.messages import (
    ApprovedOrder,
    Empty,
    OrderReply,
    OrderRequest,
    PortfolioSnapshot,
    RiskValidation,
    now_ms,
)

ZERO = Decimal(0)


class RiskGate(Actor):
    name = "risk-gate"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.books = BookCache(bus)
        self.markets = MarketRulesCache(bus)
        self.trading_state = "ACTIVE"
        self.approved = 0
        self.denied = 0

    async def on_start(self) -> None:
        s = self.subjects
        await self.books.start()
        await self.bus.subscribe(s.orders_submit, OrderRequest, self._on_submit, queue=self.name)
        self.spawn(self.markets.keep(), "market rules")
        self.log.warning(
            "not enforced yet: MAX_POSITION_SIZE, MAX_DAILY_LOSS, MAX_ORDERS_PER_SECOND, ENABLE_RISK_CHECKS and "
            "STOP_LOSS_ENABLED are read and validated, but this risk-gate checks only the order itself (pair, "
            "quantity, prices, market rules, stop sides, brackets, reduce-only) for now"
        )

    def stats(self) -> dict[str, int | float | str]:
        return {"approved": self.approved, "denied": self.denied, "tradingState": self.trading_state}

    async def _position(self, pair: str) -> Decimal | None:
        snap = await self.bus.request(self.subjects.query("portfolio"), Empty(), PortfolioSnapshot, timeout=2.0)
        for p in snap.positions:
            if p.pair == pair:
                return p.quantity if p.side == "long" else -p.quantity
        return ZERO

    async def _on_submit(self, req: OrderRequest, env: Envelope) -> None:
        known = req.pair in self.settings.PAIRS
        position: Decimal | None = None
        if req.reduce_only and known:
            try:
                position = await self._position(req.pair)
            except RequestFailed:
                await self._deny(
                    req,
                    env,
                    Denial(
                        "LEDGER_UNAVAILABLE", "reduceOnly", "the position is unknown (portfolio-ledger unavailable)"
                    ),
                )
                return
        decision = check_order(
            req,
            pairs=self.settings.PAIRS,
            book=await self.books.get(req.pair) if known else None,
            trading_state=self.trading_state,
            rules=self.markets.get(req.pair),
            position=position,
            now=now_ms(),
        )
        if isinstance(decision, Denial):
            await self._deny(req, env, decision)
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

    async def _deny(self, req: OrderRequest, env: Envelope, d: Denial) -> None:
        self.denied += 1
        self.log.info(
            "denied {} ({} {} {}): {} {}", req.client_order_id, req.side, req.quantity, req.pair, d.code, d.reason
        )
        reply = OrderReply(
            ok=False, code=d.code, field=d.field, detail=d.reason,
            risk_validation=RiskValidation(passed=False, code=d.code, reason=d.reason),
        )  # fmt: skip
        await self.bus.respond(env, reply)
