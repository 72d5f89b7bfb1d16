"""p̂(conversion | click) for v̂ and R_delayed: the Chapelle delay model, shrunk to its prior
until the evidence has matured.

Conversions land days after their click, so early on almost every click is still pending and
the censored likelihood cannot tell "converts rarely" from "converts late": fitted alone, the
eventual-conversion probability drifts toward 0 in the first days and recovers when the
conversions arrive. The estimate served is therefore the empirical-Bayes blend

    p̂(x) = (w · p_model(x) + n0 · p_prior) / (w + n0),   w = Σ_i (1 − e^{−e_i / d̄})

where ``e_i`` is how long click ``i`` has been observed and ``d̄`` the prior mean delay: ``w``
counts the clicks whose outcome is (in expectation) already visible. ``n0`` is the prior's
strength in clicks. The delay itself (for what is still to come) is the model's exponential
rate, blended the same way with the prior rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent_service.delay.learner import DelayedFeedbackLearner
from agent_service.delay.model import DelayedConversionModel
from agent_service.units import DAY_S

__all__ = ["ConversionEstimate"]



class ConversionEstimate:
    """The served conversion estimate (see the module docstring).

    :param model: the delay model (trained elsewhere, e.g. by a ``DelayedFeedbackLearner``).
    :param prior_rate: p_prior. :param prior_delay_days: d̄. :param strength: n0 in clicks.
    """

    def __init__(self, model: DelayedConversionModel, prior_rate: float, prior_delay_days: float,
                 strength: float = 300.0, matured: float = 0.0) -> None:
        self.model = model
        self.prior_rate = prior_rate
        self.prior_delay_days = prior_delay_days
        self.strength = strength
        self.matured = matured

    def refresh(self, learner: DelayedFeedbackLearner, now_ms: int) -> None:
        """Recount the matured evidence ``w`` from the learner's touches as of ``now_ms``."""
        if learner.labelled:
            _, elapsed, converted, _ = learner.labels(now_ms)
            mature = 1.0 - np.exp(-elapsed / (float(DAY_S) * self.prior_delay_days))
            self.matured = float(np.where(converted, 1.0, mature).sum())

    def _weight(self) -> float:
        return self.matured / (self.matured + self.strength)

    def p_eventual(self, x: np.ndarray) -> np.ndarray:
        """Blended probability that a click with features ``x`` [B, F] converts."""
        w = self._weight()
        return w * self.model.p_eventual(x) + (1 - w) * self.prior_rate

    def p_pending(self, x: np.ndarray, elapsed_s: np.ndarray, horizon_s: float) -> np.ndarray:
        """P(a conversion inside the horizon still comes | none after ``elapsed_s``)."""
        w = self._weight()
        p = self.p_eventual(x)
        lam = w * self.model.rate_per_s(x) * float(DAY_S) + (1 - w) / self.prior_delay_days  # per day
        e = np.maximum(elapsed_s, 0.0) / float(DAY_S)
        surv = np.exp(-lam * e)
        later = np.maximum(surv - np.exp(-lam * horizon_s / float(DAY_S)), 0.0)
        return p * later / (1.0 - p + p * surv)

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "matured": self.matured}
