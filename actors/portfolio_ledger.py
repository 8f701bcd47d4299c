"""portfolio-ledger: the book of record. Positions, balances, realized and unrealized P&L.

It books every fill on the FILLS stream, whoever wrote it, exactly once (by fill id, in stream
order). Its state is a pure fold of ``domain.ledger`` over that stream, so a restart - even after a
kill -9 in the middle of a stream of fills - rebuilds the very same books. Marks come from the mid of
the latest ``tbx.md.book.<pair>``; the portfolio is revalued and published every
POSITION_UPDATE_INTERVAL ms on ``tbx.events.portfolio``, and each position change on
``tbx.events.positions.<pair>``.
"""

from __future__ import annotations

from decimal import Decimal

from actors.base import Actor
from actors.books import BookCache
from bus.client import Bus, Envelope
from config.settings import Settings
from domain.ids import day_key
from domain.ledger import Ledger, LedgerError
from domain.valuation import DayStart, equity, position_view, roll_day, snapshot
from schemas.messages import Empty, Fill, PortfolioSnapshot, now_ms


class PortfolioLedger(Actor):
    name = "portfolio-ledger"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.ledger = Ledger(settings.BASE_CURRENCY, settings.INITIAL_BALANCE)
        self.books = BookCache(bus)
        self.marks: dict[str, Decimal] = self.books.mids  # marks are the mids of the latest books
        self.day = DayStart()
        self.applied: set[str] = set()
        self.last_seq = 0
        self.live = False
        self.rejected = 0

    async def on_start(self) -> None:
        s = self.subjects
        await self.books.start()
        await self.bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._on_fill)
        self.live = True
        self.log.info("books rebuilt from {} fills (stream seq {})", self.ledger.fills_applied, self.last_seq)
        await self.bus.subscribe(s.query("portfolio"), Empty, self._on_query, queue=self.name)
        interval = self.settings.POSITION_UPDATE_INTERVAL / 1000
        self.spawn(self.every(interval, self.publish_snapshot, "portfolio revaluation"), "revalue")

    def stats(self) -> dict[str, int | float | str]:
        return {
            "fills": self.ledger.fills_applied,
            "lastFillSeq": self.last_seq,
            "rejectedFills": self.rejected,
            "equity": str(equity(self.ledger, self.marks)),
        }

    async def _on_fill(self, fill: Fill, env: Envelope) -> None:
        if fill.fill_id in self.applied:
            return
        # replaying history, the day is the fill's own; live, it is today's
        day = day_key(now_ms() if self.live else fill.timestamp)
        self.day = roll_day(self.ledger, self.marks, self.day, day)
        try:
            self.ledger.apply_fill(fill)
        except LedgerError as e:
            self.rejected += 1
            await self.bus.dead_letter(
                env.subject, f"ledger cannot book fill {fill.fill_id}: {e}", env.raw.data, env.seq
            )
            return
        self.applied.add(fill.fill_id)
        self.last_seq = env.seq or self.last_seq
        if self.live:
            total = equity(self.ledger, self.marks)
            view = position_view(self.ledger, fill.pair, self.marks, self.day, total)
            await self.bus.js_publish(self.subjects.position_events(fill.pair), view, msg_id=f"pos:{fill.fill_id}")

    def current(self) -> PortfolioSnapshot:
        self.day = roll_day(self.ledger, self.marks, self.day, day_key(now_ms()))
        return snapshot(self.ledger, self.marks, self.day, now_ms(), self.last_seq)

    async def publish_snapshot(self) -> None:
        await self.bus.js_publish(self.subjects.portfolio_events, self.current())

    async def _on_query(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, self.current())
