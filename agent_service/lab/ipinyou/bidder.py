"""GAELP's learned bidder for the iPinYou replay: RLB's plan x a learned bid multiplier.

The bid (the multiplier is learned, not raw money)::

    v   = exp(z0 + dz) * theta_avg * c(pctr) / theta_bar   the auction's value, in plan units
    bid = max delta s.t. every d <= delta has  v + V[n-1, b-d] - V[n-1, b] >= 0

``V`` is RLB's value function from the training statistics (what budget is worth with ``n``
auctions left). ``z0`` is an episode-level log multiplier (the dual variable) chosen on
synthetic episodes; ``dz`` is moved at every slot of 100 auctions by a DQN over discrete
adjustments (:mod:`agent_service.agent.learning.dqn`, DRLB-style) from pacing features.
``c`` is the pCTR recalibrated from past clicks (:mod:`simulators.ipinyou.calibration`; its
shape only, the mean is kept; the identity until the first refit). ``z0 = dz = 0`` with
``theta_bar = theta_avg`` and ``c(p) = p`` is exactly RLB.

What it may learn from, and when:

* **offline**: only synthetic episodes from ``info.json`` (:mod:`simulators.ipinyou.market`:
  training price histogram, training CTR, a lognormal pCTR prior, random per-episode market
  and CTR levels);
* **online**: only auctions already past. ``theta_bar`` follows past pCTRs (exponential
  average, half-life 5,000 auctions, starting at the training CTR). After scheduled episodes
  the synthetic market is refitted to the past - prices revealed so far (censored ones count as
  "above the bid") mixed with the training histogram, and the pCTRs seen, reshaped by the
  calibration refitted on the clicks revealed so far - then ``z0`` is re-chosen and the DQN
  trained further on fresh synthetic episodes from that market. The DQN's adjustments are
  served only while they beat plain ``z0`` on held-out synthetic episodes. No outcome of the
  current or a future auction is ever read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent_service.agent.learning.dqn import DQNLearner
from agent_service.lab.ipinyou.config import AgentConfig
from agent_service.lab.ipinyou.multiplier_policy import MultiplierPolicy
from agent_service.lab.ipinyou.price_ctr import PriceClickModel, best_prefix_bid
from agent_service.lab.ipinyou.synthetic import (
    N_FEATURES,
    Plan,
    TrainStats,
    best_multiplier,
    evaluate,
    slot_features,
    train,
)
from simulators.ipinyou.calibration import PctrCalibration
from simulators.ipinyou.data import CampaignInfo
from simulators.ipinyou.market import SyntheticMarket
from simulators.ipinyou.replay import Observation, Outcome
from simulators.ipinyou.rlb import value_function

__all__ = ["GaelpBidder", "PriceModel", "TrainedAgent", "train_offline"]

_CACHE_FORMAT = 3
"""Bumped whenever the training code changes what a cached agent means."""


class PriceModel:
    """Market prices: the training prior updated with revealed, possibly censored, prices.

    A discrete hazard estimate ``h(p) = (d(p) + w m0(p)) / (r(p) + w S0(p))``: ``d(p)`` counts
    revealed prices equal to ``p``, ``r(p)`` the observations known to be ``>= p`` (a revealed
    price ``>= p`` or, under won-only feedback, a lost bid ``c >= p``: the price was above
    ``c``, so it was not ``p`` and it was at least ``p``), ``m0, S0`` the prior pmf and survival, ``w`` the prior weight in auctions. Without
    censoring it is the mixture ``(w m0 + counts) / (w + n)``.

    :param prior_pmf: the training price distribution.
    :param weight: prior weight in auctions.
    """

    def __init__(self, prior_pmf: np.ndarray, weight: float) -> None:
        self.m0 = np.asarray(prior_pmf, dtype=np.float64) / np.sum(prior_pmf)
        self.s0 = np.concatenate([[1.0], 1.0 - np.cumsum(self.m0)[:-1]]).clip(0.0, None)
        self.weight = weight
        self.exact = np.zeros(len(self.m0))
        self.censored = np.zeros(len(self.m0))  # censored[c]: a lost bid c (price > c)

    def observe(self, outcome: Outcome) -> None:
        """Record one past auction's price information."""
        top = len(self.m0) - 1
        if outcome.market_price >= 0:
            self.exact[min(outcome.market_price, top)] += 1
        else:
            self.censored[min(outcome.bid, top)] += 1

    def pmf(self) -> np.ndarray:
        """The posterior price distribution."""
        at_least = np.cumsum(self.exact[::-1])[::-1]  # revealed prices >= p
        cens_tail = np.cumsum(self.censored[::-1])[::-1]  # lost bids >= q
        risk = at_least + cens_tail
        h = (self.exact + self.weight * self.m0) / np.maximum(risk + self.weight * self.s0, 1e-12)
        h = h.clip(0.0, 1.0)
        surv = np.concatenate([[1.0], np.cumprod(1.0 - h)[:-1]])
        m = surv * h
        return m / m.sum()


