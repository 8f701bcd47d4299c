"""``make chaos`` (``python -m bench.chaos``): the whole run, bounded in time, everything stopped by pid.

1. A real 3-node JetStream cluster (``bus.cluster.NatsCluster``) on 127.0.0.1.
2. Two deployments on it, each with its own BUS_PREFIX and NATS_REPLICAS=3, both with SYNTHETIC_CLOCK=event:
   the *reference* (one ``tbx run`` process, never disturbed) and the *chaos* one (every actor its own
   ``tbx actor NAME`` process, ``instances`` of each, the gateway twice).
3. The same deterministic load (``load.plan``) against each: the reference first, then the chaos deployment,
   paced so that it lasts over the kill schedule, while each victim is killed with -9 in turn (``kills``).
   With standbys the service recovers by itself (a standby takes the lease); the killed process is started again
   later by the harness as a new standby, as an operator's process manager would. Without standbys a killed
   process is started again after RESTART_DELAY_S (the only way its stage comes back). A NATS node comes back
   after half the gap.
4. A settle time, then the streams are read and the table and the last line printed (``report``).
Every wait is bounded by one deadline (``Deadline``) and the whole by a watchdog: ``--budget`` seconds at most.
Exit code 0 only when every target is met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiohttp
import nats
import nats.js

from bench.chaos import report as rp
from bench.chaos.kills import (
    NODE_KINDS,
    Kill,
    KillRecord,
    KillSelectionError,
    deployment_streams,
    find_active,
    find_standby,
    kill_problems,
    lease_pid,
    not_whole,
    parse_only,
    schedule,
    stream_leaders,
)
from bench.chaos.launcher import Launcher, Proc, pid_alive
from bench.chaos.load import LoadClient, LoadResult, Planned, plan, quiet
from bench.chaos.topology import ORDER_PAIRS, PAIRS, SEED, SIGNAL_PAIRS, Topology, from_env, service_env
from bus.client import Bus
from bus.embedded import free_port
from domain.synthetic import EventMarket
from schemas.subjects import Subjects

RESTART_DELAY_S = 0.5  # without standbys, a killed process is started again this long after
TAKEOVER_LIMIT_S = 20.0  # a standby that has not taken the lease this long after the active's kill: a failure
STOP_S = 10.0  # kept at the end of the budget for stopping everything (SIGTERM, 5 s, SIGKILL, the NATS nodes)
REPORT_S = 20.0  # kept before that for reading the streams and printing the table (a few seconds here)
LAST_LINE: list[str] = []  # the chaos line, printed by main() once everything is stopped: the very last line
INITIAL = {"USDT": Decimal("1000000000")}


class Deadline:
    """One point in time (monotonic) that every wait of a phase is bounded by."""

    def __init__(self, at: float) -> None:
        self.at = at

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def sooner(self, seconds: float) -> Deadline:
        return Deadline(min(self.at, time.monotonic() + seconds))


@dataclass(slots=True)
class Config:
    per_pair: int
    gap_s: float  # between two kills (the recovery time)
    budget_s: float  # the whole run, at most
    settle_s: float
    kills: list[Kill]
    topology: Topology
    keep: bool = False
    label: str = "full"

    @property
    def skipped(self) -> list[str]:
        """Kills of the issue's schedule this run leaves out, and why."""
        if self.topology.standbys:
            return []
        return ["a standby (this topology has none: CHAOS_STANDBYS=0)"]


def config(argv: list[str] | None = None) -> Config:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="at most 3 minutes: the same kills, less load (CHAOS_SHORT=1)")
    ap.add_argument("--per-pair", type=int, help="orders per pair (12 pairs)")
    ap.add_argument("--gap", type=float, help="seconds between two kills")
    ap.add_argument("--budget", type=float, help="seconds the whole run may take")
    ap.add_argument("--settle", type=float, help="seconds to wait for every order to end after the load")
    ap.add_argument("--kills", default="", help="only these (comma-separated actor names or kinds: gateway, "
                    "standby, nats-node, stream-leader, lease-leader)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (logs) even when all targets are met")
    a = ap.parse_args(argv)
    topo = from_env()
    full = schedule(topo.actors, topo.standbys)
    try:
        kills = parse_only(a.kills, full, topo.actors) if a.kills else full
    except KillSelectionError as e:
        ap.error(str(e))  # exit 2, never an empty schedule that "passes"
    short = a.short or os.environ.get("CHAOS_SHORT", "") not in ("", "0")
    if short:
        per_pair, gap, budget, settle, label = 25, 6.0, 180.0, 15.0, "short"
    else:
        per_pair, gap, budget, settle, label = 250, 20.0, 600.0, 30.0, "full"
    return Config(
        per_pair=a.per_pair or per_pair,
        gap_s=a.gap or gap,
        budget_s=a.budget or budget,
        settle_s=a.settle if a.settle is not None else settle,
        kills=kills,
        topology=topo,
        keep=a.keep,
        label=label if not (a.per_pair or a.gap or a.budget or a.settle is not None or a.kills) else f"{label}, custom",
    )


