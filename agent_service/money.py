"""Exact money.

All amounts inside GAELP are integers in micro-dollars (1 USD = 1_000_000 micros), so that
budgets, reservations and spend add up exactly. Prices on the wire are CPM (OpenRTB); the
cost of one impression at a CPM price is ``cpm_micros // 1000``, which is exact because CPM
prices are kept on a 0.001 USD grid (``cpm_to_micros`` rounds down onto it: we never pay
more than we bid).
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = [
    "CPM_GRID_MICROS",
    "floor_to_usd_micros",
    "MICROS_PER_USD",
    "cpm_to_micros",
    "impression_cost_micros",
    "micros_to_usd",
    "usd_to_micros",
]

MICROS_PER_USD = 1_000_000
CPM_GRID_MICROS = 1_000  # 0.001 USD: keeps cpm/1000 an integer number of micros


def usd_to_micros(usd: float) -> int:
    """Convert dollars to micros, rounding to the nearest micro.

    :param usd: a finite amount in USD.
    """
    if not math.isfinite(usd):
        raise ValueError(f"amount must be finite, got {usd!r}")
    return round(usd * MICROS_PER_USD)


def floor_to_usd_micros(amount: float, usd_per_unit: float) -> int:
    """A floor in another currency, in USD micros, rounded UP (a bid at it never falls under the
    exchange's floor); exact decimal arithmetic on the two numbers as written.

    :param amount: the floor in its currency (finite, >= 0). :param usd_per_unit: the rate (> 0).
    """
    if not (math.isfinite(amount) and math.isfinite(usd_per_unit)) or amount < 0 or usd_per_unit <= 0:
        raise ValueError(f"need a finite floor >= 0 and a rate > 0, got {amount!r} at {usd_per_unit!r}")
    return math.ceil(Decimal(repr(amount)) * Decimal(repr(usd_per_unit)) * MICROS_PER_USD)


def micros_to_usd(micros: int) -> float:
    """Convert micros to dollars (for display and reports only)."""
    return micros / MICROS_PER_USD


def cpm_to_micros(cpm_usd: float) -> int:
    """A CPM price in USD as micros, rounded *down* onto the 0.001 USD grid.

    :param cpm_usd: price per thousand impressions in USD.
    """
    micros = usd_to_micros(cpm_usd)
    return (micros // CPM_GRID_MICROS) * CPM_GRID_MICROS


def impression_cost_micros(cpm_micros: int) -> int:
    """Exact cost of one impression bought at ``cpm_micros`` (a multiple of 1000)."""
    if cpm_micros % CPM_GRID_MICROS:
        raise ValueError(f"CPM price {cpm_micros} micros is off the 0.001 USD grid")
    return cpm_micros // 1000
