"""A candidate policy beside the live one: decided from the decision log off the bid path, live for the canary share."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.agent.serving.hybrid import HybridAgent
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import Decision, state_values
from agent_service.experiments.assignment import bucket
from agent_service.pipeline.candidate import CandidateScorer, sampled_partitions, shadowed
from agent_service.runtime.candidate_worker import CandidateWorker, load_candidate
from tests.flowkit import T0, FlowKit, bid_request


@pytest.fixture
def inferences(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Every HybridAgent.act call, by the model version that made it."""
    seen: Counter[int] = Counter()
    act = HybridAgent.act

    def counted(self: HybridAgent, *args: Any, **kwargs: Any) -> Any:
        seen[self.version] += 1
        return act(self, *args, **kwargs)

    monkeypatch.setattr(HybridAgent, "act", counted)
    return seen


def _cfg(share: float = 0.0, sample: float = 1.0) -> GaelpConfig:
    return GaelpConfig().replace("budget", daily_usd=1000.0).replace(
        "serve", candidate_version=1, canary_share=share, candidate_sample=sample)


async def _scorer(kit: FlowKit) -> CandidateScorer:
    scorer = await load_candidate(kit.cfg, kit.registry, kit.metrics, creatives=4, seed=9)
    assert scorer is not None and scorer.candidate.version == 1
    return scorer


async def _bid(share: float, sample: float = 1.0) -> tuple[FlowKit, list[Decision], list[Any]]:
    """The bidder's decisions on 60 requests, and every output of the bidder."""
    cfg = _cfg(share, sample)
    kit = FlowKit(MemoryStore(), cfg)
    assert kit.registry.publish(kit.registry.load(1)) == 2  # live serves the newest version, 2
    reqs = [bid_request(f"r{i}", f"dev{i}", T0 + 9 * 3_600_000 + 1_000 * i) for i in range(60)]
    out = await kit.handle(cfg.topics.bid_requests, *reqs)
    return kit, [decode(o.value, Decision) for o in out if o.topic == cfg.topics.decisions], out


async def _decide(share: float, sample: float = 1.0) -> tuple[list[Decision], list[Decision], list[Any]]:
    """The bidder's decisions, the candidate's on their log, and every output of the bidder."""
    kit, live, out = await _bid(share, sample)
    return live, (await _scorer(kit)).score(live), out


async def test_the_candidate_decides_every_live_request_from_the_log_and_never_bids() -> None:
    live, shadow, _ = await _decide(0.0)
    assert len(live) == 60 and {d.model_version for d in live} == {2} and not any(d.shadow for d in live)
    assert [d.id for d in shadow] == [d.id for d in live]  # the same requests, joinable by decision id
    assert {d.model_version for d in shadow} == {1}
    assert all(d.shadow and not d.bid and 0 < d.propensity <= 1 for d in shadow)
    would = [d for d in shadow if d.no_bid_reason == "shadow" and d.action.channel != "organic"]
    assert would and all(500_000 <= d.action.bid_cpm_micros <= 10_000_000 for d in would)  # the price it would have bid
    assert all(d.action.bid_cpm_micros == 0 for d in shadow if d not in would)
    assert all(len(state_values(d)) == len(state_values(x)) for d, x in zip(shadow, live, strict=True))
    assert any(d.bid for d in live)


async def test_the_bidder_never_runs_the_candidate(inferences: Counter[int]) -> None:
    """With a candidate configured the bid path makes no candidate inference and logs no candidate
    decision; the scorer, reading the log, makes them all."""
    kit, live, out = await _bid(0.0)
    bidder = dict(inferences)
    assert bidder and set(bidder) == {2}  # every inference of the bid path is the live version's
    assert {o.topic for o in out} == {kit.cfg.topics.decisions}
    assert kit.flow.decider.candidate is None  # not even loaded
    inferences.clear()
    shadow = (await _scorer(kit)).score(live)
    assert len(shadow) == 60 and set(inferences) == {1}


async def _logged(bus: MemoryBus, cfg: GaelpConfig, live: list[Decision]) -> None:
    """``live`` on the decision log as the bid endpoint logs it (keyed by decision id), over ``[topics] partitions``."""
    await bus.create_topics([cfg.topics.decisions], cfg.topics.partitions)
    await bus.publish_many(cfg.topics.decisions, [(d.id.encode(), encode(d)) for d in live])


