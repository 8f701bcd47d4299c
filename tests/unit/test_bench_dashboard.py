"""The dashboard bench's pure parts (bench/dashboard.py): the figures of the samples, the orders it sends."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from bench.dashboard import SMALL_NOTIONAL, api_path, loads_summary, series, side_depth, slope, small_qty
from domain.synthetic import SyntheticBook, lot_size
from schemas.messages import Book


def test_slope_is_the_least_squares_line() -> None:
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == 2
    assert slope([0, 1, 2], [5, 5, 5]) == 0
    assert slope([1, 1], [0, 9]) is None  # one x: no line
    assert slope([1], [2]) is None
    assert slope([0, 1], [0]) is None


@given(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.lists(st.integers(0, 10_000), min_size=2, max_size=30, unique=True),
)
def test_slope_of_points_on_a_line_is_that_line(a: float, b: float, xs: list[int]) -> None:
    k = slope([float(x) for x in xs], [a * x + b for x in xs])
    assert k is not None and abs(k - a) <= 1e-6 * max(1.0, abs(a), abs(b))


def test_series_start_end_max_and_slopes_per_1000_fills() -> None:
    samples = [{"fills": f, "heapMb": h} for f, h in ((0, 2.0), (500, 3.0), (1000, 4.0), (1500, 4.0), (2000, 4.0))]
    r = series(samples, "heapMb")
    assert (r["start"], r["end"], r["max"]) == (2.0, 4.0, 4.0)
    assert r["per1000Fills"] is not None and r["per1000Fills"] > 0  # it grew at first ...
    assert r["per1000FillsLastHalf"] == 0  # ... then stayed flat: no leak past the warm-up
    assert series([], "heapMb") == {
        "start": None, "end": None, "max": None, "per1000Fills": None, "per1000FillsLastHalf": None,
    }  # fmt: skip


def test_loads_summary() -> None:
    assert loads_summary([]) == {"n": 0, "p50Ms": None, "p99Ms": None, "maxMs": None}
    r = loads_summary([float(x) for x in range(1, 101)])
    assert r["n"] == 100 and r["maxMs"] == 100.0 and r["p50Ms"] is not None and 49 <= r["p50Ms"] <= 51


def test_api_path_names_api_calls_only() -> None:
    assert api_path("http://127.0.0.1:3004/api/orders?status=open&limit=100") == "/api/orders?status=open&limit=100"
    assert api_path("http://127.0.0.1:3004/dashboard/static/app.js") is None
    assert api_path("http://127.0.0.1:3004/dashboard") is None
    assert api_path("http://127.0.0.1:3004") is None


BOOK = Book(
    pair="BTC_USDT",
    bids=[(D("59999"), D("0.5")), (D("59997"), D("0.25"))],
    asks=[(D("60001"), D("0.125")), (D("60003"), D("1"))],
    ts=0,
)


def test_a_seed_order_takes_the_whole_side_it_trades_against() -> None:
    assert side_depth(BOOK, "buy") == D("1.125")  # the asks
    assert side_depth(BOOK, "sell") == D("0.75")  # the bids


@given(st.integers(0, 2**32), st.sampled_from(["BTC_USDT", "ETH_USDT", "SOL_USDT", "LTC_USDT"]))
def test_a_memory_order_is_one_lot_or_more_and_fits_in_both_top_levels(seed: int, pair: str) -> None:
    book = SyntheticBook(pair, seed).next(0)
    q = small_qty(book)
    lot = lot_size(book.asks[0][0])
    assert q >= lot and q % lot == 0
    assert q <= book.asks[0][1] and q <= book.bids[0][1]  # one level: one fill, whichever side
    assert q * book.asks[0][0] <= SMALL_NOTIONAL or q == lot


def test_a_failed_stage_is_one_row_saying_why() -> None:
    from bench.dashboard import add_rows
    from bench.harness import Table

    t = Table(1.0)
    add_rows(t, {"error": "RuntimeError: GET /dashboard: 404 (is the page there?)", "logProblems": {}})
    assert len(t.lines) == 1 and "STAGE FAILED: RuntimeError: GET /dashboard: 404" in t.lines[0]