@dataclass
class TrainedAgent:
    """The offline result: the DQN learner, the chosen z0 and the evidence for both."""

    learner: DQNLearner
    """The DQN (kept training online)."""
    z0: float
    """Episode-level log multiplier chosen on the training market."""
    use_dqn: bool
    """The gate: the DQN beat plain z0 on held-out synthetic episodes."""
    stats: TrainStats = field(default_factory=TrainStats)
    """Offline training statistics."""
    z_scores: dict[float, float] = field(default_factory=dict)
    """Expected clicks per z0 candidate on synthetic episodes."""
    gate_eval: tuple[float, float] = (0.0, 0.0)
    """(plain z0, z0 + DQN) expected clicks on held-out synthetic episodes."""
    from_cache: bool = False
    """Loaded from runs/ instead of trained now."""

    def save(self, path: Path) -> None:
        """Write everything needed to continue exactly as if just trained."""
        lr = self.learner
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "q": lr.q.state_dict(), "target": lr.target.state_dict(), "optim": lr.optim.state_dict(),
            "version": lr.version, "transitions": lr.transitions, "updates": lr.updates, "owed": lr._owed,
            "rng": json.dumps(lr.rng.bit_generator.state),
            "replay": lr.replay, "z0": self.z0, "use_dqn": self.use_dqn,
            "stats": dataclasses.asdict(self.stats), "z_scores": list(self.z_scores.items()),
            "gate_eval": list(self.gate_eval),
        }, path)

    @classmethod
    def load(cls, path: Path, cfg: AgentConfig) -> TrainedAgent:
        """Read an agent written by :meth:`save` (our own cache file, hence full unpickling)."""
        d: dict[str, Any] = torch.load(path, weights_only=False)
        lr = DQNLearner(N_FEATURES, cfg.dqn)
        lr.q.load_state_dict(d["q"])
        lr.target.load_state_dict(d["target"])
        lr.optim.load_state_dict(d["optim"])
        lr.version, lr.transitions, lr.updates, lr._owed = d["version"], d["transitions"], d["updates"], d["owed"]
        lr.rng.bit_generator.state = json.loads(d["rng"])
        lr.replay = d["replay"]
        return cls(lr, d["z0"], d["use_dqn"], TrainStats(**d["stats"]),
                   {float(z): float(s) for z, s in d["z_scores"]}, tuple(d["gate_eval"]), True)


_ONLINE_ONLY = ("finetune_after", "finetune_episodes", "finetune_eps", "pctr_halflife", "price_prior_weight",
                "pctr_pool", "calibrate", "calib_slope_sd", "calib_offset_sd", "replan", "price_ctr",
                "price_ctr_prior")
"""Settings read only during the replay: they do not change the offline-trained agent."""


