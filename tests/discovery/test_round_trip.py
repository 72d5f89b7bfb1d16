"""The discovery round trip: simulate → GA4 export → ingest → discover recovers the generating
calibration, on 3 seeds × 2 calibrations (default.toml and tests/discovery/perturbed.toml).

Small worlds (3,000 people, 7,000 opportunities a day, 28 days: ~180k GA4 events, 60-300
conversions each). Tolerances, stated here and in agent_service/discovery/*'s docstrings:

- K chosen by BIC equals the true K; segment shares (Hungarian-matched on context mixes) within
  10 % relative; context signal within 0.03, hourly traffic correlation >= 0.9;
- channel CTR within max(10 %, 3 binomial standard errors) relative of the generating world's
  expected CTR on the exported impressions;
- devices per person within 0.08 absolute, login rate within 0.03;
- delay median within 10 % (perturbed) / 15 % (default) and p90 within 10 % (perturbed) /
  30 % (default), and the median closer than the naive last-click estimate; the calibration
  holds every fitted component. The default's delay is a three-component mixture with 10 % of
  its mass in a late log-normal tail (from day 10, median ~18 d); 28 days of these worlds give it
  ~50 conversions, too few for BIC to pay for a second component (fewer than 80 are not even
  tried), and its p90 from ~50 censored lags is under-estimated by 20–25 % on these seeds.
  At 1 M events (bench/bench_discover.py, 524 conversions) BIC picks two components and the
  p90 is 13.6 % under the truth (a three-component fit gets 3.8 % but does not pay for itself
  on that data); that is a known gap, not hidden by the tolerance (its cause is the background
  pin taking the tail's conversions, not data size: bench/README.md);
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
    "default": (0.15, 0.30, 0.40),
    "perturbed": (0.10, 0.10, 0.25),
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
    assert e["delay_rel_err_p50"] < e["naive_last_click_rel_err_p50"]
    assert rt["calibration"].delay.components == rt["findings"].delays.components
    enough = np.asarray(e["value_conversions"]) >= 15
    assert enough.any()
    assert np.all(np.asarray(e["value_rel_err"])[enough] <= val), (e["value_rel_err"], e["value_conversions"])
