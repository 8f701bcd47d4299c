"""A seeded synthetic L2 order book: a random walk of the mid with 10 levels a side. Pure.

``SyntheticMarket`` prices a set of pairs consistently. The pairs quoted in the main quote currency
(a stable coin if any, else the most common quote), e.g. BTC_USDT and ETH_USDT, are the legs and walk
at random. A cross whose two currencies both have a leg (ETH_BTC) is not walked on its own but priced
from them (mid = ETH_USDT mid / BTC_USDT mid), so converting through a cross or through the legs gives
the same value up to the books' ticks. Any other pair walks on its own from a consistent start
(``start_price``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from domain.recent import RecentIds
from schemas.messages import Book
from schemas.subjects import pair_currencies

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


STABLE = frozenset({"USDT", "USD", "USDC", "BUSD", "DAI", "TUSD", "FDUSD"})  # worth about 1 USD each


def usd_value(quote: str) -> Decimal:
    """About what one unit of a quote currency is worth in USD: 1 for a stable coin or an unknown one."""
    return Decimal(1) if quote in STABLE else START_PRICES.get(quote, Decimal(1))


def start_price(pair: str) -> Decimal:
    """Where a pair's synthetic price starts: its base in USD over its quote in USD (START_PRICES; an
    unknown base is 100): ETH_BTC 3000 / 60000 = 0.05."""
    base, quote = pair_currencies(pair)
    return START_PRICES.get(base, Decimal(100)) / usd_value(quote)


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
        self.mid = float(start or start_price(pair))
        self.quote_usd = usd_value(pair_currencies(pair)[1])  # depth and lots are sized in USD
        self.levels = levels
        self.volatility = volatility

    def next(self, ts: int) -> Book:
        """The next book of the random walk."""
        self.mid *= math.exp(self.rng.gauss(0.0, self.volatility))
        return self.at(self.mid, ts)

    def at(self, mid_f: float, ts: int) -> Book:
        """A book around ``mid_f`` (depth from this pair's own random sizes)."""
        self.mid = mid_f
        mid = Decimal(repr(mid_f))
        tick = tick_size(mid)
        lot = lot_size(mid if self.quote_usd == 1 else mid * self.quote_usd)
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
        notional = Decimal(self.rng.randint(5_000, 60_000))  # USD
        if self.quote_usd != 1:
            notional /= self.quote_usd
        return max(lot, (notional / mid).quantize(lot, ROUND_DOWN))


class SyntheticMarket:
    """Books for a set of pairs, crosses priced from their legs (see the module docstring)."""

    def __init__(self, pairs: Sequence[str], seed: int, **kw: float) -> None:
        self.pairs = list(pairs)
        quotes = Counter(pair_currencies(p)[1] for p in self.pairs)
        # the main quote: a stable coin first, then the most pairs, then the first listed
        main = max(quotes, key=lambda q: (q in STABLE, quotes[q], -self._first(q))) if quotes else ""
        legs = {pair_currencies(p)[0]: p for p in self.pairs if pair_currencies(p)[1] == main}
        self.books = {p: SyntheticBook(p, seed, **kw) for p in self.pairs}  # type: ignore[arg-type]
        self.crosses: dict[str, tuple[str, str]] = {}  # cross -> (leg of its base, leg of its quote)
        for p in self.pairs:
            base, quote = pair_currencies(p)
            if quote != main and base in legs and quote in legs:
                self.crosses[p] = (legs[base], legs[quote])

    def _first(self, quote: str) -> int:
        return next(i for i, p in enumerate(self.pairs) if pair_currencies(p)[1] == quote)

    def next(self, ts: int) -> list[Book]:
        """One book per pair, in the order of ``pairs``: legs and lone pairs walk, crosses follow their legs."""
        out: dict[str, Book] = {}
        for p in self.pairs:
            if p not in self.crosses:
                out[p] = self.books[p].next(ts)
        for p, (of_base, of_quote) in self.crosses.items():
            out[p] = self.books[p].at(self.books[of_base].mid / self.books[of_quote].mid, ts)
        return [out[p] for p in self.pairs]


# -- SYNTHETIC_CLOCK=event ---------------------------------------------------------------------------
class EventMarket:
    """Books that step by events, not by time: a pair's book at step ``k`` is a pure function of (seed, pair,
    k), so two runs that see the same events see the same prices, and a feed that restarts and counts the
    events again (from the streams) publishes the very book it published before it died.

    The mid walks as ``SyntheticBook`` does (log-normal steps, this pair's own random sequence), one step per
    event; the depth of each level is drawn from a sequence of its own per step. A cross whose two currencies
    both have a leg in the main quote (ETH_BTC) does not walk: its mid is its legs' mids at their steps.
    """

    def __init__(self, pairs: Sequence[str], seed: int, *, levels: int = 10, volatility: float = 0.0005) -> None:
        self.seed = seed
        self.volatility = volatility
        self._shape = SyntheticMarket(pairs, seed, levels=levels, volatility=volatility)
        self.pairs = self._shape.pairs
        self.crosses = self._shape.crosses
        self._mids: dict[str, list[float]] = {p: [float(b.mid)] for p, b in self._shape.books.items()}
        self._walks = {p: random.Random(f"{seed}:{p}:walk") for p in self.pairs}

    def mid(self, pair: str, step: int) -> float:
        """The mid of a walking pair after ``step`` events (step 0: its start price)."""
        if step < 0:
            raise ValueError("step must be >= 0")
        mids, rng = self._mids[pair], self._walks[pair]
        while len(mids) <= step:
            mids.append(mids[-1] * math.exp(rng.gauss(0.0, self.volatility)))
        return mids[step]

    def book(self, pair: str, steps: Mapping[str, int], ts: int) -> Book:
        """``pair``'s book when each pair has seen ``steps[pair]`` events (absent: 0)."""
        b = self._shape.books[pair]
        if pair in self.crosses:
            of_base, of_quote = self.crosses[pair]
            at = (steps.get(of_base, 0), steps.get(of_quote, 0))
            mid = self.mid(of_base, at[0]) / self.mid(of_quote, at[1])
            b.rng = random.Random(f"{self.seed}:{pair}:{at[0]}:{at[1]}")
        else:
            step = steps.get(pair, 0)
            mid = self.mid(pair, step)
            b.rng = random.Random(f"{self.seed}:{pair}:{step}")
        return b.at(mid, ts)

    def books(self, steps: Mapping[str, int], ts: int) -> list[Book]:
        """Every pair's book, in the order of ``pairs``."""
        return [self.book(p, steps, ts) for p in self.pairs]

    def moved_by(self, pair: str) -> list[str]:
        """The pairs whose book changes when ``pair`` steps: itself (unless a cross) and the crosses it is a
        leg of."""
        own = [] if pair in self.crosses else [pair]
        return own + [c for c, legs in self.crosses.items() if pair in legs]


class FillClock:
    """The events of SYNTHETIC_CLOCK=event: an order of the pair completely filled (a fill with
    ``orderComplete``), each order counted once however often its fills are seen. Pure.

    ``steps[pair]`` is the number of the pair's orders completely filled. The order ids counted are kept
    (the last ``remember`` of them; a completing fill seen again after that many later orders would be
    counted twice).
    """

    def __init__(self, remember: int = 1_000_000) -> None:
        self.steps: dict[str, int] = {}
        self._seen = RecentIds(remember)

    def on_fill(self, pair: str, order_id: str, complete: bool | None) -> bool:
        """One fill seen; True when it steps ``pair``."""
        if not complete:
            return False
        key = f"{pair}\x00{order_id}"
        if key in self._seen:
            return False
        self._seen.add(key)
        self.steps[pair] = self.steps.get(pair, 0) + 1
        return True
