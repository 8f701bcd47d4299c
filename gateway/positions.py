"""Position endpoints: open positions, closing one pair or all (reduce-only market orders)."""

from __future__ import annotations

import hashlib

from aiohttp import web

from gateway.common import BUS, ask
from gateway.exchange_param import EXCHANGE, exchange_param
from gateway.orders import denied, placed_order
from gateway.problems import ApiError, json_response
from gateway.spec import PAIR, Endpoint, add, path
from schemas.messages import Empty, OrderReply, OrderRequest, PortfolioSnapshot, PositionView, now_ms
from schemas.rest import ClosedPositions, PlacedOrder, Positions

LEDGER = "the portfolio-ledger"
GATE = "the risk-gate"


async def _snapshot(request: web.Request) -> PortfolioSnapshot:
    bus = request.app[BUS]
    return await ask(request, bus.subjects.query("portfolio"), Empty(), PortfolioSnapshot, LEDGER)  # type: ignore[return-value]


def _open(snap: PortfolioSnapshot, pair: str | None, exchange: str | None) -> list[PositionView]:
    """The open positions (one per venue and pair), of one pair and / or one venue when given."""
    return [
        p
        for p in snap.positions
        if p.quantity != 0 and (not pair or p.pair == pair) and (exchange is None or p.exchange == exchange)
    ]


async def get_positions(request: web.Request) -> web.Response:
    pair = (request.query.get("pair") or "").upper()
    snap = await _snapshot(request)
    exchange = exchange_param(request, snap.by_exchange)
    return json_response(Positions(positions=_open(snap, pair, exchange)))


async def _close(request: web.Request, pos: PositionView) -> OrderReply:
    """A reduce-only market order for the whole position, on the venue that holds it, named after it:
    asking twice makes one order."""
    req = OrderRequest(
        client_order_id=_close_id(pos), pair=pos.pair,
        side="sell" if pos.side == "long" else "buy", quantity=pos.quantity, reduce_only=True,
        source="api:close", ts=now_ms(), exchange=pos.exchange,
    )  # fmt: skip
    bus = request.app[BUS]
    return await ask(request, bus.subjects.orders_submit, req, OrderReply, GATE, req.client_order_id)  # type: ignore[return-value]


async def close_position(request: web.Request) -> web.Response:
    """The pair's position on the venue that holds it; held on several venues, ``?exchange=`` names which
    (without it: 409, nothing is sent)."""
    pair = request.match_info["pair"].upper()
    snap = await _snapshot(request)
    exchange = exchange_param(request, snap.by_exchange)
    held = _open(snap, pair, exchange)
    if not held:
        on = f" on {exchange}" if exchange else ""
        raise ApiError(404, "Not Found", f"no open position in {pair}{on}", field="pair", code="NO_POSITION")
    if len(held) > 1:
        venues = ", ".join(p.exchange or "?" for p in held)
        raise ApiError(
            409, "Conflict",
            f"{pair} is held on {len(held)} venues ({venues}): name one with ?exchange=, or close every one "
            f"with POST /api/positions/close-all?pair={pair}",
            field="exchange", code="POSITION_ON_SEVERAL_EXCHANGES",
        )  # fmt: skip
    reply = await _close(request, held[0])
    if not reply.ok or reply.order is None:
        raise denied(reply, "Close refused")
    return json_response(placed_order(reply), status=201)


async def close_all(request: web.Request) -> web.Response:
    """Every open position (of ``?pair=`` and / or ``?exchange=`` when given), each on its venue."""
    pair = (request.query.get("pair") or "").upper()
    snap = await _snapshot(request)
    exchange = exchange_param(request, snap.by_exchange)
    out = ClosedPositions(orders=[], failed={})
    for pos in _open(snap, pair, exchange):
        reply = await _close(request, pos)
        if reply.ok and reply.order is not None:
            out.orders.append(placed_order(reply))
        else:  # keyed by pair (PAIR:venue when the position id names its venue: several venues)
            key = f"{pos.pair}:{pos.exchange}" if ":" in pos.id else pos.pair
            out.failed[key] = f"{reply.code}: {reply.detail}"
    return json_response(out)


def register(app: web.Application) -> None:
    t = "portfolio"
    add(
        app,
        Endpoint(
            "GET",
            "/api/positions",
            get_positions,
            "Open positions, one per venue and pair (optionally one pair, one venue)",
            t,
            {200: (Positions, "The open positions, marked at the latest books, each naming its exchange")},
            params=(PAIR, EXCHANGE),
            errors=(422, 503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/positions/close-all",
            close_all,
            "Close every position at market, each on its venue (optionally one pair, one venue)",
            t,
            {200: (ClosedPositions, "The closing orders, and the pairs that could not be closed")},
            params=(PAIR, EXCHANGE),
            errors=(422, 503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/positions/{pair}/close",
            close_position,
            "Close one pair's position at market, on the venue that holds it",
            t,
            {201: (PlacedOrder, "The closing order (reduce-only; asking again returns the same order)")},
            params=(path("pair", "BASE_QUOTE"), EXCHANGE),
            errors=(409, 422, 503, 504),
            description="Held on several venues, ?exchange= names which one (without it: 409, nothing sent).",
        ),
    )


def _close_id(pos: PositionView) -> str:
    """The close order's client order id, named after the position (asking twice makes one order); one that would
    be longer than a client order id may be (a long venue name) is its digest."""
    cid = f"close-{pos.id}-{pos.quantity}"
    return cid if len(cid) <= 64 else f"close-{hashlib.sha256(cid.encode()).hexdigest()[:40]}"
