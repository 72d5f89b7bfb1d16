"""Time units of event time (milliseconds since the epoch, UTC) — defined once."""

from __future__ import annotations

__all__ = ["DAY_MS", "DAY_S", "HOUR_MS"]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DAY_S = 86_400
