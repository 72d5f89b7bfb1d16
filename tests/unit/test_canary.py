"""The canary: stable hashed assignment, guardrail rollback with a reason, the state machine and its ramp."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent_service.config.experiments import (
    CanaryConfig,
    ExperimentConfigError,
    GuardrailConfig,
    SequentialConfig,
    load_experiments,
)
from agent_service.errors import ConfigError
from agent_service.experiments.assignment import bucket, pick_arm
from agent_service.experiments.canary import Canary, CanaryState
from agent_service.experiments.sequential import Arm

N = 20_000


def _feed(c: Canary, rng: np.random.Generator, n: int, *, value_mult: float = 1.0, spend_mult: float = 1.0,
          err_rate: float = 0.002, conv: float = 0.1) -> None:
    """n persons split by the canary's current share, with requests, no-bids and errors."""
    n_c = int(rng.binomial(n, c.share))
    for arm, m, v_mult, s_mult in ((Arm.CANDIDATE, n_c, value_mult, spend_mult), (Arm.CONTROL, n - n_c, 1.0, 1.0)):
        req = 1 + rng.poisson(3.0, m)
        spend = rng.exponential(0.2, m) * req * s_mult
        value = (rng.random(m) < conv) * rng.lognormal(3.0, 1.0, m) * v_mult
        errors = rng.binomial(req, err_rate)
        c.observe_many(arm, value, spend, req, rng.binomial(req, 0.1), errors)


# ---------------------------------------------------------------- hashing
def test_bucket_is_stable_and_not_pythons_hash() -> None:
    # Fixed values: a change of hash function or salt format would reshuffle every live canary.
    assert bucket("person-1", "canary:exp-a") == bucket("person-1", "canary:exp-a")
    assert bucket("person-1", "canary:exp-a") == 0.807307502588853
    assert bucket("ab", "c") != bucket("a", "bc")  # the separator keeps the parts apart


def test_share_within_binomial_tolerance() -> None:
    c = Canary("exp-share", CanaryConfig(share=0.05))
    c.start(0)
    hits = sum(c.arm_of(f"p{i}") is Arm.CANDIDATE for i in range(N))
    sd = math.sqrt(N * 0.05 * 0.95)
    assert abs(hits - N * 0.05) < 4 * sd


def test_same_person_same_arm_and_nested_ramp() -> None:
    c = Canary("exp-nest", CanaryConfig(share=0.05, ramp=(0.25, 1.0)))
    c.start(0)
    first = {f"p{i}": c.arm_of(f"p{i}") for i in range(2000)}
    assert all(c.arm_of(p) is a for p, a in first.items())
    c.stage = 1  # the share grows: every candidate stays a candidate
    assert all(c.arm_of(p) is Arm.CANDIDATE for p, a in first.items() if a is Arm.CANDIDATE)
    assert sum(c.arm_of(p) is Arm.CANDIDATE for p in first) > sum(a is Arm.CANDIDATE for a in first.values())


def test_experiments_are_independent() -> None:
    a = np.array([bucket(f"p{i}", "canary:one") < 0.5 for i in range(N)])
    b = np.array([bucket(f"p{i}", "canary:two") < 0.5 for i in range(N)])
    both = (a & b).mean()
    # Independent halves overlap on a quarter of persons (sd of the mean ≈ 0.003).
    assert abs(both - 0.25) < 0.015
    assert a.mean() == pytest.approx(0.5, abs=0.015)


def test_pick_arm_follows_shares_and_skips_empty_arms() -> None:
    assert pick_arm(0.0, (0.5, 0.5)) == 0 and pick_arm(0.5, (0.5, 0.5)) == 1
    assert pick_arm(0.3, (0.3, 0.0, 0.7)) == 2
    assert pick_arm(0.99999999, (0.5, 0.5 - 1e-7, 0.0)) == 1


# ---------------------------------------------------------------- state machine
def test_started_evaluated_and_events_numbered() -> None:
    c = Canary("exp-ev", CanaryConfig())
    with pytest.raises(RuntimeError):
        c.evaluate(0)
    ev = c.start(1000)
    assert (ev.kind, ev.state, ev.seq, ev.share) == ("started", CanaryState.RUNNING, 1, 0.05)
    evs = c.evaluate(2000)
    assert [e.kind for e in evs] == ["evaluated"] and evs[0].seq == 2
    rec = evs[0].as_record()
    assert rec["state"] == "running" and rec["experiment_id"] == "exp-ev"


def test_spend_guardrail_rolls_back_with_reason() -> None:
    rng = np.random.default_rng(0)
    c = Canary("exp-spend", CanaryConfig(share=0.2))
    c.start(0)
    events = []
    for b in range(20):
        _feed(c, rng, 5000, value_mult=1.6, spend_mult=1.6)  # same value per dollar, 60 % more spend
        events += c.evaluate(b)
        if c.state is not CanaryState.RUNNING:
            break
    assert c.state is CanaryState.ROLLED_BACK
    assert events[-1].kind == "rolled_back" and events[-1].reason.startswith("guardrail spend_rate")
    assert c.share == 0.0 and c.arm_of("anyone") is Arm.CONTROL
    assert c.evaluate(99) == []  # terminal


