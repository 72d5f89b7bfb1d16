"""Is a discovered world good enough to train on? The agent trained on the calibration that
``gaelp discover`` learns from the true world's GA4 export, evaluated on the true world, against
the agent trained on the true calibration itself (the baseline, same run).

1. The true world (``simulators/calibration/default.toml``) runs under the logging policy and is
   exported as GA4 NDJSON, ingested and discovered (``agent_service/discovery/recovery.py``'s
   round trip; ``--export-days`` of traffic, world seed 11).
2. Two agents train single-process for ``--days`` on the training seed 100: one in the true
   world, one in the discovered world (same seed, same settings).
3. Both are evaluated on the *true* world, validation seeds 0–4 (5 days each, the last 3
   counted, as ``bench_ray_training``'s quality). Floor: discovered ≥ 90 % of true, reported
   with the paired difference's 95 % interval.

    .venv/bin/python bench/bench_discover_agent.py [--days 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ray_training import _evaluate  # noqa: E402

from agent_service.config import GaelpConfig  # noqa: E402

FLOOR = 0.90


def main() -> None:
    import torch

    from agent_service.config.lab import TrainConfig
    from agent_service.discovery.recovery import round_trip
    from agent_service.lab.evaluate import interval
    from agent_service.lab.train import train
    from simulators.calibration import dump_calibration, load_calibration

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=6, help="simulated training days of each agent")
    ap.add_argument("--export-days", type=float, default=28.0, help="days of GA4 export discovered from")
    ap.add_argument("--persons", type=int, default=10_000)
    args = ap.parse_args()
    cfg = GaelpConfig()
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-discover-agent-"))
    true = load_calibration()
    t0 = time.perf_counter()
    rt = round_trip(true, work / "roundtrip", args.persons, 28_000.0, args.export_days, 11, true)
    found = work / "discovered.toml"
    found.write_text(dump_calibration(rt["calibration"]))
    load_calibration(found)
    print(f"discovered from {rt['export']['events']} events in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    runs: dict[str, dict[str, object]] = {}
    for name, calibration in (("true", ""), ("discovered", str(found))):
        t1 = time.perf_counter()
        tc = TrainConfig(days=args.days, seed=100, runners=0, baseline_days=0, max_minutes=600, calibration=calibration)
        train(cfg, tc, work / name)
        values = _evaluate(cfg, torch.load(work / name / "agent.pt", weights_only=False), [0, 1, 2, 3, 4])
        runs[name] = {"trained_on": calibration or "default.toml", "eval_value_usd": [round(v, 2) for v in values],
                      "seconds": round(time.perf_counter() - t1, 1)}
        print(f"trained on {name}: value on the true world {np.mean(values):.1f} USD", file=sys.stderr)
    true_v = np.array(runs["true"]["eval_value_usd"])  # type: ignore[arg-type]
    found_v = np.array(runs["discovered"]["eval_value_usd"])  # type: ignore[arg-type]
    mean, half = interval(found_v - true_v)
    ratio = float(found_v.mean() / true_v.mean())
    print(json.dumps({"bench": "discover_agent", "days": args.days, "export_events": rt["export"]["events"],
                      "value_true_usd": round(float(true_v.mean()), 2),
                      "value_discovered_usd": round(float(found_v.mean()), 2), "ratio": round(ratio, 4),
                      "floor": FLOOR, "floor_met": ratio >= FLOOR, "delta_usd": round(mean, 2),
                      "delta_ci95": round(half, 2), "runs": runs}))


if __name__ == "__main__":
    main()
