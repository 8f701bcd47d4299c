"""A new user's first hour, over real processes: where is NATS (NATS_PORT, DATA_DIR/nats.url, natsUrl,
``tbx status``), "ready" only when healthy, ``.env``, and a clean stop on a signal to the process group."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bus.embedded import DEFAULT_PORT, free_port, port_is_free
from tests.e2e.procs import Tbx, children_of, pid_alive
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def listening(port: int) -> Iterator[socket.socket | None]:
    """Another program listening on ``port`` (this test's socket, or whoever holds it already)."""
    if not port_is_free("127.0.0.1", port):
        yield None
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as port_is_free: TIME_WAIT does not count
    sock.bind(("127.0.0.1", port))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def tbx_status(env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PORT", "TBX_CONFIG")} | env
    return subprocess.run(
        [sys.executable, "-m", "tbx.cli", "status"], capture_output=True, text=True, timeout=60, env=full, cwd=cwd
    )


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as r:
        return r.status, await r.json(content_type=None)


async def test_4222_taken_a_free_port_is_used_said_loudly_shown_everywhere_and_ready_means_healthy(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    env = {"PORT": str(port), "DATA_DIR": str(data)}
    with listening(DEFAULT_PORT):
        proc = Tbx(["run"], env, tmp_path / "tbx.log")
        try:
            m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on (nats://\S+) ", 60)
            url = m.group(2)
            assert not url.endswith(f":{DEFAULT_PORT}")
            nats_port = int(url.rsplit(":", 1)[1])
            warning = await asyncio.to_thread(proc.wait_for_log, r"WARNING.*PORT 4222 IS TAKEN.*", 10)
            assert f"listens on port {nats_port} instead" in warning.group(0)
            assert f"NATS_URL={url} " in warning.group(0) and "NATS_PORT" in warning.group(0)

            # "ready" is logged when /api/health answers 200, not before
            await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 60)
            async with aiohttp.ClientSession() as http:
                status, health = await get(http, f"http://127.0.0.1:{port}/api/health")
                assert status == 200 and health["status"] == "healthy", health
                status, body = await get(http, f"http://127.0.0.1:{port}/api/status")
            assert status == 200 and body["natsUrl"] == url
            assert (data / "nats.url").read_text() == url + "\n"

            out = await asyncio.to_thread(tbx_status, env)
            assert out.returncode == 0, out.stdout + out.stderr
            assert f"NATS_URL={url}" in out.stdout
            assert f"http://127.0.0.1:{port}/api/health -> HTTP 200 healthy" in out.stdout
        finally:
            took = await asyncio.to_thread(proc.terminate, 8.0)
    assert proc.proc.returncode == 0 and took < 5.0
    assert not (data / "nats.url").exists()  # removed at stop
    out = await asyncio.to_thread(tbx_status, env)
    assert out.returncode == 3
    assert "not running" in out.stdout and "NATS_URL unknown" in out.stdout


async def test_nats_port_taken_refuses_to_start_with_one_config_line(tmp_path):
    port = free_port()
    with listening(port):
        proc = Tbx(["run"], {"NATS_PORT": str(port), "DATA_DIR": str(tmp_path / "data")}, tmp_path / "tbx.log")
        rc = await asyncio.to_thread(proc.proc.wait, 30)
    assert rc == 2
    assert proc.text().strip().splitlines() == [
        f"tbx: config error: NATS_PORT='{port}' is not allowed: the port is already in use on 127.0.0.1 "
        "(another nats-server or program listens there); stop it, choose another NATS_PORT, or unset NATS_PORT "
        "to take a free port"
    ]
    assert not (tmp_path / "data" / "nats.url").exists()


async def test_nats_port_free_is_the_port_and_a_stale_url_file_is_replaced(tmp_path):
    port, nats_port = free_port(), free_port()
    data = tmp_path / "data"
    data.mkdir()
    (data / "nats.url").write_text("nats://127.0.0.1:1\n")  # left by a run that was killed
    env = {"PORT": str(port), "DATA_DIR": str(data), "NATS_PORT": str(nats_port)}
    stale = await asyncio.to_thread(tbx_status, env)
    assert stale.returncode == 3 and "did not stop cleanly" in stale.stdout
    proc = Tbx(["run"], env, tmp_path / "tbx.log")
    try:
        m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid \d+ on (nats://\S+) ", 60)
        assert m.group(1) == f"nats://127.0.0.1:{nats_port}"
        assert (data / "nats.url").read_text() == f"nats://127.0.0.1:{nats_port}\n"
        await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 60)
        assert "IS TAKEN" not in proc.text()
    finally:
        await asyncio.to_thread(proc.terminate, 8.0)
    assert proc.proc.returncode == 0


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text(
        "# my settings\nPORT=3999\nMAX_POSITION_SIZE=0.1\nNATS_PORT=4333\nAPI_TOKEN=s3cret\nNAST_URL=x\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PORT", "PORT", "MAX_POSITION_SIZE")}
    env["MAX_POSITION_SIZE"] = "0.2"  # the environment wins over the file
    out = subprocess.run(
        [sys.executable, "-m", "tbx.cli", "config"], capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["PORT"] == 3999 and shown["NATS_PORT"] == 4333
    assert shown["MAX_POSITION_SIZE"] == "0.2"
    assert shown["API_TOKEN"] == "***"


def test_a_wrong_value_in_dotenv_stops_start_up_with_one_line(tmp_path):
    (tmp_path / ".env").write_text("NATS_PORT=4222x\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PORT")}
    out = subprocess.run(
        [sys.executable, "-m", "tbx.cli", "run"], capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "tbx: config error: NATS_PORT='4222x' is not allowed: expected an integer from 1 to 65535"
    ]


STOP_NOISE = re.compile(r"Traceback|second SIG|nats error|disconnected|did not stop cleanly|ERROR")


async def _started(tmp_path: Path, name: str) -> tuple[Tbx, int]:
    proc = Tbx(
        ["run"],
        {"PORT": str(free_port()), "DATA_DIR": str(tmp_path / name)},
        tmp_path / f"{name}.log",
        new_session=True,
    )
    m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on", 60)
    await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 60)
    return proc, int(m.group(1))


@pytest.mark.parametrize("again_after", [None, 0.0, 0.05, 0.3])
async def test_sigterm_to_the_process_group_stops_cleanly(tmp_path, again_after):
    """``kill -TERM -<pgid>``, alone or followed by the same signal again soon (a wrapper such as ``uv run``
    forwards it, a double tap): the actors stop while NATS is up, then NATS; no traceback, no 'second SIGTERM'."""
    proc, nats_pid = await _started(tmp_path, "g")
    try:
        assert nats_pid in children_of(proc.pid)
        assert os.getpgid(nats_pid) != os.getpgid(proc.pid)  # a group signal reaches tbx only
        os.killpg(proc.pid, signal.SIGTERM)
        if again_after is not None:
            await asyncio.sleep(again_after)
            os.kill(proc.pid, signal.SIGTERM)
        rc = await asyncio.to_thread(proc.proc.wait, 10)
    finally:
        proc.ensure_stopped()
    text = proc.text()
    stop_phase = text[text.index("SIGTERM received") :]
    assert rc == 0, stop_phase
    assert not STOP_NOISE.search(stop_phase), stop_phase
    assert "portfolio-ledger stopped" in stop_phase and "embedded nats-server stopped" in stop_phase
    await eventually(lambda: asyncio.sleep(0, not pid_alive(nats_pid)), timeout=5, what="nats-server gone")


SLOW_STOP = """
import asyncio
from tbx.logs import setup_logging
from tbx.runner import install_stop_signals

async def main() -> None:
    setup_logging("DEBUG")
    stop = asyncio.Event()
    install_stop_signals(stop, lambda: print("forced", flush=True))
    print("armed", flush=True)
    await stop.wait()
    print("stopping slowly", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_second_signal_after_a_while_exits_at_once_without_a_traceback(tmp_path):
    script = tmp_path / "slow_stop.py"
    script.write_text(SLOW_STOP)
    log = tmp_path / "slow.log"
    proc = Tbx([], {}, log, command=[sys.executable, str(script)], cwd=ROOT)
    try:
        await asyncio.to_thread(proc.wait_for_log, "armed", 30)
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait_for_log, "stopping slowly", 30)
        proc.proc.send_signal(signal.SIGTERM)  # the same request: ignored
        await asyncio.to_thread(proc.wait_for_log, "SIGTERM again", 30)
        assert proc.proc.poll() is None
        await asyncio.sleep(1.2)  # past the grace: the user means "now"
        proc.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.proc.wait, 10)
    finally:
        proc.ensure_stopped()
    text = proc.text()
    assert rc == 130, text
    assert text.count("second SIGTERM: exiting now") == 1 and "forced" in text
    assert "Traceback" not in text
