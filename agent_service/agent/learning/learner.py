"""The hybrid agent's learner: owns every trainable part and publishes versioned weights.

Parts, each with its own loss and optimiser:

* the per-opportunity :class:`~agent_service.agent.model.networks.HybridNet` (journey LSTM, policy
  heads, critic, click model) trained by :class:`~agent_service.agent.learning.ppo.PPOLearner`;
* the bid-multiplier :class:`~agent_service.agent.learning.dqn.DQNLearner` (slot transitions);
* the Chapelle delayed-conversion model (p̂(conversion | click) behind v̂ and R_delayed),
  trained on censored labels by :class:`~agent_service.delay.DelayedFeedbackLearner`;
* :class:`~agent_service.agent.model.state.CampaignStats` (creative CTR/CVR, competition, A/B arms).

Experience arrives as decisions (state, action, logged propensity), then outcomes (won,
price, click), credits (attributed conversion value, days later) and window closings, all
keyed by decision id (:class:`~agent_service.agent.learning.buffers.DecisionTable`). Every
``update_every`` new decisions the learner refreshes R_delayed of pending clicked decisions
from the delay model (what is known *now*), assembles a rollout — the newest decisions and a
sample of older ones whose reward is realised — computes GAE over each person's journey and
runs a PPO update, then publishes. Diverged updates are rejected and not published.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np
import torch

from agent_service.agent.learning import reward as rw
from agent_service.agent.learning.buffers import DecisionRows, DecisionTable, SlotTransition
from agent_service.agent.learning.dqn import DQNLearner, DQNStats
from agent_service.agent.learning.ppo import (
    PolicyBatch,
    PPOLearner,
    PPOStats,
    compute_gae,
    creative_bonus,
    discounted_returns,
)
from agent_service.agent.model.conversion import ConversionEstimate
from agent_service.agent.model.networks import HybridNet
from agent_service.agent.model.state import CampaignStats, StateSpec, arm_mask
from agent_service.agent.model.stats import landscape_context
from agent_service.agent.serving.hybrid import (
    STATE_FORMAT,
    HybridConfig,
    check_layout,
    conv_features,
    n_conv_features,
    net_dims,
    stats_of,
)
from agent_service.config import RewardConfig
from agent_service.creatives import Catalogue, restrict_to_arms
from agent_service.delay.learner import DelayedFeedbackLearner
from agent_service.delay.model import DelayedConversionModel
from agent_service.money import MICROS_PER_USD
from agent_service.pacing import PACING_FEATURES
from agent_service.ports.registry import ModelRegistry
from agent_service.units import DAY_S

__all__ = ["HybridLearner", "LearnerStats"]



class LearnerStats(NamedTuple):
    """One policy update, as reported to metrics and learning curves."""

    version: int
    decisions: int
    mean_reward: float
    ppo: PPOStats
    dqn_td_loss: float
    dqn_mean_q: float
    conv_nll: float
    rejected: bool

    @property
    def loss(self) -> float:
        """The policy loss (the skeleton's ``UpdateStats.loss``)."""
        return self.ppo.policy_loss


class _RunningStd:
    """Running standard deviation of rewards (Welford), for scale-free critic targets."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        """Fold in a batch (Chan et al.'s parallel update); non-finite values are skipped."""
        x = np.asarray(x, dtype=np.float64)
        x = x[np.isfinite(x)]
        if not len(x):
            return
        n, mean, m2 = len(x), float(x.mean()), float(((x - x.mean()) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n > 1 and self.m2 > 0 else 1.0


class HybridLearner:
    """See the module docstring.

    :param spec: state layout. :param cfg: agent settings. :param reward: reward weights.
    :param registry: where versions are published (None: ``state()`` only).
    :param seed: seeds every initialisation and sampling stream.
    """

    def __init__(self, spec: StateSpec, cfg: HybridConfig, reward: RewardConfig,
                 registry: ModelRegistry | None = None, seed: int = 0) -> None:
        self.spec, self.cfg, self.reward_cfg, self.registry = spec, cfg, reward, registry
        self.dims = net_dims(spec, cfg)
        self.catalogue: Catalogue | None = None
        """The creative catalogue (eligibility by time and channel); None: every creative, always."""
        self.segment_fit: dict[str, Any] | None = None
        """The segment model served with the weights (``SegmentLearner.state()``; None: none fitted yet)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = HybridNet(*self.dims)
        self.ppo = PPOLearner(self.net, cfg.ppo, seed=seed + 1)
        self.dqn = DQNLearner(len(PACING_FEATURES), cfg.dqn, seed=seed + 2)
        self.conv = DelayedConversionModel(n_conv_features(spec), cfg.delay_config(seed + 3))
        self.conv_learner = DelayedFeedbackLearner(self.conv)
        self.conv_est = ConversionEstimate(self.conv, cfg.conv_prior_rate, cfg.conv_prior_delay_days,
                                           cfg.conv_prior_strength)
        self.stats = stats_of(spec, cfg)
        self.table = DecisionTable(cfg.decision_window)
        self.rng = np.random.default_rng(seed + 4)
        self.reward_std = _RunningStd()
        self.version = 0
        self.rejected = 0
        self.history: list[LearnerStats] = []
        self._new = 0
        self._dqn_stats: list[DQNStats] = []
        self._conv_nll = float("nan")
        self._rounds = 0
        self._now_ms = 0
        self.transitions_trained = 0

    # ================================================================ experience in (plumbing)
    def add_decisions(self, keys: list[str], rows: DecisionRows) -> None:
        """Log decisions (their reward columns are filled by the calls below)."""
        before = self.table.added
        self.table.add(keys, rows)
        self._new += self.table.added - before

    def add_outcomes(self, keys: list[str], won: np.ndarray, cost_usd: np.ndarray, clicked: np.ndarray,
                     multiplier: np.ndarray, event_time_ms: np.ndarray, creative: np.ndarray,
                     variant: np.ndarray, bid: np.ndarray, position: np.ndarray | None = None) -> None:
        """Auction results and clicks of logged decisions: R_immediate, statistics, delay touches.

        :param bid: the bid sent [N], CPM USD (0: none; organic); the landscape learns from it
            (a win reveals ``cost_usd``, a loss only that the price was above the bid).
        :param position: slot won [N] (1 = top; 0 where none or lost); None: no positions known."""
        won = won.astype(bool)
        clicked = clicked.astype(bool) & won
        imm = rw.immediate(self.reward_cfg, clicked, np.where(won, cost_usd, 0.0), multiplier,
                           None if position is None else np.where(won, position, 0))
        self.table.update(keys, "immediate", imm.astype(np.float32))
        self.table.update(keys, "won", won)
        self.table.update(keys, "clicked", clicked)
        held = self.table.slots(keys) if len(keys) else np.zeros(0, np.int64)
        channel = self.table.column("channel", held) if len(held) == len(keys) else None
        device = self._device(held) if channel is not None else None
        self.stats.observe(creative, variant, bid, won, np.where(won, cost_usd * MICROS_PER_USD, 0.0), clicked, channel,
                           device)
        if channel is not None and device is not None:
            self.stats.observe_auctions(landscape_context(channel, device, event_time_ms), bid, won,
                                        np.asarray(cost_usd, np.float64) * 1000.0)  # CPM USD
        if len(held) == len(keys) and won.any():
            seg = self.table.column("state", held[won])[:, self.spec.cols("segment_")]
            self.stats.observe_segment_impressions(creative[won], seg)
        clicked_held = [int(i) for i in np.flatnonzero(clicked) if self.table.has(keys[i])]
        if clicked_held:
            rows = self.table.rows(self.table.slots([keys[i] for i in clicked_held]))
            x = conv_features(self.spec, rows.state, rows.channel)
            for j, i in enumerate(clicked_held):
                self.conv_learner.add_touch(keys[i], x[j], int(event_time_ms[i]))
        if self.reward_cfg.alpha_diversity > 0:
            self._diversity(keys, won, cost_usd)

    def add_clicks(self, keys: list[str], event_time_ms: np.ndarray) -> None:
        """Clicks reported after their outcome (the stream sends them as separate records)."""
        held = [i for i, k in enumerate(keys) if self.table.has(k)]
        if not held:
            return
        ks = [keys[i] for i in held]
        slots = self.table.slots(ks)
        rows = self.table.rows(slots)
        fresh = ~rows.clicked
        if not fresh.any():
            return
        ks = [k for k, f in zip(ks, fresh, strict=True) if f]
        self.table.update(ks, "clicked", np.ones(len(ks), bool))
        self.table.update(ks, "immediate", np.full(len(ks), self.reward_cfg.click_value_usd, np.float32), add=True)
        self.stats.observe_clicks(rows.creative[fresh], rows.channel[fresh], self._device_of(rows.state[fresh]))
        x = conv_features(self.spec, rows.state[fresh], rows.channel[fresh])
        times = np.asarray(event_time_ms)[held][fresh]
        for j, k in enumerate(ks):
            self.conv_learner.add_touch(k, x[j], int(times[j]))

    def add_credit(self, keys: list[str], credit_usd: np.ndarray, conversion_time_ms: np.ndarray,
                   value_usd: np.ndarray | None = None) -> None:
        """Attributed conversion value reaching decisions (R_attribution), and the delay labels
        (each conversion — the journey and its time — labels its last credited click)."""
        self.table.update(keys, "attribution", np.asarray(credit_usd, np.float32), add=True)
        held = np.array([self.table.has(k) for k in keys], dtype=bool)
        slots = self.table.slots(keys)
        journey = self.table.column("episode", slots) if len(slots) else np.zeros(0, np.int64)
        conv_id = iter(f"{j}:{t}" for j, t in zip(journey.tolist(), np.asarray(conversion_time_ms)[held].tolist(),
                                                   strict=True))
        for k, t, h in zip(keys, conversion_time_ms, held.tolist(), strict=True):
            self.conv_learner.add_conversion(k, int(t), next(conv_id) if h else None)
        if len(slots):
            creative = self.table.column("creative", slots)
            segments = self.table.column("state", slots)[:, self.spec.cols("segment_")]
            vals = np.asarray(value_usd if value_usd is not None else credit_usd, dtype=np.float64)[held]
            self.stats.observe_conversions(creative, vals, segments, self.table.column("channel", slots),
                                           self._device(slots))

    def finalise(self, keys: list[str]) -> None:
        """Windows closed: the reward is realised, nothing more is expected."""
        self.table.update(keys, "final", np.ones(len(keys), bool))
        self.table.update(keys, "delayed", np.zeros(len(keys), np.float32))

    def add_slots(self, batch: SlotTransition) -> None:
        """Bid-multiplier transitions (one per budget slot); trains the Q-network as they come."""
        self._dqn_stats.extend(self.dqn.observe(batch))

    def end_period(self) -> None:
        self.stats.end_period()

    def _device(self, slots: np.ndarray) -> np.ndarray:
        """Device class of held decisions (from their logged state)."""
        return self._device_of(self.table.column("state", slots))

    def _device_of(self, state: np.ndarray) -> np.ndarray:
        ix = self.spec.index
        return np.asarray(state[:, ix["device_mobile"]:ix["device_other"] + 1].argmax(1), np.int64)

    def _diversity(self, keys: list[str], won: np.ndarray, cost_usd: np.ndarray) -> None:
        slots = self.table.slots(keys)
        if not len(slots):
            return
        rows = self.table.rows(slots)
        exp_col = self.spec.cols("exposures_")
        exposures = np.expm1(rows.state[:, exp_col] * np.log1p(self.spec.max_touches))
        before = np.round(exposures[np.arange(len(slots)), rows.creative])
        vpc = np.where(rows.channel == 0, 2.0, 1.0)  # organic is free: the most efficient
        div = np.where(rows.won, rw.diversity(self.reward_cfg, before, vpc, 1.0), 0.0)
        self.table.update([k for k in keys if self.table.has(k)], "diversity", div.astype(np.float32))

    # ================================================================ training (logic)
    def maybe_update(self, now_ms: int, at_least: int | None = None) -> LearnerStats | None:
        """Update and publish when ``at_least`` (default ``update_every``) new decisions arrived
        since the last update and the table holds a minibatch."""
        if self._new < (self.cfg.update_every if at_least is None else at_least) \
                or len(self.table) < self.cfg.ppo.minibatch:
            return None
        return self.update(now_ms)

    def refresh_delayed(self, now_ms: int) -> None:
        """R_delayed of every pending clicked decision, from the delay model as of ``now_ms``."""
        if not len(self.table):
            return
        slots = self.table.recent(len(self.table))
        col = self.table.column  # only the fields read: a full table's states and touches are large
        pending = col("clicked", slots) & ~col("final", slots) & (col("attribution", slots) <= 0)
        delayed = np.zeros(len(slots), np.float32)
        if pending.any():
            held = slots[pending]
            state = col("state", held)
            x = conv_features(self.spec, state, col("channel", held))
            elapsed_s = np.maximum(now_ms - col("time_ms", held), 0) / 1000.0
            p = self.conv_est.p_pending(x, elapsed_s, self.cfg.window_days * float(DAY_S))
            value = self.stats.value_for(state[:, self.spec.cols("segment_")], self.cfg.value_prior_usd)
            delayed[pending] = rw.delayed(p, value)
        self.table.set_column(slots, "delayed", delayed)

    def update(self, now_ms: int) -> LearnerStats:
        """One round: delay model steps, R_delayed refresh, rollout, GAE, PPO, publish."""
        self._now_ms = max(self._now_ms, now_ms)
        self._conv_nll = self.conv_learner.step(now_ms, steps=8)
        self._rounds += 1
        if self.cfg.conv_refit_every and self._rounds % self.cfg.conv_refit_every == 0:
            self._conv_nll = self.conv_learner.fit(now_ms)
        self.conv_est.refresh(self.conv_learner, now_ms)
        self.refresh_delayed(now_ms)
        batch, n, mean_r = self._rollout()
        stats = self.ppo.update(batch)
        self._new = 0
        td = [s for s in self._dqn_stats if not s.rejected]
        dq_loss = float(np.mean([s.td_loss for s in td])) if td else float("nan")
        dq_q = float(np.mean([s.mean_q for s in td])) if td else float("nan")
        self._dqn_stats = []
        if stats.rejected:
            self.rejected += 1
        else:
            self.transitions_trained += n * (1 if self.cfg.ppo.algorithm == "reinforce" else self.cfg.ppo.epochs)
            self.publish()
        out = LearnerStats(self.version, n, mean_r, stats, dq_loss, dq_q, self._conv_nll, stats.rejected)
        self.history.append(out)
        return out

    def _rollout(self) -> tuple[PolicyBatch, int, float]:
        """Newest decisions plus a sample of older ones; GAE over journeys (see ``compute_gae``)."""
        cfg = self.cfg.ppo
        size = len(self.table)
        newest = self.table.recent(min(size, cfg.rollout // 2 if size > cfg.rollout else cfg.rollout))
        older_pool = size - len(newest)
        older = np.array([], dtype=np.int64)
        if older_pool > 0:
            all_slots = self.table.recent(size)[:older_pool]
            take = min(older_pool, cfg.rollout - len(newest))
            older = self.rng.choice(all_slots, size=take, replace=False)
        slots = np.concatenate([older, newest])
        rows = self.table.rows(slots)
        r = rw.total(self.reward_cfg, rows.immediate, rows.attribution, rows.delayed, rows.diversity)
        self.reward_std.update(r[-len(newest):])
        r = r / self.reward_std.std
        order = np.lexsort((rows.time_ms, rows.episode))
        rows = DecisionRows(*(np.asarray(c)[order] for c in rows))
        r = r[order]
        t = self._tensors(rows)
        with torch.no_grad():
            values = torch.cat([self.net(t[0][i:i + 4096], t[1][i:i + 4096], t[2][i:i + 4096]).value
                                for i in range(0, len(r), 4096)]).numpy().astype(np.float64)
        end = np.append(rows.episode[1:] != rows.episode[:-1], True)
        terminated = end & rows.final
        next_values = np.where(end, values, np.append(values[1:], 0.0))  # truncated: bootstrap from V(s_t)
        if cfg.algorithm == "ppo":
            adv, ret = compute_gae(r, values, next_values, terminated, end, cfg.gamma, cfg.gae_lambda)
        else:
            ret = discounted_returns(r, end, cfg.gamma)
            adv = (ret - ret.mean()) / (ret.std() + 1e-8)
        segments = rows.state[:, self.spec.cols("segment_")]
        vbar = self.stats.value_for(segments, self.cfg.value_prior_usd)
        scale = np.stack([self.conv_est.p_eventual(conv_features(self.spec, rows.state, np.full(len(r), ch)))
                          for ch in range(3)], axis=1) * vbar[:, None]
        n_c = self.stats.impressions
        trust = np.tile(n_c / (n_c + cfg.creative_prior_impressions + 1e-9), (len(r), 1))
        win = np.tile(self.stats.channel_win_rate(), (len(r), 1))
        kappa = 1.0 / np.exp(2.0 * rows.state[:, self.spec.index["pacing_factor"]]) if self.reward_cfg.shadow_price \
            else np.ones(len(r))
        cost = win * self.stats.channel_price_usd()[None, :] * kappa[:, None]
        bonus = creative_bonus(self.stats.impressions_for(segments), self.stats.campaign_ctr(), cfg.creative_optimism)
        batch = PolicyBatch(*t, torch.as_tensor(rows.creative), torch.as_tensor(rows.channel),
                            torch.as_tensor(rows.target), torch.as_tensor(rows.logp_behaviour, dtype=torch.float32),
                            torch.as_tensor(adv, dtype=torch.float32), torch.as_tensor(ret, dtype=torch.float32),
                            torch.as_tensor(rows.won), torch.as_tensor(rows.clicked, dtype=torch.float32),
                            torch.as_tensor(scale, dtype=torch.float32), torch.as_tensor(trust, dtype=torch.float32),
                            torch.as_tensor(win, dtype=torch.float32), torch.as_tensor(cost, dtype=torch.float32),
                            torch.as_tensor(bonus, dtype=torch.float32),
                            torch.as_tensor(self._creative_mask(rows.time_ms, rows.channel, rows.state)))
        return batch, len(r), float(np.mean(r) * self.reward_std.std)

    @staticmethod
    def _tensors(rows: DecisionRows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.as_tensor(rows.state, dtype=torch.float32), torch.as_tensor(rows.touches, dtype=torch.float32),
                torch.as_tensor(rows.touch_creatives), torch.as_tensor(rows.channel_mask))

    def _creative_mask(self, time_ms: np.ndarray, channel: np.ndarray, state: np.ndarray) -> np.ndarray:
        """The creative mask each decision was sampled under: the catalogue's, within the person's
        experiment arm as logged in the state (so the PPO ratio compares like with like)."""
        C = self.spec.creatives
        eligible = np.ones((len(time_ms), C), bool) if self.catalogue is None else self.catalogue.mask(time_ms, channel, C)
        return restrict_to_arms(eligible, arm_mask(self.spec, state))

    def set_catalogue(self, catalogue: Catalogue) -> list[int]:
        """Use ``catalogue`` from now on; creatives new to it start their click model from the mean
        of the creatives already known (a prior, not a blank). Returns the new slots."""
        known = len(self.catalogue) if self.catalogue is not None else len(catalogue)
        new = list(range(known, len(catalogue)))
        net = self.net
        if new and known > 0 and hasattr(net, "appeal"):
            with torch.no_grad():
                net.appeal[:, new] = net.appeal[:, :known].mean(dim=1, keepdim=True)
                net.creative_bias[new] = net.creative_bias[:known].mean()
        self.catalogue = catalogue
        return new

    # ================================================================ weights out (plumbing)
    def state(self) -> dict[str, Any]:
        """Everything a :class:`~agent_service.agent.serving.hybrid.HybridAgent` serves, as one state dict."""
        return {"format": STATE_FORMAT, "dims": self.dims, "layout": self.spec.layout_id,
                "net": copy.deepcopy(self.net.state_dict()),
                "q": self.dqn.weights(), "conv": self.conv_est.state(), "stats": self.stats.state(),
                "dqn_eps": self.cfg.dqn.epsilon(self.dqn.transitions), "segments": self.segment_fit}

    def publish(self) -> int:
        """Publish the current weights as a new version (to the registry when there is one)."""
        if self.registry is not None:
            self.version = self.registry.publish(self.state())
        else:
            self.version += 1
        return self.version

    def load_checkpoint(self, ck: dict[str, Any]) -> None:
        """Resume from :meth:`checkpoint` (weights, optimisers, statistics, version)."""
        check_layout(self.spec, self.dims, ck, "checkpoint")
        self.net.load_state_dict(ck["net"])
        self.dqn.load_weights(ck["q"])
        self.dqn.target.load_state_dict(ck["target_q"])
        self.ppo.optim.load_state_dict(ck["ppo_optim"])
        self.dqn.optim.load_state_dict(ck["dqn_optim"])
        self.dqn.transitions = int(ck.get("dqn_transitions", 0))
        self.conv.load_state_dict(ck["conv"]["model"])
        self.conv_est.matured = float(ck["conv"]["matured"])
        if "conv_evidence" in ck:  # the labelled clicks behind the conversion model (refits keep them)
            self.conv_learner.restore(ck["conv_evidence"])
        self.stats = CampaignStats.from_state(ck["stats"])
        self.segment_fit = ck.get("segments")
        self.version = int(ck["version"])

    def adopt(self, state: dict[str, Any]) -> None:
        """Continue from a published version's serving weights (after a rollback), so the next
        version grows from the restored model rather than the one rolled back from. Optimiser
        moments are reset (they belong to the abandoned trajectory); the decision table, replay
        buffer and campaign statistics are observations, not the bad model, and are kept."""
        check_layout(self.spec, self.dims, state, "published version")
        self.net.load_state_dict(state["net"])
        self.dqn.load_weights(state["q"])
        self.segment_fit = state.get("segments", self.segment_fit)
        self.conv.load_state_dict(state["conv"]["model"])
        self.conv_est.matured = float(state["conv"]["matured"])
        self.ppo.reset_optimiser()
        self.dqn.reset_optimiser()

    def resume(self, state: dict[str, Any]) -> None:
        """Start from a published version (a restarted learner): its weights as :meth:`adopt`, and
        its campaign statistics, which this learner has not observed yet. Its decision table and
        conversion labels start empty and fill from the experience topic."""
        self.adopt(state)
        self.stats = CampaignStats.from_state(state["stats"])

    def checkpoint(self) -> dict[str, Any]:
        """Serving state plus optimiser and target-network state (resumable training)."""
        return {**self.state(), "target_q": copy.deepcopy(self.dqn.target.state_dict()),
                "ppo_optim": self.ppo.optim.state_dict(), "dqn_optim": self.dqn.optim.state_dict(),
                "dqn_transitions": self.dqn.transitions, "version": self.version,
                "conv_evidence": self.conv_learner.snapshot(self._now_ms)}
