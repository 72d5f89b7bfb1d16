"""The always-valid test on value per dollar: sums, the mixture boundary, A/A error and power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent_service.config.experiments import ExperimentConfigError, SequentialConfig
from agent_service.errors import ConfigError
from agent_service.experiments.sequential import (
    Arm,
    RatioStats,
    SequentialTest,
    Verdict,
    log_ratio_interval,
    mixture_radius,
)


def _persons(rng: np.random.Generator, n: int, conv: float, value_mult: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed persons: spend ~ exponential, most values 0, lognormal when converting."""
    spend = rng.exponential(0.8, n)
    value = (rng.random(n) < conv) * rng.lognormal(3.0, 1.0, n) * value_mult
    return value, spend


def test_sums_add_one_by_one_equal_batch_and_merge() -> None:
    rng = np.random.default_rng(0)
    x, y = _persons(rng, 500, 0.2)
    one, many, merged = RatioStats(), RatioStats(), RatioStats()
    for a, b in zip(x, y, strict=True):
        one.add(float(a), float(b))
    many.add_many(x, y)
    half = RatioStats()
    half.add_many(x[:200], y[:200])
    rest = RatioStats()
    rest.add_many(x[200:], y[200:])
    merged.merge(half)
    merged.merge(rest)
    for s in (many, merged):
        assert s.n == one.n == 500 and s.n_pos == one.n_pos == int((x > 0).sum())
        assert math.isclose(s.log_ratio_var(), one.log_ratio_var(), rel_tol=1e-9)
        assert math.isclose(s.ratio, x.sum() / y.sum(), rel_tol=1e-12)


def test_delta_method_variance_matches_the_bootstrap() -> None:
    rng = np.random.default_rng(1)
    x, y = _persons(rng, 4000, 0.3)
    s = RatioStats()
    s.add_many(x, y)
    idx = rng.integers(0, x.size, (2000, x.size))
    boot = np.log(x[idx].sum(1) / y[idx].sum(1))
    assert s.log_ratio_var() == pytest.approx(boot.var(), rel=0.15)


def test_mixture_radius_is_wider_than_fixed_z_and_shrinks() -> None:
    assert mixture_radius(1e-3, 0.05, 0.1) > 1.96 * math.sqrt(1e-3)
    assert mixture_radius(1e-4, 0.05, 0.1) < mixture_radius(1e-3, 0.05, 0.1)
    assert mixture_radius(math.inf, 0.05, 0.1) == math.inf
    # Λ = sqrt(V/(V+τ²)) exp(τ² r² / (2 V (V+τ²))) equals 1/α on the boundary (the mSPRT's definition).
    v, tau, alpha = 2e-3, 0.1, 0.05
    r = mixture_radius(v, alpha, tau)
    lam = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * r**2 / (2 * v * (v + tau**2)))
    assert lam == pytest.approx(1 / alpha)


def test_interval_undefined_without_value() -> None:
    c, k = RatioStats(), RatioStats()
    c.add(0.0, 1.0)
    k.add(0.0, 1.0)
    iv = log_ratio_interval(c, k, 0.05, 0.1)
    assert math.isnan(iv.estimate) and iv.lower == -math.inf and iv.upper == math.inf
    res = SequentialTest().result()
    assert res.decision is Verdict.HOLD and not res.ready


def _run(rng: np.random.Generator, cfg: SequentialConfig, cand_mult: float, batches: int = 60,
         batch: int = 4000) -> Verdict:
    t = SequentialTest(cfg)
    for _ in range(batches):
        t.observe_many(Arm.CONTROL, *_persons(rng, batch, 0.1))
        t.observe_many(Arm.CANDIDATE, *_persons(rng, batch, 0.1, cand_mult))
        d = t.result().decision
        if d is not Verdict.HOLD:
            return d
    return Verdict.HOLD


def test_aa_wrong_decisions_rare_when_peeking_every_batch() -> None:
    rng = np.random.default_rng(2)
    cfg = SequentialConfig(alpha=0.05, min_conversions=100)
    decisions = [_run(rng, cfg, 1.0, batches=200, batch=1000) for _ in range(40)]
    # alpha is 0.05; 40 runs: 6 wrong decisions has probability < 1 % if the true rate were 0.05.
    assert sum(d is not Verdict.HOLD for d in decisions) <= 6


def test_peeked_fixed_horizon_z_test_would_fail_the_same_check() -> None:
    # The bound above can fail: the naive 1.96 rule on the same data and looks decides far more often.
    rng = np.random.default_rng(2)
    wrong = 0
    for _ in range(40):
        c, k = RatioStats(), RatioStats()
        for _ in range(200):
            c.add_many(*_persons(rng, 1000, 0.1))
            k.add_many(*_persons(rng, 1000, 0.1))
            iv = log_ratio_interval(c, k, 0.05, 0.1)
            if min(c.n_pos, k.n_pos) >= 100 and abs(iv.estimate) > 1.96 * iv.std_err:
                wrong += 1
                break
    assert wrong > 6


def test_clearly_better_promoted_and_clearly_worse_rolled_back() -> None:
    rng = np.random.default_rng(3)
    cfg = SequentialConfig()
    assert _run(rng, cfg, 1.5) is Verdict.PROMOTE
    assert _run(rng, cfg, 0.6) is Verdict.ROLLBACK


def test_no_decision_before_the_minimum_sample() -> None:
    t = SequentialTest(SequentialConfig(min_persons=1000, min_conversions=10))
    for _ in range(500):  # a huge effect, but fewer persons than min_persons
        t.observe(Arm.CONTROL, 1.0, 1.0)
        t.observe(Arm.CANDIDATE, 100.0, 1.0)
    res = t.result()
    assert res.lower > 0 and res.decision is Verdict.HOLD and not res.ready


def test_rollback_margin_tolerates_a_small_loss() -> None:
    rng = np.random.default_rng(4)
    strict, lenient = SequentialTest(SequentialConfig()), SequentialTest(SequentialConfig(rollback_margin=0.5))
    for _ in range(30):
        for t in (strict, lenient):
            t.observe_many(Arm.CONTROL, *_persons(rng, 4000, 0.2))
            t.observe_many(Arm.CANDIDATE, *_persons(rng, 4000, 0.2, 0.8))
    assert strict.result().decision is Verdict.ROLLBACK
    assert lenient.result().decision is Verdict.HOLD  # -20 % is inside a 50 % margin


def test_negative_inputs_refused() -> None:
    with pytest.raises(ValueError):
        SequentialTest().observe(Arm.CONTROL, -1.0, 1.0)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"mixture_sd": 0.0}, "mixture_sd"),
    ({"min_persons": 1}, "min_persons"), ({"min_conversions": 0}, "min_conversions"),
    ({"rollback_margin": -0.1}, "rollback_margin"),
])
def test_bad_config_names_the_field(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key) as err:
        SequentialConfig(**kwargs)
    assert isinstance(err.value, ExperimentConfigError | ConfigError) and err.value.key == key
