"""Canary: stable hashed assignment, an always-valid test, guardrails, promote / roll back."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.errors import ConfigError
from agent_service.experiments.canary import Canary, CanaryConfig, Guardrails, in_share, unit_hash
from agent_service.experiments.sequential import ArmStats, compare


def test_assignment_is_stable_proportional_nested_and_independent_across_experiments() -> None:
    people = [f"p{i}" for i in range(20_000)]
    five = [in_share("exp1", p, 0.05) for p in people]
    assert abs(np.mean(five) - 0.05) < 0.005  # binomial: sd 0.0015
    assert five == [in_share("exp1", p, 0.05) for p in people]  # stable (not Python's salted hash)
    assert all(in_share("exp1", p, 0.25) for p, f in zip(people, five, strict=True) if f)  # a ramp keeps people
    other = [in_share("exp2", p, 0.05) for p in people]
    both = np.mean(np.array(five) & np.array(other))
    assert abs(both - 0.0025) < 0.0015  # independent experiments
    assert 0 <= unit_hash("e", "x") < 1


def _feed(c: Canary, rng: np.random.Generator, lift: float, people: int) -> None:
    cand = rng.random(people) < c.share
    for arm, mask, lf in ((c.candidate, cand, lift), (c.control, ~cand, 0.0)):
        n = int(mask.sum())
        conv = rng.random(n) < 0.2
        arm.add(np.where(conv, rng.lognormal(3, 0.5, n), 0.0) * (1 + lf), rng.gamma(2, 0.5, n), int(conv.sum()))


@pytest.mark.parametrize(("lift", "end"), [(0.5, "promoted"), (-0.5, "rolled_back")])
def test_a_clearly_better_candidate_is_promoted_and_a_worse_one_rolled_back(lift: float, end: str) -> None:
    rng = np.random.default_rng(1)
    c = Canary("e", CanaryConfig(min_conversions=200))
    for _ in range(300):
        _feed(c, rng, lift, 2_000)
        c.review()
        if c.state != "running":
            break
    assert c.state == end
    assert c.steps[-1].action == ("promote" if end == "promoted" else "rollback")
    assert c.share == (1.0 if end == "promoted" else 0.0)
    if end == "promoted":
        assert [s.share for s in c.steps if s.action == "ramp"] == [0.25, 0.5]


def test_a_broken_guardrail_rolls_back_at_once_with_its_reason() -> None:
    c = Canary("e", CanaryConfig(guardrails=Guardrails(max_spend_rate=1.2)))
    step = c.review(spend_rate=1.3)
    assert (step.action, step.reason, c.state) == ("rollback", "guardrail spend_rate", "rolled_back")
    assert Canary("e").review(error_rate=0.5).reason == "guardrail error_rate"


def test_nothing_is_decided_before_enough_conversions_and_aa_rarely_decides() -> None:
    wrong = 0
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        c = Canary(f"aa{seed}", CanaryConfig(min_conversions=300))
        for _ in range(60):
            _feed(c, rng, 0.0, 2_000)
            if c.review().action != "hold":
                wrong += 1
                break
    assert wrong <= 3  # α = 0.05 over the whole sequence of looks (bench_canary: 4.5 % of 200 runs)
    assert Canary("e").review().reason == "too few conversions"


def test_the_confidence_sequence_is_wider_than_a_fixed_horizon_interval() -> None:
    rng = np.random.default_rng(3)
    a, b = ArmStats(), ArmStats()
    a.add(rng.lognormal(0, 1, 5000), np.ones(5000))
    b.add(rng.lognormal(0, 1, 5000), np.ones(5000))
    cmp = compare(a, b)
    z_half = 1.96 * np.sqrt(a.ratio_variance() + b.ratio_variance())
    assert (cmp.high - cmp.low) / 2 > z_half  # the price of looking after every batch


@pytest.mark.parametrize("kw", [{"ramp": (0.5, 0.25)}, {"ramp": (0.0, 1.0)}, {"alpha": 1.5}, {"margin": -0.1}])
def test_bad_settings_are_refused_naming_them(kw: dict) -> None:
    with pytest.raises(ConfigError, match="canary"):
        CanaryConfig(**kw)
