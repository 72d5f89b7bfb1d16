"""A stream worker's world on tansu + Redis, shared by ``bench/bench_stream.py`` and the stream
fail-over test: decisions stored with their reservations (as the decide path leaves them), the
events that follow them, and a worker's service built as ``gaelp serve`` builds it.

Per decision: an auction result (half won), an impression and sometimes a click per win, a login
link per 10 decisions (people with two devices each, as the simulator's users have 1–3) and a
conversion per tenth win (some parked until the touches' watermark passes). Each decision
carries a logged vector as long as the service's (236 floats).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

import msgspec
import numpy as np

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
    encoded_state,
)
from agent_service.metrics import Metrics
from agent_service.pipeline.identity_links import graph_config
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.ports.bus import TICK_HEADER, EventBus
from agent_service.ports.store import DecisionDraft, StateStore
from agent_service.runtime.assembly import Service, build_learner, build_service
from agent_service.units import DAY_MS as DAY
from stream_apps.topology import input_topics

T0 = 1_767_225_600_000
CAMPAIGN = "b"
SALT = b"bench-stream-salt-0123456789"


def stream_config(prefix: str, bootstrap: str, redis_url: str, partitions: int) -> GaelpConfig:
    """A configuration whose topics and consumer group carry ``prefix``."""
    topics = TopicsConfig(**{k: f"{prefix}.{k.replace('_', '-')}" for k in (
        "bid_requests", "decisions", "outside_decisions", "auction_results", "ad_events", "conversions",
        "identity_links", "experience", "dead_letters")}, partitions=partitions)
    cfg = GaelpConfig().replace("serve", kafka=bootstrap, redis=redis_url, group_id=prefix,
                                session_timeout_s=2.0, campaign=CAMPAIGN)
    return GaelpConfig(**{**cfg.__dict__, "topics": topics})


@dataclass
class Expected:
    """What exactly-once effects of the published events add up to."""

    events: int = 0
    spend: int = 0
    conversions: int = 0


async def store_decisions(n: int, cfg: GaelpConfig, store: StateStore, rng: random.Random) -> list[Decision]:
    """``n`` decisions stored with their reservations (a budget far above their bids)."""
    ids = Pseudonymizer(SALT)
    decisions = []
    width = spec_of(cfg.hybrid, 12).logged_dim  # state ⊕ pacing ⊕ 16 touches, float32 values
    for i in range(n):  # encoded as the bidder logs them
        state = encoded_state(np.array([rng.uniform(-1, 1) for _ in range(width)], np.float32))
        device = ids(f"dev-{i % (n // 3)}")
        decisions.append(Decision(
            id=f"r{i}:1", event_time=T0 + i * 1000, request_id=f"r{i}", imp_id="1", person_id=f"d:{device}",
            device_id=device, campaign=CAMPAIGN, state=state, propensity=0.5, model_version=1,
            action=Action(bid_cpm_micros=2_000_000, creative=1, channel="social", segment=0)))
    await store.init_budget(CAMPAIGN, T0 // DAY, 10**12)
    for k in range(0, n, 1000):
        chunk = decisions[k:k + 1000]
        drafts = [DecisionDraft(d, 2_000, T0 // DAY, msgspec.structs.replace(d, bid=False)) for d in chunk]
        assert all(d.bid for d in await store.reserve_and_put(CAMPAIGN, drafts, 16 * 86_400))
    return decisions


async def publish_events(cfg: GaelpConfig, bus: EventBus, decisions: list[Decision], first: int, last: int,
                         rng: random.Random, expected: Expected) -> None:
    """The events of ``decisions[first:last]``, added up in ``expected``."""
    t, n = cfg.topics, len(decisions)
    for i in range(first, last):
        d = decisions[i]
        won = i % 2 == 0
        price = 1_000 + (i % 7) * 100 if won else 0
        expected.spend += price
        await bus.publish(t.auction_results, d.id.encode(), encode(AuctionResult(
            id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=won, price_paid_micros=price)))
        expected.events += 1
        if won:
            await bus.publish(t.ad_events, d.id.encode(), encode(AdEvent(
                id=f"imp-{d.id}", event_time=d.event_time + 60, decision_id=d.id, kind="impression")))
            expected.events += 1
            if rng.random() < 0.1:
                await bus.publish(t.ad_events, d.id.encode(), encode(AdEvent(
                    id=f"clk-{d.id}", event_time=d.event_time + 900, decision_id=d.id, kind="click")))
                expected.events += 1
        if i % 10 == 0:
            await bus.publish(t.identity_links, f"dev-{i % (n // 3)}".encode(), encode(IdentityLink(
                id=f"l{i}", event_time=d.event_time + 10, device_id=f"dev-{i % (n // 3)}",
                person_id=f"p{(i // 10) % (n // 20)}")))
            expected.events += 1
        if won and i % 5 == 0:
            await bus.publish(t.conversions, f"c{i}".encode(), encode(Conversion(
                id=f"c{i}", event_time=d.event_time + 3_600_000, value_micros=20_000_000,
                device_id=f"dev-{i % (n // 3)}")))
            expected.events += 1
            expected.conversions += 1
    await bus.flush()


async def publish_final_ticks(cfg: GaelpConfig, bus: EventBus, n: int, expected: Expected) -> None:
    """A tick two days after the last decision on every partition of every event topic."""
    t = cfg.topics
    end = T0 + n * 1000 + 2 * DAY
    for topic in (t.auction_results, t.ad_events, t.identity_links, t.conversions):
        for p in range(t.partitions):
            await bus.publish(topic, None, encode(Tick(id=f"tick-{end}", event_time=end)), headers=[TICK_HEADER],
                              partition=p)
            expected.events += 1
    await bus.flush()


def stream_service(cfg: GaelpConfig, store: StateStore, metrics: Metrics) -> tuple[Service, RedisIdentityGraph]:
    """A worker's service as ``gaelp serve`` builds it: the Redis identity graph (close it after)."""
    registry = MemoryRegistry()
    build_learner(cfg, registry, 12, seed=0)
    svc = build_service(cfg, store, registry, metrics, dict.fromkeys(input_topics(cfg), cfg.topics.partitions),
                        clock=lambda: T0, campaign=CAMPAIGN, creatives=12, seed=1)
    ids = Pseudonymizer(SALT)
    svc.decider.ids = ids
    svc.flow.outcomes.ids = ids
    graph = RedisIdentityGraph.from_url(cfg.serve.redis, graph_config(cfg))
    svc.flow.outcomes.identity.graph = graph
    return svc, graph


class WorkerParts(NamedTuple):
    """What a stream worker process runs on (:func:`started_worker_parts`)."""

    cfg: GaelpConfig
    bus: KafkaBus
    store: RedisStore
    metrics: Metrics
    svc: Service
    graph: RedisIdentityGraph


async def started_worker_parts(prefix: str, bootstrap: str, redis_url: str, partitions: int) -> WorkerParts:
    """A worker process's bus and store started and its service built (the worker itself is the caller's)."""
    cfg = stream_config(prefix, bootstrap, redis_url, partitions)
    bus = KafkaBus(bootstrap, session_timeout_s=cfg.serve.session_timeout_s)
    store = RedisStore(redis_url)
    await bus.start()
    await store.start()
    metrics = Metrics()
    svc, graph = stream_service(cfg, store, metrics)
    return WorkerParts(cfg, bus, store, metrics, svc, graph)
