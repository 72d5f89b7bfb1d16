"""A canary inside `gaelp simulate` (runtime/sim_canary.py): gaelp promote's controller, the canary
watcher and the per-arm tallies on the in-memory canary store, stepped every slot in event time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from agent_service.adapters.registry import MemoryRegistry
from agent_service.cli import main
from agent_service.config import GaelpConfig, parse_canary_candidate
from agent_service.errors import ConfigError
from agent_service.runtime.assembly import build_learner
from agent_service.runtime.sim_canary import publish_candidate
from agent_service.runtime.simulate import SimulationRun, run_simulation

# Half a simulated day at 20,000 opportunities a day: ~2,000 requests an arm at a 50 % share, enough for the
# default guardrails (min_requests 2000); no conversion lands so soon, so the value test cannot decide.
SMALL = GaelpConfig().replace("simulation", days=0.5, opportunities_per_day=20_000, users=2_000, drain_days=0)
SHARE = dataclasses.replace(SMALL.canary, share=0.5)


async def _run(candidate: str, cfg: GaelpConfig = SMALL) -> SimulationRun:
    cfg = dataclasses.replace(cfg, canary=SHARE).replace("simulation", canary_candidate=candidate)
    return await run_simulation(cfg, None, progress=False, warehouse=False)


async def test_a_candidate_that_overbids_threefold_is_rolled_back_and_leaves_the_live_version() -> None:
    run = await _run("overbid:3")
    c = run.canary
    assert c["final"]["state"] == "rolled_back" and c["final"]["share"] == 0.0
    assert c["final"]["reason"].startswith("guardrail spend_rate")
    assert [r["kind"] for r in c["transitions"]] == ["started", "rolled_back"]
    ctl, cand = c["arms"]["control"], c["arms"]["candidate"]
    assert cand["spend_usd"] / cand["requests"] > 1.25 * ctl["spend_usd"] / ctl["requests"]
    # routing stopped at the rollback: every decision the candidate's version made was tallied while routed
    assert run.versions_served[c["candidate_version"]] == cand["requests"]
    assert c["final"]["hours"] < 12 and c["timeline"][-1]["routed_share"] == 0.0
    assert all(r["kind"] != "promoted" for r in c["timeline"])


async def test_an_a_a_canary_is_not_rolled_back_and_steps_every_slot() -> None:
    # A/A: the candidate is the live policy's first version, and the learner publishes nothing new
    frozen = SMALL.replace("hybrid", update_every=10**9)
    run = await _run("live", frozen)
    c = run.canary
    assert c["final"]["state"] == "running" and c["final"]["share"] == 0.5
    assert [r["kind"] for r in c["transitions"]] == ["started"]
    slots = int(SMALL.simulation.days * SMALL.simulation.slots_per_day)
    assert c["evaluations"] == slots + 1  # every slot, and a last look after the run
    ctl, cand = c["arms"]["control"], c["arms"]["candidate"]
    guard = SMALL.canary.guardrails.min_requests
    assert ctl["requests"] >= guard and cand["requests"] >= guard  # the guardrails were judged, and passed
    assert set(run.versions_served) == {c["candidate_version"], c["control_version"]}


def test_the_candidate_goes_in_below_a_copy_of_the_live_version() -> None:
    cfg = GaelpConfig().replace("simulation", canary_candidate="seed:5")
    registry = MemoryRegistry()
    build_learner(cfg, registry, cfg.creatives.capacity, seed=0)
    assert publish_candidate(cfg, registry, cfg.creatives.capacity) == (2, 1.0)
    v1, v2, v3 = (registry.load(v)["net"] for v in (1, 2, 3))
    assert registry.latest_version() == 3 and all(torch.equal(v1[k], v3[k]) for k in v1)
    assert not all(torch.equal(v1[k], v2[k]) for k in v1)
    cfg = cfg.replace("simulation", canary_candidate="overbid:3")
    assert publish_candidate(cfg, registry, cfg.creatives.capacity) == (3, 3.0)


@pytest.mark.parametrize("bad", ["seed:x", "seed:1.5", "overbid:0", "live:1", "v3"])
def test_a_bad_candidate_is_refused_by_its_key(bad: str) -> None:
    with pytest.raises(ConfigError, match="simulation.canary_candidate"):
        GaelpConfig().replace("simulation", canary_candidate=bad)
    assert parse_canary_candidate("") is None


def test_gaelp_simulate_canary_flag_runs_the_next_seeds_policy_into_the_report(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    assert main(["simulate", "--days", "0.05", "--opportunities-per-day", "4000", "--users", "300", "--drain-days", "0",
                 "--seed", "2", "--canary", "5%", "--out", str(out), "--no-progress", "--no-warehouse"]) == 0
    report = json.loads((out / "report.json").read_text())
    c = report["canary"]
    assert c["candidate"] == "seed:3" and c["stages"] == [0.05] and c["final"]["state"] == "running"
    log = [json.loads(line) for line in (out / "canary.jsonl").read_text().splitlines()]
    assert log == c["timeline"] and log[0]["kind"] == "started" and (out / "canary.png").exists()
    assert "canary of seed:3" in capsys.readouterr().out
