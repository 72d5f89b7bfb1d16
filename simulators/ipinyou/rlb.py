"""RLB: the dynamic program of Cai et al. (WSDM 2017) and its bidder.

State ``(n, b)``: ``n`` auctions left, ``b`` budget left. With the clicks objective the
published code (``han-cai/rlb-dp``, ``RLB_DP_I.calc_optimal_value_function_with_approximation_i``,
``Opt_Obj("clk")``: ``v1 = 1, v0 = 0``, ``gamma = 1``) computes

    a(n, b)   = the largest delta <= min(b, max_bid) with  theta_avg + V(n, b - delta) - V(n, b) >= 0
    V(n+1, b) = V(n, b) + sum_{delta <= a(n, b)} m(delta) * (theta_avg + V(n, b - delta) - V(n, b))

with ``V(0, .) = 0``, ``V(., 0) = 0``, ``theta_avg = clk_train / imp_train`` (the "approximation
i": the expected pCTR replaces the integral over the pCTR distribution) and ``m`` the training
market-price histogram with add-one smoothing. The bid for pCTR ``theta`` in state ``(n, b)``
is the largest ``delta`` such that every ``d <= delta`` has ``theta + V(n-1, b-d) - V(n-1, b) >= 0``.

The code scans ``delta`` with a shared pointer; because ``V(n, .)`` is non-decreasing in ``b``
the scan equals a ``searchsorted`` followed by a running minimum, which we use (vectorised
over ``b``). The code's early stop (``V`` saturated at ``V_max``) is kept. Results match the
published 78 clicks / 304,375 cost on campaign 2997 at c0 = 1/32 exactly.
"""

from __future__ import annotations

import numpy as np

from agent_service.errors import ConfigError
from simulators.ipinyou.data import CampaignInfo
from simulators.ipinyou.replay import Observation, Outcome

__all__ = ["RLBBidder", "rlb_bids", "value_function"]

_UP_PRECISION = 1e-10
"""The code's ``up_precision`` for the early stop at V_max."""


def value_function(
    price_pmf: np.ndarray, episode_length: int, budget: int, value: float, max_bid: int = 300
) -> np.ndarray:
    """The RLB value function ``V[n, b]`` for ``n = 0 .. N-1`` and ``b = 0 .. B``.

    :param price_pmf: market price distribution over ``0 .. len-1`` (len >= max_bid + 1).
    :param episode_length: N (rows 0 .. N-1 are computed, as in the code).
    :param budget: B.
    :param value: value of one impression (RLB: theta_avg).
    :param max_bid: bid cap.
    :returns: float64 array of shape ``(N, B + 1)``.
    """
    if len(price_pmf) < max_bid + 1:
        raise ConfigError("rlb.price_pmf", f"needs at least max_bid + 1 = {max_bid + 1} bins")
    if budget < 0 or episode_length <= 0:
        raise ConfigError("rlb.budget", "need budget >= 0 and episode_length > 0")
    m = np.asarray(price_pmf[: max_bid + 1], dtype=np.float64)
    cum_m = np.concatenate([[0.0], np.cumsum(m)])
    b_idx = np.arange(budget + 1)
    out = np.zeros((episode_length, budget + 1), dtype=np.float64)
    v = np.zeros(budget + 1, dtype=np.float64)
    v_max = 0.0
    v_inc = float(np.sum(m * value))  # v0 = 0: a_max = max_bid
    for n in range(1, episode_length):
        out[n - 1] = v
        # a(b): largest delta with value + V[b - delta] - V[b] >= 0 (pointer scan of the code).
        first_ok = np.searchsorted(v, v - value, side="left")
        bb = np.minimum.accumulate(np.minimum(first_ok - 1, budget - 1)[::-1])[::-1]
        a = np.where(bb < 0, np.minimum(max_bid, b_idx), np.minimum(max_bid, b_idx - bb - 1))
        a = np.clip(a, 0, None)
        # sum_{d <= a(b)} m(d) V[b - d], via a cumulative sum over d of the sliding window.
        padded = np.concatenate([np.zeros(max_bid), v])
        window = np.lib.stride_tricks.sliding_window_view(padded, max_bid + 1)[:, ::-1]
        partial = np.cumsum(window * m, axis=1)[b_idx, a]
        new_v = v + (value - v) * cum_m[a + 1] + partial
        new_v[0] = 0.0
        v_max = v_max + v_inc
        sat = np.flatnonzero(np.abs(new_v[1:] - v_max) < _UP_PRECISION)
        if sat.size:
            new_v[sat[0] + 2 :] = v_max
        v = new_v
    out[episode_length - 1] = v
    return out


