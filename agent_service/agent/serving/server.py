"""The hybrid agent behind the service's decision path (``pipeline/decide.py``).

The decision path hands over, per batch, each impression's opportunity (from the request) and
the context the store returned (identity, journey, budget ledger); :class:`AgentServer` builds
the enriched states and touch sequences for the whole batch with
:func:`~agent_service.agent.model.state.build_states`, runs the batch through one weight version, and
returns the actions, their propensities, the bids and the vectors to log with the decisions.

It also keeps the per-slot bid multiplier: when a batch's event time enters a new budget slot,
the Q-network moves ``z`` from the pacing features of the ledger (spend against the plan, spend
in the last slot, bids made, the competition statistics the learner publishes). Each service
process keeps its own ``z``; the budget itself is enforced by the store's atomic reservations.

The segment group of the state is the person's posterior accumulated over the contexts of all
their requests (the store's context profile plus this request; ``agent.segment_profile``; off:
the request's bucket alone) under the segment model the learner fitted on the traffic's
context counts and published with the weights (``agent/model/segment_em.py``) — uniform, no
information, until the first fit. The person's recent activity (time-weighted requests and the
share offering paid search: people search more deeper in a journey) comes from the same profile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from agent_service.agent.model.opportunity import CONTEXT_BUCKETS, Opportunity, context_bucket
from agent_service.agent.model.segments import counts_matrix
from agent_service.agent.model.state import (
    ArmInputs,
    OpportunityArrays,
    PacingInputs,
    ab_variant,
    build_states,
    journey_arrays,
    person_key,
)
from agent_service.agent.serving.hybrid import AgentActs, HybridAgent, HybridConfig, PreparedVersion, spec_of
from agent_service.config import CHANNELS
from agent_service.creatives import CatalogueFile, restrict_to_arms
from agent_service.money import micros_to_usd
from agent_service.pacing import DualPacer, DualPacerConfig, SlotOutcome, SpendPlan, pacing_features
from agent_service.ports.registry import ModelRegistry
from agent_service.ports.store import DecideContext
from agent_service.units import DAY_MS

__all__ = ["AgentServer", "ArmSource", "ServedBatch"]


class ArmSource(Protocol):
    """Where the persons' creative-experiment arms come from (``pipeline.experiments.LiveExperiments``)."""

    def arms(self, person_ids: Sequence[str], t_ms: np.ndarray, creatives: int) -> ArmInputs | None:
        """Each person's arm at event time ``t_ms`` [B] over ``creatives`` slots; None: nobody is in one."""
        ...


def _offered(channels: Sequence[str]) -> list[bool]:
    """The channel mask row of an opportunity; one offering none gets social (a row in Python:
    cheaper than a masked numpy fix-up on a few rows)."""
    row = [c in channels for c in CHANNELS]
    if not any(row):
        row[2] = True
    return row


class ServedBatch(NamedTuple):
    """The agent's answer for B impressions."""

    acts: AgentActs
    logged: np.ndarray
    """float32 [B, spec.logged_dim]: the vectors to log as ``Decision.state``."""
    context: np.ndarray
    """int64 [B] each request's context bucket (what the store counts on the person's profile)."""
    search: np.ndarray
    """bool [B] the request offered paid search (counted in the person's activity)."""
    shared: tuple[tuple[int, int], ...] = ()
    """Column spans of ``logged`` that repeat across rows (``StateSpec.logged_shared``)."""


