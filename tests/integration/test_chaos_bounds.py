"""The chaos run's waits are bounded by its deadline, whatever the service does (review of issue 19, finding 5):
a ledger that hears the portfolio query and never answers must not hold ``settle`` past its deadline (it took
111 s for a 2 s deadline before: each of its waits had its own 10-60 s timeout, the deadline was checked only
between them)."""

from __future__ import annotations

import time

from bench.chaos.run import Deadline, portfolio, settle
from bus.client import Bus

BOUND_S = 15.0  # far above the deadline (1 s) and far below what the unbounded waits took (70-111 s)


async def test_settle_and_portfolio_end_at_their_deadline_when_the_ledger_never_answers(make_bus, prefix) -> None:
    bus: Bus = await make_bus("silent-ledger")

    async def silent(msg: object) -> None:  # hears the query, never answers
        return None

    await bus.nc.subscribe(f"{prefix}.query.portfolio", cb=silent)
    await bus.nc.flush()
    js = bus.nc.jetstream(timeout=10)
    # an order of the plan still open: settle cannot end by being done
    t = time.monotonic()
    assert await settle(js, bus.nc, prefix, {"cx-open"}, Deadline(time.monotonic() + 1.0)) is False
    assert time.monotonic() - t < BOUND_S
    t = time.monotonic()
    assert await portfolio(bus.nc, prefix, Deadline(time.monotonic() + 1.0)) == {}
    assert time.monotonic() - t < BOUND_S
