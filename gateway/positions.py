"""Position endpoints: open positions, closing one pair or all (reduce-only market orders)."""

from __future__ import annotations

from aiohttp import web

from gateway.common import BUS, ask
from gateway.orders import denied, placed_order
from gateway.problems import ApiError, json_response
from gateway.spec import PAIR, Endpoint, add, path
from schemas.messages import Empty, OrderReply, OrderRequest, PortfolioSnapshot, PositionView, now_ms
from schemas.rest import ClosedPositions, PlacedOrder, Positions

LEDGER = "the portfolio-ledger"
GATE = "the risk-gate"


async def _positions(request: web.Request) -> list[PositionView]:
    bus = request.app[BUS]
    snap: PortfolioSnapshot = await ask(request, bus.subjects.query("portfolio"), Empty(), PortfolioSnapshot, LEDGER)  # type: ignore[assignment]
    return [p for p in snap.positions if p.quantity != 0]


async def get_positions(request: web.Request) -> web.Response:
    pair = (request.query.get("pair") or "").upper()
    positions = await _positions(request)
    return json_response(Positions(positions=[p for p in positions if not pair or p.pair == pair]))


async def _close(request: web.Request, pos: PositionView) -> OrderReply:
    """A reduce-only market order for the whole position, named after it: asking twice makes one order."""
    req = OrderRequest(
        client_order_id=f"close-{pos.id}-{pos.quantity}", pair=pos.pair,
        side="sell" if pos.side == "long" else "buy", quantity=pos.quantity, reduce_only=True,
        source="api:close", ts=now_ms(),
    )  # fmt: skip
    bus = request.app[BUS]
    return await ask(request, bus.subjects.orders_submit, req, OrderReply, GATE, req.client_order_id)  # type: ignore[return-value]


async def close_position(request: web.Request) -> web.Response:
    pair = request.match_info["pair"].upper()
    pos = next((p for p in await _positions(request) if p.pair == pair), None)
    if pos is None:
        raise ApiError(404, "Not Found", f"no open position in {pair}", field="pair", code="NO_POSITION")
    reply = await _close(request, pos)
    if not reply.ok or reply.order is None:
        raise denied(reply, "Close refused")
    return json_response(placed_order(reply), status=201)


async def close_all(request: web.Request) -> web.Response:
    out = ClosedPositions(orders=[], failed={})
    for pos in await _positions(request):
        reply = await _close(request, pos)
        if reply.ok and reply.order is not None:
            out.orders.append(placed_order(reply))
        else:
            out.failed[pos.pair] = f"{reply.code}: {reply.detail}"
    return json_response(out)


def register(app: web.Application) -> None:
    t = "portfolio"
    add(
        app,
        Endpoint(
            "GET",
            "/api/positions",
            get_positions,
            "Open positions (optionally one pair)",
            t,
            {200: (Positions, "The open positions, marked at the latest books")},
            params=(PAIR,),
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/positions/close-all",
            close_all,
            "Close every position at market",
            t,
            {200: (ClosedPositions, "The closing orders, and the pairs that could not be closed")},
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/positions/{pair}/close",
            close_position,
            "Close one pair's position at market",
            t,
            {201: (PlacedOrder, "The closing order (reduce-only; asking again returns the same order)")},
            params=(path("pair", "BASE_QUOTE"),),
            errors=(409, 503, 504),
        ),
    )
