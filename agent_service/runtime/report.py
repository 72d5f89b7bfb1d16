"""The report of a simulation: ``report.json``, two plots and a printed summary.

Besides spend and outcomes it holds ``identity`` (pairwise precision, recall and F1 of the
store's device → person assignments against the world's truth, and of the login-only
baseline), ``warehouse`` (the DuckDB file beside it and its row count per table) and, with a
canary in the run, ``canary`` (every controller step, the final decision, each arm's value per
dollar with its always-valid interval; plotted in canary.png).

The JSON holds only what the seed determines (no wall-clock times), so the same seed gives
the same report byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_service.money import micros_to_usd

if TYPE_CHECKING:
    from agent_service.runtime.simulate import SimulationRun

__all__ = ["build_report", "summary_text", "write_report"]


def build_report(run: SimulationRun) -> dict[str, Any]:
    """The report as a JSON-able dict."""
    sim = run.cfg.simulation
    truth = run.world_truth.get("totals", {})
    daily_truth = run.world_truth.get("daily", {})
    days = sorted(run.ledgers)
    per_day: list[dict[str, Any]] = []
    for day in days:
        budget, spent, reserved = run.ledgers[day]
        t = daily_truth.get(day, {})
        per_day.append({
            "day": day,
            "date": (dt.date(2026, 1, 1) + dt.timedelta(days=day)).isoformat(),
            "budget": micros_to_usd(budget), "spend": micros_to_usd(spent), "unsettled_reservations": micros_to_usd(reserved),
            "decisions": run.daily_decisions.get(day, 0), "bids": run.daily_bids.get(day, 0),
            "impressions": int(t.get("impressions", 0)), "clicks": int(t.get("clicks", 0)),
            "conversions": int(t.get("conversions", 0)),
            "conversions_in_window": int(t.get("conversions_in_window", 0)),
            "conversion_value": round(micros_to_usd(t.get("conversion_value_micros", 0)), 2),
            "expected_conversion_value": round(micros_to_usd(t.get("expected_value_micros", 0)), 2),
        })
    spend = sum(d["spend"] for d in per_day)
    impressions = int(truth.get("impressions", 0))
    clicks = int(truth.get("clicks", 0))
    conversions = int(truth.get("conversions", 0))
    value = micros_to_usd(truth.get("conversion_value_micros", 0))
    served = sorted(run.versions_served)
    return {
        "seed": sim.seed, "days": sim.days, "opportunities": int(truth.get("opportunities", 0)),
        "budget": sum(d["budget"] for d in per_day), "spend": round(spend, 6),
        "impressions": impressions, "clicks": clicks, "conversions": conversions,
        "conversions_in_window": int(truth.get("conversions_in_window", 0)),
        "conversions_after_window": int(truth.get("conversions_late", 0)),
        "conversion_value": round(value, 2),
        "expected_conversion_value": round(micros_to_usd(truth.get("expected_value_micros", 0)), 2),
        "ctr": round(clicks / impressions, 6) if impressions else 0.0,
        "cpa": round(spend / conversions, 4) if conversions else None,
        "roas": round(value / spend, 4) if spend else None,
        "joined_conversions": int(run.flow_counts.get("joined", 0)),
        "late_conversions": int(run.flow_counts.get("late", 0)),
        "unattributed_conversions": int(run.flow_counts.get("unattributed", 0)),
        "windows_closed": int(run.flow_counts.get("windows_closed", 0)),
        "dead_letters": int(run.flow_counts.get("dead_letters", 0)),
        "no_bids": dict(sorted(run.no_bids.items())),
        "model_versions": {"published": run.published_versions, "served": served,
                           "decisions_per_version": {str(v): run.versions_served[v] for v in served}},
        "learner": run.learner,
        "per_day": per_day,
        "learning_curve": _curve(run.slots, hours=2),
        "plots": ["learning_curve.png", "spend_vs_plan.png"],
        "identity": run.identity,
        "warehouse": run.warehouse,
        **({"canary": run.canary} if run.canary else {}),
    }


def _curve(slots: list[dict[str, Any]], hours: int) -> list[dict[str, Any]]:
    buckets: dict[int, dict[str, float]] = {}
    for s in slots:
        key = int((s["day"] * 24 + s["hour"]) // hours)
        b = buckets.setdefault(key, {"impressions": 0, "clicks": 0, "cost": 0, "value": 0, "model_version": 0})
        b["impressions"] += s["impressions"]
        b["clicks"] += s["clicks"]
        b["cost"] += s.get("cost_micros", 0)
        b["value"] += s.get("expected_value_micros", 0)
        b["model_version"] = s["model_version"]
    return [{"hours": k * hours, "impressions": int(v["impressions"]), "clicks": int(v["clicks"]),
             # None (a gap in the plot) where nothing was bought: 0 would read as a failure
             "ctr": round(v["clicks"] / v["impressions"], 6) if v["impressions"] else None,
             "expected_value_per_usd": round(v["value"] / v["cost"], 4) if v["cost"] else None,
             "model_version": int(v["model_version"])} for k, v in sorted(buckets.items())]


def _plots(report: dict[str, Any], slots: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["learning_curve"]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [c["hours"] for c in curve]
    nan = float("nan")
    ax.plot(xs, [nan if c["ctr"] is None else 100 * c["ctr"] for c in curve], marker="o",
            label="CTR of bought impressions (%)")
    ax.plot(xs, [nan if c["expected_value_per_usd"] is None else c["expected_value_per_usd"] for c in curve], marker="s",
            label="expected conversion value per $ spent (ground truth)")
    ax.set_xlabel("hours since start (event time)")
    ax.set_ylabel("CTR (%)  /  value per $")
    ax2 = ax.twinx()
    ax2.step(xs, [c["model_version"] for c in curve], where="post", color="tab:gray", alpha=0.6,
             label="model version served")
    ax2.set_ylabel("model version")
    ax.set_title("Learning curve while the agent learns online")
    fig.legend(loc="upper left", bbox_to_anchor=(0.1, 0.9))
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [s["day"] * 24 + s["hour"] for s in slots]
    ax.plot(xs, [s["spend_usd"] for s in slots], label="spend (ledger)")
    ax.plot(xs, [s["plan_usd"] for s in slots], "--", label="pacing plan")
    ax.plot(xs, [s["budget_usd"] for s in slots], ":", color="red", label="daily budget (hard cap)")
    ax.set_xlabel("hours since start (event time)")
    ax.set_ylabel("USD spent in the day")
    ax.set_title("Spend against plan")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "spend_vs_plan.png", dpi=110)
    plt.close(fig)
    if "canary" in report:
        _canary_plot(plt, report["canary"], out)


def _canary_plot(plt: Any, canary: dict[str, Any], out: Path) -> None:
    """The lift of value per dollar with its interval, and the share on the candidate, over event time."""
    steps = [r for r in canary["timeline"] if r["kind"] == "evaluated"]
    nan = float("nan")
    xs = [r["hours"] for r in steps]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(xs, [nan if r["lift"] is None else 100 * r["lift"] for r in steps], label="lift of value per $ (%)")
    ax.fill_between(xs, [nan if r["lower"] is None else max(100 * r["lower"], -100) for r in steps],
                    [nan if r["upper"] is None else min(100 * r["upper"], 400) for r in steps], alpha=0.25,
                    label="always-valid interval")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("hours since the canary started (event time)")
    ax.set_ylabel("candidate over control (%)")
    ax2 = ax.twinx()
    ax2.step([r["hours"] for r in canary["timeline"]], [100 * r["routed_share"] for r in canary["timeline"]],
             where="post", color="tab:gray", alpha=0.6, label="share on the candidate (%)")
    ax2.set_ylabel("share (%)")
    final = canary["final"]
    ax.set_title(f"Canary of {canary['candidate']}: {final['state']} at {final['hours']:.1f} h")
    fig.legend(loc="upper right", bbox_to_anchor=(0.9, 0.9))
    fig.tight_layout()
    fig.savefig(out / "canary.png", dpi=110)
    plt.close(fig)


def write_report(run: SimulationRun, out_dir: Path) -> dict[str, Any]:
    """Write report.json and the plots; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(run)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _plots(report, run.slots, out_dir)
    return report


