"""Issue 22: the faster valuation (a ``ViewCache`` kept between calls, ``_Live`` following what the ledger
notes changed) gives the very same portfolio as the valuation it replaced, kept verbatim in
tests/unit/valuation_reference.py: after every step of random books - fills in pairs quoted in several
currencies (one that cannot be converted), fees in the base or the quote, orders that lock and release
funds, balance adjustments, marks that move, vanish or come back as the same number written another way,
a new day - the snapshot is byte for byte the reference's (every figure, its rounding and its form).
Pure: no bus.
"""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.unit.valuation_reference as ref
from domain.ledger import Ledger
from domain.valuation import DayStart, Rounding, ViewCache, books_snapshot, equity, roll_day, roll_days, snapshot
from domain.venue_ledgers import VenueLedgers
from schemas.messages import BalanceAdjusted, Order, OrderStatus
from tests.helpers import fill

PAIRS = ("BTC_USDT", "ETH_USDT", "ETH_BTC", "SOL_EUR", "XMR_ZZZ", "USDT_EUR")
CURRENCIES = ("USDT", "BTC", "ETH", "EUR", "SOL", "ZZZ", "XMR")
ROUNDINGS = (Rounding(), Rounding(decimals={"USDT": 2, "EUR": 2, "BTC": 6}), Rounding(default=3))

amounts = st.integers(1, 400).map(lambda n: D(n) / 100)  # 0.01 .. 4
prices = st.integers(1, 50_000).map(lambda n: D(n) / 10)  # 0.1 .. 5000
# the same number in another form (100, 100.0, 1.00E+2): a mark that prints differently
forms = st.sampled_from(("plain", "padded", "exp"))


def written(p: D, form: str) -> D:
    if form == "padded":
        return p.quantize(D("0.001"))
    if form == "exp":
        return D(f"{p:E}")
    return p


fills = st.tuples(
    st.just("fill"), st.sampled_from(PAIRS), st.sampled_from(("buy", "sell")), amounts, prices,
    st.sampled_from(("none", "quote", "base")),
)  # fmt: skip
marks = st.tuples(st.just("mark"), st.sampled_from(PAIRS), prices, forms)
unmarks = st.tuples(st.just("unmark"), st.sampled_from(PAIRS))
reforms = st.tuples(st.just("reform"), st.sampled_from(PAIRS), forms)  # the same mark written another way
orders = st.tuples(
    st.just("order"), st.integers(0, 5), st.sampled_from(PAIRS), st.sampled_from(("buy", "sell")), amounts
)
cancels = st.tuples(st.just("cancel"), st.integers(0, 5))
adjusts = st.tuples(st.just("adjust"), st.sampled_from(CURRENCIES), st.integers(-300, 300).map(lambda n: D(n) / 10))
days = st.tuples(st.just("day"))
steps = st.lists(st.one_of(fills, fills, marks, marks, reforms, unmarks, orders, cancels, adjusts, days), max_size=40)


class Books:
    """Random books and marks, moved one step at a time the way the ledger actor moves them."""

    def __init__(self, ledger: Ledger, venue: str = "paper") -> None:
        self.ledger = ledger
        self.venue = venue
        self.marks: dict[str, D] = {}  # changed in place, as the actor's marks (its books' mids)
        self.n = 0
        self.day = DayStart()

    def step(self, s: tuple) -> None:  # type: ignore[type-arg]
        self.n += 1
        kind = s[0]
        if kind == "fill":
            _, pair, side, qty, price, fee = s
            base, quote = pair.split("_")
            fee_amount, fee_ccy = {
                "none": ("0", quote),
                "quote": (str((qty * price / 1000).quantize(D("0.0001"))), quote),
                "base": (str(qty / 500), base),
            }[fee]
            f = fill(f"f{self.n}", side, str(qty), str(price), fee_amount, pair, fee_ccy, ts=1_000 + self.n)
            self.ledger.apply_fill(msgspec.structs.replace(f, venue=self.venue))
        elif kind == "mark":
            _, pair, price, form = s
            self.marks[pair] = written(price, form)
        elif kind == "reform":
            _, pair, form = s
            if pair in self.marks:
                self.marks[pair] = written(self.marks[pair].normalize(), form)
        elif kind == "unmark":
            self.marks.pop(s[1], None)
        elif kind == "order":
            _, k, pair, side, qty = s
            self.ledger.apply_order(order(f"o{k}", pair, side, qty, OrderStatus.ACCEPTED))
        elif kind == "cancel":
            self.ledger.apply_order(order(f"o{s[1]}", "BTC_USDT", "buy", D(1), OrderStatus.CANCELED))
        elif kind == "adjust":
            _, c, delta = s
            b = self.ledger.balances.get(c)
            total = b.total if b is not None else D(0)
            self.ledger.apply_adjustment(
                BalanceAdjusted(
                    adjustment_id=f"a{self.n}", venue=self.venue, currency=c, from_total=total,
                    from_available=total, to_total=total + delta, to_available=total + delta,
                    locked_delta=D(0), reason="mismatch", fills_seq=self.n, reading_fills_seq=self.n,
                    reading_seq=self.n, reading_ts=self.n, ts=self.n,
                )
            )  # fmt: skip
        elif kind == "day":
            self.day = roll_day(self.ledger, self.marks, self.day, f"2026{1000 + self.n:04d}")