class AgentServer:
    """See the module docstring.

    :param hybrid: agent settings. :param creatives: C. :param budget_usd: daily budget.
    :param registry: where the learner publishes. :param seed: seeds sampling.
    """

    def __init__(self, hybrid: HybridConfig, creatives: int, budget_usd: float, registry: ModelRegistry | None,
                 seed: int = 0, bid_rule: str = "agent") -> None:
        self.cfg = hybrid
        self.spec = spec_of(hybrid, creatives)
        # Decision batches are small: intra-op threads only add scheduling jitter (a 16-step LSTM
        # waits for a descheduled worker thread for tens of ms on a busy machine). One thread.
        torch.set_num_threads(1)
        self.agent = HybridAgent(self.spec, hybrid, registry, seed=seed)
        self.agent.warmup()
        self.budget_usd = budget_usd
        self.plan = SpendPlan(hybrid.slots_per_period)
        self._slot: tuple[int, int] | None = None
        self._slot_spent0 = 0.0
        self._out = SlotOutcome()
        self._z_period: list[float] = []
        self._pacing = np.zeros(len(pacing_features(1, 1, 0, 0, SlotOutcome(), 1, 0, 0, 1)), np.float32)
        self._counted = 0
        self.catalogue: CatalogueFile | None = None
        """The creative catalogue (reloaded when its file changes); None: every slot, always."""
        self.experiments: ArmSource | None = None
        """Running creative experiments: a person in an arm is shown its creatives only; None: none."""
        self.dual = None if bid_rule == "agent" else DualPacer(
            DualPacerConfig(mu_min=math.exp(-hybrid.dqn.z_max) - 1.0) if bid_rule == "dual_scaled" else None)
        """``[serve] bid_rule = "dual"`` (or ``dual_scaled``): the multiplier is 1 / (1 + μ), μ paced
        per slot; the Q-network neither offsets nor samples (the logged multiplier action is
        deterministic)."""
        if self.dual is not None:
            self.agent.dqn_offset = False

    @property
    def version(self) -> int:
        return self.agent.version

    def sync(self) -> int:
        """Swap in a newer registry version, if any (one version then serves the whole batch)."""
        return self.agent.sync()

    def prepare(self, state: dict[str, Any], version: int) -> PreparedVersion:
        """Check and build a published version without touching what serves (off the event loop)."""
        return self.agent.prepare(state, version)

    def adopt(self, prepared: PreparedVersion) -> bool:
        """Serve a prepared version if it is newer; True if swapped."""
        return self.agent.adopt(prepared)

    def restore_pacing(self, checkpoint: dict[str, Any]) -> None:
        """Take a trained checkpoint's pacing state (``runtime/trained.py``): its traffic profile and
        the multiplier level a new period starts at (its last day's mean, as in training)."""
        self.plan.profile = np.asarray(checkpoint["plan_profile"], np.float64)
        z = checkpoint.get("z_prev_day")
        z = checkpoint.get("z") if z is None else z
        if z is not None:
            self.agent.start_period(float(z))
            self.agent.z = self.agent.z_base

    def _enter_slot(self, t: int, budget_usd: float, spent_usd: float, reserved_usd: float, n: int) -> None:
        T = self.cfg.slots_per_period
        period, slot = t // DAY_MS, int((t % DAY_MS) * T // DAY_MS)
        if self._slot == (period, slot):
            self._counted += n
            return
        if self._slot is not None:
            self.plan.observe(self._slot[1], self._counted)
            if self._slot[0] != period:
                self.plan.end_period()
                z0 = float(np.mean(self._z_period)) if self._z_period else None
                self.agent.start_period(z0)
                self._z_period = []
                self._slot_spent0 = 0.0
        stats = self.agent.stats
        self._out.spend_usd = max(0.0, spent_usd - self._slot_spent0)
        self._out.wins = int(round(self._out.bids * stats.win_rate()))
        self._out.clearing_cpm_usd = stats.clearing_cpm_usd()
        budget = max(budget_usd, 1e-9)
        self._pacing = pacing_features(
            time_left=1.0 - slot / T, budget_left=max(0.0, budget - spent_usd - reserved_usd) / budget,
            spent_frac=spent_usd / budget, plan_frac=self.plan.fraction(slot / T), last=self._out,
            slot_plan_usd=budget * self.plan.slot_share(max(slot - 1, 0)), log_multiplier=self.agent.z_base,
            next_slot_share=self.plan.slot_share(slot), slots=T)
        self.agent.begin_slot(self._pacing)
        if self.dual is not None:
            self._dual_slot(period, slot, budget)
        self._z_period.append(self.agent.z_base)
        self._slot, self._slot_spent0, self._counted = (period, slot), spent_usd, n
        self._out = SlotOutcome()

    def _dual_slot(self, period: int, slot: int, budget_usd: float) -> None:
        """The dual reference: μ moves on the last slot's spend against its plan; z = −log(1 + μ)."""
        assert self.dual is not None
        if self._slot is not None and self._slot[0] == period:
            self.dual.update(self._out.spend_usd, budget_usd * self.plan.slot_share(max(slot - 1, 0)))
        elif self._slot is not None:
            self.dual.start_period()
        agent = self.agent
        agent.z = agent.z_base = -math.log1p(self.dual.mu)
        adjustments = self.cfg.dqn.adjustments
        agent.mult_index, agent.slot_prob = adjustments.index(0.0) if 0.0 in adjustments else 0, 1.0

    def act_batch(self, opps: Sequence[Opportunity], ctxs: Sequence[DecideContext], devices: Sequence[str],
                  explore: bool = True) -> ServedBatch:
        """Decide a batch of impressions (the decision path's one call per batch).

        :param opps: the impressions. :param ctxs: their store contexts (identity, journey, budget).
        :param devices: the (pseudonymised) device id of each.
        """
        B = len(opps)
        spec = self.spec
        first = ctxs[0].budget
        self._enter_slot(opps[0].event_time, micros_to_usd(first.budget), micros_to_usd(first.spent), micros_to_usd(first.reserved), B)
        t = np.array([o.event_time for o in opps], np.int64)
        devclass = np.array([0 if o.devicetype in (1, 4, 5) else 1 if o.devicetype == 2 else 2 for o in opps])
        mask = np.array([_offered(o.channels) for o in opps], bool)
        floor = np.array([o.floor_cpm_usd for o in opps], np.float64)
        bucket = np.array([context_bucket(o.context) for o in opps], np.int64)
        segments = self.agent.segment_model  # published with the weights: every bidder uses the same
        counts = counts_matrix([c.contexts for c in ctxs], bucket, CONTEXT_BUCKETS)  # logged: the learner fits on them
        seg = segments.posterior(counts if self.cfg.segment_profile else counts_matrix([()] * B, bucket, CONTEXT_BUCKETS))
        # the person's recent activity with this request (the store counts it when it is stored)
        search = mask[:, 1].copy()  # paid search offered
        activity = np.array([c.activity.add(o.event_time, bool(s))[:2]
                             for o, c, s in zip(opps, ctxs, search, strict=True)], np.float64).reshape(B, 2)
        opp = OpportunityArrays(
            t, devclass, mask, floor, seg, np.array([c.identity.confidence for c in ctxs]),
            np.array([c.identity.device_count for c in ctxs]),
            np.array([ab_variant(c.identity.person_id, spec.ab_variants) for c in ctxs]), np.zeros(B),
            np.array([person_key(c.identity.person_id) for c in ctxs]), activity[:, 0], activity[:, 1], counts,
            None if self.experiments is None
            else self.experiments.arms([c.identity.person_id for c in ctxs], t, spec.creatives))
        window = int(self.cfg.window_days * DAY_MS)
        journeys = [[x for x in c.journey if o.event_time - window <= x.event_time <= o.event_time]
                    for o, c in zip(opps, ctxs, strict=True)]
        jr = journey_arrays(journeys, list(devices), spec.max_touches)
        budget = max(micros_to_usd(first.budget), 1e-9)
        slot = self._slot[1] if self._slot else 0
        T = self.cfg.slots_per_period
        pacing = PacingInputs(budget, micros_to_usd(first.spent), micros_to_usd(first.reserved), (t[0] % DAY_MS) / DAY_MS,
                              self.plan.fraction(slot / T), self._out.spend_usd,
                              budget * self.plan.slot_share(max(slot - 1, 0)), self.agent.z, self.agent.slot_prob,
                              1.0)
        batch = build_states(spec, opp, jr, pacing, self.agent.stats)
        left = np.array([micros_to_usd(c.budget.remaining) for c in ctxs])
        arms = None if opp.arms is None else opp.arms.slots
        cat = None if self.catalogue is None else self.catalogue.current(int(t[0]))
        eligible: Callable[[np.ndarray], np.ndarray] | None = None
        if cat is not None or arms is not None:
            def eligible(ch: np.ndarray) -> np.ndarray:  # the channel is chosen first
                # the learner replays the same two masks (creatives.restrict_to_arms)
                every = np.ones((B, spec.creatives), bool) if cat is None else cat.mask(t, ch, spec.creatives)
                return restrict_to_arms(every, arms)
        acts = self.agent.act(batch, mask, floor, left, explore=explore, creative_mask=eligible)
        self._out.bids += int((acts.bid_cpm_usd > 0).sum())
        return ServedBatch(acts, spec.pack(batch, self._pacing), bucket, search, spec.logged_shared)
