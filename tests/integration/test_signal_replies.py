"""Replies to signals paired with the publishes they answer (review of issue 19 part A, findings 3 and 4): a signal
without any id heard but never stored, and a retry under a Nats-Msg-Id after the stream's duplicate window."""

from __future__ import annotations

import asyncio

import nats.errors

from bus.codec import decode
from schemas.messages import SignalReply
from tests.helpers import eventually
from tests.integration.test_signal_intake import PAIR, api, book, orders, raw, signal  # noqa: F401  (fixture)

SYSTEM_DEFAULTS = {"STOP_LOSS_ENABLED": "false", "SIGNAL_DEDUPE_WINDOW": "0"}


async def test_a_signal_without_any_id_heard_but_not_stored_takes_no_later_identical_requests_answer(
    make_system, client
) -> None:
    """Regression (finding 3): without signalId and Nats-Msg-Id, identical publishes were paired with stored copies
    in arrival order only, so one publish heard but not stored (no stream leader) made every later identical
    request's result go to the previous request's inbox, for up to 10 minutes: each later request timed out."""
    await make_system()
    js = client.js
    name = client.subjects.s_signals
    cfg = (await js.stream_info(name)).config
    real = list(cfg.subjects)
    subject = client.subjects.signals_submit
    body = raw(signal("HOLD", source="cli"))
    ok = decode((await client.nc.request(subject, body, timeout=10)).data, SignalReply)
    assert ok.status == "filtered"
    cfg.subjects = [f"{client.subjects.prefix}.nothing.here"]
    await js.update_stream(cfg)  # the stream stores nothing for a moment (no leader): heard, not stored
    try:
        await client.nc.request(subject, body, timeout=1)
        raise AssertionError("a signal that was never stored was answered")
    except nats.errors.TimeoutError:
        pass
    cfg.subjects = real
    await js.update_stream(cfg)
    answers = [decode((await client.nc.request(subject, body, timeout=5)).data, SignalReply) for _ in range(3)]
    ids = {a.signal_id for a in answers} | {ok.signal_id}
    assert len(ids) == 4 and all(a.status == "filtered" for a in answers)  # each its own signal, its own result
    assert (await js.stream_info(name)).state.messages == 4


async def test_a_nats_msg_id_retry_after_the_duplicate_window_gets_its_own_result_not_the_first(
    make_system, client
) -> None:
    """Regression (finding 4): a retry under the same Nats-Msg-Id after the stream's duplicate window (2 min; here
    3 s) was answered with the first attempt's result (kept 10 min) while the stream stored it again and it made a
    second order the caller never heard of. Within the window a retry is still answered with the first result."""
    await make_system()
    name = client.subjects.s_signals
    cfg = (await client.js.stream_info(name)).config
    cfg.duplicate_window = 3.0  # stands for the 2-minute window
    await client.js.update_stream(cfg)
    await book(client)
    subject = client.subjects.signals_submit
    body = raw(signal("BUY", source="no-id"))

    async def send() -> SignalReply:
        reply = await client.nc.request(subject, body, timeout=10, headers={"Nats-Msg-Id": "pub-9"})
        return decode(reply.data, SignalReply)

    a = await send()
    again = await send()  # within the window: dropped by the stream, answered with the first result
    assert a.status == again.status == "executed" and again.signal_id == a.signal_id
    assert (await client.js.stream_info(name)).state.messages == 1
    await asyncio.sleep(3.5)
    b = await send()  # after the window: stored again, a signal of its own, with its own result
    assert b.status == "executed" and b.signal_id != a.signal_id and b.seq != a.seq
    mine = await eventually(lambda: _signal_orders(client, 2), what="both signals' orders")
    assert {o.signal_id for o in mine} == {a.signal_id, b.signal_id}
    assert {o.order_id for o in mine} == {a.orders[0].order_id, b.orders[0].order_id}


