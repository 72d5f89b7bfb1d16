"""`gaelp serve` on real protocols (tansu Kafka + Redis on loopback) with the warehouse sink
writing a DuckDB file and identity links going through the Redis identity graph.

The simulator's stream goes through Kafka into the service; after a clean stop, a second sink
in the same consumer group catches up from the committed offsets (as a restarted service
would). The file then holds every decision and event exactly once, attributions that add up
to each joined conversion, and only pseudonymous ids; logged-in devices resolve to their
user's pseudonym in Redis.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import SimulationConfig, TopicsConfig
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.runtime.driver import SimDriver
from agent_service.runtime.feed import feed
from agent_service.runtime.warehouse_sink import WarehouseSink
from agent_service.warehouse import BatchConfig, BatchWriter
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from simulators.basic import BasicWorld, BasicWorldParams
from tests.serve_kit import SALT, TOPICS, await_join_records, serve_toml, start_serve
from tests.store_probe import read_identity

pytestmark = [pytest.mark.services, pytest.mark.slow]

HEX = re.compile(r"^(d:)?[0-9a-f]{24}$")


def _config(tmp: Path, prefix: str) -> Path:
    path = tmp / "gaelp.toml"
    path.write_text(serve_toml(prefix, tmp, budget_usd=4.0, campaign=prefix, extra=f"""
[identity]
key_prefix = "{prefix}:{{id}}:"

[warehouse]
backend = "duckdb"
duckdb_path = "{tmp / 'serve.duckdb'}"
max_rows = 200
"""))
    return path


async def test_serve_writes_the_warehouse_and_resolves_identity(tansu, service_redis_url, tmp_path: Path) -> None:
    prefix = f"wh{uuid.uuid4().hex[:6]}"
    proc, _ = await start_serve(_config(tmp_path, prefix), tansu.bootstrap, service_redis_url)
    topics = TopicsConfig(**{k: f"{prefix}.{k.replace('_', '-')}" for k in TOPICS}, partitions=2)
    bus = KafkaBus(tansu.bootstrap, session_timeout_s=2.0)
    store = RedisStore(service_redis_url)
    world = BasicWorld(SimulationConfig(seed=5, users=120, opportunities_per_day=1_200, creatives=12),
                       BasicWorldParams(cvr=0.5, base_ctr=(0.1, 0.15, 0.08), login_rate=0.6))
    driver = SimDriver(world, bus, topics, group=f"{prefix}-driver")
    await bus.start()
    await store.start()
    await driver.start()
    try:
        stats = await feed(driver, days=0.5, drain_days=16)
        assert stats.decisions == stats.requests > 0
        # the log holds conversions scheduled past the drain too; only those published can be joined
        conversions = [c for c in world.conversion_log if c["event_time"] < stats.published_ms]
        joins = await await_join_records(store, [c["id"] for c in conversions])
        assert len(joins) == len(conversions) > 0, (len(joins), len(conversions))
        # no wait for the service's own sink: the sink below catches up from its committed offsets
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out[-3000:]
    try:
        ids = Pseudonymizer(SALT.encode())
        logged = [(p, d) for (p, d), on in world.logged_in.items() if on and (p, d) in world._seen_device]
        assert logged
        for person, d in logged:
            ident = await read_identity(store, ids(world.device_id(person, d)))
            assert ident.person_id == ids(world.user_id(person)) and ident.confidence == 1.0

        warehouse = DuckDBWarehouse(tmp_path / "serve.duckdb")
        before = (await warehouse.query("SELECT count(*) FROM decisions"))[0][0]
        assert before > 0  # the service wrote as it went
        sink = WarehouseSink(bus, topics, BatchWriter(warehouse, BatchConfig(max_rows=200, seed=0)), store, ids,
                             "last_touch", group=f"{prefix}-warehouse")
        q = warehouse.query
        events = driver.published["auction_results"] + driver.published["ad_events"] + driver.published["conversions"]
        joined = {c: r for c, r in joins.items() if r.status == "joined"}

        async def complete() -> bool:
            """Every decision, every event and every joined conversion's credit is in the file."""
            return ((await q("SELECT count(*) FROM decisions"))[0][0] == stats.decisions
                    and (await q("SELECT count(*) FROM events"))[0][0] == events
                    and {r[0] for r in await q("SELECT DISTINCT conversion_id FROM attributions")} >= set(joined))

        await sink.start()
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        # catch up from the committed offsets until the file is complete (the group join takes
        # seconds on tansu); give up only after a minute without a record
        while not await complete() and loop.time() - last_progress < 60.0:
            if await sink.poll(timeout_ms=1_000):
                last_progress = loop.time()
        await sink.stop()
        assert (await q("SELECT count(*) FROM decisions"))[0][0] == stats.decisions
        kinds = dict(await q("SELECT kind, count(*) FROM events GROUP BY kind"))
        assert kinds.get("win", 0) + kinds.get("loss", 0) == driver.published["auction_results"]
        assert kinds.get("impression", 0) + kinds.get("click", 0) == driver.published["ad_events"]
        assert kinds.get("conversion", 0) == driver.published["conversions"]
        credited = dict(await q("SELECT conversion_id, sum(credit_micros) FROM attributions GROUP BY 1"))
        fractions = dict(await q("SELECT conversion_id, sum(fraction) FROM attributions GROUP BY 1"))
        assert joined and set(credited) == set(joined)
        for c, r in joined.items():
            assert credited[c] == sum(m for _, m in r.credits) and fractions[c] == pytest.approx(1.0)
        people = [v for t in ("decisions", "events") for row in await q(f"SELECT person_id, device_id FROM {t}")
                  for v in row if v is not None]
        assert people and all(HEX.match(v) for v in people)  # pseudonyms only, never raw ids
        await warehouse.close()
    finally:
        await driver.stop()
        await store.stop()
        await bus.stop()
