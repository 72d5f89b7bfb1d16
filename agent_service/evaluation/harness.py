"""The evaluation harness: any campaign policy on any :class:`~agent_service.evaluation.market.Market`,
with the same budget ledger, journeys, attribution and bookkeeping for every policy.

Per budget period (a day of T slots) and per slot, the harness

1. asks the market for the slot's opportunities and the policy for its plays;
2. enforces the hard cap: in time order every bid reserves its worst-case cost and is dropped
   when that no longer fits in what is left of the day's budget (the service's atomic
   reservations do the same), so spend can never pass the budget;
3. resolves the plays, settles spend, appends won impressions to the people's journeys, and
   tells the policy what happened;
4. joins the slot's conversions to the converter's last clicked touch in the 14-day window
   (last-click attribution, the last touch when none was clicked) and credits that decision;
   decisions whose window closed are finalised.

It also keeps what evaluation needs, from the market's ground truth: the expected conversion
value of every impression won (the low-variance measure of conversion value), the creative
regret against the best creative per true segment, and, when asked, every opportunity's
hindsight inputs (true value of its best creative on each channel offered, and the price to
beat) for the hindsight optimum.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agent_service.agent.model.state import JourneyArrays
from agent_service.evaluation.market import Market, Opportunities, Plays, Results
from agent_service.units import DAY_MS, WINDOW_DAYS

__all__ = ["CampaignPolicy", "DayStats", "HindsightRecord", "JourneyStore", "RunResult", "SlotContext", "run_campaign"]

@dataclass
class SlotContext:
    """The campaign's ledger and clock as a policy sees them at a slot."""

    day: int
    slot: int
    slots: int
    t0: int
    t1: int
    budget_usd: float
    spent_usd: float
    last_slot_spend_usd: float = 0.0
    last_slot_bids: int = 0
    last_slot_wins: int = 0
    last_slot_price_cpm: float = 0.0
    opportunities: int = 0

    @property
    def budget_left_usd(self) -> float:
        return max(0.0, self.budget_usd - self.spent_usd)

    @property
    def elapsed(self) -> float:
        return self.slot / self.slots


class CampaignPolicy(Protocol):
    """A bidder + creative/channel policy the harness can run."""

    name: str

    def start_period(self, ctx: SlotContext) -> None: ...

    def play(self, opps: Opportunities, journeys: JourneyArrays, ctx: SlotContext) -> Plays: ...

    def observe(self, keys: np.ndarray, opps: Opportunities, plays: Plays, results: Results,
                ctx: SlotContext) -> None: ...

    def end_slot(self, ctx: SlotContext) -> None: ...

    def credit(self, keys: np.ndarray, credit_usd: np.ndarray, time_ms: np.ndarray) -> None: ...

    def finalise(self, keys: np.ndarray) -> None: ...

    def end_period(self, ctx: SlotContext) -> None: ...


