"""Off-policy REINFORCE for the factorised creative × channel × multiplier policy.

The plain policy-gradient baseline of the seed ("Policy Gradient (REINFORCE)"), learning from
logged experience of earlier versions:

    loss = − mean_i[ w_i · Â_i · log π(a_i | s_i) ] − β · H(π(· | s_i)),
    w_i = min(π(a_i|s_i) / μ_i, c)   (μ_i: the logged propensity; truncated importance weight)
    Â_i = (r_i − mean r) / (std r + 1e-8)

Each experience record is a reward increment for its decision (the cost at the auction, a
click, a conversion's credit); the gradient is linear in the reward, so summing increments
gives the same expectation as the decision's total. A diverged update (non-finite loss,
gradient or weights) is rejected and the previous weights are kept.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
import torch

from agent_service.agent.features import AVAILABLE
from agent_service.agent.policy import mixed_probs
from agent_service.agent.policy_net import FactorisedPolicyNet
from agent_service.agent.registry import ModelRegistry
from agent_service.agent.values import ValueEstimator
from agent_service.config import CHANNELS, AgentConfig
from agent_service.contracts.events import Experience

__all__ = ["ReinforceLearner", "UpdateStats"]

_IMPORTANCE_CAP = 5.0
_ENTROPY_COEF = 0.01


class UpdateStats(NamedTuple):
    version: int
    loss: float
    mean_reward: float
    samples: int
    rejected: bool


class ReinforceLearner:
    """Owns the training network, optimizer and value estimates; publishes versions.

    :param cfg: agent settings (lr, update_every, batch_size, explore_eps).
    :param state_dim: state vector length.
    :param creatives: number of creatives.
    :param registry: where versions are published.
    :param seed: seed of initialisation and minibatch sampling.
    """

    def __init__(self, cfg: AgentConfig, state_dim: int, creatives: int, registry: ModelRegistry, seed: int) -> None:
        self.cfg = cfg
        self.registry = registry
        self.dims = (state_dim, creatives, len(CHANNELS), len(cfg.bid_multipliers), cfg.hidden)
        torch.manual_seed(seed)
        self.net = FactorisedPolicyNet(*self.dims)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.values = ValueEstimator()
        self._rng = np.random.default_rng(seed + 1)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._buffer: list[Experience] = []
        self.history: list[UpdateStats] = []
        self.rejected = 0

    # --- plumbing ----------------------------------------------------------------------------
    def observe(self, exp: Experience) -> bool:
        """Take one experience record; False if its id was seen already (redelivery)."""
        if exp.id in self._seen:
            return False
        self._seen[exp.id] = None
        if len(self._seen) > 500_000:
            self._seen.popitem(last=False)
        channel = exp.action.channel
        if exp.kind == "outcome" and exp.won:
            self.values.observe_impression(channel)
        elif exp.kind == "credit":
            self.values.observe_value(channel, exp.parts.attribution)
        if exp.kind != "final":
            self._buffer.append(exp)
        return True

    def maybe_update(self) -> UpdateStats | None:
        """Train and publish when ``update_every`` records are waiting."""
        if len(self._buffer) < self.cfg.update_every:
            return None
        batch, self._buffer = self._buffer, []
        stats = self.update(batch)
        self.history.append(stats)
        return stats

    def publish(self) -> int:
        state: dict[str, Any] = {"dims": self.dims, "net": copy.deepcopy(self.net.state_dict()),
                                 "values": self.values.state()}
        return self.registry.publish(state)

    # --- algorithm ---------------------------------------------------------------------------
    def update(self, batch: list[Experience]) -> UpdateStats:
        """One pass of minibatch policy-gradient steps over ``batch``, then publish."""
        states = torch.tensor([e.state for e in batch], dtype=torch.float32)
        creative = torch.tensor([e.action.creative for e in batch])
        channel = torch.tensor([CHANNELS.index(e.action.channel) for e in batch])
        mult = torch.tensor([e.action.multiplier for e in batch])
        mu = torch.tensor([e.propensity for e in batch], dtype=torch.float32)
        rewards = torch.tensor([e.reward for e in batch], dtype=torch.float32)
        adv = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-8)
        mask = states[:, AVAILABLE] > 0.5
        mask[~mask.any(dim=1)] = True
        snapshot = copy.deepcopy(self.net.state_dict())
        losses = []
        order = self._rng.permutation(len(batch))
        for start in range(0, len(batch), self.cfg.batch_size):
            idx = torch.from_numpy(order[start:start + self.cfg.batch_size])
            lc, lch, lm = self.net(states[idx])
            eps = self.cfg.explore_eps
            pc, pch, pm = mixed_probs(lc, eps), mixed_probs(lch, eps, mask[idx]), mixed_probs(lm, eps)
            rows = torch.arange(len(idx))
            pi = pc[rows, creative[idx]] * pch[rows, channel[idx]] * pm[rows, mult[idx]]
            w = torch.clamp(pi.detach() / mu[idx], max=_IMPORTANCE_CAP)
            entropy = -sum((p * torch.log(p.clamp_min(1e-12))).sum(-1).mean() for p in (pc, pch, pm))
            loss = -(w * adv[idx] * torch.log(pi.clamp_min(1e-12))).mean() - _ENTROPY_COEF * entropy
            if not torch.isfinite(loss):
                return self._reject(snapshot, batch, rewards)
            self.opt.zero_grad()
            loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in self.net.parameters() if p.grad is not None):
                return self._reject(snapshot, batch, rewards)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            losses.append(loss.item())
        if not all(torch.isfinite(p).all() for p in self.net.parameters()):
            return self._reject(snapshot, batch, rewards)
        version = self.publish()
        return UpdateStats(version, float(np.mean(losses)), float(rewards.mean()), len(batch), False)

    def _reject(self, snapshot: dict[str, torch.Tensor], batch: list[Experience], rewards: torch.Tensor) -> UpdateStats:
        """Keep the previous weights: a diverged update never reaches the registry."""
        self.net.load_state_dict(snapshot)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        self.rejected += 1
        mean = float(rewards.mean()) if torch.isfinite(rewards.mean()) else math.nan
        return UpdateStats(self.registry.latest_version(), math.nan, mean, len(batch), True)
