"""Online learning of the delay model from the join: touches in, conversions in, steps out.

The stream tells the learner about each touch (:meth:`DelayedFeedbackLearner.add_touch`)
and each conversion joined to a touch (:meth:`~DelayedFeedbackLearner.add_conversion`).
:meth:`~DelayedFeedbackLearner.step` samples touches uniformly from its buffer *with their
label as of now* — converted with its delay, or pending with the time elapsed so far (capped
at the window: a conversion later than the window never joins) — and takes an Adam step on
the censored likelihood. Every sampled label is a valid censored observation, so the
gradient is unbiased for the current snapshot; that is the difference from "pending counts
as no conversion". Event time only: ``now_ms`` comes from the stream's watermark.

Multi-touch attribution credits one conversion to several touches; the model's label is "this
click was followed by a conversion it led to", so a conversion named by an id joins only its
*last* click before the conversion (last-click join): a later click of the same conversion
takes the label over from an earlier one. Labelling every credited click would count a
converting journey once per click and inflate the rate of many-click journeys.
"""

from __future__ import annotations

import numpy as np

from agent_service.delay.model import DelayedConversionModel
from agent_service.errors import DecodeError
from agent_service.snapshots import restore_trimmed, trimmed_state

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
        self._by: list[str | None] = [None] * self._cap  # conversion id holding a touch's label
        self._held: dict[str, int] = {}  # conversion id -> the touch (slot) holding its label
        self._slot: dict[str, int] = {}
        self._next = 0
        self._size = 0
        self._rng = np.random.default_rng(cfg.seed)
        # labels frozen at a checkpoint (features, elapsed s, converted, delay s): evidence from
        # before a restart or from the world trained in, kept without keys (nothing joins them)
        self._archive = (np.zeros((0, model.n_features)), np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0))
        self._window_ms = int(cfg.window_s * 1000)

    def __len__(self) -> int:
        return self._size

    _ARRAYS = ("_x", "_t", "_conv", "_key", "_by")

    def __getstate__(self) -> dict[str, object]:
        return trimmed_state(self, self._size, self._cap, self._ARRAYS)

    def __setstate__(self, state: dict[str, object]) -> None:
        restore_trimmed(self, state, self._ARRAYS)

    @property
    def labelled(self) -> int:
        """Touches with a label: the buffer plus the restored evidence."""
        return self._size + len(self._archive[1])

    def snapshot(self, now_ms: int) -> dict[str, np.ndarray]:
        """Every label as known at ``now_ms`` (the newest ``buffer_size``), for a checkpoint."""
        x, e, y, d = (a[-self._cap:] for a in self.labels(now_ms))
        return {"features": x, "elapsed_s": e, "converted": y, "delay_s": d}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Keep a :meth:`snapshot` as frozen evidence beside the buffer (fits and steps use it)."""
        x = np.asarray(snap["features"], dtype=np.float64)
        e, y, d = (np.asarray(snap[k]) for k in ("elapsed_s", "converted", "delay_s"))
        n = len(e)
        if x.shape != (n, self.model.n_features) or len(y) != n or len(d) != n or not np.isfinite(x).all() \
                or not np.isfinite(e).all():
            raise DecodeError("$.conv_evidence", f"expected {self.model.n_features} finite features and one label per row")
        self._archive = (x.copy(), e.astype(np.float64), y.astype(bool), d.astype(np.float64))

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
        self._release(i)
        self._key[i] = key
        self._slot[key] = i
        self._x[i] = f
        self._t[i] = event_time_ms
        self._conv[i] = -1
        self._next = (i + 1) % self._cap
        self._size = min(self._size + 1, self._cap)

    def add_conversion(self, key: str, event_time_ms: int, conversion: str | None = None) -> bool:
        """Join a conversion to touch ``key``; False if the touch is unknown, evicted, the
        conversion is outside its window, or (with a ``conversion`` id) a later touch of the same
        conversion already holds it. The first conversion of a touch wins (redeliveries change
        nothing).

        :param conversion: the conversion's id; its label goes to the latest of its touches.
        """
        i = self._slot.get(key)
        if i is None:
            return False
        delay = event_time_ms - int(self._t[i])
        if delay < 0 or delay > self._window_ms:
            return False
        if conversion is not None:
            j = self._held.get(conversion)
            if j == i:
                return True
            if j is not None:
                if self._t[j] >= self._t[i]:
                    return False
                self._release(j)
            if self._by[i] is not None:
                return False  # this touch already carries another conversion's label
            self._held[conversion] = i
            self._by[i] = conversion
        if self._conv[i] < 0 or event_time_ms < self._conv[i]:
            self._conv[i] = event_time_ms
        return True

    def _release(self, i: int) -> None:
        """Drop the label a conversion id put on slot ``i``."""
        c = self._by[i]
        if c is not None:
            self._by[i] = None
            self._conv[i] = -1
            if self._held.get(c) == i:
                del self._held[c]

    def labels(self, now_ms: int, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features, elapsed seconds, converted flags and delays (s) as known at ``now_ms``.

        :param now_ms: the current event time (watermark).
        :param idx: rows: buffer slots ``< len(self)``, then the restored evidence (all when None).
        """
        n = self._size
        if idx is None:
            idx = np.arange(self.labelled)
        live, old = idx[idx < n], idx[idx >= n] - n
        t = self._t[live]
        conv = self._conv[live]
        seen = (conv >= 0) & (conv <= now_ms)
        elapsed = np.clip(now_ms - t, 0, self._window_ms) / 1000.0
        delay = np.where(seen, (conv - t) / 1000.0, np.nan)
        keep = t <= now_ms  # touches from the future (out-of-order) are skipped
        out = (self._x[live][keep], elapsed[keep], seen[keep], delay[keep])
        if not old.size:
            return out
        return tuple(np.concatenate([a, b[old]]) for a, b in zip(out, self._archive, strict=True))  # type: ignore[return-value]

    def step(self, now_ms: int, steps: int = 1, batch_size: int | None = None) -> float:
        """Take ``steps`` Adam steps on uniform minibatches; the mean loss (nan if empty).

        :param now_ms: the current event time (watermark).
        :param steps: number of minibatches.
        :param batch_size: minibatch size (config default when None).
        """
        total = self.labelled
        if total == 0:
            return float("nan")
        b = batch_size or self.model.config.batch_size
        losses = []
        for _ in range(steps):
            idx = self._rng.integers(0, total, size=min(b, total))
            x, e, y, d = self.labels(now_ms, idx)
            if x.shape[0]:
                losses.append(self.model.observe_batch(x, e, y, d))
        return float(np.mean(losses)) if losses else float("nan")

    def fit(self, now_ms: int, max_iter: int = 100) -> float:
        """Maximise the censored likelihood of every buffered label as of ``now_ms`` (L-BFGS,
        warm-started); the final mean NLL (nan if empty). Conversions are rare (a few per
        thousand touches), so minibatch steps hold a handful of positives each and the weights
        wander around the optimum; a full-batch fit reaches it."""
        x, e, y, d = self.labels(now_ms)
        if x.shape[0] == 0:
            return float("nan")
        return self.model.fit(x, e, y, d, max_iter=max_iter)
