"""bus.client._ack_fields reads a JetStream delivery's reply subject as nats-py's ``Msg.metadata`` does (issue 22:
the metadata's datetime per message is off the hot path), in both reply forms and for odd ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from bus.client import _ack_fields


def _msg(reply: str) -> Msg:
    return Msg(_client=None, subject="tbx.events.orders.BTC_USDT", reply=reply, data=b"{}")  # type: ignore[arg-type]


def _theirs(m: Msg) -> tuple[int, int, int | None]:
    md = m.metadata
    return md.sequence.stream, md.num_delivered, int(md.timestamp.timestamp() * 1000) if md.timestamp else None


@given(
    delivered=st.integers(1, 10**6),
    sseq=st.integers(1, 2**53),
    cseq=st.integers(1, 2**53),
    ms=st.integers(1, 4_000_000_000_000),
    pending=st.integers(0, 10**9),
    v2=st.booleans(),
)
def test_same_as_nats_py(delivered: int, sseq: int, cseq: int, ms: int, pending: int, v2: bool) -> None:
    ns = ms * 1_000_000
    head = "$JS.ACK._.ACCHASH." if v2 else "$JS.ACK."
    tail = ".tok" if v2 else ""
    m = _msg(f"{head}ORDERS.router.{delivered}.{sseq}.{cseq}.{ns}.{pending}{tail}")
    assert _ack_fields(m) == (sseq, delivered, ms)
    theirs = _theirs(m)  # (nats-py goes through a float of seconds: a whole millisecond may come out 1 lower)
    assert theirs[:2] == (sseq, delivered) and theirs[2] is not None and ms - 1 <= theirs[2] <= ms


def test_a_sub_millisecond_time_is_floored() -> None:
    m = _msg("$JS.ACK.S.c.2.7.3.1796682142617784855.0")
    assert _ack_fields(m) == (7, 2, 1796682142617)
