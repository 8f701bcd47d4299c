"""Requests to the partitions of a partitioned actor (PARTITIONS > 1): each partition serves a command or query
subject of its own (``Subjects.addressed``: ``tbx.orders.cancel.p1``), so a request reaches exactly the partition
it is meant for, and a request that spans pairs (or names an order, whose id does not name its pair) asks every
partition and the caller combines the answers. With PARTITIONS = 1 every helper is the plain request on the plain
subject."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from bus.client import Bus
from bus.errors import RequestFailed
from domain.partitions import partition_for
from schemas.messages import CancelOrder, CommandReply, Order, OrdersPage, OrdersQuery

R = TypeVar("R")


def partition_named(e: RequestFailed) -> str:
    """`` (partition k)`` when a failed request was addressed to partition k (``...p<k>``), else nothing."""
    head, dot, tail = e.subject.rpartition(".p")
    return f" (partition {tail})" if dot and head and tail.isdigit() else ""


def subjects_of(bus: Bus, subject: str, partitions: int) -> list[str]:
    """The subject as each partition serves it (the subject itself when unpartitioned)."""
    if partitions <= 1:
        return [subject]
    return [bus.subjects.addressed(subject, k) for k in range(partitions)]


def owner_subject(bus: Bus, subject: str, pair: str, partitions: int) -> str:
    """The subject as the partition of ``pair`` serves it."""
    return bus.subjects.addressed(subject, partition_for(pair, partitions))


async def ask_each(
    bus: Bus, subject: str, msg: Any, reply_type: type[R], partitions: int, *, timeout: float = 5.0
) -> list[R | RequestFailed]:
    """Every partition's answer, in partition order; a partition that does not answer: its RequestFailed."""
    results = await asyncio.gather(
        *(bus.request(s, msg, reply_type, timeout=timeout) for s in subjects_of(bus, subject, partitions)),
        return_exceptions=True,
    )
    out: list[R | RequestFailed] = []
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, RequestFailed):
            raise r
        out.append(r)  # type: ignore[arg-type]
    return out


async def ask_all(
    bus: Bus, subject: str, msg: Any, reply_type: type[R], partitions: int, *, timeout: float = 5.0
) -> list[R]:
    """Every partition's answer; the first partition that does not answer raises its RequestFailed."""
    answers = await ask_each(bus, subject, msg, reply_type, partitions, timeout=timeout)
    for a in answers:
        if isinstance(a, RequestFailed):
            raise a
    return answers  # type: ignore[return-value]


async def cancel_all(
    bus: Bus, cmd: CancelOrder, partitions: int, *, timeout: float = 5.0
) -> tuple[CommandReply, list[RequestFailed]]:
    """A cancel-all (``cmd.all``) sent to every partition: the orders of all that answered, oldest first, and the
    failures of those that did not (an unpartitioned deployment: the one answer, or its failure)."""
    answers = await ask_each(bus, bus.subjects.orders_cancel, cmd, CommandReply, partitions, timeout=timeout)
    orders = [o for a in answers if not isinstance(a, RequestFailed) for o in a.orders]
    orders.sort(key=lambda o: (o.created_at, o.order_id))
    failed = [a for a in answers if isinstance(a, RequestFailed)]
    return CommandReply(ok=True, orders=orders), failed


async def order_of_client(bus: Bus, client_order_id: str, partitions: int, *, timeout: float = 5.0) -> Order | None:
    """The order a client order id names, asked of every partition (the id does not name its pair): None only
    when every partition answered that it has none; a partition that does not answer (and no other has it)
    raises its RequestFailed, never a wrong "none"."""
    q = OrdersQuery(client_order_id=client_order_id)
    answers = await ask_each(bus, bus.subjects.query("orders"), q, OrdersPage, partitions, timeout=timeout)
    for a in answers:
        if not isinstance(a, RequestFailed) and a.orders:
            return a.orders[0]
    for a in answers:
        if isinstance(a, RequestFailed):
            raise a
    return None