@dataclass(slots=True)
class Deployment:
    prefix: str
    gateways: list[str]
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def ensure_layout(url: str, prefix: str, deadline: float) -> None:
    while True:
        try:
            bus = await Bus.connect(url, name="chaos-setup", subjects=Subjects(prefix), replicas=3)
            try:
                await bus.ensure_layout()
                return
            finally:
                await bus.close()
        except Exception as e:
            if time.monotonic() > deadline:
                raise
            log(f"layout of {prefix} not made yet ({type(e).__name__}: {e}); again")
            await asyncio.sleep(1.0)


async def wait_healthy(http: aiohttp.ClientSession, launcher: Launcher, urls: list[str], deadline: float) -> None:
    todo = list(urls)
    while todo:
        for p in launcher.reap_unexpected():
            log(f"{p.name} exited by itself ({p.died[-1]}); started again")
        for u in list(todo):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(u + "/api/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        todo.remove(u)
        if todo and time.monotonic() > deadline:
            raise TimeoutError(f"not healthy in time: {', '.join(todo)} (logs in {launcher.logs})")
        if todo:
            await asyncio.sleep(0.3)


def not_settled_in(procs: list[Proc]) -> list[str]:
    """The actor processes of ``procs`` whose current start has not yet said ``ready:`` (active) or ``standing by:``
    (a standby following the lease, so able to take it over) in their log."""
    left = []
    for p in procs:
        if p.kind == "gateway" or p.kind == "reference":
            continue
        try:
            text = p.log.read_text(errors="replace")
        except OSError:
            text = ""
        current = text.rsplit("--- start ", 1)[-1]
        if "INFO    tbx              ready: " not in current and "standing by: " not in current:
            left.append(p.name)
    return left


async def wait_standing_by(launcher: Launcher, dep: Deployment, deadline: Deadline) -> list[str]:
    """Wait (until ``deadline``) until every actor process of ``dep`` is active or standing by: a kill before a
    standby follows the lease measures its start, not a failover. The ones still not there at ``deadline``."""
    while (left := not_settled_in(dep.procs)) and deadline.left() > 0:
        for p in launcher.reap_unexpected():
            log(f"{p.name} exited by itself ({p.died[-1]}); started again")
        await asyncio.sleep(min(0.3, max(0.01, deadline.left())))
    return left


async def portfolio(nc: nats.NATS, prefix: str, deadline: Deadline) -> dict[str, object]:
    """The ledger's portfolio ({} when it does not answer before ``deadline``)."""
    while deadline.left() > 0:
        try:
            msg = await nc.request(f"{prefix}.query.portfolio", b"{}", timeout=max(0.1, min(5.0, deadline.left())))
            body = json.loads(msg.data)
            if isinstance(body, dict) and "balances" in body:
                return body
        except Exception:
            pass
        await asyncio.sleep(min(0.5, deadline.left()))
    return {}


async def read_stream(js: nats.js.JetStreamContext, stream: str, deadline: Deadline) -> list[rp.Stored]:
    async with asyncio.timeout(deadline.left()):
        return await rp.read_stream(js, stream, timeout=max(0.1, deadline.left()))


async def settle(js: nats.js.JetStreamContext, nc: nats.NATS, prefix: str, cids: set[str], deadline: Deadline) -> bool:
    """Until every order of the plan that exists has ended and the ledger has booked every fill, or ``deadline``
    (every wait inside is bounded by it). True: settled."""
    s = Subjects(prefix)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline.left()):
            while True:
                with contextlib.suppress(Exception):
                    facts = rp.order_facts(
                        await read_stream(js, s.s_orders, deadline), await read_stream(js, s.s_fills, deadline)
                    )
                    open_ = [c for c in cids if c in facts and facts[c].status not in rp.TERMINAL]
                    fills = sum(len(f.fills) for f in facts.values())
                    booked = (await portfolio(nc, prefix, deadline)).get("fillsApplied")
                    if not open_ and booked == fills:
                        return True
                await asyncio.sleep(1.0)
    return False


