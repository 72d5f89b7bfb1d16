"""Per-conversion attribution: the credit of each touch of one journey (for R_attribution).

The stream calls :func:`credit` (or :meth:`Attributor.credit`) once per conversion with the
person's touches. Rules, in order:

1. only touches with ``conversion_time - window <= event_time <= conversion_time`` count
   (14-day lookback by default; a touch after the conversion never gets credit);
2. touches sharing a ``decision_id`` are one touch (earliest time, clicked if any was), so a
   redelivered or duplicated touch changes nothing;
3. touches are ordered by ``(event_time, decision_id)``, which makes ties deterministic;
4. with ``prefer_clicks``, if any touch was clicked only clicked touches count;
5. the model splits 1.0 over the remaining touches. Heuristic models need nothing else;
   ``markov`` and ``shapley`` use channel weights fitted in batch (:class:`MarkovModel`,
   :class:`ShapleyModel`, passed as ``fitted``).

The result is deterministic: the same touches (in any order) give the same credits.
Fractions sum to 1 (up to float rounding); :func:`credit_micros` turns them into integer
micros that sum exactly to the conversion value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from agent_service.attribution.config import HEURISTIC_MODELS, AttributionConfig
from agent_service.attribution.heuristics import journey_weights
from agent_service.errors import ConfigError

__all__ = [
    "Attributor",
    "Credit",
    "FittedJourneyModel",
    "JourneyTouch",
    "StreamAttribution",
    "TouchLike",
    "credit",
    "credit_micros",
]


class TouchLike(Protocol):
    """What attribution reads from a touch (``contracts.events.Touch`` satisfies it)."""

    @property
    def decision_id(self) -> str: ...

    @property
    def event_time(self) -> int: ...

    @property
    def channel(self) -> str: ...

    @property
    def clicked(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class JourneyTouch:
    """One ad touch of a journey.

    :param decision_id: id of the decision that produced the touch (the credit key).
    :param event_time: event time of the touch, ms since the epoch.
    :param channel: channel name (e.g. ``paid_search``).
    :param clicked: whether the touch was clicked.
    """

    decision_id: str
    event_time: int
    channel: str
    clicked: bool = False


class Credit(NamedTuple):
    """The share of one conversion credited to one touch."""

    decision_id: str
    """The touch's decision id."""
    channel: str
    """The touch's channel."""
    event_time: int
    """The touch's event time (ms)."""
    fraction: float
    """Share of the conversion, in [0, 1]; a journey's fractions sum to 1."""


class FittedJourneyModel(Protocol):
    """A data-driven model fitted in batch that splits one journey (``MarkovModel``, ``ShapleyModel``)."""

    def journey_fractions(self, channels: Sequence[str]) -> np.ndarray:
        """Fractions per touch (oldest first) summing to 1."""
        ...


class Attributor:
    """Credits conversions with one configured model.

    :param config: model, window and model parameters.
    :param fitted: fitted channel weights; required for ``markov`` and ``shapley``.
    """

    def __init__(self, config: AttributionConfig | None = None, fitted: FittedJourneyModel | None = None) -> None:
        self.config = config or AttributionConfig()
        if self.config.model not in HEURISTIC_MODELS and fitted is None:
            raise ConfigError("attribution.model",
                              f"model {self.config.model!r} needs channel weights fitted in batch: pass "
                              f"fitted=MarkovModel.fit(table) or ShapleyModel.fit(table)")
        self.fitted = fitted

    def credit(self, touches: Sequence[TouchLike], conversion_time_ms: int) -> list[Credit]:
        """Credit of each eligible touch for a conversion at ``conversion_time_ms``.

        :param touches: the person's touches, any order, duplicates allowed.
        :param conversion_time_ms: event time of the conversion, ms since the epoch.
        :returns: one :class:`Credit` per eligible touch, oldest first; empty when no touch
            is eligible (the conversion is then organic / unattributed).
        """
        journey = _eligible(touches, conversion_time_ms, self.config)
        if not journey:
            return []
        model = self.config.model
        if model in HEURISTIC_MODELS:
            ages = np.array([conversion_time_ms - t.event_time for t in journey], dtype=np.float64)
            w = journey_weights(model, ages, self.config)
        else:
            assert self.fitted is not None
            w = self.fitted.journey_fractions([t.channel for t in journey])
        return [Credit(t.decision_id, t.channel, t.event_time, float(f)) for t, f in zip(journey, w, strict=True)]


