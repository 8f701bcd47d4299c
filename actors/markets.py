"""The venues' market rules (tick, amount step, minimum notional, fees), as served by the order-router
on ``tbx.query.markets``: a cache other actors hold and refresh.

Several venues: the answer lists every venue's rules, each ``MarketRules.venue`` naming its venue; an
entry without one is the rules of the page's ``venue`` (an order-router with a single venue). The cache is
keyed by (venue, pair)."""

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
        self.rules: dict[tuple[str, str], MarketRules] = {}  # (venue, pair) -> its rules
        self.by_pair: dict[str, list[MarketRules]] = {}  # pair -> every venue's rules for it

    def get(self, pair: str, venue: str | None = None) -> MarketRules | None:
        """``venue``'s rules for ``pair``; without a venue, the pair's rules when only one venue has any
        (a one-venue deployment), else None (which venue's would be a guess)."""
        if venue is not None:
            return self.rules.get((venue, pair))
        found = self.by_pair.get(pair)
        return found[0] if found is not None and len(found) == 1 else None

    def coarsest(self, pair: str) -> MarketRules | None:
        """Of every venue listing ``pair``, the rules with the coarsest amount step and tick (a signal's size and
        limit price written in them suit every venue whose steps are powers of ten, as they are in practice)."""
        found = self.by_pair.get(pair)
        if not found:
            return None
        return max(found, key=lambda m: (m.amount_step, m.tick_size))

    def put(self, page: MarketsPage) -> None:
        rules: dict[tuple[str, str], MarketRules] = {}
        by_pair: dict[str, list[MarketRules]] = {}
        for m in page.markets:
            venue = m.venue or page.venue
            rules[(venue, m.pair)] = m
        for (_, pair), m in rules.items():
            by_pair.setdefault(pair, []).append(m)
        self.rules, self.by_pair = rules, by_pair

    async def load(self) -> bool:
        try:
            page = await self.bus.request(self.bus.subjects.query("markets"), Empty(), MarketsPage, timeout=2.0)
        except RequestFailed as e:
            logger.bind(actor=self.bus.name).debug("market rules not available yet: {}", e.reason)
            return False
        self.put(page)
        return True

    async def keep(self) -> None:
        """Load now (retrying until the order-router answers), then refresh every REFRESH_S."""
        while True:
            ok = await self.load()
            await asyncio.sleep(REFRESH_S if ok else RETRY_S)