def start_deployment(launcher: Launcher, url: str, prefix: str, topo: Topology | None) -> Deployment:
    """``topo`` None: the reference, one ``tbx run`` process; else every actor and gateway as its own."""
    env = service_env(url, prefix, str(launcher.root / prefix))
    dep = Deployment(prefix, [], env)
    if topo is None:
        port = free_port()
        dep.gateways.append(f"http://127.0.0.1:{port}")
        dep.procs.append(launcher.spawn("reference", "reference", ["run"], env | {"PORT": str(port)}))
        return dep
    for actor in topo.actors:
        for k in range(topo.instances):
            dep.procs.append(launcher.spawn(f"{actor}#{k}", actor, ["actor", actor], env))
    for g in range(topo.gateways):
        port = free_port()
        dep.gateways.append(f"http://127.0.0.1:{port}")
        dep.procs.append(launcher.spawn(f"gateway#{g}", "gateway", ["gateway"], env | {"PORT": str(port)}))
    return dep


async def do_kill(k: Kill, cfg: Config, launcher: Launcher, js: nats.js.JetStreamContext, prefix: str,
                  later: set[asyncio.Task[None]]) -> KillRecord:  # fmt: skip
    s = Subjects(prefix)
    cluster = launcher.cluster
    assert cluster is not None
    if k.kind in ("actor", "standby", "gateway"):
        if k.kind == "actor":
            p = await find_active(launcher, js, s, k.target)
        elif k.kind == "standby":
            p = await find_standby(launcher, js, s, k.target)
        else:
            p = next((g for g in launcher.of_kind("gateway") if g.alive), None)
        if p is None:
            why = (
                "no such process alive"
                if k.kind == "gateway"
                else "no live instance found (holding / not holding its lease)"
            )
            return KillRecord(k, time.time(), "-", error=why)
        pid = p.pid
        at = time.time()
        launcher.kill(p)
        rec = KillRecord(k, at, f"{p.name} pid {pid}")
        t = asyncio.create_task(aftermath(rec, p, pid, cfg, launcher, js, s))
        later.add(t)
        t.add_done_callback(later.discard)
        return rec
    if k.kind == "lease-leader":  # the lease buckets of the actors' roles (one per role)
        streams = [f"KV_{s.kv_lease(a)}" for a in cfg.topology.actors]
        what = "lease buckets"
    else:
        streams = [s.s_orders, s.s_fills, s.stream_name("HOPS"), s.s_signals, s.stream_name("POSITIONS")]
        what = "streams"
    leaders = await stream_leaders(js, streams)
    names = [n.name for n in cluster.servers]
    live = [n for n in names if cluster.servers[names.index(n)].alive]
    if k.kind in ("stream-leader", "lease-leader"):
        name = leaders.most_common(1)[0][0] if leaders else ""
        if name not in live:
            return KillRecord(k, time.time(), "-", error=f"no live leader of the {what} found ({dict(leaders)})")
    else:
        name = min(live, key=lambda n: leaders.get(n, 0))
    note = f"leads {leaders.get(name, 0)} of {len(streams)} {what}"
    i = names.index(name)
    pid = cluster.servers[i].pid
    at = time.time()
    await asyncio.to_thread(cluster.kill, i)
    return KillRecord(k, at, f"nats {name} pid {pid}", note)


async def aftermath(rec: KillRecord, p: Proc, pid: int | None, cfg: Config, launcher: Launcher,
                    js: nats.js.JetStreamContext, subjects: Subjects) -> None:  # fmt: skip
    """What becomes of a killed process: with a standby, the standby must take the lease by itself (the harness
    only watches), and the killed slot is started again later as a new standby (an operator's process manager);
    without one, the harness starts it again after RESTART_DELAY_S (the only way the stage comes back). A gateway
    (the other one serves) and a killed standby come back after half a gap. Never raises: a failure is the
    record's ``error``."""
    t0 = time.monotonic()
    try:
        if rec.kill.kind == "actor" and cfg.topology.standbys:
            target = max(2.0, min(cfg.gap_s * 0.8, 15.0))  # the failover target (FAILOVER_MS 2 s, the check's poll)
            restart_at = t0 + cfg.gap_s / 2  # the killed slot comes back as a new standby then, taken over or not
            taker: Proc | None = None
            while time.monotonic() - t0 < TAKEOVER_LIMIT_S:
                holder = await lease_pid(js, subjects, rec.kill.target)
                if holder is not None and holder != pid and (taker := launcher.by_pid(holder)) is not None:
                    break
                taker = None
                if not p.alive and time.monotonic() >= restart_at:
                    launcher.restart(p)
                await asyncio.sleep(0.05)
            took = time.monotonic() - t0
            if taker is None:
                rec.error = f"no standby took the lease within {TAKEOVER_LIMIT_S:.0f} s"
            else:
                rec.after = f"{taker.name} took the lease {took * 1000:.0f} ms after the kill"
                if took > target:
                    rec.slow = f"the lease taken {took * 1000:.0f} ms after the kill (target {target * 1000:.0f} ms)"
            await asyncio.sleep(max(0.0, restart_at - time.monotonic()))
            if not p.alive:
                launcher.restart(p)
            again = f"started again by the harness as a standby at +{restart_at - t0:.1f} s"
            rec.after = f"{rec.after}; {again}" if rec.after else again
        elif rec.kill.kind == "actor":
            await asyncio.sleep(RESTART_DELAY_S)
            launcher.restart(p)
            rec.after = f"no standby: started again by the harness {RESTART_DELAY_S} s after"
        else:
            await asyncio.sleep(cfg.gap_s / 2)
            launcher.restart(p)
            what = "the other gateway served" if rec.kill.kind == "gateway" else "the active went on"
            rec.after = f"{what}; started again by the harness at +{time.monotonic() - t0:.1f} s"
    except Exception as e:
        rec.error = rec.error or f"{p.name} not started again: {type(e).__name__}: {e}"


