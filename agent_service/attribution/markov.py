"""Data-driven attribution by the removal effect of a Markov chain over journeys, solved exactly.

The model (Anderl et al. 2016; the ``channelattribution`` package's ``markov_model``):
states are the last ``order`` channels of a journey (k-grams sliding one step; consecutive
equal states merge), plus ``(start)`` and the absorbing ``(conversion)`` and ``(null)``.
Every path contributes its journeys (``total_conversions + total_null``) to each of its
transitions, ``total_conversions`` to last→conversion and ``total_null`` to last→null.

Removal effect of channel ``c``: ``RE_c = 1 - P_{-c}(conv) / P(conv)``, where in the chain
without ``c`` every state containing ``c`` leads to ``(null)``. Equivalently ``RE_c`` is the
probability that a converting journey of the chain visits ``c``. Credit:
``conversions_c = total_conversions * RE_c / sum(RE)``. Value uses the same chain with each
conversion worth the mean value per conversion of the paths ending in its last state:
``RV_c = 1 - E_{-c}[value] / E[value]``, ``value_c = total_value * RV_c / sum(RV)``.

``channelattribution`` estimates these by simulating journeys, cut at ``max_step`` steps
(the longest observed path by default), which biases removal effects low. Here the
absorbing chain is solved: expected visits ``v`` from ``(start)`` satisfy
``(I - Q)^T v = e_start`` (``Q``: transient-to-transient probabilities), so
``P(conv) = v · r`` with ``r`` the one-step conversion probabilities. One linear solve per
channel, milliseconds for order 1; building the transition counts is vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from agent_service.attribution.paths import PathTable
from agent_service.errors import ConfigError

__all__ = ["MarkovModel"]

_DENSE_MAX = 400  # transient states up to which dense solves are used


@dataclass(frozen=True, eq=False)
class MarkovModel:
    """A fitted chain and its removal effects.

    :param channels: channel names (index = channel code).
    :param order: chain order.
    :param states: channel codes of each transient state; ``states[0] == ()`` is ``(start)``.
    :param counts: sparse ``(T+2) x (T+2)`` transition counts over ``T`` transient states,
        then ``(conversion)`` and ``(null)``.
    :param conversion_probability: ``P(conv)`` from ``(start)``.
    :param removal_effects: ``RE_c`` per channel (conversions).
    :param removal_effects_value: ``RV_c`` per channel (value).
    :param total_conversions: conversions in the fitted table.
    :param total_value: conversion value in the fitted table.
    """

    channels: tuple[str, ...]
    order: int
    states: tuple[tuple[int, ...], ...]
    counts: sp.csr_matrix
    conversion_probability: float
    removal_effects: np.ndarray
    removal_effects_value: np.ndarray
    total_conversions: float
    total_value: float

    # ------------------------------------------------------------------------------------
    # Batch face
    # ------------------------------------------------------------------------------------
    def credit(self) -> tuple[np.ndarray, np.ndarray]:
        """Conversions and value credited to each channel (arrays indexed like ``channels``)."""
        return (_share(self.removal_effects, self.total_conversions),
                _share(self.removal_effects_value, self.total_value))

    def transition_probabilities(self) -> dict[tuple[str, str], float]:
        """``(from, to) -> probability`` with states named like ``channelattribution``'s
        (channel names joined by spaces for ``order > 1``; ``(start)``, ``(conversion)``, ``(null)``)."""
        names = ["(start)"] + [" ".join(self.channels[c] for c in s) for s in self.states[1:]]
        names += ["(conversion)", "(null)"]
        coo = self.counts.tocoo()
        rows = np.asarray(self.counts.sum(axis=1)).ravel()
        return {(names[i], names[j]): float(x / rows[i]) for i, j, x in zip(coo.row, coo.col, coo.data, strict=True)
                if x > 0}

    # ------------------------------------------------------------------------------------
    # Per-conversion face
    # ------------------------------------------------------------------------------------
    def journey_fractions(self, channels: Sequence[str]) -> np.ndarray:
        """Fractions of one conversion per touch of a journey, from the fitted removal effects.

        Each distinct channel of the journey gets ``RE_c / sum of RE over the journey's
        distinct channels``, split evenly over its touches. A channel the model never saw gets
        the mean removal effect of the known channels; if every weight is zero the split is
        linear.

        :param channels: the channel of each touch, oldest first.
        :returns: float64 array summing to 1 (empty for an empty journey).
        """
        n = len(channels)
        if n == 0:
            return np.zeros(0)
        known = {c: i for i, c in enumerate(self.channels)}
        re = self.removal_effects
        fallback = float(re.mean()) if re.size else 1.0
        distinct = list(dict.fromkeys(channels))
        weight = {c: (float(re[known[c]]) if c in known else fallback) for c in distinct}
        total = sum(weight.values())
        if total <= 0:
            return np.full(n, 1.0 / n)
        occurrences = {c: 0 for c in distinct}
        for c in channels:
            occurrences[c] += 1
        return np.array([weight[c] / total / occurrences[c] for c in channels])

    # ------------------------------------------------------------------------------------
    # Fitting
    # ------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, table: PathTable, order: int = 1) -> MarkovModel:
        """Fit the chain of ``table`` and solve its removal effects exactly.

        :param table: the paths with conversions, value and nulls.
        :param order: states are the last ``order`` channels (1 to 6).
        """
        if not 1 <= order <= 6:
            raise ConfigError("attribution.markov_order", "must be between 1 and 6")
        n_ch = len(table.channels)
        base = n_ch + 1
        if base**order >= 2**62:
            raise ConfigError("attribution.markov_order",
                              f"order {order} with {n_ch} channels is too large; lower the order")
        keys, key_offsets = _state_keys(table, order, base)
        uniq, seq = _dense_ids(keys)  # seq: state ids 1..len(uniq); 0 is (start)
        n_t = uniq.shape[0] + 1  # transient: (start) + states
        conv_i, null_i = n_t, n_t + 1
        size = n_t + 2
        lens = np.diff(key_offsets)
        journeys = table.conversions + table.nulls
        frm = np.empty_like(seq)
        frm[1:] = seq[:-1]
        frm[key_offsets[:-1]] = 0
        last = seq[key_offsets[1:] - 1]
        step_weight = np.repeat(journeys, lens)
        if size * size <= 4_000_000:  # dense counting: no sort
            flat = np.bincount(frm * size + seq, weights=step_weight, minlength=size * size)
            flat += np.bincount(last * size + conv_i, weights=table.conversions, minlength=size * size)
            flat += np.bincount(last * size + null_i, weights=table.nulls, minlength=size * size)
            counts = sp.csr_matrix(flat.reshape(size, size))
        else:
            rows = np.concatenate([frm, last, last])
            cols = np.concatenate([seq, np.full(last.shape, conv_i), np.full(last.shape, null_i)])
            data = np.concatenate([step_weight, table.conversions, table.nulls])
            counts = sp.csr_matrix((data, (rows, cols)), shape=(size, size))
            counts.sum_duplicates()
        counts.eliminate_zeros()

        # Mean value per conversion by last state (paths with conversions only).
        has_conv = table.conversions > 0
        conv_by_last = np.bincount(last[has_conv], weights=table.conversions[has_conv], minlength=n_t)
        value_by_last = np.bincount(last[has_conv], weights=table.values[has_conv], minlength=n_t)
        mean_value = np.divide(value_by_last, conv_by_last, out=np.zeros(n_t), where=conv_by_last > 0)

        out = np.asarray(counts.sum(axis=1)).ravel()[:n_t]
        dead = out <= 0  # reachable only through zero-weight paths: send to (null)
        inv_out = np.divide(1.0, out, out=np.zeros(n_t), where=~dead)
        probs = sp.diags(np.append(inv_out, [0.0, 0.0])) @ counts
        q = probs[:n_t, :n_t].tocsr()
        r_conv = np.asarray(probs[:n_t, conv_i].todense()).ravel()
        r_value = r_conv * mean_value

        states = [()] + [_decode(int(k), base, order) for k in uniq]
        everything = np.ones(n_t, dtype=bool)
        p_conv, e_value = _absorb(q, r_conv, r_value, everything)
        re = np.zeros(n_ch)
        rv = np.zeros(n_ch)
        members = _channel_members(states, n_ch)
        for c in range(n_ch):
            keep = ~members[:, c]
            pc, ev = _absorb(q, r_conv, r_value, keep)
            re[c] = 1.0 - pc / p_conv if p_conv > 0 else 0.0
            rv[c] = 1.0 - ev / e_value if e_value > 0 else 0.0
        np.clip(re, 0.0, 1.0, out=re)
        np.clip(rv, 0.0, 1.0, out=rv)
        return cls(table.channels, order, tuple(states), counts, float(p_conv), re, rv,
                   float(table.conversions.sum()), float(table.values.sum()))


# ---------------------------------------------------------------------------------------
# Plumbing
# ---------------------------------------------------------------------------------------
def _share(weights: np.ndarray, total: float) -> np.ndarray:
    s = weights.sum()
    return weights / s * total if s > 0 else np.zeros_like(weights)


def _state_keys(table: PathTable, order: int, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys of each path's state sequence (consecutive repeats merged) and offsets."""
    codes = table.codes.astype(np.int64) + 1  # 0 pads short windows
    lens = table.lengths
    starts = table.offsets[:-1]
    if order == 1:
        keys = codes
        key_offsets = table.offsets
    else:
        nwin = np.maximum(lens - order + 1, 1)
        win_offsets = np.zeros(nwin.shape[0] + 1, dtype=np.int64)
        np.cumsum(nwin, out=win_offsets[1:])
        path_of_win = np.repeat(np.arange(nwin.shape[0]), nwin)
        first = starts[path_of_win] + (np.arange(win_offsets[-1]) - win_offsets[:-1][path_of_win])
        end = table.offsets[1:][path_of_win]
        keys = np.zeros(first.shape[0], dtype=np.int64)
        scale = 1
        for j in range(order):
            idx = first + j
            ok = idx < end
            keys += np.where(ok, codes[np.minimum(idx, codes.shape[0] - 1)], 0) * scale
            scale *= base
        key_offsets = win_offsets
    # Merge consecutive equal states inside each path.
    keep = np.ones(keys.shape[0], dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    keep[key_offsets[:-1]] = True
    if keep.all():
        return keys, key_offsets
    kept = np.add.reduceat(keep.astype(np.int64), key_offsets[:-1])
    new_offsets = np.zeros(kept.shape[0] + 1, dtype=np.int64)
    np.cumsum(kept, out=new_offsets[1:])
    return keys[keep], new_offsets


def _dense_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and the 1-based id of each key (no sort when keys are small)."""
    top = int(keys.max()) + 1 if keys.size else 1
    if top <= 4 * keys.shape[0] + 1024:
        present = np.bincount(keys, minlength=top) > 0
        uniq = np.flatnonzero(present)
        ids = np.zeros(top, dtype=np.int64)
        ids[uniq] = np.arange(1, uniq.shape[0] + 1)
        return uniq, ids[keys]
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq, inv.astype(np.int64) + 1


def _decode(key: int, base: int, order: int) -> tuple[int, ...]:
    out = []
    for _ in range(order):
        key, digit = divmod(key, base)
        if digit:
            out.append(digit - 1)
    return tuple(out)


def _channel_members(states: list[tuple[int, ...]], n_ch: int) -> np.ndarray:
    m = np.zeros((len(states), n_ch), dtype=bool)
    for i, s in enumerate(states):
        m[i, list(s)] = True
    return m


def _absorb(q: sp.csr_matrix, r_conv: np.ndarray, r_value: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    """``P(conv)`` and ``E[value]`` from ``(start)`` with only the ``keep`` states (others lead to null)."""
    idx = np.flatnonzero(keep)
    qk = q[idx][:, idx]
    rhs = np.zeros(idx.shape[0])
    rhs[0] = 1.0  # (start) is state 0 and always kept
    if idx.shape[0] <= _DENSE_MAX:
        a = np.eye(idx.shape[0]) - qk.toarray()
        visits = np.linalg.solve(a.T, rhs)
    else:
        a = (sp.identity(idx.shape[0], format="csc") - qk.tocsc()).T.tocsc()
        visits = spla.splu(a).solve(rhs)
    return float(visits @ r_conv[idx]), float(visits @ r_value[idx])
