"""The hindsight optimum: hand-checked small cases, exact vs brute force, LP as an upper bound."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_service.units import DAY_MS
from simulators.batches import EngineConfig
from simulators.calibration import load_calibration
from simulators.engine import Engine
from simulators.hindsight import Options, dual_bound, episode_options, hindsight_optimum
from tests.sim.helpers import actions


def _opts(values: list[list[float]], costs: list[list[int]], organic: bool = False) -> Options:
    v = np.zeros((len(values), 12))
    c = np.zeros((len(values), 12), dtype=np.int64)
    ok = np.zeros((len(values), 12), dtype=bool)
    for i, (vs, cs) in enumerate(zip(values, costs, strict=True)):
        start = 0 if organic else 1
        v[i, start:start + len(vs)], c[i, start:start + len(cs)], ok[i, start:start + len(vs)] = vs, cs, True
    return Options(v, c, ok, np.zeros(len(values), dtype=np.int64))


def test_hindsight_small_case_hand_checked() -> None:
    """Three opportunities, budget 10 micros; options as (value, cost):

    A: social (6, 5) or paid search at position 1 (9, 8);   B: social (5, 5);   C: social (4, 2).
    Every feasible choice by hand: {A@1, C} = 13 at cost 10; {A social, B} = 11 at 10;
    {A social, C} = 10 at 7; {B, C} = 9 at 7; {A@1} = 9; {A social, B, C} would cost 12 > 10.
    The optimum is {A@1, C} = 13, spending the whole budget; the LP relaxation is at least that.
    """
    opts = _opts([[6, 9], [5], [4]], [[5, 8], [5], [2]])
    exact = hindsight_optimum(opts, 10, exact=True)
    assert exact.value == 13 and exact.spend_micros == 10 and exact.exact
    assert exact.choice.tolist() == [2, -1, 1]  # A at search@1 (column 2), B skipped, C on social
    assert exact.lp_value >= 13 - 1e-9
    lp = hindsight_optimum(opts, 10)
    assert lp.lp_value == pytest.approx(exact.lp_value) and lp.value <= 13 + 1e-9


def test_organic_cap_is_respected() -> None:
    # organic is free but only one placement a day; the second opportunity must pay for social
    opts = _opts([[5, 3], [5, 4]], [[0, 2], [0, 2]], organic=True)
    res = hindsight_optimum(opts, 2, organic_cap=1, exact=True)
    assert res.value == 9 and sorted(res.choice.tolist()) == [0, 1]
    assert hindsight_optimum(opts, 2, organic_cap=None, exact=True).value == 10


@given(st.integers(1, 6), st.integers(0, 40), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_exact_matches_brute_force_and_lp_bounds_it(n: int, budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 20, size=(n, 2)).astype(float).tolist()
    costs = rng.integers(1, 15, size=(n, 2)).tolist()
    opts = _opts(values, costs)
    best = 0.0
    for pick in itertools.product([-1, 0, 1], repeat=n):
        cost = sum(costs[i][j] for i, j in enumerate(pick) if j >= 0)
        if cost <= budget:
            best = max(best, sum(values[i][j] for i, j in enumerate(pick) if j >= 0))
    res = hindsight_optimum(opts, budget, exact=True)
    assert res.value == pytest.approx(best)
    assert res.lp_value >= best - 1e-6
    lp = hindsight_optimum(opts, budget)
    assert lp.value <= best + 1e-6 and lp.spend_micros <= budget  # the integral part is feasible


def test_upper_mode_bounds_what_a_policy_won_on_the_same_episode() -> None:
    e = Engine(load_calibration(), EngineConfig(persons=500, opportunities_per_day=1_500, seed=3))
    t0 = e.cfg.start_ms
    opps = e.sample(0, t0, t0 + DAY_MS)
    out, truth = e.resolve(opps, actions(opps, 10.0))
    spent = int(out.price.sum())
    won = float(truth.expected_value[out.won].sum())
    upper = hindsight_optimum(episode_options(e, opps, "upper"), spent, e.organic_cap, mode="upper")
    myopic = hindsight_optimum(episode_options(e, opps, "myopic"), spent, e.organic_cap)
    assert upper.lp_value >= won
    assert upper.lp_value >= myopic.lp_value > 0
    assert myopic.spend_micros <= spent


@given(st.integers(1, 30), st.integers(0, 60), st.integers(0, 3), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=80, deadline=None)
def test_the_dual_bound_is_never_under_the_lp_and_meets_it(n: int, budget: int, cap: int, organic: bool,
                                                          seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 20, size=(n, 3)).astype(float).tolist()
    costs = rng.integers(0 if organic else 1, 15, size=(n, 3)).tolist()
    if organic:
        for c in costs:
            c[0] = 0  # organic is free
    opts = _opts(values, costs, organic=organic)
    opts = opts._replace(day=rng.integers(0, 2, size=n))  # two budget periods
    oc = cap if organic else None
    lp = hindsight_optimum(opts, budget, organic_cap=oc).lp_value
    bound = dual_bound(opts, budget, organic_cap=oc)
    assert bound >= lp - 1e-6  # weak duality: never under the LP (so never under any allocation)
    assert bound <= lp + 1e-3 * max(1.0, lp)  # and tight: the dual of an LP meets it


def test_the_dual_bound_equals_the_lp_on_a_simulated_day() -> None:
    e = Engine(load_calibration(), EngineConfig(persons=500, opportunities_per_day=1_500, seed=4))
    t0 = e.cfg.start_ms
    opps = e.sample(0, t0, t0 + DAY_MS)
    for mode in ("myopic", "upper"):
        opts = episode_options(e, opps, mode)
        lp = hindsight_optimum(opts, 2_000_000, e.organic_cap).lp_value
        assert dual_bound(opts, 2_000_000, e.organic_cap) == pytest.approx(lp, rel=1e-4)
