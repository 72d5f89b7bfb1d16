"""The hybrid agent as a campaign policy of the evaluation harness (training and evaluation).

Glue only: it builds the enriched states from what the harness shows a bidder (the same
:func:`~agent_service.agent.model.state.build_states` the service uses), asks the serving
:class:`~agent_service.agent.serving.hybrid.HybridAgent` for the batch's actions, and feeds the
:class:`~agent_service.agent.learning.learner.HybridLearner` with decisions, outcomes, credits, window
closings and one bid-multiplier transition per slot; each published version is swapped into
the serving agent (by version number, as a bidder process would). It also keeps what the
service's store keeps per person: the count of each context the person's requests carried, from
which the state's segment posterior is accumulated. The segment model is learned from those
counts (:mod:`~agent_service.agent.model.segment_em`: EM, K by BIC, refitted at the end of every
period); ``hybrid.segment_model = "simulator"`` instead takes the table of request posteriors the
simulated market computes from its own parameters — a labelled reference, not the agent.
"""

from __future__ import annotations

import copy
import zlib
from typing import Any

import numpy as np

from agent_service.agent.learning.buffers import DecisionRows, SlotTransition, zero_rewards
from agent_service.agent.learning.learner import HybridLearner, LearnerStats
from agent_service.agent.model.opportunity import CONTEXT_BUCKETS
from agent_service.agent.model.segment_em import SegmentLearner
from agent_service.agent.model.segments import ActivityAccumulator, SegmentAccumulator
from agent_service.agent.model.state import (
    JourneyArrays,
    OpportunityArrays,
    PacingInputs,
    StateBatch,
    build_states,
)
from agent_service.agent.serving.hybrid import AgentActs, HybridAgent, HybridConfig, spec_of
from agent_service.config import RewardConfig
from agent_service.evaluation.harness import SlotContext
from agent_service.evaluation.market import Opportunities, Plays, Results
from agent_service.pacing import SlotOutcome, SpendPlan, pacing_features

__all__ = ["HybridCampaign"]


