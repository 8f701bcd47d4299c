"""The hot-path bench's trace counter (bench/hotpath.py ``trace_counts``), a plain function over a wildcard spy's
messages: which of them are the durable writes (K) and the requests (R) on the path of one signal -> fill, the
floor's inputs. Synthetic message lists, shaped like a real trace of the service (subjects, replies, stored acks)."""

from __future__ import annotations

import json

import pytest

from bench.hotpath import Seen, Trace, path_counts, pattern, trace_counts

P = "benchab12cd34"
SID = "hptrace-0"


def sig(sid: str = SID, reply: str | None = None) -> Seen:
    return Seen(f"{P}.signals.submit", reply, json.dumps({"signalId": sid, "pair": "BTC_USDT"}).encode())


def fill(cid: str = f"{SID}-1", complete: bool = True, reply: str | None = "_INBOX.F.1") -> Seen:
    body = {"fillId": "f1", "clientOrderId": cid, "orderComplete": complete}
    return Seen(f"{P}.events.fills.BTC_USDT", reply, json.dumps(body).encode())


def write(subject: str, inbox: str, stream: str = "S") -> list[Seen]:
    """A JetStream publish and its stored ack, as the spy sees them."""
    return [Seen(subject, inbox, b"{}"), stored(inbox, stream)]


def stored(inbox: str, stream: str = "S") -> Seen:
    return Seen(inbox, None, b'{"stream":"%s","seq":1}' % stream.encode())


def request(subject: str, inbox: str) -> list[Seen]:
    return [Seen(subject, inbox, b"{}"), Seen(inbox, None, b'{"ok":true}')]


def path() -> list[Seen]:
    """One signal's way to its fill, with the noise a real trace has around and inside it."""
    return [
        Seen(f"{P}.md.book.BTC_USDT", None, b"{}"),  # before the window: not counted
        *write(f"{P}.hop.approved.BTC_USDT", "_INBOX.X.0"),  # an earlier order's write: before the window
        sig(),
        sig(reply=f"$JS.ACK.{P.upper()}_SIGNALS.signal-intake.1.2.2"),  # its delivery to signal-intake
        *request(f"{P}.query.risk", "_INBOX.A.1"),
        Seen(f"{P}.orders.submit", "_INBOX.A.2", b"{}"),  # a request answered later, after the writes below
        *write(f"{P}.hop.approved.BTC_USDT", "_INBOX.B.1"),
        Seen(f"{P}.hop.approved.BTC_USDT", f"$JS.ACK.{P.upper()}_HOPS.order-router.1.5", b"{}"),
        *write(f"$KV.{P.upper()}_STATE.coid.c4f89dd3cc25f6ff76da10fd3820657", "_INBOX.C.1"),
        *write(f"$KV.{P.upper()}_LEASES_order-router.order-router", "_INBOX.C.2", f"KV_{P.upper()}_LEASES_x"),  # idle
        Seen(f"$JS.API.STREAM.INFO.KV_{P.upper()}_LEASES_md-feed", "_INBOX.C.3", b""),  # ... and its lookup
        Seen(f"{P}.health.risk-gate", None, b"{}"),  # a heartbeat
        Seen("$JS.EVENT.ADVISORY.API", None, b"{}"),
        Seen("_INBOX.A.2", None, b'{"ok":true}'),  # orders.submit's answer
        Seen(f"$JS.ACK.{P.upper()}_HOPS.order-router.1.5", None, b""),  # an ack, plain
        Seen(f"$JS.API.CONSUMER.MSG.NEXT.{P.upper()}_HOPS.fill-tracker", "_INBOX.D.1", b'{"batch":1}'),  # a pull
        *request(f"$JS.API.STREAM.MSG.GET.KV_{P.upper()}_PAPER", "_INBOX.C.4"),
        fill(cid="other-1", reply=None),  # another order's fill does not end the window, nor a fill not complete:
        fill(complete=False, reply=None),
        fill(),  # the end: the fill's own publish; its stored ack comes after it
        fill(reply=f"$JS.ACK.{P.upper()}_FILLS.ledger.1.3"),  # its delivery
        stored("_INBOX.F.1", "FILLS"),
        *write(f"{P}.events.positions.BTC_USDT", "_INBOX.E.1"),  # after the fill: not on the path
        *request(f"{P}.query.risk", "_INBOX.E.2"),
    ]


