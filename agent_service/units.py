"""Time units of event time (milliseconds since the epoch, UTC) and the attribution window's
default — defined once."""

from __future__ import annotations

__all__ = ["DAY_MS", "DAY_S", "HOUR_MS", "WINDOW_DAYS"]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DAY_S = 86_400

WINDOW_DAYS = 14.0
"""Default attribution window in days: ``join.window_days``, which the tree copies into every
section that carries a window (attribution, delay model, hybrid agent)."""
