"""Agent vs every reference policy, bracketed by the best clairvoyant policy and an upper bound (``gaelp evaluate``).

Per evaluation seed (disjoint from the training seed) a fresh simulated world is run once per
policy — same people, traffic, prices and luck (the engine's common random numbers) — for
``warmup + days`` budget periods; the figures are taken over the last ``days``:

* the trained agent (restored from its checkpoint, still learning online, as deployed);
* ablations of the same trained agent (``lab/ablations.py``): ``dual+agent`` (its value estimate,
  creative, channel, target and traffic plan, bid by dual pacing), ``dual+agent_scaled`` (the same
  with multipliers above 1 allowed) and ``gaelp-no_dqn_offset``;
* fixed bid, truthful expected value, linear bidding, dual-variable pacing — each with the
  random creative rule, their value model warmed and their one parameter chosen on the
  training world (``gaelp train``);
* references that read ground truth (not deployable; they say where the gap to the optimum
  comes from): dual pacing with the best-creative-per-segment oracle; dual pacing on the true
  mean value of each *observable* cell (:mod:`agent_service.evaluation.cell_oracle`: what a
  perfect learner of the request's features could bid) and of cells where the page category
  is replaced by the person's accumulated segment posterior (``dual+cell_profile``: a perfect
  learner of the information the agent's state carries); dual pacing on each impression's
  *true* value and best creative, paced by the dual step (``dual+truth``) or bid truthfully
  (``truthful+truth``): full information but the prices to come. The better of the two on each
  seed is the **best clairvoyant policy** — a feasible policy, so others may beat it.

The yardsticks:

* **upper bound** — no policy can win more expected value: the LP of ``simulators.hindsight``
  in ``upper`` mode (every option valued at its most favourable journey state: decision stage,
  full touch lift, no fatigue, the best creative; prices known in hindsight; the daily budget and
  organic reach), solved by its Lagrangian dual (``dual_bound``: valid for any multipliers). The
  traffic depends on the policy (people deeper in a journey are offered paid search more), so
  the bound is computed on each run's own opportunities and the seed's bound is the largest of
  them: it bounds every policy evaluated, which is checked on every run (an error otherwise).
* the **myopic LP** (each opportunity valued as a first touch of a person left alone) is kept
  under that name only: it is *not* an upper bound (journeys add value it does not count).

Reported per policy: expected conversion value won (ground truth, the low-variance measure),
its share of the best clairvoyant policy and of the upper bound, realised conversions and value,
spend, creative regret — means over seeds with 95 % t-intervals — the paired difference
agent − each baseline with its interval, and ``strongest_ablation``: that difference for the
better of the two pacing ablations in the run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import stats as sstats

from agent_service.config import GaelpConfig
from agent_service.config.lab import EvalConfig
from agent_service.evaluation.cell_oracle import CellOracle
from agent_service.evaluation.harness import CampaignPolicy, RunResult, run_campaign
from agent_service.evaluation.policies import BaselinePolicy, DualPacing, FixedBid, Linear, Truthful
from agent_service.evaluation.sim_market import SimMarket
from agent_service.lab.ablations import DualOnAgent, without_dqn_offset
from agent_service.lab.campaign import HybridCampaign
from agent_service.pacing import DualPacerConfig
from simulators.calibration import Calibration

__all__ = ["EvalConfig", "Trained", "evaluate", "interval", "load_trained", "summary_table"]


def interval(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval over seeds."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = float(sstats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


def _policies(cfg: GaelpConfig, ec: EvalConfig, ckpt: dict[str, Any] | None, base: dict[str, Any],
              values: dict[str, Any] | None, seed: int) -> dict[str, Callable[[SimMarket], CampaignPolicy]]:
    def baseline(make: Callable[[], Any], rule: str, name: str, kind: type[BaselinePolicy] = BaselinePolicy,
                 **kw: Any) -> Callable[[SimMarket], CampaignPolicy]:
        def build(m: SimMarket) -> CampaignPolicy:
            pol = kind(make(), rule, m, seed=seed, name=name, **kw)
            if values is not None:
                pol.values.load(values)
            return pol
        return build

    def agent(m: SimMarket) -> HybridCampaign:
        a = HybridCampaign(m.creatives, cfg.hybrid, cfg.reward, seed=seed, learn=ec.agent_learns)
        if ckpt is not None:
            a.restore(ckpt)
        return a

    step = float(base.get("dual_step", 0.1))

    def dual_on_agent(m: SimMarket, mu_min: float, name: str) -> DualOnAgent:
        """The agent's value model, creatives and pacing state — its learned traffic profile as the
        plan, its multiplier level as the start (μ0 = e^{−z} − 1) — with dual pacing's update: only
        the bid rule differs from the agent, as on the service path."""
        a = agent(m)
        mu0 = float(min(max(math.exp(-a.agent.z_base) - 1.0, mu_min), DualPacerConfig.mu_max))
        return DualOnAgent(a, DualPacing(DualPacerConfig(step=step, mu0=mu0, mu_min=mu_min), plan=a.plan), name=name)

    return {
        "gaelp": agent,
        # inference-time ablations of the same trained agent (lab/ablations.py)
        "dual+agent": lambda m: dual_on_agent(m, 0.0, "dual+agent"),
        # the same with a value maximiser's dual: multipliers above 1, up to the agent's own cap
        "dual+agent_scaled": lambda m: dual_on_agent(m, math.exp(-cfg.hybrid.dqn.z_max) - 1.0, "dual+agent_scaled"),
        "gaelp-no_dqn_offset": lambda m: without_dqn_offset(agent(m)),
        "fixed": baseline(lambda: FixedBid(float(base.get("fixed_cpm", 2.0))), "random", "fixed"),
        "truthful": baseline(Truthful, "random", "truthful"),
        "linear": baseline(lambda: Linear(float(base.get("linear_b0", 2.0))), "random", "linear"),
        "dual": baseline(lambda: DualPacing(DualPacerConfig(step=step)), "random", "dual"),
        "dual+oracle_creative": baseline(lambda: DualPacing(DualPacerConfig(step=step)), "oracle",
                                         "dual+oracle_creative"),
        "dual+cell_oracle": baseline(lambda: DualPacing(DualPacerConfig(step=step)), "oracle", "dual+cell_oracle",
                                     kind=CellOracle),
        "dual+cell_profile": baseline(lambda: DualPacing(DualPacerConfig(step=step)), "oracle", "dual+cell_profile",
                                      kind=CellOracle, profile=True),
        "dual+truth": baseline(lambda: DualPacing(DualPacerConfig(step=step)), "oracle", "dual+truth",
                               value_source="truth"),
        "truthful+truth": baseline(Truthful, "oracle", "truthful+truth", value_source="truth"),
    }


CLAIRVOYANT = ("dual+truth", "truthful+truth")
"""The full-information policies whose best is the seed's best clairvoyant policy."""

