"""The leadership lease on the bus: one KV bucket per role, ``<PREFIX>_LEASES_<role>`` (``Subjects.kv_lease``),
holding one key, the role.

A thin driver around ``domain/lease.py``: it reads and writes the key (create, update naming the revision,
delete naming the revision), reads the monotonic clock, and asks the rules what to do. ``acquire()`` returns
once this instance holds the lease (a standby until then); ``run()`` renews it; ``check()`` is the fence every
write of the actor goes through; ``release()`` deletes the key on a clean stop so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from loguru import logger
from nats.js.kv import KeyValue

from bus.client import Bus
from bus.errors import LeaseLost, Transient
from domain.lease import Lease, LeaseTimings, Phase, preferred_leader, timings
from schemas.messages import LeaseRecord, now_ms
from schemas.subjects import ACTORS as ROLES

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(LeaseRecord)
_enc_json = msgspec.json.encode
WRONG_LAST = (10071, 10164)  # JetStream: wrong last sequence
PLACE_EVERY_S = 5.0  # the active checks this often that its lease bucket is led by its role's preferred node


def _mono_ms() -> float:
    return time.monotonic() * 1000.0


def _refused(e: BaseException) -> bool:
    """The compare-and-set failed: the key is not at the revision named (someone else wrote it)."""
    if isinstance(e, nats.js.errors.KeyWrongLastSequenceError):
        return True
    return isinstance(e, nats.js.errors.APIError) and e.err_code in WRONG_LAST


class LeaseDriver:
    def __init__(
        self,
        bus: Bus,
        *,
        role: str,
        actor: str,
        partition: int | None,
        holder: str,
        failover_ms: int,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = _mono_ms,
    ) -> None:
        self.bus = bus
        self.role = role
        self.t: LeaseTimings = timings(failover_ms)
        self.lease = Lease(self.t, holder)
        self.on_lost = on_lost
        self.clock = clock
        self.log = logger.bind(actor=actor)
        self.record = LeaseRecord(
            holder=holder,
            actor=actor,
            partition=partition,
            host=socket.gethostname(),
            pid=os.getpid(),
            since=0,
            renewed_at=0,
        )
        self.kv: KeyValue | None = None
        self._stopping = asyncio.Event()
        self._fenced_logged = False

    # -- what the actor asks ----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.lease.phase is Phase.ACTIVE

    @property
    def revision(self) -> int | None:
        return self.lease.revision if self.active else None

    def check(self) -> str:
        """The fence: the ``Tbx-Lease`` header's value, or ``LeaseLost`` when this instance may not write now."""
        lease = self.lease
        if lease.may_write(self.clock()):
            return f"{self.role}:{lease.revision}"
        if lease.phase is Phase.ACTIVE and not self._fenced_logged:
            self._fenced_logged = True  # (once per lapse: a handler may ask many times)
            self.log.warning(
                "lease {} not renewed for {:.0f} ms: writes refused until a renewal is confirmed",
                self.role,
                self.clock() - (lease.confirmed_sent_at or 0),
            )
        reason = lease.lost_reason or ("a standby" if lease.phase is Phase.STANDBY else f"lease {lease.phase}")
        raise LeaseLost(f"{self.role}: this instance may not write now ({reason})")

    # -- the key ------------------------------------------------------------------------------------------
    async def _kv(self) -> KeyValue:
        if self.kv is None:
            self.kv = await self.bus.lease_kv(self.role, timeout=self.t.request_ms / 1000)
        return self.kv

    async def _read(self) -> tuple[int | None, str | None]:
        """The key's revision and holder; holder None: absent or deleted (revision None: never written)."""
        kv = await self._kv()
        try:
            entry = await kv.get(self.role)
        except nats.js.errors.KeyDeletedError as e:
            return (e.entry.revision if e.entry is not None else None), None
        except nats.js.errors.KeyNotFoundError:
            return None, None
        try:
            return entry.revision, _dec.decode(entry.value or b"").holder
        except msgspec.DecodeError:
            return entry.revision, "?"  # not ours to read: someone holds it
        return None, None

    def _value(self, *, taking: bool) -> bytes:
        now = now_ms()
        since = now if taking else (self.record.since or now)
        self.record = msgspec.structs.replace(self.record, since=since, renewed_at=now)
        return _enc.encode(self.record)

    async def _wait(self, until_local: float) -> None:
        delay = max(0.0, (until_local - self.clock()) / 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    # -- standby ------------------------------------------------------------------------------------------
    async def acquire(
        self, on_change: Callable[[], Any] | None = None, on_standby: Callable[[], Any] | None = None
    ) -> None:
        """Wait as a standby until this instance holds the lease and may write. Cancel to give up.
        ``on_standby``: called once when the key is found held by another instance (this one stands by)."""
        lease = self.lease
        waited_logged = False
        while not lease.may_write(self.clock()):
            if lease.phase is Phase.ACTIVE:  # the key names us, write not confirmed yet: a renewal confirms it
                await self._renew_once()
                if lease.phase is not Phase.ACTIVE:
                    raise LeaseLost(f"{self.role}: {lease.lost_reason}")
                continue
            if lease.phase is not Phase.STANDBY:
                raise LeaseLost(f"{self.role}: lease {lease.phase}")
            try:
                rev, holder = await self._read()
            except (TimeoutError, nats.errors.Error, Transient) as e:
                self.log.warning("lease {}: cannot read the key ({}); again", self.role, str(e) or type(e).__name__)
                lease.read_failed()  # the time waited so far no longer counts
                await self._wait(self.clock() + self.t.poll_ms)
                continue
            now = self.clock()
            lease.observed(now, rev, holder)
            if holder is not None and holder != lease.holder and not waited_logged:
                waited_logged = True
                self.log.info("standby: {} is held by {} (revision {})", self.role, holder, rev)
                if on_standby is not None:
                    on_standby()
            take = lease.takeover(now)
            if take is None:
                await self._wait(lease.next_wakeup(self.clock()))
                continue
            kv = await self._kv()
            sent = self.clock()
            try:
                if take.last is None:
                    got = await kv.create(self.role, self._value(taking=True))
                else:
                    got = await kv.update(self.role, self._value(taking=True), last=take.last)
            except Exception as e:
                if not _refused(e) and not isinstance(e, TimeoutError | nats.errors.Error):
                    raise
                lease.attempt_failed()  # someone else was first, or no answer: read again
                continue
            lease.acquired(sent, int(got))
            how = "created" if take.last is None else f"taken over from revision {take.last}"
            self.log.info("lease {} acquired: revision {} ({})", self.role, got, how)
            if on_change is not None:
                on_change()

    # -- active -------------------------------------------------------------------------------------------
    async def _renew_once(self) -> None:
        lease = self.lease
        kv = await self._kv()
        sent = self.clock()
        last = lease.renew_sent(sent)
        try:
            got = await kv.update(self.role, self._value(taking=False), last=last)
        except Exception as e:
            if _refused(e):
                try:
                    rev, holder = await self._read()
                except (TimeoutError, nats.errors.Error) as e2:
                    self.log.warning("lease {}: renewal refused, key unreadable ({}); again", self.role, e2)
                    return
                lease.refused(rev, holder)
                if lease.phase is Phase.LOST:
                    self.log.error("lease {} lost: {}", self.role, lease.lost_reason)
                return
            if isinstance(e, TimeoutError | nats.errors.Error):
                self.log.warning("lease {}: renewal not confirmed ({})", self.role, str(e) or type(e).__name__)
                return
            raise
        lease.renewed(sent, int(got))
        self._fenced_logged = False

    async def place(self) -> None:
        """Best effort, once this instance holds the lease: ask for the role's bucket to be led by its preferred node
        (``preferred_leader``; a leader stepdown naming it, nats-server 2.11+), so that the lease buckets' leaders
        spread over the nodes (made at the same moment, they tend to have one leader) and a node's death stops only
        the roles whose bucket it leads. Skipped when that node leads it already, is offline or not current."""
        stream = f"KV_{self.bus.subjects.kv_lease(self.role)}"
        try:
            info = await self.bus.js.stream_info(stream)
            c = info.cluster
            if c is None or not c.leader or not c.replicas:
                return
            ready = {r.name for r in c.replicas if r.name and r.current and not r.offline} | {c.leader}
            want = preferred_leader(self.role, [c.leader, *(r.name for r in c.replicas if r.name)], ROLES)
            if want == c.leader or want not in ready:
                return
            body = _enc_json({"placement": {"preferred": want}})
            await self.bus.nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=2.0)
            self.log.info("lease {}: its bucket's leader moved from {} to {}", self.role, c.leader, want)
        except Exception as e:  # (an older nats-server, no permission, an election under way: left where it is)
            self.log.debug("lease {}: bucket leader not moved ({})", self.role, e)

    async def run(self) -> None:
        """Renew until stopped or lost (then ``on_lost`` with the reason); meanwhile keep the role's bucket led by its
        preferred node (``place``, every PLACE_EVERY_S: a node's death moves leaders onto the others)."""
        placing = asyncio.create_task(self._keep_placed(), name=f"lease {self.role}: place")
        try:
            await self._renew_until_done()
        finally:
            placing.cancel()

    async def _keep_placed(self) -> None:
        while not self._stopping.is_set():
            await self.place()
            await self._wait(self.clock() + PLACE_EVERY_S * 1000)

    async def _renew_until_done(self) -> None:
        lease = self.lease
        while lease.phase is Phase.ACTIVE and not self._stopping.is_set():
            await self._wait(lease.next_wakeup(self.clock()))
            if self._stopping.is_set():
                return
            if lease.renew_due(self.clock()):
                await self._renew_once()
        if lease.phase is Phase.LOST:
            self.on_lost(f"lease lost: {lease.lost_reason}")

    def abandon(self) -> None:
        """Stop renewing at once, without a word to NATS (the instance is being aborted, its connection closed):
        the lease runs out and a standby takes it; this instance's fence closes as it would for a lost renewal."""
        self._stopping.set()

    async def release(self, runner: asyncio.Task[None] | None = None) -> None:
        """A clean stop: no write from now on, the renewal in hand finished, the key deleted naming our revision
        (a standby takes over at once; if a renewal's outcome stayed unknown the delete is refused and the
        standby waits the lease out instead)."""
        self._stopping.set()
        if runner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(runner, self.t.request_ms / 1000 + 0.5)
        held = self.lease.release()
        if held is None or self.kv is None:
            return
        try:
            await self.kv.delete(self.role, last=held)
            self.log.info("lease {} released (revision {})", self.role, held)
        except Exception as e:
            self.log.warning("lease {}: release refused ({}); a standby waits it out", self.role, e)
