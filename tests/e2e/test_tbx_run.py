"""End to end: ``tbx run`` as a subprocess on free ports, REST over real HTTP, a raw NATS signal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal

import aiohttp
import nats
import pytest

from bus.embedded import EmbeddedNats, free_port
from tests.e2e.procs import Tbx, children_of, pid_alive
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def tbx_run(tmp_path):
    port = free_port()
    proc = Tbx(
        ["run"],
        {
            "PORT": str(port),
            "DATA_DIR": str(tmp_path / "data"),
            "MARKET_DATA_INTERVAL": "100",
            "POSITION_UPDATE_INTERVAL": "500",
        },
        tmp_path / "tbx.log",
    )
    yield proc, f"http://127.0.0.1:{port}"
    proc.ensure_stopped()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as r:
        return r.status, await r.json(content_type=None)


async def test_tbx_run_trades_over_http_and_nats_then_stops_with_nothing_left(tbx_run):
    proc, base = tbx_run
    m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on (nats://\S+) ", 60)
    nats_pid, nats_url = int(m.group(1)), m.group(2)
    assert nats_pid in children_of(proc.pid)
    async with aiohttp.ClientSession(json_serialize=None) as http:

        async def healthy():
            status, body = await get_json(http, f"{base}/api/health")
            return body if status == 200 and body["status"] == "healthy" else None

        health = await eventually(healthy, timeout=60, what="healthy")
        assert health["service"] == "trading-bot-execution"
        assert set(health["actors"]) >= {
            "signal-intake",
            "risk-gate",
            "order-router",
            "fill-tracker",
            "portfolio-ledger",
            "md-feed",
        }
        assert health["exchanges"]["paper"]["status"] == "connected"
        assert health["executionEngine"]["status"] == "operational"

        # -- a paper market order over HTTP ------------------------------------------------------------
        body = b'{"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 0.05}'
        async with http.post(f"{base}/api/orders", data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 201, await r.text()
            placed = await r.json()
        assert re.fullmatch(r"ORD_\d{8}_\d{6}", placed["orderId"])
        assert placed["status"] == "submitted" and placed["riskValidation"]["passed"] is True
        assert placed["quantity"] == 0.05 and placed["estimatedCost"] > 0

        async def filled_order():
            _, page = await get_json(http, f"{base}/api/orders?status=filled&limit=50")
            return next((o for o in page["orders"] if o["orderId"] == placed["orderId"]), None)

        order = await eventually(filled_order, what="the order filled in GET /api/orders")
        assert order["filledQuantity"] == 0.05 and order["fills"]
        assert order["fees"] == pytest.approx(order["totalCost"] * 0.001)
        assert {"fillId", "quantity", "price", "timestamp", "fee"} <= set(order["fills"][0])

        async def position():
            _, pf = await get_json(http, f"{base}/api/portfolio")
            return pf if any(p["pair"] == "BTC_USDT" for p in pf["positions"]) else None

        pf = await eventually(position, what="the position in GET /api/portfolio")
        assert set(pf["summary"]) >= {"totalValue", "totalCash", "totalPositions", "unrealizedPnL", "dayPnL"}
        pos = next(p for p in pf["positions"] if p["pair"] == "BTC_USDT")
        assert pos["side"] == "long" and pos["quantity"] == 0.05 and pos["averagePrice"] == order["averagePrice"]
        assert set(pos["riskMetrics"]) == {"positionSize", "leverage", "liquidationPrice"}
        usdt = next(b for b in pf["balances"] if b["currency"] == "USDT")
        assert Decimal(str(usdt["total"])) == Decimal(50000) - Decimal(str(order["totalCost"])) - Decimal(
            str(order["fees"])
        )

        # -- a raw JSON signal from a plain nats-py client ----------------------------------------------
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            await js.publish(
                "tbx.signals.submit",
                b'{"pair": "ETH_USDT", "signal": "BUY", "confidence": 0.9, '
                b'"source": "my_script", "strategy": "demo", "signalId": "E2E-SIG-1", "quantity": "0.5"}',
            )
        finally:
            await nc.close()

        async def signal_fill():
            _, page = await get_json(http, f"{base}/api/orders?pair=ETH_USDT")
            return next(
                (o for o in page["orders"] if o["status"] == "filled" and o.get("signalId") == "E2E-SIG-1"), None
            )

        sig_order = await eventually(signal_fill, what="the signal's fill")
        assert sig_order["side"] == "buy" and sig_order["filledQuantity"] == 0.5

    # -- SIGTERM: everything stops within 5 s and no nats-server is left --------------------------------
    took = await asyncio.to_thread(proc.terminate, 8.0)
    assert proc.proc.returncode == 0, proc.text()[-2000:]
    assert took < 5.0
    await eventually(lambda: asyncio.sleep(0, not pid_alive(nats_pid)), timeout=3, what="nats-server gone")
    assert "embedded nats-server stopped" in proc.text()


async def test_a_wrong_setting_stops_start_up_with_one_line(tmp_path):
    proc = Tbx(["run"], {"MAX_POSITION_SIZE": "lots", "DATA_DIR": str(tmp_path)}, tmp_path / "bad.log")
    rc = await asyncio.to_thread(proc.proc.wait, 30)
    assert rc == 2
    lines = proc.text().strip().splitlines()
    assert lines == ["tbx: config error: MAX_POSITION_SIZE='lots' is not allowed: expected a number > 0 and <= 1"]


async def test_tbx_actor_without_nats_url_refuses_clearly(tmp_path):
    proc = Tbx(["actor", "risk-gate"], {"DATA_DIR": str(tmp_path)}, tmp_path / "actor.log")
    rc = await asyncio.to_thread(proc.proc.wait, 30)
    assert rc == 2
    assert "NATS_URL is not set" in proc.text()


async def test_tbx_actor_with_unreachable_nats_waits_says_so_and_starts_when_nats_appears(tmp_path):
    port = free_port()
    proc = Tbx(["actor", "risk-gate"], {"NATS_URL": f"nats://127.0.0.1:{port}"}, tmp_path / "actor.log")
    server = EmbeddedNats(tmp_path / "nats", port=port)
    try:
        await asyncio.to_thread(
            proc.wait_for_log, rf"cannot reach NATS at nats://127.0.0.1:{port}.*risk-gate waits", 30
        )
        await asyncio.sleep(1.0)  # it keeps waiting (tried again, still alive)
        assert proc.proc.poll() is None, proc.text()
        server.start()  # NATS appears: the actor connects and starts, without being restarted by anyone
        await asyncio.to_thread(proc.wait_for_log, r"ready: risk-gate on NATS", 60)
        assert "NATS answers after" in proc.text()
        took = await asyncio.to_thread(proc.terminate, 8.0)
        assert proc.proc.returncode == 0 and took < 5.0, proc.text()[-2000:]
    finally:
        proc.ensure_stopped()
        server.stop()


async def test_a_stop_signal_while_waiting_for_nats_stops_at_once(tmp_path):
    port = free_port()
    proc = Tbx(["gateway"], {"NATS_URL": f"nats://127.0.0.1:{port}", "PORT": str(free_port())}, tmp_path / "gw.log")
    try:
        await asyncio.to_thread(proc.wait_for_log, r"gateway waits for it", 30)
        took = await asyncio.to_thread(proc.terminate, 8.0)
        assert proc.proc.returncode == 0 and took < 2.0, proc.text()[-2000:]
    finally:
        proc.ensure_stopped()


async def test_ctrl_c_stops_everything_within_5_seconds(tmp_path):
    port = free_port()
    proc = Tbx(["run"], {"PORT": str(port), "DATA_DIR": str(tmp_path / "data")}, tmp_path / "tbx.log")
    try:
        m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on", 60)
        await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 60)
        nats_pid = int(m.group(1))
        t0 = asyncio.get_running_loop().time()
        proc.proc.send_signal(signal.SIGINT)
        rc = await asyncio.to_thread(proc.proc.wait, 8)
        assert rc == 0 and asyncio.get_running_loop().time() - t0 < 5.0
        assert not pid_alive(nats_pid)
    finally:
        proc.ensure_stopped()


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "tbx.cli", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for word in ("run", "actor", "gateway", "config", "status"):
        assert word in out.stdout


def test_config_prints_the_effective_settings_without_secrets():
    env = {**os.environ, "API_TOKEN": "top-secret", "PORT": "3999"}
    env.pop("NATS_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "tbx.cli", "config"], capture_output=True, text=True, timeout=30, env=env
    )
    assert out.returncode == 0
    assert '"PORT": 3999' in out.stdout and "top-secret" not in out.stdout and '"API_TOKEN": "***"' in out.stdout


async def test_sigterm_while_starting_stops_at_once(tmp_path):
    port = free_port()
    proc = Tbx(["run"], {"PORT": str(port), "DATA_DIR": str(tmp_path / "data")}, tmp_path / "tbx.log")
    try:
        m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on", 60)
        took = await asyncio.to_thread(proc.terminate, 8.0)
        assert proc.proc.returncode == 0 and took < 5.0
        assert not pid_alive(int(m.group(1)))
    finally:
        proc.ensure_stopped()


async def test_live_trading_with_keys_the_venue_refuses_stops_start_up_with_one_line(tmp_path):
    from tests.exchanges.binance import BinanceTestExchange

    exchange = BinanceTestExchange(api_key="the-right-key-0123456789", secret="the-right-secret-0123456789")
    await exchange.start()
    try:
        env = {
            "DATA_DIR": str(tmp_path), "PORT": str(free_port()), "PAPER_TRADING": "false", "LIVE_TRADING": "true",
            "EXCHANGE": "binance", "EXCHANGE_API_KEY": "a-wrong-key-0123456789", "EXCHANGE_API_SECRET": "wrong-secret",
            "EXCHANGE_API_URL": exchange.base_url, "API_TOKEN": "live-token", "PAIRS": "BTC_USDT",
        }  # fmt: skip
        proc = Tbx(["run"], env, tmp_path / "keys.log")
        rc = await asyncio.to_thread(proc.proc.wait, 60)
        assert rc == 2, proc.text()[-2000:]
        refusals = [line for line in proc.text().splitlines() if line.startswith("tbx: cannot start:")]
        assert refusals == [refusals[0]] and "keys refused by binance" in refusals[0], proc.text()[-2000:]
        assert "wrong-secret" not in proc.text() and "a-wrong-key-0123456789" not in proc.text()
    finally:
        await exchange.stop()