PACING_ABLATIONS = ("dual+agent", "dual+agent_scaled")
"""Dual pacing with the agent's own value model, creatives and plan; the one with the higher mean
value in a run is that run's strongest ablation (chosen after the fact, so the comparison favours it)."""


class Trained(NamedTuple):
    """A finished ``gaelp train --out`` directory, as ``evaluate`` takes it."""

    summary: dict[str, Any]
    checkpoint: dict[str, Any]
    baselines: dict[str, Any]
    baseline_values: dict[str, Any]


def load_trained(directory: Path) -> Trained:
    """Read a ``gaelp train --out`` directory (summary, agent checkpoint, baselines' parameters and value models)."""
    return Trained(json.loads((directory / "summary.json").read_text()),
                   torch.load(directory / "agent.pt", weights_only=False),
                   json.loads((directory / "baselines.json").read_text()),
                   torch.load(directory / "baseline_values.pt", weights_only=False))


def evaluate(cfg: GaelpConfig, ec: EvalConfig, ckpt: dict[str, Any] | None, base: dict[str, Any],
             values: dict[str, Any] | None, progress: Callable[[str], None] | None = None,
             cal: Calibration | None = None) -> dict[str, Any]:
    """Run every policy on every seed; return the report (see the module docstring).

    :param cal: the worlds' calibration (None: the default one; another for perturbed test worlds).
    """
    budget = ec.budget_usd if ec.budget_usd is not None else cfg.budget.daily_usd
    ec = replace(ec, budget_usd=budget)  # recorded in the report
    torch.set_num_threads(1)
    total = ec.warmup + ec.days
    per: dict[str, dict[str, list[float]]] = {}
    myopic: list[float] = []
    upper: list[float] = []
    started = time.perf_counter()
    for seed in ec.seeds:
        bounds: dict[str, float] = {}
        for name, build in _policies(cfg, ec, ckpt, base, values, seed).items():
            market = SimMarket(seed, budget, ec.persons, ec.opportunities_per_day, cfg.hybrid.segments,
                               cal=cal, record=True)
            r: RunResult = run_campaign(market, build(market), total, window_days=int(cfg.join.window_days))
            measured = r.days[ec.warmup:]
            row = per.setdefault(name, {k: [] for k in ("value", "conversions", "conversion_value", "spend",
                                                        "regret", "wall_seconds")})
            row["value"].append(sum(d.expected_value_usd for d in measured))
            row["conversions"].append(sum(d.conversions for d in measured))
            row["conversion_value"].append(sum(d.conversion_value_usd for d in measured))
            row["spend"].append(sum(d.spend_usd for d in measured))
            chosen, best = sum(d.chosen_value_usd for d in measured), sum(d.best_value_usd for d in measured)
            row["regret"].append(1 - chosen / best if best > 0 else float("nan"))  # vs the best for each impression
            row["wall_seconds"].append(r.wall_seconds)
            bounds[name] = sum(market.upper_bound(d) for d in range(ec.warmup, total))
            if bounds[name] < row["value"][-1] - 1e-6:
                raise RuntimeError(f"upper bound {bounds[name]:.3f} under {name}'s value {row['value'][-1]:.3f} "
                                   f"on seed {seed}: a bug in the bound or the value")
            if name == "dual":
                myopic.append(sum(market.hindsight_bound(d, "myopic") for d in range(ec.warmup, total)))
            if progress is not None:
                progress(f"seed {seed} {name}: value {row['value'][-1]:.1f} (bound on its run {bounds[name]:.1f})")
        upper.append(max(bounds.values()))
    ub, lp = np.array(upper), np.array(myopic)
    clair = np.max([per[n]["value"] for n in CLAIRVOYANT], axis=0)
    report: dict[str, Any] = {"config": asdict(ec), "wall_seconds": round(time.perf_counter() - started, 1),
                              "upper_bound": _stat(ub), "best_clairvoyant": _stat(clair),
                              "myopic_lp": {**_stat(lp), "note": "not an upper bound: journeys add value it "
                                                                 "does not count"},
                              "policies": {}, "paired_vs_gaelp": {}}
    agent_value = np.array(per["gaelp"]["value"])
    for name, row in per.items():
        v = np.array(row["value"])
        entry: dict[str, Any] = {"per_seed_value": np.round(v, 3).tolist()}
        for key in ("value", "conversions", "conversion_value", "spend", "regret"):
            m, h = interval(np.array(row[key]))
            entry[key] = {"mean": round(m, 4), "ci95": round(h, 4)}
        for key, ref in (("of_best_clairvoyant", clair), ("of_upper_bound", ub), ("of_myopic_lp", lp)):
            m, h = interval(v / ref)
            entry[key] = {"mean": round(m, 4), "ci95": round(h, 4)}
        report["policies"][name] = entry
        if name != "gaelp":
            m, h = interval(agent_value - v)
            report["paired_vs_gaelp"][name] = {"gaelp_minus_policy": round(m, 3), "ci95": round(h, 3),
                                               "gaelp_better_beyond_ci": bool(m - h > 0)}
    strongest = max(PACING_ABLATIONS, key=lambda n: report["policies"][n]["value"]["mean"])
    report["strongest_ablation"] = {"policy": strongest, **report["paired_vs_gaelp"][strongest]}
    return report


