"""The shadow candidate: a pinned model version deciding, from the decision log, what it would have done.

``[serve] candidate_version`` names a registry version to compare with the live policy. The
bidder does not run it: every live decision already logs the vector it was decided from (the
state, the slot's pacing features and the touch sequence the LSTM journey encoder reads,
``StateSpec.pack``), so :class:`CandidateScorer` replays a sample of the logged decisions
(``candidate_sample``: whole partitions of the decision log, :func:`sampled_partitions`) through
the candidate's networks elsewhere — the
``candidate`` role of ``gaelp serve``, or in-process in ``gaelp simulate`` — and returns its
decisions: the candidate's action, propensity and version, marked shadow, never bid, keyed by
the live decision's id (the warehouse stores them as ``<id>@v<version>``, so a redelivered
record rewrites the same row).

What the candidate sees of its own: the segment posterior (its segment model on the person's
context counts, logged with the state), the slot's bid multiplier (its Q-network on the logged
pacing features, with its own multiplier level), its click/conversion models and heads. The
market statistics in the state (win rate, clearing price, landscape, per-device rates) are the
ones the live bidder decided with; the floor is the logged one (saturating at $10 CPM, the bid cap).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec
import numpy as np

from agent_service.agent.model.state import arm_mask
from agent_service.agent.serving.server import AgentServer
from agent_service.config import CHANNELS, GaelpConfig
from agent_service.contracts.events import Action, Decision, encoded_states, state_values
from agent_service.creatives import restrict_to_arms
from agent_service.errors import ConfigError
from agent_service.experiments.assignment import bucket
from agent_service.metrics import Metrics
from agent_service.money import usd_to_micros
from agent_service.pacing import PACING_FEATURES
from agent_service.pricing import BID, NO_BID_REASONS
from agent_service.units import DAY_MS

__all__ = ["CandidateScorer", "LoggedHead", "sampled_partitions", "shadowed"]

log = logging.getLogger(__name__)

_REQUEST_REASONS = frozenset({"currency", "floor_currency"})
"""No-bid reasons of the request itself: the candidate would not have bid either."""
_LOG_MULTIPLIER = [name for name, _ in PACING_FEATURES].index("log_multiplier")


class LoggedHead(msgspec.Struct, frozen=True):
    """The fields of a logged decision that say whether the candidate scores it (its canary's are
    not). Decoded alone (the state, most of a record's bytes, is skipped unparsed), a record left
    out costs the candidate role a quarter of a full decode."""

    person_id: str
    shadow: bool = False


def sampled_partitions(sample: float, partitions: int) -> range:
    """The decision-log partitions in the candidate's sample: the first ``sample × partitions``.

    The log is keyed, hence partitioned, by decision id (a hash of the bus's, independent of any
    outcome: off-policy estimates on the sample stay unbiased), so the candidate role reads whole
    partitions — a quarter of the log's bytes at sample 0.25, not all of them to keep a hashed
    quarter. A sample is therefore a multiple of ``1 / partitions``."""
    k = round(sample * partitions)
    if not 1 <= k <= partitions or abs(k - sample * partitions) > 1e-9:
        raise ConfigError("serve.candidate_sample",
                          f"{sample:g} is not a multiple of 1/{partitions}: the decision log has {partitions} "
                          "partitions and the candidate scores whole ones")
    return range(k)


def shadowed(decision_id: str, sample: float, partitions: int, partition_of: Callable[[bytes, int], int]) -> bool:
    """The live decision is in the candidate's sample (``partition_of``: the bus's, ``EventBus.partition_of``)."""
    return partition_of(decision_id.encode(), partitions) in sampled_partitions(sample, partitions)


class CandidateScorer:
    """Decides logged live decisions again with the candidate (see the module docstring).

    :param cfg: configuration (``serve.candidate_sample`` and ``canary_share``, the daily budget).
    :param candidate: the pinned candidate policy.
    :param metrics: ``gaelp_candidate_decisions_total``; refusals in ``gaelp_errors_total``.
    """

    def __init__(self, cfg: GaelpConfig, candidate: AgentServer, metrics: Metrics) -> None:
        self.cfg, self.candidate, self.metrics = cfg, candidate, metrics
        self.sample = cfg.serve.candidate_sample
        self._budget_usd = cfg.budget.daily_usd
        self._canary_share = cfg.serve.canary_share
        self._slot: tuple[int, int] | None = None
        self.refused = 0
        """Logged decisions of another state layout (not replayable by the candidate)."""

    def score(self, logged: Sequence[Decision]) -> list[Decision]:
        """The candidate's decisions on the live decisions of ``logged`` (in order; the sample is
        the partitions the caller read, :func:`sampled_partitions`)."""
        spec, version = self.candidate.spec, self.candidate.version
        picked = [d for d in logged if self.wants(d)]
        rows, keep = [], []
        for d in picked:
            x = state_values(d)
            if len(x) != spec.logged_dim:
                self.refused += 1
                self.metrics.errors.labels("candidate_layout").inc()
                log.warning("decision %s was logged with %d values, candidate v%d reads %d: not scored",
                            d.id, len(x), version, spec.logged_dim)
                continue
            rows.append(x)
            keep.append(d)
        out: list[Decision] = []
        start = 0
        for end in range(1, len(keep) + 1):  # one batch per budget slot (its multiplier action)
            if end == len(keep) or self._slot_of(keep[end].event_time) != self._slot_of(keep[start].event_time):
                out += self._score_slot(keep[start:end], np.asarray(rows[start:end], np.float32))
                start = end
        self.metrics.candidate_decisions.inc(len(out))
        return out

    @property
    def selective(self) -> bool:
        """Some records read are left out (worth a :class:`LoggedHead` decode before the full one)."""
        return self._canary_share > 0

    def wants(self, d: Decision | LoggedHead) -> bool:
        """A live decision, not decided live by the candidate itself (its canary)."""
        return not d.shadow and not self._canary(d)

    def _canary(self, d: Decision | LoggedHead) -> bool:
        """Decided live by the candidate itself (its ``[serve] canary_share`` of persons)."""
        return self._canary_share > 0 and bucket(d.person_id, "canary") < self._canary_share

    def _slot_of(self, t: int) -> tuple[int, int]:
        return t // DAY_MS, int((t % DAY_MS) * self.candidate.cfg.slots_per_period // DAY_MS)

    def _enter_slot(self, t: int, pacing: np.ndarray) -> None:
        """The candidate's multiplier for the slot: its Q-network on the slot's logged pacing
        features with its own multiplier level (the dual rule: the level logged, as both pace alike)."""
        slot = self._slot_of(t)
        if self._slot is not None and slot <= self._slot:  # partitions interleave: a late record keeps the slot in force
            return
        agent = self.candidate.agent
        if self._slot is not None and slot[0] != self._slot[0]:
            agent.start_period()
        features = pacing.copy()
        if self.candidate.dual is not None:
            agent.z = agent.z_base = 2.0 * float(features[_LOG_MULTIPLIER])
            adjustments = self.candidate.cfg.dqn.adjustments
            agent.mult_index, agent.slot_prob = adjustments.index(0.0) if 0.0 in adjustments else 0, 1.0
        else:
            features[_LOG_MULTIPLIER] = agent.z_base / 2
            agent.begin_slot(features)
        self._slot = slot

    def _score_slot(self, live: list[Decision], logged: np.ndarray) -> list[Decision]:
        server, spec = self.candidate, self.candidate.spec
        agent, ix = server.agent, spec.index
        batch, pacing = spec.unpack(logged)
        self._enter_slot(live[0].event_time, pacing[0])
        state = batch.state
        state[:, ix["pacing_factor"]] = min(1.0, max(-1.0, agent.z / 2))
        state[:, ix["slot_action_prob"]] = agent.slot_prob
        if server.cfg.segment_profile:  # the person's logged context counts, under the candidate's segment model
            first = ix["context_count_0"]
            counts = state[:, first:first + agent.segment_model.contexts]
            state[:, spec.cols("segment_")] = agent.segment_model.posterior(counts)
        mask = state[:, ix["avail_organic"]:ix["avail_social"] + 1] > 0.5
        mask[~mask.any(1), 2] = True
        floor = state[:, ix["floor"]].astype(np.float64) * 10.0
        left = state[:, ix["budget_left"]].astype(np.float64) * self._budget_usd
        t = np.array([d.event_time for d in live], np.int64)
        arms = arm_mask(spec, state)
        cat = None if server.catalogue is None else server.catalogue.current(int(t[0]))
        eligible: Callable[[np.ndarray], np.ndarray] | None = None
        if cat is not None or arms is not None:
            def eligible(ch: np.ndarray) -> np.ndarray:  # as the bidder masks them (and the learner replays)
                every = np.ones((len(live), spec.creatives), bool) if cat is None else cat.mask(t, ch, spec.creatives)
                return restrict_to_arms(every, arms)
        acts = agent.act(batch, mask, floor, left, explore=True, creative_mask=eligible)
        vectors = encoded_states(spec.pack(batch, pacing[0]))
        out = []
        for k, d in enumerate(live):
            channel = CHANNELS[int(acts.channel[k])]
            if d.no_bid_reason in _REQUEST_REASONS:
                reason: str | None = d.no_bid_reason
            elif channel == "organic":
                reason = None
            elif d.no_bid_reason == "pacing":  # the ledger's pacing rail stops either policy
                reason = "pacing"
            else:
                reason = NO_BID_REASONS[int(acts.no_bid[k])] if int(acts.no_bid[k]) != BID else None
            # The price it would have bid is logged (never sent: bid=False, shadow=True), so an outside
            # bidder's log can be compared with it by bid bucket (evaluation/ope_outside.py).
            price = usd_to_micros(float(acts.bid_cpm_usd[k])) if reason is None and channel != "organic" else 0
            out.append(msgspec.structs.replace(
                d, state=vectors[k], propensity=float(acts.propensity[k]), model_version=acts.version,
                action=Action(bid_cpm_micros=price, creative=int(acts.creative[k]), channel=channel,
                              segment=int(acts.target[k]), multiplier=acts.mult_index),
                value_estimate_micros=usd_to_micros(float(acts.value_usd[k])), bid=False,
                no_bid_reason=reason or "shadow", shadow=True))
        return out
