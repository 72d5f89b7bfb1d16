"""Attribution models: per-conversion credit, batch credit, the exact Markov solve, Shapley, CLI, bad input."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_service.attribution import (
    MODELS,
    AttributionConfig,
    Attributor,
    JourneyTouch,
    MarkovModel,
    PathTable,
    ShapleyModel,
    attribute_paths,
    credit,
    credit_micros,
    parse_paths_csv,
)
from agent_service.cli import main
from agent_service.errors import ConfigError, DecodeError
from agent_service.units import DAY_MS as DAY

T0 = 1_700_000_000_000

TOY = {
    "path": ["a > b > c", "a", "b > a", "c > c > b", "a > c"],
    "conv": [3, 1, 0, 2, 1],
    "value": [30.0, 5.0, 0.0, 20.0, 15.0],
    "null": [5, 10, 4, 3, 2],
}


def toy_table() -> PathTable:
    return PathTable.from_columns(TOY["path"], TOY["conv"], TOY["value"], TOY["null"])


def journey(*channels: str, spacing_days: float = 1.0, end: int = T0) -> list[JourneyTouch]:
    n = len(channels)
    return [JourneyTouch(f"d{i}", end - int((n - 1 - i) * spacing_days * DAY), c) for i, c in enumerate(channels)]


# ---------------------------------------------------------------------------------------
# Per-conversion face
# ---------------------------------------------------------------------------------------
def test_heuristic_fractions_per_touch() -> None:
    touches = journey("search", "social", "display", "search")
    conv = T0
    assert [c.fraction for c in credit(touches, conv, "last")] == [0, 0, 0, 1]
    assert [c.fraction for c in credit(touches, conv, "first_touch")] == [1, 0, 0, 0]
    assert [c.fraction for c in credit(touches, conv, "linear")] == [0.25] * 4
    pos = [c.fraction for c in credit(touches, conv, "position")]
    assert pos == pytest.approx([0.4, 0.1, 0.1, 0.4])
    two = [c.fraction for c in credit(journey("a", "b"), conv, "position")]
    assert two == pytest.approx([0.5, 0.5])
    custom = AttributionConfig(model="position", position_first=0.3, position_last=0.5)
    assert [c.fraction for c in credit(touches, conv, config=custom)] == pytest.approx([0.3, 0.1, 0.1, 0.5])


def test_time_decay_halves_weight_per_half_life() -> None:
    touches = [JourneyTouch("old", T0 - 7 * DAY, "a"), JourneyTouch("new", T0, "b")]
    f = [c.fraction for c in credit(touches, T0, "time_decay")]
    assert f[1] == pytest.approx(2 * f[0])
    assert sum(f) == pytest.approx(1.0)
    cfg = AttributionConfig(model="time_decay", half_life_days=3.5)
    f2 = [c.fraction for c in credit(touches, T0, config=cfg)]
    assert f2[1] == pytest.approx(4 * f2[0])


def test_window_order_duplicates_and_determinism() -> None:
    touches = [
        JourneyTouch("late", T0 + 1, "a"),  # after the conversion: no credit
        JourneyTouch("stale", T0 - 15 * DAY, "b"),  # outside the 14-day window
        JourneyTouch("x", T0 - 2 * DAY, "c"),
        JourneyTouch("y", T0 - 2 * DAY, "d"),  # same time as x: ordered by decision id
        JourneyTouch("x", T0 - 1 * DAY, "c", clicked=True),  # duplicate of x: merged, keeps the earliest time
    ]
    out = credit(touches, T0, "first")
    assert [(c.decision_id, c.fraction) for c in out] == [("x", 1.0), ("y", 0.0)]
    assert out[0].event_time == T0 - 2 * DAY
    shuffled = list(reversed(touches))
    for model in ("last", "linear", "time_decay", "position"):
        assert credit(touches, T0, model) == credit(shuffled, T0, model)
    assert credit([], T0, "last") == []
    assert credit([JourneyTouch("late", T0 + 5, "a")], T0, "linear") == []


def test_prefer_clicks_credits_clicked_touches_only() -> None:
    touches = [JourneyTouch("v1", T0 - 3 * DAY, "display"), JourneyTouch("c1", T0 - 2 * DAY, "search", clicked=True),
               JourneyTouch("v2", T0 - DAY, "social")]
    cfg = AttributionConfig(model="last", prefer_clicks=True)
    assert [(c.decision_id, c.fraction) for c in credit(touches, T0, config=cfg)] == [("c1", 1.0)]
    views = [JourneyTouch("v1", T0 - DAY, "display")]
    assert credit(views, T0, config=cfg)[0].fraction == 1.0  # no clicks: views count


def test_stream_adapter_returns_decision_fraction_pairs() -> None:
    from agent_service.attribution import StreamAttribution

    touches = journey("search", "social")
    pairs = StreamAttribution(AttributionConfig(model="last_touch")).credit(touches, T0)
    assert pairs == [("d0", 0.0), ("d1", 1.0)]
    contract_touch = pytest.importorskip("agent_service.contracts.events").Touch
    real = [contract_touch(decision_id="x", event_time=T0 - DAY, channel="social", creative=1, segment=0,
                           device_id="dev")]
    assert StreamAttribution(AttributionConfig(model="linear")).credit(real, T0) == [("x", 1.0)]


def test_data_driven_models_need_fitted_weights() -> None:
    with pytest.raises(ConfigError, match="attribution.model"):
        Attributor(AttributionConfig(model="markov"))
    with pytest.raises(ConfigError, match="unknown attribution model"):
        AttributionConfig(model="bogus")


def test_markov_and_shapley_per_conversion_use_fitted_weights() -> None:
    table = toy_table()
    markov = MarkovModel.fit(table)
    shapley = ShapleyModel.fit(table)
    touches = journey("a", "c", "a", "zzz")  # zzz: never seen in the fit
    for model, fitted in (("markov", markov), ("shapley", shapley)):
        attributor = Attributor(AttributionConfig(model=model), fitted)
        out = attributor.credit(touches, T0)
        fr = [c.fraction for c in out]
        assert sum(fr) == pytest.approx(1.0)
        assert all(f >= 0 for f in fr)
        assert fr[0] == pytest.approx(fr[2])  # a channel's touches share its weight evenly
        assert attributor.credit(list(reversed(touches)), T0) == out
    re = dict(zip(markov.channels, markov.removal_effects, strict=True))
    fr = [c.fraction for c in Attributor(AttributionConfig(model="markov"), markov).credit(journey("a", "c"), T0)]
    assert fr == pytest.approx([re["a"] / (re["a"] + re["c"]), re["c"] / (re["a"] + re["c"])])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20 * DAY), st.sampled_from("abcd"), st.booleans()), min_size=0, max_size=12),
    st.sampled_from(["last", "first", "linear", "time_decay", "position"]),
    st.integers(0, 10**9),
)
def test_fractions_sum_to_one_and_micros_are_exact(raw, model, value_micros) -> None:
    touches = [JourneyTouch(f"d{i}", T0 - age, ch, clicked) for i, (age, ch, clicked) in enumerate(raw)]
    out = credit(touches, T0, model)
    eligible = {t.decision_id for t in touches if T0 - 14 * DAY <= t.event_time <= T0}
    assert {c.decision_id for c in out} == eligible
    if out:
        assert math.fsum(c.fraction for c in out) == pytest.approx(1.0, abs=1e-12)
        assert all(0.0 <= c.fraction <= 1.0 for c in out)
        micros = credit_micros(out, value_micros)
        assert sum(micros) == value_micros and all(m >= 0 for m in micros)
        assert micros == credit_micros(out, value_micros)


# ---------------------------------------------------------------------------------------
# Batch face
# ---------------------------------------------------------------------------------------
def test_batch_heuristics_match_per_journey_rules() -> None:
    table = toy_table()
    cfg = AttributionConfig(step_days=1.0)
    for model in ("last", "first", "linear", "time_decay", "position"):
        got = attribute_paths(table, model, cfg)
        want = dict.fromkeys(table.channels, 0.0)
        want_val = dict.fromkeys(table.channels, 0.0)
        for i in range(table.n_paths):
            chans = table.path(i)
            touches = journey(*chans, spacing_days=1.0)
            for c in credit(touches, T0, config=AttributionConfig(model=model)):
                want[c.channel] += c.fraction * table.conversions[i]
                want_val[c.channel] += c.fraction * table.values[i]
        assert got.conversions == pytest.approx([want[c] for c in table.channels]), model
        assert got.values == pytest.approx([want_val[c] for c in table.channels]), model
        assert got.conversions.sum() == pytest.approx(table.conversions.sum())


def _brute_force_removal(table: PathTable) -> dict[str, float]:
    """Removal effects by iterating the chain's transition matrix (independent of the solver)."""
    names = ["(start)", *table.channels, "(conv)", "(null)"]
    ix = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(names), len(names)))
    for i in range(table.n_paths):
        chans = [k for k, _ in itertools.groupby(table.path(i))]
        tot = table.conversions[i] + table.nulls[i]
        seq = ["(start)", *chans]
        for a, b in itertools.pairwise(seq):
            counts[ix[a], ix[b]] += tot
        counts[ix[seq[-1]], ix["(conv)"]] += table.conversions[i]
        counts[ix[seq[-1]], ix["(null)"]] += table.nulls[i]
    counts[ix["(conv)"], ix["(conv)"]] = counts[ix["(null)"], ix["(null)"]] = 1
    rowsum = counts.sum(1, keepdims=True)
    p = np.divide(counts, rowsum, out=np.zeros_like(counts), where=rowsum > 0)

    def p_conv(removed: str | None) -> float:
        q = p.copy()
        if removed is not None:
            q[ix[removed], :] = 0
            q[ix[removed], ix["(null)"]] = 1
        dist = np.zeros(len(names))
        dist[0] = 1
        for _ in range(2000):
            dist = dist @ q
        return float(dist[ix["(conv)"]])

    base = p_conv(None)
    return {c: 1 - p_conv(c) / base for c in table.channels}


