"""The round trip that checks discovery: simulate → GA4 export → ingest → discover → compare.

``round_trip`` runs a calibrated world under the logging policy, writes its GA4 export,
ingests it with ``gaelp ingest ga4``'s code and discovers a calibration from the warehouse;
``recovery_errors`` compares the discovered calibration with the generating one:

- segments: K found vs K true; discovered segments are matched to true ones by the Hungarian
  assignment on their page-context mixes (a true segment's mix is ``context_signal`` on its
  category plus the rest spread evenly); relative errors of shares and mean values;
- delay: relative errors of the median and 90th percentile (both read from the calibrations'
  delay mixtures), beside the naive estimates' errors;
- hourly: correlation of the traffic profiles;
- channel CTR: relative error against the generating world's expected CTR on the exported
  impressions (mean true click probability; evaluation truth, never in the export), with the
  binomial standard error of the observed CTR;
- devices per person, login rate, context signal: absolute errors.

Evaluation code only (tests/discovery and bench/bench_discover.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from agent_service.config import GaelpConfig
from agent_service.discovery.data import Observations, load_observations
from agent_service.discovery.run import discover
from agent_service.discovery.writer import Findings
from agent_service.ingest.runner import ingest_ga4
from agent_service.ingest.store import Ga4Store
from simulators.calibration.schema import Calibration, DelayCal
from simulators.delays import DelayModel
from simulators.engine import DAY_MS
from simulators.ga4_export import export_world
from simulators.traffic_log import LoggedSlot

__all__ = ["delay_quantiles", "recovery_errors", "round_trip", "true_background"]


def delay_quantiles(delay: DelayCal, ps: tuple[float, ...] = (0.5, 0.9)) -> list[float]:
    """Quantiles (days) of a calibration's delay mixture, by inverting its CDF on a fine grid."""
    x = np.linspace(0.0, 200.0, 200_001)
    c = DelayModel(delay).cdf(x)
    return [float(x[min(int(np.searchsorted(c, p)), x.size - 1)]) for p in ps]


def round_trip(cal: Calibration, workdir: Path, persons: int, opportunities_per_day: float, days: float, seed: int,
               prior: Calibration, k_max: int = 6) -> dict[str, Any]:
    """Simulate, export, ingest and discover; returns the findings, the calibration and the truth
    (``true_lags``: every conversion decided in the window, its sampled delay in days and whether
    it is in the export).

    :param cal: the generating calibration.
    :param workdir: where the export and the warehouse go.
    :param persons: people in the world.
    :param opportunities_per_day: traffic.
    :param days: days of traffic (the export's span).
    :param seed: the world's seed.
    :param prior: the discovery's prior.
    :param k_max: most segments tried.
    """
    shown = np.zeros(3)
    p_click = np.zeros(3)
    lags: list[np.ndarray] = []
    first = [np.iinfo(np.int64).max]

    def observe(s: LoggedSlot) -> None:
        won = s.out.won
        ch = s.actions.channel[won].astype(np.int64)
        shown[:] += np.bincount(ch, minlength=3)
        p_click[:] += np.bincount(ch, weights=s.truth.p_click[won], minlength=3)
        first[0] = min(first[0], int(s.opps.t.min(initial=first[0])))
        c = s.out.conv
        lags.append(np.stack([s.out.conv_time[c], s.out.conv_time[c] - s.opps.t[c], s.opps.t[c],
                              s.out.click[c].astype(np.int64)]))

    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    export = export_world(cal, workdir / "ga4", persons, opportunities_per_day, days, seed, observe=observe)
    t1 = time.perf_counter()
    wh = workdir / "ga4.duckdb"
    with Ga4Store(wh) as store:
        ingest_ga4([str(workdir / "ga4")], store, GaelpConfig())
    t2 = time.perf_counter()
    findings, found = discover(wh, prior, k_max=k_max, seed=seed)
    t3 = time.perf_counter()
    truth = np.concatenate(lags, axis=1) if lags else np.zeros((4, 0), np.int64)
    conv_time, lag_ms, touch_ms, clicked = truth
    export_end = first[0] - first[0] % DAY_MS + int(days * DAY_MS)  # the export starts at a UTC midnight
    if int((conv_time < export_end).sum()) != export.conversions:
        raise RuntimeError("true lags: the export's end was not recovered")
    return {"findings": findings, "calibration": found, "export": export.to_json_obj(),
            "true_lags": {"days": lag_ms / DAY_MS, "exported": conv_time < export_end},
            "true_background": true_background(load_observations(wh), conv_time, touch_ms, clicked > 0),
            "true_ctr": p_click / np.maximum(shown, 1),
            "seconds": {"export": t1 - t0, "ingest": t2 - t1, "discover": t3 - t2}}


