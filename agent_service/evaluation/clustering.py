"""How well a learned segmentation matches the truth (evaluation only: reads true labels)."""

from __future__ import annotations

import numpy as np

__all__ = ["adjusted_rand_index", "matched_log_loss"]


def _pairs(n: np.ndarray) -> float:
    return float((n * (n - 1) / 2.0).sum())


def adjusted_rand_index(truth: np.ndarray, found: np.ndarray) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings (1 = the same partition, ~0 = chance)."""
    t = np.unique(np.asarray(truth), return_inverse=True)[1].reshape(-1)
    f = np.unique(np.asarray(found), return_inverse=True)[1].reshape(-1)
    table = np.zeros((t.max() + 1, f.max() + 1))
    np.add.at(table, (t, f), 1)
    index, a, b = _pairs(table), _pairs(table.sum(1)), _pairs(table.sum(0))
    expected = a * b / max(_pairs(np.array([len(t)])), 1.0)
    top = (a + b) / 2.0
    return 1.0 if top == expected else (index - expected) / (top - expected)


def matched_log_loss(truth: np.ndarray, posterior: np.ndarray) -> float:
    """Mean −log P(true segment) under ``posterior`` [N, K] after mapping learned labels onto true
    ones by the assignment that maximises the mean posterior of the truth (labels are arbitrary)."""
    from scipy.optimize import linear_sum_assignment

    truth = np.asarray(truth, np.int64)
    p = np.asarray(posterior, np.float64)
    k = max(p.shape[1], int(truth.max()) + 1)
    mass = np.zeros((k, k))  # [learned, true] summed posterior
    np.add.at(mass.T, truth, np.pad(p, ((0, 0), (0, k - p.shape[1]))))
    rows, cols = linear_sum_assignment(-mass)
    to_learned = np.empty(k, np.int64)
    to_learned[cols] = rows
    pp = np.pad(p, ((0, 0), (0, k - p.shape[1])))[np.arange(len(truth)), to_learned[truth]]
    return float(-np.log(np.maximum(pp, 1e-12)).mean())
