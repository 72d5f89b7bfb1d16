"""Pricing a bid: the one place the bid rules live (agent, decision path and reference policies).

For a batch of impressions with a raw price ``raw = 1000 · m · v̂`` (CPM USD: the slot's bid
multiplier times the value estimate — or a reference policy's own rule):

1. organic: no bid (no auction; the channel's reach is its limit) — reason ``organic``;
2. a floor above the highest bid, or a raw price under the floor: no bid — ``floor``
   (clipping up to the floor would pay more than the impression is worth);
3. ``bid = clip(raw, max(floor, min), max)`` — $0.50 and $10.00 CPM by default;
4. a bid whose one impression would cost more than the budget left: no bid — ``budget``.

:func:`price` applies them to arrays (the agent prices whole batches); :func:`to_micros` turns
one bid into exact micros on the 0.001-USD CPM grid, never under the floor or the minimum; and
:func:`shade_first_price` lowers it in a first-price auction (OpenRTB ``at`` = 1). Pure
functions, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from agent_service.money import CPM_GRID_MICROS, cpm_to_micros

__all__ = ["BID", "BUDGET", "DEFAULT_LIMITS", "FLOOR", "NO_BID_REASONS", "ORGANIC", "BidLimits", "Priced", "price",
           "shade_first_price", "to_micros"]

BID, ORGANIC, FLOOR, BUDGET = 0, 1, 2, 3
NO_BID_REASONS: tuple[str | None, ...] = (None, "organic", "floor", "budget")
"""Reason label of each code (None: a bid)."""

class BidLimits(NamedTuple):
    """The lowest and highest bid, CPM USD."""

    min_cpm_usd: float = 0.50
    max_cpm_usd: float = 10.00


DEFAULT_LIMITS = BidLimits()


class Priced(NamedTuple):
    """Bids of a batch ([B] arrays)."""

    bid_cpm_usd: np.ndarray
    """float64 [B] the bid, CPM USD; 0 = no bid."""
    reason: np.ndarray
    """int8 [B] :data:`BID` or the code of the rule that said no (:data:`NO_BID_REASONS`)."""


def price(raw_cpm_usd: np.ndarray, floor_cpm_usd: np.ndarray | float, budget_left_usd: np.ndarray | float,
          channel: np.ndarray | int, limits: BidLimits = DEFAULT_LIMITS) -> Priced:
    """The bids of a batch under the rules of the module docstring.

    :param raw_cpm_usd: [B] the price the policy would pay, CPM USD.
    :param floor_cpm_usd: [B] each impression's floor (CPM USD, already in USD).
    :param budget_left_usd: what may still be reserved ([B] or one number).
    :param channel: [B] channel index (0 = organic) or one for all.
    :param limits: the lowest and highest bid.
    """
    raw = np.asarray(raw_cpm_usd, dtype=np.float64)
    # Scalars broadcast in the arithmetic itself (no broadcast_to copies: a batch is a few rows
    # and each numpy call costs more than its arithmetic); the results have raw's shape.
    floor = np.asarray(floor_cpm_usd, dtype=np.float64)
    bid = np.minimum(np.maximum(raw, np.maximum(floor, limits.min_cpm_usd)), limits.max_cpm_usd)
    over_budget = bid > np.maximum(np.asarray(budget_left_usd, dtype=np.float64), 0.0) * 1000.0
    reason = np.where(over_budget, BUDGET, BID).astype(np.int8)  # the rules in reverse order of precedence
    reason[(raw < floor) | (floor > limits.max_cpm_usd)] = FLOOR
    reason = np.where(np.asarray(channel) == 0, ORGANIC, reason).astype(np.int8, copy=False)
    return Priced(np.where(reason == BID, bid, 0.0), reason)


def to_micros(bid_cpm_usd: float, floor_micros: int, limits_micros: tuple[int, int]) -> int:
    """One priced bid in exact micros on the CPM grid, within ``[max(floor, min), max]`` (the float
    price may round under the floor).

    :param limits_micros: (lowest, highest) bid in CPM micros.
    """
    lo, hi = limits_micros
    return min(hi, max(lo, floor_micros, cpm_to_micros(bid_cpm_usd)))


def shade_first_price(bid_micros: int, floor_micros: int, min_micros: int, shade: float) -> int:
    """A first-price bid (the winner pays it): ``shade`` × the truthful bid, on the 0.001-USD grid,
    never under the floor (rounded up onto the grid) nor the minimum, never over the truthful bid."""
    shaded = int(bid_micros * shade) // CPM_GRID_MICROS * CPM_GRID_MICROS
    return min(bid_micros, max(-(-floor_micros // CPM_GRID_MICROS) * CPM_GRID_MICROS, min_micros, shaded))
