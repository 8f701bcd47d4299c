"""Start, kill, restart and stop the processes of a chaos run, each by its pid.

Every process is ours: a real ``nats-server`` node (``bus.cluster.NatsCluster``) or ``python -m tbx.cli ...``,
started in a process group of its own (a Ctrl-C in the terminal reaches only the runner, which stops them in
order) and bound to die with the runner (PR_SET_PDEATHSIG), so nothing outlives the run even when the runner
itself is killed with -9. ``stop_all`` sends SIGTERM to each pid, then SIGKILL to what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus.cluster import NatsCluster, running, signal_and_reap, stop_by_pid
from bus.embedded import _die_with_parent

REPO = Path(__file__).resolve().parents[2]
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


@dataclass(slots=True)
class Proc:
    """One process slot (``order-router#0``, ``gateway#1``): started again in the same slot after a kill."""

    name: str  # the slot
    kind: str  # an actor's name, or "gateway"
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed: int = 0  # by the schedule
    died: list[str] = field(default_factory=list)  # exits we did not cause: "code 1 at 12.3 s"
    down_by_us: bool = False  # killed or stopped by the runner: not a death to report (or to restart)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        return running(self.popen)


class Launcher:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.cluster: NatsCluster | None = None
        self.t0 = time.monotonic()

    # -- NATS ----------------------------------------------------------------------------------------
    def start_cluster(self, size: int = 3) -> str:
        self.cluster = NatsCluster(self.root / "nats", size)
        return self.cluster.start()

    # -- our processes --------------------------------------------------------------------------------
    def spawn(self, name: str, kind: str, args: list[str], env: dict[str, str]) -> Proc:
        p = Proc(name=name, kind=kind, args=args, env=env, log=self.logs / f"{name}.log")
        self.procs.append(p)
        self._launch(p)
        return p

    def _launch(self, p: Proc) -> None:
        full = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
        full.update(p.env)
        full["PYTHONPATH"] = str(REPO)
        run_dir = self.root / "cwd"  # no .env of anyone's here: only the settings we give
        run_dir.mkdir(exist_ok=True)
        with open(p.log, "ab") as fh:
            fh.write(f"--- start {p.starts + 1} at {self.elapsed():.1f} s ---\n".encode())
            fh.flush()
            p.popen = subprocess.Popen(
                [sys.executable, "-m", "tbx.cli", *p.args],
                env=full,
                cwd=run_dir,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                process_group=0,
            )
        p.starts += 1
        p.down_by_us = False

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def kill(self, p: Proc, sig: int = signal.SIGKILL) -> None:
        """kill -9 (by default) the process in slot ``p`` and reap it."""
        if p.popen is None or not running(p.popen):
            return
        p.down_by_us = True
        p.killed += 1
        signal_and_reap(p.popen, sig)

    def restart(self, p: Proc) -> None:
        if p.alive:
            return
        self._launch(p)

    def reap_unexpected(self) -> list[Proc]:
        """Processes that exited without being killed by us (a fatal start, a crash past ``tbx``'s own supervisor):
        noted (the report counts each as a miss) and started again, as an operator's process manager would."""
        out = []
        for p in self.procs:
            if p.popen is not None and not p.down_by_us and p.popen.poll() is not None:
                p.died.append(f"code {p.popen.returncode} at {self.elapsed():.1f} s")
                self._launch(p)
                out.append(p)
        return out

    def by_pid(self, pid: int) -> Proc | None:
        return next((p for p in self.procs if p.pid == pid and p.alive), None)

    def of_kind(self, kind: str) -> list[Proc]:
        return [p for p in self.procs if p.kind == kind]

    def stop_all(self, timeout: float = 5.0) -> list[int]:
        """SIGTERM every process by pid (then SIGKILL what is left after ``timeout``), then the NATS nodes.
        Returns every pid that was stopped (to check that none is left)."""
        live = [p.popen for p in self.procs if p.popen is not None and running(p.popen)]
        pids = [proc.pid for proc in live]
        stop_by_pid(live, timeout)
        if self.cluster is not None:
            pids += self.cluster.pids
            self.cluster.stop()
        return pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is gone for every purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True
