"""A local Binance spot test exchange on 127.0.0.1 that real ccxt talks to (issue 16).

It speaks the Binance spot REST API that ``ccxt.binance`` uses (``/api/v3/...``, plus the two
``/sapi/v1/margin/...allPairs`` reads ccxt's ``load_markets`` signs when it has keys), with HMAC-SHA256
signatures checked as Binance does, a book per symbol that the test sets, Decimal balances and
commissions (see ``binance_engine.py`` for the matching rules), and faults injected for the next N
requests of a method and path.

In a test (same event loop)::

    ex = BinanceTestExchange(api_key="k", secret="s", symbols=["BTC/USDT"], balances={"USDT": "10000"})
    base_url = await ex.start()            # http://127.0.0.1:PORT
    ex.set_book("BTC/USDT", bids=[["29990", "1"]], asks=[["30010", "1"]])
    ex.inject_fault("lost_after_place", "POST", "/api/v3/order")
    ...
    await ex.stop()

Point ccxt at it by replacing the scheme and host of every http(s) URL in ``ex.urls["api"]``.

As its own process: ``python -m tests.exchanges.binance --port 0`` prints its URL on stdout and is
controlled through JSON under ``/__control/`` (see ``_control_routes``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.exchanges import binance_market as market
from tests.exchanges.binance_engine import Engine
from tests.exchanges.binance_model import (
    AUTH_PARAMS,
    CANCEL_REPLACE_PARAMS,
    ORDER_PARAMS,
    BinanceError,
    Order,
    SymbolSpec,
    Trade,
    check_unread,
    dec,
    fmt,
    param_int,
    random_client_id,
)
from tests.exchanges.process import serve_until_signal

__all__ = ["FAULTS", "BinanceError", "BinanceTestExchange", "Fault", "LoggedRequest", "Order", "SymbolSpec", "Trade"]

#: fault kinds: what the next matching request gets
FAULTS = (
    "lost_after_place",  # processed, then the connection is closed without an answer
    "http_429",  # 429 + Retry-After, not processed
    "http_418",  # 418 (IP banned) + Retry-After, not processed
    "http_503",  # 503 "Service Unavailable.", not processed
    "unknown_status",  # -1007 (HTTP 408); processed only when placed=True
    "drop_connection",  # closed before processing
    "slow",  # processed, answered after `seconds`
    "trade_reported_twice",  # GET /api/v3/myTrades lists every trade of the answer twice
    "echo_key",  # 401 -2015 whose message echoes the request's API key (or `echo` when it sent none)
)

Params = dict[str, str]
Handler = Callable[[Params], Any]


@dataclass
class Fault:
    kind: str
    method: str
    path: str
    times: int = 1
    seconds: float = 0.0  # slow
    placed: bool = True  # unknown_status: was the request carried out?
    retry_after: int = 1  # http_429 / http_418
    after: int = 0  # this many matching requests pass untouched first
    echo: str = ""  # echo_key: what is echoed when the request carries no API key (a public call)


@dataclass
class LoggedRequest:
    method: str
    path: str
    params: dict[str, str]  # query and body, without the signature
    api_key: str | None
    time_ms: int
    status: int | None = None  # None: no answer was sent (connection closed)
    fault: str | None = None


@dataclass
class _Route:
    handler: Handler
    signed: bool
    allowed: frozenset[str] = field(default_factory=frozenset)


class BinanceTestExchange:
    def __init__(
        self,
        *,
        api_key: str = "test-api-key",
        secret: str = "test-api-secret",
        symbols: Iterable[SymbolSpec | str | Mapping[str, Any]] = ("BTC/USDT",),
        balances: Mapping[str, Decimal | str | int | float] | None = None,
        maker_fee: Decimal | str = "0.001",
        taker_fee: Decimal | str = "0.001",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.secret = secret
        #: more accepted keys (api key -> secret), as a real account holds several: add_key / revoke_key
        self.other_keys: dict[str, str] = {}
        self.host = host
        self.port = port
        #: added to the real clock: the exchange's time is now + clock_offset_ms (to provoke -1021)
        self.clock_offset_ms = 0
        self.engine = Engine(symbols, balances, dec(maker_fee), dec(taker_fee), self.now_ms)
        self.requests: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self._weights: deque[int] = deque()  # answer times of the last minute (X-MBX-USED-WEIGHT-1M)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""
        self._routes: dict[tuple[str, str], _Route] = {}
        self._add_api_routes()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceTestExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    # --- control API (Python) ------------------------------------------------------------------

    def set_book(self, symbol: str, bids: Iterable[Iterable[Any]], asks: Iterable[Iterable[Any]]) -> list[Trade]:
        """Replace the book of ``symbol`` (``BTC/USDT`` or ``BTCUSDT``) with [price, qty] levels; resting
        orders it crosses fill (maker, at their price) and stops it reaches trigger. Returns the trades."""
        return self.engine.set_book(symbol, bids, asks)

    @property
    def balances(self) -> dict[str, dict[str, Decimal]]:
        """A snapshot: asset -> {"free", "locked"}."""
        return {a: {"free": f, "locked": lk} for a, (f, lk) in self.engine.balances.items()}

    def set_balance(self, asset: str, free: Decimal | str | int | float) -> None:
        """Set the free amount of an asset (what is locked by open orders stays locked)."""
        self.engine.balance(asset.upper())[0] = dec(free)

    def orders(
        self, symbol: str | None = None, client_order_id: str | None = None, *, open_only: bool = False
    ) -> list[Order]:
        """What the exchange holds, oldest first (every status), filtered by symbol / client order id."""
        sid = self.engine.symbol_id(symbol) if symbol else None
        return [
            o
            for o in self.engine.orders
            if (sid is None or o.symbol == sid)
            and (client_order_id is None or o.client_order_id == client_order_id)
            and (not open_only or o.is_open)
        ]

    def trades(self, symbol: str | None = None, order_id: int | None = None) -> list[Trade]:
        sid = self.engine.symbol_id(symbol) if symbol else None
        return [
            t
            for t in self.engine.trades
            if (sid is None or t.symbol == sid) and (order_id is None or t.order_id == order_id)
        ]

    def place_external_order(
        self,
        symbol: str,
        side: str,
        type: str,
        quantity: Decimal | str | None = None,
        price: Decimal | str | None = None,
        *,
        time_in_force: str | None = None,
        stop_price: Decimal | str | None = None,
        quote_order_qty: Decimal | str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """An order placed "on the website" (client id ``web_...``), through the same rules as the API.
        Raises :class:`BinanceError` when Binance would refuse it."""
        otype = type.upper()
        params: Params = {
            "symbol": self.engine.symbol_id(symbol),
            "side": side.upper(),
            "type": otype,
            "newClientOrderId": client_order_id or "web_" + random_client_id().lower(),
        }
        if otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            params["timeInForce"] = time_in_force or "GTC"
        for name, value in (
            ("quantity", quantity),
            ("price", price),
            ("stopPrice", stop_price),
            ("quoteOrderQty", quote_order_qty),
        ):
            if value is not None:
                params[name] = fmt(dec(value)).rstrip("0").rstrip(".")
        order, _, _ = self.engine.new_order(params, external=True)
        return order

    def inject_fault(
        self,
        kind: str,
        method: str = "POST",
        path: str = "/api/v3/order",
        *,
        times: int = 1,
        seconds: float = 0.0,
        placed: bool = True,
        retry_after: int = 1,
        after: int = 0,
        echo: str = "",
    ) -> Fault:
        """The next ``times`` requests of ``method path`` get fault ``kind`` (one of :data:`FAULTS`)."""
        if kind not in FAULTS:
            raise ValueError(f"fault kind {kind!r}: expected one of {', '.join(FAULTS)}")
        if times < 1:
            raise ValueError(f"times={times}: must be at least 1")
        fault = Fault(kind, method.upper(), path, times, seconds, placed, retry_after, after, echo)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests_for(self, method: str, path: str, **params: str) -> list[LoggedRequest]:
        """Logged requests of ``method path`` whose params include all of ``params``."""
        return [
            r
            for r in self.requests
            if r.method == method.upper() and r.path == path and all(r.params.get(k) == v for k, v in params.items())
        ]

    # --- HTTP ----------------------------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.path == path:
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/__control/"):
            return await self._control(request)
        raw_query = request.rel_url.raw_query_string
        raw_body = await request.text() if request.can_read_body else ""
        try:
            params = _parse_params(raw_query, raw_body)
        except BinanceError as e:
            return self._json(e.status, e.body())
        entry = LoggedRequest(
            request.method,
            request.path,
            {k: v for k, v in params.items() if k != "signature"},
            request.headers.get("X-MBX-APIKEY"),
            self.now_ms(),
        )
        self.requests.append(entry)
        fault = self._take_fault(request.method, request.path)
        if fault is not None:
            entry.fault = fault.kind
            early = self._early_fault(fault, request)
            if early is not None:
                entry.status = None if fault.kind == "drop_connection" else early.status
                return early
        status, payload = self._process(request, params, raw_query, raw_body)
        if fault is not None:
            if fault.kind == "lost_after_place":
                return self._close(request)
            if fault.kind == "unknown_status":  # placed=True: carried out, the answer says unknown
                status, payload = 408, _unknown_status()
            elif fault.kind == "slow":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), fault.seconds)
            elif fault.kind == "trade_reported_twice" and isinstance(payload, list):
                payload = [row for row in payload for _ in (0, 1)]
        entry.status = status
        if payload is None:
            return web.Response(status=status, text="Not Found", content_type="text/plain")
        return self._json(status, payload)

    def _early_fault(self, fault: Fault, request: web.Request) -> web.StreamResponse | None:
        """Faults answered without carrying the request out."""
        if fault.kind == "drop_connection":
            return self._close(request)
        if fault.kind == "http_429":
            msg = (
                "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
                "Please use WebSocket Streams for live updates to avoid polling the API."
            )
            return self._json(429, {"code": -1003, "msg": msg}, {"Retry-After": str(fault.retry_after)})
        if fault.kind == "http_418":
            until = self.now_ms() + fault.retry_after * 1000
            msg = (
                f"Way too much request weight used; IP banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans."
            )
            return self._json(418, {"code": -1003, "msg": msg}, {"Retry-After": str(fault.retry_after)})
        if fault.kind == "http_503":
            return web.Response(status=503, text="Service Unavailable.", content_type="text/plain")
        if fault.kind == "unknown_status" and not fault.placed:
            return self._json(408, _unknown_status())
        if fault.kind == "echo_key":  # a venue quoting what it was sent (some do): the key in an error's text
            key = request.headers.get("X-MBX-APIKEY") or fault.echo
            return self._json(401, {"code": -2015, "msg": f"Invalid API-key {key}, IP, or permissions for action."})
        return None

    @staticmethod
    def _close(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the client: the connection is gone

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
        now = self.now_ms()
        self._weights.append(now)
        while self._weights and self._weights[0] < now - 60_000:
            self._weights.popleft()
        used = len(self._weights)
        return web.Response(
            status=status,
            text=json.dumps(payload),
            content_type="application/json",
            headers={"X-MBX-USED-WEIGHT-1M": str(used), **(headers or {})},
        )

    def _process(self, request: web.Request, params: Params, raw_query: str, raw_body: str) -> tuple[int, Any]:
        route = self._routes.get((request.method, request.path))
        if route is None:
            return 404, None  # as Binance's front: a plain 404 (ccxt raises ExchangeNotAvailable)
        try:
            if route.signed:
                self._authenticate(request, params, raw_query, raw_body)
                check_unread(params, route.allowed | AUTH_PARAMS)
            return 200, route.handler(params)
        except BinanceError as e:
            return e.status, e.body()

    def add_key(self, api_key: str, secret: str) -> None:
        """Another key of the account (the keys of a rotation: both accepted until the old one is revoked)."""
        self.other_keys[api_key] = secret

    def revoke_key(self, api_key: str) -> None:
        """The key is no longer accepted (-2015), whichever it is."""
        self.other_keys.pop(api_key, None)
        if self.api_key == api_key:
            self.api_key, self.secret = "", ""

    def _secret_of(self, key: str) -> str | None:
        if self.api_key and hmac.compare_digest(key, self.api_key):
            return self.secret
        return next((s for k, s in self.other_keys.items() if hmac.compare_digest(key, k)), None)

    def _authenticate(self, request: web.Request, params: Params, raw_query: str, raw_body: str) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise BinanceError(-2014, "API-key format invalid.", 401)
        secret = self._secret_of(key)
        if secret is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        signature = params.get("signature")
        if not signature:
            raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        timestamp = param_int(params, "timestamp")
        if timestamp is None:
            raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        recv_window = param_int(params, "recvWindow")
        recv_window = 5000 if recv_window is None else recv_window
        if recv_window > 60000:
            raise BinanceError(-1131, "recvWindow must be less than 60000")
        payload = _without_signature(raw_query) + _without_signature(raw_body)
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        now = self.now_ms()
        if timestamp > now + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - timestamp > recv_window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # --- API routes ----------------------------------------------------------------------------

    def _add_api_routes(self) -> None:
        e = self.engine

        def public(method: str, path: str, handler: Handler) -> None:
            self._routes[(method, path)] = _Route(handler, signed=False)

        def signed(method: str, path: str, handler: Handler, allowed: Iterable[str]) -> None:
            self._routes[(method, path)] = _Route(handler, signed=True, allowed=frozenset(allowed))

        public("GET", "/api/v3/ping", lambda p: {})
        public("GET", "/api/v3/time", lambda p: {"serverTime": self.now_ms()})
        public("GET", "/api/v3/exchangeInfo", self._exchange_info)
        public("GET", "/api/v3/depth", self._depth)
        public("GET", "/api/v3/ticker/24hr", lambda p: self._tickers(p, market.ticker_24hr_json))
        public("GET", "/api/v3/ticker/bookTicker", lambda p: self._tickers(p, market.book_ticker_json))
        public("GET", "/api/v3/ticker/price", lambda p: self._tickers(p, market.price_ticker_json))
        # a spot-only account: no margin pairs (ccxt's load_markets signs these when it has keys)
        signed("GET", "/sapi/v1/margin/allPairs", lambda p: [], ("symbol",))
        signed("GET", "/sapi/v1/margin/isolated/allPairs", lambda p: [], ("symbol",))
        signed("GET", "/api/v3/account", self._account, ("omitZeroBalances",))
        signed("POST", "/api/v3/order", self._new_order, ORDER_PARAMS)
        signed("POST", "/api/v3/order/test", self._test_order, ORDER_PARAMS | {"computeCommissionRates"})
        signed(
            "GET", "/api/v3/order", lambda p: e.query_order(p).query_json(), ("symbol", "orderId", "origClientOrderId")
        )
        signed("DELETE", "/api/v3/order", self._cancel, _CANCEL_PARAMS)
        signed("POST", "/api/v3/order/cancelReplace", self._cancel_replace, CANCEL_REPLACE_PARAMS)
        signed("GET", "/api/v3/openOrders", self._open_orders, ("symbol",))
        signed("DELETE", "/api/v3/openOrders", self._cancel_all, ("symbol",))
        signed(
            "GET",
            "/api/v3/allOrders",
            lambda p: [o.query_json() for o in e.all_orders(p)],
            ("symbol", "orderId", "startTime", "endTime", "limit"),
        )
        signed(
            "GET",
            "/api/v3/myTrades",
            lambda p: [t.my_trade_json() for t in e.my_trades(p)],
            ("symbol", "orderId", "startTime", "endTime", "fromId", "limit"),
        )

    def _exchange_info(self, params: Params) -> dict[str, Any]:
        wanted = market.symbols_param(self.engine, params)
        specs = [s for s in self.engine.specs.values() if wanted is None or s.symbol in wanted]
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [s.info_json() for s in specs],
        }

    def _depth(self, params: Params) -> dict[str, Any]:
        spec = self.engine.spec(params)
        limit = param_int(params, "limit") or 100
        if not 1 <= limit <= 5000:
            raise BinanceError(-1100, "Illegal characters found in parameter 'limit'; legal range is '1-5000'.")
        return market.depth_json(self.engine, spec.symbol, limit)

    def _tickers(self, params: Params, one: Callable[[Engine, str], dict[str, Any]]) -> Any:
        if "symbol" in params:
            return one(self.engine, self.engine.spec(params).symbol)
        wanted = market.symbols_param(self.engine, params)
        return [one(self.engine, s) for s in (wanted if wanted is not None else self.engine.specs)]

    def _account(self, params: Params) -> dict[str, Any]:
        return market.account_json(self.engine, params.get("omitZeroBalances") == "true")

    def _new_order(self, params: Params) -> dict[str, Any]:
        order, fills, resp_type = self.engine.new_order(params)
        return order.result_json(order.time, resp_type, fills)

    def _test_order(self, params: Params) -> dict[str, Any]:
        """Validated as a new order (parameters, filters), never placed; ``{}`` as on Binance."""
        self.engine.parse_new_order(params)
        if params.get("computeCommissionRates") != "true":
            return {}
        fees = {"maker": fmt(self.engine.maker_fee), "taker": fmt(self.engine.taker_fee)}
        zero = {"maker": fmt(Decimal(0)), "taker": fmt(Decimal(0))}
        return {
            "standardCommissionForOrder": fees,
            "specialCommissionForOrder": zero,
            "taxCommissionForOrder": zero,
            "discount": {
                "enabledForAccount": False,
                "enabledForSymbol": False,
                "discountAsset": "BNB",
                "discount": "0",
            },
        }

    def _cancel(self, params: Params) -> dict[str, Any]:
        spec = self.engine.spec(params)
        order = self.engine.cancel_order(
            spec,
            param_int(params, "orderId"),
            params.get("origClientOrderId"),
            params.get("cancelRestrictions"),
        )
        return order.cancel_json(self.now_ms(), params.get("newClientOrderId") or random_client_id())

    def _cancel_replace(self, params: Params) -> dict[str, Any]:
        cancelled, order, fills, resp_type, cancel_id = self.engine.cancel_replace(params)
        return {
            "cancelResult": "SUCCESS",
            "newOrderResult": "SUCCESS",
            "cancelResponse": cancelled.cancel_json(order.time, cancel_id),
            "newOrderResponse": order.result_json(order.time, resp_type, fills),
        }

    def _open_orders(self, params: Params) -> list[dict[str, Any]]:
        symbol = self.engine.spec(params).symbol if "symbol" in params else None
        return [o.query_json() for o in self.engine.open_orders(symbol)]

    def _cancel_all(self, params: Params) -> list[dict[str, Any]]:
        now = self.now_ms()
        return [o.cancel_json(now, random_client_id()) for o in self.engine.cancel_all(self.engine.spec(params))]

    # --- control API (HTTP, for a separate process) --------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        routes = self._control_routes()
        handler = routes.get((request.method, request.path.removeprefix("/__control")))
        if handler is None:
            return web.json_response({"error": f"unknown control {request.method} {request.path}"}, status=404)
        try:
            body = await request.json() if request.can_read_body else {}
            return web.json_response(await handler(body, dict(request.query)))
        except BinanceError as e:
            return web.json_response(e.body(), status=e.status)
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=400)

    def _control_routes(self) -> dict[tuple[str, str], Callable[[Any, dict[str, str]], Awaitable[Any]]]:
        def order_rows(orders: list[Order]) -> list[dict[str, Any]]:
            return [{**o.query_json(), "external": o.external} for o in orders]

        async def set_book(body: Any, q: dict[str, str]) -> Any:
            trades = self.set_book(body["symbol"], body.get("bids", []), body.get("asks", []))
            return {"trades": [t.my_trade_json() for t in trades]}

        async def get_balances(body: Any, q: dict[str, str]) -> Any:
            return {a: {"free": fmt(b["free"]), "locked": fmt(b["locked"])} for a, b in self.balances.items()}

        async def set_balances(body: Any, q: dict[str, str]) -> Any:
            for asset, free in body.items():
                self.set_balance(asset, free)
            return await get_balances(body, q)

        async def add_fault(body: Any, q: dict[str, str]) -> Any:
            return asdict(self.inject_fault(**body))

        async def get_faults(body: Any, q: dict[str, str]) -> Any:
            return [asdict(f) for f in self.faults]

        async def clear_faults(body: Any, q: dict[str, str]) -> Any:
            self.clear_faults()
            return []

        async def get_orders(body: Any, q: dict[str, str]) -> Any:
            return order_rows(self.orders(q.get("symbol"), q.get("clientOrderId"), open_only=q.get("open") == "true"))

        async def get_trades(body: Any, q: dict[str, str]) -> Any:
            order_id = int(q["orderId"]) if "orderId" in q else None
            return [t.my_trade_json() for t in self.trades(q.get("symbol"), order_id)]

        async def get_requests(body: Any, q: dict[str, str]) -> Any:
            return [asdict(r) for r in self.requests]

        async def external_order(body: Any, q: dict[str, str]) -> Any:
            args = {_SNAKE.get(k, k): v for k, v in body.items()}
            return order_rows([self.place_external_order(**args)])[0]

        async def set_clock(body: Any, q: dict[str, str]) -> Any:
            self.clock_offset_ms = int(body["offsetMs"])
            return {"offsetMs": self.clock_offset_ms}

        return {
            ("POST", "/book"): set_book,
            ("GET", "/balances"): get_balances,
            ("POST", "/balances"): set_balances,
            ("GET", "/faults"): get_faults,
            ("POST", "/faults"): add_fault,
            ("DELETE", "/faults"): clear_faults,
            ("GET", "/orders"): get_orders,
            ("GET", "/trades"): get_trades,
            ("GET", "/requests"): get_requests,
            ("POST", "/external_order"): external_order,
            ("POST", "/clock"): set_clock,
        }


_CANCEL_PARAMS = ("symbol", "orderId", "origClientOrderId", "newClientOrderId", "cancelRestrictions")
_SNAKE = {
    "timeInForce": "time_in_force",
    "stopPrice": "stop_price",
    "quoteOrderQty": "quote_order_qty",
    "clientOrderId": "client_order_id",
}


def _unknown_status() -> dict[str, Any]:
    msg = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
    return {"code": -1007, "msg": msg}


def _without_signature(raw: str) -> str:
    if "signature=" not in raw:
        return raw
    return "&".join(part for part in raw.split("&") if not part.startswith("signature="))


def _parse_params(raw_query: str, raw_body: str) -> Params:
    """Query and form body; a parameter in both is taken from the query string, as on Binance."""
    params: Params = {}
    for raw in (raw_body, raw_query):
        seen: set[str] = set()
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key in seen:
                raise BinanceError(-1101, "Duplicate values for a parameter detected.")
            seen.add(key)
            if value == "":
                raise BinanceError(-1105, f"Parameter '{key}' was empty.")
            params[key] = value
    return params


async def _serve(args: argparse.Namespace) -> None:
    balances = {}
    for item in args.balance:
        asset, _, amount = item.partition("=")
        balances[asset] = Decimal(amount)
    ex = BinanceTestExchange(
        api_key=args.api_key,
        secret=args.secret,
        symbols=args.symbol or ["BTC/USDT"],
        balances=balances,
        maker_fee=args.maker_fee,
        taker_fee=args.taker_fee,
        host=args.host,
        port=args.port,
    )
    await serve_until_signal(ex)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.exchanges.binance", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (the URL is printed on stdout)")
    parser.add_argument("--api-key", default="test-api-key")
    parser.add_argument("--secret", default="test-api-secret")
    parser.add_argument("--symbol", action="append", default=[], help="BASE/QUOTE, repeatable (default BTC/USDT)")
    parser.add_argument("--balance", action="append", default=[], help="ASSET=AMOUNT, repeatable")
    parser.add_argument("--maker-fee", default="0.001")
    parser.add_argument("--taker-fee", default="0.001")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
