"""A bus worker: consume the flow's input topics, handle, publish, clean up, then commit.

The in-process counterpart of the Faust topology (``stream_apps.topology``): the same
``Flow.handle`` per batch, with offsets committed only after the outputs are published and
the post-publish clean-up has run (at-least-once delivery, exactly-once effect).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_service.pipeline.flow import Flow
from agent_service.pipeline.records import publish_result
from agent_service.ports.bus import Consumer, EventBus

__all__ = ["BusWorker"]


class BusWorker:
    """Drives ``flow`` from ``bus``, one consumer per input topic, in a fixed topic order.

    :param flow: the handlers.
    :param bus: the event bus.
    :param group: consumer group.
    :param order: topics in the order a drain visits them.
    """

    def __init__(self, flow: Flow, bus: EventBus, group: str, order: Sequence[str]) -> None:
        self.flow = flow
        self.bus = bus
        self.order = list(order)
        self._consumers: dict[str, Consumer] = {t: bus.consumer([t], group) for t in self.order}

    async def start(self) -> None:
        for c in self._consumers.values():
            await c.start()

    async def stop(self) -> None:
        for c in self._consumers.values():
            await c.stop()

    async def poll(self, topic: str, timeout_ms: int = 0, max_records: int = 5_000) -> int:
        """Handle one batch of ``topic``; return how many records it had."""
        consumer = self._consumers[topic]
        records = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if not records:
            return 0
        await publish_result(self.bus, await self.flow.handle(topic, records))
        await consumer.commit()
        return len(records)

    async def drain(self) -> int:
        """Handle every topic until none has records waiting and nothing more falls due."""
        total = 0
        while True:
            n = 0
            for topic in self.order:
                n += await self.poll(topic)
            if n == 0:
                result = await self.flow.advance()
                if not result.outputs and not result.after_publish:
                    return total
                await publish_result(self.bus, result)
            total += n
