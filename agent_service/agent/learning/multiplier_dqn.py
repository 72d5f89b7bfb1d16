"""A DQN over bid-multiplier adjustments (DRLB-style), self-contained and reusable.

The problem it solves (AGENT-DESIGN.md, "two time scales"): within a budget period cut into
slots, choose at every slot how to move a log bid multiplier ``z`` (the bid sent is
``exp(z) x`` the base bid of some value model). Actions are discrete adjustments of ``z``
(Wu et al. 2018, "Budget Constrained Bidding by Model-free Reinforcement Learning in Display
Advertising", use -8% .. +8% steps of lambda). The state is whatever pacing features the
caller builds (time left, budget left, spend against plan, recent win rate, ...), the reward
is the value won in the slot and the episode is the budget period.

Parts, kept apart as the house style asks:

* :class:`QNetwork` - an ``nn.Module`` mapping features to one Q-value per action, nothing else;
* :class:`ReplayBuffer` - a numpy ring of :class:`Transition` s;
* :class:`DQNLearner` - owns the online and target networks, the optimiser and the loss
  (double DQN, Huber loss, Polyak target update); its ``version`` goes up with every update;
* :class:`MultiplierPolicy` - inference only: greedy (or epsilon-greedy) adjustments from a
  weight snapshot, swapped in only when the snapshot's version is newer.

The networks are tiny: on a shared 2-core machine call ``torch.set_num_threads(1)`` first
(extra intra-op threads only spin; the iPinYou runner and tests do this).

Loss (double DQN, van Hasselt et al. 2016)::

    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q(s', a))
    L = Huber(Q(s, a) - y)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from agent_service.errors import ConfigError, ModelError

__all__ = [
    "BidMultiplierDQNConfig",
    "DQNLearner",
    "MultiplierPolicy",
    "QNetwork",
    "ReplayBuffer",
    "Transition",
]


@dataclass(frozen=True)
class BidMultiplierDQNConfig:
    """Hyperparameters of the bid-multiplier DQN."""

    adjustments: tuple[float, ...] = (-0.15, -0.05, 0.0, 0.05, 0.15)
    """Actions: additive steps of the log multiplier z (0.05 ~ +5% bid)."""
    z_min: float = -1.0
    """Lowest log multiplier (bids never fall below exp(z_min) x base)."""
    z_max: float = 1.0
    """Highest log multiplier."""
    hidden: int = 64
    """Width of the two hidden layers."""
    lr: float = 1e-3
    """Adam learning rate."""
    gamma: float = 1.0
    """Discount per slot (1: the objective is the period's total value)."""
    batch_size: int = 128
    """Minibatch of one update."""
    buffer_size: int = 100_000
    """Transitions kept in the replay buffer."""
    learning_starts: int = 1_000
    """Transitions collected before the first update."""
    updates_per_step: float = 0.25
    """Gradient updates per collected transition."""
    eps_start: float = 1.0
    """Initial exploration probability."""
    eps_end: float = 0.05
    """Final exploration probability."""
    eps_decay_transitions: int = 20_000
    """Transitions over which epsilon decays linearly."""
    tau: float = 0.01
    """Polyak rate of the target network per update."""
    grad_clip: float = 10.0
    """Max gradient norm."""

    def __post_init__(self) -> None:
        if len(self.adjustments) < 2:
            raise ConfigError("dqn.adjustments", "need at least two actions")
        if not self.z_min < 0 < self.z_max:
            raise ConfigError("dqn.z_min", "need z_min < 0 < z_max")
        if self.hidden <= 0:
            raise ConfigError("dqn.hidden", "must be > 0")
        if self.lr <= 0:
            raise ConfigError("dqn.lr", "must be > 0")
        if not 0 <= self.gamma <= 1:
            raise ConfigError("dqn.gamma", "must be in [0, 1]")
        if self.batch_size <= 0 or self.buffer_size < self.batch_size:
            raise ConfigError("dqn.batch_size", "need 0 < batch_size <= buffer_size")
        if self.learning_starts < self.batch_size:
            raise ConfigError("dqn.learning_starts", "must be >= batch_size")
        if self.updates_per_step <= 0:
            raise ConfigError("dqn.updates_per_step", "must be > 0")
        if not 0 <= self.eps_end <= self.eps_start <= 1:
            raise ConfigError("dqn.eps_start", "need 0 <= eps_end <= eps_start <= 1")
        if self.eps_decay_transitions <= 0:
            raise ConfigError("dqn.eps_decay_transitions", "must be > 0")
        if not 0 < self.tau <= 1:
            raise ConfigError("dqn.tau", "must be in (0, 1]")

    @property
    def n_actions(self) -> int:
        """Number of discrete adjustments."""
        return len(self.adjustments)

    def epsilon(self, transitions: int) -> float:
        """Linear epsilon schedule after ``transitions`` collected."""
        frac = min(1.0, transitions / self.eps_decay_transitions)
        return self.eps_start + frac * (self.eps_end - self.eps_start)


class Transition(NamedTuple):
    """A batch of B slot transitions (shapes in brackets)."""

    obs: np.ndarray
    """float32 [B, F] features at the slot start."""
    action: np.ndarray
    """int64 [B] adjustment index."""
    reward: np.ndarray
    """float32 [B] value won in the slot."""
    next_obs: np.ndarray
    """float32 [B, F] features at the next slot start."""
    terminated: np.ndarray
    """float32 [B] 1 at the period's last slot (a true terminal: time left is in the state)."""


class ReplayBuffer:
    """Uniform replay over the last ``capacity`` transitions.

    :param capacity: transitions kept.
    :param n_features: F.
    """

    def __init__(self, capacity: int, n_features: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, n_features), np.float32)
        self.next_obs = np.zeros((capacity, n_features), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.size = 0
        self._pos = 0

    def add(self, batch: Transition) -> None:
        """Append a batch of transitions (oldest overwritten first)."""
        n = len(batch.action)
        idx = (self._pos + np.arange(n)) % self.capacity
        self.obs[idx] = batch.obs
        self.next_obs[idx] = batch.next_obs
        self.action[idx] = batch.action
        self.reward[idx] = batch.reward
        self.terminated[idx] = batch.terminated
        self._pos = int((self._pos + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Transition:
        """A uniform minibatch."""
        idx = rng.integers(0, self.size, size=batch_size)
        return Transition(self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx],
                          self.terminated[idx])


class QNetwork(nn.Module):
    """MLP: features [B, F] -> Q-values [B, A].

    :param n_features: F.
    :param n_actions: A.
    :param hidden: hidden width.
    """

    def __init__(self, n_features: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, n_actions),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values of every action."""
        return self.net(x)


class DQNLearner:
    """Owns the networks, the optimiser and the update (double DQN).

    :param n_features: F.
    :param cfg: hyperparameters.
    :param seed: seeds the network initialisation and minibatch sampling.
    """

    def __init__(self, n_features: int, cfg: BidMultiplierDQNConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.n_features = n_features
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            self.q = QNetwork(n_features, cfg.n_actions, cfg.hidden)
        self.target = copy.deepcopy(self.q)
        self.optim = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.buffer = ReplayBuffer(cfg.buffer_size, n_features)
        self.rng = np.random.default_rng(seed)
        self.version = 0
        self.transitions = 0
        self._owed = 0.0

    # ---------------------------------------------------------------- acting (plumbing)
    def act(self, obs: np.ndarray, eps: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy actions for a batch of states.

        :param obs: float [B, F].
        :param eps: exploration probability.
        :param rng: draws the exploration.
        """
        with torch.no_grad():
            greedy = self.q(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()
        explore = rng.random(len(obs)) < eps
        return np.where(explore, rng.integers(0, self.cfg.n_actions, size=len(obs)), greedy)

    def observe(self, batch: Transition) -> list[dict[str, float]]:
        """Store transitions and run the updates they pay for.

        :param batch: transitions just collected.
        :returns: the stats of every update run.
        """
        self.buffer.add(batch)
        self.transitions += len(batch.action)
        stats: list[dict[str, float]] = []
        if self.buffer.size < self.cfg.learning_starts:
            return stats
        self._owed += len(batch.action) * self.cfg.updates_per_step
        while self._owed >= 1.0:
            self._owed -= 1.0
            stats.append(self.update(self.buffer.sample(self.cfg.batch_size, self.rng)))
        return stats

    # ------------------------------------------------------------------ the loss (logic)
    def update(self, batch: Transition) -> dict[str, float]:
        """One double-DQN step on a minibatch; returns ``td_loss`` and ``mean_q``."""
        obs = torch.as_tensor(batch.obs)
        next_obs = torch.as_tensor(batch.next_obs)
        action = torch.as_tensor(batch.action)
        reward = torch.as_tensor(batch.reward)
        done = torch.as_tensor(batch.terminated)
        with torch.no_grad():
            # WARNING: the online net picks a', the target net values it (double DQN).
            best = self.q(next_obs).argmax(dim=1, keepdim=True)
            next_q = self.target(next_obs).gather(1, best).squeeze(1)
            y = reward + self.cfg.gamma * (1.0 - done) * next_q
        q = self.q(obs).gather(1, action.unsqueeze(1)).squeeze(1)
        loss = nn.functional.smooth_l1_loss(q, y)
        self.optim.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q.parameters(), self.cfg.grad_clip)
        self.optim.step()
        with torch.no_grad():
            for p, tp in zip(self.q.parameters(), self.target.parameters(), strict=True):
                tp.mul_(1.0 - self.cfg.tau).add_(p, alpha=self.cfg.tau)
        self.version += 1
        return {"td_loss": float(loss.detach()), "mean_q": float(q.detach().mean())}

    # ------------------------------------------------------------------ weights (plumbing)
    def snapshot(self) -> tuple[int, dict[str, torch.Tensor]]:
        """``(version, weights)`` of the online network, for a :class:`MultiplierPolicy`."""
        return self.version, {k: v.detach().clone() for k, v in self.q.state_dict().items()}


class MultiplierPolicy:
    """Inference only: maps pacing features to a new log multiplier.

    :param n_features: F.
    :param cfg: the learner's hyperparameters (actions, bounds, width).
    """

    def __init__(self, n_features: int, cfg: BidMultiplierDQNConfig) -> None:
        self.cfg = cfg
        self.q = QNetwork(n_features, cfg.n_actions, cfg.hidden)
        self.q.eval()
        self.version = -1
        self._adj = np.asarray(cfg.adjustments, dtype=np.float64)

    def load(self, version: int, weights: dict[str, torch.Tensor]) -> bool:
        """Swap in ``weights`` if ``version`` is newer than the one served; True if swapped."""
        if version <= self.version:
            return False
        for name, w in weights.items():
            if not torch.isfinite(w).all():
                raise ModelError(f"weight {name} of version {version} is not finite")
        self.q.load_state_dict(weights)
        self.version = version
        return True

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Greedy action indices for float [B, F] features."""
        with torch.no_grad():
            return self.q(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()

    def next_z(self, z: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Apply adjustments to log multipliers, within ``[z_min, z_max]``."""
        return np.clip(z + self._adj[actions], self.cfg.z_min, self.cfg.z_max)