def order(order_id: str, pair: str, side: str, qty: D, status: OrderStatus) -> Order:
    return Order(
        order_id=order_id, client_order_id=f"C-{order_id}", pair=pair, side=side, type="limit",  # type: ignore[arg-type]
        quantity=qty, status=status, price=D("10.5"), filled_quantity=D(0), venue="paper",
    )  # fmt: skip


enc = msgspec.json.encode


@settings(max_examples=300, deadline=None)
@given(script=steps, r=st.sampled_from(ROUNDINGS))
def test_a_cached_snapshot_is_the_reference_after_every_step(script: list, r: Rounding) -> None:  # type: ignore[type-arg]
    books = Books(Ledger("USDT", D(10_000)))
    cache = ViewCache()
    for s in [("mark", "BTC_USDT", D(60_000), "plain"), *script]:
        books.step(s)
        led, m, day = books.ledger, books.marks, books.day
        want = enc(ref.snapshot(led, m, day, books.n, 7, r))
        assert enc(snapshot(led, m, day, books.n, 7, r, cache=cache)) == want, s
        assert enc(snapshot(led, m, day, books.n, 7, r)) == want, s  # no cache
        assert equity(led, m) == ref.equity(led, m)


@settings(max_examples=150, deadline=None)
@given(script=steps, two=st.booleans(), r=st.sampled_from(ROUNDINGS))
def test_books_snapshot_with_a_cache_is_the_reference(script: list, two: bool, r: Rounding) -> None:  # type: ignore[type-arg]
    """The ledger actor's path: every venue's books (one venue, or two with their totals), days per venue."""
    venues = ("paper", "beta") if two else ("paper",)
    vl = VenueLedgers("USDT", D(10_000), venues)
    runs = [Books(vl.of(v), v) for v in venues]
    cache = ViewCache()
    for i, s in enumerate(script):
        b = runs[i % len(runs)]
        b.step(s)
        for other in runs:  # one set of marks for every venue
            other.marks = runs[0].marks if other is not runs[0] else other.marks
        m = runs[0].marks
        days = {x.venue: x.day for x in runs}
        want = enc(ref.books_snapshot(vl, m, days, i, 3, r))
        assert enc(books_snapshot(vl, m, days, i, 3, r, cache=cache)) == want, s


def test_a_mark_written_another_way_shows_as_written() -> None:
    """The same number in another form is another mark: currentPrice prints as the mark is written, so a
    cache that took an equal number for the same mark would show the old form."""
    led = Ledger("USDT", D(10_000))
    led.apply_fill(fill("f1", "buy", "1", "100"))
    cache = ViewCache()
    day = DayStart()
    marks = {"BTC_USDT": D("101")}
    assert str(snapshot(led, marks, day, 1, 0, cache=cache).positions[0].current_price) == "101"
    marks["BTC_USDT"] = D("101.00")
    view = snapshot(led, marks, day, 1, 0, cache=cache).positions[0]
    assert str(view.current_price) == "101.00"
    assert enc(view) == enc(ref.snapshot(led, marks, DayStart(), 1, 0).positions[0])


