"""How low can creative regret go at this traffic? (issue 18; a stylised bandit, no agent code).

The agent must learn 4 segments x 60 creatives of click appeal from the clicks it wins. This bench
gives learners an *easier* problem than the agent's, so their regret is a floor for it:

* the person's true segment is known (the agent infers it);
* no fatigue, no journey, no channels or positions: a click is ``Bernoulli(sigmoid(base +
  appeal[segment, creative]))`` with the simulator's own appeal matrix (``build_appeal``) and a
  known ``base``;
* the learners' prior is the truth's own spread (an oracle prior).

Traffic as the agent's training run sees it (``--per-day``; seed 100's fresh run won ~4,500
impressions a day), updates every ``--batch`` impressions as the agent's learner does. Learners:
Thompson sampling and a greedy posterior mean on an exact per-cell Laplace posterior, UCB (mean +
sd), and uniform. Regret = 1 − Σ p(click | chosen) / Σ p(click | best creative of the segment), per
day, mean over ``--reps`` worlds (each with its own creative seed). Clicks are the value here:
in the simulator the creative changes only the click, so this is the regret the harness reports
without fatigue. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from simulators.calibration import load_calibration
from simulators.creatives import build_appeal


def _posterior(clicks: np.ndarray, shows: np.ndarray, base: float, sd: float, mode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell Laplace posterior of ``a`` with prior N(0, sd²) and ``shows`` Bernoulli trials at
    ``sigmoid(base + a)`` of which ``clicks`` clicked (Newton from the last mode)."""
    a = mode.copy()
    for _ in range(20):
        p = 1.0 / (1.0 + np.exp(-(base + a)))
        grad = clicks - shows * p - a / sd ** 2
        hess = shows * p * (1 - p) + 1.0 / sd ** 2
        step = grad / hess
        a += step
        if np.abs(step).max() < 1e-8:
            break
    p = 1.0 / (1.0 + np.exp(-(base + a)))
    return a, 1.0 / np.sqrt(shows * p * (1 - p) + 1.0 / sd ** 2)


def run(appeal: np.ndarray, shares: np.ndarray, base: float, days: int, per_day: int, batch: int,
        rule: str, rng: np.random.Generator) -> list[float]:
    k, c = appeal.shape
    sd = float(appeal.std(axis=1).mean())
    p_true = 1.0 / (1.0 + np.exp(-(base + appeal)))
    best = p_true.max(axis=1)
    clicks, shows, mode = np.zeros((k, c)), np.zeros((k, c)), np.zeros((k, c))
    mean, post_sd = np.zeros((k, c)), np.full((k, c), sd)
    out = []
    for _ in range(days):
        got = want = 0.0
        for start in range(0, per_day, batch):
            n = min(batch, per_day - start)
            seg = rng.choice(k, size=n, p=shares)
            if rule == "uniform":
                choice = rng.integers(0, c, n)
            elif rule == "thompson":
                choice = (mean[seg] + post_sd[seg] * rng.standard_normal((n, c))).argmax(1)
            elif rule == "ucb":
                choice = (mean[seg] + post_sd[seg]).argmax(1)
            elif rule == "greedy":
                choice = (mean[seg] + 1e-9 * rng.standard_normal((n, c))).argmax(1)
            else:
                raise ValueError(rule)
            p = p_true[seg, choice]
            y = rng.random(n) < p
            got += p.sum()
            want += best[seg].sum()
            np.add.at(shows, (seg, choice), 1)
            np.add.at(clicks, (seg, choice), y)
            mean, post_sd = _posterior(clicks, shows, base, sd, mode)
            mode = mean
        out.append(1.0 - got / want)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--per-day", type=int, default=4_500, help="impressions won per day")
    ap.add_argument("--batch", type=int, default=1_024, help="impressions between posterior updates")
    ap.add_argument("--ctr", type=float, default=0.022, help="click-through rate of an average creative")
    ap.add_argument("--reps", type=int, default=5, help="worlds (creative seeds 7, 8, ...)")
    ap.add_argument("--rules", nargs="+", default=["thompson", "greedy", "ucb", "uniform"])
    args = ap.parse_args()
    cal = load_calibration()
    shares = np.array([s.share for s in cal.segments])
    shares /= shares.sum()
    base = float(np.log(args.ctr / (1 - args.ctr)))
    result: dict[str, object] = {"days": args.days, "per_day": args.per_day, "batch": args.batch, "ctr": args.ctr,
                                 "reps": args.reps}
    for rule in args.rules:
        per_day = []
        for r in range(args.reps):
            creatives = dataclasses.replace(cal.creatives, seed=cal.creatives.seed + r)
            appeal = build_appeal(dataclasses.replace(cal, creatives=creatives))
            per_day.append(run(appeal, shares, base, args.days, args.per_day, args.batch, rule,
                               np.random.default_rng(1000 * r + 17)))
        m = np.mean(per_day, axis=0)
        result[rule] = {"regret_by_day": [round(float(x), 3) for x in m],
                        "last_3_days": round(float(m[-3:].mean()), 3),
                        "days_3_to_5": round(float(m[2:5].mean()), 3) if args.days >= 5 else None}
        print(rule, json.dumps(result[rule]), file=sys.stderr, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
