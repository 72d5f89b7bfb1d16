"""gaelp promote's controller over memory adapters and a fake clock: per-arm totals in the canary
store drive the ramp, promotion (the registry's live version becomes the candidate's weights) and
rollback (share 0, live untouched); state survives between controllers (``--once`` from cron)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent_service.adapters.memory_canary import MemoryCanaryStore
from agent_service.adapters.registry import MemoryRegistry
from agent_service.config.experiments import CanaryConfig, GuardrailConfig, SequentialConfig
from agent_service.errors import ConfigError
from agent_service.ports.canary import ArmTally, CanaryPlan

CFG = CanaryConfig(share=0.1, ramp=(0.5,), stage_min_persons=50, max_persons=1_000_000, max_duration_ms=3_600_000,
                   test=SequentialConfig(min_persons=50, min_conversions=20),
                   guardrails=GuardrailConfig(min_requests=200))


class Clock:
    def __init__(self) -> None:
        self.ms = 1_767_225_600_000

    def __call__(self) -> int:
        return self.ms


async def _plan(store: MemoryCanaryStore) -> CanaryPlan:
    plan = await store.plan()
    assert plan is not None
    return plan


def _registry() -> MemoryRegistry:
    reg = MemoryRegistry()
    reg.publish({"w": torch.zeros(2), "name": "candidate"})  # v1: the candidate
    reg.publish({"w": torch.ones(2), "name": "control"})  # v2: live
    return reg


def _controller(store: MemoryCanaryStore, reg: MemoryRegistry, clock: Clock, cfg: CanaryConfig = CFG):  # type: ignore[no-untyped-def]
    from agent_service.runtime.canary_controller import CanaryController
    return CanaryController(store, reg, cfg, clock)


async def _traffic(store: MemoryCanaryStore, exp: str, rnd: int, n: int, rng: np.random.Generator, vpd: dict[str, float],
                   spend_rate: dict[str, float] | None = None) -> None:
    """``n`` new persons per arm, each with 10 requests, spend and (for some) credited value."""
    rate = spend_rate or {"control": 1.0, "candidate": 1.0}
    batches = []
    for arm in ("control", "candidate"):
        for i in range(n):
            spend = int(rng.gamma(2.0, 0.5) * 1e6 * rate[arm])
            value = int(spend * vpd[arm] * rng.exponential(2.0)) if rng.random() < 0.5 else 0
            batches.append((f"{rnd}:{arm}:{i}", [ArmTally(arm, f"{arm}-{rnd}-{i}", requests=10, no_bids=2,
                                                          spend_micros=spend, value_micros=value)]))
    assert all(await store.add(exp, batches))


async def test_a_better_candidate_ramps_then_is_promoted_as_the_live_version() -> None:
    store, reg, clock, rng = MemoryCanaryStore(), _registry(), Clock(), np.random.default_rng(1)
    ctl = _controller(store, reg, clock)
    [started] = await ctl.start(1, "better")
    assert started.kind == "started" and (await _plan(store)).share == 0.1
    kinds: list[str] = []
    for rnd in range(40):
        await _traffic(store, "better", rnd, 40, rng, {"control": 1.0, "candidate": 1.6})
        clock.ms += 60_000
        kinds += [e.kind for e in await ctl.step()]
        if (await _plan(store)).state != "running":
            break
    assert "stage_advanced" in kinds and kinds[-1] == "promoted"
    plan = await _plan(store)
    assert plan.state == "promoted" and plan.share == 0.0 and not plan.routing
    live = reg.load(reg.latest_version())
    assert reg.latest_version() == 3 and live["name"] == "candidate" and live["promoted_from"] == 1
    assert await ctl.step() == []  # ended: nothing more happens


async def test_a_spend_guardrail_rolls_back_and_leaves_the_live_version() -> None:
    store, reg, clock, rng = MemoryCanaryStore(), _registry(), Clock(), np.random.default_rng(2)
    ctl = _controller(store, reg, clock)
    await ctl.start(1, "spender")
    events = []
    for rnd in range(10):
        await _traffic(store, "spender", rnd, 40, rng, {"control": 1.0, "candidate": 1.0},
                       spend_rate={"control": 1.0, "candidate": 3.0})
        events += await ctl.step()
        if events[-1].kind == "rolled_back":
            break
    assert events[-1].kind == "rolled_back" and "spend_rate" in events[-1].reason
    plan = await _plan(store)
    assert plan.state == "rolled_back" and plan.share == 0.0 and reg.latest_version() == 2


async def test_an_a_a_candidate_is_neither_rolled_back_nor_promoted() -> None:
    store, reg, clock, rng = MemoryCanaryStore(), _registry(), Clock(), np.random.default_rng(3)
    ctl = _controller(store, reg, clock)
    await ctl.start(1, "aa")
    for rnd in range(20):
        await _traffic(store, "aa", rnd, 40, rng, {"control": 1.0, "candidate": 1.0})
        assert {e.kind for e in await ctl.step()} == {"evaluated"}
    plan = await _plan(store)
    assert plan.state == "running" and plan.share == 0.1 and reg.latest_version() == 2


async def test_each_step_continues_the_stored_canary_and_the_horizon_holds_it() -> None:
    store, reg, clock = MemoryCanaryStore(), _registry(), Clock()
    await _controller(store, reg, clock).start(1, "cron")
    seqs = []
    for _ in range(3):  # a fresh controller per step, as `gaelp promote --once` from cron
        clock.ms += 1_200_000
        seqs += [e.seq for e in await _controller(store, reg, clock).step()]
    assert seqs == [2, 3, 4, 5]  # the third step passed the one-hour horizon: evaluated, then held
    plan = await _plan(store)
    assert plan.state == "held" and plan.share == 0.1 and plan.routing  # frozen until an operator acts
    ended = await _controller(store, reg, clock).abort()
    assert ended is not None and ended.state == "rolled_back" and ended.share == 0.0


async def test_start_refuses_an_unknown_or_live_version_and_a_second_canary() -> None:
    store, reg, clock = MemoryCanaryStore(), _registry(), Clock()
    ctl = _controller(store, reg, clock)
    with pytest.raises(ConfigError, match="not in the registry"):
        await ctl.start(9)
    with pytest.raises(ConfigError, match="already the live version"):
        await ctl.start(2)
    await ctl.start(1)
    with pytest.raises(ConfigError, match="still running"):
        await ctl.start(1)


async def test_status_reports_the_plan_and_each_arms_totals() -> None:
    store, reg, clock = MemoryCanaryStore(), _registry(), Clock()
    ctl = _controller(store, reg, clock)
    assert await ctl.status() == {"plan": None}
    await ctl.start(1, "st")
    await store.add("st", [("k", [ArmTally("candidate", "p", requests=4, no_bids=1, spend_micros=2_000_000,
                                           value_micros=5_000_000)])])
    s = await ctl.status()
    assert s["plan"]["candidate_version"] == 1 and s["plan"]["control_version"] == 2
    assert s["arms"]["candidate"]["value_per_dollar"] == 2.5 and s["arms"]["candidate"]["no_bid_rate"] == 0.25
    assert s["arms"]["control"]["persons"] == 0


def test_the_share_flag_takes_percent_or_fraction_and_names_itself_when_bad() -> None:
    import argparse

    from agent_service.commands.promote import parse_share
    assert parse_share("5%") == pytest.approx(0.05) and parse_share("0.25") == 0.25
    for bad in ("0", "150%", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--canary"):
            parse_share(bad)


def test_gaelp_promote_once_starts_and_steps_then_status_and_abort(service_redis_url, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The command on Redis and a file registry: --once starts the canary and evaluates once
    (cron), --status changes nothing, --abort ends it with share 0."""
    import json

    from agent_service.adapters.registry import FileRegistry
    from agent_service.cli import main

    reg = FileRegistry(tmp_path / "models")
    reg.publish({"w": torch.zeros(2)})
    reg.publish({"w": torch.ones(2)})
    base = ["promote", "--redis", service_redis_url, "--registry", "file", "--model-dir", str(tmp_path / "models")]
    capsys.readouterr()
    assert main([*base, "--candidate", "1", "--canary", "5%", "--once", "--experiment", "cli"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["plan"]["state"] == "running" and out["plan"]["share"] == 0.05 and out["plan"]["seq"] == 2
    assert main([*base, "--status"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["plan"]["seq"] == 2
    assert main([*base, "--candidate", "2", "--once"]) == 2  # another candidate while one runs: refused
    assert "--candidate" in capsys.readouterr().err
    assert main([*base, "--abort"]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["plan"]["state"] == "rolled_back" and out["plan"]["share"] == 0.0
