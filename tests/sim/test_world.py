"""The stream world: wire contracts in event time, same seed same bytes, no conversion without a
touch, late conversions emitted and counted, identity links, ground truth kept out of events."""

from __future__ import annotations

import pytest

from agent_service.config import SimulationConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import Action, AdEvent, AuctionResult, Conversion, Decision, IdentityLink
from agent_service.errors import ConfigError
from agent_service.units import DAY_MS
from simulators import build_world
from simulators.basic import BasicWorld
from simulators.gaelp_world import GaelpWorld
from tests.sim.helpers import calibration

_SIM = SimulationConfig(seed=5, users=400, opportunities_per_day=1_200)
_KINDS = {"auction_results": AuctionResult, "ad_events": AdEvent, "conversions": Conversion,
          "identity_links": IdentityLink}


def _decide(req, k: int) -> Decision:  # type: ignore[no-untyped-def]
    chans = req.imp[0].ext["gaelp"]["channels"]
    channel = ("social", "paid_search", "organic")[k % 3]
    channel = channel if channel in chans else chans[0]
    t = req.ext["gaelp"]["event_time"]
    return Decision(id=f"{req.id}:1", event_time=t, request_id=req.id, imp_id="1", person_id="p",
                    device_id=req.device.ifa, campaign="c", state=[0.0], propensity=1.0, model_version=0,
                    action=Action(bid_cpm_micros=0 if channel == "organic" else 6_000_000, creative=k % 9,
                                  channel=channel, segment=0))


def _run(world, days: float = 1.0, drain: float = 20.0, slots: int = 24) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    out: list[tuple[str, bytes]] = []
    t0 = world.start_ms
    end, stop = t0 + int(days * DAY_MS), t0 + int((days + drain) * DAY_MS)
    a, k = t0, 0
    while a < stop:
        b = min(a + DAY_MS // slots, stop)
        decisions = []
        if a < end:
            reqs = world.requests(a, b)
            out += [("bid_requests", encode(r)) for r in reqs]
            decisions = [_decide(r, k + i) for i, r in enumerate(reqs)]
            k += len(reqs)
        events = world.resolve(decisions) + world.due(a, b)
        events.sort(key=lambda e: e.record.event_time)
        out += [(e.role, encode(e.record)) for e in events]
        a = b
    return out


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = _run(GaelpWorld(_SIM), drain=2.0)
    assert a == _run(GaelpWorld(_SIM), drain=2.0)
    assert a != _run(GaelpWorld(SimulationConfig(seed=6, users=400, opportunities_per_day=1_200)), drain=2.0)


@pytest.fixture(scope="module")
def rich() -> tuple[GaelpWorld, list[tuple[str, bytes]]]:
    cal = calibration(channels={"social": {"cvr_click_by_stage": (0.3, 0.3, 0.3), "cvr_view_by_stage": (0.02, 0.02, 0.02)},
                                "paid_search": {"cvr_click_by_stage": (0.3, 0.3, 0.3)}})
    world = GaelpWorld(_SIM, cal)
    return world, _run(world)


def test_events_are_contracts_in_event_time(rich) -> None:  # type: ignore[no-untyped-def]
    world, events = rich
    impressions: dict[str, int] = {}
    kinds = set()
    for role, raw in events:
        if role == "bid_requests":
            continue
        rec = decode(raw, _KINDS[role])
        kinds.add(role)
        if isinstance(rec, AdEvent) and rec.kind == "impression":
            impressions[rec.decision_id] = rec.event_time
        if isinstance(rec, Conversion):
            decision = rec.id.removeprefix("conv-")
            assert decision in impressions and impressions[decision] < rec.event_time  # a touch came first
    assert kinds == set(_KINDS)
    assert world.counts["conversions"] > 20


def test_conversion_log_and_late_conversions(rich) -> None:  # type: ignore[no-untyped-def]
    world, events = rich
    log = world.conversion_log
    assert {"id", "decision_id", "value_micros", "event_time", "in_window", "joinable"} <= set(log[0])
    late = [c for c in log if not c["in_window"]]
    assert late and all(c["event_time"] - c["touch_time"] > 14 * DAY_MS for c in late)
    assert world.counts["conversions_late"] == len(late)
    emitted = {decode(raw, Conversion).id for role, raw in events if role == "conversions"}
    assert {c["id"] for c in log} == emitted  # every conversion goes out, the late ones too
    assert sum(c["value_micros"] for c in log) == world.counts["conversion_value_micros"]


def test_identity_links_once_per_logged_in_device_and_truth_stays_out(rich) -> None:  # type: ignore[no-untyped-def]
    world, events = rich
    links = [decode(raw, IdentityLink) for role, raw in events if role == "identity_links"]
    assert len(links) == len({x.device_id for x in links}) > 0
    pop = world.engine.pop
    logged = {pop.device_id(d) for d in range(pop.dev_person.size) if pop.dev_logged[d]}
    login = [x for x in links if x.kind == "login"]
    prob = [x for x in links if x.kind == "probabilistic"]
    assert {x.device_id for x in login} <= logged and login and prob
    assert not {x.device_id for x in prob} & logged
    truth = {row["id"]: row for row in world.link_log}
    right = [x.score for x in prob if truth[x.id]["right"]]
    wrong = [x for x in prob if not truth[x.id]["right"]]
    assert wrong and all(x.person_id == truth[x.id]["named"] != truth[x.id]["person"] for x in wrong)
    assert sum(right) / len(right) > sum(x.score for x in wrong) / len(wrong) + 0.1
    assert 0.6 < len(right) / len(prob) < 0.95  # probabilistic_precision 0.8
    blob = b"".join(raw for _, raw in events)
    for seg in world.cal.segments:
        assert seg.name.encode() not in blob
    truth = next(iter(world.truth_log.values()))
    assert {"person", "segment", "stage", "p_click", "p_conv", "expected_value"} <= set(truth)
    assert world.truth()["totals"]["impressions"] > 0


def test_hindsight_of_the_stream() -> None:
    world = GaelpWorld(_SIM)
    _run(world, days=0.5, drain=0.0)
    res = world.hindsight(2_000_000)
    assert res.lp_value >= res.value > 0


def test_build_world_by_name() -> None:
    assert isinstance(build_world(_SIM), GaelpWorld)
    assert isinstance(build_world(SimulationConfig(world="basic", users=50)), BasicWorld)
    with pytest.raises(ConfigError) as exc:
        SimulationConfig(world="recsim")
    assert exc.value.key == "simulation.world"
    with pytest.raises(ConfigError):
        build_world(SimulationConfig(calibration="/nonexistent.toml"))
