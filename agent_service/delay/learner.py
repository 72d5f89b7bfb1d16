"""Online learning of the delay model from the join: touches in, conversions in, steps out.

The stream tells the learner about each touch (:meth:`DelayedFeedbackLearner.add_touch`)
and each conversion joined to a touch (:meth:`~DelayedFeedbackLearner.add_conversion`).
:meth:`~DelayedFeedbackLearner.step` samples touches uniformly from its buffer *with their
label as of now* — converted with its delay, or pending with the time elapsed so far (capped
at the window: a conversion later than the window never joins) — and takes an Adam step on
the censored likelihood. Every sampled label is a valid censored observation, so the
gradient is unbiased for the current snapshot; that is the difference from "pending counts
as no conversion". Event time only: ``now_ms`` comes from the stream's watermark.
"""

from __future__ import annotations

import numpy as np

from agent_service.delay.model import DelayedConversionModel
from agent_service.errors import DecodeError

__all__ = ["DelayedFeedbackLearner"]


class DelayedFeedbackLearner:
    """A ring buffer of touches with their join status, feeding a :class:`DelayedConversionModel`.

    :param model: the model to train (its config sets window, buffer and batch sizes).
    """

    def __init__(self, model: DelayedConversionModel) -> None:
        cfg = model.config
        self.model = model
        self._cap = cfg.buffer_size
        self._x = np.zeros((self._cap, model.n_features))
        self._t = np.zeros(self._cap, dtype=np.int64)
        self._conv = np.full(self._cap, -1, dtype=np.int64)  # conversion time (ms), -1 if none
        self._key: list[str | None] = [None] * self._cap
        self._slot: dict[str, int] = {}
        self._next = 0
        self._size = 0
        self._rng = np.random.default_rng(cfg.seed)
        self._window_ms = int(cfg.window_s * 1000)

    def __len__(self) -> int:
        return self._size

    def add_touch(self, key: str, features: np.ndarray, event_time_ms: int) -> None:
        """Remember a touch (idempotent by ``key``, e.g. the decision id).

        :param key: the touch's id.
        :param features: its feature vector ``(d,)``.
        :param event_time_ms: its event time.
        """
        if key in self._slot:
            return
        f = np.asarray(features, dtype=np.float64)
        if f.shape != (self.model.n_features,) or not np.isfinite(f).all():
            raise DecodeError("$.features", f"expected {self.model.n_features} finite numbers")
        i = self._next
        old = self._key[i]
        if old is not None:
            del self._slot[old]
        self._key[i] = key
        self._slot[key] = i
        self._x[i] = f
        self._t[i] = event_time_ms
        self._conv[i] = -1
        self._next = (i + 1) % self._cap
        self._size = min(self._size + 1, self._cap)

    def add_conversion(self, key: str, event_time_ms: int) -> bool:
        """Join a conversion to touch ``key``; False if the touch is unknown, evicted, or the
        conversion is outside its window. The first conversion wins (redeliveries change nothing)."""
        i = self._slot.get(key)
        if i is None:
            return False
        delay = event_time_ms - int(self._t[i])
        if delay < 0 or delay > self._window_ms:
            return False
        if self._conv[i] < 0 or event_time_ms < self._conv[i]:
            self._conv[i] = event_time_ms
        return True

    def labels(self, now_ms: int, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features, elapsed seconds, converted flags and delays (s) as known at ``now_ms``.

        :param now_ms: the current event time (watermark).
        :param idx: buffer slots (all filled slots when None).
        """
        if idx is None:
            idx = np.arange(self._size)
        t = self._t[idx]
        conv = self._conv[idx]
        seen = (conv >= 0) & (conv <= now_ms)
        elapsed = np.clip(now_ms - t, 0, self._window_ms) / 1000.0
        delay = np.where(seen, (conv - t) / 1000.0, np.nan)
        keep = t <= now_ms  # touches from the future (out-of-order) are skipped
        return self._x[idx][keep], elapsed[keep], seen[keep], delay[keep]

    def step(self, now_ms: int, steps: int = 1, batch_size: int | None = None) -> float:
        """Take ``steps`` Adam steps on uniform minibatches; the mean loss (nan if empty).

        :param now_ms: the current event time (watermark).
        :param steps: number of minibatches.
        :param batch_size: minibatch size (config default when None).
        """
        if self._size == 0:
            return float("nan")
        b = batch_size or self.model.config.batch_size
        losses = []
        for _ in range(steps):
            idx = self._rng.integers(0, self._size, size=min(b, self._size))
            x, e, y, d = self.labels(now_ms, idx)
            if x.shape[0]:
                losses.append(self.model.observe_batch(x, e, y, d))
        return float(np.mean(losses)) if losses else float("nan")
