"""Helpers to build a Flow over a store and feed it records by hand (tests only)."""

from __future__ import annotations

from typing import Any

from agent_service.adapters.registry import MemoryRegistry
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import encode
from agent_service.contracts.events import Tick
from agent_service.contracts.openrtb import BidRequest, Device, Imp, Site
from agent_service.metrics import Metrics
from agent_service.pipeline.flow import Flow
from agent_service.ports.bus import TICK_HEADER, BusRecord
from agent_service.ports.store import StateStore
from agent_service.runtime.assembly import build_learner, build_service
from agent_service.units import DAY_MS as DAY  # noqa: F401 (the flow tests take it from here)

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


class FlowKit:
    """A flow with one partition per topic and an offset counter for hand-made records."""

    def __init__(self, store: StateStore, cfg: GaelpConfig | None = None) -> None:
        self.cfg = cfg or GaelpConfig()
        self.store = store
        self.metrics = Metrics()
        self.registry = MemoryRegistry()
        build_learner(self.cfg, self.registry, creatives=4, seed=0)
        t = self.cfg.topics
        self.topics = t
        parts = dict.fromkeys([t.bid_requests, t.auction_results, t.ad_events, t.conversions, t.identity_links], 1)
        self.flow: Flow = build_service(self.cfg, store, self.registry, self.metrics, parts, clock=lambda: T0,
                                        campaign="c", creatives=4, seed=1).flow
        self._offset = 0

    def record(self, topic: str, value: Any, tick: bool = False) -> BusRecord:
        self._offset += 1
        raw = value if isinstance(value, bytes) else encode(value)
        return BusRecord(topic, 0, self._offset, None, raw, (TICK_HEADER,) if tick else ())

    def tick(self, topic: str, event_time: int) -> BusRecord:
        return self.record(topic, Tick(id=f"tick-{event_time}", event_time=event_time), tick=True)

    async def ticks(self, event_time: int) -> list[Any]:
        """Advance every source topic's watermark to ``event_time``; return the outputs."""
        out = []
        t = self.topics
        for topic in (t.identity_links, t.auction_results, t.ad_events, t.conversions):
            result = await self.flow.handle(topic, [self.tick(topic, event_time)])
            out += result.outputs
            for step in result.after_publish:
                await step()
        return out

    async def handle(self, topic: str, *values: Any) -> list[Any]:
        result = await self.flow.handle(topic, [self.record(topic, v) for v in values])
        for step in result.after_publish:
            await step()
        return result.outputs


def bid_request(rid: str, device: str, t: int, channels: tuple[str, ...] = ("social",), floor: float = 0.5,
                cat: str = "IAB1") -> BidRequest:
    return BidRequest(id=rid, imp=[Imp(id="1", bidfloor=floor, ext={"gaelp": {"channels": list(channels)}})],
                      device=Device(ifa=device, devicetype=4), site=Site(cat=[cat]),
                      ext={"gaelp": {"event_time": t}})
