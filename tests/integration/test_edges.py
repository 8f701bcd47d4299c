"""Issue 15, the edges: what the service writes and what it takes, checked from outside over real HTTP and
a real nats-server (every answer also validated against the OpenAPI document the gateway serves).

- decimals: REST answers carry JSON numbers in the shortest exact form, the bus decimal strings without
  exponent or negative zero; settings booleans are JSON booleans;
- fills: the fill-tracker's Nats-Msg-Id, and GET /api/trades listing a fill id once;
- query integers: ASCII digits only, bounded; cursors past the stream; empty values;
- GET /api/ws without the upgrade; the document stating what the server enforces;
- side and signal in any case; a malformed signal request answered with a rejected result.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import nats.js.errors
import pytest

from bus.codec import decode
from schemas.messages import DeadLetter, Fill, SignalReply
from tests.helpers import eventually
from tests.integration.test_gateway_api import ORDER, Api, launch, problem  # noqa: F401  (launch: a fixture)

# a JSON number that is not in the shortest exact form: an exponent, a trailing zero, a negative zero
NOT_SHORTEST = re.compile(rb"[:\[,](-?[0-9]+(?:\.[0-9]*0|[eE][-+]?[0-9]+|\.[0-9]+[eE][-+]?[0-9]+)|-0)(?=[,\]}])")


@pytest.fixture
async def api(launch) -> Api:  # noqa: F811
    return await launch()


def numbers_not_shortest(raw: bytes) -> list[bytes]:
    """The number literals of a JSON answer (outside strings) not written in the shortest exact form."""
    outside = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw)
    return NOT_SHORTEST.findall(outside)


def bad_decimal_strings(node: Any) -> list[str]:
    """Decimal-looking strings of a bus message written with an exponent, as a negative zero, or a zero
    with decimals (``0E-8``, ``-0.00``, ``1E-8``)."""
    out: list[str] = []
    if isinstance(node, dict):
        for v in node.values():
            out += bad_decimal_strings(v)
    elif isinstance(node, list):
        for v in node:
            out += bad_decimal_strings(v)
    elif isinstance(node, str) and re.fullmatch(r"-?[0-9.]+(E[-+]?[0-9]+)?", node) and _bad(node):
        out.append(node)
    return out


def _bad(text: str) -> bool:
    return "E" in text or (Decimal(text) == 0 and text != "0")


# -- decimals and booleans ------------------------------------------------------------------------------------
async def test_rest_answers_write_decimals_in_the_shortest_exact_form(api):
    await api.book()
    await api.filled_buy("BTC_USDT", 0.5)
    await eventually(lambda: _positions(api), what="the position")
    for path in ("/api/portfolio", "/api/positions", "/api/performance", "/api/risk/metrics", "/api/trades"):
        r = await api.call("GET", path)
        assert r.status == 200, (path, r.body)
        assert numbers_not_shortest(r.raw) == [], (path, numbers_not_shortest(r.raw), r.raw[:400])
    raw = (await api.call("GET", "/api/portfolio")).raw
    assert b'"feesPaid":0.05,' in raw  # 0.5 x 100 x 0.001, rounded to 8 decimals by the ledger: was 0.05000000


async def _positions(api: Api) -> Any:
    return (await api.ok("GET", "/api/positions"))["positions"] or None


async def test_status_and_risk_limits_are_typed_booleans_and_numbers(launch):  # noqa: F811
    api = await launch(ALLOW_SHORT="false", MAX_POSITION_SIZE="0.250")
    status = await api.ok("GET", "/api/status")
    limits = status["limits"]
    assert limits["ALLOW_SHORT"] is False  # was "False"
    assert limits["MAX_POSITION_SIZE"] == 0.25 and limits["MAX_ORDERS_PER_SECOND"] == 1000
    assert b'"MAX_POSITION_SIZE":0.25,' in (await api.call("GET", "/api/status")).raw
    assert not [k for k, v in limits.items() if isinstance(v, str)], limits
    metrics = await api.ok("GET", "/api/risk/metrics")
    assert metrics["limits"] == limits
    cfg = await api.ok("PUT", "/api/risk/config", {"allowShort": True, "maxDrawdown": "0.50"})
    assert cfg["limits"]["ALLOW_SHORT"] is True and cfg["limits"]["MAX_DRAWDOWN"] == 0.5
    assert (await api.ok("GET", "/api/status"))["limits"]["ALLOW_SHORT"] is True


async def test_position_and_portfolio_events_carry_plain_decimal_strings_on_the_bus_and_the_streams(api):
    await api.book()
    seen: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        seen.append({"subject": msg.subject, "data": json.loads(msg.data)})

    s = api.bus.subjects
    subs = [await api.bus.nc.subscribe(f"{s.prefix}.events.positions.>", cb=on)]
    subs.append(await api.bus.nc.subscribe(f"{s.prefix}.events.portfolio", cb=on))
    await api.bus.nc.flush()
    try:
        async with api.sse("?types=position,portfolio,fill") as events:
            await events.next()  # hello
            await api.filled_buy("BTC_USDT", 0.5)
            relayed = [await events.next() for _ in range(2)]
            await eventually(lambda: _both(seen), what="a position and a portfolio event on the bus")
            await api.ok("POST", "/api/portfolio/refresh")
            for ev in relayed:
                assert bad_decimal_strings(json.loads(ev["data"])) == [], ev
    finally:
        for sub in subs:
            await sub.unsubscribe()
    for ev in seen:
        assert bad_decimal_strings(ev["data"]) == [], ev


async def _both(seen: list[dict[str, Any]]) -> bool:
    kinds = {".positions." in e["subject"] for e in seen}
    return kinds == {True, False}


# -- fills: Nats-Msg-Id and one listing per fill id -------------------------------------------------------------
async def test_a_fill_carries_its_fill_id_as_nats_msg_id_and_an_outside_repeat_is_listed_once(api):
    await api.book()
    oid = await api.filled_buy("BTC_USDT", 0.1)
    [trade] = (await api.ok("GET", f"/api/trades?orderId={oid}"))["trades"]
    s = api.bus.subjects
    state = (await api.bus.js.stream_info(s.s_fills)).state
    stored = await api.bus.js.get_msg(s.s_fills, state.last_seq)
    assert decode(stored.data, Fill).fill_id == trade["fillId"]
    assert stored.headers and stored.headers["Nats-Msg-Id"] == trade["fillId"]
    # an outside writer that sets the same header within the duplicate window: JetStream keeps one copy
    ack = await api.bus.js.publish(s.fills("BTC_USDT"), stored.data, headers={"Nats-Msg-Id": trade["fillId"]})
    assert ack.duplicate and (await api.bus.js.stream_info(s.s_fills)).state.last_seq == state.last_seq
    # one that does not (or writes it again after the window): stored twice, listed once, booked once
    await api.bus.js.publish(s.fills("BTC_USDT"), stored.data)
    assert (await api.bus.js.stream_info(s.s_fills)).state.last_seq == state.last_seq + 1
    other = await api.filled_buy("BTC_USDT", 0.2)
    listed = [t["fillId"] for t in (await api.ok("GET", "/api/trades"))["trades"]]
    assert len(listed) == len(set(listed)) == 2, listed
    assert [t["orderId"] for t in (await api.ok("GET", f"/api/trades?orderId={oid}"))["trades"]] == [oid]
    page = await api.ok("GET", "/api/trades?limit=1")
    assert [t["orderId"] for t in page["trades"]] == [other]
    rest = await api.ok("GET", f"/api/trades?limit=5&cursor={page['nextCursor']}")
    assert [t["orderId"] for t in rest["trades"]] == [oid]
    # one fill a page: the repeat never shows on a page of its own (the first copy, the one booked, does)
    ids, cursor = [], None
    while True:
        page = await api.ok("GET", "/api/trades?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        ids += [t["fillId"] for t in page["trades"]]
        if not (cursor := page.get("nextCursor")):
            break
    assert len(ids) == len(set(ids)) == 2, ids

    async def booked() -> Any:
        positions = (await api.ok("GET", "/api/positions"))["positions"]
        return positions if positions and positions[0]["quantity"] >= 0.3 else None

    assert [p["quantity"] for p in await eventually(booked, what="0.3 booked")] == [0.3]  # booked once


# -- query integers ---------------------------------------------------------------------------------------------
INT_PARAMS = [
    ("/api/orders", "limit"), ("/api/orders", "since"), ("/api/orders", "until"), ("/api/trades", "limit"),
    ("/api/trades", "cursor"), ("/api/signals", "limit"), ("/api/signals", "since"),
    ("/api/positions/history", "limit"), ("/api/positions/history", "since"), ("/api/alerts", "limit"),
]  # fmt: skip


@pytest.mark.parametrize(
    "value",
    ["²", "١٢", "12²", "+5", "-1", " 5", "5.0", "1e3", "99999999999999999999999", "18446744073709551617"],
)
async def test_integer_query_parameters_take_ascii_digits_within_bounds_only(api, value):
    for path, name in INT_PARAMS:
        r = await api.call("GET", f"{path}?{name}={value}")
        p = problem(r, 422, name, "INVALID_FIELD")
        assert name in p["detail"]


async def test_empty_query_values_are_as_if_not_given_and_the_document_says_so(api):
    for path, name in INT_PARAMS:
        r = await api.call("GET", f"{path}?{name}=")
        assert r.status == 200, (path, name, r.body)
    for path in ("/api/orders?status=&side=&pair=&cursor=", "/api/trades?pair=&orderId=", "/api/alerts?severity="):
        assert (await api.call("GET", path)).status == 200, path
    for template, ops in api.contract.doc["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "query":
                    assert p["allowEmptyValue"] is True, (template, p["name"])


async def test_limits_and_times_at_their_bounds(api):
    assert (await api.call("GET", "/api/orders?since=1000000000000000&limit=500")).status == 200
    problem(await api.call("GET", "/api/orders?since=1000000000000001"), 422, "since", "INVALID_FIELD")
    problem(await api.call("GET", "/api/orders?limit=0"), 422, "limit", "INVALID_FIELD")
    problem(await api.call("GET", "/api/orders?limit=501"), 422, "limit", "INVALID_FIELD")
    problem(await api.call("GET", "/api/orders?cursor=١٢:ORD_1"), 422, "cursor", "INVALID_FIELD")
    problem(await api.call("GET", "/api/stream?lastEventId=f١٢"), 422, "lastEventId", "INVALID_FIELD")
    problem(await api.call("GET", "/api/stream?lastEventId=f9999999999999999999"), 422, "lastEventId", "INVALID_FIELD")


async def test_a_trades_cursor_past_the_stream_is_an_empty_page_at_once(api, monkeypatch):
    await api.book()
    await api.filled_buy()
    reads: list[int] = []
    original = api.bus.js.get_msg

    async def counted(stream: str, seq: int, *a: Any, **kw: Any) -> Any:
        reads.append(seq)
        return await original(stream, seq, *a, **kw)

    # the gateway shares nothing with the test's bus client: count the gateway's own reads
    gw_js = api.gateway.bus.js
    monkeypatch.setattr(gw_js, "get_msg", counted)
    last = (await api.bus.js.stream_info(api.bus.subjects.s_fills)).state.last_seq
    for cursor in (last + 2, last + 5_000, 2**63 - 1):
        page = await api.ok("GET", f"/api/trades?cursor={cursor}")
        assert page == {"trades": []}, (cursor, page)
    assert reads == []
    problem(await api.call("GET", "/api/trades?cursor=18446744073709551617"), 422, "cursor", "INVALID_FIELD")
    problem(await api.call("GET", "/api/trades?cursor=0"), 422, "cursor", "INVALID_FIELD")
    page = await api.ok("GET", f"/api/trades?cursor={last + 1}")  # the newest page, as without a cursor
    assert len(page["trades"]) == 1 and len(reads) >= 1


# -- /api/ws without the upgrade, and the document --------------------------------------------------------------
async def test_a_plain_get_of_the_websocket_is_a_documented_426_problem(api):
    r = await api.call("GET", "/api/ws?types=fill")
    p = problem(r, 426, None, "UPGRADE_REQUIRED")
    assert "WebSocket" in p["detail"] and r.headers["Upgrade"] == "websocket"
    assert "426" in api.contract.doc["paths"]["/api/ws"]["get"]["responses"]
    problem(await api.call("GET", "/api/ws?types=fills"), 422, "types", "INVALID_FIELD")  # the parameters first
    async with api.ws("?types=fill") as sock:  # a real WebSocket client still connects
        assert (await sock.receive_json(timeout=10))["type"] == "hello"


def _schema(api: Api, name: str) -> dict[str, Any]:
    return api.contract.doc["components"]["schemas"][name]


def _param(api: Api, path: str, name: str) -> dict[str, Any]:
    params = api.contract.doc["paths"][path]["get"]["parameters"]
    return next(p["schema"] for p in params if p["name"] == name)


async def test_the_document_states_what_the_server_enforces(api):
    contract = api.contract
    cfg = _schema(api, "ConfigBody")["properties"]
    per_second = cfg["maxOrdersPerSecond"]["anyOf"][0]
    assert (per_second["minimum"], per_second["maximum"]) == (1, 1_000_000)
    problem(await api.call("PUT", "/api/risk/config", {"maxOrdersPerSecond": 0}), 422, "maxOrdersPerSecond")
    size = cfg["maxPositionSize"]["anyOf"][0]
    assert (size["exclusiveMinimum"], size["maximum"]) == (0, 1)
    problem(await api.call("PUT", "/api/risk/config", {"maxPositionSize": 0}), 422, "maxPositionSize")
    assert _param(api, "/api/orders", "since")["maximum"] == 10**15
    assert _param(api, "/api/signals", "since")["maximum"] == 10**15
    assert _param(api, "/api/trades", "cursor")["maximum"] == 2**63 - 1
    place = {"$ref": "#/components/schemas/PlaceOrder"}
    for quantity in ("", "abc", "NaN", "Infinity", "-Infinity"):
        with pytest.raises(AssertionError):
            contract.validate(place, {**ORDER, "quantity": quantity}, "the document refuses it")
        problem(await api.call("POST", "/api/orders", {**ORDER, "quantity": quantity}), 422, "quantity")
    for quantity in ("0.1", "1e-1", ".5", 0.1):
        contract.validate(place, {**ORDER, "quantity": quantity}, "the document takes it")
    contract.validate(place, {**ORDER, "side": "BUY"}, "any case")
    with pytest.raises(AssertionError):
        contract.validate(place, {**ORDER, "side": "hold"}, "not a side")


# -- side and signal in any case ---------------------------------------------------------------------------------
async def test_an_order_takes_its_side_in_any_case_and_an_enum_error_lists_the_allowed_values(api):
    await api.book()
    placed = await api.place(pair="BTC_USDT", side="BUY", quantity=0.1)
    assert placed["side"] == "buy"
    await api.until(placed["orderId"], "filled")
    placed = await api.place(pair="BTC_USDT", side="Sell", quantity=0.1)
    assert placed["side"] == "sell"
    p = problem(await api.call("POST", "/api/orders", {**ORDER, "side": "hold"}), 422, "side", "INVALID_FIELD")
    assert "buy, sell" in p["detail"]
    p = problem(await api.call("POST", "/api/orders", {**ORDER, "type": "Market!"}), 422, "type", "INVALID_FIELD")
    assert "market, limit, stop_loss, stop_limit, take_profit" in p["detail"]
    listed = await api.ok("GET", "/api/orders?side=SELL")
    assert [o["side"] for o in listed["orders"]] == ["sell"]


async def test_a_signal_takes_its_signal_in_any_case_over_rest_and_nats(api):
    await api.book()
    body = {"pair": "BTC_USDT", "signal": "buy", "confidence": 0.9, "quantity": 0.1, "signalId": _sid()}
    ev = await api.ok("POST", "/api/signals/execute", body)
    assert (ev["status"], ev["signal"]) == ("executed", "BUY")
    p = problem(await api.call("POST", "/api/signals/execute", {**body, "signal": "LONG"}), 422, "signal")
    assert "BUY, SELL, HOLD, CLOSE" in p["detail"]
    reply = await _request(api, {**body, "signal": "Hold", "signalId": _sid()})
    assert (reply.status, reply.signal, reply.reason) == ("filtered", "HOLD", "HOLD does nothing")
    bad = await _request(api, {**body, "signal": "BUYX", "signalId": _sid()})
    assert (bad.status, bad.field, bad.code) == ("rejected", "signal", "INVALID_SIGNAL")
    assert "BUY, SELL, HOLD, CLOSE" in (bad.reason or "") and bad.stream and bad.seq > 0
    listed = await api.ok("GET", f"/api/signals?signalId={bad.signal_id}")
    assert [(s["status"], s["field"]) for s in listed["signals"]] == [("rejected", "signal")]


def _sid() -> str:
    return f"EDGE-{uuid.uuid4().hex[:10]}"


async def _request(api: Api, body: dict[str, Any] | bytes) -> SignalReply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await api.bus.nc.request(api.bus.subjects.signals_submit, data, timeout=10)
    return decode(msg.data, SignalReply)


async def test_a_malformed_signal_request_gets_a_rejected_result_and_is_a_dead_letter(api):
    s = api.bus.subjects
    letters: list[DeadLetter] = []

    async def on(msg: Any) -> None:
        letters.append(decode(msg.data, DeadLetter))

    sub = await api.bus.nc.subscribe(s.deadletter(s.signals_submit), cb=on)
    await api.bus.nc.flush()
    try:
        sid = _sid()
        body = {"pair": "BTC_USDT", "signal": "BUY", "confidence": "very", "source": "edge", "signalId": sid}
        reply = await _request(api, body)
        assert (reply.signal_id, reply.status, reply.field, reply.code) == (
            sid,
            "rejected",
            "confidence",
            "INVALID_SIGNAL",
        )
        assert (reply.pair, reply.signal, reply.source) == ("BTC_USDT", "BUY", "edge")
        assert "confidence" in (reply.reason or "") and s.deadletter(s.signals_submit) in reply.notes[0]
        raw = await api.bus.nc.request(s.signals_submit, json.dumps(body).encode(), timeout=10)
        assert "confidence" in json.loads(raw.data)["error"]["description"]  # a JetStream publisher raises with it
        with pytest.raises(nats.js.errors.APIError, match="confidence"):
            await api.bus.js.publish(s.signals_submit, json.dumps({**body, "signalId": _sid()}).encode())
        anonymous = await _request(api, b'{"pair": "BTC_USDT", "signal": ')
        assert anonymous.status == "rejected" and anonymous.signal_id.startswith("SIG_")
        assert "malformed JSON" in (anonymous.reason or "")
        await eventually(lambda: asyncio.sleep(0, len(letters) >= 4), what="the dead letters")
        assert {d.subject for d in letters} == {s.signals_submit}
    finally:
        await sub.unsubscribe()


async def test_query_enums_take_any_case_as_the_document_says(api):
    await api.book()
    await api.filled_buy()
    assert [o["status"] for o in (await api.ok("GET", "/api/orders?status=FILLED&side=Buy"))["orders"]] == ["filled"]
    assert (await api.call("GET", "/api/alerts?severity=Critical")).status == 200
    p = problem(await api.call("GET", "/api/orders?side=long"), 422, "side", "INVALID_FIELD")
    assert "buy, sell" in p["detail"]
    side = _param(api, "/api/orders", "side")
    api.contract.validate(side, "SELL", "any case")
    with pytest.raises(AssertionError):
        api.contract.validate(side, "long", "not a side")


async def test_a_decimal_with_an_absurd_exponent_is_a_422_not_megabytes(api):
    for where, body in (
        ("quantity", {**ORDER, "quantity": "1E+50000000"}),
        ("quantity", {**ORDER, "quantity": "1E-50000000"}),
        ("price", {**ORDER, "type": "limit", "price": "1E+999999999999999999"}),
    ):
        problem(await api.call("POST", "/api/orders", body), 422, where, "INVALID_FIELD")
        problem(await api.call("POST", "/api/orders/validate", body), 422, where, "INVALID_FIELD")
    sig = {"pair": "BTC_USDT", "signal": "BUY", "confidence": "1E-50000000", "signalId": _sid()}
    problem(await api.call("POST", "/api/signals/execute", sig), 422, "confidence", "INVALID_FIELD")


async def test_a_signal_with_an_absurd_exponent_on_the_bus_still_gets_its_one_result(api):
    await api.book()
    reply = await _request(api, {"pair": "BTC_USDT", "signal": "BUY", "confidence": "1E-5000000", "signalId": _sid()})
    assert reply.status == "filtered" and "confidence" in (reply.reason or "")
