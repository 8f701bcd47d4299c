"""What /api/health reports: actor heartbeats (heard on ``tbx.health.*``) and the family's services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import aiohttp
import msgspec

from bus.client import Bus, Envelope
from config.settings import Settings
from config.venues import venue_configs
from schemas.messages import Heartbeat, VenueState, now_ms
from schemas.rest import (
    ActorHealth,
    EngineHealth,
    ExchangeHealth,
    Health,
    InstanceHealth,
    RateLimit,
    ServiceHealth,
)
from schemas.subjects import ACTORS, PARTITIONED

STALE_MS = 3000
FORGET_MS = 30_000  # an instance not heard this long is no longer listed (killed, stopped, moved)
VERSION = "0.1.0"


def expected_actors(settings: Settings) -> tuple[str, ...]:
    return tuple(a for a in ACTORS if not (a == "md-feed" and settings.MARKET_DATA == "none"))


class HealthBook:
    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.beats: dict[str, Heartbeat] = {}  # each actor's beat that /api/health is about (its active instance)
        self.instances: dict[str, dict[str, Heartbeat]] = {}  # actor -> instance -> its last beat
        self.services: dict[str, ServiceHealth] = {
            name: ServiceHealth(status="not_configured", last_check=None) for name in ("core", "ml", "risk")
        }
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.bus.subscribe(self.bus.subjects.health(), Heartbeat, self._on_beat)
        urls = self._urls()
        if any(urls.values()):
            self._task = asyncio.create_task(self._check_services(urls))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _urls(self) -> dict[str, str]:
        s = self.settings
        return {"core": s.CORE_SERVICE_URL, "ml": s.ML_SERVICE_URL, "risk": s.RISK_SERVICE_URL}

    async def _on_beat(self, hb: Heartbeat, env: Envelope) -> None:
        seen = self.instances.setdefault(hb.actor, {})
        seen[hb.instance] = hb
        now = now_ms()
        for instance, old in list(seen.items()):
            if now - old.ts > FORGET_MS:
                del seen[instance]
        self.beats[hb.actor] = self._chosen(hb.actor, now)

    def _chosen(self, actor: str, now: int) -> Heartbeat:
        """The instance /api/health reports an actor by: a live active one (running first), else the last heard.
        A beat without a role comes from an instance that takes no lease: active. Standbys never hide an active
        instance, and never make the actor unhealthy (it is up when an active instance heartbeats)."""
        return chosen(self.instances[actor].values(), now)

    def partitioned(self, actor: str) -> bool:
        return actor in PARTITIONED and self.settings.PARTITIONS > 1

    def _per_partition(self, actor: str, now: int) -> list[Heartbeat | None]:
        """A partitioned actor (PARTITIONS > 1): the beat of each partition 0..N-1 (None: none heard), each chosen
        among that partition's instances only - one partition's instance never covers for another's."""
        seen = self.instances.get(actor, {}).values()
        out: list[Heartbeat | None] = []
        for k in range(self.settings.PARTITIONS):
            mine = [b for b in seen if b.partition == k]
            out.append(chosen(mine, now) if mine else None)
        return out

    async def _check_services(self, urls: dict[str, str]) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                for name, url in urls.items():
                    if not url:
                        continue
                    try:
                        async with http.get(f"{url}/api/health") as r:
                            ok = r.status == 200
                            self.services[name] = ServiceHealth(
                                status="healthy" if ok else "unhealthy",
                                last_check=now_ms(),
                                url=url,
                                error=None if ok else f"HTTP {r.status}",
                            )
                    except (aiohttp.ClientError, TimeoutError) as e:
                        self.services[name] = ServiceHealth(
                            status="unhealthy", last_check=now_ms(), url=url, error=str(e) or type(e).__name__
                        )
                await asyncio.sleep(5.0)

    def _exchanges(self, router: Heartbeat | None, router_up: bool) -> dict[str, ExchangeHealth]:
        """Each venue as its session last reported it (through the order-router's heartbeat; partitioned, the
        partitions' beats merged: disconnected when any partition says so)."""
        states = {v.name: v for v in (router.venues or [])} if router else {}
        configured = {v.name: v for v in venue_configs(self.settings)}
        names = [*configured, *(n for n in states if n not in configured)]
        out: dict[str, ExchangeHealth] = {}
        for name in names:
            v = states.get(name) or VenueState(name=name)
            up = router_up and v.connected is not False
            used = v.rate_limit_used
            out[name] = ExchangeHealth(
                status="connected" if up else "disconnected",
                last_ping=router.ts if router else None,
                rate_limit=RateLimit(remaining=None if used is None else max(0, round(100 * (1 - used)))),
                connected=v.connected if router_up else False,
                last_latency_ms=v.last_latency_ms,
                rate_limit_used=used,
                update_mode=v.update_mode if router else None,
                last_error=v.last_error,
                last_error_at=v.last_error_at,
                paper=configured[name].paper if name in configured else name == "paper",
                ccxt_id=configured[name].ccxt_id if name in configured else None,
            )
        return out

    def report(self) -> Health:
        now = now_ms()
        actors: dict[str, ActorHealth] = {}
        down = []
        for name in expected_actors(self.settings):
            missing: list[int] = []
            if self.partitioned(name):
                # up only when every partition 0..N-1 has a fresh active instance; the stats are the partitions'
                # sum, a venue disconnected when any partition says so
                parts = self._per_partition(name, now)
                missing = [k for k, b in enumerate(parts) if b is None]
                heard = [b for b in parts if b is not None]
                if heard:
                    self.beats[name] = merged(heard, now)
                else:
                    self.beats.pop(name, None)
            elif self.instances.get(name):
                self.beats[name] = self._chosen(name, now)
            hb = self.beats.get(name)
            if hb is None:
                actors[name] = ActorHealth(status="missing", last_heartbeat=None, age_ms=None)
                down.append(name)
                continue
            age = now - hb.ts
            status = "missing" if missing else hb.status if age <= STALE_MS else "stale"
            if status not in ("running",):
                down.append(name)
            instances = [
                InstanceHealth(
                    instance=b.instance,
                    role=b.role or "active",
                    partition=b.partition,
                    status=b.status if now - b.ts <= STALE_MS else "stale",
                    age_ms=now - b.ts,
                )
                for b in sorted(self.instances.get(name, {}).values(), key=lambda b: (b.role == "standby", -b.ts))
                if now - b.ts <= FORGET_MS
            ]
            actors[name] = ActorHealth(
                status=status,
                last_heartbeat=hb.ts,
                age_ms=age,
                instance=hb.instance,
                stats=hb.stats,
                instances=instances,
            )
        router = self.beats.get("order-router")
        stats = router.stats if router else {}
        router_up = "order-router" not in down
        return Health(
            status="healthy" if not down else "unhealthy",
            service="trading-bot-execution",
            version=VERSION,
            mode="live" if self.settings.LIVE_TRADING else "paper",
            exchanges=self._exchanges(router, router_up),
            services=dict(self.services),
            execution_engine=EngineHealth(
                status="operational" if not down else ("degraded" if router_up else "down"),
                orders_processed=int(stats.get("ordersProcessed", 0)),
                success_rate=float(stats.get("successRate", 100.0)),
            ),
            actors=actors,
            nats={"connected": self.bus.nc.is_connected, "prefix": self.settings.BUS_PREFIX},
            timestamp=now,
        )


