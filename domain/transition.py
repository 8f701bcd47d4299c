"""The paper-to-live transition, pure: milestones, the state machine, the stage's capital limit, the automatic
revert. The risk-gate is its one writer (a thin shell: actors/transition.py); nothing here does I/O.

Modes: ``paper`` (orders to live venues refused) and ``live`` (at a capital stage: a percent of the live
capital, TRANSITION_STAGES). States: ``paper`` -> initiate (refused unless every milestone is met) ->
``pending_approval`` (TRANSITION_APPROVAL=manual) or ``live`` at the first stage (auto); approve / reject;
revert -> ``paper`` at once, from anywhere. While live, an initiate asks for the next stage: the live record
since the stage began must hold the milestones over its own window, and the same approval rule applies
(the mode stays ``live`` at the current stage while the next one waits for approval).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from schemas.messages import Milestone, Performance, TransitionEvent, TransitionState

ZERO = Decimal(0)
HUNDRED = Decimal(100)
DAY_MS = 86_400_000

# the milestones, by name, in the order they are listed
WIN_RATE = "winRate"
PROFIT_FACTOR = "profitFactor"
SHARPE = "sharpeRatio"
TRADES = "completedTrades"
DRAWDOWN = "maxDrawdown"
DAYS = "tradingDays"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What the record must show (rates and drawdown as fractions)."""

    min_win_rate: Decimal
    min_profit_factor: Decimal
    min_sharpe: Decimal
    min_trades: int
    max_drawdown: Decimal
    min_days: int


@dataclass(frozen=True, slots=True)
class Figures:
    """A record's figures (from domain/performance.py's report)."""

    win_rate: Decimal | None
    profit_factor: Decimal | None  # None: no losing round trip (then ``gross_profit`` > 0 meets any bound)
    gross_profit: Decimal
    sharpe: Decimal | None  # None: fewer than two daily returns, or no dispersion
    trades: int
    max_drawdown: Decimal  # fraction of the peak
    first_trade_at: int | None
    last_trade_at: int | None

    @property
    def days(self) -> Decimal:
        """Days of trading history: from the first round trip's opening to the last one's close."""
        if self.first_trade_at is None or self.last_trade_at is None:
            return ZERO
        return Decimal(max(0, self.last_trade_at - self.first_trade_at)) / DAY_MS


def figures_of(p: Performance, history: Performance | None = None) -> Figures:
    """The figures of ``p`` (the evaluation window); the days of trading history from ``history`` when given
    (the whole record: TRANSITION_MIN_DAYS counts every day of it, not only the window's)."""
    t = p.trades
    h = history if history is not None else p
    return Figures(
        win_rate=t.win_rate,
        profit_factor=t.profit_factor,
        gross_profit=t.gross_profit,
        sharpe=p.sharpe,
        trades=t.round_trips,
        max_drawdown=p.max_drawdown_pct,
        first_trade_at=h.first_trade_at,
        last_trade_at=h.last_trade_at,
    )


def milestones(f: Figures, t: Thresholds) -> list[Milestone]:
    """Each milestone with its value, what is required and whether it is met. A value that cannot be measured
    (no round trip yet, Sharpe with fewer than two days) is None and not met; a profit factor with wins and no
    loss at all is unbounded: met, its value None."""
    pf_met = f.profit_factor >= t.min_profit_factor if f.profit_factor is not None else f.gross_profit > ZERO
    days = f.days
    return [
        Milestone(name=WIN_RATE, value=f.win_rate, required=t.min_win_rate,
                  met=f.win_rate is not None and f.win_rate >= t.min_win_rate),
        Milestone(name=PROFIT_FACTOR, value=f.profit_factor, required=t.min_profit_factor,
                  met=f.trades > 0 and pf_met),
        Milestone(name=SHARPE, value=f.sharpe, required=t.min_sharpe,  # 0: not required
                  met=t.min_sharpe <= 0 or (f.sharpe is not None and f.sharpe >= t.min_sharpe)),
        Milestone(name=TRADES, value=Decimal(f.trades), required=Decimal(t.min_trades), met=f.trades >= t.min_trades),
        Milestone(name=DRAWDOWN, value=f.max_drawdown, required=t.max_drawdown, comparison="<=",
                  met=f.max_drawdown <= t.max_drawdown),
        Milestone(name=DAYS, value=days.quantize(Decimal("0.01")), required=Decimal(t.min_days),
                  met=days >= t.min_days),
    ]  # fmt: skip


def unmet(ms: Sequence[Milestone]) -> list[str]:
    return [m.name for m in ms if not m.met]


