"""The reference policies every evaluation runs beside the agent, on the same seeds.

Bidders:

* :class:`FixedBid` — one CPM for every impression;
* :class:`Truthful` — bid the expected value: ``1000 · v̂``;
* :class:`Linear` — ``b0 · pCTR / avgCTR`` (Perlich et al. 2012);
* :class:`DualPacing` — ``1000 · v̂ / (1 + μ)``, μ ≥ 0 moved online by the gap between each
  slot's spend and its plan (Balseiro & Gur 2019, :class:`agent_service.pacing.DualPacer`).

Creative rules: ``random`` (uniform over the creatives) or ``oracle`` (the best creative for
the person's *true* segment, read from the market's ground truth — a reference, not a
deployable policy). Channel rule: organic when offered (a free placement), else the paid
channel with the highest v̂.

Value sources: ``model`` (below, deployable) or ``truth`` — the market's true expected value of
every creative on each paid channel for this person now, the best creative played: a
*full-information* reference that knows everything the hindsight optimum knows except the
prices to come. Dual pacing on true values is the ceiling of online pacing; its gap to the
optimum is what not knowing prices in advance costs, the rest of a policy's gap is what not
knowing values costs.

Every baseline estimates v̂ with :class:`CellValueModel`, learned online from its own
impressions, clicks and credits: CTR per (channel, most likely segment) cell as a
Beta-posterior mean, conversions per click from the censoring-aware delay model, and the
posterior-mean conversion value — calibrated means, as the agent's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent_service.agent.model.conversion import ConversionEstimate
from agent_service.agent.model.state import JourneyArrays
from agent_service.delay.config import DelayModelConfig
from agent_service.delay.learner import DelayedFeedbackLearner
from agent_service.delay.model import DelayedConversionModel
from agent_service.evaluation.harness import SlotContext
from agent_service.evaluation.market import Market, Opportunities, Plays, Results
from agent_service.pacing import DualPacer, DualPacerConfig, SpendPlan
from agent_service.pricing import price

__all__ = ["BaselinePolicy", "BidRule", "CellValueModel", "DualPacing", "FixedBid", "Linear", "Truthful",
           "clip_bid"]


def clip_bid(raw_cpm: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """A reference policy's raw price under the bid rules (:func:`agent_service.pricing.price`; the
    budget is capped by the harness, as the service's reservations cap it)."""
    return price(raw_cpm, floor, np.inf, 1).bid_cpm_usd