async def _signal_orders(client, n: int):  # type: ignore[no-untyped-def]
    mine = [o for o in await orders(client) if o.signal_id is not None]
    return mine if len(mine) >= n else None


# -- POST /api/signals/execute: never "stored" unless it is ----------------------------------------------------
async def _stores_nothing(bus) -> tuple[object, list[str]]:  # type: ignore[no-untyped-def]
    """TBX_SIGNALS stops taking the submit subject (what a stream without a leader looks like to a publisher)."""
    cfg = (await bus.js.stream_info(bus.subjects.s_signals)).config
    real = list(cfg.subjects)
    cfg.subjects = [f"{bus.subjects.prefix}.nothing.here"]
    await bus.js.update_stream(cfg)
    return cfg, real


async def test_rest_execute_never_claims_stored_for_a_signal_the_stream_never_stored(api) -> None:  # noqa: F811
    """Regression (finding 2): when the stream stored nothing, the gateway waited 10 s and answered 202 "the signal
    is stored". Now: 503 UPSTREAM_UNAVAILABLE with Retry-After and the signalId; resending it is harmless."""
    await book(api.bus)
    cfg, real = await _stores_nothing(api.bus)
    body = {"pair": PAIR, "signal": "BUY", "confidence": 0.8, "signalId": "LOST-1"}
    async with api.http.post(api.base + "/api/signals/execute", json=body) as r:
        status, retry_after, problem = r.status, r.headers.get("Retry-After"), await r.json(content_type=None)
    assert status == 503, problem
    assert (problem["code"], problem["signalId"], retry_after) == ("UPSTREAM_UNAVAILABLE", "LOST-1", "1")
    assert "not known to be stored" in problem["detail"] and "same signalId" in problem["detail"]
    assert await api.listed("?signalId=LOST-1") == []
    cfg.subjects = real  # type: ignore[attr-defined]
    await api.bus.js.update_stream(cfg)  # a leader again
    status, _, ev = await api.call("POST", "/api/signals/execute", body)  # the caller resends it, same signalId
    assert status == 200 and ev["status"] == "executed" and ev["signalId"] == "LOST-1", ev
    status, _, again = await api.call("POST", "/api/signals/execute", body)
    assert status == 200 and again["orders"] == ev["orders"]  # the same result, never a second order
    assert len([o for o in await orders(api.bus) if o.signal_id == "LOST-1"]) == 1


async def test_rest_execute_sends_again_inside_so_a_signal_lost_for_a_moment_is_executed(api) -> None:  # noqa: F811
    """A publish the stream did not take (an election) is sent again inside the wait, under the same signalId and
    Nats-Msg-Id: the caller gets the result (200), and the stream holds one copy."""
    await book(api.bus)
    cfg, real = await _stores_nothing(api.bus)

    async def leader_again() -> None:
        await asyncio.sleep(1.5)
        cfg.subjects = real  # type: ignore[attr-defined]
        await api.bus.js.update_stream(cfg)

    back = asyncio.create_task(leader_again())
    status, _, ev = await api.call(
        "POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": 0.8, "signalId": "BRIEF-1"}
    )
    await back
    assert status == 200 and ev["status"] == "executed" and ev["signalId"] == "BRIEF-1", ev
    assert (await api.bus.js.stream_info(api.bus.subjects.s_signals)).state.messages == 1


async def test_rest_execute_answers_202_only_when_the_stream_holds_the_signal(api) -> None:  # noqa: F811
    """signal-intake down: the stream stores the signal, nobody answers; the gateway sees it stored: 202 naming
    where, and one stored copy however often it was sent."""
    await book(api.bus)
    await api.system.stop("signal-intake")
    status, _, body = await api.call(
        "POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": 0.8, "signalId": "LATE-1"}
    )
    assert status == 202 and body["status"] == "accepted" and "is stored" in body["detail"], body
    assert (await api.bus.js.stream_info(api.bus.subjects.s_signals)).state.messages == 1