async def chaos_kills(cfg: Config, launcher: Launcher, js: nats.js.JetStreamContext, prefix: str,
                      records: list[KillRecord], deadline: Deadline) -> None:  # fmt: skip
    """Each kill of the schedule in turn. A kill that fails is recorded with its error (a miss) and the schedule
    goes on; one not reached before ``deadline`` is missing from ``records`` (a miss too)."""
    later: set[asyncio.Task[None]] = set()
    cluster = launcher.cluster
    assert cluster is not None
    await asyncio.sleep(min(cfg.gap_s / 2, deadline.left()))  # the load runs undisturbed for a moment first
    for n, k in enumerate(cfg.kills, 1):
        if deadline.left() <= 0:
            break
        try:
            rec = await asyncio.wait_for(do_kill(k, cfg, launcher, js, prefix, later), max(0.1, deadline.left()))
        except Exception as e:
            rec = KillRecord(k, time.time(), "-", error=f"{type(e).__name__}: {e}")
        records.append(rec)
        log(f"killed {k.label}: {rec.victim} {rec.note}" if rec.ok else f"kill of {k.label} FAILED: {rec.error}")
        half = k.kind in NODE_KINDS
        await asyncio.sleep(min(cfg.gap_s / 2 if half else cfg.gap_s, deadline.left()))
        t_down = time.monotonic()
        for i, node in enumerate(cluster.servers):  # a NATS node comes back after half the gap, as an operator's
            if not node.alive:
                try:
                    await asyncio.to_thread(cluster.restart, i)
                    log(f"nats {node.name} started again")
                    if half:
                        rec.after = f"started again by the harness {cfg.gap_s / 2:.1f} s after"
                except Exception as e:
                    rec.error = f"nats {node.name} not started again: {type(e).__name__}: {e}"
                    log(rec.error)
        if half:
            await asyncio.sleep(min(max(0.0, cfg.gap_s / 2 - (time.monotonic() - t_down)), deadline.left()))
            # one kill at a time: the next only once every stream and bucket has a leader and its replicas are
            # current again (a NATS node killed while the last one's streams still elect or catch up is two faults)
            streams = deployment_streams(Subjects(prefix), cfg.topology.actors)
            waited = await until_whole(js, streams, deadline.sooner(cfg.gap_s)) if n < len(cfg.kills) else ""
            if waited:
                rec.after = f"{rec.after}; {waited}" if rec.after else waited
    if later:
        await asyncio.gather(*later)


async def until_whole(js: nats.js.JetStreamContext, streams: list[str], deadline: Deadline) -> str:
    """Wait (until ``deadline``: at most a gap) until no stream of ``streams`` lacks a leader or a current replica.
    What the wait was, for the kill's record ("" when there was none)."""
    t0 = time.monotonic()
    while True:
        left = await not_whole(js, streams)
        took = time.monotonic() - t0
        if not left:
            return f"the cluster whole again {took:.1f} s later" if took >= 0.5 else ""
        if deadline.left() <= 0:
            log(f"the cluster not whole {took:.0f} s after the restart: {', '.join(left)}; the schedule goes on")
            return f"NOT whole again within {took:.0f} s ({', '.join(left)})"
        await asyncio.sleep(min(0.25, max(0.01, deadline.left())))


