"""Traffic over time: the hour-of-day and day-of-week profile of sessions.

**Method.** Hourly: paid-channel session starts per UTC hour, divided by their mean (organic is
left out because its reach runs out during the day, which would bend the profile toward the
morning). Daily: sessions per weekday divided by how many of that weekday the data spans (a
partial first or last day counts as the fraction of it covered), normalised to mean 1.
Seasonality (a trend across weeks) is reported as the ratio of the last full week's sessions to
the first's when the data spans two full weeks; the calibration has no field for it.

**Check.** The round trip requires a correlation >= 0.9 between discovered and generating hourly
profiles (tests/discovery).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.discovery.data import Observations
from agent_service.units import DAY_MS, HOUR_MS

__all__ = ["TemporalFinding", "discover_temporal"]

_EPOCH_DOW = 3  # 1970-01-01 was a Thursday (Monday = 0)


@dataclass(frozen=True)
class TemporalFinding:
    hourly: np.ndarray
    """[24] relative sessions per UTC hour (mean 1)."""
    daily: np.ndarray
    """[7] relative sessions per weekday, Monday first (mean 1)."""
    weekly_trend: float | None
    """Last full week's sessions / first full week's (None: under two full weeks)."""


def discover_temporal(obs: Observations) -> TemporalFinding:
    """Hour and weekday profiles of the sessions.

    :param obs: the ingested sessions.
    """
    t = obs.s_time
    paid = obs.s_channel > 0
    src = t[paid] if paid.sum() >= 24 * 20 else t
    hourly = np.bincount((src // HOUR_MS) % 24, minlength=24).astype(np.float64)
    hourly = hourly / max(hourly.mean(), 1e-12)
    # exposure per weekday in days (partial first/last days as fractions)
    span_days = np.arange(obs.start_ms // DAY_MS, obs.end_ms // DAY_MS + 1)
    cover = np.clip((np.minimum((span_days + 1) * DAY_MS, obs.end_ms)
                     - np.maximum(span_days * DAY_MS, obs.start_ms)) / DAY_MS, 0.0, 1.0)
    exposure = np.bincount((span_days + _EPOCH_DOW) % 7, weights=cover, minlength=7)
    counts = np.bincount(((t // DAY_MS) + _EPOCH_DOW) % 7, minlength=7).astype(np.float64)
    daily = np.where(exposure > 0, counts / np.maximum(exposure, 1e-12), np.nan)
    daily = np.where(np.isfinite(daily), daily, np.nanmean(daily))
    daily = daily / daily.mean()
    week = (t - obs.start_ms) // (7 * DAY_MS)
    full = int((obs.end_ms - obs.start_ms) // (7 * DAY_MS))
    trend = None
    if full >= 2:
        per = np.bincount(week, minlength=full + 1)[:full]
        trend = float(per[-1] / max(per[0], 1))
    return TemporalFinding(hourly, daily, trend)
