"""Exact money.

All amounts inside GAELP are integers in micro-dollars (1 USD = 1_000_000 micros), so that
budgets, reservations and spend add up exactly. Prices on the wire are CPM (OpenRTB); the
cost of one impression at a CPM price is ``cpm_micros // 1000``, which is exact because CPM
prices are kept on a 0.001 USD grid (``cpm_to_micros`` rounds down onto it: we never pay
more than we bid).
"""

from __future__ import annotations

import math

__all__ = [
    "MICROS_PER_USD",
    "cpm_to_micros",
    "impression_cost_micros",
    "micros_to_usd",
    "usd_to_micros",
]

MICROS_PER_USD = 1_000_000
_CPM_GRID_MICROS = 1_000  # 0.001 USD: keeps cpm/1000 an integer number of micros


def usd_to_micros(usd: float) -> int:
    """Convert dollars to micros, rounding to the nearest micro.

    :param usd: a finite amount in USD.
    """
    if not math.isfinite(usd):
        raise ValueError(f"amount must be finite, got {usd!r}")
    return round(usd * MICROS_PER_USD)


def micros_to_usd(micros: int) -> float:
    """Convert micros to dollars (for display and reports only)."""
    return micros / MICROS_PER_USD


def cpm_to_micros(cpm_usd: float) -> int:
    """A CPM price in USD as micros, rounded *down* onto the 0.001 USD grid.

    :param cpm_usd: price per thousand impressions in USD.
    """
    micros = usd_to_micros(cpm_usd)
    return (micros // _CPM_GRID_MICROS) * _CPM_GRID_MICROS


def impression_cost_micros(cpm_micros: int) -> int:
    """Exact cost of one impression bought at ``cpm_micros`` (a multiple of 1000)."""
    if cpm_micros % _CPM_GRID_MICROS:
        raise ValueError(f"CPM price {cpm_micros} micros is off the 0.001 USD grid")
    return cpm_micros // 1000
