"""Which worker process of ``tbx run`` runs which part (RUN_PROCESSES > 1, issue 22).

The rule (README "Worker processes"): every part (an actor instance, the gateway) has a weight, its share of the
CPU of the order hot path, measured with each part in a process of its own under the order load of the bench
(orders through ``orders.submit`` and ``POST /api/orders``, 64 in flight; the two loads averaged). A partitioned
actor's instances share its weight (each partition has 1/PARTITIONS of the pairs). The parts, heaviest first (ties
in start order), each go to the process with the least weight so far (ties: the lowest number): the greedy
"longest processing time first" split, whose heaviest process is never more than the average plus one part.
Each process starts its parts in the usual start order (consumers before producers).

With the default weights and 2 processes: process 1 = order-router, gateway, md-feed, signal-intake (50);
process 2 = portfolio-ledger, fill-tracker, risk-gate (51).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

# Per cent of the CPU of all parts together (each part in its own process; one sitting on the 2-core bench machine,
# 2026-12: orders.submit / POST /api/orders): order-router 39 / 33, risk-gate 22 / 19, portfolio-ledger 22 / 18,
# fill-tracker 12 / 10, gateway 4 / 20, md-feed 0.5 / 1, signal-intake 0.4 / 1. Rounded averages, at least 1.
WEIGHTS: Mapping[str, int] = {
    "order-router": 36,
    "risk-gate": 20,
    "portfolio-ledger": 20,
    "gateway": 12,
    "fill-tracker": 11,
    "md-feed": 1,
    "signal-intake": 1,
}
UNKNOWN_WEIGHT = 1  # a part with no measured weight (none today)


def part_weights(parts: Sequence[tuple[str, str]], weights: Mapping[str, int] = WEIGHTS) -> list[Fraction]:
    """The weight of each of ``parts`` ((label, kind) pairs): its kind's weight shared by the instances of the
    kind (the partitions of a partitioned actor)."""
    count: dict[str, int] = {}
    for _, kind in parts:
        count[kind] = count.get(kind, 0) + 1
    out = []
    for _, kind in parts:
        w = weights.get(kind, UNKNOWN_WEIGHT)
        if w <= 0:
            raise ValueError(f"the weight of {kind} must be > 0, not {w}")
        out.append(Fraction(w, count[kind]))
    return out


def split(parts: Sequence[tuple[str, str]], processes: int, weights: Mapping[str, int] = WEIGHTS) -> list[list[str]]:
    """The labels of ``parts`` ((label, kind) pairs, in start order) split into ``min(processes, len(parts))``
    groups, none empty, each in start order (the rule in the module's docstring). ``processes`` >= 1."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, not {processes}")
    labels = [label for label, _ in parts]
    if len(set(labels)) != len(labels):
        raise ValueError(f"each part once: {labels}")
    k = min(processes, len(parts))
    if k <= 1:
        return [labels] if labels else []
    w = part_weights(parts, weights)
    load = [Fraction(0)] * k
    member: list[list[int]] = [[] for _ in range(k)]
    for i in sorted(range(len(parts)), key=lambda i: (-w[i], i)):
        g = min(range(k), key=lambda g: (load[g], g))
        load[g] += w[i]
        member[g].append(i)
    return [[labels[i] for i in sorted(m)] for m in member]
