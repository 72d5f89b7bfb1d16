"""``gaelp train``: train the hybrid agent on the simulator (progress bar, checkpoints, curves, summary)."""

from __future__ import annotations

import argparse

from agent_service.commands.flags import add_flags, add_out_and_config, config_from_args

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "train the hybrid agent on the simulated world (checkpoints, learning curves, JSON summary)"

DESCRIPTION = """\
Train the hybrid agent (LSTM journey encoder, PPO creative x channel x target policy with a
critic and click model, double-DQN bid multiplier, delay-aware conversion model) online in the
simulated world of the training seed, one budget period (day) after another: it decides every
opportunity, sees auctions and clicks at once and conversions days later, updates every
[hybrid].update_every decisions and serves each new version.

Writes into --out:
  agent.pt                the final checkpoint (weights, optimisers, statistics, pacing state, the
                          conversion model's labelled clicks)
  checkpoints/dayNNNN.pt  a checkpoint every --checkpoint-every days
  learning_curve.png      value won, creative regret, spend and realised conversions per day
  learner_stats.png       PPO losses, entropy, KL, DQN TD loss per update
  baselines.json, baseline_values.pt
                          the reference policies' parameter (fixed CPM, linear b0, dual step)
                          chosen on the training world, and their warmed value model
  summary.json            wall time, decisions and transitions trained per second, per-day
                          figures, per-update statistics
By default 16 env runners on Ray (a local Ray, or a cluster with --ray-address) each run a
shard of the world — 1/16 of its people, traffic and budget — with a copy of the agent that
learns online; as often as one learner on the whole market would update (or every --sync-slots
budget slots) and at every day's end they meet: each updates on its share of the batch, the
weights are averaged, the campaign statistics each counted are pooled, and every runner
continues from there (lab/parallel.py). --runners 0 trains in this one process without Ray.
The single-process run stops after the day in which --max-minutes passes. Evaluate with `gaelp evaluate
--checkpoint DIR` on other seeds.

example:
  gaelp train --days 60 --seed 100 --out runs/train
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, "train", ["days", "seed", "budget_usd", "persons", "opportunities_per_day", "checkpoint_every",
                           "max_minutes", "baseline_days", "runners", "sync_slots", "calibration"],
              rename={"budget_usd": "budget"})
    add_flags(p, "learner", ["ray_address"])
    add_out_and_config(p, "runs/train")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent_service.lab.train import train
    from simulators.calibration import load_calibration

    cfg = config_from_args(args)
    tc = cfg.train
    if tc.calibration:
        load_calibration(tc.calibration)  # a bad file fails here, naming the key, before any training
    bar = tqdm(total=tc.days, desc="training", unit="day", disable=args.no_progress)

    def progress(day: int, info: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(version=int(info["version"]), z=f"{info['z']:.2f}")

    summary = train(cfg, tc, args.out, progress=progress)
    bar.close()
    last = summary["last_days"]
    ray = f", {summary['runners']} runners on Ray (start-up {summary['ray_start_seconds']:.1f}s apart)" \
        if summary["runners"] else ""
    print(f"trained {summary['days_trained']} days in {summary['wall_seconds']:.0f}s{ray} "
          f"({summary['decisions_per_second']:.0f} decisions/s, "
          f"{summary['transitions_trained_per_second']:.0f} transitions trained/s, "
          f"{summary['policy_updates']} updates, {summary['rejected_updates']} rejected)")
    print(f"last days: value ${last['expected_value_usd']:.1f}/day, creative regret {last['creative_regret']:.1%}, "
          f"spend ${last['spend_usd']:.2f}/day")
    print(f"wrote {args.out}/agent.pt, summary.json, {', '.join(summary['plots'])}")
    return 0
