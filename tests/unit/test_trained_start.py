"""A run started from a `gaelp train` checkpoint (`[simulation] model`, `gaelp simulate --model`)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agent_service.adapters.registry import MemoryRegistry
from agent_service.agent.serving.server import AgentServer
from agent_service.cli import main
from agent_service.config import GaelpConfig
from agent_service.config.agent import HybridConfig, PPOConfig
from agent_service.errors import ConfigError, ModelError
from agent_service.lab.campaign import HybridCampaign
from agent_service.runtime.assembly import build_learner
from agent_service.runtime.report import build_report
from agent_service.runtime.simulate import run_simulation
from agent_service.runtime.trained import load_trained_agent

HYB = HybridConfig(lstm_hidden=16, hidden=32, update_every=32, ppo=PPOConfig(rollout=64, minibatch=32, epochs=1))


def _checkpoint(tmp: Path, hybrid: HybridConfig, creatives: int, z: float, transitions: int = 10**7) -> dict[str, Any]:
    """A `gaelp train`-shaped agent.pt in ``tmp``: a campaign's checkpoint, its pacing state set."""
    campaign = HybridCampaign(creatives, hybrid, GaelpConfig().reward, seed=5)
    profile = np.linspace(1.0, 3.0, hybrid.slots_per_period)
    ck = {**campaign.checkpoint(), "dqn_transitions": transitions, "z_prev_day": z,
          "plan_profile": (profile / profile.sum()).tolist()}
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(ck, tmp / "agent.pt")
    return ck


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_checkpoint_is_published_as_version_one_and_served_with_its_pacing_state(tmp_path: Path) -> None:
    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB)
    _checkpoint(tmp_path, HYB, 4, z=0.4)
    ck = load_trained_agent(tmp_path, 4)
    registry = MemoryRegistry()
    learner = build_learner(cfg, registry, 4, seed=0, start=ck)
    v1 = registry.load(1)
    assert registry.latest_version() == 1 and _same(v1["net"], ck["net"])
    assert v1["dqn_eps"] == pytest.approx(HYB.dqn.eps_end)  # the trained exploration schedule, not a restart
    assert learner.learner.dqn.transitions == 10**7
    fresh = MemoryRegistry()
    build_learner(cfg, fresh, 4, seed=0)
    assert not _same(fresh.load(1)["net"], ck["net"])  # fresh weights would differ
    assert fresh.load(1)["dqn_eps"] == pytest.approx(HYB.dqn.eps_start)

    server = AgentServer(HYB, 4, 15.0, registry, seed=1)
    assert server.sync() == 1 and _same(server.agent.net.state_dict(), ck["net"])
    server.restore_pacing(ck)
    assert np.allclose(server.plan.profile, ck["plan_profile"])
    assert server.agent.z_base == server.agent.z == pytest.approx(0.4)


def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_setting(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "four", HYB, 4, z=0.0)
    with pytest.raises(ConfigError, match=r"creatives\.capacity.*capacity = 4"):
        load_trained_agent(tmp_path / "four", 64)
    with pytest.raises(ConfigError, match=r"simulation\.model"):
        load_trained_agent(tmp_path / "none", 4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"simulation\.model"):
        load_trained_agent(tmp_path / "junk.pt", 4)
    other = dataclasses.replace(HYB, hidden=48)  # same creatives, other network: refused when published
    with pytest.raises(ModelError, match="layout"):
        build_learner(dataclasses.replace(GaelpConfig(), hybrid=other), MemoryRegistry(), 4, seed=0,
                      start=load_trained_agent(tmp_path / "four", 4))


def test_simulate_serves_the_trained_multiplier_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same checkpoint at the lowest and the highest multiplier level: the run starts where it says."""
    hyb = GaelpConfig().hybrid
    base = GaelpConfig().replace("simulation", seed=3, days=0.25, drain_days=0.0, opportunities_per_day=4000,
                                 users=1500).replace("creatives", capacity=60)
    spend = {}
    for name, z in (("low", hyb.dqn.z_min), ("high", hyb.dqn.z_max)):
        _checkpoint(tmp_path / name, hyb, 60, z=z)
        run = asyncio.run(run_simulation(base.replace("simulation", model=str(tmp_path / name)), None,
                                         progress=False, warehouse=False))
        spend[name] = build_report(run)["spend"]
        assert run.versions_served[1] > 0  # the checkpoint, published as version 1, served first
    # the two checkpoints differ in their multiplier level only (ignored, the runs would be identical)
    assert spend["high"] > 1.2 * spend["low"], spend
    # the command line: a checkpoint of another width is a clear error naming the setting
    assert main(["simulate", "--model", str(tmp_path / "low"), "--days", "0.1", "--no-progress",
                 "--out", str(tmp_path / "x")]) == 2
    assert "creatives.capacity" in capsys.readouterr().err
