"""README "NATS accounts, TLS and credentials files" states the permissions a deployment's NATS user needs, as a
nats-server ``authorization`` block. That very block (read from the README) configures a real nats-server here;
``tbx run`` and a standby of one actor run against it as that user, trade over REST and over NATS, and the server's
log must show no permission violation: the README's list is enough, and it is the one operators copy."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import nats
import pytest

from bus.client import Bus
from bus.embedded import free_port
from schemas.messages import RiskAlert
from schemas.subjects import Subjects
from tests.e2e.procs import Tbx
from tests.helpers import eventually
from tests.natsauth import nats_server

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
PASSWORD = "perm-test-secret"


def readme_authorization() -> str:
    """The ```conf block of the README's section on NATS accounts (the permissions operators are told to grant)."""
    text = README.read_text()
    start = text.index("### NATS accounts, TLS and credentials files")
    section = text[start : text.index("\n### ", start + 1)]
    blocks = re.findall(r"```conf\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section shows one nats-server configuration block"
    return blocks[0]


async def replay_past_flow_control(url: str) -> None:
    """A replay (an ordered consumer, as every actor's rebuild) of ~10 MB: the server asks the reader for flow control
    on the way (``$JS.FC.>``); without that permission the replay stalls for ever. The small trading above never
    gets there."""
    bus = await Bus.connect(url, name="perm-replay", subjects=Subjects("tbx"))
    try:
        body = b'{"severity":"warning","code":"T","message":"%s","ts":1}' % (b"x" * 2000)
        acks = [await bus.js.publish_async(bus.subjects.risk_events, body) for _ in range(5000)]
        await asyncio.wait_for(asyncio.gather(*acks), 60)
        seen = 0

        async def count(alert: RiskAlert, env: object) -> None:
            nonlocal seen
            seen += 1

        stream = bus.subjects.stream_name("RISK")
        await asyncio.wait_for(
            bus.replay(stream=stream, subject=bus.subjects.risk_events, type_=RiskAlert, handler=count, follow=False),
            60,
        )
        assert seen >= 5000
    finally:
        await bus.close()


def test_the_readme_block_grants_what_it_says() -> None:
    block = readme_authorization()
    assert "user: tbx" in block and "$TBX_NATS_PASSWORD" in block
    assert re.search(r"subscribe:\s*\[", block) and re.search(r"publish:\s*\[", block)


async def test_tbx_runs_and_trades_with_exactly_the_readme_permissions(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TBX_NATS_PASSWORD", PASSWORD)  # (the block reads the password from nats-server's environment)
    with nats_server(tmp_path / "nats", readme_authorization()) as port:
        server_log = tmp_path / "nats" / "nats.log"
        url = f"nats://tbx:{PASSWORD}@127.0.0.1:{port}"
        http_port = free_port()
        env = {
            "NATS_URL": url,
            "PORT": str(http_port),
            "DATA_DIR": str(tmp_path / "data"),
            "MARKET_DATA_INTERVAL": "100",
            "FAILOVER_MS": "1000",
        }
        run = Tbx(["run"], env, tmp_path / "tbx.log")
        standby: Tbx | None = None
        base = f"http://127.0.0.1:{http_port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> dict | None:
                    try:
                        async with http.get(f"{base}/api/health") as r:
                            body = await r.json(content_type=None)
                    except aiohttp.ClientError:
                        return None
                    return body if r.status == 200 else None

                await eventually(healthy, timeout=90, what="healthy with the README's permissions")
                # a second order-router once the first is active: it stands by (reads the lease key, heartbeats)
                standby = Tbx(["actor", "order-router"], env, tmp_path / "standby.log")
                await asyncio.to_thread(standby.wait_for_log, r"standby: order-router is held by", 60)

                order = {
                    "pair": "BTC_USDT",
                    "side": "buy",
                    "type": "market",
                    "quantity": 0.01,
                    "clientOrderId": "perm-1",
                }
                async with http.post(f"{base}/api/orders", json=order) as r:
                    assert r.status == 201, await r.text()
                    placed = await r.json()

                async def filled(order_id: str) -> dict | None:
                    async with http.get(f"{base}/api/orders/{order_id}") as r:
                        body = await r.json(content_type=None)
                    return body if r.status == 200 and body["status"] == "filled" else None

                await eventually(lambda: filled(placed["orderId"]), timeout=30, what="the REST order filled")

                # a signal from an outside client with the same user (a request: the reply is its result)
                nc = await nats.connect(url)
                try:
                    signal = {"pair": "ETH_USDT", "signal": "BUY", "confidence": 0.9, "source": "perm-test",
                              "signalId": "PERM-SIG-1", "quantity": "0.1"}  # fmt: skip
                    reply = await nc.request("tbx.signals.submit", json.dumps(signal).encode(), timeout=30)
                finally:
                    await nc.close()
                result = json.loads(reply.data)
                assert result["status"] == "executed", result

                async with http.get(f"{base}/api/credentials/status") as r:  # the credentials bucket, read
                    assert r.status == 200, await r.text()
                async with http.get(f"{base}/api/portfolio") as r:
                    assert r.status == 200 and any(p["pair"] == "BTC_USDT" for p in (await r.json())["positions"])

            for proc in (standby, run):
                await asyncio.to_thread(proc.terminate, 15.0)
                assert proc.proc.returncode == 0, proc.text()[-3000:]
        finally:
            if standby is not None:
                standby.ensure_stopped()
            run.ensure_stopped()
        await replay_past_flow_control(url)
        violations = [line for line in server_log.read_text(errors="replace").splitlines() if "Violation" in line]
        assert not violations, "\n".join(violations[:20])
        logs = run.text() + (standby.text() if standby is not None else "")
        assert "permissions violation" not in logs.lower(), logs[-3000:]
