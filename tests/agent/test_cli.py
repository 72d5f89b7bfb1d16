"""`gaelp train` and `gaelp evaluate` end to end with a tiny world and budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_service.cli import main

_WORLD = ["--persons", "400", "--opportunities-per-day", "1200"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--days", "2", "--baseline-days", "1", "--checkpoint-every", "1", "--no-progress",
                 "--runners", "0", "--out", str(out), *_WORLD]) == 0
    return out


def test_train_writes_checkpoints_curves_and_a_summary(trained: Path) -> None:
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["days_trained"] == 2 and summary["policy_updates"] > 0 and summary["rejected_updates"] == 0
    assert summary["transitions_trained_per_second"] > 0 and len(summary["per_day"]) == 2
    assert (trained / "agent.pt").exists() and (trained / "checkpoints" / "day0002.pt").exists()
    for name in summary["plots"]:
        assert (trained / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"fixed_cpm", "linear_b0", "dual_step"} <= set(json.loads((trained / "baselines.json").read_text()))


def test_evaluate_brackets_every_policy_by_the_best_clairvoyant_policy_and_an_upper_bound(trained: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(trained), "--seeds", "1", "2", "--days", "1", "--warmup", "0",
                 "--out", str(tmp_path), "--quiet", *_WORLD]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert any(line.startswith("agent − strongest ablation") for line in lines[:-1])  # the table says it too
    assert set(last["policies"]) == {"gaelp", "fixed", "truthful", "linear", "dual", "dual+oracle_creative",
                                      "dual+cell_oracle", "dual+cell_profile", "dual+truth", "truthful+truth",
                                      "dual+agent", "dual+agent_scaled", "gaelp-no_dqn_offset"}
    assert last["upper_bound_usd"] > 0 and last["best_clairvoyant_usd"] > 0
    assert set(last["values_usd"]) == set(last["policies"])
    strongest = last["strongest_ablation"]  # the better pacing ablation of the run, by mean value
    other = ({"dual+agent", "dual+agent_scaled"} - {strongest["policy"]}).pop()
    assert last["values_usd"][strongest["policy"]] >= last["values_usd"][other]
    assert strongest["gaelp_minus_policy"] == last["paired_vs_gaelp"][strongest["policy"]]["gaelp_minus_policy"]
    per_seed = {n: e["per_seed_value"] for n, e in json.loads((tmp_path / "evaluation.json").read_text())[
        "policies"].items()}
    for seed in range(2):  # the bound holds for every policy on every seed; the clairvoyant is the best of two
        assert all(v[seed] <= last["upper_bound"]["per_seed"][seed] + 1e-6 for v in per_seed.values())
        assert last["best_clairvoyant"]["per_seed"][seed] == pytest.approx(
            max(per_seed["dual+truth"][seed], per_seed["truthful+truth"][seed]), abs=1e-3)
    for entry in last["policies"].values():
        assert 0 <= entry["of_upper_bound"]["mean"] <= 1.0
    assert (tmp_path / "evaluation.png").exists() and (tmp_path / "evaluation.json").exists()


def test_evaluating_on_the_training_seed_is_refused(trained: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--checkpoint", str(trained), "--seeds", "100", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "evaluate.seeds" in err and "training seed" in err
