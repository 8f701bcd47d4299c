"""What the streams say happened, the numbers of the chaos run, the table and the last line.

The pure parts (``longest_gaps``, ``count_orders``, ``books_from_fills``, ``compare_books``) take plain data and
are unit-tested; ``read_stream`` and ``collect`` read the run's JetStream streams after the load (every message
with the time the stream stored it), so nothing depends on a subscription that a killed node interrupted.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import nats.js
from nats.js import api

TERMINAL = frozenset({"filled", "canceled", "cancelled", "rejected", "expired"})
MAX_UNAVAILABLE_MS = 3000  # the target: no stage unavailable longer than this after any single kill
FAILOVER_WINDOW_S = 10.0  # orders first sent this long after a kill count as "during failover"
QUANT = Decimal("0.00000001")


# -- reading the streams -------------------------------------------------------------------------------
@dataclass(slots=True)
class Stored:
    subject: str
    msg_id: str | None
    body: dict[str, object]
    at: float  # when the stream stored it (epoch s)
    seq: int


async def read_stream(js: nats.js.JetStreamContext, stream: str, timeout: float = 60.0) -> list[Stored]:
    """Every message of ``stream``, in order (an ordered consumer, read to the last sequence of now)."""
    info = await js.stream_info(stream)
    last = info.state.last_seq or 0
    out: list[Stored] = []
    if not info.state.messages:
        return out
    done = asyncio.Event()

    async def cb(msg: nats.aio.msg.Msg) -> None:  # type: ignore[name-defined]
        md = msg.metadata
        try:
            body = json.loads(msg.data)
        except ValueError:
            body = {}
        at = md.timestamp.timestamp() if md.timestamp else 0.0
        mid = (msg.headers or {}).get("Nats-Msg-Id")
        out.append(Stored(msg.subject, mid, body if isinstance(body, dict) else {}, at, md.sequence.stream))
        if md.sequence.stream >= last or md.num_pending == 0:
            done.set()

    sub = await js.subscribe(
        ">", stream=stream, cb=cb, ordered_consumer=True,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL), pending_msgs_limit=-1,
    )  # fmt: skip
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await sub.unsubscribe()
    return out


# -- stage availability -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Gap:
    stage: str
    start: float
    end: float

    @property
    def ms(self) -> int:
        return round((self.end - self.start) * 1000)


def longest_gaps(stage: str, items: Iterable[tuple[float, float | None]], end: float) -> list[Gap]:
    """The gaps of one stage: intervals in which work was waiting at it (an item entered, not yet out) and
    nothing came out of it. ``items``: (entered, left or None = never, counted up to ``end``). Pure.

    Between two consecutive exits e1 < e2, the stage was unavailable from max(e1, the earliest entry of the
    items still waiting at e2) to e2; after the last exit, up to ``end`` for items that never left."""
    rows = sorted(((a, b if b is not None else float("inf")) for a, b in items), key=lambda r: r[1])
    if not rows:
        return []
    suffix_min = [0.0] * len(rows)  # earliest entry among rows[i:]
    m = float("inf")
    for i in range(len(rows) - 1, -1, -1):
        m = min(m, rows[i][0])
        suffix_min[i] = m
    out: list[Gap] = []
    prev = float("-inf")
    i = 0
    bounds = sorted({b for _, b in rows if b <= end})
    if rows[-1][1] > end:
        bounds.append(end)  # items still waiting at the end: their wait counts up to it
    for t in bounds:
        while rows[i][1] < t:
            i += 1
        start = max(prev, suffix_min[i])
        if start < t:
            out.append(Gap(stage, start, t))
        prev = t
    return out


def p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


# -- orders and fills ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class OrderFacts:
    """One client order id as the streams tell it."""

    order_ids: set[str] = field(default_factory=set)
    status: str | None = None  # of its event with the highest ``version`` (the latest of equal versions)
    version: int = -1
    quantity: Decimal = Decimal(0)
    fills: dict[str, Decimal] = field(default_factory=dict)  # distinct fill ids -> quantity
    fill_copies: int = 0  # fills stored, with copies


def order_facts(order_events: Iterable[Stored], fills: Iterable[Stored]) -> dict[str, OrderFacts]:
    out: dict[str, OrderFacts] = defaultdict(OrderFacts)
    for ev in order_events:
        order = ev.body.get("order")
        if not isinstance(order, dict):
            continue
        f = out[str(order.get("clientOrderId"))]
        f.order_ids.add(str(order.get("orderId")))
        raw_version = order.get("version", 0)
        version = raw_version if isinstance(raw_version, int) else 0
        if version >= f.version:  # an older event stored later (a republish) never turns the status back
            f.version = version
            f.status = str(order.get("status"))
            f.quantity = Decimal(str(order.get("quantity", "0")))
    for fl in fills:
        f = out[str(fl.body.get("clientOrderId"))]
        f.fill_copies += 1
        f.fills.setdefault(str(fl.body.get("fillId")), Decimal(str(fl.body.get("quantity", "0"))))
    return out


@dataclass(slots=True)
class Counts:
    submitted: int = 0
    accepted: int = 0
    denied: int = 0
    unanswered: int = 0
    filled: int = 0
    lost: int = 0
    duplicated: int = 0  # orders: a client id with two orders, or an order under a client id the plan never sent
    unexpected: int = 0  # of those: orders (or fills) under a client id the plan never sent (``<signalId>-2``)
    stuck: int = 0
    fills_duplicated: int = 0  # a fill id stored twice, or fills beyond an order's quantity
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, what: str, cid: str) -> None:
        if len(self.examples[what]) < 5:
            self.examples[what].append(cid)


def count_orders(outcomes: Mapping[str, str], facts: Mapping[str, OrderFacts]) -> Counts:
    """``outcomes``: each planned order's client order id -> what the client was told (accepted, denied,
    unanswered). Every order or fill in the streams under a client id not in ``outcomes`` counts as duplicated
    (``unexpected``): the load sent nothing else. Pure; the definitions are the README's (section "Chaos run")."""
    c = Counts(submitted=len(outcomes))
    for cid in sorted(set(facts) - set(outcomes)):
        f = facts[cid]
        if f.order_ids or f.fills:
            c.duplicated += 1
            c.unexpected += 1
            c.note("duplicated", cid)
    for cid, outcome in outcomes.items():
        c.accepted += outcome == "accepted"
        c.denied += outcome == "denied"
        c.unanswered += outcome == "unanswered"
        f = facts.get(cid)
        if f is not None and len(f.order_ids) > 1:
            c.duplicated += 1
            c.note("duplicated", cid)
        if f is not None:
            copies = f.fill_copies - len(f.fills)
            over = sum(f.fills.values()) > f.quantity > 0
            if copies or over:
                c.fills_duplicated += copies + (1 if over else 0)
                c.note("fills duplicated", cid)
        complete = f is not None and f.status == "filled" and sum(f.fills.values()) == f.quantity
        c.filled += complete
        working = f is not None and f.status is not None and f.status not in TERMINAL
        if working:
            c.stuck += 1
            c.note("stuck", cid)
        elif outcome == "accepted" and not complete:
            c.lost += 1
            c.note("lost", cid)
        if outcome == "denied":
            c.note("denied", cid)
    return c


