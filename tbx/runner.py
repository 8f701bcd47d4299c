"""Wiring: start or join NATS, run actors and the gateway, stop everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors
from loguru import logger

from actors.base import Actor
from bus.auth import NatsAuth
from bus.client import Bus
from bus.embedded import EmbeddedNats
from config.settings import ConfigError, Settings, hide_credentials, without_credentials
from schemas.subjects import PARTITIONED, Subjects
from tbx.status import NATS_URL_FILE  # in DATA_DIR, while `tbx run` runs
from tbx.supervisor import STOPPING_DISCARD_S, Part, Stopped, Supervisor, connect_until, retry_transient

if TYPE_CHECKING:
    from gateway.app import Gateway

# start order: consumers before producers; stop order is the reverse. (module, class) of each actor
ACTOR_MODULES: dict[str, tuple[str, str]] = {
    "md-feed": ("actors.md_feed", "MarketDataFeed"),
    "portfolio-ledger": ("actors.portfolio_ledger", "PortfolioLedger"),
    "fill-tracker": ("actors.fill_tracker", "FillTracker"),
    "order-router": ("actors.order_router", "OrderRouter"),
    "risk-gate": ("actors.risk_gate", "RiskGate"),
    "signal-intake": ("actors.signal_intake", "SignalIntake"),
}


class _ActorClasses(Mapping[str, type[Actor]]):
    """Actor name -> class, in start order. A class's module is imported when the class is first asked for: a
    process that runs no order-router (a worker of `tbx run`, the parent of the workers) never imports ccxt
    (seconds of start-up and ~70 MB)."""

    def __getitem__(self, name: str) -> type[Actor]:
        module, cls = ACTOR_MODULES[name]
        out: type[Actor] = getattr(importlib.import_module(module), cls)
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(ACTOR_MODULES)

    def __len__(self) -> int:
        return len(ACTOR_MODULES)


ACTOR_CLASSES: Mapping[str, type[Actor]] = _ActorClasses()
STOP_BUDGET_S = 3.5  # for the actors and the gateway; the embedded nats-server gets 1 s more
SECOND_SIGNAL_GRACE_S = 1.0  # a stop signal again within this time is the same request, not "exit now"
READY_WARN_AFTER_S = 15.0  # not healthy this long after start: say what is missing (and again every 15 s)


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


def ignore_stop_signals() -> None:
    """The stop is over (only the exit is left): a SIGINT / SIGTERM from now on is ignored. Without this, the loop
    closing restores the default action, and the same signal again (within the grace, as a wrapper forwarding it
    sends it) would kill the process while Python shuts down: exit -15 after a clean stop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


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


async def wait_until_healthy(gateway: Callable[[], Gateway | None]) -> None:
    """Until /api/health would answer 200 (the gateway's own view of the heartbeats); a warning now and then
    naming what is missing, so a start that never gets healthy says why. ``gateway()``: the instance that
    runs now (its supervisor may have replaced it)."""
    from gateway.common import HEALTH

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    warn_at = t0 + READY_WARN_AFTER_S
    while True:
        gw = gateway()
        report = gw.app[HEALTH].report() if gw is not None else None
        if report is not None and report.status == "healthy":
            return
        if loop.time() >= warn_at:
            if report is None:
                down = "the gateway is not running"
            else:
                down = ", ".join(f"{n} {a.status}" for n, a in report.actors.items() if a.status != "running")
                down = down or report.status
            logger.warning("not healthy yet after {:.0f} s: {}", loop.time() - t0, down)
            warn_at += READY_WARN_AFTER_S
        await asyncio.sleep(0.02)


def nats_auth(settings: Settings) -> NatsAuth:
    return NatsAuth(
        creds=settings.NATS_CREDS,
        nkey_seed=settings.NATS_NKEY_SEED,
        tls_ca=settings.NATS_TLS_CA,
        tls_cert=settings.NATS_TLS_CERT,
        tls_key=settings.NATS_TLS_KEY,
    )


