"""One batch stream worker in a process of its own, for ``bench_stream.py --processes``.

    python bench/stream_worker_proc.py PREFIX BOOTSTRAP REDIS_URL PARTITIONS

Joins the consumer group and prints ``ASSIGNED <n>`` whenever its partition count changes; starts
handling on a ``GO`` line on stdin (so every member holds its share before the clock starts),
prints ``COMMITTED <json>`` after each commit and, on ``STOP``, stops and prints ``DONE <json>``
with its CPU seconds and counts.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as bench_stream.py
    os.environ.setdefault(_var, "1")

import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent_service.config import GaelpConfig
from agent_service.metrics import Metrics
from agent_service.runtime import event_loop
from stream_apps.topology import BatchWorker
from tests.stream_world import started_worker_parts


async def main(prefix: str, bootstrap: str, redis_url: str, partitions: int) -> None:
    cfg, bus, store, metrics, svc, graph = await started_worker_parts(prefix, bootstrap, redis_url, partitions)
    worker = BatchWorker(cfg, svc.flow, bus, metrics)
    consumer = worker._consumer
    commit = consumer.commit

    async def committing(positions=None):  # type: ignore[no-untyped-def]
        await commit(positions)
        if positions:
            print("COMMITTED", json.dumps([[t, p, o] for (t, p), o in positions.items()]), flush=True)
    consumer.commit = committing  # type: ignore[method-assign]
    gc.collect()
    gc.freeze()
    await consumer.start()  # in the group; handling starts on GO (the run task, as BatchWorker.start)
    stdin = asyncio.create_task(asyncio.to_thread(sys.stdin.readline))
    held = -1
    while not stdin.done():
        if len(worker.assigned()) != held:
            held = len(worker.assigned())
            print("ASSIGNED", held, flush=True)
        await asyncio.sleep(0.02)
    assert stdin.result().strip() == "GO"
    cpu0 = time.process_time()
    worker._task = asyncio.create_task(worker._run())
    assert (await asyncio.to_thread(sys.stdin.readline)).strip() == "STOP"
    await worker.stop()
    cpu = time.process_time() - cpu0
    print("DONE", json.dumps({"cpu_s": cpu, "events": Metrics.value(metrics.events),
                              "conversions_joined": Metrics.value(metrics.conversions_joined)}), flush=True)
    await graph.close()
    await store.stop()
    await bus.stop()


if __name__ == "__main__":
    a = sys.argv[1:]
    event_loop.run(main(a[0], a[1], a[2], int(a[3])), GaelpConfig().serve.event_loop)
