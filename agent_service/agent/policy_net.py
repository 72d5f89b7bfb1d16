"""The decision policy network: state vector → creative, channel and bid-multiplier logits.

Only the network (RLlib's RLModule rule): sampling lives in ``policy.PolicyServer`` and
learning in ``reinforce.ReinforceLearner``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FactorisedPolicyNet", "PolicyOutput"]


class PolicyOutput(tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
    """(creative logits [B, C], channel logits [B, 3], multiplier logits [B, M])."""


class FactorisedPolicyNet(nn.Module):
    """A shared MLP trunk with one head per action factor.

    :param state_dim: length of the state vector.
    :param creatives: number of creative variants.
    :param channels: number of channels.
    :param multipliers: number of bid multipliers.
    :param hidden: trunk width.
    """

    def __init__(self, state_dim: int, creatives: int, channels: int, multipliers: int, hidden: int = 64) -> None:
        super().__init__()
        self.dims = (state_dim, creatives, channels, multipliers, hidden)
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.creative = nn.Linear(hidden, creatives)
        self.channel = nn.Linear(hidden, channels)
        self.multiplier = nn.Linear(hidden, multipliers)
        for head in (self.creative, self.channel, self.multiplier):
            nn.init.zeros_(head.weight)  # start uniform: every action explored equally
            nn.init.zeros_(head.bias)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:param states: [B, state_dim] float32. Returns the three logit tensors."""
        h = self.trunk(states)
        return self.creative(h), self.channel(h), self.multiplier(h)
