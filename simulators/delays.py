"""The touch-to-conversion delay distribution: a calibrated mixture, sampled and evaluated.

A mixture of shifted exponential, gamma and log-normal components (``calibration.delay``).
``sample`` draws delays in days for the engine; ``cdf`` is the exact distribution function the
goodness-of-fit test compares the emitted delays against; ``share_within`` tells how many
conversions land inside the attribution window (the rest are lost to attribution — counted,
never hidden).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from simulators.calibration.schema import DelayCal, DelayComponent

__all__ = ["DelayModel"]


class DelayModel:
    """Sampler and CDF of a delay mixture.

    :param cal: the calibration's ``delay`` section.
    """

    def __init__(self, cal: DelayCal) -> None:
        self.components: tuple[DelayComponent, ...] = cal.components
        w = np.array([c.weight for c in cal.components], dtype=np.float64)
        self.weights = w / w.sum()
        self._cum = np.cumsum(self.weights)
        self._cum[-1] = 1.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` delays in days (float64).

        :param rng: the random generator to draw from.
        :param n: how many.
        """
        which = np.searchsorted(self._cum, rng.random(n), side="right")
        out = np.empty(n, dtype=np.float64)
        for k, c in enumerate(self.components):
            idx = np.flatnonzero(which == k)
            if idx.size:
                out[idx] = c.shift_days + _draw(c, rng, idx.size)
        return out

    def cdf(self, days: np.ndarray | float) -> np.ndarray:
        """P(delay <= days).

        :param days: delays in days.
        """
        x = np.asarray(days, dtype=np.float64)
        total = np.zeros_like(x)
        for w, c in zip(self.weights, self.components, strict=True):
            total += w * _dist(c).cdf(x - c.shift_days)
        return total

    def share_within(self, days: float) -> float:
        """Share of conversions with delay <= ``days`` (e.g. the attribution window)."""
        return float(self.cdf(days))

    def mean(self) -> float:
        """Mean delay in days."""
        return float(sum(w * (c.shift_days + _dist(c).mean())
                         for w, c in zip(self.weights, self.components, strict=True)))


def _draw(c: DelayComponent, rng: np.random.Generator, n: int) -> np.ndarray:
    if c.family == "exponential":
        return rng.exponential(c.scale_days, n)
    if c.family == "gamma":
        return rng.gamma(c.shape, c.scale_days, n)
    return c.scale_days * np.exp(c.sigma * rng.standard_normal(n))


def _dist(c: DelayComponent) -> stats.rv_continuous:
    if c.family == "exponential":
        return stats.expon(scale=c.scale_days)
    if c.family == "gamma":
        return stats.gamma(c.shape, scale=c.scale_days)
    return stats.lognorm(c.sigma, scale=c.scale_days)
