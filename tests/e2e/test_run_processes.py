"""End to end: `tbx run` with RUN_PROCESSES (issue 22): the actors and the gateway in worker processes supervised
by `tbx run`, each part in exactly one of them; SIGTERM stops everything, a worker killed with -9 is started again
and nothing it had accepted is lost; RUN_PROCESSES=1 is the one process of before.

Real processes throughout: `tbx run` as a subprocess, its embedded nats-server or the session's, REST over HTTP.
Which process runs an actor is read from the actor itself: its leadership lease records the pid that holds it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp
import msgspec
import nats
import pytest

from bus.codec import encode
from bus.embedded import free_port
from schemas.messages import LeaseRecord, now_ms
from schemas.subjects import ACTORS, Subjects
from tests.e2e.procs import Tbx, children_of, pid_alive
from tests.helpers import book, eventually

pytestmark = pytest.mark.e2e

WORKER_LINE = re.compile(r"worker (\d+)/(\d+) pid (\d+): (.+)")
NOISE = re.compile(r"Traceback|did not stop|ERROR")


def workers_started(text: str) -> dict[int, tuple[int, list[str]]]:
    """worker number -> (pid, its parts), from `tbx run`'s `worker K/N pid P: parts` lines (the last per worker)."""
    out: dict[int, tuple[int, list[str]]] = {}
    for m in WORKER_LINE.finditer(text):
        out[int(m.group(1))] = (int(m.group(3)), m.group(4).strip().split(", "))
    return out


