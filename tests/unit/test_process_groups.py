"""`tbx run`'s worker processes (RUN_PROCESSES, issue 22): which process runs which part (domain/process_groups.py),
the setting itself, and what the parent imports."""

from __future__ import annotations

import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.cores import cgroup_cores, default_run_processes
from config.settings import ConfigError, load_settings
from domain.process_groups import WEIGHTS, part_weights, split
from schemas.subjects import ACTORS, PARTITIONED
from tbx.runner import ACTOR_CLASSES, ACTOR_MODULES, parts_of
from tbx.workers import WORKER_STOP_S, WorkerShare, describe_exit, plan, read_share

KINDS = sorted(WEIGHTS)
START_ORDER = [*ACTOR_MODULES, "gateway"]


def all_parts() -> list[tuple[str, str]]:
    return [(kind, kind) for kind in START_ORDER]


# -- the split ------------------------------------------------------------------------------------------------
def test_two_processes_by_default_weights():
    assert split(all_parts(), 2) == [
        ["md-feed", "order-router", "signal-intake", "gateway"],
        ["portfolio-ledger", "fill-tracker", "risk-gate"],
    ]


def test_one_process_runs_everything_in_start_order():
    assert split(all_parts(), 1) == [START_ORDER]


def test_more_processes_than_parts_gives_one_part_each():
    groups = split(all_parts(), 64)
    assert len(groups) == len(START_ORDER) and all(len(g) == 1 for g in groups)


def test_a_partitioned_actor_shares_its_weight_among_its_instances():
    parts = [("order-router.p0", "order-router"), ("order-router.p1", "order-router"), ("risk-gate", "risk-gate")]
    assert part_weights(parts) == [Fraction(18), Fraction(18), Fraction(20)]
    assert split(parts, 2) == [["risk-gate"], ["order-router.p0", "order-router.p1"]]  # 20 | 18 + 18


def test_the_partitions_of_the_order_router_go_to_different_processes():
    s = load_settings({"PARTITIONS": "2"})
    groups = plan(s, 2)
    assert sorted(p for g in groups for p in g) == sorted(label for label, _, _ in parts_of(s, list(ACTORS), True))
    (one,) = [g for g in groups if "order-router.p0" in g]
    assert "order-router.p1" not in one


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="processes must be >= 1"):
        split(all_parts(), 0)
    with pytest.raises(ValueError, match="each part once"):
        split([("a", "gateway"), ("a", "gateway")], 2)
    with pytest.raises(ValueError, match="must be > 0"):
        split(all_parts(), 2, {**WEIGHTS, "gateway": 0})


parts_strategy = st.lists(st.sampled_from([*KINDS, "some-new-part"]), min_size=0, max_size=40).map(
    lambda kinds: [(f"{kind}#{i}", kind) for i, kind in enumerate(kinds)]
)


@given(parts=parts_strategy, processes=st.integers(1, 70))
def test_every_part_runs_in_exactly_one_process_none_idle_each_in_start_order(parts, processes):
    groups = split(parts, processes)
    labels = [label for label, _ in parts]
    assert len(groups) == min(processes, len(parts))
    assert all(groups)  # no process without a part
    assert sorted(p for g in groups for p in g) == sorted(labels)  # each part once
    position = {label: i for i, label in enumerate(labels)}
    assert all([position[p] for p in g] == sorted(position[p] for p in g) for g in groups)  # start order kept
    assert split(parts, processes) == groups  # the same answer every time (a restarted worker gets its own share)


@given(parts=parts_strategy.filter(bool), processes=st.integers(2, 8))
def test_the_heaviest_process_carries_at_most_the_average_plus_one_part(parts, processes):
    groups = split(parts, processes)
    weight = dict(zip([label for label, _ in parts], part_weights(parts), strict=True))
    loads = [sum((weight[p] for p in g), Fraction(0)) for g in groups]
    assert max(loads) <= sum(loads) / len(groups) + max(weight.values())


# -- the setting ----------------------------------------------------------------------------------------------
def test_run_processes_default_and_auto_follow_the_cores():
    unset = [load_settings(env).RUN_PROCESSES for env in ({}, {"RUN_PROCESSES": "auto"}, {"RUN_PROCESSES": ""})]
    assert unset == [default_run_processes()] * 3
    assert load_settings({"RUN_PROCESSES": " 3 "}).RUN_PROCESSES == 3
    assert load_settings({"RUN_PROCESSES": "1"}).RUN_PROCESSES == 1


