"""`gaelp simulate --ga4-export` → `gaelp ingest ga4` → `gaelp discover` end to end, and the
calibration it writes runs the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_service.cli import main
from simulators.calibration import load_calibration
from simulators.traffic_log import logged_traffic


def test_discover_cli_writes_a_loadable_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--days", "10", "--seed", "2", "--users", "1500", "--opportunities-per-day", "6000",
                 "--ga4-export", str(tmp_path / "ga4")]) == 0
    assert len(list((tmp_path / "ga4").glob("events_2026*.json"))) == 10
    assert main(["ingest", "ga4", str(tmp_path / "ga4"), "--warehouse", str(tmp_path / "w.duckdb"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    out, report = tmp_path / "disc.toml", tmp_path / "disc.json"
    assert main(["discover", "--warehouse", str(tmp_path / "w.duckdb"), "--out", str(out), "--report", str(report),
                 "--max-segments", "5"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cal = load_calibration(out)
    assert cal.meta.name == "discovered" and cal.n_segments == last["k"] == 4
    assert json.loads(report.read_text())["segments"]["k"] == 4
    _, slots = logged_traffic(cal, persons=200, opportunities_per_day=2_000, days=0.5, seed=0)
    assert sum(int(s.out.won.sum()) for s in slots) > 0


def test_discover_cli_names_a_missing_warehouse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["discover", "--warehouse", str(tmp_path / "no.duckdb"), "--out", str(tmp_path / "x.toml")]) == 2
    assert "warehouse" in capsys.readouterr().err


def test_simulate_rejects_a_bad_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[traffic]\nfloor_cpm = -1\n")
    assert main(["simulate", "--calibration", str(bad), "--days", "1", "--ga4-export", str(tmp_path / "g")]) == 2
    assert "floor_cpm" in capsys.readouterr().err


def test_train_rejects_a_bad_calibration_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[segments]]\nname = \"a\"\nshare = 2.0\n")
    assert main(["train", "--calibration", str(bad), "--runners", "0", "--days", "1", "--out", str(tmp_path / "t")]) == 2
    assert "segments[0].share" in capsys.readouterr().err
    assert not (tmp_path / "t" / "agent.pt").exists()


def test_discover_on_the_real_ga4_rows_keeps_the_prior_where_data_is_thin(tmp_path: Path, shared_dir: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    real = shared_dir / "reference" / "ga4"
    if not real.is_dir():
        pytest.skip("no real GA4 rows on this machine")
    assert main(["ingest", "ga4", str(real), "--warehouse", str(tmp_path / "r.duckdb"), "--no-progress"]) == 0
    out = tmp_path / "r.toml"
    assert main(["discover", "--warehouse", str(tmp_path / "r.duckdb"), "--out", str(out)]) == 0
    assert "not fitted, the prior's kept" in capsys.readouterr().out
    assert load_calibration(out).delay == load_calibration().delay