def true_background(obs: Observations, conv_time: np.ndarray, touch_ms: np.ndarray, clicked: np.ndarray,
                    max_days: float = 45.0) -> dict[str, int]:
    """How many exported conversions with candidates (a click of their unit within ``max_days``
    before, the delay fit's definition) were caused by no candidate — an impression, or a click on
    a unit the data does not link: the delay fit's background, counted from the truth.

    :param obs: the ingested export.
    :param conv_time: [conversions decided] event time, ms (the purchase is logged 500 ms later).
    :param touch_ms: [conversions decided] time of the causing touch (its session start), ms.
    :param clicked: [conversions decided] the causing touch was a click.
    :param max_days: the fit's candidate window.
    """
    h = int(min(max_days, (obs.end_ms - obs.start_ms) / DAY_MS) * DAY_MS)
    o = np.argsort(conv_time)
    ct, tt, ck = conv_time[o], touch_ms[o], clicked[o]
    j = np.clip(np.searchsorted(ct, obs.c_time - 500), 0, max(ct.size - 1, 0))
    if not ct.size or np.abs(ct[j] - (obs.c_time - 500)).max(initial=0) > 0:
        raise RuntimeError("true background: an exported conversion matches no decided one")
    clicks = {(int(u), int(t)) for u, t in zip(obs.s_unit[obs.s_click], obs.s_time[obs.s_click], strict=True)}
    by_unit: dict[int, list[int]] = {}
    for u, t in clicks:
        by_unit.setdefault(u, []).append(t)
    has = np.array([any(tc - h <= t < tc for t in by_unit.get(int(u), ()))
                    for u, tc in zip(obs.c_unit, obs.c_time, strict=True)], bool)
    cause = np.array([bool(ck[i]) and (int(u), int(tt[i])) in clicks and tc - tt[i] <= h
                      for i, u, tc in zip(j, obs.c_unit, obs.c_time, strict=True)], bool)
    return {"conversions": int(obs.c_time.size), "with_candidates": int(has.sum()),
            "background_with_candidates": int((has & ~cause).sum()), "without_candidates": int((~has).sum())}


def _true_context_mix(cal: Calibration, names: list[str]) -> np.ndarray:
    cats = cal.traffic.categories
    cs = cal.traffic.context_signal
    mix = np.zeros((cal.n_segments, len(names)))
    for k, s in enumerate(cal.segments):
        for c in cats:
            p = (1 - cs) / len(cats) + (cs if c == s.category else 0.0)
            if c in names:
                mix[k, names.index(c)] += p
            elif "(other)" in names:
                mix[k, names.index("(other)")] += p
    return mix


def recovery_errors(true: Calibration, found: Calibration, f: Findings, true_ctr: np.ndarray) -> dict[str, Any]:
    """How far ``found`` is from ``true`` (see the module docstring)."""
    seg = f.segments
    tmix = _true_context_mix(true, seg.contexts)
    cost = np.abs(tmix[:, None, :] - seg.context_mix[None, :, :]).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    tshare = np.array([s.share for s in true.segments])
    tshare = tshare / tshare.sum()
    share_rel = [abs(seg.share[c] - tshare[r]) / tshare[r] for r, c in zip(rows, cols, strict=True)]
    value_rel = [abs(found.segments[c].value_usd - true.segments[r].value_usd) / true.segments[r].value_usd
                 for r, c in zip(rows, cols, strict=True)]
    t50, t90 = delay_quantiles(true.delay)
    f50, f90 = delay_quantiles(found.delay)
    d = f.delays
    ctr = f.channels.ctr
    ctr_rel = np.abs(ctr - true_ctr) / np.maximum(true_ctr, 1e-12)
    return {
        "k_true": true.n_segments, "k_found": int(seg.share.size),
        "matched": [[true.segments[r].name, found.segments[c].name] for r, c in zip(rows, cols, strict=True)],
        "share_true": [float(tshare[r]) for r in rows], "share_found": [float(seg.share[c]) for c in cols],
        "share_rel_err": [float(x) for x in share_rel], "value_rel_err": [float(x) for x in value_rel],
        "value_conversions": [float(seg.conversions[c]) for c in cols],
        "delay_true_p50_p90": [t50, t90], "delay_found_p50_p90": [f50, f90],
        "delay_rel_err_p50": abs(f50 - t50) / t50, "delay_rel_err_p90": abs(f90 - t90) / t90,
        "naive_last_click_rel_err_p50": abs(d.naive_last_click["p50"] - t50) / t50,
        "naive_last_click_rel_err_p90": abs(d.naive_last_click["p90"] - t90) / t90,
        "naive_uncensored_rel_err_p50": abs(d.naive_uncensored["p50"] - t50) / t50,
        "naive_uncensored_rel_err_p90": abs(d.naive_uncensored["p90"] - t90) / t90,
        "hourly_corr": float(np.corrcoef(found.traffic.hourly, true.traffic.hourly)[0, 1]),
        "ctr_true": [float(x) for x in true_ctr], "ctr_found": [float(x) for x in ctr],
        "ctr_se": [float(x) for x in f.channels.ctr_se], "ctr_rel_err": [float(x) for x in ctr_rel],
        "devices_per_person_abs_err": float(np.max(np.abs(np.subtract(found.population.devices_per_person,
                                                                      true.population.devices_per_person)))),
        "login_rate_abs_err": abs(found.population.login_rate - true.population.login_rate),
        "context_signal_abs_err": abs(found.traffic.context_signal - true.traffic.context_signal),
        "conversions": d.conversions,
    }
