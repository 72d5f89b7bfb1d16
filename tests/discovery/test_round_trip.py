"""The discovery round trip: simulate → GA4 export → ingest → discover recovers the generating
calibration, on 3 seeds × 2 calibrations (default.toml and tests/discovery/perturbed.toml).

Small worlds (3,000 people, 7,000 opportunities a day, 28 days: ~180k GA4 events, 60-300
conversions each). Tolerances, stated here and in agent_service/discovery/*'s docstrings:

- K chosen by BIC equals the true K; segment shares (Hungarian-matched on context mixes) within
  10 % relative; context signal within 0.03, hourly traffic correlation >= 0.9;
- channel CTR within max(10 %, 3 binomial standard errors) relative of the generating world's
  expected CTR on the exported impressions;
- devices per person within 0.08 absolute, login rate within 0.03;
- the background (conversions no candidate click caused) among the conversions with candidates
  within max(10, 50 %) of the truth (``round_trip``'s ``true_background``); the background
  pinned before the fit (before 2026-12-04, fifth session) was 1.5–7× the truth here;
- delay median within 15 % (perturbed) / 25 % (default) and p90 within 25 % (perturbed) /
  30 % (default), and (perturbed) the median closer than the naive last-click estimate; the
  calibration holds every fitted component. These small worlds give the default's delay (a three-component
  mixture with 10 % of its mass in a late log-normal tail from day 10) ~50 conversions in 28
  days, too few for K > 1 (fewer than 80 are not tried). One log-normal fitted to ~50 censored
  lags by maximum likelihood trades q against a tail beyond the data (validation seeds 1-9:
  median up to +179 %, p90 up to +818 %); the window prior 20 log F(H) (delays.py) holds it:
  default seeds 1-9 mean |p50| 7.7 % (max 20 %, seed 2), mean |p90| 28.5 % (max 66 %, seeds
  4 and 6 — the tests' seeds 1-3 are within 18 %); the perturbed world (a short delay, F(H) ~ 1)
  is not moved by it (p90 of seeds 1-2: +15 %, +20 %). bench/bench_delay_small.py measures this
  spread; at 1 M events (bench/bench_discover.py) the prior moves the p90 by <= 1.3 points;
- segment mean values within 25 % (perturbed) / 40 % (default) for the segments with at least
  15 (responsibility-weighted) conversions; a default world's casual segment has a handful, and
  two misattributed conversions move its mean by half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent_service.discovery.recovery import recovery_errors, round_trip
from simulators.calibration import load_calibration

PERTURBED = Path(__file__).with_name("perturbed.toml")
TOL = {  # name: (delay p50, delay p90, segment value)
    "default": (0.25, 0.30, 0.40),
    "perturbed": (0.15, 0.25, 0.25),
}


@pytest.mark.parametrize("which", ["default", "perturbed"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_round_trip_recovers_calibration(tmp_path: Path, which: str, seed: int) -> None:
    cal = load_calibration(PERTURBED if which == "perturbed" else None)
    rt = round_trip(cal, tmp_path, persons=3_000, opportunities_per_day=7_000, days=28, seed=seed,
                    prior=load_calibration(), k_max=5)
    e = recovery_errors(cal, rt["calibration"], rt["findings"], rt["true_ctr"])
    lags = rt["true_lags"]  # the evaluation truth the bench prints: one sampled delay per decided conversion
    assert int(lags["exported"].sum()) == rt["export"]["conversions"] and np.all(lags["days"] >= 0)
    d50, d90, val = TOL[which]
    assert e["k_found"] == e["k_true"], e["k_found"]
    assert max(e["share_rel_err"]) <= 0.10, (e["share_true"], e["share_found"])
    assert e["context_signal_abs_err"] <= 0.03
    assert e["hourly_corr"] >= 0.9
    se_rel = np.asarray(e["ctr_se"]) / np.asarray(e["ctr_found"])
    assert np.all(np.asarray(e["ctr_rel_err"]) <= np.maximum(0.10, 3 * se_rel)), (e["ctr_true"], e["ctr_found"])
    assert e["devices_per_person_abs_err"] <= 0.08
    assert e["login_rate_abs_err"] <= 0.03
    assert e["delay_rel_err_p50"] <= d50, (e["delay_found_p50_p90"], e["delay_true_p50_p90"])
    assert e["delay_rel_err_p90"] <= d90, (e["delay_found_p50_p90"], e["delay_true_p50_p90"])
    if which == "perturbed":  # (default seed 2: fit +20 %, last click −14 %)
        assert e["delay_rel_err_p50"] < e["naive_last_click_rel_err_p50"]
    bg = rt["true_background"]
    found_bg = rt["findings"].delays.background_share * bg["with_candidates"]
    assert abs(found_bg - bg["background_with_candidates"]) <= max(10.0, 0.5 * bg["background_with_candidates"]), bg
    assert bg["with_candidates"] + bg["without_candidates"] == bg["conversions"] == rt["export"]["conversions"]
    assert rt["calibration"].delay.components == rt["findings"].delays.components
    enough = np.asarray(e["value_conversions"]) >= 15
    assert enough.any()
    assert np.all(np.asarray(e["value_rel_err"])[enough] <= val), (e["value_rel_err"], e["value_conversions"])
