"""Creative A/B experiments on the live path: stable hashed assignment, creatives restricted to the
arm (and the learner replaying that mask), exposure logged once under redelivery, per-arm results
exactly once, ``experiment_arms`` rows and ``gaelp experiments`` estimates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import numpy as np

from agent_service.adapters.memory_experiments import MemoryExperimentStore
from agent_service.adapters.memory_store import MemoryStore
from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.model.state import arm_mask
from agent_service.agent.serving.hybrid import spec_of
from agent_service.commands.experiments import list_experiments
from agent_service.config import CHANNELS, GaelpConfig
from agent_service.config.agent import HybridConfig
from agent_service.config.experiments import ArmConfig, ExperimentConfig, GuardrailConfig, SequentialConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import AuctionResult, Conversion, Decision, state_values
from agent_service.creatives import CatalogueFile
from agent_service.metrics import Metrics
from agent_service.pipeline.experiments import LiveExperiments
from agent_service.units import DAY_MS
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from tests.flowkit import T0, FlowKit, bid_request

HYB = HybridConfig(lstm_hidden=16, hidden=32)
EXP = ExperimentConfig("hero", (ArmConfig("control", ("c00",)), ArmConfig("bold", ("c02", "c03"))),
                       start_ms=T0, stop_ms=T0 + 30 * DAY_MS, test=SequentialConfig(min_persons=2, min_conversions=2))
SLOTS = {"control": [True, False, False, False], "bold": [False, False, True, True]}


def _kit() -> tuple[FlowKit, LiveExperiments, MemoryExperimentStore]:
    kit = FlowKit(MemoryStore(), dataclasses.replace(GaelpConfig(), hybrid=HYB))
    store = MemoryExperimentStore()
    live = LiveExperiments([EXP], store, CatalogueFile("", 4, 4), kit.metrics)
    live.refresh_every_s = 0.0
    kit.flow.use_experiments(live)
    return kit, live, store


def _exposures(metrics: Metrics) -> float:
    return Metrics.value(metrics.experiment_exposures)


async def test_a_configured_experiment_runs_end_to_end_exactly_once(tmp_path: Path) -> None:
    kit, live, store = _kit()
    t = kit.topics
    reqs = [bid_request(f"r{i}", f"dev{i % 30}", T0 + 9 * 3_600_000 + 60_000 * i) for i in range(90)]
    out = await kit.handle(t.bid_requests, *reqs)
    decisions = [decode(o.value, Decision) for o in out if o.topic == t.decisions]
    assert len(decisions) == 90
    spec = spec_of(HYB, 4)
    arm_of: dict[str, str] = {}
    for d in decisions:
        got = live.assignment(d.person_id, d.event_time)
        assert got is not None
        arm = EXP.arms[got[1]].name
        assert arm_of.setdefault(d.person_id, arm) == arm  # stable per person across requests
        assert SLOTS[arm][d.action.creative], (arm, d.action.creative)  # only the arm's creatives
        state = np.asarray(state_values(d), np.float32)[None, :spec.dim]
        assert state[0, spec.index["exp_in"]] == 1.0
        assert state[0, spec.index["exp_control"]] == float(arm == "control")
        logged = arm_mask(spec, state)
        assert logged is not None and logged[0].tolist() == SLOTS[arm]
    assert set(arm_of.values()) == {"control", "bold"}  # 30 persons: both arms get some
    # the learner re-evaluates each decision under the mask it was sampled with
    states = np.stack([np.asarray(state_values(d), np.float32)[:spec.dim] for d in decisions])
    learner = HybridLearner(spec, HYB, GaelpConfig().reward)
    masks = learner._creative_mask(np.array([d.event_time for d in decisions]),
                                   np.array([CHANNELS.index(d.action.channel) for d in decisions]), states)
    assert masks.tolist() == [SLOTS[arm_of[d.person_id]] for d in decisions]

    bidders = {d.person_id for d in decisions if d.bid}
    assert bidders and _exposures(kit.metrics) == len(bidders)  # once per person, not per bid
    # redelivery: the stored decisions come back, no exposure is counted again
    again = await kit.handle(t.bid_requests, *reqs)
    assert [decode(o.value, Decision).id for o in again if o.topic == t.decisions] == [d.id for d in decisions]
    assert await live.decided(decisions) == 0 and _exposures(kit.metrics) == len(bidders)
    live._sent.clear()  # another bidder process (or a restart) sends them again: the store still counts once
    assert await live.decided(decisions) == 0 and _exposures(kit.metrics) == len(bidders)

    # wins and credited conversions, each delivered twice
    won = [d for d in decisions if d.bid]
    results = [AuctionResult(id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=True,
                             price_paid_micros=2_000) for d in won]
    await kit.handle(t.auction_results, *results)
    await kit.handle(t.auction_results, *results)
    converters = sorted({d.device_id: d for d in won}.values(), key=lambda d: d.id)[::3]
    convs = [Conversion(id=f"conv-{d.id}", event_time=d.event_time + 3_600_000, value_micros=40_000_000,
                        device_id=d.device_id) for d in converters]
    await kit.flow.outcomes.join_many(convs)
    await kit.flow.outcomes.join_many(convs)

    totals = await store.arm_totals("hero")
    spend = {a: sum(2_000 / 1e6 for d in won if arm_of[d.person_id] == a) for a in SLOTS}
    value = {a: sum(40.0 for d in converters if arm_of[d.person_id] == a) for a in SLOTS}
    for arm in SLOTS:
        persons = {p for p in bidders if arm_of[p] == arm}
        assert totals[arm].exposed == totals[arm].stats.n == len(persons)
        assert np.isclose(totals[arm].stats.sum_y, spend[arm]) and np.isclose(totals[arm].stats.sum_x, value[arm])
    summaries = await live.refresh(T0 + DAY_MS)
    assert str(summaries[0].status) == "running"
    assert kit.metrics.experiment_status.labels("hero", "running")._value.get() == 1.0

    # the warehouse gets the sums once; `gaelp experiments` reads them back
    path = tmp_path / "wh.duckdb"
    wh = DuckDBWarehouse(path)
    await wh.ensure_tables()
    assert await live.flush(wh, T0 + DAY_MS) == 2
    assert await live.flush(wh, T0 + DAY_MS) == 0  # nothing new
    await wh.close()
    listed, notes = list_experiments((EXP,), T0 + DAY_MS, path)
    assert notes == []
    by_arm = {a.name: a for a in listed[0].arms}
    for arm in SLOTS:
        assert by_arm[arm].exposed == totals[arm].exposed
        assert np.isclose(by_arm[arm].value, value[arm]) and np.isclose(by_arm[arm].spend, spend[arm])


async def test_a_flush_interrupted_after_the_write_is_written_once(tmp_path: Path) -> None:
    kit, live, store = _kit()
    await kit.handle(kit.topics.bid_requests, *[bid_request(f"r{i}", f"dev{i}", T0 + 60_000 * i) for i in range(20)])
    path = tmp_path / "wh.duckdb"
    wh = DuckDBWarehouse(path)
    await wh.ensure_tables()
    checkpoint = None

    async def lose_the_checkpoint(experiment: str, state: bytes) -> None:
        nonlocal checkpoint
        if b'"pending": null' not in state:
            checkpoint = state  # the pending batch is fixed before the write
            await MemoryExperimentStore.set_flush_state(store, experiment, state)
        # ... and the process dies before recording that the batch was written

    store.set_flush_state = lose_the_checkpoint  # type: ignore[method-assign]
    await live.flush(wh, T0 + DAY_MS)
    del store.set_flush_state
    await kit.handle(kit.topics.bid_requests, *[bid_request(f"s{i}", f"dew{i}", T0 + 60_000 * i) for i in range(20)])
    await live.flush(wh, T0 + DAY_MS)  # rewrites the same batch (kept once), then the newer growth
    await wh.close()
    listed, _ = list_experiments((EXP,), T0 + DAY_MS, path)
    totals = await store.arm_totals("hero")
    assert checkpoint is not None
    assert {a.name: a.exposed for a in listed[0].arms} == {a: totals[a].exposed for a in SLOTS}
    assert sum(t.exposed for t in totals.values()) > 0


async def test_outside_a_running_experiment_nothing_is_restricted_or_logged() -> None:
    kit, live, store = _kit()
    before = T0 - DAY_MS  # scheduled, not running
    out = await kit.handle(kit.topics.bid_requests, *[bid_request(f"r{i}", f"dev{i}", before + i) for i in range(12)])
    decisions = [decode(o.value, Decision) for o in out if o.topic == kit.topics.decisions]
    spec = spec_of(HYB, 4)
    for d in decisions:
        state = np.asarray(state_values(d), np.float32)[None, :spec.dim]
        assert state[0, spec.index["exp_in"]] == 0.0 and state[0, spec.index["exp_arm_value"]] == 0.5
        assert arm_mask(spec, state) is None
    assert await store.arm_totals("hero") == {} and _exposures(kit.metrics) == 0


async def test_gaelp_simulate_runs_the_configured_experiments_into_the_warehouse(tmp_path: Path) -> None:
    """The embedded defaults: `gaelp simulate` with [[experiments]] serves them and its sink writes
    experiment_arms, which `gaelp experiments --warehouse` reads."""
    import duckdb

    from agent_service.runtime.simulate import run_simulation

    exp = ExperimentConfig("sim", (ArmConfig("control", ("c00", "c01")), ArmConfig("other", ("c02",))),
                           start_ms=0, stop_ms=T0 + 365 * DAY_MS)
    cfg = dataclasses.replace(GaelpConfig(), experiments=(exp,)).replace(
        "simulation", days=0.2, opportunities_per_day=3_000, users=500, drain_days=15)
    await run_simulation(cfg, tmp_path, progress=False)
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute("SELECT arm, sum(exposed), sum(persons), sum(spend) FROM experiment_arms GROUP BY 1").fetchall()
    creatives = {c for (c,) in con.execute("SELECT DISTINCT creative FROM decisions").fetchall()}
    con.close()
    assert creatives and creatives <= {0, 1, 2}  # every person is in an arm: 3 of the world's 60 creatives
    got = {arm: (int(e), int(n), float(s)) for arm, e, n, s in rows}
    assert set(got) == {"control", "other"}
    assert all(e > 0 and n >= e and s > 0 for e, n, s in got.values()), got
    listed, _ = list_experiments((exp,), T0 + DAY_MS, path)
    assert {a.name: a.exposed for a in listed[0].arms} == {a: e for a, (e, _, _) in got.items()}


async def test_the_logged_propensity_is_the_masked_one_the_learner_recomputes() -> None:
    """PPO's ratio at the behaviour policy is 1 only if the learner re-evaluates each logged decision
    under the arm's mask: with the catalogue's mask alone it is not."""
    import torch

    from agent_service.agent.learning.ppo import creative_bonus, policy_dists
    from agent_service.agent.model.state import CampaignStats

    kit, _, _ = _kit()
    out = await kit.handle(kit.topics.bid_requests,
                           *[bid_request(f"r{i}", f"dev{i % 25}", T0 + 60_000 * i) for i in range(50)])
    decisions = [decode(o.value, Decision) for o in out if o.topic == kit.topics.decisions]
    spec = spec_of(HYB, 4)
    published = kit.registry.load(1)
    learner = HybridLearner(spec, HYB, GaelpConfig().reward)
    learner.adopt(published)
    stats = CampaignStats.from_state(published["stats"])  # what the server priced and sampled with
    batch, _ = spec.unpack(np.stack([np.asarray(state_values(d), np.float32) for d in decisions]))
    segments = batch.state[:, spec.cols("segment_")]
    bonus = torch.as_tensor(creative_bonus(stats.impressions_for(segments), stats.campaign_ctr(),
                                           HYB.ppo.creative_optimism), dtype=torch.float32)
    creative = np.array([d.action.creative for d in decisions])
    channel = np.array([CHANNELS.index(d.action.channel) for d in decisions])
    target = np.array([d.action.segment for d in decisions])
    logged = np.log([d.propensity / batch.state[k, spec.index["slot_action_prob"]] for k, d in enumerate(decisions)])
    with torch.no_grad():
        net_out = learner.net(torch.as_tensor(batch.state), torch.as_tensor(batch.touches),
                              torch.as_tensor(batch.touch_creatives))
    channels = torch.as_tensor(batch.state[:, spec.cols("avail_")] > 0.5)
    times = np.array([d.event_time for d in decisions])
    rows = np.arange(len(decisions))

    def logp(mask: np.ndarray) -> np.ndarray:
        pc, pch, pk = policy_dists(net_out, channels, HYB.ppo, bonus, torch.as_tensor(mask))
        return (np.log(pc.numpy()[rows, creative]) + np.log(pch.numpy()[rows, channel])
                + np.log(pk.numpy()[rows, target]))

    replayed = logp(learner._creative_mask(times, channel, batch.state))
    assert np.allclose(replayed, logged, atol=1e-4)
    assert not np.allclose(logp(np.ones((len(decisions), 4), bool)), logged, atol=1e-4)


def test_an_arm_naming_a_creative_outside_the_catalogue_is_refused_by_key() -> None:
    import pytest

    from agent_service.errors import ConfigError

    bad = dataclasses.replace(EXP, arms=(EXP.arms[0], ArmConfig("typo", ("c09",))))
    with pytest.raises(ConfigError, match=r"experiments\.hero\.arms\[1\]\.creatives"):
        LiveExperiments([bad], MemoryExperimentStore(), CatalogueFile("", 4, 4), Metrics())


async def test_an_arm_failing_requests_is_stopped_by_the_error_guardrail_fed_from_the_bid_path() -> None:
    cfg = dataclasses.replace(EXP, guardrails=GuardrailConfig(min_requests=200))
    store = MemoryExperimentStore()
    live = LiveExperiments([cfg], store, CatalogueFile("", 4, 4), Metrics())
    kit, _, _ = _kit()
    t = kit.topics
    out = await kit.handle(t.bid_requests, *[bid_request(f"r{i}", f"dev{i}", T0 + 60_000 * i) for i in range(60)])
    template = [decode(o.value, Decision) for o in out if o.topic == t.decisions]
    decided: list[Decision] = []
    for k in range(12):  # every person asks 12 times; the bold arm misses the deadline on a third
        for d in template:
            arm = cfg.arms[live.assignment(d.person_id, d.event_time)[1]].name
            fails = arm == "bold" and k % 3 == 0
            decided.append(msgspec.structs.replace(d, id=f"{d.id}:{k}", bid=not fails,
                                                   no_bid_reason="tmax" if fails else None))
    await live.decided(decided)
    assert await store.arm_totals("hero") and all(t.guards.requests == 0 for t in (await store.arm_totals("hero")).values())
    summary = (await live.refresh(T0 + DAY_MS))[0]  # the counts are written off the bid path, then judged
    totals = await store.arm_totals("hero")
    requests = {a: totals[a].guards.requests for a in SLOTS}
    assert sum(requests.values()) == len(decided)
    assert totals["bold"].guards.errors.sum_x == sum(d.no_bid_reason == "tmax" for d in decided)
    bold = next(a for a in summary.arms if a.name == "bold")
    assert bold.decision == "rollback" and "error_rate" in bold.reason
    await live.refresh(T0 + DAY_MS)  # nothing new: the same totals
    assert {a: (await store.arm_totals("hero"))[a].guards.requests for a in SLOTS} == requests
