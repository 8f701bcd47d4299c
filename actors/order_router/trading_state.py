"""The risk-gate's trading state (ACTIVE / REDUCING / HALTED) as the order-router follows it, for the execution
algorithms: their children never pass the risk gate, so the engine asks this before each child and stops every
running algorithm when trading halts (the gate's automatic halt on MAX_DAILY_LOSS / MAX_DRAWDOWN only changes the
state; the emergency stop also cancels the working orders).

The gate keeps the state in JetStream KV (bucket ``<PREFIX>_STATE``, key ``risk.state``, actors/risk_gate.py); it
is read at start and watched from then on. A state never stored is ACTIVE (no gate has halted anything yet).
"""

from __future__ import annotations

from collections.abc import Callable

import nats.js.errors
from nats.js.kv import KeyValue

from bus.client import Bus

STATE_KEY = "risk.state"  # (actors/risk_gate.py STATE_KEY: the key the gate writes)


class TradingState:
    def __init__(self, bus: Bus, on_change: Callable[[str], None]) -> None:
        self.bus = bus
        self.state = "ACTIVE"
        self.on_change = on_change
        self.kv: KeyValue | None = None

    async def open(self) -> None:
        """The stored state, read now (before the algorithms resume)."""
        self.kv = await self.bus.kv(self.bus.subjects.kv_state)
        try:
            entry = await self.kv.get(STATE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return
        if entry.value:
            self.state = entry.value.decode()

    async def follow(self) -> None:
        """Every later write of the state applied as it is stored."""
        assert self.kv is not None
        watcher = await self.kv.watch(STATE_KEY)
        async for entry in watcher:
            if entry is None or entry.operation is not None or not entry.value:
                continue
            state = entry.value.decode()
            if state != self.state:
                self.state = state
                self.on_change(state)