async def reaper(launcher: Launcher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for p in launcher.reap_unexpected():
            log(f"{p.name} exited by itself ({p.died[-1]}); started again (a miss: exits not caused by a kill)")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


@dataclass(slots=True)
class Reference:
    """The undisturbed run: its load, its order counts, its fills and books."""

    load: LoadResult
    counts: rp.Counts
    fills: dict[str, list[rp.FillKey]]
    books: dict[str, object]
    expected_step: dict[str, int]  # client order id -> the step of its pair's book it filled at
    settled: bool


def expected_steps(orders: dict[str, list[Planned]], facts: dict[str, rp.OrderFacts]) -> dict[str, int]:
    """Each planned order's step (the number of its pair's earlier orders filled), as the reference filled them."""
    out: dict[str, int] = {}
    for steps in orders.values():
        step = 0
        for p in steps:
            out[p.order_cid] = step
            f = facts.get(p.order_cid)
            step += f is not None and f.status == "filled"
    return out


def outcomes_of(orders: dict[str, list[Planned]], load: LoadResult) -> dict[str, str]:
    sent = {x.planned.order_cid: x for x in load.sent}
    return {p.order_cid: sent[p.order_cid].outcome for steps in orders.values() for p in steps if p.order_cid in sent}


async def main_async(cfg: Config, root: Path) -> int:
    t_start = time.monotonic()
    end = Deadline(t_start + cfg.budget_s - STOP_S)  # the watchdog's moment (main): then only the stop is left
    report_by = Deadline(end.at - 2.0)
    hard = Deadline(report_by.at - REPORT_S)  # the load and the settle end by then
    launcher = Launcher(root)
    orders = plan(ORDER_PAIRS, SIGNAL_PAIRS, cfg.per_pair, SEED)
    market = EventMarket(PAIRS, SEED)
    n_orders = sum(len(v) for v in orders.values())
    cids = {p.order_cid for steps in orders.values() for p in steps}
    log(f"{cfg.label} run: {n_orders} orders on {len(orders)} pairs, {len(cfg.kills)} kills every {cfg.gap_s:.0f} s, "
        f"{cfg.topology.describe()}; logs in {launcher.logs}")  # fmt: skip
    for what in cfg.skipped:
        log(f"skipped: {what}")
    try:
        url = await asyncio.to_thread(launcher.start_cluster, 3)
        log(f"3-node cluster up: {url}")
        ref_prefix, chaos_prefix = "ref" + uuid.uuid4().hex[:6], "chaos" + uuid.uuid4().hex[:6]
        await ensure_layout(url, ref_prefix, hard.at)
        await ensure_layout(url, chaos_prefix, hard.at)
        ref_dep = start_deployment(launcher, url, ref_prefix, None)
        dep = start_deployment(launcher, url, chaos_prefix, cfg.topology)
        nc = await nats.connect(servers=url.split(","), name="chaos-report", max_reconnect_attempts=-1, error_cb=quiet,
                                reconnect_time_wait=0.2)  # fmt: skip
        js = nc.jetstream(timeout=10)
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, launcher, ref_dep.gateways, hard.at)
            log("reference deployment healthy: its load (undisturbed)")
            ref_client = LoadClient(ref_dep.gateways, url, ref_prefix, market, orders)
            ref_load = await bounded(ref_client, hard)
            ref = await reference(js, nc, ref_prefix, orders, ref_load, cids, hard.sooner(cfg.settle_s))
            # the reference stopped and gone first: its shutdown would load the 2 cores while the first kill is timed
            await asyncio.gather(*(asyncio.to_thread(launcher.kill, p, signal.SIGTERM) for p in ref_dep.procs))
            log(f"reference done in {ref_load.ended - ref_load.started:.0f} s; the chaos deployment next")
            await wait_healthy(http, launcher, dep.gateways, hard.at)
            unready = await wait_standing_by(launcher, dep, hard.sooner(cfg.settle_s + 60))
            if unready:
                log(f"not standing by before the kills: {', '.join(unready)} (a miss)")
        span = cfg.gap_s * (len(cfg.kills) + 1)
        client = LoadClient(dep.gateways, url, chaos_prefix, market, orders, rate=n_orders / span)
        records: list[KillRecord] = []
        stop_reaper = asyncio.Event()
        reap = asyncio.create_task(reaper(launcher, stop_reaper))
        load_by = Deadline(hard.at - cfg.settle_s)
        kills = asyncio.create_task(chaos_kills(cfg, launcher, js, chaos_prefix, records, load_by))
        load = await bounded(client, load_by)
        try:
            await asyncio.wait_for(kills, max(0.1, hard.left()))
        except TimeoutError:
            log("the kill schedule did not end in time (the kills not applied are misses)")
        log(f"load done in {load.ended - load.started:.0f} s; settling (at most {cfg.settle_s:.0f} s)")
        settled = await settle(js, nc, chaos_prefix, cids, hard)
        stop_reaper.set()
        await reap
        code = await final_report(cfg, js, nc, chaos_prefix, orders, load, records, ref, launcher, market, settled,
                                  report_by, unready)  # fmt: skip
        await nc.close()
        return code
    finally:
        pids = launcher.stop_all()
        left = [p for p in pids if pid_alive(p)]
        if left:
            log(f"STILL RUNNING after the stop: pids {left}")
        log(f"stopped {len(pids)} processes by pid (took {time.monotonic() - t_start:.0f} s in all)")


