"""A live venue over ``ccxt.async_support`` (any ccxt exchange id; Binance spot and Alpaca checked).

One ccxt instance per venue and API key (its rate limiter is per instance), ``enableRateLimit``, a
request timeout, closed on stop. Orders are addressed by OUR client order id: sent as the venue's client
order id (``domain.venue_ids``: unchanged when it fits the venue's rule, else a deterministic mapping), so
an order whose answer was lost is found by it and never sent twice.

Errors are read by ccxt class (``ccxt_errors``): a refusal is a ``rejected`` order with a code; a rate
limit is backed off and sent again; anything that may have acted (timeout, lost connection, "execution
status unknown") is looked up by client id a few times, then ``OutcomeUnknown``: never sent again blind.

Updates: ccxt.pro ``watch_orders`` where the venue has it and EXCHANGE_STREAM=auto (and the REST URL is
the venue's own); otherwise, and whenever the stream drops, open orders and trades are polled every
EXCHANGE_POLL_MS. Each trade is passed on once (by its id), with its order and all the order's trades.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import ccxt
import ccxt.async_support as ccxt_async
from loguru import logger

from actors.venues import ccxt_alpaca
from actors.venues.base import (
    Listener,
    OutcomeUnknown,
    VenueBalance,
    VenueHealth,
    VenueOrder,
    VenueOrderRequest,
    VenueRefused,
    VenueStartError,
    VenueTrade,
    VenueUnavailable,
)
from actors.venues.ccxt_errors import classify, safe_message
from actors.venues.ccxt_markets import CCXT_TYPES, _dec, market_rules, native_types, pair_of, symbol_of
from actors.venues.ccxt_urls import rewrite_api_urls
from bus.errors import LeaseLost
from domain.rate_window import wait_for_room_ms
from domain.venue_ids import rule_for, venue_client_id
from schemas.messages import Book, MarketRules, Trade, VenueCheck, now_ms

T = TypeVar("T")
ZERO = Decimal(0)
SEEN_TRADES = 50_000  # trade ids remembered so that a trade reported twice is passed on once
KNOWN_ORDERS = 50_000
STOP_WAIT_S = 1.0  # on stop, calls in flight get this long to end before the session is closed
BUSY_FOR_S = 60.0  # a pair is polled every EXCHANGE_POLL_MS this long after an order of ours was sent there
SWEEP_POLLS = 10  # every pair is polled every this many polls (external orders, trades on a quiet pair)
# a short window: the budget per minute, spread (a minute's window spends it at once and then serves nothing until
# it expires); a call's cost must fit in it (ccxt's limiter never serves one that does not)
RATE_WINDOW_MS = 2_000
SHARED_WEIGHT = frozenset({"binance", "binanceus"})  # request weight counted per IP, across our instances
TRADES_WINDOW_MS = 23 * 3_600_000  # Binance answers myTrades for 24 h from startTime: never ask from further back
PRIVATE_CALLS = frozenset(
    {"fetch_balance", "create_order", "cancel_order", "fetch_order", "fetch_open_orders", "fetch_my_trades"}
)
UNIFIED_STATUS = {"open", "closed", "canceled", "rejected", "expired"}
log = logger.bind(actor="order-router")
# set while an order is placed or canceled (and looked up after an unclear answer): its calls go to ccxt's limiter at
# once; every other call (polls, balance and open-order readings, lookups) waits for room first (``_room_first``)
_ORDER_CALL: ContextVar[bool] = ContextVar("ccxt_venue_order_call", default=False)
# set while a call that changes orders at the venue (a create, a cancel) is on its way: ``_throttle`` asks the fence
# once ccxt's limiter lets it go, right before ccxt signs and sends it
_FENCED_CALL: ContextVar[bool] = ContextVar("ccxt_venue_fenced_call", default=False)


def _now() -> float:
    return time.monotonic()


@contextlib.contextmanager
def _order_call() -> Iterator[None]:
    token = _ORDER_CALL.set(True)
    try:
        yield
    finally:
        _ORDER_CALL.reset(token)


class CcxtVenue:
    authoritative_lookup = False  # a live venue's lookup may lag an order whose answer was lost

    def __init__(
        self,
        exchange_id: str,
        *,
        pairs: Iterable[str],
        api_key: str = "",
        secret: str = "",
        password: str = "",
        sandbox: bool = False,
        api_url: str = "",
        timeout_ms: int = 10_000,
        poll_ms: int = 1000,
        stream: str = "auto",
        lookup_tries: int = 4,
        lookup_delay_s: float = 0.25,
        rate_limit_tries: int = 5,
        backoff_s: float = 0.25,
        backoff_max_s: float = 5.0,
        ccxt_config: dict[str, Any] | None = None,
        rate_share: float = 1.0,
        name: str | None = None,
        own_pairs: Iterable[str] | None = None,
    ) -> None:
        self.name = name or exchange_id  # how orders, fills and the API name it (a second account: its own name)
        self.exchange_id = exchange_id  # what it is (ccxt's id): behaviour follows this
        self.pairs = tuple(pairs)
        # the pairs whose orders it follows (polls trades and open orders of): all of them, except in a partition's
        # order-router (PARTITIONS > 1): its partition's own pairs - the other partitions follow theirs. ``pairs``
        # stay every pair (the start check, the venue rules any partition answers, the balance readings)
        mine = None if own_pairs is None else set(own_pairs)
        self.own_pairs = self.pairs if mine is None else tuple(p for p in self.pairs if p in mine)
        self.native_types: frozenset[str] = frozenset()
        self.rule = rule_for(exchange_id)
        self.secrets = tuple(s for s in (api_key, secret, password) if s)
        self.poll_s = poll_ms / 1000
        self.call_limit_s = timeout_ms / 1000 + RATE_WINDOW_MS / 1000 * 5
        self.lookup_tries, self.lookup_delay_s = lookup_tries, lookup_delay_s
        self.rate_limit_tries, self.backoff_s, self.backoff_max_s = rate_limit_tries, backoff_s, backoff_max_s
        self.listener: Listener | None = None
        self._health = VenueHealth(name=self.name, connected=None, update_mode="polling")
        self._weight_limit: int | None = None
        # our client id <-> the venue's (recorded on every send and by ``track``); venue order id -> ours
        self.ours: OrderedDict[str, str] = OrderedDict()
        # keyed by pair and the venue's id: venues such as Binance number orders and trades per symbol
        self.by_venue_id: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.seen_trades: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.open_seen: dict[tuple[str, str], VenueOrder] = {}  # orders seen open at the last poll
        self.since: dict[str, int] = {}  # per pair: the newest trade time polled
        self.sent_at: dict[str, float] = {}  # per pair: when an order of ours was last sent (monotonic)
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False
        self.calls = 0  # calls in flight: stop waits for them (a ccxt call in flight may reopen a closed session)
        self.idle = asyncio.Event()
        self.stream_wanted = stream == "auto" and not api_url
        self._settings = {
            "pairs": self.pairs, "sandbox": sandbox, "api_url": api_url, "timeout_ms": timeout_ms, "poll_ms": poll_ms,
            "stream": stream, "ccxt_config": dict(ccxt_config or {}), "rate_share": rate_share, "name": self.name,
            "own_pairs": None if own_pairs is None else self.own_pairs,
        }  # fmt: skip
        # calls in flight per ccxt client, by id(client), queued in its rate limiter included: a key swap waits for
        # the old client's before it answers, then closes it
        self._calls_on: dict[int, int] = {}
        self.room_waiters = 0  # calls waiting for room before they go to ccxt's limiter
        # the order-router's lease fence (``Bus.check_fence``, set by its venue session): raises ``LeaseLost`` when
        # this instance may not change orders at the venue now. Asked before every send of a create or a cancel
        # (each back-off re-send too) and again when ccxt's rate limiter releases it. None: no fence (md-feed, tests)
        self.fence: Callable[[], object] | None = None
        self.ex: Any = self._new_exchange(api_key, secret, password)

    def _new_exchange(self, api_key: str, secret: str, password: str) -> Any:
        """A ccxt client of this venue with these keys (the constructor's, or a rotation's)."""
        p = self._settings
        cls = self._exchange_class(self.exchange_id, self.stream_wanted)
        config: dict[str, Any] = {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": True,
            # ccxt's rolling-window limiter: the venue's rate over RATE_WINDOW_MS, spent without a wait until it
            # runs out. Its leaky bucket (the default) credits no idle time in ccxt 4.5.64: every call then waits
            # for the previous one's cost (measured +10 ms before an order, +200 ms after a trades poll)
            "rateLimiterAlgorithm": "rollingWindow",
            "rollingWindowSize": RATE_WINDOW_MS,
            "timeout": p["timeout_ms"],
            "enableLastResponseHeaders": True,
            "enableLastJsonResponse": True,
        }
        if password:
            config["password"] = password
        config.update(p["ccxt_config"])  # e.g. a lower rateLimit for a local test exchange
        if self.exchange_id in ("binance", "binanceus"):
            # spot only: with keys and no sandbox ccxt would sign a sapi currencies call and read futures markets
            # and no signed sapi margin pairs either (fetchMargins): the spot testnet has no sapi
            config["options"] = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}
        ex = cls(config)
        if p["rate_share"] < 1 and self.exchange_id in SHARED_WEIGHT:
            # the venue's request budget is per IP, and another instance (md-feed) spends it too: this instance's
            # limiter is held to its share (ccxt's leaky bucket refills 1/rateLimit cost units per ms)
            ex.rateLimit = ex.rateLimit / p["rate_share"]
            ex.tokenBucket = None
            ex.init_rest_rate_limiter()
        # orders first in the request budget: ccxt's limiter serves its queue in order (ccxt 4.5.64,
        # ccxt/async_support/base/throttler.py, rolling_window_loop: only queue[0] is looked at), so an order queued
        # behind a poll waits for the poll's cost to fit, not its own: behind a myTrades (cost 4) in a full window,
        # 20 orders' worth (0.2 each) of the window must run out first, about 350 ms in the bench (bench/README.md)
        ccxt_throttle = ex.throttle

        async def throttle(cost: float | None = None) -> Any:
            return await self._throttle(ex, ccxt_throttle, cost)

        ex.throttle = throttle
        if p["sandbox"]:
            ex.set_sandbox_mode(True)  # before load_markets: Binance spot testnet, Alpaca paper
        if p["api_url"]:
            ex.urls["api"] = rewrite_api_urls(ex.urls["api"], p["api_url"])
        return ex

    def with_keys(self, api_key: str, secret: str, password: str = "", *, share: float | None = None) -> CcxtVenue:
        """A new venue like this one (same id, pairs, URL, sandbox, settings) with other keys: not started;
        ``share``: the part of the venue's per-IP request budget it may spend (as ``rate_share``; a check's
        temporary client), else this one's."""
        p = dict(self._settings)
        if share is not None:
            p["rate_share"] = share
        return CcxtVenue(self.exchange_id, api_key=api_key, secret=secret, password=password, **p)

    def _hide(self, *secrets: str) -> None:
        """``secrets`` join those an error description hides - before any call is made with them."""
        self.secrets = tuple(dict.fromkeys((*self.secrets, *(s for s in secrets if s))))

    async def set_keys(self, api_key: str, secret: str, password: str = "") -> None:
        """Other keys before the venue starts (the store's instead of the environment's)."""
        self._hide(api_key, secret, password)
        old, self.ex = self.ex, self._new_exchange(api_key, secret, password)
        with contextlib.suppress(Exception):
            await old.close()

    async def swap_keys(self, api_key: str, secret: str, password: str = "") -> None:
        """Use other keys from now on, without a stop: a new ccxt client with them reads the markets, then every
        new call (and every retry of a call begun before) goes through it. Calls already on the old client -
        those waiting in its rate limiter too, which it would sign with the old keys - end there first: this
        returns once they have (bounded by the call limit, which ends any call), and the old client is closed.
        So once it returned, nothing is signed with the old keys any more: they may be revoked. The stream of
        order updates moves to the new client (polling covers the moment between). Raises (and keeps the old
        client) when the new one cannot read the markets."""
        self._hide(api_key, secret, password)  # an error of the new client echoing its key is described without it
        new = self._new_exchange(api_key, secret, password)
        try:
            await self._call(new.load_markets, client=new)
        except Exception:
            await new.close()
            raise
        old, self.ex = self.ex, new
        deadline = _now() + self.call_limit_s
        while self._calls_on.get(id(old)) and _now() < deadline:
            await asyncio.sleep(0.02)  # (each call on it ends within call_limit_s: wait_for in _call)
        with contextlib.suppress(Exception):
            await old.close()

    @staticmethod
    def _exchange_class(exchange_id: str, stream: bool) -> Any:
        if stream:
            try:
                import ccxt.pro as ccxt_pro

                if exchange_id in ccxt_pro.exchanges:
                    return getattr(ccxt_pro, exchange_id)
            except ImportError:  # pragma: no cover - ccxt.pro ships with ccxt
                pass
        if exchange_id not in ccxt_async.exchanges:
            raise VenueStartError(f"EXCHANGE={exchange_id!r} is not a ccxt exchange id")
        return getattr(ccxt_async, exchange_id)

    # -- the request budget: orders first ----------------------------------------------------------------
    async def _throttle(self, ex: Any, ccxt_throttle: Callable[..., Awaitable[Any]], cost: float | None) -> Any:
        """ccxt's ``throttle`` of client ``ex`` (every REST call of ccxt's passes it with its cost): an order's call
        goes straight to ccxt's limiter, any other call first waits for room (``_room_first``)."""
        if not _ORDER_CALL.get():
            await self._room_first(ex, cost)
        out = await ccxt_throttle(cost)
        if _FENCED_CALL.get():
            # the limiter may have held it for long: the lease must be held now, not only when it was queued. From
            # here to the bytes on the wire ccxt only signs it and aiohttp takes a connection (README "Fencing")
            self._check_fence()
        return out

    def _check_fence(self) -> None:
        if self.fence is not None:
            self.fence()

    async def _room_first(self, ex: Any, cost: float | None) -> None:
        """Wait, outside ccxt's queue, until ccxt's rolling window has room for ``cost`` and no call is queued in it
        (an order waiting for its turn), so that this call never sits at the head of ccxt's queue ahead of an order.
        At most one window: then it queues as it would have (a poll is late, never starved)."""
        th = getattr(ex, "throttler", None)
        if th is None or th.config.get("algorithm") != "rollingWindow":
            return
        cfg = th.config
        cost = cfg["cost"] if cost is None else cost
        window, most = float(cfg["windowSize"]), cfg["maxWeight"]
        give_up = _now() + window / 1000
        self.room_waiters += 1
        try:
            while (left := give_up - _now()) > 0:
                now = time.time() * 1000  # ccxt's window is in wall-clock ms
                entries = [(t["timestamp"], t["cost"]) for t in th.timestamps]
                if th.queue:  # calls queued in ccxt's limiter (an order's) go first: look again once the first can go
                    head = th.queue[0][1]
                    wait = wait_for_room_ms(entries, now, window, most, cfg["cost"] if head is None else head)
                else:
                    wait = wait_for_room_ms(entries, now, window, most, cost)
                    if wait == 0:
                        return
                await asyncio.sleep(min(left, max(left * 1000 if wait is None else wait, 1.0) / 1000))
        finally:
            self.room_waiters -= 1

    # -- calls, timed and remembered for health --------------------------------------------------------
    def describe(self, e: BaseException) -> str:
        """An error as it may be shown: no secret, no signed URL."""
        return safe_message(f"{type(e).__name__}: {e}", self.secrets)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, client: Any, **kwargs: Any) -> T:
        """``fn`` (a call on ccxt client ``client``), bounded, counted as in flight on ``client`` from now until
        it ended (its wait in the client's rate limiter included), remembered for health."""
        if self.closed:  # a late call (a task of the actor not cancelled yet) would open a new session
            raise VenueUnavailable(f"{self.name}: the venue session is stopped")
        t0 = _now()
        self.calls += 1
        owner = id(client)
        self._calls_on[owner] = self._calls_on.get(owner, 0) + 1
        try:
            # ccxt's timeout covers the HTTP request, not the wait in its limiter: a bound on both
            try:
                out = await asyncio.wait_for(fn(*args, **kwargs), self.call_limit_s)
            except TimeoutError:
                raise ccxt.RequestTimeout(
                    f"{self.name}: no answer within {self.call_limit_s:g} s (its rate limiter's wait included)"
                ) from None
        except LeaseLost:
            raise  # not sent (the fence, in the limiter): nothing to learn about the venue
        except Exception as e:
            self._health.last_latency_ms = round((_now() - t0) * 1000, 3)
            self._health.last_error, self._health.last_error_at = self.describe(e), now_ms()
            if isinstance(e, ccxt.NetworkError) and not isinstance(e, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
                self._health.connected = False
            else:
                self._health.connected = True  # the venue answered (with an error)
            if isinstance(e, ccxt.AuthenticationError | ccxt.PermissionDenied):
                self._health.keys_refused = True  # (the transition reverts on it, as on a venue down)
            raise
        finally:
            self.calls -= 1
            if (left := self._calls_on[owner] - 1) > 0:
                self._calls_on[owner] = left
            else:
                del self._calls_on[owner]
            if not self.calls:
                self.idle.set()
        self._health.last_latency_ms = round((_now() - t0) * 1000, 3)
        self._health.connected = True
        if self._health.keys_refused and getattr(fn, "__name__", "") in PRIVATE_CALLS:
            self._health.keys_refused = False  # a private call answered: the keys are taken again
        return out

    async def _backing_off(self, fn: Callable[..., Awaitable[T]], *args: Any, fenced: bool = False, **kwargs: Any) -> T:
        """``fn`` sent again after RateLimitExceeded / DDoSProtection (not processed by the venue), with an
        exponential, bounded back-off (Retry-After when the venue sent one); VenueUnavailable when it stays
        refused. Every other error is raised as it is. ``fn``: a method of the ccxt client (``self.ex.x``), or a
        helper taking the client first (``ccxt_alpaca.coin_balances``, given without the client). Each attempt
        goes through the client in use at that moment (the keys may have been swapped meanwhile).
        ``fenced``: a call that changes orders (a create, a cancel): every attempt asks the fence first, and again
        when the rate limiter releases it (``_throttle``); ``LeaseLost`` then means this call sent nothing more."""
        on_client = getattr(fn, "__self__", None) is not None
        for attempt in range(self.rate_limit_tries):
            ex = self.ex
            token = _FENCED_CALL.set(fenced)
            try:
                if fenced:
                    self._check_fence()  # (a re-send after a back-off too: the lease may be gone by now)
                if on_client:
                    return await self._call(getattr(ex, fn.__name__), *args, client=ex, **kwargs)
                return await self._call(fn, ex, *args, client=ex, **kwargs)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as e:
                if attempt == self.rate_limit_tries - 1:
                    raise VenueUnavailable(
                        f"{self.name} rate limit: still refused after backing off ({self.describe(e)})"
                    ) from None
                await asyncio.sleep(self._delay(attempt))
            finally:
                _FENCED_CALL.reset(token)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_s * (2**attempt))
        headers = getattr(self.ex, "last_response_headers", None) or {}
        retry_after = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
        try:
            if retry_after is not None:
                delay = min(self.backoff_max_s, max(delay, float(retry_after)))
        except ValueError:
            pass
        return delay

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self._start_check()
        except VenueStartError:
            await self.ex.close()
            raise
        except Exception as e:
            await self.ex.close()
            raise VenueStartError(f"{self.name} start check failed: {self.describe(e)}", retryable=True) from None
        self.tasks.append(asyncio.create_task(self._poll_loop(), name=f"{self.name}-poll"))
        if self.stream_wanted and self.ex.has.get("watchOrders"):
            self.tasks.append(asyncio.create_task(self._stream_loop(), name=f"{self.name}-stream"))

    async def load_markets(self) -> None:
        """The venue's markets, every pair of ours listed there (else VenueStartError). All that reading its public
        books needs (MARKET_DATA=venue)."""
        name = self.name
        try:
            await self._backing_off(self.ex.load_markets)
        except ccxt.AuthenticationError as e:
            raise VenueStartError(f"keys refused by {name}: {self.describe(e)}") from None
        except Exception as e:
            raise VenueStartError(f"markets of {name} not loaded: {self.describe(e)}", retryable=True) from None
        self._weight_limit = self._read_weight_limit(self.ex.last_json_response)
        missing = [p for p in self.pairs if symbol_of(p) not in self.ex.markets]
        if missing:
            raise VenueStartError(
                f"PAIRS: {', '.join(missing)} not listed by {name} (no market {', '.join(map(symbol_of, missing))})"
            )

    async def _start_check(self) -> None:
        name = self.name
        await self.load_markets()
        try:
            await self._backing_off(self.ex.fetch_balance)
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as e:
            raise VenueStartError(f"keys refused by {name}: {self.describe(e)}") from None
        except Exception as e:
            raise VenueStartError(f"balance of {name} not read: {self.describe(e)}", retryable=True) from None
        recv_window = self.ex.options.get("recvWindow")
        if recv_window and self.ex.has.get("fetchTime"):
            t0 = time.time() * 1000
            server = await self._backing_off(self.ex.fetch_time)
            t1 = time.time() * 1000
            skew = abs(server - (t0 + t1) / 2)
            if skew >= recv_window:
                raise VenueStartError(
                    f"clock of this host is {skew:.0f} ms off {name}'s (recvWindow {recv_window} ms): sync the clock"
                )
        markets = [self.ex.markets[symbol_of(p)] for p in self.pairs]
        self.native_types = native_types(self.exchange_id, self.ex.features, markets)
        now = now_ms()
        for p in self.pairs:
            self.since.setdefault(p, now)

    @staticmethod
    def _read_weight_limit(raw: Any) -> int | None:
        """Binance exchangeInfo's REQUEST_WEIGHT per 1 minute, if that was the last answer."""
        if not isinstance(raw, dict):
            return None
        for lim in raw.get("rateLimits") or []:
            if lim.get("rateLimitType") == "REQUEST_WEIGHT" and lim.get("interval") == "MINUTE":
                return int(lim.get("limit", 0)) // max(1, int(lim.get("intervalNum", 1))) or None
        return None

    async def stop(self) -> None:
        self.closed = True
        tasks, self.tasks = list(self.tasks), []
        for t in tasks:
            t.cancel()
        if tasks:  # bounded: a loop whose cancel was lost ends at its next turn (``closed``), never holds the stop
            done, left = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.warning("{}: {} ended with {}", self.name, t.get_name(), self.describe(t.exception()))
            for t in left:
                t.cancel()
                log.warning("{}: {} did not stop in {} s", self.name, t.get_name(), STOP_WAIT_S)
        if self.calls:
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), STOP_WAIT_S)
        await self.ex.close()

    def set_listener(self, listener: Listener) -> None:
        self.listener = listener

    def track(self, client_order_ids: Iterable[str]) -> None:
        """Our live client order ids (the router's, at start): their venue ids map back to them."""
        for cid in client_order_ids:
            self._venue_cid(cid)

    # -- ids ---------------------------------------------------------------------------------------------
    def _venue_cid(self, ours: str) -> str:
        v = venue_client_id(ours, self.rule)
        self.ours[v] = ours
        self.ours.move_to_end(v)
        while len(self.ours) > KNOWN_ORDERS:
            self.ours.popitem(last=False)
        return v

    def _remember_order(self, pair: str, venue_order_id: str, ours: str) -> None:
        key = (pair, venue_order_id)
        self.by_venue_id[key] = ours
        self.by_venue_id.move_to_end(key)
        while len(self.by_venue_id) > KNOWN_ORDERS:
            self.by_venue_id.popitem(last=False)

    def _mark_seen(self, trades: Iterable[VenueTrade]) -> list[VenueTrade]:
        """The trades not seen before (and now remembered as seen)."""
        new = []
        for t in trades:
            if _seen_key(t) in self.seen_trades:
                continue
            self.seen_trades[_seen_key(t)] = None
            new.append(t)
        while len(self.seen_trades) > SEEN_TRADES:
            self.seen_trades.popitem(last=False)
        return new

    # -- conversions -------------------------------------------------------------------------------------
    def _trade(self, t: dict[str, Any], ours: str | None = None) -> VenueTrade:
        fee = t.get("fee") or {}
        oid = str(t["order"]) if t.get("order") is not None else None
        pair = pair_of(t["symbol"]) if t.get("symbol") else None
        return VenueTrade(
            trade_id=str(t["id"]),
            quantity=_dec(t.get("amount")) or ZERO,
            price=_dec(t.get("price")) or ZERO,
            fee=_dec(fee.get("cost")) or ZERO,
            fee_currency=str(fee.get("currency") or ""),
            liquidity="maker" if t.get("takerOrMaker") == "maker" else "taker",
            ts=int(t.get("timestamp") or 0),
            venue_order_id=oid,
            client_order_id=ours or (self.by_venue_id.get((pair, oid)) if oid and pair else None),
            side=t.get("side"),
            pair=pair,
        )

    def _status(self, o: dict[str, Any]) -> str:
        s = o.get("status")
        if s in UNIFIED_STATUS:
            return str(s)
        raw = str((o.get("info") or {}).get("status") or s or "").lower()
        return ccxt_alpaca.STATUS.get(raw, "open")  # never guessed terminal

    def _order(self, o: dict[str, Any], trades: list[VenueTrade], ours: str | None = None) -> VenueOrder:
        vcid = str(o.get("clientOrderId") or "")
        mine = ours or self.ours.get(vcid)
        venue_id = str(o.get("id") or "")
        pair = pair_of(o["symbol"])
        if mine and venue_id:
            self._remember_order(pair, venue_id, mine)
        info = o.get("info") or {}
        kind = str(info.get("type") or o.get("type") or "").lower() or None
        return VenueOrder(
            client_order_id=mine or vcid,
            venue_order_id=venue_id,
            pair=pair,
            status=self._status(o),  # type: ignore[arg-type]
            filled=_dec(o.get("filled")) or ZERO,
            trades=[replace(t, client_order_id=mine or vcid) for t in trades],
            quantity=_dec(o.get("amount")),
            price=_dec(o.get("price")),
            side=o.get("side"),
            type=kind,
            stop_price=_dec(o.get("triggerPrice") or o.get("stopPrice")),
            created_at=o.get("timestamp"),
            external=mine is None,
        )

    async def _order_trades(self, o: dict[str, Any]) -> list[VenueTrade]:
        """All the trades of ccxt order ``o`` (none when nothing is filled)."""
        filled = _dec(o.get("filled")) or ZERO
        if filled <= ZERO:
            return []
        listed = o.get("trades") or []
        if listed and all(t.get("id") for t in listed):
            ts, oid, side, pair = int(o.get("timestamp") or 0), str(o["id"]), o.get("side"), pair_of(o["symbol"])
            trades = _unique(
                replace(
                    t, ts=t.ts or ts, venue_order_id=t.venue_order_id or oid, side=t.side or side, pair=t.pair or pair
                )
                for t in map(self._trade, listed)
            )
            if sum((t.quantity for t in trades), ZERO) == filled:
                return await self._with_fees(trades)  # the answer carried them all (Binance FULL)
        symbol, oid = o["symbol"], str(o["id"])
        if self.exchange_id in ("binance", "binanceus"):
            raw = await self._backing_off(self.ex.fetch_my_trades, symbol, None, None, {"orderId": oid})
        elif self.ex.has.get("fetchOrderTrades"):
            raw = await self._backing_off(self.ex.fetch_order_trades, oid, symbol)
        else:
            raw = await self._backing_off(self.ex.fetch_my_trades, symbol)
        trades = _unique(self._trade(t) for t in raw if str(t.get("order")) == oid)
        return await self._with_fees(trades)

    async def _with_fees(self, trades: list[VenueTrade]) -> list[VenueTrade]:
        if self.exchange_id != "alpaca" or not trades:
            return trades
        quotes = {p: p.split("_")[1] for p in self.pairs}
        return await self._backing_off(ccxt_alpaca.attach_fees, trades, quotes)

    async def _full(self, o: dict[str, Any], ours: str | None = None) -> VenueOrder:
        trades = await self._order_trades(o)
        self._mark_seen(trades)  # the caller books them: polling must not pass them on again
        return self._order(o, trades, ours)

    # -- the unified API -----------------------------------------------------------------------------------
    async def markets(self) -> list[MarketRules]:
        fees = (self.ex.fees or {}).get("trading") or {}
        return [market_rules(p, self.ex.markets[symbol_of(p)], self.ex.precisionMode, fees) for p in self.pairs]

    def _rejected(self, req: VenueOrderRequest, code: str, reason: str) -> VenueOrder:
        return VenueOrder(
            client_order_id=req.client_order_id,
            venue_order_id="",
            pair=req.pair,
            status="rejected",
            filled=ZERO,
            reason=reason,
            quantity=req.quantity,
            price=req.price,
            code=code,
            side=req.side,
            type=req.type,
        )

    def _precise(self, req: VenueOrderRequest) -> tuple[str, str | None, str | None] | VenueOrder:
        """The quantity, price and trigger as ccxt's precision helpers write them; a rejection when one of
        ours is not already on the venue's step (never sent with another size)."""
        symbol, market = symbol_of(req.pair), self.ex.markets[symbol_of(req.pair)]
        out: list[str | None] = []
        for name, value, helper, step in (
            ("quantity", req.quantity, self.ex.amount_to_precision, market["precision"].get("amount")),
            ("price", req.price, self.ex.price_to_precision, market["precision"].get("price")),
            ("stopPrice", req.stop_price, self.ex.price_to_precision, market["precision"].get("price")),
        ):
            if value is None:
                out.append(None)
                continue
            try:
                text = helper(symbol, format(value, "f"))
            except ccxt.InvalidOrder as e:
                return self._rejected(req, "INVALID_ORDER", f"{name} {value}: {self.describe(e)}")
            if Decimal(text) != value:
                return self._rejected(
                    req,
                    "INVALID_ORDER",
                    f"{name} {value} is not on {self.name}'s step {_dec(step)} for {req.pair} (it would send {text})",
                )
            out.append(text)
        return out[0] or "", out[1], out[2]

    def _params(self, req: VenueOrderRequest, vcid: str, stop: str | None) -> tuple[str, dict[str, Any]] | VenueOrder:
        ccxt_type, trigger = CCXT_TYPES[req.type]
        params: dict[str, Any] = {"clientOrderId": vcid}
        if trigger is not None:
            if req.type not in self.native_types:
                return self._rejected(req, "NOT_SUPPORTED", f"{self.name} does not hold {req.type} orders")
            params["triggerPrice" if self.exchange_id == "alpaca" else trigger] = stop
        if ccxt_type == "market":
            return ccxt_type, params  # no price (a binance market buy with one is quoteOrderQty), no time in force
        if req.post_only:
            if self.exchange_id == "alpaca":
                return self._rejected(req, "INVALID_ORDER", "alpaca has no post-only orders for crypto")
            params["postOnly"] = True  # Binance LIMIT_MAKER; no time in force with it
            return ccxt_type, params
        tif = (req.time_in_force or "GTC").upper()
        if self.exchange_id == "alpaca":
            if tif not in ccxt_alpaca.TIME_IN_FORCE:
                return self._rejected(
                    req, "INVALID_ORDER", f"alpaca takes time in force GTC or IOC for crypto, not {tif}"
                )
            params["timeInForce"] = ccxt_alpaca.TIME_IN_FORCE[tif]
            return ccxt_type, params
        offered = ((self.ex.features.get("spot") or {}).get("createOrder") or {}).get("timeInForce") or {}
        if offered and not offered.get(tif):
            return self._rejected(req, "INVALID_ORDER", f"{self.name} does not take time in force {tif}")
        params["timeInForce"] = tif
        return ccxt_type, params

    async def create_order(self, req: VenueOrderRequest) -> VenueOrder:
        with _order_call():  # its calls first in the request budget
            return await self._create_order(req)

    async def _create_order(self, req: VenueOrderRequest) -> VenueOrder:
        if req.pair not in self.pairs or symbol_of(req.pair) not in self.ex.markets:
            return self._rejected(req, "BAD_SYMBOL", f"{req.pair} is not traded on {self.name}")
        precise = self._precise(req)
        if isinstance(precise, VenueOrder):
            return precise
        amount, price, stop = precise
        vcid = self._venue_cid(req.client_order_id)
        shaped = self._params(req, vcid, stop)
        if isinstance(shaped, VenueOrder):
            return shaped
        ccxt_type, params = shaped
        symbol = symbol_of(req.pair)
        self.sent_at[req.pair] = _now()
        # never reduceOnly on spot; a market order goes without a price
        send_price = None if ccxt_type == "market" else price
        try:
            o = await self._backing_off(
                self.ex.create_order, symbol, ccxt_type, req.side, amount, send_price, params, fenced=True
            )
        except (VenueUnavailable, LeaseLost):
            raise  # (LeaseLost: not sent by this call, never a rejection nor an unknown outcome)
        except Exception as e:
            return await self._after_create_error(req, e)
        return await self._full(o, req.client_order_id)

    async def _after_create_error(self, req: VenueOrderRequest, e: Exception) -> VenueOrder:
        verdict = classify(e)
        reason = self.describe(e)
        if verdict.kind == "rejected":
            return self._rejected(req, verdict.code or "VENUE_REJECTED", reason)
        if verdict.kind == "not_processed":
            raise VenueUnavailable(f"{self.name} did not process the order: {reason}") from None
        if verdict.kind == "maybe_duplicate":  # also how Binance and Alpaca answer a client id they hold
            try:
                found = await self.fetch_order(req.client_order_id, req.pair)
            except Exception as le:  # cannot tell a refusal from "it is there already": not known yet
                raise OutcomeUnknown(
                    f"{self.name} refused order {req.client_order_id} ({reason}) and the lookup by its client id "
                    f"failed ({self.describe(le)})"
                ) from None
            if found is not None:
                return found
            return self._rejected(req, verdict.code or "INVALID_ORDER", reason)
        # duplicate / unknown: the order may be there; look it up by client id, a few times
        for attempt in range(self.lookup_tries):
            if attempt:
                await asyncio.sleep(self.lookup_delay_s * attempt)
            try:
                found = await self.fetch_order(req.client_order_id, req.pair)
            except Exception as le:
                log.warning("{}: lookup of {} failed: {}", self.name, req.client_order_id, self.describe(le))
                continue
            if found is not None:
                return found
        raise OutcomeUnknown(f"{self.name}: the outcome of order {req.client_order_id} is not known yet ({reason})")

    async def fetch_order(self, client_order_id: str, pair: str) -> VenueOrder | None:
        vcid = self._venue_cid(client_order_id)
        symbol = symbol_of(pair)
        if self.exchange_id == "alpaca":
            o = await self._backing_off(ccxt_alpaca.order_by_client_id, vcid)
        else:
            try:
                o = await self._backing_off(self.ex.fetch_order, None, symbol, {"clientOrderId": vcid})
            except ccxt.OrderNotFound:
                o = None
        if o is None:
            return None
        return await self._full(o, client_order_id)

    async def cancel_order(self, client_order_id: str, pair: str, reason: str = "canceled") -> VenueOrder:
        with _order_call():  # its calls first in the request budget
            return await self._cancel_order(client_order_id, pair)

    async def _cancel_order(self, client_order_id: str, pair: str) -> VenueOrder:
        symbol = symbol_of(pair)
        vcid = self._venue_cid(client_order_id)
        try:
            if self.exchange_id == "alpaca":  # by the venue's id; the answer is 204 with no body
                known = await self.fetch_order(client_order_id, pair)
                if known is None or known.status != "open":
                    raise VenueRefused(f"cannot cancel: the order is {known.status if known else 'unknown'}")
                await self._backing_off(self.ex.cancel_order, known.venue_order_id, symbol, fenced=True)
            else:
                await self._backing_off(self.ex.cancel_order, None, symbol, {"clientOrderId": vcid}, fenced=True)
        except (ccxt.OrderNotFound, ccxt.InvalidOrder, ccxt.OperationRejected, ccxt.BadRequest) as e:
            known = await self.fetch_order(client_order_id, pair)
            state = known.status if known else "unknown"
            raise VenueRefused(f"cannot cancel: the order is {state} ({self.describe(e)})") from None
        after = await self.fetch_order(client_order_id, pair)
        if after is None:  # just canceled, not found: the venue's lookup lags
            raise OutcomeUnknown(f"{self.name}: order {client_order_id} canceled but not found after")
        return after

    async def edit_order(
        self, client_order_id: str, pair: str, quantity: Decimal | None = None, price: Decimal | None = None
    ) -> VenueOrder:
        # Binance spot's edit is cancelReplace (a new order id) and Alpaca's PATCH makes a new order: neither
        # keeps the order and our client id, and ccxt 4.5.64 offers no amend that would
        raise VenueRefused(f"{self.name} cannot change an order in place: cancel it and place a new one")

    async def fetch_open_orders(self, pair: str | None = None) -> list[VenueOrder]:
        out = []
        for p in [pair] if pair else self.pairs:
            raw = await self._backing_off(self.ex.fetch_open_orders, symbol_of(p))
            for o in raw:
                out.append(self._order(o, await self._order_trades(o)))
        return out

    async def fetch_my_trades(self, pair: str, since: int = 0) -> list[VenueTrade]:
        raw = await self._backing_off(self.ex.fetch_my_trades, symbol_of(pair), since or None)
        return [self._trade(t) for t in raw]

    async def fetch_balance(self) -> dict[str, VenueBalance]:
        raw = await self._backing_off(self.ex.fetch_balance)
        out: dict[str, VenueBalance] = {}
        for code, total in (raw.get("total") or {}).items():
            free = (raw.get("free") or {}).get(code)
            out[code] = VenueBalance(free=_dec(free) or ZERO, total=_dec(total) or ZERO)
        if self.exchange_id == "alpaca":  # ccxt's USD total is the equity (cash + coins): the cash is what is held
            cash = _dec((raw.get("info") or {}).get("cash"))
            if cash is not None and "USD" in out:
                out["USD"] = VenueBalance(free=min(out["USD"].free, cash), total=cash)
            for code, (free_c, total_c) in (await self._backing_off(ccxt_alpaca.coin_balances)).items():
                out[code] = VenueBalance(free=free_c, total=total_c)
        return out

    async def fetch_order_book(self, pair: str, depth: int | None = None) -> Book | None:
        raw = await self._backing_off(self.ex.fetch_order_book, symbol_of(pair), depth)
        return _book(pair, raw, depth)

    @property
    def streams_books(self) -> bool:
        """Can books be watched (ccxt.pro ``watch_order_book``; EXCHANGE_STREAM=auto and no URL override)?"""
        return self.stream_wanted and bool(self.ex.has.get("watchOrderBook"))

    async def watch_order_book(self, pair: str, depth: int | None = None) -> Book:
        """The book of ``pair`` at its next change (ccxt.pro: the first call subscribes). Not bounded by the call
        timeout: a quiet market may not change for a while; the caller bounds the wait."""
        if self.closed:
            raise VenueUnavailable(f"{self.name}: the venue session is stopped")
        raw = await self.ex.watch_order_book(symbol_of(pair), depth)
        self._health.connected = True
        return _book(pair, raw, depth)

    @property
    def has_public_trades(self) -> bool:
        return bool(self.ex.has.get("fetchTrades"))

    async def fetch_trades(self, pair: str, since: int | None = None, limit: int | None = None) -> list[Trade]:
        """Public trades of ``pair`` (ccxt ``fetch_trades``), oldest first; a print without a price, an amount or
        the taker's side is left out (a ``Trade`` needs them)."""
        raw = await self._backing_off(self.ex.fetch_trades, symbol_of(pair), since, limit)
        out = []
        for t in raw:
            price, amount, side = _dec(t.get("price")), _dec(t.get("amount")), t.get("side")
            if price is None or amount is None or side not in ("buy", "sell"):
                continue
            tid = t.get("id")
            out.append(
                Trade(
                    pair=pair,
                    price=price,
                    quantity=amount,
                    side=side,
                    ts=int(t.get("timestamp") or now_ms()),
                    trade_id=None if tid is None else str(tid),
                )
            )
        return sorted(out, key=lambda t: t.ts)

    async def check(self) -> VenueCheck:
        """Markets read again, every pair listed, keys accepted and the balance read, the clock against the venue's,
        the quickest call's round trip; the first failure named (without secrets). Never raises."""
        steps: dict[str, Any] = {}
        error: str | None = None
        latencies: list[float] = []

        async def step(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
            t0 = _now()
            out = await self._backing_off(fn, *args)
            latencies.append((_now() - t0) * 1000)
            return out

        try:
            await step(self.ex.load_markets, True)
            steps["markets_loaded"] = True
            missing = [p for p in self.pairs if symbol_of(p) not in self.ex.markets]
            steps["pairs_listed"] = not missing
            if missing:
                error = f"PAIRS: {', '.join(missing)} not listed by {self.name}"
        except Exception as e:
            steps["markets_loaded"] = False
            error = f"markets not loaded: {self.describe(e)}"
        try:
            await step(self.ex.fetch_balance)
            steps["keys_accepted"] = steps["balance_read"] = True
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as e:
            steps["keys_accepted"] = steps["balance_read"] = False
            error = error or f"keys refused by {self.name}: {self.describe(e)}"
        except Exception as e:
            steps["balance_read"] = False
            error = error or f"balance not read: {self.describe(e)}"
        if self.ex.has.get("fetchTime"):
            try:
                t0 = time.time() * 1000
                server = await step(self.ex.fetch_time)
                skew = round(abs(server - (t0 + time.time() * 1000) / 2), 1)
                steps["clock_skew_ms"] = skew
                window = self.ex.options.get("recvWindow")
                if window and skew >= window:
                    error = error or f"clock {skew:.0f} ms off {self.name}'s (recvWindow {window} ms)"
            except Exception as e:
                error = error or f"time not read: {self.describe(e)}"
        ok = error is None and all(steps.get(k) for k in ("markets_loaded", "pairs_listed", "balance_read"))
        return VenueCheck(
            id=self.name, ccxt_id=self.name, ok=ok, latency_ms=round(min(latencies), 3) if latencies else None,
            error=error, **steps,
        )  # fmt: skip

    def health(self) -> VenueHealth:
        self._health.rate_limit_used = self._rate_limit_used()
        return self._health

    def _rate_limit_used(self) -> float | None:
        headers = getattr(self.ex, "last_response_headers", None) or {}
        used = next((v for k, v in headers.items() if str(k).lower() == "x-mbx-used-weight-1m"), None)
        if used is not None and self._weight_limit:
            try:
                return round(min(1.0, int(used) / self._weight_limit), 4)
            except ValueError:
                pass
        throttler = getattr(self.ex, "throttler", None)
        if throttler is None:
            return None
        if throttler.queue or self.room_waiters:
            return 1.0  # calls are waiting for the budget
        window, most = throttler.config.get("windowSize", 0), throttler.config.get("maxWeight", 0)
        if not window or not most:
            return None
        since = time.time() * 1000 - window
        spent = sum(t["cost"] for t in throttler.timestamps if t["timestamp"] > since)
        return round(min(1.0, spent / most), 4)

    # -- updates: polling, and the stream where there is one --------------------------------------------------
    async def _deliver(self, order: VenueOrder, new: list[VenueTrade]) -> None:
        if self.listener is None:
            return
        try:
            await self.listener(order, new)
        except Exception as e:  # one failing update must not stop the others; the router's reconcile catches up
            log.opt(exception=e).error("{}: update of {} not delivered: {}", self.name, order.client_order_id, e)

    def _busy_pairs(self) -> list[str]:
        """The pairs with something to follow now: an order open at the venue, or one of ours sent lately."""
        now = _now()
        open_pairs = {o.pair for o in self.open_seen.values()}
        return [p for p in self.own_pairs if p in open_pairs or now - self.sent_at.get(p, -1e9) < BUSY_FOR_S]

    async def poll_once(self, pairs: Iterable[str] | None = None) -> None:
        """One round: per pair (all of them, or ``pairs``), the trades since the last seen (each passed on once,
        with its order and all the order's trades), then open orders that are new (an external one) or gone
        (ended at the venue). All of them: the pairs it follows (``own_pairs``: a partition's own)."""
        for pair in self.own_pairs if pairs is None else pairs:
            symbol = symbol_of(pair)
            since = max(self.since.get(pair) or 0, now_ms() - TRADES_WINDOW_MS)
            raw = await self._backing_off(self.ex.fetch_my_trades, symbol, since)
            trades = [self._trade(t) for t in raw]
            if trades:  # from the newest listed, seen or not (ours are seen with their order's answer): the venue
                # lists a bounded number of trades from ``since``, a start that stood still would lose new ones
                self.since[pair] = max(self.since.get(pair, 0), max(t.ts for t in trades))
            trades = [t for t in trades if _seen_key(t) not in self.seen_trades]
            new = self._mark_seen(trades)
            by_order: dict[str, list[VenueTrade]] = {}
            for t in new:
                by_order.setdefault(t.venue_order_id or "", []).append(t)
            for oid, fresh in by_order.items():
                if not oid:
                    continue
                o = await self._backing_off(self.ex.fetch_order, oid, symbol)
                all_trades = await self._order_trades(o)
                self._mark_seen(all_trades)
                order = self._order(o, all_trades)
                ids = {t.trade_id for t in fresh}
                await self._deliver(order, [t for t in order.trades if t.trade_id in ids])
                if order.status == "open":
                    self.open_seen[(pair, order.venue_order_id)] = order
                else:
                    self.open_seen.pop((pair, order.venue_order_id), None)
            open_now = await self._backing_off(self.ex.fetch_open_orders, symbol)
            ids_now = {str(o["id"]) for o in open_now}
            for o in open_now:
                oid = str(o["id"])
                if (pair, oid) not in self.open_seen:
                    order = self._order(o, await self._order_trades(o))
                    self.open_seen[(pair, oid)] = order
                    # once each: an external one (the router adopts or ignores it), or one of ours the router may
                    # have given up on (rejected as unknown, canceled before the venue had it): it learns it is there
                    await self._deliver(order, [])
            for of_pair, oid in list(self.open_seen):
                if of_pair != pair or oid in ids_now:
                    continue
                del self.open_seen[(of_pair, oid)]
                if oid in by_order:
                    continue
                o = await self._backing_off(self.ex.fetch_order, oid, symbol)
                order = self._order(o, all_trades := await self._order_trades(o))
                await self._deliver(order, self._mark_seen(all_trades))

    async def _poll_loop(self) -> None:
        """Busy pairs every EXCHANGE_POLL_MS, every pair every SWEEP_POLLS polls (an order placed on the website,
        a pair quiet for a while): a venue's request budget (Binance: weight per minute) goes where orders are."""
        polls = 0
        while not self.closed:  # (not only cancel: Python 3.11's wait_for can lose a cancel that meets an answer)
            interval = self.poll_s if self._health.update_mode == "polling" else max(self.poll_s * 10, 10.0)
            await asyncio.sleep(interval)
            if self.closed:
                return
            try:
                polls += 1
                if polls % SWEEP_POLLS == 1 or self._health.update_mode != "polling":
                    await self.poll_once()
                else:
                    await self.poll_once(self._busy_pairs())
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("{}: poll failed: {}", self.name, self.describe(e))

    async def _stream_loop(self) -> None:
        delay = 1.0
        while not self.closed:
            ex = self.ex
            try:
                orders = await ex.watch_orders()
                self._health.update_mode = "stream"
                delay = 1.0
                for o in orders:
                    order = self._order(o, all_trades := await self._order_trades(o))
                    new = self._mark_seen(all_trades)
                    await self._deliver(order, new)  # every change the stream tells
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if ex is not self.ex:  # the keys were swapped (the old client closed): follow the new one now
                    continue
                self._health.update_mode = "polling"
                self._health.last_error, self._health.last_error_at = self.describe(e), now_ms()
                log.warning("{}: stream dropped, polling: {}", self.name, self._health.last_error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)


def _seen_key(t: VenueTrade) -> tuple[str, str]:
    """A trade as remembered by polling: its pair and the venue's trade id (Binance numbers trades per symbol)."""
    return (t.pair or "", t.trade_id)


def _book(pair: str, raw: Any, depth: int | None) -> Book:
    """A ccxt order book (dict) as our Book, at most ``depth`` levels a side (a watched book keeps them all)."""
    bids = raw.get("bids") or []
    asks = raw.get("asks") or []
    if depth is not None:
        bids, asks = bids[:depth], asks[:depth]
    return Book(
        pair=pair,
        bids=[(_dec(p) or ZERO, _dec(q) or ZERO) for p, q, *_ in bids],
        asks=[(_dec(p) or ZERO, _dec(q) or ZERO) for p, q, *_ in asks],
        ts=int(raw.get("timestamp") or now_ms()),
    )


def _unique(trades: Iterable[VenueTrade]) -> list[VenueTrade]:
    """Each trade once (a venue may list one twice), oldest first."""
    seen: set[str] = set()
    out = []
    for t in trades:
        if t.trade_id not in seen:
            seen.add(t.trade_id)
            out.append(t)
    return sorted(out, key=lambda t: (t.ts, t.trade_id))
