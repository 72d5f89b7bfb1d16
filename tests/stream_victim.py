"""A batch stream worker in a process of its own, for the fail-over test to kill.

    python -m tests.stream_victim PREFIX BOOTSTRAP REDIS_URL PARTITIONS HANG_AT

It prints ``READY`` once started; at its ``HANG_AT``-th handler call it lets the handler store
that part's effects, prints ``HUNG`` and never returns: the batch's outputs are not published and
its offsets not committed, the state a worker killed mid-batch leaves behind.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from agent_service.pipeline.records import HandleResult
from agent_service.ports.bus import BusRecord
from stream_apps.topology import BatchWorker
from tests.stream_world import started_worker_parts


async def main(prefix: str, bootstrap: str, redis_url: str, partitions: int, hang_at: int) -> None:
    cfg, bus, _store, metrics, svc, _graph = await started_worker_parts(prefix, bootstrap, redis_url, partitions)
    handle, calls = svc.flow.handle, 0

    async def hanging(topic: str, records: Sequence[BusRecord]) -> HandleResult:
        nonlocal calls
        calls += 1
        result = await handle(topic, records)
        if calls == hang_at:
            print("HUNG", flush=True)
            await asyncio.Event().wait()
        return result
    svc.flow.handle = hanging  # type: ignore[method-assign]
    worker = BatchWorker(cfg, svc.flow, bus, metrics)
    await worker.start()
    print("READY", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), int(a[4])))
