"""Off-policy evaluation: what a candidate policy would have earned, from the logs of another.

Inputs follow the Open Bandit Pipeline's layout (Saito et al. 2021, ``obp``) so the numbers can
be checked against it: ``n`` logged rounds with the action taken, its slot (``position``), the
reward observed and the logging policy's propensity of that action; the candidate's action
distribution ``action_dist[n, actions, positions]``; for the model-based estimators a reward
model ``q_hat[n, actions, positions]``. Estimators (each returns the value, a 95 % bootstrap
interval of the mean of its per-round terms, the effective sample size and a support warning):

* IPS — ``mean(w · r)``, ``w = π_e(a|x) / π_b(a|x)``;
* SNIPS — ``mean(w · r) / mean(w)`` (self-normalised: invariant to a constant factor on ``w``);
* DR — ``mean(Σ_a π_e(a|x) q̂(x,a) + w · (r − q̂(x,a)))`` (unbiased when either ``π_b`` or ``q̂`` is right);
* switch-DR — DR's correction only where ``w ≤ τ``, the reward model alone elsewhere (bounded variance).

The effective sample size is Kish's ``(Σw)² / Σw²``; support is *poor* when it is under 1 % of the
rounds or some candidate action was never logged with positive propensity where the candidate
plays it. Records are checked before use: a missing propensity, a propensity outside (0, 1] or
an unknown model version is refused and counted by reason (:func:`check_records`), never used.

For the bid dimension the action is the bid-multiplier index the decision logged
(``Action.multiplier``) and its propensity the slot's multiplier probability; delayed rewards
are used only once a decision's window has closed (:func:`closed_rewards`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Estimate", "RecordCheck", "check_records", "closed_rewards", "dm", "dr", "ips", "snips", "switch_dr"]


class Estimate(NamedTuple):
    """One estimator's answer."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    ess: float
    """Kish's effective sample size of the importance weights."""
    n: int
    poor_support: bool
    """True when ``ess < 1 %`` of the rounds or the candidate plays actions the log never shows."""


def _factual(arr: np.ndarray, action: np.ndarray, position: np.ndarray) -> np.ndarray:
    return arr[np.arange(len(action)), action, position]


def _weights(action_dist: np.ndarray, action: np.ndarray, position: np.ndarray, pscore: np.ndarray) -> np.ndarray:
    return _factual(action_dist, action, position) / pscore


