"""Feeds a simulated world into GAELP through the event bus, slot by slot, in event time.

Per slot: publish the world's bid requests, wait for GAELP's decisions on the decisions topic,
let the world resolve them (auctions, impressions, clicks), publish those and every event that
falls due in the slot (conversions, identity links), then send an event-time tick to every
partition of every source topic. The same driver feeds the in-process bus and Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agent_service.config import TopicsConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import Decision, Tick
from agent_service.errors import BusError
from agent_service.ports.bus import TICK_HEADER, Consumer, EventBus
from simulators.world import World

__all__ = ["SimDriver"]


class SimDriver:
    """Publishes a world's events and collects GAELP's decisions.

    :param world: the simulated world.
    :param bus: the event bus GAELP consumes.
    :param topics: topic names.
    :param group: consumer group of the driver's decisions reader.
    """

    def __init__(self, world: World, bus: EventBus, topics: TopicsConfig, group: str = "gaelp-sim-driver") -> None:
        self.world = world
        self.bus = bus
        self.topics = topics
        self.group = group
        self._decisions: Consumer | None = None
        self._roles = {"auction_results": topics.auction_results, "ad_events": topics.ad_events,
                       "conversions": topics.conversions, "identity_links": topics.identity_links}
        self.published: dict[str, int] = dict.fromkeys(self._roles, 0)
        self.decisions_seen: list[Decision] = []

    async def start(self) -> None:
        self._decisions = self.bus.consumer([self.topics.decisions], self.group)
        await self._decisions.start()

    async def stop(self) -> None:
        if self._decisions is not None:
            await self._decisions.stop()

    async def publish_requests(self, t0: int, t1: int) -> set[str]:
        """Publish the slot's bid requests; return the decision ids to expect."""
        requests = self.world.requests(t0, t1)
        for req in requests:
            await self.bus.publish(self.topics.bid_requests, req.id.encode(), encode(req))
        await self.bus.flush()
        return {f"{r.id}:{imp.id}" for r in requests for imp in r.imp}

    async def collect(self, expected: set[str], timeout_s: float = 60.0) -> list[Decision]:
        """Read decisions until every expected one has arrived."""
        assert self._decisions is not None, "start() first"
        got: dict[str, Decision] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while expected - got.keys():
            if loop.time() > deadline:
                raise BusError(f"{len(expected - got.keys())} decisions did not arrive within {timeout_s}s")
            for rec in await self._decisions.getmany(timeout_ms=100, max_records=5_000):
                dec = decode(rec.value, Decision)
                if dec.id in expected:
                    got[dec.id] = dec
            await self._decisions.commit()
        decisions = [got[i] for i in sorted(expected)]
        self.decisions_seen.extend(decisions)
        return decisions

    async def publish_outcomes(self, decisions: Sequence[Decision], t0: int, t1: int) -> None:
        """Publish the world's response to ``decisions``, the events due in [t0, t1), then ticks."""
        events = self.world.resolve(decisions) + self.world.due(t0, t1)
        events.sort(key=lambda e: e.record.event_time)
        for ev in events:
            topic = self._roles[ev.role]
            await self.bus.publish(topic, ev.key.encode(), encode(ev.record))
            self.published[ev.role] += 1
        await self.tick(t1 - 1)

    async def tick(self, event_time: int) -> None:
        """An event-time heartbeat on every partition of every source topic."""
        payload = encode(Tick(id=f"tick-{event_time}", event_time=event_time))
        for topic in self._roles.values():
            for p in range(await self.bus.partitions(topic)):
                await self.bus.publish(topic, None, payload, headers=[TICK_HEADER], partition=p)
        await self.bus.flush()
