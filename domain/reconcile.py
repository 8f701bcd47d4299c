"""Balances reconciled with a live venue: what to compare, what to adjust. Pure.

A reading (``VenueBalances``) gives, per currency, the venue's ``total`` and ``free`` (= total - what
the venue holds for open orders), as of the FILLS position ``fillsSeq``: every trade behind the figures
has a fill at or before it. The ledger compares them with its own figures **as of that same point**:

- its ``total`` and ``locked`` now, less what every fill booked after ``fillsSeq`` changed (the fill
  journal) and less what every order change stored after the reading changed in ``locked`` (the order
  journal, by the time JetStream stored it). So a fill in flight, or an order placed after the read,
  is not a difference; a currency that neither side holds (zero or absent) is not either;
- ``available`` = total - held, with held = max(locked + correction, 0) (below).

A currency whose total or available differs from the venue's total or free by more than its dust
(``BALANCE_DUST``; one unit of its last decimal by default) is a mismatch. The venue wins: an
adjustment sets the ledger's figures as of the reading to the venue's ones.

**The lock rule.** The ledger's available is its total less what its working orders lock; the venue's
free is its total less what it holds for its open orders. An adjustment

- moves the **total** by ``venue total - ledger total`` (a difference, so fills booked before or after
  it keep moving the total as they always do: nothing is undone or counted twice), and
- sets a per-currency **correction of what is locked** to ``(venue total - venue free) - ledger's
  locks``, so that ``held = max(locks + correction, 0)`` is what the venue holds. Later lock changes
  (an order placed, filled or canceled) move ``locks`` as before and the correction stays: an order the
  venue holds that we do not know keeps being held; the correction of an order that both sides know,
  released later on both sides, cannot take ``held`` below zero. The next reading sets the correction
  again (it is an absolute figure per reading, carried as a difference, ``lockedDelta``).

Applying the same reading twice changes nothing more: after the first, the figures as of its point are
the venue's, so the second finds no difference.

``opening`` readings (the first of a live venue whose ledger has no fills yet) are adopted whole, every
currency that differs at all (no dust): they replace the INITIAL_BALANCE-based books.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from schemas.messages import VenueBalances

ZERO = Decimal(0)
JOURNAL_SIZE = 2_000  # recent fills (and order changes) remembered to look back to a reading's point
VENUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CURRENCY_RE = re.compile(r"^[A-Z0-9]{1,20}$")


@dataclass(frozen=True, slots=True)
class Books:
    """One currency in the ledger as of a reading's point: total, what the orders lock, the correction."""

    total: Decimal = ZERO
    locks: Decimal = ZERO
    correction: Decimal = ZERO

    @property
    def held(self) -> Decimal:
        h = self.locks + self.correction
        return h if h > ZERO else ZERO

    @property
    def available(self) -> Decimal:
        return self.total - self.held


@dataclass(frozen=True, slots=True)
class Change:
    """What to do to one currency: the ledger's figures (total, available) as of the reading, the
    venue's (total, free), and the two differences that make them equal."""

    currency: str
    ledger_total: Decimal
    ledger_available: Decimal
    venue_total: Decimal
    venue_free: Decimal
    total_delta: Decimal
    locked_delta: Decimal


def reading_problem(r: VenueBalances, subject_venue: str | None = None) -> tuple[str, str] | None:
    """(field, reason) when a reading cannot be compared, else None."""
    if not VENUE_RE.match(r.venue):
        return "venue", "letters, digits, '_' or '-' (1 to 64)"
    if subject_venue is not None and subject_venue != r.venue:
        return "venue", f"{r.venue!r} is not the venue of the subject ({subject_venue!r})"
    if r.fills_seq < 0:
        return "fillsSeq", "must be >= 0"
    for c, f in r.balances.items():
        if not CURRENCY_RE.match(c):
            return f"balances.{c}", "a currency code written as the ledger writes them (upper case, e.g. USDT)"
        if not (f.total.is_finite() and f.free.is_finite()):
            return f"balances.{c}", "total and free must be finite numbers"
        if f.free < ZERO:
            return f"balances.{c}.free", "must be >= 0"
        if f.free > f.total:
            return f"balances.{c}.free", f"{f.free} is more than the total {f.total}"
    return None


