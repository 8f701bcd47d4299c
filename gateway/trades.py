"""``GET /api/trades``: the fills, newest first, read straight from the FILLS stream (the record)."""

from __future__ import annotations

import asyncio

import nats.js.errors
from aiohttp import web
from loguru import logger

from bus.client import Bus, Envelope
from bus.codec import DecodeFailure, decode
from config.venues import venue_configs, venue_names
from domain.recent import FILL_DEDUPE_WINDOW, FirstSeen
from gateway.common import BUS, MAX_SEQ, SETTINGS, int_param, query_param
from gateway.exchange_param import EXCHANGE, exchange_param
from gateway.problems import json_response
from gateway.spec import PAIR, STR, Endpoint, Param, add, limit, one_of, q
from schemas.messages import Fill
from schemas.rest import Trades

BATCH = 50
MAX_SCAN = 5_000  # stored messages looked at per request; the cursor continues from there


class FillIndex:
    """Where each fill id of the last FILL_DEDUPE_WINDOW fills was first stored, following FILLS: a copy
    stored later (an outside writer's repeat) is not listed, on any page. The ledger books the first copy
    and remembers as many fill ids, so the listing and the books agree."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen = FirstSeen(FILL_DEDUPE_WINDOW)
        self.ready = False

    async def start(self) -> None:
        s = self.bus.subjects
        try:
            last = (await self.bus.js.stream_info(s.s_fills)).state.last_seq or 0
            await self.bus.replay(
                stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._on_fill,
                start_seq=max(1, last - FILL_DEDUPE_WINDOW + 1),
            )  # fmt: skip
        except Exception as e:  # listing still works, a repeat is then only dropped within its page
            logger.bind(actor="gateway").warning("fill index not started ({}): repeats listed once per page", e)
            return
        self.ready = True

    async def _on_fill(self, fill: Fill, env: Envelope) -> None:
        self.seen.saw(fill.fill_id, env.seq or 0)

    def is_repeat(self, fill_id: str, seq: int) -> bool:
        first = self.seen.first(fill_id)
        return first is not None and first < seq


FILL_INDEX: web.AppKey[FillIndex] = web.AppKey("fill_index", FillIndex)


async def get_trades(request: web.Request) -> web.Response:
    """A page of fills, newest first, each naming its venue as ``exchange`` (``?exchange=``: one venue's):
    the stream is read backwards from the cursor (the stream sequence to start below). A fill id is listed
    once, at its first copy (the one the ledger booked): a fill stored again by an outside writer (without
    its Nats-Msg-Id, or outside JetStream's duplicate window) is booked once by the ledger and must not
    look like a second trade (FillIndex; beyond its window, and until it has started, once per page)."""
    pair = (query_param(request, "pair") or "").upper()
    exchange = exchange_param(request)
    if exchange is not None and len(venue_names(request.app[SETTINGS])) == 1:
        exchange = None  # a one-venue deployment books every fill on its venue, whatever the fill names
    order_id = query_param(request, "orderId")
    mode = query_param(request, "mode", ("paper", "live"))
    kind: set[str] | None = None  # ?mode=: the paper venues' fills, or the live venues'
    if mode is not None:
        configs = venue_configs(request.app[SETTINGS])
        kind = {v.name for v in configs if v.paper == (mode == "paper")}
        if len(configs) == 1:  # one venue books every fill, whatever the fill names: all of them, or none
            kind = None if kind else set()
    size = int_param(request, "limit", 1, 500, 50) or 50
    cursor = int_param(request, "cursor", 1, MAX_SEQ)
    bus = request.app[BUS]
    stream = bus.subjects.s_fills
    state = (await bus.js.stream_info(stream)).state
    first, last = state.first_seq or 1, state.last_seq or 0
    if cursor is not None and cursor > last + 1:  # not a cursor this stream gave: nothing below it to read
        return json_response(Trades(trades=[]))
    seq = cursor - 1 if cursor is not None else last
    wanted = bus.subjects.fills(pair) if pair else None
    out: list[Fill] = []
    listed: set[str] = set()
    index = request.app[FILL_INDEX]
    scanned = 0
    while seq >= first and len(out) < size and scanned < MAX_SCAN:
        seqs = list(range(seq, max(first, seq - BATCH + 1) - 1, -1))
        msgs = await asyncio.gather(*(_get(bus.js, stream, n) for n in seqs))
        for n, msg in zip(seqs, msgs, strict=True):
            seq, scanned = n - 1, scanned + 1
            if msg is None or (wanted and msg.subject != wanted):
                continue
            try:
                fill = decode(msg.data or b"", Fill)
            except DecodeFailure:
                continue
            if (order_id and fill.order_id != order_id) or (exchange is not None and fill.venue != exchange):
                continue
            if kind is not None and fill.venue not in kind:
                continue
            if fill.fill_id in listed or index.is_repeat(fill.fill_id, n):
                continue
            listed.add(fill.fill_id)
            out.append(fill)
            if len(out) >= size:
                break
    return json_response(Trades(trades=out, next_cursor=str(seq + 1) if seq >= first else None))


async def _get(js: object, stream: str, seq: int) -> object | None:
    try:
        return await js.get_msg(stream, seq)  # type: ignore[attr-defined]
    except nats.js.errors.NotFoundError:
        return None


def register(app: web.Application) -> None:
    app[FILL_INDEX] = FillIndex(app[BUS])
    add(
        app,
        Endpoint(
            "GET",
            "/api/trades",
            get_trades,
            "Fills, newest first, paged",
            "portfolio",
            {200: (Trades, "A page of fills; nextCursor continues")},
            params=(
                PAIR,
                EXCHANGE,
                Param(
                    "mode", "query", one_of(("paper", "live")), "paper: the paper venues' fills; live: the live venues'"
                ),
                q("orderId", STR, "one order's fills"),
                limit(500, 50),
                q("cursor", {"type": "integer", "minimum": 1, "maximum": MAX_SEQ}, "nextCursor of the previous page"),
            ),
            errors=(422, 503),
        ),
    )
