"""Agreement with the ``channelattribution`` package (GPL; a test dependency only, never copied).

Heuristic models must agree exactly; the Markov transition matrix exactly; Markov credit
within 2% per channel. ``channelattribution`` simulates journeys, so it is the approximation
here: it is run with a large ``max_step`` (its default cuts simulated journeys at the
longest observed path, which biases removal effects low) and many simulations.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

ca = pytest.importorskip("ChannelAttribution")
pd = pytest.importorskip("pandas")

from agent_service.attribution import MarkovModel, PathTable, attribute_paths  # noqa: E402


def _paths(n_paths: int = 1500, n_channels: int = 6, seed: int = 7):
    rng = np.random.default_rng(seed)
    names = [f"ch{i}" for i in range(n_channels)]
    pop = rng.dirichlet(np.full(n_channels, 4.0))
    lift = rng.uniform(0.3, 1.5, n_channels)
    rows: dict[str, tuple[int, int, float]] = {}
    while len(rows) < n_paths:
        steps = rng.choice(n_channels, size=int(rng.geometric(0.3)), p=pop)
        key = " > ".join(names[s] for s in steps)
        if key in rows:
            continue
        n = int(rng.integers(1, 40))
        conv = int(rng.binomial(n, min(0.9, 0.03 * lift[steps].sum())))
        rows[key] = (conv, n - conv, round(conv * float(rng.uniform(10, 90)), 2))
    df = pd.DataFrame({"path": list(rows), "total_conversions": [r[0] for r in rows.values()],
                       "total_conversion_value": [r[2] for r in rows.values()],
                       "total_null": [r[1] for r in rows.values()]})
    table = PathTable.from_columns(df["path"].tolist(), df["total_conversions"].to_numpy(),
                                   df["total_conversion_value"].to_numpy(), df["total_null"].to_numpy())
    return df, table


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def test_heuristics_equal_channelattribution() -> None:
    df, table = _paths()
    ref = _quiet(ca.heuristic_models, df, "path", "total_conversions", var_value="total_conversion_value",
                 flg_pro=False).set_index("channel_name")
    for ours, theirs in (("first", "first_touch"), ("last", "last_touch"), ("linear", "linear_touch")):
        got = attribute_paths(table, ours)
        for i, ch in enumerate(got.channels):
            assert got.conversions[i] == pytest.approx(ref.loc[ch, f"{theirs}_conversions"], rel=1e-9), (ours, ch)
            assert got.values[i] == pytest.approx(ref.loc[ch, f"{theirs}_value"], rel=1e-9), (ours, ch)


def test_markov_transition_matrix_equals_channelattribution() -> None:
    df, table = _paths(n_paths=400)
    res = _quiet(ca.markov_model, df, "path", "total_conversions", var_value="total_conversion_value",
                 var_null="total_null", out_more=True, verbose=False, flg_pro=False, nsim_start=1e4)
    tm = res["transition_matrix"]
    idx_name = {str(i + 1): ch for i, ch in enumerate(table.channels)}
    theirs = {(idx_name.get(a, a), idx_name.get(b, b)): p
              for a, b, p in zip(tm["channel_from"], tm["channel_to"], tm["transition_probability"], strict=True)}
    ours = MarkovModel.fit(table).transition_probabilities()
    assert set(ours) == set(theirs)
    for key, p in theirs.items():
        assert ours[key] == pytest.approx(p, abs=1e-9), key


def test_markov_credit_within_two_percent_of_channelattribution() -> None:
    df, table = _paths()
    res = _quiet(ca.markov_model, df, "path", "total_conversions", var_value="total_conversion_value",
                 var_null="total_null", out_more=True, verbose=False, flg_pro=False, max_step=1000,
                 nsim_start=3e6)
    ref = res["result"].set_index("channel_name")
    model = MarkovModel.fit(table)
    conv, value = model.credit()
    for i, ch in enumerate(table.channels):
        assert conv[i] == pytest.approx(ref.loc[ch, "total_conversions"], rel=0.02), ch
        assert value[i] == pytest.approx(ref.loc[ch, "total_conversion_value"], rel=0.02), ch
    re = res["removal_effects"].set_index("channel_name")
    for i, ch in enumerate(table.channels):
        assert model.removal_effects[i] == pytest.approx(re.loc[ch, "removal_effects_conversion"], rel=0.02), ch
