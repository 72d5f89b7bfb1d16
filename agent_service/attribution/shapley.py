"""Data-driven attribution by Shapley values of each converting journey's channels.

The cooperative game (documented choice; Shapley-style data-driven attribution in the manner
of Shao & Li 2011 and GA4's data-driven model): the worth of a set ``S`` of channels is the
conversion rate of the journeys that used *only* channels in ``S``,

    v(S) = sum_{T ⊆ S} conv_T / sum_{T ⊆ S} (conv_T + null_T),   v(∅) = 0,

where ``T`` runs over the distinct channel sets of the fitted paths. A converting journey
with channel set ``J`` splits its conversion among the channels of ``J`` in proportion to
their Shapley values in the game restricted to subsets of ``J``:

    φ_j = Σ_{S ⊆ J∖{j}} |S|! (|J|-|S|-1)! / |J|! · (v(S ∪ {j}) - v(S)).

Exact for ``|J| <= shapley_exact_max`` (all ``2^|J|`` coalitions, a zeta transform over the
subset lattice), Monte Carlo over random permutations above (seeded by the channel set, so
the same journey always gets the same credit). Shapley values of a non-monotone game can be
negative; negative values are clipped to 0 before normalising (all zero: even split). A
channel's touches share its fraction evenly. Value is credited with the same fractions.

Channel sets are 63-bit masks, so at most 63 distinct channels can be fitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent_service.attribution.paths import PathTable
from agent_service.errors import ConfigError

__all__ = ["ShapleyModel"]

_MAX_CHANNELS = 63


@dataclass(eq=False)
class ShapleyModel:
    """Per-channel-set conversion statistics and the Shapley split they imply.

    :param channels: channel names (bit ``i`` of a mask is ``channels[i]``).
    :param set_masks: sorted distinct channel-set masks (uint64) of the fitted paths.
    :param set_conversions: conversions per set.
    :param set_journeys: conversions + nulls per set.
    :param set_values: conversion value per set.
    :param exact_max: exact enumeration up to this many channels in a journey.
    :param samples: permutations sampled above ``exact_max``.
    :param seed: base seed of the sampling.
    """

    channels: tuple[str, ...]
    set_masks: np.ndarray
    set_conversions: np.ndarray
    set_journeys: np.ndarray
    set_values: np.ndarray
    exact_max: int = 12
    samples: int = 2000
    seed: int = 0
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(cls, table: PathTable, *, exact_max: int = 12, samples: int = 2000, seed: int = 0) -> ShapleyModel:
        """Collect the conversion statistics of each distinct channel set of ``table``.

        :param table: the paths.
        :param exact_max: journeys with at most this many distinct channels are solved exactly.
        :param samples: permutations for larger journeys.
        :param seed: seed of the sampling.
        """
        if len(table.channels) > _MAX_CHANNELS:
            raise ConfigError("attribution.model",
                              f"shapley supports at most {_MAX_CHANNELS} channels, the paths have "
                              f"{len(table.channels)}; use markov")
        bits = np.left_shift(np.uint64(1), table.codes.astype(np.uint64))
        masks = np.bitwise_or.reduceat(bits, table.offsets[:-1])
        uniq, inv = np.unique(masks, return_inverse=True)
        k = uniq.shape[0]
        conv = np.bincount(inv, weights=table.conversions, minlength=k)
        journeys = np.bincount(inv, weights=table.conversions + table.nulls, minlength=k)
        values = np.bincount(inv, weights=table.values, minlength=k)
        return cls(table.channels, uniq, conv, journeys, values, exact_max, samples, seed)

    # ------------------------------------------------------------------------------------
    def credit(self) -> tuple[np.ndarray, np.ndarray]:
        """Conversions and value credited to each channel over all fitted paths."""
        n = len(self.channels)
        conv = np.zeros(n)
        val = np.zeros(n)
        for mask, c, v in zip(self.set_masks, self.set_conversions, self.set_values, strict=True):
            if c <= 0 and v <= 0:
                continue
            members = _members(int(mask))
            phi = self.set_fractions(int(mask))
            conv[members] += c * phi
            val[members] += v * phi
        return conv, val

    def journey_fractions(self, channels: Sequence[str]) -> np.ndarray:
        """Fractions of one conversion per touch of a journey (oldest first), summing to 1.

        Known channels share by their Shapley values; a channel the model never saw gets an
        even ``1/m`` share of the journey's ``m`` distinct channels.

        :param channels: the channel of each touch.
        """
        n = len(channels)
        if n == 0:
            return np.zeros(0)
        index = {c: i for i, c in enumerate(self.channels)}
        distinct = list(dict.fromkeys(channels))
        known = [c for c in distinct if c in index]
        share: dict[str, float] = {c: 1.0 / len(distinct) for c in distinct if c not in index}
        if known:
            mask = 0
            for c in known:
                mask |= 1 << index[c]
            phi = self.set_fractions(mask)
            members = _members(mask)
            scale = len(known) / len(distinct)
            by_code = dict(zip(members, phi, strict=True))
            for c in known:
                share[c] = float(by_code[index[c]]) * scale
        occurrences = {c: 0 for c in distinct}
        for c in channels:
            occurrences[c] += 1
        return np.array([share[c] / occurrences[c] for c in channels])

    def set_fractions(self, mask: int) -> np.ndarray:
        """Normalised, clipped Shapley values of the channels of ``mask`` (ascending code order).

        :param mask: the channel set as a bit mask over ``channels``.
        """
        hit = self._cache.get(mask)
        if hit is not None:
            return hit
        members = _members(mask)
        m = len(members)
        if m == 0:
            return np.zeros(0)
        if m == 1:
            phi = np.ones(1)
        elif m <= self.exact_max:
            phi = self._exact(mask, members)
        else:
            phi = self._sampled(mask, members)
        phi = np.clip(phi, 0.0, None)
        s = phi.sum()
        phi = phi / s if s > 0 else np.full(m, 1.0 / m)
        self._cache[mask] = phi
        return phi

    # ------------------------------------------------------------------------------------
    def _subsets_of(self, mask: int) -> np.ndarray:
        """Indices of fitted sets that are subsets of ``mask``."""
        return np.flatnonzero((self.set_masks & np.uint64(~mask & (2**64 - 1))) == 0)

    def _local(self, idx: np.ndarray, members: list[int]) -> np.ndarray:
        """Local masks (bit j = members[j]) of the fitted sets ``idx``."""
        local = np.zeros(idx.shape[0], dtype=np.int64)
        g = self.set_masks[idx]
        for j, c in enumerate(members):
            local |= ((g >> np.uint64(c)) & np.uint64(1)).astype(np.int64) << j
        return local

    def _exact(self, mask: int, members: list[int]) -> np.ndarray:
        m = len(members)
        size = 1 << m
        idx = self._subsets_of(mask)
        local = self._local(idx, members)
        num = np.bincount(local, weights=self.set_conversions[idx], minlength=size)
        den = np.bincount(local, weights=self.set_journeys[idx], minlength=size)
        for j in range(m):  # zeta transform: sum over sub-coalitions
            step = 1 << j
            num.reshape(-1, 2, step)[:, 1, :] += num.reshape(-1, 2, step)[:, 0, :]
            den.reshape(-1, 2, step)[:, 1, :] += den.reshape(-1, 2, step)[:, 0, :]
        v = np.divide(num, den, out=np.zeros(size), where=den > 0)
        v[0] = 0.0
        coalitions = np.arange(size)
        sizes = np.bitwise_count(coalitions.astype(np.uint64)).astype(np.int64)
        weight = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])
        phi = np.empty(m)
        for j in range(m):
            without = coalitions[(coalitions >> j) & 1 == 0]
            phi[j] = float(np.sum(weight[sizes[without]] * (v[without | (1 << j)] - v[without])))
        return phi

    def _sampled(self, mask: int, members: list[int]) -> np.ndarray:
        m = len(members)
        idx = self._subsets_of(mask)
        idx = idx[self.set_journeys[idx] > 0]
        local = self._local(idx, members)
        member_of = ((local[:, None] >> np.arange(m)[None, :]) & 1).astype(bool)  # sets x members
        conv = self.set_conversions[idx]
        jour = self.set_journeys[idx]
        rng = np.random.default_rng([self.seed, mask & 0xFFFFFFFF, mask >> 32])
        phi = np.zeros(m)
        chunk = 256
        done = 0
        while done < self.samples:
            p = min(chunk, self.samples - done)
            perms = np.argsort(rng.random((p, m)), axis=1)  # perms[s, t] = member added at step t
            rank = np.argsort(perms, axis=1)  # rank[s, j] = step at which member j joins
            joined_at = np.where(member_of[None, :, :], rank[:, None, :], -1).max(axis=2)  # p x sets
            num = np.zeros((p, m))
            den = np.zeros((p, m))
            for t in range(m):
                inc = joined_at == t
                num[:, t] = inc @ conv
                den[:, t] = inc @ jour
            num = np.cumsum(num, axis=1)
            den = np.cumsum(den, axis=1)
            v = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            gain = np.diff(np.concatenate([np.zeros((p, 1)), v], axis=1), axis=1)  # gain of step t
            np.add.at(phi, perms.ravel(), gain.ravel())
            done += p
        return phi / self.samples


def _members(mask: int) -> list[int]:
    out = []
    i = 0
    while mask:
        if mask & 1:
            out.append(i)
        mask >>= 1
        i += 1
    return out