async def test_the_candidate_reads_only_its_sampled_partitions_and_scores_exactly_them() -> None:
    """`[serve] candidate_sample` 0.25 of 4 partitions: the worker reads partition 0 of the log
    alone (keyed by decision id: independent of outcomes) and decides every live request there;
    ``shadowed`` names them for anyone else."""
    kit, live, _ = await _bid(0.0, sample=0.25)
    bus = MemoryBus()
    await _logged(bus, kit.cfg, live)
    worker = CandidateWorker(await _scorer(kit), bus, kit.cfg)
    await worker.start()
    assert worker.partitions == range(1) and worker._reader().assigned() == {(kit.cfg.topics.decisions, 0)}
    picked = {d.id for d in live if shadowed(d.id, 0.25, 4, bus.partition_of)}
    assert picked == {d.id for d in live if bus.partition_of(d.id.encode(), 4) == 0} and 0 < len(picked) < 30
    assert await worker.drain() == len(picked)  # only partition 0's records were read
    await worker.stop()
    shadow = [decode(r.value, Decision).id for part in bus._topic(kit.cfg.topics.candidate_decisions) for r in part]
    assert sorted(shadow) == sorted(picked)
    assert len((await _scorer(kit)).score(live)) == len(live)  # what it reads is the sample: no second sampling


def test_a_sample_must_be_whole_partitions() -> None:
    from agent_service.errors import ConfigError

    assert sampled_partitions(0.5, 4) == range(2) and sampled_partitions(1.0, 8) == range(8)
    with pytest.raises(ConfigError, match="multiple of 1/4"):
        GaelpConfig().replace("serve", candidate_version=1, candidate_sample=0.3)
    GaelpConfig().replace("serve", candidate_sample=0.3)  # no candidate: the sample is not read
    with pytest.raises(ConfigError, match="not a multiple of 1/3"):  # a topic made elsewhere, of other partitions
        sampled_partitions(0.25, 3)


async def test_a_topic_of_other_partitions_than_the_sample_needs_stops_the_worker() -> None:
    from agent_service.errors import ConfigError

    kit, _, _ = await _bid(0.0, sample=0.25)
    bus = MemoryBus()
    await bus.create_topics([kit.cfg.topics.decisions], 3)
    with pytest.raises(ConfigError, match="decision log has 3 partitions"):
        await CandidateWorker(await _scorer(kit), bus, kit.cfg).start()


async def test_the_canary_share_of_persons_is_served_live_by_the_candidate() -> None:
    live, shadow, _ = await _decide(0.5)
    canary = {d.id for d in live if d.model_version == 1}
    assert 0 < len(canary) < 60 and not any(d.shadow for d in live)  # the canary's decisions are live
    for d in live:  # assignment by the person's hashed bucket: stable, one arm per person
        assert (d.model_version == 1) == (bucket(d.person_id, "canary") < 0.5)
    assert {d.id for d in shadow} == {d.id for d in live} - canary  # the rest are shadowed by the candidate
    assert any(d.bid for d in live if d.id in canary)


async def test_the_candidate_worker_logs_from_the_bid_endpoints_log_keyed_by_decision() -> None:
    """The bid endpoint logs only live decisions; the candidate role reads them in a group of its
    own and logs one candidate decision per live one, keyed by its id, and commits after."""
    from aiohttp.test_utils import TestClient, TestServer

    from agent_service.http.app import build_http_app

    cfg = _cfg()
    kit = FlowKit(MemoryStore(), cfg)
    bus = MemoryBus()
    app = build_http_app(kit.flow.decider, bus, cfg.topics.decisions, kit.metrics, clock=lambda: T0 + 9 * 3_600_000,
                         admin_token=None)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for i in range(5):
            body = {"id": f"h{i}", "imp": [{"id": "1", "bidfloor": 0.5}], "tmax": 10_000,
                    "device": {"ifa": f"hd{i}", "devicetype": 4}, "site": {"cat": ["IAB1"]}}
            assert (await client.post("/openrtb2/bid", json=body)).status in (200, 204)
    finally:
        await client.close()  # drains the logs
    assert not bus._topic(cfg.topics.candidate_decisions) or not any(bus._topic(cfg.topics.candidate_decisions))
    worker = CandidateWorker(await _scorer(kit), bus, cfg)
    await worker.start()
    assert await worker.drain() == 5 and await worker.drain() == 0  # committed: not read again
    await worker.stop()
    logged = [decode(r.value, Decision) for part in bus._topic(cfg.topics.decisions) for r in part]
    shadow = [r for part in bus._topic(cfg.topics.candidate_decisions) for r in part]
    assert sorted(r.key or b"" for r in shadow) == sorted(d.id.encode() for d in logged) and len(shadow) == 5
    assert all(d.shadow and not d.bid and d.model_version == 1 for d in (decode(r.value, Decision) for r in shadow))
    assert kit.metrics.candidate_decisions._value.get() == 5  # gaelp_candidate_decisions_total


