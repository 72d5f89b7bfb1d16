"""``gaelp serve``: the service on Kafka + Redis, all of it or the roles asked for.

Roles (``--roles``; all five by default, for one machine):

- ``bidder`` — the OpenRTB bid endpoint: decides from Redis state with the model it serves
  (new versions swapped in by ``model_watch``), reserves budget atomically, logs every decision
  to Kafka. Never trains, never writes the warehouse; scale it out (``--scale bidder=N``):
  every bidder shares the budget in Redis and the model registry.
- ``stream`` — the stream topology (``stream_apps.topology``; its batch worker, or with
  ``serve.stream_runtime = "faust"`` Faust agents): auction results, ad events, identity
  links, conversions and bid requests from Kafka; Kafka spreads partitions over the stream
  workers of the consumer group.
- ``learner`` — the learner service (``runtime.learner_service``): experience topic in,
  versioned weights out, on a Ray actor (``[learner] backend``), checkpointed, offsets committed
  after each checkpoint. Run one.
- ``sink`` — the warehouse sink (its own consumer group; DuckDB file or BigQuery).
- ``candidate`` — the shadow candidate (``[serve] candidate_version``; idle without one):
  decides a sample of the decision log again with that version and logs its decisions
  (``runtime.candidate_worker``), so the bidders never run a second model.

Every process serves ``GET /metrics`` and ``GET /healthz``; a bidder also ``POST
/openrtb2/bid`` and the admin actions. Start order: the id salt check (``GAELP_ID_SALT``),
Redis, Kafka (topics created if missing), the model registry, then each role; stop in reverse.
SIGINT/SIGTERM stop it cleanly (Faust finishes the batches in flight; the learner makes a last
checkpoint and commits). Secrets come only from the environment: ``GAELP_ID_SALT`` and
``GAELP_ADMIN_TOKEN`` (admin actions; without it they are refused).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import torch
from aiohttp import web

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.model_lineage import Lineage
from agent_service.adapters.record_spill import RecordSpill
from agent_service.adapters.redis_canary import RedisCanaryStore
from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import GaelpConfig
from agent_service.creatives import CatalogueFile
from agent_service.errors import BusError, ConfigError, StoreError
from agent_service.http.admin import parse_budget_change
from agent_service.http.app import build_http_app, build_metrics_app
from agent_service.metrics import Metrics
from agent_service.money import micros_to_usd
from agent_service.pacing import planned_spend
from agent_service.pipeline.canary_tally import CanaryTally
from agent_service.pipeline.decide import DAY_MS, period_of
from agent_service.pipeline.identity_links import graph_config
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.pipeline.records import publish_result
from agent_service.runtime.assembly import Service, build_service, candidate_loader
from agent_service.runtime.canary_watch import CanaryWatcher
from agent_service.runtime.candidate_worker import CandidateWorker, load_candidate
from agent_service.runtime.event_loop import cancel_all
from agent_service.runtime.learner_service import LearnerService, learner_backend, model_registry
from agent_service.runtime.model_watch import ModelWatcher
from agent_service.runtime.shadow import shadow_config, shadow_roles
from agent_service.runtime.warehouse_sink import WarehouseSink, run_sink, start_sink, stop_sink
from stream_apps.topology import BatchWorker, build_app

__all__ = ["ROLES", "ServeRuntime", "serve_forever"]

log = logging.getLogger(__name__)
ROLES: tuple[str, ...] = ("bidder", "stream", "learner", "sink", "candidate")
_ADVANCE_EVERY_S = 1.0
_FLUSH_EVERY_S = 0.2
_GAUGES_EVERY_S = 2.0
_STOP_STEP_S = 15.0
"""Longest wait for one part to stop on shutdown (aiohttp alone would wait 60 s for open requests)."""


def _wall_ms() -> int:
    return int(time.time() * 1000)


class ServeRuntime:
    """Everything ``gaelp serve`` runs for its roles, with an explicit lifecycle.

    :param cfg: configuration (``serve`` holds addresses and ports).
    :param creatives: creative variants the policy chooses from.
    :param roles: which of :data:`ROLES` this process runs.
    :param reuse_port: share the HTTP port with other bidder processes (SO_REUSEPORT: the kernel
        spreads connections over them; ``gaelp serve --workers N``).
    :param metrics_port: also serve ``/metrics`` and ``/healthz`` on this port of its own (with a
        shared port, a scrape would reach whichever process the kernel picks).
    """

    def __init__(self, cfg: GaelpConfig, creatives: int = 12, roles: Collection[str] = ROLES,
                 reuse_port: bool = False, metrics_port: int | None = None) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ConfigError("--roles", f"expected some of {', '.join(ROLES)}, got {sorted(roles)}")
        cfg = shadow_config(cfg)  # a shadow gets its own keys, group and output topics
        roles = shadow_roles(cfg, roles)
        if not roles:
            raise ConfigError("--roles", "nothing left to run in shadow mode (no learner, no sink)")
        self.cfg, self.creatives, self.roles = cfg, creatives, frozenset(roles)
        self.reuse_port, self.metrics_port = reuse_port, metrics_port
        self.metrics = Metrics()
        self.bus = KafkaBus(cfg.serve.kafka, session_timeout_s=cfg.serve.session_timeout_s)
        self.store = RedisStore(cfg.serve.redis, prefix=cfg.serve.key_prefix)
        self.registry = model_registry(cfg)
        model_dir = Path(cfg.serve.model_dir)
        # With the Redis registry the rollback bookkeeping stays with the process that rolls back.
        self.lineage = Lineage(self.registry, model_dir / "LINEAGE.json" if cfg.serve.registry == "file" else None)
        t = cfg.topics
        self._inputs = [t.bid_requests, t.outside_decisions, t.auction_results, t.ad_events, t.conversions,
                        t.identity_links]
        """The topics the stream worker consumes."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stops: list[Callable[[], Awaitable[None]]] = []
        self._needs_store = bool(self.roles & {"bidder", "stream", "sink"})
        self.service: Service | None = None
        self.watcher: ModelWatcher | None = None
        self.canary_store: RedisCanaryStore | None = None
        self.canary_watch: CanaryWatcher | None = None
        self.learner: LearnerService | None = None
        self.sink: WarehouseSink | None = None
        self.identity_graph: RedisIdentityGraph | None = None
        self.http_port: int | None = None

    @property
    def served_version(self) -> int:
        return self.service.policy.version if self.service is not None else 0

    async def start(self) -> None:
        cfg, t = self.cfg, self.cfg.topics
        ids = Pseudonymizer.from_env(required=True) if self._needs_store else None  # refuse to start without the salt
        torch.set_num_threads(1)
        if self._needs_store:
            await self.store.start()
        await self.bus.start()
        await self.bus.create_topics([*self._inputs, t.decisions, t.candidate_decisions, t.experience, t.dead_letters],
                                     t.partitions)
        if "learner" in self.roles:
            self.learner = LearnerService(cfg, self.bus, learner_backend(cfg, self.creatives, cfg.simulation.seed),
                                          self.metrics)
            await self.learner.start()
            stop = asyncio.Event()
            self._tasks.append(asyncio.create_task(self.learner.run(stop)))
            self._stops.append(self.learner.stop)
        if self.roles & {"bidder", "stream"}:
            await self._start_decider()
        if "stream" in self.roles:
            await self._start_stream()
        if "candidate" in self.roles:
            await self._start_candidate()
        if "sink" in self.roles:
            assert ids is not None
            self.sink = await start_sink(cfg, self.bus, self.store, ids)
            if self.sink is not None:
                self._tasks.append(asyncio.create_task(run_sink(self.sink, self.metrics)))
        await self._start_http()
        self._tasks.append(asyncio.create_task(self._gauges_loop()))
        self._tasks.append(asyncio.create_task(_watch_loop_lag(self.metrics)))
        # Everything built so far (torch, Faust, the model) lives as long as the process: move it
        # out of the collector's view so a full collection does not stall the bid path for ~100 ms.
        gc.collect()
        gc.freeze()
        log.info("%s on %s:%s (kafka %s, redis %s, model v%s)", "+".join(sorted(self.roles)), cfg.serve.http_host,
                 self.http_port, cfg.serve.kafka, cfg.serve.redis, self.registry.latest_version())

    async def _start_decider(self) -> None:
        cfg = self.cfg
        partitions = {name: await self.bus.partitions(name) for name in self._inputs}
        self.service = build_service(cfg, self.store, self.registry, self.metrics, partitions, clock=_wall_ms,
                                     campaign=cfg.serve.campaign, creatives=self.creatives,
                                     seed=cfg.simulation.seed + 7, shadow=cfg.serve.shadow,
                                     catalogue=CatalogueFile(cfg.creatives.catalogue, cfg.creatives.count,
                                                             self.creatives, cfg.creatives.reload_s))
        # The watcher swaps new versions in (loaded and verified off the loop); the bid path never syncs.
        self.service.decider.sync_every_s = float("inf")
        self.watcher = ModelWatcher(self.registry, self.service.policy, self.metrics, poll_s=cfg.serve.model_poll_s)
        await self.watcher.start()
        self._stops.append(self.watcher.stop)
        # The canary of `gaelp promote`: its plan polled off the bid path, per-arm outcomes tallied.
        self.canary_store = RedisCanaryStore(cfg.serve.redis, prefix=f"{cfg.serve.key_prefix}canary:")
        await self.canary_store.start()
        self._stops.append(self.canary_store.stop)
        tally = CanaryTally(self.canary_store)
        self.service.flow.outcomes.canary = tally
        self.canary_watch = CanaryWatcher(
            self.canary_store, self.service.decider, tally,
            candidate_loader(cfg, self.creatives, self.registry, cfg.simulation.seed + 8, self.service.policy.catalogue),
            self.metrics, poll_s=cfg.serve.model_poll_s)
        await self.canary_watch.start()
        self._stops.append(self.canary_watch.stop)

    async def _start_candidate(self) -> None:
        cfg = self.cfg
        catalogue = CatalogueFile(cfg.creatives.catalogue, cfg.creatives.count, self.creatives, cfg.creatives.reload_s)
        scorer = await load_candidate(cfg, self.registry, self.metrics, self.creatives, cfg.simulation.seed + 8,
                                      catalogue)
        if scorer is None:
            return
        worker = CandidateWorker(scorer, self.bus, cfg)
        await worker.start()
        self._stops.append(worker.stop)
        self._tasks.append(asyncio.create_task(worker.run()))

    async def _start_stream(self) -> None:
        assert self.service is not None
        cfg = self.cfg
        # Identity links feed the Redis identity graph (its own key prefix on the same Redis).
        self.identity_graph = RedisIdentityGraph.from_url(cfg.serve.redis, graph_config(cfg))
        self.service.flow.outcomes.identity.graph = self.identity_graph
        runner = (BatchWorker(cfg, self.service.flow, self.bus, self.metrics) if cfg.serve.stream_runtime == "batch"
                  else build_app(cfg, self.service.flow, self.bus, self.metrics))
        await runner.start()
        self._stops.append(runner.stop)
        self._tasks.append(asyncio.create_task(self._advance_loop()))

    async def _start_http(self) -> None:
        cfg = self.cfg
        if "bidder" in self.roles:
            assert self.service is not None
            spill = RecordSpill.claim(Path(cfg.serve.spill_dir), f"decisions-{cfg.serve.group_id}-{cfg.serve.campaign}")
            self._stops.append(_async(spill.close))
            http = build_http_app(self.service.decider, self.bus, cfg.topics.decisions, self.metrics, clock=_wall_ms,
                                  admin_token=os.environ.get("GAELP_ADMIN_TOKEN") or None,
                                  admin_actions={"rollback": self._rollback, "budget": self._set_budget},
                                  tmax_default_ms=cfg.serve.tmax_default_ms,
                                  network_allowance_ms=cfg.serve.network_allowance_ms, max_batch=cfg.serve.max_batch,
                                  batch_linger_ms=cfg.serve.batch_linger_ms, max_passes=cfg.serve.max_passes,
                                  spill=spill, log_linger_ms=cfg.serve.decision_log_linger_ms)
            self._tasks.append(asyncio.create_task(self._flush_loop()))
        else:
            http = build_metrics_app(self.metrics, lambda: {"roles": sorted(self.roles),
                                                            "model_version": self.served_version})
        # In-flight bids have a deadline of tmax (milliseconds): a second is ample to let them finish.
        runner = web.AppRunner(http, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, cfg.serve.http_host, cfg.serve.http_port, reuse_port=self.reuse_port or None)
        await site.start()
        self._stops.append(runner.cleanup)  # a bidder's batcher publishes what it can of the decision log
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.metrics_port is not None:
            own = web.AppRunner(build_metrics_app(self.metrics, lambda: {"roles": sorted(self.roles),
                                                                          "model_version": self.served_version}),
                                access_log=None)
            await own.setup()
            await web.TCPSite(own, cfg.serve.http_host, self.metrics_port).start()
            self._stops.append(own.cleanup)

    async def stop(self) -> None:
        """Stop every part, each within ``_STOP_STEP_S``: a part that hangs (a broker gone first, a
        request that never completes) is logged by name and left behind, so the process still exits."""
        await cancel_all(self._tasks)
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            (getattr(step, "__qualname__", repr(step)), step) for step in reversed(self._stops)]
        if self.sink is not None:
            steps.append(("sink", functools.partial(stop_sink, self.sink)))
        if self.identity_graph is not None:
            steps.append(("identity graph", self.identity_graph.close))
        steps.append(("bus", self.bus.stop))
        if self._needs_store:
            steps.append(("store", self.store.stop))
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), _STOP_STEP_S)
            except TimeoutError:
                log.error("shutdown: %s did not stop within %.0f s; going on without it", name, _STOP_STEP_S)
            except Exception:  # one part failing to stop must not keep the others running
                log.exception("shutdown: %s failed to stop", name)

    # --- background loops ------------------------------------------------------------------
    async def _advance_loop(self) -> None:
        """Close due windows and join parked conversions even when no event arrives."""
        assert self.service is not None
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
        """Consumer lag per topic (stream) and spend against plan for the current period (bidder)."""
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
        if "stream" in self.roles:
            try:  # the stream worker's group, as the broker records it
                lags = await self.bus.group_lag(self.cfg.serve.group_id, self._inputs)
            except BusError as exc:
                log.warning("reading consumer lag failed: %s", exc)
                lags = {}
            for topic, lag in lags.items():
                self.metrics.consumer_lag.labels(topic).set(lag)
        if "bidder" in self.roles:
            now = _wall_ms()
            ledger = await self.store.budget(self.cfg.serve.campaign, period_of(now))
            self.metrics.budget.set(micros_to_usd(ledger.budget))
            self.metrics.planned_spend.set(micros_to_usd(planned_spend(ledger.budget, (now % DAY_MS) / DAY_MS)))
            self.metrics.period_spend.labels("spent").set(micros_to_usd(ledger.spent))
            self.metrics.period_spend.labels("reserved").set(micros_to_usd(ledger.reserved))

    # --- admin actions ---------------------------------------------------------------------
    async def _rollback(self, _: dict[str, object]) -> dict[str, object]:
        # The republished version is marked as a rollback: the learner, wherever it runs, trains on from it.
        result = await asyncio.to_thread(self.lineage.rollback)
        served = await self.watcher.check() if self.watcher is not None else self.served_version
        return {**result._asdict(), "serving": served}

    async def _set_budget(self, body: dict[str, object]) -> dict[str, object]:
        change = parse_budget_change(body, period_of(_wall_ms()))
        await self.store.set_budget(self.cfg.serve.campaign, change.period, change.budget_micros)
        state = await self.store.budget(self.cfg.serve.campaign, change.period)
        return {"period": change.period, "budget_usd": micros_to_usd(state.budget), "spent_usd": micros_to_usd(state.spent)}