def test_markov_removal_effects_equal_brute_force_chain() -> None:
    table = toy_table()
    model = MarkovModel.fit(table)
    brute = _brute_force_removal(table)
    assert model.removal_effects == pytest.approx([brute[c] for c in table.channels], abs=1e-9)
    conv, value = model.credit()
    assert conv.sum() == pytest.approx(7.0)
    assert value.sum() == pytest.approx(70.0)
    probs = model.transition_probabilities()
    assert probs[("(start)", "a")] == pytest.approx(22 / 31)
    assert probs[("c", "(conversion)")] == pytest.approx(4 / 16)


def test_markov_single_channel_gets_everything_and_order_two_runs() -> None:
    table = PathTable.from_columns(["a", "a > a"], [2, 1], [10, 5], [3, 0])
    conv, value = MarkovModel.fit(table).credit()
    assert conv == pytest.approx([3.0]) and value == pytest.approx([15.0])
    m2 = MarkovModel.fit(toy_table(), order=2)
    assert m2.credit()[0].sum() == pytest.approx(7.0)
    assert 0 < m2.conversion_probability < 1


def test_markov_no_conversions_gives_zero_credit() -> None:
    table = PathTable.from_columns(["a > b", "b"], [0, 0], [0, 0], [5, 4])
    conv, value = MarkovModel.fit(table).credit()
    assert conv.tolist() == [0.0, 0.0] and value.tolist() == [0.0, 0.0]


