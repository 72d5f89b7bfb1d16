"""Training the hybrid agent on the simulator (``gaelp train``): one world, day after day.

The agent learns online in a simulated world of the training seed (never an evaluation seed):
per slot it decides the opportunities, sees auctions and clicks, and days later the
conversions; the learner updates every ``update_every`` decisions and the serving agent swaps
the new version in. Checkpoints are written every ``checkpoint_every`` days and at the end,
with per-day learning curves (PNG) and a JSON summary (wall time, decisions and transitions
trained per second, the last days' value and creative regret).

The reference policies get the same training data budget: a dual-pacing run on the training
world warms their value model, and the one parameter of the fixed-bid, linear and dual
bidders is chosen on a short run of the training world — never on evaluation seeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent_service.config import GaelpConfig
from agent_service.config.lab import TrainConfig
from agent_service.evaluation.harness import RunResult, run_campaign
from agent_service.evaluation.policies import BaselinePolicy, BidRule, DualPacing, FixedBid, Linear
from agent_service.evaluation.sim_market import SimMarket
from agent_service.lab.campaign import HybridCampaign
from agent_service.pacing import DualPacerConfig
from simulators.calibration import load_calibration

__all__ = ["TrainConfig", "day_rows", "train", "tune_baselines"]


def day_rows(result: RunResult) -> list[dict[str, float]]:
    """Per-day figures of a run (JSON-ready)."""
    out = []
    for d in result.days:
        out.append({"day": d.day, "spend_usd": round(d.spend_usd, 4), "impressions": d.impressions,
                    "clicks": d.clicks, "expected_value_usd": round(d.expected_value_usd, 4),
                    "conversions": d.conversions, "conversion_value_usd": round(d.conversion_value_usd, 4),
                    "creative_regret": round(d.creative_regret, 4),
                    "creative_regret_vs_segment_oracle": round(1 - d.chosen_value_usd / d.oracle_value_usd, 4)
                    if d.oracle_value_usd > 0 else float("nan")})
    return out


def budget_of(cfg: GaelpConfig, tc: TrainConfig) -> float:
    """The training world's daily budget (``[train] budget_usd``, else ``[budget] daily_usd``)."""
    return tc.budget_usd if tc.budget_usd is not None else cfg.budget.daily_usd


def train(cfg: GaelpConfig, tc: TrainConfig, out: Path, progress: Callable[[int, dict[str, Any]], None] | None = None,
          ) -> dict[str, Any]:
    """Train, write checkpoints, curves and ``summary.json`` into ``out``; return the summary."""
    tc = replace(tc, budget_usd=budget_of(cfg, tc))  # recorded in summary.json
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    started = time.perf_counter()
    parallel: dict[str, Any] = {}
    if tc.runners > 0:
        from agent_service.adapters.ray_env import prepare_ray_env

        prepare_ray_env(cfg.learner.ray_address)
        from agent_service.lab.parallel import merge_days, train_parallel

        def on_round(day: int) -> None:
            if progress is not None:
                progress(day, {"z": float("nan"), "version": day + 1})

        run = train_parallel(cfg, tc.runners, tc.days, tc.seed, budget_of(cfg, tc), tc.persons, tc.opportunities_per_day,
                             ray_address=cfg.learner.ray_address or None, sync_slots=tc.sync_slots, on_day=on_round,
                             calibration=tc.calibration)
        result = merge_days([r.result for r in run["reports"]])
        ck = run["checkpoint"]
        torch.save(ck, out / "checkpoints" / f"day{len(result.days):04d}.pt")
        trained = sum(r.transitions_trained for r in run["reports"])
        parallel = {"ray_start_seconds": round(run["ray_start_seconds"], 2),
                    "runner_startup_seconds": round(run["runner_startup_seconds"], 2), "replaced_runners": run["replaced"],
                    "runner_seconds": [round(r.seconds, 1) for r in run["reports"]]}
        hist = [u for r in sorted(run["reports"], key=lambda r: r.index) for u in r.history]
        dqn_transitions = sum(r.dqn_transitions for r in run["reports"])
        rejected = sum(r.rejected for r in run["reports"])
        started += run["ray_start_seconds"] + run["runner_startup_seconds"]  # reported apart, not as training
    else:
        market = SimMarket(tc.seed, budget_of(cfg, tc), tc.persons, tc.opportunities_per_day, cfg.hybrid.segments,
                           cal=load_calibration(tc.calibration or None))
        agent = HybridCampaign(market.creatives, cfg.hybrid, cfg.reward, seed=tc.seed)
        stop = [False]

        def on_day(day: int) -> None:
            if (day + 1) % tc.checkpoint_every == 0:
                torch.save(agent.checkpoint(), out / "checkpoints" / f"day{day + 1:04d}.pt")
            if progress is not None:
                progress(day, {"z": agent.agent.z, "version": agent.learner.version})
            if time.perf_counter() - started > tc.max_minutes * 60:
                stop[0] = True

        result = run_campaign(market, agent, tc.days, progress=on_day, stop=lambda: stop[0],
                              window_days=int(cfg.join.window_days))
        ck = agent.checkpoint()
        hist = agent.learner.history
        trained = agent.learner.transitions_trained
        dqn_transitions, rejected = agent.learner.dqn.transitions, agent.learner.rejected
    train_s = time.perf_counter() - started
    torch.save(ck, out / "agent.pt")
    days = day_rows(result)
    decisions = sum(d.opportunities for d in result.days)
    tuning_started = time.perf_counter()
    baselines = tune_baselines(cfg, tc, out) if tc.baseline_days > 0 else {}
    tuning_s = time.perf_counter() - tuning_started
    last = days[-min(5, len(days)):]
    summary: dict[str, Any] = {
        "config": asdict(tc), "days_trained": len(days), "stopped_early": len(days) < tc.days,
        "wall_seconds": round(train_s, 1), "baseline_tuning_seconds": round(tuning_s, 1), "decisions": decisions,
        "decisions_per_second": round(decisions / max(train_s, 1e-9), 1),
        "transitions_trained": trained, "transitions_trained_per_second": round(trained / max(train_s, 1e-9), 1),
        "dqn_transitions": dqn_transitions, "policy_updates": len(hist), "rejected_updates": rejected,
        "runners": tc.runners, **parallel,
        "last_days": {"expected_value_usd": float(np.mean([d["expected_value_usd"] for d in last])),
                      "creative_regret": float(np.nanmean([d["creative_regret"] for d in last])),
                      "spend_usd": float(np.mean([d["spend_usd"] for d in last]))},
        "per_day": days,
        "updates": [{"version": u.version, "mean_reward": u.mean_reward, **u.ppo._asdict(),
                     "dqn_td_loss": u.dqn_td_loss, "conv_nll": u.conv_nll} for u in hist],
        "baselines": baselines,
    }
    summary["plots"] = _plots(summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))


