"""Buffers shared by the hybrid agent's learners, behind one ABC, and the Polyak update.

* :class:`ReplayBuffer` — uniform replay of budget-slot transitions for the DQN (a ring of
  ``capacity`` :class:`SlotTransition` rows, 50K by default).
* :class:`DecisionTable` — the per-opportunity experience of the policy learner, keyed by
  decision id: a decision enters with its immediate reward and the delay-aware estimate of
  what is still to come (R_delayed), and the estimate is replaced by realised, attributed value
  as credits arrive or the window closes (delayed rewards without waiting for them).

Both return typed NamedTuples (shapes in their docstrings), never dicts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from agent_service.snapshots import padded, restore_trimmed, trimmed_state

__all__ = ["BaseBuffer", "DecisionRows", "DecisionTable", "ReplayBuffer", "SlotTransition", "polyak_update", "zero_rewards"]


def polyak_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``target ← (1 − tau)·target + tau·online``, in place (tau = 1 is a hard copy)."""
    with torch.no_grad():
        for p, tp in zip(online.parameters(), target.parameters(), strict=True):
            tp.mul_(1.0 - tau).add_(p, alpha=tau)


class BaseBuffer(ABC):
    """A bounded store of training rows."""

    capacity: int

    @abstractmethod
    def __len__(self) -> int:
        """Rows held."""


class SlotTransition(NamedTuple):
    """B budget-slot transitions of the bid-multiplier Q-network."""

    obs: np.ndarray
    """float32 [B, P] pacing features at the slot start."""
    action: np.ndarray
    """int64 [B] multiplier action."""
    reward: np.ndarray
    """float32 [B] value won in the slot (scaled)."""
    next_obs: np.ndarray
    """float32 [B, P] pacing features at the next slot start."""
    terminated: np.ndarray
    """float32 [B] 1 when the period ended or the budget ran out (no bootstrap)."""
    truncated: np.ndarray
    """float32 [B] 1 when the rollout was cut for another reason (bootstraps from next_obs)."""


class ReplayBuffer(BaseBuffer):
    """Uniform replay over the last ``capacity`` slot transitions.

    :param capacity: rows kept (oldest overwritten first).
    :param n_features: P.
    """

    def __init__(self, capacity: int, n_features: int) -> None:
        self.capacity = capacity
        self._obs = np.zeros((capacity, n_features), np.float32)
        self._next = np.zeros((capacity, n_features), np.float32)
        self._action = np.zeros(capacity, np.int64)
        self._reward = np.zeros(capacity, np.float32)
        self._term = np.zeros(capacity, np.float32)
        self._trunc = np.zeros(capacity, np.float32)
        self._size = 0
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def add(self, batch: SlotTransition) -> None:
        n = len(batch.action)
        idx = (self._pos + np.arange(n)) % self.capacity
        self._obs[idx], self._next[idx] = batch.obs, batch.next_obs
        self._action[idx], self._reward[idx] = batch.action, batch.reward
        self._term[idx], self._trunc[idx] = batch.terminated, batch.truncated
        self._pos = int((self._pos + n) % self.capacity)
        self._size = min(self.capacity, self._size + n)

    _ARRAYS = ("_obs", "_next", "_action", "_reward", "_term", "_trunc")

    def __getstate__(self) -> dict[str, object]:
        return trimmed_state(self, self._size, self.capacity, self._ARRAYS)

    def __setstate__(self, state: dict[str, object]) -> None:
        restore_trimmed(self, state, self._ARRAYS)

    def sample(self, batch_size: int, rng: np.random.Generator) -> SlotTransition:
        idx = rng.integers(0, self._size, size=batch_size)
        return SlotTransition(self._obs[idx], self._action[idx], self._reward[idx], self._next[idx],
                              self._term[idx], self._trunc[idx])


class DecisionRows(NamedTuple):
    """N logged decisions with their current reward parts (numpy; shapes in brackets)."""

    state: np.ndarray
    """float32 [N, D]"""
    touches: np.ndarray
    """float32 [N, L, Ft]"""
    touch_creatives: np.ndarray
    """int64 [N, L]"""
    channel_mask: np.ndarray
    """bool [N, 3]"""
    creative: np.ndarray
    """int64 [N]"""
    channel: np.ndarray
    """int64 [N]"""
    target: np.ndarray
    """int64 [N]"""
    logp_behaviour: np.ndarray
    """float32 [N] log π_b(creative, channel, target | s) as logged (slot multiplier factored out)."""
    episode: np.ndarray
    """int64 [N] journey id (the person), for GAE."""
    time_ms: np.ndarray
    """int64 [N] event time (orders a journey's steps)."""
    won: np.ndarray
    """bool [N] impression bought/shown (the click label exists only then)."""
    clicked: np.ndarray
    """bool [N]"""
    immediate: np.ndarray
    """float32 [N] R_immediate (USD)."""
    attribution: np.ndarray
    """float32 [N] realised attributed value so far (USD)."""
    delayed: np.ndarray
    """float32 [N] R_delayed: expected attributed value still to come (USD; 0 once final)."""
    diversity: np.ndarray
    """float32 [N] R_diversity (USD)."""
    final: np.ndarray
    """bool [N] window closed (or the journey converted): realised reward, a true terminal."""