def test_the_writes_and_requests_on_the_path_of_one_signal() -> None:
    t = trace_counts(path(), P, SID)
    assert t.found
    assert t.writes == [
        "<p>.hop.approved.BTC_USDT",
        "$KV.<P>_STATE.coid.*",  # the key (a hash) as *
        "<p>.events.fills.BTC_USDT",  # the fill's own write: its stored ack came after the fill event
    ]
    assert t.requests == ["<p>.query.risk", "<p>.orders.submit", "$JS.API.STREAM.MSG.GET.KV_<P>_PAPER"]
    assert (t.k, t.r) == (3, 3)
    assert t.steps == [  # in order, with the connection of each (A, B, C, F: c1 .. c4, by first appearance)
        "R <p>.query.risk (c1)",
        "R <p>.orders.submit (c1)",
        "W <p>.hop.approved.BTC_USDT (c2)",
        "W $KV.<P>_STATE.coid.* (c3)",
        "R $JS.API.STREAM.MSG.GET.KV_<P>_PAPER (c3)",
        "W <p>.events.fills.BTC_USDT (c4)",
    ]
    # the rest of the window: the signal's and the hop's deliveries, the three answers, two stored acks (not the
    # lease's), the hop's ack, the fill-tracker's pull, the signal's own publish and the two fill events that did not
    # end the window
    assert t.other == {"delivery": 2, "reply": 3, "stored ack": 2, "ack": 1, "pull (fetch)": 1, "plain publish": 3}


def test_a_publish_without_its_stored_ack_is_not_a_durable_write() -> None:
    msgs = [sig(), Seen(f"{P}.events.orders.BTC_USDT", "_INBOX.Z.1", b"{}"), fill(reply=None)]
    t = trace_counts(msgs, P, SID)
    assert t.found and t.writes == [] and t.requests == ["<p>.events.orders.BTC_USDT"]
    msgs.append(stored("_INBOX.Z.1"))  # its stored ack, even after the fill event: a durable write
    t = trace_counts(msgs, P, SID)
    assert t.writes == ["<p>.events.orders.BTC_USDT"] and t.requests == []


def test_no_fill_or_no_signal_is_not_found() -> None:
    no_fill = [m for m in path() if not m.subject.startswith(f"{P}.events.fills.")]
    assert not trace_counts(no_fill, P, SID).found
    assert not trace_counts(path(), P, "another-signal").found
    assert path()[3] == sig()
    assert not trace_counts(path()[4:], P, SID).found  # its publish is not in the list (its delivery does not count)
    with pytest.raises(RuntimeError):
        path_counts([trace_counts(no_fill, P, SID)])


def test_path_counts_takes_the_most_common() -> None:
    def tr(k: int, r: int, found: bool = True) -> Trace:
        return Trace(writes=["w"] * k, requests=["r"] * r, found=found)

    assert path_counts([tr(8, 3), tr(9, 3), tr(8, 3), tr(0, 0, found=False), tr(0, 0, found=False)]) == (8, 3)
    assert path_counts([tr(7, 2), tr(8, 3)]) == (8, 3)  # a tie: the larger


def test_pattern() -> None:
    assert pattern(f"{P}.events.orders.BTC_USDT", P) == "<p>.events.orders.BTC_USDT"
    assert pattern(f"$KV.{P.upper()}_PAPER.o.c4f89dd3cc25f6ff76da10fd38206570", P) == "$KV.<P>_PAPER.o.*"