def chosen(beats: Iterable[Heartbeat], now: int) -> Heartbeat:
    """Of an actor's (or a partition's) instances, the one reported: a live active one (running first), else the
    last heard."""

    def rank(b: Heartbeat) -> tuple[bool, bool, bool, int]:
        fresh = now - b.ts <= STALE_MS
        active = b.role != "standby"
        return (fresh and active, active and b.status == "running", fresh, b.ts)

    return max(beats, key=rank)


def merged(beats: list[Heartbeat], now: int) -> Heartbeat:
    """One beat for the partitions of a partitioned actor (each partition's chosen beat, in partition order): as old
    as the oldest (stale when one is), running only when every one is (else the first that is not), the stats
    summed (``successRate`` again from the summed filled and rejected), each venue as the partitions say together
    (not connected when one says so; the highest latency and share of the request budget; the latest error)."""
    first = beats[0]
    status = next((b.status for b in beats if b.status != "running" or now - b.ts > STALE_MS), "running")
    stats: dict[str, int | float | str] = {}
    for b in beats:
        for key, value in b.stats.items():
            have = stats.get(key)
            if isinstance(value, (int, float)) and isinstance(have, (int, float)):
                stats[key] = have + value
            elif have is None:
                stats[key] = value
    filled, rejected = stats.get("ordersFilled"), stats.get("ordersRejected")
    if "successRate" in stats and isinstance(filled, (int, float)) and isinstance(rejected, (int, float)):
        done = filled + rejected  # (the order-router's own rate: filled of filled or rejected, of every partition)
        stats["successRate"] = round(100.0 * filled / done, 2) if done else 100.0
    venues: dict[str, VenueState] = {}
    for b in beats:
        for v in b.venues or ():
            venues[v.name] = v if v.name not in venues else _both(venues[v.name], v)
    oldest = min(beats, key=lambda b: b.ts)
    return msgspec.structs.replace(
        first, ts=oldest.ts, started_at=min(b.started_at for b in beats), status=status, stats=stats,  # type: ignore[arg-type]
        venues=list(venues.values()) if any(b.venues is not None for b in beats) else None,
    )  # fmt: skip


def _both(a: VenueState, b: VenueState) -> VenueState:
    """A venue as two partitions' sessions report it."""
    connected = False if False in (a.connected, b.connected) else (None if None in (a.connected, b.connected) else True)
    err = a if (a.last_error_at or 0) >= (b.last_error_at or 0) else b
    return VenueState(
        name=a.name, connected=connected,
        last_latency_ms=max((x for x in (a.last_latency_ms, b.last_latency_ms) if x is not None), default=None),
        rate_limit_used=max((x for x in (a.rate_limit_used, b.rate_limit_used) if x is not None), default=None),
        update_mode=a.update_mode, last_error=err.last_error, last_error_at=err.last_error_at,
        keys_refused=a.keys_refused or b.keys_refused,
    )  # fmt: skip
