"""`tbx run` on a real 3-node JetStream cluster (NATS_REPLICAS=3): fresh starts become healthy and trade, and
killing the node that leads the HOPS stream while orders flow loses, doubles and fails (502) no order.

One cluster for the module (bus/cluster.py: three nats-server processes on 127.0.0.1, stopped by pid); each
start has a BUS_PREFIX of its own, so its streams and buckets are made fresh, replicated three times.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import pytest

from bus.cluster import NatsCluster
from bus.embedded import free_port
from tests.e2e.procs import Tbx
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

STARTS = 3
FLOW_AFTER_KILL_S = 8.0  # orders keep coming this long after the kill (a new leader takes a few seconds)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path_factory.mktemp("cluster"), 3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def start(cluster: NatsCluster, tmp: Path, name: str, **extra: str) -> tuple[Tbx, str, str]:
    port, prefix = free_port(), "c" + uuid.uuid4().hex[:8]
    env = {
        "NATS_URL": cluster.url, "NATS_REPLICAS": "3", "BUS_PREFIX": prefix, "PORT": str(port),
        "DATA_DIR": str(tmp / name), "MARKET_DATA_INTERVAL": "100", "PAIRS": "BTC_USDT,ETH_USDT",
    }  # fmt: skip
    return Tbx(["run"], env | extra, tmp / f"{name}.log"), f"http://127.0.0.1:{port}", prefix


async def healthy(http: aiohttp.ClientSession, base: str, proc: Tbx, timeout: float = 120) -> None:
    async def ok() -> bool:
        assert proc.proc.poll() is None, proc.text()[-3000:]
        async with http.get(f"{base}/api/health") as r:
            return r.status == 200

    await eventually(ok, timeout=timeout, every=0.2, what=f"GET /api/health 200 ({proc.log.name})")


async def order(http: aiohttp.ClientSession, base: str, coid: str) -> tuple[int, dict]:
    body = {"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 0.0001, "clientOrderId": coid}
    async with http.post(f"{base}/api/orders", json=body) as r:
        return r.status, await r.json(content_type=None)


async def filled(http: aiohttp.ClientSession, base: str, order_id: str) -> bool:
    async with http.get(f"{base}/api/orders?status=filled&limit=200") as r:
        page = await r.json(content_type=None)
    return any(o["orderId"] == order_id for o in page.get("orders", []))


async def test_fresh_starts_on_a_three_node_cluster_become_healthy_and_trade(cluster, tmp_path) -> None:
    """The issue: on a fresh cluster 6 of 7 starts lost parts with `cannot start: nats: timeout` (stream info,
    KV get right after making replicated streams). Several starts at once, each making its streams fresh."""
    runs = [start(cluster, tmp_path, f"run{i}") for i in range(STARTS)]
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(healthy(http, base, proc) for proc, base, _ in runs))
            for proc, base, _ in runs:
                status, placed = await order(http, base, f"fresh-{uuid.uuid4().hex[:8]}")
                assert status == 201, (placed, proc.text()[-3000:])
                oid = placed["orderId"]
                await eventually(lambda b=base, o=oid: filled(http, b, o), timeout=30, what="the order filled")
        for proc, _, _ in runs:
            assert "Traceback" not in proc.text(), proc.text()[-3000:]
            took = await asyncio.to_thread(proc.terminate, 10.0)
            assert proc.proc.returncode == 0 and took < 6.0, proc.text()[-2000:]
    finally:
        for proc, _, _ in runs:
            proc.ensure_stopped()


async def test_killing_the_hops_stream_leader_while_orders_flow_fails_and_doubles_no_order(cluster, tmp_path) -> None:
    proc, base, prefix = start(cluster, tmp_path, "leader", MAX_ORDERS_PER_SECOND="10000")
    seen: Counter[int] = Counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            await healthy(http, base, proc)
            nc = await nats.connect(servers=cluster.url.split(","))
            try:
                info = await nc.jetstream(timeout=5).stream_info(f"{prefix.upper()}_HOPS")
            finally:
                await nc.close()
            assert info.cluster is not None and info.cluster.leader
            leader = next(i for i, n in enumerate(cluster.servers) if n.name == info.cluster.leader)

            async def place(coid: str) -> dict:
                """One order, retried with its clientOrderId while the answer says "not now" (503, 504)."""
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 90
                while True:
                    try:
                        status, body = await order(http, base, coid)
                    except (aiohttp.ClientError, TimeoutError):
                        status, body = 0, {}
                    seen[status] += 1
                    if status == 201:
                        return body
                    assert status in (0, 503, 504), (status, body)  # never a 502, a 500 or a denial
                    assert loop.time() < deadline, f"{coid} not placed after 90 s (last {status} {body})"
                    await asyncio.sleep(0.2)

            killed_at: list[float] = []

            async def flow(lane: int) -> list[dict]:
                """Orders one after the other until FLOW_AFTER_KILL_S after the kill."""
                out: list[dict] = []
                loop = asyncio.get_running_loop()
                while not killed_at or loop.time() < killed_at[0] + FLOW_AFTER_KILL_S:
                    out.append(await place(f"lk-{lane}-{len(out)}"))
                    done.append(out[-1])
                    await asyncio.sleep(0.05)
                return out

            done: list[dict] = []  # placed already: a client retrying them must get the same order again

            async def repeat(lane: int) -> int:
                """Retries of orders placed before (as a client whose answer was lost): the same order, or "not
                now" - never a 502, never a second order."""
                loop, n = asyncio.get_running_loop(), lane
                while not killed_at or loop.time() < killed_at[0] + FLOW_AFTER_KILL_S:
                    if done:
                        first = done[n % len(done)]
                        again = await place(first["clientOrderId"])
                        assert again["orderId"] == first["orderId"], (again, first)
                        n += 1
                    await asyncio.sleep(0.02)
                return n - lane

            async def lanes() -> list[list[dict]]:
                return await asyncio.gather(*(flow(lane) for lane in range(3)))

            async def repeats() -> int:
                return sum(await asyncio.gather(*(repeat(lane) for lane in range(4))))

            flows = asyncio.gather(lanes(), repeats())
            await asyncio.sleep(1.0)  # orders flowing
            await asyncio.to_thread(cluster.kill, leader)  # kill -9 the node that leads the HOPS stream
            killed_at.append(asyncio.get_running_loop().time())
            placed_by_lane, repeated = await flows
            placed = [o for lane in placed_by_lane for o in lane]
            assert repeated > 10, repeated
            await asyncio.to_thread(cluster.restart, leader)
            n = len(placed)
            assert 20 <= n < 500, n
            # every order once: as many orders as client ids, nothing doubled
            async with http.get(f"{base}/api/orders?limit=500") as r:
                page = await r.json(content_type=None)
            by_client = Counter(o["clientOrderId"] for o in page["orders"] if o["clientOrderId"].startswith("lk-"))
            assert len(by_client) == n and set(by_client.values()) == {1}, by_client
            assert len({o["orderId"] for o in placed}) == n
        assert seen[502] == 0 and seen[500] == 0, seen
        took = await asyncio.to_thread(proc.terminate, 10.0)
        assert proc.proc.returncode == 0, proc.text()[-2000:]
        assert took < 8.0
    finally:
        proc.ensure_stopped()
        if not cluster.servers[0].alive or not all(n.alive for n in cluster.servers):
            for i, n in enumerate(cluster.servers):
                if not n.alive:
                    cluster.restart(i)
