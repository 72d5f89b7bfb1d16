"""Rule-based attribution: last touch, first touch, linear, time decay, position based.

Each rule turns one journey into fractions that sum to 1 (oldest touch first):

- ``last``: everything to the last touch; ``first``: everything to the first touch;
- ``linear``: ``1/n`` to each of the ``n`` touches (a channel touching twice gets ``2/n``,
  as in ``channelattribution``'s ``linear_touch``);
- ``time_decay``: weight ``2 ** (-age / half_life)`` with ``age`` the time from the touch to
  the conversion (Google Ads: 7-day half-life), normalised;
- ``position``: ``position_first`` to the first touch, ``position_last`` to the last, the
  rest spread evenly over the touches in between (40/20/40 by default). Two touches share
  in the ratio ``first : last``; a single touch gets everything.

:func:`journey_weights` is the per-conversion face; :func:`heuristic_credit` applies the same
rules to a whole :class:`~agent_service.attribution.paths.PathTable` without a Python loop
per path. Batch paths carry no timestamps, so batch time decay assumes touches
``config.step_days`` apart with the last one at the conversion.
"""

from __future__ import annotations

import numpy as np

from agent_service.attribution.config import HEURISTIC_MODELS, AttributionConfig
from agent_service.attribution.paths import PathTable

__all__ = ["heuristic_credit", "journey_weights"]


def journey_weights(model: str, ages_ms: np.ndarray, config: AttributionConfig) -> np.ndarray:
    """Fractions of one journey's conversion per touch, oldest first.

    :param model: a heuristic model name (canonical, see ``HEURISTIC_MODELS``).
    :param ages_ms: float64 array, time in ms from each touch to the conversion (>= 0),
        oldest touch first.
    :param config: half-life and position shares.
    :returns: float64 array of the same length, summing to 1.
    """
    n = int(ages_ms.shape[0])
    if n == 0:
        return np.zeros(0)
    w = np.zeros(n)
    if model == "last":
        w[-1] = 1.0
    elif model == "first":
        w[0] = 1.0
    elif model == "linear":
        w[:] = 1.0 / n
    elif model == "time_decay":
        rel = (ages_ms - ages_ms.min()) / config.half_life_ms  # relative ages: no underflow
        w = np.exp2(-rel)
        w /= w.sum()
    elif model == "position":
        w = _position(n, config)
    else:
        raise ValueError(f"not a heuristic model: {model!r} (expected one of {HEURISTIC_MODELS})")
    return w


def _position(n: int, config: AttributionConfig) -> np.ndarray:
    w = np.zeros(n)
    pf, pl = config.position_first, config.position_last
    if n == 1:
        w[0] = 1.0
    elif n == 2:
        total = pf + pl
        w[0], w[1] = (0.5, 0.5) if total == 0 else (pf / total, pl / total)
    else:
        w[1:-1] = (1.0 - pf - pl) / (n - 2)
        w[0], w[-1] = pf, pl
    return w


def heuristic_credit(table: PathTable, model: str, config: AttributionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Conversions and value credited to each channel of ``table`` by a heuristic rule.

    :param table: the paths.
    :param model: a heuristic model name (canonical).
    :param config: half-life, position shares and ``step_days`` (batch time decay).
    :returns: ``(conversions, values)``, float64 arrays indexed like ``table.channels``.
    """
    k = len(table.channels)
    lengths = table.lengths
    starts = table.offsets[:-1]
    ends = table.offsets[1:] - 1
    if model == "last":
        step_codes = table.codes[ends]
        return _sum(step_codes, table.conversions, k), _sum(step_codes, table.values, k)
    if model == "first":
        step_codes = table.codes[starts]
        return _sum(step_codes, table.conversions, k), _sum(step_codes, table.values, k)
    path_of_step = np.repeat(np.arange(table.n_paths), lengths)
    pos = np.arange(table.codes.shape[0]) - starts[path_of_step]  # 0-based position in its path
    length = lengths[path_of_step]
    if model == "linear":
        w = 1.0 / length
    elif model == "time_decay":
        age_days = (length - 1 - pos) * config.step_days
        w = np.exp2(-(age_days / config.half_life_days))
        w /= np.add.reduceat(w, starts)[path_of_step]
    elif model == "position":
        w = _position_steps(pos, length, config)
    else:
        raise ValueError(f"not a heuristic model: {model!r} (expected one of {HEURISTIC_MODELS})")
    conv = w * table.conversions[path_of_step]
    val = w * table.values[path_of_step]
    return _sum(table.codes, conv, k), _sum(table.codes, val, k)


def _position_steps(pos: np.ndarray, length: np.ndarray, config: AttributionConfig) -> np.ndarray:
    """Vectorised :func:`_position` over every step of every path."""
    pf, pl = config.position_first, config.position_last
    mid = 1.0 - pf - pl
    w = np.empty(pos.shape[0])
    one = length == 1
    two = length == 2
    many = length >= 3
    w[one] = 1.0
    total = pf + pl
    if total == 0:
        w[two] = 0.5
    else:
        w[two & (pos == 0)] = pf / total
        w[two & (pos == 1)] = pl / total
    first = many & (pos == 0)
    last = many & (pos == length - 1)
    middle = many & ~first & ~last
    w[first] = pf
    w[last] = pl
    w[middle] = mid / (length[middle] - 2)
    return w


def _sum(codes: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(codes, weights=weights, minlength=k).astype(np.float64)
