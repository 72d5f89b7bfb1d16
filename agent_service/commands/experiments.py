"""``gaelp experiments``: the creative experiments configured, their status and their current estimates."""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_service.config.experiments import ExperimentConfig, load_experiments
from agent_service.experiments.ab import ArmReport, Experiment, ExperimentSummary

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "list_experiments", "run"]

HELP = "list the creative A/B experiments: status, arms, allocation and current per-arm estimates"
DESCRIPTION = """\
Lists the experiments of the config's [[experiments]] tables: status by start/stop against
--now (scheduled, running, stopped), arms with their creatives and allocation share.

With --warehouse (a DuckDB file whose experiment_arms table holds per-arm sums, written by the
warehouse sink of `gaelp serve` / `gaelp simulate` while they run the experiments; see
agent_service/pipeline/experiments.py and agent_service/warehouse/experiment_arms.py) each arm also shows its exposures, persons observed,
conversion value per dollar and, for each challenger, the lift over the control with its
always-valid interval (mSPRT confidence sequence at alpha / (arms - 1)) and the test's decision
on those totals now (promote / hold / rollback, decided only while the experiment runs; an
experiment whose challengers are all decided is "decided"). Guardrails are not judged here: the
table carries no request counts.

Human-readable by default; --json prints one JSON object.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML with [[experiments]] (and optionally [canary] and the other sections)")
    p.add_argument("--warehouse", type=Path, default=None, metavar="FILE.duckdb",
                   help="DuckDB warehouse with the experiment_arms table (per-arm results)")
    p.add_argument("--now", type=int, default=None, metavar="MS", help="evaluation time, ms since the epoch "
                   "(default: now)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def _configured(path: Path | None) -> tuple[ExperimentConfig, ...]:
    """The experiments of a config file; its other sections are checked as ``gaelp`` config."""
    from agent_service.config import GaelpConfig
    from agent_service.typed_mapping import from_mapping, read_toml

    if path is None:
        return ()
    data = read_toml(path, "--config")
    ours: dict[str, Any] = {k: data.pop(k) for k in ("canary", "experiments") if k in data}
    from_mapping(GaelpConfig, data)  # a typo in another section is still an error
    return load_experiments(ours).experiments


def list_experiments(configs: tuple[ExperimentConfig, ...], now_ms: int,
                     warehouse: Path | None = None) -> tuple[list[ExperimentSummary], list[str]]:
    """Each configured experiment's summary at ``now_ms``, and notes about results that match no config.

    :param configs: the experiments.
    :param now_ms: evaluation time (event time, ms).
    :param warehouse: a DuckDB file with per-arm results, or None for status and allocation only.
    """
    from agent_service.warehouse.experiment_arms import read_arm_totals

    totals = read_arm_totals(warehouse) if warehouse is not None else {}
    notes = [f"experiment '{e}' has results in the warehouse but is not configured"
             for e in sorted(totals.keys() - {c.id for c in configs})]
    out = []
    for cfg in configs:
        exp = Experiment(cfg)
        arms = totals.get(cfg.id, {})
        for i, arm in enumerate(cfg.arms):
            if arm.name in arms:
                exp.stats[i] = arms[arm.name].stats
                exp.exposed[i] = arms[arm.name].exposed
        known = {a.name for a in cfg.arms}
        notes += [f"experiment '{cfg.id}': arm '{a}' in the warehouse is not configured; ignored"
                  for a in sorted(arms.keys() - known)]
        out.append(exp.evaluate(now_ms))
    return out, notes


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _num(x: float, fmt: str) -> str:
    return format(x, fmt) if math.isfinite(x) else "-"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _arm_json(a: ArmReport, cfg: ExperimentConfig, with_results: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": a.name, "share": a.share,
                           "creatives": list(next(c.creatives for c in cfg.arms if c.name == a.name))}
    if with_results:
        out.update(exposed=a.exposed, persons=a.persons, converting=a.conversions, value_usd=a.value,
                   spend_usd=a.spend, value_per_dollar=_finite(a.value_per_dollar), decision=a.decision)
        if a.decision != "control":
            known = math.isfinite(a.lift)  # else the interval is the whole (-100 %, inf): no data yet
            out.update(lift=_finite(a.lift), lower=_finite(a.lower) if known else None,
                       upper=_finite(a.upper) if known else None, reason=a.reason)
    return out


def _table(summaries: list[ExperimentSummary], configs: dict[str, ExperimentConfig], with_results: bool) -> str:
    lines = []
    for s in summaries:
        cfg = configs[s.id]
        level = cfg.test.alpha / (len(cfg.arms) - 1)
        head = f"{s.id}  {s.status}  {_iso(cfg.start_ms)} -> {_iso(cfg.stop_ms)} UTC"
        if with_results:
            head += f"  winner: {s.winner or '-'}  (interval: always-valid, alpha {level:g} per challenger)"
        lines.append(head)
        cols = ["arm", "share", "creatives"]
        if with_results:
            cols += ["exposed", "persons", "converting", "value/$", "lift", "interval", "decision"]
        rows = [cols]
        for a in s.arms:
            creatives = ",".join(next(c.creatives for c in cfg.arms if c.name == a.name))
            row = [a.name, f"{a.share:.1%}", creatives]
            if with_results:
                ctrl = a.decision == "control"
                row += [str(a.exposed), str(a.persons), str(a.conversions), _num(a.value_per_dollar, ".3f"),
                        "-" if ctrl else _num(a.lift, "+.1%"),
                        "-" if ctrl or not math.isfinite(a.lift) else f"[{a.lower:+.1%}, {_num(a.upper, '+.1%')}]",
                        a.decision]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.append("")
    return "\n".join(lines).rstrip()


def run(args: argparse.Namespace) -> int:
    configs = _configured(args.config)
    now_ms = args.now if args.now is not None else int(time.time() * 1000)
    summaries, notes = list_experiments(configs, now_ms, args.warehouse)
    with_results = args.warehouse is not None
    by_id = {c.id: c for c in configs}
    if args.json:
        print(json.dumps({
            "now_ms": now_ms, "warehouse": str(args.warehouse) if with_results else None, "notes": notes,
            "experiments": [{"id": s.id, "status": str(s.status), "start_ms": by_id[s.id].start_ms,
                             "stop_ms": by_id[s.id].stop_ms, "winner": s.winner if with_results else None,
                             "arms": [_arm_json(a, by_id[s.id], with_results) for a in s.arms]}
                            for s in summaries]}))
        return 0
    if not summaries:
        print("no experiments configured ([[experiments]] in the --config file)")
    else:
        print(_table(summaries, by_id, with_results))
    for note in notes:
        print(f"note: {note}")
    return 0
