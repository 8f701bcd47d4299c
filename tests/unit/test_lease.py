"""The lease rules (domain/lease.py), run against a model of the KV key and of instances with drifting clocks,
slow or lost answers, freezes (an event loop stalled, a process stopped) and deaths: two instances are never
both allowed to write (and the old active's permission ends at least ``margin_ms`` before a new one starts), a
live and connected active keeps its lease, and a standby takes over soon enough after the active dies."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.lease import DRIFT, Lease, LeaseTimings, Phase, Takeover, timings

EPS = 1e-6


# -- a model of the KV key (atomic compare-and-set, one revision counter) -----------------------------------
@dataclass
class Key:
    seq: int = 0  # the bucket's sequence: every stored write takes the next one
    rev: int | None = None  # the key's last revision (a delete marker too)
    holder: str | None = None  # None: absent or deleted

    def write(self, holder: str | None) -> int:
        self.seq += 1
        self.rev, self.holder = self.seq, holder
        return self.seq

    def create(self, holder: str) -> int | None:
        return self.write(holder) if self.holder is None else None

    def update(self, holder: str, last: int) -> int | None:
        return self.write(holder) if self.holder is not None and self.rev == last else None

    def delete(self, last: int) -> None:
        if self.rev == last and self.holder is not None:
            self.write(None)


# -- instances: the driver's loop (bus/lease.py) in a discrete-event model ----------------------------------
@dataclass
class Instance:
    name: str
    rate: float  # local ms per real ms
    offset: float
    start: float
    stalls: list[tuple[float, float]]
    dies_at: float | None = None
    releases_at: float | None = None
    leases: list[Lease] = field(default_factory=list)
    waiting: int | None = None  # the request it waits for
    released: bool = False

    def local(self, t: float) -> float:
        return self.offset + self.rate * t

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate

    @property
    def lease(self) -> Lease:
        return self.leases[-1]

    def dead(self, t: float) -> bool:
        return self.dies_at is not None and t >= self.dies_at

    def awake_at(self, t: float) -> float:
        moved = True
        while moved:
            moved = False
            for a, b in self.stalls:
                if a <= t < b:
                    t, moved = b, True
        return t


@dataclass
class Sim:
    t: LeaseTimings
    instances: list[Instance]
    delays: list[float]
    key: Key = field(default_factory=Key)
    queue: list[tuple[float, int, int, str, tuple]] = field(default_factory=list)
    order: itertools.count = field(default_factory=itertools.count)
    requests: itertools.count = field(default_factory=itertools.count)
    delay_at: int = 0
    acquisitions: list[tuple[float, int]] = field(default_factory=list)  # (real time, instance)
    taken: dict[str, int] = field(default_factory=dict)  # lease holder -> the revision it took the key with
    spans: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    checked: int = 0

    def delay(self) -> float:
        d = self.delays[self.delay_at % len(self.delays)] if self.delays else 0.0
        self.delay_at += 1
        return d

    def at(self, when: float, who: int, kind: str, *payload: object) -> None:
        heapq.heappush(self.queue, (when, next(self.order), who, kind, payload))

    def send(self, now_real: float, who: int, op: str, sent_at: float, arg: int | None = None) -> None:
        inst = self.instances[who]
        rid = next(self.requests)
        inst.waiting = rid
        self.at(now_real + self.delay(), who, "server", rid, op, sent_at, arg)
        self.at(now_real + self.t.request_ms / inst.rate, who, "timeout", rid, op)

    def wake_later(self, now_real: float, who: int) -> None:
        inst = self.instances[who]
        now = inst.local(now_real)
        self.at(inst.real(inst.lease.next_wakeup(now)) + EPS, who, "wake")

    def run(self, until: float) -> None:
        for i, inst in enumerate(self.instances):
            inst.leases.append(Lease(self.t, f"{inst.name}#0"))
            self.at(inst.start, i, "wake")
        while self.queue:
            when, _, who, kind, payload = heapq.heappop(self.queue)
            if when > until:
                break
            inst = self.instances[who]
            if kind == "server":  # the server answers whatever happens to the sender meanwhile
                self.serve(when, who, *payload)  # type: ignore[arg-type]
                continue
            if inst.dead(when):
                continue
            awake = inst.awake_at(when)
            if awake > when:  # frozen: handled when it wakes, with the time it reads then
                self.at(awake, who, kind, *payload)
                continue
            self.handle(when, who, kind, payload)
            self.check(when)
            self.windows(when)
        self.check_margins()

    def serve(self, when: float, who: int, rid: int, op: str, sent_at: float, arg: int | None) -> None:
        lease_name = self.instances[who].lease.holder
        if op == "get":
            result: object = (self.key.rev, self.key.holder)
        elif op == "create":
            result = self.key.create(lease_name)
        elif op == "update" or op == "renew":
            assert arg is not None
            result = self.key.update(lease_name, arg)
        elif op == "delete":
            assert arg is not None
            self.key.delete(arg)
            return
        else:
            raise AssertionError(op)
        self.at(when + self.delay(), who, "answer", rid, op, sent_at, result, (self.key.rev, self.key.holder))

    def handle(self, when: float, who: int, kind: str, payload: tuple) -> None:
        inst = self.instances[who]
        lease = inst.lease
        now = inst.local(when)
        if inst.releases_at is not None and when >= inst.releases_at and not inst.released:
            inst.released = True
            held = lease.release()
            if held is not None:
                rid = next(self.requests)
                self.at(when + self.delay(), who, "server", rid, "delete", now, held)
            inst.dies_at = when  # a clean stop: gone once the delete is sent
            return
        if kind == "timeout":
            if payload[0] != inst.waiting:
                return
            inst.waiting = None  # given up: a late answer is ignored
            if payload[1] == "get":
                lease.read_failed()  # as the driver does (bus/lease.py)
            self.at(when, who, "wake")
            return
        if kind == "answer":
            rid, op, sent_at, result, current = payload
            if rid != inst.waiting:
                return
            inst.waiting = None
            if op == "get":
                rev, holder = result
                lease.observed(now, rev, holder)
                take = lease.takeover(now)
                if take is not None:
                    self.take(when, who, take)
                    return
            elif op in ("create", "update"):
                if result is None:
                    lease.attempt_failed()
                else:
                    lease.acquired(sent_at, result)
                    self.acquisitions.append((when, who))
                    self.taken[lease.holder] = result
            elif op == "renew":
                if result is None:
                    lease.refused(*current)
                    if lease.phase is Phase.LOST:  # dies; started again, a standby with a new instance id
                        inst.leases.append(Lease(self.t, f"{inst.name}#{len(inst.leases)}"))
                else:
                    lease.renewed(sent_at, result)
            self.wake_later(when, who)
            return
        # a wake
        if inst.waiting is not None:
            return
        if lease.phase is Phase.ACTIVE:
            if lease.renew_due(now):
                self.send(when, who, "renew", now, lease.renew_sent(now))
            else:
                self.wake_later(when, who)
        elif lease.phase is Phase.STANDBY:
            self.send(when, who, "get", now)

    def take(self, when: float, who: int, take: Takeover) -> None:
        now = self.instances[who].local(when)
        if take.last is None:
            self.send(when, who, "create", now)
        else:
            self.send(when, who, "update", now, take.last)

    def check(self, when: float) -> None:
        self.checked += 1
        writers = [
            (i, lease.holder)
            for i, inst in enumerate(self.instances)
            for lease in inst.leases
            if not inst.dead(when) and lease.may_write(inst.local(when))
        ]
        assert len(writers) <= 1, f"two writers at {when:.3f}: {writers}"

    def windows(self, when: float) -> None:
        """Each lease's write window in real time: from when it first may write to when its permission ends
        (its deadline, or the moment it is released or lost). A permission that has already run out when it is
        granted (a late confirmation) opens no window."""
        for inst in self.instances:
            for lease in inst.leases:
                start, end = self.spans.get(lease.holder, (None, None))
                deadline = lease.write_deadline
                if deadline is not None and lease.may_write(inst.local(when)):
                    start = when if start is None else start
                    end = inst.real(deadline)  # deadlines only move on while it holds the key
                elif lease.phase in (Phase.RELEASED, Phase.LOST) and end is not None and end > when:
                    end = when  # given up before the deadline
                self.spans[lease.holder] = (start, end)

    def check_margins(self) -> None:
        """Leases in the order of the revisions they took the key with: every write window of the older one
        ends at least margin_ms (real time) before the newer one first may write (after a clean release:
        before it)."""
        held = sorted(self.taken.items(), key=lambda kv: kv[1])
        for (older, _), (newer, _) in itertools.combinations(held, 2):
            _, end = self.spans.get(older, (None, None))
            start, _ = self.spans.get(newer, (None, None))
            if end is None or start is None:
                continue
            # a clean release hands over at once (the stopping actor has finished its writes): no overlap; a
            # takeover waits out the old permission with the margin
            released = any(
                lease.holder == older and lease.phase is Phase.RELEASED for i in self.instances for lease in i.leases
            )
            gap = 0.0 if released else self.t.margin_ms
            assert end <= start - gap + EPS, f"{older} may write until {end:.3f}, {newer} from {start:.3f}"


# -- the timings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failover_ms", [300, 1000, 2000, 60_000])
def test_timings_fence_ends_before_takeover_with_margin(failover_ms: int) -> None:
    t = timings(failover_ms)
    assert t.renew_ms < t.fence_ms < t.takeover_ms
    assert t.fence_ms / (1 - DRIFT) + t.margin_ms <= t.takeover_ms / (1 + DRIFT) + EPS
    assert t.margin_ms >= 0.1 * failover_ms
    # a standby asks for the key well within FAILOVER_MS of the death: the rest is for the rebuild
    assert t.detection_ms <= 0.7 * failover_ms


def test_timings_refuse_a_fence_that_outlasts_the_takeover() -> None:
    with pytest.raises(ValueError, match="margin"):
        LeaseTimings(failover_ms=1000, takeover_ms=600, fence_ms=595, renew_ms=100, poll_ms=50, request_ms=250)


# -- single steps --------------------------------------------------------------------------------------------
def test_the_fence_runs_from_the_send_time_of_the_last_confirmed_renewal() -> None:
    t = timings(2000)
    lease = Lease(t, "a")
    lease.observed(0, None, None)
    assert lease.takeover(0) == Takeover(last=None)  # absent: at once
    lease.acquired(sent_at=10, revision=1)
    assert lease.may_write(10 + t.fence_ms - 1) and not lease.may_write(10 + t.fence_ms)
    assert lease.renew_due(10 + t.renew_ms)
    assert lease.renew_sent(500) == 1
    lease.renewed(sent_at=500, revision=7)  # confirmed much later: still from when it was sent
    assert lease.may_write(500 + t.fence_ms - 1) and not lease.may_write(500 + t.fence_ms)
    lease.renewed(sent_at=400, revision=6)  # an older confirmation never moves the deadline back... or on
    assert lease.write_deadline == 500 + t.fence_ms


def test_a_refused_renewal_of_our_own_key_resyncs_without_more_permission() -> None:
    lease = Lease(timings(2000), "a")
    lease.observed(0, None, None)
    lease.acquired(0, 3)
    lease.refused(5, "a")  # a renewal whose answer was lost was stored as 5
    assert lease.phase is Phase.ACTIVE and lease.revision == 5 and lease.write_deadline == 0 + lease.t.fence_ms
    lease.refused(9, "b")
    assert lease.phase is Phase.LOST and not lease.may_write(1) and "held by b" in lease.lost_reason


def test_a_standby_waits_out_an_unchanged_revision_and_starts_again_on_a_change() -> None:
    t = timings(1000)
    lease = Lease(t, "b")
    lease.observed(100, 4, "a")
    assert lease.takeover(100 + t.takeover_ms - 1) is None
    lease.observed(300, 5, "a")  # renewed: the wait starts again
    assert lease.takeover(100 + t.takeover_ms) is None
    assert lease.takeover(300 + t.takeover_ms) == Takeover(last=5)
    assert lease.next_wakeup(300) == 300 + t.poll_ms
    lease.attempt_failed()
    assert lease.takeover(10_000) is None  # must read again first


def test_a_failed_read_restarts_the_standbys_wait() -> None:
    """Time during which the standby could not read the key never counts towards its takeover wait."""
    t = timings(1000)
    lease = Lease(t, "b")
    lease.observed(0, 4, "a")
    lease.read_failed()  # cut off from NATS for a while
    now = t.takeover_ms + 1
    lease.observed(now, 4, "a")  # the same revision again, but it has only been seen unchanged since now
    assert lease.takeover(now) is None
    assert lease.takeover(now + t.takeover_ms) == Takeover(last=4)


def test_release_ends_writing_and_names_the_revision() -> None:
    lease = Lease(timings(1000), "a")
    lease.observed(0, None, None)
    lease.acquired(0, 2)
    assert lease.release() == 2
    assert not lease.may_write(1) and lease.phase is Phase.RELEASED


# -- every interleaving ----------------------------------------------------------------------------------------
rates = st.floats(1 - DRIFT, 1 + DRIFT)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Sim, float]:
    failover = draw(st.sampled_from([300, 1000, 2000]))
    t = timings(failover)
    span = 12.0 * failover
    n = draw(st.integers(2, 3))
    insts = []
    for i in range(n):
        stalls = draw(
            st.lists(
                st.tuples(st.floats(0, span), st.floats(0, 3 * failover)).map(lambda p: (p[0], p[0] + p[1])),
                max_size=3,
            )
        )
        insts.append(
            Instance(
                name=chr(ord("a") + i),
                rate=draw(rates),
                offset=draw(st.floats(0, 1e6)),
                start=draw(st.floats(0, failover)),
                stalls=stalls,
                # the last one lives on (stalls aside): someone is there to take over
                dies_at=None if i == n - 1 else draw(st.none() | st.floats(0, span)),
                releases_at=None if i == n - 1 else draw(st.none() | st.floats(0, span)),
            )
        )
    # answers from instant to far slower than the request timeout (then the outcome is unknown)
    delays = draw(st.lists(st.floats(0, 0.4 * failover), min_size=1, max_size=40))
    return Sim(t, insts, delays), span


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_never_two_writers_whatever_the_delays_stalls_drift_and_deaths(scenario: tuple[Sim, float]) -> None:
    sim, span = scenario
    sim.run(span)  # check() after every event, check_margins() at the end
    assert sim.checked > 0


def two_instances(max_delay: float, **more: st.SearchStrategy[float]) -> Callable[[Callable[..., None]], Any]:
    """A property of an active ``a`` and a standby ``b`` at drifting clock rates, at every FAILOVER_MS of the tests,
    the answers delayed by up to ``max_delay`` x FAILOVER_MS; ``more``: the test's own draws."""
    return lambda test: settings(max_examples=150, deadline=None)(
        given(
            failover=st.sampled_from([300, 1000, 2000]),
            rate_a=rates,
            rate_b=rates,
            delays=st.lists(st.floats(0, max_delay), min_size=1, max_size=30),
            **more,
        )(test)
    )


