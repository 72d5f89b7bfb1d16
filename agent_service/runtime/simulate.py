"""``gaelp simulate``: a simulated campaign end to end on the embedded defaults.

In one process, with the in-process bus and store: the simulator's requests go through the
bid-requests topic to the decision path, its auction results, clicks, identity links and
delayed conversions through their topics to the flow, experience to the in-process learner,
whose versions the decision path hot-swaps. After the last day of traffic the run keeps going
in event time (``drain_days``) so conversions land and attribution windows close.

Identity links feed the in-process identity graph, whose device → person verdicts the journeys
follow; the report scores them against the world's ground truth (and a login-only baseline).
With ``[simulation] canary_candidate`` a canary runs as ``gaelp promote`` runs it on the service
(runtime/sim_canary.py): the candidate decides live for a hashed share of persons, the controller
steps every slot in event time, and its steps go into the report and ``<out>/canary.jsonl``.
A warehouse sink writes decisions, events, attributions and experience to
``<out>/warehouse.duckdb`` as the run goes (the same sink ``gaelp serve`` runs on Kafka).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent_service.adapters.learners import NoCheckpoints, ThreadLearner
from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.registry import MemoryRegistry
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import IdentityLink
from agent_service.creatives import CatalogueFile, load_priors
from agent_service.metrics import Metrics
from agent_service.money import micros_to_usd
from agent_service.pacing import planned_fraction
from agent_service.pipeline.decide import period_of
from agent_service.pipeline.flow import Flow
from agent_service.ports.store import BudgetStore, RecordReader
from agent_service.runtime.assembly import build_learner, build_service
from agent_service.runtime.candidate_worker import CandidateWorker, load_candidate
from agent_service.runtime.driver import SimDriver
from agent_service.runtime.identity_eval import identity_report
from agent_service.runtime.learner_service import LearnerService
from agent_service.runtime.report import write_report
from agent_service.runtime.sim_canary import SimCanary, publish_candidate
from agent_service.runtime.trained import load_trained_agent
from agent_service.runtime.warehouse_sink import WarehouseSink, batch_config
from agent_service.runtime.worker import BusWorker
from agent_service.units import DAY_MS, HOUR_MS
from agent_service.warehouse import BatchWriter
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from agent_service.warehouse.schema import STREAM_TABLES
from simulators import build_world

__all__ = ["WAREHOUSE_FILE", "SimulationRun", "run_simulation"]

CAMPAIGN = "sim"
WAREHOUSE_FILE = "warehouse.duckdb"
"""The warehouse tables of a run, beside report.json (query them with DuckDB)."""
_DRAIN_SLOT_MS = HOUR_MS


@dataclass
class SimulationRun:
    """What a run leaves behind for the report."""

    cfg: GaelpConfig
    slots: list[dict[str, Any]] = field(default_factory=list)
    no_bids: Counter[str] = field(default_factory=Counter)
    versions_served: Counter[int] = field(default_factory=Counter)
    daily_decisions: Counter[int] = field(default_factory=Counter)
    daily_bids: Counter[int] = field(default_factory=Counter)
    ledgers: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    world_truth: dict[str, Any] = field(default_factory=dict)
    flow_counts: dict[str, float] = field(default_factory=dict)
    learner: dict[str, Any] = field(default_factory=dict)
    published_versions: int = 0
    canary: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    warehouse: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


async def run_simulation(cfg: GaelpConfig, out_dir: Path | None, progress: bool = True,
                         warehouse: bool = True) -> SimulationRun:
    """Run the campaign of ``cfg.simulation`` and write the report into ``out_dir``.

    :param cfg: configuration (``simulation`` sets days, seed and size).
    :param out_dir: where report.json, the plots and ``warehouse.duckdb`` go (None: no files).
    :param progress: show a progress bar on stderr.
    :param warehouse: write the warehouse tables to ``out_dir/warehouse.duckdb``.
    """
    started = time.perf_counter()
    torch.set_num_threads(1)  # small networks: one thread is faster and bit-for-bit repeatable
    sim = cfg.simulation
    run = SimulationRun(cfg)
    bus, store, registry, metrics = MemoryBus(), MemoryStore(), MemoryRegistry(), Metrics()
    world = build_world(sim, cfg.join.window_days)
    # The agent `gaelp serve` runs: the policy has [creatives] capacity slots, the catalogue holds
    # the world's creatives (60 in the calibrated world) and masks the rest.
    catalogue = CatalogueFile(cfg.creatives.catalogue, world.creatives, cfg.creatives.capacity, cfg.creatives.reload_s)
    # [simulation] model: the run starts from a `gaelp train` checkpoint (runtime/trained.py) instead of fresh weights
    start = load_trained_agent(sim.model, cfg.creatives.capacity) if sim.model else None
    learner = build_learner(cfg, registry, cfg.creatives.capacity, seed=sim.seed, start=start)
    learner.catalogue = catalogue
    learner.creative_priors = load_priors(cfg.creatives.priors)
    # [simulation] canary_candidate: the candidate goes in below a copy of the live version (served as the newest)
    candidate = publish_candidate(cfg, registry, cfg.creatives.capacity) if sim.canary_candidate else None
    t = cfg.topics
    inputs = [t.bid_requests, t.identity_links, t.auction_results, t.ad_events, t.conversions]
    service = build_service(cfg, store, registry, metrics, dict.fromkeys(inputs, 1),
                            clock=lambda: world.start_ms, campaign=CAMPAIGN,
                            creatives=cfg.creatives.capacity, seed=sim.seed + 7, catalogue=catalogue)
    flow, policy = service.flow, service.policy
    if start is not None:
        policy.restore_pacing(start)
    canary = (SimCanary(cfg, registry, service, metrics, candidate, cfg.creatives.capacity, sim.seed + 9, catalogue)
              if candidate is not None else None)
    worker = BusWorker(flow, bus, group="gaelp", order=inputs)
    driver = SimDriver(world, bus, t)
    trainer = LearnerService(cfg, bus, ThreadLearner(lambda: (learner, NoCheckpoints())), metrics, durable=False,
                             group="gaelp-learner")
    # [serve] candidate_version: the shadow candidate decides from the decision log, as `gaelp serve`'s candidate role
    scorer = await load_candidate(cfg, registry, metrics, cfg.creatives.capacity, sim.seed + 8, catalogue)
    shadow = CandidateWorker(scorer, bus, cfg, group="gaelp-candidate") if scorer is not None else None
    if shadow is not None:  # it reads the log's sampled partitions: as many as the service's topics have
        await bus.create_topics([t.decisions], t.partitions)
    sink = await _open_sink(cfg, out_dir, bus, store, flow) if warehouse and out_dir is not None else None
    parts = (worker, driver, trainer) if shadow is None else (worker, driver, trainer, shadow)
    for c in parts:
        await c.start()
    if canary is not None:
        await canary.start(world.start_ms)
    # what each slot's outcomes flow through, in order: the service, the learner, the shadow, the warehouse
    drains = [c.drain for c in (worker, trainer, shadow, sink) if c is not None]

    async def settle() -> None:
        for drain in drains:
            await drain()

    try:
        slot_ms = DAY_MS // sim.slots_per_day
        traffic_end = world.start_ms + int(sim.days * DAY_MS)
        drain_end = traffic_end + int(sim.drain_days * DAY_MS)
        n_slots = -(-(traffic_end - world.start_ms) // slot_ms) + -(-(drain_end - traffic_end) // _DRAIN_SLOT_MS)
        bar = tqdm(total=n_slots, desc="simulating", unit="slot", disable=not progress, leave=False, mininterval=0.5)
        t0 = world.start_ms
        while t0 < drain_end:
            traffic = t0 < traffic_end
            t1 = min(t0 + (slot_ms if traffic else _DRAIN_SLOT_MS), traffic_end if traffic else drain_end)
            decisions = []
            if traffic:
                expected = await driver.publish_requests(t0, t1)
                await worker.poll(t.bid_requests, max_records=100_000)
                decisions = await driver.collect(expected)
            before = dict(world.counts)
            await driver.publish_outcomes(decisions, t0, t1)
            await settle()
            if canary is not None:
                await canary.step(t1)
            if traffic:
                await _record_slot(run, store, world, decisions, before, t0, t1, policy.version)
            bar.update(1)
            bar.set_postfix(day=(t0 - world.start_ms) // DAY_MS, version=policy.version,
                            spend=f"${sum(s['spend_usd'] for s in run.slots[-1:]):.2f}" if run.slots else "$0")
            t0 = t1
        await driver.tick(drain_end + cfg.join.allowed_lateness_ms + 1)
        await settle()
        if canary is not None:  # a last look once every window has closed
            await canary.step(drain_end + cfg.join.allowed_lateness_ms + 1, force=True)
        bar.close()
    finally:
        for c in parts:
            await c.stop()
        if sink is not None:
            run.warehouse = await _close_sink(sink)
    truth = getattr(world, "device_truth", None)
    if truth is not None:
        run.identity = await identity_report(store, flow.decider.ids, truth(), await _links(bus, t.identity_links),
                                             flow.outcomes.identity.statuses)
    for day in range(int(-(-sim.days // 1))):
        b = await store.budget(CAMPAIGN, period_of(world.start_ms) + day)
        run.ledgers[day] = (b.budget, b.spent, b.reserved)
    run.world_truth = world.truth()
    run.flow_counts = {name: Metrics.value(getattr(metrics, attr)) for name, attr in (
        ("joined", "conversions_joined"), ("late", "conversions_late"),
        ("unattributed", "conversions_unattributed"), ("windows_closed", "windows_closed"),
        ("dead_letters", "dead_letters"))}
    run.learner = {"updates": sum(1 for u in trainer.updates if not u.rejected),
                   "rejected": sum(1 for u in trainer.updates if u.rejected),
                   "experience_records": trainer.records, "duplicates": trainer.duplicates,
                   "mean_reward": [round(u.mean_reward, 6) for u in trainer.updates],
                   "segments": _segments_summary(learner.segments, policy)}
    run.published_versions = registry.latest_version()
    if canary is not None:
        run.canary = await canary.report()
        if out_dir is not None:
            canary.write_log(out_dir)
    run.wall_seconds = time.perf_counter() - started
    if out_dir is not None:
        write_report(run, out_dir)
    return run


def _segments_summary(segments: Any, policy: Any) -> dict[str, Any]:
    """The segment model the learner fitted on the traffic and whether the bidder serves it."""
    fit = segments.fit
    if fit is None:
        return {"k": None, "people": segments.people, "served": False}
    served = policy.agent.segment_model
    return {"k": fit.k, "people": segments.people, "shares": [round(float(x), 4) for x in fit.share],
            "bic_by_k": {k: round(v, 1) for k, v in segments.bics.items()},
            "served": bool(np.allclose(served.prior[:fit.k], fit.share, atol=1e-6))}


async def _open_sink(cfg: GaelpConfig, out_dir: Path, bus: MemoryBus, store: RecordReader, flow: Flow
                     ) -> WarehouseSink:
    """The warehouse sink writing a fresh ``out_dir/warehouse.duckdb``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / WAREHOUSE_FILE
    for old in (path, path.with_name(path.name + ".wal")):
        old.unlink(missing_ok=True)
    wh = DuckDBWarehouse(path)
    await wh.ensure_tables()
    writer = BatchWriter(wh, batch_config(cfg.warehouse, seed=cfg.simulation.seed))
    sink = WarehouseSink(bus, cfg.topics, writer, store, flow.decider.ids, cfg.join.attribution)
    sink.experiments = flow.outcomes.experiments  # the run's [[experiments]] results, into experiment_arms
    await sink.start()
    return sink