def _cache_key(info: CampaignInfo, plan: Plan, cfg: AgentConfig, seed: int, episode_length: int) -> str:
    offline = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _ONLINE_ONLY}
    blob = repr((_CACHE_FORMAT, info, plan.budget, plan.max_bid, plan.value_ref, sorted(offline.items()), seed,
                 episode_length))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _init_seed(seed: int) -> int:
    """The network-initialisation seed the bidder has always drawn from ``seed`` (keeps the
    figures in bench/README.md reproducible)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(seed)))


def train_offline(info: CampaignInfo, plan: Plan, cfg: AgentConfig, seed: int, *,
                  episode_length: int = 1000, cache_dir: Path | None = None,
                  retrain: bool = False) -> TrainedAgent:
    """Choose z0 and train the DQN on synthetic episodes from the training statistics only.

    :param info: training statistics.
    :param plan: RLB's value function for this budget.
    :param cfg: agent settings.
    :param seed: seeds every draw (same seed, same agent).
    :param episode_length: N.
    :param cache_dir: if given, reuse/save the trained agent there (keyed by all inputs).
    :param retrain: ignore a cached agent and train from scratch.
    """
    path = None
    if cache_dir is not None:
        path = cache_dir / f"agent-{_cache_key(info, plan, cfg, seed, episode_length)}.pt"
        if path.exists() and not retrain:
            return TrainedAgent.load(path, cfg)
    market = SyntheticMarket.from_info(info, cfg.market)
    theta = info.ctr
    z0, scores = best_multiplier(plan, market, theta, cfg, seed + 1, episode_length=episode_length)
    learner = DQNLearner(N_FEATURES, cfg.dqn, seed=seed, init_seed=_init_seed(seed))
    stats = train(learner, plan, market, theta, z0, cfg, cfg.train_episodes,
                  np.random.default_rng(seed + 2), episode_length=episode_length)
    gate = evaluate(learner, plan, market, theta, z0, cfg, cfg.eval_episodes, seed + 3,
                    episode_length=episode_length)
    agent = TrainedAgent(learner, z0, (not cfg.deploy_gate) or gate[1] > gate[0], stats, scores, gate)
    if path is not None:
        agent.save(path)
    return agent


class GaelpBidder:
    """The replay-time bidder (see the module docstring).

    :param plan: RLB's value function for this budget.
    :param info: training statistics (the priors).
    :param agent: the offline-trained agent (its learner keeps training online).
    :param cfg: agent settings.
    :param seed: seeds the online refits.
    :param episode_length: N.
    """

    def __init__(self, plan: Plan, info: CampaignInfo, agent: TrainedAgent, cfg: AgentConfig,
                 seed: int = 0, *, episode_length: int = 1000) -> None:
        self.plan = plan
        self.info = info
        self.agent = agent
        self.cfg = cfg
        self.seed = seed
        self.episode_length = episode_length
        self.rng = np.random.default_rng(seed + 10)
        self.policy = MultiplierPolicy(N_FEATURES, cfg.dqn)
        self.policy.load(agent.learner.version, agent.learner.weights())
        self.z0 = agent.z0
        self.use_dqn = agent.use_dqn
        self.prices = PriceModel(info.price_pmf(1.0), cfg.price_prior_weight)
        self.pool = np.zeros(cfg.pctr_pool)
        self.pool_n = 0
        self.theta_bar = info.ctr
        self.calib = PctrCalibration(cfg.calib_slope_sd, cfg.calib_offset_sd)
        self._calib: tuple[float, float, float] | None = None  # (a, b, norm) once fitted
        self.price_ctr = PriceClickModel(plan.max_bid, cfg.price_ctr_prior) if cfg.price_ctr else None
        self._price_pmf: np.ndarray | None = None  # set with the price-click factor at the first refit
        self._alpha = 1.0 - 0.5 ** (1.0 / cfg.pctr_halflife)
        self.episodes_done = 0
        self.refit_stats = TrainStats()
        self.history: list[dict[str, float]] = []
        self._dz = 0.0
        self._first = True
        self._last = (0.0, 0.0, 0.0)
        self._slot = [0, 0, 0, 0.0]  # auctions, spend, wins, pCTR sum

    def _decide(self, obs: Observation) -> None:
        spend, wins, pctr = self._last
        f = slot_features(np.array([obs.auctions_left]), np.array([obs.budget_left]),
                          np.array([self._dz]), np.array([spend]), np.array([wins]),
                          np.array([pctr]), np.array([self._first]),
                          episode_length=self.episode_length, budget=self.plan.budget,
                          slot_length=self.cfg.slot_length, theta_bar=self.theta_bar)
        self._first = False
        if self.use_dqn:
            act = self.policy.actions(f)
            if self.cfg.absolute_actions:
                self._dz = float(np.asarray(self.cfg.dqn.adjustments)[act[0]])
            else:
                self._dz = float(self.policy.next_z(np.array([self._dz]), act)[0])

    def bid(self, obs: Observation) -> int:
        """RLB's rule on ``exp(z0 + dz) * theta_avg * pctr / theta_bar`` (dz set at slot starts)."""
        if self._slot[0] == 0:
            self._decide(obs)
        pctr = obs.pctr
        if self._calib is not None:  # the recalibrated shape: s(pCTR) * pCTR, same mean
            a, b, norm = self._calib
            q = min(max(pctr, 1e-7), 1 - 1e-7)
            pctr = norm / (1.0 + math.exp(-(a * math.log(q / (1 - q)) + b)))
        v = np.exp(self.z0 + self._dz) * self.plan.value_ref / self.theta_bar * pctr
        row = self.plan.table[obs.auctions_left - 1]
        b = obs.budget_left
        if self.price_ctr is not None and self._price_pmf is not None:
            return best_prefix_bid(float(v), self.price_ctr.factor, self._price_pmf, row, b, self.plan.max_bid)
        seg = v + row[max(b - self.plan.max_bid, 0):b][::-1] - row[b]  # d = 1 .. min(b, max_bid)
        fail = np.flatnonzero(seg < 0)
        return int(fail[0]) if fail.size else int(seg.size)

    def observe(self, outcome: Outcome) -> None:
        """Learn from the auction just past; refit at the end of scheduled episodes."""
        self.theta_bar += self._alpha * (outcome.pctr - self.theta_bar)
        self.pool[self.pool_n % len(self.pool)] = outcome.pctr
        self.pool_n += 1
        self.prices.observe(outcome)
        self.calib.observe(outcome.pctr, outcome.click)
        if self.price_ctr is not None:
            self.price_ctr.observe(outcome.won, outcome.cost, outcome.pctr, outcome.click)
        s = self._slot
        s[0] += 1
        s[1] += outcome.cost
        s[2] += int(outcome.won)
        s[3] += outcome.pctr
        if s[0] >= self.cfg.slot_length or outcome.episode_end:
            self._last = (float(s[1]), float(s[2]), s[3] / s[0])
            self._slot = [0, 0, 0, 0.0]
        if outcome.episode_end:
            self.episodes_done += 1
            self._dz = 0.0
            self._first = True
            if self.episodes_done in self.cfg.finetune_after:
                self.refit()

    def refit(self) -> None:
        """Refit the synthetic market to the past, re-choose z0, train the DQN further, re-gate."""
        pool = self.pool[: min(self.pool_n, len(self.pool))]
        if self.cfg.calibrate:  # train on pCTRs as the bidder will now read them
            a, b = self.calib.fit()
            calibrated = self.calib.calibrated(pool)
            norm = float(pool.mean() / calibrated.mean())
            self._calib = (a, b, norm)
            pool = calibrated * norm  # = pool * calib.shape(pool, pool), the mean kept
        theta = float(pool.mean())
        if self.price_ctr is not None:  # the won auctions' clicks by price, on the pCTR as now read
            won = self.price_ctr.won_pctrs
            self.price_ctr.fit(self.calib.calibrated(won) if self.cfg.calibrate else won)
            self._price_pmf = self.prices.pmf()
        if self.cfg.replan:  # RLB's value function from the censored price model, not the training histogram
            pmf = self.prices.pmf()
            self.plan = self.plan._replace(table=value_function(pmf, self.episode_length, self.plan.budget,
                                                                self.plan.value_ref, self.plan.max_bid))
        market = SyntheticMarket(self.prices.pmf(), theta,
                                 dataclasses.replace(self.cfg.market, price_laplace=0.0), pctr_pool=pool)
        seed = self.seed + 100 * self.episodes_done
        self.z0, _ = best_multiplier(self.plan, market, theta, self.cfg, seed,
                                     episode_length=self.episode_length)
        gate = (0.0, 0.0)
        if self.cfg.finetune_episodes:
            train(self.agent.learner, self.plan, market, theta, self.z0, self.cfg,
                  self.cfg.finetune_episodes, self.rng, episode_length=self.episode_length,
                  eps=self.cfg.finetune_eps, stats=self.refit_stats)
            self.policy.load(self.agent.learner.version, self.agent.learner.weights())
            gate = evaluate(self.agent.learner, self.plan, market, theta, self.z0, self.cfg,
                            self.cfg.eval_episodes, seed + 1, episode_length=self.episode_length)
            self.use_dqn = (not self.cfg.deploy_gate) or gate[1] > gate[0]
        a, b, _ = self._calib or (1.0, 0.0, 1.0)
        self.history.append({"episode": self.episodes_done, "z0": self.z0, "theta_bar": self.theta_bar,
                             "calib_slope": a, "calib_offset": b,
                             "gate_base": gate[0], "gate_dqn": gate[1], "use_dqn": float(self.use_dqn)})
