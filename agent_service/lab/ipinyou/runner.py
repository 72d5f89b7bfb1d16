"""Run one policy of the iPinYou replay and report it (shared by ``gaelp bench`` and ``bench/``).

Policies:

* ``const`` - a fixed bid (``const_bid``, or the one maximising expected clicks on synthetic
  training episodes);
* ``lin`` - linear bidding, b0 tuned on synthetic training episodes only;
* ``lin-oracle`` - linear bidding with b0 tuned **on the test log's own clicks** (grid of the
  published code, step 6): an upper bound for LIN, not a fair result;
* ``rlb`` - Cai et al.'s dynamic program from the training statistics;
* ``agent`` - GAELP's bidder (:mod:`agent_service.lab.ipinyou.bidder`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent_service.errors import ConfigError
from simulators.ipinyou.baselines import (
    ConstBidder,
    LinearBidder,
    tune_b0_on_log,
    tune_b0_simulated,
    tune_const_simulated,
)
from simulators.ipinyou.config import TEST_LOG_SHA256
from simulators.ipinyou.data import AuctionLog, CampaignInfo
from simulators.ipinyou.replay import ReplayResult, episode_budget, replay, replay_vectorised
from simulators.ipinyou.rlb import RLBBidder, value_function

__all__ = ["LEDGER", "POLICIES", "TableCache", "format_table", "is_test_log", "paired_bootstrap", "record_test_run",
           "run_policy"]

POLICIES: tuple[str, ...] = ("const", "lin", "lin-oracle", "rlb", "agent")
"""Policy names accepted by :func:`run_policy`."""


LEDGER = Path("bench") / "ledgers" / "ipinyou-2997.jsonl"
"""The committed test-run ledger, relative to the repository root."""


def is_test_log(path: Path) -> bool:
    """Whether the log file (or the ``test.theta.txt`` in a folder) holds the test log's bytes."""
    p = path / "test.theta.txt" if path.is_dir() else path
    return p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == TEST_LOG_SHA256


def record_test_run(log_path: Path, root: Path, config: dict[str, Any], result: dict[str, Any],
                    ledger_file: Path | None = None) -> dict[str, Any] | None:
    """Append a run to the ledger if it ran on the test log (by content, not by name): every test
    run is on record with its commit and config hash; runs on other logs (validation) are not.

    :param log_path: the log replayed (file or folder).
    :param root: the repository root (its commit is recorded).
    :param config: everything that selects the run.
    :param result: the clicks (and whatever else is worth keeping).
    :param ledger_file: the ledger (default ``root / LEDGER``).
    :returns: the ledger entry, or None for a log that is not the test log.
    """
    if not is_test_log(log_path):
        return None
    from agent_service.lab import ledger

    return ledger.append(ledger_file or root / LEDGER, root, config, result)


class TableCache:
    """RLB value functions by (budget, N, max_bid), so that rlb and agent share one DP."""

    def __init__(self) -> None:
        self._tables: dict[tuple[int, int, int], np.ndarray] = {}
        self.seconds = 0.0

    def get(self, info: CampaignInfo, budget: int, episode_length: int, max_bid: int) -> np.ndarray:
        """V for this budget (computed on first use)."""
        key = (budget, episode_length, max_bid)
        if key not in self._tables:
            t0 = time.perf_counter()
            self._tables[key] = value_function(info.price_pmf(1.0), episode_length, budget, info.ctr, max_bid)
            self.seconds += time.perf_counter() - t0
        return self._tables[key]

    def drop(self) -> None:
        """Free the tables (the largest is ~250 MB)."""
        self._tables.clear()


def _summary(policy: str, c0: float, res: ReplayResult, seconds: float, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"policy": policy, "c0": c0}
    out.update(res.summary())
    out["seconds"] = round(seconds, 3)
    out["episode_clicks"] = list(res.episode_clicks)
    out.update(extra)
    return out


