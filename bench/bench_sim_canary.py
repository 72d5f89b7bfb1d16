"""Simulated canaries end to end: `gaelp simulate` with a canary (runtime/sim_canary.py) on a few seeds and
candidates, and what the controller decided — rolled back, promoted, held or still running — when, and why.

Candidates: ``overbid:3`` (the live first version bidding 3x: should be rolled back), ``live`` with the learner
frozen (``[hybrid] update_every`` above the run's decisions: a true A/A, should not be rolled back), ``live``
with the learner on (the frozen start against the learning live policy), ``seed:<seed + 1>`` (another seed's
untrained policy). Share 50 %, the default [canary] test and guardrails.

Last stdout line: one JSON object. Usage: ``python bench/bench_sim_canary.py [--seeds 0 1 2 3 4] [--days 1]``.
Validation seeds only (< 1000).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time

from agent_service.config import GaelpConfig
from agent_service.runtime.simulate import run_simulation

CANDIDATES = ("overbid:3", "live frozen", "live", "seed+1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--opportunities", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--drain-days", type=float, default=0.0)
    ap.add_argument("--share", type=float, default=0.5)
    args = ap.parse_args()
    assert all(s < 1000 for s in args.seeds), "validation seeds only"
    base = GaelpConfig().replace("simulation", days=args.days, opportunities_per_day=args.opportunities,
                                 users=args.users, drain_days=args.drain_days)
    base = dataclasses.replace(base, canary=dataclasses.replace(base.canary, share=args.share))
    rows = []
    for seed in args.seeds:
        for name in CANDIDATES:
            cfg = base.replace("simulation", seed=seed,
                               canary_candidate=name.split()[0].replace("seed+1", f"seed:{seed + 1}"))
            if name == "live frozen":
                cfg = cfg.replace("hybrid", update_every=10**9)
            t0 = time.perf_counter()
            run = asyncio.run(run_simulation(cfg, None, progress=False, warehouse=False))
            c = run.canary
            ctl, cand = c["arms"]["control"], c["arms"]["candidate"]
            row = {"seed": seed, "candidate": name, "state": c["final"]["state"], "hours": c["final"]["hours"],
                   "reason": c["final"]["reason"],
                   "spend_per_request": [round(a["spend_usd"] / a["requests"], 6) if a["requests"] else None
                                         for a in (ctl, cand)],
                   "requests": [ctl["requests"], cand["requests"]],
                   "converting_persons": [ctl["converting_persons"], cand["converting_persons"]],
                   "wall_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {name: {"rolled_back": sum(r["state"] == "rolled_back" for r in rows if r["candidate"] == name),
                      "runs": sum(r["candidate"] == name for r in rows)} for name in CANDIDATES}
    print(json.dumps({"args": vars(args), "summary": summary}))


if __name__ == "__main__":
    main()