def _shapley_brute(v, members):
    m = len(members)
    phi = dict.fromkeys(members, 0.0)
    for perm in itertools.permutations(members):
        s: frozenset = frozenset()
        for j in perm:
            phi[j] += (v(s | {j}) - v(s)) / math.factorial(m)
            s = s | {j}
    return phi


def test_shapley_exact_matches_permutation_definition_and_sampling_converges() -> None:
    rng = np.random.default_rng(3)
    chans = list("abcde")
    paths, conv, null = [], [], []
    for _ in range(60):
        k = int(rng.integers(1, 6))
        paths.append(" > ".join(rng.choice(chans, size=k)))
        conv.append(int(rng.integers(0, 5)))
        null.append(int(rng.integers(0, 20)))
    table = PathTable.from_columns(paths, conv, np.array(conv) * 10.0, null)
    model = ShapleyModel.fit(table)
    sets = {}
    for i in range(table.n_paths):
        key = frozenset(table.path(i))
        c, n = sets.get(key, (0.0, 0.0))
        sets[key] = (c + table.conversions[i], n + table.conversions[i] + table.nulls[i])

    def v(s):
        num = sum(c for t, (c, _) in sets.items() if t <= s)
        den = sum(n for t, (_, n) in sets.items() if t <= s)
        return num / den if den > 0 else 0.0

    full = frozenset(table.channels)
    mask = sum(1 << i for i in range(len(table.channels)))
    brute = _shapley_brute(v, sorted(full, key=table.channels.index))
    raw = np.array([max(brute[c], 0.0) for c in table.channels])
    assert model.set_fractions(mask) == pytest.approx(raw / raw.sum(), abs=1e-12)

    sampled = ShapleyModel.fit(table, exact_max=2, samples=4000, seed=1)
    got = sampled.set_fractions(mask)
    assert got == pytest.approx(raw / raw.sum(), abs=0.03)
    again = ShapleyModel.fit(table, exact_max=2, samples=4000, seed=1).set_fractions(mask)
    assert np.array_equal(got, again)  # seeded: deterministic
    conv_credit, value_credit = model.credit()
    assert conv_credit.sum() == pytest.approx(table.conversions.sum())
    assert value_credit.sum() == pytest.approx(table.values.sum())


def test_path_table_from_stream_journeys() -> None:
    journeys = [(["a", "b"], True, 10.0), (["a", "b"], False, 0.0), (["b"], True, 4.0), (["a", "b"], True, 6.0)]
    table = PathTable.from_journeys(journeys)
    assert table.channels == ("a", "b") and table.n_paths == 2
    assert table.path(0) == ("a", "b") and table.path(1) == ("b",)
    assert table.conversions.tolist() == [2, 1] and table.values.tolist() == [16, 4] and table.nulls.tolist() == [1, 0]
    fitted = MarkovModel.fit(table)
    assert Attributor(AttributionConfig(model="markov"), fitted).credit(journey("a", "b"), T0)
    with pytest.raises(DecodeError, match="journey 0"):
        PathTable.from_journeys([([], True, 1.0)])


