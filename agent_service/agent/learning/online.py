"""The hybrid learner fed by the stream's experience topic (the in-process learner of the service).

Each decision reaches the learner as keyed :class:`~agent_service.contracts.events.Experience`
records — ``outcome`` (won, price: R_immediate), ``click``, ``credit`` (attributed value, days
later: R_attribution replaces the R_delayed estimate) and ``final`` (window closed) — possibly
redelivered (deduplicated by record id) and from earlier model versions (the logged propensity
is the behaviour probability PPO's ratio is taken against). The logged ``state`` carries the
enriched state, the slot's pacing features and the touch sequence
(:meth:`~agent_service.agent.model.state.StateSpec.pack`), so every input can be replayed.

Bid-multiplier transitions are assembled from the outcomes: the decisions of one budget slot
share its pacing features (the state) and multiplier action; the reward is the value v̂ of the
impressions won in the slot over the daily budget; the next slot's first decision gives the
next state, and a new period terminates the episode.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from agent_service.agent.learning.buffers import DecisionRows, SlotTransition, zero_rewards
from agent_service.agent.learning.learner import HybridLearner, LearnerStats
from agent_service.agent.learning.reward import slot_value_usd
from agent_service.agent.model.opportunity import CONTEXT_BUCKETS
from agent_service.agent.model.segment_em import SegmentLearner
from agent_service.agent.model.state import StateSpec
from agent_service.agent.serving.hybrid import HybridConfig, spec_of
from agent_service.config import CHANNELS, RewardConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import Experience
from agent_service.creatives import CatalogueFile, channel_priors, creative_priors
from agent_service.errors import DecodeError, ModelError
from agent_service.ports.registry import ModelRegistry
from agent_service.units import DAY_MS

__all__ = ["OnlineLearner", "TrainReport"]


class TrainReport(NamedTuple):
    """What one batch of experience records did to the learner."""

    records: int
    """New records learned from."""
    duplicates: int
    """Records seen before (redeliveries), ignored."""
    updates: list[LearnerStats]
    """Updates made (each published a version unless rejected)."""
    dead: list[tuple[int, str, str]]
    """Malformed records: (index in the batch, field, reason)."""
    version: int
    """The learner's newest version after the batch."""



