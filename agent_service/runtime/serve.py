"""``gaelp serve``: the flow as Faust agents on Kafka with state in Redis, the OpenRTB bid
endpoint and /metrics over HTTP, and the in-process learner hot-swapping versions.

One process, one asyncio loop. Start order: the id salt check (``GAELP_ID_SALT`` is
required), Redis, Kafka producer (topics created if missing), model registry, the identity
graph (Redis, its own key prefix), the warehouse sink (its own consumer group; DuckDB file or
BigQuery), Faust app, HTTP server, learner and the background loops (window closing,
decision-log flushing, consumer lag and spend gauges, warehouse writing); stop in reverse. SIGINT/SIGTERM stop it cleanly: Faust waits for the
batches in flight to finish (and their effects to be stored) before it commits and leaves.

Secrets come only from the environment: ``GAELP_ID_SALT`` (pseudonymising ids) and
``GAELP_ADMIN_TOKEN`` (admin actions; without it they are refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from aiohttp import web

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.model_lineage import Lineage
from agent_service.adapters.record_spill import RecordSpill
from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.adapters.redis_registry import RedisRegistry
from agent_service.adapters.redis_store import RedisStore
from agent_service.adapters.registry import FileRegistry
from agent_service.config import GaelpConfig
from agent_service.errors import BusError, StoreError
from agent_service.http.admin import parse_budget_change
from agent_service.http.app import build_http_app
from agent_service.metrics import Metrics
from agent_service.pacing import planned_spend
from agent_service.pipeline.decide import DAY_MS, period_of
from agent_service.pipeline.identity_links import graph_config
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.pipeline.records import publish_result
from agent_service.runtime.assembly import build_learner, build_service
from agent_service.runtime.learner_loop import ExperienceLearner
from agent_service.runtime.learner_state import STATE_FILE, restore_state, write_state
from agent_service.runtime.model_watch import ModelWatcher
from agent_service.runtime.warehouse_sink import WarehouseSink, run_sink, start_sink, stop_sink
from stream_apps.topology import build_app

__all__ = ["ServeRuntime", "serve_forever"]

log = logging.getLogger(__name__)
_ADVANCE_EVERY_S = 1.0
_FLUSH_EVERY_S = 0.2
_GAUGES_EVERY_S = 2.0


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _registry(cfg: GaelpConfig) -> FileRegistry | RedisRegistry:
    """The model registry ``[serve] registry`` names."""
    if cfg.serve.registry == "redis":
        return RedisRegistry(cfg.serve.registry_url or cfg.serve.redis, prefix=cfg.serve.registry_prefix)
    return FileRegistry(cfg.serve.model_dir)


class ServeRuntime:
    """Everything ``gaelp serve`` runs, with an explicit lifecycle.

    :param cfg: configuration (``serve`` holds addresses and ports).
    :param creatives: creative variants the policy chooses from.
    :param learner: run the in-process learner in this process.
    """

    def __init__(self, cfg: GaelpConfig, creatives: int = 12, learner: bool = True) -> None:
        self.cfg = cfg
        self.creatives = creatives
        self.run_learner = learner
        self.metrics = Metrics()
        self.bus = KafkaBus(cfg.serve.kafka, session_timeout_s=cfg.serve.session_timeout_s)
        self.store = RedisStore(cfg.serve.redis)
        self.registry = _registry(cfg)
        model_dir = Path(cfg.serve.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        # With the Redis registry the rollback bookkeeping stays with the process that rolls back.
        self.lineage = Lineage(self.registry, model_dir / "LINEAGE.json" if cfg.serve.registry == "file" else None)
        self._state_path = model_dir / STATE_FILE
        self.watcher: ModelWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._spill: RecordSpill | None = None
        t = cfg.topics
        self._inputs = [t.bid_requests, t.auction_results, t.ad_events, t.conversions, t.identity_links]
        """The topics the stream worker consumes."""
        self._faust: Any = None
        self.http_port: int | None = None
        self.identity_graph: RedisIdentityGraph | None = None
        self.sink: WarehouseSink | None = None

    async def start(self) -> None:
        cfg, t = self.cfg, self.cfg.topics
        Pseudonymizer.from_env(required=True)  # refuse to start without the salt (the decider reads it too)
        torch.set_num_threads(1)
        await self.store.start()
        await self.bus.start()
        inputs = self._inputs
        await self.bus.create_topics([*inputs, t.decisions, t.experience, t.dead_letters], t.partitions)
        partitions = {name: await self.bus.partitions(name) for name in inputs}
        learner = build_learner(cfg, self.registry, self.creatives, seed=cfg.simulation.seed)
        if self.run_learner:
            restore_state(learner, self._state_path, self.registry)
        self.service = build_service(cfg, self.store, self.registry, self.metrics, partitions, clock=_wall_ms,
                                     campaign=cfg.serve.campaign, creatives=self.creatives,
                                     seed=cfg.simulation.seed + 7, shadow=cfg.serve.shadow)
        # The watcher swaps new versions in (loaded and verified off the loop); the bid path never syncs.
        self.service.decider.sync_every_s = float("inf")
        self.watcher = ModelWatcher(self.registry, self.service.policy, self.metrics, poll_s=cfg.serve.model_poll_s)
        await self.watcher.start()
        # Identity links feed the Redis identity graph (its own key prefix on the same Redis).
        self.identity_graph = RedisIdentityGraph.from_url(cfg.serve.redis, graph_config(cfg))
        self.service.flow.outcomes.identity.graph = self.identity_graph
        self.sink = await start_sink(cfg, self.bus, self.store, self.service.decider.ids)
        if self.sink is not None:
            self._tasks.append(asyncio.create_task(run_sink(self.sink, self.metrics)))
        self._faust = build_app(cfg, self.service.flow, self.bus, self.metrics)
        await self._faust.start()
        self._spill = RecordSpill.claim(Path(cfg.serve.spill_dir), f"decisions-{cfg.serve.group_id}-{cfg.serve.campaign}")
        http = build_http_app(self.service.decider, self.bus, t.decisions, self.metrics, clock=_wall_ms,
                              admin_token=os.environ.get("GAELP_ADMIN_TOKEN") or None,
                              admin_actions={"rollback": self._rollback, "budget": self._set_budget},
                              tmax_default_ms=cfg.serve.tmax_default_ms,
                              network_allowance_ms=cfg.serve.network_allowance_ms, max_batch=cfg.serve.max_batch,
                              batch_linger_ms=cfg.serve.batch_linger_ms, max_passes=cfg.serve.max_passes,
                              spill=self._spill)
        self._runner = web.AppRunner(http, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.serve.http_host, cfg.serve.http_port)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.run_learner:
            trainer = ExperienceLearner(self.bus, t.experience, learner, self.metrics, group=f"{cfg.serve.group_id}-learner")
            await trainer.start()
            self._trainer = trainer
            self._tasks.append(asyncio.create_task(self._learn_loop(trainer)))
        self._tasks.append(asyncio.create_task(self._advance_loop()))
        self._tasks.append(asyncio.create_task(self._flush_loop()))
        self._tasks.append(asyncio.create_task(self._gauges_loop()))
        # Everything built so far (torch, Faust, the model) lives as long as the process: move it
        # out of the collector's view so a full collection does not stall the bid path for ~100 ms.
        gc.collect()
        gc.freeze()
        log.info("serving on %s:%s (kafka %s, redis %s, model v%s)", cfg.serve.http_host, self.http_port,
                 cfg.serve.kafka, cfg.serve.redis, self.registry.latest_version())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.watcher is not None:
            await self.watcher.stop()
        if self._runner is not None:
            await self._runner.cleanup()  # the batcher publishes what it can of the decision log
        if self._spill is not None:
            self._spill.close()
        if self._faust is not None:
            await self._faust.stop()
        if self.run_learner and hasattr(self, "_trainer"):
            await self._trainer.stop()
            if self.cfg.serve.learner_save_every_s:
                self._save_state(self._trainer.learner.learner.checkpoint())
        if self.sink is not None:
            await stop_sink(self.sink)
        if self.identity_graph is not None:
            await self.identity_graph.close()
        await self.bus.stop()
        await self.store.stop()

    async def _learn_loop(self, trainer: ExperienceLearner) -> None:
        every = self.cfg.serve.learner_save_every_s
        saved_at, saved_updates = time.monotonic(), len(trainer.updates)
        while True:
            try:
                await trainer.poll(timeout_ms=500)
            except (BusError, StoreError) as exc:
                log.warning("learner poll failed: %s", exc)
                await asyncio.sleep(1.0)
            if every and time.monotonic() - saved_at >= every and len(trainer.updates) > saved_updates:
                saved_at, saved_updates = time.monotonic(), len(trainer.updates)
                state = trainer.learner.learner.checkpoint()  # taken here, between updates
                # written off the event loop: the bid path shares it
                await asyncio.get_running_loop().run_in_executor(None, self._save_state, state)

    def _save_state(self, state: dict[str, Any]) -> None:
        try:
            write_state(state, self._state_path)
        except OSError as exc:
            log.warning("saving the learner state failed: %s", exc)

    async def _advance_loop(self) -> None:
        """Close due windows and join parked conversions even when no event arrives."""
        while True:
            await asyncio.sleep(_ADVANCE_EVERY_S)
            try:
                await publish_result(self.bus, await self.service.flow.advance())
                await self.bus.flush()
            except (BusError, StoreError) as exc:
                log.warning("advance failed: %s", exc)
            except Exception:  # a background loop must outlive a bug: count it, log it, go on
                self.metrics.errors.labels("internal").inc()
                log.exception("advance loop")

    async def _flush_loop(self) -> None:
        """Wait for decision-log records published after the answers (keeps the queue short)."""
        while True:
            await asyncio.sleep(_FLUSH_EVERY_S)
            try:
                await self.bus.flush()
            except BusError as exc:
                self.metrics.errors.labels("decision_log").inc()
                log.warning("decision log flush failed: %s", exc)

    async def _gauges_loop(self) -> None:
        """Consumer lag per topic and spend against plan for the current period."""
        while True:
            await asyncio.sleep(_GAUGES_EVERY_S)
            try:
                await self._update_gauges()
            except StoreError as exc:
                log.warning("reading the budget failed: %s", exc)
            except Exception:  # gauges are best effort; the loop must survive
                self.metrics.errors.labels("internal").inc()
                log.exception("gauges loop")

    async def _update_gauges(self) -> None:
        self.metrics.model_version.set(self.service.policy.version)
        try:  # the stream worker's group, as the broker records it
            lags = await self.bus.group_lag(self.cfg.serve.group_id, self._inputs)
        except BusError as exc:
            log.warning("reading consumer lag failed: %s", exc)
            lags = {}
        for topic, lag in lags.items():
            self.metrics.consumer_lag.labels(topic).set(lag)
        now = _wall_ms()
        ledger = await self.store.budget(self.cfg.serve.campaign, period_of(now))
        self.metrics.budget.set(ledger.budget / 1e6)
        self.metrics.planned_spend.set(planned_spend(ledger.budget, (now % DAY_MS) / DAY_MS) / 1e6)
        self.metrics.period_spend.labels("spent").set(ledger.spent / 1e6)
        self.metrics.period_spend.labels("reserved").set(ledger.reserved / 1e6)

    # --- admin actions ---------------------------------------------------------------------
    async def _rollback(self, _: dict[str, object]) -> dict[str, object]:
        result = self.lineage.rollback()
        if self.run_learner and hasattr(self, "_trainer"):
            # else its next version would grow from the weights just rolled back from
            self._trainer.learner.adopt(result.now_serving)
        served = await self.watcher.check() if self.watcher is not None else self.service.policy.version
        return {**result._asdict(), "serving": served}

    async def _set_budget(self, body: dict[str, object]) -> dict[str, object]:
        change = parse_budget_change(body, period_of(_wall_ms()))
        period = change.period
        await self.store.set_budget(self.cfg.serve.campaign, period, change.budget_micros)
        state = await self.store.budget(self.cfg.serve.campaign, period)
        return {"period": period, "budget_usd": state.budget / 1e6, "spent_usd": state.spent / 1e6}


async def serve_forever(cfg: GaelpConfig, creatives: int = 12, learner: bool = True) -> None:
    """Run the service until SIGINT or SIGTERM."""
    runtime = ServeRuntime(cfg, creatives=creatives, learner=learner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    print(f"gaelp serve: listening on http://{cfg.serve.http_host}:{runtime.http_port} "
          f"(POST /openrtb2/bid, GET /metrics); kafka {cfg.serve.kafka}; redis {cfg.serve.redis}", flush=True)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
