"""/api/health of a partitioned actor (gateway/health.py ``merged``): the partitions' beats as one."""

from __future__ import annotations

from gateway.health import STALE_MS, merged
from schemas.messages import Heartbeat, VenueState

NOW = 1_000_000


def beat(k: int, ts: int = NOW, connected: bool | None = True, **stats: float) -> Heartbeat:
    return Heartbeat(
        actor="order-router", instance=f"i{k}", ts=ts, started_at=0, status="running", stats=dict(stats),
        venues=[VenueState(name="binance", connected=connected)], role="active", partition=k,
    )  # fmt: skip


def test_stats_summed_and_the_success_rate_of_all():
    m = merged(
        [
            beat(0, ordersProcessed=10, ordersFilled=9, ordersRejected=1, successRate=90.0),
            beat(1, ordersProcessed=5, ordersFilled=1, ordersRejected=4, successRate=20.0),
        ],
        NOW,
    )
    assert m.stats["ordersProcessed"] == 15 and m.stats["ordersFilled"] == 10
    assert m.stats["successRate"] == round(100 * 10 / 15, 2)


def test_a_venue_is_disconnected_when_any_partition_says_so():
    m = merged([beat(0, connected=True), beat(1, connected=False)], NOW)
    assert m.venues is not None and m.venues[0].connected is False
    assert merged([beat(0), beat(1)], NOW).venues[0].connected is True  # type: ignore[index]


def test_as_old_as_the_oldest_partition():
    m = merged([beat(0), beat(1, ts=NOW - STALE_MS - 1)], NOW)
    assert m.ts == NOW - STALE_MS - 1  # /api/health reports it stale