class HybridCampaign:
    """See the module docstring.

    :param creatives: C. :param cfg: agent settings. :param reward: reward weights.
    :param seed: seeds the agent and the learner. :param learn: train online (False: serve only).
    :param name: label in reports.
    """

    def __init__(self, creatives: int, cfg: HybridConfig, reward: RewardConfig, seed: int = 0,
                 learn: bool = True, name: str = "gaelp") -> None:
        self.name = name
        self.cfg = cfg
        self.spec = spec_of(cfg, creatives)
        self.agent = HybridAgent(self.spec, cfg, seed=seed + 11)
        self.learner = HybridLearner(self.spec, cfg, reward, seed=seed)
        self.learn = learn
        self.explore = True
        self.plan = SpendPlan(cfg.slots_per_period)
        self.agent.load_state(self.learner.state(), self.learner.publish())
        self.updates: list[LearnerStats] = []
        self._person_of_key = np.zeros(0, np.int64)
        self._credited: dict[int, float] = {}
        self._pending: tuple[StateBatch, AgentActs] | None = None
        self._obs: np.ndarray | None = None
        self._z_day: list[float] = []
        self._z_prev_day: float | None = None
        self._out = SlotOutcome()
        self._spent_before = 0.0
        self._done = False
        self._volume = 0.0
        self._variant = np.zeros(0, np.int64)
        self._segments = SegmentAccumulator(cfg.segments)
        self.segment_learner = SegmentLearner(cfg.segments, CONTEXT_BUCKETS, seed=seed + 23)
        self._activity = ActivityAccumulator()

    def checkpoint(self) -> dict[str, Any]:
        """The learner's checkpoint (with the segment model; its people's counts stay behind: they
        belong to this world) plus this campaign's pacing state (plan profile, multiplier)."""
        return {**self.learner.checkpoint(), "plan_profile": self.plan.profile.tolist(), "z": self.agent.z_base,
                "z_prev_day": self._z_prev_day}

    def restore(self, ck: dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint` (a new world: journeys and pending rewards start empty).

        The agent works on its own copy: parts of the learner keep the arrays they are given and
        grow them online, and evaluation restores the same checkpoint for every seed and policy."""
        ck = copy.deepcopy(ck)
        self.learner.load_checkpoint(ck)
        self.plan.profile = np.asarray(ck["plan_profile"], dtype=np.float64)
        self._z_prev_day = ck.get("z_prev_day")
        self.agent.version = 0
        self.agent.load_state(self.learner.state(), max(1, self.learner.version))
        self.agent.z_base = self.agent.z = float(ck.get("z", self.cfg.dqn.z_init))
        self.segment_learner.load(ck.get("segments"))  # the labels the networks learnt with

    # ---------------------------------------------------------------- per budget slot
    def _features(self, ctx: SlotContext, slot: int) -> np.ndarray:
        T = self.cfg.slots_per_period
        budget = max(ctx.budget_usd, 1e-9)
        return pacing_features(
            time_left=1.0 - slot / T, budget_left=ctx.budget_left_usd / budget, spent_frac=ctx.spent_usd / budget,
            plan_frac=self.plan.fraction(slot / T), last=self._out,
            slot_plan_usd=budget * self.plan.slot_share(max(slot - 1, 0)), log_multiplier=self.agent.z_base,
            next_slot_share=self.plan.slot_share(slot), slots=T)

    def start_period(self, ctx: SlotContext) -> None:
        self.agent.start_period(self._z_prev_day)
        self._z_day = []
        self._out = SlotOutcome()
        self._done = False
        self._obs = self._features(ctx, 0)
        self.agent.begin_slot(self._obs, explore=self.explore)

    def end_slot(self, ctx: SlotContext) -> None:
        self._z_day.append(self.agent.z_base)
        self._out.spend_usd = ctx.last_slot_spend_usd
        self.plan.observe(ctx.slot, ctx.opportunities)
        nxt = ctx.slot + 1
        last = nxt >= ctx.slots
        out_of_budget = ctx.budget_left_usd < self.cfg.bid_min_usd / 1000
        if not self._done and self.learn and self._obs is not None:
            next_obs = self._features(ctx, nxt)
            reward = self._out.value_usd / max(ctx.budget_usd, 1e-9)
            term = last or out_of_budget
            self.learner.add_slots(SlotTransition(
                self._obs[None], np.array([self.agent.mult_index]), np.array([reward], np.float32), next_obs[None],
                np.array([float(term)], np.float32), np.zeros(1, np.float32)))
            self._done = term
        if not last:
            self._obs = self._features(ctx, nxt)
            self._out = SlotOutcome()
            self.agent.begin_slot(self._obs, explore=self.explore)
        if self.cfg.segment_model == "learned":
            self._refit_segments(period_ended=False)
        if self.learn:
            stats = self.learner.maybe_update(ctx.t1)
            if stats is not None:
                self.updates.append(stats)
                if not stats.rejected:
                    self.agent.load_state(self.learner.state(), self.learner.version)

    def end_period(self, ctx: SlotContext) -> None:
        self._z_prev_day = float(np.mean(self._z_day)) if self._z_day else None
        self.plan.end_period()
        if self.cfg.segment_model == "learned":
            self._refit_segments(period_ended=True)
        if self.learn:
            self.learner.end_period()

    # ---------------------------------------------------------------- per opportunity
    def play(self, opps: Opportunities, journeys: JourneyArrays, ctx: SlotContext) -> Plays:
        spec = self.spec
        variant = np.array([zlib.crc32(str(p).encode()) % spec.ab_variants for p in opps.person.tolist()])
        credited = np.array([self._credited.get(p, 0.0) for p in opps.person.tolist()])
        segments = self._segment_posterior(opps)
        recent, search = self._activity.add(opps.person, opps.event_time, opps.channel_mask[:, 1])
        opp = OpportunityArrays(opps.event_time, opps.device_class, opps.channel_mask, opps.floor_cpm_usd,
                                segments, opps.identity_confidence, opps.device_count, variant, credited,
                                opps.person, recent, search)
        budget = max(ctx.budget_usd, 1e-9)
        pacing = PacingInputs(ctx.budget_usd, ctx.spent_usd, 0.0, ctx.elapsed, self.plan.fraction(ctx.elapsed),
                              ctx.last_slot_spend_usd, budget * self.plan.slot_share(max(ctx.slot - 1, 0)),
                              self.agent.z, self.agent.slot_prob, ctx.opportunities / max(1e-9, self._expected(ctx)))
        batch = build_states(spec, opp, journeys, pacing, self.agent.stats)
        acts = self.agent.act(batch, opps.channel_mask, opps.floor_cpm_usd, ctx.budget_left_usd, explore=self.explore)
        self._pending = (batch, acts)
        self._variant = variant
        take = (acts.channel == 0) | (acts.bid_cpm_usd > 0)
        return Plays(acts.bid_cpm_usd, acts.creative, acts.channel, acts.target, take)

    def _refit_segments(self, period_ended: bool) -> None:
        if self.segment_learner.maybe_refit(period_ended) is not None:
            self.learner.segment_fit = self.segment_learner.state()  # published with the next version

    def _segment_posterior(self, opps: Opportunities) -> np.ndarray:
        if self.cfg.segment_model == "simulator":  # the labelled reference: the market's own table
            return (self._segments.posterior(opps.person, opps.context, opps.segment_probs)
                    if self.cfg.segment_profile else opps.segment_probs)
        bucket = opps.context % CONTEXT_BUCKETS  # as the service buckets page categories
        post = self.segment_learner.posterior(opps.person, bucket)  # counts the requests either way
        if self.cfg.segment_profile:
            return post
        one = np.zeros((len(bucket), CONTEXT_BUCKETS))
        one[np.arange(len(bucket)), bucket] = 1.0
        return self.segment_learner.model.posterior(one)

    def _expected(self, ctx: SlotContext) -> float:
        """Opportunities expected in the slot (the plan's share of the daily volume seen so far)."""
        return max(1.0, self.plan.slot_share(ctx.slot) * self._volume) if self._volume else float(ctx.opportunities)

    def observe(self, keys: np.ndarray, opps: Opportunities, plays: Plays, results: Results,
                ctx: SlotContext) -> None:
        assert self._pending is not None
        batch, acts = self._pending
        self._pending = None
        self._person_of_key = np.concatenate([self._person_of_key, opps.person])
        paid = results.won & (plays.channel > 0)
        o = self._out
        o.bids += int(((plays.bid_cpm_usd > 0) & plays.take).sum())
        o.wins += int(paid.sum())
        o.value_usd += float(acts.value_usd[paid].sum())
        o.clearing_cpm_usd = float(results.price_cpm_usd[paid].mean()) if paid.any() else 0.0
        day_rate = len(keys) / max(self.plan.slot_share(ctx.slot), 1e-9)
        self._volume = day_rate if not self._volume else 0.95 * self._volume + 0.05 * day_rate
        if not self.learn:
            return
        skeys = [str(k) for k in keys.tolist()]
        rows = DecisionRows(
            batch.state, batch.touches, batch.touch_creatives, opps.channel_mask, acts.creative, acts.channel,
            acts.target, acts.logp_policy.astype(np.float32), opps.person, opps.event_time, results.won,
            results.clicked, *zero_rewards(len(keys)))
        self.learner.add_decisions(skeys, rows)
        self.learner.add_outcomes(skeys, results.won, results.price_cpm_usd / 1000, results.clicked,
                                  np.full(len(keys), acts.multiplier), opps.event_time, acts.creative,
                                  self._variant, plays.bid_cpm_usd,
                                  np.where(plays.channel == 1, results.position, 0))  # paid search is positional

    def credit(self, keys: np.ndarray, credit_usd: np.ndarray, time_ms: np.ndarray) -> None:
        for k, v in zip(keys.tolist(), credit_usd.tolist(), strict=True):
            p = int(self._person_of_key[k])
            self._credited[p] = self._credited.get(p, 0.0) + v
        if self.learn:
            self.learner.add_credit([str(k) for k in keys.tolist()], credit_usd, time_ms)

    def finalise(self, keys: np.ndarray) -> None:
        if self.learn:
            self.learner.finalise([str(k) for k in keys.tolist()])
