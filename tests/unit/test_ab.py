"""Creative A/B experiments: allocation by hashed person, exposure counted once, status, decisions, config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent_service.config.experiments import (
    ArmConfig,
    ExperimentConfig,
    ExperimentConfigError,
    ExperimentsConfig,
    SequentialConfig,
    load_experiments,
)
from agent_service.errors import ConfigError
from agent_service.experiments.ab import Experiment, ExperimentStatus, exposure_key, is_first_exposure

START, STOP = 1_000_000, 2_000_000


def _cfg(weights: tuple[float, ...] = (1.0, 1.0), exp_id: str = "exp-1", **kw: object) -> ExperimentConfig:
    arms = tuple(ArmConfig(f"arm{i}", (f"creative-{i}",), w) for i, w in enumerate(weights))
    return ExperimentConfig(exp_id, arms, START, STOP, **kw)  # type: ignore[arg-type]


def _run(exp: Experiment, rng: np.random.Generator, persons: int, conv: dict[str, float],
         value_mult: dict[str, float], now: int = START + 1) -> None:
    """Expose ``persons`` new persons and observe each one's value and spend."""
    for i in range(persons):
        e = exp.expose(f"p{rng.integers(1 << 62)}-{i}", now, set())
        assert e is not None
        converted = rng.random() < conv[e.arm]
        value = float(rng.lognormal(3.0, 1.0)) * value_mult[e.arm] if converted else 0.0
        exp.observe(e.arm, value, float(rng.exponential(0.8)))


def test_allocation_follows_weights_and_is_stable() -> None:
    exp = Experiment(_cfg((1.0, 3.0)))
    arms = [exp.assign(f"p{i}").name for i in range(20_000)]
    share1 = arms.count("arm1") / len(arms)
    assert abs(share1 - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 20_000)
    assert all(exp.assign(f"p{i}").name == a for i, a in enumerate(arms[:500]))
    assert exp.assign("p1").creatives in (("creative-0",), ("creative-1",))


def test_zero_weight_arm_never_assigned() -> None:
    exp = Experiment(_cfg((1.0, 0.0, 1.0)))
    assert all(exp.assign(f"p{i}").name != "arm1" for i in range(5000))


def test_assignment_independent_across_experiment_ids() -> None:
    a, b = Experiment(_cfg(exp_id="exp-a")), Experiment(_cfg(exp_id="exp-b"))
    x = np.array([a.assign(f"p{i}").name == "arm0" for i in range(20_000)])
    y = np.array([b.assign(f"p{i}").name == "arm0" for i in range(20_000)])
    assert abs((x & y).mean() - 0.25) < 0.015


def test_first_exposure_counted_once() -> None:
    seen: set[str] = set()
    assert is_first_exposure(seen, "exp-1", "p1")
    seen.add(exposure_key("exp-1", "p1"))
    assert not is_first_exposure(seen, "exp-1", "p1")
    assert is_first_exposure(seen, "exp-2", "p1")  # another experiment counts its own
    exp = Experiment(_cfg())
    store: set[str] = set()
    firsts = []
    for _ in range(3):
        e = exp.expose("p1", START, store)
        assert e is not None
        firsts.append(e.first)
        store.add(exposure_key(e.experiment_id, e.person_id))
    assert firsts == [True, False, False] and sum(exp.exposed) == 1


def test_status_follows_event_time() -> None:
    exp = Experiment(_cfg())
    assert exp.status(START - 1) is ExperimentStatus.SCHEDULED
    assert exp.expose("p1", START - 1, set()) is None
    assert exp.status(START) is ExperimentStatus.RUNNING
    assert exp.status(STOP) is ExperimentStatus.STOPPED
    assert exp.expose("p1", STOP, set()) is None


