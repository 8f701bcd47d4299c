"""The chaos run, shortest: the real thing (3-node cluster, every actor its own process, two gateways, kill -9)
with a tiny load and three kills. Its last line must say nothing was lost, doubled or left stuck, and that the
books equal the fill log and the undisturbed run. max_unavailable_ms is printed, never asserted (no timings in
tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.chaos.launcher import pid_alive

ROOT = Path(__file__).resolve().parents[2]
LAST = re.compile(
    r"^chaos: lost=(\d+) duplicated=(\d+) stuck=(\d+) books_equal=(yes|no) max_unavailable_ms=(\d+)$", re.M
)


def row(out: str, name: str) -> int:
    """The number of the table's row ``name`` (its first number)."""
    m = re.search(rf"^{re.escape(name)}[^\n]*?\s(\d+)", out, re.M)
    assert m is not None, f"no row {name!r} in:\n{out[-4000:]}"
    return int(m[1])


def test_a_tiny_chaos_run_loses_doubles_and_strands_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_PORT", "TBX_CONFIG", "CHAOS_SHORT")}
    env["TMPDIR"] = str(tmp_path)  # the run's folder (logs, NATS stores) is under the test's
    args = ["--per-pair", "2", "--kills", "order-router,gateway,nats-node", "--gap", "3", "--settle", "15"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", *args, "--budget", "150"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, out
    m = LAST.match(lines[-1])
    assert m is not None, f"the last line is not the chaos line:\n{out[-4000:]}"
    lost, duplicated, stuck, books_equal = int(m[1]), int(m[2]), int(m[3]), m[4]
    assert (lost, duplicated, stuck, books_equal) == (0, 0, 0, "yes"), out[-4000:]
    # something traded: every planned order sent, accepted and filled (a run where all is denied is no pass)
    submitted, accepted, denied, filled = (row(out, name) for name in ("orders submitted", "  accepted", "  denied",
                                                                        "  filled"))  # fmt: skip
    assert filled == accepted == submitted == 2 * 12 and denied == 0, out[-4000:]
    # every kill applied (found its victim, nothing failed), no process exited by itself
    assert "killed order-router (active)" in out and "killed a gateway" in out and "killed a NATS node" in out
    assert "FAILED" not in out and "kills applied" not in out, out[-4000:]
    assert row(out, "exits not caused by a kill") == 0, out[-4000:]
    # every process it started was stopped by pid: none of them is left
    stopped = re.search(r"stopped (\d+) processes by pid", out)
    assert stopped is not None and int(stopped[1]) >= 11, out[-2000:]
    assert "STILL RUNNING" not in out
    for line in out.splitlines():
        for pid in re.findall(r"pid (\d+)", line):
            assert not pid_alive(int(pid)), f"pid {pid} outlived the chaos run"