# -- the state machine -----------------------------------------------------------------------------------
PAPER, PENDING, LIVE = "paper", "pending_approval", "live"


def state_name(st: TransitionState) -> str:
    return PENDING if st.pending is not None else st.mode


def initial(*, has_paper: bool, has_live: bool, required: str, stages: Sequence[Decimal], now: int) -> TransitionState:
    """Where a deployment without a stored state starts (TRANSITION_REQUIRED): ``auto`` - live venues only: live
    at the last stage (100 %), as before the transition existed; a paper venue beside them: paper. ``true`` -
    paper. ``false`` - live venues: live at 100 % even beside a paper venue (paper run beside live on purpose).
    No live venue: paper."""
    live = has_live and (required == "false" or (required == "auto" and not has_paper))
    if live:
        return TransitionState(mode="live", stage=len(stages) - 1, stage_started_at=now, updated_at=now)
    return TransitionState(mode="paper", updated_at=now)


def gated(st: TransitionState, has_live: bool) -> bool:
    """Are orders to live venues refused now?"""
    return has_live and st.mode == "paper"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: str
    detail: str
    field: str | None = None
    unmet: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    state: TransitionState
    event: TransitionEvent


@dataclass(frozen=True, slots=True)
class Context:
    """What a command is decided with: the settings, the deployment, the milestones measured now (for an
    initiate) and the live capital a stage would start with."""

    approval: str  # manual | auto
    stages: tuple[Decimal, ...]
    has_live: bool
    now: int
    milestones: tuple[Milestone, ...] = ()
    live_capital: Decimal | None = None
    live_equity: Decimal | None = None  # the live venues' equity now: the stage's starting peak and day start
    live_holdings: dict[str, Decimal] | None = None  # what the live venues hold now (not the base currency)
    live_rates: dict[str, Decimal] | None = None  # and each holding's rate to the base currency now


def _enter(st: TransitionState, stage: int, ctx: Context) -> TransitionState:
    """Live at ``stage``, its capital and the live equity's peak and day taken now (so a fall right after the
    step counts from here, whenever it is first watched)."""
    day = day_of(ctx.now) if ctx.live_equity is not None else None
    return replace_state(
        st, mode="live", stage=stage, pending=None, stage_started_at=ctx.now, stage_capital=ctx.live_capital,
        live_peak=ctx.live_equity, live_day=day, live_day_start=ctx.live_equity, updated_at=ctx.now,
        stage_holdings=ctx.live_holdings if ctx.live_equity is not None else None,
        stage_rates=ctx.live_rates if ctx.live_equity is not None else None,
    )  # fmt: skip


def replace_state(st: TransitionState, **changes: object) -> TransitionState:
    return msgspec.structs.replace(st, **changes)


