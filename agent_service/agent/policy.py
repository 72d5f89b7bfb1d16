"""Serving the decision policy: batched sampling with logged propensities and hot-swapped weights.

The server holds one network reference at a time; ``sync`` builds a new network from a newer
registry version and swaps the reference, so every batch is decided entirely by one version
and no restart is needed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from agent_service.agent.policy_net import FactorisedPolicyNet
from agent_service.agent.registry import ModelRegistry
from agent_service.agent.values import ValueEstimator
from agent_service.config import CHANNELS, AgentConfig
from agent_service.errors import ModelError

__all__ = ["Acts", "PolicyServer", "mixed_probs"]


class Acts(NamedTuple):
    """Sampled actions for a batch of B opportunities (numpy arrays of shape [B])."""

    creative: np.ndarray
    channel: np.ndarray
    multiplier: np.ndarray
    propensity: np.ndarray
    """Probability of the whole action under the policy that sampled it."""
    value_usd: np.ndarray
    """Estimated value of one impression on the chosen channel, USD."""
    version: int


def mixed_probs(logits: torch.Tensor, eps: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax mixed with ε·uniform over the allowed actions (so every propensity is > 0).

    :param logits: [B, K].
    :param eps: exploration mass.
    :param mask: [B, K] bool of allowed actions, or None for all.
    """
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
        allowed = mask.float()
    else:
        allowed = torch.ones_like(logits)
    probs = torch.softmax(logits, dim=-1)
    uniform = allowed / allowed.sum(dim=-1, keepdim=True)
    return (1 - eps) * probs + eps * uniform


class PolicyServer:
    """Samples actions for batches of states; loads newer weights from the registry.

    :param cfg: agent settings.
    :param state_dim: state vector length.
    :param creatives: number of creatives.
    :param registry: where the learner publishes versions.
    :param seed: seed of the sampling stream.
    """

    def __init__(self, cfg: AgentConfig, state_dim: int, creatives: int, registry: ModelRegistry, seed: int) -> None:
        self.cfg = cfg
        self.registry = registry
        self.dims = (state_dim, creatives, len(CHANNELS), len(cfg.bid_multipliers), cfg.hidden)
        torch.manual_seed(seed)
        self.net = FactorisedPolicyNet(*self.dims).eval()
        self.values = ValueEstimator()
        self.version = 0
        self._rng = np.random.default_rng(seed)

    def sync(self) -> int:
        """Swap in the registry's newest version if it is newer; return the version served."""
        latest = self.registry.latest_version()
        if latest > self.version:
            state = self.registry.load(latest)
            if tuple(state["dims"]) != self.dims:
                raise ModelError(f"model version {latest} has dims {state['dims']}, serving {self.dims}")
            net = FactorisedPolicyNet(*self.dims).eval()
            net.load_state_dict(state["net"])
            values = ValueEstimator()
            values.load(state["values"])
            self.net, self.values, self.version = net, values, latest  # one reference swap
        return self.version

    @torch.no_grad()
    def act(self, states: np.ndarray, channel_mask: np.ndarray) -> Acts:
        """Sample one action per row.

        :param states: [B, state_dim] float32.
        :param channel_mask: [B, 3] bool, channels available per opportunity (at least one).
        """
        net, values, version = self.net, self.values, self.version  # pin one version for the batch
        s = torch.from_numpy(np.asarray(states, dtype=np.float32))
        mask = torch.from_numpy(np.asarray(channel_mask, dtype=bool))
        lc, lch, lm = net(s)
        eps = self.cfg.explore_eps
        probs = [mixed_probs(lc, eps).numpy(), mixed_probs(lch, eps, mask).numpy(), mixed_probs(lm, eps).numpy()]
        picks = [_sample(p, self._rng) for p in probs]
        rows = np.arange(len(states))
        propensity = np.ones(len(states))
        for p, a in zip(probs, picks, strict=True):
            propensity *= p[rows, a]
        value = np.array([values.per_impression(CHANNELS[c]) for c in picks[1]])
        return Acts(picks[0], picks[1], picks[2], propensity, value, version)


def _sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)
