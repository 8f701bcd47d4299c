"""Every message of the bus contract, as msgspec Structs.

Money and quantities are ``Decimal`` (decimal strings on the bus), times are epoch milliseconds.
Field names are camelCase on the wire. Public contracts (``Signal``, ``Book``, ``Fill``) accept
unknown fields, so other programs may add optional ones.
"""

from __future__ import annotations

import time
from decimal import Decimal
from enum import StrEnum
from typing import Literal

import msgspec

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop_loss", "stop_limit", "take_profit", "twap", "vwap", "iceberg"]
AlgoType = Literal["twap", "vwap", "iceberg"]  # the execution algorithms: a parent order whose children trade
ALGO_TYPES: frozenset[str] = frozenset(("twap", "vwap", "iceberg"))
TimeInForce = Literal["GTC", "IOC", "FOK", "GTD"]
Liquidity = Literal["maker", "taker"]
SignalAction = Literal["BUY", "SELL", "HOLD", "CLOSE"]

ZERO = Decimal(0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class OrderStatus(StrEnum):
    INITIALIZED = "initialized"
    DENIED = "denied"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    TRIGGERED = "triggered"
    PENDING_UPDATE = "pending_update"
    PENDING_CANCEL = "pending_cancel"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.DENIED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class Msg(msgspec.Struct, kw_only=True, rename="camel", gc=False):
    """Base of every bus message.

    Plain data that never refers back to itself, so it stays out of the cyclic garbage collector's
    sight (``gc=False``): the orders, events and fills an actor holds cost a full collection nothing."""


# --------------------------------------------------------------------------------------------------
# Public contracts
# --------------------------------------------------------------------------------------------------
class RiskParameters(Msg):
    max_risk_percent: Decimal | None = None
    position_size_method: str | None = None


class Signal(Msg):
    """A trading signal on ``tbx.signals.submit`` (the seed's body)."""

    pair: str
    signal: str  # BUY, SELL, HOLD or CLOSE, in any case (signal-intake answers other values with a rejection)
    confidence: Decimal
    source: str = "unknown"
    strategy: str = ""
    signal_id: str | None = None
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    risk_parameters: RiskParameters | None = None
    quantity: Decimal | None = None  # optional: a fixed size instead of the sizing rule
    timestamp: int | None = None


class Book(Msg):
    """An L2 order book snapshot on ``tbx.md.book.<pair>``, best levels first."""

    pair: str
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    ts: int
    venue: str | None = None  # the venue whose book this is (a live venue's md-feed); None: synthetic, replay, outside


class Trade(Msg):
    """A public trade print on ``tbx.md.trades.<pair>``."""

    pair: str
    price: Decimal
    quantity: Decimal
    side: Side  # the taker's side
    ts: int
    trade_id: str | None = None
    venue: str | None = None  # as Book.venue


class Fill(Msg):
    """A canonical fill on ``tbx.events.fills.<pair>``. The ledger books any fill on that stream."""

    fill_id: str
    order_id: str
    client_order_id: str
    pair: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    venue: str
    timestamp: int
    # optional, written by fill-tracker: the order's running totals after this fill
    order_filled_quantity: Decimal | None = None
    order_average_price: Decimal | None = None
    order_fees: Decimal | None = None
    order_complete: bool | None = None
    exchange: str = ""  # = venue, always (set on every construction and decoding): the REST name of the venue

    def __post_init__(self) -> None:
        self.exchange = self.venue


# --------------------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------------------
class AlgoSpec(Msg):
    """An execution algorithm's parameters (``"algo"`` of a twap / vwap / iceberg order), as asked and as accepted
    (the accepted one has its seed filled in, so the schedule recomputed after a restart is the same)."""

    duration_ms: int | None = None  # twap / vwap: the schedule's length
    slices: int | None = None  # twap / vwap: how many children
    size_jitter: Decimal = ZERO  # twap: each slice's size varies within this fraction of the even size (0 to 0.5)
    time_jitter: Decimal = ZERO  # twap: each slice's time varies within this fraction of the interval (0 to 0.5)
    seed: int | None = None  # the randomisation's seed (None in a request: derived from the order)
    profile: list[Decimal] | None = None  # vwap: an intraday profile, one weight per slice (None: recent volume)
    lookback_ms: int | None = None  # vwap: the window of recent trades whose shape it follows (None: durationMs)
    display_quantity: Decimal | None = None  # iceberg: the most it shows at once


class AlgoState(Msg):
    """Where a parent order's algorithm is: written on the parent before each child is made (durable resume)."""

    start_ms: int  # when its schedule started
    sent: list[int] = msgspec.field(default_factory=list)  # the slice (or clip) indexes sent, in order
    weights: list[Decimal] | None = None  # vwap: the profile fixed when it was accepted
    carried: Decimal = ZERO  # quantity left unfilled by earlier slices, added to the next one
    done_reason: str | None = None  # why it stopped before its quantity was filled (on the trail too)
    step: Decimal | None = None  # the venue's amount step its schedule was built with (None: older records)
    min_quantity: Decimal | None = None  # the venue's smallest child then (the same schedule after a restart)
    # vwap: what its weights stand on - request (its profile), volume (every bucket by the venue's traded volume),
    # blend (the buckets not watched in full at their time share), flat (none watched in full, or no volume)
    profile_source: Literal["request", "volume", "blend", "flat"] | None = None
    covered_from_ms: int | None = None  # vwap by volume: from when the router had seen every trade (epoch ms)
    reduces: bool = False  # the risk gate found it reducing a position when it approved it: runs while REDUCING


class OrderRequest(Msg):
    """A new order, as sent on ``tbx.orders.submit``. ``clientOrderId`` makes it idempotent."""

    client_order_id: str
    pair: str
    side: Side
    quantity: Decimal
    type: OrderType = "market"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: TimeInForce | None = None
    expire_at: int | None = None  # GTD: epoch ms
    post_only: bool = False
    reduce_only: bool = False
    risk_check: bool = True
    paper_trade: bool | None = None
    source: str = "api"
    signal_id: str | None = None
    ts: int = 0
    exchange: str | None = None  # the venue it must go to (a name in EXCHANGES); None: the router's policy picks
    algo: AlgoSpec | None = None  # twap / vwap / iceberg: the algorithm's parameters


class RiskValidation(Msg):
    passed: bool
    recommended_size: Decimal | None = None  # advice: the order keeps its own quantity
    max_risk: Decimal | None = None  # lost if the stop-loss is hit (without one: the whole cost)
    code: str | None = None
    reason: str | None = None
    decided_by: Literal["local", "risk_service"] = "local"
    note: str | None = None  # e.g. the risk service was down and the local rules decided


class FillRef(Msg):
    fill_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    timestamp: int


class Order(Msg):
    """An order as the order-router owns it."""

    order_id: str
    client_order_id: str
    pair: str
    side: Side
    type: OrderType
    quantity: Decimal
    status: OrderStatus
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = "GTC"
    expire_at: int | None = None
    post_only: bool = False
    reduce_only: bool = False
    # set on the orders of a bracket, and on an algorithm's children ("slice")
    role: Literal["entry", "stop_loss", "take_profit", "slice"] | None = None
    parent_order_id: str | None = None  # a bracket leg: its entry; an algorithm's child: its parent
    linked_orders: dict[str, str] | None = None  # entry: {"stopLoss": id, "takeProfit": id}; leg: its sibling
    triggered_at: int | None = None
    previous_status: OrderStatus | None = None  # while PENDING_CANCEL / PENDING_UPDATE: where to go back
    reference_price: Decimal | None = None  # the risk-gate's expected price (what a market buy locks)
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    total_cost: Decimal = ZERO
    fees: Decimal = ZERO
    fee_currency: str | None = None
    venue: str = "paper"
    routing: str | None = None  # how its venue was chosen (named, or the policy's decision and each venue's price)
    # the venues to try next, in order, should ``venue`` certainly not take it (routed by policy; empty when named)
    fallback: list[str] = msgspec.field(default_factory=list)
    paper_trade: bool = True  # false: a live order at a real venue
    native_trigger: bool = False  # a stop / take-profit the venue holds itself (not triggered here)
    venue_order_id: str | None = None
    venue_status: str | None = None  # what the venue last said: open, closed, canceled, rejected, expired
    venue_filled: Decimal | None = None  # quantity the venue reports as executed
    source: str = "api"
    signal_id: str | None = None
    reason: str | None = None
    version: int = 0  # bumped on every change; events are deduplicated by (orderId, version)
    created_at: int = 0
    updated_at: int = 0
    closed_at: int | None = None
    execution_time: int | None = None
    fills: list[FillRef] = msgspec.field(default_factory=list)
    exchange: str = ""  # = venue, always (set on every construction and decoding): the REST name of the venue
    algo: AlgoSpec | None = None  # a parent order (twap / vwap / iceberg): its parameters as accepted
    algo_state: AlgoState | None = None  # a parent order: where its algorithm is
    children: list[str] = msgspec.field(default_factory=list)  # a parent order: its children's order ids, in order
    # the book of its venue when it was accepted (execution quality): None when there was none
    arrival_mid: Decimal | None = None
    arrival_bid: Decimal | None = None
    arrival_ask: Decimal | None = None

    def __post_init__(self) -> None:
        self.exchange = self.venue


class CancelOrder(Msg):
    """``tbx.orders.cancel``: one order (by id or client id), or every working order (of one pair)."""

    order_id: str | None = None
    client_order_id: str | None = None
    all: bool = False
    pair: str | None = None
    reason: str | None = None
    venues: list[str] | None = None  # all: only the orders on these venues (None: every venue)
    keep_reduce_only: bool = False  # all: leave reduce-only orders (exits of positions kept) working


class ModifyOrder(Msg):
    """``tbx.orders.modify``: a new price, stop price and/or quantity for a working order."""

    order_id: str
    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None


class CommandReply(Msg):
    """The outcome of a cancel or modify: the orders after the command (or why it was refused)."""

    ok: bool
    orders: list[Order] = msgspec.field(default_factory=list)
    code: str | None = None
    field: str | None = None
    detail: str | None = None


class OrderEvent(Msg):
    """One state change of an order, on ``tbx.events.orders.<pair>``."""

    event: str
    order: Order
    ts: int


class ApprovedOrder(Msg):
    """risk-gate -> order-router (durable hop)."""

    request: OrderRequest
    risk_validation: RiskValidation
    estimated_cost: Decimal | None = None
    reply_to: str | None = None
    approved_at: int = 0
    # the venues the risk gate found able to take it (they list the pair, their rules accept it, their balance
    # pays for it), in priority order; the router routes among these only. None: every venue (older messages)
    venues: list[str] | None = None
    # the transition's epoch (reverts so far) the approval was made under: the order-router refuses it for a
    # live venue when a revert came since, or while in paper mode. None: not decided by the transition
    transition_epoch: int | None = None
    # the risk gate found the order reducing a position (it passed REDUCING / TRADING_HOURS as such): an
    # algorithm's parent records it (algoState.reduces) and keeps running while trading is REDUCING
    reduces: bool = False


class OrderReply(Msg):
    """The outcome of an order command."""

    ok: bool
    order: Order | None = None
    risk_validation: RiskValidation | None = None
    estimated_cost: Decimal | None = None
    code: str | None = None
    field: str | None = None
    detail: str | None = None


class ExecutionReport(Msg):
    """order-router -> fill-tracker (durable hop): what the venue said about an order."""

    kind: Literal["trade", "canceled", "rejected", "expired"]
    order_id: str
    client_order_id: str
    pair: str
    side: Side
    order_quantity: Decimal
    venue: str
    ts: int
    trade_id: str | None = None
    quantity: Decimal = ZERO
    price: Decimal = ZERO
    fee: Decimal = ZERO
    fee_currency: str = ""
    liquidity: Liquidity = "taker"
    reason: str | None = None


# --------------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------------
class SignalOrder(Msg):
    order_id: str
    type: OrderType
    side: Side
    quantity: Decimal
    status: OrderStatus


class PositionSizing(Msg):
    recommended_size: Decimal
    risk_amount: Decimal
    method: str
    capped_by: str | None = None  # a limit that made the size smaller than the method's (MAX_POSITION_SIZE)
    decided_by: Literal["local", "risk_service"] = "local"
    currency: str | None = None  # of risk_amount: the pair's quote currency


class SignalEvent(Msg):
    """What became of a signal, on ``tbx.events.signals.<pair>``: exactly one per signal."""

    signal_id: str
    status: Literal["accepted", "filtered", "rejected", "executed"]
    pair: str
    signal: str
    confidence: Decimal
    source: str
    strategy: str
    ts: int
    received_at: int = 0  # when the signal was stored (epoch ms): the clock of the windows
    reason: str | None = None
    code: str | None = None  # for a rejection by the risk-gate: its denial code
    field: str | None = None  # for a rejected signal: the field at fault (signal, pair, confidence...)
    orders: list[SignalOrder] = msgspec.field(default_factory=list)
    linked_orders: dict[str, str] | None = None  # the bracket's stopLoss / takeProfit order ids
    position_sizing: PositionSizing | None = None
    adjusted_confidence: Decimal | None = None  # after the ML service's view, or of the aggregate
    aggregated: list[str] | None = None  # the ids of the signals combined into this decision
    notes: list[str] = msgspec.field(default_factory=list)  # e.g. a service down, a default stop-loss


class SignalReply(SignalEvent):
    """The reply to a signal sent with a reply subject: its result, plus where it was stored (so a
    JetStream client's publish ack reads it too)."""

    stream: str = ""
    seq: int = 0


# --------------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------------
class OrdersQuery(Msg):
    status: OrderStatus | None = None
    pair: str | None = None
    side: Side | None = None
    order_id: str | None = None
    client_order_id: str | None = None
    since: int | None = None  # created at or after (epoch ms)
    until: int | None = None  # created before (epoch ms)
    cursor: str | None = None  # from the previous page's nextCursor
    limit: int = 50
    open: bool = False  # only the working orders (a status not in TERMINAL_STATUSES): GET /api/orders?status=open


class OrdersPage(Msg):
    orders: list[Order]
    next_cursor: str | None = None


class SignalsQuery(Msg):
    pair: str | None = None
    status: str | None = None
    source: str | None = None
    signal_id: str | None = None
    since: int | None = None  # handled at or after (epoch ms)
    limit: int = 50


class SignalsPage(Msg):
    signals: list[SignalEvent]  # newest first


class OrderEventsQuery(Msg):
    order_id: str


class OrderEventsPage(Msg):
    events: list[OrderEvent]


class MarketRules(Msg):
    """What a venue accepts for one pair: price tick, amount step, minimum notional, fees."""

    pair: str
    tick_size: Decimal
    amount_step: Decimal
    min_notional: Decimal
    maker_fee: Decimal
    taker_fee: Decimal
    min_amount: Decimal | None = None  # the venue's smallest / largest order quantity (None: no limit known)
    max_amount: Decimal | None = None
    venue: str | None = None  # whose rules these are (several venues: one entry per venue and pair)


class MarketsPage(Msg):
    venue: str
    markets: list[MarketRules]


class VenueBookQuery(Msg):
    """``tbx.query.venue_book`` (the pair's partition: ``.p<k>``): the book a venue of the order-router would match
    or price a market order of ``pair`` on now (the paper venue: its matcher's book)."""

    pair: str
    venue: str | None = None  # None: the router's first venue


class VenueBookView(Msg):
    pair: str
    venue: str
    book: Book | None  # None: the venue holds no book of the pair (yet)


class RiskMetrics(Msg):
    position_size: Decimal
    leverage: Decimal
    liquidation_price: Decimal | None = None


class PositionView(Msg):
    id: str
    pair: str
    side: Literal["long", "short", "flat"]
    quantity: Decimal
    average_price: Decimal
    current_price: Decimal | None
    market_value: Decimal
    unrealized_pnl: Decimal = msgspec.field(name="unrealizedPnL")
    realized_pnl: Decimal = msgspec.field(name="realizedPnL")  # the pair's whole life (= pairRealizedPnL)
    day_pnl: Decimal = msgspec.field(name="dayPnL")
    fees: Decimal  # the pair's whole life (= pairFees)
    risk_metrics: RiskMetrics
    opened_at: int | None = None
    updated_at: int = 0
    exchange: str | None = None  # the venue that holds it (positions are kept per venue)
    # realized P&L and fees of the current cycle only (the position named by ``id``; 0 when flat) and of
    # the pair's whole life (every cycle since its first fill); all in the pair's quote currency
    cycle_realized_pnl: Decimal = msgspec.field(default=ZERO, name="cycleRealizedPnL")
    cycle_fees: Decimal = ZERO
    pair_realized_pnl: Decimal = msgspec.field(default=ZERO, name="pairRealizedPnL")
    pair_fees: Decimal = ZERO


class BalanceView(Msg):
    """One currency's balance: `available` = `total` - `locked`. `locked` is what is not available: what working
    orders hold (at the venue, as its readings correct it) and what algorithm parents reserve. `reserved` is the part
    of `locked` that algorithm parents (twap / vwap / iceberg) reserve beyond what their live children hold: not held
    at the venue, so a live venue's own figures do not show it."""

    currency: str
    total: Decimal
    available: Decimal
    locked: Decimal
    reserved: Decimal = ZERO  # part of ``locked``: algorithm parents' reservations, not at the venue


class CurrencyFigures(Msg):
    """One currency's own figures, in its own units (``summary.byCurrency``)."""

    realized_pnl: Decimal = msgspec.field(name="realizedPnL")  # of the pairs quoted in it
    unrealized_pnl: Decimal = msgspec.field(name="unrealizedPnL")  # of the open positions quoted in it
    fees_paid: Decimal  # of the pairs quoted in it
    balance: Decimal  # the total balance


class PortfolioSummary(Msg):
    """Totals in ``base_currency``: every amount converted at the latest marks (see domain/valuation.py);
    a currency that cannot be converted is listed in ``unconverted`` and left out of the totals."""

    total_value: Decimal
    total_cash: Decimal
    total_positions: Decimal
    unrealized_pnl: Decimal = msgspec.field(name="unrealizedPnL")
    realized_pnl: Decimal = msgspec.field(name="realizedPnL")
    day_pnl: Decimal = msgspec.field(name="dayPnL")
    fees_paid: Decimal
    base_currency: str
    by_currency: dict[str, CurrencyFigures] = msgspec.field(default_factory=dict)
    unconverted: list[str] = msgspec.field(default_factory=list)
    conversion_rates: dict[str, Decimal] = msgspec.field(default_factory=dict)  # BASE per unit, as used


class VenueBalanceFigures(Msg):
    """One currency at a venue: ``free`` = ``total`` - what the venue holds for open orders."""

    free: Decimal
    total: Decimal


class BalanceQuiet(Msg):
    """Order-router partition 0 -> partition k (PARTITIONS > 1, ``tbx.query.balance_quiet.p<k>``), around a live
    venue's balance reading: is partition k quiet there (no send on its way, every trade of its orders back as a
    fill), and how far it is (``fills_seq``, ``changes``: unchanged across the reading, nothing moved). With
    ``open_orders`` (the venue's open orders as read with the balances, client order id -> filled): did one of
    partition k's orders trade meanwhile (``traded``)."""

    venue: str
    open_orders: dict[str, Decimal] | None = None


class BalanceQuietReply(Msg):
    quiet: bool
    fills_seq: int = 0
    changes: int = 0
    traded: bool = False


class VenueBalances(Msg):
    """A live venue's balances as read there, on ``tbx.events.balances.<venue>`` (order-router ->
    portfolio-ledger; paper mode never publishes it). ``fills_seq``: the FILLS stream sequence up to
    which every trade behind these figures has a fill. ``opening``: the first balances of a live venue
    whose ledger has no fills yet (they become the opening balances)."""

    venue: str
    balances: dict[str, VenueBalanceFigures]  # by currency code, as the ledger writes them (USDT, BTC)
    ts: int  # when read at the venue
    fills_seq: int
    opening: bool = False


class BalanceAdjusted(Msg):
    """The ledger's books set to a venue's balance for one currency, on ``tbx.events.adjustments.<venue>``
    (stream ADJUSTMENTS, a book of record the ledger rebuilds from). ``from_*`` are the ledger's figures
    as of the reading's FILLS position, ``to_*`` the venue's (``to_available`` is its free); the total
    changes by ``to_total - from_total``, what is locked by ``locked_delta`` (see domain/reconcile.py)."""

    adjustment_id: str  # <venue>:<BALANCES stream seq of the reading>:<currency>
    venue: str
    currency: str
    from_total: Decimal
    from_available: Decimal
    to_total: Decimal
    to_available: Decimal
    locked_delta: Decimal
    reason: Literal["mismatch", "opening"]
    fills_seq: int  # applied after this FILLS sequence (a replay applies it at the same point)
    reading_fills_seq: int  # the reading's fillsSeq
    reading_seq: int  # the reading's sequence in the BALANCES stream
    reading_ts: int  # when the venue was read
    ts: int  # when the ledger adjusted its books


class ExchangePortfolio(Msg):
    """One venue's books (``byExchange``): its positions and balances, and its totals in ``base_currency``."""

    summary: PortfolioSummary
    positions: list[PositionView]
    balances: list[BalanceView]


class PortfolioSnapshot(Msg):
    summary: PortfolioSummary  # every venue together
    positions: list[PositionView]  # every venue's, each naming its ``exchange``
    balances: list[BalanceView]  # summed over the venues, per currency
    fills_applied: int
    last_fill_seq: int
    ts: int
    balance_adjustments: list[BalanceAdjusted] = msgspec.field(default_factory=list)  # the last ones, newest first
    by_exchange: dict[str, ExchangePortfolio] = msgspec.field(default_factory=dict)  # venue name -> its books


class Empty(Msg):
    pass


class PositionCycleView(Msg):
    """A closed position cycle (a round trip)."""

    pair: str
    cycle: int
    side: Literal["long", "short"]
    quantity: Decimal
    average_open_price: Decimal
    average_close_price: Decimal | None
    realized_pnl: Decimal = msgspec.field(name="realizedPnL")
    fees: Decimal
    opened_at: int
    closed_at: int
    exchange: str | None = None  # the venue it was held on (books are kept per venue)


class HistoryQuery(Msg):
    pair: str | None = None
    since: int | None = None  # closed at or after (epoch ms)
    limit: int = 100


class PositionsHistory(Msg):
    positions: list[PositionCycleView]  # newest first


class PeriodReturn(Msg):
    period: str
    value: Decimal = msgspec.field(name="return")
    equity: Decimal


class EquityPoint(Msg):
    ts: int
    equity: Decimal


class TradeStatsView(Msg):
    round_trips: int
    wins: int
    losses: int
    win_rate: Decimal | None
    profit_factor: Decimal | None
    expectancy: Decimal | None
    average_win: Decimal | None
    average_loss: Decimal | None
    gross_profit: Decimal
    gross_loss: Decimal
    realized_pnl: Decimal = msgspec.field(name="realizedPnL")
    fees_paid: Decimal


class PairPerformance(Msg):
    pair: str
    trades: TradeStatsView
    unrealized_pnl: Decimal = msgspec.field(name="unrealizedPnL")
    realized_pnl: Decimal = msgspec.field(name="realizedPnL")
    fees_paid: Decimal
    # the currency of the money figures above: the base currency (converted at the latest marks), or the
    # pair's quote currency when that cannot be converted (then listed in ``Performance.unconverted``)
    currency: str = ""


class QualityFigures(Msg):
    """Execution quality of a group of completed orders (domain/quality.py ``QualityStats``; README "Execution
    quality"): slippage against the arrival mid in basis points (positive: worse for the trader, fees excluded),
    notional-weighted mean and nearest-rank 95th percentile; the mean fill ratio; the mean time to the last fill;
    the fees, in ``feesCurrency``."""

    orders: int
    avg_slippage_bps: Decimal | None
    p95_slippage_bps: Decimal | None
    fill_ratio: Decimal | None
    avg_time_to_fill_ms: int | None
    fees: Decimal
    fees_currency: str


class FillQualityView(Msg):
    """One fill of an order against the order's arrival (bps, positive = worse): fees separately and included."""

    fill_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal | None  # in the pair's quote currency (None: in a currency that is neither base nor quote)
    timestamp: int
    slippage_bps: Decimal | None  # against the arrival mid
    touch_slippage_bps: Decimal | None  # against the touch at arrival (the ask for a buy, the bid for a sell)
    fee_bps: Decimal | None
    cost_bps: Decimal | None  # slippage against arrival + fees


class OrderQualityView(Msg):
    """One completed order's execution quality (``GET /api/execution/quality?orderId=``); money in ``feesCurrency``
    (the pair's quote currency)."""

    order_id: str
    pair: str
    exchange: str
    type: str
    side: str
    quantity: Decimal
    filled_quantity: Decimal
    average_price: Decimal | None
    arrival_mid: Decimal | None
    touch: Decimal | None
    slippage_bps: Decimal | None  # against the arrival mid, fees excluded
    touch_slippage_bps: Decimal | None  # against the touch: implementation shortfall
    fees: Decimal
    fees_currency: str
    fees_bps: Decimal | None
    cost_bps: Decimal | None  # slippage against arrival + fees
    fill_ratio: Decimal
    time_to_fill_ms: int | None
    created_at: int
    completed_at: int
    fills: list[FillQualityView]


class ExecutionQuality(Msg):
    """``GET /api/execution/quality`` (and ``executionQuality`` of ``/api/performance``): the completed orders the
    portfolio-ledger keeps (algorithms' children counted in their parent), grouped by pair, by venue and by type."""

    by_pair: dict[str, QualityFigures]
    by_exchange: dict[str, QualityFigures]
    by_type: dict[str, QualityFigures]
    overall: QualityFigures
    currency: str  # the currency of the fees summed across pairs (BASE_CURRENCY)
    unconverted: list[str] = msgspec.field(default_factory=list)  # currencies whose fees are left out of the sums
    order: OrderQualityView | None = None  # asked with ``orderId``: that order's figures, per fill too


class ExecutionQualityQuery(Msg):
    """``tbx.query.execution_quality``: the orders created from ``since`` (inclusive) until ``until`` (exclusive),
    of one pair, of one venue (``exchange``); None: any."""

    since: int | None = None
    until: int | None = None
    pair: str | None = None
    exchange: str | None = None
    order_id: str | None = None  # one order only (its figures per fill in ``order``)


class Performance(Msg):
    """``GET /api/performance``: every figure is documented in domain/performance.py and the README."""

    base_currency: str
    initial_balance: Decimal
    equity: Decimal
    total_return: Decimal
    equity_curve: list[EquityPoint]
    daily_returns: list[PeriodReturn]
    weekly_returns: list[PeriodReturn]
    monthly_returns: list[PeriodReturn]
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    current_drawdown: Decimal
    current_drawdown_pct: Decimal
    sharpe: Decimal | None
    sortino: Decimal | None
    annualization: str
    trades: TradeStatsView
    fees_paid: Decimal
    per_pair: list[PairPerformance]
    ts: int
    unconverted: list[str] = msgspec.field(default_factory=list)  # left out of the figures in base_currency
    # ?mode= / ?exchange= / since: whose books and from when (None: every venue, everything)
    mode: str | None = None
    venues: list[str] | None = None
    since: int | None = None
    first_trade_at: int | None = None  # the first round trip's opening (in the window)
    last_trade_at: int | None = None  # the last round trip's close (in the window)
    execution_quality: ExecutionQuality | None = None  # of the same venues and window (GET /api/execution/quality)


# --------------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------------
class VenueState(Msg):
    """How a venue session is doing: in the order-router's heartbeat, shown by /api/health."""

    name: str
    connected: bool | None = None  # None: not asked yet
    last_latency_ms: float | None = None  # the last call's round trip
    rate_limit_used: float | None = None  # share of the venue's request budget in use (0..1)
    update_mode: Literal["push", "stream", "polling"] = "push"
    last_error: str | None = None
    last_error_at: int | None = None
    keys_refused: bool = False  # the venue refused the keys on its last private call


class VenueCheck(Msg):
    """A venue's connection tested now (``POST /api/exchanges/test``): each step, the clock, the latency."""

    id: str
    ccxt_id: str
    ok: bool
    markets_loaded: bool | None = None
    pairs_listed: bool | None = None
    keys_accepted: bool | None = None  # None: a venue without keys (paper)
    balance_read: bool | None = None
    clock_skew_ms: float | None = None  # this host's clock against the venue's (None: the venue does not say)
    latency_ms: float | None = None  # the round trip of its quickest call
    error: str | None = None  # the first step that failed, and why (never a secret)


class VenueChecks(Msg):
    exchanges: list[VenueCheck]


# -- credentials (issue 18): the gateway and the order-router agree on keys by name, never by value --------
class CredentialCheck(Msg):
    """Gateway -> order-router (``tbx.cmd.credentials.check``): check the candidate keys the gateway stored for
    ``venue`` / ``environment`` (at ``revision``) against the venue, and adopt them (promote; a venue trading on
    that environment's keys swaps them in). Never a key: the router reads the candidate from the store."""

    venue: str
    environment: str  # testnet | live
    revision: int
    rotation: bool = False
    candidate: str = ""  # the candidate's own id (``<venue>.<environment>.candidate.<id>``): this request's keys


class CredentialCheckReply(Msg):
    ok: bool
    code: str | None = None  # CREDENTIALS_REJECTED, VENUE_UNREACHABLE, CREDENTIAL_CONFLICT, ...
    field: str | None = None
    detail: str | None = None  # never a secret
    check: VenueCheck | None = None
    swapped: bool = False  # a venue trading on these keys now uses the new ones


class CredentialFollow(Msg):
    """Order-router partition 0 -> partition k (PARTITIONS > 1, ``tbx.cmd.credentials.follow.p<k>``): swap in the
    record the store holds now for ``venue`` / ``environment`` (the one ``record_id`` names, or a newer one), and
    answer (a CredentialCheckReply: ``swapped`` when partition k signs with the store's record now)."""

    venue: str
    environment: str
    record_id: str


class CredentialDelete(Msg):
    """Gateway -> order-router (``tbx.cmd.credentials.delete``): remove the stored keys of a venue/environment."""

    venue: str
    environment: str


class CredentialDeleteReply(Msg):
    deleted: bool
    code: str | None = None  # NOT_FOUND, CREDENTIALS_IN_USE
    detail: str | None = None


class KeysInUse(Msg):
    """Where the keys a venue's client uses now come from (``tbx.query.credentials``)."""

    venue: str
    environment: str  # testnet | live (its sandbox)
    source: str  # store | env | none
    key_last4: str = ""
    record_id: str = ""  # source store: which stored record (its recordId) the client signs with


class KeysInUseList(Msg):
    venues: list[KeysInUse]


class Heartbeat(Msg):
    actor: str
    instance: str
    ts: int
    started_at: int
    status: Literal["starting", "running", "degraded", "stopping", "standby"] = "running"
    stats: dict[str, int | float | str] = msgspec.field(default_factory=dict)
    venues: list[VenueState] | None = None  # the order-router: its venue sessions
    role: Literal["active", "standby"] | None = None  # None: from a version without leases (taken as active)
    partition: int | None = None
    lease: int | None = None  # the revision of the lease the active instance holds


class LeaseRecord(Msg):
    """The value of a leadership lease in the ``<PREFIX>_LEASES`` bucket (key: the role)."""

    holder: str  # the instance id
    actor: str
    partition: int | None
    host: str
    pid: int
    since: int  # epoch ms: when this holder took the lease
    renewed_at: int  # epoch ms: its last renewal


Severity = Literal["warning", "critical", "emergency"]


class BalanceMismatch(Msg):
    """The two figures of a ``BALANCE_MISMATCH`` alert: the ledger's and the venue's."""

    venue: str
    currency: str
    ledger_total: Decimal
    ledger_available: Decimal
    venue_total: Decimal
    venue_free: Decimal


class RiskAlert(Msg):
    """An alert on ``tbx.events.risk``."""

    severity: Severity
    code: str
    message: str
    ts: int
    pair: str | None = None
    order_id: str | None = None
    state: str | None = None  # code TRADING_STATE: the trading state now ...
    previous: str | None = None  # ... and before
    balance: BalanceMismatch | None = None  # code BALANCE_MISMATCH: both figures


class AlertsQuery(Msg):
    severity: Literal["warning", "critical", "emergency"] | None = None
    limit: int = 100


class AlertsPage(Msg):
    alerts: list[RiskAlert]  # newest first


class RiskCommand(Msg):
    """``tbx.risk.command``: change the trading state."""

    action: Literal["emergency_stop", "resume", "reduce"]
    close_positions: bool = False
    reason: str | None = None


class RiskLimits(Msg):
    """``PUT /api/risk/config``: new limits (what is left out stays as it is). Validated like the settings
    of the same name, persisted in JetStream KV, applied at once."""

    max_position_size: Decimal | None = None
    max_daily_loss: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_total_exposure: Decimal | None = None
    max_drawdown: Decimal | None = None
    price_band_percent: Decimal | None = None
    max_orders_per_second: int | None = None
    allow_short: bool | None = None
    # issue 18 (the enhanced-execution spec's parameters), in the settings' units: MIN_ACCOUNT_BALANCE (in
    # BASE_CURRENCY), RISK_PER_TRADE (a fraction of equity: REST's riskPerTrade is a percent, converted by the
    # gateway), DEFAULT_STOP_LOSS_PERCENT and DEFAULT_TAKE_PROFIT_PERCENT (percent)
    min_account_balance: Decimal | None = None
    risk_per_trade: Decimal | None = None
    default_stop_loss_percent: Decimal | None = None
    default_take_profit_percent: Decimal | None = None


class RiskConfigReply(Msg):
    ok: bool
    limits: dict[str, str] = msgspec.field(default_factory=dict)
    field: str | None = None
    detail: str | None = None


class RiskStateChange(Msg):
    """The answer to a RiskCommand, and an event on ``tbx.events.risk``."""

    state: Literal["ACTIVE", "REDUCING", "HALTED"]
    previous: str
    reason: str
    ts: int
    canceled_orders: list[str] = msgspec.field(default_factory=list)
    closing_orders: list[str] = msgspec.field(default_factory=list)  # order ids of the closes made
    # closes sent whose orders were not confirmed in time (client order ids: they are made once the
    # order-router takes them), and what the stop could not do (the cancel of the working orders, say)
    closing_pending: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)


