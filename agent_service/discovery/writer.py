"""Findings → a calibration the simulator loads, plus a JSON report of everything found.

What GA4 identifies replaces the prior's numbers (``default.toml`` unless another prior is
given); what it cannot identify keeps the prior's, and the file's ``meta.source`` says which is
which:

- learned: ``population`` devices per person, login rate, device types and shares;
  ``traffic`` hourly, daily, categories, context signal; ``segments`` (K, names, shares,
  categories, hourly, value and its sigma, CTR logit, CVR multiplier); ``channels.*.base_ctr``
  (observed top-position CTR of the export's creative mix) and ``cvr_click_by_stage`` (the
  channel's censoring-corrected CVR, the same for every stage: stages are not observable in
  GA4); ``delay`` (a mixture of 1–3 shifted log-normals, K by BIC);
- from the prior: journey dynamics, segment interest (the prior's share-weighted mean), the
  offer and auction landscape, conversion touch lift and hourly propensity, creatives,
  competitors, targeting. Creative appeal rows are dropped when K changes. With fewer than
  ``MIN_DELAY_CONVERSIONS`` attributable conversions the prior's delay is kept (the report says so).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from agent_service.discovery.channels import ChannelFinding
from agent_service.discovery.delays import DelayFinding
from agent_service.discovery.journeys import JourneyFinding
from agent_service.discovery.population import PopulationFinding
from agent_service.discovery.segments import SegmentFinding
from agent_service.discovery.temporal import TemporalFinding
from simulators.calibration.schema import Calibration, DelayCal, SegmentCal

__all__ = ["MIN_DELAY_CONVERSIONS", "Findings", "build_calibration", "delay_fitted", "report_of"]

MIN_DELAY_CONVERSIONS = 20
"""Fewer conversions with a candidate click than this: the delay is not fitted, the prior's is kept."""


@dataclasses.dataclass(frozen=True)
class Findings:
    """Everything one discovery run found."""

    segments: SegmentFinding
    temporal: TemporalFinding
    delays: DelayFinding
    channels: ChannelFinding
    population: PopulationFinding
    journeys: JourneyFinding
    origin: str
    """The warehouse read."""


def _r(x: Any, nd: int = 6) -> Any:
    if isinstance(x, np.ndarray):
        return [_r(v, nd) for v in x.tolist()]
    if isinstance(x, (list, tuple)):
        return [_r(v, nd) for v in x]
    if isinstance(x, float):
        return round(x, nd) if np.isfinite(x) else None
    return x


def _prob(x: float, lo: float = 1e-6, hi: float = 1.0) -> float:
    return float(np.clip(x, lo, hi)) if np.isfinite(x) else lo