class JourneyStore:
    """The last L touches of every person (ring rows, oldest first) with their decision keys."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._rows: dict[str, np.ndarray] = {}
        self._index: dict[int, int] = {}

    def _ensure(self, persons: np.ndarray) -> np.ndarray:
        out = np.empty(len(persons), np.int64)
        for i, p in enumerate(persons.tolist()):
            r = self._index.get(p)
            if r is None:
                r = self._index[p] = len(self._index)
            out[i] = r
        n = len(self._index)
        cap = len(self._rows["time"]) if self._rows else 0
        if n > cap:
            new = max(n, 2 * cap, 1024)
            L = self.length
            grown = {"time": np.zeros((new, L), np.int64), "channel": np.full((new, L), -1, np.int64),
                     "creative": np.full((new, L), -1, np.int64), "clicked": np.zeros((new, L), bool),
                     "cost": np.zeros((new, L), np.float32), "device": np.full((new, L), -1, np.int64),
                     "key": np.full((new, L), -1, np.int64)}
            for k, v in self._rows.items():
                grown[k][:cap] = v
            self._rows = grown
        return out

    def get(self, persons: np.ndarray, devices: np.ndarray) -> JourneyArrays:
        r = self._ensure(persons)
        j = self._rows
        return JourneyArrays(j["time"][r], j["channel"][r], j["creative"][r], j["clicked"][r], j["cost"][r],
                             (j["device"][r] >= 0) & (j["device"][r] != devices[:, None]))

    def append(self, persons: np.ndarray, time_ms: np.ndarray, channel: np.ndarray, creative: np.ndarray,
               clicked: np.ndarray, cost: np.ndarray, device: np.ndarray, keys: np.ndarray) -> None:
        """Append touches in time order (a person touched twice in one call is handled in rounds)."""
        order = np.argsort(time_ms, kind="stable")
        left = order
        while len(left):
            _, first = np.unique(persons[left], return_index=True)
            now = left[np.sort(first)]
            r = self._ensure(persons[now])
            for name, val in (("time", time_ms), ("channel", channel), ("creative", creative), ("clicked", clicked),
                              ("cost", cost), ("device", device), ("key", keys)):
                arr = self._rows[name]
                arr[r, :-1] = arr[r, 1:]
                arr[r, -1] = val[now]
            left = np.setdiff1d(left, now, assume_unique=True)
            left = left[np.argsort(time_ms[left], kind="stable")]

    def last_click(self, persons: np.ndarray, time_ms: np.ndarray, window_ms: int) -> np.ndarray:
        """Decision key credited for each conversion: the person's last *clicked* touch in
        ``(t - window, t]``, else their last touch there (-1 when none) — last-click attribution."""
        out = np.full(len(persons), -1, np.int64)
        for i, (p, t) in enumerate(zip(persons.tolist(), time_ms.tolist(), strict=True)):
            r = self._index.get(p)
            if r is None:
                continue
            times, keys, clicked = self._rows["time"][r], self._rows["key"][r], self._rows["clicked"][r]
            ok = (keys >= 0) & (times <= t) & (times > t - window_ms)
            if (ok & clicked).any():
                out[i] = keys[np.flatnonzero(ok & clicked)[-1]]
            elif ok.any():
                out[i] = keys[np.flatnonzero(ok)[-1]]
        return out


@dataclass
class DayStats:
    """One budget period of one policy."""

    day: int
    spend_usd: float = 0.0
    budget_usd: float = 0.0
    opportunities: int = 0
    bids: int = 0
    impressions: int = 0
    clicks: int = 0
    expected_value_usd: float = 0.0
    """Σ true expected conversion value of the impressions won (the low-variance measure)."""
    conversions: int = 0
    conversion_value_usd: float = 0.0
    """Realised conversion value of conversions credited to this day's decisions."""
    chosen_value_usd: float = 0.0
    """Σ true value of the creative chosen (won impressions, fatigue as of the impression)."""
    best_value_usd: float = 0.0
    """Σ true value of the best creative *for each impression* — given the person's fatigue with
    every creative at that moment: creative regret is measured against it."""
    oracle_value_usd: float = 0.0
    """Σ true value of the best creative for a fresh person of the true segment (the per-segment
    oracle: a reference that ignores fatigue, so a policy that rotates creatives can beat it)."""

    @property
    def creative_regret(self) -> float:
        """1 − chosen / best for each impression (NaN without impressions)."""
        return 1.0 - self.chosen_value_usd / self.best_value_usd if self.best_value_usd > 0 else float("nan")
    capped_bids: int = 0


@dataclass
class HindsightRecord:
    """Per opportunity of a day: true value of its best creative and the price to beat, per channel offered."""

    value: list[np.ndarray] = field(default_factory=list)
    """float [B, 3] per slot (0 where the channel is not offered)."""
    price: list[np.ndarray] = field(default_factory=list)
    """float [B, 3] price CPM to beat (0 for organic)."""
    offered: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.value), np.concatenate(self.price), np.concatenate(self.offered)


