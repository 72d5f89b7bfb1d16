"""The iPinYou bidder's serving side of the DQN: greedy multiplier adjustments from a weight
snapshot of :class:`agent_service.agent.learning.dqn.DQNLearner`, swapped in only when newer."""

from __future__ import annotations

import numpy as np
import torch

from agent_service.agent.model.networks import BidQNet
from agent_service.config.agent import DQNConfig
from agent_service.errors import ModelError

__all__ = ["MultiplierPolicy"]


class MultiplierPolicy:
    """Inference only: maps pacing features to a new log multiplier.

    :param n_features: F.
    :param cfg: the learner's hyperparameters (actions, bounds, width).
    """

    def __init__(self, n_features: int, cfg: DQNConfig) -> None:
        self.cfg = cfg
        self.q = BidQNet(n_features, cfg.n_actions, cfg.hidden)
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
