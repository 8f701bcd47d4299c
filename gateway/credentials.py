"""Venue keys over REST: store, rotate, status, delete (``/api/credentials``). All need the API token.

The gateway never uses a key: it seals what it is given as a *candidate* in the credential store and asks the
order-router (``tbx.cmd.credentials.check``: venue, environment, the candidate's revision - never a key) to check
it against the venue and adopt it. The router promotes the candidate when the venue takes the keys (it is the one
writer of the records in use) and swaps them into a venue trading on them; refused keys are dropped, nothing
kept. See actors/order_router/keys.py.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from config.venues import environment_of, venue_configs
from credentials.sealing import (
    ENVIRONMENTS,
    KEY_SETTING,
    LAST4_MIN_LENGTH,
    CredentialConflict,
    CredentialError,
    CredentialNotFound,
    InvalidCredential,
    NoEncryptionKey,
    VenueKeys,
    check_venue,
)
from credentials.store import CredentialStore, credential_store
from gateway.common import BUS, SETTINGS, ask, choice, query_param, read_json
from gateway.partitions import ask_each
from gateway.problems import ApiError, json_response
from gateway.spec import Endpoint, Param, add, path
from schemas.messages import (
    CredentialCheck,
    CredentialCheckReply,
    CredentialDelete,
    CredentialDeleteReply,
    Empty,
    KeysInUse,
    KeysInUseList,
)
from schemas.rest_credentials import (
    CredentialEntry,
    CredentialsDeleted,
    CredentialsStatus,
    RotateCredentials,
    StoreCredentials,
    StoredCredentials,
)

ROUTER = "the order-router"
CHECK_TIMEOUT_S = 40.0  # markets, balance and clock at the venue, then the swap
STORE: web.AppKey[list[CredentialStore]] = web.AppKey("credential_store", list)
# a refusal of the order-router -> (status, title, field)
REFUSALS = {
    "CREDENTIALS_REJECTED": (422, "Credentials rejected", "apiKey"),
    "UNKNOWN_EXCHANGE": (422, "Validation failed", "exchange"),
    "VENUE_UNREACHABLE": (502, "Venue unreachable", None),
    "CREDENTIAL_CONFLICT": (409, "Conflict", None),
    "CREDENTIAL_STORE_ERROR": (503, "Credential store unavailable", None),
    "CREDENTIAL_STORE_UNAVAILABLE": (503, "Credential store unavailable", None),
    "CREDENTIALS_IN_USE": (409, "Credentials in use", "exchange"),
    "NOT_FOUND": (404, "Not Found", "exchange"),
}


async def store_of(app: web.Application) -> CredentialStore:
    held = app[STORE]
    if not held:
        s = app[SETTINGS]
        bus = app[BUS]
        try:
            kv = None if s.VAULT_ENABLED or s.CREDENTIAL_STORE != "kv" else await bus.kv(bus.subjects.kv_credentials)
            held.append(credential_store(s, kv))
        except Exception as e:
            raise ApiError(
                503, "Credential store unavailable", f"the credential store cannot be opened ({type(e).__name__})",
                code="CREDENTIAL_STORE_ERROR",
            ) from None  # fmt: skip
    return held[0]


async def _close(app: web.Application) -> None:
    for store in app[STORE]:
        await store.close()


def _invalid(e: InvalidCredential) -> ApiError:
    return ApiError(422, "Validation failed", str(e), field=e.field, code="INVALID_FIELD")


def _venue(raw: str) -> str:
    name = raw.strip().lower()
    try:
        check_venue(name)
    except InvalidCredential as e:
        raise _invalid(e) from None
    if name == "paper":
        raise ApiError(
            422, "Validation failed", "exchange: the paper venue takes no keys", field="exchange", code="INVALID_FIELD"
        )
    return name


def _environment(request: web.Request, venue: str, raw: str | None) -> str:
    """``raw`` (any case), else the one the venue runs on: testnet when its sandbox is on, else live."""
    if raw is not None and raw != "":
        return choice("environment", raw, ENVIRONMENTS)
    s = request.app[SETTINGS]
    for cfg in venue_configs(s):
        if cfg.name == venue and not cfg.paper:
            return environment_of(cfg)
    return "testnet" if s.EXCHANGE_SANDBOX else "live"


def _keys(api_key: str, api_secret: str, password: str | None) -> VenueKeys:
    try:
        return VenueKeys(api_key, api_secret, password or "")
    except InvalidCredential as e:
        raise _invalid(e) from None


def _store_problem(e: CredentialError) -> ApiError:
    if isinstance(e, NoEncryptionKey):
        return ApiError(
            409, "Encryption key missing", str(e), field=KEY_SETTING, code="CREDENTIAL_ENCRYPTION_KEY_MISSING"
        )
    if isinstance(e, CredentialNotFound):
        return ApiError(404, "Not Found", str(e), field="exchange", code="NOT_FOUND")
    if isinstance(e, CredentialConflict):
        return ApiError(409, "Conflict", str(e), code="CREDENTIAL_CONFLICT")
    return ApiError(503, "Credential store unavailable", str(e), code="CREDENTIAL_STORE_ERROR")


def _refusal(code: str | None, detail: str | None) -> ApiError:
    status, title, field = REFUSALS.get(code or "", (502, "Bad Gateway", None))
    return ApiError(status, title, detail or code or "refused", field=field, code=code)


async def _in_use(request: web.Request) -> dict[str, KeysInUse] | None:
    """The keys each venue signs with now; None when not known (the order-router does not answer). PARTITIONS > 1:
    every partition is asked, and a venue's keys are the ones every partition signs with - while partitions
    differ (a swap not done in one yet), none (``source`` "mixed": no entry of the venue is in use everywhere);
    a partition that does not answer: not known."""
    bus = request.app[BUS]
    if request.app[SETTINGS].PARTITIONS <= 1:
        with contextlib.suppress(ApiError):
            got = await ask(request, bus.subjects.query("credentials"), Empty(), KeysInUseList, ROUTER, timeout=2.0)
            assert isinstance(got, KeysInUseList)
            return {k.venue: k for k in got.venues}
        return None
    answers = await ask_each(request, bus.subjects.query("credentials"), Empty(), KeysInUseList, ROUTER, timeout=2.0)
    if any(isinstance(a, ApiError) for a in answers):
        return None
    seen = [{k.venue: k for k in a.venues} for a in answers]
    merged: dict[str, KeysInUse] = {}
    for venue in {v for part in seen for v in part}:
        each = [part.get(venue) for part in seen]
        first = each[0]
        agreed = first is not None and all(k == first for k in each)
        merged[venue] = (
            first if agreed and first is not None else KeysInUse(venue=venue, environment="", source="mixed")
        )
    return merged


def _last4(api_key: str) -> str:
    return api_key[-4:] if len(api_key) >= LAST4_MIN_LENGTH else ""


async def _entries(request: web.Request, store: CredentialStore) -> list[CredentialEntry]:
    in_use = await _in_use(request)

    def used(venue: str, environment: str, source: str, record_id: str = "") -> bool | None:
        if in_use is None:
            return None
        k = in_use.get(venue)
        if k is None or (k.environment, k.source) != (environment, source):
            return False
        return source != "store" or k.record_id == record_id  # that very record, not older or newer keys

    try:
        stored = await store.status()
    except CredentialError as e:
        raise _store_problem(e) from None
    out = [
        CredentialEntry(
            exchange=c.venue, environment=c.environment, store=c.store, source=c.source, stored_at=c.stored_at,
            rotated_at=c.rotated_at, key_last4=c.key_last4, encrypted=c.encrypted,
            in_use=used(c.venue, c.environment, "store", c.record_id), readable=c.readable, error=c.error,
        )
        for c in stored
    ]  # fmt: skip
    for cfg in venue_configs(request.app[SETTINGS]):
        if not cfg.paper and (cfg.api_key or cfg.api_secret):
            env = environment_of(cfg)
            out.append(
                CredentialEntry(
                    exchange=cfg.name, environment=env, store="env", source="env", key_last4=_last4(cfg.api_key),
                    encrypted=False, in_use=used(cfg.name, env, "env"),
                )
            )  # fmt: skip
    return out


async def _adopt(
    request: web.Request, venue: str, environment: str, keys: VenueKeys, rotation: bool, status: int
) -> web.Response:
    store = await store_of(request.app)
    try:
        mine, cid, revision = await store.put_candidate(venue, environment, keys, rotation=rotation)
    except CredentialError as e:
        raise _store_problem(e) from None
    bus = request.app[BUS]
    q = CredentialCheck(venue=venue, environment=environment, revision=revision, rotation=rotation, candidate=cid)
    try:
        reply = await ask(
            request, bus.subjects.credentials_check, q, CredentialCheckReply, ROUTER, timeout=CHECK_TIMEOUT_S
        )
    except ApiError:
        with contextlib.suppress(CredentialError):
            await store.drop_candidate(venue, environment, cid)  # nothing kept that was not checked
        raise
    assert isinstance(reply, CredentialCheckReply)
    if not reply.ok:
        raise _refusal(reply.code, reply.detail)
    # the answer is about THIS request's keys (another request for the venue may have come in at the same time)
    in_use = await _in_use(request)
    k = None if in_use is None else in_use.get(venue)
    answer = StoredCredentials(
        exchange=venue, environment=environment, store=mine.store, source=mine.source, stored_at=mine.stored_at,
        rotated_at=mine.rotated_at, key_last4=mine.key_last4, encrypted=mine.encrypted,
        in_use=None if in_use is None else k is not None and k.source == "store" and k.record_id == mine.record_id,
        readable=True, swapped=reply.swapped, check=reply.check, detail=reply.detail,
    )  # fmt: skip
    return json_response(answer, status=status)


async def post_credentials(request: web.Request) -> web.Response:
    body = await read_json(request, StoreCredentials)
    assert isinstance(body, StoreCredentials)
    venue = _venue(body.exchange)
    environment = _environment(request, venue, body.environment)
    keys = _keys(body.api_key, body.api_secret, body.password)
    return await _adopt(request, venue, environment, keys, rotation=False, status=201)


async def rotate_credentials(request: web.Request) -> web.Response:
    venue = _venue(request.match_info["exchange"])
    body = await read_json(request, RotateCredentials)
    assert isinstance(body, RotateCredentials)
    environment = _environment(request, venue, body.environment)
    keys = _keys(body.api_key, body.api_secret, body.password)
    return await _adopt(request, venue, environment, keys, rotation=True, status=200)


async def get_status(request: web.Request) -> web.Response:
    store = await store_of(request.app)
    s = request.app[SETTINGS]
    entries = await _entries(request, store)
    return json_response(
        CredentialsStatus(
            credentials=entries, encryption_key_set=bool(s.CREDENTIAL_ENCRYPTION_KEY.strip()), store=store.name
        )
    )


async def delete_credentials(request: web.Request) -> web.Response:
    venue = _venue(request.match_info["exchange"])
    environment = _environment(request, venue, query_param(request, "environment"))
    bus = request.app[BUS]
    q = CredentialDelete(venue=venue, environment=environment)
    reply = await ask(request, bus.subjects.credentials_delete, q, CredentialDeleteReply, ROUTER, timeout=10.0)
    assert isinstance(reply, CredentialDeleteReply)
    if not reply.deleted:
        raise _refusal(reply.code, reply.detail)
    return json_response(CredentialsDeleted(deleted=True, exchange=venue, environment=environment))


ENV_PARAM = Param(
    "environment", "query", {"type": "string", "enum": list(ENVIRONMENTS)},
    "testnet or live (default: the one the venue runs on)",
)  # fmt: skip


def register(app: web.Application) -> None:
    app[STORE] = []
    app.on_cleanup.append(_close)
    t = "credentials"
    ex = path("exchange", "the venue (a name of EXCHANGES, or a ccxt exchange id)")
    add(app, Endpoint(
        "POST", "/api/credentials", post_credentials,
        "Store a venue's keys, sealed with AES-256-GCM, after the venue accepted them", t,
        {201: (StoredCredentials, "Stored: the venue/environment's status entry, the venue's check")},
        body=StoreCredentials, errors=(404, 409, 422, 502, 503, 504),
        description="Checked against the venue first (its NAME_API_URL override; in paper mode too). 422 "
        "CREDENTIALS_REJECTED (field apiKey) when the venue refuses them: nothing stored. 409 "
        f"CREDENTIAL_ENCRYPTION_KEY_MISSING without {KEY_SETTING} (keys are never kept in plain text).",
    ))  # fmt: skip
    add(app, Endpoint(
        "POST", "/api/credentials/{exchange}/rotate", rotate_credentials,
        "Replace a venue's stored keys: checked, then swapped in without a restart", t,
        {200: (StoredCredentials, "Rotated: the status entry; swapped tells whether a venue trades on them now")},
        body=RotateCredentials, params=(ex,), errors=(404, 409, 422, 502, 503, 504),
    ))  # fmt: skip
    add(app, Endpoint(
        "GET", "/api/credentials/status", get_status,
        "Which venues and environments have keys, where from, stored and rotated times; never a secret", t,
        {200: (CredentialsStatus, "Stored keys and the environment's keys; keyLast4 at most")}, errors=(503,),
    ))  # fmt: skip
    add(app, Endpoint(
        "DELETE", "/api/credentials/{exchange}", delete_credentials,
        "Remove a venue's stored keys (refused while a venue trades on them)", t,
        {200: (CredentialsDeleted, "Deleted")}, params=(ex, ENV_PARAM), errors=(404, 409, 503, 504),
    ))  # fmt: skip