class PairExposure(Msg):
    pair: str
    position: Decimal
    working: Decimal
    mark: Decimal | None
    exposure: Decimal  # |position + working| x mark x rate, in BASE_CURRENCY (0 when it cannot be converted)
    fraction: Decimal  # of equity
    rate: Decimal | None = None  # BASE_CURRENCY per unit of the pair's quote currency; None: cannot be converted now


class RiskMetricsView(Msg):
    """``GET /api/risk/metrics``."""

    trading_state: str
    equity: Decimal
    day_start_equity: Decimal
    daily_pnl: Decimal = msgspec.field(name="dailyPnL")
    daily_loss_fraction: Decimal
    max_daily_loss: Decimal
    peak_equity: Decimal
    drawdown_fraction: Decimal
    total_exposure_fraction: Decimal
    pairs: list[PairExposure]
    pending_approvals: int
    orders_last_second: int
    limits: dict[str, str]
    ts: int
    base_currency: str = "USDT"  # equity and every exposure are in it
    # the rate into base_currency of each quote currency of the pairs traded (and held) that can be converted now
    conversion_rates: dict[str, Decimal] = msgspec.field(default_factory=dict)
    unconverted: list[str] = msgspec.field(default_factory=list)  # pairs with exposure that cannot be valued now


class DeadLetter(Msg):
    subject: str
    actor: str
    reason: str
    payload: str
    ts: int
    stream_seq: int | None = None