class StreamAttribution:
    """An :class:`Attributor` shaped for the stream's ``attribution_port.AttributionModel``:
    ``credit`` returns ``(decision_id, fraction)`` pairs.

    :param config: model, window and model parameters (the service's: ``GaelpConfig.attribution``).
    :param fitted: fitted weights for ``markov``/``shapley``.
    """

    def __init__(self, config: AttributionConfig | None = None, fitted: FittedJourneyModel | None = None) -> None:
        self.attributor = Attributor(config, fitted)

    def credit(self, touches: Sequence[TouchLike], conversion_time_ms: int) -> list[tuple[str, float]]:
        """Fractions of the conversion per decision id (sum 1; empty when no touch is eligible)."""
        return [(c.decision_id, c.fraction) for c in self.attributor.credit(touches, conversion_time_ms)]


def credit(
    touches: Sequence[TouchLike],
    conversion_time_ms: int,
    model: str = "last",
    *,
    config: AttributionConfig | None = None,
    fitted: FittedJourneyModel | None = None,
) -> list[Credit]:
    """Credit of each touch of one journey for one conversion (see the module docstring).

    :param touches: the person's touches (any order; duplicates by ``decision_id`` merge).
    :param conversion_time_ms: event time of the conversion, ms since the epoch.
    :param model: model name, used when ``config`` is None (aliases like ``last_touch`` work).
    :param config: full settings; its ``model`` wins over ``model``.
    :param fitted: fitted weights for ``markov``/``shapley``.
    """
    cfg = config if config is not None else AttributionConfig(model=model)
    return Attributor(cfg, fitted).credit(touches, conversion_time_ms)


def credit_micros(credits: Sequence[Credit], value_micros: int) -> list[int]:
    """Integer micros per credit that sum exactly to ``value_micros`` (largest remainder).

    Ties in the remainder go to the earlier touch, so the split is deterministic.

    :param credits: a journey's credits (fractions summing to 1).
    :param value_micros: the conversion value in micros (>= 0).
    """
    if value_micros < 0:
        raise ValueError(f"value_micros must be >= 0, got {value_micros}")
    if not credits:
        return []
    total = sum(c.fraction for c in credits)
    if total <= 0:
        raise ValueError("credits must have a positive sum of fractions")
    raw = [c.fraction / total * value_micros for c in credits]
    base = [int(x) for x in raw]
    left = value_micros - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[: max(left, 0)]:
        base[i] += 1
    return base


def _eligible(touches: Sequence[TouchLike], conversion_time_ms: int, config: AttributionConfig) -> list[JourneyTouch]:
    start = conversion_time_ms - config.window_ms
    merged: dict[str, JourneyTouch] = {}
    for t in touches:
        if not start <= t.event_time <= conversion_time_ms:
            continue
        prev = merged.get(t.decision_id)
        if prev is None:
            merged[t.decision_id] = JourneyTouch(t.decision_id, int(t.event_time), t.channel, bool(t.clicked))
        else:
            first = prev if (prev.event_time, prev.channel) <= (t.event_time, t.channel) else t
            merged[t.decision_id] = JourneyTouch(t.decision_id, int(first.event_time), first.channel,
                                                 prev.clicked or bool(t.clicked))
    journey = sorted(merged.values(), key=lambda t: (t.event_time, t.decision_id))
    if config.prefer_clicks and any(t.clicked for t in journey):
        journey = [t for t in journey if t.clicked]
    return journey
