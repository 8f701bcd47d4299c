"""What /api/health reports: actor heartbeats (heard on ``tbx.health.*``) and the family's services."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

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
from schemas.subjects import ACTORS

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

        def rank(b: Heartbeat) -> tuple[bool, bool, bool, int]:
            fresh = now - b.ts <= STALE_MS
            active = b.role != "standby"
            return (fresh and active, active and b.status == "running", fresh, b.ts)

        return max(self.instances[actor].values(), key=rank)

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
        """Each venue as its session last reported it (through the order-router's heartbeat)."""
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
            if self.instances.get(name):
                self.beats[name] = self._chosen(name, now)
            hb = self.beats.get(name)
            if hb is None:
                actors[name] = ActorHealth(status="missing", last_heartbeat=None, age_ms=None)
                down.append(name)
                continue
            age = now - hb.ts
            status = hb.status if age <= STALE_MS else "stale"
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
