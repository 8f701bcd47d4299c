"""Supervision: every part (an actor, the gateway) runs under a supervisor that keeps it running.

- Connect: NATS not reachable -> wait and try again with back-off (0.5 s doubling to 5 s), logged, for as
  long as it takes, until a stop signal.
- Start: a start that fails is tried again with a fresh instance (a new object and a new connection) after a
  back-off; a transient error (nats ``TimeoutError``, ``NoStreamResponseError``, a 503, a stream without a
  leader yet) is logged in one line, anything else with its traceback. Only what waiting cannot mend is fatal:
  a refused live venue (keys, pairs, clock), a REST port taken, a config error.
- Run: then the supervisor waits for ``part.died`` (an essential task ended, the connection closed for good,
  the lease lost). When it resolves: log why, stop the instance, back off (0.5 s doubling to 30 s; the count
  starts again once an instance has run 60 s), start a fresh instance.
- A stop signal ends every wait at once (back-off, connect, a start in progress); the parts that run are then
  stopped by the caller, in its order.

The back-off policy itself is pure: ``domain/backoff.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from loguru import logger

from actors.venues.base import VenueStartError
from bus.client import Bus, is_transient
from bus.errors import BusUnavailable
from config.settings import ConfigError
from domain.backoff import CONNECT, RESTART, Backoff

T = TypeVar("T")

DISCARD_TIMEOUT_S = 2.0  # stopping an instance that failed (or whose start was cut short)
STILL_WAITING_LOG_S = 30.0  # "still waiting for NATS" at most this often


class Part(Protocol):
    name: str
    died: asyncio.Future[str]
    bus: Bus

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Stopped(Exception):
    """A stop signal ended the wait."""


def is_fatal(e: BaseException) -> bool:
    """An error no retry can mend: the settings are wrong. Everything else is tried again."""
    if isinstance(e, ConfigError):
        return True
    if isinstance(e, VenueStartError):
        return not e.retryable
    return isinstance(e, OSError) and e.errno == errno.EADDRINUSE  # the REST port is another program's


ROOT = Path(__file__).resolve().parents[1]


def describe(e: BaseException) -> str:
    """``Type: message at path.py:line in function`` (the last frame of ours it went through): a transient
    error is logged in one line, and that line still says which step of the start it stopped."""
    text = str(e)
    out = f"{type(e).__name__}: {text}" if text else type(e).__name__
    where = None
    for frame, line in traceback.walk_tb(e.__traceback__):
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(ROOT) and ".venv" not in path.parts:
            where = f"{path.relative_to(ROOT)}:{line} in {frame.f_code.co_name}"
    return f"{out} at {where}" if where else out


async def until_stop(aw: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """``await aw``, unless ``stop`` is set first: then ``aw`` is cancelled (and awaited) and Stopped raised."""
    if stop.is_set():
        aw.close()
        raise Stopped
    task = asyncio.ensure_future(aw)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        stopping.cancel()
        raise
    if task.done():
        stopping.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise Stopped


async def pause(seconds: float, stop: asyncio.Event) -> None:
    """Sleep ``seconds``; a stop signal ends it at once (Stopped)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    if stop.is_set():
        raise Stopped


async def connect_until(
    connect: Callable[[], Awaitable[Bus]], what: str, stop: asyncio.Event, policy: Backoff = CONNECT
) -> Bus:
    """Connect; while NATS cannot be reached, say so and try again with back-off, until a stop signal."""
    failures = 0
    waiting_since: float | None = None
    said_at = 0.0
    log = logger.bind(actor=what)
    while True:
        try:
            bus = await until_stop(connect(), stop)  # type: ignore[arg-type]
        except BusUnavailable as e:
            failures, delay = policy.failed(failures)
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = said_at = now
                log.warning(
                    "{}; {} waits for it: trying again with back-off (at most every {:g} s) until it answers "
                    "or a stop signal",
                    e,
                    what,
                    policy.cap,
                )
            elif now - said_at >= STILL_WAITING_LOG_S:
                said_at = now
                log.warning(
                    "{} still waiting for NATS after {:.0f} s ({} tries): {}", what, now - waiting_since, failures, e
                )
            await pause(delay, stop)
            continue
        if waiting_since is not None:
            log.info("{}: NATS answers after {:.1f} s of waiting", what, time.monotonic() - waiting_since)
        return bus


