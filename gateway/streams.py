"""Live events: ``GET /api/stream`` (Server-Sent Events) and ``GET /api/ws`` (WebSocket).

Each client gets its own ordered JetStream consumers on the event streams it asked for (``types``,
filtered to ``pairs``), so it reads the record itself: every event carries an id that is the client's
position in every stream it follows (``o12.f40.p3.k9.r2.s5``: orders, fills, positions, portfolio,
risk, signals). A client that reconnects with the last id it saw (SSE ``Last-Event-ID``, or
``?lastEventId=`` on the WebSocket) starts right after it in each stream and misses nothing. A new
client starts at the end of each stream (a first ``hello`` event gives its position). A client that
reads too slowly (its buffer of MAX_BUFFER events full) is dropped; the others never wait for it.

``price`` events (``gateway/prices.py``: best bid, best ask and last trade per pair and venue, at most one per
pair and venue every PRICE_EVENT_MS) are live only: not stored, sent without an event id (SSE: no ``id:``
line, so a browser's last event id stays the last stored event's; WebSocket: a frame without ``id``), never
replayed, and they do not move the client's position: a resume after them gets every stored event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse, sse_response
from loguru import logger
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription
from nats.js import api

from bus.client import Bus
from gateway.common import BUS, SETTINGS
from gateway.prices import PriceBoard, PriceEvent
from gateway.problems import ApiError
from gateway.spec import STR, Endpoint, Param, add, q

MAX_BUFFER = 1_000
PING_S = 15.0
LEFT_CHECK_S = 1.0
# kind -> (letter in the event id, stream short name, subject after the prefix, per pair?)
KINDS: dict[str, tuple[str, str, str, bool]] = {
    "order": ("o", "ORDERS", "events.orders", True),
    "fill": ("f", "FILLS", "events.fills", True),
    "position": ("p", "POSITIONS", "events.positions", True),
    "portfolio": ("k", "PORTFOLIO", "events.portfolio", False),
    "risk": ("r", "RISK", "events.risk", False),
    "signal": ("s", "SIGNAL_EVENTS", "events.signals", True),
}
LIVE_KINDS = ("price",)  # live only: no stream, no id, not replayed
TYPES = (*KINDS, *LIVE_KINDS)
PRICES: web.AppKey[PriceBoard] = web.AppKey("prices", PriceBoard)
LETTER = {v[0]: k for k, v in KINDS.items()}
ID_RE = re.compile(r"([ofpkrs][0-9]{1,19})(\.[ofpkrs][0-9]{1,19}){0,5}")  # fullmatch
ID_PATTERN = f"^{ID_RE.pattern}$"
MAX_SEQ = 2**63 - 1
PAIR_RE = re.compile(r"^[A-Z0-9]{1,20}_[A-Z0-9]{1,20}$")


class Slow(Exception):
    """The client's buffer is full: it is dropped."""


@dataclass(slots=True)
class Feed:
    """One client's subscriptions and buffer."""

    bus: Bus
    kinds: list[str]  # the stored kinds followed
    pairs: list[str]
    position: dict[str, int]  # kind -> last stream seq delivered to the client
    types: list[str] = field(default_factory=list)  # every type asked for (stored and live), in the asked order
    prices: PriceBoard | None = None  # set: the client follows price events
    queue: asyncio.Queue[tuple[str, int, bytes] | None] = field(default_factory=lambda: asyncio.Queue(MAX_BUFFER))
    subs: list[Subscription] = field(default_factory=list)
    dropped: bool = False
    on_drop: Callable[[], None] | None = None  # cuts the connection: a writer stuck on a stalled client

    def event_id(self) -> str | None:
        """The client's position in every stored stream it follows (None: it follows none)."""
        return ".".join(f"{KINDS[k][0]}{self.position[k]}" for k in self.kinds) or None

    def hello(self) -> bytes:
        return msgspec.json.encode({"kinds": self.types or self.kinds, "pairs": self.pairs})

    def _put(self, item: tuple[str, int, bytes]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            logger.bind(actor="gateway").warning("stream client dropped: more than {} events waiting", MAX_BUFFER)
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(None)  # wakes a writer that waits for events ...
            if self.on_drop is not None:
                self.on_drop()  # ... and cuts one stuck writing to a client that stopped reading

    def _on_price(self, pair: str, data: bytes) -> None:
        if not self.dropped and (not self.pairs or pair in self.pairs):
            self._put(("price", 0, data))

    async def start(self) -> None:
        if self.prices is not None:
            self.prices.add(self._on_price)
        s = self.bus.subjects
        for kind in self.kinds:
            _, short, subject, per_pair = KINDS[kind]
            base = f"{s.prefix}.{subject}"
            subjects = [f"{base}.{p}" for p in self.pairs] if per_pair and self.pairs else [
                f"{base}.>" if per_pair else base
            ]  # fmt: skip
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.position[kind] + 1,
                filter_subjects=subjects if len(subjects) > 1 else None,
                filter_subject=subjects[0] if len(subjects) == 1 else None,
            )
            sub = await self.bus.js.subscribe(
                subjects[0], stream=s.stream_name(short), cb=self._on(kind), ordered_consumer=True, config=config,
                pending_msgs_limit=MAX_BUFFER * 2,
            )  # fmt: skip
            self.subs.append(sub)

    def _on(self, kind: str):  # noqa: ANN202
        async def cb(msg: NatsMsg) -> None:
            if not self.dropped:
                self._put((kind, msg.metadata.sequence.stream, msg.data))

        return cb

    async def next(self) -> tuple[str, int, bytes]:
        item = await self.queue.get()
        if item is None or self.dropped:
            raise Slow(f"more than {MAX_BUFFER} events waiting")
        kind, seq, data = item
        if kind in self.position:  # a live event (price) moves no position
            self.position[kind] = max(self.position[kind], seq)
        return kind, seq, data

    async def stop(self) -> None:
        if self.prices is not None:
            self.prices.discard(self._on_price)
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self.subs.clear()


