"""The agent with vs without the competitor-landscape columns of its state (``[hybrid] landscape``).

Each arm trains single-process on the training world (seed 100 or ``--train-seeds``, never a
validation seed) for ``--days`` simulated days, then continues online on the validation worlds
(seeds 0-4) for 5 days, the last 3 counted (as ``bench_ray_training.py --only quality``):
the simulator's expected conversion value of what it bought. Reported: the paired difference
with − without over (training seed, validation seed) pairs, with a 95 % t-interval. With one
training seed the interval holds the validation worlds' noise only, not the training run's.

    flock /work/locks/bench.lock .venv/bin/python bench/bench_landscape_feature.py [--days 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from agent_service.threads import limit_math_threads  # noqa: E402

limit_math_threads()

from bench_ray_training import _evaluate  # noqa: E402

from agent_service.config import GaelpConfig  # noqa: E402
from agent_service.config.lab import TrainConfig  # noqa: E402


def main() -> None:
    import torch

    from agent_service.lab.evaluate import interval
    from agent_service.lab.train import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=6, help="training days of each arm")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="validation seeds")
    args = ap.parse_args()
    if set(args.train_seeds) & set(args.seeds):
        ap.error("--train-seeds must differ from the validation --seeds")
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-landscape-"))
    runs: dict[str, dict[str, Any]] = {}
    for arm, on in (("with", True), ("without", False)):
        cfg = GaelpConfig().replace("hybrid", landscape=on)
        values: list[float] = []
        t0 = time.perf_counter()
        for ts in args.train_seeds:
            tc = TrainConfig(days=args.days, seed=ts, runners=0, baseline_days=0, max_minutes=600)
            train(cfg, tc, work / f"{arm}-{ts}")
            ck = torch.load(work / f"{arm}-{ts}" / "agent.pt", weights_only=False)
            values += _evaluate(cfg, ck, args.seeds)
        runs[arm] = {"eval_value_usd": [round(v, 2) for v in values], "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{arm}: {np.mean(values):.1f} USD ({runs[arm]['seconds']:.0f}s)", file=sys.stderr)
    d = np.array(runs["with"]["eval_value_usd"]) - np.array(runs["without"]["eval_value_usd"])
    mean, half = interval(d)
    base = float(np.mean(runs["without"]["eval_value_usd"]))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(json.dumps({"delta_usd": round(mean, 2), "delta_ci95": round(half, 2),
                      "delta_fraction": round(mean / base, 4) if base else None,
                      "hurts_beyond_noise": bool(mean + half < 0), "days": args.days,
                      "train_seeds": args.train_seeds, "seeds": args.seeds, "runs": runs, "commit": commit.strip()}))


if __name__ == "__main__":
    main()
