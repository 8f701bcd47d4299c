"""Which processes a chaos run starts, and the settings they share."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.service_env import ACCEPT_EVERY_ORDER
from schemas.subjects import ACTORS

# Standbys per actor: one active + one hot standby each (the leadership lease, issue 19 part B). CHAOS_STANDBYS=0 runs
# one instance per actor (each killed one is then started again by the harness: its stage has no other way back).
DEFAULT_STANDBYS = 1
GATEWAYS = 2

ORDER_PAIRS = ("BTC_USDT", "ETH_USDT", "SOL_USDT", "XMR_USDT", "LTC_USDT", "DOGE_USDT", "BEL_USDT", "RVN_USDT")
SIGNAL_PAIRS = ("AAA_USDT", "BBB_USDT", "CCC_USDT", "DDD_USDT")
PAIRS = ORDER_PAIRS + SIGNAL_PAIRS
SEED = 19
BOOK_INTERVAL_MS = 100


@dataclass(frozen=True, slots=True)
class Topology:
    standbys: int = DEFAULT_STANDBYS  # per actor, beside its active instance
    gateways: int = GATEWAYS
    actors: tuple[str, ...] = tuple(ACTORS)

    @property
    def instances(self) -> int:
        return 1 + self.standbys

    def describe(self) -> str:
        each = "1 instance" if not self.standbys else f"1 active + {self.standbys} standby"
        return f"{len(self.actors)} actors x {each}, {self.gateways} gateways"


def from_env() -> Topology:
    raw = os.environ.get("CHAOS_STANDBYS", "").strip()
    return Topology(standbys=int(raw) if raw else DEFAULT_STANDBYS)


def service_env(nats_url: str, prefix: str, data_dir: str, *, replicas: int = 3) -> dict[str, str]:
    """The settings every process of one deployment gets (nothing inherited from the shell's TBX settings)."""
    return {
        "NATS_URL": nats_url,
        "NATS_REPLICAS": str(replicas),
        "BUS_PREFIX": prefix,
        "DATA_DIR": data_dir,
        **ACCEPT_EVERY_ORDER,
        "PAIRS": ",".join(PAIRS),
        "SYNTHETIC_CLOCK": "event",
        "MARKET_DATA_SEED": str(SEED),
        "MARKET_DATA_INTERVAL": str(BOOK_INTERVAL_MS),
        "INITIAL_BALANCE": "1000000000",
        "LOG_LEVEL": "INFO",
    }
