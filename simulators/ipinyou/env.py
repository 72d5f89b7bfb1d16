"""``IPinYouEnv``: the replay as a ``gymnasium.Env`` (one env episode = one replay episode).

Observation (float32 Box): ``[pctr, budget_left, auctions_left]`` in raw units (pCTR in
[0, 1], budget in price units 0..B, auctions 0..N), plus with ``past_features=True``
``[win_rate, mean_paid, last_won]`` of the episode so far (known under any feedback mode).
Action: the integer bid, ``Discrete(max_bid + 1)``; the env caps it at the budget left.
Reward: the click (1/0) of a won impression. ``info`` carries the revealed outcome of the
auction just run (a *past* auction by the time the next observation is read).

An episode ends with ``terminated=True`` after its N auctions (time left is in the state, so
the end is a true terminal state). The log's last, partial episode ends early with
``truncated=True``. Running out of budget does not end an episode (a bid of 0 can still win
a price-0 auction), as in the protocol.

``reset(seed=s)`` restarts at episode 0 (or, with ``random_episodes=True``, an episode drawn
from ``s``); ``reset()`` without a seed moves on to the next episode;
``options={"episode": k}`` picks episode ``k``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from agent_service.errors import ConfigError
from simulators.ipinyou.data import AuctionLog

__all__ = ["IPinYouEnv"]


class IPinYouEnv(gym.Env[np.ndarray, np.int64]):
    """The iPinYou replay protocol, one auction per step.

    :param log: auctions in time order.
    :param budget: per-episode budget B.
    :param episode_length: N.
    :param max_bid: bid cap (action space size - 1).
    :param past_features: append ``[win_rate, mean_paid, last_won]`` to the observation.
    :param random_episodes: draw the episode at each reset instead of going in order.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, log: AuctionLog, budget: int, *, episode_length: int = 1000,
                 max_bid: int = 300, past_features: bool = False,
                 random_episodes: bool = False) -> None:
        if budget < 0:
            raise ConfigError("ipinyou.budget", "must be >= 0")
        if episode_length <= 0:
            raise ConfigError("ipinyou.episode_length", "must be > 0")
        self.log = log
        self.budget = int(budget)
        self.episode_length = episode_length
        self.max_bid = max_bid
        self.past_features = past_features
        self.random_episodes = random_episodes
        self.n_episodes = -(-len(log) // episode_length)
        low = [0.0, 0.0, 0.0]
        high = [1.0, float(budget), float(episode_length)]
        if past_features:
            low += [0.0, 0.0, 0.0]
            high += [1.0, float(max_bid), 1.0]
        self.observation_space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Discrete(max_bid + 1)
        self._episode = -1
        self._pos = 0
        self._start = 0
        self._stop = 0
        self._b = self.budget
        self._wins = 0
        self._paid = 0
        self._last_won = 0

    # -- helpers -----------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        i = self._start + self._pos
        pctr = float(self.log.pctr[i]) if i < self._stop else 0.0
        feats = [pctr, float(self._b), float(self.episode_length - self._pos)]
        if self.past_features:
            rate = self._wins / self._pos if self._pos else 0.0
            mean_paid = self._paid / self._wins if self._wins else 0.0
            feats += [rate, mean_paid, float(self._last_won)]
        return np.asarray(feats, dtype=np.float32)

    def _info(self) -> dict[str, Any]:
        return {"episode": self._episode, "budget_left": self._b,
                "auctions_left": self.episode_length - self._pos, "index": self._start + self._pos}

    # -- gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (see the module docstring for which one)."""
        super().reset(seed=seed)
        if options and "episode" in options:
            ep = int(options["episode"])
            if not 0 <= ep < self.n_episodes:
                raise ConfigError("options.episode", f"must be in 0..{self.n_episodes - 1}")
        elif self.random_episodes:
            ep = int(self.np_random.integers(self.n_episodes))
        elif seed is not None:
            ep = 0
        else:
            ep = (self._episode + 1) % self.n_episodes
        self._episode = ep
        self._start = ep * self.episode_length
        self._stop = min(self._start + self.episode_length, len(self.log))
        self._pos = 0
        self._b = self.budget
        self._wins = self._paid = self._last_won = 0
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run one auction with bid ``action``."""
        if self._episode < 0:
            raise RuntimeError("call reset() before step()")
        i = self._start + self._pos
        if i >= self._stop:
            raise RuntimeError("episode is over; call reset()")
        bid = max(0, min(int(action), self._b, self.max_bid))
        price = int(self.log.price[i])
        click = int(self.log.click[i])
        won = bid >= price
        reward = 0.0
        if won:
            self._b -= price
            self._wins += 1
            self._paid += price
            reward = float(click)
        self._last_won = int(won)
        self._pos += 1
        terminated = self._pos >= self.episode_length
        truncated = not terminated and self._start + self._pos >= self._stop
        info = self._info()
        info.update({"bid": bid, "won": won, "cost": price if won else 0, "click": click,
                     "market_price": price})
        return self._obs(), reward, terminated, truncated, info
