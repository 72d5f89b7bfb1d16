"""The hybrid agent's serving side: batched decisions from one weight version at a time.

Per opportunity (milliseconds), for a batch of B opportunities with one network version:

1. the LSTM encodes the journey's last touches; with the enriched state it feeds the policy
   heads, which sample creative × channel × target (ε-mixed, propensity logged); the creative
   follows the click model (softmax of β × its creative logit plus an optimism bonus,
   :func:`agent_service.agent.learning.ppo.creative_logits`);
2. the value of an impression of the chosen creative on the chosen channel is
   ``v̂ = p̂(click) · p̂(conversion | click) · v̄`` — the click model's sigmoid, the delay model's
   eventual-conversion probability and the posterior-mean conversion value: calibrated means,
   never optimistic samples (the winner's curse);
3. the bid is ``clip(m · v̂, max(floor, $0.50), $10.00)`` CPM, no bid when ``m · v̂`` is under
   the floor or the channel is organic (no auction), never more than the budget left.

Per budget slot (``begin_slot``), a dual-gradient step keeps the level of the log multiplier on
the spend plan and the Q-network adds an ε-greedy offset for the slot (:meth:`HybridAgent.begin_slot`).

Weights come from the learner as a state dict (``load_state``) or from a model registry
(``sync`` swaps in a newer version only); the serving network is replaced by one reference
swap so every batch is decided by a single version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from agent_service.agent.learning.dqn import epsilon_greedy
from agent_service.agent.learning.ppo import creative_bonus
from agent_service.agent.model.conversion import ConversionEstimate
from agent_service.agent.model.networks import BidQNet, HybridNet
from agent_service.agent.model.opportunity import CONTEXT_BUCKETS
from agent_service.agent.model.segment_em import segment_model_of
from agent_service.agent.model.segments import SegmentModel
from agent_service.agent.model.state import CampaignStats, StateBatch, StateSpec
from agent_service.config.agent import HybridConfig
from agent_service.delay.model import DelayedConversionModel
from agent_service.errors import ModelError
from agent_service.pacing import PACING_FEATURES
from agent_service.ports.registry import ModelRegistry
from agent_service.pricing import BidLimits, price

__all__ = ["STATE_FORMAT", "AgentActs", "HybridAgent", "HybridConfig", "PreparedVersion", "check_layout", "conv_features",
           "n_conv_features", "stats_of"]

STATE_FORMAT = 1
"""Version of the published state dict's layout."""


_EYE3 = np.eye(3)
"""One-hot rows of the three channels (read-only, indexed per batch)."""
_EYE3.flags.writeable = False