def step(
    st: TransitionState, action: str, ctx: Context, by: str | None = None, reason: str | None = None
) -> Step | Refusal:
    """Decide one command. No sequence of commands reaches live (or a higher stage) without an initiate whose
    milestones were all met, followed - with manual approval - by an approve, with no revert or reject between."""
    before = state_name(st)

    def event(new: TransitionState, name: str, **extra: object) -> Step:
        stage = new.pending if new.pending is not None else new.stage
        pct = ctx.stages[stage] if stage is not None and stage < len(ctx.stages) else None
        ev = TransitionEvent(
            action=name, from_state=before, to_state=state_name(new), mode=new.mode, ts=ctx.now,  # type: ignore[arg-type]
            stage=stage, capital_percent=pct, by=by, reason=reason, **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        return Step(new, ev)

    if action == "initiate":
        if not ctx.has_live:
            why = "no live venue to go to: EXCHANGES lists paper venues only (add one, e.g. EXCHANGES=paper,binance)"
            return Refusal(409, "NO_LIVE_VENUE", why, field="EXCHANGES")
        if st.pending is not None:
            return Refusal(409, "ALREADY_PENDING", f"stage {st.pending + 1} already waits for approval "
                           "(POST /api/transition/approve or /reject)")  # fmt: skip
        target = 0 if st.mode == "paper" else (st.stage or 0) + 1
        if target >= len(ctx.stages):
            return Refusal(409, "AT_FULL_CAPITAL", f"live at the last stage ({ctx.stages[-1]} %): nothing to go up to")
        missing = unmet(ctx.milestones)
        if not ctx.milestones or missing:
            record = "paper record" if st.mode == "paper" else "live record of this stage"
            return Refusal(409, "MILESTONES_NOT_MET",
                           f"the {record} does not meet: {', '.join(missing) or 'no milestones measured'}",
                           unmet=tuple(missing))  # fmt: skip
        ms = list(ctx.milestones)
        if ctx.approval == "auto":
            return event(_enter(st, target, ctx), "initiate", milestones=ms)
        return event(replace_state(st, pending=target, updated_at=ctx.now), "initiate", milestones=ms)
    if action in ("approve", "reject"):
        if st.pending is None:
            return Refusal(409, "NOTHING_PENDING", f"nothing waits for approval (state {before})")
        if action == "reject":
            return event(replace_state(st, pending=None, updated_at=ctx.now), "reject")
        return event(_enter(st, st.pending, ctx), "approve")
    if action in ("revert", "auto_revert"):
        # a new epoch: an approval made before it never executes live; the live venues' orders to clean up
        new = replace_state(
            st, mode="paper", stage=None, pending=None, stage_started_at=None, stage_capital=None, live_peak=None,
            live_day=None, live_day_start=None, updated_at=ctx.now, epoch=st.epoch + 1,
            cleanup_pending=ctx.has_live or st.cleanup_pending,
        )  # fmt: skip
        return event(new, action, epoch=new.epoch, cleanup_pending=new.cleanup_pending)
    return Refusal(422, "UNKNOWN_ACTION", f"unknown action {action!r}", field="action")


# -- the stage's capital --------------------------------------------------------------------------------
def stage_amount(st: TransitionState, stages: Sequence[Decimal]) -> Decimal | None:
    """The stage's capital: its percent of the live capital (None: not live, or no capital known)."""
    if st.mode != "live" or st.stage is None or st.stage >= len(stages) or st.stage_capital is None:
        return None
    return st.stage_capital * stages[st.stage] / HUNDRED


def stage_limit(st: TransitionState, stages: Sequence[Decimal]) -> Decimal | None:
    """The most the live venues' open exposure may reach now (None: no stage limit: paper, the last stage
    (100 %: the ordinary limits), or no capital known)."""
    if st.stage is not None and st.stage >= len(stages) - 1:
        return None
    return stage_amount(st, stages)


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """A live open order as the stage's capital counts it: every kind (limit, stop, a bracket's legs), with
    what is left of it. ``price``: its price in the base currency (None: a market order, or not convertible)."""

    pair: str
    side: str  # buy | sell
    quantity: Decimal  # remaining, > 0
    price: Decimal | None = None
    reduce_only: bool = False  # it can only shrink the position (a bracket's legs, an exit): never adds exposure


def worst_case(positions: dict[str, Decimal], orders: Sequence[OpenOrder]) -> dict[str, Decimal]:
    """Per pair, the largest position the open orders can leave: every buy filled and no sell, or every sell
    filled and no buy - max(|position + Σ buys|, |position - Σ sells|). A resting sell never offsets a buy: a
    take-profit far away does not make room for another purchase. Reduce-only orders are left out: they can only
    bring the position towards zero (a bracket's stop-loss and take-profit legs, each for the entry's quantity,
    are not a short of twice it - counted as one, they would raise the exposure "before" and let a later buy
    pass as not raising it)."""
    buys: dict[str, Decimal] = {}
    sells: dict[str, Decimal] = {}
    for o in orders:
        if o.reduce_only:
            continue
        side = buys if o.side == "buy" else sells
        side[o.pair] = side.get(o.pair, ZERO) + abs(o.quantity)
    out: dict[str, Decimal] = {}
    for pair in {*positions, *buys, *sells}:
        pos = positions.get(pair, ZERO)
        out[pair] = max(abs(pos + buys.get(pair, ZERO)), abs(pos - sells.get(pair, ZERO)))
    return out


def valuation(
    positions: dict[str, Decimal], orders: Sequence[OpenOrder], prices: dict[str, Decimal]
) -> dict[str, Decimal]:
    """The price each pair is valued at, in the base currency: its market price (``prices``); a pair without one
    that is not held and whose every open order has a price: the highest of those (what its worst case would
    cost). A pair with a market price and a buy order priced above it (a buy stop): that higher price. Any other
    pair without a market price is missing: it cannot be valued."""
    out = dict(prices)
    legs: dict[str, list[Decimal | None]] = {}
    for o in orders:
        if not o.reduce_only:
            legs.setdefault(o.pair, []).append(o.price)
    for pair, px in legs.items():
        if pair not in out and not positions.get(pair) and all(p is not None and p > ZERO for p in px):
            out[pair] = max(p for p in px if p is not None)
    for o in orders:  # a buy stop above the market costs its stop price when it goes: the higher of the two
        if o.side == "buy" and not o.reduce_only and o.price is not None and o.pair in out and o.price > out[o.pair]:
            out[o.pair] = o.price
    return out


def unvalued(positions: dict[str, Decimal], orders: Sequence[OpenOrder], prices: dict[str, Decimal]) -> list[str]:
    """The pairs held or ordered on the live venues that cannot be valued in the base currency (no market price,
    or a quote currency that does not convert): their exposure cannot be measured."""
    valued = valuation(positions, orders, prices)
    return sorted(p for p, q in worst_case(positions, orders).items() if q and p not in valued)


def exposure(positions: dict[str, Decimal], orders: Sequence[OpenOrder], prices: dict[str, Decimal]) -> Decimal:
    """Open exposure in the base currency: the worst case of each pair x its price (``valuation``; check
    ``unvalued`` first: a pair that cannot be valued is not counted here)."""
    valued = valuation(positions, orders, prices)
    return sum((q * valued[p] for p, q in worst_case(positions, orders).items() if p in valued), ZERO)


def check_stage_capital(
    limit: Decimal | None,
    positions: dict[str, Decimal],
    orders: Sequence[OpenOrder],
    prices: dict[str, Decimal],
    new: OpenOrder,
    stage_pct: Decimal | None = None,
) -> Refusal | None:
    """Why the order ``new`` on a live venue is refused by the stage's capital (None: it is not).
    ``positions``: the live venues' positions per pair; ``orders``: every live open order (working orders,
    held stops, approvals on their way); ``prices`` per pair in the base currency. The exposure is the worst
    case of each pair (``worst_case``): an order passes when the exposure after it is within the limit, or
    when it does not raise the exposure at all (a sale against a long position: the worst case stays what the
    buys alone can reach). A pair that cannot be valued: refused RETRY_LATER (never counted as nothing)."""
    if limit is None:
        return None
    after_orders = [*orders, new]
    missing = unvalued(positions, after_orders, prices)
    if missing:
        return Refusal(
            503, "RETRY_LATER",
            f"the live exposure cannot be measured: no price in the base currency for {', '.join(missing)} "
            "(no market price yet, or its quote currency does not convert); retry when it is priced",
        )  # fmt: skip
    before = exposure(positions, orders, prices)
    after = exposure(positions, after_orders, prices)
    if after <= before or after <= limit:
        return None
    pct = f" ({stage_pct} % of the live capital)" if stage_pct is not None else ""
    why = f"the live exposure could reach {after:.2f} (open orders filled), above the stage's capital {limit:.2f}{pct}"
    return Refusal(422, "STAGE_CAPITAL_LIMIT", why, field="quantity")


# -- the automatic revert -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RevertLimits:
    drawdown: Decimal  # fraction of the stage's capital: the most the live equity may fall from its peak
    daily_loss: Decimal  # fraction of the stage's capital: the most the live equity may lose in a UTC day


def day_of(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC).strftime("%Y-%m-%d")


def follow_live(
    st: TransitionState, live_equity: Decimal, now: int, limits: RevertLimits, capital: Decimal | None = None
) -> tuple[TransitionState, str | None]:
    """The live equity's peak and day start followed (the state to keep), and why to revert now (None: no
    reason). Only while live. The thresholds are fractions of ``capital``, the stage's capital (its percent
    of the live capital, ``stage_amount``): at 10 % of 100,000, a TRANSITION_REVERT_DRAWDOWN of 0.10 is a fall
    of 1,000 from the peak. Without a capital known: fractions of the peak and of the day's start."""
    if st.mode != "live":
        return st, None
    peak = live_equity if st.live_peak is None else max(st.live_peak, live_equity)
    day = day_of(now)
    start = live_equity if st.live_day != day or st.live_day_start is None else st.live_day_start
    new = st if (peak, day, start) == (st.live_peak, st.live_day, st.live_day_start) else replace_state(
        st, live_peak=peak, live_day=day, live_day_start=start
    )  # fmt: skip
    of = "the stage's capital" if capital is not None and capital > ZERO else None
    dd_base = capital if of else peak
    day_base = capital if of else start
    if dd_base > ZERO:
        fall = peak - live_equity
        if fall / dd_base >= limits.drawdown:
            return new, (
                f"live drawdown {fall:.2f} from the peak {peak:.2f} is {fall / dd_base:.4f} of "
                f"{of or 'the peak'}{f' {dd_base:.2f}' if of else ''}: reached TRANSITION_REVERT_DRAWDOWN "
                f"{limits.drawdown}"
            )  # fmt: skip
    if day_base > ZERO:
        loss = start - live_equity
        if loss / day_base >= limits.daily_loss:
            return new, (
                f"live loss of the day {loss:.2f} is {loss / day_base:.4f} of "
                f"{of or 'the day start'}{f' {day_base:.2f}' if of else ''}: reached TRANSITION_REVERT_DAILY_LOSS "
                f"{limits.daily_loss}"
            )  # fmt: skip
    return new, None


def held_from_before(balance: Decimal, traded: Decimal) -> Decimal:
    """Of a currency's balance on the live venues, what the positions made by fills here do not explain (coins
    held before any stage): balance - the positions' base quantity, never below 0."""
    return max(balance - traded, ZERO)


def holdings_move(
    holdings: dict[str, Decimal], rates_then: dict[str, Decimal], rates_now: dict[str, Decimal]
) -> Decimal | None:
    """How much what the live venues held when the stage began gained (or lost, < 0) in value since, from the price
    moves alone: sum of quantity x (rate now - rate then). None while a rate is missing."""
    total = ZERO
    for cur, qty in holdings.items():
        then, now = rates_then.get(cur), rates_now.get(cur)
        if then is None or now is None:
            return None
        total += qty * (now - then)
    return total


def stage_equity(live_equity: Decimal, st: TransitionState, rates_now: dict[str, Decimal]) -> Decimal | None:
    """The live equity the automatic revert follows: without the price moves of the holdings the stage began with,
    so that the stage's thresholds (fractions of the stage's capital) judge its trading, not a 1 % move of coins held
    long before (at 10 % of an account held in BTC, that move alone would be a tenth of the stage's capital). None
    while a holding cannot be valued. A state without recorded holdings follows the live equity as it is."""
    if not st.stage_holdings:
        return live_equity
    move = holdings_move(st.stage_holdings, st.stage_rates or {}, rates_now)
    return None if move is None else live_equity - move


def venue_failing(down_since: dict[str, int], now: int, grace_ms: int) -> str | None:
    """A live venue that has failed its checks for longer than the grace: why to revert."""
    for venue, since in sorted(down_since.items()):
        if now - since >= grace_ms:
            down = (now - since) / 1000
            return f"live venue {venue} failing its checks for {down:.0f} s (grace {grace_ms / 1000:g} s)"
    return None


@dataclass
class RouterWatch:
    """The order-router's heartbeats as the automatic revert follows them, per partition (PARTITIONS > 1: one
    active order-router per partition, each with its own venue sessions; ``None``: the one, unpartitioned).

    A live venue fails when ANY partition has reported it failing (not connected, keys refused) for longer than the
    grace - another partition's healthy beats in between do not clear it; the order-router is silent when ANY
    partition has sent no heartbeat for longer than the grace. ``now``: one clock for all (monotonic ms)."""

    partitions: tuple[int | None, ...]
    seen: dict[int | None, int]  # partition -> its last heartbeat (the grace runs from the start)
    down_since: dict[tuple[int | None, str], int]  # (partition, venue) -> its first beat saying it fails

    @classmethod
    def start(cls, partitions: int, now: int) -> RouterWatch:
        parts: tuple[int | None, ...] = (None,) if partitions <= 1 else tuple(range(partitions))
        return cls(parts, dict.fromkeys(parts, now), {})

    def beat(self, partition: int | None, failing: dict[str, bool], now: int) -> None:
        """A heartbeat of ``partition`` (what it says of each live venue: failing or not). A partition this watch
        does not know (another PARTITIONS) is ignored."""
        if partition not in self.seen:
            return
        self.seen[partition] = now
        for venue, bad in failing.items():
            if bad:
                self.down_since.setdefault((partition, venue), now)
            else:
                self.down_since.pop((partition, venue), None)

    def failing(self, now: int, grace_ms: int) -> str | None:
        """Why to revert: a partition silent past the grace, or a live venue failing in one past it; else None."""
        for k in self.partitions:
            silent = now - self.seen[k]
            if silent >= grace_ms:
                who = "the order-router" if k is None else f"the order-router (partition {k})"
                return f"{who} has sent no heartbeat for {silent / 1000:.0f} s (grace {grace_ms / 1000:g} s)"
        labels = {(v if k is None else f"{v} (partition {k})"): since for (k, v), since in self.down_since.items()}
        return venue_failing(labels, now, grace_ms)
