"""``gaelp ope``: off-policy evaluation of a candidate model version from the warehouse's decision log."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from agent_service.config import JoinConfig
from agent_service.units import DAY_MS

HELP = "estimate a candidate version's value from the logged live decisions (IPS, SNIPS, DR, Switch-DR)"
DESCRIPTION = """\
Off-policy evaluation over the bid-multiplier dimension, read from a DuckDB warehouse
(the `decisions` and `experience` tables the warehouse sink writes).

Live decisions (shadow = false) are the log: the action is the bid multiplier index, the
propensity the multiplier's own probability (`--propensity slot`: the state's
slot_action_prob column) or the joint action's (`--propensity joint`). The candidate is
the version whose shadow decisions (shadow = true) were made on the same requests and
impressions: its sampled multiplier stands in for its distribution (one draw of pi_e given
x is an unbiased estimate of it, so IPS and DR stay unbiased; exact when the candidate is
greedy). Rewards are the final experience records of closed 14-day windows
(`--rewards closed`) or, for open windows, what was realised plus the delay model's pending
estimate (`--rewards delay-corrected`); a live decision whose window closed with no
experience (a lost auction, a no-bid) earns 0. Records without a propensity, with one
outside (0, 1], from a version not in --known-versions / --registry, or with a multiplier
outside --multipliers are refused and counted.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True, type=Path, metavar="WAREHOUSE", help="DuckDB warehouse file")
    p.add_argument("--candidate", required=True, type=int, metavar="VERSION", help="candidate model version")
    p.add_argument("--known-versions", default=None, metavar="V,V,...",
                   help="versions whose logged propensities are trusted")
    p.add_argument("--registry", default=None, type=Path, metavar="DIR",
                   help="a file model registry: its versions are the known versions")
    p.add_argument("--multipliers", type=int, default=8, help="size of the multiplier grid (agent.dqn.n_actions)")
    p.add_argument("--propensity", choices=("slot", "joint"), default="slot",
                   help="the multiplier's own probability (state column) or the joint action's")
    p.add_argument("--rewards", choices=("closed", "delay-corrected"), default="closed")
    p.add_argument("--as-of", type=int, default=None, metavar="MS", help="evaluation time, ms since the epoch "
                   "(default: now)")
    p.add_argument("--window-days", type=float, default=JoinConfig.window_days)
    p.add_argument("--ci", choices=("bootstrap", "normal", "bernstein"), default="bootstrap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file (the agent's state layout)")
    p.add_argument("--creatives", type=int, default=None,
                   help="creative slots of the logged policy (default [creatives] capacity): the state layout")


def _known_versions(args: argparse.Namespace) -> set[int]:
    from agent_service.errors import ConfigError

    if args.known_versions:
        return {int(v) for v in str(args.known_versions).split(",") if v.strip()}
    if args.registry is not None:
        from agent_service.adapters.registry import FileRegistry

        return set(FileRegistry(args.registry).versions())
    raise ConfigError("--known-versions", "name the trusted model versions (or --registry DIR): records from "
                      "unknown versions are refused, so OPE needs to know which are known")


