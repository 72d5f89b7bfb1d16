"""Online recalibration of the replay's pCTR from the clicks of auctions already past.

The log's pCTR comes from a logistic model fitted on the training days. RLB takes it at face value.
A model that is right on average can still be too confident on the test days: its high pCTRs
click less often, and its low ones more often, than it says. What the bidder needs is the
*shape* of the true CTR against pCTR. The level is already normalised away by ``theta_bar``.

The fit is ``p = σ(a · logit(pCTR) + b)``, the maximum a posteriori estimate on every revealed
click (Newton steps), with priors ``a ~ N(1, σ_a²)`` and ``b ~ N(0, σ_b²)``: with no clicks it is
the identity, and a few hundred clicks can move it. The bidder uses the shape factor
``s(pCTR) = p / pCTR``, normalised over the recent pCTRs so that their mean value is unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PctrCalibration"]

_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


class PctrCalibration:
    """``σ(a · logit(pCTR) + b)`` from past clicks; the identity until fitted.

    :param slope_sd: σ_a of the prior on the slope around 1. :param offset_sd: σ_b of the prior on
        the offset around 0.
    """

    def __init__(self, slope_sd: float, offset_sd: float) -> None:
        self.slope_sd, self.offset_sd = slope_sd, offset_sd
        self.a, self.b = 1.0, 0.0
        self._x: list[float] = []
        self._y: list[int] = []

    def observe(self, pctr: float, click: int) -> None:
        """One past auction (``click`` -1: not revealed, skipped)."""
        if click >= 0:
            self._x.append(float(pctr))
            self._y.append(int(click))

    def fit(self, steps: int = 20) -> tuple[float, float]:
        """MAP (a, b) by Newton's method on every revealed click; returns and keeps them."""
        if not self._x:
            return self.a, self.b
        z = _logit(np.asarray(self._x))
        y = np.asarray(self._y, dtype=np.float64)
        w = np.array([self.a, self.b])
        prec = np.array([1 / self.slope_sd ** 2, 1 / self.offset_sd ** 2])
        prior = np.array([1.0, 0.0])
        for _ in range(steps):
            t = np.clip(w[0] * z + w[1], -30, 30)
            p = 1 / (1 + np.exp(-t))
            r = p - y
            grad = np.array([r @ z, r.sum()]) + prec * (w - prior)
            h = p * (1 - p)
            hess = np.array([[h @ (z * z), h @ z], [h @ z, h.sum()]]) + np.diag(prec)
            step = np.linalg.solve(hess, grad)
            w = w - step
            if np.abs(step).max() < 1e-9:
                break
        if np.isfinite(w).all():
            self.a, self.b = float(w[0]), float(w[1])
        return self.a, self.b

    def calibrated(self, pctr: np.ndarray | float) -> np.ndarray:
        """``σ(a · logit(pCTR) + b)``."""
        return 1 / (1 + np.exp(-(self.a * _logit(np.asarray(pctr, dtype=np.float64)) + self.b)))

    def shape(self, pctr: np.ndarray | float, recent: np.ndarray) -> np.ndarray:
        """``s(pCTR) = p / pCTR`` scaled so that ``mean(recent · s(recent)) = mean(recent)``."""
        recent = np.asarray(recent, dtype=np.float64)
        norm = recent.mean() / max(float(self.calibrated(recent).mean()), 1e-12) if recent.size else 1.0
        pctr = np.asarray(pctr, dtype=np.float64)
        return self.calibrated(pctr) / np.maximum(pctr, _EPS) * norm