# --------------------------------------------------------------------------------------------------
# Paper to live (issue 18): the transition, owned by the risk-gate (domain/transition.py)
# --------------------------------------------------------------------------------------------------
TransitionMode = Literal["paper", "live"]


class PerformanceQuery(Msg):
    """``tbx.query.performance``: the books' figures; ``mode`` (paper | live) or ``exchange``: those venues' books
    only; ``since`` (epoch ms): the figures over the window from then (round trips closed since, the equity curve
    since). An empty query: every venue, everything (as before)."""

    mode: TransitionMode | None = None
    exchange: str | None = None
    since: int | None = None
    quality: bool = False  # with ``executionQuality`` (GET /api/performance asks for it; Kelly sizing does not)


class Milestone(Msg):
    """One requirement of the transition: ``value`` measured (None: not measurable yet), ``required``, ``met``."""

    name: str
    value: Decimal | None
    required: Decimal
    met: bool
    comparison: Literal[">=", "<="] = ">="


class TransitionState(Msg):
    """The transition's state, in JetStream KV ``<PREFIX>_TRANSITION`` (key ``state``). ``stage``: the capital
    stage live trading is at (an index into TRANSITION_STAGES; None in paper); ``pending``: the stage an
    initiate asks for, waiting for approval; the live equity's peak and day start since the stage began (for
    the automatic revert)."""

    mode: TransitionMode
    stage: int | None = None
    pending: int | None = None
    stage_started_at: int | None = None
    stage_capital: Decimal | None = None  # the live capital the stage's percent applies to
    live_peak: Decimal | None = None
    live_day: str | None = None
    live_day_start: Decimal | None = None
    # what the live venues held (other than the base currency) when the stage began, and each currency's rate to
    # the base currency then: the revert judges the stage's trading, not the price moves of those holdings
    stage_holdings: dict[str, Decimal] | None = None
    stage_rates: dict[str, Decimal] | None = None
    updated_at: int = 0
    # each revert adds one: an approval made under an earlier epoch never executes live (the order-router checks)
    epoch: int = 0
    # a revert's cleanup (the live venues' orders canceled, positions closed by setting) is not complete yet: the
    # risk-gate goes on with it (every second, and after a restart) until no such order is left
    cleanup_pending: bool = False
    revert_event: TransitionEvent | None = None  # the last revert's event, published (again) until it is stored