def test_a_fill_after_a_cached_snapshot_is_in_the_next_one() -> None:
    """The ledger notes the pair and currencies a fill moves; the next snapshot values them again."""
    led = Ledger("USDT", D(10_000))
    led.apply_fill(fill("f1", "buy", "1", "100"))
    cache = ViewCache()
    marks = {"BTC_USDT": D("110")}
    first = snapshot(led, marks, DayStart(), 1, 0, cache=cache)
    led.apply_fill(fill("f2", "buy", "1", "120", "0.12", ts=2))
    second = snapshot(led, marks, DayStart(), 2, 0, cache=cache)
    assert first.positions[0].quantity == 1 and second.positions[0].quantity == 2
    assert second.positions[0].average_price == D("110.0000000000")
    assert enc(second) == enc(ref.snapshot(led, marks, DayStart(), 2, 0))


def test_position_size_follows_the_total_across_a_rounding_step() -> None:
    """positionSize is kept while the total stays within a range known to give it: a total just across the
    half-way point of its last digit gives the next one."""
    led = Ledger("USDT", D(0))
    led.apply_fill(fill("f1", "buy", "1", "100"))
    led.apply_adjustment(
        BalanceAdjusted(
            adjustment_id="a1", venue="paper", currency="USDT", from_total=D(-100), from_available=D(-100),
            to_total=D(199_900), to_available=D(199_900), locked_delta=D(0), reason="mismatch", fills_seq=1,
            reading_fills_seq=1, reading_seq=1, reading_ts=1, ts=1,
        )
    )  # fmt: skip
    cache = ViewCache()
    for mark in ("100", "100.00001", "99.99999", "100", "300", "100.1", "100"):
        marks = {"BTC_USDT": D(mark)}
        got = snapshot(led, marks, DayStart(), 1, 0, cache=cache)
        assert enc(got) == enc(ref.snapshot(led, marks, DayStart(), 1, 0)), mark


# -- every way the ledger actor changes or replaces books, with one ViewCache kept throughout ----------------------
# Locks that move between venues, algorithm parents' reservations (``reserved``) and their children's locks and
# fills, balances read into being (``Ledger.balance``), opening adjustments (the venue's day start dropped), a
# venue configured later, and books restored from a snapshot (new Ledger objects under the same venue names, as
# PortfolioLedger._restore puts them): after each, the cached snapshot is the plain one and the reference.