async def connect(settings: Settings, url: str, name: str, auth: NatsAuth | None = None) -> Bus:
    return await Bus.connect(
        url, name=name, subjects=Subjects(settings.BUS_PREFIX), replicas=settings.NATS_REPLICAS, auth=auth
    )


PARTITIONS_KEY = "partitions"  # in the STATE bucket: the PARTITIONS every process of the deployment runs with
PARTITIONS_RACE_TRIES = 50  # agree_on_partitions: reads of a record another process is writing at the same moment
PARTITIONS_RACE_PAUSE_S = 0.1


async def agree_on_partitions(bus: Bus, partitions: int) -> None:
    """Every process of a deployment (BUS_PREFIX) must run with the same PARTITIONS: the risk-gate and the gateway
    route by it, each partitioned actor serves by it. The first start records it in the STATE bucket (KV create);
    a start with another number is refused with a ConfigError naming both (a gate with 1 among routers of 2 would
    store approvals nobody reads, a gateway with 1 would answer 503, an emergency stop would cancel nothing)."""
    kv = await bus.kv(bus.subjects.kv_state)
    mine = str(partitions).encode()
    entry = None
    for _ in range(PARTITIONS_RACE_TRIES):
        try:
            await kv.create(PARTITIONS_KEY, mine)
            return
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        except nats.js.errors.KeyNotFoundError:
            pass  # (nats-py's create reads the key it was refused on: another process's create not readable yet)
        try:
            entry = await kv.get(PARTITIONS_KEY)
            break
        except nats.js.errors.KeyNotFoundError:
            # processes starting together on a cluster: this create was refused against another's still in flight,
            # which is not readable yet - look again in a moment
            await asyncio.sleep(PARTITIONS_RACE_PAUSE_S)
    if entry is None:
        raise TimeoutError(f"the recorded PARTITIONS ({bus.subjects.kv_state}, key {PARTITIONS_KEY}) not readable")
    recorded = (entry.value or b"").decode(errors="replace")
    if entry.value != mine:
        raise ConfigError(
            f"PARTITIONS={partitions} is not allowed: this deployment (BUS_PREFIX={bus.subjects.prefix}) runs with "
            f"PARTITIONS={recorded} (recorded in the KV bucket {bus.subjects.kv_state}, key {PARTITIONS_KEY}); set "
            f"PARTITIONS={recorded}, or change it for every process after a drain (README: Partitions, changing "
            "PARTITIONS)"
        )


async def build(
    settings: Settings, url: str, names: list[str], with_gateway: bool, auth: NatsAuth | None = None
) -> list[Part]:
    setup = await connect(settings, url, "setup", auth)
    try:
        await setup.ensure_layout()
        await agree_on_partitions(setup, settings.PARTITIONS)
    finally:
        await setup.close()
    parts: list[Part] = []
    for name in names:
        if name == "md-feed" and settings.MARKET_DATA == "none":
            continue
        cls = ACTOR_CLASSES[name]
        for mine in instances_of(cls, settings):  # a partitioned actor: one instance per partition served here
            parts.append(cls(mine, await connect(mine, url, name, auth)))
    if with_gateway:
        from gateway.app import Gateway

        parts.append(Gateway(settings, await connect(settings, url, "gateway", auth)))
    return parts


async def prepare_layout(
    settings: Settings, url: str, stop: asyncio.Event, what: str, auth: NatsAuth | None = None
) -> None:
    """Every stream and bucket, each with a leader (ensure_layout): NATS waited for, transient errors retried.
    ``what``: the parts that wait for it (named in the log)."""

    async def once() -> None:
        setup = await connect_until(lambda: connect(settings, url, "setup", auth), what, stop)
        try:
            await setup.ensure_layout()
            await agree_on_partitions(setup, settings.PARTITIONS)  # a mismatch: a config error (exit 2)
        finally:
            await setup.close()

    t0 = time.perf_counter()
    await retry_transient(once, "the streams and buckets (ensure_layout)", stop)
    took = (time.perf_counter() - t0) * 1000
    logger.info("streams and buckets ready in {:.0f} ms (NATS_REPLICAS={})", took, settings.NATS_REPLICAS)


