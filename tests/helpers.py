"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

from schemas.messages import Book, Fill

T = TypeVar("T")


async def eventually(
    fn: Callable[[], Awaitable[T | None]], timeout: float = 10.0, every: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = await fn()
        except Exception as e:  # the thing polled may not be up yet
            last = e
            value = None
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def book(pair: str, bid: str, ask: str, size: str = "10", levels: int = 10, ts: int = 1) -> Book:
    b, a, step = Decimal(bid), Decimal(ask), Decimal(ask) - Decimal(bid)
    return Book(
        pair=pair,
        bids=[(b - step * i, Decimal(size)) for i in range(levels)],
        asks=[(a + step * i, Decimal(size)) for i in range(levels)],
        ts=ts,
    )


def fill(
    fill_id: str,
    side: str,
    qty: str,
    price: str,
    fee: str = "0",
    pair: str = "BTC_USDT",
    fee_currency: str = "USDT",
    ts: int = 1,
    venue: str = "paper",
) -> Fill:
    """A fill as the fill-tracker writes it; on the ``paper`` venue (the tests' deployment) unless named."""
    return Fill(
        fill_id=fill_id,
        order_id=f"O-{fill_id}",
        client_order_id=f"C-{fill_id}",
        pair=pair,
        side=side,
        quantity=Decimal(qty),
        price=Decimal(price),
        fee=Decimal(fee),  # type: ignore[arg-type]
        fee_currency=fee_currency,
        liquidity="taker",
        venue=venue,
        timestamp=ts,
    )
