"""One impression as the agent reads it, and the page/app context bucket.

``Opportunity`` is what the request says about one impression, reduced to what the state needs
(``pipeline.opportunity`` reads it off OpenRTB); ``context_bucket`` hashes its page or app
context into the buckets the segment posterior is accumulated over (``model.segments``).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

__all__ = ["CONTEXT_BUCKETS", "Opportunity", "context_bucket"]

CONTEXT_BUCKETS = 8


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