class TransitionEvent(Msg):
    """Every step on ``tbx.events.transition`` (stream TRANSITION): the audit trail."""

    action: Literal["start", "initiate", "approve", "reject", "revert", "auto_revert", "revert_cleanup"]
    from_state: str
    to_state: str
    mode: TransitionMode
    ts: int
    stage: int | None = None
    capital_percent: Decimal | None = None
    by: str | None = None
    reason: str | None = None
    milestones: list[Milestone] = msgspec.field(default_factory=list)
    canceled_orders: list[str] = msgspec.field(default_factory=list)
    closing_orders: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)
    epoch: int | None = None  # the revert's epoch (revert, auto_revert, revert_cleanup)
    cleanup_pending: bool = False  # a revert: its cleanup goes on (a revert_cleanup event follows once done)
    kept_orders: list[str] = msgspec.field(default_factory=list)  # reduce-only exits of kept positions, left working


class TransitionCommand(Msg):
    """``tbx.transition.command``: initiate, approve, reject or revert."""

    action: Literal["initiate", "approve", "reject", "revert"]
    by: str | None = None
    reason: str | None = None


class TransitionStageView(Msg):
    index: int | None
    capital_percent: Decimal
    started_at: int | None = None
    capital: Decimal | None = None  # the stage's capital: its percent of the live capital (None: not live)
    live_capital: Decimal | None = None  # the live capital the percent applies to


