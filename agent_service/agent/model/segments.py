"""A person's discovered-segment posterior, accumulated over every request seen from them.

One request's page/app context says little about who the person is (``P(segment | context)``
is broad); the contexts of all their requests say much more. Taking contexts as independent
evidence given the segment (naive Bayes)::

    P(k | c_1..c_n)  ∝  P(k) · Π_i P(k | c_i) / P(k)

so the journey state keeps only the evidence — how many requests of each context the person
made (integer counts, written once per decision id) — and the posterior is recomputed from it
with the current segment model: a refit of the discovery engine changes beliefs, never the
stored evidence. Measured on the simulator (``simulators/README.md``, "What a bidder can
know"): dual pacing on the true mean values of observable cells reaches 87 % of the hindsight
optimum with this posterior, 74 % with one request's context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent_service.ports.store import ACTIVITY_HALF_LIFE_MS

__all__ = ["ActivityAccumulator", "SegmentAccumulator", "SegmentModel", "counts_matrix"]

_TINY = 1e-12


class SegmentModel:
    """``P(segment | context)`` per context and the segments' prior ``P(segment)``.

    :param table: float [n_contexts, K]; rows are posteriors (a segment the world lacks is a
        zero column, and stays zero). :param prior: float [K] segment shares (zero for absent ones).
    """

    def __init__(self, table: np.ndarray, prior: np.ndarray) -> None:
        table = np.asarray(table, np.float64)
        prior = np.asarray(prior, np.float64)
        if table.ndim != 2 or prior.shape != (table.shape[1],):
            raise ValueError(f"table must be [contexts, K] and prior [K], got {table.shape} and {prior.shape}")
        if (table < 0).any() or (prior < 0).any() or prior.sum() <= 0:
            raise ValueError("probabilities must be >= 0 and the prior must not be all zero")
        self.table = table
        self.prior = prior / prior.sum()
        self._present = self.prior > 0
        self._log_prior = np.where(self._present, np.log(np.maximum(self.prior, _TINY)), -np.inf)
        # evidence of one request of context c: log P(k|c) - log P(k) (0 on absent segments)
        self._llr = np.where(self._present, np.log(np.maximum(table, _TINY)) - np.log(np.maximum(self.prior, _TINY)),
                             0.0)

    @property
    def contexts(self) -> int:
        return self.table.shape[0]

    @property
    def segments(self) -> int:
        return self.table.shape[1]

    @classmethod
    def uniform(cls, contexts: int, segments: int) -> SegmentModel:
        """No information: every posterior is the uniform prior."""
        return cls(np.full((contexts, segments), 1.0 / segments), np.full(segments, 1.0 / segments))

    @classmethod
    def hashed_contexts(cls, contexts: int, segments: int, signal: float = 0.5) -> SegmentModel:
        """The service's stand-in until the discovery engine publishes a model: context bucket
        ``c`` points at segment ``c mod K`` with probability ``signal`` above uniform."""
        table = np.full((contexts, segments), (1.0 - signal) / segments)
        table[np.arange(contexts), np.arange(contexts) % segments] += signal
        return cls(table, np.full(segments, 1.0 / segments))

    def posterior(self, counts: np.ndarray) -> np.ndarray:
        """float [B, K] posterior of each row of ``counts`` (float [B, n_contexts], requests per
        context; a row of zeros gives the prior)."""
        counts = np.asarray(counts, np.float64)
        if counts.ndim != 2 or counts.shape[1] != self.contexts:
            raise ValueError(f"counts must be [B, {self.contexts}], got {counts.shape}")
        logit = self._log_prior + counts @ self._llr
        logit -= logit.max(axis=1, keepdims=True)
        p = np.exp(logit)
        return p / p.sum(axis=1, keepdims=True)


def counts_matrix(profiles: Sequence[Sequence[tuple[int, int]]], current: np.ndarray, contexts: int) -> np.ndarray:
    """float [B, contexts]: each stored profile ((context, requests) pairs; contexts outside the
    model are ignored) plus the request being decided (``current`` [B], -1 for none)."""
    # Summed in Python floats (IEEE doubles, the same sums in the same order) and converted once:
    # a decision batch has a few rows of a few contexts, where each numpy call costs more.
    rows = []
    for prof, cur in zip(profiles, np.asarray(current, np.int64).tolist(), strict=True):
        row = [0.0] * contexts
        for c, n in prof:
            if 0 <= c < contexts:
                row[c] += n
        if 0 <= cur < contexts:
            row[cur] += 1.0
        rows.append(row)
    return np.array(rows, np.float64).reshape(len(rows), contexts)


class SegmentAccumulator:
    """Per-key context counts kept in process (the simulator glue's stand-in for the state
    store's profile), with the segment model learnt from what requests show: each context's
    posterior as given, and their running mean as the prior.

    :param segments: K.
    """

    def __init__(self, segments: int) -> None:
        self._counts = np.zeros((0, 0), np.int32)  # [key, context] requests seen
        self._table = np.zeros((0, segments))  # [context, K] P(segment | context) as shown
        self._prior_sum = np.zeros(segments)
        self._prior_n = 0

    def posterior(self, key: np.ndarray, context: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """float [B, K]: each key's posterior over its earlier requests and this one; then count
        the batch (a key twice in a batch sees the counts from before it, as the store would).

        :param key: int [B] journey keys (>= 0). :param context: int [B] context ids (>= 0).
        :param probs: float [B, K] ``P(segment | context)`` of each request.
        """
        key, ctx = np.asarray(key, np.int64), np.asarray(context, np.int64)
        if not len(ctx):
            return np.asarray(probs, np.float64)
        self._table = _grown(self._table, int(ctx.max()) + 1, self._table.shape[1])
        self._counts = _grown(self._counts, int(key.max()) + 1, self._table.shape[0])  # a column per context row
        self._table[ctx] = probs
        self._prior_sum += np.asarray(probs).sum(axis=0)
        self._prior_n += len(ctx)
        counts = self._counts[key].astype(np.float64)
        counts[np.arange(len(ctx)), ctx] += 1.0
        np.add.at(self._counts, (key, ctx), 1)
        return SegmentModel(self._table, self._prior_sum / self._prior_n).posterior(counts)


class ActivityAccumulator:
    """Per-key recent activity kept in process (``ports.store.Activity``, vectorised): the
    simulator glue's stand-in for the store's profile."""

    def __init__(self) -> None:
        self.table = np.zeros((0, 3))
        """[key] decayed requests, of which offering paid search, time of the latest (ms)."""

    def add(self, key: np.ndarray, t_ms: np.ndarray, search: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each key's recent requests and those offering paid search, this one included (a key
        twice in a batch sees the counts from before it, as the store would); then count the batch."""
        key, t = np.asarray(key, np.int64), np.asarray(t_ms, np.float64)
        search = np.asarray(search, np.float64)
        if not len(key):
            return np.zeros(0), np.zeros(0)
        a = self.table = _grown(self.table, int(key.max()) + 1, 3)
        fade = _decay(t - a[key, 2])
        recent, recent_search = a[key, 0] * fade + 1.0, a[key, 1] * fade + search
        t_new = a[:, 2].copy()
        np.maximum.at(t_new, key, t)
        f_old = _decay(t_new[key] - a[key, 2])
        a[key, 0] *= f_old  # every row of a key gets the same factor: the key decays once
        a[key, 1] *= f_old
        w = _decay(t_new[key] - t)
        np.add.at(a[:, 0], key, w)
        np.add.at(a[:, 1], key, w * search)
        a[:, 2] = t_new
        return recent, recent_search


def _decay(age_ms: np.ndarray) -> np.ndarray:
    return np.exp2(-np.maximum(age_ms, 0.0) / ACTIVITY_HALF_LIFE_MS)


def _grown(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``a`` with at least ``rows`` rows (doubling) and ``cols`` columns, zero-filled."""
    if rows <= a.shape[0] and cols <= a.shape[1]:
        return a
    out = np.zeros((max(rows, 2 * a.shape[0]) if rows > a.shape[0] else a.shape[0], max(cols, a.shape[1])), a.dtype)
    out[:a.shape[0], :a.shape[1]] = a
    return out