async def _feed(request: web.Request, last_id: str | None, *, start: bool = True) -> Feed:
    """The client's feed from its parameters (422 naming a bad one); ``start``: its consumers too."""
    bus = request.app[BUS]
    types = _list(request, "types", TYPES) or list(TYPES)
    kinds = [k for k in types if k in KINDS]
    pairs = [p.upper() for p in _list(request, "pairs", None)]
    for p in pairs:
        if not PAIR_RE.match(p):
            raise ApiError(
                422, "Validation failed", f"pairs: {p!r} is not written BASE_QUOTE", field="pairs", code="INVALID_FIELD"
            )
    position: dict[str, int] = {}
    if last_id:
        if not ID_RE.fullmatch(last_id):
            raise ApiError(
                422,
                "Validation failed",
                "the last event id is not one this stream gave",
                field="lastEventId",
                code="INVALID_FIELD",
            )
        for part in last_id.split("."):
            position[LETTER[part[0]]] = int(part[1:])
        if max(position.values()) >= MAX_SEQ:  # JetStream takes no start sequence past 2^63 - 1
            raise ApiError(
                422, "Validation failed", "the last event id is not one this stream gave",
                field="lastEventId", code="INVALID_FIELD",
            )  # fmt: skip
    for kind in kinds:
        info = await bus.js.stream_info(bus.subjects.stream_name(KINDS[kind][1]))
        last = info.state.last_seq or 0
        if kind not in position:  # not followed before: from now on
            position[kind] = last
        elif position[kind] > last:  # ahead of the stream: it was reset (storage wiped, streams made again)
            raise ApiError(
                422, "Validation failed",
                f"the last event id is ahead of the {kind} events stored ({position[kind]} > {last}): the streams "
                "were reset; connect without it and load the lists again",
                field="lastEventId", code="INVALID_FIELD",
            )  # fmt: skip
    prices = request.app[PRICES] if "price" in types else None
    feed = Feed(bus, kinds, pairs, {k: position[k] for k in kinds}, types=types, prices=prices)
    if start:
        await feed.start()
    return feed


def _list(request: web.Request, name: str, allowed: tuple[str, ...] | None) -> list[str]:
    raw = request.query.get(name, "")
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if allowed is not None:
        for x in items:
            if x not in allowed:
                raise ApiError(
                    422,
                    "Validation failed",
                    f"{name}: {x!r} is not one of {', '.join(allowed)}",
                    field=name,
                    code="INVALID_FIELD",
                )
    return items


def _frame(kind: str, event_id: str | None, data: bytes) -> bytes:
    """A WebSocket frame; a live event (price) and the hello of a client following no stored kind have no id."""
    if event_id is None or kind in LIVE_KINDS:
        return msgspec.json.encode({"type": kind, "data": msgspec.Raw(data)})
    return msgspec.json.encode({"id": event_id, "type": kind, "data": msgspec.Raw(data)})


class _EventSource(EventSourceResponse):
    """aiohttp-sse's response, but a stream whose client left ends like any answer (aiohttp logs its
    access line) instead of raising CancelledError when aiohttp finishes it."""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return self._payload_writer
        return await super().prepare(request)


def _gone(request: web.Request) -> bool:
    """Has the client left? (aiohttp drops the protocol's transport when the connection is lost.)"""
    t = request.protocol.transport if request.protocol is not None else None
    return t is None or t.is_closing()


