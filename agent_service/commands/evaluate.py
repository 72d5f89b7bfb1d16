"""``gaelp evaluate``: the trained agent vs every baseline vs the hindsight optimum, over seeds."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from agent_service.commands.flags import add_flags, add_out_and_config, config_from_args

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "evaluate the trained agent against the baselines and the hindsight optimum (table, plot, JSON)"

DESCRIPTION = """\
Run the trained agent (from `gaelp train --out DIR`), fixed bid, truthful expected value,
linear bidding, dual-variable pacing (Balseiro & Gur) and dual pacing with the
best-creative-per-segment oracle on fresh simulated worlds of each --seeds value (same people,
traffic, prices and luck for every policy), for --warmup + --days budget periods, and compare
the expected conversion value won over the last --days with the hindsight optimum (LP bound,
simulators.hindsight, myopic values) of the same days. Means over seeds with 95 % t-intervals,
and the paired difference agent - baseline with its interval.

Writes evaluation.json, evaluation.txt (the table) and evaluation.png into --out and prints the
table, then one JSON object (the headline numbers) as the last stdout line.

example:
  gaelp evaluate --checkpoint runs/train --seeds 0 1 2 3 4 --days 3 --out runs/eval
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="directory of `gaelp train` (agent.pt, baselines.json); none: an untrained agent")
    add_flags(p, "evaluate", ["seeds", "days", "warmup", "budget_usd", "persons", "opportunities_per_day",
                              "agent_learns"], rename={"budget_usd": "budget"})
    add_out_and_config(p, "runs/eval")
    p.add_argument("--quiet", action="store_true", help="no per-run progress lines")


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from agent_service.errors import ConfigError
    from agent_service.lab.evaluate import evaluate, summary_table, write

    cfg = config_from_args(args)
    ec = cfg.evaluate
    ckpt, base, values, budget = None, {}, None, None
    if args.checkpoint is not None:
        if not (args.checkpoint / "agent.pt").exists():
            raise ConfigError("--checkpoint", f"{args.checkpoint} has no agent.pt (run `gaelp train --out DIR`)")
        ckpt = torch.load(args.checkpoint / "agent.pt", weights_only=False)
        if (args.checkpoint / "baselines.json").exists():
            base = json.loads((args.checkpoint / "baselines.json").read_text())
            values = torch.load(args.checkpoint / "baseline_values.pt", weights_only=False)
        summary = args.checkpoint / "summary.json"
        if summary.exists():
            trained = json.loads(summary.read_text())["config"]
            budget = trained["budget_usd"]
            if trained["seed"] in ec.seeds:
                raise ConfigError("evaluate.seeds", f"seed {trained['seed']} is the training seed: evaluate on others")
    if ec.budget_usd is None and budget is not None:  # the training run's budget
        ec = replace(ec, budget_usd=budget)
    report = evaluate(cfg, ec, ckpt, base, values,
                      progress=None if args.quiet else (lambda s: print(s, file=sys.stderr)))
    write(report, args.out)
    print(summary_table(report))
    pol = report["policies"]
    head = {name: {k: e[k] for k in ("value", "of_best_clairvoyant", "of_upper_bound", "regret")}
            for name, e in pol.items()}
    print(json.dumps({"upper_bound_usd": report["upper_bound"]["mean"],
                      "best_clairvoyant_usd": report["best_clairvoyant"]["mean"],
                      "values_usd": {name: e["value"]["mean"] for name, e in pol.items()},
                      "upper_bound": report["upper_bound"], "best_clairvoyant": report["best_clairvoyant"],
                      "myopic_lp": report["myopic_lp"], "policies": head,
                      "paired_vs_gaelp": report["paired_vs_gaelp"],
                      "strongest_ablation": report["strongest_ablation"]}))
    return 0
