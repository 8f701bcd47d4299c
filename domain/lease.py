"""The rules of the leadership lease (issue 19): who may write, when to renew, when a standby takes over.

Pure: no I/O, no clock. The driver (``bus/lease.py``) passes in what it saw and when, in milliseconds of
its own monotonic clock, and asks what to do.

The lease is one key in a JetStream KV bucket. Its value names the holder; every write of it (create,
renewal, takeover) gets a new revision, and an update names the revision it replaces (compare-and-set).

* The **active** renews every ``renew_ms``. It may write (``may_write``) only until ``fence_ms`` after it
  *sent* the last renewal that was confirmed: the revision was stored after that moment, so any standby saw
  it after that moment too.
* A **standby** reads the key every ``poll_ms``. It takes over (an update naming the revision it saw) once
  it has seen the same revision unchanged for ``takeover_ms``, timed from the moment a read *returned*
  that revision (never from when it asked). A key that is gone (a clean stop deleted it) is taken at once.
* ``fence_ms`` is strictly smaller than ``takeover_ms``, with room for clock-rate drift between the two
  machines (``drift``) and a margin (``margin_ms``) for a write that is on its way when the permission
  ends. In real time, the old active's permission ends at least ``margin_ms`` before a standby may write.

Stalls need no special case: times are taken when an event is handled, so an instance that was frozen
sees the whole freeze as elapsed time when it wakes (its permission is gone), and a standby that was
frozen only ever waits longer. A renewal refused (the revision moved on) means another instance holds the
key: the lease is lost for good, and the instance must stop and start again as a standby.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum

# the clocks of two instances may run at rates that differ from real time by up to this fraction each
# (quartz is ~1e-4; a virtual machine's clock slewed by NTP stays well within 1 %)
DRIFT = 0.01


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """All the times of the lease, in ms, derived from ``FAILOVER_MS`` (``timings``)."""

    failover_ms: int
    takeover_ms: float  # a standby takes over after seeing one revision unchanged this long
    fence_ms: float  # the active may write until this long after it sent its last confirmed renewal
    renew_ms: float  # the active renews this often
    poll_ms: float  # a standby reads the key this often
    request_ms: float  # a lease request not answered within this long is given up (outcome unknown)
    drift: float = DRIFT

    def __post_init__(self) -> None:
        if not self.renew_ms < self.fence_ms < self.takeover_ms:
            raise ValueError("lease timings: need renew_ms < fence_ms < takeover_ms")
        if self.margin_ms <= 0:
            raise ValueError("lease timings: the fence does not end before a takeover (margin <= 0)")

    @property
    def margin_ms(self) -> float:
        """Real time, at the least, between the end of the old active's permission and a takeover: a local
        duration L lasts between L / (1 + drift) and L / (1 - drift) of real time."""
        return self.takeover_ms / (1 + self.drift) - self.fence_ms / (1 - self.drift)

    @property
    def detection_ms(self) -> float:
        """Longest time from the active's death to a standby's takeover request (without the rebuild and the
        request's own round trip): the last renewal is seen at most a poll later, then waited out."""
        return (self.takeover_ms + self.poll_ms) / (1 - self.drift)


def timings(failover_ms: int) -> LeaseTimings:
    """The lease's times for ``FAILOVER_MS``. Detection takes about 0.65 of it (takeover wait plus a poll),
    which leaves 0.35 for the request and the new active's rebuild; the active tolerates renewals failing
    for ``fence_ms - renew_ms`` (0.35) before it stops writing."""
    f = float(failover_ms)
    return LeaseTimings(
        failover_ms=failover_ms,
        takeover_ms=0.60 * f,
        fence_ms=0.45 * f,
        renew_ms=0.10 * f,
        poll_ms=0.05 * f,
        request_ms=0.25 * f,
    )


ACK_WAIT_FLOOR_S = 5.0


def ack_wait_s(failover_ms: int) -> float:
    """The ack wait of a leased actor's durable consumers (s): what a dead active had taken and not acknowledged
    is delivered again this long after it was handed out - 2 x FAILOVER_MS, at least ``ACK_WAIT_FLOOR_S`` (a
    message waiting in an instance's own buffer ages too: a shorter wait would deliver a backlog twice)."""
    return max(2 * failover_ms / 1000, ACK_WAIT_FLOOR_S)


class Phase(StrEnum):
    STANDBY = "standby"
    ACTIVE = "active"
    LOST = "lost"  # held once, and another instance has it now (or may have): never again in this instance
    RELEASED = "released"  # given up by a clean stop


@dataclass(frozen=True, slots=True)
class Takeover:
    """What a standby sends to take the key: a create (``last`` None: the key is absent) or an update naming
    the revision it waited out."""

    last: int | None


class Lease:
    """One instance's view of the lease. Every method takes the time of the driver's monotonic clock (ms)."""

    def __init__(self, timings: LeaseTimings, holder: str) -> None:
        self.t = timings
        self.holder = holder
        self.phase = Phase.STANDBY
        self.revision: int | None = None  # active: the revision we hold (the next update names it)
        self.confirmed_sent_at: float | None = None  # active: send time of our last confirmed write of the key
        self.last_renew_sent: float | None = None
        self.lost_reason = ""
        # standby: the revision seen (None with seen_absent: the key is gone) and since when, unchanged
        self.seen_revision: int | None = None
        self.seen_holder: str | None = None
        self.seen_since: float | None = None
        self.seen_absent = False

    # -- the fence ------------------------------------------------------------------------------------
    @property
    def write_deadline(self) -> float | None:
        """Until when (exclusive, local ms) writes are allowed; None: not at all."""
        if self.phase is not Phase.ACTIVE or self.confirmed_sent_at is None:
            return None
        return self.confirmed_sent_at + self.t.fence_ms

    def may_write(self, now: float) -> bool:
        deadline = self.write_deadline
        return deadline is not None and now < deadline

    # -- the active -----------------------------------------------------------------------------------
    def acquired(self, sent_at: float, revision: int) -> None:
        """Our create / takeover update, sent at ``sent_at``, was stored as ``revision``."""
        if self.phase is not Phase.STANDBY:
            raise ValueError(f"acquired while {self.phase}")
        self.phase = Phase.ACTIVE
        self.revision = revision
        self.confirmed_sent_at = sent_at
        self.last_renew_sent = sent_at

    def renew_due(self, now: float) -> bool:
        if self.phase is not Phase.ACTIVE:
            return False
        return self.last_renew_sent is None or now - self.last_renew_sent >= self.t.renew_ms

    def renew_sent(self, now: float) -> int:
        """A renewal goes out now; returns the revision it must name."""
        if self.phase is not Phase.ACTIVE or self.revision is None:
            raise ValueError(f"renewal while {self.phase}")
        self.last_renew_sent = now
        return self.revision

    def renewed(self, sent_at: float, revision: int) -> None:
        """The renewal sent at ``sent_at`` was stored as ``revision``."""
        if self.phase is not Phase.ACTIVE:
            return  # lost or released meanwhile: a late confirmation changes nothing
        self.revision = revision
        if self.confirmed_sent_at is None or sent_at > self.confirmed_sent_at:
            self.confirmed_sent_at = sent_at

    def refused(self, current_revision: int | None, current_holder: str | None) -> None:
        """A renewal was refused: the key is at ``current_revision`` held by ``current_holder`` (None: gone).

        Still ours (a renewal whose answer was lost was stored after all): renew from that revision, with no
        more permission than before (when that write was sent is not known). Anyone else's, or gone: lost."""
        if self.phase is not Phase.ACTIVE:
            return
        if current_holder == self.holder and current_revision is not None:
            self.revision = current_revision
            return
        self.lose(
            "the lease key is gone"
            if current_holder is None
            else f"the lease is held by {current_holder} (revision {current_revision})"
        )

    def lose(self, reason: str) -> None:
        if self.phase is Phase.ACTIVE:
            self.phase = Phase.LOST
            self.lost_reason = reason
            self.confirmed_sent_at = None

    def release(self) -> int | None:
        """A clean stop: no write from now on; returns the revision to delete the key with (None: not held)."""
        held = self.revision if self.phase is Phase.ACTIVE else None
        self.phase = Phase.RELEASED
        self.confirmed_sent_at = None
        return held

    # -- the standby ----------------------------------------------------------------------------------
    def observed(self, now: float, revision: int | None, holder: str | None) -> None:
        """A read of the key returned at ``now``: ``revision`` held by ``holder``; holder None: the key is
        absent (never written, or deleted by a clean stop)."""
        if self.phase is not Phase.STANDBY:
            return
        if holder == self.holder and revision is not None:
            # our create / takeover was stored though its answer was lost: ours, but when it was sent is not
            # known, so no permission until a renewal (sent now) is confirmed
            self.phase = Phase.ACTIVE
            self.revision = revision
            self.confirmed_sent_at = None
            self.last_renew_sent = None
            return
        absent = holder is None
        if absent != self.seen_absent or revision != self.seen_revision or self.seen_since is None:
            self.seen_revision = revision
            self.seen_holder = holder
            self.seen_absent = absent
            self.seen_since = now

    def takeover(self, now: float) -> Takeover | None:
        """What to send to take the key now, or None (keep waiting)."""
        if self.phase is not Phase.STANDBY or self.seen_since is None:
            return None
        if self.seen_absent:
            return Takeover(last=None)
        if now - self.seen_since >= self.t.takeover_ms:
            return Takeover(last=self.seen_revision)
        return None

    def read_failed(self) -> None:
        """A read of the key failed (no answer, NATS unreachable): what happened to the key meanwhile is unknown,
        so the time waited so far does not count - the wait starts again at the next read that returns."""
        self.attempt_failed()

    def attempt_failed(self) -> None:
        """Our create / takeover was refused (someone else was first): observe again from scratch."""
        if self.phase is Phase.STANDBY:
            self.seen_since = None
            self.seen_revision = None
            self.seen_holder = None
            self.seen_absent = False

    # -- pacing ---------------------------------------------------------------------------------------
    def next_wakeup(self, now: float) -> float:
        """When the driver should look again (local ms)."""
        if self.phase is Phase.ACTIVE:
            return now if self.last_renew_sent is None else max(now, self.last_renew_sent + self.t.renew_ms)
        if self.phase is Phase.STANDBY:
            wake = now + self.t.poll_ms
            take = self.takeover(now)
            if take is None and self.seen_since is not None and not self.seen_absent:
                wake = min(wake, self.seen_since + self.t.takeover_ms)
            return max(now, wake)
        return now + self.t.poll_ms


def preferred_leader(role: str, peers: list[str], roles: tuple[str, ...]) -> str:
    """The NATS node that should lead ``role``'s lease bucket: the roles (``roles``, in their order; a partition
    ``<name>.p<k>`` counts k places after its actor) dealt round the bucket's peers (sorted by name), so that the
    buckets' leaders spread evenly and one node's death stops as few roles as possible. A role not in ``roles``:
    by a stable hash of its name."""
    if not peers:
        raise ValueError("no peers")
    name, _, part = role.partition(".p")
    slot = roles.index(name) + (int(part) if part.isdigit() else 0) if name in roles else zlib.crc32(role.encode())
    return sorted(peers)[slot % len(peers)]
