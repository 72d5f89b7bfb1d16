"""Ray-parallel training (``gaelp train --runners N``): N simulated worlds, one model.

Each env runner is a Ray actor holding a world of its own (its own seed) and a full copy of the
agent — acting, and learning online from its own world, exactly as single-process training
does. The worlds are shards of one market: N runners with ``1/N`` of the people, the traffic and
the budget each, so that N runners see the same simulated opportunities per day as one runner
on the whole market, and delayed conversions land on the same schedule. Every ``sync_slots``
budget slots, and at the end of every simulated day, the runners meet at the :class:`_Averager`
and leave with the element-wise mean of their trainable weights (the journey LSTM and policy
heads, critic and click model, the bid Q-network, the conversion model) — synchronous model
averaging ("local SGD", Stich 2019; federated averaging, McMahan et al. 2017). Each runner does
1/n of the single learner's work between meetings (:func:`runner_config`), so the average is
close to one synchronous data-parallel step.

They also leave with the market's campaign statistics (creative CTR/CVR, win rates, segment
values: counts behind several state features): each runner sends what it counted since the last
meeting and the sum of those deltas is added to the common base. Daily averaging with per-shard
statistics cost 20 % of the single process's value (bench_ray_training, commit 123aa90): a
runner's features came from 1/n of the counts, noisier than the merged statistics the trained
agent is deployed with. Replay, decision table and optimiser moments stay with each runner.

Stale-policy correction: between meetings a runner acts with its own newest weights; after the
average, the decisions still in its table were taken by the policy before it. PPO's ratio is
taken against the *logged* behaviour probability of each decision (``logp_behaviour``) and
clipped, so older experience is importance-weighted and its weight truncated — the same
correction the streaming learner applies to experience from earlier model versions. (V-trace's
truncated weights would do the same job; the clipped surrogate is already the objective.)

A runner that dies is replaced: the driver starts a new runner (a fresh world shard, a new
seed) from the last average, the day's average is taken over the runners that finished it,
and training goes on. ``ray.init`` joins a cluster with ``--ray-address`` and the same command
runs on it unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from agent_service.agent.learning.learner import LearnerStats
from agent_service.agent.model.segment_em import average_fits
from agent_service.agent.model.stats import STAT_SETTINGS, CampaignStats
from agent_service.config import GaelpConfig
from agent_service.config.agent import HybridConfig
from agent_service.evaluation.harness import DayStats, RunResult, run_campaign
from agent_service.evaluation.sim_market import SimMarket
from agent_service.lab.campaign import HybridCampaign
from simulators.calibration import load_calibration

__all__ = ["RunnerReport", "meeting_slots", "runner_config", "WorldShard", "average_weights", "load_weights", "merge_checkpoints", "merge_days", "train_parallel",
           "weights_of"]


@dataclass(frozen=True)
class WorldShard:
    """One runner's share of the market: ``1/n`` of its people, traffic and budget."""

    seed: int
    n: int
    budget_usd: float
    persons: int
    opportunities_per_day: float
    calibration: str = ""
    """Calibration file of the world ("" = the default)."""

    def market(self, segments: int) -> SimMarket:
        return SimMarket(self.seed, self.budget_usd / self.n, max(1, self.persons // self.n),
                         self.opportunities_per_day / self.n, segments, cal=load_calibration(self.calibration or None))


# ------------------------------------------------------------------ the average (logic)
def weights_of(agent: HybridCampaign, segments: bool = True) -> dict[str, Any]:
    """The trainable weights a runner contributes to the average (the segment fit only when
    ``segments``: it changes once a period)."""
    L = agent.learner
    return {"net": {k: v.detach().clone() for k, v in L.net.state_dict().items()},
            "q": L.dqn.weights(), "conv_w": L.conv.w.copy(), "conv_v": L.conv.v.copy(),
            "segment_fit": agent.segment_learner.fit if segments else None}


_NEVER = 2**62  # a runner's learner updates when the runners meet, not by its own count


def runner_config(h: HybridConfig, n: int) -> HybridConfig:
    """A runner's share of the single learner's work. Every runner updates at every meeting —
    which come as often as the single learner's updates (:func:`meeting_slots`) — so all update
    in the same interval and none waits for another's update at the barrier; each update takes
    1/n of the rollout in minibatches of 1/n: as many gradient steps as the single learner, each
    on 1/n of its batch. Averaged right after, the runners' steps approximate the single
    learner's on the whole batch (local SGD) at 1/n of its compute per runner. (Updating after
    ``update_every`` of its own decisions, 16 runners made 1/16 of the steps: undertrained;
    full-size updates on every runner matched the quality at n times the compute: 2 runners
    ran at 0.88 times 1.)"""
    if n <= 1:
        return h
    ppo = replace(h.ppo, rollout=max(64, h.ppo.rollout // n), minibatch=max(16, h.ppo.minibatch // n))
    return replace(h, update_every=_NEVER, ppo=ppo)


def meeting_slots(h: HybridConfig, opportunities_per_day: float, slots: int = 96) -> int:
    """Budget slots between meetings: the single learner's update cadence (``update_every``
    decisions of the whole market)."""
    return max(1, round(h.update_every * slots / max(opportunities_per_day, 1.0)))


def stats_delta(now: dict[str, Any], base: dict[str, Any]) -> dict[str, np.ndarray]:
    """What a runner counted since ``base`` (both :meth:`CampaignStats.state`; every count is
    linear, decay included, so deltas add up over runners)."""
    return {k: np.asarray(v, np.float64) - np.asarray(base[k], np.float64) for k, v in now.items()
            if k not in STAT_SETTINGS}


def pool_stats(base: dict[str, Any], deltas: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The market's statistics: the common base plus every runner's delta."""
    out = dict(base)
    for k in deltas[0]:
        total = np.asarray(base[k], np.float64) + np.sum([d[k] for d in deltas], axis=0)
        out[k] = total.tolist() if total.ndim else float(total)
    return out


def average_weights(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of runners' :func:`weights_of` (float tensors and arrays)."""
    if not parts:
        raise ValueError("nothing to average")
    first = parts[0]
    out = {"net": {k: torch.stack([p["net"][k] for p in parts]).mean(0) if first["net"][k].is_floating_point()
                    else first["net"][k] for k in first["net"]},
            "q": {k: torch.stack([p["q"][k] for p in parts]).mean(0) for k in first["q"]},
            "conv_w": np.mean([p["conv_w"] for p in parts], axis=0),
            "conv_v": np.mean([p["conv_v"] for p in parts], axis=0),
            # segment labels are arbitrary per runner: matched to the first runner's before averaging
            "segment_fit": average_fits(fits) if (fits := [p["segment_fit"] for p in parts
                                                           if p.get("segment_fit") is not None]) else None}
    if all("stats_delta" in p for p in parts):
        out["stats"] = pool_stats(first["stats_base"], [p["stats_delta"] for p in parts])
    return out


def load_weights(agent: HybridCampaign, avg: dict[str, Any]) -> None:
    """Set a runner's learner to the average, in place (its optimisers keep their moments and
    parameter references), and serve it as a new version."""
    L = agent.learner
    L.net.load_state_dict(avg["net"])
    L.dqn.q.load_state_dict(avg["q"])
    L.conv.w[:] = avg["conv_w"]
    L.conv.v[:] = avg["conv_v"]
    if avg.get("segment_fit") is not None:
        fit = avg["segment_fit"]
        agent.segment_learner.fit, agent.segment_learner.model = fit, fit.model(agent.segment_learner.width)
        L.segment_fit = agent.segment_learner.state()
    if avg.get("stats") is not None:
        L.stats = CampaignStats.from_state(avg["stats"])
    agent.agent.load_state(L.state(), L.publish())


def merge_checkpoints(cks: list[dict[str, Any]]) -> dict[str, Any]:
    """One checkpoint of the whole market from its runners' (which share the averaged weights
    and, since the last meeting, the pooled campaign statistics): the conversion model's
    labelled clicks and their matured evidence are pooled; the pacing state (traffic profile,
    multiplier) is averaged."""
    out = dict(cks[0])
    out["conv"] = {**cks[0]["conv"], "matured": float(sum(c["conv"]["matured"] for c in cks))}
    if all("conv_evidence" in c for c in cks):
        out["conv_evidence"] = {k: np.concatenate([np.asarray(c["conv_evidence"][k]) for c in cks])
                                for k in cks[0]["conv_evidence"]}
    out["plan_profile"] = np.mean([c["plan_profile"] for c in cks], axis=0).tolist()
    out["z"] = float(np.mean([c["z"] for c in cks]))
    prev = [c["z_prev_day"] for c in cks if c.get("z_prev_day") is not None]
    out["z_prev_day"] = float(np.mean(prev)) if prev else None
    return out


def merge_days(results: list[RunResult]) -> RunResult:
    """The market's days from its shards' days: every figure summed over runners, day by day."""
    by_day: dict[int, DayStats] = {}
    for r in results:
        for d in r.days:
            into = by_day.setdefault(d.day, DayStats(d.day))
            for f in fields(DayStats):
                if f.name != "day":
                    setattr(into, f.name, getattr(into, f.name) + getattr(d, f.name))
    return RunResult("gaelp", [by_day[k] for k in sorted(by_day)], [])


# ------------------------------------------------------------------ actors (plumbing)
@dataclass
class RunnerReport:
    """What a runner did (per simulated day of its world)."""

    index: int
    seed: int
    result: RunResult
    decisions: int
    transitions_trained: int
    seconds: float
    history: list[LearnerStats]
    """The runner's own updates (between the daily averages)."""
    dqn_transitions: int
    rejected: int
    node: str = ""
    """The Ray node the runner ran on."""


class _Runner:
    """An env runner: one world shard and one copy of the agent, learning online (a Ray actor)."""

    def __init__(self, cfg: GaelpConfig, shard: WorldShard, index: int, start: dict[str, Any] | None) -> None:
        torch.set_num_threads(1)
        self.index, self.shard = index, shard
        self.market = shard.market(cfg.hybrid.segments)
        self.window_days = int(cfg.join.window_days)
        hybrid = runner_config(cfg.hybrid, shard.n)
        self.agent = HybridCampaign(self.market.creatives, hybrid, cfg.reward, seed=shard.seed)
        if start is not None:
            load_weights(self.agent, start)

    def ready(self) -> int:
        return self.index

    def run(self, first_day: int, days: int, averager: Any, sync_slots: int) -> RunnerReport:
        import ray

        started = time.perf_counter()
        base = self.agent.learner.stats.state()

        def sync(key: tuple[int, int], day_end: bool, now_ms: int) -> None:
            nonlocal base
            learner = self.agent.learner
            stats = learner.maybe_update(now_ms, at_least=1)  # every runner, same interval
            if stats is not None:
                self.agent.updates.append(stats)
            if day_end:  # the period's decay applies to the common base as to every runner's counts
                decayed = CampaignStats.from_state(base)
                decayed.end_period()
                base = decayed.state()
            mine = {**weights_of(self.agent, segments=day_end), "stats_base": base,
                    "stats_delta": stats_delta(self.agent.learner.stats.state(), base)}
            avg = ray.get(averager.submit.remote(key, self.index, mine))
            load_weights(self.agent, avg)
            base = avg["stats"]

        last = [0]

        def on_slot(ctx: Any) -> None:
            last[0] = ctx.t1
            if (ctx.slot + 1) % sync_slots == 0 and ctx.slot + 1 < ctx.slots:
                sync((first_day + ctx.day, ctx.slot), False, ctx.t1)

        result = run_campaign(self.market, self.agent, days, on_slot=on_slot, window_days=self.window_days,
                              progress=lambda day: sync((first_day + day, -1), True, last[0]))
        L = self.agent.learner
        return RunnerReport(self.index, self.shard.seed, result, sum(d.opportunities for d in result.days),
                            L.transitions_trained, time.perf_counter() - started, L.history, L.dqn.transitions,
                            L.rejected, ray.get_runtime_context().get_node_id())

    def final_weights(self) -> dict[str, Any]:
        return self.agent.checkpoint()


class _Averager:
    """The meeting point (an async Ray actor): at each meeting (a ``(day, slot)`` key; slot -1 is
    the end of the day) each runner submits its weights and statistics delta and waits until
    every runner still alive has, then all leave with the same average."""

    def __init__(self, members: set[int]) -> None:
        self.members = set(members)
        self.parts: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
        self.done: dict[tuple[int, int], dict[str, Any]] = {}
        self.events: dict[tuple[int, int], asyncio.Event] = {}
        self.last: dict[str, Any] | None = None
        self.days = 0
        self.meetings = 0

    def _event(self, key: tuple[int, int]) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    def _maybe_close(self, key: tuple[int, int]) -> None:
        parts = self.parts.get(key, {})
        if key not in self.done and parts and self.members <= set(parts):
            self.done[key] = self.last = average_weights([parts[i] for i in sorted(parts)])
            del self.parts[key]
            self.meetings += 1
            self._event(key).set()
            if key[1] < 0:  # the day is over: its meetings' averages are no longer asked for
                self.days += 1
                for k in [k for k in self.done if k[1] >= 0 and k[0] <= key[0]]:
                    del self.done[k]

    async def submit(self, key: tuple[int, int], member: int, weights: dict[str, Any]) -> dict[str, Any]:
        if key in self.done:  # a late joiner of a closed meeting takes its average
            return self.done[key]
        self.parts.setdefault(key, {})[member] = weights
        self._maybe_close(key)
        await self._event(key).wait()
        return self.done[key]

    def leave(self, member: int) -> None:
        """A runner died: the open meetings close over the others."""
        self.members.discard(member)
        for key in list(self.parts):
            self._maybe_close(key)

    def join(self, member: int) -> None:
        self.members.add(member)

    def latest(self) -> dict[str, Any] | None:
        return self.last

    def progress(self) -> int:
        """Simulated days every runner has finished."""
        return self.days


def train_parallel(cfg: GaelpConfig, runners: int, days: int, seed: int, budget_usd: float, persons: int,
                   opportunities_per_day: float, ray_address: str | None = None, sync_slots: int = 0,
                   on_day: Callable[[int], None] | None = None,
                   kill_runner_at_day: int | None = None, calibration: str = "") -> dict[str, Any]:
    """Train with ``runners`` env-runner actors for ``days`` simulated days (see the module docstring).

    :param sync_slots: budget slots between meetings (and one at every day's end); 0: the single
        learner's update cadence (:func:`meeting_slots`).
    :param kill_runner_at_day: a fault drill — kill runner 0 once this many rounds are done.
    :param calibration: calibration file of the world ("" = the default).
    :returns: ``{"reports", "checkpoint", "ray_start_seconds", "train_seconds", "replaced"}``.
    """
    import ray

    from agent_service.adapters.ray_learner import ensure_ray

    sync_slots = sync_slots or meeting_slots(cfg.hybrid, opportunities_per_day)
    t0 = time.perf_counter()
    owns = ensure_ray(ray_address, num_cpus=None)
    ray_start_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        # Runners share the cores they get (the design's 16 on 2): each reserves its share of the
        # cluster's CPUs, so Ray spreads them over the nodes.
        share = float(ray.cluster_resources().get("CPU", 1.0)) / runners
        # Any: Ray's stubs type an actor's methods as plain callables, without their .remote
        Runner: Any = ray.remote(num_cpus=share, scheduling_strategy="SPREAD")(_Runner)
        averager: Any = ray.remote(num_cpus=0)(_Averager).options(max_concurrency=max(4, runners + 2)).remote(set(range(runners)))

        def shard(i: int) -> WorldShard:
            return WorldShard(seed + i, runners, budget_usd, persons, opportunities_per_day, calibration)

        actors: dict[int, Any] = {i: Runner.remote(cfg, shard(i), i, None) for i in range(runners)}
        ray.get([a.ready.remote() for a in actors.values()])
        started = time.perf_counter()  # runners' start-up (a process, torch, a world each) reported apart
        startup_s = started - t1
        refs = {i: a.run.remote(0, days, averager, sync_slots) for i, a in actors.items()}
        reports: list[RunnerReport] = []
        replaced: list[dict[str, int]] = []
        next_index, seen_rounds, killed = runners, 0, False
        while refs:
            ready, _ = ray.wait(list(refs.values()), num_returns=1, timeout=0.5)
            rounds = ray.get(averager.progress.remote())
            while seen_rounds < rounds:
                if on_day is not None:
                    on_day(seen_rounds)
                seen_rounds += 1
            if kill_runner_at_day is not None and not killed and rounds >= kill_runner_at_day and 0 in actors:
                ray.kill(actors[0], no_restart=True)
                killed = True
            for ref in ready:
                i = next(k for k, r in refs.items() if r == ref)
                del refs[i]
                try:
                    reports.append(ray.get(ref))
                except ray.exceptions.RayActorError:
                    # Replace it: a fresh world shard, from the last average, for the days left.
                    ray.get(averager.leave.remote(i))
                    done = ray.get(averager.progress.remote())
                    if done < days:
                        j, next_index = next_index, next_index + 1
                        ray.get(averager.join.remote(j))
                        actors[j] = Runner.remote(cfg, shard(j), j, ray.get(averager.latest.remote()))
                        refs[j] = actors[j].run.remote(done, days - done, averager, sync_slots)
                        replaced.append({"runner": i, "replacement": j, "from_day": done})
                    del actors[i]
        checkpoint = merge_checkpoints(ray.get([a.final_weights.remote() for a in actors.values()]))
        return {"reports": reports, "checkpoint": checkpoint, "ray_start_seconds": ray_start_s,
                "runner_startup_seconds": startup_s, "train_seconds": time.perf_counter() - started, "replaced": replaced,
                "nodes": len([n for n in ray.nodes() if n.get("Alive")])}
    finally:
        if owns:
            ray.shutdown()