def rlb_bids(
    table: np.ndarray, value_ratio: np.ndarray, budget_left: np.ndarray, auctions_left: np.ndarray,
    max_bid: int = 300,
) -> np.ndarray:
    """Vectorised RLB bid rule for E auctions at once.

    ``bid = max delta`` such that every ``d <= delta`` has
    ``value_ratio * ref + V[n-1, b-d] - V[n-1, b] >= 0``; here ``table`` is ``V / ref`` so the
    test reads ``value_ratio + T[n-1, b-d] - T[n-1, b] >= 0``. With ``table = V`` and
    ``value_ratio = theta`` it is the published rule verbatim.

    :param table: value function ``(N, B+1)``.
    :param value_ratio: float[E], the auction's value in the table's units.
    :param budget_left: int[E].
    :param auctions_left: int[E], n >= 1.
    :param max_bid: bid cap.
    """
    b = np.asarray(budget_left, dtype=np.int64)
    rows = np.asarray(auctions_left, dtype=np.int64)[:, None] - 1
    d = np.arange(1, max_bid + 1)
    idx = b[:, None] - d[None, :]
    in_range = idx >= 0
    vals = table[rows, np.clip(idx, 0, None)]  # V[n-1, b-d], gathered without copying rows
    vb = table[rows, b[:, None]]
    ok = (np.asarray(value_ratio, dtype=np.float64)[:, None] + vals - vb >= 0) & in_range
    # number of leading True values = the bid
    return np.where(ok.all(axis=1), max_bid, np.argmin(ok, axis=1)).astype(np.int64)


class RLBBidder:
    """The published RLB bidder (no learning: ``observe`` is a no-op).

    :param table: ``V`` from :func:`value_function`.
    :param max_bid: bid cap.
    """

    def __init__(self, table: np.ndarray, max_bid: int = 300) -> None:
        self.table = table
        self.max_bid = max_bid

    @classmethod
    def from_info(cls, info: CampaignInfo, budget: int, episode_length: int = 1000,
                  max_bid: int = 300) -> RLBBidder:
        """Build V from the training histogram (add-one smoothed) and theta_avg = train CTR.

        :param info: training statistics.
        :param budget: per-episode budget B.
        :param episode_length: N.
        :param max_bid: bid cap.
        """
        table = value_function(info.price_pmf(1.0), episode_length, budget, info.ctr, max_bid)
        return cls(table, max_bid)

    def bid(self, obs: Observation) -> int:
        """The published rule: scan delta = 1 .. min(b, max_bid) until the test fails."""
        row = self.table[obs.auctions_left - 1]
        b = obs.budget_left
        lo = max(b - self.max_bid, 0)
        seg = obs.pctr + row[lo:b][::-1] - row[b]  # delta = 1 .. min(b, max_bid)
        fail = np.flatnonzero(seg < 0)
        return int(fail[0]) if fail.size else int(seg.size)

    def observe(self, outcome: Outcome) -> None:
        """RLB does not learn online."""

    def bids(self, pctr: np.ndarray, budget_left: np.ndarray, auctions_left: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`bid` for :func:`~simulators.ipinyou.replay.replay_vectorised`."""
        return rlb_bids(self.table, pctr, budget_left, auctions_left, self.max_bid)