def run_policy(policy: str, log: AuctionLog, info: CampaignInfo, c0: float, *, seed: int = 0,
               episode_length: int = 1000, max_bid: int = 300, feedback: str = "won",
               const_bid: int | None = None, cache_dir: Path | None = None, retrain: bool = False,
               tables: TableCache | None = None, agent_overrides: dict[str, Any] | None = None,
               ) -> dict[str, Any]:
    """Replay ``policy`` at budget ratio ``c0`` and return its report (JSON-ready).

    :param policy: one of :data:`POLICIES`.
    :param log: the test log.
    :param info: training statistics.
    :param c0: budget ratio.
    :param seed: seeds everything random (synthetic episodes, DQN).
    :param episode_length: N.
    :param max_bid: bid cap.
    :param feedback: what the agent learns after each auction (``full`` or ``won``).
    :param const_bid: the constant bid (None: tuned on synthetic training episodes).
    :param cache_dir: where trained agents are cached (None: no cache).
    :param retrain: train the agent from scratch even if cached.
    :param tables: shared RLB value functions.
    :param agent_overrides: fields of :class:`~agent_service.lab.ipinyou.config.AgentConfig` to change.
    """
    if policy not in POLICIES:
        raise ConfigError("bench.policy", f"must be one of {POLICIES}")
    budget = episode_budget(info, c0, episode_length)
    tables = tables or TableCache()
    t0 = time.perf_counter()
    if policy == "const":
        bid = const_bid if const_bid is not None else tune_const_simulated(
            info, budget, episode_length=episode_length, seed=seed, max_bid=max_bid)
        res = replay_vectorised(log, budget, ConstBidder(bid).bids, episode_length=episode_length,
                                max_bid=max_bid)
        return _summary(policy, c0, res, time.perf_counter() - t0, bid=bid,
                        bid_source="given" if const_bid is not None else "synthetic-train")
    if policy == "lin":
        b0 = tune_b0_simulated(info, budget, episode_length=episode_length, seed=seed, max_bid=max_bid)
        res = replay_vectorised(log, budget, LinearBidder(b0, info.ctr, max_bid).bids,
                                episode_length=episode_length, max_bid=max_bid)
        return _summary(policy, c0, res, time.perf_counter() - t0, b0=b0, b0_source="synthetic-train")
    if policy == "lin-oracle":
        b0, _ = tune_b0_on_log(log, budget, info.ctr, episode_length=episode_length, step=6, max_bid=max_bid)
        b0_int, clicks_int = tune_b0_on_log(log, budget, info.ctr, episode_length=episode_length, step=1,
                                            max_bid=max_bid)
        res = replay_vectorised(log, budget, LinearBidder(b0, info.ctr, max_bid).bids,
                                episode_length=episode_length, max_bid=max_bid)
        return _summary(policy, c0, res, time.perf_counter() - t0, b0=b0,
                        b0_source="ORACLE: tuned on the test log's clicks (upper bound, not a result)",
                        integer_grid_b0=b0_int, integer_grid_clicks=clicks_int)
    table = tables.get(info, budget, episode_length, max_bid)
    if policy == "rlb":
        res = replay_vectorised(log, budget, RLBBidder(table, max_bid).bids,
                                episode_length=episode_length, max_bid=max_bid)
        return _summary(policy, c0, res, time.perf_counter() - t0, dp_seconds=round(tables.seconds, 3))
    return _run_agent(log, info, c0, budget, table, seed=seed, episode_length=episode_length,
                      max_bid=max_bid, feedback=feedback, cache_dir=cache_dir, retrain=retrain,
                      overrides=agent_overrides or {}, t0=t0)


def _run_agent(log: AuctionLog, info: CampaignInfo, c0: float, budget: int, table: np.ndarray, *,
               seed: int, episode_length: int, max_bid: int, feedback: str, cache_dir: Path | None,
               retrain: bool, overrides: dict[str, Any], t0: float) -> dict[str, Any]:
    import dataclasses

    import torch

    from agent_service.lab.ipinyou.bidder import GaelpBidder, train_offline
    from agent_service.lab.ipinyou.config import AgentConfig
    from agent_service.lab.ipinyou.synthetic import Plan

    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a tiny MLP: one thread is as fast, and results do not depend on cores
    cfg = dataclasses.replace(AgentConfig(), **overrides)
    plan = Plan(table, info.ctr, budget, max_bid)
    trained = train_offline(info, plan, cfg, seed, episode_length=episode_length, cache_dir=cache_dir,
                            retrain=retrain)
    t_replay = time.perf_counter()
    bidder = GaelpBidder(plan, info, trained, cfg, seed, episode_length=episode_length)
    res = replay(log, budget, bidder, episode_length=episode_length, max_bid=max_bid, feedback=feedback)
    replay_s = time.perf_counter() - t_replay
    st, rs = trained.stats, bidder.refit_stats
    return _summary(
        "agent", c0, res, time.perf_counter() - t0, feedback=feedback, seed=seed,
        train_seconds=round(st.seconds, 3), train_transitions=st.transitions,
        train_transitions_per_s=round(st.transitions_per_s, 1), train_updates=st.updates,
        train_sim_auctions=st.sim_auctions, from_cache=trained.from_cache,
        z0_offline=trained.z0, dqn_gate_offline=[round(x, 3) for x in trained.gate_eval],
        dqn_served_offline=trained.use_dqn,
        online_seconds=round(replay_s, 3), online_refit_seconds=round(rs.seconds, 3),
        online_refit_transitions=rs.transitions, online_refit_transitions_per_s=round(rs.transitions_per_s, 1),
        refits=bidder.history, overrides={k: repr(v) for k, v in overrides.items()},
    )


def paired_bootstrap(a: list[int], b: list[int], *, draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """Clicks of ``a`` minus ``b`` with a 95% interval from resampling episodes (paired).

    :param a: clicks per episode of one policy.
    :param b: clicks per episode of the other (same episodes).
    :param draws: bootstrap resamples.
    :param seed: seed of the resampling.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(draws, len(d)))
    tot = d[idx].sum(axis=1)
    return {"diff": float(d.sum()), "lo": float(np.percentile(tot, 2.5)), "hi": float(np.percentile(tot, 97.5))}


def format_table(rows: list[dict[str, Any]]) -> str:
    """A small fixed-width table of results."""
    head = f"{'policy':<11} {'c0':>8} {'B':>6} {'auctions':>8} {'imps':>7} {'clicks':>6} {'cost':>9} " \
           f"{'win%':>6} {'CPM':>7} {'eCPC':>7} {'sec':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ecpc = f"{r['ecpc']:.2f}" if r.get("ecpc") is not None else "inf"
        lines.append(f"{r['policy']:<11} {r['c0']:>8.5f} {r['budget']:>6} {r['auctions']:>8} "
                     f"{r['impressions']:>7} {r['clicks']:>6} {r['cost']:>9} {100 * r['win_rate']:>6.2f} "
                     f"{r['cpm']:>7.2f} {ecpc:>7} {r['seconds']:>7.1f}")
    return "\n".join(lines)