class TransitionWindow(Msg):
    """The record the milestones are measured on."""

    record: Literal["paper", "live"]
    venues: list[str]
    since: int | None  # epoch ms; None: the whole record
    days: int  # the window's length in days (0: the whole record)
    first_trade_at: int | None = None
    last_trade_at: int | None = None


class TransitionView(Msg):
    """``GET /api/transition`` and the answer to each command."""

    mode: TransitionMode
    state: Literal["paper", "pending_approval", "live"]
    stage: TransitionStageView
    gated: bool  # orders to live venues refused now (LIVE_NOT_APPROVED)
    milestones: list[Milestone]
    unmet: list[str]
    ready: bool  # every milestone met (an initiate would be taken)
    window: TransitionWindow
    approval: Literal["manual", "auto"]
    stages: list[Decimal]
    paper_venues: list[str]
    live_venues: list[str]
    history: list[TransitionEvent]
    pending_stage: TransitionStageView | None = None
    next_stage: TransitionStageView | None = None
    updated_at: int = 0
    note: str | None = None
    epoch: int = 0  # the number of reverts so far
    cleanup_pending: bool = False  # a revert's cleanup is not complete yet (see the last history entry)
    cleanup_orders: list[str] = msgspec.field(default_factory=list)  # the live orders it still has to cancel


class TransitionReply(Msg):
    ok: bool
    view: TransitionView | None = None
    status: int = 200
    code: str | None = None
    field: str | None = None
    detail: str | None = None
    unmet: list[str] = msgspec.field(default_factory=list)
    milestones: list[Milestone] = msgspec.field(default_factory=list)
