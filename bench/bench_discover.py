"""Discovery benchmark: ``gaelp discover`` on ~1 M simulated GA4 events, time and recovery, beside
baselines in the same run.

For each generating calibration (``default.toml`` and ``tests/discovery/perturbed.toml``): the
world runs ``--days`` under the logging policy and is exported as GA4 NDJSON
(``simulators/ga4_export.py``), ingested (``gaelp ingest ga4``'s code) and discovered
(``agent_service/discovery``). Printed per world:

- ``discover_s``: the discovery alone (floor: <= 120 s on 1 M events), beside export and ingest;
- recovery errors vs the generating calibration (``agent_service/discovery/recovery.py``):
  segment K and shares (Hungarian-matched), values, delay median / p90, hourly correlation,
  channel CTR, devices per person;
- baselines: the naive delay estimates (last click before the conversion; attributed lags
  without the censoring correction) and the prior's numbers (``default.toml`` used as-is: the
  answer a user gets without discovery — exact for the default world by construction, wrong for
  the perturbed one).
- the background (conversions no candidate click caused) among the conversions with candidates,
  found beside the truth (``round_trip``'s ``true_background``: an impression or an unlinked
  device caused them; evaluation only);
- the sampled delays themselves (evaluation truth, ``round_trip``'s ``true_lags``): p50 / p90 of
  every conversion decided in the window, and of the exported ones (true cause, no censoring
  correction): what a perfect attribution would start from.

Last stdout line: one JSON object. Usage: ``python bench/bench_discover.py [--persons 10000]
[--opportunities-per-day 28000] [--days 42]``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from agent_service.discovery.recovery import delay_quantiles, recovery_errors, round_trip
from simulators.calibration import Calibration, load_calibration

FLOOR_S = 120.0
ROOT = Path(__file__).resolve().parent.parent


def _prior_errors(true: Calibration, prior: Calibration, true_ctr: np.ndarray) -> dict[str, Any]:
    t50, t90 = delay_quantiles(true.delay)
    p50, p90 = delay_quantiles(prior.delay)
    base = np.array([prior.channels.organic.base_ctr, prior.channels.paid_search.base_ctr,
                     prior.channels.social.base_ctr])
    tshare = sorted((s.share for s in true.segments), reverse=True)
    pshare = sorted((s.share for s in prior.segments), reverse=True)
    return {"k": prior.n_segments, "delay_rel_err_p50": abs(p50 - t50) / t50, "delay_rel_err_p90": abs(p90 - t90) / t90,
            "hourly_corr": float(np.corrcoef(prior.traffic.hourly, true.traffic.hourly)[0, 1]),
            "ctr_rel_err": [float(x) for x in np.abs(base - true_ctr) / true_ctr],
            "largest_share_rel_err": abs(pshare[0] - tshare[0]) / tshare[0],
            "devices_per_person_abs_err": float(np.max(np.abs(np.subtract(prior.population.devices_per_person,
                                                                          true.population.devices_per_person))))}


def _lag_quantiles(lags: dict[str, np.ndarray]) -> dict[str, list[float]]:
    d, seen = lags["days"], lags["exported"]
    return {"decided": [float(x) for x in np.quantile(d, (0.5, 0.9))],
            "exported": [float(x) for x in np.quantile(d[seen], (0.5, 0.9))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--persons", type=int, default=10_000)
    ap.add_argument("--opportunities-per-day", type=float, default=28_000.0)
    ap.add_argument("--days", type=float, default=42.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    prior = load_calibration()
    out: dict[str, Any] = {"bench": "discover", "floor_discover_s": FLOOR_S, "worlds": {}}
    for name, path in (("default", None), ("perturbed", ROOT / "tests" / "discovery" / "perturbed.toml")):
        cal = load_calibration(path)
        with tempfile.TemporaryDirectory() as tmp:
            rt = round_trip(cal, Path(tmp), args.persons, args.opportunities_per_day, args.days, args.seed, prior)
        e = recovery_errors(cal, rt["calibration"], rt["findings"], rt["true_ctr"])
        f = rt["findings"]
        sec = {k: round(v, 2) for k, v in rt["seconds"].items()}
        world = {"events": rt["export"]["events"], "sessions": rt["export"]["sessions"],
                 "conversions": rt["export"]["conversions"], "censored_conversions": rt["export"]["censored_conversions"],
                 "seconds": sec, "discover_events_per_s": round(rt["export"]["events"] / max(sec["discover"], 1e-9)),
                 "floor_met": sec["discover"] <= FLOOR_S, "recovery": e, "baseline_prior": _prior_errors(cal, prior, rt["true_ctr"]),
                 "kaplan_meier_days": f.delays.km_quantiles, "true_lags_p50_p90": _lag_quantiles(rt["true_lags"]),
                 "background": {**rt["true_background"], "found_with_candidates":
                                f.delays.background_share * rt["true_background"]["with_candidates"]}}
        out["worlds"][name] = world
        b = world["baseline_prior"]
        print(f"[{name}] {world['events']} events, {world['conversions']} conversions "
              f"({world['censored_conversions']} censored); export {sec['export']} s, ingest {sec['ingest']} s, "
              f"discover {sec['discover']} s (floor {FLOOR_S:.0f} s: {'met' if world['floor_met'] else 'NOT met'})")
        print(f"  segments K {e['k_found']} (true {e['k_true']}; prior {b['k']}), share rel err "
              + ", ".join(f"{x:.3f}" for x in e["share_rel_err"])
              + "; value rel err " + ", ".join(f"{x:.3f}" for x in e["value_rel_err"]))
        print(f"  delay p50/p90 {e['delay_found_p50_p90'][0]:.2f}/{e['delay_found_p50_p90'][1]:.2f} d vs true "
              f"{e['delay_true_p50_p90'][0]:.2f}/{e['delay_true_p50_p90'][1]:.2f}: rel err {e['delay_rel_err_p50']:.3f}/"
              f"{e['delay_rel_err_p90']:.3f}; naive last click {e['naive_last_click_rel_err_p50']:.3f}/"
              f"{e['naive_last_click_rel_err_p90']:.3f}, naive uncensored {e['naive_uncensored_rel_err_p50']:.3f}/"
              f"{e['naive_uncensored_rel_err_p90']:.3f}, prior {b['delay_rel_err_p50']:.3f}/{b['delay_rel_err_p90']:.3f}")
        tl = world["true_lags_p50_p90"]
        print(f"  sampled delays p50/p90 {tl['decided'][0]:.2f}/{tl['decided'][1]:.2f} d (all decided), "
              f"{tl['exported'][0]:.2f}/{tl['exported'][1]:.2f} d (exported, true cause); Kaplan-Meier "
              f"{world['kaplan_meier_days']['p50']:.2f}/{world['kaplan_meier_days']['p90']:.2f} d; "
              f"K by BIC {len(f.delays.components)}")
        bg = world["background"]
        print(f"  background among the {bg['with_candidates']} conversions with candidates: "
              f"{bg['found_with_candidates']:.1f} found ({f.delays.background_share:.3f}), "
              f"{bg['background_with_candidates']} true (evaluation); {bg['without_candidates']} without candidates")
        print(f"  hourly corr {e['hourly_corr']:.3f} (prior {b['hourly_corr']:.3f}); CTR rel err "
              + ", ".join(f"{x:.3f}" for x in e["ctr_rel_err"]) + " (prior base_ctr "
              + ", ".join(f"{x:.3f}" for x in b["ctr_rel_err"]) + f"); devices/person abs err "
              f"{e['devices_per_person_abs_err']:.3f} (prior {b['devices_per_person_abs_err']:.3f})")
    out["floor_met"] = all(w["floor_met"] for w in out["worlds"].values())
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