async def _watch_loop_lag(metrics: Metrics, every_s: float = 0.01) -> None:
    """Observe how late a 10 ms timer fires: the time the loop was held by something else (a
    stall delays every request of the process; gaelp_event_loop_lag_seconds)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        metrics.loop_lag.observe(max(0.0, loop.time() - due))


def _async(fn: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        fn()
    return run


def yield_cpu(cfg: GaelpConfig, roles: Collection[str]) -> int:
    """A learner or shadow-candidate process beside no bid path lowers its priority (``[learner]
    nice``, and ``sched_idle``) before Ray starts, so Ray's raylet, workers and the learner actor
    inherit it; returns the niceness added. Both are background work: a candidate that falls
    behind catches up from the decision log."""
    if not {"learner", "candidate"} & set(roles) or "bidder" in roles:
        return 0
    if cfg.learner.sched_idle and hasattr(os, "SCHED_IDLE"):
        # Every thread already running (the policy is per thread); threads started later inherit it.
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
        log.info("%s process on SCHED_IDLE: bid paths on this machine come first", "+".join(sorted(roles)))
    if cfg.learner.nice:
        os.nice(cfg.learner.nice)
        log.info("%s process niced by %d", "+".join(sorted(roles)), cfg.learner.nice)
    return cfg.learner.nice


async def serve_forever(cfg: GaelpConfig, creatives: int = 12, roles: Collection[str] = ROLES,
                        reuse_port: bool = False, metrics_port: int | None = None) -> None:
    """Run the service until SIGINT or SIGTERM."""
    yield_cpu(cfg, roles)
    runtime = ServeRuntime(cfg, creatives=creatives, roles=roles, reuse_port=reuse_port, metrics_port=metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    what = "POST /openrtb2/bid, GET /metrics" if "bidder" in runtime.roles else "GET /metrics"
    own = f", metrics also on :{metrics_port}" if metrics_port is not None else ""
    print(f"gaelp serve ({', '.join(sorted(runtime.roles))}): listening on http://{cfg.serve.http_host}:"
          f"{runtime.http_port} ({what}{own}); kafka {cfg.serve.kafka}; redis {cfg.serve.redis}", flush=True)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