async def reference(js: nats.js.JetStreamContext, nc: nats.NATS, prefix: str, orders: dict[str, list[Planned]],
                    load: LoadResult, cids: set[str], deadline: Deadline) -> Reference:  # fmt: skip
    """The undisturbed run's outcome, read once it has settled (or ``deadline``)."""
    settled = await settle(js, nc, prefix, cids, deadline)
    s = Subjects(prefix)
    facts = rp.order_facts(await read_stream(js, s.s_orders, deadline.sooner(30)),
                           fills := await read_stream(js, s.s_fills, deadline.sooner(30)))  # fmt: skip
    return Reference(
        load=load,
        counts=rp.count_orders(outcomes_of(orders, load), facts),
        fills=rp.fills_by_order(fills),
        books=rp.ledger_books(await portfolio(nc, prefix, deadline.sooner(20))),
        expected_step=expected_steps(orders, facts),
        settled=settled,
    )


async def bounded(client: LoadClient, until: Deadline) -> LoadResult:
    """The load, stopped (what was not sent counts as stalled) when ``until`` comes."""
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(asyncio.shield(task), max(0.1, until.left()))
    except TimeoutError:
        client.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15.0)
    return client.result


def touch_of(market: EventMarket):  # type: ignore[no-untyped-def]
    def touch(pair: str, side: str, step: int) -> Decimal:
        b = market.book(pair, {pair: step}, 0)
        return (b.asks if side == "buy" else b.bids)[0][0]

    return touch


