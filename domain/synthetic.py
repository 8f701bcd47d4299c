"""A seeded synthetic L2 order book: a random walk of the mid with 10 levels a side. Pure."""

from __future__ import annotations

import math
import random
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from schemas.messages import Book

START_PRICES: dict[str, Decimal] = {
    "BTC": Decimal("60000"),
    "ETH": Decimal("3000"),
    "SOL": Decimal("150"),
    "XMR": Decimal("160"),
    "LTC": Decimal("80"),
    "RVN": Decimal("0.0245"),
    "BEL": Decimal("0.8"),
    "DOGE": Decimal("0.15"),
}


def _pow10(exp: int) -> Decimal:
    return Decimal(1).scaleb(exp)


def tick_size(price: Decimal) -> Decimal:
    """About five significant digits of price."""
    return _pow10(math.floor(math.log10(float(price))) - 4)


def lot_size(price: Decimal) -> Decimal:
    """Quantity step: finer for dearer assets, whole units for cheap ones."""
    return min(Decimal(1), _pow10(-(math.floor(math.log10(float(price))) + 2)))


class SyntheticBook:
    """Random walk of the mid (log-normal steps), fixed relative spread, random depth per level."""

    def __init__(
        self, pair: str, seed: int, *, levels: int = 10, volatility: float = 0.0005, start: Decimal | None = None
    ) -> None:
        self.pair = pair
        self.rng = random.Random(f"{seed}:{pair}")
        base = pair.split("_")[0]
        self.mid = float(start or START_PRICES.get(base, Decimal(100)))
        self.levels = levels
        self.volatility = volatility

    def next(self, ts: int) -> Book:
        self.mid *= math.exp(self.rng.gauss(0.0, self.volatility))
        mid = Decimal(repr(self.mid))
        tick = tick_size(mid)
        lot = lot_size(mid)
        half_spread = max(tick, (mid * Decimal("0.0002")).quantize(tick, ROUND_UP))
        best_bid = (mid - half_spread).quantize(tick, ROUND_DOWN)
        best_ask = (mid + half_spread).quantize(tick, ROUND_UP)
        bids, asks = [], []
        for i in range(self.levels):
            step = tick * 2 * i
            bids.append((best_bid - step, self._size(mid, lot)))
            asks.append((best_ask + step, self._size(mid, lot)))
        return Book(pair=self.pair, bids=bids, asks=asks, ts=ts)

    def _size(self, mid: Decimal, lot: Decimal) -> Decimal:
        notional = Decimal(self.rng.randint(5_000, 60_000))
        return max(lot, (notional / mid).quantize(lot, ROUND_DOWN))
