"""REST calls answered by a partitioned actor (PARTITIONS > 1): asked of the partition that owns the pair, or of
every partition (scatter-gather) when the call spans pairs or names an order by id; the answers are combined here.
With PARTITIONS = 1 each helper is the one plain request it always was."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from bus.partitions import owner_subject, subjects_of
from gateway.common import BUS, REQUEST_TIMEOUT, SETTINGS, ask
from gateway.problems import ApiError


def _what(what: str, subject: str, partitions: int) -> str:
    return what if partitions <= 1 else f"{what} (partition {subject.rsplit('.p', 1)[1]})"


async def ask_each(
    request: web.Request, subject: str, msg: Any, reply_type: type, what: str, timeout: float = REQUEST_TIMEOUT
) -> list[Any]:
    """Every partition's answer, in partition order; a partition that failed: the ApiError of its failure."""
    n = request.app[SETTINGS].PARTITIONS
    subjects = subjects_of(request.app[BUS], subject, n)
    answers = await asyncio.gather(
        *(ask(request, s, msg, reply_type, _what(what, s, n), timeout=timeout) for s in subjects),
        return_exceptions=True,
    )
    for a in answers:
        if isinstance(a, BaseException) and not isinstance(a, ApiError):
            raise a
    return list(answers)


async def ask_every(
    request: web.Request, subject: str, msg: Any, reply_type: type, what: str, timeout: float = REQUEST_TIMEOUT
) -> list[Any]:
    """Every partition's answer; the first failure is the problem answered."""
    answers = await ask_each(request, subject, msg, reply_type, what, timeout)
    for a in answers:
        if isinstance(a, ApiError):
            raise a
    return answers


async def ask_owner(
    request: web.Request, subject: str, pair: str, msg: Any, reply_type: type, what: str, **kw: Any
) -> Any:
    """The answer of the partition of ``pair``."""
    n = request.app[SETTINGS].PARTITIONS
    s = owner_subject(request.app[BUS], subject, pair, n)
    return await ask(request, s, msg, reply_type, _what(what, s, n), **kw)


def first_found(answers: list[Any], found: Any) -> Any:
    """The first answer ``found(answer)`` accepts; else the first failure (a partition that did not answer may
    be the one that has it: never a wrong 404); else None (every partition answered that it has none)."""
    for a in answers:
        if not isinstance(a, ApiError) and found(a):
            return a
    for a in answers:
        if isinstance(a, ApiError):
            raise a
    return None