def order_misses(c: Counts, planned: int, what: str = "") -> list[str]:
    """The targets about orders that ``c`` misses (empty: all met). The plan is built so that every order is
    acceptable and fills: a denial, an order accepted and not filled, or nothing traded at all is a miss, never
    a pass. Pure."""
    out = []
    if c.lost or c.duplicated or c.fills_duplicated or c.stuck:
        counts = f"lost {c.lost}, duplicated {c.duplicated}, fills duplicated {c.fills_duplicated}, stuck {c.stuck}"
        out.append(f"{what}orders {counts}")
    if c.denied:
        out.append(f"{what}{c.denied} orders denied (the plan's orders are all acceptable)")
    if c.unanswered:
        out.append(f"{what}{c.unanswered} client requests unanswered")
    if c.submitted < planned:
        out.append(f"{what}{c.submitted} of {planned} planned orders sent")
    if c.filled != c.accepted or c.filled == 0:
        out.append(f"{what}{c.filled} orders filled of {c.accepted} accepted ({c.submitted} sent)")
    return out


# -- books ---------------------------------------------------------------------------------------------------
def distinct_fills(fills: Iterable[Stored]) -> Iterator[dict[str, object]]:
    """The body of each fill of the log once (by fill id, the first stored), in stream order."""
    seen: set[str] = set()
    for fl in fills:
        fid = str(fl.body.get("fillId"))
        if fid not in seen:
            seen.add(fid)
            yield fl.body


