"""Does R_diversity's default weight cost conversion value? The agent trained with the default
``[reward] alpha_diversity`` against the same agent trained with it at 0, both single-process on
the same simulated opportunities (``--days`` of the training world, seed 100), evaluated on the
validation seeds 0–4 (5 days each, the last 3 counted, as ``bench_ray_training``'s quality):
the paired difference with its 95 % t-interval. The check passes when the interval does not lie
wholly below 0 (the shaping term does not lower conversion value beyond the interval).

    .venv/bin/python bench/bench_reward_terms.py [--days 6]
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


def main() -> None:
    import torch

    from agent_service.config.lab import TrainConfig
    from agent_service.lab.evaluate import interval
    from agent_service.lab.train import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=6, help="simulated training days")
    args = ap.parse_args()
    base = GaelpConfig()
    default = base.reward.alpha_diversity
    work = Path(tempfile.mkdtemp(prefix="gaelp-bench-reward-"))
    runs: dict[str, dict[str, object]] = {}
    for name, alpha in (("without", 0.0), ("default", default)):
        cfg = base.replace("reward", alpha_diversity=alpha)
        t0 = time.perf_counter()
        train(cfg, TrainConfig(days=args.days, seed=100, runners=0, baseline_days=0, max_minutes=600), work / name)
        values = _evaluate(cfg, torch.load(work / name / "agent.pt", weights_only=False), [0, 1, 2, 3, 4])
        runs[name] = {"alpha_diversity": alpha, "eval_value_usd": [round(v, 2) for v in values],
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(f"alpha_diversity={alpha}: eval value {np.mean(values):.1f} USD", file=sys.stderr)
    d = np.array(runs["default"]["eval_value_usd"]) - np.array(runs["without"]["eval_value_usd"])  # type: ignore[arg-type]
    mean, half = interval(d)
    print(json.dumps({"bench": "reward_terms", "alpha_diversity_default": default, "days": args.days,
                      "delta_usd": round(mean, 2), "delta_ci95": round(half, 2),
                      "not_lower_beyond_interval": bool(mean + half >= 0), "runs": runs}))


if __name__ == "__main__":
    main()
