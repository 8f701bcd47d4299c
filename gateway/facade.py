"""``GET|POST /api/trading/enhanced-execution``: the enhanced-execution spec's one endpoint, a thin facade.

A client written against the spec calls ``?action=status`` or POSTs ``{"action": "place-order", ...}``; the
facade turns that into the request of the real endpoint (``ACTIONS`` below), resolves it through the app's own
router and calls that endpoint's handler: the answer (status, body, problems) is the real endpoint's,
unchanged. No endpoint's logic is copied here: an action whose endpoint this build does not have (the router
finds no route for it) is a 501 problem naming the action, and works as soon as the endpoint is registered.

What the facade itself does: read ``action`` (422 naming ``action`` and listing the actions when it is missing
or unknown); for the order actions, the spec's body (``symbol`` ``BTCUSDT`` / ``BTC/USDT`` / ``BTC_USDT``
matched against PAIRS, ``type`` ``stop`` / ``stop-limit``) becomes the body of ``POST /api/orders``; the close
actions' ``symbol`` and ``exchange`` become the path and the query; ``rotate-credentials``' ``exchange`` the
path. Every other field is passed on as it is, for the real endpoint to check (it refuses unknown fields).
The spec's venue names (``binance``, ``alpaca``) in ``exchange`` of the order, close and GET actions are the
paper venue when that is the only venue configured (domain.symbols.spec_venue). GET: ``symbol`` is ``pair``
for positions and trades; a parameter the endpoint does not declare is a 422 naming it (never ignored).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.streams import EmptyStreamReader, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from config.venues import venue_configs
from domain.symbols import SymbolError, match_symbol, spec_venue
from gateway.common import SETTINGS
from gateway.problems import ApiError
from gateway.risk import ConfigBody, EmergencyStopBody
from gateway.spec import ENDPOINTS, Endpoint, Param, add
from schemas.rest import AlgoIn

PATH = "/api/trading/enhanced-execution"

Query = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Forward:
    """The request of the real endpoint an action stands for."""

    method: str
    path: str
    query: Query
    body: dict[str, Any] | None  # None: no body


# -- GET ?action= ----------------------------------------------------------------------------------------------

GET_ACTIONS: dict[str, str] = {
    "status": "/api/status",
    "risk-metrics": "/api/risk/metrics",
    "transition-status": "/api/transition",
    "portfolio": "/api/portfolio",
    "positions": "/api/positions",
    "credentials-status": "/api/credentials/status",
    "alerts": "/api/alerts",
    "trades": "/api/trades",
    "performance": "/api/performance",
}
# the query parameters the spec gives an action: the endpoint must understand them (a filter it ignored would
# answer what was not asked for, e.g. paper trades for ?mode=live)
SPEC_PARAMS: dict[str, tuple[str, ...]] = {"positions": ("exchange",), "trades": ("mode",), "performance": ("mode",)}
# the actions whose ``symbol`` (the spec's name of a pair) is the endpoint's ``pair``
SYMBOL_ACTIONS = frozenset({"positions", "trades"})


# -- POST {"action": ...} --------------------------------------------------------------------------------------

ORDER_TYPES = {"stop": "stop_loss", "stop-loss": "stop_loss", "stop-limit": "stop_limit", "take-profit": "take_profit"}
VENUE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")  # a venue name as a path segment (never "../x")


def _invalid(field: str, detail: str, code: str = "INVALID_FIELD") -> ApiError:
    return ApiError(422, "Validation failed", f"{field}: {detail}", field=field, code=code)


def _only(body: dict[str, Any], allowed: tuple[str, ...], action: str) -> None:
    """An action whose endpoint takes no body: a field it would not use is refused, never dropped silently (a
    ``quantity`` on close-position must not close the whole position unnoticed)."""
    for name in body:
        if name not in allowed:
            takes = ", ".join(allowed) or "no other field"
            raise ApiError(
                422, "Unknown field", f"field {name!r} is not part of {action} (it takes {takes})",
                field=name, code="UNKNOWN_FIELD",
            )  # fmt: skip


def _text(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise ApiError(422, "Validation failed", f"field {field!r} is required", field=field, code="MISSING_FIELD")
        return None
    if not isinstance(value, str):
        raise _invalid(field, f"expected a string, not {type(value).__name__}")
    return value


def _symbol(request: web.Request, symbol: str) -> str:
    """The pair ``symbol`` names (``BTCUSDT``, ``BTC/USDT``, ``BTC_USDT``): one of PAIRS, else a 422 naming it."""
    try:
        return match_symbol(symbol, request.app[SETTINGS].PAIRS)
    except SymbolError as e:
        raise ApiError(422, "Validation failed", str(e), field="symbol", code="UNKNOWN_SYMBOL") from None


def _pair(request: web.Request, body: dict[str, Any], *, required: bool) -> str | None:
    symbol = _text(body, "symbol", required=required)
    return None if symbol is None else _symbol(request, symbol)


def _venue(request: web.Request, name: str) -> str:
    """The venue a spec client's ``exchange`` names: the spec's ``binance`` / ``alpaca`` is the paper venue when
    that is the only venue (domain.symbols.spec_venue); otherwise as written, for the endpoint to check."""
    venues = [(v.name, v.paper) for v in venue_configs(request.app[SETTINGS])]
    return spec_venue(name, venues)


def _exchange(request: web.Request, body: dict[str, Any]) -> str | None:
    exchange = _text(body, "exchange", required=False)
    return None if exchange is None else _venue(request, exchange)


def _order(path: str) -> Callable[[web.Request, dict[str, Any], str], Forward]:
    def build(request: web.Request, body: dict[str, Any], action: str) -> Forward:
        out = dict(body)
        if "symbol" in out or "pair" not in out:  # (our own clients may send ``pair``: passed on as it is)
            pair = _pair(request, out, required=True)
            if "pair" in out and str(out["pair"]).upper() != pair:
                raise _invalid("symbol", f"symbol {out['symbol']!r} and pair {out['pair']!r} disagree: send one")
            del out["symbol"]
            out["pair"] = pair
        kind = out.get("type")
        if isinstance(kind, str):  # any case, as side: "Market" is market, "Stop-Limit" stop_limit
            kind = kind.strip().lower()
            out["type"] = ORDER_TYPES.get(kind, kind)
        if isinstance(out.get("exchange"), str):
            out["exchange"] = _venue(request, out["exchange"])
        return Forward("POST", path, [], out)

    return build


def _close_position(request: web.Request, body: dict[str, Any], action: str) -> Forward:
    _only(body, ("symbol", "exchange"), action)
    pair = _pair(request, body, required=True)
    exchange = _exchange(request, body)
    return Forward("POST", f"/api/positions/{pair}/close", [("exchange", exchange)] if exchange else [], None)


def _close_all(request: web.Request, body: dict[str, Any], action: str) -> Forward:
    _only(body, ("symbol", "exchange"), action)
    pair = _pair(request, body, required=False)
    exchange = _exchange(request, body)
    query = [(k, v) for k, v in (("pair", pair), ("exchange", exchange)) if v]
    return Forward("POST", "/api/positions/close-all", query, None)


def _test_connections(request: web.Request, body: dict[str, Any], action: str) -> Forward:
    _only(body, (), action)
    return Forward("POST", "/api/exchanges/test", [], None)


def _rotate(request: web.Request, body: dict[str, Any], action: str) -> Forward:
    exchange = _text(body, "exchange", required=True)
    assert exchange is not None
    if not VENUE_NAME.fullmatch(exchange):
        raise _invalid("exchange", f"{exchange[:40]!r} is not a venue name (letters, digits, _)")
    rest = {k: v for k, v in body.items() if k != "exchange"}
    return Forward("POST", f"/api/credentials/{exchange.lower()}/rotate", [], rest)


def _passed(method: str, path: str) -> Callable[[web.Request, dict[str, Any], str], Forward]:
    """The body (less ``action``) goes to the endpoint as it is."""

    def build(request: web.Request, body: dict[str, Any], action: str) -> Forward:
        return Forward(method, path, [], body)

    return build


POST_ACTIONS: dict[str, Callable[[web.Request, dict[str, Any], str], Forward]] = {
    "place-order": _order("/api/orders"),
    "close-position": _close_position,
    "close-all-positions": _close_all,
    "validate-order": _order("/api/orders/validate"),
    "emergency-stop": _passed("POST", "/api/risk/emergency-stop"),
    "store-credentials": _passed("POST", "/api/credentials"),
    "rotate-credentials": _rotate,
    "initiate-transition": _passed("POST", "/api/transition/initiate"),
    "approve-transition": _passed("POST", "/api/transition/approve"),
    "reject-transition": _passed("POST", "/api/transition/reject"),
    "revert-to-paper": _passed("POST", "/api/transition/revert"),
    "update-risk-config": _passed("PUT", "/api/risk/config"),
    "test-connections": _test_connections,
}
# what each POST action calls, for the document
POST_TARGETS: dict[str, str] = {
    "place-order": "POST /api/orders",
    "close-position": "POST /api/positions/{pair}/close?exchange=",
    "close-all-positions": "POST /api/positions/close-all?pair=&exchange=",
    "validate-order": "POST /api/orders/validate",
    "emergency-stop": "POST /api/risk/emergency-stop",
    "store-credentials": "POST /api/credentials",
    "rotate-credentials": "POST /api/credentials/{exchange}/rotate",
    "initiate-transition": "POST /api/transition/initiate",
    "approve-transition": "POST /api/transition/approve",
    "reject-transition": "POST /api/transition/reject",
    "revert-to-paper": "POST /api/transition/revert",
    "update-risk-config": "PUT /api/risk/config",
    "test-connections": "POST /api/exchanges/test",
}
assert set(POST_TARGETS) == set(POST_ACTIONS)


def _action(raw: object, known: dict[str, Any], method: str) -> str:
    """The action named, in any case; missing or unknown: a 422 naming ``action`` and listing the known ones."""
    listed = ", ".join(known)
    if raw is None or raw == "":
        raise ApiError(
            422, "Validation failed", f"action is required: one of {listed}", field="action", code="MISSING_FIELD"
        )
    if not isinstance(raw, str):
        raise _invalid("action", f"expected a string, one of {listed}")
    action = raw.strip().lower()
    if action in known:
        return action
    other = POST_ACTIONS if method == "GET" else GET_ACTIONS
    hint = ""
    if action in other:
        hint = f" ({action} is a {'POST' if method == 'GET' else 'GET'} action)"
    raise ApiError(
        422, "Validation failed", f"action {raw[:40]!r} is not a {method} action of {PATH}{hint}: one of {listed}",
        field="action", code="UNKNOWN_ACTION",
    )  # fmt: skip


# -- dispatch --------------------------------------------------------------------------------------------------

_DECODE = msgspec.json.Decoder(float_hook=Decimal)  # numbers kept exact: 0.1 stays 0.1
_ENCODE = msgspec.json.Encoder(decimal_format="number")
DROPPED_HEADERS = ("Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", "Expect")
_DROPPED_RAW = frozenset(name.lower().encode() for name in DROPPED_HEADERS)


async def dispatch(request: web.Request, action: str, fwd: Forward) -> web.StreamResponse:
    """Call the real endpoint of ``fwd`` for this request: found by the app's router as an HTTP request would be,
    its handler called with a request of its own (method, path, query, JSON body; this request's headers,
    token and request id). Its answer, or the problem it raises, is the facade's. No route for it in this
    build: a 501 problem naming the action."""
    url = URL.build(path=fwd.path, query=fwd.query) if fwd.query else URL.build(path=fwd.path)
    headers = CIMultiDict(request.headers)
    for name in DROPPED_HEADERS:
        headers.popall(name, None)
    # the raw headers as they came (bytes: a value that is not UTF-8 stays what it was), less the dropped ones
    raw_headers = [(k, v) for k, v in request.raw_headers if k.lower() not in _DROPPED_RAW]
    loop = asyncio.get_running_loop()
    payload: StreamReader
    if fwd.body is None:
        payload = EmptyStreamReader()
    else:
        raw = _ENCODE.encode(fwd.body)
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(raw))
        raw_headers += [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(raw)).encode())]
        payload = StreamReader(request.protocol, len(raw) + 1, loop=loop)  # (never over its high-water mark)
        payload.feed_data(raw)
        payload.feed_eof()
    message = RawRequestMessage(
        fwd.method, str(url), request.version, CIMultiDictProxy(headers),
        tuple(raw_headers),
        should_close=False, compression=None, upgrade=False, chunked=False, url=url,
    )  # fmt: skip
    inner = web.Request(
        message, payload, request.protocol, request.writer, request.task, loop,
        client_max_size=request.app[SETTINGS].MAX_BODY_BYTES, state=dict(request),
    )  # fmt: skip
    app = request.app
    match = await app.router.resolve(inner)
    if match.http_exception is not None:
        raise ApiError(
            501, "Not Implemented",
            f"action {action!r} needs {fwd.method} {fwd.path}, which this build of the service does not have",
            field="action", code="ACTION_NOT_AVAILABLE",
        )  # fmt: skip
    match.add_app(app)
    match.freeze()
    inner._match_info = match  # as aiohttp's Application._handle does (there is no public setter)
    # the outer request already passed the middlewares (the token, problems): the handler alone is called
    return await match.handler(inner)


def _declared(app: web.Application, method: str, path: str) -> set[str] | None:
    """The query parameters the endpoint's table entry declares (None: no such endpoint in this build)."""
    for ep in app[ENDPOINTS]:
        if (ep.method, ep.path) == (method, path):
            return {p.name for p in ep.params if p.where == "query"}
    return None


