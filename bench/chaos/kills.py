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

Kind = Literal["actor", "standby", "gateway", "nats-node", "stream-leader"]
STANDBY_VICTIM = "order-router"


@dataclass(frozen=True, slots=True)
class Kill:
    kind: Kind
    target: str  # an actor's name, "gateway", or "" (a NATS node: chosen when it is killed)

    @property
    def label(self) -> str:
        return {
            "actor": f"{self.target} (active)",
            "standby": f"{self.target} (standby)",
            "gateway": "gateway #1",
            "nats-node": "a NATS node",
            "stream-leader": "the stream leader",
        }[self.kind]


def schedule(actors: tuple[str, ...], standbys: int) -> list[Kill]:
    """Each active actor, a standby (when there are standbys), a gateway, one NATS node, the stream leader."""
    out = [Kill("actor", a) for a in actors]
    if standbys:
        out.append(Kill("standby", STANDBY_VICTIM))
    out += [Kill("gateway", "gateway"), Kill("nats-node", ""), Kill("stream-leader", "")]
    return out


def parse_only(spec: str, full: list[Kill]) -> list[Kill]:
    """``--kills order-router,gateway,nats-node``: a subset of the schedule, in its order."""
    want = {w.strip() for w in spec.split(",") if w.strip()}
    return [k for k in full if k.target in want or k.kind in want]


async def lease_pid(js: nats.js.JetStreamContext, prefix_bucket: str, role: str) -> int | None:
    """The pid in the leadership lease of ``role`` (``<PREFIX>_LEASES``, issue 19 part B), if there is one."""
    try:
        kv = await js.key_value(prefix_bucket)
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


async def find_active(launcher: Launcher, js: nats.js.JetStreamContext, bucket: str, actor: str) -> Proc | None:
    """The instance of ``actor`` that holds the lease; without leases (one instance), the live one."""
    pid = await lease_pid(js, bucket, actor)
    if pid is not None and (p := launcher.by_pid(pid)) is not None:
        return p
    live = [p for p in launcher.of_kind(actor) if p.alive]
    return live[0] if live else None


async def find_standby(launcher: Launcher, js: nats.js.JetStreamContext, bucket: str, actor: str) -> Proc | None:
    active = await find_active(launcher, js, bucket, actor)
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
