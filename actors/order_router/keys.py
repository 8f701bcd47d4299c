"""The order-router's venue keys: where each live venue's keys come from, and new keys checked and adopted.

At start, a live venue uses the keys stored for it (``credentials/``: venue + environment, the environment being
testnet when its sandbox is on, else live) when there are some, else those of the environment variables as
before (NAME_API_KEY / EXCHANGE_API_KEY / ...): **the store wins**. ``tbx.query.credentials`` tells where each
venue's keys in use come from (``store``, ``env`` or ``none``) and their last 4 characters, never more.

New keys reach the router by name only (keys never travel on the bus): the gateway seals them as a *candidate*
in the store and asks ``tbx.cmd.credentials.check`` with the candidate's revision. The router reads it, checks
it against the venue with a temporary ccxt client (that venue's URL override and pairs; the sandbox of the
environment; also for a venue it does not trade on, e.g. keys prepared in paper mode), and when the venue takes
the keys it **promotes** the candidate (the router is the one writer of the records in use; the gateway writes
candidates only) and, for a venue trading on that environment, swaps the keys in without a stop
(``CcxtVenue.swap_keys``: calls in flight end on the old client, new ones go through the new one). Refused keys
are dropped with the candidate, nothing kept. ``tbx.cmd.credentials.delete`` removes stored keys, except those a
venue is trading on (refused: rotate them instead, or stop using the venue first).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

from actors.order_router.session import VenueSession
from actors.venues.base import VenueStartError
from actors.venues.ccxt_venue import CcxtVenue
from actors.venues.factory import make_ccxt_venue_of
from bus.client import Bus, Envelope
from config.settings import Settings
from config.venues import credential_venue_config, environment_of, venue_configs
from credentials.sealing import LAST4_MIN_LENGTH, CredentialConflict, CredentialError, CredentialNotFound, VenueKeys
from credentials.store import CredentialStore, credential_store
from schemas.messages import (
    CredentialCheck,
    CredentialCheckReply,
    CredentialDelete,
    CredentialDeleteReply,
    Empty,
    KeysInUse,
    KeysInUseList,
    VenueCheck,
)

if TYPE_CHECKING:
    from loguru import Logger

CHECK_SHARE = 0.1  # of the venue's request budget, for a check's temporary client


def last4(api_key: str) -> str:
    return api_key[-4:] if len(api_key) >= LAST4_MIN_LENGTH else ""


class RouterKeys:
    def __init__(self, settings: Settings, bus: Bus, sessions: dict[str, VenueSession], log: Logger) -> None:
        self.settings = settings
        self.bus = bus
        self.sessions = sessions
        self.log = log
        self.store: CredentialStore | None = None
        self.in_use: dict[str, KeysInUse] = {}
        self.lock = asyncio.Lock()  # one check, promotion or delete at a time
        self._last_check: VenueCheck | None = None

    async def open(self) -> None:
        s = self.settings
        try:
            kv = None
            if not s.VAULT_ENABLED and s.CREDENTIAL_STORE == "kv":
                kv = await self.bus.kv(self.bus.subjects.kv_credentials)
            self.store = credential_store(s, kv)
        except Exception as e:  # the environment's keys still work
            self.log.error("the credential store cannot be opened ({}): keys come from the environment", e)

    async def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()

    async def before_start(self) -> None:
        """Each live venue's keys: the store's for its environment when there are some, else the environment's."""
        configs = {cfg.name: cfg for cfg in venue_configs(self.settings)}
        for name, session in self.sessions.items():
            venue, cfg = session.venue, configs.get(name)
            if not isinstance(venue, CcxtVenue) or cfg is None:
                continue
            environment = environment_of(cfg)
            keys = await self._stored(name, environment)
            if keys is not None:
                await venue.set_keys(keys.api_key, keys.api_secret, keys.password)
                self.in_use[name] = KeysInUse(venue=name, environment=environment, source="store", key_last4=keys.last4)
                self.log.info("venue {} uses the keys stored for {} (…{})", name, environment, keys.last4 or "")
            else:
                source = "env" if cfg.api_key or cfg.api_secret else "none"
                self.in_use[name] = KeysInUse(
                    venue=name, environment=environment, source=source, key_last4=last4(cfg.api_key)
                )

    async def _stored(self, venue: str, environment: str) -> VenueKeys | None:
        if self.store is None:
            return None
        try:
            return await self.store.get(venue, environment)
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

    async def _on_query(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, KeysInUseList(venues=list(self.in_use.values())))

    async def _on_check(self, q: CredentialCheck, env: Envelope) -> None:
        async with self.lock:
            reply = await self.check(q)
        await self.bus.respond(env, reply)

    async def _on_delete(self, q: CredentialDelete, env: Envelope) -> None:
        async with self.lock:
            reply = await self.delete(q.venue, q.environment)
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
            keys, _ = await self.store.get_candidate(q.venue, q.environment, q.revision)
        except (CredentialNotFound, CredentialConflict) as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_CONFLICT", detail=str(e))
        except CredentialError as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        session = self._trading(q.venue, q.environment)
        refused = await self._check_at_venue(q, keys, session)
        if refused is not None:
            with contextlib.suppress(CredentialError):
                await self.store.drop_candidate(q.venue, q.environment)
            return refused
        try:
            await self.store.promote(q.venue, q.environment, q.revision)
        except (CredentialNotFound, CredentialConflict) as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_CONFLICT", detail=str(e))
        except CredentialError as e:
            return CredentialCheckReply(ok=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        swapped, detail = False, None
        if session is not None:
            swapped, detail = await self._swap(session, keys, where)
        return CredentialCheckReply(ok=True, swapped=swapped, detail=detail, check=self._last_check)

    async def _check_at_venue(
        self, q: CredentialCheck, keys: VenueKeys, session: VenueSession | None
    ) -> CredentialCheckReply | None:
        """None when the venue took the keys; else the reply (refused, unreachable, not a venue)."""
        self._last_check = None
        try:
            if session is not None:
                temp = session.venue.with_keys(keys.api_key, keys.api_secret, keys.password)  # type: ignore[union-attr]
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
        self._last_check = check
        if check.keys_accepted:
            return None
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

    async def _swap(self, session: VenueSession, keys: VenueKeys, where: str) -> tuple[bool, str | None]:
        venue = session.venue
        assert isinstance(venue, CcxtVenue)
        try:
            if session.started:
                await venue.swap_keys(keys.api_key, keys.api_secret, keys.password)
            else:
                await venue.set_keys(keys.api_key, keys.api_secret, keys.password)
        except Exception as e:
            self.log.error("the new keys of {} are stored but not in use yet: {}", where, venue.describe(e))
            return False, f"stored; {session.name} keeps its current keys until a restart ({venue.describe(e)})"
        used = self.in_use[session.name]
        self.in_use[session.name] = replace_in_use(used, keys)
        self.log.warning("venue {} trades on the new keys of {} now (…{})", session.name, where, keys.last4 or "")
        return True, None

    async def delete(self, venue: str, environment: str) -> CredentialDeleteReply:
        if self.store is None:
            return CredentialDeleteReply(deleted=False, code="CREDENTIAL_STORE_UNAVAILABLE", detail="no store")
        used = self.in_use.get(venue)
        if used is not None and used.environment == environment and used.source == "store":
            return CredentialDeleteReply(
                deleted=False, code="CREDENTIALS_IN_USE",
                detail=f"{venue} trades on the stored {environment} keys: rotate them instead (POST "
                f"/api/credentials/{venue}/rotate), or take {venue} out of EXCHANGES and restart first",
            )  # fmt: skip
        try:
            with contextlib.suppress(CredentialError):
                await self.store.drop_candidate(venue, environment)
            gone = await self.store.delete(venue, environment)
        except CredentialError as e:
            return CredentialDeleteReply(deleted=False, code="CREDENTIAL_STORE_ERROR", detail=str(e))
        if not gone:
            return CredentialDeleteReply(
                deleted=False, code="NOT_FOUND", detail=f"no keys are stored for {venue}/{environment}"
            )
        return CredentialDeleteReply(deleted=True)


def replace_in_use(used: KeysInUse, keys: VenueKeys) -> KeysInUse:
    return KeysInUse(venue=used.venue, environment=used.environment, source="store", key_last4=keys.last4)