def _bootstrap(terms: np.ndarray, seed: int, n_boot: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``terms`` (obp's ``estimate_confidence_interval_by_bootstrap``)."""
    rng = np.random.default_rng(seed)
    n = len(terms)
    means = np.array([terms[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _estimate(name: str, terms: np.ndarray, w: np.ndarray, support_gap: bool, seed: int, n_boot: int,
              value: float | None = None) -> Estimate:
    lo, hi = _bootstrap(terms, seed, n_boot) if n_boot > 0 else (float("nan"), float("nan"))
    ess = float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300))
    return Estimate(name, float(terms.mean()) if value is None else value, lo, hi, ess, len(terms),
                    bool(ess < 0.01 * len(terms) or support_gap))


def _check(reward: np.ndarray, action: np.ndarray, position: np.ndarray | None, pscore: np.ndarray,
           action_dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    reward, action, pscore = np.asarray(reward, np.float64), np.asarray(action, np.int64), np.asarray(pscore, np.float64)
    n = len(reward)
    pos = np.zeros(n, np.int64) if position is None else np.asarray(position, np.int64)
    ad = np.asarray(action_dist, np.float64)
    if ad.ndim == 2:
        ad = ad[:, :, None]
    if not (len(action) == len(pscore) == len(pos) == n == ad.shape[0]):
        raise ValueError("reward, action, position, pscore and action_dist need the same number of rounds")
    if not np.all((pscore > 0) & (pscore <= 1)):
        raise ValueError("every pscore must be in (0, 1]: refuse such records first (check_records)")
    if not np.allclose(ad.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("action_dist must sum to 1 over actions in every round and position")
    return reward, action, pos, pscore, ad


def _support_gap(ad: np.ndarray, action: np.ndarray, pos: np.ndarray) -> bool:
    """The candidate puts mass on an (action, position) the log never shows."""
    seen = np.zeros(ad.shape[1:], bool)
    seen[action, pos] = True
    return bool((ad.sum(axis=0)[~seen] > 1e-9 * len(ad)).any())


def ips(reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None, seed: int = 0,
        n_boot: int = 1000) -> Estimate:
    """Inverse propensity scoring (obp's ``InverseProbabilityWeighting``)."""
    r, a, p, ps, ad = _check(reward, action, position, pscore, action_dist)
    w = _weights(ad, a, p, ps)
    return _estimate("ips", w * r, w, _support_gap(ad, a, p), seed, n_boot)


def snips(reward: Any, action: Any, pscore: Any, action_dist: Any, position: Any = None, seed: int = 0,
          n_boot: int = 1000) -> Estimate:
    """Self-normalised IPS (obp's ``SelfNormalizedInverseProbabilityWeighting``)."""
    r, a, p, ps, ad = _check(reward, action, position, pscore, action_dist)
    w = _weights(ad, a, p, ps)
    return _estimate("snips", w * r / w.mean(), w, _support_gap(ad, a, p), seed, n_boot)


def dm(reward: Any, action: Any, pscore: Any, action_dist: Any, q_hat: Any, position: Any = None, seed: int = 0,
       n_boot: int = 1000) -> Estimate:
    """The direct method: the reward model under the candidate, ``mean(Σ_a π_e(a|x) q̂(x,a))``."""
    r, a, p, ps, ad = _check(reward, action, position, pscore, action_dist)
    q = np.asarray(q_hat, np.float64).reshape(ad.shape)
    w = _weights(ad, a, p, ps)
    return _estimate("dm", (ad[np.arange(len(a)), :, p] * q[np.arange(len(a)), :, p]).sum(axis=1), w,
                     _support_gap(ad, a, p), seed, n_boot)


def dr(reward: Any, action: Any, pscore: Any, action_dist: Any, q_hat: Any, position: Any = None, seed: int = 0,
       n_boot: int = 1000) -> Estimate:
    """Doubly robust (obp's ``DoublyRobust``)."""
    return _dr("dr", reward, action, pscore, action_dist, q_hat, position, np.inf, seed, n_boot)


def switch_dr(reward: Any, action: Any, pscore: Any, action_dist: Any, q_hat: Any, position: Any = None,
              tau: float = 100.0, seed: int = 0, n_boot: int = 1000) -> Estimate:
    """Switch-DR (Wang et al. 2017; obp's ``SwitchDoublyRobust``): DR's correction where ``w ≤ τ``."""
    return _dr("switch_dr", reward, action, pscore, action_dist, q_hat, position, tau, seed, n_boot)


def _dr(name: str, reward: Any, action: Any, pscore: Any, action_dist: Any, q_hat: Any, position: Any, tau: float,
        seed: int, n_boot: int) -> Estimate:
    r, a, p, ps, ad = _check(reward, action, position, pscore, action_dist)
    q = np.asarray(q_hat, np.float64).reshape(ad.shape)
    rows = np.arange(len(a))
    w = _weights(ad, a, p, ps)
    baseline = (ad[rows, :, p] * q[rows, :, p]).sum(axis=1)
    terms = baseline + (w <= tau) * w * (r - _factual(q, a, p))
    return _estimate(name, terms, w, _support_gap(ad, a, p), seed, n_boot)


# ---------------------------------------------------------------------------- the decision log
@dataclass
class RecordCheck:
    """Which logged decisions may be used, and why the others may not."""

    keep: np.ndarray
    """bool [n]."""
    refused: Counter[str] = field(default_factory=Counter)
    """Count of refused records per reason."""


def check_records(records: Sequence[Mapping[str, Any]], versions: Iterable[int]) -> RecordCheck:
    """Refuse records without a propensity, with one outside (0, 1], or from a model version not
    in ``versions`` (reasons: ``missing_propensity``, ``propensity_out_of_range``, ``unknown_version``)."""
    known = set(versions)
    keep = np.zeros(len(records), bool)
    refused: Counter[str] = Counter()
    for i, rec in enumerate(records):
        p = rec.get("propensity")
        if p is None or not isinstance(p, (int, float)) or p != p:
            refused["missing_propensity"] += 1
        elif not 0 < p <= 1:
            refused["propensity_out_of_range"] += 1
        elif rec.get("model_version") not in known:
            refused["unknown_version"] += 1
        else:
            keep[i] = True
    return RecordCheck(keep, refused)


def closed_rewards(decided_ms: np.ndarray, as_of_ms: int, window_ms: int) -> tuple[np.ndarray, str]:
    """Keep only the decisions whose attribution window has closed by ``as_of_ms`` (their reward
    is final); returns (mask, how) with ``how`` saying which rewards the estimate rests on."""
    closed = np.asarray(decided_ms, np.int64) + window_ms <= as_of_ms
    return closed, f"closed windows only: {int(closed.sum())} of {len(closed)} decisions (window {window_ms} ms)"
