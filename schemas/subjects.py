"""The subject catalogue: every NATS subject, stream, consumer and bucket name lives here, once.

All names derive from one prefix (``BUS_PREFIX``, ``tbx`` by default) so several deployments can
share one NATS. Pairs are written ``BASE_QUOTE`` (``BTC_USDT``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
PAIR_RE = re.compile(r"^[A-Z0-9]{1,20}_[A-Z0-9]{1,20}$")

ACTORS = ("md-feed", "signal-intake", "risk-gate", "order-router", "fill-tracker", "portfolio-ledger")
PARTITIONED = ("signal-intake", "order-router", "fill-tracker")  # one active instance per partition (PARTITIONS)


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_msgs_per_subject: int = -1
    max_age_s: float = 0.0  # 0: keep forever
    no_ack: bool = False  # the stream does not answer a publish's reply subject (signal-intake does)


@dataclass(frozen=True, slots=True)
class Subjects:
    """All subject names for one prefix."""

    prefix: str = "tbx"

    # -- public inputs -------------------------------------------------------------------------
    @property
    def signals_submit(self) -> str:
        return f"{self.prefix}.signals.submit"

    @property
    def orders_submit(self) -> str:
        return f"{self.prefix}.orders.submit"

    @property
    def orders_cancel(self) -> str:
        return f"{self.prefix}.orders.cancel"

    @property
    def orders_modify(self) -> str:
        return f"{self.prefix}.orders.modify"

    @property
    def orders_validate(self) -> str:
        """Every check of an order, nothing placed (POST /api/orders/validate)."""
        return f"{self.prefix}.orders.validate"

    @property
    def risk_command(self) -> str:
        return f"{self.prefix}.risk.command"

    @property
    def risk_config(self) -> str:
        return f"{self.prefix}.risk.config"

    # -- events (JetStream) ----------------------------------------------------------------------
    def signal_events(self, pair: str = "*") -> str:
        return f"{self.prefix}.events.signals.{pair}"

    def order_events(self, pair: str = "*") -> str:
        return f"{self.prefix}.events.orders.{pair}"

    def fills(self, pair: str = "*") -> str:
        return f"{self.prefix}.events.fills.{pair}"

    def position_events(self, pair: str = "*") -> str:
        return f"{self.prefix}.events.positions.{pair}"

    @property
    def portfolio_events(self) -> str:
        return f"{self.prefix}.events.portfolio"

    @property
    def risk_events(self) -> str:
        return f"{self.prefix}.events.risk"

    @property
    def transition_events(self) -> str:
        """Every step of the paper-to-live transition (stream TRANSITION): the audit trail."""
        return f"{self.prefix}.events.transition"

    @property
    def transition_command(self) -> str:
        """initiate / approve / reject / revert (request/reply, the risk-gate answers)."""
        return f"{self.prefix}.transition.command"

    def balances(self, venue: str = "*") -> str:
        """A venue's balances as read there (order-router, live venues only) -> portfolio-ledger."""
        return f"{self.prefix}.events.balances.{venue}"

    def balance_adjustments(self, venue: str = "*") -> str:
        """portfolio-ledger: each adjustment of its books to a venue's balances (a book of record)."""
        return f"{self.prefix}.events.adjustments.{venue}"

    # -- internal durable hops (JetStream stream HOPS) ----------------------------------------------
    def approved_orders(self, pair: str = "*", partition: int | None = None) -> str:
        """risk-gate -> order-router: orders that passed the limits (``...approved.p<k>.<pair>`` for the pair's
        partition k when PARTITIONS > 1: each partition's consumer filters its own token)."""
        return f"{self.prefix}.hop.approved.{_part(partition)}{pair}"

    def exec_reports(self, pair: str = "*", partition: int | None = None) -> str:
        """order-router -> fill-tracker: what the venue said (trades, cancels, rejects); partitioned as above."""
        return f"{self.prefix}.hop.reports.{_part(partition)}{pair}"

    @staticmethod
    def addressed(subject: str, partition: int | None) -> str:
        """A command or query subject as one partition serves it (``tbx.orders.cancel.p1``); unpartitioned
        (None), the subject itself."""
        return subject if partition is None else f"{subject}.p{partition}"

    # -- market data (core NATS) -------------------------------------------------------------------
    def book(self, pair: str = "*") -> str:
        return f"{self.prefix}.md.book.{pair}"

    def trades(self, pair: str = "*") -> str:
        return f"{self.prefix}.md.trades.{pair}"

    # -- queries, health, dead letters ---------------------------------------------------------------
    @property
    def credentials_check(self) -> str:
        """Check candidate keys against their venue and adopt them (gateway -> order-router; names, never keys)."""
        return f"{self.prefix}.cmd.credentials.check"

    @property
    def credentials_follow(self) -> str:
        """Partitioned: order-router partition 0 -> each other partition (``.p<k>``): swap in the promoted keys."""
        return f"{self.prefix}.cmd.credentials.follow"

    @property
    def credentials_delete(self) -> str:
        return f"{self.prefix}.cmd.credentials.delete"

    def query(self, what: str) -> str:
        return f"{self.prefix}.query.{what}"

    def health(self, actor: str = "*") -> str:
        return f"{self.prefix}.health.{actor}"

    def deadletter(self, subject: str) -> str:
        return f"{self.prefix}.deadletter.{subject}"

    # -- JetStream layout --------------------------------------------------------------------------
    def stream_name(self, short: str) -> str:
        return f"{re.sub(r'[^A-Za-z0-9]', '_', self.prefix).upper()}_{short}"

    def bucket_name(self, short: str) -> str:
        return self.stream_name(short)

    def streams(self) -> tuple[StreamSpec, ...]:
        p = self.prefix
        week = 7 * 24 * 3600.0
        return (
            # a signal sent with a reply subject is answered by signal-intake with its result (and where
            # it was stored), not by the stream with a bare storage ack
            StreamSpec(self.stream_name("SIGNALS"), (self.signals_submit,), no_ack=True),
            StreamSpec(self.stream_name("ORDERS"), (f"{p}.events.orders.>",)),
            StreamSpec(self.stream_name("FILLS"), (f"{p}.events.fills.>",)),
            StreamSpec(self.stream_name("SIGNAL_EVENTS"), (f"{p}.events.signals.>",)),
            StreamSpec(self.stream_name("POSITIONS"), (f"{p}.events.positions.>",)),
            StreamSpec(self.stream_name("PORTFOLIO"), (self.portfolio_events,), max_msgs_per_subject=1),
            StreamSpec(self.stream_name("RISK"), (self.risk_events,)),
            StreamSpec(self.stream_name("TRANSITION"), (self.transition_events,)),
            StreamSpec(self.stream_name("BALANCES"), (f"{p}.events.balances.>",), max_age_s=4 * week),
            StreamSpec(self.stream_name("ADJUSTMENTS"), (f"{p}.events.adjustments.>",)),
            StreamSpec(self.stream_name("HOPS"), (f"{p}.hop.>",), max_age_s=week),
            StreamSpec(self.stream_name("DEADLETTER"), (f"{p}.deadletter.>",), max_age_s=4 * week),
        )

    # well-known stream short names
    @property
    def s_signals(self) -> str:
        return self.stream_name("SIGNALS")

    @property
    def s_orders(self) -> str:
        return self.stream_name("ORDERS")

    @property
    def s_fills(self) -> str:
        return self.stream_name("FILLS")

    @property
    def s_balances(self) -> str:
        return self.stream_name("BALANCES")

    @property
    def s_adjustments(self) -> str:
        return self.stream_name("ADJUSTMENTS")

    @property
    def s_hops(self) -> str:
        return self.stream_name("HOPS")

    @property
    def s_deadletter(self) -> str:
        return self.stream_name("DEADLETTER")

    @property
    def kv_state(self) -> str:
        """Small durable state: id counters, snapshots."""
        return self.bucket_name("STATE")

    @property
    def s_transition(self) -> str:
        return self.stream_name("TRANSITION")

    @property
    def kv_transition(self) -> str:
        """The paper-to-live transition's state (one writer: the risk-gate)."""
        return self.bucket_name("TRANSITION")

    @property
    def kv_paper(self) -> str:
        """The paper exchange's own store (it behaves like an outside venue)."""
        return self.bucket_name("PAPER")

    def kv_lease(self, role: str) -> str:
        """The leadership lease bucket of one role (``order-router``, ``order-router.p1``): ``<PREFIX>_LEASES_<role>``
        with the role's ``.`` as ``_`` (``TBX_LEASES_order-router_p1``), one key (the role): the active instance's
        ``LeaseRecord`` (bus/lease.py). A bucket per role, so that the leaders of the buckets spread over the NATS
        nodes and a node's death stalls only the renewals of the roles whose bucket it led (issue 19)."""
        return lease_bucket(self.bucket_name("LEASES"), role)

    @property
    def kv_credentials(self) -> str:
        """Venue keys sealed with AES-256-GCM, key ``<venue>.<environment>`` (config/credential_store.py)."""
        return self.bucket_name("CREDENTIALS")


ROLE_RE = re.compile(r"^[a-z][a-z0-9-]*(\.p[0-9]+)?$")


def lease_bucket(base: str, role: str) -> str:
    """``<base>_<role>`` with the partition's ``.`` as ``_``: a valid KV bucket name, one per role (roles are an actor's
    name - lowercase letters, digits, ``-`` - and an optional ``.p<k>``, so no two roles share a bucket)."""
    if not ROLE_RE.match(role):
        raise ValueError(f"lease role {role!r}: not an actor's name with an optional .p<partition>")
    return f"{base}_{role.replace('.', '_')}"


def _part(partition: int | None) -> str:
    return "" if partition is None else f"p{partition}."


@functools.lru_cache(maxsize=65_536)
def pair_currencies(pair: str) -> tuple[str, str]:
    base, _, quote = pair.partition("_")
    return base, quote
