"""Delayed conversions: will this touch convert, and when? (Chapelle, KDD 2014.)

Model, for a touch with features ``x`` (an intercept is added):

    P(C = 1 | x) = p(x) = sigmoid(w·x)                 eventual conversion
    D | C = 1, x ~ Exponential(lambda(x)),  lambda(x) = exp(v·x)   delay (per day)

A touch observed ``e`` after it happened is either converted with delay ``d <= e``
(likelihood ``p · lambda · exp(-lambda d)``) or still pending (likelihood
``1 - p + p · exp(-lambda e)``: it may not convert at all, or may convert later). Fitting that
censored likelihood is what removes the bias of "pending counts as no conversion": a pending
touch only says "not yet".

Gradients with respect to the logit ``a = w·x`` and log-rate ``b = v·x``:

    converted:  dL/da = p - 1                    dL/db = lambda d - 1
    pending:    dL/da = p (1-p) (1-S) / Q         dL/db = p S lambda e / Q
                with S = exp(-lambda e), Q = 1 - p + p S

``observe``/``observe_batch`` take one Adam step (online); ``fit`` runs L-BFGS on a batch
(offline or periodic refits). Queries: ``p_eventual``, ``p_convert_by`` and
``expected_value_pending`` (probability that a touch still pending after ``elapsed_s``
converts, eventually or within a horizon — multiply by the conversion value for R_delayed).
Times in the API are seconds; internally days, for conditioning. Pure numpy, seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from agent_service.delay.config import DelayModelConfig
from agent_service.errors import ConfigError, ModelError
from agent_service.units import DAY_S

__all__ = ["DelayedConversionModel"]

_B_MIN, _B_MAX = -12.0, 8.0  # log-rate per day: mean delays from ~3 minutes to ~400 years


class DelayedConversionModel:
    """Eventual-conversion probability and exponential delay, learned from censored labels.

    :param n_features: length of the feature vector (without intercept).
    :param config: learning rate, L2, initial guesses, seed.
    """

    def __init__(self, n_features: int, config: DelayModelConfig | None = None) -> None:
        if n_features < 0:
            raise ConfigError("delay.n_features", "must be >= 0")
        self.config = config or DelayModelConfig()
        self.n_features = n_features
        rng = np.random.default_rng(self.config.seed)
        self.w = np.zeros(n_features + 1)
        self.v = np.zeros(n_features + 1)
        self.w[:-1] = rng.normal(0.0, 0.01, n_features)
        self.w[-1] = float(np.log(self.config.prior_rate / (1 - self.config.prior_rate)))
        self.v[-1] = float(-np.log(self.config.prior_mean_delay_days))
        self._m = np.zeros(2 * (n_features + 1))
        self._s = np.zeros(2 * (n_features + 1))
        self.steps = 0

    # ------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------
    def p_eventual(self, features: np.ndarray) -> Any:
        """Probability that a touch converts at all.

        :param features: one feature vector ``(d,)`` or a batch ``(n, d)``.
        :returns: a float for one vector, an array ``(n,)`` for a batch.
        """
        x, single = self._design(features)
        return _out(_sigmoid(x @ self.w), single)

    def rate_per_s(self, features: np.ndarray) -> Any:
        """Hazard of the exponential delay, per second (mean delay = 1 / rate)."""
        x, single = self._design(features)
        return _out(np.exp(np.clip(x @ self.v, _B_MIN, _B_MAX)) / float(DAY_S), single)

    def p_convert_by(self, features: np.ndarray, t_s: float | np.ndarray) -> Any:
        """Probability that a touch has converted ``t_s`` seconds after it happened.

        :param features: ``(d,)`` or ``(n, d)``.
        :param t_s: seconds since the touch (scalar or ``(n,)``).
        """
        x, single = self._design(features)
        p = _sigmoid(x @ self.w)
        lam = np.exp(np.clip(x @ self.v, _B_MIN, _B_MAX))
        t = np.maximum(np.asarray(t_s, dtype=np.float64) / float(DAY_S), 0.0)
        return _out(p * -np.expm1(-lam * t), single)

    def expected_value_pending(self, features: np.ndarray, elapsed_s: float | np.ndarray,
                               horizon_s: float | np.ndarray | None = None) -> Any:
        """Probability that a touch with no conversion after ``elapsed_s`` still converts.

        ``P(C=1, D <= horizon | D > elapsed) = p (e^{-λ·elapsed} - e^{-λ·horizon}) / (1 - p + p e^{-λ·elapsed})``;
        with ``horizon_s=None`` the horizon is infinite (eventual conversion). Times beyond
        the horizon give 0. Multiply by the conversion value for the expected pending value.

        :param features: ``(d,)`` or ``(n, d)``.
        :param elapsed_s: seconds since the touch without a conversion.
        :param horizon_s: seconds since the touch after which conversions no longer count
            (the attribution window), or None.
        """
        x, single = self._design(features)
        p = _sigmoid(x @ self.w)
        lam = np.exp(np.clip(x @ self.v, _B_MIN, _B_MAX))
        e = np.maximum(np.asarray(elapsed_s, dtype=np.float64) / float(DAY_S), 0.0)
        surv = np.exp(-lam * e)
        later = surv if horizon_s is None else np.maximum(
            surv - np.exp(-lam * np.asarray(horizon_s, dtype=np.float64) / float(DAY_S)), 0.0)
        return _out(p * later / (1.0 - p + p * surv), single)

    # ------------------------------------------------------------------------------------
    # Learning
    # ------------------------------------------------------------------------------------
    def observe(self, features: np.ndarray, elapsed_s: float, converted: bool, delay_s: float | None = None) -> float:
        """One online step on one touch's current label; its negative log-likelihood.

        :param features: the touch's features ``(d,)``.
        :param elapsed_s: seconds from the touch to now (the censoring time).
        :param converted: whether a conversion has been joined to the touch.
        :param delay_s: seconds from the touch to the conversion (required when converted).
        """
        d = np.array([np.nan if delay_s is None else delay_s], dtype=np.float64)
        return self.observe_batch(np.atleast_2d(features), np.array([elapsed_s], dtype=np.float64),
                                  np.array([converted]), d)

    def observe_batch(self, features: np.ndarray, elapsed_s: np.ndarray, converted: np.ndarray,
                      delay_s: np.ndarray) -> float:
        """One Adam step on a minibatch of current labels; the batch's mean NLL before the step.

        :param features: ``(n, d)``.
        :param elapsed_s: ``(n,)`` seconds since each touch.
        :param converted: ``(n,)`` bool.
        :param delay_s: ``(n,)`` conversion delays in seconds (ignored where not converted).
        """
        x, y, e, d = self._batch(features, elapsed_s, converted, delay_s)
        loss, grad = self._loss_grad(np.concatenate([self.w, self.v]), x, y, e, d)
        cfg = self.config
        self.steps += 1
        self._m = cfg.beta1 * self._m + (1 - cfg.beta1) * grad
        self._s = cfg.beta2 * self._s + (1 - cfg.beta2) * grad * grad
        m_hat = self._m / (1 - cfg.beta1**self.steps)
        s_hat = self._s / (1 - cfg.beta2**self.steps)
        theta = np.concatenate([self.w, self.v]) - cfg.lr * m_hat / (np.sqrt(s_hat) + 1e-8)
        self._set(theta)
        return loss

    def fit(self, features: np.ndarray, elapsed_s: np.ndarray, converted: np.ndarray, delay_s: np.ndarray,
            max_iter: int = 200) -> float:
        """Maximise the censored likelihood of a batch (L-BFGS from the current weights).

        :param features: ``(n, d)``; :param elapsed_s: ``(n,)``; :param converted: ``(n,)``;
        :param delay_s: ``(n,)`` as in :meth:`observe_batch`.
        :param max_iter: L-BFGS iterations.
        :returns: the final mean NLL.
        """
        x, y, e, d = self._batch(features, elapsed_s, converted, delay_s)
        res = minimize(self._loss_grad, np.concatenate([self.w, self.v]), args=(x, y, e, d), jac=True,
                       method="L-BFGS-B", options={"maxiter": max_iter})
        self._set(res.x)
        return float(res.fun)

    def state_dict(self) -> dict[str, Any]:
        """Weights and optimiser state (for checkpoints / the model registry)."""
        return {"w": self.w.copy(), "v": self.v.copy(), "m": self._m.copy(), "s": self._s.copy(),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        w, v = np.asarray(state["w"], dtype=np.float64), np.asarray(state["v"], dtype=np.float64)
        if w.shape != self.w.shape or v.shape != self.v.shape or not (np.isfinite(w).all() and np.isfinite(v).all()):
            raise ModelError("delay model state does not match this model (shape or non-finite weights)")
        self.w, self.v = w.copy(), v.copy()
        self._m = np.asarray(state["m"], dtype=np.float64).copy()
        self._s = np.asarray(state["s"], dtype=np.float64).copy()
        self.steps = int(state["steps"])

    # ------------------------------------------------------------------------------------
    # Plumbing
    # ------------------------------------------------------------------------------------
    def _design(self, features: np.ndarray) -> tuple[np.ndarray, bool]:
        f = np.asarray(features, dtype=np.float64)
        single = f.ndim == 1
        f = np.atleast_2d(f)
        if f.shape[1] != self.n_features:
            raise ModelError(f"expected {self.n_features} features, got {f.shape[1]}")
        return np.hstack([f, np.ones((f.shape[0], 1))]), single

    def _batch(self, features: np.ndarray, elapsed_s: np.ndarray, converted: np.ndarray,
               delay_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x, _ = self._design(features)
        y = np.asarray(converted, dtype=bool)
        e = np.asarray(elapsed_s, dtype=np.float64) / float(DAY_S)
        d = np.asarray(delay_s, dtype=np.float64) / float(DAY_S)
        if not (y.shape == e.shape == d.shape == (x.shape[0],)):
            raise ModelError("features, elapsed_s, converted and delay_s must have the same length")
        if (e < 0).any() or not np.isfinite(e).all():
            raise ModelError("elapsed_s must be finite and >= 0")
        if y.any() and (not np.isfinite(d[y]).all() or (d[y] < 0).any()):
            raise ModelError("converted touches need a finite delay_s >= 0")
        return x, y, e, np.where(y, d, 0.0)

    def _set(self, theta: np.ndarray) -> None:
        if not np.isfinite(theta).all():
            raise ModelError("delay model update produced non-finite weights")
        k = self.n_features + 1
        self.w, self.v = theta[:k].copy(), theta[k:].copy()

    def _loss_grad(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray, e: np.ndarray,
                   d: np.ndarray) -> tuple[float, np.ndarray]:
        k = self.n_features + 1
        w, v = theta[:k], theta[k:]
        a = x @ w
        b_raw = x @ v
        b = np.clip(b_raw, _B_MIN, _B_MAX)
        lam = np.exp(b)
        p = _sigmoid(a)
        log_p = -np.logaddexp(0.0, -a)
        log_1mp = -np.logaddexp(0.0, a)
        surv = np.exp(-lam * e)
        q = (1.0 - p) + p * surv
        # converted: -log p - b + lam d ; pending: -log(1 - p + p S) (computed stably)
        log_q = np.logaddexp(log_1mp, log_p - lam * e)
        nll = np.where(y, -log_p - b + lam * d, -log_q)
        ga = np.where(y, p - 1.0, p * (1.0 - p) * (1.0 - surv) / q)
        gb = np.where(y, lam * d - 1.0, p * surv * lam * e / q)
        gb = np.where(b_raw == b, gb, 0.0)  # clipped: no gradient through the clip
        n = x.shape[0]
        l2 = self.config.l2
        loss = float(nll.mean() + 0.5 * l2 * (w[:-1] @ w[:-1] + v[:-1] @ v[:-1]))
        gw = x.T @ ga / n
        gv = x.T @ gb / n
        gw[:-1] += l2 * w[:-1]
        gv[:-1] += l2 * v[:-1]
        if not self.config.delay_by_features:
            gv[:-1] = 0.0  # the rate's feature weights stay at 0: one shared rate
        return loss, np.concatenate([gw, gv])


def _sigmoid(a: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.exp(-np.logaddexp(0.0, -a))
    return out


def _out(arr: np.ndarray, single: bool) -> Any:
    return float(arr[0]) if single else arr