def build_calibration(f: Findings, prior: Calibration, name: str = "discovered") -> Calibration:
    """The discovered calibration (see the module docstring).

    :param f: the findings.
    :param prior: where the unidentified numbers come from.
    :param name: ``meta.name`` of the result.
    """
    seg = f.segments
    k = seg.share.size
    pw = np.array([s.share for s in prior.segments])
    pw = pw / pw.sum()
    interest_mean = float(pw @ [s.interest_mean for s in prior.segments])
    interest_sd = float(pw @ [s.interest_sd for s in prior.segments])
    prior_value = float(pw @ [s.value_usd for s in prior.segments])
    overall_value = float(np.nanmean(seg.value_usd)) if np.isfinite(seg.value_usd).any() else prior_value
    segments = []
    for i in range(k):
        value = seg.value_usd[i] if np.isfinite(seg.value_usd[i]) else overall_value
        sigma = seg.value_sigma[i] if np.isfinite(seg.value_sigma[i]) else 0.5
        segments.append(SegmentCal(
            name=f"segment_{i + 1}", share=round(float(seg.share[i]), 6), category=seg.category[i],
            hourly=tuple(round(float(v), 4) for v in seg.hourly[i]), interest_mean=round(interest_mean, 4),
            interest_sd=round(interest_sd, 4), value_usd=round(float(value), 4),
            value_sigma=round(float(np.clip(sigma, 0.0, 3.0)), 4),
            ctr_logit=round(float(np.nan_to_num(f.channels.segment_ctr_logit[i])), 4),
            cvr_mult=round(float(np.clip(np.nan_to_num(f.channels.segment_cvr_mult[i], nan=1.0), 0.05, 20.0)), 4)))
    categories = tuple(dict.fromkeys([*seg.category, *seg.contexts]))
    traffic = dataclasses.replace(
        prior.traffic, hourly=tuple(round(float(v), 4) for v in f.temporal.hourly),
        daily=tuple(round(float(v), 4) for v in f.temporal.daily), categories=categories,
        context_signal=round(f.segments.context_signal, 4))
    pop = dataclasses.replace(
        prior.population, devices_per_person=f.population.devices_per_person,
        device_types=f.population.device_types, device_type_shares=f.population.device_type_shares,
        login_rate=round(f.population.login_rate, 6))
    chans = {}
    for i, cname in enumerate(("organic", "paid_search", "social")):
        c = getattr(prior.channels, cname)
        ctr = f.channels.ctr[i]
        cvr = f.channels.cvr[i]
        chans[cname] = dataclasses.replace(
            c, base_ctr=round(_prob(ctr, 1e-5, 0.99), 6) if np.isfinite(ctr) else c.base_ctr,
            cvr_click_by_stage=(round(_prob(cvr), 6),) * 3 if np.isfinite(cvr) else c.cvr_click_by_stage)
    appeal = prior.creatives.appeal if k == prior.n_segments else ()
    return dataclasses.replace(
        prior,
        meta=dataclasses.replace(prior.meta, name=name, source=(
            f"discovered by `gaelp discover` from {f.origin}: population, traffic, segments, channel CTR/CVR and "
            f"delay learned; journey, offers, auctions, conversion lift, creatives, competitors and targeting "
            f"from the prior '{prior.meta.name}'")),
        population=pop, traffic=traffic, segments=tuple(segments),
        channels=dataclasses.replace(prior.channels, **chans),
        delay=DelayCal(components=f.delays.components) if delay_fitted(f) else prior.delay,
        creatives=dataclasses.replace(prior.creatives, appeal=appeal))


def delay_fitted(f: Findings) -> bool:
    """Whether there were enough conversions to replace the prior's delay."""
    return f.delays.conversions - f.delays.without_candidates >= MIN_DELAY_CONVERSIONS


def report_of(f: Findings) -> dict[str, Any]:
    """Every finding as a JSON-able mapping (the ``--report`` file)."""
    s, d, c = f.segments, f.delays, f.channels
    return {
        "origin": f.origin,
        "segments": {"k": int(s.share.size), "bic": {str(k): round(v, 2) for k, v in s.bic.items()},
                     "share": _r(s.share), "category": s.category, "context_signal": _r(s.context_signal),
                     "value_usd": _r(s.value_usd), "value_sigma": _r(s.value_sigma),
                     "conversions": _r(s.conversions, 2), "contexts": s.contexts,
                     "context_mix": _r(s.context_mix, 4)},
        "temporal": {"hourly": _r(f.temporal.hourly, 4), "daily": _r(f.temporal.daily, 4),
                     "weekly_trend": _r(f.temporal.weekly_trend)},
        "delay": {"written": "fitted" if delay_fitted(f) else
                  f"prior (under {MIN_DELAY_CONVERSIONS} conversions with a candidate click)",
                  "quantiles_days": _r(d.quantiles, 3), "naive_last_click_days": _r(d.naive_last_click, 3),
                  "naive_uncensored_days": _r(d.naive_uncensored, 3),
                  "components": [dataclasses.asdict(c) for c in d.components],
                  "bic": {str(k): round(v, 2) for k, v in d.bic.items()},
                  "kaplan_meier_days": _r(d.km_quantiles, 3), "q": _r(d.q), "background_share": _r(d.background_share, 4),
                  "conversions": d.conversions, "conversions_without_candidates": d.without_candidates},
        "channels": {"names": ["organic", "paid_search", "social"], "sessions": _r(c.sessions), "mix": _r(c.mix, 4),
                     "ctr": _r(c.ctr), "ctr_se": _r(c.ctr_se), "ctr_by_device": _r(c.ctr_by_device),
                     "cvr": _r(c.cvr), "cvr_by_device": _r(c.cvr_by_device),
                     "devices": ["mobile", "desktop", "tablet", "smart tv"]},
        "population": dataclasses.asdict(f.population),
        "journeys": dataclasses.asdict(f.journeys),
    }
