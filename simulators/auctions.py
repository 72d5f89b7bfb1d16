"""Vectorised auctions (after AuctionGym): second price, first price, generalised second price.

Prices are integer *ticks*: 1 tick = 0.001 USD CPM, which is exactly 1 micro-dollar per
impression (``agent_service.money``: cost = CPM micros // 1000). Bid matrices are laid out
bidders × auctions, shape (k, n), C-contiguous: reductions over the (small) bidder axis then run
along contiguous rows, which is what makes the kernels fast.

Rules, for every auction independently:
- a bid below the reserve does not take part; an auction with no bid at or above the reserve
  has no winner (``-1``);
- ties at the top are broken uniformly at random;
- second price: the winner pays max(second-highest bid, reserve) (the tied top bid when tied);
- first price: the winner pays its own bid;
- generalised second price (paid search, positions 1..P): bidders ranked by bid (random order
  among equal bids), the one at position j pays the bid ranked j + 1 (or the reserve), on a
  per-impression (CPM) basis like every price in GAELP.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from agent_service.money import MICROS_PER_USD

__all__ = [
    "NO_WINNER",
    "Allocation",
    "Placement",
    "first_price",
    "gsp",
    "gsp_for",
    "position_prices",
    "second_price",
    "to_ticks",
]

NO_WINNER = -1
_BIG = np.int32(2**31 - 1)


class Allocation(NamedTuple):
    """Single-slot auction outcome per auction (arrays of shape (n,))."""

    winner: np.ndarray
    """Row of the winning bidder, or ``NO_WINNER``."""
    price: np.ndarray
    """Price paid by the winner, ticks (0 without a winner)."""


class Placement(NamedTuple):
    """One bidder's outcome in positional auctions (arrays of shape (n,))."""

    position: np.ndarray
    """1 = top; 0 = not placed (below the reserve or below the last position)."""
    price: np.ndarray
    """Price paid, ticks (0 when not placed)."""