def _get_query(request: web.Request, action: str) -> Query:
    """The query of the endpoint: the parameters less ``action``; ``exchange`` the venue it names (the spec's
    ``binance`` in a paper-only setup: the paper venue); for positions and trades the spec's ``symbol`` becomes
    ``pair`` (matched against PAIRS; with a ``pair`` too, they must agree)."""
    query: Query = []
    pairs = request.query.getall("pair", [])
    for name, value in request.query.items():
        if name == "action":
            continue
        if name == "exchange":
            value = _venue(request, value)
        elif name == "symbol" and action in SYMBOL_ACTIONS:
            pair = _symbol(request, value)
            if any(p.strip().upper() != pair for p in pairs):
                raise _invalid("symbol", f"symbol {value[:40]!r} and pair {pairs[0][:40]!r} disagree: send one")
            if pairs:
                continue  # (the same pair, already there)
            name, value = "pair", pair
        query.append((name, value))
    return query


async def get_facade(request: web.Request) -> web.StreamResponse:
    action = _action(request.query.get("action"), GET_ACTIONS, "GET")
    path = GET_ACTIONS[action]
    query = _get_query(request, action)
    declared = _declared(request.app, "GET", path)
    if declared is not None:
        for name in SPEC_PARAMS.get(action, ()):
            if request.query.get(name) and name not in declared:
                raise ApiError(
                    501, "Not Implemented",
                    f"{name}: GET {path} of this build does not filter by {name}; its answer would not be what "
                    f"?action={action}&{name}= asks for",
                    field=name, code="PARAMETER_NOT_AVAILABLE",
                )  # fmt: skip
        # a parameter the endpoint does not take would be ignored there: the answer would not be what was asked
        for name, _ in query:
            if name not in declared:
                takes = ", ".join(sorted(declared)) or "no parameter"
                raise ApiError(
                    422, "Validation failed",
                    f"{name}: not a parameter of ?action={action} (GET {path} takes {takes})",
                    field=name, code="UNKNOWN_PARAMETER",
                )  # fmt: skip
    return await dispatch(request, action, Forward("GET", path, query, None))