_FIELDS = DecisionRows._fields


def zero_rewards(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The last five columns of ``n`` new :class:`DecisionRows` (immediate, attribution, delayed,
    diversity, final): no reward yet."""
    return (np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32),
            np.zeros(n, bool))


class DecisionTable(BaseBuffer):
    """The last ``capacity`` decisions, keyed by decision id, with updatable reward parts.

    :param capacity: decisions kept (oldest dropped first).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._cols: dict[str, np.ndarray] | None = None
        self._keys: list[str | None] = [None] * capacity
        self._slot: dict[str, int] = {}
        self._pos = 0
        self._size = 0
        self.added = 0

    def __len__(self) -> int:
        return self._size

    def _alloc(self, rows: DecisionRows) -> dict[str, np.ndarray]:
        return {f: np.zeros((self.capacity, *np.asarray(v).shape[1:]), np.asarray(v).dtype)
                for f, v in zip(_FIELDS, rows, strict=True)}

    def add(self, keys: list[str], rows: DecisionRows) -> None:
        """Insert decisions (a key already present is left as it is: redeliveries change nothing)."""
        if self._cols is None:
            self._cols = self._alloc(rows)
        fresh = [i for i, k in enumerate(keys) if k not in self._slot][-self.capacity:]  # more than fit: the newest
        for i in fresh:
            slot = self._pos
            old = self._keys[slot]
            if old is not None:
                del self._slot[old]
            self._keys[slot] = keys[i]
            self._slot[keys[i]] = slot
            self._pos = (self._pos + 1) % self.capacity
            self._size = min(self.capacity, self._size + 1)
        if fresh:
            slots = np.array([self._slot[keys[i]] for i in fresh])
            for f, v in zip(_FIELDS, rows, strict=True):
                self._cols[f][slots] = np.asarray(v)[fresh]
        self.added += len(fresh)

    def has(self, key: str) -> bool:
        return key in self._slot

    def __getstate__(self) -> dict[str, object]:
        state = trimmed_state(self, self._size, self.capacity, ("_keys",))
        if self._cols is not None and self._size < self.capacity:
            state["_cols"] = {f: col[:self._size] for f, col in self._cols.items()}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        cols = state.get("_cols")
        capacity = int(state["_trimmed_capacity"])  # type: ignore[call-overload]
        if isinstance(cols, dict):
            state["_cols"] = {f: padded(col, capacity) for f, col in cols.items()}
        restore_trimmed(self, state, ("_keys",))

    def slots(self, keys: Iterable[str]) -> np.ndarray:
        """Row slots of the keys still held (unknown keys skipped)."""
        return np.array([self._slot[k] for k in keys if k in self._slot], dtype=np.int64)

    def update(self, keys: list[str], field: str, values: np.ndarray, add: bool = False) -> int:
        """Set (or add to) one column for the given decisions; returns how many were found."""
        assert self._cols is not None or not keys
        found = [(self._slot[k], v) for k, v in zip(keys, values, strict=True) if k in self._slot]
        if found and self._cols is not None:
            s = np.array([f[0] for f in found])
            v = np.array([f[1] for f in found])
            if add:
                np.add.at(self._cols[field], s, v)
            else:
                self._cols[field][s] = v
        return len(found)

    def rows(self, slots: np.ndarray | None = None) -> DecisionRows:
        """The rows at ``slots`` (all held rows, oldest first, when None)."""
        assert self._cols is not None, "empty table"
        if slots is None:
            slots = self.recent(self._size)
        return DecisionRows(*(self._cols[f][slots] for f in _FIELDS))

    def column(self, field: str, slots: np.ndarray) -> np.ndarray:
        """One column at ``slots`` (a copy). Cheaper than :meth:`rows` when only a few fields are read:
        the state and touch columns of a full table are hundreds of MB."""
        assert self._cols is not None, "empty table"
        return self._cols[field][slots]

    def set_column(self, slots: np.ndarray, field: str, values: np.ndarray) -> None:
        """Overwrite one column at ``slots``."""
        assert self._cols is not None
        self._cols[field][slots] = values

    def recent(self, n: int) -> np.ndarray:
        """Slots of the newest ``n`` rows, oldest first."""
        n = min(n, self._size)
        return (self._pos - n + np.arange(n)) % self.capacity

