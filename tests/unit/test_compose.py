"""docker-compose.yml cannot run here (no Docker engine), so what it says is checked instead: every actor runs
with a standby, the gateway twice, on a 3-node NATS cluster with 3 replicas, and each service's command and
settings are ones tbx itself accepts."""

from __future__ import annotations

from pathlib import Path

import yaml

from config.settings import load_settings
from schemas.subjects import ACTORS
from tbx.cli import parser

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_actor_runs_with_a_hot_standby_and_the_gateway_twice() -> None:
    services = _services()
    for actor in ACTORS:
        svc = services[actor]
        assert svc["command"] == ["actor", actor]
        assert svc["deploy"]["replicas"] >= 2, f"{actor}: one active and at least one standby"
        assert svc["restart"] == "unless-stopped"
    gateways = [s for s in services.values() if s.get("command") == ["gateway"]]
    assert len(gateways) >= 2
    assert len({g["ports"][0].split(":")[0] for g in gateways}) == len(gateways)  # each on its own host port
    nats = [n for n in services if n.startswith("nats-")]
    assert len(nats) == 3


def test_each_service_command_and_settings_are_accepted_by_tbx() -> None:
    for name, svc in _services().items():
        if name.startswith("nats-"):
            continue
        parser().parse_args([str(a) for a in svc["command"]])  # exits (SystemExit) on an unknown command
        env = {k: str(v) for k, v in svc["environment"].items() if not str(v).startswith("${")}
        env.setdefault("API_TOKEN", "x" * 32)
        settings = load_settings(env)
        assert settings.NATS_REPLICAS == 3
        assert len(settings.NATS_URL.split(",")) == 3