async def _close_sink(sink: WarehouseSink) -> dict[str, Any]:
    """Flush and close the sink; the file's name and row counts (read back from the file)."""
    wh = sink.writer.warehouse
    try:
        await sink.stop()
        assert isinstance(wh, DuckDBWarehouse)
        rows = {name: int((await wh.query(f"SELECT count(*) FROM {name}"))[0][0]) for name in STREAM_TABLES}
    finally:
        await wh.close()
    return {"file": WAREHOUSE_FILE, "rows": rows, "skipped": dict(sorted(sink.skipped.items()))}


async def _links(bus: MemoryBus, topic: str) -> list[IdentityLink]:
    """Every identity link the world published (raw ids), in order, read back from the bus."""
    consumer = bus.consumer([topic], "gaelp-identity-eval")
    await consumer.start()
    try:
        records = await consumer.getmany(timeout_ms=0, max_records=10**9)
    finally:
        await consumer.stop()
    return [decode(r.value, IdentityLink) for r in records if not r.is_tick]


async def _record_slot(run: SimulationRun, store: BudgetStore, world: Any, decisions: list[Any],
                       before: dict[str, float], t0: int, t1: int, version: int) -> None:
    day = (t0 - world.start_ms) // DAY_MS
    for d in decisions:
        run.versions_served[d.model_version] += 1
        run.daily_decisions[day] += 1
        if d.bid:
            run.daily_bids[day] += 1
        else:
            run.no_bids[d.no_bid_reason or "unknown"] += 1
    ledger = await store.budget(CAMPAIGN, period_of(t0))
    elapsed = ((t1 - world.start_ms) % DAY_MS or DAY_MS) / DAY_MS
    now = world.counts
    run.slots.append({
        "t": t0, "day": int(day), "hour": round(((t0 - world.start_ms) % DAY_MS) / HOUR_MS, 2),
        "decisions": len(decisions), "model_version": version,
        "impressions": now.get("impressions", 0) - before.get("impressions", 0),
        "clicks": now.get("clicks", 0) - before.get("clicks", 0),
        "cost_micros": now.get("cost_micros", 0) - before.get("cost_micros", 0),
        "expected_value_micros": now.get("expected_value_micros", 0) - before.get("expected_value_micros", 0),
        "spend_usd": micros_to_usd(ledger.spent), "budget_usd": micros_to_usd(ledger.budget),
        "plan_usd": micros_to_usd(ledger.budget) * planned_fraction(elapsed),
    })
