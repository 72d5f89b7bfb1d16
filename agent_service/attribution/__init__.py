"""Multi-touch attribution: who gets credit for a conversion.

Two faces over the same models (last, first, linear, time decay, position based, Markov
removal effect, Shapley):

- per conversion, in the stream: :func:`credit` / :class:`Attributor` split one conversion
  over one journey's touches (fractions summing to 1, deterministic) for R_attribution;
  :func:`credit_micros` turns fractions into exact integer micros;
- in batch: :func:`attribute_paths` credits conversions and value per channel over a
  :class:`PathTable` (the ``channelattribution`` layout, read by :func:`read_paths_csv`);
  :class:`MarkovModel` and :class:`ShapleyModel` fitted there also serve as the channel
  weights of the per-conversion face.
"""

from agent_service.attribution.batch import ChannelCredit, attribute_paths, fit_journey_model
from agent_service.attribution.config import HEURISTIC_MODELS, MODELS, AttributionConfig, canonical_model
from agent_service.attribution.heuristics import heuristic_credit, journey_weights
from agent_service.attribution.markov import MarkovModel
from agent_service.attribution.paths import COLUMNS, PathTable, parse_paths_csv, read_paths_csv
from agent_service.attribution.shapley import ShapleyModel
from agent_service.attribution.stream import (
    Attributor,
    Credit,
    FittedJourneyModel,
    JourneyTouch,
    StreamAttribution,
    TouchLike,
    credit,
    credit_micros,
)

__all__ = [
    "COLUMNS",
    "HEURISTIC_MODELS",
    "MODELS",
    "AttributionConfig",
    "Attributor",
    "ChannelCredit",
    "Credit",
    "FittedJourneyModel",
    "JourneyTouch",
    "MarkovModel",
    "PathTable",
    "ShapleyModel",
    "StreamAttribution",
    "TouchLike",
    "attribute_paths",
    "canonical_model",
    "credit",
    "credit_micros",
    "fit_journey_model",
    "heuristic_credit",
    "journey_weights",
    "parse_paths_csv",
    "read_paths_csv",
]