def dust_of(
    currency: str, dust: Mapping[str, Decimal], decimals: Mapping[str, int], default_decimals: int = 8
) -> Decimal:
    """The largest difference that still agrees: BALANCE_DUST's figure for the currency, else its "*",
    else one unit of the currency's last decimal (CURRENCY_PRECISION)."""
    d = dust.get(currency)
    if d is None:
        d = dust.get("*")
    if d is None:
        d = Decimal(1).scaleb(-decimals.get(currency, default_decimals))
    return d


def changes(
    books: Mapping[str, Books],
    venue: Mapping[str, tuple[Decimal, Decimal]],
    dust: Callable[[str], Decimal],
) -> list[Change]:
    """The currencies whose ledger figures (``books``, as of the reading) differ from the venue's
    (``venue``: currency -> (total, free)) beyond ``dust(currency)``, and what makes them equal. A
    currency absent on one side is zero there. Sorted by currency."""
    out = []
    for c in sorted(books.keys() | venue.keys()):
        b = books.get(c, Books())
        vt, vf = venue.get(c, (ZERO, ZERO))
        la = b.available
        d = dust(c)
        if abs(b.total - vt) <= d and abs(la - vf) <= d:
            continue
        # held after = what the venue holds: locks + new correction = vt - vf
        new_correction = (vt - vf) - b.locks
        out.append(
            Change(
                currency=c,
                ledger_total=b.total,
                ledger_available=la,
                venue_total=vt,
                venue_free=vf,
                total_delta=vt - b.total,
                locked_delta=new_correction - b.correction,
            )
        )
    return out


def adjusted(books: Books, change: Change) -> Books:
    """The books of a currency after its change (what the ledger's ``apply_adjustment`` does)."""
    return Books(books.total + change.total_delta, books.locks, books.correction + change.locked_delta)


@dataclass(slots=True)
class Journal:
    """What recent events changed in (total, locked) per currency, by a key that only grows (the FILLS
    sequence, or the time an order change was stored). ``floor``: every event after it is recorded
    (older ones fell off the end, or came before the journal began)."""

    size: int = JOURNAL_SIZE
    floor: int = 0
    entries: list[tuple[int, dict[str, tuple[Decimal, Decimal]]]] = field(default_factory=list)

    def record(
        self,
        key: int,
        before: Mapping[str, tuple[Decimal, Decimal]],
        after: Mapping[str, tuple[Decimal, Decimal]],
    ) -> None:
        delta = {}
        for c, (t1, l1) in after.items():
            t0, l0 = before.get(c, (ZERO, ZERO))
            if t1 != t0 or l1 != l0:
                delta[c] = (t1 - t0, l1 - l0)
        if not delta:
            return
        self.entries.append((key, delta))
        if len(self.entries) > self.size:
            dropped = self.entries[: len(self.entries) - self.size]
            del self.entries[: len(dropped)]
            self.floor = max(self.floor, dropped[-1][0])

    def covers(self, key: int) -> bool:
        """Whether every change after ``key`` is recorded."""
        return key >= self.floor

    def since(self, key: int) -> dict[str, tuple[Decimal, Decimal]]:
        """The sum of the changes recorded after ``key``, per currency."""
        out: dict[str, tuple[Decimal, Decimal]] = {}
        for k, delta in reversed(self.entries):
            if k <= key:
                break
            for c, (dt, dl) in delta.items():
                t, lk = out.get(c, (ZERO, ZERO))
                out[c] = (t + dt, lk + dl)
        return out


def as_of(
    now: Mapping[str, tuple[Decimal, Decimal, Decimal]],
    *later: Mapping[str, tuple[Decimal, Decimal]],
) -> dict[str, Books]:
    """The books as of a reading: ``now`` (currency -> total, locks, correction) less the changes that
    came later (``Journal.since`` of the fills and of the orders)."""
    out = {}
    currencies: set[str] = set(now)
    for m in later:
        currencies |= m.keys()
    for c in currencies:
        t, lk, corr = now.get(c, (ZERO, ZERO, ZERO))
        for m in later:
            dt, dl = m.get(c, (ZERO, ZERO))
            t, lk = t - dt, lk - dl
        out[c] = Books(t, lk, corr)
    return out


def venue_figures(r: VenueBalances) -> dict[str, tuple[Decimal, Decimal]]:
    return {c: (f.total, f.free) for c, f in r.balances.items()}
