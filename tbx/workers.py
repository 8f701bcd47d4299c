"""`tbx run` in several processes (RUN_PROCESSES > 1, issue 22): one event loop is the first ceiling.

This process, the parent, runs no part itself. It

- starts the embedded nats-server when NATS_URL is unset (as the single process does), writes DATA_DIR/nats.url,
  makes the streams and buckets once (a PARTITIONS that disagrees with the deployment's is refused here, exit 2);
- splits the parts (every actor instance and the gateway) among the workers by the rule of
  ``domain/process_groups.py`` and starts one worker process per group: ``python -m tbx.cli run --worker K/N``,
  a fresh interpreter that reads its share (the parent's settings, its parts) as JSON on its stdin and runs
  those parts exactly as the single process would (``tbx.runner.serve`` with ``only``). A plain subprocess rather
  than ``multiprocessing``: the worker is an ordinary ``tbx`` process (its command line says which worker it is,
  its signals are its own, no resource-tracker process, nothing pickled) and it gets PR_SET_PDEATHSIG before it
  runs a line of Python;
- each worker runs in a process group of its own and dies with the parent (PR_SET_PDEATHSIG, SIGKILL: a parent
  killed with -9 leaves no worker behind, as the single process left no actor); its log lines go to the same
  stdout/stderr, each with its actor's name (the worker's own lines say ``tbx[K/N]``);
- restarts a worker that dies (killed, crashed) after a back-off (``domain/backoff.py`` RESTART, as the supervisor
  does for a part). A worker that exits with 1 or 2 by itself (a config error, a live venue that refuses the
  keys, the REST port taken: what ends the single process too) ends the run with that status;
- on SIGTERM / SIGINT sends SIGTERM to every worker (each stops its parts within its stop budget, while NATS is
  up), kills what is left after WORKER_STOP_S, then stops the embedded nats-server. The same signal again within
  a second is the same stop; one later means "now": every worker killed, exit 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
from loguru import logger

from config.settings import ConfigError, Settings, without_credentials
from domain.backoff import RESTART, Backoff
from domain.process_groups import split
from tbx.runner import (
    ACTOR_CLASSES,
    STOP_BUDGET_S,
    forget_url_file,
    ignore_stop_signals,
    install_stop_signals,
    nats_auth,
    parts_of,
    prepare_layout,
    remove_url_file,
    start_embedded,
    url_file_for,
)
from tbx.supervisor import Stopped, pause, until_stop

WORKER_STOP_S = STOP_BUDGET_S + 0.5  # a worker's clean stop after SIGTERM; then SIGKILL (NATS gets 1 s after)
FATAL_EXITS = (1, 2)  # a worker that exits so by itself ends the run: what would have ended the single process
POLL_S = 0.05  # how often a worker's exit is looked for where pidfd_open is missing


class WorkerShare(msgspec.Struct, frozen=True, kw_only=True):
    """What the parent hands a worker on its stdin: the settings (read once, by the parent: every worker and every
    restart runs with the very same), which worker it is and its parts (labels of ``tbx.runner.parts_of``)."""

    settings: Settings
    worker: int  # 1..workers
    workers: int
    parts: list[str]
    embedded: bool  # settings.NATS_URL is the parent's embedded nats-server (asks for no credentials)


def read_share(data: bytes) -> WorkerShare:
    try:
        return msgspec.json.decode(data, type=WorkerShare)
    except msgspec.DecodeError as e:
        raise ConfigError(
            f"--worker: no valid share on stdin ({e}); a worker is started by `tbx run`, not by hand"
        ) from None


def plan(settings: Settings, processes: int) -> list[list[str]]:
    """The parts of each worker (labels, in start order): every part `tbx run` runs, split by the rule."""
    parts = [(label, kind) for label, kind, _ in parts_of(settings, list(ACTOR_CLASSES), True)]
    return split(parts, processes)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


def _load_libc() -> ctypes.CDLL | None:
    """libc, loaded once in the parent: loading a library between fork and exec of a process with threads can hang
    (a lock held by another thread at the fork); the child only calls prctl. None without a libc of that name."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _in_child(parent: int) -> None:  # runs in the child between fork and exec
    # a background process group may write to the terminal even with `stty tostop` (the log lines)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        if _LIBC is not None:  # (no PR_SET_PDEATHSIG without it, as in bus/embedded.py)
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a worker never outlives the parent
        if os.getppid() != parent:  # the parent died before prctl: nobody would send it
            os._exit(1)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """The exit status of ``proc`` once it has exited (reaped); a pidfd says so at once where Linux has one."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or reaped already
        while proc.poll() is None:
            await asyncio.sleep(POLL_S)
        return proc.returncode
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    try:
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            if proc.poll() is None:
                await exited
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    return proc.wait()


@dataclass
class Worker:
    """One worker slot (``worker 1/2``): its parts, and the process that runs them now."""

    index: int  # 1-based
    count: int
    parts: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: int = 0  # processes started in this slot

    @property
    def name(self) -> str:
        return f"worker {self.index}/{self.count}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, share: bytes) -> None:
        """Start the slot's process (from the main thread: PR_SET_PDEATHSIG is tied to the forking thread)."""
        parent = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tbx.cli", "run", "--worker", f"{self.index}/{self.count}"],
            stdin=subprocess.PIPE,
            preexec_fn=lambda: _in_child(parent),
            process_group=0,  # a signal to the parent's group (Ctrl-C) reaches the parent only: it forwards one
        )
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # (a few KB: fits the pipe, never blocks)
            self.proc.stdin.write(share)
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        self.started += 1

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)  # type: ignore[union-attr]


