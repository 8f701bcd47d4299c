"""A diagnostic probe of ccxt's rate limiter inside ``tbx run`` (bench/live_venue.py ``--probe MODE`` puts this
directory on ``tbx run``'s PYTHONPATH and sets TBX_BENCH_PROBE=MODE). Not used by the service, nor by
``make bench``; it changes nothing unless TBX_BENCH_PROBE is set.

- ``record``: every ccxt REST call of the process is timed: how long it waited before its HTTP request (the
  adapter's wait for room, ``CcxtVenue._room_first``, and ccxt's limiter of ``enableRateLimit``), and how long the
  HTTP exchange took, by path, with what the limiter's window and queue held when the call started; written as
  JSON to TBX_BENCH_PROBE_OUT when the process exits.
- ``idle-refill``: ``record``, and ccxt's leaky bucket also refills for the time it was idle (ccxt 4.5.64
  refills only while a call waits, so each call's cost is paid as a wait by the next call however long
  after it comes: ``cost x rateLimit`` ms).
- ``no-throttle``: ``record``, and ccxt's throttle never waits (what our path costs without it).
"""

from __future__ import annotations

import atexit
import json
import os
import time

MODE = os.environ.get("TBX_BENCH_PROBE", "")


def _install() -> None:
    from contextvars import ContextVar

    from ccxt.async_support.base import exchange as ccxt_exchange
    from ccxt.async_support.base import throttler as ccxt_throttler

    # (method, url path, cost, wait ms (the call's start -> its HTTP request: our adapter's wait for room and ccxt's
    # limiter), http ms, when the call started (perf_counter s), the cost spent in the limiter's rolling window
    # then, the calls queued in it then, which ccxt instance)
    calls: list[tuple[str, str, float, float, float, float, float, int, int]] = []
    current: ContextVar[dict | None] = ContextVar("tbx_probe_call", default=None)  # the call in hand (per task)
    Exchange = ccxt_exchange.Exchange
    orig_fetch2, orig_throttle, orig_fetch = Exchange.fetch2, Exchange.throttle, Exchange.fetch

    async def fetch2(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        th = getattr(self, "throttler", None)
        window = th.config.get("windowSize", 0) if th is not None else 0
        since = time.time() * 1000 - window
        spent = sum(t["cost"] for t in th.timestamps if t["timestamp"] > since) if th is not None else 0.0
        queued = len(th.queue) if th is not None else 0
        token = current.set({"asked": time.perf_counter(), "spent": spent, "queued": queued, "cost": 0.0})
        try:
            return await orig_fetch2(self, *args, **kwargs)
        finally:
            current.reset(token)

    async def throttle(self, cost=None):  # type: ignore[no-untyped-def]
        rec = current.get()
        if rec is not None:
            rec["cost"] = cost or 0.0
        if MODE != "no-throttle":
            await orig_throttle(self, cost)

    async def fetch(self, url, method="GET", headers=None, body=None):  # type: ignore[no-untyped-def]
        rec = current.get() or {"asked": time.perf_counter(), "spent": 0.0, "queued": 0, "cost": 0.0}
        t0 = time.perf_counter()
        try:
            return await orig_fetch(self, url, method, headers, body)
        finally:
            path = url.split("//", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
            http = round((time.perf_counter() - t0) * 1000, 3)
            waited = round((t0 - rec["asked"]) * 1000, 3)
            calls.append((method, "/" + path, rec["cost"], waited, http, rec["asked"], round(rec["spent"], 3),
                          rec["queued"], id(self)))  # fmt: skip

    Exchange.fetch2, Exchange.throttle, Exchange.fetch = fetch2, throttle, fetch

    if MODE == "idle-refill":
        Throttler = ccxt_throttler.Throttler

        async def leaky_bucket_loop(self):  # type: ignore[no-untyped-def]
            cfg = self.config
            now = time.time() * 1000
            idle_since = getattr(self, "_idle_since", now)
            cfg["tokens"] = min(cfg["tokens"] + (now - idle_since) * cfg["refillRate"], cfg["capacity"])
            last = now
            while self.running:
                future, cost = self.queue[0]
                cost = cfg["cost"] if cost is None else cost
                if cfg["tokens"] >= 0:
                    cfg["tokens"] -= cost
                    if not future.done():
                        future.set_result(None)
                    self.queue.popleft()
                    await ccxt_throttler.asyncio.sleep(0)
                    if len(self.queue) == 0:
                        self.running = False
                else:
                    await ccxt_throttler.asyncio.sleep(cfg["delay"])
                    now = time.time() * 1000
                    cfg["tokens"] = min(cfg["tokens"] + (now - last) * cfg["refillRate"], cfg["capacity"])
                    last = now
            self._idle_since = last  # refilled up to here; the idle time after it counts at the next call

        Throttler.leaky_bucket_loop = leaky_bucket_loop

    def dump() -> None:
        out = os.environ.get("TBX_BENCH_PROBE_OUT")
        if out:
            with open(out, "w") as f:
                json.dump({"mode": MODE, "calls": calls}, f)

    atexit.register(dump)


if MODE:
    _install()
