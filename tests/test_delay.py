"""Delayed-conversion model: gradients, queries, the online learner, and unbiasedness vs the naive rate."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.delay import (
    DelayedConversionModel,
    DelayedFeedbackLearner,
    DelayModelConfig,
    delayed_feedback_stream,
)
from agent_service.errors import ConfigError, DecodeError, ModelError
from agent_service.units import DAY_MS, DAY_S


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    m = DelayedConversionModel(3, DelayModelConfig(l2=0.01))
    n = 50
    x = np.hstack([rng.normal(size=(n, 3)), np.ones((n, 1))])
    y = rng.random(n) < 0.4
    e = rng.uniform(0, 14, n)
    d = np.where(y, rng.uniform(0, 1, n) * e, 0.0)
    theta = rng.normal(0, 0.5, 8)
    _, grad = m._loss_grad(theta, x, y, e, d)
    eps = 1e-6
    for i in range(theta.shape[0]):
        up, down = theta.copy(), theta.copy()
        up[i] += eps
        down[i] -= eps
        num = (m._loss_grad(up, x, y, e, d)[0] - m._loss_grad(down, x, y, e, d)[0]) / (2 * eps)
        assert grad[i] == pytest.approx(num, rel=1e-4, abs=1e-7)


def test_queries_are_consistent() -> None:
    m = DelayedConversionModel(2)
    m.w = np.array([0.5, -0.2, -1.0])
    m.v = np.array([0.1, 0.3, -0.5])
    x = np.array([0.3, -1.2])
    p = m.p_eventual(x)
    lam = m.rate_per_s(x)
    assert isinstance(p, float) and 0 < p < 1
    assert m.p_convert_by(x, 0.0) == 0.0
    assert m.p_convert_by(x, 1e12) == pytest.approx(p)
    assert m.p_convert_by(x, 3 * DAY_S) == pytest.approx(p * (1 - np.exp(-lam * 3 * DAY_S)))
    assert m.expected_value_pending(x, 0.0) == pytest.approx(p)
    pend = [m.expected_value_pending(x, t * DAY_S) for t in (0, 1, 3, 7, 14)]
    assert all(a > b for a, b in zip(pend, pend[1:], strict=False))
    assert m.expected_value_pending(x, 14 * DAY_S, horizon_s=14 * DAY_S) == 0.0
    # Bayes: P(convert in (e, h] | pending at e) = (F(h) - F(e)) / (1 - F(e))
    e, h = 2 * DAY_S, 14 * DAY_S
    want = (m.p_convert_by(x, h) - m.p_convert_by(x, e)) / (1 - m.p_convert_by(x, e))
    assert m.expected_value_pending(x, e, horizon_s=h) == pytest.approx(want)
    batch = m.p_eventual(np.vstack([x, x]))
    assert batch.shape == (2,) and batch[0] == pytest.approx(p)


def test_bad_inputs_raise() -> None:
    m = DelayedConversionModel(2)
    with pytest.raises(ModelError):
        m.p_eventual(np.zeros(3))
    with pytest.raises(ModelError, match="delay_s"):
        m.observe(np.zeros(2), DAY_S, True, None)
    with pytest.raises(ModelError, match="elapsed_s"):
        m.observe(np.zeros(2), -1.0, False)
    with pytest.raises(ModelError):
        m.load_state_dict({**m.state_dict(), "w": np.array([np.nan, 0, 0])})
    with pytest.raises(ConfigError, match="delay.prior_rate"):
        DelayModelConfig(prior_rate=1.0)
    with pytest.raises(DecodeError, match="features"):
        DelayedFeedbackLearner(m).add_touch("k", np.zeros(5), 0)


def test_state_dict_round_trip_and_online_step_is_deterministic() -> None:
    a = DelayedConversionModel(2, DelayModelConfig(seed=3))
    b = DelayedConversionModel(2, DelayModelConfig(seed=3))
    for m in (a, b):
        m.observe(np.array([1.0, 0.0]), 2 * DAY_S, True, 0.5 * DAY_S)
        m.observe(np.array([0.0, 1.0]), 2 * DAY_S, False)
    assert np.array_equal(a.w, b.w) and np.array_equal(a.v, b.v)
    c = DelayedConversionModel(2)
    c.load_state_dict(a.state_dict())
    assert c.p_eventual(np.array([0.2, 0.1])) == a.p_eventual(np.array([0.2, 0.1]))


def test_learner_join_rules() -> None:
    cfg = DelayModelConfig(buffer_size=3, window_days=14)
    learner = DelayedFeedbackLearner(DelayedConversionModel(1, cfg))
    learner.add_touch("a", np.array([0.0]), 0)
    learner.add_touch("a", np.array([9.0]), 5)  # idempotent
    assert learner.add_conversion("a", 2 * DAY_MS)
    assert learner.add_conversion("a", 3 * DAY_MS)  # later redelivery: first conversion kept
    assert not learner.add_conversion("nope", DAY_MS)
    learner.add_touch("b", np.array([1.0]), DAY_MS)
    assert not learner.add_conversion("b", DAY_MS + 15 * DAY_MS)  # outside the window
    x, e, y, d = learner.labels(now_ms=20 * DAY_MS)
    assert x[:, 0].tolist() == [0.0, 1.0] and y.tolist() == [True, False]
    assert d[0] == 2 * DAY_S and e.tolist() == [14 * DAY_S, 14 * DAY_S]  # elapsed capped at the window
    x, e, y, d = learner.labels(now_ms=DAY_MS)  # the conversion is not known yet at day 1
    assert y.tolist() == [False, False] and e.tolist() == [DAY_S, 0.0]
    learner.add_touch("c", np.array([2.0]), 2 * DAY_MS)
    learner.add_touch("d", np.array([3.0]), 3 * DAY_MS)  # evicts "a"
    assert len(learner) == 3 and not learner.add_conversion("a", 4 * DAY_MS)


def _online_run(seed: int, n: int = 20_000, days: int = 42, delay: str = "exponential"):
    """Replay a synthetic stream in event time: daily touches, joined conversions, 40 steps a day."""
    stream = delayed_feedback_stream(n, days, seed, delay=delay)
    cfg = DelayModelConfig(seed=seed)
    model = DelayedConversionModel(stream.features.shape[1], cfg)
    learner = DelayedFeedbackLearner(model)
    window_ms = int(cfg.window_s * 1000)
    joined = stream.converts & (stream.delay_ms <= window_ms)
    conv_time = np.where(joined, stream.time_ms + stream.delay_ms, -1)
    by_time = np.flatnonzero(joined)[np.argsort(conv_time[joined])]
    ti = ci = 0
    for day in range(1, days + 1):
        now = day * DAY_MS
        while ti < n and stream.time_ms[ti] <= now:
            learner.add_touch(str(ti), stream.features[ti], int(stream.time_ms[ti]))
            ti += 1
        while ci < by_time.shape[0] and conv_time[by_time[ci]] <= now:
            learner.add_conversion(str(by_time[ci]), int(conv_time[by_time[ci]]))
            ci += 1
        learner.step(now, steps=40)
    now = days * DAY_MS
    recent = stream.time_ms > now - window_ms  # touches whose window is still open
    truth = joined[recent].mean()
    naive = stream.converted_by(now, window_ms)[recent].mean()
    estimate = float(np.mean(model.p_convert_by(stream.features[recent], cfg.window_s)))
    pending = recent & ~stream.converted_by(now, window_ms)
    elapsed_s = (now - stream.time_ms[pending]) / 1000.0
    pending_pred = float(np.mean(model.expected_value_pending(stream.features[pending], elapsed_s, cfg.window_s)))
    pending_true = joined[pending].mean()
    return truth, naive, estimate, pending_true, pending_pred


def test_online_model_is_unbiased_where_naive_is_biased_low() -> None:
    runs = np.array([_online_run(seed) for seed in range(5)])
    truth, naive, est, pend_true, pend_pred = runs.T
    bias_model = est - truth
    bias_naive = naive - truth
    se_model = bias_model.std(ddof=1) / np.sqrt(len(runs))
    se_naive = bias_naive.std(ddof=1) / np.sqrt(len(runs))
    # Naive: clearly low (many SEs below 0, over 10% of the rate).
    assert bias_naive.mean() < -5 * se_naive and bias_naive.mean() < -0.1 * truth.mean()
    # Model: its mean bias is within a 99% interval of zero and small.
    assert abs(bias_model.mean()) < 4.6 * max(se_model, 1e-4)
    assert abs(bias_model.mean()) < 0.05 * truth.mean()
    # A pending touch's chance to still convert is calibrated too.
    assert pend_pred.mean() == pytest.approx(pend_true.mean(), rel=0.15)


def test_full_batch_fit_recovers_rare_conversion_rates() -> None:
    """Rare conversions (0.5 % vs 5 % by one binary feature): the full-batch fit of every
    buffered label reaches the likelihood's optimum, at least as good as the minibatch steps'
    weights, and recovers both rates."""
    rng = np.random.default_rng(7)
    n, days = 30_000, 60
    learner = DelayedFeedbackLearner(DelayedConversionModel(1, DelayModelConfig(seed=7)))
    assert np.isnan(learner.fit(0))
    g = rng.random(n) < 0.3
    t = np.sort(rng.integers(0, days * DAY_MS, n))
    converts = rng.random(n) < np.where(g, 0.05, 0.005)
    conv_t = t + (rng.exponential(5.0, n) * DAY_MS).astype(np.int64)
    for i in range(n):
        learner.add_touch(str(i), np.array([float(g[i])]), int(t[i]))
        if converts[i]:
            learner.add_conversion(str(i), int(conv_t[i]))
    now = (days + 20) * DAY_MS  # every window closed: labels are final
    learner.step(now, steps=200)
    x, e, y, d = learner.labels(now)
    stepped = learner.model.fit(x, e, y, d, max_iter=0)  # the loss at the stepped weights
    fitted = learner.fit(now)
    assert fitted <= stepped + 1e-12
    p = learner.model.p_eventual(np.array([[0.0], [1.0]]))
    in_window = conv_t - t <= 14 * DAY_MS
    for grp, est in ((False, p[0]), (True, p[1])):
        truth = (converts & in_window)[g == grp].mean()
        assert est == pytest.approx(truth, rel=0.25)


def test_a_conversion_labels_only_its_last_click() -> None:
    """Multi-touch credit names several clicks of one conversion: the label goes to the latest
    one, whatever order the credits arrive in; redeliveries and other conversions keep theirs."""
    learner = DelayedFeedbackLearner(DelayedConversionModel(1, DelayModelConfig(buffer_size=4)))
    for key, t in (("a", 0), ("b", DAY_MS), ("c", 2 * DAY_MS)):
        learner.add_touch(key, np.array([0.0]), t)
    conv = 3 * DAY_MS
    assert learner.add_conversion("b", conv, "p1:conv")
    assert learner.add_conversion("c", conv, "p1:conv")  # later click: takes the label over
    assert not learner.add_conversion("a", conv, "p1:conv")  # earlier click: stays unlabelled
    assert learner.add_conversion("c", conv, "p1:conv")  # redelivery
    _, _, y, _ = learner.labels(now_ms=4 * DAY_MS)
    assert y.tolist() == [False, False, True]
    assert learner.add_conversion("a", 5 * DAY_MS, "p2:other")  # another conversion: its own label
    learner.add_touch("d", np.array([0.0]), 3 * DAY_MS)
    learner.add_touch("e", np.array([0.0]), 3 * DAY_MS)  # evicts "a": its conversion id is forgotten
    assert learner.add_conversion("d", 5 * DAY_MS, "p2:other")
    _, _, y, _ = learner.labels(now_ms=6 * DAY_MS)
    assert y.tolist() == [False, False, True, True]  # buffer order: e (in a's slot), b, c, d


def test_shared_delay_rate_keeps_rates_identifiable() -> None:
    """delay_by_features=False: the rate's feature weights stay at 0 through online steps and
    fits, and with bounded (non-exponential) delays and many touches still pending the
    conversion probabilities of two groups are recovered."""
    rng = np.random.default_rng(11)
    n, days = 40_000, 40
    g = rng.random(n) < 0.4
    t = rng.integers(0, days * DAY_MS, n)
    converts = rng.random(n) < np.where(g, 0.06, 0.015)
    conv_t = t + (rng.uniform(0.5, 10.0, n) * DAY_MS).astype(np.int64)
    now = days * DAY_MS
    seen = converts & (conv_t <= now)
    x = np.stack([g.astype(float), rng.normal(size=n)], axis=1)  # the group and a useless feature
    e = (now - t) / 1000.0
    d = np.where(seen, (conv_t - t) / 1000.0, np.nan)
    model = DelayedConversionModel(2, DelayModelConfig(delay_by_features=False, prior_mean_delay_days=5.0))
    for _ in range(5):
        i = rng.integers(0, n, 512)
        model.observe_batch(x[i], e[i], seen[i], d[i])
    model.fit(x, e, seen, d)
    assert model.v[:-1].tolist() == [0.0, 0.0]
    p = model.p_eventual(np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert p[0] == pytest.approx(0.015, rel=0.3) and p[1] == pytest.approx(0.06, rel=0.3)


def test_snapshot_keeps_the_evidence_across_a_restart() -> None:
    """A learner restored from a snapshot (a restart, or a new world after training) fits the
    same model from the frozen labels as the original from its buffer, adds new touches to them,
    and refuses a malformed snapshot."""
    rng = np.random.default_rng(3)
    cfg = DelayModelConfig(delay_by_features=False, seed=3)
    first = DelayedFeedbackLearner(DelayedConversionModel(1, cfg))
    for i in range(3_000):
        g = float(rng.random() < 0.5)
        first.add_touch(str(i), np.array([g]), int(rng.integers(0, 30 * DAY_MS)))
        if rng.random() < 0.02 + 0.06 * g:
            first.add_conversion(str(i), int(first._t[i]) + int(rng.uniform(0.5, 9) * DAY_MS))
    now = 30 * DAY_MS
    snap = first.snapshot(now)
    again = DelayedFeedbackLearner(DelayedConversionModel(1, cfg))
    again.restore(snap)
    assert len(again) == 0 and again.labelled == 3_000
    first.fit(now)
    again.fit(now + 5 * DAY_MS)  # later: the frozen labels stay as they were at the snapshot
    assert np.allclose(first.model.w, again.model.w, atol=1e-4)
    again.add_touch("new", np.array([1.0]), now)
    assert again.labelled == 3_001 and again.labels(now + DAY_MS)[0].shape == (3_001, 1)
    assert again.step(now + DAY_MS, steps=2) > 0
    with pytest.raises(DecodeError):
        again.restore({**snap, "features": np.full((3_000, 1), np.nan)})
