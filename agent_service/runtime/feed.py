"""Feed a simulated world into a running service through the bus, in event time.

Traffic slots first (requests → decisions from the service → outcomes), then drain slots in
which only delayed events (conversions, identity links) fall due, then a final tick past the
last window so every window can close. Optionally paced against the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from tqdm import tqdm

from agent_service.runtime.driver import SimDriver
from agent_service.units import DAY_MS, HOUR_MS

__all__ = ["FeedStats", "feed"]


class FeedStats(NamedTuple):
    requests: int
    decisions: int
    bids: int
    end_ms: int
    """Event time of the final tick."""
    published_ms: int
    """Every world event before this event time was published (the end of the drain); a world's
    conversions scheduled later were not, though its log already holds them."""


async def feed(driver: SimDriver, days: float, drain_days: float, slot_ms: int = 3 * HOUR_MS,
               drain_slot_ms: int = DAY_MS, realtime_factor: float | None = None, decision_timeout_s: float = 120.0,
               progress: bool = False, on_slot: Callable[[int], Awaitable[None]] | None = None) -> FeedStats:
    """Drive ``driver``'s world for ``days`` of traffic and ``drain_days`` more of delayed events.

    :param driver: a started driver.
    :param realtime_factor: event-time seconds per wall second (None: as fast as the service answers).
    :param on_slot: called with the slot's index after each slot is published (fault injection in tests).
    """
    world = driver.world
    t0 = world.start_ms
    traffic_end = t0 + int(days * DAY_MS)
    end = traffic_end + int(drain_days * DAY_MS)
    requests = decisions = bids = 0
    loop = asyncio.get_running_loop()
    with tqdm(total=end - t0, unit="ms", unit_scale=True, desc="feeding", disable=not progress) as bar:
        a, slot = t0, 0
        while a < end:
            b = min(a + (slot_ms if a < traffic_end else drain_slot_ms), traffic_end if a < traffic_end else end)
            started = loop.time()
            slot_decisions = []
            if a < traffic_end:
                expected = await driver.publish_requests(a, b)
                requests += len(expected)
                slot_decisions = await driver.collect(expected, timeout_s=decision_timeout_s)
                decisions += len(slot_decisions)
                bids += sum(1 for d in slot_decisions if d.bid)
            await driver.publish_outcomes(slot_decisions, a, b)
            if realtime_factor:
                await asyncio.sleep(max(0.0, (b - a) / 1000 / realtime_factor - (loop.time() - started)))
            bar.update(b - a)
            if on_slot is not None:
                await on_slot(slot)
            a, slot = b, slot + 1
    final = end + DAY_MS
    await driver.tick(final)
    return FeedStats(requests, decisions, bids, final, end)
