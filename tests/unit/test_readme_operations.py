"""What README says to operators about issue 19 (settings, supervision, the lease, health) is what the code does:
each number or name below is read from the README and compared with the constant or default it describes, so a
change of one without the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bus.client import PUBLISH_RETRY_S
from config.settings import PARSERS, ConfigError, Settings, load_settings
from domain.backoff import CONNECT, RESTART
from domain.lease import ACK_WAIT_FLOOR_S, timings
from gateway.health import FORGET_MS, STALE_MS
from tbx.supervisor import DISCARD_TIMEOUT_S, STILL_WAITING_LOG_S

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
ENV_EXAMPLE = (Path(__file__).resolve().parents[2] / ".env.example").read_text()

# the settings issue 19 adds or gives a new meaning (NATS_URL: several servers)
ISSUE_19 = (
    "FAILOVER_MS",
    "PARTITIONS",
    "PARTITION",
    "NATS_CREDS",
    "NATS_NKEY_SEED",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
    "NATS_REPLICAS",
    "NATS_URL",
    "SYNTHETIC_CLOCK",
)


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    level = title.split(" ")[0]
    m = re.compile(rf"\n#{{1,{len(level)}}} ").search(README, start + len(title) + 2)
    return README[start : m.start() if m else len(README)]


def _rejected(name: str, value: str) -> bool:
    try:
        load_settings({name: value})
    except ConfigError:
        return True
    return False


@pytest.mark.parametrize("name", ISSUE_19)
def test_each_setting_of_issue_19_is_a_setting_and_named_in_the_readme(name: str) -> None:
    assert name in PARSERS
    assert f"`{name}`" in README, f"{name} is not documented in README.md"
    assert re.search(rf"^{name}=", ENV_EXAMPLE, re.M), f"{name} is not in .env.example"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("FAILOVER_MS", r"`FAILOVER_MS`\*\* \(default `(\d+)`, at least `(\d+)`\)"),
        ("PARTITIONS", r"`PARTITIONS` \(default (\d+), (\d+)\.\.(\d+)\)"),
        ("NATS_REPLICAS", r"`NATS_REPLICAS` \((\d+)\.\.(\d+), default (\d+)\)"),
        ("SYNTHETIC_CLOCK", r"`SYNTHETIC_CLOCK` \(`(\w+)` \| `(\w+)`, default `(\w+)`\)"),
    ],
)
def test_the_documented_defaults_and_bounds_are_the_codes(name: str, text: str) -> None:
    m = re.search(text, README)
    assert m is not None, f"README no longer says {text!r}"
    default = getattr(Settings(), name)
    if name == "FAILOVER_MS":
        assert int(m[1]) == default and _rejected(name, str(int(m[2]) - 1)) and not _rejected(name, m[2])
    elif name == "PARTITIONS":
        lo, hi = int(m[2]), int(m[3])
        assert int(m[1]) == default and _rejected(name, str(lo - 1)) and _rejected(name, str(hi + 1))
        assert not _rejected(name, str(hi))
    elif name == "NATS_REPLICAS":
        lo, hi = int(m[1]), int(m[2])
        assert int(m[3]) == default and _rejected(name, str(lo - 1)) and _rejected(name, str(hi + 1))
        assert not _rejected(name, str(hi))
    else:
        assert m[3] == default and not _rejected(name, m[1]) and not _rejected(name, m[2])
        assert _rejected(name, "sometimes")


def test_supervision_numbers() -> None:
    text = section("### Supervised: waits, retries and restarts")
    assert (
        f"({CONNECT.first:g} s doubling to {CONNECT.cap:g} s; `still waiting` every {STILL_WAITING_LOG_S:g} s)" in text
    )
    assert f"(at most every {CONNECT.cap:g} s)" in text
    restart = f"({RESTART.first:g} s doubling to {RESTART.cap:g} s; the count\n  starts again once an instance has run"
    assert restart in text and f"{RESTART.reset_after:g} s)" in text
    assert f"up to\n  {DISCARD_TIMEOUT_S:g} s:" in text


def test_lease_numbers() -> None:
    text = section("## High availability")
    t = timings(1000)  # fractions of FAILOVER_MS
    for fraction, what in (
        (t.renew_ms, "renews every {} x"),
        (t.poll_ms, "reads the key every {} x"),
        (t.takeover_ms, "unchanged for {} x"),
        (t.fence_ms, "stops writing {} x"),
    ):
        assert what.format(f"{fraction / 1000:g}") in text.replace("\n", " "), what
    assert f"at least {ACK_WAIT_FLOOR_S:g} s" in text
    assert f"`FAILOVER_MS`** (default `{Settings().FAILOVER_MS}`" in text


def test_health_instance_numbers() -> None:
    text = section("## High availability").replace("\n", " ")
    assert f"`stale` once not heard for {STALE_MS / 1000:g} s" in text
    assert f"left out once not heard for {FORGET_MS / 1000:g} s" in text


def test_publish_retry_bound() -> None:
    assert f"retried inside the bus for up to {PUBLISH_RETRY_S:g} s" in section("### On an existing NATS cluster")
