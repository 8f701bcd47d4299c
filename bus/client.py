"""NATS transport: connect, typed publish / request / subscribe, durable consumers, replays, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import nkeys
from loguru import logger
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from bus.auth import NatsAuth
from bus.codec import DecodeFailure, decode, encode
from bus.errors import BusUnavailable, NatsRefused, RequestFailed, Transient
from schemas.messages import DeadLetter, now_ms
from schemas.subjects import Subjects

T = TypeVar("T")
R = TypeVar("R")

ERROR_HEADER = "Tbx-Error"
TRANSIENT_HEADER = "Tbx-Transient"  # "1" beside Tbx-Error: the failure was transient (ask again in a moment)
PAUSE_NAK_DELAY_S = 0.5
NO_RESPONDERS_TRIES = 3
NO_RESPONDERS_PAUSE_S = 0.025
MSG_ID_HEADER = "Nats-Msg-Id"
LEASE_HEADER = "Tbx-Lease"  # on every stream / KV write of a leased actor: "<role>:<lease revision>"
RESUME_CREATE_WAIT_S = 2.0  # how long one re-created ordered consumer may take before it is asked for again
RESUME_POLL_S = 0.005
# a followed stream's ordered consumer lives on one NATS node: when that node dies, nats-py notices only once two
# idle heartbeats are missed (its default 5 s: up to 10-20 s) and then re-creates it. Every follow asks for this one
# (checked every 2 s: a lost consumer is re-created 2-4 s after the node's death, or as soon as the stream has a
# leader again), and a leader elected for a followed stream resumes its follows at once (``_on_leader_elected``).
FOLLOW_HEARTBEAT_S = 1.0
# one read or write of a KV bucket (``Bus.kv``) not answered within this long fails as a timeout (transient: the
# handler's message is handed back and tried again). While a bucket elects a leader (its node died) its reads and
# writes go unanswered: with the JetStream context's 10 s, each one held its handler 10 s past the election
KV_TIMEOUT_S = 2.0
ELECTED_ADVISORY = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED"  # .<stream>: published when a stream elects a leader
# a request sent before a disconnect is answered within this long after the reconnect, or never (the server
# that should answer it is gone, or answered into the dead connection): then it fails as a timeout at once
LOST_REQUEST_GRACE_S = 0.5
# a JetStream publish that fails transiently (no stream leader during an election: NoStreamResponse, 503, a
# timeout, NATS reconnecting) is tried again with its msg id, with back-off, for at most this long in all
LANE_LIMIT = 512  # laned messages in hand per connection (``Bus._in_lane``); beyond, the callbacks wait
STOP_LANES_WAIT_S = 1.0  # stop_consuming: how long laned handlers cancelled past the grace may take to end
PUBLISH_RETRY_S = 3.0
PUBLISH_MIN_ATTEMPT_S = 1.0  # the ack timeout of one try is what is left of the bound, never less than this
PUBLISH_PAUSE_S = (0.02, 0.5)  # first and longest pause between tries
LEADER_WAIT_S = 30.0  # ensure_layout: a stream or bucket without a leader this long is an error (retried)
LEADER_POLL_TIMEOUT_S = 2.0
DEFAULT_ACK_WAIT_S = 30.0  # durable consumers of a bus without a lease (a leased actor's: domain.lease.ack_wait_s)


Fence = Callable[[], str]  # returns the lease header's value, or raises bus.errors.LeaseLost


class _PubAck(msgspec.Struct):
    """A JetStream publish's answer (nats-py's ``api.PubAck`` is built from it)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool | None = None
    domain: str | None = None
    error: dict[str, Any] | None = None


_pub_ack = msgspec.json.Decoder(_PubAck)


class FencedJetStream(JetStreamContext):
    """A JetStream context whose every write (stream publishes and the writes of the KV buckets opened through
    it) first asks the fence, when there is one: a leased actor that does not hold its lease now writes
    nothing, and what it writes carries ``Tbx-Lease: <role>:<revision>``.

    Its ``publish`` is nats-py's, made lean for the hot path (every durable write of the service goes through it):
    the answer comes on the connection's own request inbox under a token from a counter (no random bytes per
    write), the timeout is a timer on the answer's future (no ``wait_for`` task), and the ack is decoded by msgspec.
    What it raises is what nats-py's raises (TimeoutError, NoStreamResponseError, APIError and its subclasses),
    and a write in flight when the connection drops is failed by ``Bus._fail_lost_requests`` as before."""

    fence: Fence | None = None
    _tokens = itertools.count(1)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
        msg_ttl: float | None = None,
    ) -> api.PubAck:
        if self.fence is not None:
            headers = {**(headers or {}), LEASE_HEADER: self.fence()}
        if stream is not None:
            headers = {**(headers or {}), api.Header.EXPECTED_STREAM: stream}
        if msg_ttl is not None:
            headers = {**(headers or {}), api.Header.MSG_TTL: str(int(msg_ttl))}
        nc = self._nc
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not nc._resp_sub_prefix:
            await nc._init_request_sub()
        token = f"w{next(self._tokens)}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[NatsMsg] = loop.create_future()
        nc._resp_map[token] = answer
        timer = None
        try:
            await nc.publish(subject, payload, reply=nc._resp_sub_prefix.decode() + token, headers=headers)
            timer = loop.call_later(self._timeout if timeout is None else timeout, _time_out, answer)
            msg = await answer
        finally:
            if timer is not None:
                timer.cancel()
            nc._resp_map.pop(token, None)
        if msg.headers and msg.headers.get(api.Header.STATUS) == "503":
            raise nats.js.errors.NoStreamResponseError
        ack = _pub_ack.decode(msg.data)
        if ack.error is not None:
            raise nats.js.errors.APIError.from_error(ack.error)
        return api.PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)

    async def publish_async(self, *args: Any, **kwargs: Any) -> asyncio.Future[api.PubAck]:
        if self.fence is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), LEASE_HEADER: self.fence()}
        return await super().publish_async(*args, **kwargs)


def _time_out(answer: asyncio.Future[NatsMsg]) -> None:
    if not answer.done():
        answer.set_exception(nats.errors.TimeoutError())