async def final_report(cfg: Config, js: nats.js.JetStreamContext, nc: nats.NATS, prefix: str,
                       orders: dict[str, list[Planned]], load: LoadResult, kills: list[KillRecord], ref: Reference,
                       launcher: Launcher, market: EventMarket, settled: bool, deadline: Deadline,
                       unready: list[str]) -> int:  # fmt: skip
    s = Subjects(prefix)
    ev_orders = await read_stream(js, s.s_orders, deadline)
    fills = await read_stream(js, s.s_fills, deadline)
    hops = await read_stream(js, s.stream_name("HOPS"), deadline)
    positions = await read_stream(js, s.stream_name("POSITIONS"), deadline)
    signal_events = await read_stream(js, s.stream_name("SIGNAL_EVENTS"), deadline)
    snapshot = await portfolio(nc, prefix, deadline)
    facts = rp.order_facts(ev_orders, fills)
    sent = {x.planned.order_cid: x for x in load.sent}
    counts = rp.count_orders(outcomes_of(orders, load), facts)
    # books: against the fill log, and against the undisturbed run
    books = rp.ledger_books(snapshot)
    from_fills = rp.books_from_fills(fills, INITIAL)
    vs_log = rp.balances_differ(books["balances"], from_fills)  # type: ignore[arg-type]
    vs_ref = rp.compare_books(books, ref.books)
    books_equal = not vs_log and not vs_ref and bool(snapshot) and bool(ref.books)
    fill_diffs = rp.compare_fills(rp.fills_by_order(fills), ref.fills, ref.expected_step, touch_of(market))
    # stages: when work waited at each and when it came out
    end = time.time()
    approved, reports, fill_at, pos_at, sig_at = {}, {}, {}, {}, {}
    for m in hops:
        if ".hop.approved." in m.subject:
            cid = str((m.body.get("request") or {}).get("clientOrderId"))  # type: ignore[union-attr]
            approved.setdefault(cid, m.at)
        elif ".hop.reports." in m.subject:
            reports.setdefault(str(m.body.get("clientOrderId")), (m.at, m.body.get("tradeId")))
    first_fill: dict[str, float] = {}
    for m in fills:
        fill_at.setdefault(str(m.body.get("fillId")), m)
        first_fill.setdefault(str(m.body.get("clientOrderId")), m.at)
    for m in positions:
        if m.msg_id and m.msg_id.startswith("pos:"):
            pos_at.setdefault(m.msg_id[4:], m.at)
    for m in signal_events:
        sig_at.setdefault(str(m.body.get("signalId")), m.at)
    stages = ("gateway", "signal-intake", "risk-gate", "order-router", "fill-tracker", "portfolio-ledger", "md-feed")
    items: dict[str, list[tuple[float, float | None]]] = {k: [] for k in stages}
    for x in load.sent:
        p = x.planned
        if p.via == "rest":
            items["gateway"].append((x.first_sent, x.first_answer))
            done = approved.get(p.order_cid) or (x.answered if x.outcome == "denied" else None)
            items["risk-gate"].append((x.first_sent, done))
        else:
            done = min(filter(None, (sig_at.get(p.cid), x.first_answer)), default=None)
            items["signal-intake"].append((x.first_sent, done))
        if p.order_cid in approved:
            rep = reports.get(p.order_cid)
            items["order-router"].append((approved[p.order_cid], rep[0] if rep else None))
            if rep and rep[1]:  # a trade reported: its fill, stored by the fill-tracker
                items["fill-tracker"].append((rep[0], first_fill.get(p.order_cid)))
    for fid, f in fill_at.items():
        items["portfolio-ledger"].append((f.at, pos_at.get(fid)))
        if f.body.get("orderComplete"):
            x = sent.get(str(f.body.get("clientOrderId")))
            if x is not None:
                items["md-feed"].append((f.at, x.step_seen))
    gaps = [g for stage, its in items.items() for g in rp.longest_gaps(stage, its, end)]
    worst = {stage: max((g.ms for g in gaps if g.stage == stage), default=0) for stage in items}
    max_unavailable = max(worst.values(), default=0)
    lat_all = [x.answered - x.first_sent for x in load.sent if x.answered]
    lat_fail = [x.answered - x.first_sent for x in load.sent if x.answered
                and any(0 <= x.first_sent - k.at <= rp.FAILOVER_WINDOW_S for k in kills)]  # fmt: skip
    died = [f"{p.name}: {', '.join(p.died)}" for p in launcher.procs if p.died]
    n_planned = sum(len(v) for v in orders.values())
    misses = rp.order_misses(counts, n_planned)
    misses += rp.order_misses(ref.counts, n_planned, "undisturbed run: ")
    if ref.load.stalled:
        misses.append(f"undisturbed run: {len(ref.load.stalled)} pairs stalled")
    if not ref.settled:
        misses.append("undisturbed run: did not settle")
    if not books_equal:
        misses.append("books differ")
    if max_unavailable > rp.MAX_UNAVAILABLE_MS:
        misses.append(f"a stage was unavailable {max_unavailable} ms (> {rp.MAX_UNAVAILABLE_MS})")
    if load.stalled:
        misses.append(f"{len(load.stalled)} pairs stalled")
    if not settled:
        misses.append("orders still open or fills not booked after the settle time")
    misses += [f"kill {p}" for p in kill_problems(cfg.kills, kills)]
    misses += [f"kill {k.kill.label}: {k.slow}" for k in kills if k.slow]
    if unready:
        misses.append(f"not active or standing by before the kills: {', '.join(unready)}")
    if died:
        misses.append(f"{len(died)} processes exited by themselves (not killed)")
    lines = table(cfg, counts, books_equal, vs_log, vs_ref, fill_diffs, worst, gaps, kills, lat_all, lat_fail, load,
                  ref, died, len(ev_orders), len(fills))  # fmt: skip
    print("\n".join(lines), flush=True)
    if misses:
        print("targets missed: " + "; ".join(misses), flush=True)
    else:
        print("targets met", flush=True)
    LAST_LINE.append(
        rp.last_line(
            counts.lost, counts.duplicated + counts.fills_duplicated, counts.stuck, books_equal, max_unavailable
        )
    )  # fmt: skip  (printed last, after the stop)
    return 1 if misses else 0


