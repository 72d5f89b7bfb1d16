"""The state vector the decision policy sees, feature by feature.

Every feature is normalised to about [-1, 1] or [0, 1]. ``FEATURES`` lists them in order with
what each means; ``state_vector`` builds one from what the service knows at decision time
(the request, the person's journey, identity and the budget ledger) — never from ground truth.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from agent_service.config import CHANNELS
from agent_service.contracts.events import Touch
from agent_service.ports.store import BudgetState, Identity

__all__ = ["AVAILABLE", "CONTEXT_BUCKETS", "FEATURES", "Opportunity", "context_bucket", "state_vector"]

CONTEXT_BUCKETS = 8
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

FEATURES: tuple[tuple[str, str], ...] = (
    ("hour_sin", "sin(2π·hour/24) of the event time (UTC)"),
    ("hour_cos", "cos(2π·hour/24)"),
    ("dow_sin", "sin(2π·weekday/7)"),
    ("dow_cos", "cos(2π·weekday/7)"),
    ("device_mobile", "1 if OpenRTB devicetype is phone/tablet/mobile"),
    ("device_desktop", "1 if devicetype is PC"),
    ("device_other", "1 otherwise (TV, unknown)"),
    ("touches", "log1p(touches in the window)/log(32)"),
    ("clicks", "log1p(clicked touches)/log(8)"),
    ("recency", "hours since the last touch / 336, 1 when none"),
    ("last_organic", "1 if the last touch was organic"),
    ("last_paid_search", "1 if the last touch was paid search"),
    ("last_social", "1 if the last touch was social"),
    ("identity_confidence", "confidence of device → person"),
    ("device_count", "devices known for the person / 3, capped at 1"),
    ("budget_spent", "(spent + reserved) / budget of the period"),
    ("day_elapsed", "fraction of the budget period elapsed"),
    ("pace", "spent / planned spend by now, /2 and capped at 1 (0.5 = on plan)"),
    ("avail_organic", "1 if the organic channel is available for this opportunity"),
    ("avail_paid_search", "1 if paid search is available"),
    ("avail_social", "1 if social is available"),
    ("floor", "bid floor CPM / 10 USD, capped at 1"),
) + tuple((f"context_{i}", f"1 if the page/app context hashes to bucket {i}") for i in range(CONTEXT_BUCKETS))

_INDEX = {name: i for i, (name, _) in enumerate(FEATURES)}
AVAILABLE = slice(_INDEX["avail_organic"], _INDEX["avail_social"] + 1)
"""Columns of the state vector that flag the available channels (in CHANNELS order)."""


class Opportunity(NamedTuple):
    """What the request says about one impression, reduced to what features need."""

    event_time: int
    devicetype: int | None
    channels: tuple[str, ...]
    floor_cpm_usd: float
    context: str


def context_bucket(context: str) -> int:
    """Stable bucket of a context string (page category, app bundle)."""
    return zlib.crc32(context.encode()) % CONTEXT_BUCKETS if context else 0


def state_vector(opp: Opportunity, identity: Identity, journey: Sequence[Touch], budget: BudgetState,
                 period_start_ms: int, period_ms: int = _DAY_MS) -> list[float]:
    """The enriched state vector of ``FEATURES`` for one opportunity.

    :param opp: the opportunity.
    :param identity: resolved identity of the device.
    :param journey: the person's touches in the window, oldest first.
    :param budget: the ledger of the current period.
    :param period_start_ms: start of the budget period (event time).
    """
    t = opp.event_time
    hour = (t % _DAY_MS) / _HOUR_MS
    dow = ((t // _DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
    dt = opp.devicetype
    mobile = 1.0 if dt in (1, 4, 5) else 0.0
    desktop = 1.0 if dt == 2 else 0.0
    clicks = sum(1 for x in journey if x.clicked)
    last = journey[-1] if journey else None
    recency = min(1.0, (t - last.event_time) / (336 * _HOUR_MS)) if last else 1.0
    elapsed = min(1.0, max(0.0, (t - period_start_ms) / period_ms))
    committed = budget.spent + budget.reserved
    spent_frac = committed / budget.budget if budget.budget > 0 else 1.0
    plan = budget.budget * elapsed
    pace = min(1.0, (budget.spent / plan) / 2) if plan > 0 else 0.5
    bucket = context_bucket(opp.context)
    vec = [
        math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
        math.sin(2 * math.pi * dow / 7), math.cos(2 * math.pi * dow / 7),
        mobile, desktop, 1.0 - mobile - desktop,
        math.log1p(len(journey)) / math.log(32), min(1.0, math.log1p(clicks) / math.log(8)), recency,
        *(1.0 if last is not None and last.channel == c else 0.0 for c in CHANNELS),
        identity.confidence, min(1.0, identity.device_count / 3),
        min(1.0, spent_frac), elapsed, pace,
        *(1.0 if c in opp.channels else 0.0 for c in CHANNELS),
        min(1.0, opp.floor_cpm_usd / 10.0),
        *(1.0 if i == bucket else 0.0 for i in range(CONTEXT_BUCKETS)),
    ]
    return vec
