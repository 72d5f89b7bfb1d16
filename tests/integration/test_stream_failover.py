"""Two batch stream workers in one consumer group on tansu + Redis; one is killed (SIGKILL) in the
middle of a batch whose effects are partly stored and whose offsets are not committed. The
survivor takes over every partition and every event's effect is applied exactly once: spend
equals the winning prices with nothing left reserved, every conversion is joined once with its
whole value credited."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence

import pytest

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.redis_store import RedisStore
from agent_service.metrics import Metrics
from agent_service.pipeline.records import HandleResult
from agent_service.ports.bus import BusRecord
from agent_service.units import DAY_MS
from stream_apps.topology import BatchWorker
from tests.serve_kit import ROOT, await_join_records
from tests.store_probe import read_credits
from tests.stream_world import (
    CAMPAIGN,
    T0,
    Expected,
    input_topics,
    publish_events,
    publish_final_ticks,
    store_decisions,
    stream_config,
    stream_service,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

PARTITIONS = 4
DECISIONS = 3_000
PATIENCE_S = 120.0
"""Generous bound of every wait (a loaded machine is slow, not stuck)."""


async def _until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + PATIENCE_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.1)


async def _line(proc: asyncio.subprocess.Process, want: str) -> None:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), PATIENCE_S)
        assert raw, f"the victim exited before printing {want}"
        if raw.decode().strip() == want:
            return


async def test_killed_worker_partitions_taken_over_with_effects_exactly_once(tansu, service_redis_url) -> None:
    prefix = f"fo{uuid.uuid4().hex[:6]}"
    cfg = stream_config(prefix, tansu.bootstrap, service_redis_url, PARTITIONS)
    t, rng, expected = cfg.topics, random.Random(5), Expected()
    bus = KafkaBus(tansu.bootstrap, session_timeout_s=cfg.serve.session_timeout_s)
    store = RedisStore(service_redis_url)
    await bus.start()
    await store.start()
    await bus.create_topics([*input_topics(cfg), t.decisions, t.experience, t.dead_letters], PARTITIONS)
    decisions = await store_decisions(DECISIONS, cfg, store, rng)
    every_tp = {(topic, p) for topic in input_topics(cfg) for p in range(PARTITIONS)}

    victim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.stream_victim", prefix, tansu.bootstrap, service_redis_url,
        str(PARTITIONS), "2", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    metrics = Metrics()
    svc, graph = stream_service(cfg, store, metrics)
    handle = svc.flow.handle
    handled: set[tuple[str, int]] = set()  # the survivor's (topic, partition) since the kill

    async def watched(topic: str, records: Sequence[BusRecord]) -> HandleResult:
        handled.update((r.topic, r.partition) for r in records)
        return await handle(topic, records)
    svc.flow.handle = watched  # type: ignore[method-assign]
    survivor = BatchWorker(cfg, svc.flow, bus, metrics)
    try:
        await _line(victim, "READY")
        await survivor.start()

        async def shared() -> bool:
            return len(survivor.assigned()) == len(every_tp) // 2
        await _until("the two workers to share the partitions", shared)

        await publish_events(cfg, bus, decisions, 0, 2 * DECISIONS // 3, rng, expected)
        await _line(victim, "HUNG")  # its second handler call stored its effects and never returned
        victim.kill()
        await victim.wait()
        handled.clear()
        await publish_events(cfg, bus, decisions, 2 * DECISIONS // 3, DECISIONS, rng, expected)
        await publish_final_ticks(cfg, bus, DECISIONS, expected)

        async def settled() -> bool:
            ledger = await store.budget(CAMPAIGN, T0 // DAY_MS)
            return ledger.reserved == 0 and ledger.spent >= expected.spend
        await _until("every auction result to be settled", settled)
        conversions = [f"c{i}" for i in range(DECISIONS) if i % 10 == 0]
        assert len(conversions) == expected.conversions
        records = await await_join_records(store, conversions, patience_s=PATIENCE_S)

        async def all_taken() -> bool:
            return survivor.assigned() == every_tp
        await _until("the survivor to hold every partition", all_taken)
        event_tps = {tp for tp in every_tp if tp[0] not in (t.bid_requests, t.outside_decisions)}  # none published
        assert handled >= event_tps  # it handled records of every event partition after the kill

        ledger = await store.budget(CAMPAIGN, T0 // DAY_MS)
        assert (ledger.spent, ledger.reserved) == (expected.spend, 0)  # each result settled once
        for cid in conversions:
            rec = records.get(cid)
            assert rec is not None and rec.status == "joined", (cid, rec)
            assert sum(m for _, m in rec.credits) == 20_000_000
            for decision_id, micros in rec.credits:  # credited once, under its conversion id
                assert (await read_credits(store, decision_id)).get(cid) == micros
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()
        await survivor.stop()
        await graph.close()
        await store.stop()
        await bus.stop()
