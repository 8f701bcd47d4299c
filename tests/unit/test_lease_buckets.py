"""One lease bucket per role (issue 19: a NATS node's death stops only the roles whose bucket it led): the bucket
names are valid JetStream bucket names and no two roles share one (two roles in one bucket would be one Raft group
again, and a key of one could never be confused with the other's anyway: each bucket holds its role's key only)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.lease import preferred_leader
from schemas.subjects import ACTORS, Subjects, lease_bucket

BUCKET_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # JetStream's rule for a KV bucket's name

actor_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
roles = st.builds(
    lambda name, part: name if part is None else f"{name}.p{part}",
    actor_names,
    st.none() | st.integers(min_value=0, max_value=999),
)


@given(st.lists(roles, min_size=1, max_size=20, unique=True), st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True))
def test_every_role_has_a_valid_bucket_of_its_own(rs: list[str], prefix: str) -> None:
    subjects = Subjects(prefix)
    names = [subjects.kv_lease(r) for r in rs]
    assert all(BUCKET_RE.match(n) for n in names), names
    assert len(set(names)) == len(rs)  # distinct roles, distinct buckets
    assert all(n.startswith(subjects.bucket_name("LEASES") + "_") for n in names)


def test_the_bucket_names_of_the_actors_and_their_partitions() -> None:
    s = Subjects("tbx")
    assert s.kv_lease("order-router") == "TBX_LEASES_order-router"
    assert s.kv_lease("order-router.p1") == "TBX_LEASES_order-router_p1"
    assert len({s.kv_lease(a) for a in ACTORS} | {s.kv_lease(f"{a}.p{k}") for a in ACTORS for k in range(4)}) == 30


@pytest.mark.parametrize("bad", ["", "Order-Router", "order_router", "order-router.1", "a.p1.p2", "a b", "a*", "a>"])
def test_a_role_that_is_no_actors_name_gets_no_bucket(bad: str) -> None:
    with pytest.raises(ValueError, match="lease role"):
        lease_bucket("TBX_LEASES", bad)


def test_the_lease_buckets_leaders_are_dealt_round_the_nodes() -> None:
    """LeaseDriver.place asks for each role's bucket to be led by ``preferred_leader``: the actors spread evenly (two
    per node of three), a partition moves one place on, and the answer does not depend on the peers' order."""
    peers = ["n3", "n1", "n2"]
    homes = [preferred_leader(a, peers, ACTORS) for a in ACTORS]
    assert sorted(homes) == ["n1", "n1", "n2", "n2", "n3", "n3"]
    assert preferred_leader("order-router.p1", peers, ACTORS) != preferred_leader("order-router", peers, ACTORS)
    assert preferred_leader("md-feed", ["n2", "n1", "n3"], ACTORS) == preferred_leader("md-feed", peers, ACTORS)
    assert preferred_leader("unknown-role", peers, ACTORS) == preferred_leader("unknown-role", peers, ACTORS)
    with pytest.raises(ValueError):
        preferred_leader("md-feed", [], ACTORS)