def summary_text(report: dict[str, Any], out_dir: Path | None, wall_seconds: float) -> str:
    """A readable summary for the terminal."""
    lines = [
        f"GAELP simulation — seed {report['seed']}, {report['days']} day(s) of traffic, "
        f"{report['opportunities']:,} opportunities ({wall_seconds:.1f}s wall)",
        f"  budget ${report['budget']:,.2f}   spend ${report['spend']:,.2f}   "
        f"impressions {report['impressions']:,}   clicks {report['clicks']:,} (CTR {100 * report['ctr']:.2f}%)",
        f"  conversions {report['conversions']:,} (in window {report['conversions_in_window']:,}, "
        f"after window {report['conversions_after_window']:,})   value ${report['conversion_value']:,.2f}   "
        f"ROAS {report['roas']}",
        f"  expected conversion value of the impressions bought ${report['expected_conversion_value']:,.2f} "
        f"(the simulator's ground truth: realised conversions are few and arrive over 3-14+ days)",
        f"  joined {report['joined_conversions']:,}   late {report['late_conversions']:,}   "
        f"unattributed {report['unattributed_conversions']:,}   windows closed {report['windows_closed']:,}",
        f"  model versions published {report['model_versions']['published']}, served "
        f"{len(report['model_versions']['served'])}; learner updates {report['learner']['updates']} "
        f"(rejected {report['learner']['rejected']})",
        f"  no-bids: {report['no_bids']}",
    ]
    if report["conversions"] == 0 and report["clicks"] > 0:
        lines.append(f"  no conversion yet: they come 3-14 days after a click and this run had {report['days']} "
                     f"day(s) of traffic — try `make run DAYS=7` to see the delayed loop close")
    seg = (report.get("learner") or {}).get("segments") or {}
    if seg.get("k"):
        lines.append(f"  segments learned from the traffic: K = {seg['k']} (by BIC) over {seg['people']:,} people, "
                     f"served: {seg['served']}")
    ident = report.get("identity") or {}
    if ident:
        g, b = ident["graph"], ident["login_only"]
        lines.append(f"  identity ({ident['devices']:,} devices, {ident['true_pairs']:,} same-person pairs): "
                     f"graph P {g['precision']:.3f} R {g['recall']:.3f} F1 {g['f1']:.3f}   "
                     f"login-only P {b['precision']:.3f} R {b['recall']:.3f} F1 {b['f1']:.3f}")
    wh = report.get("warehouse") or {}
    if wh:
        rows = ", ".join(f"{name} {n:,}" for name, n in wh["rows"].items())
        where = out_dir / wh["file"] if out_dir is not None else wh["file"]
        lines.append(f"  warehouse: {where} (DuckDB; {rows})")
    lines.extend(_canary_lines(report.get("canary")))
    for d in report["per_day"]:
        lines.append(f"  day {d['day']} {d['date']}: spend ${d['spend']:.2f}/${d['budget']:.2f}, "
                     f"{d['impressions']:,} imp, {d['clicks']:,} clicks, {d['conversions']} conv "
                     f"(${d['conversion_value']:.2f})")
    if out_dir is not None:
        lines.append(f"  report: {out_dir / 'report.json'}   plots: {out_dir / 'learning_curve.png'}, "
                     f"{out_dir / 'spend_vs_plan.png'}" + (f", {out_dir / 'canary.png'}" if "canary" in report else ""))
    return "\n".join(lines)


