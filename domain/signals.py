"""What a signal becomes. Pure: the ML adjustment, the minimum confidence, the duplicate window,
aggregation by weights, and the prices of the order a decision becomes.

Rules (the README repeats them):
- ML adjustment: c' = (1 - w) x c + w x s, with w = ML_WEIGHT and s = p when the ML service predicts
  the signal's direction with confidence p, else 1 - p.
- Minimum confidence: the source's own (SOURCE_MIN_CONFIDENCE) or MIN_CONFIDENCE; a signal below it
  is filtered.
- Duplicates: one executed signal per (source, pair, signal) within SIGNAL_DEDUPE_WINDOW ms; a signal
  id seen before gets the first result again.
- Aggregation: within a window, each source's latest BUY/SELL for a pair is one vote d x c (d = +1
  BUY, -1 SELL); net = sum(w x d x c) / sum(w) over the sources that voted (w = SIGNAL_WEIGHTS, 1 when
  unnamed; weight 0 mutes a source). net > 0 buys, net < 0 sells, with confidence |net|; net = 0 (say
  opposite signals of equal weight and confidence) does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
DIRECTION = {"BUY": 1, "SELL": -1}
ACTIONS = ("BUY", "SELL", "HOLD", "CLOSE")  # a signal's ``signal``, in any case on input


def canonical(value: str, allowed: Sequence[str]) -> str | None:
    """``value`` as spelled in ``allowed``, matched without regard to case (``buy`` -> ``BUY``); None if
    it is none of them."""
    if not value.isascii():  # "ſell".casefold() is "sell": letters only ASCII, as the document's pattern says
        return None
    folded = value.lower()
    return next((a for a in allowed if a.lower() == folded), None)


def ml_adjusted(confidence: Decimal, signal: str, ml_signal: str, ml_confidence: Decimal, weight: Decimal) -> Decimal:
    """The confidence after the ML service's view (see the module's rules)."""
    s = ml_confidence if ml_signal == signal else ONE - ml_confidence
    return (ONE - weight) * confidence + weight * s


def min_confidence(source: str, default: Decimal, per_source: Mapping[str, Decimal]) -> Decimal:
    return per_source.get(source, default)


class RecentSignals:
    """The last executed signal per (source, pair, signal), to filter repeats within a window."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.last: dict[tuple[str, str, str], tuple[int, str]] = {}

    def duplicate_of(self, source: str, pair: str, signal: str, at: int) -> str | None:
        """The id of the executed signal this one repeats, if it came within the window."""
        seen = self.last.get((source, pair, signal))
        if seen is None or self.window_ms <= 0:
            return None
        return seen[1] if abs(at - seen[0]) < self.window_ms else None

    def remember(self, source: str, pair: str, signal: str, at: int, signal_id: str) -> None:
        key = (source, pair, signal)
        seen = self.last.get(key)
        if seen is None or at >= seen[0]:
            self.last[key] = (at, signal_id)

    def forget_before(self, at: int) -> None:
        """Drop what no longer matters (older than the window before ``at``)."""
        old = [k for k, (t, _) in self.last.items() if at - t >= self.window_ms]
        for k in old:
            del self.last[k]


@dataclass(frozen=True, slots=True)
class Vote:
    signal_id: str
    source: str
    signal: str  # BUY or SELL
    confidence: Decimal
    at: int  # when it was stored (epoch ms)


@dataclass(frozen=True, slots=True)
class Decision:
    signal: str | None  # BUY, SELL, or None: the votes cancel out (or all sources are muted)
    confidence: Decimal  # |net|
    net: Decimal
    counted: tuple[str, ...]  # the signal ids whose vote counted (each source's latest)


def aggregate(votes: Sequence[Vote], weights: Mapping[str, Decimal]) -> Decision:
    latest: dict[str, Vote] = {}
    for v in sorted(votes, key=lambda v: (v.at, v.signal_id)):
        latest[v.source] = v
    total = ZERO
    score = ZERO
    counted = []
    for source, v in sorted(latest.items()):
        w = weights.get(source, ONE)
        if w <= ZERO:
            continue
        total += w
        score += w * DIRECTION[v.signal] * v.confidence
        counted.append(v.signal_id)
    if total == ZERO:
        return Decision(None, ZERO, ZERO, ())
    net = score / total
    signal = "BUY" if net > ZERO else "SELL" if net < ZERO else None
    return Decision(signal, abs(net), net, tuple(counted))


def _to_tick(price: Decimal, tick: Decimal | None, rounding: str) -> Decimal:
    if tick is None or tick <= ZERO:
        return price
    return (price / tick).to_integral_value(rounding=rounding) * tick


def limit_price(side: str, reference: Decimal, offset_percent: Decimal, tick: Decimal | None) -> Decimal:
    """A passive limit: a buy ``offset_percent`` below the reference (rounded down to the tick), a
    sell as far above (rounded up)."""
    off = offset_percent / HUNDRED
    if side == "buy":
        return _to_tick(reference * (ONE - off), tick, ROUND_FLOOR)
    return _to_tick(reference * (ONE + off), tick, ROUND_CEILING)


def default_exits(
    side: str, entry: Decimal, stop_percent: Decimal, take_percent: Decimal, tick: Decimal | None
) -> tuple[Decimal, Decimal | None]:
    """Default stop-loss and take-profit around ``entry`` (percent of it), rounded to the tick towards
    the entry (neither risks nor promises more than the percent), but always at least one tick away on
    its own side, even when the entry is between ticks or the percent is smaller than a tick."""
    sl, tp = stop_percent / HUNDRED, take_percent / HUNDRED
    below = _below(entry, tick)
    above = _above(entry, tick)
    if side == "buy":
        stop = min(_to_tick(entry * (ONE - sl), tick, ROUND_CEILING), below)
        take = max(_to_tick(entry * (ONE + tp), tick, ROUND_FLOOR), above) if tp > ZERO else None
    else:
        stop = max(_to_tick(entry * (ONE + sl), tick, ROUND_FLOOR), above)
        take = min(_to_tick(entry * (ONE - tp), tick, ROUND_CEILING), below) if tp > ZERO else None
    return stop, take


def _below(price: Decimal, tick: Decimal | None) -> Decimal:
    """The highest price strictly below ``price`` (on the tick when there is one)."""
    if tick is None or tick <= ZERO:
        return price.next_minus()
    p = _to_tick(price, tick, ROUND_FLOOR)
    return p - tick if p >= price else p


def _above(price: Decimal, tick: Decimal | None) -> Decimal:
    """The lowest price strictly above ``price`` (on the tick when there is one)."""
    if tick is None or tick <= ZERO:
        return price.next_plus()
    p = _to_tick(price, tick, ROUND_CEILING)
    return p + tick if p <= price else p
