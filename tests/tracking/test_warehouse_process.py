"""`gaelp warehouse` as a process of its own beside `gaelp serve --warehouse off`: the sink
reads the service's topics from Kafka and writes every decision exactly once to DuckDB, and a
clean stop (SIGTERM) flushes what it holds."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.config import SimulationConfig, TopicsConfig
from agent_service.runtime.driver import SimDriver
from agent_service.runtime.feed import feed
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from simulators.basic import BasicWorld
from tests.serve_kit import ROOT, SALT, TOPICS, start_serve
from tests.tracking.test_serve_tracking import _config

pytestmark = [pytest.mark.services, pytest.mark.slow]


async def test_warehouse_process_writes_what_serve_decides(tansu, service_redis_url, tmp_path: Path) -> None:
    prefix = f"whp{uuid.uuid4().hex[:6]}"
    config = _config(tmp_path, prefix)
    config.write_text(config.read_text().replace('backend = "duckdb"', 'backend = "off"'))
    serve, _ = await start_serve(config, tansu.bootstrap, service_redis_url)
    path = tmp_path / "separate.duckdb"
    env = {**os.environ, "GAELP_KAFKA": tansu.bootstrap, "GAELP_REDIS": service_redis_url, "GAELP_ID_SALT": SALT}
    sink = subprocess.Popen([sys.executable, "-m", "agent_service.cli", "-v", "warehouse", "--config", str(config),
                             "--warehouse", "duckdb", "--warehouse-path", str(path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    topics = TopicsConfig(**{k: f"{prefix}.{k.replace('_', '-')}" for k in TOPICS}, partitions=2)
    bus = KafkaBus(tansu.bootstrap, session_timeout_s=2.0)
    await bus.start()
    driver = SimDriver(BasicWorld(SimulationConfig(seed=9, users=100, opportunities_per_day=800, creatives=12)),
                       bus, topics, group=f"{prefix}-driver")
    await driver.start()
    try:
        stats = await feed(driver, days=0.25, drain_days=0)
        assert stats.decisions > 0
        seen = await _caught_up(sink, stats.decisions)
        assert seen == stats.decisions, f"the sink caught up at {seen} of {stats.decisions} decisions"
    finally:
        await driver.stop()
        await bus.stop()
        sink.terminate()
        sink_out, _ = sink.communicate(timeout=60)
        serve.terminate()
        serve_out, _ = serve.communicate(timeout=60)
    assert sink.returncode == 0 and "Traceback" not in sink_out, sink_out[-3000:]
    assert "Traceback" not in serve_out, serve_out[-3000:]
    assert not (tmp_path / "serve.duckdb").exists()  # the service itself wrote nothing
    warehouse = DuckDBWarehouse(path)
    try:
        rows = await warehouse.query("SELECT count(*), count(DISTINCT decision_id) FROM decisions")
        assert rows[0] == (stats.decisions, stats.decisions)
    finally:
        await warehouse.close()


async def _caught_up(sink: subprocess.Popen[str], decisions: int, patience_s: float = 120.0) -> int | None:
    """Read the sink's log until it reports having written ``decisions`` decision rows (its
    "caught up" line); the last count seen if it does not within ``patience_s`` (a loaded machine
    is slow, not stuck: the sink's group join on tansu takes seconds)."""
    assert sink.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    seen = None
    while (left := deadline - loop.time()) > 0:
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, sink.stdout.readline), left)
        except TimeoutError:
            break
        if not line:
            break  # the sink exited: its output is checked by the caller
        if match := re.search(r"caught up; rows written: .*\bdecisions=(\d+)", line):
            seen = int(match.group(1))
            if seen >= decisions:
                break
    return seen
