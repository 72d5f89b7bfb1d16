"""Off-policy estimators (evaluation/ope.py), the log's validation and windows (evaluation/ope_log.py),
the OBD reader and the bid-multiplier simulator; a comparison with obp when its throwaway venv exists."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent_service.evaluation.obd import find_obd_dir, load_obd
from agent_service.evaluation.ope import (
    cell_mean_rewards,
    direct_method,
    doubly_robust,
    importance_weights,
    ips,
    kish_ess,
    snips,
    switch_dr,
)
from agent_service.evaluation.ope_log import (
    WINDOW_MS,
    JoinedOutcome,
    LoggedDecision,
    build_feedback,
    evaluate,
    refusals,
)
from agent_service.units import DAY_MS
from simulators.bid_bandit import BidBandit

ROOT = Path(__file__).resolve().parents[2]
OBP_VENV = Path(os.environ.get("GAELP_OBP_VENV", "/tmp/obpvenv"))

# A hand-checkable log: 4 records, 2 actions, one position.
R = np.array([1.0, 0.0, 2.0, 1.0])
A = np.array([0, 1, 1, 0])
P = np.array([0.5, 0.25, 0.5, 0.8])
PI = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.25, 0.75]])  # candidate π_e(a | x_i)
Q = np.array([[0.5, 1.0], [0.0, 0.5], [1.0, 1.0], [2.0, 0.0]])  # q̂(x_i, a)
W = np.array([2.0, 2.0, 2.0, 0.3125])  # π_e(a_i|x_i) / p_i


def test_estimators_on_a_hand_computed_case() -> None:
    assert importance_weights(A, P, PI) == pytest.approx(W)
    assert ips(R, A, P, PI).value == pytest.approx((2 + 0 + 4 + 0.3125) / 4)
    assert snips(R, A, P, PI).value == pytest.approx(6.3125 / 6.3125)
    dm = np.array([0.5, 0.25, 1.0, 0.5])  # sum_a π_e q̂
    assert direct_method(R, A, P, PI, Q).value == pytest.approx(dm.mean())
    corr = W * (R - np.array([0.5, 0.5, 1.0, 2.0]))  # w (r - q̂(x, a_i))
    assert doubly_robust(R, A, P, PI, Q).value == pytest.approx((dm + corr).mean())
    # Switch-DR drops the correction where w > tau: here the three records with w = 2
    assert switch_dr(R, A, P, PI, Q, tau=1.0).value == pytest.approx((dm + np.where(W <= 1, corr, 0)).mean())
    assert switch_dr(R, A, P, PI, Q, tau=0.0).value == pytest.approx(dm.mean())
    assert ips(R, A, P, PI, clip=1.0).value == pytest.approx((1 + 0 + 2 + 0.3125) / 4)
    # a 1-d action_dist is π_e of the logged action: same IPS
    assert ips(R, None, P, PI[np.arange(4), A]).value == pytest.approx(ips(R, A, P, PI).value)
    assert kish_ess(W) == pytest.approx(W.sum() ** 2 / (W**2).sum())
    assert kish_ess(np.ones(7)) == pytest.approx(7)


def test_on_policy_ips_is_the_mean_reward() -> None:
    rng = np.random.default_rng(3)
    n, k = 5000, 4
    logger = rng.dirichlet(np.ones(k), size=n)
    action = (rng.random(n)[:, None] > np.cumsum(logger, axis=1)).sum(axis=1)
    pscore = logger[np.arange(n), action]
    reward = rng.random(n) < 0.1 + 0.2 * action / k
    for est in (ips(reward, action, pscore, logger), snips(reward, action, pscore, logger)):
        assert est.value == pytest.approx(reward.mean(), abs=1e-12)
        assert est.ess == pytest.approx(n) and not est.poor_support
    q = np.full((n, k), 0.3)
    assert doubly_robust(reward, action, pscore, logger, q).value == pytest.approx(reward.mean(), abs=1e-12)


def test_snips_ignores_a_scale_of_the_weights_ips_does_not() -> None:
    rng = np.random.default_rng(4)
    n = 300
    r, p, pi = rng.random(n), rng.uniform(0.2, 1.0, n), rng.uniform(0.0, 0.2, n)
    a, b = snips(r, None, p, pi), snips(r, None, p / 2, pi)  # every weight doubled
    assert b.value == pytest.approx(a.value, rel=1e-12)
    assert (b.ci_low, b.ci_high) == pytest.approx((a.ci_low, a.ci_high), rel=1e-9)
    assert ips(r, None, p / 2, pi).value == pytest.approx(2 * ips(r, None, p, pi).value)


def test_bad_arrays_are_rejected_not_used() -> None:
    with pytest.raises(ValueError, match="pscore"):
        ips(R, A, np.array([0.5, 0.0, 0.5, 0.8]), PI)
    with pytest.raises(ValueError, match="pscore"):
        ips(R, A, np.array([0.5, np.nan, 0.5, 0.8]), PI)
    with pytest.raises(ValueError, match="sum to 1"):
        ips(R, A, P, PI * 0.9)
    with pytest.raises(ValueError, match="shape"):
        doubly_robust(R, A, P, PI, Q[:, :1])


def test_records_are_refused_with_counts_by_reason() -> None:
    ok, counts = refusals([0.5, np.nan, 0.0, 1.2, 0.3, 0.4, 1.0], [1, 1, 1, 1, 9, -1, 1], {1, 2},
                          action=[0, 0, 0, 0, 0, 0, 5], n_actions=3)
    assert ok.tolist() == [True, False, False, False, False, False, False]
    assert counts == {"missing_propensity": 1, "propensity_out_of_range": 2, "unknown_model_version": 2,
                      "invalid_action": 1}
    t0 = 1_000_000
    decisions = [LoggedDecision("good", t0, 1, 0.5, 1), LoggedDecision("nop", t0, 1, None, 1),
                 LoggedDecision("zero", t0, 1, 0.0, 1), LoggedDecision("big", t0, 1, 1.5, 1),
                 LoggedDecision("old", t0, 1, 0.5, 7), LoggedDecision("nov", t0, 1, 0.5, None)]
    outcomes = {d.decision_id: JoinedOutcome(d.decision_id, 1.0, True, t0 + WINDOW_MS) for d in decisions}
    fb = build_feedback(decisions, outcomes, known_versions={1}, as_of_ms=t0 + WINDOW_MS, n_actions=3)
    assert fb.decision_ids == ("good",)
    assert fb.report.refused == {"missing_propensity": 1, "propensity_out_of_range": 2, "unknown_model_version": 2}
    assert fb.report.n_refused == 5 and fb.report.n_used == 1
    assert "refused" in fb.report.summary()


def test_only_closed_windows_unless_the_delay_correction_is_asked_for() -> None:
    decisions = [LoggedDecision(f"d{i}", i * DAY_MS, 0, 0.5, 1) for i in range(20)]
    as_of = 20 * DAY_MS  # decisions of days 0..6 have closed windows (t + 14 d <= as_of)
    outcomes = {f"d{i}": JoinedOutcome(f"d{i}", 1.0, i <= 6, i * DAY_MS + WINDOW_MS, pending_estimate=0.0 if i <= 6
                                       else 0.5) for i in range(20) if i != 3}
    outcomes["d3"] = JoinedOutcome("d3", 0.0, False, 3 * DAY_MS + WINDOW_MS)  # closed, but never finalised
    closed = build_feedback(decisions, outcomes, known_versions={1}, as_of_ms=as_of, n_actions=2)
    assert closed.report.reward_mode == "closed_windows"
    assert closed.decision_ids == tuple(f"d{i}" for i in (0, 1, 2, 4, 5, 6))
    assert closed.report.deferred == {"window_open": 13, "window_closed_without_final_outcome": 1}
    corrected = build_feedback(decisions, outcomes, known_versions={1}, as_of_ms=as_of, n_actions=2,
                               mode="delay_corrected")
    assert corrected.report.reward_mode == "delay_corrected" and corrected.report.n_used == 20
    assert corrected.reward[corrected.decision_ids.index("d10")] == pytest.approx(1.5)  # realised + pending
    late = build_feedback(decisions, outcomes, known_versions={1}, as_of_ms=5 * DAY_MS, n_actions=2)
    assert late.report.deferred["decided_after_as_of"] == 14 and late.report.n_used == 0
    assert evaluate(late, np.ones((0, 2)) / 2, candidate="c").estimates == {}


def test_dr_is_unbiased_with_a_wrong_reward_model_dm_is_not() -> None:
    rng = np.random.default_rng(11)
    n, reps = 2000, 200
    true_q = np.array([[0.2, 0.5, 0.8], [0.6, 0.3, 0.1]])  # two contexts
    logger = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    target = np.array([[0.0, 0.2, 0.8], [0.9, 0.1, 0.0]])
    truth = 0.5 * (target * true_q).sum()
    wrong_q = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    dr, dm = [], []
    for _ in range(reps):
        x = rng.integers(0, 2, n)
        a = (rng.random(n)[:, None] > np.cumsum(logger[x], axis=1)).sum(axis=1)
        r = (rng.random(n) < true_q[x, a]).astype(float)
        dr.append(doubly_robust(r, a, logger[x, a], target[x], wrong_q[x], ci="normal").value)
        dm.append(direct_method(r, a, logger[x, a], target[x], wrong_q[x], ci="normal").value)
    se = np.std(dr) / math.sqrt(reps)
    assert abs(np.mean(dr) - truth) < 4 * se + 1e-3
    assert abs(np.mean(dm) - truth) > 0.1  # the wrong model alone is off by 0.5 - truth


@pytest.mark.parametrize("ci", ["bootstrap", "normal", "bernstein"])
def test_interval_covers_the_truth_on_an_easy_case(ci: str) -> None:
    rng = np.random.default_rng(5)
    n, p_true = 4000, 0.3
    pscore = np.full(n, 0.5)
    action = rng.integers(0, 2, n)
    reward = (rng.random(n) < p_true).astype(float)  # reward independent of the action
    target = np.tile([0.7, 0.3], (n, 1))
    e = ips(reward, action, pscore, target, ci=ci, value_range=2.0 if ci == "bernstein" else None)  # type: ignore[arg-type]
    assert e.covers(p_true) and e.ci_low < e.value < e.ci_high
    assert e.ci_high - e.ci_low < 0.2
    again = ips(reward, action, pscore, target, ci=ci, value_range=2.0 if ci == "bernstein" else None)  # type: ignore[arg-type]
    assert (again.ci_low, again.ci_high) == (e.ci_low, e.ci_high)  # seeded


def test_poor_support_is_flagged() -> None:
    rng = np.random.default_rng(6)
    n = 2000
    logger = np.array([0.998, 0.001, 0.001])
    action = rng.choice(3, size=n, p=logger)
    target = np.tile([0.0, 1.0, 0.0], (n, 1))  # the candidate takes an action the logger (almost) never does
    e = ips(rng.random(n), action, logger[action], target)
    assert e.poor_support and any("effective sample size" in w or "mean weight" in w for w in e.warnings)


def test_cross_fitted_reward_model_does_not_see_the_record_itself() -> None:
    rng = np.random.default_rng(8)
    n = 400
    cell, action, reward = rng.integers(0, 4, n), rng.integers(0, 3, n), rng.random(n)
    q = cell_mean_rewards(cell, action, reward, 4, 3, folds=2, seed=1)
    bumped = reward.copy()
    bumped[0] += 100.0
    q2 = cell_mean_rewards(cell, action, bumped, 4, 3, folds=2, seed=1)
    assert np.array_equal(q[0], q2[0])  # record 0's estimates come from the other fold
    assert not np.array_equal(q, q2)


def test_bid_bandit_exact_values_match_monte_carlo() -> None:
    world = BidBandit()
    log = world.log(200_000, seed=2)
    # the logging policy's exact value against its realised mean reward
    sd = float(log.reward.std()) / math.sqrt(log.reward.shape[0])
    assert abs(float(log.reward.mean()) - world.value(world.logging_policy)) < 4 * sd
    assert np.allclose(world.logging_policy.sum(axis=1), 1.0) and world.logging_policy.min() >= world.log_eps / 8
    assert len(world.candidates()) == 5


# ---------------------------------------------------------------------------- against obp, when available
def _obp_python() -> str | None:
    py = OBP_VENV / "bin" / "python"
    if not py.exists():
        return None
    return str(py) if subprocess.run([str(py), "-c", "import obp"], capture_output=True).returncode == 0 else None


@pytest.mark.skipif(_obp_python() is None, reason=f"no obp venv at {OBP_VENV} (set GAELP_OBP_VENV, or build it "
                    "with `python bench/bench_ope.py --setup-obp`): obp pins torch 1.12 and is kept out of our venv")
def test_equal_to_obp_on_the_same_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    n, k, L = 3000, 6, 2
    logger = rng.dirichlet(np.ones(k), size=n)
    action = (rng.random(n)[:, None] > np.cumsum(logger, axis=1)).sum(axis=1)
    position = rng.integers(0, L, n)
    reward = (rng.random(n) < 0.2).astype(float)
    dist = rng.dirichlet(np.ones(k), size=(n, L)).transpose(0, 2, 1)
    q = rng.random((n, k, L))
    pscore = logger[np.arange(n), action]
    np.savez(tmp_path / "in.npz", reward=reward, action=action, pscore=pscore, position=position, action_dist=dist,
             q_hat=q, tau=np.array(3.0))
    py = _obp_python()
    assert py is not None
    subprocess.run([py, str(ROOT / "bench" / "obp_reference.py"), "estimate", str(tmp_path / "in.npz"),
                    str(tmp_path / "out.json")], check=True, capture_output=True)
    theirs = json.loads((tmp_path / "out.json").read_text())
    ours = {"ips": ips(reward, action, pscore, dist, position).value,
            "snips": snips(reward, action, pscore, dist, position).value,
            "dm": direct_method(reward, action, pscore, dist, q, position).value,
            "dr": doubly_robust(reward, action, pscore, dist, q, position).value,
            "switch-dr": switch_dr(reward, action, pscore, dist, q, position, tau=3.0).value}
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], abs=1e-9), key


@pytest.mark.skipif(find_obd_dir(venv=OBP_VENV) is None, reason=f"the OBD sample ships with obp; none found "
                    f"(set GAELP_OBD_DIR or install obp in {OBP_VENV})")
def test_obd_reader_reads_the_sample() -> None:
    data_dir = find_obd_dir(venv=OBP_VENV)
    assert data_dir is not None
    fb = load_obd(data_dir, "random", "all")
    assert fb.n_rounds == 10_000 and fb.n_actions == 80 and fb.len_list == 3
    assert np.allclose(fb.pscore, 1 / 80) and set(np.unique(fb.reward)) <= {0.0, 1.0}
    uniform = np.full((fb.n_rounds, 80, 3), 1 / 80)
    assert ips(fb.reward, fb.action, fb.pscore, uniform, fb.position).value == pytest.approx(fb.reward.mean())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