async def test_a_record_the_canary_leaves_out_is_never_decoded_whole() -> None:
    """The worker reads a logged decision's person first and decodes the rest (the state, most of
    its bytes) only when it is not the canary's: a left-out record whose state would not even
    parse costs no error, a scored one still does."""
    kit, live, _ = await _bid(0.5)
    scorer = await _scorer(kit)
    wanted = [d for d in live if scorer.wants(d)]
    assert 0 < len(wanted) < len(live)
    broken = msgspec.structs.replace(wanted[0], state="not a vector")  # type: ignore[arg-type]
    bus = MemoryBus()
    records = [(d.id.encode(), encode(d if scorer.wants(d) else msgspec.structs.replace(d, state="x")))  # type: ignore[arg-type]
               for d in live]
    await bus.create_topics([kit.cfg.topics.decisions], kit.cfg.topics.partitions)
    await bus.publish_many(kit.cfg.topics.decisions, [*records, (broken.id.encode(), encode(broken))])
    worker = CandidateWorker(scorer, bus, kit.cfg)
    await worker.start()
    assert await worker.drain() == len(live) + 1
    await worker.stop()
    shadow = [decode(r.value, Decision).id for part in bus._topic(kit.cfg.topics.candidate_decisions) for r in part]
    assert sorted(shadow) == sorted(d.id for d in wanted)
    assert kit.metrics.errors.labels("candidate_undecodable")._value.get() == 1  # the scored broken one only


class _Reads:
    """A consumer whose reads return the given chunks of records, one chunk a read."""

    def __init__(self, chunks: list[list[Any]]) -> None:
        self.chunks, self.commits = chunks, 0

    async def getmany(self, timeout_ms: int = 0, max_records: int = 1000) -> list[Any]:
        return self.chunks.pop(0)[:max_records] if self.chunks else []

    async def commit(self, positions: Any = None) -> None:
        self.commits += 1