@dataclass
class RunResult:
    policy: str
    days: list[DayStats]
    hindsight: list[HindsightRecord]
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_campaign(market: Market, policy: CampaignPolicy, days: int, record_hindsight: bool = False,
                 on_slot: Callable[[SlotContext], None] | None = None, progress: Callable[[int], None] | None = None,
                 length: int = 16, stop: Callable[[], bool] | None = None,
                 window_days: int = int(WINDOW_DAYS)) -> RunResult:
    """Run ``policy`` on ``market`` for ``days`` budget periods (see the module docstring).

    :param record_hindsight: keep per-opportunity truth for the generic hindsight bound.
    :param on_slot: called after every slot. :param progress: called after every day.
    :param length: touches kept per person. :param stop: checked after every day; True ends the run.
    :param window_days: the attribution window: a conversion joins a click at most this old, and a
        decision's window closes (``finalise``) this many days after it (the commands pass
        ``join.window_days``).
    """
    started = time.perf_counter()
    journeys = JourneyStore(length)
    T = market.slots_per_day
    slot_ms = DAY_MS // T
    next_key = 0
    decided_day: dict[int, int] = {}  # first key of each day
    result = RunResult(policy.name, [], [])
    key_day = np.zeros(0, np.int64)
    finalised_upto = 0
    for day in range(days):
        stats = DayStats(day, budget_usd=market.budget_usd)
        rec = HindsightRecord()
        day0 = market.start_ms + day * DAY_MS
        ctx = SlotContext(day, 0, T, day0, day0 + slot_ms, market.budget_usd, 0.0)
        policy.start_period(ctx)
        decided_day[day] = next_key
        for slot in range(T):
            t0 = day0 + slot * slot_ms
            ctx.slot, ctx.t0, ctx.t1 = slot, t0, t0 + slot_ms
            opps = market.opportunities(t0, t0 + slot_ms)
            B = len(opps.event_time)
            ctx.opportunities = B
            stats.opportunities += B
            if B:
                plays = policy.play(opps, journeys.get(opps.person, opps.device), ctx)
                # hard cap, as the service's atomic reservations: in time order, each bid reserves
                # its worst-case cost (the bid) and is dropped when that no longer fits
                paid = plays.take & (plays.bid_cpm_usd > 0)
                reserve = np.cumsum(np.where(paid, plays.bid_cpm_usd / 1000, 0.0)[np.argsort(opps.event_time)])
                over = np.zeros(B, bool)
                over[np.argsort(opps.event_time)] = reserve > ctx.budget_left_usd + 1e-12
                over &= paid
                stats.capped_bids += int(over.sum())
                plays = plays._replace(take=plays.take & ~over, bid_cpm_usd=np.where(over, 0.0, plays.bid_cpm_usd))
                truth = market.truth(opps, plays.channel)  # as of before this slot's exposures
                if record_hindsight:
                    _record(market, opps, rec)
                res = market.resolve(opps, plays)
                keys = np.arange(next_key, next_key + B, dtype=np.int64)
                next_key += B
                key_day = np.concatenate([key_day, np.full(B, day, np.int64)])
                cost = np.where(res.won, res.price_cpm_usd / 1000, 0.0)
                spent = float(cost.sum())
                if spent > ctx.budget_left_usd + 1e-9:  # second price never exceeds the bid: cannot happen
                    raise AssertionError("hard cap breached")
                won = res.won
                journeys.append(opps.person[won], opps.event_time[won], plays.channel[won], plays.creative[won],
                                res.clicked[won], res.price_cpm_usd[won].astype(np.float32), opps.device[won], keys[won])
                policy.observe(keys, opps, plays, res, ctx)
                ctx.spent_usd += spent
                ctx.last_slot_spend_usd = spent
                ctx.last_slot_bids = int((plays.take & (plays.bid_cpm_usd > 0)).sum())
                ctx.last_slot_wins = int((won & (plays.bid_cpm_usd > 0)).sum())
                paid = won & (res.price_cpm_usd > 0)
                ctx.last_slot_price_cpm = float(res.price_cpm_usd[paid].mean()) if paid.any() else 0.0
                stats.spend_usd += spent
                stats.bids += ctx.last_slot_bids
                stats.impressions += int(won.sum())
                stats.clicks += int(res.clicked.sum())
                rows = np.flatnonzero(won)
                chosen = truth.value_by_creative[rows, plays.creative[rows]]
                stats.expected_value_usd += float(res.expected_value_usd[won].sum())
                stats.chosen_value_usd += float(chosen.sum())
                stats.best_value_usd += float(truth.value_by_creative[rows].max(axis=1, initial=0.0).sum())
                stats.oracle_value_usd += float(_oracle_value(truth.value_by_creative[rows], truth.segment[rows],
                                                              market).sum())
            else:
                ctx.last_slot_spend_usd, ctx.last_slot_bids, ctx.last_slot_wins = 0.0, 0, 0
            conv = market.conversions(t0, t0 + slot_ms)
            if len(conv.person):
                k = journeys.last_click(conv.person, conv.time_ms, window_days * DAY_MS)
                hit = k >= 0
                if hit.any():
                    policy.credit(k[hit], conv.value_usd[hit], conv.time_ms[hit])
                    for d, v in zip(key_day[k[hit]].tolist(), conv.value_usd[hit].tolist(), strict=True):
                        target = result.days[d] if d < len(result.days) else stats
                        target.conversions += 1
                        target.conversion_value_usd += v
            policy.end_slot(ctx)
            if on_slot is not None:
                on_slot(ctx)
        # windows that closed by the end of this day
        close_day = day - window_days
        if close_day >= 0 and close_day in decided_day:
            hi = decided_day.get(close_day + 1, next_key)
            if hi > finalised_upto:
                policy.finalise(np.arange(max(finalised_upto, decided_day[close_day]), hi, dtype=np.int64))
                finalised_upto = hi
        policy.end_period(ctx)
        result.days.append(stats)
        result.hindsight.append(rec)
        if progress is not None:
            progress(day)
        if stop is not None and stop():
            break
    result.wall_seconds = time.perf_counter() - started
    return result


def _oracle_value(values: np.ndarray, segment: np.ndarray, market: Market) -> np.ndarray:
    """Value of the best creative for each impression's true segment (the per-segment oracle).

    The oracle picks, per true segment, the creative with the highest value for a fresh person
    (``market.best_creative``) when the market knows it, else the best for this impression."""
    best = getattr(market, "best_creative", None)
    if best is None or not len(values):
        return values.max(axis=1) if len(values) else np.zeros(0)
    return values[np.arange(len(values)), best[segment]]


def _record(market: Market, opps: Opportunities, rec: HindsightRecord) -> None:
    B = len(opps.event_time)
    value = np.zeros((B, 3))
    price = np.zeros((B, 3))
    for ch in range(3):
        tr = market.truth(opps, np.full(B, ch, np.int64))
        value[:, ch] = tr.value_by_creative.max(axis=1)  # the best creative for this impression: an upper bound
        price[:, ch] = tr.price_cpm_usd
    value[~opps.channel_mask] = 0.0
    rec.value.append(value)
    rec.price.append(price)
    rec.offered.append(opps.channel_mask.copy())