def duo(failover: int, a: Instance, b: Instance, delays: tuple[float, ...] | list[float] = (1.0,)) -> Sim:
    """Two instances on the lease of FAILOVER_MS ``failover``; ``delays`` of the answers in ms."""
    return Sim(timings(failover), [a, b], list(delays))


@two_instances(0.1, start_b=st.floats(0, 1))
def test_a_live_connected_active_keeps_its_lease(
    failover: int, rate_a: float, rate_b: float, delays: list[float], start_b: float
) -> None:
    a = Instance("a", rate_a, 0.0, 0.0, [])
    b = Instance("b", rate_b, 5e5, start_b * failover, [])
    sim = duo(failover, a, b, [d * failover for d in delays])
    span = 20.0 * failover
    writable: list[bool] = []
    orig_check = sim.check

    def check(when: float) -> None:
        orig_check(when)
        if sim.acquisitions and when > sim.acquisitions[0][0]:
            holder = sim.instances[sim.acquisitions[0][1]]
            writable.append(holder.lease.may_write(holder.local(when)))

    sim.check = check  # type: ignore[method-assign]
    sim.run(span)
    assert len(sim.acquisitions) == 1, sim.acquisitions
    assert writable and all(writable)
    assert [inst.lease.phase for inst in sim.instances].count(Phase.ACTIVE) == 1