class OnlineLearner:
    """Experience records in, versioned weights out (same contract as the skeleton's learner).

    :param hybrid: agent settings. :param reward: reward weights. :param creatives: C.
    :param budget_usd: daily budget (scales the bid Q-network's reward).
    :param registry: where versions are published. :param seed: seeds the learner.
    """

    def __init__(self, hybrid: HybridConfig, reward: RewardConfig, creatives: int, budget_usd: float,
                 registry: ModelRegistry, seed: int = 0) -> None:
        self.cfg = hybrid
        self.spec = spec_of(hybrid, creatives)
        self.learner = HybridLearner(self.spec, hybrid, reward, registry, seed=seed)
        self.registry = registry
        self.budget_usd = budget_usd
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._now = 0
        self._slot: tuple[int, int] | None = None
        self._slot_obs: np.ndarray | None = None
        self._slot_action = 0
        self._slot_value = 0.0
        self.history: list[LearnerStats] = []
        self.segments = SegmentLearner(hybrid.segments, CONTEXT_BUCKETS, seed=seed + 23)
        """Each person's context counts (from the decisions' logged person key and context bucket)
        and the segment model fitted on them, published with the weights."""
        self._segment_rows: dict[int, int] = {}
        self.creative_priors: dict[str, Any] | None = None
        """A report's CTR/CVR priors (``[creatives] priors``): per creative id, applied whenever the
        catalogue changes, and per channel × device, applied once."""
        self.catalogue: CatalogueFile | None = None
        """The creative catalogue (reloaded when its file changes); None: every slot, always."""

    @property
    def rejected(self) -> int:
        return self.learner.rejected

    def publish(self) -> int:
        return self.learner.publish()

    def adopt(self, version: int) -> None:
        """Train on from the weights of registry ``version`` (what a rollback restored)."""
        self.learner.adopt(self.registry.load(version))
        self.segments.load(self.learner.segment_fit)
        self.learner.version = version

    def follow_rollback(self) -> bool:
        """Adopt the registry's newest version if it is a rollback this learner has not seen (an
        operator's ``gaelp admin rollback``, from any process): the next version then grows from
        the restored weights. A newer version that is not a rollback (published by this learner
        before a crash took it back to its checkpoint) is not adopted: the experience after the
        checkpoint is trained again, and the next version is published above it. True if adopted."""
        latest = self.registry.latest_version()
        if latest <= self.learner.version:
            return False
        state = self.registry.load(latest)
        if not state.get("rolled_back_from"):
            return False
        self.learner.adopt(state)
        self.segments.load(self.learner.segment_fit)
        self.learner.version = latest
        return True

    def start_from(self, checkpoint: dict[str, Any]) -> int:
        """Start from a trained checkpoint (``gaelp train``'s agent.pt) — weights, optimisers,
        campaign statistics, exploration schedule, labelled clicks and segment model — and publish
        it as the next version. Its decisions and people belong to its own world and stay behind.

        :raises ModelError: the checkpoint has another layout than this learner.
        """
        self.learner.load_checkpoint(checkpoint)
        self.segments.load(self.learner.segment_fit)  # its labels are the ones the weights learnt
        return self.publish()

    def resume(self, version: int) -> None:
        """Start from registry ``version`` (a restart: the newest published model, not fresh weights)."""
        self.learner.resume(self.registry.load(version))
        self.segments.load(self.learner.segment_fit)  # its labels are the ones the weights learnt
        self.learner.version = version

    def observe(self, exp: Experience) -> bool:
        """Take one record; False if its id was seen already (a redelivery)."""
        if exp.id in self._seen:
            return False
        self._seen[exp.id] = None
        if len(self._seen) > 1_000_000:
            self._seen.popitem(last=False)
        self._now = max(self._now, exp.event_time)
        key = exp.decision_id
        L = self.learner
        if exp.kind == "outcome":
            self._outcome(exp)
        elif exp.kind == "click":
            L.add_clicks([key], np.array([exp.event_time]))
        elif exp.kind == "credit":
            L.add_credit([key], np.array([exp.parts.attribution]), np.array([exp.event_time]))
        elif exp.kind == "final":
            L.finalise([key])
        return True

    def _outcome(self, exp: Experience) -> None:
        spec = self.spec
        if len(exp.state) != spec.logged_dim:
            return  # logged by another policy's layout (e.g. before an upgrade): not replayable here
        batch, pacing = spec.unpack(np.asarray(exp.state, np.float32))
        a = exp.action
        channel = CHANNELS.index(a.channel) if a.channel in CHANNELS else 2
        slot_p = max(float(batch.state[0, spec.index["slot_action_prob"]]), 1e-6)
        logp = math.log(max(exp.propensity / slot_p, 1e-12))
        mask = batch.state[:, spec.cols("avail_")] > 0.5
        cost = max(0.0, slot_value_usd(self.learner.reward_cfg, exp.position) - exp.parts.immediate)
        m = math.exp(2.0 * float(batch.state[0, spec.index["pacing_factor"]]))
        rows = DecisionRows(
            batch.state, batch.touches, batch.touch_creatives, mask, np.array([min(a.creative, spec.creatives - 1)]),
            np.array([channel]), np.array([min(a.segment, spec.segments)]), np.array([logp], np.float32),
            np.array([_episode(spec, batch.state)]), np.array([exp.event_time]), np.array([exp.won]), np.zeros(1, bool),
            *zero_rewards(1))
        key = [exp.decision_id]
        self.learner.add_decisions(key, rows)
        self._count_context(batch.state[0])
        variant = np.array([int(np.argmax(batch.state[0, spec.cols("ab_variant_")]))])
        self.learner.add_outcomes(key, np.array([exp.won]), np.array([cost]), np.zeros(1, bool), np.array([m]),
                                  np.array([exp.event_time]), rows.creative, variant,
                                  np.array([a.bid_cpm_micros / 1e6]), np.array([exp.position or 0]))
        self._slot_step(exp, pacing[0], a.multiplier, exp.parts.delayed if exp.won and channel > 0 else 0.0)

    def _count_context(self, state: np.ndarray) -> None:
        """The person's context counts as the decision logged them (the store's profile, this
        request included): the latest record of a person replaces the earlier ones."""
        first = self.spec.index["context_count_0"]
        counts = state[first:first + CONTEXT_BUCKETS]
        if counts.sum() <= 0:
            return
        person = int(state[self.spec.index["person_key"]])
        self.segments.set_counts(self._segment_rows.setdefault(person, len(self._segment_rows)), counts)

    def _refit_segments(self, period_ended: bool) -> None:
        if self.segments.maybe_refit(period_ended) is not None:
            self.learner.segment_fit = self.segments.state()  # served with the next version

    def _slot_step(self, exp: Experience, pacing: np.ndarray, action: int, value_usd: float) -> None:
        T = self.cfg.slots_per_period
        t = exp.event_time
        slot = (t // DAY_MS, int((t % DAY_MS) * T // DAY_MS))
        if self._slot is None or slot > self._slot:
            if self._slot is not None and self._slot_obs is not None:
                term = slot[0] != self._slot[0]
                self.learner.add_slots(SlotTransition(
                    self._slot_obs[None], np.array([self._slot_action]),
                    np.array([self._slot_value / max(self.budget_usd, 1e-9)], np.float32), pacing[None],
                    np.array([float(term)], np.float32), np.zeros(1, np.float32)))
                if term:
                    self.learner.end_period()
                    self._refit_segments(period_ended=True)
            self._slot, self._slot_obs, self._slot_action, self._slot_value = slot, pacing, action, 0.0
        if slot == self._slot:
            self._slot_value += value_usd

    def train_records(self, raw: Sequence[bytes]) -> TrainReport:
        """Learn from a batch of encoded experience records, training whenever enough have arrived.

        A record that does not decode is reported in ``dead`` (the caller dead-letters it), never used.
        """
        self.follow_rollback()
        if self.creative_priors is not None and not self.learner.stats.prior_cd_impressions.any():
            # the report's channel × device rates (priors are published with the statistics: set once)
            self.learner.stats.set_channel_priors(*channel_priors(self.creative_priors))
        if self.catalogue is not None:
            cat = self.catalogue.current(self._now)
            if cat is not self.learner.catalogue:
                self.learner.set_catalogue(cat)  # new creatives start from the others' mean
                if self.creative_priors is not None:  # ... or from a report's counts when one covers them
                    self.learner.stats.set_priors(*creative_priors(cat, self.creative_priors, self.spec.creatives))
        new = dup = 0
        updates: list[LearnerStats] = []
        dead: list[tuple[int, str, str]] = []
        for i, value in enumerate(raw):
            try:
                exp = decode(value, Experience)
            except DecodeError as exc:
                dead.append((i, exc.field, exc.reason))
                continue
            if self.observe(exp):
                new += 1
            else:
                dup += 1
            stats = self.maybe_update()
            if stats is not None:
                updates.append(stats)
        return TrainReport(new, dup, updates, dead, self.learner.version)

    def summary(self) -> dict[str, int]:
        """Counts of what this learner holds (for reports, drills and tests)."""
        L = self.learner
        return {"records_seen": len(self._seen), "decisions": len(L.table), "labelled_clicks": L.conv_learner.labelled,
                "version": L.version}

    # --- snapshots (a restarted learner resumes exactly where its checkpoint was taken) ---------
    def snapshot(self) -> bytes:
        """Everything this learner holds — weights, optimisers, decision table, replay, labelled
        clicks, slot assembly, the record ids seen — as bytes (the registry is not part of it)."""
        registry = self.registry
        self.registry = self.learner.registry = None  # type: ignore[assignment]
        try:
            buf = io.BytesIO()
            torch.save(self, buf)
            return buf.getvalue()
        finally:
            self.registry = self.learner.registry = registry

    @staticmethod
    def from_snapshot(blob: bytes, registry: ModelRegistry) -> OnlineLearner:
        """A learner restored from :meth:`snapshot`, publishing to ``registry``.

        :raises ModelError: the snapshot cannot be read.
        """
        try:
            learner = torch.load(io.BytesIO(blob), weights_only=False)  # our own checkpoint, not user input
        except (RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError,
                TypeError) as exc:
            raise ModelError(f"unreadable learner snapshot: {exc}") from exc
        if not isinstance(learner, OnlineLearner):
            raise ModelError(f"learner snapshot holds {type(learner).__name__}")
        learner.registry = learner.learner.registry = registry
        return learner

    def maybe_update(self) -> LearnerStats | None:
        """Train and publish when enough new decisions arrived."""
        stats = self.learner.maybe_update(self._now)
        if stats is not None:
            self.history.append(stats)
            self._refit_segments(period_ended=False)
        return stats


def _episode(spec: StateSpec, state: np.ndarray) -> int:
    """Journey id of a decision for GAE: the person key logged with it."""
    return int(state[0, spec.index["person_key"]])