async def lease_pids(url: str, prefix: str, roles: tuple[str, ...] = ACTORS) -> dict[str, int]:
    """The pid of the process holding each role's lease (the active instance of that actor)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out = {}
        for role in roles:
            kv = await js.key_value(Subjects(prefix).kv_lease(role))
            entry = await kv.get(role)
            out[role] = msgspec.json.decode(entry.value or b"", type=LeaseRecord).pid
        return out
    finally:
        await nc.close()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as r:
        return r.status, await r.json(content_type=None)


async def post_order(http: aiohttp.ClientSession, base: str, body: dict) -> dict:
    async with http.post(f"{base}/api/orders", json=body) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def healthy(http: aiohttp.ClientSession, base: str, timeout: float = 90) -> None:
    async def check() -> bool:
        status, body = await get_json(http, f"{base}/api/health")
        return status == 200 and body["status"] == "healthy"

    await eventually(check, timeout=timeout, every=0.2, what="GET /api/health healthy")


async def order_in(http: aiohttp.ClientSession, base: str, order_id: str, *statuses: str, timeout: float = 30) -> dict:
    async def check() -> dict | None:
        status, o = await get_json(http, f"{base}/api/orders/{order_id}")
        return o if status == 200 and o["status"] in statuses else None

    return await eventually(check, timeout=timeout, every=0.1, what=f"{order_id} {'/'.join(statuses)}")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


def gone(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]


async def test_two_worker_processes_serve_an_order_and_stop_on_sigterm_leaving_nothing(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"PORT": str(port), "DATA_DIR": str(tmp_path / "data"), "RUN_PROCESSES": "2", "MARKET_DATA_INTERVAL": "100"}
    proc = Tbx(["run"], env, tmp_path / "tbx.log")
    try:
        m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on (nats://\S+) ", 60)
        nats_pid, nats_url = int(m.group(1)), m.group(2)
        await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 120)
        workers = workers_started(proc.text())
        assert sorted(workers) == [1, 2], proc.text()[-3000:]
        pids = [pid for pid, _ in workers.values()]
        assert len(set(pids)) == 2 and proc.pid not in pids
        assert set(children_of(proc.pid)) == {nats_pid, *pids}  # the nats-server and the two workers, nothing else
        for k, (pid, _) in workers.items():
            assert cmdline(pid)[-2:] == ["--worker", f"{k}/2"]
        # every part in exactly one worker; each actor runs in the worker that says it does (its lease's pid)
        listed = [part for _, parts in workers.values() for part in parts]
        assert sorted(listed) == sorted([*ACTORS, "gateway"])
        where = {part: pid for pid, parts in workers.values() for part in parts}
        held = await lease_pids(nats_url, "tbx")
        assert held == {actor: where[actor] for actor in ACTORS}
        assert held["order-router"] != held["risk-gate"]  # the two heaviest parts, on the two cores

        async with aiohttp.ClientSession() as http:
            await healthy(http, base)
            status = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tbx.cli", "status"],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PORT": str(port), "DATA_DIR": str(tmp_path / "data")},
            )
            assert status.returncode == 0, status.stdout + status.stderr
            assert f"NATS_URL={nats_url}" in status.stdout and "6 of 6 actors running" in status.stdout

            placed = await post_order(
                http, base, {"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 0.05}
            )
            order = await order_in(http, base, placed["orderId"], "filled")
            assert order["filledQuantity"] == 0.05 and len(order["fills"]) >= 1

        took = await asyncio.to_thread(proc.terminate, 8.0)
        text = proc.text()
        assert proc.proc.returncode == 0, text[-3000:]
        assert took < 5.0, text[-3000:]
        stop_phase = text[text.index("SIGTERM received") :]
        assert not NOISE.search(stop_phase), stop_phase
        assert "embedded nats-server stopped" in stop_phase and "order-router stopped" in stop_phase
        assert stop_phase.index("order-router stopped") < stop_phase.index("embedded nats-server stopped")
        await eventually(lambda: asyncio.sleep(0, not gone([nats_pid, *pids])), timeout=5, what="no process left")
    finally:
        proc.ensure_stopped()


async def test_a_worker_killed_with_9_is_started_again_and_loses_no_order(nats_url: str, tmp_path: Path) -> None:
    """On the session's NATS (NATS_URL), books of the test's own (MARKET_DATA=none): a limit buy below the market
    is accepted and rests; the worker running the order-router is killed with -9; `tbx run` starts it again, and
    the resting order fills once a book crosses it. Then the service takes new orders, and a kill -9 of `tbx run`
    itself takes every worker with it."""
    prefix = "t" + uuid.uuid4().hex[:10]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "NATS_URL": nats_url, "BUS_PREFIX": prefix, "PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
        "RUN_PROCESSES": "2", "MARKET_DATA": "none", "PAIRS": "BTC_USDT",
    }  # fmt: skip
    ask = ["60000"]  # the book the test publishes now and then: the price of its ask

    async def books(nc: nats.NATS) -> None:
        subject = Subjects(prefix).book("BTC_USDT")
        while True:
            a = Decimal(ask[0])
            await nc.publish(subject, encode(book("BTC_USDT", str(a - 10), str(a), size="5", ts=now_ms())))
            await asyncio.sleep(0.2)

    proc = Tbx(["run"], env, tmp_path / "tbx.log")
    nc = await nats.connect(nats_url)
    feed = asyncio.create_task(books(nc))
    try:
        await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 120)
        workers = workers_started(proc.text())
        held = await lease_pids(nats_url, prefix, ("order-router",))
        victim = next(k for k, (pid, _) in workers.items() if pid == held["order-router"])
        old_pid, _ = workers[victim]
        async with aiohttp.ClientSession() as http:
            await healthy(http, base)
            resting = await post_order(
                http,
                base,
                {"pair": "BTC_USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 59000,
                 "clientOrderId": "rest-1"},
            )  # fmt: skip
            await order_in(http, base, resting["orderId"], "accepted")  # accepted by the venue, resting

            os.kill(old_pid, signal.SIGKILL)
            await asyncio.to_thread(
                proc.wait_for_log, rf"worker {victim}/2 \(pid {old_pid}: .*\) died after .*killed by SIGKILL", 30
            )
            m = await asyncio.to_thread(proc.wait_for_log, rf"worker {victim}/2 running again: pid (\d+)", 30)
            new_pid = int(m.group(1))
            assert new_pid != old_pid and new_pid in children_of(proc.pid) and not pid_alive(old_pid)
            await eventually(
                lambda: _lease_moved(nats_url, prefix, "order-router", new_pid), timeout=90, every=0.3,
                what="the order-router active again, in the fresh worker",
            )  # fmt: skip
            await healthy(http, base)
            still = await order_in(http, base, resting["orderId"], "accepted")
            assert still["filledQuantity"] == 0

            ask[0] = "58990"  # a book crosses the resting buy: it fills, once
            filled = await order_in(http, base, resting["orderId"], "filled")
            assert filled["filledQuantity"] == 0.01 and filled["averagePrice"] == 59000
            assert sum(Decimal(str(f["quantity"])) for f in filled["fills"]) == Decimal("0.01")

            again = await post_order(
                http, base, {"pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 0.02}
            )
            done = await order_in(http, base, again["orderId"], "filled")
            assert done["filledQuantity"] == 0.02
            # the same client order id again is the same order, not a second one
            same = await post_order(
                http,
                base,
                {"pair": "BTC_USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 59000,
                 "clientOrderId": "rest-1"},
            )  # fmt: skip
            assert same["orderId"] == resting["orderId"]

        pids = [new_pid if k == victim else pid for k, (pid, _) in workers.items()]
        assert sorted(children_of(proc.pid)) == sorted(pids) and all(pid_alive(p) for p in pids)
        proc.kill()  # kill -9 `tbx run`: its workers die with it (PR_SET_PDEATHSIG)
        await eventually(lambda: asyncio.sleep(0, not gone(pids)), timeout=5, what="the workers gone with tbx run")
    finally:
        feed.cancel()
        await nc.close()
        proc.ensure_stopped()


async def _lease_moved(url: str, prefix: str, role: str, pid: int) -> bool:
    return (await lease_pids(url, prefix, (role,)))[role] == pid


async def test_run_processes_1_runs_everything_in_one_process(tmp_path: Path) -> None:
    port = free_port()
    env = {"PORT": str(port), "DATA_DIR": str(tmp_path / "data"), "RUN_PROCESSES": "1"}
    proc = Tbx(["run"], env, tmp_path / "tbx.log")
    try:
        m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on (nats://\S+) ", 60)
        await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 120)
        assert children_of(proc.pid) == [int(m.group(1))]  # the nats-server only
        assert "worker" not in proc.text()
        held = await lease_pids(m.group(2), "tbx")
        assert set(held.values()) == {proc.pid}
        took = await asyncio.to_thread(proc.terminate, 8.0)
        assert proc.proc.returncode == 0 and took < 5.0, proc.text()[-3000:]
    finally:
        proc.ensure_stopped()


@pytest.mark.parametrize("value", ["0", "two", "65"])
async def test_a_bad_run_processes_is_a_config_error_naming_it(tmp_path: Path, value: str) -> None:
    proc = Tbx(["run"], {"RUN_PROCESSES": value, "DATA_DIR": str(tmp_path)}, tmp_path / "bad.log")
    rc = await asyncio.to_thread(proc.proc.wait, 30)
    assert rc == 2
    assert proc.text().strip().splitlines() == [
        f"tbx: config error: RUN_PROCESSES={value!r} is not allowed: expected an integer from 1 to 64, or auto "
        "(2 with at least 2 cores, else 1)"
    ]


async def test_a_worker_that_cannot_start_ends_the_run_with_its_status_and_leaves_nothing(tmp_path: Path) -> None:
    """The REST port is another program's: the gateway's worker exits with 1 by itself, as the single process would.
    `tbx run` does not start it again and again: it stops the other worker and its nats-server and exits with 1."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {"PORT": str(port), "DATA_DIR": str(tmp_path / "data"), "RUN_PROCESSES": "2"}
    proc = Tbx(["run"], env, tmp_path / "tbx.log")
    try:
        m = await asyncio.to_thread(proc.wait_for_log, r"embedded nats-server pid (\d+) on", 60)
        await asyncio.to_thread(proc.wait_for_log, r"worker 2/2 pid \d+", 60)
        pids = [int(m.group(1)), *(pid for pid, _ in workers_started(proc.text()).values())]
        rc = await asyncio.to_thread(proc.proc.wait, 120)
        text = proc.text()
        assert rc == 1, text[-3000:]
        assert re.search(r"worker \d/2 \(pid \d+\) exited with 1 by itself: stopping everything", text), text[-3000:]
        assert "running again" not in text
        assert "embedded nats-server stopped" in text
        await eventually(lambda: asyncio.sleep(0, not gone(pids)), timeout=5, what="no process left")
    finally:
        taken.close()
        proc.ensure_stopped()
