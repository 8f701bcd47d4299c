"""JetStream publishes retried inside the bus (bounded, under one Nats-Msg-Id), and a transient failure of a
request's handler answered as "unavailable" (REST: 503 with Retry-After), never as a plain failure (502)."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest
from nats.js import api

from bus.client import Bus, Envelope
from bus.errors import RequestFailed
from schemas.messages import Empty
from schemas.subjects import Subjects
from tests.tcp_proxy import TcpProxy


async def test_a_publish_without_a_stream_leader_is_retried_until_stored_once(make_bus) -> None:
    bus: Bus = await make_bus("pub", layout=False)
    name = f"{bus.subjects.prefix.upper()}_RETRY"
    subject = f"{bus.subjects.prefix}.retry.x"

    async def stream_appears() -> None:  # what an election looks like to a publisher: no answer, then a leader
        await asyncio.sleep(0.4)
        await bus.js.add_stream(api.StreamConfig(name=name, subjects=[subject], duplicate_window=120.0))

    making = asyncio.create_task(stream_appears())
    seq = await bus.js_publish(subject, Empty())  # NoStreamResponse at first: tried again inside
    await making
    assert seq == 1
    info = await bus.js.stream_info(name)
    assert info.state.messages == 1  # stored once, though asked several times
    await bus.js.delete_stream(name)


async def test_a_publish_fails_after_its_bound(make_bus) -> None:
    bus: Bus = await make_bus("pub", layout=False)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await bus.js_publish(f"{bus.subjects.prefix}.nostream.x", Empty(), retry_for=0.5)
    took = asyncio.get_running_loop().time() - t0
    assert took >= 0.3  # tried again for about its bound, not given up at the first try


async def test_a_handler_failing_on_a_missing_stream_answers_unavailable_not_failed(make_bus) -> None:
    server: Bus = await make_bus("server", layout=False)
    client: Bus = await make_bus("client", layout=False)
    subject = f"{server.subjects.prefix}.ask"

    async def handler(_: Empty, env: Envelope) -> None:  # its durable hop has no stream leader (an election)
        await server.js_publish(f"{server.subjects.prefix}.nostream.y", Empty(), retry_for=0.2)

    await server.subscribe(subject, Empty, handler)
    with pytest.raises(RequestFailed) as err:
        await client.request(subject, Empty(), Empty, timeout=5.0)
    assert err.value.unavailable and err.value.transient, err.value
    assert "NoStreamResponseError" in err.value.reason


async def test_a_publish_whose_ack_is_lost_after_it_was_stored_is_stored_once(nats_url, prefix) -> None:
    """Regression (review of issue 19 part A, finding 5): the try after a lost ack must go under the same
    Nats-Msg-Id, else the stream stores the message twice (a second approval: a second order). Here the first try
    IS stored and only its ack is lost (the connection cut as the ack comes back): one stored copy."""
    cutter = TcpProxy(nats_url)  # cuts the connection the moment the server sends a publish ack
    url = await cutter.start()
    bus = await Bus.connect(url, name="pub", subjects=Subjects(prefix))
    try:
        name = f"{prefix.upper()}_ACKS"
        subject = f"{prefix}.acks.x"
        await bus.js.add_stream(api.StreamConfig(name=name, subjects=[subject], duplicate_window=120.0))
        cutter.cut_when_server_sends(b'"seq":')  # a publish ack: stored, its ack lost with the connection
        seq = await bus.js_publish(subject, Empty())
        assert cutter.cuts == 1  # the first ack was lost: the publish was tried again
        assert seq == 1
        assert (await bus.js.stream_info(name)).state.messages == 1  # stored once, though sent twice
        await bus.js.delete_stream(name)
    finally:
        await bus.close()
        await cutter.stop()
