"""Fixtures shared by the integration tests: a client on the bus, and systems of real actors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bus.client import Bus
from tests.integration.test_actors import System
from tests.integration.test_order_types import settings_for


@pytest.fixture
async def client(make_bus) -> Bus:
    return await make_bus("client")


@pytest.fixture
async def make_system(nats_url, prefix, request) -> AsyncIterator[Callable[..., Awaitable[System]]]:
    """``await make_system(**settings)``: every actor on ``settings_for`` plus the test module's
    ``SYSTEM_DEFAULTS`` plus these; all stopped at the end of the test."""
    defaults: dict[str, str] = getattr(request.module, "SYSTEM_DEFAULTS", {})
    systems: list[System] = []

    async def make(**extra: str) -> System:
        sut = System(nats_url, settings_for(nats_url, prefix, **(defaults | extra)))
        systems.append(sut)
        await sut.start()
        return sut

    yield make
    for sut in systems:
        await sut.stop()
