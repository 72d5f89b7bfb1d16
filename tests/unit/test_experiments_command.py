"""``gaelp experiments`` and the experiment_arms table: status by start/stop, allocation, per-arm totals written
in batches (idempotent by batch id) and read back into the same always-valid estimate as the domain test."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pytest

from agent_service.cli import main
from agent_service.config.experiments import SequentialConfig
from agent_service.errors import DecodeError
from agent_service.experiments.sequential import RatioStats, compare
from agent_service.units import DAY_MS as DAY
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from agent_service.warehouse.experiment_arms import arm_rows, write_arm_batch

NOW = 1_780_000_000_000
CONFIG = f"""
[budget]
daily_usd = 20.0

[[experiments]]
id = "hero"
start_ms = {NOW - 7 * DAY}
stop_ms = {NOW + 7 * DAY}
arms = [{{name = "control", creatives = ["c1"]}}, {{name = "bold", creatives = ["c2", "c3"], weight = 3.0}}]

[[experiments]]
id = "later"
start_ms = {NOW + DAY}
stop_ms = {NOW + 9 * DAY}
arms = [{{name = "a", creatives = ["c1"]}}, {{name = "b", creatives = ["c4"]}}]

[[experiments]]
id = "past"
start_ms = {NOW - 9 * DAY}
stop_ms = {NOW - DAY}
arms = [{{name = "a", creatives = ["c1"]}}, {{name = "b", creatives = ["c5"]}}]
"""


def _persons(rng: np.random.Generator, n: int, mult: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-person value and spend: 8 % convert with a lognormal value (times ``mult``)."""
    converted = rng.random(n) < 0.08
    value = np.where(converted, rng.lognormal(3.0, 1.0, n) * mult, 0.0)
    return value, rng.exponential(0.8, n)