@two_instances(0.02, dies=st.floats(2, 6))
def test_a_standby_takes_over_soon_after_the_active_dies(
    failover: int, rate_a: float, rate_b: float, delays: list[float], dies: float
) -> None:
    a = Instance("a", rate_a, 0.0, 0.0, [], dies_at=dies * failover)
    b = Instance("b", rate_b, 5e5, 0.5 * failover, [])
    sim = duo(failover, a, b, [d * failover for d in delays])
    t = sim.t
    sim.run(12.0 * failover)
    assert [who for _, who in sim.acquisitions] == [0, 1]
    took = sim.acquisitions[1][0] - dies * failover
    assert took <= t.detection_ms + 8 * 0.02 * failover, took  # well within FAILOVER_MS: the rest is the rebuild
    assert took < 0.8 * failover


def test_a_clean_release_hands_over_at_once() -> None:
    sim = duo(2000, Instance("a", 1.0, 0.0, 0.0, [], releases_at=5000.0), Instance("b", 1.0, 0.0, 100.0, []))
    t = sim.t
    sim.run(10_000)
    assert [who for _, who in sim.acquisitions] == [0, 1]
    assert sim.acquisitions[1][0] - 5000.0 <= t.poll_ms + 10


def test_a_frozen_active_is_deposed_and_cannot_write_when_it_wakes() -> None:
    a = Instance("a", 1.0, 0.0, 0.0, [(2000.0, 6000.0)])
    sim = duo(1000, a, Instance("b", 1.0, 0.0, 100.0, []))
    t = sim.t
    sim.run(10_000)
    assert [who for _, who in sim.acquisitions] == [0, 1]
    assert 2000 - t.renew_ms + t.takeover_ms <= sim.acquisitions[1][0] < 2000 + t.failover_ms
    assert a.leases[0].phase is Phase.LOST  # woke, renewal refused
    assert not a.leases[0].may_write(a.local(6000.0))
    assert a.lease.phase is Phase.STANDBY  # and serves on as a standby


def test_a_standby_that_finds_its_own_unanswered_takeover_stored_holds_it_without_permission() -> None:
    t = timings(1000)
    lease = Lease(t, "b")
    lease.observed(0, 4, "a")
    assert lease.takeover(t.takeover_ms) == Takeover(last=4)  # sent; the answer is lost
    lease.attempt_failed()
    lease.observed(t.takeover_ms + 100, 5, "b")  # it was stored
    assert lease.phase is Phase.ACTIVE and lease.revision == 5
    assert not lease.may_write(t.takeover_ms + 100)  # its send time is not known: no permission yet
    assert lease.renew_due(t.takeover_ms + 100) and lease.next_wakeup(t.takeover_ms + 100) == t.takeover_ms + 100
    assert lease.renew_sent(t.takeover_ms + 101) == 5
    lease.renewed(t.takeover_ms + 101, 6)
    assert lease.may_write(t.takeover_ms + 102)
