"""``gaelp simulate``: run a simulated campaign end to end on the embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agent_service.commands.flags import add_flags

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
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, "simulation", ["days", "seed", "opportunities_per_day", "drain_days", "world", "calibration"])
    p.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory (default runs/latest)")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-warehouse", action="store_true", help="do not write DIR/warehouse.duckdb")


def run(args: argparse.Namespace) -> int:
    from agent_service.commands.flags import apply_flags
    from agent_service.config import load_config
    from agent_service.runtime.report import build_report, summary_text
    from agent_service.runtime.simulate import run_simulation

    cfg = apply_flags(load_config(args.config), args)
    result = asyncio.run(run_simulation(cfg, args.out, progress=not args.no_progress,
                                        warehouse=not args.no_warehouse))
    print(summary_text(build_report(result), args.out, result.wall_seconds))
    return 0