async def test_a_batch_takes_everything_the_log_gathered_in_one_publication_and_one_commit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``batch`` (the role's loop, every ``candidate_poll_s``) reads until a read comes back short
    — the log's end — and scores all of it at once: one publication, one commit."""
    from agent_service.ports.bus import BusRecord
    from agent_service.runtime import candidate_worker

    monkeypatch.setattr(candidate_worker, "_CAUGHT_UP", 10)
    kit, live, _ = await _bid(0.0)
    recs = [BusRecord(kit.cfg.topics.decisions, 0, i, d.id.encode(), encode(d)) for i, d in enumerate(live)]
    bus = MemoryBus()
    worker = CandidateWorker(await _scorer(kit), bus, kit.cfg)
    reads = _Reads([recs[:20], recs[20:40], recs[40:45], recs[45:]])
    worker._consumer = reads  # type: ignore[assignment]
    publications = 0
    publish_many = bus.publish_many

    async def counted(topic: str, records: Any) -> None:
        nonlocal publications
        publications += 1
        await publish_many(topic, records)

    monkeypatch.setattr(bus, "publish_many", counted)
    assert await worker.batch() == 45  # the third read was short: the log's end
    assert reads.commits == 1 and publications == 1
    assert len([r for part in bus._topic(kit.cfg.topics.candidate_decisions) for r in part]) == 45
    assert await worker.batch() == 15 and reads.commits == 2


async def test_a_candidate_of_another_state_layout_is_refused() -> None:
    kit = FlowKit(MemoryStore(), _cfg())
    other = dict(kit.registry.load(1), layout="00000000")
    version = kit.registry.publish(other)
    refused = await load_candidate(kit.cfg.replace("serve", candidate_version=version), kit.registry, kit.metrics,
                                   creatives=4, seed=9)
    assert refused is None
    assert kit.metrics.model_rejected.labels("candidate")._value.get() == 1
    # a logged decision of another layout is not scored (counted), the rest are
    live, _, _ = await _decide(0.0)
    scorer = await _scorer(FlowKit(MemoryStore(), _cfg()))
    odd = msgspec.structs.replace(live[0], state=[0.5] * 7)
    shadow = scorer.score([odd, *live[1:5]])
    assert [d.id for d in shadow] == [d.id for d in live[1:5]] and scorer.refused == 1
    assert scorer.metrics.errors.labels("candidate_layout")._value.get() == 1


async def test_shadow_candidate_through_the_warehouse_into_ope(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """gaelp simulate with a candidate → the in-process candidate worker scores the decision log →
    the warehouse holds its shadow rows beside the live ones → `gaelp ope` pairs every live
    decision with the candidate's and uses them (slot propensities read at the state layout's own column)."""
    import json as _json

    import duckdb

    from agent_service.cli import main
    from agent_service.runtime.simulate import run_simulation

    cfg = GaelpConfig().replace("serve", candidate_version=1, candidate_sample=1.0).replace(
        "simulation", days=0.2, opportunities_per_day=3_000, users=500, drain_days=15)
    await run_simulation(cfg, tmp_path, progress=False)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    rows = dict(con.execute("SELECT shadow, count(*) FROM decisions GROUP BY 1").fetchall())
    versions = {v for (v,) in con.execute("SELECT DISTINCT model_version FROM decisions WHERE shadow").fetchall()}
    con.close()
    assert rows[True] == rows[False] > 0 and versions == {1}
    capsys.readouterr()
    assert main(["ope", "--log", str(tmp_path / "warehouse.duckdb"), "--candidate", "1", "--known-versions",
                 ",".join(str(v) for v in range(1, 60)), "--json"]) == 0
    report = _json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    v = report["validation"]
    assert v["n_used"] > 0 and not v["refused"].get("propensity_out_of_range")


@pytest.mark.parametrize("sample", [1.0, 0.25])
async def test_the_candidate_role_scores_the_kafka_decision_log(tansu, service_redis_url, tmp_path, sample) -> None:  # type: ignore[no-untyped-def]
    """`gaelp serve --roles candidate` on Kafka: the live decisions published on the decisions topic
    (those of its sampled partitions) come back on the candidate topic as the candidate's, one per
    decision, keyed by its id."""
    import asyncio
    import uuid

    from agent_service.adapters.kafka_bus import KafkaBus
    from agent_service.adapters.registry import FileRegistry
    from agent_service.runtime.assembly import build_learner
    from agent_service.runtime.serve import ServeRuntime

    _, live, _ = await _bid(0.0)
    prefix = f"cand{uuid.uuid4().hex[:6]}"
    cfg = _cfg(sample=sample).replace("serve", kafka=tansu.bootstrap, redis=service_redis_url, registry="file", http_port=0,
                         model_dir=str(tmp_path / "models"), group_id=prefix, spill_dir=str(tmp_path / "spill")
                         ).replace("topics", decisions=f"{prefix}.decisions", candidate_decisions=f"{prefix}.cand")
    build_learner(cfg, FileRegistry(tmp_path / "models"), creatives=4, seed=0)  # v1, the candidate
    bus = KafkaBus(tansu.bootstrap)
    await bus.start()
    runtime = ServeRuntime(cfg, creatives=4, roles={"candidate"})
    await runtime.start()
    reader = bus.consumer([cfg.topics.candidate_decisions], f"{prefix}-reader")
    await reader.start()
    try:
        await bus.publish_many(cfg.topics.decisions, [(d.id.encode(), encode(d)) for d in live])
        await bus.flush()
        picked = [d.id.encode() for d in live if shadowed(d.id, sample, cfg.topics.partitions, bus.partition_of)]
        got: dict[bytes, Decision] = {}
        for _ in range(300):
            for rec in await reader.getmany(timeout_ms=100, max_records=1000):
                got[rec.key or b""] = decode(rec.value, Decision)
            if len(got) == len(picked):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5 if sample < 1 else 0)  # time for any record outside the sample to show up (none may)
        for rec in await reader.getmany(timeout_ms=100, max_records=1000):
            got[rec.key or b""] = decode(rec.value, Decision)
    finally:
        await reader.stop()
        await runtime.stop()
        await bus.stop()
    assert sorted(got) == sorted(picked) and 0 < len(picked) <= len(live)
    assert all(d.shadow and not d.bid and d.model_version == 1 for d in got.values())
    assert runtime.metrics.candidate_decisions._value.get() == len(picked)
