"""``gaelp ope``: off-policy evaluation of a candidate model version from the warehouse's decision log."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_service.units import DAY_MS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent_service.evaluation.ope_log import JoinedOutcome  # noqa: F401 (the annotation's)

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

`--live outside:NAME` evaluates the candidate against an outside bidder's log instead (the
`outside_decisions` table: another bidder was live, GAELP's candidate decided the same requests
without bidding). The action is the bid's bucket (`--bid-edges`, CPM USD; bucket 0 = no bid);
the propensity is the bidder's logged one or, when it logs none, estimated by a multinomial
logistic regression of the bucket on the context (`--outside-propensity`; the report says
which). Rewards are the experience records the stream joined to the bidder's decisions.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", required=True, type=Path, metavar="WAREHOUSE", help="DuckDB warehouse file")
    p.add_argument("--candidate", required=True, type=int, metavar="VERSION", help="candidate model version")
    p.add_argument("--known-versions", default=None, metavar="V,V,...",
                   help="versions whose logged propensities are trusted")
    p.add_argument("--registry", default=None, type=Path, metavar="DIR",
                   help="a file model registry: its versions are the known versions")
    p.add_argument("--multipliers", type=int, default=None,
                   help="size of the multiplier grid (default: the agent's, [hybrid.dqn] adjustments)")
    p.add_argument("--propensity", choices=("slot", "joint"), default="slot",
                   help="the multiplier's own probability (state column) or the joint action's")
    p.add_argument("--rewards", choices=("closed", "delay-corrected"), default="closed")
    p.add_argument("--as-of", type=int, default=None, metavar="MS", help="evaluation time, ms since the epoch "
                   "(default: now)")
    p.add_argument("--window-days", type=float, default=None, help="attribution window (default: [join] window_days)")
    p.add_argument("--ci", choices=("bootstrap", "normal", "bernstein"), default="bootstrap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML configuration file (the agent's state layout, multiplier grid and window)")
    p.add_argument("--creatives", type=int, default=None,
                   help="creative slots of the logged policy (default [creatives] capacity): the state layout")
    p.add_argument("--live", default="gaelp", metavar="gaelp|outside:NAME",
                   help="the logging policy: GAELP's live decisions, or an outside bidder's log")
    p.add_argument("--bid-edges", default="0.5,1,2,4", metavar="USD,USD,...",
                   help="bid bucket edges, CPM USD, for --live outside:NAME (bucket 0 = no bid)")
    p.add_argument("--outside-propensity", choices=("auto", "logged", "estimated"), default="auto",
                   help="the outside bidder's propensities: logged, estimated, or logged if it logs any")
    p.add_argument("--propensity-clip", type=float, default=0.01, help="floor of estimated propensities")


def _known_versions(args: argparse.Namespace) -> set[int]:
    from agent_service.errors import ConfigError

    if args.known_versions:
        return {int(v) for v in str(args.known_versions).split(",") if v.strip()}
    if args.registry is not None:
        from agent_service.adapters.registry import FileRegistry

        return set(FileRegistry(args.registry).versions())
    raise ConfigError("--known-versions", "name the trusted model versions (or --registry DIR): records from "
                      "unknown versions are refused, so OPE needs to know which are known")


# A lost auction opens no window, so it never gets a final record: its outcome record is all
# it will ever earn (no touch, so no click or credit can follow). `lost` marks such decisions.
_OUTCOMES = """SELECT x.decision_id,
                      max(CASE WHEN final THEN reward END), max(CASE WHEN final THEN x.event_time END),
                      sum(CASE WHEN NOT final THEN coalesce(r_immediate, 0) + coalesce(r_attribution, 0)
                                                  + coalesce(r_diversity, 0) ELSE 0 END),
                      sum(CASE WHEN NOT final THEN coalesce(r_delayed, 0) ELSE 0 END),
                      coalesce(bool_and(e.lost), false)
               FROM experience x LEFT JOIN (SELECT decision_id, bool_or(kind = 'loss') AND NOT bool_or(kind = 'win')
                                                   AS lost FROM events WHERE decision_id IS NOT NULL GROUP BY 1) e
                 ON e.decision_id = x.decision_id
               GROUP BY x.decision_id"""
_OUTSIDE = """SELECT o.decision_id, o.event_time, o.propensity, o.bid_micros, CAST(o.features AS VARCHAR),
                     CAST(json_extract(s.action, '$.bid_cpm_micros') AS BIGINT),
                     json_extract_string(s.action, '$.no_bid_reason'), CAST(s.state AS VARCHAR)
              FROM outside_decisions o LEFT JOIN decisions s
                ON s.shadow AND s.model_version = ? AND s.request_id = o.request_id
               AND json_extract_string(s.action, '$.imp_id') = o.imp_id
              WHERE o.bidder = ? ORDER BY o.event_time"""


def read_log(path: Path, candidate: int, outside: str | None = None
             ) -> tuple[list[tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    """Live decisions joined with the candidate's shadow multiplier, and each decision's outcome.

    :param outside: read the outside bidder of this name's decisions instead, each with the
        candidate's would-be bid, its no-bid reason and state (``evaluation.ope_outside.OutsideRow``).
    :returns: rows (decision_id, event_time, propensity, model_version, multiplier, state JSON,
        candidate multiplier or None) and, by decision id, (final reward or None, final time,
        realised so far, pending estimate).
    """
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        if outside is not None:
            return con.execute(_OUTSIDE, [candidate, outside]).fetchall(), _outcomes(con)
        decisions = con.execute(
            """SELECT l.decision_id, l.event_time, l.propensity, l.model_version,
                      CAST(json_extract(l.action, '$.multiplier') AS BIGINT), CAST(l.state AS VARCHAR),
                      CAST(json_extract(s.action, '$.multiplier') AS BIGINT)
               FROM decisions l LEFT JOIN decisions s
                 ON s.shadow AND s.model_version = ? AND s.request_id = l.request_id
                AND json_extract_string(s.action, '$.imp_id') = json_extract_string(l.action, '$.imp_id')
               WHERE NOT coalesce(l.shadow, false) ORDER BY l.event_time""", [candidate]).fetchall()
        return decisions, _outcomes(con)
    finally:
        con.close()


def _outcomes(con: Any) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row[1:] for row in con.execute(_OUTCOMES).fetchall()}


def joined_outcomes(decisions: Sequence[tuple[str, int]], outs: dict[str, tuple[Any, ...]], window_ms: int
                    ) -> dict[str, JoinedOutcome]:
    """The joined outcome of each (decision id, event time) that has experience records; a lost
    auction's is final at once (see ``_OUTCOMES``)."""
    from agent_service.evaluation.ope_log import JoinedOutcome

    out = {}
    for did, t in decisions:
        o = outs.get(did)
        if o is None:
            continue
        final_reward, final_time, realised, pending, lost = o
        closes = int(final_time) if final_time is not None else t if lost else t + window_ms
        out[did] = JoinedOutcome(did, float(final_reward if final_reward is not None else realised or 0.0),
                                 final_reward is not None or bool(lost), closes, float(pending or 0.0))
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from agent_service.agent.serving.hybrid import spec_of
    from agent_service.config import load_config
    from agent_service.evaluation.ope_log import (
        LoggedDecision,
        RewardMode,
        build_feedback,
        evaluate,
    )

    cfg = load_config(args.config)
    window_ms = int((cfg.join.window_days if args.window_days is None else args.window_days) * DAY_MS)
    if args.live != "gaelp":
        return run_outside(args, window_ms)
    multipliers = cfg.hybrid.dqn.n_actions if args.multipliers is None else args.multipliers
    spec = spec_of(cfg.hybrid, args.creatives or cfg.creatives.capacity)
    slot_col = spec.index["slot_action_prob"]
    known = _known_versions(args)
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
    outcomes = joined_outcomes([(d.decision_id, d.event_time_ms) for d in decisions], outs, window_ms)
    mode: RewardMode = "closed_windows" if args.rewards == "closed" else "delay_corrected"
    fb = build_feedback(decisions, outcomes, known_versions=known, as_of_ms=as_of, n_actions=multipliers,
                        mode=mode, window_ms=window_ms, no_outcome_reward=0.0)
    cand = np.array([shadow[d] for d in fb.decision_ids], dtype=np.intp)
    if cand.size and (cand.min() < 0 or cand.max() >= multipliers):
        from agent_service.errors import DecodeError

        raise DecodeError("decisions.action.multiplier", f"candidate v{args.candidate}'s shadow multipliers fall "
                          f"outside 0..{multipliers - 1} (--multipliers)")
    dist = np.eye(multipliers)[cand] if cand.size else np.zeros((0, multipliers))
    report = evaluate(fb, dist, candidate=str(args.candidate), n_cells=1, ci=args.ci, seed=args.seed)
    notes = [*report.notes, f"{unpaired} live decisions without a shadow decision of version {args.candidate} "
             "were left out", "decisions within one budget slot share the multiplier draw: the interval treats "
             "them as independent"]
    _print(args, f"candidate v{args.candidate}", report, notes)
    return 0