async def retry_transient(
    step: Callable[[], Coroutine[Any, Any, T]], what: str, stop: asyncio.Event, policy: Backoff = CONNECT
) -> T:
    """``await step()``; a transient error (JetStream briefly without a leader, a timeout) is logged and the
    step tried again with back-off, until it succeeds or a stop signal. Any other error is raised."""
    failures = 0
    while True:
        try:
            return await until_stop(step(), stop)
        except Stopped:
            raise
        except Exception as e:
            if not is_transient(e):
                raise
            failures, delay = policy.failed(failures)
            logger.warning("{} not done yet ({}): again in {:g} s", what, describe(e), delay)
            await pause(delay, stop)


class Supervisor:
    """Keeps one part running: ``connect()`` makes a new connection, ``make(bus)`` a new instance on it."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[Bus]],
        make: Callable[[Bus], Part],
        stop: asyncio.Event,
        *,
        policy: Backoff = RESTART,
        connect_policy: Backoff = CONNECT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.connect = connect
        self.make = make
        self.stop = stop
        self.policy = policy
        self.connect_policy = connect_policy
        self.clock = clock
        self.part: Part | None = None  # the instance that runs now (None while starting or backing off)
        self.first_try = asyncio.Event()  # the first start has returned or failed
        self.started = asyncio.Event()  # an instance has started (at least once)
        self.instances = 0  # instances started
        self._watches: set[asyncio.Task[None]] = set()
        self.standing_by = False  # the instance starting now waits as a standby (another one is active)
        self.log = logger.bind(actor=name)

    async def run(self) -> None:
        """Until a stop signal (returns) or a fatal error (raised). The running instance is left to the caller."""
        failures = 0
        try:
            while True:
                bus = await connect_until(self.connect, self.name, self.stop, self.connect_policy)
                try:
                    part = self.make(bus)
                except BaseException:
                    await bus.close()
                    raise
                t0 = self.clock()
                standby = self._first_try_on_standby(part)
                try:
                    await until_stop(part.start(), self.stop)  # type: ignore[arg-type]
                    t0 = self.clock()  # (the time it stood by is not time it ran)
                except Stopped:
                    await self._discard(part)
                    raise
                except Exception as e:
                    await self._discard(part)
                    if is_fatal(e):
                        raise
                    failures, delay = self.policy.failed(failures)
                    if is_transient(e):
                        self.log.warning("{} could not start ({}): again in {:g} s", self.name, describe(e), delay)
                    else:
                        self.log.opt(exception=e).error(
                            "{} could not start ({}): again in {:g} s", self.name, describe(e), delay
                        )
                    self.first_try.set()
                    await pause(delay, self.stop)
                    continue
                finally:
                    if standby is not None:
                        standby.cancel()
                if self.standing_by:  # active now, after standing by: what `ready:` said of the others
                    self.standing_by = False
                    self.log.info("ready: {} (active after standing by)", self.name)
                self.instances += 1
                if self.instances > 1:
                    self.log.info("{} running again (instance {} since the start)", self.name, self.instances)
                self.part = part
                self.first_try.set()
                self.started.set()
                reason = await self._until_died(part)
                ran = self.clock() - t0
                self.part = None
                failures, delay = self.policy.failed(failures, ran)
                self.log.error(
                    "{} died after {:.1f} s: {}; stopping it, a fresh instance in {:g} s", self.name, ran, reason, delay
                )
                await self._discard(part)
                await pause(delay, self.stop)
        except Stopped:
            return
        finally:
            self.first_try.set()

    def _first_try_on_standby(self, part: Part) -> asyncio.Task[None] | None:
        """A part whose start waits as a standby (another instance holds its lease) counts as tried: a launcher
        starting parts in order goes on with the next one meanwhile."""
        event = getattr(part, "standing_by", None)
        if not isinstance(event, asyncio.Event):
            return None

        async def watch() -> None:
            await event.wait()
            self.standing_by = True
            self.log.info("{} stands by (another instance is active)", self.name)
            self.first_try.set()

        task = asyncio.create_task(watch(), name=f"{self.name}:standby watch")
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)
        return task

    async def _until_died(self, part: Part) -> str:
        """The reason ``part`` died; Stopped if a stop signal comes first (the part is left running)."""
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({part.died, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if self.stop.is_set():
            raise Stopped
        return part.died.result()

    async def _discard(self, part: Part) -> None:
        """Stop an instance that failed or was cut short, within a bound; its connection closed whatever happens."""
        try:
            await asyncio.wait_for(part.stop(), DISCARD_TIMEOUT_S)
        except Exception as e:
            self.log.warning("{} did not stop cleanly: {}", self.name, describe(e))
        with contextlib.suppress(Exception):
            await part.bus.close()
