"""The agent on untouched test worlds, run once at the end (issue 18's test discipline).

Validation seeds 0–4 are for choosing (``bench_agent_sim.py``); this script evaluates a trained
agent (``--checkpoint``: a ``gaelp train --out`` directory, e.g. ``bench_agent_sim``'s ``train/``)
on fresh test seeds (1000–1019 by default) of the default world and of perturbed calibrations
— another creative appeal matrix, other segment values, a weaker context signal, adaptive
competitors — with every policy, ablation and yardstick of ``gaelp evaluate``. Each world's
result is appended to ``bench/ledgers/agent-sim-test.jsonl`` with the code's commit and the
configuration's hash (``agent_service/lab/ledger.py``): a result is the first entry at its
commit and hash; later ones are repeats, never a better pick.

    .venv/bin/python bench/bench_agent_test.py --checkpoint DIR [--worlds default weak_context ...]

Last stdout line: one JSON object (per world: the agent's value, its share of the best
clairvoyant policy and of the upper bound, and its paired difference to dual pacing and to the
strongest ablation, with 95 % intervals).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_service.config import load_config
from agent_service.lab import ledger
from agent_service.lab.evaluate import EvalConfig, evaluate, load_trained, summary_table
from simulators.calibration import Calibration, load_calibration


def worlds() -> dict[str, Calibration]:
    """The default world and its perturbations (each changes one thing)."""
    cal = load_calibration()
    return {
        "default": cal,
        "creative_seed": dataclasses.replace(cal, creatives=dataclasses.replace(cal.creatives, seed=cal.creatives.seed + 1)),
        "segment_values": dataclasses.replace(cal, segments=tuple(
            dataclasses.replace(s, value_usd=s.value_usd * f) for s, f in zip(cal.segments, (1.4, 0.7, 1.2, 0.8),
                                                                              strict=False))),
        "weak_context": dataclasses.replace(cal, traffic=dataclasses.replace(cal.traffic, context_signal=0.45)),
        "adaptive_competitors": dataclasses.replace(cal, competitors=dataclasses.replace(cal.competitors,
                                                                                        adaptive=True)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a `gaelp train --out` directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1000, 1020)))
    ap.add_argument("--worlds", nargs="+", default=list(worlds()), choices=list(worlds()))
    ap.add_argument("--eval-days", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--ledger", type=Path, default=ROOT / "bench" / "ledgers" / "agent-sim-test.jsonl")
    args = ap.parse_args()
    if any(s < 1000 for s in args.seeds):
        ap.error("test seeds are 1000 and above (0-999 are for training and validation)")
    cfg = load_config(args.config)
    summary, ckpt, base, values = load_trained(args.checkpoint)
    ec = EvalConfig(seeds=tuple(args.seeds), days=args.eval_days, warmup=args.warmup,
                    budget_usd=summary["config"]["budget_usd"])
    out: dict[str, Any] = {"bench": "agent_sim_test", "seeds": args.seeds, "worlds": {}}
    for name in args.worlds:
        cal = worlds()[name]
        report = evaluate(cfg, ec, ckpt, base, values,
                          progress=lambda s, name=name: print(f"[{name}] {s}", file=sys.stderr, flush=True), cal=cal)
        print(f"== {name}\n{summary_table(report)}", file=sys.stderr)
        agent = report["policies"]["gaelp"]
        result = {"value_usd": agent["value"], "of_best_clairvoyant": agent["of_best_clairvoyant"],
                  "of_upper_bound": agent["of_upper_bound"], "creative_regret": agent["regret"],
                  "upper_bound_usd": report["upper_bound"], "best_clairvoyant_usd": report["best_clairvoyant"],
                  "vs_dual": report["paired_vs_gaelp"]["dual"],
                  "vs_strongest_ablation": report["strongest_ablation"],
                  "values_usd": {n: e["value"] for n, e in report["policies"].items()}}
        config = {"world": name, "calibration": dataclasses.asdict(cal), "eval": dataclasses.asdict(ec),
                  "agent": dataclasses.asdict(cfg.hybrid), "checkpoint_summary": summary.get("config")}
        entry = ledger.append(args.ledger, ROOT, config, result)
        out["worlds"][name] = {**result, "commit": entry["commit"], "config_hash": entry["config_hash"]}
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
