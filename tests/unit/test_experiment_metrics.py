"""Metrics.record_*: the canary, experiment and OPE gauges the dashboard and the alerts read."""

from __future__ import annotations

import numpy as np

from agent_service.config.experiments import ArmConfig, CanaryConfig, ExperimentConfig, SequentialConfig
from agent_service.evaluation.ope import Estimate
from agent_service.evaluation.ope_log import OPEReport, ValidationReport
from agent_service.experiments.ab import Experiment, ExperimentStatus
from agent_service.experiments.canary import Canary, CanaryState
from agent_service.experiments.sequential import Arm, Verdict
from agent_service.metrics import (
    ARM_DECISIONS,
    CANARY_EVENT_KINDS,
    CANARY_STATES,
    EXPERIMENT_STATUSES,
    Metrics,
)

TEST = SequentialConfig(min_persons=100, min_conversions=20)


def test_label_values_follow_the_domain_enums() -> None:
    assert set(CANARY_STATES) == {str(s) for s in CanaryState}
    assert set(EXPERIMENT_STATUSES) == {str(s) for s in ExperimentStatus}
    assert set(ARM_DECISIONS) == {"control"} | {str(d) for d in Verdict}


def test_a_rolled_back_canary() -> None:
    m = Metrics()
    get = m.registry.get_sample_value
    canary = Canary("c1", CanaryConfig(share=0.1, test=TEST, max_persons=10_000))
    m.record_canary(canary.start(0))
    # Every kind exists from the start at 0, so that increase() over the rollback sees 0 -> 1.
    assert {k: get("gaelp_canary_events_total", {"experiment": "c1", "kind": k}) for k in CANARY_EVENT_KINDS} == {
        k: float(k == "started") for k in CANARY_EVENT_KINDS}
    rng = np.random.default_rng(0)
    n = 2000
    for arm, mult in ((Arm.CONTROL, 1.0), (Arm.CANDIDATE, 0.5)):
        conv = rng.random(n) < 0.2
        canary.observe_many(arm, np.where(conv, rng.lognormal(2, 0.5, n) * mult, 0.0), rng.exponential(1.0, n))
    for event in canary.evaluate(3_600_000):
        m.record_canary(event)
    assert canary.state is CanaryState.ROLLED_BACK
    assert get("gaelp_canary_events_total", {"experiment": "c1", "kind": "rolled_back"}) == 1
    assert get("gaelp_canary_events_total", {"experiment": "c1", "kind": "evaluated"}) == 1
    states = {s: get("gaelp_canary_state", {"experiment": "c1", "state": s}) for s in CANARY_STATES}
    assert states == {s: float(s == "rolled_back") for s in CANARY_STATES}
    assert get("gaelp_canary_share", {"experiment": "c1"}) == 0.0
    upper = get("gaelp_canary_lift_upper", {"experiment": "c1"})
    assert upper is not None and upper < 0
    assert get("gaelp_canary_persons", {"experiment": "c1", "arm": "candidate"}) == n


def test_experiment_exposures_and_estimates() -> None:
    m = Metrics()
    get = m.registry.get_sample_value
    arms = (ArmConfig("control", ("c1",)), ArmConfig("bold", ("c2",)))
    exp = Experiment(ExperimentConfig("e1", arms, 0, 10**12, test=TEST))
    m.record_experiment(exp.evaluate(1))
    assert get("gaelp_experiment_exposures_total", {"experiment": "e1", "arm": "bold"}) == 0
    assert get("gaelp_experiment_lift", {"experiment": "e1", "arm": "control"}) is None  # no lift for the control
    seen: set[str] = set()
    for i in range(300):
        for _ in range(2):  # the second exposure of a person is not counted
            e = exp.expose(f"p{i}", 5, seen)
            assert e is not None
            m.record_exposure(e)
            seen.add(f"e1:p{i}")
    exposed = [get("gaelp_experiment_exposures_total", {"experiment": "e1", "arm": a}) for a in ("control", "bold")]
    assert sum(exposed) == 300 and exposed == [float(x) for x in exp.exposed]
    summary = exp.evaluate(10)
    m.record_experiment(summary)
    assert get("gaelp_experiment_status", {"experiment": "e1", "status": "running"}) == 1
    assert get("gaelp_experiment_status", {"experiment": "e1", "status": "decided"}) == 0
    assert get("gaelp_experiment_arm_decision", {"experiment": "e1", "arm": "bold", "decision": "hold"}) == 1
    assert get("gaelp_experiment_arm_decision", {"experiment": "e1", "arm": "control", "decision": "control"}) == 1
    stamp = get("gaelp_experiment_last_evaluation_timestamp_seconds", {"experiment": "e1"})
    assert stamp is not None and stamp > 1.7e9  # wall clock, for the not-evaluated alert


def _estimate(name: str, value: float, ess: float) -> Estimate:
    return Estimate(name, value, value - 0.1, value + 0.1, "normal", 1000, ess, 5.0, 1.0, False)


def test_ope_values_intervals_and_refusals() -> None:
    m = Metrics()
    get = m.registry.get_sample_value
    first = OPEReport("7", {"ips": _estimate("ips", 1.0, 400.0), "dr": _estimate("dr", 1.2, 400.0)},
                      ValidationReport(1100, 1000, {"no_propensity": 60, "unknown_version": 40}, {}, "closed", None))
    m.record_ope(first, live_value=0.9)
    assert get("gaelp_ope_value", {"estimator": "dr"}) == 1.2
    assert get("gaelp_ope_value_lower", {"estimator": "dr"}) == 1.2 - 0.1
    assert get("gaelp_ope_effective_sample_size", {"estimator": "ips"}) == 400.0
    assert get("gaelp_ope_live_value") == 0.9 and get("gaelp_ope_used_records") == 1000
    assert get("gaelp_ope_refused_records", {"reason": "no_propensity"}) == 60
    second = OPEReport("7", {"ips": _estimate("ips", 1.0, 50.0)},
                       ValidationReport(1000, 990, {"unknown_version": 10}, {}, "closed", None))
    m.record_ope(second, live_value=0.9)
    # A reason with no refusals this time is gone, not left at its old count.
    assert get("gaelp_ope_refused_records", {"reason": "no_propensity"}) is None
    assert get("gaelp_ope_refused_records", {"reason": "unknown_version"}) == 10
    assert get("gaelp_ope_effective_sample_size", {"estimator": "ips"}) == 50.0
    assert get("gaelp_ope_evaluations_total") == 2
