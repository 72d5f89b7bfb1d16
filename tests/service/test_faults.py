"""Fault tests: each runs a simulated campaign through ``gaelp serve`` on tansu + Redis, injects
one fault mid-stream, and ends with the promises of ``harness.check_promises``: every in-window
joinable conversion joined exactly once (store and experience stream), no budget overspent,
no reservation left open."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.servers import RedisServer
from tests.service.harness import Scenario, run_scenario

pytestmark = [pytest.mark.services, pytest.mark.slow]


async def test_worker_killed_mid_stream_and_restarted(tansu, tmp_path: Path) -> None:
    """SIGKILL (no commit, no clean-up) in the middle of the traffic, then a fresh process."""
    async def fault(sc: Scenario, slot: int) -> None:
        if slot in (3, 10):  # once during traffic (8 slots of 3 h), once while windows drain
            sc.kill_service()
            await sc.start_service()

    with RedisServer() as redis:
        sc = await run_scenario(tansu.bootstrap, redis.url, tmp_path, fault)
    assert len(sc.logs) == 3  # two kills and the final stop


async def test_redis_restarted_with_append_only_file(tansu, tmp_path: Path) -> None:
    """Redis goes away for a second mid-stream and comes back from its AOF; the service retries."""
    redis = RedisServer(aof=True).start()
    try:
        async def fault(sc: Scenario, slot: int) -> None:
            if slot == 4:
                redis.stop()
                await asyncio.sleep(1.0)
                redis.start()

        await run_scenario(tansu.bootstrap, redis.url, tmp_path, fault)
    finally:
        redis.cleanup()


async def test_broker_stopped_for_a_few_seconds(tmp_path: Path) -> None:
    """The broker freezes (SIGSTOP) for 3 s mid-stream, then resumes (SIGCONT): consumers time out,
    rejoin, and redelivered batches change nothing."""
    from tests.servers import TansuBroker

    with TansuBroker() as broker, RedisServer() as redis:
        async def fault(sc: Scenario, slot: int) -> None:
            if slot == 5:
                assert broker.proc is not None
                broker.proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(3.0)
                broker.proc.send_signal(signal.SIGCONT)

        await run_scenario(broker.bootstrap, redis.url, tmp_path, fault)


async def test_duplicates_and_out_of_order_burst(tansu, tmp_path: Path) -> None:
    """Every source record delivered twice, the records between two ticks shuffled."""
    with RedisServer() as redis:
        await run_scenario(tansu.bootstrap, redis.url, tmp_path, chaos=True)
