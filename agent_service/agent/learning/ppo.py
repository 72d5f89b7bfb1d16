"""PPO for the creative × channel × target policy, with GAE over the person's journey, and
plain REINFORCE as the baseline — the hybrid agent's per-opportunity learner.

The MDP (the journey is the policy's episode): each decision for a person is a
step; the state is the enriched journey state plus the LSTM's code of the last touches; the
action is (creative, channel, target) from three factorised heads, each mixed with ε·uniform
so every propensity is > 0; the reward is the multi-component reward of
:mod:`agent_service.agent.learning.reward`; the episode ends at conversion or when the 14-day window
closes, and a journey cut by the end of the data is truncated (it bootstraps).

PPO loss (Schulman et al. 2017), per decision, with ``ρ = π_θ(a|s) / μ(a|s)`` against the
behaviour probability ``μ`` *as logged* (experience is stale and comes from earlier versions)::

    L_clip = − min(ρ·Â, clip(ρ, 1 − ε, 1 + ε)·Â)
    L      = L_clip + c_v·(V_θ(s) − R̂)² − c_H·H(π_θ(·|s)) + c_click·BCE(p̂_click, click)

The last term trains the click model that v̂ is built on (won impressions only): it shares the
journey encoder, so the LSTM learns from every click as well as from rewards.

All-action terms through the click model (expected policy gradient, Ciosek & Whiteson 2018):
realised rewards are rare (a click in ~100 impressions, a conversion in ~100 clicks), so with 50+
creatives the sampled-action gradient alone needs months of traffic. The models give every
action's immediate value, ``Q̂(s, c, ch) = win_ch · p̂_click(s, c, ch) · w(s, ch) − cost_ch``
(``w`` = p̂(conversion | click) · v̄, ``cost_ch`` = win rate × mean price × the shadow price κ;
all held fixed), and the exact gradient of its expectation under the policy is added for each
head ``h`` (creative on the channel played; channel over the creative policy; target by reach —
an audience of segment k reaches the person with probability P(k | s))::

    L_model = c_model · Σ_h [ − Σ_a π_h(a|s) · q_h(s, a) − τ · H(π_h(·|s)) ]
    q_h(s, a) = (Q̂_h(s, a) − Σ_a' π_h(a'|s) Q̂_h(s, a')) / σ̂      (× n_c/(n_c + n0) for creatives)

``σ̂`` normalises the scale over the minibatch; the shrinkage by ``n_c``, the creative's
impressions so far (``n0 = creative_prior_impressions``), keeps the policy from trusting the
click model about creatives it has barely shown; the entropy weight ``τ`` (``creative_temperature``)
makes the fixed point softmax(q/τ) rather than the model's argmax, so exploration stays
randomised. The clipped surrogate on realised rewards still carries everything the models do
not see (conversions, journey effects, the real cost).

Value-guided creatives (``creative_value_weight`` β > 0): the creative is drawn from
``softmax(β · (ℓ_click(s, c) + κ / sqrt(1 + n_c · CTR)))``, ``ℓ_click`` the click model's creative
term — the only creative-dependent part of v̂, so the policy is ``∝ p̂_click(c)^β`` — plus an
optimism bonus that shrinks with the creative's expected clicks so far (``creative_optimism``).
With 60 creatives the sampled-action gradient and the normalised all-action term left the
creative head close to uniform (entropy 3.9 of ln 60 = 4.1 nats after 65 days; regret ~15 %),
and a learned residual head on top of the guide drifted to one creative (same 20-day
checkpoint: regret 25 % with it, 11 % without); so the creative head and its all-action term
are off. The creative's ε (``creative_eps``) is separate from the other heads'.

REINFORCE (``algorithm = "reinforce"``, Williams 1992), one epoch, no clip::

    L = − min(ρ, c̄)·(G − mean G)/std G · log π_θ(a|s) + c_v·(V_θ(s) − G)² − c_H·H + c_click·BCE

A diverged update (non-finite loss, gradient or weights) is rejected: the weights before it
come back, the optimiser's moments are reset, and the caller does not publish.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from agent_service.agent.model.networks import HybridNet, HybridOut
from agent_service.config.agent import PPOConfig

__all__ = ["PPOConfig", "PPOLearner", "PPOStats", "PolicyBatch", "compute_gae", "creative_bonus", "creative_logits",
           "mixed_probs", "policy_dists"]


class PolicyBatch(NamedTuple):
    """N decisions ready for a policy update (torch tensors; shapes in brackets)."""

    state: torch.Tensor
    """float32 [N, D]"""
    touches: torch.Tensor
    """float32 [N, L, Ft]"""
    touch_creatives: torch.Tensor
    """int64 [N, L]"""
    channel_mask: torch.Tensor
    """bool [N, 3]"""
    creative: torch.Tensor
    """int64 [N]"""
    channel: torch.Tensor
    """int64 [N]"""
    target: torch.Tensor
    """int64 [N]"""
    logp_behaviour: torch.Tensor
    """float32 [N] log μ(a|s) as logged."""
    advantage: torch.Tensor
    """float32 [N] Â (GAE for PPO, centred return for REINFORCE)."""
    returns: torch.Tensor
    """float32 [N] critic target R̂."""
    won: torch.Tensor
    """bool [N] rows with a click label."""
    clicked: torch.Tensor
    """float32 [N]"""
    value_scale: torch.Tensor
    """float32 [N, 3] w(s, ch): p̂(conversion | click) · v̄ per channel (the all-action term's weight)."""
    creative_trust: torch.Tensor
    """float32 [N, C] n_c / (n_c + n0) per creative (the same for every row of an update)."""
    channel_win: torch.Tensor
    """float32 [N, 3] estimated win rate of a bid per channel (organic: 1)."""
    channel_cost: torch.Tensor
    """float32 [N, 3] expected cost of a bid per channel at the shadow price: win rate × mean price × κ (USD)."""
    creative_bonus: torch.Tensor
    """float32 [N, C] optimism bonus of each creative on the click logit (:func:`creative_bonus`)."""
    creative_mask: torch.Tensor
    """bool [N, C] the creatives that were eligible (the catalogue at the decision's time and channel)."""


class PPOStats(NamedTuple):
    """What one update reports (exported as learner metrics)."""

    policy_loss: float
    value_loss: float
    click_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    rejected: bool


# ====================================================================== advantages (logic)
def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                episode_end: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Advantage Estimation (Schulman et al., ICLR 2016) over journeys.

    Rows are decisions sorted by journey, then by time. For step t::

        δ_t = r_t + γ · (1 − terminated_t) · V(s_{t+1}) − V(s_t)
        Â_t = δ_t + γ·λ · (1 − end_t) · Â_{t+1}
        R̂_t = Â_t + V(s_t)                      (the critic's target, a λ-return)

    ``end_t`` marks the journey's last row in the batch — terminated (conversion, window
    closed: no value after it) or truncated (the journey goes on beyond the data: ``δ``
    bootstraps from ``next_values``, which the caller fills with the critic's estimate). λ
    trades bias (λ = 0: one-step TD) for variance (λ = 1: Monte-Carlo return minus V). The
    same recursion as Stable-Baselines3's ``RolloutBuffer.compute_returns_and_advantage``,
    with episodes delimited by ``episode_end`` rather than by environment resets.

    :param rewards: [N] rewards. :param values: [N] V(s_t). :param next_values: [N] V(s_{t+1})
        (the next row's value inside a journey; the bootstrap at truncation).
    :param terminated: [N] bool, no bootstrap. :param episode_end: [N] bool, last row of a journey.
    :returns: (advantages [N], returns [N]).
    """
    n = len(rewards)
    adv = np.zeros(n, dtype=np.float64)
    not_term = 1.0 - terminated.astype(np.float64)
    delta = rewards + gamma * not_term * next_values - values
    carry = 0.0
    cont = 1.0 - episode_end.astype(np.float64)
    for t in range(n - 1, -1, -1):
        carry = delta[t] + gamma * lam * cont[t] * carry
        adv[t] = carry
    return adv, adv + values


def discounted_returns(rewards: np.ndarray, episode_end: np.ndarray, gamma: float) -> np.ndarray:
    """Monte-Carlo discounted return of each row within its journey (REINFORCE's G)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    carry = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        carry = rewards[t] + gamma * (0.0 if episode_end[t] else carry)
        out[t] = carry
    return out


# ====================================================================== the policy (logic)
def mixed_probs(logits: torch.Tensor, eps: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax mixed with ε·uniform over the allowed actions (so every propensity is > 0)."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
        allowed = mask.float()
    else:
        allowed = torch.ones_like(logits)
    uniform = allowed / allowed.sum(dim=-1, keepdim=True)
    return (1 - eps) * torch.softmax(logits, dim=-1) + eps * uniform


def creative_bonus(impressions: np.ndarray, ctr: float, kappa: float) -> np.ndarray:
    """``κ / sqrt(1 + n_c · CTR)``: about κ standard errors of creative c's click logit after n_c impressions.

    :param impressions: [C] (decayed) impressions per creative. :param ctr: the campaign's CTR.
    :returns: float64 [C].
    """
    return kappa / np.sqrt(1.0 + np.asarray(impressions, dtype=np.float64) * ctr)


def creative_logits(out: HybridOut, beta: float, bonus: torch.Tensor | None = None) -> torch.Tensor:
    """``β · (ℓ_click + bonus)`` with the click term detached (the policy loss must not move the
    calibrated click model that bids rest on); the creative head's logits when ``β = 0``."""
    if beta <= 0:
        return out.creative_logits
    logits = out.click_creative.detach()
    return beta * (logits + bonus if bonus is not None else logits)


def policy_dists(out: HybridOut, mask: torch.Tensor, cfg: PPOConfig, bonus: torch.Tensor | None = None,
                 creative_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(creative [B, C], channel [B, 3], target [B, K]) action probabilities as served.

    :param bonus: [B, C] or [C] optimism bonus of the value-guided creative policy (None: 0).
    :param creative_mask: [B, C] eligible creatives given the channel played (None: all)."""
    return (mixed_probs(creative_logits(out, cfg.creative_value_weight, bonus), cfg.creative_eps, creative_mask),
            mixed_probs(out.channel_logits, cfg.explore_eps, mask), mixed_probs(out.target_logits, cfg.explore_eps))


def _logp_entropy(out: HybridOut, b: PolicyBatch, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    pc, pch, pk = policy_dists(out, b.channel_mask, cfg, b.creative_bonus, b.creative_mask)
    rows = torch.arange(len(b.creative))
    logp = (torch.log(pc[rows, b.creative]) + torch.log(pch[rows, b.channel].clamp_min(1e-12))
            + torch.log(pk[rows, b.target]))
    ent = sum(-(p * torch.log(p.clamp_min(1e-12))).sum(-1) for p in (pc, pch, pk))
    return logp, ent  # type: ignore[return-value]


def _centred(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``(q − E_p[q]) / σ̂``: centred on the policy's expectation, scaled by the minibatch spread."""
    q = q - (p * q).sum(-1, keepdim=True)
    return q / (q.std() + 1e-12)


def click_logit(out: HybridOut, creative: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
    """Click logit of (creative, channel) per row: creative term + channel term."""
    rows = torch.arange(len(creative))
    return out.click_creative[rows, creative] + out.click_channel[rows, channel]


# ====================================================================== the learner
class PPOLearner:
    """Owns the optimiser and the policy loss of a :class:`HybridNet`.

    :param net: the network (updated in place).
    :param cfg: hyperparameters.
    :param seed: seeds minibatch order.
    """

    def __init__(self, net: HybridNet, cfg: PPOConfig, seed: int = 0) -> None:
        self.net = net
        self.cfg = cfg
        self.optim = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(seed)
        self.updates = 0
        self.rejected = 0

    def update(self, batch: PolicyBatch) -> PPOStats:
        """Epochs of minibatch steps on ``batch``; rejected (weights restored) on divergence."""
        cfg = self.cfg
        before = copy.deepcopy(self.net.state_dict())
        n = len(batch.creative)
        epochs = 1 if cfg.algorithm == "reinforce" else cfg.epochs
        logs: dict[str, list[float]] = {k: [] for k in ("pl", "vl", "cl", "ent", "kl", "cf")}
        for _ in range(epochs):
            order = torch.from_numpy(self.rng.permutation(n))
            for start in range(0, n, cfg.minibatch):
                mb = PolicyBatch(*(t[order[start:start + cfg.minibatch]] for t in batch))
                loss, parts = self._loss(mb)
                if not torch.isfinite(loss):
                    return self._reject(before)
                self.optim.zero_grad()
                loss.backward()
                if not all(torch.isfinite(p.grad).all() for p in self.net.parameters() if p.grad is not None):
                    return self._reject(before)
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optim.step()
                for k, v in parts.items():
                    logs[k].append(v)
            if cfg.algorithm == "ppo" and np.mean(logs["kl"][-max(1, n // cfg.minibatch):]) > cfg.target_kl:
                break  # the policy moved far from the behaviour policy: stop early
        if not all(torch.isfinite(p).all() for p in self.net.parameters()):
            return self._reject(before)
        self.updates += 1
        with torch.no_grad():
            v = self.net(batch.state, batch.touches, batch.touch_creatives).value
            var = torch.var(batch.returns)
            ev = float(1 - torch.var(batch.returns - v) / var) if var > 0 else float("nan")
        m = {k: float(np.mean(v)) if v else math.nan for k, v in logs.items()}
        return PPOStats(m["pl"], m["vl"], m["cl"], m["ent"], m["kl"], m["cf"], ev, False)

    def _loss(self, b: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        out = self.net(b.state, b.touches, b.touch_creatives)
        logp, ent = _logp_entropy(out, b, cfg)
        log_ratio = logp - b.logp_behaviour
        ratio = torch.exp(log_ratio)
        if cfg.algorithm == "ppo":
            adv = (b.advantage - b.advantage.mean()) / (b.advantage.std(unbiased=False) + 1e-8)
            policy_loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv).mean()
        else:
            w = torch.clamp(ratio.detach(), max=cfg.importance_cap)
            policy_loss = -(w * b.advantage * logp).mean()
        value_loss = ((out.value - b.returns) ** 2).mean()
        if b.won.any():
            logit = click_logit(out, b.creative, b.channel)[b.won]
            click_loss = nn.functional.binary_cross_entropy_with_logits(logit, b.clicked[b.won])
        else:
            click_loss = torch.zeros(())
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * ent.mean() + cfg.click_coef * click_loss
        if cfg.model_coef > 0:
            loss = loss + cfg.model_coef * self._model_term(out, b)
        with torch.no_grad():
            kl = ((ratio - 1) - log_ratio).mean()  # k3 estimator of KL(μ || π)
            clip_frac = ((ratio - 1).abs() > cfg.clip).float().mean()
        return loss, {"pl": float(policy_loss.detach()), "vl": float(value_loss.detach()),
                      "cl": float(click_loss.detach()), "ent": float(ent.mean().detach()),
                      "kl": float(kl), "cf": float(clip_frac)}

    def _model_term(self, out: HybridOut, b: PolicyBatch) -> torch.Tensor:
        """All-action loss of the three heads through the click model (module docstring).

        ``Q̂(s, c, ch) = win_ch · p̂_click(c, ch) · w(s, ch) − cost_ch``. The creative head is
        scored on the channel played, the channel head on the expectation over the creative
        policy, and the target head by reach: an audience of segment k only reaches the
        person with probability P(k | s), so its value is ``P(k | s) · V⁺`` against ``V⁺`` for
        everyone (``V⁺`` the positive part of the expected value). The models are held fixed.
        With the value-guided creative head the creative term is left out (the guide is its solution)."""
        tau = self.cfg.creative_temperature
        pc, pch, pk = policy_dists(out, b.channel_mask, self.cfg, b.creative_bonus, b.creative_mask)
        rows = torch.arange(len(b.channel))
        net = self.net
        with torch.no_grad():
            click = torch.sigmoid(out.click_creative[:, :, None] + out.click_channel[:, None, :])  # [N, C, 3]
            q = b.channel_win[:, None, :] * click * b.value_scale[:, None, :] - b.channel_cost[:, None, :]
            qc = q[rows, :, b.channel]
            qc = b.creative_trust * _centred(qc, pc.detach())
            qch_raw = (pc.detach()[:, :, None] * q).sum(1)
            qch = _centred(qch_raw.masked_fill(~b.channel_mask, 0.0), pch.detach())
            v_plus = (pch.detach() * qch_raw.masked_fill(~b.channel_mask, 0.0)).sum(-1, keepdim=True).clamp_min(0)
            seg = b.state[:, net.segment_at:net.segment_at + net.segments] if net.exposure_at >= 0 else \
                torch.ones(len(rows), pk.shape[1] - 1) / (pk.shape[1] - 1)
            qk = _centred(torch.cat([seg * v_plus, v_plus], dim=1), pk.detach())
        loss = torch.zeros(())
        heads = ((pch, qch), (pk, qk)) if self.cfg.creative_value_weight > 0 else ((pc, qc), (pch, qch), (pk, qk))
        for p, qq in heads:
            entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1)
            loss = loss - ((p * qq).sum(-1) + tau * entropy).mean()
        return loss

    def reset_optimiser(self) -> None:
        """Forget Adam's moments (after a rejected update or a rollback they point the wrong way)."""
        self.optim = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)

    def _reject(self, before: dict[str, torch.Tensor]) -> PPOStats:
        self.net.load_state_dict(before)
        self.reset_optimiser()
        self.rejected += 1
        nan = math.nan
        return PPOStats(nan, nan, nan, nan, nan, nan, nan, True)