def tune_baselines(cfg: GaelpConfig, tc: TrainConfig, out: Path) -> dict[str, Any]:
    """Warm the baselines' value model and pick their one parameter on the training world."""
    budget = budget_of(cfg, tc)

    def market() -> SimMarket:
        return SimMarket(tc.seed, budget, tc.persons, tc.opportunities_per_day, cfg.hybrid.segments,
                         cal=load_calibration(tc.calibration or None))

    warm = BaselinePolicy(DualPacing(DualPacerConfig(step=0.1)), "random", market(), seed=tc.seed)
    run_campaign(warm.market, warm, tc.baseline_days, window_days=int(cfg.join.window_days))
    values = warm.values.state()
    torch.save(values, out / "baseline_values.pt")

    def score(bidder: BidRule) -> float:
        pol = BaselinePolicy(bidder, "random", market(), seed=tc.seed)
        pol.values.load(values)
        r = run_campaign(pol.market, pol, 2, window_days=int(cfg.join.window_days))
        return float(sum(d.expected_value_usd for d in r.days))

    grids: dict[str, tuple[Callable[[float], BidRule], tuple[float, ...]]] = {
        "fixed_cpm": (FixedBid, (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)),
        "linear_b0": (Linear, (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)),
        "dual_step": (lambda x: DualPacing(DualPacerConfig(step=x)), (0.02, 0.05, 0.1, 0.2, 0.4)),
    }
    chosen: dict[str, Any] = {}
    for key, (make, grid) in grids.items():
        scores = {x: score(make(x)) for x in grid}
        chosen[key] = max(scores, key=lambda k: scores[k])
        chosen[f"{key}_scores"] = {str(k): round(v, 3) for k, v in scores.items()}
    (out / "baselines.json").write_text(json.dumps(chosen, indent=1))
    return chosen


def _plots(summary: dict[str, Any], out: Path) -> list[str]:
    days = summary["per_day"]
    x = [d["day"] for d in days]
    curve = _figure(out / "learning_curve.png", (2, 2), (11, 7), "day", dict(marker="."), [
        (title, x, [d[key] for d in days]) for key, title in (
            ("expected_value_usd", "expected conversion value won per day (USD)"),
            ("creative_regret", "creative regret vs the best creative for each impression"),
            ("spend_usd", "spend per day (USD)"),
            ("conversion_value_usd", "realised conversion value per day (USD)"))])
    ups = summary["updates"]
    stats = _figure(out / "learner_stats.png", (2, 3), (13, 6), "update", dict(lw=0.8), [
        (key, range(len(ups)), [u[key] for u in ups])
        for key in ("policy_loss", "value_loss", "click_loss", "entropy", "approx_kl", "dqn_td_loss")])
    return [curve, stats]


def _figure(path: Path, grid: tuple[int, int], size: tuple[float, float], xlabel: str, style: dict[str, Any],
            panels: list[tuple[str, Sequence[float], list[float]]]) -> str:
    """One PNG of line panels (title, x, y), filled row by row; returns its file name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, figsize=size)
    for ax, (title, x, y) in zip(axes.flat, panels, strict=True):
        ax.plot(x, y, **style)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name
