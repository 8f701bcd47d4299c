"""A local Alpaca test exchange that real ccxt talks to: trading API v2 and the crypto market data API.

One aiohttp app on 127.0.0.1 serves both ccxt bases (``urls['api']['trader']`` and ``['market']``): point
every http(s) URL of ccxt's ``urls['api']`` at ``base_url`` (scheme and host replaced, paths kept). This
module has the trading API, the faults, the request log and the control API; the state and the matching
rules are in ``alpaca_engine.py``, the JSON shapes in ``alpaca_model.py``, the market data routes in
``alpaca_market.py``. Keys: ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` on every ``/v2/`` request, else 401
``{"code": 40110000, "message": "request is not authorized"}`` (ccxt: PermissionDenied, an
AuthenticationError); market data needs none.

Python control API (same event loop as the test)::

    ex = AlpacaTestExchange(api_key="k", secret="s", cash="100000", positions={"BTC": "1"})
    base_url = await ex.start()              # http://127.0.0.1:PORT
    ex.set_book("BTC/USD", bids=[("49990", "1")], asks=[("50010", "0.5"), ("50020", "1")])
    ex.inject("lost_after_place", "POST", "/v2/orders")        # the next POST /v2/orders
    ex.order_by_client_id("cid-1"); ex.cash; ex.positions; ex.fills; ex.requests
    await ex.stop()

Faults (``inject(kind, method, path, times=1, seconds=...)``; ``path`` may be an fnmatch pattern such as
``/v2/orders/*``; a fault is used by the next ``times`` authorized requests that match):

- ``lost_after_place``: the request is processed (an order IS placed), then the connection is closed
  without an answer (ccxt: ExchangeNotAvailable).
- ``http_429``: not processed; 429 ``{"code": 42910000, "message": "rate limit exceeded"}``
  (ccxt: RateLimitExceeded).
- ``http_503``: not processed; 503 with a plain text body, as a load balancer answers
  (ccxt: ExchangeNotAvailable).
- ``http_500_placed``: processed (placed), then 500 ``{"code": 50010000, "message": "internal server
  error occurred"}``. ccxt raises plain **ExchangeError** for it (the JSON message wins over the status).
- ``drop_connection``: the connection is closed before processing (ccxt: ExchangeNotAvailable).
- ``slow``: processed, the answer is sent after ``seconds`` (ccxt: RequestTimeout beyond its timeout).
- ``fill_reported_twice``: an activities listing lists each FILL activity twice.

Run on its own for end-to-end tests: ``python -m tests.exchanges.alpaca --port 0`` prints its URL on
stdout; it is then driven through a JSON API under ``/__control/`` (see ``_control_routes``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.exchanges.alpaca_engine import AlpacaEngine
from tests.exchanges.alpaca_market import AlpacaMarketData, Handler, choice, int_param, json_response, time_param
from tests.exchanges.alpaca_model import (
    AlpacaError,
    AssetSpec,
    Order,
    default_assets,
    dstr,
    parse_time,
)
from tests.exchanges.process import serve_until_signal

__all__ = ["FAULT_KINDS", "AlpacaError", "AlpacaTestExchange", "AssetSpec", "default_assets"]

FAULT_KINDS = (
    "lost_after_place",
    "http_429",
    "http_503",
    "http_500_placed",
    "drop_connection",
    "slow",
    "fill_reported_twice",
)
FILL_TWICE = web.RequestKey("fill_twice", bool)


@dataclass
class Fault:
    kind: str
    method: str
    path: str
    times: int = 1
    seconds: float = 5.0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method == method.upper() and fnmatch.fnmatchcase(path, self.path)


class AlpacaTestExchange:
    """The local Alpaca: an ``AlpacaEngine`` behind Alpaca's REST paths, with faults and a request log."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        secret: str = "test-secret",
        assets: Iterable[AssetSpec] | None = None,
        cash: Decimal | str | int = Decimal("100000"),
        positions: Mapping[str, Decimal | str | int] | None = None,
        taker_fee: Decimal | str = Decimal("0.0025"),
        maker_fee: Decimal | str = Decimal("0.0015"),
        min_order_cost: Decimal | str = Decimal("10"),
        fill_delay: float = 0.0,
        clock_skew_ms: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.secret = secret
        self.engine = AlpacaEngine(
            assets=assets,
            cash=cash,
            positions=positions,
            taker_fee=taker_fee,
            maker_fee=maker_fee,
            min_order_cost=min_order_cost,
        )
        self.fill_delay = fill_delay  # seconds between the answer to a new order and its matching
        self.clock_skew_ms = clock_skew_ms  # what GET /v2/clock adds to the real time
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.base_url = ""

    # ---- lifecycle ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/v2/account", self._account)
        r.add_get("/v2/clock", self._clock)
        r.add_get("/v2/assets", self._assets)
        r.add_get("/v2/assets/{symbol_or_asset_id}", self._asset)
        r.add_get("/v2/positions", self._positions)
        r.add_get("/v2/positions/{symbol_or_asset_id}", self._position)
        r.add_post("/v2/orders", self._create_order)
        r.add_get("/v2/orders", self._list_orders)
        r.add_delete("/v2/orders", self._cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self._order_by_client_id)
        r.add_get("/v2/orders/{order_id}", self._get_order)
        r.add_delete("/v2/orders/{order_id}", self._cancel_order)
        r.add_patch("/v2/orders/{order_id}", self._replace_order)
        r.add_get("/v2/account/activities", self._activities)
        r.add_get("/v2/account/activities/{activity_type}", self._activities)
        AlpacaMarketData(self.engine).add_routes(r)
        self._control_routes(r)
        return app

    async def start(self) -> str:
        """Listen on ``host`` (a free port unless one was given); returns ``http://127.0.0.1:PORT``."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- control API ----------------------------------------------------------------------------

    def set_book(self, symbol: str, bids: Iterable[Iterable[object]], asks: Iterable[Iterable[object]]) -> None:
        """Replace the book of ``symbol`` ((price, size) pairs, best first or not); open orders match it."""
        self.engine.set_book(symbol, bids, asks)

    def inject(
        self, kind: str, method: str = "POST", path: str = "/v2/orders", *, times: int = 1, seconds: float = 5.0
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(FAULT_KINDS)}")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        self.faults.append(Fault(kind, method.upper(), path, times, seconds))

    def clear_faults(self) -> None:
        self.faults.clear()

    def place_external_order(self, **params: Any) -> dict[str, Any]:
        """An order placed "on the website": same rules as POST /v2/orders, no request logged, no faults.

        ``params`` are Alpaca's (``symbol``, ``side``, ``type``, ``qty`` or ``notional``, ``limit_price``,
        ``stop_price``, ``time_in_force`` (default gtc), ``client_order_id``). Raises ``AlpacaError``.
        """
        params.setdefault("time_in_force", "gtc")
        params.setdefault("type", "market")
        order = self.engine.place(params, source="external")
        answer = order.to_json()
        self._schedule_activation(order.id)
        return answer

    @property
    def cash(self) -> Decimal:
        return self.engine.cash

    @cash.setter
    def cash(self, value: Decimal | str | int) -> None:
        self.engine.cash = Decimal(str(value))

    @property
    def positions(self) -> dict[str, Decimal]:
        """Coin -> quantity held (after fees), as ``GET /v2/positions`` shows it (``qty``)."""
        return {c: q for c, q in self.engine.positions.items() if q != 0}

    def set_position(self, coin: str, qty: Decimal | str | int) -> None:
        self.engine.positions[coin] = Decimal(str(qty))

    @property
    def orders(self) -> list[dict[str, Any]]:
        """Every order ever placed, oldest first, as Alpaca's order JSON (plus ``source``: api | external)."""
        return [{**o.to_json(), "source": o.source} for o in self.engine.orders.values()]

    def order(self, order_id: str) -> dict[str, Any]:
        return self.engine.get(order_id).to_json()

    def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        order = self.engine.by_client_id.get(client_order_id)
        return None if order is None else order.to_json()

    def orders_with_client_id(self, client_order_id: str) -> list[dict[str, Any]]:
        return [o.to_json() for o in self.engine.orders.values() if o.client_order_id == client_order_id]

    @property
    def fills(self) -> list[dict[str, Any]]:
        """FILL activities, oldest first."""
        return [a for a in self.engine.activities if a["activity_type"] == "FILL"]

    @property
    def fees(self) -> list[dict[str, Any]]:
        """CFEE activities (the crypto fee, in the asset received), oldest first."""
        return [a for a in self.engine.activities if a["activity_type"] == "CFEE"]

    def requests_to(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method.upper() and r["path"] == path]

    def state(self) -> dict[str, Any]:
        return {
            "cash": dstr(self.cash),
            "positions": {c: dstr(q) for c, q in self.positions.items()},
            "orders": self.orders,
            "fills": self.fills,
            "fees": self.fees,
        }

    # ---- plumbing -------------------------------------------------------------------------------

    def _schedule_activation(self, order_id: str) -> None:
        loop = asyncio.get_running_loop()
        holder: list[asyncio.TimerHandle] = []

        def run() -> None:
            self._timers.discard(holder[0])
            self.engine.activate(order_id)

        handle = loop.call_later(self.fill_delay, run)
        holder.append(handle)
        self._timers.add(handle)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/__control/"):
            return await handler(request)
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw) if raw else None
                if isinstance(body, dict):
                    params.update(body)
        entry: dict[str, Any] = {"method": request.method, "path": request.path, "params": params, "status": None}
        self.requests.append(entry)
        if request.path.startswith("/v2/") and (
            request.headers.get("APCA-API-KEY-ID") != self.api_key
            or request.headers.get("APCA-API-SECRET-KEY") != self.secret
        ):
            entry["status"] = 401
            return json_response({"code": 40110000, "message": "request is not authorized"}, 401)
        fault = self._take_fault(request.method, request.path)
        entry["fault"] = fault.kind if fault else None
        if fault is not None and fault.kind == "drop_connection":
            return self._drop(request, entry)
        if fault is not None and fault.kind == "http_429":
            entry["status"] = 429
            reset = int(datetime.now(UTC).timestamp()) + 60
            return web.json_response(
                {"code": 42910000, "message": "rate limit exceeded"},
                status=429,
                headers={"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
            )
        if fault is not None and fault.kind == "http_503":
            entry["status"] = 503
            return web.Response(status=503, text="503 Service Temporarily Unavailable", content_type="text/plain")
        request[FILL_TWICE] = fault is not None and fault.kind == "fill_reported_twice"
        try:
            response = await handler(request)
        except AlpacaError as e:
            response = json_response(e.body, e.status)
        except web.HTTPMethodNotAllowed:
            response = json_response({"code": 40510000, "message": "method not allowed"}, 405)
        except web.HTTPNotFound:
            response = json_response({"code": 40410000, "message": "endpoint not found"}, 404)
        if fault is not None and fault.kind == "lost_after_place":
            return self._drop(request, entry)
        if fault is not None and fault.kind == "http_500_placed":
            entry["status"] = 500
            return json_response({"code": 50010000, "message": "internal server error occurred"}, 500)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        entry["status"] = response.status
        return response

    @staticmethod
    def _drop(request: web.Request, entry: dict[str, Any]) -> web.StreamResponse:
        entry["status"] = "dropped"
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=599)  # never reaches the client: the connection is closed

    # ---- trader API -----------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as e:
            raise AlpacaError(400, 40010000, "request body format is invalid") from e
        if not isinstance(body, dict):
            raise AlpacaError(400, 40010000, "request body format is invalid")
        return body

    async def _account(self, request: web.Request) -> web.Response:
        return json_response(self.engine.account_json())

    async def _clock(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC) + timedelta(milliseconds=self.clock_skew_ms)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return json_response(
            {
                "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00",
                "is_open": True,
                "next_open": (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "next_close": (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            }
        )

    async def _assets(self, request: web.Request) -> web.Response:
        q = request.query
        asset_class = q.get("asset_class", "us_equity")
        status = q.get("status")
        if asset_class != "crypto":
            return json_response([])
        return json_response([a.to_json() for a in self.engine.assets.values() if status in (None, "", a.status)])

    def _find_asset(self, key: str) -> AssetSpec:
        for a in self.engine.assets.values():
            if key in (a.id, a.symbol, a.symbol.replace("/", "")):
                return a
        raise AlpacaError(404, 40410000, "asset not found")

    async def _asset(self, request: web.Request) -> web.Response:
        return json_response(self._find_asset(request.match_info["symbol_or_asset_id"]).to_json())

    async def _positions(self, request: web.Request) -> web.Response:
        return json_response(self.engine.positions_json())

    async def _position(self, request: web.Request) -> web.Response:
        key = request.match_info["symbol_or_asset_id"].upper()
        for coin, qty in self.engine.positions.items():
            if qty != 0 and key in (coin, f"{coin}USD", f"{coin}/USD"):
                return json_response(self.engine.position_json(coin))
        raise AlpacaError(404, 40410000, "position does not exist")

    async def _create_order(self, request: web.Request) -> web.Response:
        order = self.engine.place(await self._body(request))
        answer = order.to_json()  # the answer: pending_new, nothing filled; the fills come after it
        self._schedule_activation(order.id)
        return json_response(answer)

    async def _list_orders(self, request: web.Request) -> web.Response:
        q = request.query
        symbols = [s for s in q.get("symbols", "").split(",") if s] or None
        orders = self.engine.list_orders(
            status=choice(q, "status", "open", ("open", "closed", "all")),
            limit=int_param(q, "limit", 50, 1, 500),
            after=time_param(q, "after"),
            until=time_param(q, "until"),
            direction=choice(q, "direction", "desc", ("asc", "desc")),
            symbols=symbols,
            side=q.get("side") or None,
        )
        return json_response([o.to_json() for o in orders])

    async def _order_by_client_id(self, request: web.Request) -> web.Response:
        cid = request.query.get("client_order_id")
        if not cid:
            raise AlpacaError(422, 40010001, "client_order_id is required")
        return json_response(self.engine.get_by_client_id(cid).to_json())

    async def _get_order(self, request: web.Request) -> web.Response:
        return json_response(self.engine.get(request.match_info["order_id"]).to_json())

    async def _cancel_order(self, request: web.Request) -> web.Response:
        self.engine.cancel(request.match_info["order_id"])
        return web.Response(status=204)

    async def _cancel_all(self, request: web.Request) -> web.Response:
        canceled = self.engine.cancel_all()
        return json_response([{"id": o.id, "status": 200, "body": o.to_json()} for o in canceled], 207)

    async def _replace_order(self, request: web.Request) -> web.Response:
        new: Order = self.engine.replace(request.match_info["order_id"], await self._body(request))
        answer = new.to_json()
        self._schedule_activation(new.id)
        return json_response(answer)

    async def _activities(self, request: web.Request) -> web.Response:
        q = request.query
        path_type = request.match_info.get("activity_type")
        if path_type:
            types: set[str] | None = {path_type.upper()}
        elif q.get("activity_types"):
            types = {t.strip().upper() for t in q["activity_types"].split(",") if t.strip()}
        else:
            types = None
        after, until = time_param(q, "after"), time_param(q, "until")
        if q.get("date"):
            day = parse_time(q["date"], "date")
            after, until = day - timedelta(microseconds=1), day + timedelta(days=1) - timedelta(microseconds=1)
        rows = self.engine.list_activities(
            types=types,
            after=after,
            until=until,
            direction=choice(q, "direction", "desc", ("asc", "desc")),
            page_size=int_param(q, "page_size", 100, 1, 100),
            page_token=q.get("page_token") or None,
        )
        if request.get(FILL_TWICE):
            rows = [r for row in rows for r in ([row, row] if row["activity_type"] == "FILL" else [row])]
        return json_response(rows)

    # ---- control over HTTP (for a separate process) ---------------------------------------------

    def _control_routes(self, r: web.UrlDispatcher) -> None:
        async def state(request: web.Request) -> web.Response:
            return json_response(self.state())

        async def requests(request: web.Request) -> web.Response:
            return json_response(self.requests)

        async def book(request: web.Request) -> web.Response:
            b = await request.json()
            self.set_book(b["symbol"], b.get("bids", []), b.get("asks", []))
            return json_response({"ok": True})

        async def fault(request: web.Request) -> web.Response:
            b = await request.json()
            try:
                self.inject(
                    b["kind"],
                    b.get("method", "POST"),
                    b.get("path", "/v2/orders"),
                    times=int(b.get("times", 1)),
                    seconds=float(b.get("seconds", 5.0)),
                )
            except (KeyError, ValueError) as e:
                return json_response({"error": str(e)}, 400)
            return json_response({"ok": True})

        async def clear_faults(request: web.Request) -> web.Response:
            self.clear_faults()
            return json_response({"ok": True})

        async def external_order(request: web.Request) -> web.Response:
            try:
                return json_response(self.place_external_order(**(await request.json())))
            except AlpacaError as e:
                return json_response(e.body, e.status)

        async def balances(request: web.Request) -> web.Response:
            b = await request.json()
            if "cash" in b:
                self.cash = b["cash"]
            for coin, qty in (b.get("positions") or {}).items():
                self.set_position(coin, qty)
            return json_response({"ok": True})

        r.add_get("/__control/state", state)
        r.add_get("/__control/requests", requests)
        r.add_post("/__control/book", book)
        r.add_post("/__control/fault", fault)
        r.add_post("/__control/clear_faults", clear_faults)
        r.add_post("/__control/external_order", external_order)
        r.add_post("/__control/balances", balances)


async def _serve(args: argparse.Namespace) -> None:
    exchange = AlpacaTestExchange(
        api_key=args.api_key,
        secret=args.secret,
        cash=args.cash,
        taker_fee=args.taker_fee,
        maker_fee=args.maker_fee,
        min_order_cost=args.min_order_cost,
        port=args.port,
    )
    await serve_until_signal(exchange)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.exchanges.alpaca", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port (the URL is printed on stdout)")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--secret", default="test-secret")
    parser.add_argument("--cash", default="100000")
    parser.add_argument("--taker-fee", default="0.0025")
    parser.add_argument("--maker-fee", default="0.0015")
    parser.add_argument("--min-order-cost", default="10")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
