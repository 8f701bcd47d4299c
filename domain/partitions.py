"""Pairs hashed into partitions: the partitioned actors (signal-intake, order-router, fill-tracker) run one
active instance per partition, each handling only the pairs that hash to it.

``partition_of`` is the same function as nats-server's own ``{{partition(n, ...)}}`` subject-mapping
function (FNV-1a 32-bit of the token's bytes, mod n), so a subject mapping or a stream subject transform in
the server sends a pair's messages to the same partition as this code does (checked against a real
nats-server in tests/integration/test_partitions.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Any)

FNV32_OFFSET = 0x811C9DC5
FNV32_PRIME = 0x01000193
MAX_PARTITIONS = 64


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's ``hash/fnv.New32a``)."""
    h = FNV32_OFFSET
    for byte in data:
        h ^= byte
        h = (h * FNV32_PRIME) & 0xFFFFFFFF
    return h


def partition_of(pair: str, n: int) -> int:
    """The partition (0..n-1) of a pair among ``n``: FNV-1a 32 of its UTF-8 bytes mod n."""
    if not 1 <= n <= MAX_PARTITIONS:
        raise ValueError(f"the number of partitions must be within 1..{MAX_PARTITIONS}, not {n}")
    return fnv1a_32(pair.encode()) % n


def partition_for(pair: str, partitions: int) -> int | None:
    """The partition of a pair in a deployment of ``partitions`` (PARTITIONS): None when there is only one,
    so an unpartitioned deployment keeps its subjects and durable names as they always were."""
    return None if partitions <= 1 else partition_of(pair, partitions)


def owns(partition: int | None, partitions: int, pair: str) -> bool:
    """Does the instance serving ``partition`` (None: all of them) handle ``pair``?"""
    return partition is None or partitions <= 1 or partition_of(pair, partitions) == partition


def suffix(partition: int | None) -> str:
    """What a partition adds to a role or a queue group: ``.p<k>``, nothing when unpartitioned."""
    return "" if partition is None else f".p{partition}"


def durable(name: str, partition: int | None) -> str:
    """A partition's durable consumer name (no dots allowed there): ``order-router-p1``; unpartitioned, ``name``."""
    return name if partition is None else f"{name}-p{partition}"


def merge_newest_first(
    pages: Sequence[tuple[Sequence[T], K | None]], limit: int, rank: Callable[[T], K]
) -> tuple[list[T], K | None]:
    """One page out of each partition's page of a list query, each newest first (highest ``rank`` first) with the
    rank its next page starts below (None: that partition has no more). The merged page is newest first, at most
    ``limit`` long, and with the rank the next page starts below (None: no partition has more).

    A partition whose page stopped early (a shorter page with a cursor) has not looked below its cursor: nothing
    under the highest such cursor is taken now, or the next page (which starts below the merged cursor) would
    skip that partition's orders in between. So paging on with the merged cursor lists every item once."""
    bound = max((more for _, more in pages if more is not None), default=None)
    items = sorted((item for page, _ in pages for item in page), key=rank, reverse=True)
    if bound is not None:
        items = [item for item in items if rank(item) >= bound]
    if len(items) > limit:
        page = items[:limit]
        return page, rank(page[-1])
    return items, bound