def test_clearly_better_arm_wins_and_listing_has_estimates() -> None:
    rng = np.random.default_rng(0)
    exp = Experiment(_cfg(test=SequentialConfig(min_persons=500, min_conversions=50)))
    for _ in range(20):
        _run(exp, rng, 2000, {"arm0": 0.1, "arm1": 0.1}, {"arm0": 1.0, "arm1": 2.0})
        summary = exp.evaluate(START + 1)
        if summary.status is ExperimentStatus.DECIDED:
            break
    assert summary.status is ExperimentStatus.DECIDED and summary.winner == "arm1"
    control, arm1 = summary.arms
    assert control.decision == "control" and arm1.decision == "promote"
    assert arm1.lower > 0 and arm1.lift == pytest.approx(1.0, abs=0.4)
    assert arm1.persons == arm1.exposed > 0 and arm1.conversions > 50 and arm1.value_per_dollar > 0
    assert exp.expose("late", START + 2, set()) is None  # decided: the caller serves the winner


def test_clearly_worse_arm_rolled_back_and_its_persons_get_control() -> None:
    rng = np.random.default_rng(1)
    exp = Experiment(_cfg((1.0, 1.0, 1.0), test=SequentialConfig(min_persons=500, min_conversions=50)))
    mult = {"arm0": 1.0, "arm1": 0.3, "arm2": 1.0}
    for _ in range(10):
        _run(exp, rng, 3000, {a: 0.1 for a in mult}, mult)
        summary = exp.evaluate(START + 1)
        if summary.arms[1].decision == "rollback":
            break
    assert summary.arms[1].decision == "rollback" and summary.arms[1].upper < 0
    assert summary.status is ExperimentStatus.RUNNING and summary.winner is None  # arm2 still open
    assert all(exp.assign(f"q{i}").name != "arm1" for i in range(2000))


def test_aa_experiment_rarely_decides() -> None:
    rng = np.random.default_rng(2)
    decided = 0
    for k in range(10):
        exp = Experiment(_cfg(exp_id=f"aa-{k}", test=SequentialConfig(min_persons=500, min_conversions=50)))
        for _ in range(10):
            _run(exp, rng, 1000, {"arm0": 0.1, "arm1": 0.1}, {"arm0": 1.0, "arm1": 1.0})
            exp.evaluate(START + 1)
        decided += exp.decisions[1] != "hold"
    assert decided <= 2


def test_unknown_arm_refused() -> None:
    with pytest.raises(ValueError, match="no arm 'nope'"):
        Experiment(_cfg()).observe("nope", 1.0, 1.0)


@pytest.mark.parametrize(("weights", "start", "stop", "key"), [
    ((1.0, -1.0), START, STOP, "weight"),
    ((0.0, 0.0), START, STOP, "arms.weight"),
    ((0.0, 1.0), START, STOP, "arms[0].weight"),
    ((1.0, 1.0), START, START, "stop_ms"),
    ((1.0, 1.0), STOP, START, "stop_ms"),
    ((1.0,), START, STOP, "arms"),
])
def test_bad_experiment_raises_value_error_naming_the_field(weights: tuple[float, ...], start: int, stop: int,
                                                            key: str) -> None:
    with pytest.raises(ValueError) as err:
        arms = tuple(ArmConfig(f"arm{i}", (f"c{i}",), w) for i, w in enumerate(weights))
        ExperimentConfig("bad", arms, start, stop)
    assert isinstance(err.value, ExperimentConfigError) and key in err.value.key


def test_duplicate_ids_and_arm_names_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        ExperimentConfig("x", (ArmConfig("a", ("c",)), ArmConfig("a", ("d",))), START, STOP)
    with pytest.raises(ValueError, match="unique"):
        ExperimentsConfig(experiments=(_cfg(exp_id="x"), _cfg(exp_id="x")))


def test_toml_experiments_load_with_keyed_errors() -> None:
    data = {"experiments": [{"id": "hero", "start_ms": START, "stop_ms": STOP,
                             "arms": [{"name": "old", "creatives": ["c1"]},
                                      {"name": "new", "creatives": ["c2", "c3"], "weight": 3}]}]}
    cfg = load_experiments(data)
    assert cfg.experiments[0].shares == (0.25, 0.75) and cfg.experiments[0].arms[1].creatives == ("c2", "c3")
    data["experiments"][0]["stop_ms"] = START - 1
    with pytest.raises(ConfigError) as err:
        load_experiments(data)
    assert err.value.key == "experiments[0].stop_ms"
