"""The canary's sequential test on simulated traffic: wrong decisions on A/A runs, and how soon a
better candidate is promoted — against a fixed-horizon test peeked at every batch.

Each run feeds people in batches (2,000 per review): a person converts with probability 5 % for a
log-normal value (median $33) and spends a gamma-distributed amount; on the candidate arm the
value is multiplied by ``1 + lift``. The canary (``agent_service/experiments/canary.py``: ramp 5 →
25 → 50 → 100 %, mSPRT on value per dollar, α = 0.05) reviews after every batch, up to 1,000
batches (2 million people). ``canary_wrong_decision_rate``: the share of 200 A/A runs that ramped, promoted or rolled
back (any action is wrong when nothing differs). Then 200 runs of a candidate 10 % better: the
share promoted, and the conversions (both arms) and people it took. Baseline in the same run:
a z-test at the fixed-horizon 1.96 checked after every batch (peeking), on the same runs.

    .venv/bin/python bench/bench_canary.py [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent_service.experiments.canary import Canary, CanaryConfig
from agent_service.experiments.sequential import ArmStats


def _people(rng: np.random.Generator, n: int, lift: float) -> tuple[np.ndarray, np.ndarray, int]:
    conv = rng.random(n) < 0.05
    value = np.where(conv, rng.lognormal(3.5, 1.0, n), 0.0) * (1 + lift)
    spend = rng.gamma(2.0, 0.5, n)
    return value, spend, int(conv.sum())


def run(seed: int, lift: float, batches: int, batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    canary = Canary(f"run{seed}", CanaryConfig())
    naive_c, naive_t = ArmStats(), ArmStats()
    naive_fired = False
    people = 0
    for b in range(batches):
        share = canary.share
        cand = rng.random(batch) < share
        for arm, mask, naive in ((canary.candidate, cand, naive_t), (canary.control, ~cand, naive_c)):
            v, s, c = _people(rng, int(mask.sum()), lift if arm is canary.candidate else 0.0)
            arm.add(v, s, c)
            naive.add(v, s, c)
        people += batch
        step = canary.review()
        if not naive_fired and min(naive_c.conversions, naive_t.conversions) >= 100:
            z = (naive_t.ratio - naive_c.ratio) / math.sqrt(naive_t.ratio_variance() + naive_c.ratio_variance())
            naive_fired = abs(z) > 1.96
        finished = canary.state != "running"
        if finished or (lift == 0 and step.action == "ramp"):  # in A/A a ramp is already a wrong decision
            return {"decided": canary.state if finished else "ramp", "batch": b, "people": people,
                    "conversions": canary.control.conversions + canary.candidate.conversions,
                    "naive_fired": naive_fired}
    return {"decided": "none", "batch": batches, "people": people,
            "conversions": canary.control.conversions + canary.candidate.conversions, "naive_fired": naive_fired}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=2_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    aa = [run(1000 + i, 0.0, args.batches, args.batch) for i in range(args.runs)]
    ab = [run(5000 + i, 0.10, args.batches, args.batch) for i in range(args.runs)]
    wrong = sum(r["decided"] != "none" for r in aa) / args.runs
    naive_wrong = sum(r["naive_fired"] for r in aa) / args.runs
    promoted = [r for r in ab if r["decided"] == "promoted"]
    conv = np.array([r["conversions"] for r in promoted]) if promoted else np.array([np.nan])
    ppl = np.array([r["people"] for r in promoted]) if promoted else np.array([np.nan])
    out = {"bench": "canary", "runs": args.runs, "canary_wrong_decision_rate": wrong,
           "baseline_peeked_z_test_wrong_rate": naive_wrong,
           "aa_decisions": {k: sum(r["decided"] == k for r in aa) for k in ("ramp", "promoted", "rolled_back")},
           "lift_10pct_promoted_share": len(promoted) / args.runs,
           "lift_10pct_rolled_back_share": sum(r["decided"] == "rolled_back" for r in ab) / args.runs,
           "lift_10pct_conversions_to_promote": {"median": float(np.median(conv)), "p90": float(np.percentile(conv, 90))},
           "lift_10pct_people_to_promote": {"median": float(np.median(ppl)), "p90": float(np.percentile(ppl, 90))},
           "horizon_people": args.batches * args.batch, "floors": {"wrong_le_5pct": wrong <= 0.05},
           "seconds": round(time.perf_counter() - t0, 1)}
    print(f"A/A wrong decisions {wrong:.3f} (peeked z-test {naive_wrong:.3f}); +10 %: promoted "
          f"{out['lift_10pct_promoted_share']:.2f}, median {out['lift_10pct_conversions_to_promote']['median']:.0f} "
          f"conversions", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