class CellValueModel:
    """v̂ = CTR(channel, segment) × P(conversion | click) × v̄ (see the module docstring).

    :param segments: K. :param prior_ctr: prior CTR (50 pseudo-impressions).
    :param prior_cvr: prior conversions per click. :param prior_value: prior conversion value, USD.
    """

    def __init__(self, segments: int, prior_ctr: float = 0.02, prior_cvr: float = 0.05,
                 prior_value: float = 30.0, seed: int = 0) -> None:
        self.K = segments
        self.imps = np.zeros((3, segments))
        self.clicks = np.zeros((3, segments))
        self.prior_ctr, self.prior_n = prior_ctr, 50.0
        self.conv = DelayedConversionModel(3 + segments, DelayModelConfig(prior_rate=prior_cvr, seed=seed))
        self.learner = DelayedFeedbackLearner(self.conv)
        self.conv_est = ConversionEstimate(self.conv, prior_cvr, self.conv.config.prior_mean_delay_days)
        self.value_sum, self.value_n, self.prior_value = 0.0, 0.0, prior_value

    def _x(self, channel: np.ndarray, seg: np.ndarray) -> np.ndarray:
        return np.concatenate([np.eye(3)[channel], np.eye(self.K)[seg]], axis=1)

    def ctr(self, channel: np.ndarray, seg: np.ndarray) -> np.ndarray:
        return (self.clicks[channel, seg] + self.prior_n * self.prior_ctr) / (self.imps[channel, seg] + self.prior_n)

    def avg_ctr(self) -> float:
        return float((self.clicks.sum() + self.prior_n * self.prior_ctr) / (self.imps.sum() + self.prior_n))

    def value(self, channel: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Expected conversion value of one impression, USD."""
        v = (self.value_sum + 5 * self.prior_value) / (self.value_n + 5)
        return self.ctr(channel, seg) * self.conv_est.p_eventual(self._x(channel, seg)) * v

    def observe(self, keys: np.ndarray, channel: np.ndarray, seg: np.ndarray, won: np.ndarray, clicked: np.ndarray,
                time_ms: np.ndarray) -> None:
        np.add.at(self.imps, (channel[won], seg[won]), 1.0)
        np.add.at(self.clicks, (channel[won & clicked], seg[won & clicked]), 1.0)
        x = self._x(channel, seg)
        for i in np.flatnonzero(clicked & won):
            self.learner.add_touch(str(keys[i]), x[i], int(time_ms[i]))

    def credit(self, keys: np.ndarray, value: np.ndarray, time_ms: np.ndarray) -> None:
        for k, t in zip(keys.tolist(), time_ms.tolist(), strict=True):
            self.learner.add_conversion(str(k), int(t))
        self.value_sum += float(value.sum())
        self.value_n += len(value)

    def state(self) -> dict[str, Any]:
        """Counts, conversion model and value sums (to warm-start another run)."""
        return {"imps": self.imps.copy(), "clicks": self.clicks.copy(), "conv": self.conv.state_dict(),
                "matured": self.conv_est.matured, "value_sum": self.value_sum, "value_n": self.value_n}

    def load(self, state: dict[str, Any]) -> None:
        self.imps, self.clicks = np.array(state["imps"]), np.array(state["clicks"])
        self.conv.load_state_dict(state["conv"])
        self.conv_est.matured = float(state["matured"])
        self.value_sum, self.value_n = float(state["value_sum"]), float(state["value_n"])

    def step(self, now_ms: int) -> None:
        if len(self.learner):
            self.learner.step(now_ms, steps=4)
            self.conv_est.refresh(self.learner, now_ms)


class BidRule:
    """Turns values into bids; ``update`` runs after each slot."""

    name = "bidder"

    def start_period(self, ctx: SlotContext) -> None:
        pass

    def bid(self, value: np.ndarray, ctr: np.ndarray, avg_ctr: float, floor: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def update(self, ctx: SlotContext) -> None:
        pass


class FixedBid(BidRule):
    name = "fixed"

    def __init__(self, cpm: float) -> None:
        self.cpm = cpm

    def bid(self, value: np.ndarray, ctr: np.ndarray, avg_ctr: float, floor: np.ndarray) -> np.ndarray:
        return clip_bid(np.full(len(value), self.cpm), floor)


class Truthful(BidRule):
    name = "truthful"

    def bid(self, value: np.ndarray, ctr: np.ndarray, avg_ctr: float, floor: np.ndarray) -> np.ndarray:
        return clip_bid(1000 * value, floor)


class Linear(BidRule):
    name = "linear"

    def __init__(self, b0: float) -> None:
        self.b0 = b0

    def bid(self, value: np.ndarray, ctr: np.ndarray, avg_ctr: float, floor: np.ndarray) -> np.ndarray:
        return clip_bid(self.b0 * ctr / avg_ctr, floor)


class DualPacing(BidRule):
    """bid = 1000 · v̂ / (1 + μ); μ follows the spend plan (traffic profile learned across days)."""

    name = "dual"

    def __init__(self, cfg: DualPacerConfig | None = None, slots: int = 96, plan: SpendPlan | None = None) -> None:
        self.pacer = DualPacer(cfg)
        self.plan = plan or SpendPlan(slots)
        self._own_plan = plan is None
        """False: the plan is another policy's (an ablation pacing to the agent's learned profile),
        which observes the traffic itself."""

    def start_period(self, ctx: SlotContext) -> None:
        self.pacer.start_period()

    def bid(self, value: np.ndarray, ctr: np.ndarray, avg_ctr: float, floor: np.ndarray) -> np.ndarray:
        return clip_bid(1000 * value * self.pacer.multiplier(), floor)

    def update(self, ctx: SlotContext) -> None:
        if self._own_plan:
            self.plan.observe(ctx.slot, ctx.opportunities)
        self.pacer.update(ctx.last_slot_spend_usd, ctx.budget_usd * self.plan.slot_share(ctx.slot))
        if self._own_plan and ctx.slot == ctx.slots - 1:
            self.plan.end_period()


class BaselinePolicy:
    """A bidder with a creative rule and the channel rule (module docstring).

    :param bidder: the bid rule. :param creative_rule: ``random`` or ``oracle``.
    :param market: the market (its ground truth read by the oracle rule and the truth source only).
    :param seed: seeds the random rule. :param value_source: ``model`` or ``truth``.
    """

    def __init__(self, bidder: BidRule, creative_rule: str, market: Market, seed: int = 0,
                 name: str | None = None, value_source: str = "model") -> None:
        if creative_rule not in ("random", "oracle"):
            raise ValueError(f"creative_rule: use 'random' or 'oracle', not {creative_rule!r}")
        if value_source not in ("model", "truth"):
            raise ValueError(f"value_source: use 'model' or 'truth', not {value_source!r}")
        self.value_source = value_source
        self.bidder = bidder
        self.rule = creative_rule
        self.market = market
        self.rng = np.random.default_rng(seed)
        self.values = CellValueModel(market.segments, seed=seed)
        self.name = name or f"{bidder.name}+{creative_rule}"

    def start_period(self, ctx: SlotContext) -> None:
        self.bidder.start_period(ctx)

    def play(self, opps: Opportunities, journeys: JourneyArrays, ctx: SlotContext) -> Plays:
        if self.value_source == "truth":
            return self._play_truth(opps)
        B = len(opps.person)
        seg = opps.segment_probs.argmax(1)
        v = np.stack([self.values.value(np.full(B, c), seg) for c in range(3)], axis=1)
        paid = np.where(opps.channel_mask[:, 1:], v[:, 1:], -1.0)
        channel = np.where(opps.channel_mask[:, 0], 0, 1 + paid.argmax(1))
        if self.rule == "random":
            creative = self.rng.integers(0, self.market.creatives, B)
        else:
            truth = self.market.truth(opps, channel)
            creative = self.market.best_creative[truth.segment]  # type: ignore[attr-defined]
        value = v[np.arange(B), channel]
        ctr = self.values.ctr(channel, seg)
        bid = self.bidder.bid(value, ctr, self.values.avg_ctr(), opps.floor_cpm_usd)
        bid = np.where(channel == 0, 0.0, bid)
        take = (channel == 0) | (bid > 0)
        everyone = np.full(B, self.market.segments, np.int64)  # untargeted
        return Plays(bid, creative.astype(np.int64), channel.astype(np.int64), everyone, take)

    def _play_truth(self, opps: Opportunities) -> Plays:
        return self.play_values(opps, self.true_values(opps))

    def true_values(self, opps: Opportunities) -> np.ndarray:
        """float [B, 3, C] ground truth: each creative's expected value on each channel (references only)."""
        B = len(opps.person)
        return np.stack([self.market.truth(opps, np.full(B, c, np.int64)).value_by_creative for c in range(3)],
                        axis=1)

    def play_values(self, opps: Opportunities, values: np.ndarray) -> Plays:
        """Plays from per-channel, per-creative values [B, 3, C]: organic when offered, else the paid channel
        whose best creative is worth most; that creative, bid by the bidder on its value."""
        B = len(opps.person)
        rows = np.arange(B)
        best = values.max(axis=2)
        paid = np.where(opps.channel_mask[:, 1:], best[:, 1:], -1.0)
        channel = np.where(opps.channel_mask[:, 0], 0, 1 + paid.argmax(1))
        creative = values.argmax(axis=2)[rows, channel]
        value = best[rows, channel]
        bid = np.where(channel == 0, 0.0, self.bidder.bid(value, value, 1.0, opps.floor_cpm_usd))
        take = (channel == 0) | (bid > 0)
        everyone = np.full(B, self.market.segments, np.int64)
        return Plays(bid, creative.astype(np.int64), channel.astype(np.int64), everyone, take)

    def observe(self, keys: np.ndarray, opps: Opportunities, plays: Plays, results: Results,
                ctx: SlotContext) -> None:
        self.values.observe(keys, plays.channel, opps.segment_probs.argmax(1), results.won, results.clicked,
                            opps.event_time)

    def end_slot(self, ctx: SlotContext) -> None:
        self.bidder.update(ctx)
        self.values.step(ctx.t1)

    def credit(self, keys: np.ndarray, credit_usd: np.ndarray, time_ms: np.ndarray) -> None:
        self.values.credit(keys, credit_usd, time_ms)

    def finalise(self, keys: np.ndarray) -> None:
        pass

    def end_period(self, ctx: SlotContext) -> None:
        pass