def table(cfg, counts, books_equal, vs_log, vs_ref, fill_diffs, worst, gaps, kills, lat_all, lat_fail, load, ref,
          died, n_events, n_fills) -> list[str]:  # type: ignore[no-untyped-def]  # fmt: skip
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f} ms"

    out = ["", f"== chaos run ({cfg.label}): {cfg.topology.describe()}, 3-node JetStream cluster, NATS_REPLICAS=3 =="]
    out.append(f"{'orders submitted':34} {counts.submitted}")
    out.append(f"{'  accepted (201 / executed)':34} {counts.accepted}")
    out.append(f"{'  denied (4xx / rejected)':34} {counts.denied} {_ex(counts, 'denied')}")
    out.append(f"{'  unanswered (retries ran out)':34} {counts.unanswered}")
    out.append(f"{'  filled (all fills in the log)':34} {counts.filled}")
    out.append(f"{'  lost':34} {counts.lost} {_ex(counts, 'lost')}")
    out.append(
        f"{'  duplicated':34} {counts.duplicated} (not planned: {counts.unexpected}) {_ex(counts, 'duplicated')}"
    )
    out.append(f"{'  stuck':34} {counts.stuck} {_ex(counts, 'stuck')}")
    out.append(f"{'fills duplicated':34} {counts.fills_duplicated} {_ex(counts, 'fills duplicated')}")
    out.append(f"{'books = fill log':34} {'yes' if not vs_log else 'no: ' + '; '.join(vs_log[:3])}")
    out.append(f"{'books = undisturbed run':34} {'yes' if not vs_ref else 'no: ' + '; '.join(vs_ref[:3])}")
    other_step = "  fills at another step's book"
    out.append(f"{other_step:34} {len(fill_diffs.other_step)} {'; '.join(fill_diffs.other_step[:3])}")
    out.append(f"{'  fills otherwise different':34} {len(fill_diffs.other)} {'; '.join(fill_diffs.other[:3])}")
    out.append(f"{'books equal':34} {'yes' if books_equal else 'no'}")
    out.append(f"{'p99 latency (all / during failover)':34} {ms(rp.p99(lat_all))} / {ms(rp.p99(lat_fail))} "
               f"(REST order or signal, first send -> answer, retries included)")  # fmt: skip
    out.append(f"{'pairs stalled':34} {len(load.stalled)} {'; '.join(load.stalled[:3])}")
    rc = ref.counts
    out.append(f"{'undisturbed run':34} {rc.submitted} sent, {rc.accepted} accepted, {rc.denied} denied, "
               f"{rc.unanswered} unanswered, {rc.filled} filled, {len(ref.load.stalled)} pairs stalled")  # fmt: skip
    took = f"{load.ended - load.started:.0f} s / {ref.load.ended - ref.load.started:.0f} s"
    out.append(f"{'load (chaos / undisturbed)':34} {took}; {n_events} order events, {n_fills} fills stored")
    out.append("longest time a stage was unavailable (work waiting, nothing done):")
    for stage, v in sorted(worst.items(), key=lambda kv: -kv[1]):
        out.append(f"  {stage:32} {v} ms")
    out.append("kills (each: its victim, the longest stall credited to it, what became of the victim):")
    credited = rp.credit_stalls([k.at for k in kills], gaps)
    order = sorted(range(len(kills)), key=lambda i: kills[i].at)
    for rank, i in enumerate(order):
        k = kills[i]
        top = max(credited.get(rank, []), key=lambda g: g.ms, default=None)
        what = f"{top.stage} {top.ms} ms" if top else "no stage stalled"
        after = f"FAILED: {k.error}" if not k.ok else k.after or "-"
        out.append(f"  {k.kill.label:26} {k.victim:28} {what:26} {after}")
    if credited.get(-1):
        top = max(credited[-1], key=lambda g: g.ms)
        out.append(f"  {'(before the first kill)':26} {'':28} {top.stage} {top.ms} ms")
    for what in cfg.skipped:
        out.append(f"  skipped: {what}")
    out.append(f"{'exits not caused by a kill':34} {len(died)} {'; '.join(died[:4])}")
    return out


def _ex(c: rp.Counts, what: str) -> str:
    ex = c.examples.get(what)
    return f"(e.g. {', '.join(ex)})" if ex else ""


async def watchdog(cfg: Config, root: Path) -> int:
    """The whole run within ``--budget`` (less STOP_S for the stop): past that it is cancelled - its ``finally``
    stops every process - and fails (exit 2; no chaos line: its numbers were never made)."""
    try:
        return await asyncio.wait_for(main_async(cfg, root), max(1.0, cfg.budget_s - STOP_S))
    except TimeoutError:
        log(f"the run's time ran out ({cfg.budget_s:.0f} s budget): stopped before its report")
        return 2


def main(argv: list[str] | None = None) -> int:
    cfg = config(argv)
    root = Path(tempfile.mkdtemp(prefix="tbx-chaos-"))

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    code = 1
    try:
        code = asyncio.run(watchdog(cfg, root))
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        code = 130
    except Exception as e:
        log(f"the run failed: {type(e).__name__}: {e}")
        code = 2
    finally:
        if code == 0 and not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"logs kept in {root / 'logs'}")
        if LAST_LINE:
            print(LAST_LINE[-1], flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
