"""The kill schedule: each victim in turn, found the way an operator would find it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import nats.js
import nats.js.errors

from bench.chaos.launcher import Launcher, Proc
from schemas.subjects import Subjects

Kind = Literal["actor", "standby", "gateway", "nats-node", "stream-leader", "lease-leader"]
STANDBY_VICTIM = "order-router"
LEASE_READ_S = 5.0


@dataclass(frozen=True, slots=True)
class Kill:
    kind: Kind
    target: str  # an actor's name, "gateway", or "" (a NATS node: chosen when it is killed)

    @property
    def label(self) -> str:
        return {
            "actor": f"{self.target} (active)",
            "standby": f"{self.target} (standby)",
            "gateway": "a gateway",
            "nats-node": "a NATS node",
            "stream-leader": "the stream leader",
            "lease-leader": "the leases' leader",
        }[self.kind]


def schedule(actors: tuple[str, ...], standbys: int) -> list[Kill]:
    """Each active actor, a standby (when there are standbys), a gateway, one NATS node, the stream leader, the node
    leading the most lease buckets."""
    out = [Kill("actor", a) for a in actors]
    if standbys:
        out.append(Kill("standby", STANDBY_VICTIM))
    out += [Kill("gateway", "gateway"), Kill("nats-node", ""), Kill("stream-leader", ""), Kill("lease-leader", "")]
    return out


KINDS: tuple[str, ...] = ("actor", "standby", "gateway", "nats-node", "stream-leader", "lease-leader")
NODE_KINDS = ("nats-node", "stream-leader", "lease-leader")  # a NATS node is killed (and started again)


class KillSelectionError(ValueError):
    """``--kills`` names something that is not in the schedule, or selects nothing."""


def parse_only(spec: str, full: list[Kill], actors: tuple[str, ...] = ()) -> list[Kill]:
    """``--kills order-router,gateway,nats-node``: a subset of the schedule, in its order. A word that is neither an
    actor's name nor a kind, or a selection that selects nothing of this schedule (``standby`` without standbys),
    is refused (KillSelectionError), never run as an empty schedule."""
    want = [w.strip() for w in spec.split(",") if w.strip()]
    known = set(KINDS) | set(actors) | {k.target for k in full if k.target}
    unknown = [w for w in want if w not in known]
    if unknown:
        raise KillSelectionError(
            f"--kills: {', '.join(unknown)} is not an actor's name or a kind (kinds: {', '.join(KINDS)})"
        )
    out = [k for k in full if k.target in want or k.kind in want]
    missing = [w for w in want if not any(k.target == w or k.kind == w for k in out)]
    if not out or missing:
        why = " (no standbys: set CHAOS_STANDBYS=1)" if "standby" in missing else ""
        raise KillSelectionError(f"--kills: {', '.join(missing or want)} selects no kill of this schedule{why}")
    return out


@dataclass(slots=True)
class KillRecord:
    """One kill of the schedule as it was applied (or failed: ``error``)."""

    kill: Kill
    at: float  # epoch s
    victim: str  # "order-router#0 pid 123", "nats n2 pid 77"; "-" when none was found
    note: str = ""
    error: str = ""  # why it was not applied, or why what it killed did not come back (a NATS node's restart)
    after: str = ""  # what happened to the killed process afterwards (taken over, started again by the harness)
    slow: str = ""  # a target missed on the way (a standby took the lease, but later than the target): not a failure

    @property
    def ok(self) -> bool:
        return not self.error and self.victim != "-"


def kill_problems(planned: list[Kill], records: list[KillRecord]) -> list[str]:
    """What went wrong with the schedule (empty: every planned kill was applied). Pure."""
    out = [f"{r.kill.label}: {r.error or 'no victim found'}" for r in records if not r.ok]
    done = [r.kill for r in records]
    left = [k.label for k in planned if k not in done]
    if left or len(records) != len(planned):
        out.append(f"{len(records)} of {len(planned)} kills applied (not applied: {', '.join(left) or '-'})")
    return out


async def lease_pid(js: nats.js.JetStreamContext, subjects: Subjects, role: str) -> int | None:
    """The pid in the leadership lease of ``role`` (its bucket ``<PREFIX>_LEASES_<role>``), if there is one."""
    try:
        kv = await js.key_value(subjects.kv_lease(role))
        entry = await kv.get(role)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
        return None
    except Exception:
        return None
    try:
        pid = json.loads(entry.value or b"{}").get("pid")
    except ValueError:
        return None
    return int(pid) if isinstance(pid, int) else None


async def find_active(launcher: Launcher, js: nats.js.JetStreamContext, subjects: Subjects, actor: str) -> Proc | None:
    """The instance of ``actor`` that holds the lease (read for up to LEASE_READ_S). Only when there is one
    instance alive may the lease be unreadable: with several, guessing could kill a standby labelled "active"."""
    live = [p for p in launcher.of_kind(actor) if p.alive]
    deadline = asyncio.get_running_loop().time() + LEASE_READ_S
    while True:
        pid = await lease_pid(js, subjects, actor)
        if pid is not None and (p := launcher.by_pid(pid)) is not None:
            return p
        if len(live) <= 1 or asyncio.get_running_loop().time() > deadline:
            return live[0] if len(live) == 1 else None
        await asyncio.sleep(0.2)


async def find_standby(launcher: Launcher, js: nats.js.JetStreamContext, subjects: Subjects, actor: str) -> Proc | None:
    active = await find_active(launcher, js, subjects, actor)
    if active is None:
        return None  # which one stands by is not known
    return next((p for p in launcher.of_kind(actor) if p.alive and p is not active), None)


async def stream_leaders(js: nats.js.JetStreamContext, streams: list[str]) -> Counter[str]:
    """How many of ``streams`` each server leads (``stream info``: cluster.leader)."""
    out: Counter[str] = Counter()
    for s in streams:
        try:
            info = await asyncio.wait_for(js.stream_info(s), 5.0)
        except Exception:
            continue
        if info.cluster is not None and info.cluster.leader:
            out[info.cluster.leader] += 1
    return out


def deployment_streams(subjects: Subjects, actors: tuple[str, ...]) -> list[str]:
    """Every stream of a deployment: its streams, its KV buckets (``KV_<bucket>``) and its actors' lease buckets."""
    buckets = [subjects.kv_state, subjects.kv_paper, subjects.kv_credentials, subjects.kv_transition]
    buckets += [subjects.kv_lease(a) for a in actors]
    return [spec.name for spec in subjects.streams()] + [f"KV_{b}" for b in buckets]


async def not_whole(js: nats.js.JetStreamContext, streams: list[str]) -> list[str]:
    """The streams without a leader, or with a replica offline or not current (empty: the cluster is whole again
    after a NATS node came back; a stream that does not answer counts as not whole)."""
    out: list[str] = []
    for s in streams:
        try:
            info = await asyncio.wait_for(js.stream_info(s), 5.0)
        except nats.js.errors.NotFoundError:
            continue  # (a bucket never made: a role that has not started)
        except Exception:
            out.append(s)
            continue
        c = info.cluster
        if c is None:
            continue  # one server, no cluster
        if not c.leader or any(r.offline or not r.current for r in c.replicas or []):
            out.append(s)
    return out