def books_from_fills(fills: Iterable[Stored], initial: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Balances per currency from the fill log (each fill id once): what the ledger's books must say."""
    bal: dict[str, Decimal] = defaultdict(Decimal, initial)
    for b in distinct_fills(fills):
        base, quote = str(b["pair"]).split("_", 1)
        qty, price, fee = (Decimal(str(b[k])) for k in ("quantity", "price", "fee"))
        sign = 1 if b["side"] == "buy" else -1
        bal[base] += sign * qty
        bal[quote] -= sign * qty * price
        bal[str(b.get("feeCurrency") or quote)] -= fee
    return {k: v for k, v in bal.items() if v != 0 or k in initial}


def ledger_books(snapshot: Mapping[str, object]) -> dict[str, object]:
    """The figures of the ledger's portfolio that a run of the same fills must reproduce exactly (not the
    marks: unrealized P&L and equity follow the latest book, which is only republished)."""
    balances = {
        str(b["currency"]): Decimal(str(b["total"])).quantize(QUANT)
        for b in snapshot.get("balances", [])  # type: ignore[union-attr]
        if Decimal(str(b["total"])) != 0 or str(b["currency"]) == "USDT"
    }
    positions = {
        str(p["pair"]): (
            p["side"],
            Decimal(str(p["quantity"])),
            Decimal(str(p["averagePrice"])).quantize(QUANT),
            Decimal(str(p.get("pairRealizedPnL", "0"))).quantize(QUANT),
            Decimal(str(p.get("pairFees", "0"))).quantize(QUANT),
        )
        for p in snapshot.get("positions", [])  # type: ignore[union-attr]
    }
    return {"balances": balances, "positions": positions, "fills": snapshot.get("fillsApplied")}


def compare_books(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    """What differs between two ledgers' books (empty: equal)."""
    out = []
    for part in ("balances", "positions"):
        x, y = a.get(part) or {}, b.get(part) or {}
        assert isinstance(x, dict) and isinstance(y, dict)
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                out.append(f"{part} {k}: {x.get(k)} vs {y.get(k)}")
    return out


def balances_differ(ledger: Mapping[str, Decimal], from_fills: Mapping[str, Decimal]) -> list[str]:
    out = []
    for k in sorted(set(ledger) | set(from_fills)):
        x = ledger.get(k, Decimal(0)).quantize(QUANT)
        y = from_fills.get(k, Decimal(0)).quantize(QUANT)
        if x != y:
            out.append(f"{k}: ledger {x} vs fill log {y}")
    return out


# -- kills and stalls ------------------------------------------------------------------------------------------
def credit_stalls(kill_times: Sequence[float], gaps: Iterable[Gap]) -> dict[int, list[Gap]]:
    """Each stall credited to the kill whose window it overlaps most (kill i's window: from it to the next kill;
    the last one's: to the end), ties to the later kill; a stall over before the first kill is credited to none
    (key -1). Pure."""
    out: dict[int, list[Gap]] = defaultdict(list)
    times = sorted(kill_times)
    for g in gaps:
        best, best_overlap = -1, 0.0
        for i, at in enumerate(times):
            until = times[i + 1] if i + 1 < len(times) else float("inf")
            overlap = min(g.end, until) - max(g.start, at)
            if overlap > 0 and overlap >= best_overlap:
                best, best_overlap = i, overlap
        out[best].append(g)
    return out


# -- fills against the undisturbed run ----------------------------------------------------------------------------
FillKey = tuple[str, str, Decimal, Decimal, Decimal]  # pair, side, quantity, price, fee


def fills_by_order(fills: Iterable[Stored]) -> dict[str, list[FillKey]]:
    """Each client order id's fills (each fill id once), in stream order."""
    out: dict[str, list[FillKey]] = defaultdict(list)
    for b in distinct_fills(fills):
        qty, price, fee = (Decimal(str(b.get(k, "0"))) for k in ("quantity", "price", "fee"))
        out[str(b.get("clientOrderId"))].append((str(b.get("pair")), str(b.get("side")), qty, price, fee))
    return out


@dataclass(slots=True)
class FillDiffs:
    other_step: list[str] = field(default_factory=list)  # "cid: step 22's book, not 23" (a timing slip)
    other: list[str] = field(default_factory=list)  # anything else: a real difference


def compare_fills(
    chaos: Mapping[str, list[FillKey]],
    ref: Mapping[str, list[FillKey]],
    expected_step: Mapping[str, int],
    touch: Callable[[str, str, int], Decimal],
    search: int = 5,
) -> FillDiffs:
    """The orders whose fills differ from the undisturbed run's: those filled whole at the touch of the book of
    another step than the one the reference filled at (``expected_step[cid]``; ``touch(pair, side, step)``: the best
    ask for a buy, bid for a sell, of the pair's book at that step) apart from any other difference. Pure."""
    out = FillDiffs()
    for cid in sorted(set(chaos) | set(ref)):
        a, b = chaos.get(cid, []), ref.get(cid, [])
        if a == b:
            continue
        k = expected_step.get(cid)
        if len(a) == 1 and len(b) == 1 and k is not None and a[0][:3] == b[0][:3]:
            pair, side, _, price, _ = a[0]
            near = [s for s in range(max(0, k - search), k + search + 1) if s != k and touch(pair, side, s) == price]
            if near:
                out.other_step.append(f"{cid}: {price} = step {near[0]}'s book, not step {k}'s ({b[0][3]})")
                continue
        out.other.append(f"{cid}: {a or 'no fill'} vs {b or 'no fill'}")
    return out


def last_line(lost: int, duplicated: int, stuck: int, books_equal: bool, max_unavailable_ms: int) -> str:
    return (
        f"chaos: lost={lost} duplicated={duplicated} stuck={stuck} "
        f"books_equal={'yes' if books_equal else 'no'} max_unavailable_ms={max_unavailable_ms}"
    )
