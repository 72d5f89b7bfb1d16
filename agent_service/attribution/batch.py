"""Batch attribution: credit per channel over a whole path table, by any model.

:func:`attribute_paths` is what ``gaelp attribute`` runs; :class:`ChannelCredit` is its
result (conversions and value per channel, in the table's channel order).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agent_service.attribution.config import HEURISTIC_MODELS, AttributionConfig, canonical_model
from agent_service.attribution.heuristics import heuristic_credit
from agent_service.attribution.markov import MarkovModel
from agent_service.attribution.paths import PathTable
from agent_service.attribution.shapley import ShapleyModel

__all__ = ["ChannelCredit", "attribute_paths", "fit_journey_model"]


@dataclass(frozen=True, eq=False)
class ChannelCredit:
    """Conversions and value credited to each channel.

    :param model: canonical model name.
    :param channels: channel names.
    :param conversions: float64 conversions per channel.
    :param values: float64 value per channel.
    """

    model: str
    channels: tuple[str, ...]
    conversions: np.ndarray
    values: np.ndarray

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{channel: {"conversions": x, "value": y}}`` in channel order."""
        return {c: {"conversions": float(x), "value": float(v)}
                for c, x, v in zip(self.channels, self.conversions, self.values, strict=True)}

    def to_json_obj(self, **extra: Any) -> dict[str, Any]:
        """The JSON object ``gaelp attribute`` prints (``extra`` keys are added first)."""
        return {**extra, "model": self.model, "total_conversions": float(self.conversions.sum()),
                "total_value": float(self.values.sum()), "credit": self.as_dict()}


def fit_journey_model(table: PathTable, config: AttributionConfig) -> MarkovModel | ShapleyModel:
    """Fit the data-driven model named by ``config.model`` (``markov`` or ``shapley``).

    The result is what :class:`~agent_service.attribution.stream.Attributor` takes as
    ``fitted`` for per-conversion credit.

    :param table: the paths to learn channel weights from.
    :param config: model name and parameters.
    """
    if config.model == "markov":
        return MarkovModel.fit(table, config.markov_order)
    if config.model == "shapley":
        return ShapleyModel.fit(table, exact_max=config.shapley_exact_max, samples=config.shapley_samples,
                                seed=config.seed)
    raise ValueError(f"model {config.model!r} is not fitted (heuristic models need no fitting)")


def attribute_paths(table: PathTable, model: str | None = None, config: AttributionConfig | None = None) -> ChannelCredit:
    """Credit per channel of all conversions (and value) in ``table``.

    :param table: the paths.
    :param model: model name; overrides ``config.model`` when given.
    :param config: model parameters (defaults when None).
    """
    cfg = config or AttributionConfig()
    name = canonical_model(model) if model is not None else cfg.model
    if name != cfg.model:
        cfg = replace(cfg, model=name)
    if name in HEURISTIC_MODELS:
        conv, val = heuristic_credit(table, name, cfg)
    else:
        conv, val = fit_journey_model(table, cfg).credit()
    return ChannelCredit(name, table.channels, conv, val)