def _stat(x: np.ndarray) -> dict[str, Any]:
    m, h = interval(x)
    return {"mean": round(m, 4), "ci95": round(h, 4), "per_seed": np.round(x, 3).tolist()}


def summary_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    lines = [f"{'policy':24s} {'value USD':>16s} {'of clairvoyant':>16s} {'of upper bound':>16s} {'conv':>10s} "
             f"{'spend':>10s} {'regret':>14s}"]
    def f(e: dict[str, Any], k: str, scale: float = 1.0) -> str:
        return f"{e[k]['mean'] * scale:.1f}±{e[k]['ci95'] * scale:.1f}"

    for name, e in report["policies"].items():
        lines.append(f"{name:24s} {f(e, 'value'):>16s} {f(e, 'of_best_clairvoyant', 100) + '%':>16s} "
                     f"{f(e, 'of_upper_bound', 100) + '%':>16s} {f(e, 'conversions'):>10s} {f(e, 'spend'):>10s} "
                     f"{f(e, 'regret', 100) + '%':>14s}")
    for key, label in (("best_clairvoyant", "best clairvoyant policy"), ("upper_bound", "upper bound"),
                       ("myopic_lp", "myopic LP (not a bound)")):
        h = report[key]
        lines.append(f"{label:24s} {h['mean']:.1f}±{h['ci95']:.1f}")
    if "strongest_ablation" in report:  # absent from reports written before it was added
        a = report["strongest_ablation"]
        lines.append(f"{'agent − strongest ablation':24s} {a['gaelp_minus_policy']:+.1f}±{a['ci95']:.1f} ({a['policy']}; "
                     f"{'beyond' if a['gaelp_better_beyond_ci'] else 'not beyond'} the 95 % interval)")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["policies"])
    m = [report["policies"][n]["of_best_clairvoyant"]["mean"] for n in names]
    h = [report["policies"][n]["of_best_clairvoyant"]["ci95"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(names, m, yerr=h, capsize=4, color=["tab:green"] + ["tab:gray"] * (len(names) - 1))
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="best clairvoyant policy")
    ub = report["upper_bound"]["mean"] / max(report["best_clairvoyant"]["mean"], 1e-9)
    ax.axhline(ub, color="tab:red", lw=0.8, ls=":", label=f"upper bound ({ub:.1f}×)")
    ax.set_ylabel("share of the best clairvoyant policy")
    ax.set_title(f"expected conversion value, {len(report['config']['seeds'])} seeds, mean ± 95 % CI")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "evaluation.png")
    (out / "evaluation.json").write_text(json.dumps(report, indent=1))
    (out / "evaluation.txt").write_text(summary_table(report) + "\n")
