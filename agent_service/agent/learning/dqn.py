"""Double DQN over bid-multiplier offsets — the hybrid agent's budget-period decision.

The problem, on two time scales: a budget period (a day) is cut into T slots;
at the start of each slot the agent sets its log bid multiplier ``z`` — a dual-paced level that
tracks the spend plan plus one of a few offsets chosen by this Q-network (with the dual step
off, the offsets accumulate: DRLB's adjustments, Wu et al. 2018; see
:meth:`agent_service.agent.serving.hybrid.HybridAgent.begin_slot`); every bid of the slot is
``exp(z) · v̂`` (clipped, see :mod:`agent_service.agent.serving.hybrid`). The state is the pacing features of
:func:`agent_service.pacing.pacing_features` (time left, budget left, spend against the plan,
recent win rate, cost per unit of value, competition, ``z``); the reward is the value won in
the slot divided by the period's budget; the episode is the budget period, and time left is
part of the state, so the period's end is a true terminal (as is running out of budget).
The iPinYou bidder (:mod:`agent_service.lab.ipinyou.bidder`) trains this same learner on its own
pacing features and serves it through :class:`agent_service.lab.ipinyou.multiplier_policy.MultiplierPolicy`.

Loss (double DQN, van Hasselt et al. 2016), per transition::

    a*  = argmax_a Q_online(s', a)
    y   = r + gamma · (1 − terminated) · Q_target(s', a*)
    TD  = Q_online(s, a) − y
    L   = Huber(TD)

``terminated`` (budget spent, period over) stops the bootstrap; a truncated rollout still
bootstraps from ``s'``. The target network follows the online one by Polyak averaging
(``tau``; ``tau = 1`` with ``target_every`` > 1 is the classic hard copy). A diverged update
(non-finite loss, gradient or weights) is rejected: the weights before the step come back and
the version does not move.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from agent_service.agent.learning.buffers import ReplayBuffer, SlotTransition, polyak_update
from agent_service.agent.model.networks import BidQNet
from agent_service.config.agent import DQNConfig
from agent_service.errors import ModelError

__all__ = ["DQNConfig", "DQNLearner", "DQNStats", "epsilon_greedy"]


class DQNStats(NamedTuple):
    """What one update reports (exported as learner metrics)."""

    td_loss: float
    mean_q: float
    mean_abs_td: float
    rejected: bool


class DQNLearner:
    """Owns the online and target Q-networks, the replay buffer, the optimiser and the loss.

    :param n_features: P, the pacing features.
    :param cfg: hyperparameters.
    :param seed: seeds initialisation, exploration and minibatch sampling.
    :param init_seed: seeds the initialisation instead, if given.
    """

    def __init__(self, n_features: int, cfg: DQNConfig, seed: int = 0, *, init_seed: int | None = None) -> None:
        self.cfg = cfg
        self.n_features = n_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed if init_seed is None else init_seed)
            self.q = BidQNet(n_features, cfg.n_actions, cfg.hidden)
        self.target = copy.deepcopy(self.q)
        self.optim = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.replay = ReplayBuffer(cfg.buffer_size, n_features)
        self.rng = np.random.default_rng(seed)
        self.version = 0
        self.transitions = 0
        self.updates = 0
        self.rejected = 0
        self._owed = 0.0

    # ================================================================== acting (plumbing)
    def act(self, obs: np.ndarray, eps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """ε-greedy actions and their probabilities for float [B, P] pacing features."""
        with torch.no_grad():
            greedy = self.q(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()
        return epsilon_greedy(greedy, self.cfg.n_actions, eps, rng)

    def observe(self, batch: SlotTransition) -> list[DQNStats]:
        """Store transitions and run the updates they pay for; returns each update's stats."""
        self.replay.add(batch)
        self.transitions += len(batch.action)
        if len(self.replay) < self.cfg.learning_starts:
            return []
        self._owed += len(batch.action) * self.cfg.updates_per_transition
        stats = []
        while self._owed >= 1.0:
            self._owed -= 1.0
            stats.append(self.update(self.replay.sample(self.cfg.batch_size, self.rng)))
        return stats

    # ================================================================== the loss (logic)
    def td_errors(self, batch: SlotTransition) -> tuple[torch.Tensor, torch.Tensor]:
        """Q(s, a) and the double-DQN target y for a minibatch (see the module docstring)."""
        obs, next_obs = torch.as_tensor(batch.obs), torch.as_tensor(batch.next_obs)
        action = torch.as_tensor(batch.action)
        reward, term = torch.as_tensor(batch.reward), torch.as_tensor(batch.terminated)
        with torch.no_grad():
            # WARNING: the online net picks a', the target net values it (double DQN). Using
            # the target net for both is plain DQN and over-estimates.
            best = self.q(next_obs).argmax(dim=1, keepdim=True)
            next_q = self.target(next_obs).gather(1, best).squeeze(1)
            y = reward + self.cfg.gamma * (1.0 - term) * next_q  # truncated rows still bootstrap
        q = self.q(obs).gather(1, action.unsqueeze(1)).squeeze(1)
        return q, y

    def update(self, batch: SlotTransition) -> DQNStats:
        """One double-DQN step; a non-finite loss, gradient or weight rejects it."""
        before = copy.deepcopy(self.q.state_dict())
        q, y = self.td_errors(batch)
        loss = nn.functional.smooth_l1_loss(q, y)
        if not torch.isfinite(loss):
            return self._reject(before)
        self.optim.zero_grad()
        loss.backward()
        grads = [p.grad for p in self.q.parameters() if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            return self._reject(before)
        nn.utils.clip_grad_norm_(self.q.parameters(), self.cfg.grad_clip)
        self.optim.step()
        if not all(torch.isfinite(p).all() for p in self.q.parameters()):
            return self._reject(before)
        self.updates += 1
        if self.updates % self.cfg.target_every == 0:
            polyak_update(self.q, self.target, self.cfg.tau)
        self.version += 1
        td = (q - y).detach()
        return DQNStats(float(loss.detach()), float(q.detach().mean()), float(td.abs().mean()), False)

    def reset_optimiser(self) -> None:
        """Forget Adam's moments (after a rejected update or a rollback they point the wrong way)."""
        self.optim = torch.optim.Adam(self.q.parameters(), lr=self.cfg.lr)

    def _reject(self, before: dict[str, torch.Tensor]) -> DQNStats:
        """Keep the previous weights and forget the optimiser's moments (they may be poisoned)."""
        self.q.load_state_dict(before)
        self.reset_optimiser()
        self.rejected += 1
        return DQNStats(float("nan"), float("nan"), float("nan"), True)

    # ================================================================== weights (plumbing)
    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the online network's weights (what the bidder serves)."""
        return {k: v.detach().clone() for k, v in self.q.state_dict().items()}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load online and target weights (checkpoint restore); non-finite weights are refused."""
        for name, w in weights.items():
            if not torch.isfinite(w).all():
                raise ModelError(f"Q-network weight {name} is not finite")
        self.q.load_state_dict(weights)
        self.target.load_state_dict(weights)


def epsilon_greedy(greedy: np.ndarray, n_actions: int, eps: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample ε-greedy actions around ``greedy`` and return (actions, their probabilities)."""
    explore = rng.random(len(greedy)) < eps
    action = np.where(explore, rng.integers(0, n_actions, size=len(greedy)), greedy)
    prob = np.where(action == greedy, 1.0 - eps + eps / n_actions, eps / n_actions)
    return action.astype(np.int64), prob
