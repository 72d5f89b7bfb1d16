"""`gaelp simulate` end to end on the embedded defaults: report, plots, determinism, learning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_service.cli import main

_SMALL = ["--days", "0.5", "--opportunities-per-day", "6000", "--drain-days", "15", "--no-progress"]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim_a")
    assert main(["simulate", *_SMALL, "--seed", "11", "--out", str(out)]) == 0
    return out


def test_report_has_the_promised_figures(run_a: Path) -> None:
    report = json.loads((run_a / "report.json").read_text())
    for key in ("budget", "spend", "impressions", "clicks", "conversions", "conversion_value", "model_versions",
                "per_day"):
        assert key in report
    assert 0 < report["spend"] <= report["budget"]
    assert report["impressions"] > 0 and report["clicks"] > 0
    assert report["model_versions"]["published"] > 1 and len(report["model_versions"]["served"]) > 1
    assert report["per_day"][0]["spend"] == pytest.approx(report["spend"])
    assert report["windows_closed"] == report["impressions"]  # every bought impression's window closed
    assert report["dead_letters"] == 0
    for name in report["plots"]:
        assert (run_a / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_report_other_seed_other_report(run_a: Path, tmp_path: Path) -> None:
    assert main(["simulate", *_SMALL, "--seed", "11", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "report.json").read_bytes() == (run_a / "report.json").read_bytes()
    assert main(["simulate", *_SMALL, "--seed", "12", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "report.json").read_bytes() != (run_a / "report.json").read_bytes()


def test_bad_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[budget]\ndaily_usd = -1\n")
    assert main(["simulate", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "budget.daily_usd" in capsys.readouterr().err
