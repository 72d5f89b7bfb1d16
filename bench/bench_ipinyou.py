"""iPinYou campaign 2997 replay (BENCHMARKS.md §1): every policy at every c0, in one run.

Policies: const and lin (tuned on synthetic episodes from info.json only), lin-oracle (b0
tuned on the test log's own clicks - an upper bound, labelled as such), rlb (Cai et al.'s DP)
and agent (GAELP's learned bid multiplier; trained agents are cached under --cache, pass
--retrain to train from scratch). Prints a table, the agent's paired difference to RLB with a
95% bootstrap interval over episodes, and as the LAST line one JSON object with every number,
the published references and the timings.

The agent learns from won auctions only (``--feedback won``, the default: a lost auction reveals
neither the click nor the price, only that the price was above the bid); ``--feedback full`` is
a reference that no real bidder has. Every run on the test log (recognised by its bytes) is
appended to ``bench/ledgers/ipinyou-2997.jsonl`` with the commit and the configuration's hash
(``agent_service/lab/ledger.py``): the test log is never used to choose anything, and the ledger
shows every run on it.

Designs are chosen on the validation split of the training log (``--log`` with the published
code's ``2997.validation.txt``, bench/README.md says where to get it); runs on it are not ledgered.

    .venv/bin/python bench/bench_ipinyou.py [--data DIR] [--log FILE] [--seed 0] [--retrain] [--feedback won]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_service.lab.ipinyou.config import AgentConfig
from agent_service.lab.ipinyou.runner import (
    LEDGER,
    POLICIES,
    TableCache,
    format_table,
    paired_bootstrap,
    record_test_run,
    run_policy,
)
from simulators.ipinyou.config import C0_VALUES, PUBLISHED_2997, default_data_dir
from simulators.ipinyou.data import load_info, load_log

_KEEP = ("clicks", "cost", "impressions", "win_rate", "cpm", "ecpc", "budget", "seconds")
_AGENT_KEEP = ("train_seconds", "train_transitions", "train_transitions_per_s", "from_cache", "z0_offline",
               "dqn_gate_offline", "dqn_served_offline", "online_seconds", "online_refit_seconds",
               "online_refit_transitions_per_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(default_data_dir()), help="folder with test.theta.txt and info.json")
    parser.add_argument("--log", default=None,
                        help="the log to replay (default: DATA/test.theta.txt; the validation split for choosing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic episodes and the DQN")
    parser.add_argument("--feedback", choices=("full", "won"), default="won",
                        help="what the agent learns after an auction (default won; full is a reference)")
    parser.add_argument("--cache", default=str(ROOT / "runs" / "ipinyou"), help="trained-agent cache")
    parser.add_argument("--retrain", action="store_true", help="train the agent from scratch")
    parser.add_argument("--c0", type=float, nargs="*", default=list(C0_VALUES), help="budget ratios")
    parser.add_argument("--policies", nargs="*", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--extra-seeds", type=int, nargs="*", default=[1, 2, 3, 4],
                        help="more agent seeds at c0=1/32 (all are reported, with the median)")
    parser.add_argument("--no-won-check", action="store_true",
                        help="skip the reference run of the agent at c0=1/32 with the other feedback mode")
    parser.add_argument("--ledger", default=str(ROOT / LEDGER), help="where every run on the test log is appended")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    log_path = Path(args.log) if args.log else Path(args.data) / "test.theta.txt"
    log, info = load_log(log_path), load_info(args.data)
    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {p: {} for p in args.policies}
    vs_rlb: dict[str, Any] = {}
    training: dict[str, Any] = {}
    dp_seconds: dict[str, float] = {}
    for c0 in args.c0:
        tables = TableCache()
        by_policy: dict[str, dict[str, Any]] = {}
        for policy in args.policies:
            r = run_policy(policy, log, info, c0, seed=args.seed, feedback=args.feedback,
                           cache_dir=Path(args.cache), retrain=args.retrain, tables=tables)
            by_policy[policy] = r
            rows.append(r)
            entry = {k: r[k] for k in _KEEP}
            if policy == "lin-oracle":
                entry["label"] = "ORACLE (b0 tuned on test clicks): upper bound, not a result"
                entry["b0"] = r["b0"]
                entry["integer_grid_clicks"] = r["integer_grid_clicks"]
            if policy in ("lin", "const"):
                entry["b0" if policy == "lin" else "bid"] = r["b0" if policy == "lin" else "bid"]
            results[policy][f"{c0:g}"] = entry
            if policy == "agent":
                training[f"{c0:g}"] = {k: r[k] for k in _AGENT_KEEP}
            print(f"  done {policy:<10} c0={c0:<8g} clicks={r['clicks']:<4} ({r['seconds']:.1f}s)",
                  file=sys.stderr, flush=True)
        dp_seconds[f"{c0:g}"] = round(tables.seconds, 2)
        if "agent" in by_policy and "rlb" in by_policy:
            vs_rlb[f"{c0:g}"] = paired_bootstrap(by_policy["agent"]["episode_clicks"],
                                                 by_policy["rlb"]["episode_clicks"], seed=args.seed)
        tables.drop()

    seeds: dict[str, Any] = {}
    if "agent" in args.policies and args.extra_seeds:
        tables = TableCache()
        clicks = {args.seed: results["agent"].get(f"{1 / 32:g}", {}).get("clicks")}
        extra_rows = []
        for seed in args.extra_seeds:
            r = run_policy("agent", log, info, 1 / 32, seed=seed, feedback=args.feedback,
                           cache_dir=Path(args.cache), retrain=args.retrain, tables=tables)
            r["policy"] = f"agent s{seed}"
            extra_rows.append(r)
            clicks[seed] = r["clicks"]
        if not args.no_won_check:
            other = "full" if args.feedback == "won" else "won"
            r = run_policy("agent", log, info, 1 / 32, seed=args.seed, feedback=other,
                           cache_dir=Path(args.cache), retrain=args.retrain, tables=tables)
            r["policy"] = f"agent {other}"
            extra_rows.append(r)
            seeds[f"{other}_feedback_clicks"] = r["clicks"]
        rows.extend(extra_rows)
        known = [c for c in clicks.values() if c is not None]
        seeds.update({"c0": 1 / 32, "clicks_by_seed": {str(k): v for k, v in clicks.items()},
                      "median": float(statistics.median(known)) if known else None})
        tables.drop()

    print(format_table(rows))
    print("\npublished on 2997 at c0=1/32 (clicks / cost): " + ", ".join(
        f"{k.upper()} {v['clicks']} / {v['cost']}" for k, v in PUBLISHED_2997.items()))
    for c0, d in vs_rlb.items():
        print(f"agent - rlb at c0={c0}: {d['diff']:+.0f} clicks (95% paired bootstrap over episodes "
              f"{d['lo']:+.0f} .. {d['hi']:+.0f})")
    if seeds:
        print(f"agent at c0=1/32 by seed ({args.feedback} feedback): {seeds['clicks_by_seed']} (median "
              f"{seeds['median']}); reference with the other feedback: "
              f"{seeds.get('full_feedback_clicks', seeds.get('won_feedback_clicks'))}")
    for c0, t in training.items():
        print(f"agent training c0={c0}: {t['train_seconds']:.1f}s, {t['train_transitions']} transitions, "
              f"{t['train_transitions_per_s']:.0f} transitions/s (cached: {t['from_cache']}); online "
              f"{t['online_seconds']:.1f}s incl. refits {t['online_refit_seconds']:.1f}s")
    out = {
        "bench": "ipinyou-2997",
        "protocol": {"episode_length": 1000, "max_bid": 300, "budget": "int(CPM_train * c0 * N)",
                     "agent_feedback": args.feedback, "seed": args.seed},
        "results": results,
        "published_c0_1_32": PUBLISHED_2997,
        "agent_minus_rlb": vs_rlb,
        "agent_seeds_c0_1_32": seeds,
        "agent_training": training,
        "timings": {"dp_seconds": dp_seconds, "total_seconds": round(time.perf_counter() - t_start, 1)},
    }
    config = {**out["protocol"], "c0": args.c0, "policies": args.policies, "extra_seeds": args.extra_seeds,
              "retrain": args.retrain, "data": Path(args.data).name, "log": log_path.name,
              "agent_config": dataclasses.asdict(AgentConfig())}
    out["config"] = config
    entry = record_test_run(log_path, ROOT, config, {
        "clicks": {p: {c: r["clicks"] for c, r in by_c0.items()} for p, by_c0 in results.items()},
        "agent_seeds_c0_1_32": seeds}, Path(args.ledger))
    out["ledger"] = None if entry is None else {
        "file": str(Path(args.ledger).relative_to(ROOT)) if Path(args.ledger).is_relative_to(ROOT) else args.ledger,
        "commit": entry["commit"], "config_hash": entry["config_hash"]}
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
