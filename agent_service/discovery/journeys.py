"""Journey lengths: how many touches people have, and how many precede a conversion.

**Method.** Per unit (person key), the number of ad sessions (touches) and clicks over the data;
per conversion, the touches and clicks of its person in the ``lookback_days`` before it (the
journey that led to it) and the days since the first of them. Reported as quantiles; the
calibration has no journey-length field (in the simulator lengths emerge from traffic, interest
and conversion rates), so these numbers are for the report and for checking a re-simulation.

**Check.** tests/discovery compares touches per unit with the generating world's exported
sessions per device (the same quantity counted directly from the export).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.discovery.data import Observations
from agent_service.units import DAY_MS

__all__ = ["JourneyFinding", "discover_journeys"]



def _q(x: np.ndarray) -> dict[str, float]:
    if not x.size:
        return {}
    return {"mean": float(x.mean()), "p50": float(np.quantile(x, 0.5)), "p90": float(np.quantile(x, 0.9)),
            "max": float(x.max())}


@dataclass(frozen=True)
class JourneyFinding:
    touches_per_unit: dict[str, float]
    clicks_per_unit: dict[str, float]
    touches_before_conversion: dict[str, float]
    clicks_before_conversion: dict[str, float]
    journey_days: dict[str, float]
    """Days from the first touch in the lookback to the conversion."""


def discover_journeys(obs: Observations, lookback_days: float = 30.0) -> JourneyFinding:
    """Journey length distributions (see the module docstring).

    :param obs: the ingested sessions and conversions.
    :param lookback_days: how far before a conversion its journey is looked for.
    """
    touches = np.bincount(obs.s_unit, minlength=obs.n_units)
    clicks = np.bincount(obs.s_unit, weights=obs.s_click.astype(np.float64), minlength=obs.n_units)
    seen = touches > 0
    order = np.lexsort((obs.s_time, obs.s_unit))
    key = (obs.s_unit[order] << 41) | (obs.s_time[order] - obs.start_ms)
    cum_click = np.r_[0.0, np.cumsum(obs.s_click[order])]
    look = int(lookback_days * DAY_MS)
    lo = np.searchsorted(key, (obs.c_unit << 41) | np.maximum(obs.c_time - look - obs.start_ms, 0))
    hi = np.searchsorted(key, (obs.c_unit << 41) | np.maximum(obs.c_time - obs.start_ms, 0))
    n = hi - lo
    any_ = n > 0
    first = obs.s_time[order][np.minimum(lo, order.size - 1)]
    days = (obs.c_time - first)[any_] / DAY_MS
    return JourneyFinding(_q(touches[seen].astype(np.float64)), _q(clicks[seen]), _q(n.astype(np.float64)),
                          _q(cum_click[hi] - cum_click[lo]), _q(days))