def run_outside(args: argparse.Namespace, window_ms: int) -> int:
    """``--live outside:NAME``: the candidate against an outside bidder's log (``evaluation/ope_outside.py``)."""
    import numpy as np

    from agent_service.errors import ConfigError
    from agent_service.evaluation.ope_log import evaluate
    from agent_service.evaluation.ope_outside import OutsideRow, outside_feedback
    from agent_service.money import usd_to_micros

    kind, _, name = str(args.live).partition(":")
    if kind != "outside" or not name:
        raise ConfigError("--live", f"expected gaelp or outside:NAME, got {args.live!r}")
    try:
        edges = [usd_to_micros(float(e)) for e in str(args.bid_edges).split(",") if e.strip()]
    except ValueError as exc:
        raise ConfigError("--bid-edges", f"comma-separated CPM USD amounts: {exc}") from exc
    as_of = args.as_of if args.as_of is not None else int(time.time() * 1000)
    import duckdb

    try:
        raw, outs = read_log(args.log, args.candidate, outside=name)
    except duckdb.CatalogException as exc:  # a warehouse from before outside bidders
        raise ConfigError("--log", f"{args.log} has no outside_decisions table: no outside bidder was logged "
                          "there") from exc
    rows = [OutsideRow(did, int(t), p, int(bid), json.loads(f) if f else None, cbid if cbid is None else int(cbid),
                       reason, json.loads(state) if state else []) for did, t, p, bid, f, cbid, reason, state in raw]
    outcomes = joined_outcomes([(r.decision_id, r.event_time) for r in rows], outs, window_ms)
    try:
        of = outside_feedback(rows, outcomes, edges_micros=edges, as_of_ms=as_of,
                              mode="closed_windows" if args.rewards == "closed" else "delay_corrected",
                              window_ms=window_ms, propensity=args.outside_propensity, clip=args.propensity_clip)
    except ValueError as exc:
        raise ConfigError("--bid-edges" if "edges" in str(exc) else "--propensity-clip", str(exc)) from exc
    dist = np.eye(of.n_actions)[of.candidate_action] if of.candidate_action.size else np.zeros((0, of.n_actions))
    report = evaluate(of.feedback, dist, candidate=str(args.candidate), n_cells=1, ci=args.ci, seed=args.seed)
    notes = [f"logging policy: outside bidder {name!r}, {len(rows)} decisions; actions are bid buckets "
             f"(edges {args.bid_edges} CPM USD, bucket 0 = no bid); propensities {of.propensities}",
             *of.notes, *report.notes]
    _print(args, f"candidate v{args.candidate} vs outside:{name}", report, notes,
           extra={"live": f"outside:{name}", "propensities": of.propensities})
    return 0


def _print(args: argparse.Namespace, title: str, report: Any, notes: list[str],
           extra: dict[str, Any] | None = None) -> None:
    if args.json:
        print(json.dumps({**report.to_dict(), **(extra or {}), "notes": notes}))
        return
    print(f"{title}: {report.validation.summary()}")
    for name, e in report.estimates.items():
        flag = "  POOR SUPPORT: " + "; ".join(e.warnings) if e.poor_support else ""
        print(f"  {name:9s} {e.value:.6g}  [{e.ci_low:.6g}, {e.ci_high:.6g}]  ESS {e.ess:.0f}/{e.n}{flag}")
    if report.estimates:
        print(f"  interval: {next(iter(report.estimates.values())).ci_method}")
    for n in notes:
        print(f"  note: {n}")
