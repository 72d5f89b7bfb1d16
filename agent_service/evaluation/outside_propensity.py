"""Estimated propensities of a logging policy that does not log its own: multinomial logistic regression.

When an outside bidder logs no propensity, OPE needs ``π_b(a | x)`` all the same. The standard
answer (Strehl et al. 2010, "Learning from logged implicit exploration data"; obp's
``IPWLearner``/``estimate_pscore`` do the same) is to fit a classifier of the logged action on
the context and read its predicted probability of the action actually taken::

    p(a | x) = softmax(W^T [1, z(x)])_a,   z = x standardised over the log (constant columns dropped)
    W = argmin  - sum_i log p(a_i | x_i) + l2/2 * ||W without the intercept row||^2

fitted by L-BFGS with the analytic gradient. The estimate is consistent when the bidder's
policy is a log-linear function of ``x``; it is biased when the bidder conditions on something
``x`` does not hold (unobserved confounding), which no estimator on this log can detect.
Estimated probabilities are clipped below at ``clip`` (IPS weights stay bounded, at the cost of a
bias the report counts: :attr:`PropensityFit.n_clipped`). Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

__all__ = ["PropensityFit", "fit_propensities"]


@dataclass(frozen=True)
class PropensityFit:
    """The fitted model's probabilities on the log it was fitted to.

    :param probs: [n, A] estimated ``p(a | x_i)`` for every action (unclipped).
    :param logged: [n] estimated probability of each logged action, clipped to ``[clip, 1]``.
    :param n_clipped: records whose logged-action probability was raised to ``clip``.
    :param clip: the floor. :param converged: whether L-BFGS met its tolerance.
    """

    probs: NDArray[np.float64]
    logged: NDArray[np.float64]
    n_clipped: int
    clip: float
    converged: bool


def fit_propensities(features: ArrayLike, action: ArrayLike, n_actions: int, *, l2: float = 1.0,
                     clip: float = 0.01, max_iter: int = 500) -> PropensityFit:
    """Fit ``p(a | x)`` on the log (see the module docstring) and return its probabilities there.

    :param features: [n, d] context features (d may be 0: the model is then the actions' frequencies).
    :param action: [n] logged action indices in ``range(n_actions)``.
    :param n_actions: size of the action space.
    :param l2: ridge penalty on the non-intercept weights (in units of records).
    :param clip: lowest propensity returned for a logged action, in (0, 1).
    :param max_iter: L-BFGS iterations at most.
    """
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clip must lie in (0, 1), got {clip}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    x = np.asarray(features, dtype=np.float64)
    a = np.asarray(action, dtype=np.intp)
    n = a.shape[0]
    if x.ndim != 2 or x.shape[0] != n or n == 0:
        raise ValueError(f"features must be [n, d] with n={n} > 0, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features have non-finite values")
    if a.min() < 0 or a.max() >= n_actions:
        raise ValueError(f"actions must lie in 0..{n_actions - 1}")
    sd = x.std(axis=0)
    keep = sd > 1e-12
    z = np.hstack([np.ones((n, 1)), (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]])
    d = z.shape[1]
    onehot = np.zeros((n, n_actions))
    onehot[np.arange(n), a] = 1.0
    penalty = np.full((d, 1), l2)
    penalty[0] = 0.0  # the intercept is not shrunk: with no features the fit is the frequencies

    def loss(flat: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        w = flat.reshape(d, n_actions)
        logits = z @ w
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll = -float((onehot * log_p).sum()) + 0.5 * float((penalty * w * w).sum())
        grad = z.T @ (np.exp(log_p) - onehot) + penalty * w
        return nll, grad.ravel()

    res = minimize(loss, np.zeros(d * n_actions), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-8})
    logits = z @ res.x.reshape(d, n_actions)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    raw = probs[np.arange(n), a]
    return PropensityFit(probs, np.clip(raw, clip, 1.0), int((raw < clip).sum()), clip, bool(res.success))