def test_every_model_conserves_totals() -> None:
    table = toy_table()
    for model in MODELS:
        res = attribute_paths(table, model)
        assert res.conversions.sum() == pytest.approx(7.0), model
        assert res.values.sum() == pytest.approx(70.0), model
        assert (res.conversions >= 0).all()


# ---------------------------------------------------------------------------------------
# Parsing and bad input
# ---------------------------------------------------------------------------------------
HEADER = "path,total_conversions,total_conversion_value,total_null\n"


def test_parse_strips_whitespace_and_keeps_first_seen_order() -> None:
    table = parse_paths_csv(HEADER + '" b >a > b ",1,2.5,3\na,0,0,1\n\n')
    assert table.channels == ("b", "a")
    assert table.path(0) == ("b", "a", "b")
    assert table.conversions.tolist() == [1.0, 0.0]
    assert table.rows.tolist() == [2, 3]


def test_plain_and_quoted_csv_parse_alike() -> None:
    plain = HEADER + "a > b,1,2.5,3\nb,0,0,1\nc > a > c,2,7,0\n"
    quoted = HEADER + '"a > b",1,2.5,3\r\n"b",0,0,1\r\n\r\n"c > a > c",2,7,0\r\n'
    extra = "total_null,x,path,total_conversion_value,total_conversions\n3,q,a > b,2.5,1\n1,q,b,0,0\n0,q,c > a > c,7,2\n"
    tables = [parse_paths_csv(t) for t in (plain, quoted, extra)]
    for t in tables:
        assert t.channels == ("a", "b", "c")
        assert [t.path(i) for i in range(3)] == [("a", "b"), ("b",), ("c", "a", "c")]
        assert t.conversions.tolist() == [1, 0, 2] and t.values.tolist() == [2.5, 0, 7]
        assert t.nulls.tolist() == [3, 1, 0]
    assert tables[1].rows.tolist() == [2, 3, 5]  # blank line 4 skipped, numbering kept


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("", "row 1", "empty file"),
        ("path,total_conversions,total_null\na,1,1\n", "row 1: total_conversion_value", "missing column"),
        (HEADER, "row 2: path", "no paths"),
        (HEADER + "a,1,1,1\n,1,1,1\n", "row 3: path", "empty path"),
        (HEADER + "a > > b,1,1,1\n", "row 2: path", "empty step 2 of 3"),
        (HEADER + "a >,1,1,1\n", "row 2: path", "empty step 2 of 2"),
        (HEADER + "a,1,1,1\nb,-1,1,1\n", "row 3: total_conversions", ">= 0"),
        (HEADER + "a,1,-5,1\n", "row 2: total_conversion_value", ">= 0"),
        (HEADER + "a,1,1,x\n", "row 2: total_null", "not a number"),
        (HEADER + "a,1,1,nan\n", "row 2: total_null", "finite"),
        (HEADER + "a,1,1\n", "row 2", "malformed CSV"),
        (HEADER + '"a,1,1,1\n', "row", "malformed CSV"),
    ],
)
def test_bad_input_names_row_and_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        parse_paths_csv(text)
    assert err.value.field.startswith(field)
    assert reason in err.value.reason


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def test_cli_prints_json_credit_last(tmp_path, capsys) -> None:
    f = tmp_path / "paths.csv"
    rows = "".join(f'"{p}",{c},{v},{n}\n' for p, c, v, n in zip(TOY["path"], TOY["conv"], TOY["value"], TOY["null"],
                                                                  strict=True))
    f.write_text(HEADER + rows)
    for model in MODELS:
        assert main(["attribute", "--paths", str(f), "--model", model]) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        obj = json.loads(last)
        assert obj["model"] == model and obj["paths"] == 5
        assert set(obj["credit"]) == {"a", "b", "c"}
        assert sum(v["conversions"] for v in obj["credit"].values()) == pytest.approx(7.0)
        assert sum(v["value"] for v in obj["credit"].values()) == pytest.approx(70.0)


def test_cli_bad_input_exits_2_with_row_and_field(tmp_path, capsys) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(HEADER + "a,1,1,1\nb > ,1,1,1\n")
    assert main(["attribute", "--paths", str(f), "--model", "last"]) == 2
    assert "row 3: path" in capsys.readouterr().err
    assert main(["attribute", "--paths", str(tmp_path / "missing.csv")]) == 2
    assert main(["attribute", "--paths", str(f), "--model", "nope"]) == 2
