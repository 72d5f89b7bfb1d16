"""Off-policy estimators: hand-checked, unbiased where they should be, records refused with reasons."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.evaluation.ope import check_records, closed_rewards, dm, dr, ips, snips, switch_dr


def test_hand_checked_small_case() -> None:
    # two rounds, two actions; the logger played a0 (p=0.5) then a1 (p=0.25); the candidate is
    # deterministic on a0. IPS = mean(1/0.5·1, 0) = 1; SNIPS = 2 / mean(w) = 2 / 1 = ... see below.
    reward, action, pscore = np.array([1.0, 1.0]), np.array([0, 1]), np.array([0.5, 0.25])
    ad = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert ips(reward, action, pscore, ad, n_boot=0).value == pytest.approx(1.0)
    assert snips(reward, action, pscore, ad, n_boot=0).value == pytest.approx(1.0)  # w = (2, 0): 2·1 / 2 / mean 1
    q = np.array([[0.4, 0.9], [0.4, 0.9]])
    # DR: Σ π q = 0.4 each round; corrections w(r − q̂(a)) = 2·0.6 and 0 → mean(1.6, 0.4) = 1.0
    assert dr(reward, action, pscore, ad, q, n_boot=0).value == pytest.approx(1.0)
    assert dm(reward, action, pscore, ad, q, n_boot=0).value == pytest.approx(0.4)
    # switch-DR with τ below the weight 2: the model alone
    assert switch_dr(reward, action, pscore, ad, q, tau=1.5, n_boot=0).value == pytest.approx(0.4)


def _logged(n: int, seed: int, k: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, n)
    mean = np.array([[0.1, 0.3, 0.2, 0.05, 0.4], [0.5, 0.1, 0.1, 0.2, 0.1], [0.2, 0.2, 0.6, 0.1, 0.3]])[:, :k]
    logger = rng.dirichlet(np.ones(k) * 2, size=3)[x]  # context-dependent, every action possible
    a = np.array([rng.choice(k, p=p) for p in logger])
    r = (rng.random(n) < mean[x, a]).astype(float)
    cand = np.zeros((n, k))
    cand[np.arange(n), mean[x].argmax(1)] = 0.8
    cand += 0.2 / k
    truth = float((cand * mean[x]).sum(1).mean())
    return r, a, logger[np.arange(n), a], cand, logger, mean[x], truth


def test_on_policy_the_weights_are_one_and_ips_is_the_mean_reward() -> None:
    r, a, ps, _, logger, _, _ = _logged(2000, 1)
    e = ips(r, a, ps, logger, n_boot=0)
    assert e.value == pytest.approx(r.mean()) and e.ess == pytest.approx(2000) and not e.poor_support


def test_snips_ignores_a_constant_factor_on_the_weights() -> None:
    r, a, ps, cand, _, _, _ = _logged(1000, 2)
    base = snips(r, a, ps, cand, n_boot=0).value
    scaled = snips(r, a, np.minimum(ps * 0.5, 1.0), cand, n_boot=0).value  # every weight doubled
    assert scaled == pytest.approx(base, rel=1e-12)


def test_ips_and_dr_are_unbiased_and_their_intervals_cover_the_truth() -> None:
    est = {"ips": [], "dr": [], "dm": []}
    covered = 0
    for seed in range(40):
        r, a, ps, cand, _, mean, truth = _logged(3000, 100 + seed)
        wrong = np.clip(mean + 0.15, 0, 1)  # a biased reward model: DR must correct it, DM cannot
        est["ips"].append(ips(r, a, ps, cand, n_boot=0).value - truth)
        e = dr(r, a, ps, cand, wrong, seed=seed, n_boot=300)
        est["dr"].append(e.value - truth)
        est["dm"].append(dm(r, a, ps, cand, wrong, n_boot=0).value - truth)
        covered += e.ci_low <= truth <= e.ci_high
    assert abs(np.mean(est["ips"])) < 0.01 and abs(np.mean(est["dr"])) < 0.01
    assert np.mean(est["dm"]) > 0.1  # the model's bias, uncorrected
    assert covered >= 34  # 95 % intervals: at least 85 % of 40 (binomial slack; 92 of 100 seeds measured)


def test_poor_support_is_flagged() -> None:
    r, a, ps, _, logger, _, _ = _logged(500, 3)
    never = np.zeros_like(logger)
    never[:, 0] = 1.0
    a2 = np.where(a == 0, 1, a)  # the log never shows action 0, the candidate plays only it
    assert ips(r, a2, ps, never, n_boot=0).poor_support


def test_records_without_a_valid_propensity_or_version_are_refused_with_reasons() -> None:
    recs = [{"propensity": 0.5, "model_version": 3}, {"propensity": None, "model_version": 3},
            {"model_version": 3}, {"propensity": 0.0, "model_version": 3}, {"propensity": 1.5, "model_version": 3},
            {"propensity": float("nan"), "model_version": 3}, {"propensity": 0.2, "model_version": 9}]
    check = check_records(recs, versions={3})
    assert check.keep.tolist() == [True] + [False] * 6
    assert check.refused == {"missing_propensity": 3, "propensity_out_of_range": 2, "unknown_version": 1}
    with pytest.raises(ValueError, match="pscore"):
        ips([1.0], [0], [0.0], [[1.0]])


def test_only_closed_windows_count() -> None:
    keep, how = closed_rewards(np.array([0, 5, 10]), as_of_ms=14, window_ms=5)
    assert keep.tolist() == [True, True, False] and "2 of 3" in how
