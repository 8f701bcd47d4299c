"""Wiring: start or join NATS, run actors and the gateway, stop everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import msgspec
from loguru import logger

from actors.base import Actor
from actors.fill_tracker import FillTracker
from actors.md_feed import MarketDataFeed
from actors.order_router import OrderRouter
from actors.portfolio_ledger import PortfolioLedger
from actors.risk_gate import RiskGate
from actors.signal_intake import SignalIntake
from bus.client import Bus
from bus.embedded import EmbeddedNats
from config.settings import Settings, hide_credentials, without_credentials
from gateway.app import Gateway
from gateway.common import HEALTH
from schemas.subjects import Subjects
from tbx.status import NATS_URL_FILE  # in DATA_DIR, while `tbx run` runs

# start order: consumers before producers; stop order is the reverse
ACTOR_CLASSES: dict[str, type[Actor]] = {
    cls.name: cls for cls in (MarketDataFeed, PortfolioLedger, FillTracker, OrderRouter, RiskGate, SignalIntake)
}
STOP_BUDGET_S = 3.5  # for the actors and the gateway; the embedded nats-server gets 1 s more
SECOND_SIGNAL_GRACE_S = 1.0  # a stop signal again within this time is the same request, not "exit now"
READY_WARN_AFTER_S = 15.0  # not healthy this long after start: say what is missing (and again every 15 s)


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def install_stop_signals(stop: asyncio.Event, on_force: Callable[[], None] | None = None) -> None:
    """SIGINT / SIGTERM set ``stop``. The same signal again within SECOND_SIGNAL_GRACE_S is part of the same
    request (``kill -TERM -<pgid>`` reaching us through a wrapper such as ``uv run`` too, a double tap):
    ignored. One sent after that means "now": ``on_force`` and exit 130 at once, no clean stop."""
    loop = asyncio.get_running_loop()
    first: list[float] = []

    def on_signal(sig: signal.Signals) -> None:
        now = time.monotonic()
        if not first:
            first.append(now)
            logger.info("{} received: stopping", sig.name)
            stop.set()
            return
        if now - first[0] < SECOND_SIGNAL_GRACE_S:
            logger.debug("{} again {:.0f} ms after the first: already stopping", sig.name, (now - first[0]) * 1000)
            return
        logger.warning("second {}: exiting now, without a clean stop", sig.name)
        if on_force is not None:
            with contextlib.suppress(Exception):
                on_force()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(130)  # no unwinding through half-stopped parts (and no traceback)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


def write_url_file(data_dir: str, url: str) -> Path:
    """DATA_DIR/nats.url: the NATS URL of the running service (no credentials), for clients and `tbx status`."""
    path = Path(data_dir) / NATS_URL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{NATS_URL_FILE}.{os.getpid()}.tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)
    return path


def remove_url_file(path: Path, url: str) -> None:
    """Remove the file if it still says ``url`` (not if another run has written its own since)."""
    with contextlib.suppress(OSError):
        if path.read_text().strip() == url:
            path.unlink()


async def wait_until_healthy(gateway: Gateway) -> None:
    """Until /api/health would answer 200 (the gateway's own view of the heartbeats); a warning now and then
    naming what is missing, so a start that never gets healthy says why."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    warn_at = t0 + READY_WARN_AFTER_S
    while True:
        report = gateway.app[HEALTH].report()
        if report.status == "healthy":
            return
        if loop.time() >= warn_at:
            down = ", ".join(f"{n} {a.status}" for n, a in report.actors.items() if a.status != "running")
            logger.warning("not healthy yet after {:.0f} s: {}", loop.time() - t0, down or report.status)
            warn_at += READY_WARN_AFTER_S
        await asyncio.sleep(0.02)


async def connect(settings: Settings, url: str, name: str) -> Bus:
    return await Bus.connect(url, name=name, subjects=Subjects(settings.BUS_PREFIX), replicas=settings.NATS_REPLICAS)


async def build(settings: Settings, url: str, names: list[str], with_gateway: bool) -> list[Component]:
    setup = await connect(settings, url, "setup")
    try:
        await setup.ensure_layout()
    finally:
        await setup.close()
    parts: list[Component] = []
    for name in names:
        if name == "md-feed" and settings.MARKET_DATA == "none":
            continue
        parts.append(ACTOR_CLASSES[name](settings, await connect(settings, url, name)))
    if with_gateway:
        parts.append(Gateway(settings, await connect(settings, url, "gateway")))
    return parts


async def serve(settings: Settings, names: list[str], *, with_gateway: bool, embedded_ok: bool) -> int:
    stop = asyncio.Event()
    nats_server: EmbeddedNats | None = None

    def force() -> None:
        if nats_server is not None:
            nats_server.signal_stop()

    install_stop_signals(stop, force)
    url = settings.NATS_URL
    url_file: Path | None = None
    if embedded_ok:  # `tbx run` owns DATA_DIR: a file left by a run that was killed says nothing true
        with contextlib.suppress(OSError):
            (Path(settings.DATA_DIR) / NATS_URL_FILE).unlink()
    if not url:
        if not embedded_ok:
            logger.error(
                "NATS_URL is not set: `tbx actor` and `tbx gateway` join an existing NATS; "
                "use `tbx run` for everything in one process with an embedded NATS"
            )
            return 2
        nats_server = EmbeddedNats(Path(settings.DATA_DIR) / "nats", port=settings.NATS_PORT)
        # started from the main thread on purpose: the server is bound to die with the thread that
        # forked it (PR_SET_PDEATHSIG), and a worker thread may end before we do
        url = nats_server.start()
        logger.info(
            "embedded nats-server pid {} on {} (JetStream in {})",
            nats_server.pid,
            url,
            nats_server.data_dir / "jetstream",
        )
        if nats_server.fell_back_from is not None:
            logger.warning(
                "PORT {} IS TAKEN by another program: the embedded nats-server listens on port {} instead. "
                "NATS clients must use NATS_URL={} (also in {}; `tbx status` shows it). "
                "Set NATS_PORT to choose the port.",
                nats_server.fell_back_from,
                nats_server.port,
                url,
                Path(settings.DATA_DIR) / NATS_URL_FILE,
            )
        # what runs in this process sees the URL in use (GET /api/status shows it as natsUrl)
        settings = msgspec.structs.replace(settings, NATS_URL=url)
    if embedded_ok:
        try:
            url_file = write_url_file(settings.DATA_DIR, without_credentials(url))
        except OSError as e:  # not worth refusing to trade for: clients can still be told the URL
            logger.warning("cannot write {}: {}", Path(settings.DATA_DIR) / NATS_URL_FILE, e)
    started: list[Component] = []
    died = asyncio.get_running_loop().create_future()  # an actor that cannot go on (its lease lost): stop

    def on_death(name: str, f: asyncio.Future[str]) -> None:
        if not died.done() and not f.cancelled():
            died.set_result(f"{name}: {f.result()}")

    async def start_all() -> None:
        for part in await build(settings, url, names, with_gateway):
            if isinstance(part, Actor):
                part.died.add_done_callback(lambda f, n=part.name: on_death(n, f))  # type: ignore[misc]
            await part.start()
            started.append(part)
        # what start-up made (modules, settings, rebuilt state) lives as long as the process: out of the
        # collector's sight, so a full collection walks only what the traffic makes (p99 pauses)
        gc.collect()
        gc.freeze()
        shown = hide_credentials(url)
        gateway = next((p for p in started if isinstance(p, Gateway)), None)
        if gateway is not None and names:
            await wait_until_healthy(gateway)  # "ready" means GET /api/health answers 200
        if with_gateway:
            mode = "live" if settings.LIVE_TRADING else "paper"
            logger.info("ready: http://{}:{}/api/health ({} mode, NATS {})", settings.HOST, settings.PORT, mode, shown)
        else:
            logger.info("ready: {} on NATS {}", ", ".join(p.name for p in started), shown)

    starting = asyncio.create_task(start_all(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({starting, stopping, died}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and not died.done():
            starting.result()  # a failed start raises here
            await asyncio.wait({stopping, died}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped while starting (a long replay, a standby): do not finish starting
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        if died.done() and not stopping.done():
            # (no supervisor here: whatever runs `tbx actor` starts it again, and it comes back as a standby)
            logger.error("{}: stopping", died.result())
            return 1
        return 0
    finally:
        stopping.cancel()
        await shutdown(started)
        if nats_server is not None:
            await asyncio.to_thread(nats_server.stop, 1.0)
            logger.info("embedded nats-server stopped")
        if url_file is not None:
            remove_url_file(url_file, without_credentials(url))


async def shutdown(parts: list[Component]) -> None:
    """Stop in reverse start order, within the stop budget whatever happens."""
    deadline = asyncio.get_running_loop().time() + STOP_BUDGET_S
    for part in reversed(parts):
        left = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(part.stop(), max(0.2, left))
        except Exception as e:
            logger.warning("{} did not stop cleanly: {}", part.name, str(e) or type(e).__name__)
            with contextlib.suppress(Exception):
                await part.bus.nc.close()  # type: ignore[attr-defined]