def read_log(path: Path, candidate: int) -> tuple[list[tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    """Live decisions joined with the candidate's shadow multiplier, and each decision's outcome.

    :returns: rows (decision_id, event_time, propensity, model_version, multiplier, state JSON,
        candidate multiplier or None) and, by decision id, (final reward or None, final time,
        realised so far, pending estimate).
    """
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        decisions = con.execute(
            """SELECT l.decision_id, l.event_time, l.propensity, l.model_version,
                      CAST(json_extract(l.action, '$.multiplier') AS BIGINT), CAST(l.state AS VARCHAR),
                      CAST(json_extract(s.action, '$.multiplier') AS BIGINT)
               FROM decisions l LEFT JOIN decisions s
                 ON s.shadow AND s.model_version = ? AND s.request_id = l.request_id
                AND json_extract_string(s.action, '$.imp_id') = json_extract_string(l.action, '$.imp_id')
               WHERE NOT coalesce(l.shadow, false) ORDER BY l.event_time""", [candidate]).fetchall()
        outcomes = con.execute(
            """SELECT decision_id,
                      max(CASE WHEN final THEN reward END), max(CASE WHEN final THEN event_time END),
                      sum(CASE WHEN NOT final THEN coalesce(r_immediate, 0) + coalesce(r_attribution, 0)
                                                  + coalesce(r_diversity, 0) ELSE 0 END),
                      sum(CASE WHEN NOT final THEN coalesce(r_delayed, 0) ELSE 0 END)
               FROM experience GROUP BY decision_id""").fetchall()
    finally:
        con.close()
    return decisions, {row[0]: row[1:] for row in outcomes}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from agent_service.agent.serving.hybrid import spec_of
    from agent_service.config import load_config
    from agent_service.evaluation.ope_log import (
        JoinedOutcome,
        LoggedDecision,
        RewardMode,
        build_feedback,
        evaluate,
    )

    cfg = load_config(args.config)
    spec = spec_of(cfg.hybrid, args.creatives or cfg.creatives.capacity)
    slot_col = spec.index["slot_action_prob"]
    known = _known_versions(args)
    window_ms = int(args.window_days * DAY_MS)
    as_of = args.as_of if args.as_of is not None else int(time.time() * 1000)
    rows, outs = read_log(args.log, args.candidate)
    decisions, shadow = [], {}
    for did, t, prop, version, mult, state, cand in rows:
        if args.propensity == "slot":
            values = json.loads(state) if state else []
            # the multiplier's own probability, a log column of the state; another layout: no propensity
            prop = float(values[slot_col]) if len(values) == spec.logged_dim else None
        decisions.append(LoggedDecision(did, int(t), -1 if mult is None else int(mult), prop, version))
        shadow[did] = cand
    unpaired = sum(1 for d in decisions if shadow[d.decision_id] is None)
    decisions = [d for d in decisions if shadow[d.decision_id] is not None]
    outcomes = {}
    for d in decisions:
        o = outs.get(d.decision_id)
        if o is None:
            continue
        final_reward, final_time, realised, pending = o
        closes = int(final_time) if final_time is not None else d.event_time_ms + window_ms
        outcomes[d.decision_id] = JoinedOutcome(d.decision_id, float(final_reward if final_reward is not None
                                                                     else realised or 0.0),
                                                final_reward is not None, closes, float(pending or 0.0))
    mode: RewardMode = "closed_windows" if args.rewards == "closed" else "delay_corrected"
    fb = build_feedback(decisions, outcomes, known_versions=known, as_of_ms=as_of, n_actions=args.multipliers,
                        mode=mode, window_ms=window_ms, no_outcome_reward=0.0)
    cand = np.array([shadow[d] for d in fb.decision_ids], dtype=np.intp)
    if cand.size and (cand.min() < 0 or cand.max() >= args.multipliers):
        from agent_service.errors import DecodeError

        raise DecodeError("decisions.action.multiplier", f"candidate v{args.candidate}'s shadow multipliers fall "
                          f"outside 0..{args.multipliers - 1} (--multipliers)")
    dist = np.eye(args.multipliers)[cand] if cand.size else np.zeros((0, args.multipliers))
    report = evaluate(fb, dist, candidate=str(args.candidate), n_cells=1, ci=args.ci, seed=args.seed)
    notes = [*report.notes, f"{unpaired} live decisions without a shadow decision of version {args.candidate} "
             "were left out", "decisions within one budget slot share the multiplier draw: the interval treats "
             "them as independent"]
    if args.json:
        print(json.dumps({**report.to_dict(), "notes": notes}))
        return 0
    print(f"candidate v{args.candidate}: {fb.report.summary()}")
    for name, e in report.estimates.items():
        flag = "  POOR SUPPORT: " + "; ".join(e.warnings) if e.poor_support else ""
        print(f"  {name:9s} {e.value:.6g}  [{e.ci_low:.6g}, {e.ci_high:.6g}]  ESS {e.ess:.0f}/{e.n}{flag}")
    if report.estimates:
        print(f"  interval: {next(iter(report.estimates.values())).ci_method}")
    for n in notes:
        print(f"  note: {n}")
    return 0
