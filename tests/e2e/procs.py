"""Start ``tbx`` as a real subprocess, read its log, and stop it by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import pid_alive


class Tbx:
    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log: Path,
        *,
        cwd: Path | None = None,
        new_session: bool = False,
        command: list[str] | None = None,
    ) -> None:
        """``cwd``: where it runs (its ``.env``); ``new_session``: a process group of its own, for signals to
        the group; ``command``: what starts ``tbx`` (default ``python -m tbx.cli``), e.g. through a wrapper."""
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PORT", "TBX_CONFIG")}
        full_env.update(env)
        full_env.setdefault("LOG_LEVEL", "INFO")
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [*(command or [sys.executable, "-m", "tbx.cli"]), *args],
                env=full_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=new_session,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text()):
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"tbx exited with {self.proc.returncode} before {pattern!r}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in the log after {timeout}s:\n{self.text()[-3000:]}")

    def terminate(self, timeout: float = 5.0) -> float:
        """SIGTERM and wait; returns how long the stop took."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - t0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def ensure_stopped(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


__all__ = ["Tbx", "children_of", "pid_alive"]