def conv_features(spec: StateSpec, state: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Features of p̂(conversion | click): segment posterior, device, journey stage and depth
    (stage, touches, clicks, recency), the channels offered (paid search is offered more to
    people further along), the hour, and the channel of the touch.

    :param state: [B, D] state vectors. :param channel: [B] channel index.
    :returns: float64 [B, K + 17].
    """
    ix = spec.index
    cols = [state[:, spec.cols("segment_")],
            state[:, ix["device_mobile"]:ix["device_other"] + 1],
            state[:, ix["stage_awareness"]:ix["recency"] + 1],
            state[:, ix["avail_organic"]:ix["avail_social"] + 1],
            state[:, ix["hour_sin"]:ix["hour_cos"] + 1],
            _EYE3[channel]]
    return np.concatenate(cols, axis=1).astype(np.float64)


def n_conv_features(spec: StateSpec) -> int:
    return spec.segments + 17




class AgentActs(NamedTuple):
    """Decisions for B opportunities (numpy arrays of shape [B] unless noted)."""

    creative: np.ndarray
    channel: np.ndarray
    target: np.ndarray
    p_click: np.ndarray
    """p̂(click) of the chosen creative on the chosen channel."""
    value_usd: np.ndarray
    """v̂: expected conversion value of one impression, USD."""
    bid_cpm_usd: np.ndarray
    """The bid, CPM USD; 0 = no bid (organic, under the floor, or over the budget left)."""
    no_bid: np.ndarray
    """int8 [B] why not (:data:`agent_service.pricing.NO_BID_REASONS`; 0 = a bid)."""
    propensity: np.ndarray
    """Probability of the whole action (creative × channel × target × the slot's multiplier action)."""
    logp_policy: np.ndarray
    """log π(creative, channel, target | s) (without the slot factor)."""
    multiplier: float
    """m = e^z in force for the batch."""
    mult_index: int
    """The slot's multiplier action."""
    version: int


class PreparedVersion(NamedTuple):
    """A published version checked and built, ready to be swapped in (``HybridAgent.adopt``)."""

    version: int
    net: HybridNet
    q: BidQNet
    conv: ConversionEstimate
    stats: CampaignStats
    dqn_eps: float
    segments: SegmentModel | None = None
    """The segment model published with the weights (None: the version has none; the one served stays)."""


class HybridAgent:
    """Inference only: serves one weight version per batch (see the module docstring).

    :param spec: state layout.
    :param cfg: agent settings.
    :param registry: where the learner publishes versions (None: weights via ``load_state``).
    :param seed: seeds action sampling.
    """

    def __init__(self, spec: StateSpec, cfg: HybridConfig, registry: ModelRegistry | None = None,
                 seed: int = 0) -> None:
        self.spec = spec
        self.cfg = cfg
        self.registry = registry
        self.rng = np.random.default_rng(seed)
        self.dims = net_dims(spec, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = HybridNet(*self.dims).eval()
            self.q = BidQNet(len(PACING_FEATURES), cfg.dqn.n_actions, cfg.dqn.hidden).eval()
        self.conv = self._conv_estimate(DelayedConversionModel(n_conv_features(spec), cfg.delay_config()), 0.0)
        self.stats = stats_of(spec, cfg)
        self.version = 0
        self.dqn_eps = cfg.dqn.eps_start
        self.segment_model = SegmentModel.uniform(CONTEXT_BUCKETS, spec.segments)
        """``P(segment | context)`` the service's decisions use: no information until the learner
        publishes a fitted model with a version (``agent/model/segment_em.py``)."""
        self.z_base = cfg.dqn.z_init
        """The dual-paced level of the log multiplier."""
        self.z = cfg.dqn.z_init
        """The log multiplier in force (the level plus the slot's offset)."""
        self.mult_index = cfg.dqn.adjustments.index(0.0) if 0.0 in cfg.dqn.adjustments else 0
        self.limits = BidLimits(cfg.bid_min_usd, cfg.bid_max_usd)
        self.dqn_offset = True
        """False: the Q-network's per-slot offset is held at 0 (an ablation, ``lab/ablations.py``)."""
        self.slot_prob = 1.0
        self.bid_scale = 1.0
        """Bids times this before the limits: 3.0 makes a candidate that overbids threefold (a bad
        candidate a simulated canary should roll back, ``runtime/sim_canary.py``); 1 everywhere else."""
        self._adj = np.asarray(cfg.dqn.adjustments)

    # ---------------------------------------------------------------- weights (plumbing)
    @torch.no_grad()
    def warmup(self) -> None:
        """Run one dummy forward: torch initialises its LSTM kernels on the first call (tens to
        hundreds of ms), which must not land on a live request."""
        L, spec = self.spec.max_touches, self.spec
        self.net(torch.zeros(1, spec.dim), torch.zeros(1, L, spec.touch_dim),
                 torch.full((1, L), spec.creatives, dtype=torch.int64))

    def load_state(self, state: dict[str, Any], version: int) -> bool:
        """Swap in a published state if ``version`` is newer; True if swapped."""
        if version <= self.version:
            return False
        return self.adopt(self.prepare(state, version))

    def prepare(self, state: dict[str, Any], version: int) -> PreparedVersion:
        """Check a published state and build its parts, touching nothing that serves (so a
        bidder may do this off its event loop, then ``adopt`` on it).

        :raises ModelError: the layout differs from the one served, or a weight is not finite.
        """
        check_layout(self.spec, self.dims, state, f"model version {version}")
        for part in ("net", "q"):
            for name, w in state[part].items():
                if not torch.isfinite(w).all():
                    raise ModelError(f"weight {part}.{name} of version {version} is not finite")
        net = HybridNet(*self.dims).eval()
        net.load_state_dict(state["net"])
        q = BidQNet(len(PACING_FEATURES), self.cfg.dqn.n_actions, self.cfg.dqn.hidden).eval()
        q.load_state_dict(state["q"])
        model = DelayedConversionModel(n_conv_features(self.spec), self.cfg.delay_config())
        model.load_state_dict(state["conv"]["model"])
        conv = self._conv_estimate(model, float(state["conv"]["matured"]))
        fit = state.get("segments")
        try:
            segments = None if fit is None else segment_model_of(fit, self.spec.segments)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model version {version} has a malformed segment model: {exc}") from exc
        if segments is not None and segments.contexts != CONTEXT_BUCKETS:
            raise ModelError(f"model version {version} has a segment model of {segments.contexts} contexts, "
                             f"serving {CONTEXT_BUCKETS}")
        stats = CampaignStats.from_state(state["stats"])
        stats.derived()  # the state's figures (the landscape's curves) off the bid path
        return PreparedVersion(version, net, q, conv, stats, float(state.get("dqn_eps", self.dqn_eps)), segments)

    def adopt(self, prepared: PreparedVersion) -> bool:
        """Serve a prepared version if it is newer than the one served; True if swapped."""
        if prepared.version <= self.version:
            return False
        self.net, self.q, self.conv, self.stats = prepared.net, prepared.q, prepared.conv, prepared.stats  # one swap each
        self.dqn_eps = prepared.dqn_eps
        if prepared.segments is not None:
            self.segment_model = prepared.segments
        self.version = prepared.version
        return True

    def _conv_estimate(self, model: DelayedConversionModel, matured: float) -> ConversionEstimate:
        return ConversionEstimate(model, self.cfg.conv_prior_rate, self.cfg.conv_prior_delay_days,
                                  self.cfg.conv_prior_strength, matured)

    def sync(self) -> int:
        """Load the registry's newest version if it is newer; return the version served."""
        if self.registry is not None:
            latest = self.registry.latest_version()
            if latest > self.version:
                self.load_state(self.registry.load(latest), latest)
        return self.version

    # ---------------------------------------------------------------- per budget slot
    def start_period(self, z0: float | None = None) -> None:
        """A new budget period: the dual level restarts at ``z0`` (default: where it is)."""
        if z0 is not None:
            self.z_base = float(np.clip(z0, self.cfg.dqn.z_min, self.cfg.dqn.z_max))

    def begin_slot(self, features: np.ndarray, explore: bool = True) -> tuple[int, float]:
        """Set z for the coming slot from the pacing features; returns (action, its probability).

        With the dual prior (``dual_step > 0``) the level follows the spend plan by integral
        control and the Q-network's action is an offset for this slot only::

            z_base ← clip(z_base − dual_step · clip((slot spend − slot plan) / slot plan, −1, 5))
            z      = clip(z_base + adjustment[a])

        so a biased Q-network can reshape spend over the day but never drag the level away from
        the plan (the integral term absorbs any constant offset). With ``dual_step = 0`` the
        adjustments accumulate into ``z_base`` (pure DRLB).
        """
        with torch.no_grad():
            greedy = self.q(torch.as_tensor(features, dtype=torch.float32)[None]).argmax(1).numpy()
        eps = self.dqn_eps if explore else 0.0
        if eps > 0:
            a, p = epsilon_greedy(greedy, self.cfg.dqn.n_actions, eps, self.rng)
        else:
            a, p = greedy, np.ones(1)
        d = self.cfg.dqn
        adj = float(self._adj[int(a[0])]) if self.dqn_offset else 0.0
        if d.dual_step > 0:
            gap = math.exp(2.0 * float(features[PACING_INDEX["slot_spend_vs_plan"]])) - 1.0  # (spend − plan) / plan
            self.z_base = float(np.clip(self.z_base - d.dual_step * float(np.clip(gap, -1.0, 5.0)), d.z_min, d.z_max))
            self.z = float(np.clip(self.z_base + adj, d.z_min, d.z_max))
        else:
            self.z_base = self.z = float(np.clip(self.z_base + adj, d.z_min, d.z_max))
        self.mult_index, self.slot_prob = int(a[0]), float(p[0])
        return self.mult_index, self.slot_prob

    @property
    def multiplier(self) -> float:
        return math.exp(self.z)

    # ---------------------------------------------------------------- per opportunity
    # No torch.no_grad() here: act is numpy through and through (the one torch call, the LSTM over
    # real touches, has its own in encode_np), and the decorator cost ~10 µs a batch.
    def act(self, batch: StateBatch, channel_mask: np.ndarray, floor_cpm_usd: np.ndarray,
            budget_left_usd: float | np.ndarray, explore: bool = True,
            creative_mask: Callable[[np.ndarray], np.ndarray] | None = None) -> AgentActs:
        """Decide B opportunities with the version in force.

        :param batch: states and touch sequences (:func:`agent_service.agent.model.state.build_states`).
        :param channel_mask: bool [B, 3] channels offered (at least one per row).
        :param floor_cpm_usd: [B] floors. :param budget_left_usd: what may still be reserved.
        :param explore: sample from the policy (True) or take its mode (evaluation).
        :param creative_mask: the creatives eligible given the channel chosen (channel [B] → bool
            [B, C]; the catalogue's, ``agent_service/creatives.py``); None: every creative.
        """
        net, conv, stats, version = self.net, self.conv, self.stats, self.version  # pin one version
        spec, cfg = self.spec, self.cfg
        B = len(batch.state)
        out = net.heads(net.serve_np(batch.state, batch.touches, batch.touch_creatives).astype(np.float64))
        eps, beta = cfg.ppo.explore_eps, cfg.ppo.creative_value_weight
        mask = np.asarray(channel_mask, dtype=bool)
        segments = batch.state[:, spec.cols("segment_")]
        if beta > 0:  # value-guided: the click model's creative logit plus the optimism bonus, which
            # counts the creative's impressions among people of this person's segments
            head = beta * (out.click_creative + creative_bonus(stats.impressions_for(segments), stats.campaign_ctr(),
                                                         cfg.ppo.creative_optimism))
        else:
            head = out.creative_logits
        # One draw of the uniforms for the three samples (channel, creative, target): the same
        # numbers, in the same order, as one draw per sample, for one generator call per batch.
        u = self.rng.random(3 * B) if explore else None
        # the channel first: which creatives may be shown depends on it
        p_channel = _mixed(out.channel_logits, eps, mask)
        channel = _sample(p_channel, u[:B]) if u is not None else p_channel.argmax(1)
        allowed = None if creative_mask is None else creative_mask(channel)
        probs = [_mixed(head, cfg.ppo.creative_eps, allowed), p_channel, _mixed(out.target_logits, eps, None)]
        picks = [_sample(probs[0], u[B:2 * B]) if u is not None else probs[0].argmax(1), channel,
                 _sample(probs[2], u[2 * B:]) if u is not None else probs[2].argmax(1)]
        rows = np.arange(B)
        logp = np.log(np.maximum(probs[0][rows, picks[0]] * probs[1][rows, picks[1]] * probs[2][rows, picks[2]],
                                 1e-300))
        creative, channel, target = picks
        logit = out.click_creative[rows, creative] + out.click_channel[rows, channel]
        p_click = 1.0 / (1.0 + np.exp(-logit))
        p_conv = conv.p_eventual(conv_features(spec, batch.state, channel))
        value = p_click * p_conv * stats.value_for(segments, cfg.value_prior_usd)
        multiplier = self.multiplier
        priced = price(1000.0 * multiplier * self.bid_scale * value, floor_cpm_usd, budget_left_usd, channel, self.limits)
        propensity = np.minimum(np.exp(logp) * self.slot_prob, 1.0) if explore else np.ones(B)
        return AgentActs(creative, channel, target, p_click, value, priced.bid_cpm_usd, priced.reason,
                         np.maximum(propensity, 1e-12), logp, multiplier, self.mult_index, version)


def spec_of(cfg: HybridConfig, creatives: int) -> StateSpec:
    """The state layout of an agent with ``creatives`` creatives."""
    return StateSpec(creatives, cfg.segments, cfg.max_touches, cfg.ab_variants, cfg.window_days, cfg.landscape)


def stats_of(spec: StateSpec, cfg: HybridConfig) -> CampaignStats:
    """Fresh campaign statistics of an agent (the landscape's price grid spans its bid range)."""
    return CampaignStats(spec.creatives, spec.ab_variants, prior_cvr=cfg.conv_prior_rate, segments=spec.segments,
                         price_levels=math.ceil(cfg.bid_max_usd / CampaignStats.price_step - 1e-9) + 1)


def check_layout(spec: StateSpec, dims: tuple[int, ...], state: dict[str, Any], what: str) -> None:
    """Refuse a published state (or checkpoint) of another layout, naming both.

    :raises ModelError: another format, other network widths, or another feature layout (states
        published before the fingerprint are checked by their widths alone).
    """
    layout = state.get("layout", spec.layout_id)
    if state.get("format") != STATE_FORMAT or tuple(state["dims"]) != dims or layout != spec.layout_id:
        raise ModelError(f"{what} has layout {state.get('dims')} (features {layout}), "
                         f"this agent {dims} (features {spec.layout_id})")


def net_dims(spec: StateSpec, cfg: HybridConfig) -> tuple[int, ...]:
    """Arguments of :class:`HybridNet` (targets: the K segments, then "everyone" last)."""
    return (spec.net_dim, spec.touch_dim, spec.creatives, 3, spec.segments + 1, cfg.lstm_hidden, cfg.embed_dim,
            cfg.hidden, spec.cols("segment_").start, spec.cols("exposures_").start)


PACING_INDEX = {name: i for i, (name, _) in enumerate(PACING_FEATURES)}


def _mixed(logits: np.ndarray, eps: float, mask: np.ndarray | None) -> np.ndarray:
    """numpy twin of :func:`agent_service.agent.learning.ppo.mixed_probs` (the serving path is numpy)."""
    if mask is None:  # uniform share eps / n: the same floats as the masked form with every entry allowed
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (1 - eps) * z / z.sum(axis=1, keepdims=True) + eps / float(logits.shape[1])
    logits = np.where(mask, logits, -np.inf)
    allowed = mask.astype(np.float64)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (1 - eps) * z / z.sum(axis=1, keepdims=True) + eps * allowed / allowed.sum(axis=1, keepdims=True)


def _sample(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sample of each row, ``u`` [B] uniform in [0, 1)."""
    cdf = np.cumsum(probs, axis=1)
    return np.minimum((u[:, None] * cdf[:, -1:] > cdf).sum(axis=1), probs.shape[1] - 1)