def parts_of(settings: Settings, names: list[str], with_gateway: bool) -> list[tuple[str, str, Settings]]:
    """(label, kind, its settings) of each part a process running ``names`` (and the gateway) runs, in start
    order: a partitioned actor run for every partition is one part per partition (``order-router.p1``). Nothing
    is imported: the parent of `tbx run`'s worker processes splits these among them (domain/process_groups.py)."""
    out: list[tuple[str, str, Settings]] = []
    for name in names:
        if name == "md-feed" and settings.MARKET_DATA == "none":
            continue
        for mine in _instances(name in PARTITIONED, settings):  # one instance per partition served here
            label = name if mine.PARTITION is None or mine is settings else f"{name}.p{mine.PARTITION}"
            out.append((label, name, mine))
    if with_gateway:
        out.append(("gateway", "gateway", settings))
    return out


def supervisors(
    settings: Settings,
    url: str,
    names: list[str],
    with_gateway: bool,
    stop: asyncio.Event,
    auth: NatsAuth | None = None,
    only: Collection[str] | None = None,
) -> list[Supervisor]:
    """One supervisor per part, in start order; ``only``: just the parts of these labels (a worker's share)."""

    def of(name: str, make: Callable[[Bus], Part], own: Settings = settings) -> Supervisor:
        return Supervisor(name, lambda: connect(own, url, name, auth), make, stop)

    out: list[Supervisor] = []
    for label, kind, mine in parts_of(settings, names, with_gateway):
        if only is not None and label not in only:
            continue
        if kind == "gateway":
            from gateway.app import Gateway

            out.append(of(label, lambda bus: Gateway(settings, bus)))
        else:
            cls = ACTOR_CLASSES[kind]
            out.append(of(label, lambda bus, cls=cls, mine=mine: cls(mine, bus), mine))  # type: ignore[misc]
    return out


def instances_of(cls: type[Actor], settings: Settings) -> list[Settings]:
    """The settings of each instance of ``cls`` this process runs: one, except for a partitioned actor with
    PARTITIONS > 1 and PARTITION unset (`tbx run`): one per partition, each with its PARTITION."""
    return _instances(cls.partitioned, settings)


def _instances(partitioned: bool, settings: Settings) -> list[Settings]:
    if not partitioned or settings.PARTITIONS <= 1 or settings.PARTITION is not None:
        return [settings]
    return [msgspec.structs.replace(settings, PARTITION=k) for k in range(settings.PARTITIONS)]


def start_embedded(settings: Settings) -> EmbeddedNats:
    """The embedded nats-server of `tbx run` (NATS_URL unset) on NATS_PORT, started and logged. Call it from the
    main thread: the server is bound to die with the thread that forked it (PR_SET_PDEATHSIG), and a worker
    thread may end before we do."""
    nats_server = EmbeddedNats(Path(settings.DATA_DIR) / "nats", port=settings.NATS_PORT)
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
    return nats_server


def forget_url_file(settings: Settings) -> None:
    """`tbx run` owns DATA_DIR: a nats.url left by a run that was killed says nothing true."""
    with contextlib.suppress(OSError):
        (Path(settings.DATA_DIR) / NATS_URL_FILE).unlink()


def url_file_for(settings: Settings, url: str) -> Path | None:
    """Write DATA_DIR/nats.url (`tbx run`); None (and a warning) when it cannot be written."""
    try:
        return write_url_file(settings.DATA_DIR, without_credentials(url))
    except OSError as e:  # not worth refusing to trade for: clients can still be told the URL
        logger.warning("cannot write {}: {}", Path(settings.DATA_DIR) / NATS_URL_FILE, e)
        return None


