"""Admin request bodies, checked field by field before any action runs.

Every admin input that is not what the action needs is a :class:`ConfigError` naming the
field, which the endpoint answers with HTTP 400 (never a 5xx): JSON allows ``NaN`` and
``Infinity`` literals (Python's parser reads them), so a number is checked for being finite
as well as for its range.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from agent_service.errors import ConfigError
from agent_service.money import usd_to_micros

__all__ = ["MAX_DAILY_USD", "BudgetChange", "parse_budget_change"]

MAX_DAILY_USD = 1e9
"""Largest daily budget an admin may set (USD): far above any campaign, small enough that the
ledger's integer micros stay exact in Redis' Lua numbers (doubles, exact below 2^53)."""

_MAX_PERIOD = 10**6
"""Largest budget period (UTC days since 1970-01-01; year ~4700)."""


class BudgetChange(NamedTuple):
    """A checked ``POST /admin/budget`` body."""

    budget_micros: int
    period: int


def parse_budget_change(body: dict[str, object], current_period: int) -> BudgetChange:
    """Check a budget change: ``{"daily_usd": number >= 0, "period": int (default: today)}``.

    :param body: the decoded JSON object.
    :param current_period: the period used when the body names none.
    :raises ConfigError: naming ``daily_usd`` or ``period`` when either is missing or invalid.
    """
    usd = body.get("daily_usd")
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd) \
            or not 0 <= usd <= MAX_DAILY_USD:
        raise ConfigError("daily_usd", f"expected a finite number of USD in [0, {MAX_DAILY_USD:.0e}], got {usd!r}")
    period = body.get("period", current_period)
    if isinstance(period, bool) or not isinstance(period, int) or not 0 <= period <= _MAX_PERIOD:
        raise ConfigError("period", f"expected an integer day number in [0, {_MAX_PERIOD}] "
                                    f"(UTC days since 1970-01-01), got {period!r}")
    return BudgetChange(usd_to_micros(float(usd)), period)