def _stats(value: np.ndarray, spend: np.ndarray) -> RatioStats:
    s = RatioStats()
    s.add_many(value, spend)
    return s


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gaelp.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def warehouse(tmp_path: Path) -> tuple[Path, dict[str, RatioStats]]:
    """A DuckDB file with two batches per arm of "hero" (the bold arm 30 % better), one batch sent twice,
    and one arm nobody configured; returns the file and each arm's sums over all persons."""
    rng = np.random.default_rng(7)
    batches = []
    for b in range(2):
        ctrl, bold = _persons(rng, 6000, 1.0), _persons(rng, 18000, 1.3)
        batches.append((f"w{b}", {"control": ctrl, "bold": bold}))
    path = tmp_path / "wh.duckdb"

    async def write() -> None:
        wh = DuckDBWarehouse(path)
        await wh.ensure_tables()
        for batch_id, arms in batches:
            stats = {a: _stats(*vs) for a, vs in arms.items()}
            exposed = {a: len(vs[0]) + 5 for a, vs in arms.items()}  # some exposed persons not observed yet
            await write_arm_batch(wh, "hero", batch_id, NOW - DAY, stats, exposed)
        again = await write_arm_batch(wh, "hero", "w0", NOW - DAY, {"control": _stats(*batches[0][1]["control"])},
                                      {"control": 6005})
        assert again.ok  # stored once: the totals below would double otherwise
        await write_arm_batch(wh, "hero", "w0", NOW, {"ghost": RatioStats()}, {"ghost": 1})
        await wh.close()

    asyncio.run(write())
    truth = {a: _stats(np.concatenate([b[1][a][0] for b in batches]), np.concatenate([b[1][a][1] for b in batches]))
             for a in ("control", "bold")}
    return path, truth


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["experiments", *argv, "--now", str(NOW), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_and_allocation_from_config(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _json(capsys, "--config", str(config))
    exps = {e["id"]: e for e in out["experiments"]}
    assert {k: e["status"] for k, e in exps.items()} == {"hero": "running", "later": "scheduled", "past": "stopped"}
    hero = exps["hero"]["arms"]
    assert [(a["name"], a["share"], a["creatives"]) for a in hero] == [
        ("control", 0.25, ["c1"]), ("bold", 0.75, ["c2", "c3"])]
    assert "lift" not in hero[1] and exps["hero"]["winner"] is None

    assert main(["experiments", "--config", str(config), "--now", str(NOW)]) == 0
    text = capsys.readouterr().out
    assert "hero  running" in text and "later  scheduled" in text and "past  stopped" in text
    assert "c2,c3" in text and "75.0%" in text


def test_estimates_from_the_warehouse_equal_the_sequential_test(
        config: Path, warehouse: tuple[Path, dict[str, RatioStats]], capsys: pytest.CaptureFixture[str]) -> None:
    path, truth = warehouse
    out = _json(capsys, "--config", str(config), "--warehouse", str(path))
    hero = next(e for e in out["experiments"] if e["id"] == "hero")
    ctrl, bold = hero["arms"]
    # The sums read back are the sums over every person: the retried batch counted once.
    assert ctrl["persons"] == truth["control"].n == 12000 and bold["persons"] == truth["bold"].n == 36000
    assert ctrl["exposed"] == 12010 and bold["exposed"] == 36010
    assert ctrl["value_usd"] == pytest.approx(truth["control"].sum_x, rel=1e-12)
    expected = compare(truth["control"], truth["bold"], SequentialConfig(alpha=0.05 / (2 - 1)))  # Bonferroni over one challenger
    assert bold["lift"] == pytest.approx(expected.lift, rel=1e-9)
    assert (bold["lower"], bold["upper"]) == (pytest.approx(expected.lower, rel=1e-9),
                                              pytest.approx(expected.upper, rel=1e-9))
    assert bold["lower"] < 0.3 < bold["upper"]  # the true lift is inside the interval
    assert bold["decision"] == "promote" and hero["status"] == "decided" and hero["winner"] == "bold"
    assert ctrl["decision"] == "control" and "lift" not in ctrl
    assert out["notes"] == ["experiment 'hero': arm 'ghost' in the warehouse is not configured; ignored"]
    # Experiments with no rows hold, with no estimate.
    later = next(e for e in out["experiments"] if e["id"] == "later")
    assert later["arms"][1]["decision"] == "hold"
    assert later["arms"][1]["lift"] is later["arms"][1]["lower"] is later["arms"][1]["upper"] is None

    assert main(["experiments", "--config", str(config), "--warehouse", str(path), "--now", str(NOW)]) == 0
    text = capsys.readouterr().out
    assert "winner: bold" in text and "promote" in text and "note: experiment 'hero': arm 'ghost'" in text


def test_arm_rows_refuse_a_non_finite_sum() -> None:
    bad = RatioStats(n=1, sum_x=math.nan, sum_y=1.0)
    with pytest.raises(DecodeError, match="experiment_arms.value"):
        arm_rows("hero", "w0", NOW, {"control": bad}, {})


def test_bad_input_is_refused_by_name(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text(CONFIG.replace("[[experiments]]\nid = \"later\"", "[[experiment]]\nid = \"later\""))
    assert main(["experiments", "--config", str(typo)]) == 2
    assert "experiment" in capsys.readouterr().err

    bad_weight = tmp_path / "weight.toml"
    bad_weight.write_text(CONFIG.replace("weight = 3.0", "weight = -1.0"))
    assert main(["experiments", "--config", str(bad_weight)]) == 2
    assert "weight" in capsys.readouterr().err

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert main(["experiments", "--config", str(config), "--warehouse", str(empty)]) == 2
    assert "no experiment_arms table" in capsys.readouterr().err
    assert main(["experiments", "--config", str(config), "--warehouse", str(tmp_path / "missing.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_no_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiments", "--now", str(NOW)]) == 0
    assert "no experiments configured" in capsys.readouterr().out
