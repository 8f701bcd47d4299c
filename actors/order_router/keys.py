"""The order-router's venue keys: where each live venue's keys come from, and new keys checked and adopted.

At start, a live venue uses the keys stored for it (``credentials/``: venue + environment, the environment being
testnet when its sandbox is on, else live) when there are some, else those of the environment variables as
before (NAME_API_KEY / EXCHANGE_API_KEY / ...): **the store wins**. When the store cannot be read at all (a file
that cannot be opened, NATS or Vault not answering) the venue **fails closed**: it does not start on the
environment's keys (they may be the stale ones the store replaced); it is down (a critical
CREDENTIAL_STORE_UNAVAILABLE alert and VENUE_DOWN), the others trade, and its start is tried again with a
back-off, like a venue that does not answer at start. ``tbx.query.credentials`` tells where each venue's keys in
use come from (``store``, ``env`` or ``none``), the id of the stored record they are (``recordId``) and their
last 4 characters, never more.

New keys reach the router by name only (keys never travel on the bus): the gateway seals them as a *candidate*
of its own (``<venue>.<environment>.candidate.<id>``) and asks ``tbx.cmd.credentials.check`` with its id and
revision. The router reads it, checks it against the venue with a temporary ccxt client (that venue's URL
override and pairs, CHECK_SHARE of its request budget; the sandbox of the environment; also for a venue it does
not trade on, e.g. keys prepared in paper mode), and when the venue takes the keys it **promotes** the candidate
(check-and-set: the router is the one writer of the records in use; the gateway writes candidates only) and, for
a venue trading on that environment, swaps the keys in without a stop (``CcxtVenue.swap_keys``). A swap that
fails after the check passed leaves the venue on its current keys - the answer and the status say so (inUse
false) - and is tried again at every reconcile until it succeeds. Refused keys are dropped with the candidate,
nothing kept. ``tbx.cmd.credentials.delete`` removes stored keys, except those a venue is trading on (refused:
rotate them instead, or stop using the venue first). Checks, promotions and deletes hold a lock per venue and
environment: a slow check at one venue never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from actors.order_router.session import VenueSession
from actors.venues.base import KeysUnavailable, VenueStartError
from actors.venues.ccxt_venue import CcxtVenue
from actors.venues.factory import make_ccxt_venue_of
from bus.client import Bus, Envelope
from bus.errors import RequestFailed
from config.settings import Settings
from config.venues import VenueConfig, credential_venue_config, environment_of, venue_configs
from credentials.sealing import (
    LAST4_MIN_LENGTH,
    CredentialConflict,
    CredentialError,
    CredentialNotFound,
    StoreUnavailable,
    VenueKeys,
)
from credentials.store import CredentialStore, StoredKeys, credential_store
from schemas.messages import (
    CredentialCheck,
    CredentialCheckReply,
    CredentialDelete,
    CredentialDeleteReply,
    CredentialFollow,
    Empty,
    KeysInUse,
    KeysInUseList,
)

if TYPE_CHECKING:
    from loguru import Logger

CHECK_SHARE = 0.1  # of the venue's request budget, for a check's temporary client
# partitioned: how long partition 0 waits for another partition's swap (its old client's calls end, bounded by the
# call timeout, and its new client reads the markets), at the same time as its own swap: within the gateway's wait
FOLLOW_TIMEOUT_S = 25.0


def last4(api_key: str) -> str:
    return api_key[-4:] if len(api_key) >= LAST4_MIN_LENGTH else ""


class RouterKeys:
    def __init__(self, settings: Settings, bus: Bus, sessions: dict[str, VenueSession], log: Logger) -> None:
        self.settings = settings
        self.bus = bus
        self.sessions = sessions
        self.log = log
        self.store: CredentialStore | None = None
        self.store_error: str | None = None  # why the store could not be opened (the venues fail closed)
        self.in_use: dict[str, KeysInUse] = {}
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}  # one check, promotion or delete per venue/environment
        self.pending: dict[str, tuple[VenueKeys, str]] = {}  # venue -> keys promoted but not swapped in yet, record
        self._alerted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # checks and deletes being answered (one task each)
        # partitioned, partitions other than 0 follow: they neither check, promote nor delete keys (partition 0
        # does, alone), they swap in what the store holds for their venues (``follow_store``)
        self.follower = False

    def lock(self, venue: str, environment: str) -> asyncio.Lock:
        return self.locks.setdefault((venue, environment), asyncio.Lock())

    async def open(self) -> None:
        s = self.settings
        try:
            kv = None
            if not s.VAULT_ENABLED and s.CREDENTIAL_STORE == "kv":
                kv = await self.bus.kv(self.bus.subjects.kv_credentials)
            self.store = credential_store(s, kv)
        except Exception as e:  # the live venues fail closed (not started on the environment's keys)
            self.store_error = f"the credential store cannot be opened ({type(e).__name__})"
            self.log.error("{}: live venues are not started until it can be read", self.store_error)
            return
        if self.follower:  # candidates are partition 0's to drop (one may be under its check right now)
            return
        try:
            await self.store.drop_stale_candidates()
        except CredentialError as e:
            self.log.warning("candidates left over from an earlier run not removed: {}", e)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()

    async def before_start(self) -> None:
        """Each live venue's keys are read as it starts (and again at each try of a venue down at start): the
        store's for its environment when there are some, else the environment's."""
        configs = {cfg.name: cfg for cfg in venue_configs(self.settings)}
        for name, session in self.sessions.items():
            cfg = configs.get(name)
            if not isinstance(session.venue, CcxtVenue) or cfg is None:
                continue
            environment = environment_of(cfg)
            self.in_use[name] = KeysInUse(venue=name, environment=environment, source="none")
            session.prepare = self._preparer(session, cfg)

    def _preparer(self, session: VenueSession, cfg: VenueConfig) -> Callable[[], Awaitable[None]]:
        async def prepare() -> None:
            await self._prepare(session, cfg)

        return prepare

    async def _prepare(self, session: VenueSession, cfg: VenueConfig) -> None:
        # under the venue's lock: a rotation checked, promoted and swapped meanwhile must not be overwritten by the
        # record this start read before it (the start reads the newest once the rotation is done)
        async with self.lock(session.name, environment_of(cfg)):
            await self._prepare_locked(session, cfg)

    async def _prepare_locked(self, session: VenueSession, cfg: VenueConfig) -> None:
        name, venue, environment = session.name, session.venue, environment_of(cfg)
        assert isinstance(venue, CcxtVenue)
        try:
            stored = await self._stored(name, environment)
        except StoreUnavailable as e:
            why = (
                f"{e}; {name} is not started on the environment's keys (they may be the ones the store replaced): "
                "it is tried again"
            )
            if name not in self._alerted:
                self._alerted.add(name)
                await session.alert("critical", "CREDENTIAL_STORE_UNAVAILABLE", why)
            raise KeysUnavailable(why) from None
        if stored is not None:
            if (p := self.pending.get(name)) is not None and p[1] == stored.record_id:
                self.pending.pop(name, None)  # a rotation's keys, promoted while the venue was not started: these
            await venue.set_keys(stored.keys.api_key, stored.keys.api_secret, stored.keys.password)
            self.in_use[name] = KeysInUse(
                venue=name, environment=environment, source="store", key_last4=stored.keys.last4,
                record_id=stored.record_id,
            )  # fmt: skip
            self.log.info("venue {} uses the keys stored for {} (…{})", name, environment, stored.keys.last4 or "")
        else:
            source = "env" if cfg.api_key or cfg.api_secret else "none"
            self.in_use[name] = KeysInUse(
                venue=name, environment=environment, source=source, key_last4=last4(cfg.api_key)
            )

    async def _stored(self, venue: str, environment: str) -> StoredKeys | None:
        """The stored keys of ``venue`` / ``environment``, or None (none, or a record that cannot be opened: the
        environment's are used). StoreUnavailable when the store itself cannot be read."""
        if self.store is None:
            raise StoreUnavailable(self.store_error or "no credential store")
        try:
            return await self.store.read(venue, environment)
        except StoreUnavailable:
            raise
        except CredentialError as e:
            self.log.error(
                "the stored keys of {}/{} cannot be read ({}): the environment's are used", venue, environment, e
            )
            return None

    # -- the bus ---------------------------------------------------------------------------------------
    async def subscribe(self, queue: str) -> None:
        s = self.bus.subjects
        await self.bus.subscribe(s.credentials_check, CredentialCheck, self._on_check, queue=queue)
        await self.bus.subscribe(s.credentials_delete, CredentialDelete, self._on_delete, queue=queue)
        await self.bus.subscribe(s.query("credentials"), Empty, self._on_query, queue=queue)

    async def subscribe_partition(self, partition: int, queue: str) -> None:
        """Partitioned (PARTITIONS > 1): the keys this partition signs with (``tbx.query.credentials.p<k>``: the
        gateway gathers every partition's), and, in a follower, partition 0's request to swap in what it promoted
        (``tbx.cmd.credentials.follow.p<k>``)."""
        s = self.bus.subjects
        await self.bus.subscribe(s.addressed(s.query("credentials"), partition), Empty, self._on_query, queue=queue)
        if self.follower:
            follow = s.addressed(s.credentials_follow, partition)
            await self.bus.subscribe(follow, CredentialFollow, self._on_follow, queue=queue)

    async def _on_follow(self, q: CredentialFollow, env: Envelope) -> None:
        self._background(self._answer_follow(q, env))

    async def _answer_follow(self, q: CredentialFollow, env: Envelope) -> None:
        try:
            async with self.lock(q.venue, q.environment):
                reply = await self.follow(q)
        except Exception as e:  # an answer in every case: partition 0 never waits for nothing
            self.log.error("keys of {}/{} not followed: {}", q.venue, q.environment, type(e).__name__)
            reply = CredentialCheckReply(
                ok=False, code="CREDENTIAL_STORE_ERROR", detail=f"the swap failed ({type(e).__name__})"
            )
        await self.bus.respond(env, reply)

    async def follow(self, q: CredentialFollow) -> CredentialCheckReply:
        """A follower swaps in the record the store holds now for the venue (the one partition 0 just promoted, or
        a newer one): ``swapped`` once it signs with the store's record."""
        session = self._trading(q.venue, q.environment)
        if session is None:
            return CredentialCheckReply(ok=True, detail=f"it does not trade on the {q.environment} keys of {q.venue}")
        try:
            stored = await self._stored(q.venue, q.environment)
        except StoreUnavailable as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        if stored is None:
            return CredentialCheckReply(ok=False, detail=f"no readable stored record of {q.venue}/{q.environment}")
        if stored.record_id != self.in_use[q.venue].record_id:
            swapped, detail = await self._swap(session, stored.keys, stored.record_id, f"{q.venue}/{q.environment}")
            if not swapped:
                return CredentialCheckReply(ok=True, detail=detail)
        return CredentialCheckReply(ok=True, swapped=True)

    async def _followers_swap(self, venue: str, environment: str, record_id: str) -> str | None:
        """Partition 0, after a promotion: every other partition swaps the record in now (so the rotation answers
        only once no partition signs with the old keys any more). None when all did; else which did not, and why."""
        n = self.settings.PARTITIONS
        if n <= 1 or self.follower:
            return None
        s = self.bus.subjects
        q = CredentialFollow(venue=venue, environment=environment, record_id=record_id)
        answers = await asyncio.gather(
            *(
                self.bus.request(
                    s.addressed(s.credentials_follow, k), q, CredentialCheckReply, timeout=FOLLOW_TIMEOUT_S
                )
                for k in range(1, n)
            ),
            return_exceptions=True,
        )
        lagging: list[str] = []
        for k, a in enumerate(answers, start=1):
            if isinstance(a, RequestFailed):
                lagging.append(f"the order-router partition {k} did not answer ({a.reason})")
            elif isinstance(a, BaseException):
                raise a
            elif not a.swapped:
                lagging.append(f"the order-router partition {k} keeps its current keys ({a.detail or 'not swapped'})")
        if not lagging:
            return None
        self.log.error("the new keys of {}/{} are not in use everywhere: {}", venue, environment, "; ".join(lagging))
        return "; ".join(lagging) + " - it swaps them in at its next reconcile (RECONCILE_INTERVAL_MS)"

    async def _on_query(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, KeysInUseList(venues=list(self.in_use.values())))

    def _background(self, job: Awaitable[None]) -> None:
        """A request handled in a task of its own: the subscription delivers one message at a time, and a check
        waiting for one venue must not hold up another's (the locks are per venue and environment)."""
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_check(self, q: CredentialCheck, env: Envelope) -> None:
        self._background(self._answer_check(q, env))

    async def _on_delete(self, q: CredentialDelete, env: Envelope) -> None:
        self._background(self._answer_delete(q, env))

    async def _answer_check(self, q: CredentialCheck, env: Envelope) -> None:
        try:
            async with self.lock(q.venue, q.environment):
                reply = await self.check(q)
        except Exception as e:  # an answer in every case: the gateway never waits for nothing
            self.log.error("credential check of {}/{} failed: {}", q.venue, q.environment, type(e).__name__)
            reply = CredentialCheckReply(
                ok=False, code="CREDENTIAL_STORE_ERROR", detail=f"check failed ({type(e).__name__})"
            )
        await self.bus.respond(env, reply)

    async def _answer_delete(self, q: CredentialDelete, env: Envelope) -> None:
        try:
            async with self.lock(q.venue, q.environment):
                reply = await self.delete(q.venue, q.environment)
        except Exception as e:
            self.log.error("credential delete of {}/{} failed: {}", q.venue, q.environment, type(e).__name__)
            reply = CredentialDeleteReply(
                deleted=False, code="CREDENTIAL_STORE_ERROR", detail=f"delete failed ({type(e).__name__})"
            )
        await self.bus.respond(env, reply)

    # -- check and adopt ---------------------------------------------------------------------------------
    def _trading(self, venue: str, environment: str) -> VenueSession | None:
        """The session of a live venue trading on ``environment``'s keys, if any."""
        session = self.sessions.get(venue)
        used = self.in_use.get(venue)
        if session is None or used is None or used.environment != environment:
            return None
        return session if isinstance(session.venue, CcxtVenue) else None

    async def check(self, q: CredentialCheck) -> CredentialCheckReply:
        where = f"{q.venue}/{q.environment}"
        if self.store is None:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_STORE_UNAVAILABLE", detail="no credential store")
        try:
            keys, _ = await self.store.get_candidate(q.venue, q.environment, q.candidate, q.revision)
        except (CredentialNotFound, CredentialConflict) as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_CONFLICT", detail=str(e))
        except CredentialError as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        session = self._trading(q.venue, q.environment)
        verdict = await self._check_at_venue(q, keys, session)
        if not verdict.ok:
            with contextlib.suppress(CredentialError):
                await self.store.drop_candidate(q.venue, q.environment, q.candidate)
            return verdict
        try:
            promoted = await self.store.promote(q.venue, q.environment, q.candidate, q.revision)
        except (CredentialNotFound, CredentialConflict) as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_CONFLICT", detail=str(e))
        except CredentialError as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        swapped, detail = False, None
        if session is not None:
            # partitioned: every other partition swaps at the same time; swapped only once all of them did
            (swapped, detail), lagging = await asyncio.gather(
                self._swap(session, keys, promoted.record_id, where),
                self._followers_swap(q.venue, q.environment, promoted.record_id),
            )
            if lagging is not None:
                detail, swapped = (lagging if swapped else f"{detail}; {lagging}"), False
        return CredentialCheckReply(ok=True, swapped=swapped, detail=detail, check=verdict.check)

    async def _check_at_venue(
        self, q: CredentialCheck, keys: VenueKeys, session: VenueSession | None
    ) -> CredentialCheckReply:
        """ok with the venue's check when it took the keys; else the reply (refused, unreachable, not a venue)."""
        try:
            if session is not None:
                temp = session.venue.with_keys(  # type: ignore[union-attr]
                    keys.api_key, keys.api_secret, keys.password, share=CHECK_SHARE
                )
            else:
                cfg = credential_venue_config(self.settings, q.venue, q.environment)
                cfg = replace(cfg, api_key=keys.api_key, api_secret=keys.api_secret, password=keys.password)
                temp = make_ccxt_venue_of(cfg, share=CHECK_SHARE)
        except (VenueStartError, ValueError) as e:
            return CredentialCheckReply(
                ok=False, code="UNKNOWN_EXCHANGE", field="exchange", detail=f"{q.venue} is not a venue to check: {e}"
            )
        try:
            check = await temp.check()
        finally:
            with contextlib.suppress(Exception):
                await temp.stop()
        if check.keys_accepted:
            return CredentialCheckReply(ok=True, check=check)
        if check.keys_accepted is False:
            self.log.warning("keys for {}/{} refused by the venue: not kept", q.venue, q.environment)
            return CredentialCheckReply(
                ok=False, code="CREDENTIALS_REJECTED", field="apiKey", check=check,
                detail=f"{q.venue} refused the keys ({check.error}): nothing was stored",
            )  # fmt: skip
        return CredentialCheckReply(
            ok=False, code="VENUE_UNREACHABLE", check=check,
            detail=f"the keys could not be checked at {q.venue} ({check.error}): nothing was stored",
        )  # fmt: skip

    async def _swap(
        self, session: VenueSession, keys: VenueKeys, record_id: str, where: str
    ) -> tuple[bool, str | None]:
        """The venue trades on ``keys`` (record ``record_id``) from now on; when it cannot yet (the new client
        could not read the markets, say), it stays on its current keys and the swap is tried again at every
        reconcile (``retry_swaps``) - the status shows the keys actually in use meanwhile."""
        venue = session.venue
        assert isinstance(venue, CcxtVenue)
        self.pending[session.name] = (keys, record_id)
        if not session.started:
            # (a venue down at start, its start retried): never a new client under a start that may be using the
            # current one; the start reads the store's newest record (and drops this when it is that one), else the
            # swap is tried again once the venue is started
            return False, f"stored; {session.name} is not started yet: it trades on these keys once it is"
        try:
            await venue.swap_keys(keys.api_key, keys.api_secret, keys.password)
        except Exception as e:
            self.log.error(
                "the new keys of {} are stored but not in use yet ({}): tried again at each reconcile",
                where, venue.describe(e),
            )  # fmt: skip
            return False, f"stored; {session.name} keeps its current keys until the swap succeeds ({venue.describe(e)})"
        self.pending.pop(session.name, None)
        used = self.in_use[session.name]
        self.in_use[session.name] = replace_in_use(used, keys, record_id)
        self.log.warning("venue {} trades on the new keys of {} now (…{})", session.name, where, keys.last4 or "")
        return True, None

    async def retry_swaps(self) -> None:
        """Keys promoted whose swap failed: tried again (the reconcile's interval). A follower (a partition other
        than 0) first takes up the keys partition 0 promoted since (``follow_store``)."""
        if self.follower:
            await self.follow_store()
        for name in list(self.pending):
            session = self.sessions.get(name)
            used = self.in_use.get(name)
            if session is None or used is None or name not in self.pending:
                continue
            async with self.lock(name, used.environment):
                if name not in self.pending:  # a newer rotation's swap came first
                    continue
                keys, record_id = self.pending[name]
                await self._swap(session, keys, record_id, f"{name}/{used.environment}")

    async def follow_store(self) -> None:
        """Partitioned: each started live venue trades on the record the store holds now for it (partition 0
        promotes rotations; every other partition swaps them in at its next reconcile, under the venue's lock)."""
        for name, session in self.sessions.items():
            used = self.in_use.get(name)
            if used is None or not session.started or not isinstance(session.venue, CcxtVenue):
                continue
            async with self.lock(name, used.environment):
                try:
                    stored = await self._stored(name, used.environment)
                except StoreUnavailable as e:
                    self.log.warning("keys of {} not followed now: {}", name, e)
                    continue
                if stored is None or stored.record_id == self.in_use[name].record_id:
                    continue
                await self._swap(session, stored.keys, stored.record_id, f"{name}/{used.environment}")

    async def delete(self, venue: str, environment: str) -> CredentialDeleteReply:
        if self.store is None:
            return CredentialDeleteReply(deleted=False, code="CREDENTIAL_STORE_UNAVAILABLE", detail="no store")
        used = self.in_use.get(venue)
        swapping = venue in self.pending and used is not None and used.environment == environment
        if swapping:  # promoted, its swap to be tried again: deleting it would leave the venue on deleted keys
            return CredentialDeleteReply(
                deleted=False, code="CREDENTIALS_IN_USE",
                detail=f"the stored {environment} keys of {venue} are being swapped in (the swap is tried again at "
                "each reconcile): rotate them instead, or wait until the swap is done",
            )  # fmt: skip
        if used is not None and used.environment == environment and used.source == "store":
            return CredentialDeleteReply(
                deleted=False, code="CREDENTIALS_IN_USE",
                detail=f"{venue} trades on the stored {environment} keys: rotate them instead (POST "
                f"/api/credentials/{venue}/rotate), or take {venue} out of EXCHANGES and restart first",
            )  # fmt: skip
        try:
            gone = await self.store.delete(venue, environment)
        except CredentialError as e:
            return CredentialDeleteReply(deleted=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        if not gone:
            return CredentialDeleteReply(
                deleted=False, code="NOT_FOUND", detail=f"no keys are stored for {venue}/{environment}"
            )
        return CredentialDeleteReply(deleted=True)


def replace_in_use(used: KeysInUse, keys: VenueKeys, record_id: str) -> KeysInUse:
    return KeysInUse(
        venue=used.venue, environment=used.environment, source="store", key_last4=keys.last4, record_id=record_id
    )
