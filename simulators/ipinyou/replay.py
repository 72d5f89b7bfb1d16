"""The iPinYou replay protocol, step by step and vectorised.

Conventions, each as in the published RLB code (``han-cai/rlb-dp``, ``python/rlb_dp_i.py``
``RLB_DP_I.run`` and ``python/bid_ss.py``), which we follow exactly:

* The log is cut into episodes of ``N`` consecutive auctions in time order. The last episode
  is partial (156,063 = 156 x 1000 + 63) and **counts**: it starts with the full budget ``B``
  (not scaled down to its length) and the bidder's ``auctions_left`` counts down from ``N``
  as in every other episode (the code's ``n`` is reset to ``N``; the log simply ends).
* ``B = int(CPM_train * c0 * N)`` with ``CPM_train = cost_train / imp_train`` computed first
  (the code's ``int(self.cpm * c0 * N)``); the same ``B`` for every episode.
* Each bid is an integer, capped at ``max_bid`` (300) and at the budget left:
  ``a = min(int(a), min(b, max_bid))``.
* The bid wins when ``a >= market_price`` (ties win) and the winner pays the market price.
* Reported: auctions, impressions, clicks, cost, win rate, CPM = cost / impressions and
  eCPC = (cost / 1000) / clicks (the code's formulas, prices being per mille).

A bidder sees an :class:`Observation` before each auction and an :class:`Outcome` after it.
With ``feedback="full"`` the outcome reveals the click and market price of every auction (the
log has them); with ``feedback="won"`` a lost auction reveals only that the price was above
the bid and no click (what a real bidder learns).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from agent_service.errors import ConfigError
from simulators.ipinyou.config import FEEDBACK_MODES
from simulators.ipinyou.data import AuctionLog, CampaignInfo

__all__ = [
    "Bidder",
    "BidFn",
    "Observation",
    "Outcome",
    "ReplayResult",
    "episode_budget",
    "replay",
    "replay_vectorised",
]


class Observation(NamedTuple):
    """What a bidder may know before an auction."""

    pctr: float
    """Predicted CTR of this auction."""
    budget_left: int
    """Budget left in this episode."""
    auctions_left: int
    """Auctions left in this episode including this one (N minus those already run)."""
    budget: int
    """The episode budget B."""
    episode: int
    """Episode index (0-based)."""
    auction_index: int
    """Global auction index in the log (time)."""


class Outcome(NamedTuple):
    """What a bidder learns after an auction (see the module docstring on feedback)."""

    bid: int
    """The bid actually sent (after the caps)."""
    won: bool
    """Whether the bid won the impression."""
    cost: int
    """Price paid (the market price if won, else 0)."""
    click: int
    """1/0 when revealed; -1 when not revealed (a lost auction under ``feedback="won"``)."""
    market_price: int
    """The market price when revealed; -1 when censored (lost under ``feedback="won"``:
    the price was above ``bid``)."""
    pctr: float
    """The auction's pCTR (repeated for convenience)."""
    episode_end: bool
    """True for the last auction of an episode."""


@runtime_checkable
class Bidder(Protocol):
    """A bidding policy in the replay: decide before, learn after."""

    def bid(self, obs: Observation) -> int:
        """The bid for this auction (the replay caps it at max_bid and the budget left)."""
        ...

    def observe(self, outcome: Outcome) -> None:
        """Learn from the auction that just ended (only past auctions are ever revealed)."""
        ...


BidFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""A policy stateless per auction: ``(pctr[E], budget_left[E], auctions_left[E]) -> bids[E]``."""


@dataclass(frozen=True)
class ReplayResult:
    """Totals of one replay, with the per-episode clicks and cost for intervals."""

    auctions: int
    """Auctions replayed."""
    impressions: int
    """Auctions won."""
    clicks: int
    """Clicks on won impressions (the objective)."""
    cost: int
    """Total price paid."""
    episodes: int
    """Episodes (the last may be partial)."""
    budget: int
    """Per-episode budget B."""
    episode_clicks: tuple[int, ...]
    """Clicks per episode."""
    episode_cost: tuple[int, ...]
    """Cost per episode."""

    @property
    def win_rate(self) -> float:
        """Impressions / auctions."""
        return self.impressions / self.auctions if self.auctions else 0.0

    @property
    def cpm(self) -> float:
        """Cost per impression in price units (per mille prices: cost per thousand)."""
        return self.cost / self.impressions if self.impressions else 0.0

    @property
    def ecpc(self) -> float:
        """Effective cost per click, (cost / 1000) / clicks as in the published code."""
        return (self.cost / 1000) / self.clicks if self.clicks else math.inf

    def summary(self) -> dict[str, float | int]:
        """The totals as a JSON-ready mapping."""
        return {
            "auctions": self.auctions,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "cost": self.cost,
            "win_rate": round(self.win_rate, 6),
            "cpm": round(self.cpm, 4),
            "ecpc": round(self.ecpc, 4) if self.clicks else None,  # type: ignore[dict-item]
            "episodes": self.episodes,
            "budget": self.budget,
        }


def episode_budget(info: CampaignInfo, c0: float, episode_length: int = 1000) -> int:
    """Per-episode budget ``B = int(CPM_train * c0 * N)``, evaluated as the published code does.

    :param info: training statistics (CPM_train = cost_train / imp_train).
    :param c0: budget ratio, e.g. 1/32.
    :param episode_length: N.
    """
    if c0 <= 0:
        raise ConfigError("ipinyou.c0", "must be > 0")
    return int(info.cpm * c0 * episode_length)


def _check(episode_length: int, max_bid: int, feedback: str) -> None:
    if episode_length <= 0:
        raise ConfigError("ipinyou.episode_length", "must be > 0")
    if max_bid <= 0:
        raise ConfigError("ipinyou.max_bid", "must be > 0")
    if feedback not in FEEDBACK_MODES:
        raise ConfigError("ipinyou.feedback", f"must be one of {FEEDBACK_MODES}")


# ---------------------------------------------------------------------------------------
# Step-by-step replay (any bidder, online learning allowed)
# ---------------------------------------------------------------------------------------
def replay(
    log: AuctionLog,
    budget: int,
    bidder: Bidder,
    *,
    episode_length: int = 1000,
    max_bid: int = 300,
    feedback: str = "full",
) -> ReplayResult:
    """Replay the log auction by auction through ``bidder``.

    :param log: auctions in time order.
    :param budget: per-episode budget B (see :func:`episode_budget`).
    :param bidder: the policy; ``observe`` is called after every auction.
    :param episode_length: N.
    :param max_bid: bid cap.
    :param feedback: ``full`` or ``won`` (see the module docstring).
    """
    _check(episode_length, max_bid, feedback)
    clicks_arr = log.click.tolist()
    prices = log.price.tolist()
    pctrs = log.pctr.tolist()
    total = len(prices)
    full = feedback == "full"
    ep_clicks: list[int] = []
    ep_cost: list[int] = []
    imp = clk = cost = 0
    n, b, episode, e_clk, e_cost = episode_length, budget, 0, 0, 0
    for i in range(total):
        price, click, pctr = prices[i], clicks_arr[i], pctrs[i]
        a = bidder.bid(Observation(pctr, b, n, budget, episode, i))
        a = max(0, min(int(a), b, max_bid))
        won = a >= price
        if won:
            imp += 1
            clk += click
            cost += price
            b -= price
            e_clk += click
            e_cost += price
        n -= 1
        end = n == 0 or i == total - 1
        if full or won:
            out = Outcome(a, won, price if won else 0, click, price, pctr, end)
        else:
            out = Outcome(a, False, 0, -1, -1, pctr, end)
        bidder.observe(out)
        if end:
            ep_clicks.append(e_clk)
            ep_cost.append(e_cost)
            n, b, episode, e_clk, e_cost = episode_length, budget, episode + 1, 0, 0
    return ReplayResult(total, imp, clk, cost, len(ep_clicks), budget, tuple(ep_clicks), tuple(ep_cost))


# ---------------------------------------------------------------------------------------
# Vectorised replay (policies stateless per auction): all episodes advance in lockstep
# ---------------------------------------------------------------------------------------
def replay_vectorised(
    log: AuctionLog,
    budget: int,
    bid_fn: BidFn,
    *,
    episode_length: int = 1000,
    max_bid: int = 300,
) -> ReplayResult:
    """Replay a policy whose bid depends only on the current observation.

    Episodes are independent (each starts with ``B``), so position ``j`` of every episode is
    decided in one call of ``bid_fn``; results equal :func:`replay` exactly.

    :param log: auctions in time order.
    :param budget: per-episode budget B.
    :param bid_fn: ``(pctr[E], budget_left[E], auctions_left[E]) -> bids[E]``.
    :param episode_length: N.
    :param max_bid: bid cap.
    """
    _check(episode_length, max_bid, "full")
    total = len(log)
    n_ep = -(-total // episode_length)
    pad = n_ep * episode_length - total
    def grid(x: np.ndarray, fill: float) -> np.ndarray:
        return np.concatenate([x, np.full(pad, fill, dtype=x.dtype)]).reshape(n_ep, episode_length)
    price = grid(log.price, max_bid + 1)  # padding can never be won
    click = grid(log.click, 0)
    pctr = grid(log.pctr, 0.0)
    valid = grid(np.ones(total, dtype=bool), False)
    b = np.full(n_ep, budget, dtype=np.int64)
    imp = np.zeros(n_ep, dtype=np.int64)
    clk = np.zeros(n_ep, dtype=np.int64)
    for j in range(episode_length):
        left = np.full(n_ep, episode_length - j, dtype=np.int64)
        a = np.asarray(bid_fn(pctr[:, j], b.copy(), left)).astype(np.int64)
        a = np.clip(np.minimum(a, b), 0, max_bid)
        won = valid[:, j] & (a >= price[:, j])
        b -= np.where(won, price[:, j], 0)
        imp += won
        clk += np.where(won, click[:, j], 0)
    spent = budget - b
    return ReplayResult(
        total, int(imp.sum()), int(clk.sum()), int(spent.sum()), n_ep, budget,
        tuple(int(x) for x in clk), tuple(int(x) for x in spent),
    )