def _canary_lines(canary: dict[str, Any] | None) -> list[str]:
    """The canary in a few lines: its transitions, the final decision, each arm's value per dollar."""
    if not canary:
        return []
    final, lift = canary["final"], canary["lift"]
    lines = [f"  canary of {canary['candidate']} (v{canary['candidate_version']} against live, stages "
             f"{', '.join(f'{s:.0%}' for s in canary['stages'])}; {canary['evaluations']} evaluations):"]
    lines += [f"    {r['hours']:7.1f} h  {r['kind']:<15} {r['reason']}" for r in canary["transitions"]]
    if final["state"] == "running":
        lines.append(f"    {final['hours']:7.1f} h  still running at the end of the run: {final['reason']}")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:+.1%}"
    if lift["lift"] is None:
        lines.append(f"    final: {final['state']}; lift of value per $ not estimable (no credited value in an arm yet)")
    else:
        lines.append(f"    final: {final['state']}; lift of value per $ {pct(lift['lift'])} "
                     f"(always-valid interval {pct(lift['lower'])} .. {pct(lift['upper'])}, alpha {canary['alpha']})")
    for arm, a in canary["arms"].items():
        lo, hi = a["value_per_dollar_interval"]
        vpd = "-" if a["value_per_dollar"] is None else f"{a['value_per_dollar']:.3f}"
        ci = "" if lo is None else f" ({lo:.3f} .. {hi:.3f})"
        lines.append(f"    {arm:<9} {a['persons']:,} persons, {a['requests']:,} requests, spend ${a['spend_usd']:.2f}, "
                     f"value ${a['value_usd']:.2f}, value per $ {vpd}{ci}")
    return lines
