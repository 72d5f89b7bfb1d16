"""Synthetic-episode training of GAELP's iPinYou bidder (pure numpy + the DQN learner).

The bidder (see :mod:`agent_service.lab.ipinyou.bidder`) bids RLB's rule on the value
``exp(z) * pctr / theta_bar`` (in units of the plan's ``theta_avg``); ``z = z0 + dz`` where
``z0`` is an episode-level log multiplier (the dual variable) and ``dz`` the DQN's running sum
of slot adjustments. Everything here runs E synthetic episodes in lockstep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agent_service.agent.learning.buffers import SlotTransition
from agent_service.agent.learning.dqn import DQNLearner
from agent_service.lab.ipinyou.config import AgentConfig
from simulators.ipinyou.market import EpisodeBatch, SyntheticMarket
from simulators.ipinyou.rlb import rlb_bids

__all__ = [
    "N_FEATURES",
    "Plan",
    "SimResult",
    "TrainStats",
    "best_multiplier",
    "evaluate",
    "simulate",
    "slot_features",
    "train",
]

N_FEATURES = 8
"""Length of the pacing feature vector (see :func:`slot_features`)."""


class Plan(NamedTuple):
    """The fixed part of the bid: RLB's value function and how to read it."""

    table: np.ndarray
    """RLB value function V, shape (N, B+1)."""
    value_ref: float
    """The per-impression value V was built with (theta_avg)."""
    budget: int
    """B."""
    max_bid: int
    """Bid cap."""


def slot_features(n_left: np.ndarray, b_left: np.ndarray, dz: np.ndarray, last_spend: np.ndarray,
                  last_wins: np.ndarray, last_pctr: np.ndarray, first: np.ndarray, *,
                  episode_length: int, budget: int, slot_length: int,
                  theta_bar: float) -> np.ndarray:
    """Pacing features, float32 [E, 8].

    ``[time left, budget left, budget left - time left, last slot spend / planned spend,
    4 x last slot win rate, last slot mean pCTR / theta_bar - 1, dz, first slot]``

    :param n_left: auctions left in the episode [E].
    :param b_left: budget left [E].
    :param dz: the DQN's current adjustment of the log multiplier [E].
    :param last_spend: spend in the last slot [E].
    :param last_wins: impressions won in the last slot [E].
    :param last_pctr: mean pCTR of the last slot's auctions [E].
    :param first: True where no slot has been played yet [E].
    :param episode_length: N.
    :param budget: B.
    :param slot_length: auctions per slot.
    :param theta_bar: the current pCTR level.
    """
    t = n_left / episode_length
    bl = b_left / max(budget, 1)
    plan = max(budget * slot_length / episode_length, 1e-9)
    return np.stack([
        t, bl, bl - t, np.where(first, 1.0, last_spend / plan),
        np.where(first, 1.0, 4.0 * last_wins / slot_length),
        np.where(first, 0.0, last_pctr / theta_bar - 1.0), dz, first.astype(np.float64),
    ], axis=1).astype(np.float32)


class SimResult(NamedTuple):
    """Totals of a batch of synthetic episodes."""

    expected_clicks: float
    """Sum of the true click probabilities of won impressions."""
    cost: float
    """Total spend."""
    transitions: SlotTransition | None
    """Slot transitions (None unless recording)."""


def _auction(plan: Plan, mult: np.ndarray, pctr: np.ndarray, b: np.ndarray, n_left: int,
             price: np.ndarray) -> np.ndarray:
    """One auction in every episode: returns the won mask (budgets updated in place)."""
    bids = rlb_bids(plan.table, mult * pctr, b, np.full(len(b), n_left), plan.max_bid)
    won = np.minimum(bids, b) >= price
    b -= np.where(won, price, 0)
    return won


def simulate(plan: Plan, batch: EpisodeBatch, theta_bar: float, z0: float, cfg: AgentConfig, *,
             learner: DQNLearner | None, eps: float, rng: np.random.Generator,
             record: bool) -> SimResult:
    """Run E synthetic episodes in lockstep; the DQN (if any) adjusts z around ``z0`` per slot.

    :param plan: RLB's value function and its scale.
    :param batch: the synthetic episodes, arrays [E, N].
    :param theta_bar: the pCTR level the bidder normalises by.
    :param z0: the episode-level log multiplier.
    :param cfg: agent settings.
    :param learner: the DQN (None: z stays at z0).
    :param eps: exploration probability.
    :param rng: exploration randomness.
    :param record: collect slot transitions (rewards with the control variate if configured).
    """
    n_ep, length = batch.price.shape
    k = cfg.slot_length
    adj = np.asarray(cfg.dqn.adjustments)
    keep = int(np.argmin(np.abs(adj)))
    base_mult = np.full(n_ep, np.exp(z0) * plan.value_ref / theta_bar)
    b = np.full(n_ep, plan.budget, dtype=np.int64)
    b_base = b.copy()
    dz = np.zeros(n_ep)
    last_spend, last_wins, last_pctr = np.zeros(n_ep), np.zeros(n_ep), np.zeros(n_ep)
    first = np.ones(n_ep, dtype=bool)
    total = 0.0
    cv = record and cfg.control_variate
    feat = dict(episode_length=length, budget=plan.budget, slot_length=k, theta_bar=theta_bar)
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, length, k):
        stop = min(start + k, length)
        obs = slot_features(np.full(n_ep, length - start), b, dz, last_spend, last_wins, last_pctr,
                            first, **feat)
        if learner is not None:
            act, _ = learner.act(obs, eps, rng)
            dz = adj[act] if cfg.absolute_actions else np.clip(dz + adj[act], cfg.dqn.z_min, cfg.dqn.z_max)
        else:
            act = np.full(n_ep, keep)
        mult = base_mult * np.exp(dz)
        spend0 = b.copy()
        wins, value, base_value = np.zeros(n_ep), np.zeros(n_ep), np.zeros(n_ep)
        for j in range(start, stop):
            won = _auction(plan, mult, batch.pctr[:, j], b, length - j, batch.price[:, j])
            wins += won
            value += np.where(won, batch.ctr[:, j], 0.0)
            if cv:
                # WARNING: the same auctions bid with the plain z0: an action-independent control
                # variate subtracted from the reward (the optimal policy is unchanged).
                won0 = _auction(plan, base_mult, batch.pctr[:, j], b_base, length - j, batch.price[:, j])
                base_value += np.where(won0, batch.ctr[:, j], 0.0)
        total += float(value.sum())
        last_spend = (spend0 - b).astype(np.float64)
        last_wins = wins
        last_pctr = batch.pctr[:, start:stop].mean(axis=1)
        first = np.zeros(n_ep, dtype=bool)
        if record:
            nxt = slot_features(np.full(n_ep, length - stop), b, dz, last_spend, last_wins, last_pctr,
                                first, **feat)
            reward = (value - base_value) * 10.0 / (theta_bar * k)
            parts.append((obs, act, reward.astype(np.float32), nxt,
                          np.full(n_ep, float(stop >= length), np.float32), np.zeros(n_ep, np.float32)))
    trans = None
    if record:
        trans = SlotTransition(*(np.concatenate(p) for p in zip(*parts, strict=True)))
        trans = trans._replace(action=trans.action.astype(np.int64))
    return SimResult(total, float(n_ep * plan.budget - b.sum()), trans)