async def supervise(
    w: Worker, share: bytes, stop: asyncio.Event, fatal: asyncio.Future[int], policy: Backoff = RESTART
) -> None:
    """Keep ``w``'s process running until a stop signal: one that dies is started again after a back-off. One that
    exits with 1 or 2 by itself resolves ``fatal`` with its status. The process that runs at the stop is left to
    the caller."""
    log = logger.bind(actor="tbx")
    failures = 0
    try:
        while not stop.is_set():
            try:
                w.spawn(share)
            except (OSError, subprocess.SubprocessError) as e:  # no process now (EAGAIN, ENOMEM): try again later
                failures, delay = policy.failed(failures)
                log.error("{} could not be started ({}): again in {:g} s", w.name, e, delay)
                await pause(delay, stop)
                continue
            t0 = time.monotonic()
            if w.started == 1:
                log.info("{} pid {}: {}", w.name, w.pid, ", ".join(w.parts))
            else:
                log.info("{} running again: pid {} (start {} since the start): {}", w.name, w.pid, w.started,
                         ", ".join(w.parts))  # fmt: skip
            assert w.proc is not None
            try:
                code = await until_stop(wait_exit(w.proc), stop)
            except Stopped:
                return
            ran = time.monotonic() - t0
            if stop.is_set():
                return
            if code in FATAL_EXITS:
                log.error("{} (pid {}) exited with {} by itself: stopping everything", w.name, w.pid, code)
                if not fatal.done():
                    fatal.set_result(code)
                return
            failures, delay = policy.failed(failures, ran)
            log.error(
                "{} (pid {}: {}) died after {:.1f} s: {}; a fresh one in {:g} s",
                w.name, w.pid, ", ".join(w.parts), ran, describe_exit(code), delay,
            )  # fmt: skip
            await pause(delay, stop)
    except Stopped:
        return


async def stop_workers(workers: list[Worker], budget: float = WORKER_STOP_S) -> None:
    """SIGTERM to each running worker (again: the signal that stops it is its own, from us); SIGKILL to those
    still running after ``budget``; each reaped."""
    live = [w for w in workers if w.alive()]
    for w in live:
        w.signal(signal.SIGTERM)

    async def reap(w: Worker) -> None:
        assert w.proc is not None
        try:
            await asyncio.wait_for(wait_exit(w.proc), budget)
        except TimeoutError:
            logger.bind(actor="tbx").warning(
                "{} (pid {}) did not stop within {:.1f} s: killing it", w.name, w.pid, budget
            )
            w.signal(signal.SIGKILL)
            await wait_exit(w.proc)

    await asyncio.gather(*(reap(w) for w in live))


async def run_workers(settings: Settings, processes: int) -> int:
    """`tbx run` with RUN_PROCESSES > 1: the parent (module docstring). Returns the exit status."""
    stop = asyncio.Event()
    nats_server = None
    workers: list[Worker] = []

    def force() -> None:  # a second stop signal after the grace: nothing clean any more
        for w in workers:
            w.signal(signal.SIGKILL)
        if nats_server is not None:
            nats_server.signal_stop()

    install_stop_signals(stop, force)
    url = settings.NATS_URL
    embedded = not url
    auth = None if embedded else nats_auth(settings)
    forget_url_file(settings)
    url_file: Path | None = None
    tasks: list[asyncio.Task[None]] = []
    fatal: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    try:
        if embedded:
            nats_server = start_embedded(settings)
            url = nats_server.url
            settings = msgspec.structs.replace(settings, NATS_URL=url)
        url_file = url_file_for(settings, url)
        groups = plan(settings, processes)
        if len(groups) < processes:
            logger.warning(
                "RUN_PROCESSES={} but `tbx run` has {} parts: {} worker processes", processes, len(groups), len(groups)
            )
        try:
            await prepare_layout(settings, url, stop, "tbx", auth)
        except Stopped:
            return 0
        workers.extend(Worker(k + 1, len(groups), parts) for k, parts in enumerate(groups))
        logger.info(
            "RUN_PROCESSES={}: {}",
            processes,
            "; ".join(f"{w.name}: {', '.join(w.parts)}" for w in workers),
        )
        for w in workers:
            share = WorkerShare(settings=settings, worker=w.index, workers=w.count, parts=w.parts, embedded=embedded)
            task = asyncio.create_task(supervise(w, msgspec.json.encode(share), stop, fatal), name=w.name)
            tasks.append(task)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stopping, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        return fatal.result() if fatal.done() else 0
    finally:
        stop.set()  # every supervise() returns at once (a back-off cut short)
        if tasks:
            await asyncio.wait(tasks)
        await stop_workers(workers)
        if nats_server is not None:
            await asyncio.to_thread(nats_server.stop, 1.0)
            logger.info("embedded nats-server stopped")
        if url_file is not None:
            remove_url_file(url_file, without_credentials(url))
        ignore_stop_signals()
