"""Identity model: link validation, pairwise evaluation, max-product confidence, config."""

from __future__ import annotations

import itertools
import random

import pytest

from agent_service.errors import ConfigError, DecodeError
from agent_service.identity import GraphLink, IdentityConfig, evaluate_identity, max_product_confidence


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"link_id": "", "device_id": "a", "other": "b"}, "$.link_id"),
        ({"link_id": "x", "device_id": "", "other": "b"}, "$.device_id"),
        ({"link_id": "x", "device_id": "a", "other": ""}, "$.other"),
        ({"link_id": "x", "device_id": "a", "other": "b", "kind": "guess"}, "$.kind"),
        ({"link_id": "x", "device_id": "a", "other": "b", "kind": "ip_ua", "score": 1.5}, "$.score"),
        ({"link_id": "x", "device_id": "a", "other": "b", "kind": "ip_ua", "score": float("nan")}, "$.score"),
    ],
)
def test_bad_links_name_the_field(kwargs, field) -> None:
    with pytest.raises(DecodeError) as err:
        GraphLink(**kwargs)
    assert err.value.field == field


def test_link_nodes_and_deterministic_score() -> None:
    link = GraphLink("x", "phone", "alice", "login", 0.2)
    assert link.nodes == ("d:phone", "u:alice") and link.score == 1.0 and link.deterministic
    prob = GraphLink("y", "phone", "tablet", "co_occurrence", 0.7, "1.1.1.1")
    assert prob.nodes == ("d:phone", "d:tablet") and prob.score == 0.7 and not prob.deterministic


def _brute_pairs(pred, truth):
    devs = sorted(truth)
    tp = pp = tt = 0
    for a, b in itertools.combinations(devs, 2):
        same_p = pred.get(a, "alone" + a) == pred.get(b, "alone" + b)
        same_t = truth[a] == truth[b]
        tp += same_p and same_t
        pp += same_p
        tt += same_t
    return tp, pp, tt


def test_evaluation_matches_pair_counting() -> None:
    rng = random.Random(1)
    for _ in range(30):
        truth = {f"d{i}": f"p{rng.randrange(6)}" for i in range(rng.randrange(1, 25))}
        pred = {d: f"q{rng.randrange(5)}" for d in truth if rng.random() < 0.9}
        pred["extra"] = "q0"  # not in the truth: ignored
        s = evaluate_identity(pred, truth)
        assert (s.correct_pairs, s.predicted_pairs, s.true_pairs) == _brute_pairs(pred, truth)
        if s.predicted_pairs:
            assert s.precision == pytest.approx(s.correct_pairs / s.predicted_pairs)
    perfect = evaluate_identity({"a": "x", "b": "x", "c": "y"}, {"a": 1, "b": 1, "c": 2})
    assert perfect.f1 == 1.0
    empty = evaluate_identity({}, {"a": "p", "b": "q"})
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0)


def test_max_product_confidence() -> None:
    edges = [("r", "a", 0.9), ("a", "b", 0.5), ("r", "b", 0.4), ("b", "c", 1.0), ("x", "y", 0.9)]
    conf = max_product_confidence("r", edges)
    assert conf["r"] == 1.0 and conf["a"] == pytest.approx(0.9)
    assert conf["b"] == pytest.approx(0.45) and conf["c"] == pytest.approx(0.45)
    assert "x" not in conf


def test_identity_config_names_the_bad_key() -> None:
    with pytest.raises(ConfigError, match="identity.merge_threshold"):
        IdentityConfig(merge_threshold=0.0)
    with pytest.raises(ConfigError, match="identity.max_component_nodes"):
        IdentityConfig(max_component_nodes=1)
    with pytest.raises(ConfigError, match="identity.max_ip_devices"):
        IdentityConfig(max_ip_devices=0)