VENUES = ("paper", "beta")
moves = st.tuples(
    st.just("order"), st.integers(0, 3), st.sampled_from(VENUES), st.sampled_from(PAIRS[:3]),
    st.sampled_from(("buy", "sell")), amounts, st.sampled_from(("accepted", "partially_filled", "canceled")),
)  # fmt: skip
parents = st.tuples(
    st.just("parent"), st.integers(0, 1), st.sampled_from(VENUES), st.sampled_from(("buy", "sell")),
    st.integers(1, 8).map(D), st.sampled_from(("accepted", "canceled")),
)  # fmt: skip
children = st.tuples(
    st.just("child"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(VENUES), st.integers(1, 3).map(D),
    st.sampled_from(("accepted", "filled", "canceled")),
)  # fmt: skip
child_fills = st.tuples(st.just("child_fill"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(VENUES), amounts)
venue_fills = st.tuples(st.just("vfill"), st.sampled_from(VENUES), fills)
openings = st.tuples(st.just("opening"), st.sampled_from(VENUES), st.sampled_from(CURRENCIES[:3]), prices)
touches = st.tuples(st.just("touch"), st.sampled_from(VENUES), st.sampled_from(CURRENCIES))
book_steps = st.lists(
    st.one_of(
        venue_fills,
        venue_fills,
        moves,
        moves,
        parents,
        children,
        child_fills,
        openings,
        touches,
        marks,
        unmarks,
        st.tuples(st.just("restore")),
        st.tuples(st.just("configure")),
        days,
    ),
    max_size=35,
)


class Actor:
    """The ledger actor's books, changed and replaced the ways it changes and replaces them."""

    def __init__(self, venues: tuple[str, ...]) -> None:
        self.books = VenueLedgers("USDT", D(10_000), venues)
        self.marks: dict[str, D] = {"BTC_USDT": D(60_000)}
        self.days: dict[str, DayStart] = {}
        self.n = 0

    def step(self, s: tuple) -> None:  # type: ignore[type-arg]
        self.n += 1
        n, kind, books = self.n, s[0], self.books
        if kind == "vfill":
            _, venue, (_, pair, side, qty, price, _) = s
            f = fill(f"f{n}", side, str(qty), str(price), pair=pair, ts=1_000 + n, venue=venue)
            books.apply_fill(f)
        elif kind == "order":  # the same order id on either venue: its lock moves with it
            _, k, venue, pair, side, qty, status = s
            o = order(f"o{k}", pair, side, qty, OrderStatus(status))
            books.apply_order(msgspec.structs.replace(o, venue=venue, filled_quantity=qty / 2))
        elif kind == "parent":  # an algorithm's parent reserves its whole quantity
            _, k, venue, side, qty, status = s
            o = order(f"p{k}", "BTC_USDT", side, qty, OrderStatus(status))
            books.apply_order(msgspec.structs.replace(o, type="twap", venue=venue, reference_price=D(100)))
        elif kind == "child":  # its child locks what it has still to fill; the parent reserves that much less
            _, k, j, venue, qty, status = s
            o = order(f"p{k}c{j}", "BTC_USDT", "buy", qty, OrderStatus(status))
            books.apply_order(
                msgspec.structs.replace(
                    o, client_order_id=f"tbx:p{k}:s{j}", role="slice", parent_order_id=f"p{k}", venue=venue
                )
            )
        elif kind == "child_fill":
            _, k, j, venue, qty = s
            f = fill(f"cf{n}", "buy", str(qty), "99.5", ts=1_000 + n, venue=venue)
            books.apply_fill(msgspec.structs.replace(f, order_id=f"p{k}c{j}", client_order_id=f"tbx:p{k}:s{j}"))
        elif kind == "opening":  # as PortfolioLedger._apply_adjustment: the venue's day start is taken again
            _, venue, c, to = s
            b = books.of(venue).balances.get(c)
            total = b.total if b is not None else D(0)
            books.apply_adjustment(
                BalanceAdjusted(
                    adjustment_id=f"a{n}", venue=venue, currency=c, from_total=total, from_available=total,
                    to_total=to, to_available=to, locked_delta=D(0), reason="opening", fills_seq=n,
                    reading_fills_seq=n, reading_seq=n, reading_ts=n, ts=n,
                )
            )  # fmt: skip
            self.days.pop(venue, None)
        elif kind == "touch":  # read into being (PortfolioLedger._check_negative): a zero balance, listed
            books.of(s[1]).balance(s[2])
        elif kind == "mark":
            _, pair, price, form = s
            self.marks[pair] = written(price, form)
        elif kind == "unmark":
            self.marks.pop(s[1], None)
        elif kind == "restore":  # a snapshot read back: new Ledger objects, new numbers, the same venues
            self.books = msgspec.json.decode(msgspec.json.encode(books), type=VenueLedgers)
            self.days = msgspec.json.decode(msgspec.json.encode(self.days), type=dict[str, DayStart])
            self.books.configure(books.venues)
        elif kind == "configure":  # a venue configured since: its initial books
            books.configure((*books.venues, "gamma"))
        elif kind == "day":
            self.days = roll_days(books, self.marks, self.days, f"2026{1000 + n:04d}")


@settings(max_examples=200, deadline=None)
@given(script=book_steps, two=st.booleans(), r=st.sampled_from(ROUNDINGS))
def test_every_way_the_actor_changes_its_books_is_seen_by_the_cache(script: list, two: bool, r: Rounding) -> None:  # type: ignore[type-arg]
    actor = Actor(VENUES if two else ("paper",))
    cache = ViewCache()
    for s in script:
        actor.step(s)
        books, m, days = actor.books, actor.marks, actor.days
        cached = enc(books_snapshot(books, m, days, actor.n, 3, r, cache=cache))
        plain = enc(books_snapshot(books, m, days, actor.n, 3, r))
        assert cached == plain, s
        assert plain == enc(ref.books_snapshot(books, m, days, actor.n, 3, r)), s