@pytest.mark.parametrize("value", ["0", "-1", "65", "two", "1.5", "true"])
def test_a_bad_run_processes_names_the_setting_and_what_is_allowed(value):
    with pytest.raises(ConfigError) as e:
        load_settings({"RUN_PROCESSES": value})
    assert str(e.value) == (
        f"RUN_PROCESSES={value!r} is not allowed: expected an integer from 1 to 64, or auto (2 with at least 2 "
        "cores, else 1)"
    )


def test_run_processes_from_a_toml_file(tmp_path):
    f = tmp_path / "tbx.toml"
    f.write_text("RUN_PROCESSES = 3\n")
    assert load_settings({}, config_file=f).RUN_PROCESSES == 3
    f.write_text("RUN_PROCESSES = true\n")
    with pytest.raises(ConfigError, match="RUN_PROCESSES='True' is not allowed"):
        load_settings({}, config_file=f)


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000", None), ("150000 100000", 2), ("100000 100000", 1), ("50000 100000", 1), ("400000 100000", 4),
     ("", None), ("garbage", None), ("x 100000", None), ("0 100000", None)],
)  # fmt: skip
def test_a_containers_cpu_quota_in_cores(text, cores):
    assert cgroup_cores(text) == cores


# -- the parent and its workers ---------------------------------------------------------------------------------
def test_the_actor_classes_are_named_and_partitioned_as_the_catalogue_says():
    assert list(ACTOR_CLASSES) == list(ACTOR_MODULES) and sorted(ACTOR_CLASSES) == sorted(ACTORS)
    for name, cls in ACTOR_CLASSES.items():
        assert cls.name == name
        assert cls.partitioned == (name in PARTITIONED)


def test_the_parent_and_a_worker_without_the_order_router_do_not_import_ccxt():
    """The parent runs no part, and a worker imports only its own parts' modules: ccxt (seconds of start-up, some
    70 MB) only where the order-router runs."""
    code = (
        "import sys\n"
        "import tbx.workers, tbx.cli\n"
        "from tbx.runner import ACTOR_CLASSES\n"
        "assert 'ccxt' not in sys.modules and 'gateway.app' not in sys.modules, 'the parent'\n"
        "for name in ('risk-gate', 'portfolio-ledger', 'fill-tracker', 'md-feed', 'signal-intake'):\n"
        "    ACTOR_CLASSES[name]\n"
        "assert 'ccxt' not in sys.modules, 'a worker without the order-router'\n"
        "ACTOR_CLASSES['order-router']\n"
        "assert 'ccxt' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_workers_share_round_trips_with_every_setting():
    s = load_settings({"PARTITIONS": "2", "PAIRS": "BTC_USDT,ETH_USDT", "RUN_PROCESSES": "2", "API_TOKEN": "t" * 20})
    share = WorkerShare(settings=s, worker=1, workers=2, parts=plan(s, 2)[0], embedded=True)
    assert read_share(msgspec.json.encode(share)) == share
    with pytest.raises(ConfigError, match="--worker: no valid share on stdin"):
        read_share(b"")


def test_how_a_worker_ended_is_said_in_words():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-11) == "killed by SIGSEGV"
    assert describe_exit(3) == "exited with 3"


# -- what README says ---------------------------------------------------------------------------------------------
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README[README.index("### Worker processes (`RUN_PROCESSES`)") :]
SECTION = SECTION[: SECTION.index("\n### ", 10)]


def test_the_readme_weights_and_split_are_the_codes():
    head = re.search(r"^\| part \|(.+)\|$", SECTION, re.M)
    row = re.search(r"^\| weight \|(.+)\|$", SECTION, re.M)
    assert head and row
    names = [c.strip() for c in head.group(1).split("|")]
    values = [int(c) for c in row.group(1).split("|")]
    assert dict(zip(names, values, strict=True)) == dict(WEIGHTS)
    one, two = split(all_parts(), 2)
    said = re.search(r"worker 1 = ([a-z, -]+) \((\d+)\), worker 2 = ([a-z, -]+) \((\d+)\)", SECTION.replace("\n", " "))
    assert said
    assert sorted(said.group(1).split(", ")) == sorted(one) and sorted(said.group(3).split(", ")) == sorted(two)
    assert int(said.group(2)) == sum(WEIGHTS[p] for p in one) and int(said.group(4)) == sum(WEIGHTS[p] for p in two)


def test_the_readme_stop_budget_of_a_worker_is_the_codes():
    assert f"each within {WORKER_STOP_S:g} s" in SECTION.replace("\n", " ")
    assert WORKER_STOP_S + 1.0 <= 5.0  # the workers, then 1 s for the nats-server: within the 5 s README promises
