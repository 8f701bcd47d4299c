"""The bus over a real nats-server: durable hops, dead letters, failing handlers, replays, layout."""

from __future__ import annotations

import asyncio
import socket
import time
from decimal import Decimal

import pytest

from bus.client import Bus, Envelope
from bus.codec import decode
from bus.embedded import DEFAULT_PORT, EmbeddedNats, PortInUse
from bus.errors import BusUnavailable, RequestFailed
from schemas.messages import DeadLetter, ExecutionReport, Fill, OrderRequest
from tests.conftest import pid_alive
from tests.helpers import eventually, fill


def report(n: int) -> ExecutionReport:
    return ExecutionReport(
        kind="trade",
        order_id=f"O{n}",
        client_order_id=f"C{n}",
        pair="BTC_USDT",
        side="buy",
        order_quantity=Decimal(1),
        venue="test",
        ts=n,
        trade_id=f"T{n}",
        quantity=Decimal(1),
        price=Decimal(100),
    )


async def dead_letters(bus: Bus) -> list[DeadLetter]:
    out: list[DeadLetter] = []

    async def h(d: DeadLetter, env: Envelope) -> None:
        out.append(d)

    await bus.replay(
        stream=bus.subjects.s_deadletter,
        subject=f"{bus.subjects.prefix}.deadletter.>",
        type_=DeadLetter,
        handler=h,
        follow=False,
    )
    return out


async def test_layout_is_idempotent_even_when_raced(make_bus):
    bus = await make_bus(layout=False)
    others = [await make_bus(f"b{i}", layout=False) for i in range(3)]
    await asyncio.gather(bus.ensure_layout(), *(o.ensure_layout() for o in others))
    await bus.ensure_layout()
    names = {s.name for s in bus.subjects.streams()}
    for name in names:
        info = await bus.js.stream_info(name)
        assert info.config.name == name
    kv = await bus.kv(bus.subjects.kv_state)
    await kv.put("probe", b"1")
    assert (await kv.get("probe")).value == b"1"


async def test_durable_hop_delivers_what_was_sent_while_the_consumer_was_down(make_bus):
    producer = await make_bus("producer")
    s = producer.subjects
    for n in range(3):  # nobody is consuming yet
        await producer.js_publish(s.exec_reports("BTC_USDT"), report(n))

    got: list[str] = []

    async def handler(r: ExecutionReport, env: Envelope) -> None:
        got.append(r.order_id)

    consumer = await make_bus("consumer")
    await consumer.consume(
        stream=s.s_hops, durable="worker", subject=s.exec_reports(), type_=ExecutionReport, handler=handler
    )
    await eventually(lambda: asyncio.sleep(0, len(got) == 3), what="the 3 early reports")
    await consumer.close()  # the actor goes down

    for n in range(3, 5):
        await producer.js_publish(s.exec_reports("BTC_USDT"), report(n))
    again = await make_bus("consumer-again")
    await again.consume(
        stream=s.s_hops, durable="worker", subject=s.exec_reports(), type_=ExecutionReport, handler=handler
    )
    await eventually(lambda: asyncio.sleep(0, len(got) == 5), what="the 2 reports sent while down")
    await asyncio.sleep(0.3)
    assert got == ["O0", "O1", "O2", "O3", "O4"]  # acked ones are not delivered twice


async def test_undecodable_message_goes_to_dead_letters_and_the_consumer_goes_on(make_bus):
    bus = await make_bus()
    s = bus.subjects
    got: list[str] = []

    async def handler(r: ExecutionReport, env: Envelope) -> None:
        got.append(r.order_id)

    await bus.consume(stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=handler)
    await bus.js.publish(s.exec_reports("BTC_USDT"), b"{not json")
    await bus.js.publish(s.exec_reports("BTC_USDT"), b'{"kind": "trade", "orderId": 5}')
    await bus.js_publish(s.exec_reports("BTC_USDT"), report(7))
    await eventually(lambda: asyncio.sleep(0, got == ["O7"]), what="the good message after two bad ones")
    letters = await eventually(lambda: _at_least(dead_letters(bus), 2), what="two dead letters")
    reasons = sorted(d.reason for d in letters)
    assert "malformed JSON" in reasons[1] or "malformed JSON" in reasons[0]
    assert any("invalid ExecutionReport" in r for r in reasons)
    assert all(d.subject == s.exec_reports("BTC_USDT") and d.actor == "test" for d in letters)


async def _at_least(coro, n: int):
    items = await coro
    return items if len(items) >= n else None


