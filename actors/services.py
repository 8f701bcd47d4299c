"""HTTP clients for the family's other services (risk :3003, ML :3001), each bounded by a timeout.

A service that is down, slow or answers nonsense is a ``ServiceDown`` with the reason; the caller
falls back to its local rules and says so. The first failure after a success (or at start) raises a
critical SERVICE_DOWN alert, the first success after that a warning SERVICE_UP: one alert per change,
never one per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="number")
AlertHook = Callable[..., Awaitable[None]]  # (severity, code, message): an actor's ``alert``


class ServiceDown(Exception):
    """The service gave no usable answer in time; ``reason`` says what happened."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} service unavailable ({reason})")
        self.reason = reason


class ServiceClient:
    def __init__(self, name: str, base_url: str, timeout_ms: int, on_alert: AlertHook | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
        self.timeout_ms = timeout_ms
        self.on_alert = on_alert
        self.up: bool | None = None  # unknown until asked
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    @property
    def state(self) -> str:
        return "unknown" if self.up is None else "up" if self.up else "down"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, body: Any, answer: type[T]) -> T:
        """POST ``body`` as JSON to ``path``; the decoded answer, or ServiceDown."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        self.calls += 1
        url = self.base_url + path
        try:
            async with self._session.post(
                url, data=_encoder.encode(body), headers={"Content-Type": "application/json"}
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise ServiceDown(self.name, f"{path} answered HTTP {resp.status}")
            value = msgspec.json.decode(raw, type=answer)
        except ServiceDown as e:
            await self._failed(e.reason)
            raise
        except TimeoutError:
            await self._failed(f"no answer within {self.timeout_ms} ms")
            raise ServiceDown(self.name, f"no answer within {self.timeout_ms} ms") from None
        except aiohttp.ClientError as e:
            await self._failed(f"{type(e).__name__}: {e}")
            raise ServiceDown(self.name, f"{type(e).__name__}: {e}") from None
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            await self._failed(f"unusable answer from {path}: {e}")
            raise ServiceDown(self.name, f"unusable answer from {path}: {e}") from None
        await self._succeeded()
        return value

    async def _failed(self, reason: str) -> None:
        self.failures += 1
        was, self.up = self.up, False
        if was is not False and self.on_alert is not None:
            await self.on_alert(
                "critical", "SERVICE_DOWN", f"{self.name} service at {self.base_url} unavailable: {reason}"
            )

    async def _succeeded(self) -> None:
        was, self.up = self.up, True
        if was is False and self.on_alert is not None:
            await self.on_alert("warning", "SERVICE_UP", f"{self.name} service at {self.base_url} answers again")


def clamp01(v: Decimal) -> Decimal | None:
    """A probability from the outside, or None when it is not one."""
    return v if v.is_finite() and Decimal(0) <= v <= Decimal(1) else None
