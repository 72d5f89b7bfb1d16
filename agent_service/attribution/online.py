"""Data-driven attribution in the stream: Markov removal effects (or Shapley values) refitted
from the recent journeys the stream itself saw (``join.attribution = "markov"`` or ``"data_driven"``).

The batch models (:mod:`~agent_service.attribution.markov`, ``shapley``) need a table of paths
with and without conversions. The stream has both: each conversion it credits comes with the
converting journey (the person's touches in the window, oldest first), and each decision whose
window closes without credit is a touch that led nowhere. This model keeps the most recent
``max_journeys`` of them, refits every ``refit_every`` new conversions (once ``min_conversions``
were seen) and credits each conversion with the latest fit; until the first fit it credits by
the ``fallback`` heuristic (linear by default) and says so (:attr:`fitted_on`).

Approximation, stated: a non-converting journey is recorded as the single touch whose window
closed uncredited (the stream does not re-read the person's whole journey at window close), so
null paths are one step long. Each stream worker fits on the conversions of its own partitions.
Given the same journeys the fit is the batch model's (tested).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from agent_service.attribution.batch import fit_journey_model
from agent_service.attribution.config import AttributionConfig, canonical_model
from agent_service.attribution.markov import MarkovModel
from agent_service.attribution.paths import PathTable
from agent_service.attribution.shapley import ShapleyModel
from agent_service.attribution.stream import StreamAttribution, TouchLike
from agent_service.errors import ConfigError

__all__ = ["OnlineJourneyModel"]


class OnlineJourneyModel:
    """See the module docstring.

    :param config: the data-driven model (``markov`` or ``shapley``) and the window.
    :param refit_every: new conversions between refits. :param min_conversions: before the first fit.
    :param max_journeys: journeys kept (the most recent). :param fallback: heuristic before the first fit.
    """

    def __init__(self, config: AttributionConfig, refit_every: int = 500, min_conversions: int = 200,
                 max_journeys: int = 100_000, fallback: str = "linear") -> None:
        if config.model not in ("markov", "shapley"):
            raise ConfigError("join.attribution", f"{config.model!r} is not a data-driven model (markov, shapley)")
        if refit_every < 1 or min_conversions < 1 or max_journeys < min_conversions:
            raise ConfigError("join.attribution_refit_every", "need refit_every >= 1, min_conversions >= 1 and "
                                                               "max_journeys >= min_conversions")
        self.config = config
        self.refit_every, self.min_conversions = refit_every, min_conversions
        self.journeys: deque[tuple[tuple[str, ...], bool, float]] = deque(maxlen=max_journeys)
        self.fitted: MarkovModel | ShapleyModel | None = None
        self.fitted_on = 0
        """Journeys the current fit was made on (0: the fallback heuristic credits)."""
        self.refits = 0
        self._since = 0
        self._conversions = 0
        fb = AttributionConfig(model=canonical_model(fallback, "join.attribution_fallback"),
                               window_days=config.window_days, prefer_clicks=config.prefer_clicks)
        self._fallback = StreamAttribution(fb)
        self._current: StreamAttribution = self._fallback

    def credit(self, touches: Sequence[TouchLike], conversion_time_ms: int) -> list[tuple[str, float]]:
        """Fractions per decision id, by the latest fit (the fallback heuristic before the first)."""
        return self._current.credit(touches, conversion_time_ms)

    def observe_conversion(self, channels: Sequence[str], value_usd: float) -> None:
        """A converting journey (channels oldest first), recorded once per conversion."""
        if channels:
            self.journeys.append((tuple(channels), True, max(float(value_usd), 0.0)))
            self._conversions += 1
            self._since += 1
            self._maybe_refit()

    def observe_null(self, channels: Sequence[str]) -> None:
        """A journey (here: one touch) whose window closed without a conversion."""
        if channels:
            self.journeys.append((tuple(channels), False, 0.0))

    def _maybe_refit(self) -> None:
        converting = sum(1 for _, c, _ in self.journeys if c)
        if converting < self.min_conversions or (self.fitted is not None and self._since < self.refit_every):
            return
        self.refit()

    def refit(self) -> None:
        """Fit on the journeys kept (synchronous: a fit over 100k journeys of a few channels takes milliseconds)."""
        self.fitted = fit_journey_model(PathTable.from_journeys(self.journeys), self.config)
        self._current = StreamAttribution(self.config, self.fitted)
        self.fitted_on, self._since = len(self.journeys), 0
        self.refits += 1
