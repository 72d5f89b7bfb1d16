"""A contextual bandit of bid multipliers whose policy values are known exactly (for checking OPE).

Each decision sees a context cell ``x = (segment, hour band, device)`` drawn from a known
distribution and picks a multiplier index ``k``; the bid is ``m_k · v(x)``, where ``v(x)`` is
the expected value of an impression. The highest competing bid is lognormal,
``B ~ LogNormal(mu(x), sigma)``, the auction second-price. The reward is the surplus
``won · (conversion · V(x) - B)`` with ``conversion ~ Bernoulli(cvr(x))`` (a visit or a sale) and ``V = v / cvr``,
so ``E[r | x, k] = v · Φ(z) - exp(mu + sigma²/2) · Φ(z - sigma)`` with
``z = (ln(m_k v) - mu) / sigma`` (the lognormal's partial expectation): every policy's value
``sum_x P(x) sum_k π(k|x) E[r|x,k]`` is exact, no Monte Carlo.

The logging policy is a softmax around a context rule mixed with ε·uniform, so every
propensity is at least ε/K and known.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import erf, sqrt

import numpy as np
from numpy.typing import NDArray

__all__ = ["BidBandit", "BidLog"]

Floats = NDArray[np.float64]


def _phi(z: Floats) -> Floats:
    return 0.5 * (1.0 + np.vectorize(erf)(z / sqrt(2.0)))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class BidLog:
    """n logged decisions: cell [n], action [n], pscore [n] (logging probability), reward [n]."""

    cell: NDArray[np.intp]
    action: NDArray[np.intp]
    pscore: Floats
    reward: Floats


@dataclass(frozen=True)
class BidBandit:
    """The world (see the module docstring); every array is per cell, cells ordered (segment, band, device).

    :param n_actions: multipliers, evenly spaced over [m_min, m_max].
    :param segments: segments. :param bands: hour bands. :param devices: devices.
    :param sigma: spread of the log competing bid. :param price_gap: log gap of the median competing bid
        under the value. :param cvr_mean: mean conversion probability. :param log_eps: logging policy's
        uniform share.
    :param log_temperature: logging softmax temperature, in multiplier-index units.
    :param seed: draws the world's parameters (not the logs).
    """

    n_actions: int = 8
    m_min: float = 0.4
    m_max: float = 2.0
    segments: int = 10
    bands: int = 6
    devices: int = 3
    sigma: float = 0.6
    price_gap: float = 0.3
    """How far (in log) the median competing bid sits under the impression's value."""
    cvr_mean: float = 0.9
    """Mean conversion probability of a won impression (lower: noisier rewards)."""
    log_eps: float = 0.3
    log_temperature: float = 1.5
    seed: int = 7

    @property
    def n_cells(self) -> int:
        return self.segments * self.bands * self.devices

    @cached_property
    def multipliers(self) -> Floats:
        return np.linspace(self.m_min, self.m_max, self.n_actions)

    @cached_property
    def _params(self) -> dict[str, Floats]:
        rng = np.random.default_rng(self.seed)
        seg_p, band_p, dev_p = (rng.dirichlet(np.full(k, 3.0)) for k in (self.segments, self.bands, self.devices))
        p = (seg_p[:, None, None] * band_p[None, :, None] * dev_p[None, None, :]).ravel()
        seg_v = rng.uniform(1.0, 4.0, self.segments)  # value per impression, USD-ish
        dev_v = np.array([1.0, 0.8, 1.2])[: self.devices]
        band_price = rng.uniform(-0.4, 0.4, self.bands)  # competition varies by hour band
        v = (seg_v[:, None, None] * np.ones(self.bands)[None, :, None] * dev_v[None, None, :]).ravel()
        mu = np.log(v) + (band_price[None, :, None] * np.ones((self.segments, 1, self.devices))).ravel() - self.price_gap
        cvr = np.clip(self.cvr_mean + 0.05 * rng.standard_normal(self.n_cells), 0.05, 0.99)
        return {"p": p, "v": v, "mu": mu, "cvr": cvr}

    @property
    def cell_probs(self) -> Floats:
        return self._params["p"]

    @cached_property
    def expected_reward(self) -> Floats:
        """E[r | x, k], [cells, actions] — the exact reward function."""
        v, mu, s = self._params["v"][:, None], self._params["mu"][:, None], self.sigma
        z = (np.log(self.multipliers[None, :] * v) - mu) / s
        return v * _phi(z) - np.exp(mu + s * s / 2) * _phi(z - s)

    @cached_property
    def logging_policy(self) -> Floats:
        """[cells, actions]: softmax around a rough context rule (segment, hour band), mixed with ε·uniform."""
        k = np.arange(self.n_actions)
        seg = np.repeat(np.arange(self.segments), self.bands * self.devices)
        band = np.tile(np.repeat(np.arange(self.bands), self.devices), self.segments)
        # a guess, not the optimum; it follows the hour band, so a reward model blind to the band
        # learns each action's mean over the wrong mix of bands (the direct method is then biased)
        centre = 1.0 + (self.n_actions - 3.0) * seg / max(self.segments - 1, 1) + 0.8 * (band - (self.bands - 1) / 2)
        logits = -((k[None, :] - centre[:, None]) ** 2) / (2 * self.log_temperature**2)
        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        mixed: Floats = (1 - self.log_eps) * soft + self.log_eps / self.n_actions
        return mixed

    def value(self, policy: Floats) -> float:
        """The exact value of ``policy`` ([cells, actions] probabilities)."""
        return float(self.cell_probs @ (policy * self.expected_reward).sum(axis=1))

    def candidates(self) -> dict[str, Floats]:
        """Five policies to evaluate, [cells, actions] each: two deterministic, three stochastic (ε-mixed,
        as the agent's own heads are)."""
        K, C = self.n_actions, self.n_cells
        eye = np.eye(K)
        truthful = int(np.abs(self.multipliers - 1.0).argmin())  # the optimum of a second-price auction
        seg = np.repeat(np.arange(self.segments), self.bands * self.devices)
        dev = np.tile(np.arange(self.devices), self.segments * self.bands)
        soft_hi = np.exp(-((np.arange(K) - (K - 2)) ** 2) / 2.0)
        return {
            "truthful": np.tile(eye[truthful], (C, 1)),
            "segment_rule": eye[seg % K],
            "eps_truthful": np.tile(0.8 * eye[truthful] + 0.2 / K, (C, 1)),
            "aggressive_softmax": np.tile(soft_hi / soft_hi.sum(), (C, 1)),
            "device_rule_eps": 0.9 * eye[np.clip(2 + 2 * dev, 0, K - 1)] + 0.1 / K,
        }

    def log(self, n: int, seed: int) -> BidLog:
        """n decisions of the logging policy with realised rewards."""
        rng = np.random.default_rng(seed)
        cell = rng.choice(self.n_cells, size=n, p=self.cell_probs)
        cdf = np.cumsum(self.logging_policy[cell], axis=1)
        action = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), self.n_actions - 1)
        pscore = self.logging_policy[cell, action]
        p = self._params
        bid = self.multipliers[action] * p["v"][cell]
        price = np.exp(p["mu"][cell] + self.sigma * rng.standard_normal(n))
        won = price < bid
        conv = rng.random(n) < p["cvr"][cell]
        reward = np.where(won, conv * p["v"][cell] / p["cvr"][cell] - price, 0.0)
        return BidLog(cell.astype(np.intp), action.astype(np.intp), pscore, reward)
