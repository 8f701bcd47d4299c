"""signal-intake: trading signals from anyone become orders.

Signals arrive on the SIGNALS stream (``tbx.signals.submit``, plain JSON from any NATS client) and
are read by a durable consumer, so a signal published while this actor is down is handled when it is
back. BUY and SELL become a market order through the risk-gate; HOLD does nothing; CLOSE closes the
pair's position. Each outcome is published on ``tbx.events.signals.<pair>``.

The order's client id is derived from the signal id, so a redelivered or repeated signal never makes
a second order. Sizing here is the simple rule: ``quantity`` when the signal gives one, else
``riskParameters.maxRiskPercent`` (default 2%) of INITIAL_BALANCE at the signal's price or the mid.
"""

from __future__ import annotations

from decimal import Decimal

from actors.base import Actor
from actors.books import BookCache
from actors.markets import MarketRulesCache
from bus.client import Bus, Envelope
from config.settings import Settings
from domain.ids import day_key, signal_id
from domain.sizing import DEFAULT_RISK_FRACTION, QTY_STEP, fixed_notional
from schemas.messages import (
    Empty,
    OrderReply,
    OrderRequest,
    PortfolioSnapshot,
    PositionSizing,
    Signal,
    SignalEvent,
    SignalOrder,
    now_ms,
)
from schemas.subjects import PAIR_RE

ZERO = Decimal(0)


class SignalIntake(Actor):
    name = "signal-intake"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.books = BookCache(bus)
        self.markets = MarketRulesCache(bus)
        self.counts = {"executed": 0, "filtered": 0, "rejected": 0}

    async def on_start(self) -> None:
        s = self.subjects
        await self.books.start()
        await self.markets.load()  # the amount steps, before the first signal is sized (if the router is up)
        self.spawn(self.markets.keep(), "market rules")
        await self.bus.consume(
            stream=s.s_signals, durable="signal-intake", subject=s.signals_submit, type_=Signal, handler=self._on_signal
        )

    def stats(self) -> dict[str, int | float | str]:
        return dict(self.counts)

    async def _event(
        self,
        sig: Signal,
        sid: str,
        status: str,
        reason: str | None = None,
        orders: list[SignalOrder] | None = None,
        sizing: PositionSizing | None = None,
    ) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        ev = SignalEvent(
            signal_id=sid,
            status=status,
            pair=sig.pair,
            signal=sig.signal,  # type: ignore[arg-type]
            confidence=sig.confidence,
            source=sig.source,
            strategy=sig.strategy,
            ts=now_ms(),
            reason=reason,
            orders=orders or [],
            position_sizing=sizing,
        )
        self.log.info(
            "signal {} {} {} {}: {}{}", sid, sig.signal, sig.pair, sig.source, status, f" ({reason})" if reason else ""
        )
        await self.bus.js_publish(self.subjects.signal_events(sig.pair), ev, msg_id=f"{sid}:{status}")

    async def _on_signal(self, sig: Signal, env: Envelope) -> None:
        # without an id of its own, a signal is named by where the stream stored it: the same on redelivery
        sid = sig.signal_id or signal_id(day_key(env.stored_at or sig.timestamp or 0), env.seq or 0)
        if not PAIR_RE.match(sig.pair):  # not even usable in a subject name
            await self.bus.dead_letter(
                env.subject, f"signal {sid}: pair {sig.pair!r} is not written BASE_QUOTE", env.raw.data, env.seq
            )
            self.counts["rejected"] += 1
            return None
        if sig.pair not in self.settings.PAIRS:
            return await self._event(sig, sid, "rejected", f"pair {sig.pair} is not traded here")
        if not sig.confidence.is_finite() or not (ZERO <= sig.confidence <= 1):
            return await self._event(sig, sid, "rejected", f"confidence must be within 0..1, got {sig.confidence}")
        if sig.signal == "HOLD":
            return await self._event(sig, sid, "filtered", "HOLD does nothing")
        if sig.signal == "CLOSE":
            snap = await self.bus.request(self.subjects.query("portfolio"), Empty(), PortfolioSnapshot)
            pos = next((p for p in snap.positions if p.pair == sig.pair), None)
            if pos is None or pos.quantity == ZERO:
                return await self._event(sig, sid, "filtered", f"no open position in {sig.pair}")
            side, qty = ("sell" if pos.side == "long" else "buy"), pos.quantity
            sizing = PositionSizing(recommended_size=qty, risk_amount=pos.market_value.copy_abs(), method="close")
            # named after the position, not the signal: several CLOSE signals for one position make one order
            client_id = f"close-{pos.id}-{qty}"
        else:
            client_id = f"{sid}-1"
            side = "buy" if sig.signal == "BUY" else "sell"
            price = sig.price or await self.books.mid(sig.pair)
            if sig.quantity is not None:
                if sig.quantity <= ZERO:
                    return await self._event(sig, sid, "rejected", "quantity must be positive")
                qty = sig.quantity
                sizing = PositionSizing(recommended_size=qty, risk_amount=qty * (price or ZERO), method="fixed")
            else:
                if price is None:
                    return await self._event(sig, sid, "rejected", f"no price for {sig.pair}: no market data yet")
                rp = sig.risk_parameters
                fraction = rp.max_risk_percent if rp and rp.max_risk_percent else DEFAULT_RISK_FRACTION
                if not (ZERO < fraction <= 1):
                    return await self._event(sig, sid, "rejected", "riskParameters.maxRiskPercent must be in (0, 1]")
                rules = self.markets.get(sig.pair)
                step = rules.amount_step if rules else QTY_STEP
                qty, amount = fixed_notional(self.settings.INITIAL_BALANCE, fraction, price, step)
                sizing = PositionSizing(recommended_size=qty, risk_amount=amount, method="fixed_notional")
                if qty <= ZERO:
                    return await self._event(sig, sid, "rejected", "sized quantity rounds to zero")
        req = OrderRequest(
            client_order_id=client_id,
            pair=sig.pair,
            side=side,
            quantity=qty,  # type: ignore[arg-type]
            stop_loss=sig.stop_loss,
            take_profit=sig.take_profit,
            source=f"signal:{sig.source}",
            signal_id=sid,
            ts=now_ms(),
        )
        reply = await self.bus.request(self.subjects.orders_submit, req, OrderReply, timeout=10.0)
        if not reply.ok or reply.order is None:
            return await self._event(sig, sid, "rejected", f"{reply.code}: {reply.detail}", sizing=sizing)
        o = reply.order
        order = SignalOrder(order_id=o.order_id, type=o.type, side=o.side, quantity=o.quantity, status=o.status)
        await self._event(sig, sid, "executed", orders=[order], sizing=sizing)
