"""The venue's market rules (tick, amount step, minimum notional, fees), as served by the order-router
on ``tbx.query.markets``: a cache other actors hold and refresh."""

from __future__ import annotations

import asyncio

from loguru import logger

from bus.client import Bus
from bus.errors import RequestFailed
from schemas.messages import Empty, MarketRules, MarketsPage

REFRESH_S = 60.0
RETRY_S = 2.0


class MarketRulesCache:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.rules: dict[str, MarketRules] = {}

    def get(self, pair: str) -> MarketRules | None:
        return self.rules.get(pair)

    async def load(self) -> bool:
        try:
            page = await self.bus.request(self.bus.subjects.query("markets"), Empty(), MarketsPage, timeout=2.0)
        except RequestFailed as e:
            logger.bind(actor=self.bus.name).debug("market rules not available yet: {}", e.reason)
            return False
        self.rules = {m.pair: m for m in page.markets}
        return True

    async def keep(self) -> None:
        """Load now (retrying until the order-router answers), then refresh every REFRESH_S."""
        while True:
            ok = await self.load()
            await asyncio.sleep(REFRESH_S if ok else RETRY_S)