def _abort(request: web.Request) -> None:
    """Cut the connection now: a reset (linger 0), so neither side keeps the unsent events buffered."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def sse(request: web.Request) -> web.StreamResponse:
    feed = await _feed(request, request.headers.get("Last-Event-ID") or request.query.get("lastEventId"))
    feed.on_drop = lambda: _abort(request)
    try:
        async with sse_response(
            request, ping_interval=PING_S, headers={"X-Accel-Buffering": "no"}, response_cls=_EventSource
        ) as resp:
            await resp.send(feed.hello().decode(), id=feed.event_id(), event="hello")
            while resp.is_connected() and not _gone(request):
                try:
                    try:  # wake up now and then: a client that left is noticed within a second
                        kind, _, data = await asyncio.wait_for(feed.next(), LEFT_CHECK_S)
                    except TimeoutError:
                        continue
                    event_id = None if kind in LIVE_KINDS else feed.event_id()  # a price event: no id
                    await resp.send(data.decode(), id=event_id, event=kind)
                except Slow:
                    break
                except (ConnectionError, TimeoutError):
                    break  # gone, cut, or stalled past the send timeout
        return resp
    finally:
        await feed.stop()


async def ws(request: web.Request) -> web.StreamResponse:
    feed = await _feed(request, request.query.get("lastEventId"), start=False)
    sock = web.WebSocketResponse(heartbeat=PING_S, max_msg_size=64 * 1024)
    if not sock.can_prepare(request).ok:  # a plain GET: say what is needed, as a problem (not aiohttp's 400 text)
        raise ApiError(
            426, "Upgrade Required",
            "GET /api/ws is a WebSocket: connect with a WebSocket client (Upgrade: websocket); "
            "for plain HTTP use GET /api/stream (Server-Sent Events)",
            code="UPGRADE_REQUIRED", headers={"Upgrade": "websocket"},
        )  # fmt: skip
    await feed.start()
    # a second for the writer to send the 1013 close itself; cut if it is stuck on a client that stopped reading
    feed.on_drop = lambda: asyncio.get_running_loop().call_later(1.0, _abort, request)  # type: ignore[func-returns-value]
    try:
        await sock.prepare(request)
        await sock.send_str(_frame("hello", feed.event_id(), feed.hello()).decode())

        async def reader() -> None:  # the client only closes (or pings); anything else is ignored
            async for m in sock:
                if m.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break

        read = asyncio.create_task(reader())
        try:
            while not sock.closed and not read.done():
                nxt = asyncio.create_task(feed.next())
                done, _ = await asyncio.wait({nxt, read}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    break
                try:
                    kind, _, data = nxt.result()
                    await sock.send_str(_frame(kind, feed.event_id(), data).decode())
                except Slow:
                    with contextlib.suppress(Exception):
                        await sock.close(code=1013, message=b"too slow: reconnect with lastEventId")
                    break
                except (ConnectionError, TimeoutError):
                    break
        finally:
            read.cancel()
        return sock
    finally:
        await feed.stop()


FILTERS: tuple[Param, ...] = (
    q("types", STR, "comma-separated: " + ", ".join(TYPES) + " (default all)"),
    q("pairs", STR, "comma-separated BASE_QUOTE pairs (default all)"),
)


async def _start_prices(app: web.Application) -> None:
    await app[PRICES].start()


async def _stop_prices(app: web.Application) -> None:
    await app[PRICES].stop()


def register(app: web.Application) -> None:
    desc = __doc__ or ""
    app[PRICES] = PriceBoard(app[BUS], app[SETTINGS].PRICE_EVENT_MS)
    app.on_startup.append(_start_prices)
    app.on_cleanup.append(_stop_prices)
    add(
        app,
        Endpoint(
            "GET",
            "/api/stream",
            sse,
            "Live events as Server-Sent Events",
            "streams",
            {200: (None, "text/event-stream: events named order, fill, position, portfolio, risk, signal, price")},
            params=(
                *FILTERS,
                Param(
                    "Last-Event-ID", "header", {"type": "string", "pattern": ID_PATTERN}, "resume after this event id"
                ),
                q(
                    "lastEventId",
                    {"type": "string", "pattern": ID_PATTERN},
                    "resume after this event id (or the header)",
                ),
            ),
            errors=(422,),
            description=desc,
            media="text/event-stream",
            events=(PriceEvent,),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/ws",
            ws,
            "Live events over a WebSocket",
            "streams",
            {101: (None, "Switching to the WebSocket: text frames {id, type, data}")},
            params=(
                *FILTERS,
                q("lastEventId", {"type": "string", "pattern": ID_PATTERN}, "resume after this event id"),
            ),
            errors=(422, 426),
            description=desc,
            events=(PriceEvent,),
        ),
    )