@dataclass(slots=True)
class Envelope:
    """What came with a message besides its body."""

    subject: str
    reply: str | None
    headers: dict[str, str] | None
    seq: int | None  # stream sequence (JetStream only)
    delivered: int  # delivery count (JetStream only, 1 for core)
    raw: NatsMsg
    stored_at: int | None = None  # epoch ms at which the stream stored it (JetStream only)

    @property
    def msg_id(self) -> str:
        if self.headers and MSG_ID_HEADER in self.headers:
            return self.headers[MSG_ID_HEADER]
        return f"{self.subject}#{self.seq}" if self.seq is not None else self.subject


Handler = Callable[[T, Envelope], Awaitable[None]]


@dataclass(slots=True)
class _Follow:
    """A replay that keeps following its stream (an ordered consumer), and how far it has handled."""

    stream: str
    subject: str
    start_seq: int
    sub: Any  # nats.js.JetStreamContext.PushSubscription
    handled: int = 0  # stream sequence of the last message handed to the handler


_TRANSIENT = (
    Transient,
    TimeoutError,  # nats.errors.TimeoutError is one too
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


_AUTH_REFUSALS = ("authorization violation", "authentication expired", "authentication revoked")


def _refusal(e: BaseException) -> str | None:
    """What to check when NATS refuses us for good (None: it may answer later, wait for it)."""
    text = str(e).lower()
    if isinstance(e, nats.errors.AuthorizationError) or any(r in text for r in _AUTH_REFUSALS):
        return "check the user and password or token in NATS_URL, NATS_CREDS and NATS_NKEY_SEED"
    if isinstance(e, nkeys.NkeysError):
        return "check the seed in NATS_CREDS or NATS_NKEY_SEED"
    if isinstance(e, ssl.SSLError) and not isinstance(
        e, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
    ):
        return (
            "check NATS_TLS_CA (the CA that signed the server's certificate), NATS_TLS_CERT and NATS_TLS_KEY "
            "(the client certificate the server asks for) and tls:// in NATS_URL"
        )
    return None


def _publish_retryable(e: BaseException) -> bool:
    """A JetStream publish that may succeed if tried again at once (with the same msg id)."""
    if isinstance(e, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return False  # our own close: nothing to wait for
    return is_transient(e)


def _name(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def is_transient(e: BaseException) -> bool:
    """An error that says "not now" (NATS or JetStream briefly unavailable, the next actor down),
    as opposed to one that will happen again with the same message."""
    if isinstance(e, RequestFailed):
        return e.transient
    if isinstance(e, _TRANSIENT):
        return True
    return isinstance(e, nats.js.errors.APIError) and e.code in (408, 503)


def _envelope(msg: NatsMsg, js: bool) -> Envelope:
    seq, delivered, stored_at = None, 1, None
    if js:
        seq, delivered, stored_at = _ack_fields(msg)
    return Envelope(msg.subject, msg.reply or None, msg.headers, seq, delivered, msg, stored_at)


def _ack_fields(msg: NatsMsg) -> tuple[int, int, int | None]:
    """Stream sequence, delivery count and stored time (epoch ms) of a JetStream delivery, read from its reply
    subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` (9 tokens) or the form with
    a domain and an account hash (``$JS.ACK.<domain>.<hash>.<stream>...``, 11 or more). nats-py's ``metadata``
    does the same and more (a datetime per message, on the hot path of every consumer); anything else goes to it."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"] and (len(tokens) == 9 or len(tokens) >= 11):
        at = 2 if len(tokens) == 9 else 4
        ns = int(tokens[at + 5])
        return int(tokens[at + 3]), int(tokens[at + 2]), (ns // 1_000_000) or None
    md = msg.metadata
    stored = int(md.timestamp.timestamp() * 1000) if md.timestamp else None
    return md.sequence.stream, md.num_delivered, stored


class Bus:
    """One NATS connection with the project's codec, subject catalogue and error handling."""

    def __init__(self, nc: NatsClient, subjects: Subjects, name: str, replicas: int = 1) -> None:
        self.nc = nc
        self.replicas = replicas
        self.js = FencedJetStream(nc, timeout=10.0)
        self.js_kv = FencedJetStream(nc, timeout=KV_TIMEOUT_S)  # what the KV buckets of ``kv`` are opened through
        self.ack_wait = DEFAULT_ACK_WAIT_S  # of the durable consumers (``consume``); a leased actor's is shorter
        self.subjects = subjects
        self.name = name
        self._subs: list[Subscription] = []
        self._kv: dict[str, KeyValue] = {}
        self._pausing = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # lanes (``subscribe`` / ``consume`` with ``lane``): the last task of each lane, every lane task running, and
        # room for more (at most LANE_LIMIT in hand per connection: beyond, the callback waits, nats-py buffers)
        self._lane_tails: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._lane_room = asyncio.Event()
        self._lane_room.set()
        self._follows: list[_Follow] = []
        self._synced = asyncio.Event()  # connected, and every followed stream resumed after the last reconnect
        self._synced.set()
        self._resume_task: asyncio.Task[None] | None = None
        self._elected_sub: Subscription | None = None  # stream leader elections (``_on_leader_elected``)
        self._resuming: dict[int, asyncio.Task[None]] = {}  # id(follow) -> its resume after an election
        self._in_flight_at_disconnect: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._lost: list[Callable[[str], None]] = []
        self._retired: set[asyncio.Task[None]] = set()  # handler tasks of subscriptions ended by stop_consuming

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """``callback(reason)`` once the connection is closed for good by anything but our own ``close``
        (nats-py gave up, the server refused us): whoever owns this bus cannot go on with it."""
        self._lost.append(callback)

    def _closed(self) -> None:
        if self._closing:
            return
        for cb in self._lost:
            try:
                cb("the NATS connection was closed")
            except Exception as e:  # never let one owner's surprise keep the others from hearing it
                logger.bind(actor=self.name).error("on_lost callback failed: {}", e)

    @property
    def in_sync(self) -> bool:
        """Connected, and every replay that follows its stream has caught up again since the last
        reconnect. False from a disconnect until then: state folded from the streams may be behind."""
        return self._synced.is_set() and self.nc.is_connected

    async def wait_in_sync(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), timeout)
        return self.in_sync

    # ------------------------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        subjects: Subjects,
        connect_timeout: float = 5.0,
        replicas: int = 1,
        auth: NatsAuth | None = None,
    ) -> Bus:
        """Connect, and keep reconnecting for ever once connected; fail clearly if NATS is not there."""
        log = logger.bind(actor=name)
        connected = False
        last_error: list[str] = []
        refused: list[str] = []  # what NATS (or its TLS) refused: a setting to fix, not a wait

        async def on_error(e: Exception) -> None:
            if not connected:
                last_error[:] = [str(e) or type(e).__name__]
                if (why := _refusal(e)) is not None:
                    refused[:] = [why, str(e) or type(e).__name__]
                return
            log.warning("nats error: {}", e)

        holder: list[NatsClient] = []
        buses: list[Bus] = []

        async def on_disconnect() -> None:
            if buses:
                buses[0]._synced.clear()  # from now on what we fold from streams may be behind
                buses[0]._drop_unsent()
                try:  # (nats-py's private map of open requests: never let a surprise stop the reconnect)
                    buses[0]._in_flight_at_disconnect |= set(buses[0].nc._resp_map)
                except Exception as e:
                    log.warning("open requests not recorded at the disconnect: {}", e)
            if holder and (holder[0].is_closed or holder[0].is_draining):
                return  # our own close
            log.warning("nats disconnected, reconnecting")

        async def on_closed() -> None:
            if buses:
                buses[0]._closed()

        async def on_reconnect() -> None:
            log.info("nats reconnected")
            if buses:
                try:
                    buses[0]._resume_all()
                    buses[0]._fail_lost_requests()
                except Exception as e:
                    log.error("resuming after the reconnect failed: {}", e)

        try:
            options = auth.options() if auth is not None else {}
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=[u.strip() for u in url.split(",") if u.strip()],
                    name=f"tbx-{name}",
                    connect_timeout=min(2.0, connect_timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    **options,
                    closed_cb=on_closed,
                ),
                connect_timeout,
            )
            connected = True
            holder.append(nc)
        except (OSError, nats.errors.Error, TimeoutError, ssl.SSLError, nkeys.NkeysError) as e:
            reason = last_error[0] if last_error else (str(e) or type(e).__name__)
            shown = re.sub(r"(://)[^\s/@,]+@", r"\1***@", url)  # never print credentials
            if not refused and (why := _refusal(e)) is not None:
                refused[:] = [why, reason]
            if refused:
                raise NatsRefused(f"NATS at {shown} refused the connection: {refused[1]}; {refused[0]}") from None
            raise BusUnavailable(
                f"cannot reach NATS at {shown}: {reason}. Start a nats-server there, or unset NATS_URL "
                "to let `tbx run` start its embedded one (`tbx actor` and `tbx gateway` join a NATS_URL: they "
                "have no embedded one)"
            ) from None
        bus = cls(nc, subjects, name, replicas)
        buses.append(bus)
        return bus

    async def ensure_layout(self) -> None:
        """Create (or bring up to date) every stream and KV bucket, and return once each has a leader (with
        NATS_REPLICAS > 1 a stream made a moment ago, here or by another process, answers nothing until its
        replicas have elected one). Idempotent, safe to race. Raises a transient error (retried by the caller)
        when JetStream does not answer or a leader does not show within LEADER_WAIT_S."""
        names: list[str] = []
        for spec in self.subjects.streams():
            cfg = api.StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_msgs_per_subject=spec.max_msgs_per_subject,
                max_age=spec.max_age_s or None,
                duplicate_window=120.0,
                num_replicas=self.replicas,
                no_ack=spec.no_ack,
            )
            names.append(spec.name)
            try:
                info = await self.js.stream_info(spec.name)
            except nats.js.errors.NotFoundError:
                try:
                    await self.js.add_stream(cfg)
                except nats.js.errors.BadRequestError:
                    await self.wait_leader(spec.name)  # created meanwhile by another actor
                    await self.js.update_stream(cfg)
                continue
            had = info.config.num_replicas or 1
            cfg.num_replicas = max(had, self.replicas)  # raised to NATS_REPLICAS, never lowered
            if (
                sorted(info.config.subjects or []) != sorted(spec.subjects)
                or (info.config.max_msgs_per_subject or -1) != spec.max_msgs_per_subject
                or bool(info.config.no_ack) != spec.no_ack
                or had < self.replicas
            ):
                await self.js.update_stream(cfg)
                self._said_replicas(spec.name, had)
        for bucket in (
            self.subjects.kv_state,
            self.subjects.kv_paper,
            self.subjects.kv_credentials,
            self.subjects.kv_transition,
        ):  # (the lease buckets, one per role, are made by the lease's driver: bus/lease.py)
            await self.kv(bucket)
            names.append(f"KV_{bucket}")
            info = await self.js.stream_info(f"KV_{bucket}")  # a bucket is a stream: its replicas raised alike
            had = info.config.num_replicas or 1
            if had < self.replicas:
                kv_cfg = info.config
                kv_cfg.num_replicas = self.replicas
                await self.js.update_stream(kv_cfg)
                self._said_replicas(f"KV_{bucket}", had)
        for name in names:
            await self.wait_leader(name)

    def _said_replicas(self, stream: str, had: int) -> None:
        if had < self.replicas:
            logger.bind(actor=self.name).warning(
                "stream {} had {} replica(s): raised to NATS_REPLICAS={}", stream, had, self.replicas
            )

    async def wait_leader(self, stream: str, bound: float | None = None) -> None:
        """Until ``stream`` (a KV bucket: ``KV_<bucket>``) has a leader; at once with one replica. Raises
        Transient after ``bound`` seconds (LEADER_WAIT_S)."""
        if self.replicas <= 1:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (LEADER_WAIT_S if bound is None else bound)
        quick = self.nc.jetstream(timeout=LEADER_POLL_TIMEOUT_S)
        pause = 0.05
        last = "no answer"
        while True:
            try:
                info = await quick.stream_info(stream)
                if info.cluster is not None and info.cluster.leader:
                    return
                last = "no leader yet"
            except Exception as e:
                if not is_transient(e):
                    raise
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if loop.time() >= deadline:
                raise Transient(f"stream {stream} has no leader after {LEADER_WAIT_S:g}s ({last})")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def kv(self, bucket: str) -> KeyValue:
        """The KV bucket (made when missing), its reads and writes bounded by ``KV_TIMEOUT_S`` each, its writes
        fenced like the streams'."""
        if bucket not in self._kv:
            try:
                self._kv[bucket] = self._quick(await self.js.key_value(bucket))
            except nats.js.errors.BucketNotFoundError:
                try:
                    await self.js.create_key_value(
                        config=api.KeyValueConfig(
                            bucket=bucket, history=1, storage=api.StorageType.FILE, replicas=self.replicas
                        )
                    )
                except nats.js.errors.BadRequestError:  # created meanwhile by another process
                    await self.wait_leader(f"KV_{bucket}")
                self._kv[bucket] = self._quick(await self.js.key_value(bucket))
        return self._kv[bucket]

    def _quick(self, kv: KeyValue) -> KeyValue:
        """``kv`` with its reads and writes through ``js_kv`` (bounded by KV_TIMEOUT_S, fenced): bound with the
        JetStream context's longer timeout (the bucket's info), used with the short one."""
        kv._js = self.js_kv  # (nats-py keeps the context it makes every request through here)
        return kv

    def set_fence(self, fence: Fence | None) -> None:
        """From now on every stream and KV write through this bus asks ``fence`` first (bus/lease.py).

        A fenced bus buffers nothing while NATS is unreachable: nats-py would keep a publish made while it
        reconnects (or made just before the connection died and not written yet) and send it at the reconnect,
        after the fence was asked - by then a standby may hold the lease. So its pending buffer is 0 (a publish
        while disconnected raises ``OutboundBufferLimitError``, transient: retried through the fence) and what
        is left unsent at a disconnect is dropped (``_drop_unsent``)."""
        self.js.fence = fence
        self.js_kv.fence = fence
        if fence is not None:
            self.nc._max_pending_size = 0  # (nats-py's ``pending_size``; read at every publish)

    def _drop_unsent(self) -> None:
        """At a disconnect of a fenced bus: forget what nats-py holds unsent (it would send it at the reconnect,
        past the fence). A request among it times out and is retried through the fence; subscriptions are
        sent again by nats-py at the reconnect anyway."""
        if self.js.fence is None:
            return
        try:  # (nats-py's private buffer: never let a surprise stop the reconnect)
            dropped = self.nc._pending_data_size
            self.nc._pending = []
            self.nc._pending_data_size = 0
        except Exception as e:
            logger.bind(actor=self.name).error("unsent writes not dropped at the disconnect: {}", e)
            return
        if dropped:
            logger.bind(actor=self.name).warning("disconnected: {} bytes unsent dropped (fenced)", dropped)

    def check_fence(self) -> None:
        """Raise ``LeaseLost`` unless this bus may write now (a write outside JetStream: a venue's order)."""
        if self.js.fence is not None:
            self.js.fence()

    async def lease_kv(self, role: str, timeout: float) -> KeyValue:
        """The lease bucket of ``role`` (``Subjects.kv_lease``) through a context of its own, never fenced (the lease
        itself is written there); made (``NATS_REPLICAS`` replicas) and waited for until it has a leader when it is
        not there yet. Raises a transient error (timeout, no leader yet) for the caller to ask again."""
        bucket = self.subjects.kv_lease(role)
        js = self.nc.jetstream(timeout=timeout)
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            await self.kv(bucket)
            await self.wait_leader(f"KV_{bucket}")
            return await js.key_value(bucket)

    # ------------------------------------------------------------------------------------------------
    async def publish(self, subject: str, msg: Any, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(subject, encode(msg), headers=headers)

    async def js_publish(
        self, subject: str, msg: Any, *, msg_id: str | None = None, retry_for: float = PUBLISH_RETRY_S
    ) -> int:
        """Publish into a stream and wait until it is stored; the stream sequence.

        A transient failure (the stream has no leader during an election: NoStreamResponseError or a 503;
        an ack timeout; NATS reconnecting) is tried again with back-off for at most ``retry_for`` seconds,
        always under the same ``Nats-Msg-Id`` so that a try whose ack was lost and the try after it store
        one message (JetStream drops the second within the stream's duplicate window). Without a ``msg_id``
        one is made for this call. After the bound the last error is raised (transient: see is_transient).
        """
        data = encode(msg)
        headers = {MSG_ID_HEADER: msg_id or f"{self.name}:{uuid.uuid4().hex}"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        pause, longest = PUBLISH_PAUSE_S
        tries = 0
        while True:
            tries += 1
            try:
                timeout = min(self.js._timeout, max(PUBLISH_MIN_ATTEMPT_S, deadline - loop.time()))
                ack = await self.js.publish(subject, data, timeout=timeout, headers=headers)
            except Exception as e:
                if not _publish_retryable(e) or loop.time() + pause > deadline:
                    if tries > 1:
                        logger.bind(actor=self.name).warning(
                            "publish on {} failed {} times within {:g}s: {}", subject, tries, retry_for, _name(e)
                        )
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
                continue
            if tries > 1:
                logger.bind(actor=self.name).info("publish on {} stored after {} tries", subject, tries)
            return int(ack.seq)

    async def request(
        self,
        subject: str,
        msg: Any,
        reply_type: type[R],
        *,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> R:
        data = encode(msg)
        for attempt in range(NO_RESPONDERS_TRIES):
            try:
                reply = await self.nc.request(subject, data, timeout=timeout, headers=headers)
                break
            except nats.errors.NoRespondersError:
                # a subscription the server has just been told of can still read as "no interest" for a
                # few ms (seen with nats-server 2.15): ask again briefly before calling the service down
                if attempt == NO_RESPONDERS_TRIES - 1:
                    raise RequestFailed(subject, "nobody is serving this subject", no_responders=True) from None
                await asyncio.sleep(NO_RESPONDERS_PAUSE_S)
            except (TimeoutError, nats.errors.TimeoutError):
                raise RequestFailed(subject, f"no answer within {timeout:g}s", timeout=True) from None
        if reply.headers and ERROR_HEADER in reply.headers:
            unavailable = reply.headers.get(TRANSIENT_HEADER) == "1"
            raise RequestFailed(subject, reply.headers[ERROR_HEADER], unavailable=unavailable)
        return decode(reply.data, reply_type)

    async def stored_under(
        self, stream: str, subject: str, msg_id: str, since_ms: int, *, bound: float = 5.0
    ) -> int | None:
        """The stream sequence of a message of ``subject`` stored at or after ``since_ms`` (epoch ms) under the
        ``Nats-Msg-Id`` ``msg_id``, or None when the stream holds none: is it known to be stored? Reads the headers
        only (an ordered consumer from that time). Raises (TimeoutError, a JetStream error) when the stream cannot
        tell within ``bound`` seconds: then it is not known."""
        loop = asyncio.get_running_loop()
        found: asyncio.Future[int | None] = loop.create_future()
        last = (await self.js.stream_info(stream)).state.last_seq or 0

        async def cb(msg: NatsMsg) -> None:
            if found.done():
                return
            md = msg.metadata
            if msg.headers and msg.headers.get(MSG_ID_HEADER) == msg_id:
                found.set_result(md.sequence.stream)
            elif md.sequence.stream >= last or md.num_pending == 0:
                found.set_result(None)  # read up to what was stored when asked

        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME,
            opt_start_time=_rfc3339(since_ms),
            filter_subject=subject,
            headers_only=True,
        )
        sub = await self.js.subscribe(subject, stream=stream, cb=cb, ordered_consumer=True, config=config)
        try:
            info = await sub.consumer_info()
            if (info.num_pending or 0) == 0 and (info.delivered.stream_seq or 0) == 0 and not found.done():
                found.set_result(None)  # nothing stored since then
            return await asyncio.wait_for(asyncio.shield(found), bound)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def respond(self, env: Envelope, reply: Any) -> None:
        if env.reply:
            await self.nc.publish(env.reply, encode(reply))

    async def respond_to(self, reply_to: str, reply: Any) -> None:
        await self.nc.publish(reply_to, encode(reply))

    async def respond_error(self, env: Envelope, reason: str, *, transient: bool = False) -> None:
        """An error as the reply; ``transient``: it failed on something briefly unavailable (the asker's
        RequestFailed is then ``unavailable``: a REST caller gets 503 with Retry-After, not 502)."""
        if env.reply:
            headers = {ERROR_HEADER: reason[:1000]}
            if transient:
                headers[TRANSIENT_HEADER] = "1"
            await self.nc.publish(env.reply, b"", headers=headers)

    async def dead_letter(self, subject: str, reason: str, payload: bytes, seq: int | None = None) -> bool:
        """Store a message that cannot be handled, with the reason. False if it could not be stored."""
        letter = DeadLetter(
            subject=subject,
            actor=self.name,
            reason=reason,
            payload=payload[:65536].decode("utf-8", errors="replace"),
            ts=now_ms(),
            stream_seq=seq,
        )
        logger.bind(actor=self.name).warning("dead letter from {}: {}", subject, reason)
        target = self.subjects.deadletter(subject)
        try:
            msg_id = f"{self.name}:{subject}:{seq}" if seq is not None else None
            await self.js_publish(target, letter, msg_id=msg_id)
        except Exception as e:  # the dead-letter stream itself is unreachable: still never crash
            logger.bind(actor=self.name).error("could not store dead letter for {}: {}", subject, e)
            return False
        return True

    # ------------------------------------------------------------------------------------------------
    async def subscribe(
        self,
        subject: str,
        type_: type[T],
        handler: Handler[T],
        *,
        queue: str | None = None,
        lane: Callable[[T], str] | None = None,
    ) -> Subscription:
        """Core NATS subscription. Requests whose body does not decode get an error reply too.

        Without ``lane`` messages are handled one at a time, in order. With it, messages of different lanes
        (``lane(body)``, e.g. the client order id) are handled side by side, those of one lane one at a time in
        order (``_in_lane``): the handler must then be safe to run beside itself for other lanes."""

        async def handle(body: T, env: Envelope) -> None:
            try:
                await handler(body, env)
            except Exception as e:
                logger.bind(actor=self.name).opt(exception=e).error(
                    "handler failed on {} (msg {}): {}", env.subject, env.msg_id, e
                )
                if is_transient(e):  # (a JetStream publish retried within its bound, say): ask again later
                    await self.respond_error(env, f"unavailable: {_name(e)}", transient=True)
                else:
                    await self.respond_error(env, f"internal error: {type(e).__name__}")

        async def cb(msg: NatsMsg) -> None:
            env = _envelope(msg, js=False)
            try:
                body = decode(msg.data, type_)
            except DecodeFailure as e:
                await self.dead_letter(msg.subject, e.reason, msg.data)
                await self.respond_error(env, e.reason)
                return
            if lane is None:
                await handle(body, env)
            else:  # (one that comes up once stopping has begun is dropped, as nats-py drops what it buffered)
                await self._in_lane(id(cb), lane(body), lambda: handle(body, env), None)

        sub = await self.nc.subscribe(subject, queue=queue or "", cb=cb)
        await self.nc.flush()  # the server knows of us when this returns: no request can miss us
        self._subs.append(sub)
        return sub

    async def _in_lane(
        self,
        space: int,
        key: str,
        work: Callable[[], Awaitable[None]],
        paused: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Run ``work`` in the lane ``key`` of a subscription (``space``): after the lane's previous work is over,
        beside every other lane's. Returns once it is queued (waits first while LANE_LIMIT works are in hand).
        Counted as in hand (``stop_consuming`` waits for it) until it is over. A work whose turn comes once
        ``stop_consuming`` has begun does not start: ``paused`` runs instead (a durable message is handed back)."""
        while len(self._lane_tasks) >= LANE_LIMIT:
            self._lane_room.clear()
            await self._lane_room.wait()
        k = (space, key)
        before = self._lane_tails.get(k)
        self._inflight += 1
        self._idle.clear()

        async def run() -> None:
            try:
                if before is not None and not before.done():
                    await asyncio.wait((before,))
                if not self._pausing:
                    await work()
                elif paused is not None:
                    with contextlib.suppress(Exception):
                        await paused()
            finally:
                if self._lane_tails.get(k) is task:
                    del self._lane_tails[k]
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()

        task = asyncio.get_running_loop().create_task(run())
        self._lane_tails[k] = task
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_over)

    def _lane_over(self, task: asyncio.Task[None]) -> None:
        self._lane_tasks.discard(task)
        if len(self._lane_tasks) < LANE_LIMIT:
            self._lane_room.set()

    async def consume(
        self,
        *,
        stream: str,
        durable: str,
        subject: str,
        type_: type[T],
        handler: Handler[T],
        ack_wait: float | None = None,
        max_deliver: int = 5,
        max_ack_pending: int = 256,
        lane: Callable[[T], str] | None = None,
    ) -> Subscription:
        """A durable JetStream consumer: what arrives while the actor is down is handled when it is back.

        The handler must be idempotent (redelivery after a crash). A body that does not decode goes to
        the dead letters at once. A handler that raises a transient error (NATS or the next actor
        unavailable) is retried with back-off for as long as it takes; any other error is retried and
        dead-lettered after ``max_deliver`` attempts. A message is only dropped once its dead letter is
        stored. ``max_ack_pending`` bounds what waits in our buffer, so nothing sits there past
        ``ack_wait`` and gets delivered twice. ``ack_wait`` (s): the bus's ``ack_wait`` unless given (a leased
        actor's derives from FAILOVER_MS: what a dead instance held comes back soon); while the handler runs,
        the message is kept alive (``in_progress``) every half ack wait, so a long handler is not raced by a
        redelivery. An existing durable whose ack wait differs is updated to it. ``lane``: as for ``subscribe``
        (messages of different lanes handled side by side, of one lane in order; each acked once handled).
        """
        wait = self.ack_wait if ack_wait is None else ack_wait

        async def cb(msg: NatsMsg) -> None:
            if self._pausing:  # draining: hand it back, redelivered to whoever listens a moment from now
                await msg.nak(delay=PAUSE_NAK_DELAY_S)
                return
            if lane is not None:
                try:
                    body = decode(msg.data, type_)
                except DecodeFailure:
                    pass  # handled (dead-lettered) in order below
                else:
                    await self._in_lane(
                        id(cb),
                        lane(body),
                        lambda: self._handle_js(msg, type_, handler, max_deliver, wait, body),
                        lambda: msg.nak(delay=PAUSE_NAK_DELAY_S),  # its turn came once stopping had begun
                    )
                    return
            self._inflight += 1
            self._idle.clear()
            try:
                await self._handle_js(msg, type_, handler, max_deliver, wait)
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()

        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=wait,
            max_deliver=-1,
            max_ack_pending=max_ack_pending,
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        await self._set_ack_wait(stream, durable, wait)
        sub = await self.js.subscribe(
            subject,
            queue=durable,
            durable=durable,
            stream=stream,
            cb=cb,
            manual_ack=True,
            config=config,
            pending_msgs_limit=max_ack_pending * 2,
        )
        self._subs.append(sub)
        return sub

    async def _set_ack_wait(self, stream: str, durable: str, ack_wait: float) -> None:
        """An existing durable keeps the config it was made with (nats-py binds to it): bring its ack wait to
        ``ack_wait`` (one made before FAILOVER_MS set it had 30 s)."""
        try:
            info = await self.js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            return  # made by the subscribe, with the config given
        if info.config.ack_wait is not None and abs(info.config.ack_wait - ack_wait) < 0.001:
            return
        await self.js.add_consumer(stream, dataclasses.replace(info.config, ack_wait=ack_wait))
        logger.bind(actor=self.name).info("consumer {}: ack wait now {:.1f} s", durable, ack_wait)

    def _keep_alive(self, msg: NatsMsg, every: float) -> Callable[[], None]:
        """Tell JetStream the message in hand is still being worked on, every ``every`` seconds, until the returned
        function is called. A timer, not a task: most messages are handled long before the first tick."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None
        sending: asyncio.Task[None] | None = None

        async def send() -> None:
            try:
                await msg.in_progress()
            except Exception as e:  # (disconnected: the redelivery it cannot stop is handled idempotently)
                logger.bind(actor=self.name).debug("in-progress of {} not sent: {}", msg.subject, e)

        def tick() -> None:
            nonlocal handle, sending
            sending = loop.create_task(send())
            handle = loop.call_later(every, tick)

        def stop() -> None:
            if handle is not None:
                handle.cancel()
            if sending is not None:
                sending.cancel()

        handle = loop.call_later(every, tick)
        return stop

    async def _handle_js(
        self,
        msg: NatsMsg,
        type_: type[T],
        handler: Handler[T],
        max_deliver: int,
        ack_wait: float | None = None,
        body: T | None = None,
    ) -> None:
        if ack_wait is None:
            await self._handle_js_now(msg, type_, handler, max_deliver, body)
            return
        stop_keeping_alive = self._keep_alive(msg, ack_wait / 2)
        try:
            await self._handle_js_now(msg, type_, handler, max_deliver, body)
        finally:
            stop_keeping_alive()

    async def _handle_js_now(
        self, msg: NatsMsg, type_: type[T], handler: Handler[T], max_deliver: int, body: T | None = None
    ) -> None:
        """``body``: the message decoded already (a laned consumer decodes it to find its lane)."""
        env = _envelope(msg, js=True)
        log = logger.bind(actor=self.name)
        try:
            if body is None:
                body = decode(msg.data, type_)
        except DecodeFailure as e:
            if await self.dead_letter(msg.subject, e.reason, msg.data, env.seq):
                await msg.term()
            else:
                await msg.nak(delay=1.0)
            return
        try:
            await handler(body, env)
        except Exception as e:
            if is_transient(e):
                log.warning("{} (msg {}): {}: {}; will retry", msg.subject, env.msg_id, type(e).__name__, e)
                await msg.nak(delay=min(0.25 * env.delivered, 5.0))
            elif env.delivered >= max_deliver:
                log.opt(exception=e).error("handler failed on {} (msg {}), giving up: {}", msg.subject, env.msg_id, e)
                reason = f"handler failed {env.delivered} times: {type(e).__name__}: {e}"
                if await self.dead_letter(msg.subject, reason, msg.data, env.seq):
                    await msg.term()
                else:
                    await msg.nak(delay=5.0)
            else:
                log.opt(exception=e).error("handler failed on {} (msg {}), will retry: {}", msg.subject, env.msg_id, e)
                await msg.nak(delay=min(0.2 * 2**env.delivered, 5.0))
            return
        await msg.ack()

    async def replay(
        self,
        *,
        stream: str,
        subject: str,
        type_: type[T],
        handler: Handler[T],
        start_seq: int = 1,
        start_time: int | None = None,
        follow: bool = True,
        idle_heartbeat: float = FOLLOW_HEARTBEAT_S,
    ) -> Subscription | None:
        """Read a stream in order from ``start_seq`` (an ordered consumer).

        Returns once every message stored at the time of the call has been handled (however long that
        takes), so an actor can rebuild its state before it serves anything. With ``follow`` later
        messages keep arriving in order; without it (an actor re-reading what it wrote itself) the
        reading stops there. ``start_time`` (epoch ms): from the first message stored at or after it.
        ``idle_heartbeat`` (s, ``FOLLOW_HEARTBEAT_S``): a consumer lost with its NATS node is re-created after two
        missed heartbeats (nats-py's own check; its default, 5 s, left a follow 10-20 s behind after a node's death).
        """
        caught_up = asyncio.Event()
        # handled from start_seq - 1 on: a follow that starts past the end counts as caught up at once
        follow_state = _Follow(stream, subject, start_seq, None, handled=max(start_seq - 1, 0))

        async def cb(msg: NatsMsg) -> None:
            env = _envelope(msg, js=True)
            if (env.seq or 0) <= follow_state.handled:
                return  # delivered again by a consumer re-created after a reconnect: handled already
            follow_state.handled = env.seq or 0
            try:
                body = decode(msg.data, type_)
            except DecodeFailure as e:
                await self.dead_letter(msg.subject, e.reason, msg.data, env.seq)
            else:
                try:
                    await handler(body, env)
                except Exception as e:
                    logger.bind(actor=self.name).opt(exception=e).error(
                        "handler failed on {} (msg {}): {}", msg.subject, env.msg_id, e
                    )
            if msg.metadata.num_pending == 0 or (env.seq or 0) >= last:
                caught_up.set()

        last = (await self.js.stream_info(stream)).state.last_seq or 0  # what "caught up" means now
        if last < start_seq:
            caught_up.set()  # nothing stored from there on (a restart right after a snapshot, say)
        if start_time is not None:
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_TIME,
                opt_start_time=_rfc3339(start_time),
                filter_subject=subject,
            )
        else:
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if start_seq > 1 else api.DeliverPolicy.ALL,
                opt_start_seq=start_seq if start_seq > 1 else None,
                filter_subject=subject,
            )
        config.idle_heartbeat = idle_heartbeat  # nats-py re-creates an ordered consumer whose heartbeats stop
        sub = await self.js.subscribe(
            subject, stream=stream, cb=cb, ordered_consumer=True, config=config, pending_msgs_limit=-1
        )
        self._subs.append(sub)
        info = await sub.consumer_info()
        if info.num_pending == 0 and (info.delivered.stream_seq or 0) == 0:
            caught_up.set()
        waited = 0
        while not caught_up.is_set():  # never serve from half-rebuilt state; the launcher can cancel us
            try:
                await asyncio.wait_for(caught_up.wait(), 30.0)
            except TimeoutError:
                waited += 30
                logger.bind(actor=self.name).warning("replay of {} still catching up after {}s", subject, waited)
        if not follow:
            self._subs.remove(sub)
            await sub.unsubscribe()
            return None
        follow_state.sub = sub
        self._follows.append(follow_state)
        await self._watch_elections()
        return sub

    async def _watch_elections(self) -> None:
        """Once a stream is followed: hear of every stream leader elected (a JetStream advisory), to resume the
        follows of that stream at once. Without the permission to subscribe to advisories, the heartbeats remain."""
        if self._elected_sub is not None:
            return
        self._elected_sub = await self.nc.subscribe(f"{ELECTED_ADVISORY}.*", cb=self._on_leader_elected)
        self._subs.append(self._elected_sub)

    async def _on_leader_elected(self, msg: NatsMsg) -> None:
        """A stream elected a leader (its former one died or stepped down): the ordered consumers of our follows of
        that stream may have died with the old leader's node; nats-py would notice only after two missed heartbeats
        and then ask for a new one, so resume them now, each from the message after the last one handled (what was
        handled already is skipped). A follow whose consumer is alive elsewhere just gets a fresh one."""
        if self._resume_task is not None and not self._resume_task.done():
            return  # a reconnect's resume of every follow is under way
        stream = msg.subject.rsplit(".", 1)[-1]
        for f in self._follows:
            if f.stream != stream or f.sub is None or not self.nc.is_connected:
                continue
            running = self._resuming.get(id(f))
            if running is not None and not running.done():
                continue
            logger.bind(actor=self.name).info(
                "stream {} elected a leader: resuming its follow of {}", stream, f.subject
            )
            task = asyncio.create_task(self._resume_quietly(f), name=f"{self.name}:resume {f.subject}")
            self._resuming[id(f)] = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _resume_quietly(self, f: _Follow) -> None:
        try:
            await self._resume(f)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # (the heartbeats, or the next election, will see to it)
            logger.bind(actor=self.name).warning("resuming the follow of {} failed: {}", f.subject, _name(e))

    # ------------------------------------------------------------------------------------------------
    def _resume_all(self) -> None:
        """After a reconnect: resume every followed stream at once, from the message after the last one
        received, instead of waiting for nats-py to notice two missed idle heartbeats (10 s) of consumers
        that a restarted nats-server no longer has. ``in_sync`` is False until each has caught up."""
        if self._resume_task is not None and not self._resume_task.done():
            self._resume_task.cancel()
        for task in self._resuming.values():  # (never two resets of one follow at once)
            task.cancel()
        self._resuming.clear()
        if not self._follows:
            self._synced.set()
            return
        self._synced.clear()
        self._resume_task = asyncio.create_task(self._resume_follows(), name=f"{self.name}:resume")

    def _fail_lost_requests(self) -> None:
        """Requests in flight when the connection dropped: those written before it will never be answered
        (a request still in nats-py's buffer is sent after the reconnect and answered). Rather than holding
        their callers (an actor's lock, a one-at-a-time handler) for their whole timeout (10 s for a
        JetStream publish), each still unanswered shortly after the reconnect fails as a timeout, which
        every caller already handles ("outcome unknown": retried, idempotently)."""
        tokens, self._in_flight_at_disconnect = self._in_flight_at_disconnect, set()
        if not tokens:
            return

        async def fail_later() -> None:
            await asyncio.sleep(LOST_REQUEST_GRACE_S)
            lost = 0
            for token in tokens:
                future = self.nc._resp_map.get(token)
                if future is not None and not future.done():
                    future.set_exception(nats.errors.TimeoutError())
                    lost += 1
            if lost:
                logger.bind(actor=self.name).warning("{} request(s) lost with the connection: failed as timeouts", lost)

        task = asyncio.create_task(fail_later(), name=f"{self.name}:lost requests")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def followed_to(self, stream: str) -> int:
        """The stream sequence up to which every message of ``stream`` that a follow reads was handed on
        (a message that did not decode counts too: it went to the dead letters). 0 if none follows it."""
        return max((f.handled for f in self._follows if f.stream == stream), default=0)

    async def _resume_follows(self) -> None:
        log = logger.bind(actor=self.name)
        pause = 0.1
        todo = list(self._follows)
        while True:
            try:  # each to its end (never two resets of one follow at once), then again those that failed
                results = await asyncio.gather(*(self._resume(f) for f in todo), return_exceptions=True)
                todo = [f for f, r in zip(todo, results, strict=True) if isinstance(r, Exception)]
                if not todo:
                    break
                raise next(r for r in results if isinstance(r, Exception))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never leave the flag down for good because of one surprise: again
                log.opt(exception=e).error("resuming the followed streams failed ({}); again in {:g} s", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                if not self.nc.is_connected:
                    return  # the next reconnect resumes them
        if self.nc.is_connected:
            self._synced.set()
            log.info("resumed {} followed stream(s) after the reconnect", len(self._follows))

    async def _resume(self, f: _Follow) -> None:
        """Re-create one ordered consumer from the next sequence (nats-py's own reset, which its idle
        heartbeat check would call 10 s later) until the server has it, then wait until it has caught up."""
        sub = f.sub
        jsi = sub._sub._jsi  # nats-py keeps the ordered consumer's state on the core subscription
        pause = 0.05
        while True:
            if sub._closed or not self.nc.is_connected:
                return
            old = sub._consumer
            await jsi.reset_ordered_consumer(max(jsi._sseq, f.start_seq - 1, f.handled) + 1)
            deadline = asyncio.get_running_loop().time() + RESUME_CREATE_WAIT_S
            while sub._consumer == old and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(RESUME_POLL_S)
            if sub._consumer != old:
                break
            await asyncio.sleep(pause)  # JetStream not ready yet (a server still recovering its streams)
            pause = min(pause * 2, 1.0)
        while True:
            if not self.nc.is_connected:
                return  # dropped again: the next reconnect resumes it
            try:
                info = await sub.consumer_info()
            except Exception:
                await asyncio.sleep(0.05)
                continue
            if (info.num_pending or 0) == 0 and f.handled >= (info.delivered.stream_seq or 0):
                return
            await asyncio.sleep(RESUME_POLL_S)

    # ------------------------------------------------------------------------------------------------
    async def stop_consuming(self, grace: float = 2.0) -> None:
        """Stop taking new durable messages, let the one in hand finish (up to ``grace`` s), unsubscribe.

        nats-py cancels a subscription's running callback when it unsubscribes, so we first pause (new
        deliveries are nak'ed back to the server) and wait until nothing is in hand.
        """
        self._pausing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        laned = list(self._lane_tasks)  # past the grace: cancelled, as nats-py cancels its own handler in hand
        for task in laned:
            task.cancel()
        if laned:
            await asyncio.wait(laned, timeout=STOP_LANES_WAIT_S)
        # let what waits in our buffers be handed back too: a message still buffered when we unsubscribe
        # is only redelivered after ack_wait
        for _ in range(20):
            await asyncio.sleep(0.01)
            if all(sub.pending_msgs == 0 for sub in self._subs):
                break
        if self._resume_task is not None:
            self._resume_task.cancel()
        self._follows.clear()
        for sub in self._subs:
            if (task := _handler_task(sub)) is not None:
                self._retired.add(task)  # (an unsubscribe cancels its handler in hand, without waiting for it)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    def handler_tasks(self) -> set[asyncio.Task[None]]:
        """The tasks that run this connection's message handlers (one per subscription with a callback, also
        those made with ``nc.subscribe`` directly), and those of subscriptions ended by ``stop_consuming``
        whose handler may still be finishing: what must be over before a fresh instance takes over."""
        tasks = set(self._retired) | self._lane_tasks
        for sub in list(self.nc._subs.values()):  # (nats-py's private map: every open subscription)
            if (task := _handler_task(sub)) is not None:
                tasks.add(task)
        return {t for t in tasks if not t.done()}

    async def abort(self) -> None:
        """Close the connection at once, without draining: nothing more is taken or sent; the handlers in hand
        are cancelled by nats-py (``handler_tasks`` tells when they are over)."""
        self._closing = True
        if self._resume_task is not None:
            self._resume_task.cancel()
        for task in list(self._background):
            task.cancel()
        for task in list(self._lane_tasks):  # (nats-py cancels the handlers it runs itself)
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), 2.0)

    async def close(self) -> None:
        self._closing = True
        if self._resume_task is not None:
            self._resume_task.cancel()
        if self.nc.is_closed:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), 3.0)
        with contextlib.suppress(Exception):
            await self.nc.close()


def _handler_task(sub: Any) -> asyncio.Task[None] | None:
    """The task in which nats-py runs a subscription's callback (None without a callback)."""
    task = getattr(sub, "_wait_for_msgs_task", None)
    return task if isinstance(task, asyncio.Task) else None


def _rfc3339(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")