@dataclass
class TrainStats:
    """What training did (for the report)."""

    seconds: float = 0.0
    """Wall time of training (simulation + updates)."""
    transitions: int = 0
    """Slot transitions collected and trained on."""
    updates: int = 0
    """Gradient updates."""
    sim_auctions: int = 0
    """Synthetic auctions simulated."""
    last_td_loss: float = 0.0
    """TD loss of the last update."""

    @property
    def transitions_per_s(self) -> float:
        """Transitions per second of training."""
        return self.transitions / self.seconds if self.seconds > 0 else 0.0


def train(learner: DQNLearner, plan: Plan, market: SyntheticMarket, theta_bar: float, z0: float,
          cfg: AgentConfig, episodes: int, rng: np.random.Generator, *, episode_length: int = 1000,
          eps: float | None = None, stats: TrainStats | None = None) -> TrainStats:
    """Train ``learner`` on ``episodes`` synthetic episodes from ``market``.

    :param learner: the DQN (updated in place).
    :param plan: RLB's value function.
    :param market: where synthetic episodes come from.
    :param theta_bar: pCTR level the bidder normalises by.
    :param z0: the episode-level log multiplier the DQN adjusts around.
    :param cfg: agent settings.
    :param episodes: how many synthetic episodes.
    :param rng: all randomness (episodes and exploration).
    :param episode_length: N.
    :param eps: fixed exploration (None: the learner's schedule).
    :param stats: accumulate into these.
    """
    stats = stats or TrainStats()
    t0 = time.perf_counter()
    done = 0
    while done < episodes:
        e = min(cfg.parallel_episodes, episodes - done)
        batch = market.sample(e, episode_length, rng, max_price=plan.max_bid)
        explore = cfg.dqn.epsilon(learner.transitions) if eps is None else eps
        res = simulate(plan, batch, theta_bar, z0, cfg, learner=learner, eps=explore, rng=rng,
                       record=True)
        assert res.transitions is not None
        upd = learner.observe(res.transitions)
        stats.transitions += len(res.transitions.action)
        stats.updates += len(upd)
        if upd:
            stats.last_td_loss = upd[-1].td_loss
        stats.sim_auctions += e * episode_length
        done += e
    stats.seconds += time.perf_counter() - t0
    return stats


def evaluate(learner: DQNLearner, plan: Plan, market: SyntheticMarket, theta_bar: float, z0: float,
             cfg: AgentConfig, episodes: int, seed: int, *,
             episode_length: int = 1000) -> tuple[float, float]:
    """Expected clicks of (plain z0, z0 + greedy DQN) on the same held-out synthetic episodes."""
    batch = market.sample(episodes, episode_length, np.random.default_rng(seed), max_price=plan.max_bid)
    rng = np.random.default_rng(seed)
    base = simulate(plan, batch, theta_bar, z0, cfg, learner=None, eps=0.0, rng=rng, record=False)
    learned = simulate(plan, batch, theta_bar, z0, cfg, learner=learner, eps=0.0, rng=rng, record=False)
    return base.expected_clicks, learned.expected_clicks


def best_multiplier(plan: Plan, market: SyntheticMarket, theta_bar: float, cfg: AgentConfig,
                    seed: int, *, episode_length: int = 1000) -> tuple[float, dict[float, float]]:
    """The z0 in ``cfg.z_grid`` with the most expected clicks on common synthetic episodes.

    Ties (within 0.1%) go to the candidate closest to 0 (the plain plan).

    :returns: ``(z0, {z: expected clicks})``.
    """
    batch = market.sample(cfg.z_episodes, episode_length, np.random.default_rng(seed),
                          max_price=plan.max_bid)
    rng = np.random.default_rng(seed)
    scores = {z: simulate(plan, batch, theta_bar, z, cfg, learner=None, eps=0.0, rng=rng,
                          record=False).expected_clicks for z in cfg.z_grid}
    top = max(scores.values())
    z0 = min((z for z, s in scores.items() if s >= top * 0.999), key=abs)
    return float(z0), scores
