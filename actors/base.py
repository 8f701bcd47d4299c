"""The actor base: lifecycle, heartbeat, guarded background tasks.

An actor is a thin imperative shell around ``domain/``: it subscribes on the bus in ``on_start``,
turns messages into calls of pure functions and publishes what comes out. Every actor has its own
NATS connection, so the same code runs alone (``tbx actor NAME``) or with the others in one process.

Every actor here is a single writer: it takes its leadership lease (bus/lease.py) before ``on_start`` and
waits as a hot standby (heartbeating with ``role: standby``) while another instance holds it. Every stream
and KV write of its bus goes through the lease's fence; losing the lease ends the instance (``died``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine
from typing import Any, ClassVar

from loguru import logger

from bus.client import Bus
from bus.lease import LeaseDriver
from config.settings import ConfigError, Settings
from domain.lease import ack_wait_s
from domain.partitions import owns, suffix
from schemas.messages import Heartbeat, RiskAlert, Severity, VenueState, now_ms

HEARTBEAT_INTERVAL_S = 1.0
# how long Actor.stop may take at most: the message in hand (2 s and the buffers handed back), on_stop (2 s),
# the background tasks (1 s), the connection drained (3 s), and a margin. tbx/supervisor.py gives a stop at
# least this long before it aborts the instance.
STOP_BUDGET_S = 11.0  # stop(): the drain 2 + on_stop 2 + tasks 1 + the lease's release ~2 + close 3, and a margin
ABORT_LOG_S = 5.0  # abort(): a task still not over after being cancelled is named this often


class Actor:
    name: ClassVar[str] = "actor"
    # one active instance per partition of the pairs (PARTITIONS): signal-intake, order-router, fill-tracker
    partitioned: ClassVar[bool] = False
    leased: bool = True  # a single writer: one active instance (per partition), the others standbys

    def __init__(self, settings: Settings, bus: Bus) -> None:
        if self.partitioned and settings.PARTITIONS > 1 and settings.PARTITION is None:
            raise ConfigError(
                f"PARTITION is not set: with PARTITIONS={settings.PARTITIONS} a {self.name} serves one partition "
                f"(PARTITION=0..{settings.PARTITIONS - 1}, or `tbx actor {self.name} --partition K`)"
            )
        self.settings = settings
        self.bus = bus
        self.subjects = bus.subjects
        self.log = logger.bind(actor=self.name + suffix(self.partition))
        self.instance = uuid.uuid4().hex[:8]
        self.started_at = now_ms()
        self.status: str = "starting"
        self._tasks: set[asyncio.Task[Any]] = set()
        # resolved (with the reason) when this instance can no longer go on: its supervisor stops it and
        # starts a fresh one (tbx/supervisor.py). Made in start() when there is no event loop yet.
        self.died: asyncio.Future[str] = _new_future()
        self.lease: LeaseDriver | None = None
        self._lease_task: asyncio.Task[None] | None = None
        # set when start() waits as a standby (another instance holds the lease): a launcher starting parts in
        # order goes on with the next one instead of waiting for this one to become active
        self.standing_by = asyncio.Event()

    def fail(self, reason: str) -> None:
        """This instance cannot go on (an essential task ended, the lease is lost): say so once."""
        if self.died.get_loop().is_closed():
            return
        if not self.died.done():
            self.log.error("{} cannot go on: {}", self.role, reason)
            self.died.set_result(reason)

    @property
    def partition(self) -> int | None:
        """The partition this instance serves (its pairs: ``domain.partitions.owns``); None when PARTITIONS is 1
        or the actor is not partitioned (it serves every pair)."""
        if not self.partitioned or self.settings.PARTITIONS <= 1:
            return None
        return self.settings.PARTITION

    @property
    def role(self) -> str:
        """The lease's key: the actor's name, or ``<name>.p<k>`` for partition k of a partitioned actor."""
        return self.name if self.partition is None else f"{self.name}.p{self.partition}"

    def fence(self) -> None:
        """Raise ``bus.errors.LeaseLost`` unless this instance provably holds its lease now (before a write
        that does not go through the bus: a venue's order)."""
        if self.lease is not None:
            self.lease.check()

    def owns(self, pair: str) -> bool:
        """Is ``pair`` this instance's to handle (always, unpartitioned)?"""
        return owns(self.partition, self.settings.PARTITIONS, pair)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        t0 = time.perf_counter()
        if self.died.get_loop() is not asyncio.get_running_loop():  # made before there was a loop
            self.died = asyncio.get_running_loop().create_future()
        self.bus.on_lost(self.fail)  # the connection closed for good (not by us)
        if self.leased:
            self.lease = LeaseDriver(
                self.bus,
                role=self.role,
                actor=self.name,
                partition=self.partition,
                holder=self.instance,
                failover_ms=self.settings.FAILOVER_MS,
                on_lost=self.fail,
            )
            self.bus.set_fence(self.lease.check)  # nothing is written before the lease is held
            self.bus.ack_wait = ack_wait_s(self.settings.FAILOVER_MS)  # a dead active's messages come back soon
            self.status = "standby"
        self.spawn(self._heartbeat_loop(), "heartbeat", essential=True)
        if self.lease is not None:
            waited = time.perf_counter()
            await self.lease.acquire(on_change=self._beat_now, on_standby=self.standing_by.set)
            self._lease_task = asyncio.create_task(self.lease.run(), name=f"{self.name}:lease")
            self._lease_task.add_done_callback(self._lease_ended)
            self.status = "starting"
            self._beat_now()
            if (time.perf_counter() - waited) > 0.5:
                self.log.info(
                    "{} active after {:.0f} ms as a standby", self.role, (time.perf_counter() - waited) * 1000
                )
            t0 = time.perf_counter()
        await self.on_start()
        self.status = "running"
        self._beat_now()
        self.log.info("{} started in {:.0f} ms", self.name, (time.perf_counter() - t0) * 1000)

    def _lease_ended(self, task: asyncio.Task[None]) -> None:
        """The renewals ended: fine when stopping (or the lease was lost: ``fail`` was called with why); an error
        in them, never silent: the instance cannot prove its lease any more."""
        if task.cancelled() or self.status in ("stopping", "stopped"):
            return
        if task.exception() is not None:
            self.log.opt(exception=task.exception()).error("lease renewals of {} failed", self.role)
            self.fail(f"lease renewals failed: {type(task.exception()).__name__}: {task.exception()}")

    async def stop(self) -> None:
        """Graceful drain: stop taking messages, let the one in hand finish, give up the lease, then close."""
        self.status = "stopping"
        await self.bus.stop_consuming()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.on_stop(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.release(self._lease_task)
        with contextlib.suppress(Exception):
            await self._publish_heartbeat()
        await self.bus.close()
        self.status = "stopped"
        self.log.info("{} stopped", self.name)

    async def abort(self) -> None:
        """Make sure nothing of this instance runs any more (its supervisor is about to start a fresh one): every
        background task and every message handler still in hand cancelled, and awaited; the connection closed at
        once. After a clean ``stop`` there is nothing left but to check; after a stop cut short it is what ends
        the instance. Returns only once each of them is over (one that ignores being cancelled is logged every
        ABORT_LOG_S and cancelled again: never left running beside the fresh instance)."""
        if self.status != "stopped":
            self.status = "stopping"  # (an essential task cancelled now is no death)
        handlers = self.bus.handler_tasks()  # (before the close, which forgets the subscriptions)
        if self.lease is not None:
            self.lease.abandon()  # never renewed again: a standby takes over once it runs out
        await self.bus.abort()
        me = asyncio.current_task()
        renewals = {self._lease_task} if self._lease_task is not None else set()
        left = {t for t in (self._tasks | handlers | renewals) if not t.done() and t is not me}
        waited = 0.0
        while left:
            for task in left:
                if waited or not task.cancelling():  # (one cancelled already may be finishing its cleanup)
                    task.cancel()
            _, left = await asyncio.wait(left, timeout=ABORT_LOG_S)
            if left:
                waited += ABORT_LOG_S
                names = ", ".join(sorted(t.get_name() for t in left))
                self.log.error("{} aborted: {} still running {:g} s after being cancelled", self.name, names, waited)
        self.status = "stopped"

    async def on_start(self) -> None:
        """Subscribe, rebuild state. Override."""

    async def on_stop(self) -> None:
        """Flush what must be flushed. Override."""

    def stats(self) -> dict[str, int | float | str]:
        """Counters shown in the heartbeat (and so in /api/health). Override."""
        return {}

    # -- helpers -------------------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], what: str, *, essential: bool = False) -> asyncio.Task[Any]:
        """Run a background task whose failure is logged, never silent. ``essential``: the actor cannot live
        without it (its heartbeat, a loop it must keep running, a lease renewal): when it ends in any way but
        being cancelled by ``stop``, the instance fails (``died`` resolves, and its supervisor restarts it)."""
        task = asyncio.create_task(coro, name=f"{self.name}:{what}")
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                if essential and self.status not in ("stopping", "stopped"):
                    self.fail(f"background task {what} was cancelled")
                return
            if t.exception() is not None and self.bus.nc.is_closed:  # the part dies of it: said once, by died
                self.log.warning("background task {} ended: the NATS connection is closed ({})", what, t.exception())
                if essential:
                    self.fail(f"background task {what} failed: the NATS connection is closed")
            elif t.exception() is not None:
                self.log.opt(exception=t.exception()).error("background task {} failed", what)
                if essential:
                    self.fail(f"background task {what} failed: {type(t.exception()).__name__}: {t.exception()}")
            elif essential and self.status not in ("stopping", "stopped"):
                self.fail(f"background task {what} ended")

        task.add_done_callback(done)
        return task

    async def alert(self, severity: Severity, code: str, message: str, **fields: Any) -> None:
        """An alert on ``tbx.events.risk`` (and so on GET /api/alerts), logged as well."""
        level = "WARNING" if severity == "warning" else "ERROR"
        self.log.log(level, "alert {} {}: {}", severity, code, message)
        alert = RiskAlert(severity=severity, code=code, message=message, ts=now_ms(), **fields)
        await self.bus.js_publish(self.subjects.risk_events, alert)

    async def every(self, seconds: float, fn: Any, what: str) -> None:
        """Call ``await fn()`` every ``seconds``; an exception is logged and the loop goes on."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.log.opt(exception=e).error("{} failed: {}", what, e)

    def venue_states(self) -> list[VenueState] | None:
        """The venue sessions this actor runs (the order-router), for /api/health."""
        return None

    async def _publish_heartbeat(self) -> None:
        lease = self.lease
        active = lease is None or lease.active
        hb = Heartbeat(
            actor=self.name,
            instance=self.instance,
            ts=now_ms(),
            started_at=self.started_at,
            status=self.status,  # type: ignore[arg-type]
            stats=self.stats() if active else {},
            venues=self.venue_states() if active else None,
            role="active" if active else "standby",
            partition=self.partition,
            lease=lease.revision if lease is not None else None,
        )
        await self.bus.publish(self.subjects.health(self.name), hb)

    def _beat_now(self) -> None:
        """A heartbeat at once (a change of role or status), besides the regular ones."""
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self._publish_heartbeat())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _heartbeat_loop(self) -> None:
        await self._publish_heartbeat()
        await self.every(HEARTBEAT_INTERVAL_S, self._publish_heartbeat, "heartbeat")


def _new_future() -> asyncio.Future[str]:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (a test, a script): a stand-in, replaced in start()
        loop = asyncio.new_event_loop()
        loop.close()
    return loop.create_future()