async def test_a_failing_handler_is_retried_then_dead_lettered_and_never_kills_the_consumer(make_bus):
    bus = await make_bus()
    s = bus.subjects
    attempts: dict[str, int] = {}
    done: list[str] = []

    async def handler(r: ExecutionReport, env: Envelope) -> None:
        attempts[r.order_id] = attempts.get(r.order_id, 0) + 1
        if r.order_id == "O1" and attempts["O1"] < 2:
            raise RuntimeError("flaky once")
        if r.order_id == "O2":
            raise RuntimeError("always broken")
        done.append(r.order_id)

    await bus.consume(
        stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=handler, max_deliver=3
    )
    for n in (1, 2, 3):
        await bus.js_publish(s.exec_reports("BTC_USDT"), report(n))
    await eventually(lambda: asyncio.sleep(0, sorted(done) == ["O1", "O3"]), timeout=15, what="O1 retried, O3 done")
    letters = await eventually(lambda: _at_least(dead_letters(bus), 1), timeout=15, what="O2 dead-lettered")
    assert attempts["O2"] == 3
    assert "handler failed 3 times" in letters[0].reason and "always broken" in letters[0].reason
    assert decode(letters[0].payload.encode(), ExecutionReport).order_id == "O2"


async def test_request_with_a_bad_body_gets_an_error_reply_naming_the_field(make_bus):
    server = await make_bus("server")
    client = await make_bus("client")

    async def handler(req: OrderRequest, env: Envelope) -> None:
        await server.respond(env, req)

    await server.subscribe("x.orders", OrderRequest, handler)
    with pytest.raises(RequestFailed) as err:
        await client.request(
            "x.orders", {"clientOrderId": "a", "pair": "BTC_USDT", "side": "hold", "quantity": "1"}, OrderRequest
        )
    assert "side" in err.value.reason
    ok = await client.request(
        "x.orders", {"clientOrderId": "a", "pair": "BTC_USDT", "side": "buy", "quantity": "1.50"}, OrderRequest
    )
    assert ok.quantity == Decimal("1.50")


async def test_request_to_nobody_fails_fast_and_says_so(make_bus):
    client = await make_bus()
    t0 = time.monotonic()
    with pytest.raises(RequestFailed) as err:
        await client.request("nobody.here", {"a": 1}, dict, timeout=5)
    assert err.value.no_responders and err.value.transient
    assert time.monotonic() - t0 < 2


async def test_replay_reads_everything_in_order_then_follows(make_bus):
    bus = await make_bus()
    s = bus.subjects
    for i in range(50):
        await bus.js_publish(s.fills("BTC_USDT"), fill(f"f{i}", "buy", "1", "100"), msg_id=f"f{i}")
    await bus.js_publish(s.fills("BTC_USDT"), fill("f0", "buy", "1", "100"), msg_id="f0")  # deduplicated by id
    seen: list[tuple[int, str]] = []

    async def handler(f: Fill, env: Envelope) -> None:
        seen.append((env.seq or 0, f.fill_id))

    await bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=handler)
    assert [fid for _, fid in seen] == [f"f{i}" for i in range(50)]  # all there when replay returns
    await bus.js_publish(s.fills("ETH_USDT"), fill("late", "sell", "1", "10", pair="ETH_USDT"))
    await eventually(lambda: asyncio.sleep(0, seen[-1][1] == "late"), what="the followed message")
    tail: list[int] = []

    async def from_seq(f: Fill, env: Envelope) -> None:
        tail.append(env.seq or 0)

    await bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=from_seq, start_seq=49, follow=False)
    assert tail == [49, 50, 51]


async def test_replay_of_an_empty_stream_returns_at_once(make_bus):
    bus = await make_bus()
    t0 = time.monotonic()
    await bus.replay(
        stream=bus.subjects.s_fills,
        subject=bus.subjects.fills(),
        type_=Fill,
        handler=lambda f, e: asyncio.sleep(0),
        follow=False,
    )
    assert time.monotonic() - t0 < 2


async def test_connect_to_nothing_is_a_clear_error():
    from bus.embedded import free_port
    from schemas.subjects import Subjects

    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(BusUnavailable) as err:
        await Bus.connect(f"nats://127.0.0.1:{port}", name="x", subjects=Subjects("x"), connect_timeout=2)
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in str(err.value)
    assert "unset NATS_URL" in str(err.value) and "`tbx actor` and `tbx gateway` join a NATS_URL" in str(err.value)
    assert time.monotonic() - t0 < 5


