"""The delay fit's spread on small data: the round-trip test's worlds (3,000 people, 7,000
opportunities a day, 28 days, ~50-70 default conversions), validation seeds 1-9, both generating
calibrations (``default.toml`` and ``tests/discovery/perturbed.toml``).

Each world is simulated, exported and ingested once (``round_trip``; cached as a pickle of the
observations and the evaluation truth in ``--cache``), then ``discover_delays`` is fitted for each
``--window-prior`` (0: maximum likelihood) and its median / p90 compared with the generating
mixture's. Printed per world and prior: the signed relative errors per seed, mean and max |error|,
and the background found minus the truth. Usage: ``python bench/bench_delay_small.py
[--seeds 1 2 ... 9] [--window-prior 0 20] [--cache /tmp/delay_small]``.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import numpy as np

from agent_service.discovery.data import load_observations
from agent_service.discovery.delays import discover_delays
from agent_service.discovery.recovery import delay_quantiles, round_trip
from simulators.calibration import load_calibration
from simulators.calibration.schema import DelayCal

PERTURBED = Path(__file__).resolve().parents[1] / "tests" / "discovery" / "perturbed.toml"


def world(cache: Path, name: str, seed: int) -> dict:
    """The observations and truth of one small world (built once, then read from ``cache``)."""
    path = cache / f"s{name}_{seed}.pkl"
    if not path.exists():
        cal = load_calibration(PERTURBED if name == "perturbed" else None)
        with tempfile.TemporaryDirectory() as tmp:
            rt = round_trip(cal, Path(tmp), 3_000, 7_000.0, 28.0, seed, load_calibration(), k_max=5)
            obs = load_observations(Path(tmp) / "ga4.duckdb")
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({"obs": obs, "tb": rt["true_background"], "cal": cal}))
    return dict(pickle.loads(path.read_bytes()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 10)))
    ap.add_argument("--window-prior", type=float, nargs="+", default=[20.0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "delay_small")
    args = ap.parse_args()
    for name in ("default", "perturbed"):
        worlds = [world(args.cache, name, s) for s in args.seeds]
        for m in args.window_prior:
            rows = []
            for w in worlds:
                f = discover_delays(w["obs"], window_prior=m)
                t50, t90 = delay_quantiles(w["cal"].delay)
                f50, f90 = delay_quantiles(DelayCal(components=f.components))
                bg = f.background_share * w["tb"]["with_candidates"] - w["tb"]["background_with_candidates"]
                rows.append(((f50 - t50) / t50, (f90 - t90) / t90, bg))
            r = np.array(rows)
            print(f"{name} m={m:g} p50", " ".join(f"{x:+.2f}" for x in r[:, 0]),
                  "| p90", " ".join(f"{x:+.2f}" for x in r[:, 1]), "| bg-true", " ".join(f"{x:+.0f}" for x in r[:, 2]))
            a = np.abs(r)
            print(f"    mean|p50| {a[:, 0].mean():.3f} max|p50| {a[:, 0].max():.3f} "
                  f"mean|p90| {a[:, 1].mean():.3f} max|p90| {a[:, 1].max():.3f}", flush=True)


if __name__ == "__main__":
    main()