async def post_facade(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        ctype = request.content_type or "nothing"
        raise ApiError(415, "Unsupported Media Type", f"send the body as application/json, not {ctype}")
    raw = await request.read()
    try:
        body = _DECODE.decode(raw)
    except msgspec.DecodeError as e:
        raise ApiError(400, "Malformed JSON", f"the body is not valid JSON: {e}", code="MALFORMED_JSON") from None
    if not isinstance(body, dict):
        raise ApiError(
            422, "Validation failed", 'the body must be a JSON object: {"action": ..., ...}', field="action",
            code="MISSING_FIELD",
        )  # fmt: skip
    action = _action(body.pop("action", None), POST_ACTIONS, "POST")
    return await dispatch(request, action, POST_ACTIONS[action](request, body, action))


# -- the document ----------------------------------------------------------------------------------------------

Dec = Annotated[Decimal, msgspec.Meta(description="a decimal: a JSON number or a decimal string")]
_SPEC_VENUE = "the spec's binance or alpaca, when not configured and the only venue is a paper venue: that venue"


class _Action(msgspec.Struct, kw_only=True, rename="camel", tag_field="action", forbid_unknown_fields=True):
    pass


class PlaceOrderAction(_Action, tag="place-order"):
    """POST /api/orders with the spec's body: ``symbol`` instead of ``pair``; the other fields as there."""

    symbol: Annotated[
        str, msgspec.Meta(description="BTCUSDT, BTC/USDT or BTC_USDT: one of PAIRS", examples=["BTCUSDT"])
    ]
    side: Annotated[str, msgspec.Meta(description="buy | sell, any case")]
    quantity: Dec
    type: Annotated[
        str,
        msgspec.Meta(
            description="market | limit | stop (= stop_loss) | stop-limit | stop_limit | take_profit | twap | vwap"
            " | iceberg, any case"
        ),
    ] = "market"
    exchange: Annotated[
        str | None, msgspec.Meta(description=f"a venue of EXCHANGES (absent: routed); {_SPEC_VENUE}")
    ] = None
    price: Dec | None = None
    stop_price: Dec | None = None
    stop_loss: Dec | None = None
    take_profit: Dec | None = None
    time_in_force: Literal["GTC", "IOC", "FOK", "GTD"] | None = None
    expire_at: int | None = None
    post_only: bool = False
    reduce_only: bool = False
    paper_trade: bool | None = None
    risk_check: bool = True
    client_order_id: str | None = None
    algo: AlgoIn | None = None  # twap / vwap / iceberg (POST /api/orders)


class ValidateOrderAction(PlaceOrderAction, tag="validate-order"):
    """POST /api/orders/validate with the same body as place-order."""


class ClosePositionAction(_Action, tag="close-position"):
    """POST /api/positions/{pair}/close?exchange=."""

    symbol: Annotated[str, msgspec.Meta(examples=["BTCUSDT"])]
    exchange: Annotated[str | None, msgspec.Meta(description=_SPEC_VENUE)] = None


class CloseAllPositionsAction(_Action, tag="close-all-positions"):
    """POST /api/positions/close-all?pair=&exchange= (both optional)."""

    symbol: str | None = None
    exchange: Annotated[str | None, msgspec.Meta(description=_SPEC_VENUE)] = None


class EmergencyStopAction(EmergencyStopBody, tag_field="action", tag="emergency-stop"):
    """POST /api/risk/emergency-stop."""


class StoreCredentialsAction(_Action, tag="store-credentials"):
    """POST /api/credentials."""

    exchange: str
    api_key: str
    api_secret: str
    environment: Literal["testnet", "live"]
    password: str | None = None


class RotateCredentialsAction(_Action, tag="rotate-credentials"):
    """POST /api/credentials/{exchange}/rotate (the rest of the body is that endpoint's)."""

    exchange: str
    api_key: str
    api_secret: str
    password: str | None = None
    environment: Literal["testnet", "live"] | None = None


class InitiateTransitionAction(_Action, tag="initiate-transition"):
    """POST /api/transition/initiate."""

    by: str | None = None
    reason: str | None = None


class ApproveTransitionAction(_Action, tag="approve-transition"):
    """POST /api/transition/approve."""

    by: str
    reason: str | None = None


class RejectTransitionAction(ApproveTransitionAction, tag="reject-transition"):
    """POST /api/transition/reject."""


class RevertToPaperAction(InitiateTransitionAction, tag="revert-to-paper"):
    """POST /api/transition/revert."""


class UpdateRiskConfigAction(ConfigBody, tag_field="action", tag="update-risk-config"):
    """PUT /api/risk/config (our names and the spec's: maxLeverage, minAccountBalance, stopLossPercentage,
    takeProfitPercentage, riskPerTrade in percent, maxOrderSize)."""


class TestConnectionsAction(_Action, tag="test-connections"):
    """POST /api/exchanges/test."""


FacadeBody = (
    PlaceOrderAction | ClosePositionAction | CloseAllPositionsAction | ValidateOrderAction | EmergencyStopAction
    | StoreCredentialsAction | RotateCredentialsAction | InitiateTransitionAction | ApproveTransitionAction
    | RejectTransitionAction | RevertToPaperAction | UpdateRiskConfigAction | TestConnectionsAction
)  # fmt: skip

_ANSWER = "the answer of the endpoint the action names, unchanged (its status, its body)"
_TABLE_GET = "; ".join(f"{a}: GET {p}" for a, p in GET_ACTIONS.items())
_TABLE_POST = "; ".join(f"{a}: {t}" for a, t in POST_TARGETS.items())
_ERRORS = (409, 422, 501, 502, 503, 504)
_NOTE = (
    "Answers and problems are the real endpoint's, unchanged. An action whose endpoint this build does not have "
    "is a 501 problem (code ACTION_NOT_AVAILABLE, field action); a missing or unknown action a 422 naming action."
)


def register(app: web.Application) -> None:
    t = "enhanced-execution"
    actions_get = list(GET_ACTIONS)
    add(
        app,
        Endpoint(
            "GET", PATH, get_facade, "The enhanced-execution spec's reads, by ?action=", t,
            {200: (None, _ANSWER)},
            params=(
                Param("action", "query", {"type": "string", "enum": actions_get}, "what to read", required=True),
                Param(
                    "exchange", "query", {"type": "string"},
                    "positions, trades: one venue (binance or alpaca with only the paper venue configured: it)",
                ),
                Param("symbol", "query", {"type": "string"}, "positions, trades: one pair (BTCUSDT, BTC/USDT)"),
                Param("mode", "query", {"type": "string", "enum": ["paper", "live"]}, "trades, performance: the books"),
            ),
            errors=_ERRORS,
            description=(
                f"{_TABLE_GET}. Other query parameters go to that endpoint when it takes them; one it does not "
                f"take is a 422 naming it (code UNKNOWN_PARAMETER). {_NOTE}"
            ),
        ),
    )  # fmt: skip
    add(
        app,
        Endpoint(
            "POST", PATH, post_facade, "The enhanced-execution spec's commands, by {\"action\": ...}", t,
            {200: (None, _ANSWER), 201: (None, _ANSWER), 202: (None, _ANSWER)},
            body=FacadeBody,
            errors=_ERRORS,
            description=(
                f"{_TABLE_POST}. place-order and validate-order take the spec's symbol (BTCUSDT, BTC/USDT or "
                f"BTC_USDT, matched against PAIRS: another is a 422 naming symbol). {_NOTE}"
            ),
        ),
    )  # fmt: skip
