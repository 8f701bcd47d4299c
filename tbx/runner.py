"""Wiring: start or join NATS, run actors and the gateway, stop everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from pathlib import Path
from typing import Protocol

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
from config.settings import Settings, hide_credentials
from gateway.app import Gateway
from schemas.subjects import Subjects

# start order: consumers before producers; stop order is the reverse
ACTOR_CLASSES: dict[str, type[Actor]] = {
    cls.name: cls for cls in (MarketDataFeed, PortfolioLedger, FillTracker, OrderRouter, RiskGate, SignalIntake)
}
STOP_BUDGET_S = 3.5  # for the actors and the gateway; the embedded nats-server gets 1 s more


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("second {}: exiting now", sig.name)
            raise SystemExit(130)
        logger.info("{} received: stopping", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


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
    install_stop_signals(stop)
    nats_server: EmbeddedNats | None = None
    url = settings.NATS_URL
    if not url:
        if not embedded_ok:
            logger.error(
                "NATS_URL is not set: `tbx actor` and `tbx gateway` join an existing NATS; "
                "use `tbx run` for everything in one process with an embedded NATS"
            )
            return 2
        nats_server = EmbeddedNats(Path(settings.DATA_DIR) / "nats")
        # started from the main thread on purpose: the server is bound to die with the thread that
        # forked it (PR_SET_PDEATHSIG), and a worker thread may end before we do
        url = nats_server.start()
        logger.info(
            "embedded nats-server pid {} on {} (JetStream in {})",
            nats_server.pid,
            url,
            nats_server.data_dir / "jetstream",
        )
    started: list[Component] = []

    async def start_all() -> None:
        for part in await build(settings, url, names, with_gateway):
            await part.start()
            started.append(part)
        # what start-up made (modules, settings, rebuilt state) lives as long as the process: out of the
        # collector's sight, so a full collection walks only what the traffic makes (p99 pauses)
        gc.collect()
        gc.freeze()
        shown = hide_credentials(url)
        if with_gateway:
            mode = "live" if settings.LIVE_TRADING else "paper"
            logger.info("ready: http://{}:{}/api/health ({} mode, NATS {})", settings.HOST, settings.PORT, mode, shown)
        else:
            logger.info("ready: {} on NATS {}", ", ".join(p.name for p in started), shown)

    starting = asyncio.create_task(start_all(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here
            await stopping
        else:  # stopped while starting (a long replay, say): do not finish starting
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        return 0
    finally:
        stopping.cancel()
        await shutdown(started)
        if nats_server is not None:
            await asyncio.to_thread(nats_server.stop, 1.0)
            logger.info("embedded nats-server stopped")


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
