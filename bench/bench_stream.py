"""Event stream throughput of one worker: Kafka (tansu) → the Faust topology → Redis effects.

Setup (not timed): a throwaway redis-server and tansu broker on loopback (tests/servers.py),
``N`` decisions stored in Redis with their reservations (as the decide path leaves them), and
the events that follow them produced to Kafka: an auction result per decision (half won), an
impression and sometimes a click per win, login links (one per 10 decisions: people with two
devices each, as the simulator's users have 1–3), conversions (some parked until the touches'
watermark passes) and a final tick on every partition. Each decision carries a logged vector as
long as the service's (236 floats), and the worker runs as ``gaelp serve`` runs it: the Redis
identity graph, the configured event loop (uvloop), startup objects frozen out of the collector.

Measured, in the same run:

1. baseline: the same records read by a plain aiokafka group consumer (no processing) —
   the transport's ceiling on this machine;
2. the worker: the production topology (``stream_apps.topology``) in this process with the
   production Redis adapter, from its first record to its last — the Faust app, or with
   ``--runtime batch`` the ``BatchWorker`` (``serve.stream_runtime = "batch"``); effects are
   exactly once (checked after: spend equals the sum of winning prices, every conversion joined
   once). The worker process's CPU time per event is printed too (Redis and tansu not counted).

Prints a table and, as the last line, one JSON object.

    .venv/bin/python bench/bench_stream.py [--decisions 10000] [--runtime faust|batch]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one math thread, before numpy loads
    os.environ.setdefault(_var, "1")  # (agent_service/threads.py says why)

import argparse
import asyncio
import gc
import json
import random
import sys
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.adapters.redis_store import RedisStore
from agent_service.adapters.registry import MemoryRegistry
from agent_service.agent.serving.hybrid import spec_of
from agent_service.config import GaelpConfig, TopicsConfig
from agent_service.contracts.codec import encode
from agent_service.contracts.events import (
    Action,
    AdEvent,
    AuctionResult,
    Conversion,
    Decision,
    IdentityLink,
    Tick,
)
from agent_service.metrics import Metrics
from agent_service.pipeline.identity_links import graph_config
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.ports.bus import TICK_HEADER
from agent_service.ports.store import DecisionDraft
from agent_service.runtime import event_loop
from agent_service.runtime.assembly import build_learner, build_service
from agent_service.units import DAY_MS as DAY
from stream_apps.topology import BatchWorker, build_app
from tests.servers import RedisServer, TansuBroker

T0 = 1_767_225_600_000


def _topics(prefix: str) -> TopicsConfig:
    return TopicsConfig(**{k: f"{prefix}.{k.replace('_', '-')}" for k in (
        "bid_requests", "decisions", "auction_results", "ad_events", "conversions", "identity_links",
        "experience", "dead_letters")}, partitions=2)


async def _prepare(n: int, cfg: GaelpConfig, store: RedisStore, bus: KafkaBus, ids: Pseudonymizer,
                   rng: random.Random) -> tuple[int, int, int]:
    """Store ``n`` decisions with reservations and produce their events; return (events, spend, conversions)."""
    t = cfg.topics
    decisions = []
    # A logged vector as long as the service's (state ⊕ pacing ⊕ 16 touches), float32 values.
    width = spec_of(cfg.hybrid, 12).logged_dim
    for i in range(n):
        state = [float(np.float32(rng.uniform(-1, 1))) for _ in range(width)]
        device = ids(f"dev-{i % (n // 3)}")
        decisions.append(Decision(
            id=f"r{i}:1", event_time=T0 + i * 1000, request_id=f"r{i}", imp_id="1", person_id=f"d:{device}",
            device_id=device, campaign="b", state=state, propensity=0.5, model_version=1,
            action=Action(bid_cpm_micros=2_000_000, creative=1, channel="social", segment=0)))
    await store.init_budget("b", T0 // DAY, 10**12)
    for k in range(0, n, 1000):
        chunk = decisions[k:k + 1000]
        drafts = [DecisionDraft(d, 2_000, T0 // DAY, msgspec.structs.replace(d, bid=False)) for d in chunk]
        assert all(d.bid for d in await store.reserve_and_put("b", drafts, 16 * 86_400))
    events = spend = conversions = 0
    for i, d in enumerate(decisions):
        won = i % 2 == 0
        price = 1_000 + (i % 7) * 100 if won else 0
        spend += price
        await bus.publish(t.auction_results, d.id.encode(), encode(AuctionResult(
            id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=won, price_paid_micros=price)))
        events += 1
        if won:
            await bus.publish(t.ad_events, d.id.encode(), encode(AdEvent(
                id=f"imp-{d.id}", event_time=d.event_time + 60, decision_id=d.id, kind="impression")))
            events += 1
            if rng.random() < 0.1:
                await bus.publish(t.ad_events, d.id.encode(), encode(AdEvent(
                    id=f"clk-{d.id}", event_time=d.event_time + 900, decision_id=d.id, kind="click")))
                events += 1
        if i % 10 == 0:
            await bus.publish(t.identity_links, f"dev-{i % (n // 3)}".encode(), encode(IdentityLink(
                id=f"l{i}", event_time=d.event_time + 10, device_id=f"dev-{i % (n // 3)}",
                person_id=f"p{(i // 10) % (n // 20)}")))
            events += 1
        if won and i % 5 == 0:
            await bus.publish(t.conversions, f"c{i}".encode(), encode(Conversion(
                id=f"c{i}", event_time=d.event_time + 3_600_000, value_micros=20_000_000,
                device_id=f"dev-{i % (n // 3)}")))
            events += 1
            conversions += 1
    end = T0 + n * 1000 + 2 * DAY
    for topic in (t.auction_results, t.ad_events, t.identity_links, t.conversions):
        for p in range(t.partitions):
            await bus.publish(topic, None, encode(Tick(id=f"tick-{end}", event_time=end)), headers=[TICK_HEADER],
                              partition=p)
            events += 1
    await bus.flush()
    return events, spend, conversions


async def _raw_consume(bus: KafkaBus, topics: list[str], expected: int) -> float:
    consumer = bus.consumer(topics, f"raw-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    try:
        got, started = 0, None
        deadline = time.monotonic() + 120
        while got < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
            if batch and started is None:
                started = time.perf_counter()
            got += len(batch)
        assert started is not None and got >= expected, (got, expected)
        return got / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def main(n: int, runtime: str) -> dict[str, object]:
    rng = random.Random(1)
    with RedisServer() as redis, TansuBroker() as broker:
        prefix = f"bs{uuid.uuid4().hex[:6]}"
        cfg = GaelpConfig().replace("serve", kafka=broker.bootstrap, redis=redis.url, group_id=prefix,
                                    session_timeout_s=2.0, campaign="b")
        cfg = GaelpConfig(**{**cfg.__dict__, "topics": _topics(prefix)})
        t = cfg.topics
        bus = KafkaBus(broker.bootstrap, session_timeout_s=2.0)
        store = RedisStore(redis.url)
        await bus.start()
        await store.start()
        inputs = [t.bid_requests, t.auction_results, t.ad_events, t.conversions, t.identity_links]
        await bus.create_topics([*inputs, t.decisions, t.experience, t.dead_letters], t.partitions)
        ids = Pseudonymizer(b"bench-stream-salt-0123456789")
        events, spend, conversions = await _prepare(n, cfg, store, bus, ids, rng)
        raw_rate = await _raw_consume(bus, [t.auction_results, t.ad_events, t.conversions, t.identity_links], events)

        metrics = Metrics()
        registry = MemoryRegistry()
        build_learner(cfg, registry, 12, seed=0)
        svc = build_service(cfg, store, registry, metrics, dict.fromkeys(inputs, t.partitions),
                            clock=lambda: T0, campaign="b", creatives=12, seed=1)
        svc.decider.ids = ids
        svc.flow.outcomes.ids = ids
        # As `gaelp serve` runs it: identity links into the Redis identity graph, and the
        # long-lived startup objects frozen out of the collector's view.
        graph = RedisIdentityGraph.from_url(redis.url, graph_config(cfg))
        svc.flow.outcomes.identity.graph = graph
        gc.collect()
        gc.freeze()
        sizes: list[tuple[str, int, float]] = []
        handle = svc.flow.handle

        async def counted(topic, records):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            try:
                return await handle(topic, records)
            finally:
                sizes.append((topic, len(records), time.perf_counter() - began))
        svc.flow.handle = counted  # type: ignore[method-assign]
        app = BatchWorker(cfg, svc.flow, bus, metrics) if runtime == "batch" else build_app(cfg, svc.flow, bus, metrics)
        profile = None
        if "--profile" in sys.argv:
            import cProfile
            profile = cProfile.Profile()
            profile.enable()
        await app.start()
        cpu0 = time.process_time()
        try:
            started = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = Metrics.value(metrics.events)
                if done and started is None:
                    started = time.perf_counter() - 0.01
                if done >= events and Metrics.value(metrics.conversions_joined) >= conversions:
                    break
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - (started or time.perf_counter())
            cpu = time.process_time() - cpu0
        finally:
            await app.stop()
            if profile is not None:
                import pstats
                profile.disable()
                if "--profile-out" in sys.argv:  # for pstats / snakeviz
                    profile.dump_stats(sys.argv[sys.argv.index("--profile-out") + 1])
                pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        await graph.close()
        ledger = await store.budget("b", T0 // DAY)
        joined = Metrics.value(metrics.conversions_joined)
        await store.stop()
        await bus.stop()
    rate = events / elapsed
    if "--profile" in sys.argv or "--sizes" in sys.argv:
        by: dict[str, list[float]] = {}
        for topic, k, dt in sizes:
            by.setdefault(topic, []).append(k)
            by.setdefault(topic + " ms", []).append(dt * 1000)
        for key, v in by.items():
            print(f"{key}: calls={len(v)} mean={sum(v) / len(v):.1f} max={max(v):.1f}", file=sys.stderr)
    print(f"{'run':<44} {'events/s':>10}")
    print(f"{'baseline: raw aiokafka group consume':<44} {raw_rate:>10.0f}")
    print(f"{runtime + ' worker + Redis effects (1 worker)':<44} {rate:>10.0f}")
    print(f"{'worker CPU per event (µs)':<44} {cpu / events * 1e6:>10.1f}")
    return {"bench": "stream", "runtime": runtime, "events": events, "worker_cpu_us_per_event": cpu / events * 1e6, "decisions": n, "seconds": elapsed,
            "events_per_s_per_worker": rate, "baseline_raw_consume_events_per_s": raw_rate,
            "fraction_of_raw_consume": rate / raw_rate, "floor_met": rate >= 20_000,
            "exactly_once": {"spend_expected": spend, "spend_ledger": ledger.spent,
                             "reserved_left": ledger.reserved,
                             "conversions": conversions, "conversions_joined": joined}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--runtime", choices=("faust", "batch"), default="faust",
                    help="the stream runtime measured (serve.stream_runtime)")
    ap.add_argument("--profile", action="store_true", help="cProfile the worker (to stderr)")
    ap.add_argument("--profile-out", metavar="PATH", help="with --profile: also dump the stats to PATH")
    ap.add_argument("--sizes", action="store_true", help="print handler calls per topic: batch sizes, ms")
    args = ap.parse_args()
    print(json.dumps(event_loop.run(main(args.decisions, args.runtime), GaelpConfig().serve.event_loop)))  # serve's loop
