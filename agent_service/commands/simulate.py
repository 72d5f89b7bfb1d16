"""``gaelp simulate``: run a simulated campaign end to end on the embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_service.config import SimulationConfig

from agent_service.commands.flags import add_flags, add_out_and_config, config_from_args
from agent_service.commands.promote import parse_share

HELP = "run a simulated campaign end to end (no services needed)"
DESCRIPTION = """\
Run a simulated campaign end to end in one process, on the embedded defaults (in-process
event bus and state store, in-process learner): simulated people see ads chosen by the agent,
auctions are run, clicks happen and conversions arrive 3-14 days later in event time; the
agent learns online and its new versions are hot-swapped into the decision path.

Writes DIR/report.json (budget, spend, impressions, clicks, conversions, conversion value,
model versions, per-day figures, learning curve, identity resolution scored against the
simulator's truth) and two plots, learning_curve.png and spend_vs_plan.png. The same seed
gives the same report. DIR/warehouse.duckdb holds the decisions, events, attributions and
experience tables (query them with DuckDB, e.g. `duckdb DIR/warehouse.duckdb`).

--model DIR starts the agent from a trained one (`gaelp train --out DIR`; its agent.pt) instead of
fresh weights; it keeps learning online. Set [creatives] capacity to the checkpoint's creative
slots (60 for the default world: `gaelp train` sizes the policy to the world's creatives).

--canary 5% runs a canary in the run, as `gaelp promote` runs one on the service: the candidate
(--canary-candidate: seed:N another seed's initial policy, default seed:<seed + 1>; live the live
policy's first version, frozen; overbid:X that version bidding X times higher) decides live for a
hashed 5% of persons, and the controller steps every slot in event time with [canary]'s test,
guardrails and ramp: ramp, promote or roll back. Its steps go to DIR/canary.jsonl, report.json
(canary: timeline, final decision, each arm's value per dollar with its interval) and the summary.

--calibration FILE runs the world of another calibration (e.g. one `gaelp discover` wrote).
--ga4-export DIR runs no campaign: it writes --days of the world's traffic, shown by a blind
exploration policy (uniform channel and creative, bids that always win), as a GA4 BigQuery export
(simulators/ga4_export.py says what is recorded: sessions per impression, clicks as engaged
sessions, purchases with value; no ground truth), for the discovery round trip:
  gaelp simulate --days 28 --seed 1 --ga4-export runs/ga4
  gaelp ingest ga4 runs/ga4 --warehouse runs/ga4.duckdb
  gaelp discover --warehouse runs/ga4.duckdb --out runs/discovered.toml
  gaelp simulate --calibration runs/discovered.toml --out runs/rediscovered
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, "simulation", ["days", "seed", "opportunities_per_day", "users", "drain_days", "world", "calibration",
                                  "model", "canary_candidate"])
    add_flags(p, "canary", ["share"], rename={"share": "canary"}, types={"share": parse_share})
    add_out_and_config(p, "runs/latest")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-warehouse", action="store_true", help="do not write DIR/warehouse.duckdb")
    p.add_argument("--ga4-export", type=Path, default=None, metavar="DIR",
                   help="instead of a campaign, write the world's traffic under a blind exploration policy as a "
                        "GA4 export (DIR/events_YYYYMMDD.json) for `gaelp ingest ga4` and `gaelp discover`")


def run(args: argparse.Namespace) -> int:
    from agent_service.runtime.report import build_report, summary_text
    from agent_service.runtime.simulate import run_simulation

    cfg = config_from_args(args)
    if getattr(args, "canary.share") is not None and not cfg.simulation.canary_candidate:
        cfg = cfg.replace("simulation", canary_candidate=f"seed:{cfg.simulation.seed + 1}")
    if args.ga4_export is not None:
        return _ga4_export(cfg.simulation, args.ga4_export)
    result = asyncio.run(run_simulation(cfg, args.out, progress=not args.no_progress,
                                        warehouse=not args.no_warehouse))
    print(summary_text(build_report(result), args.out, result.wall_seconds))
    return 0


def _ga4_export(sim: SimulationConfig, out: Path) -> int:
    import json

    from simulators.calibration import load_calibration
    from simulators.ga4_export import export_world

    cal = load_calibration(sim.calibration or None)
    s = export_world(cal, out, sim.users, sim.opportunities_per_day, sim.days, sim.seed)
    print(f"wrote {len(s.files)} GA4 export files to {out}: {s.events} events, {s.sessions} sessions, {s.clicks} clicks, "
          f"{s.conversions} purchases ({s.censored_conversions} after the export's end, not written) "
          f"in {s.seconds:.1f} s")
    print(json.dumps(s.to_json_obj()))
    return 0
