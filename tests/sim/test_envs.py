"""Gymnasium environments: the env checker, a vector-env smoke test, episode ends, autoreset,
determinism, observations equal to the service's state vector and free of ground truth."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from simulators.env_core import EnvConfig
from simulators.gym_env import GaelpEnv
from simulators.vector_env import GaelpVectorEnv
from tests.sim.helpers import calibration

_TINY = EnvConfig(persons=300, opportunities_per_day=400, slots_per_day=6, budget_usd=0.5)


def _act(bid: float = 3.0, channel: int = 2, creative: int = 0, target: int = 4) -> dict:
    return {"bid": np.array([bid], dtype=np.float32), "creative": creative, "channel": channel, "target": target}


def test_single_env_passes_the_gymnasium_checker() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's advice to normalise the bid box to [-1, 1]
        check_env(GaelpEnv(_TINY), skip_render_check=True)


def _episode(env: GaelpEnv, bid: float, seed: int | None = None) -> tuple[int, bool, bool, float, list]:
    obs, _ = env.reset(seed=seed)
    steps, total, seen = 0, 0.0, [obs]
    while True:
        obs, r, term, trunc, info = env.step(_act(bid))
        steps += 1
        total += r
        seen.append(obs)
        assert env.observation_space.contains(obs)
        if term or trunc:
            return steps, term, trunc, total, seen


def test_budget_spent_terminates_and_day_end_truncates() -> None:
    cheap = calibration(channels={"social": {"competitor_cpm": 0.4}}, traffic={"floor_cpm": 0.2})
    cfg = EnvConfig(persons=300, opportunities_per_day=400, slots_per_day=6, budget_usd=0.1)
    env = GaelpEnv(cfg, cheap)
    env.reset(seed=1)
    left, steps = cfg.budget_usd, 0
    while True:  # bid everything that is left (capped at $10 CPM) until the budget is gone
        _, _, term, trunc, info = env.step(_act(min(10.0, left * 1000)))
        left, steps = info["budget_left_usd"], steps + 1
        if term or trunc:
            break
    assert term and not trunc and left < 0.0005
    ep = env.core.last_episode[0]
    assert ep is not None and ep.spend_micros <= cfg.budget_usd * 1e6
    assert ep.opportunities.t.size > steps  # the rest of the day was still sampled (for the optimum)
    steps2, term2, trunc2, _, _ = _episode(env, 0.1)  # no bids: the day runs out
    assert trunc2 and not term2 and steps2 == env.core.last_episode[0].opportunities.t.size


def test_reset_with_seed_is_deterministic_and_reset_without_seed_is_the_next_day() -> None:
    env = GaelpEnv(_TINY)
    a = _episode(env, 2.0, seed=7)
    b = _episode(env, 2.0, seed=7)
    assert a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[4], b[4], strict=True))
    day0 = env.core.day_start[0]
    env.reset()
    assert env.core.day_start[0] == day0 + 86_400_000


def test_hindsight_of_a_finished_day() -> None:
    env = GaelpEnv(_TINY)
    _episode(env, 10.0, seed=2)
    res = env.hindsight()
    ep = env.core.last_episode[0]
    assert res.lp_value >= res.value > 0 and res.spend_micros <= _TINY.budget_usd * 1e6
    assert env.hindsight("upper").lp_value >= max(res.lp_value, ep.expected_value_usd)


def test_vector_env_smoke_and_next_step_autoreset() -> None:
    venv = GaelpVectorEnv(4, _TINY)
    obs, info = venv.reset(seed=3)
    assert venv.observation_space.contains(obs) and obs.shape == (4, len(venv.feature_names))
    venv.action_space.seed(0)
    ended = np.zeros(4, dtype=bool)
    for _ in range(600):
        was_done = ended.copy()
        obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
        assert venv.observation_space.contains(obs)
        assert (rew[was_done] == 0).all() and not (term | trunc)[was_done].any()  # the reset step
        assert not info["_won"][was_done].any()
        ended = term | trunc
    assert venv.core.last_episode.count(None) == 0  # every copy finished at least one day
    assert venv.hindsight(0).lp_value >= 0


def test_vector_env_matches_single_env_copies_in_distribution() -> None:
    venv = GaelpVectorEnv(2, _TINY)
    venv.reset(seed=5)
    a = {"bid": np.full((2, 1), 3.0), "creative": np.zeros(2, int), "channel": np.full(2, 2), "target": np.full(2, 4)}
    for _ in range(50):
        venv.step(a)
    t = venv.core.current(np.arange(2)).t
    assert t[0] != t[1]  # independent worlds, not copies of one


def test_ground_truth_never_changes_an_observation() -> None:
    env = GaelpEnv(_TINY)
    env.reset(seed=6)
    rows = env.core.current(np.zeros(1, dtype=np.int64))
    args = (np.zeros(1), np.full(1, 1e6), rows.t - 1000)
    base = env.core.view.observe(rows, *args)
    hidden = rows._replace(person=rows.person + 1, segment=(rows.segment + 1) % 4, stage=(rows.stage + 1) % 3,
                           comp_social=rows.comp_social * 2, comp_search=rows.comp_search * 2,
                           u_click=1 - rows.u_click, u_conv=1 - rows.u_conv, z_value=-rows.z_value,
                           delay_days=rows.delay_days + 1, u_device=1 - rows.u_device)
    assert np.array_equal(env.core.view.observe(hidden, *args), base)
    _, _, _, _, info = env.step(_act())
    assert not any(k.startswith("truth_") for k in info)


def test_truth_in_info_only_on_request_and_ab_variants_override_the_creative() -> None:
    env = GaelpEnv(EnvConfig(persons=300, opportunities_per_day=400, slots_per_day=6, expose_truth=True,
                             ab_variants=(11, 22)))
    env.reset(seed=8)
    arm = int(env.core.current(np.zeros(1, dtype=np.int64)).arm[0])
    _, _, _, _, info = env.step(_act(creative=5))
    assert "truth_segment" in info and "truth_expected_value" in info
    assert info["creative_shown"] == (11, 22)[arm]
    with pytest.raises(Exception, match="ab_variants"):
        GaelpEnv(EnvConfig(ab_variants=(1, 2, 3)))


def test_expected_value_reward_is_dense() -> None:
    env = GaelpEnv(EnvConfig(persons=300, opportunities_per_day=400, slots_per_day=6, reward="expected_value"))
    _, _, _, total, _ = _episode(env, 5.0, seed=9)
    ep = env.core.last_episode[0]
    assert total > 0 and total == pytest.approx(ep.expected_value_usd)


def test_organic_reach_is_capped_per_copy_in_the_vector_env() -> None:
    cal = calibration(channels={"organic": {"offer_by_stage": (1.0, 1.0, 1.0), "reach_share": 0.05}})
    venv = GaelpVectorEnv(3, EnvConfig(persons=300, opportunities_per_day=400, slots_per_day=6), cal)
    venv.reset(seed=1)
    acts = {"bid": np.full((3, 1), 1.0), "creative": np.zeros(3, int), "channel": np.zeros(3, int),
            "target": np.full(3, 4)}
    won, done = np.zeros(3), np.zeros(3, dtype=bool)
    while not done.all():
        _, _, term, trunc, info = venv.step(acts)
        won += info["won"] * ~done
        assert (info["cost_usd"] == 0).all()
        done |= term | trunc
    assert (won == venv.engine.organic_cap).all()