async def serve(
    settings: Settings,
    names: list[str],
    *,
    with_gateway: bool,
    embedded_ok: bool,
    only: Collection[str] | None = None,
    worker_of_embedded: bool = False,
) -> int:
    """Run ``names`` (and the gateway) until a stop signal. ``only``: just these parts (labels of ``parts_of``), a
    worker's share of `tbx run` (tbx/workers.py); ``worker_of_embedded``: such a worker on the nats-server its
    parent started (settings.NATS_URL, asking for no credentials). A worker neither touches DATA_DIR/nats.url
    nor makes the streams and buckets: its parent did both."""
    stop = asyncio.Event()
    nats_server: EmbeddedNats | None = None

    def force() -> None:
        if nats_server is not None:
            nats_server.signal_stop()

    install_stop_signals(stop, force)
    url = settings.NATS_URL
    auth = nats_auth(settings) if url and not worker_of_embedded else None  # the embedded server asks for nothing
    url_file: Path | None = None
    if embedded_ok:
        forget_url_file(settings)
    if not url:
        if not embedded_ok:
            logger.error(
                "NATS_URL is not set: `tbx actor` and `tbx gateway` join an existing NATS; "
                "use `tbx run` for everything in one process with an embedded NATS"
            )
            return 2
        nats_server = start_embedded(settings)
        url = nats_server.url
        # what runs in this process sees the URL in use (GET /api/status shows it as natsUrl)
        settings = msgspec.structs.replace(settings, NATS_URL=url)
    if embedded_ok:
        url_file = url_file_for(settings, url)
    sups = supervisors(settings, url, names, with_gateway, stop, auth, only)
    tasks: list[asyncio.Task[None]] = []
    fatal: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def watch(task: asyncio.Task[None]) -> None:  # a supervisor ends with an error only when it is fatal
        if not task.cancelled() and task.exception() is not None and not fatal.done():
            fatal.set_exception(task.exception())  # type: ignore[arg-type]

    async def start_all() -> None:
        if only is None:
            await prepare_layout(settings, url, stop, ", ".join(s.name for s in sups) or "tbx", auth)
        for sup in sups:  # in order (consumers before producers): each after the previous one's first start
            task = asyncio.create_task(sup.run(), name=f"supervise {sup.name}")
            task.add_done_callback(watch)
            tasks.append(task)
            await sup.first_try.wait()
        # what start-up made (modules, settings, rebuilt state) lives as long as the process: out of the
        # collector's sight, so a full collection walks only what the traffic makes (p99 pauses)
        gc.collect()
        gc.freeze()
        shown = hide_credentials(url)
        gateway = next((s for s in sups if s.name == "gateway"), None)
        if gateway is not None and names:
            await wait_until_healthy(lambda: gateway.part)  # type: ignore[union-attr,return-value]
        if with_gateway:
            mode = "live" if settings.LIVE_TRADING else "paper"
            logger.info("ready: http://{}:{}/api/health ({} mode, NATS {})", settings.HOST, settings.PORT, mode, shown)
        else:
            running = [s.name for s in sups if s.part is not None]
            waiting = [s.name for s in sups if s.part is None and s.standing_by]
            if running:
                logger.info("ready: {} on NATS {}", ", ".join(running), shown)
            if waiting:  # each says `ready: NAME` when it becomes active
                logger.info("standing by: {} on NATS {} (another instance is active)", ", ".join(waiting), shown)

    starting = asyncio.create_task(start_all(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        waiting: set[asyncio.Future[Any]] = {starting, stopping, fatal}
        while not stop.is_set():
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if fatal in done:
                fatal.result()  # raises: a fatal error (a refused live venue, the REST port taken)
            if starting in done:
                with contextlib.suppress(Stopped):
                    starting.result()  # a failed start raises here
                waiting.discard(starting)
        return 0
    finally:
        stop.set()  # (also on a fatal error: every supervisor ends its waits)
        stopping.cancel()
        if not starting.done():  # stopped while starting (a long replay, say): do not finish starting
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        if tasks:  # supervisors end at once on the stop (a start cut short is discarded within its bound)
            await asyncio.wait(tasks, timeout=STOPPING_DISCARD_S + 1.5)
        await shutdown([s.part for s in sups if s.part is not None])
        if nats_server is not None:
            await asyncio.to_thread(nats_server.stop, 1.0)
            logger.info("embedded nats-server stopped")
        if url_file is not None:
            remove_url_file(url_file, without_credentials(url))
        ignore_stop_signals()


async def shutdown(parts: list[Part]) -> None:
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
