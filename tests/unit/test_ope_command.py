"""`gaelp ope` on a DuckDB warehouse written with the sink's own rows: live log, shadow candidate, refusals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from agent_service.agent.serving.hybrid import spec_of
from agent_service.cli import main
from agent_service.config import GaelpConfig
from agent_service.contracts.events import Action, Decision
from agent_service.runtime.warehouse_sink import _decision_row
from agent_service.units import DAY_MS as DAY
from agent_service.warehouse.duckdb_warehouse import DuckDBWarehouse
from agent_service.warehouse.schema import TABLES

T0 = 1_700_000_000_000
MEAN = np.array([0.1, 0.3, 0.6, 0.2])  # expected reward of each multiplier
LOGGER = np.array([0.4, 0.3, 0.2, 0.1])  # the live policy's multiplier probabilities
CANDIDATE = 2  # the shadow version always picks multiplier 2: its value is MEAN[2]


SPEC = spec_of(GaelpConfig().hybrid, GaelpConfig().creatives.capacity)  # the layout `gaelp ope` reads by default


def _state(slot_p: float) -> list[float]:
    """A logged vector of the service's layout whose slot_action_prob log column is ``slot_p``."""
    x = np.zeros(SPEC.logged_dim)
    x[SPEC.index["slot_action_prob"]] = slot_p
    return x.tolist()


def _decision(i: int, mult: int, slot_p: float, version: int, shadow: bool) -> Decision:
    return Decision(id=f"r{i}:1" + (":shadow" if shadow else ""), event_time=T0 + i * 1000, request_id=f"r{i}",
                    imp_id="1", person_id=f"p{i}", device_id=f"d{i}", campaign="c", state=_state(slot_p),
                    propensity=slot_p * 0.5, model_version=version, shadow=shadow, bid=not shadow,
                    action=Action(bid_cpm_micros=1_000_000, creative=0, channel="display", segment=0,
                                  multiplier=mult))


def _build(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mult = rng.choice(4, size=n, p=LOGGER)
    reward = (rng.random(n) < MEAN[mult]).astype(float)
    decisions, experience = [], []
    for i in range(n):
        version = 99 if i < 3 else 3  # three from a version nobody knows
        slot_p = 0.0 if 3 <= i < 8 else float(LOGGER[mult[i]])  # five with an impossible propensity
        decisions.append(_decision_row(_decision(i, int(mult[i]), slot_p, version, False)))
        decisions.append(_decision_row(_decision(i, CANDIDATE, 0.9, 7, True)))
        if reward[i] > 0:  # the rest earned nothing and have no experience row (a lost auction, say)
            experience.append({"experience_id": f"r{i}:1:final", "event_time": T0 + i * 1000 + 14 * DAY,
                               "decision_id": f"r{i}:1", "model_version": version, "propensity": slot_p * 0.5,
                               "reward": 1.0, "final": True, "action": {"multiplier": int(mult[i])}})

    async def write() -> None:
        wh = DuckDBWarehouse(path)
        await wh.ensure_tables()
        await wh.insert("decisions", [TABLES["decisions"].validate(r) for r in decisions])  # as the BatchWriter
        await wh.insert("experience", [TABLES["experience"].validate(r) for r in experience])
        await wh.close()

    asyncio.run(write())


def test_ope_command_estimates_the_shadow_candidate_and_refuses_bad_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.duckdb"
    n = 6000
    _build(path, n, seed=1)
    as_of = T0 + n * 1000 + 15 * DAY
    assert main(["ope", "--log", str(path), "--candidate", "7", "--known-versions", "3", "--as-of", str(as_of),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    v = report["validation"]
    assert v["refused"] == {"unknown_model_version": 3, "propensity_out_of_range": 5}
    assert v["n_used"] == n - 8 and v["reward_mode"] == "closed_windows"
    assert 0 < v["imputed"]["window_closed_no_outcome"] < n  # decisions without experience earned 0
    for name in ("ips", "snips", "dr", "switch-dr"):
        e = report["estimates"][name]
        assert e["ci_low"] <= MEAN[CANDIDATE] <= e["ci_high"], name
        assert abs(e["value"] - MEAN[CANDIDATE]) < 0.06, name
    # before any window closed nothing is usable, and the report says why
    assert main(["ope", "--log", str(path), "--candidate", "7", "--known-versions", "3", "--as-of",
                 str(T0 + n * 1000), "--json"]) == 0
    early = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert early["validation"]["n_used"] == 0 and early["validation"]["deferred"]["window_open"] == n - 8


def test_ope_command_needs_the_known_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.duckdb"
    _build(path, 50, seed=2)
    assert main(["ope", "--log", str(path), "--candidate", "7"]) == 2
    assert "--known-versions" in capsys.readouterr().err


def test_ope_command_reads_the_window_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, config = tmp_path / "w.duckdb", tmp_path / "gaelp.toml"
    n = 200
    _build(path, n, seed=3)
    config.write_text("[join]\nwindow_days = 1.0\n")
    args = ["ope", "--log", str(path), "--candidate", "7", "--known-versions", "3", "--as-of",
            str(T0 + n * 1000 + 2 * DAY), "--json"]
    used = {}
    for extra in ([], ["--config", str(config)], ["--window-days", "1"]):
        assert main(args + extra) == 0
        used[len(extra) and extra[0]] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["validation"]
    assert used[0]["n_used"] == 0 and used[0]["deferred"]["window_open"] == n - 8  # 14 days: none closed yet
    assert used["--config"] == used["--window-days"] and used["--config"]["n_used"] > 0  # 1 day: closed
