"""An outside bidder as the live policy: its decision records on their own topic, dead letters for
malformed ones, outcomes joined to them as to GAELP's own, the warehouse rows, and `gaelp ope
--live outside:NAME` estimating a GAELP candidate from its log (logged and estimated propensities)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.cli import main
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, encode, to_builtins
from agent_service.contracts.events import Action, AuctionResult, Conversion, DeadLetter, Decision, Experience
from agent_service.contracts.outside import OutsideDecision
from agent_service.runtime.warehouse_sink import WarehouseSink, _decision_row
from agent_service.warehouse import BatchConfig, BatchWriter
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from agent_service.warehouse.schema import TABLES
from tests.flowkit import DAY, T0, FlowKit

# ---------------------------------------------------------------------------- the synthetic market
LEVELS_CPM_MICROS = np.array([0, 500_000, 1_500_000, 3_000_000])  # buckets 0..3 with edges 1,2,4 USD
EDGES = "1,2,4"
PI_B = np.array([[0.1, 0.4, 0.3, 0.2],   # the outside bidder's bucket probabilities for x = 0
                 [0.1, 0.2, 0.3, 0.4]])  # and x = 1: it bids higher where people convert more
WIN = np.array([0.0, 0.3, 0.6, 0.9])     # win probability of each bucket
CONVERT = np.array([0.2, 0.6])           # a won impression's conversion probability, by x
VALUE_MICROS = 20_000                    # conversion value
CANDIDATE = np.array([3, 3])             # the candidate's bucket by x: always the highest bid


def _cost_usd(bucket: int) -> float:
    return int(LEVELS_CPM_MICROS[bucket] * 0.8) // 1000 / 1e6  # second price at 80 % of the bid, per impression


def _expected_reward(x: int, bucket: int) -> float:
    return float(WIN[bucket] * (CONVERT[x] * VALUE_MICROS / 1e6 - _cost_usd(bucket)))


def _outside(i: int, bidder: str, t: int, bucket: int, propensity: float | None,
             features: list[float] | None = None) -> OutsideDecision:
    return OutsideDecision(id=f"{bidder}-r{i}:1", event_time=t, request_id=f"{bidder}-r{i}", imp_id="1",
                           device_id=f"dev-{bidder}-{i}", bidder=bidder, bidder_version="2.3",
                           bid_cpm_micros=int(LEVELS_CPM_MICROS[bucket]), channel="display", propensity=propensity,
                           features=features)


def _candidate_row(rec: OutsideDecision, bucket: int | None, x: int) -> dict[str, Any]:
    """The candidate's row on the same request, as the sink writes it (shadow, never sent);
    ``bucket`` None: a row that would have bid but logged price 0 (today's shadow rows)."""
    bid = 0 if bucket is None else int(LEVELS_CPM_MICROS[bucket])
    d = Decision(id=rec.id, event_time=rec.event_time, request_id=rec.request_id, imp_id=rec.imp_id, person_id="p",
                 device_id="d", campaign="c", state=[float(x), 0.5], propensity=1.0, model_version=7, shadow=True,
                 bid=False, no_bid_reason="shadow" if bid or bucket is None else "floor",
                 action=Action(bid_cpm_micros=bid, creative=0, channel="display", segment=0))
    return {**_decision_row(d), "decision_id": f"{d.id}@v7"}


async def _run_market(kit: FlowKit, bus: MemoryBus, bidder: str, n: int, rng: np.random.Generator, *,
                      logged: bool, t0: int) -> tuple[list[OutsideDecision], np.ndarray, np.ndarray]:
    """The bidder decides n requests; the exchange answers; winners convert. Every record goes through
    the flow (its outputs onto the bus) and onto the bus for the sink. Returns records, contexts, buckets."""
    t = kit.topics
    x = rng.integers(0, 2, size=n)
    buckets = np.array([rng.choice(4, p=PI_B[xi]) for xi in x])
    recs = [_outside(i, bidder, t0 + i * 1000, int(b), float(PI_B[xi, b]) if logged else None,
                     None if logged else [float(xi), float(rng.normal())])
            for i, (xi, b) in enumerate(zip(x, buckets, strict=True))]
    results, conversions = [], []
    for i, (rec, xi, b) in enumerate(zip(recs, x, buckets, strict=True)):
        won = bool(b > 0 and rng.random() < WIN[b])
        results.append(AuctionResult(id=f"res-{rec.id}", event_time=rec.event_time + 50, decision_id=rec.id,
                                     won=won, price_paid_micros=int(LEVELS_CPM_MICROS[b] * 0.8) // 1000 if won else 0))
        if won and rng.random() < CONVERT[xi]:
            conversions.append(Conversion(id=f"conv-{rec.id}", event_time=rec.event_time + 3_600_000,
                                          value_micros=VALUE_MICROS, device_id=f"dev-{bidder}-{i}"))
    for topic, values in ((t.outside_decisions, recs), (t.auction_results, results), (t.conversions, conversions)):
        await _feed(kit, bus, topic, values)
    return recs, x, buckets


async def _feed(kit: FlowKit, bus: MemoryBus, topic: str, values: list[Any]) -> list[Any]:
    outputs = []
    for k in range(0, len(values), 500):
        chunk = values[k:k + 500]
        for v in chunk:
            await bus.publish(topic, None, v if isinstance(v, bytes) else encode(v))
        outputs += await kit.handle(topic, *chunk)
    for o in outputs:
        await bus.publish(o.topic, o.key, o.value)
    return outputs


# ---------------------------------------------------------------------------- contract and the flow
async def test_malformed_outside_records_are_dead_lettered_with_the_field_and_reason() -> None:
    kit = FlowKit(MemoryStore())
    good = _outside(1, "acme", T0, 2, 0.3)
    no_bidder = {k: v for k, v in to_builtins(good).items() if k != "bidder"} | {"id": "x:1"}
    negative = to_builtins(good) | {"id": "x:2", "bid_cpm_micros": -5}
    odd_propensity = to_builtins(good) | {"id": "x:3", "propensity": 1.5}  # kept: OPE refuses it, with a count
    out = await kit.handle(kit.topics.outside_decisions, good, encode(no_bidder), encode(negative),
                           encode(odd_propensity), b"not json")
    letters = [decode(o.value, DeadLetter) for o in out if o.topic == kit.topics.dead_letters]
    assert [(d.field, d.reason.split(";")[0]) for d in letters][:2] == [("$.bidder", "required field is missing"),
                                                                        ("$.bid_cpm_micros", "Expected `int` >= 0")]
    assert len(letters) == 3 and letters[2].reason.startswith("invalid JSON")
    assert "dev-acme-1" not in letters[0].payload  # the raw device id never reaches the dead letters
    stored = await kit.store.get_decisions(["acme-r1:1", "x:3", "x:1"])
    assert set(stored) == {"acme-r1:1", "x:3"}
    d = stored["acme-r1:1"]
    assert d.campaign == "outside:acme" and d.device_id == kit.flow.decider.ids("dev-acme-1")
    assert d.action.bid_cpm_micros == 1_500_000 and d.propensity == 0.3 and d.bid


async def test_outcomes_join_to_an_outside_decision_and_never_overwrite_gaelps_own() -> None:
    kit = FlowKit(MemoryStore())
    t = kit.topics
    await kit.handle(t.outside_decisions, _outside(1, "acme", T0, 2, 0.3))
    out = await kit.handle(t.auction_results, AuctionResult(id="res-1", event_time=T0 + 50, decision_id="acme-r1:1",
                                                            won=True, price_paid_micros=1_200))
    [exp] = [decode(o.value, Experience) for o in out if o.topic == t.experience]
    assert exp.decision_id == "acme-r1:1" and exp.won and exp.reward == pytest.approx(-0.0012)
    assert exp.state == []  # not the agent's layout: the learner does not replay it
    assert kit.metrics.spend._value.get() == 0  # GAELP's spend metric counts GAELP's wins only
    await kit.handle(t.conversions, Conversion(id="c1", event_time=T0 + 60_000, value_micros=5_000,
                                               device_id="dev-acme-1"))
    finals = [decode(o.value, Experience) for o in await kit.ticks(T0 + 16 * DAY) if o.topic == t.experience]
    assert [(e.kind, e.decision_id, e.reward) for e in finals if e.kind == "final"] == [
        ("final", "acme-r1:1", pytest.approx(-0.0012 + 0.005))]
    # a second record under the id of a decision already stored changes nothing
    await kit.handle(t.outside_decisions, _outside(1, "acme", T0, 3, 0.2))
    assert (await kit.store.get_decisions(["acme-r1:1"]))["acme-r1:1"].action.bid_cpm_micros == 1_500_000


# ---------------------------------------------------------------------------- end to end into `gaelp ope`
async def _warehouse(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """Two outside bidders through the flow, the bus and the sink into DuckDB, with the candidate's rows."""
    kit = FlowKit(MemoryStore(), GaelpConfig().replace("join", attribution="last_touch"))
    bus = MemoryBus()
    rng = np.random.default_rng(7)
    n = 3000
    truth = {}
    cand_rows = []
    for bidder, logged, t0 in (("acme", True, T0), ("beta", False, T0 + n * 1000)):
        recs, x, _ = await _run_market(kit, bus, bidder, n, rng, logged=logged, t0=t0)
        truth[bidder] = float(np.mean([_expected_reward(int(xi), int(CANDIDATE[xi])) for xi in x[10:]]))
        cand_rows += [_candidate_row(r, None if i < 10 else int(CANDIDATE[xi]), int(xi))
                      for i, (r, xi) in enumerate(zip(recs, x, strict=True))]
    t = kit.topics
    bad = [_outside(9000 + i, "acme", T0 + i, 1, p) for i, p in enumerate([1.5, 0.0, -0.2, 2.0, None, None, None])]
    await _feed(kit, bus, t.outside_decisions, [*bad, encode({"id": "z:1", "event_time": T0}),
                                                encode(to_builtins(bad[0]) | {"id": "z:2", "bid_cpm_micros": "a"})])
    cand_rows += [_candidate_row(r, 2, 0) for r in bad]
    for day in range(16, 21):  # every window closes: the final records (at most 2,000 per advance)
        for o in await kit.ticks(T0 + 2 * n * 1000 + day * DAY):
            await bus.publish(o.topic, o.key, o.value)
    letters = [decode(r.value, DeadLetter) for part in bus._topic(t.dead_letters) for r in part]
    path = tmp_path / "w.duckdb"
    wh = DuckDBWarehouse(path)
    await wh.ensure_tables()
    sink = WarehouseSink(bus, t, BatchWriter(wh, BatchConfig(seed=0)), kit.store, kit.flow.decider.ids,
                         kit.cfg.join.attribution)
    await sink.start()
    await sink.drain()
    await sink.stop()
    await wh.insert("decisions", [TABLES["decisions"].validate(r) for r in cand_rows])
    counts = dict(await wh.query("SELECT bidder, count(*) FROM outside_decisions GROUP BY 1"))
    finals = (await wh.query("SELECT count(*) FROM experience WHERE final"))[0][0]
    wins = (await wh.query("SELECT count(*) FROM events WHERE kind = 'win'"))[0][0]
    await wh.close()
    return path, {"truth": truth, "letters": letters, "counts": counts, "finals": finals, "wins": wins}


def _ope(path: Path, bidder: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["ope", "--log", str(path), "--candidate", "7", "--live", f"outside:{bidder}", "--bid-edges", EDGES,
                 "--as-of", str(T0 + 6000 * 1000 + 30 * DAY), "--json", *extra]) == 0
    return dict(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


async def test_candidate_estimated_from_an_outside_bidders_log(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, w = await _warehouse(tmp_path)
    assert w["counts"] == {"acme": 3000 + 7, "beta": 3000} and w["finals"] == w["wins"] > 0
    assert sorted(d.field for d in w["letters"]) == ["$.bid_cpm_micros", "$.request_id"]  # the two malformed

    report = _ope(path, "acme", capsys)
    v = report["validation"]
    assert report["propensities"] == "logged"
    assert v["refused"] == {"propensity_out_of_range": 4, "missing_propensity": 3}
    assert v["n_used"] == 2990 and not v["deferred"], v  # 10 candidate rows without a price are left out
    assert any("10 candidate decisions would have bid but logged no price" in n for n in report["notes"])
    truth = w["truth"]["acme"]
    for name in ("ips", "snips", "dr"):
        e = report["estimates"][name]
        assert e["ci_low"] <= truth <= e["ci_high"], (name, e, truth)
    # what the bidder logged at bucket 3 over-represents x = 1 two to one: propensities that ignore
    # the context (its marginal 0.3) would land there in expectation; the intervals exclude it
    blind = (_expected_reward(0, 3) + 2 * _expected_reward(1, 3)) / 3
    assert not report["estimates"]["snips"]["ci_low"] <= blind <= report["estimates"]["snips"]["ci_high"]

    est = _ope(path, "beta", capsys)  # logs no propensity: estimated, and the report says so
    assert est["propensities"] == "estimated" and est["validation"]["n_used"] == 2990
    assert any("propensities ESTIMATED" in n and "the bidder's logged features" in n for n in est["notes"])
    for name in ("ips", "snips", "dr"):
        e = est["estimates"][name]
        assert e["ci_low"] <= w["truth"]["beta"] <= e["ci_high"], (name, e, w["truth"]["beta"])
        assert not e["ci_low"] <= blind <= e["ci_high"], name
    # asked for logged propensities, a log without them is refused record by record, never guessed
    refused = _ope(path, "beta", capsys, "--outside-propensity", "logged")
    assert refused["validation"]["refused"] == {"missing_propensity": 2990} and refused["estimates"] == {}
