"""The calibrated behaviour model as arrays: click choice, conversion propensity, journey stages.

``WorldModel`` turns a :class:`~simulators.calibration.Calibration` into lookup arrays and the
vectorised formulas both the engine and the hindsight optimum use, so that the two can never
disagree:

- click (a RecSim-style choice between the ad and doing nothing, i.e. a logit):
  ``p_click = sigmoid(logit(base_ctr[ch]) + segment.ctr_logit + stage_ctr_logit[stage]
  + appeal[segment, creative] − fatigue_logit · fatigue) · position_ctr[ch, position]``;
- conversion after a click / view-through without one:
  ``cvr_{click,view}[ch, stage] · segment.cvr_mult · conversion.hourly[hour]
  · (1 + touch_lift · (1 − exp(−touches / touch_scale)))``, capped at 1;
- expected value of an impression: ``(p_click·p_conv + (1 − p_click)·p_view) · mean value``.
"""

from __future__ import annotations

import numpy as np

from agent_service.money import MICROS_PER_USD
from simulators.calibration.schema import Calibration
from simulators.creatives import build_appeal

__all__ = ["MAX_POSITIONS", "WorldModel"]

MAX_POSITIONS = 10


def _norm(values: tuple[float, ...], n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64) if values else np.ones(n)
    return np.asarray(arr / arr.mean())


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


class WorldModel:
    """Lookup arrays and formulas of one calibration.

    :param cal: the calibration.
    """

    def __init__(self, cal: Calibration) -> None:
        self.cal = cal
        chans = (cal.channels.organic, cal.channels.paid_search, cal.channels.social)
        self.channels = chans
        self.k = cal.n_segments
        self.appeal = build_appeal(cal)
        """Segment × creative CTR logit effect (ground truth)."""
        self.n_creatives = self.appeal.shape[1]
        self.best_creative = self.appeal.argmax(axis=1)
        """Best creative per segment (what the hindsight optimum shows)."""
        self.ctr_logit = np.array([_logit(c.base_ctr) for c in chans])
        self.seg_ctr = np.array([s.ctr_logit for s in cal.segments])
        self.stage_ctr = np.asarray(cal.journey.stage_ctr_logit, dtype=np.float64)
        self.pos_ctr = np.zeros((3, MAX_POSITIONS + 1))
        """CTR multiplier per channel and position (index 0 = not shown, treated as the top)."""
        for i, c in enumerate(chans):
            self.pos_ctr[i, 1:c.positions + 1] = c.position_ctr
            self.pos_ctr[i, 0] = c.position_ctr[0]
        self.cvr_click = np.array([c.cvr_click_by_stage for c in chans])
        self.cvr_view = np.array([c.cvr_view_by_stage for c in chans])
        self.seg_cvr = np.array([s.cvr_mult for s in cal.segments])
        self.conv_hour = _norm(cal.conversion.hourly, 24)
        self.value_mean = np.array([s.value_usd for s in cal.segments])
        self.value_sigma = np.array([s.value_sigma for s in cal.segments])
        self.thresholds = np.asarray(cal.journey.thresholds, dtype=np.float64)
        self.offer = np.array([c.offer_by_stage for c in chans])
        """P(channel offered) per channel and stage."""
        self.traffic_hour = np.asarray(cal.traffic.hourly, dtype=np.float64) / sum(cal.traffic.hourly)
        """Share of a day's traffic per hour."""
        self.traffic_day = _norm(cal.traffic.daily, 7)
        """Traffic multiplier per weekday (Monday = 0)."""
        self.seg_share = np.array([s.share for s in cal.segments]) / sum(s.share for s in cal.segments)
        self.seg_hour = np.stack([_norm(s.hourly, 24) for s in cal.segments])
        """Activity multiplier per segment and hour."""
        self.seg_category = np.array([cal.traffic.categories.index(s.category) for s in cal.segments])
        self.comp_hour = np.stack([_norm(c.competitor_hourly, 24) for c in chans])
        self.positions = np.array([c.positions for c in chans])
        j = cal.journey
        self.tau_interest = j.decay_days
        self.tau_touch = cal.conversion.window_days / 2
        """Days over which earlier touches stop counting for the touch lift (half the window)."""
        self.tau_fatigue = cal.creatives.fatigue_decay_days

    # --- journey --------------------------------------------------------------------------------
    def stage_of(self, interest: np.ndarray) -> np.ndarray:
        """Journey stage (0 awareness, 1 consideration, 2 decision) of interest levels."""
        return np.searchsorted(self.thresholds, interest, side="right").astype(np.int8)

    def interest_gain(self, segment: np.ndarray, creative: np.ndarray, click: np.ndarray) -> np.ndarray:
        """Interest added by an impression (and its click) of ``creative``."""
        j = self.cal.journey
        return np.asarray(j.impression_gain * np.exp(j.appeal_weight * self.appeal[segment, creative]) + j.click_gain * click)

    # --- clicks and conversions -----------------------------------------------------------------
    def p_click(self, channel: np.ndarray, segment: np.ndarray, stage: np.ndarray, creative: np.ndarray,
                fatigue: np.ndarray | float, position: np.ndarray | int) -> np.ndarray:
        """True click probability (see the module docstring).

        :param channel: channel ids.
        :param segment: true segments.
        :param stage: journey stages.
        :param creative: creative ids.
        :param fatigue: effective earlier exposures of this creative to this person.
        :param position: position shown (0 = treat as the top).
        """
        z = (self.ctr_logit[channel] + self.seg_ctr[segment] + self.stage_ctr[stage]
             + self.appeal[segment, creative] - self.cal.creatives.fatigue_logit * fatigue)
        return np.asarray(self.pos_ctr[channel, position] / (1.0 + np.exp(-z)))

    def p_conv(self, channel: np.ndarray, segment: np.ndarray, stage: np.ndarray, hour: np.ndarray,
               touches: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """True conversion probabilities (after a click, view-through) of a touch.

        :param touches: effective earlier touches of the person (decayed count).
        """
        c = self.cal.conversion
        mult = self.seg_cvr[segment] * self.conv_hour[hour] * (1.0 + c.touch_lift * (1.0 - np.exp(-touches / c.touch_scale)))
        return (np.minimum(1.0, self.cvr_click[channel, stage] * mult),
                np.minimum(1.0, self.cvr_view[channel, stage] * mult))

    def expected_value(self, p_click: np.ndarray, p_conv: np.ndarray, p_view: np.ndarray,
                       segment: np.ndarray) -> np.ndarray:
        """Expected conversion value of an impression, USD."""
        return np.asarray((p_click * p_conv + (1.0 - p_click) * p_view) * self.value_mean[segment])

    def value_micros(self, segment: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Conversion values (log-normal with the segment's mean), integer micros."""
        s = self.value_sigma[segment]
        return np.asarray(np.rint(self.value_mean[segment] * np.exp(s * z - s * s / 2) * MICROS_PER_USD), dtype=np.int64)