def to_ticks(cpm_usd: np.ndarray | float) -> np.ndarray:
    """CPM prices in USD as int32 ticks, rounded *down* onto the 0.001 USD grid (like ``cpm_to_micros``).

    :param cpm_usd: prices, USD CPM (negative values become 0).
    """
    micros = np.rint(np.maximum(np.asarray(cpm_usd, dtype=np.float64), 0.0) * MICROS_PER_USD).astype(np.int64)
    return np.minimum(micros // 1000, _BIG).astype(np.int32)


def _top(bids: np.ndarray, reserve: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Highest bid, winner (random among ties), whether the top was tied, and the eligible mask."""
    m1 = bids.max(axis=0)
    eq = bids == m1
    cnt = eq.sum(axis=0, dtype=np.int16)
    tie = cnt > 1
    winner = eq.argmax(axis=0)
    if tie.any():
        idx = np.flatnonzero(tie)
        sub = eq[:, idx]
        r = (rng.random(idx.size) * cnt[idx]).astype(np.int16)
        rank = np.cumsum(sub, axis=0, dtype=np.int16)
        winner[idx] = (sub & (rank == r + 1)).argmax(axis=0)
    won = m1 >= reserve
    return m1, eq, tie, winner, won


def second_price(bids: np.ndarray, reserve: np.ndarray | int, rng: np.random.Generator) -> Allocation:
    """Single-slot second-price auctions.

    :param bids: int32 ticks, shape (k bidders, n auctions).
    :param reserve: reserve per auction (ticks), shape (n,) or a scalar.
    :param rng: generator for tie-breaking.
    """
    res = np.broadcast_to(np.asarray(reserve, dtype=bids.dtype), bids.shape[1:])
    m1, eq, tie, winner, won = _top(bids, res, rng)
    m2 = np.where(eq, np.int32(-1), bids).max(axis=0)
    price = np.maximum(np.where(tie, m1, m2), res)
    return Allocation(np.where(won, winner, NO_WINNER), np.where(won, price, 0).astype(np.int32))


def first_price(bids: np.ndarray, reserve: np.ndarray | int, rng: np.random.Generator) -> Allocation:
    """Single-slot first-price auctions (the winner pays its bid).

    :param bids: int32 ticks, shape (k bidders, n auctions).
    :param reserve: reserve per auction (ticks).
    :param rng: generator for tie-breaking.
    """
    res = np.broadcast_to(np.asarray(reserve, dtype=bids.dtype), bids.shape[1:])
    m1, _, _, winner, won = _top(bids, res, rng)
    return Allocation(np.where(won, winner, NO_WINNER), np.where(won, m1, 0).astype(np.int32))


def gsp(bids: np.ndarray, reserve: np.ndarray | int, positions: int,
        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Generalised second price for every bidder (reference implementation; the engine uses ``gsp_for``).

    :param bids: int32 ticks, shape (k, n).
    :param reserve: reserve per auction (ticks).
    :param positions: slots per auction.
    :param rng: generator for tie-breaking.
    :returns: (position, price), both shape (k, n); position 0 = not placed.
    """
    k, n = bids.shape
    res = np.broadcast_to(np.asarray(reserve, dtype=np.int64), (n,))
    key = bids.astype(np.float64) + 0.5 * rng.random((k, n))  # random order among equal bids only
    order = np.argsort(-key, axis=0, kind="stable")
    ranked = np.take_along_axis(bids, order, axis=0).astype(np.int64)
    nxt = np.vstack([ranked[1:], np.full((1, n), -1, dtype=np.int64)])
    eligible = ranked >= res
    placed = eligible & (np.arange(k)[:, None] < positions)
    price_ranked = np.where(placed, np.maximum(nxt, res), 0)
    pos_ranked = np.where(placed, np.arange(1, k + 1)[:, None], 0)
    position = np.empty((k, n), dtype=np.int16)
    price = np.empty((k, n), dtype=np.int32)
    np.put_along_axis(position, order, pos_ranked.astype(np.int16), axis=0)
    np.put_along_axis(price, order, price_ranked.astype(np.int32), axis=0)
    return position, price


def gsp_for(bid: np.ndarray, others: np.ndarray, reserve: np.ndarray, positions: int,
            rng: np.random.Generator) -> Placement:
    """GSP outcome of one bidder (GAELP) against the others, without sorting.

    :param bid: our bids, ticks, shape (n,).
    :param others: the other bids, ticks, shape (k, n).
    :param reserve: reserve per auction (ticks), shape (n,).
    :param positions: slots per auction.
    :param rng: generator for tie-breaking.
    """
    above = (others > bid).sum(axis=0, dtype=np.int16)
    tied = (others == bid).sum(axis=0, dtype=np.int16)
    ahead = (rng.random(bid.shape[0]) * (tied + 1)).astype(np.int16)  # tied bidders ranked above us
    pos = above + ahead + 1
    placed = (bid >= reserve) & (pos <= positions)
    below = np.where(others < bid, others, np.int32(-1)).max(axis=0, initial=-1)
    nxt = np.where(ahead < tied, bid, below)  # a tied bidder ranked below us sets our price
    price = np.where(placed, np.maximum(nxt, reserve), 0).astype(np.int32)
    return Placement(np.where(placed, pos, 0).astype(np.int16), price)


def position_prices(others: np.ndarray, reserve: np.ndarray, positions: int) -> np.ndarray:
    """What each position costs in hindsight: price paid to hold position j against ``others``.

    To hold position j a bidder must outbid the (j)-th highest other bid and then pays it (or the
    reserve). Positions beyond the number of other bidders + 1 do not exist (``2**31-1``).

    :param others: the other bids, ticks, shape (k, n).
    :param reserve: reserve per auction (ticks), shape (n,).
    :param positions: slots per auction.
    :returns: int64 prices, shape (n, positions).
    """
    k, n = others.shape
    ranked = -np.sort(-others.astype(np.int64), axis=0)
    out = np.full((n, positions), int(_BIG), dtype=np.int64)
    for j in range(min(positions, k + 1)):
        beat = ranked[j] if j < k else np.full(n, -1, dtype=np.int64)
        out[:, j] = np.maximum(beat, reserve)
    return out