def test_embedded_server_takes_a_free_port_when_4222_is_taken_and_stops_by_pid(tmp_path):
    blocker: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # type: ignore[union-attr]  # (TIME_WAIT)
    try:
        blocker.bind(("127.0.0.1", DEFAULT_PORT))  # type: ignore[union-attr]
        blocker.listen()  # type: ignore[union-attr]
    except OSError:  # somebody else holds it already: taken all the same
        blocker.close()  # type: ignore[union-attr]
        blocker = None
    try:
        server = EmbeddedNats(tmp_path)
        url = server.start()
        pid = server.pid
        assert pid is not None and pid_alive(pid)
        assert server.port != DEFAULT_PORT and url.endswith(f":{server.port}")
        assert server.fell_back_from == DEFAULT_PORT  # for the launcher's warning
        assert (tmp_path / "jetstream").is_dir()
        server.stop()
        assert not pid_alive(pid)
    finally:
        if blocker:
            blocker.close()


async def test_stopping_lets_the_message_in_hand_finish_and_leaves_the_rest_for_later(make_bus):
    bus = await make_bus("worker")
    s = bus.subjects
    log: list[str] = []

    async def slow(r: ExecutionReport, env: Envelope) -> None:
        log.append(f"start {r.order_id}")
        await asyncio.sleep(0.5)
        log.append(f"done {r.order_id}")

    await bus.consume(stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=slow)
    for n in range(3):
        await bus.js_publish(s.exec_reports("BTC_USDT"), report(n))
    await eventually(lambda: asyncio.sleep(0, "start O0" in log), what="the first message in hand")
    await bus.stop_consuming(grace=2.0)
    started = [e.split()[1] for e in log if e.startswith("start")]
    done = [e.split()[1] for e in log if e.startswith("done")]
    assert started == done and "O0" in done  # what was in hand finished, nothing was cancelled
    assert len(done) < 3  # and it stopped taking new ones

    rest: list[str] = []

    async def quick(r: ExecutionReport, env: Envelope) -> None:
        rest.append(r.order_id)

    again = await make_bus("worker-again")
    await again.consume(stream=s.s_hops, durable="w", subject=s.exec_reports(), type_=ExecutionReport, handler=quick)
    await eventually(lambda: asyncio.sleep(0, sorted(done + rest) == ["O0", "O1", "O2"]), what="the rest, later")
    await asyncio.sleep(0.3)
    assert sorted(done + rest) == ["O0", "O1", "O2"]  # each exactly once


def test_transient_errors_are_told_apart_from_bugs():
    import nats.errors
    import nats.js.errors

    from bus.client import is_transient
    from bus.errors import Transient

    assert is_transient(nats.errors.TimeoutError())
    assert is_transient(nats.errors.NoRespondersError())
    assert is_transient(nats.js.errors.ServiceUnavailableError())
    assert is_transient(Transient("venue down"))
    assert is_transient(RequestFailed("x", "no answer", timeout=True))
    assert not is_transient(RequestFailed("x", "internal error: KeyError"))
    assert not is_transient(KeyError("bug"))
    assert not is_transient(ValueError("bug"))


def test_nats_port_taken_by_another_nats_server_is_refused_not_joined(nats_url, tmp_path):
    """NATS_PORT on a port where another nats-server answers: PortInUse, never that server's URL."""
    port = int(nats_url.rsplit(":", 1)[1])
    server = EmbeddedNats(tmp_path, port=port)
    with pytest.raises(PortInUse) as err:
        server.start()
    assert err.value.port == port and server.pid is None


def test_a_bind_lost_to_a_race_is_recognised_and_not_mistaken_for_the_other_server(nats_url, tmp_path, monkeypatch):
    """Free when checked, taken when nats-server binds: its own failure is read from its log, even though the
    other server on the port answers INFO like ours would."""
    import bus.embedded as embedded

    port = int(nats_url.rsplit(":", 1)[1])
    monkeypatch.setattr(embedded, "port_is_free", lambda host, p: True)  # the check "before the other one bound"
    with pytest.raises(PortInUse):
        EmbeddedNats(tmp_path / "a", port=port).start()


def test_embedded_server_on_nats_port_uses_exactly_that_port(tmp_path):
    from bus.embedded import free_port

    port = free_port()
    server = EmbeddedNats(tmp_path, port=port)
    try:
        assert server.start() == f"nats://127.0.0.1:{port}"
        assert server.fell_back_from is None
    finally:
        server.stop()