def test_error_rate_cap_rolls_back_at_once() -> None:
    rng = np.random.default_rng(1)
    c = Canary("exp-err", CanaryConfig(share=0.2, guardrails=GuardrailConfig(max_error_rate=0.1)))
    c.start(0)
    n = 5000
    for arm, m, e in ((Arm.CANDIDATE, 1000, 0.5), (Arm.CONTROL, n - 1000, 0.0)):
        req = np.full(m, 4)
        c.observe_many(arm, np.zeros(m), np.ones(m), req, np.zeros(m), rng.binomial(req, e))
    assert c.evaluate(1)[-1].reason.startswith("guardrail error_rate_cap")


def test_no_bid_guardrail_rolls_back() -> None:
    rng = np.random.default_rng(2)
    c = Canary("exp-nobid", CanaryConfig(share=0.3))
    c.start(0)
    for arm, m, q in ((Arm.CANDIDATE, 3000, 0.5), (Arm.CONTROL, 7000, 0.1)):
        req = 1 + rng.poisson(3.0, m)
        c.observe_many(arm, np.zeros(m), np.ones(m), req, rng.binomial(req, q), np.zeros(m))
    assert c.evaluate(1)[-1].reason.startswith("guardrail no_bid_rate")


def test_aa_guardrails_quiet() -> None:
    rng = np.random.default_rng(3)
    rolled = 0
    for i in range(10):
        c = Canary(f"exp-aa-{i}", CanaryConfig(share=0.2))
        c.start(0)
        for b in range(10):
            _feed(c, rng, 5000)
            c.evaluate(b)
        rolled += c.state is CanaryState.ROLLED_BACK
    assert rolled <= 2


def test_better_candidate_ramps_then_promotes() -> None:
    rng = np.random.default_rng(4)
    cfg = CanaryConfig(share=0.1, ramp=(0.3, 0.6, 1.0), stage_min_persons=2000)
    c = Canary("exp-ramp", cfg)
    c.start(0)
    kinds: list[str] = []
    shares: list[float] = []
    for b in range(100):
        _feed(c, rng, 10_000, value_mult=1.5)
        for e in c.evaluate(b):
            if e.kind != "evaluated":
                kinds.append(e.kind)
                shares.append(e.share)
        if c.state is not CanaryState.RUNNING:
            break
    assert kinds == ["stage_advanced", "stage_advanced", "promoted"]
    assert shares == [0.3, 0.6, 1.0] and c.arm_of("anyone") is Arm.CANDIDATE


def test_worse_candidate_rolled_back_by_the_test() -> None:
    rng = np.random.default_rng(5)
    c = Canary("exp-worse", CanaryConfig(share=0.2))
    c.start(0)
    for b in range(100):
        _feed(c, rng, 10_000, value_mult=0.6)
        events = c.evaluate(b)
        if c.state is not CanaryState.RUNNING:
            break
    assert c.state is CanaryState.ROLLED_BACK and events[-1].reason.startswith("value per dollar")
    assert events[-1].upper < 0


def test_held_at_the_horizon_keeps_the_share() -> None:
    rng = np.random.default_rng(6)
    cfg = CanaryConfig(share=0.2, max_persons=40_000, test=SequentialConfig(min_persons=1000))
    c = Canary("exp-held", cfg)
    c.start(0)
    for b in range(10):
        _feed(c, rng, 5000)
        events = c.evaluate(b)
        if c.state is not CanaryState.RUNNING:
            break
    assert c.state is CanaryState.HELD and events[-1].kind == "held" and c.share == 0.2
    c2 = Canary("exp-held-t", CanaryConfig(max_duration_ms=1000))
    c2.start(0)
    assert c2.evaluate(1000)[-1].kind == "held"


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(("kwargs", "key"), [
    ({"share": 0.0}, "canary.share"), ({"share": 1.5}, "canary.share"), ({"share": float("nan")}, "canary.share"),
    ({"ramp": (0.25, 0.1)}, "canary.ramp[1]"), ({"ramp": (0.01,)}, "canary.ramp[0]"),
    ({"max_duration_ms": 0}, "canary.max_duration_ms"), ({"stage_min_persons": 0}, "canary.stage_min_persons"),
])
def test_bad_canary_config_raises_value_error_naming_the_field(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        CanaryConfig(**kwargs)
    assert isinstance(err.value, ExperimentConfigError) and err.value.key == key


def test_share_one_is_valid_and_promotes_at_once() -> None:
    c = Canary("exp-all", CanaryConfig(share=1.0))
    c.start(0)
    assert c.evaluate(1)[-1].kind == "promoted"


def test_toml_mapping_loads_and_errors_name_the_key() -> None:
    cfg = load_experiments({"canary": {"share": 0.1, "ramp": [0.5, 1.0], "test": {"alpha": 0.01}}})
    assert cfg.canary.stages == (0.1, 0.5, 1.0) and cfg.canary.test.alpha == 0.01
    with pytest.raises(ConfigError) as err:
        load_experiments({"canary": {"test": {"alpha": 2}}})
    assert err.value.key == "canary.test.alpha"
    with pytest.raises(ConfigError) as err:
        load_experiments({"canary": {"shares": 0.1}})
    assert err.value.key == "canary.shares"
