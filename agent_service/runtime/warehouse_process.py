"""The warehouse sink as its own process (``gaelp warehouse``): Kafka in, warehouse tables out."""

from __future__ import annotations

import asyncio
import signal

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import GaelpConfig
from agent_service.errors import ConfigError
from agent_service.metrics import Metrics
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.runtime.warehouse_sink import run_sink, start_sink, stop_sink

__all__ = ["run_warehouse_forever"]


async def run_warehouse_forever(cfg: GaelpConfig) -> None:
    """Run the sink until SIGINT or SIGTERM, then flush what it holds and stop."""
    if cfg.warehouse.backend == "off":
        raise ConfigError("warehouse.backend", "is 'off': nothing to run (choose duckdb or bigquery)")
    ids = Pseudonymizer.from_env(required=True)
    bus = KafkaBus(cfg.serve.kafka, session_timeout_s=cfg.serve.session_timeout_s)
    store = RedisStore(cfg.serve.redis, prefix=cfg.serve.key_prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await store.start()
    await bus.start()
    sink = None
    try:
        sink = await start_sink(cfg, bus, store, ids)
        assert sink is not None  # backend is not "off"
        print(f"gaelp warehouse: writing to {cfg.warehouse.backend} from kafka {cfg.serve.kafka}", flush=True)
        task = asyncio.create_task(run_sink(sink, Metrics()))
        await stop.wait()
        task.cancel()
    finally:
        if sink is not None:
            await stop_sink(sink)
        await bus.stop()
        await store.stop()
