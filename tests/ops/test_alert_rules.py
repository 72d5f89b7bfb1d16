"""The alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``), and every
alert is tested both firing and silent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops/prometheus/alerts.yml"
RULE_TESTS = ROOT / "ops/prometheus/alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        raise RuntimeError("promtool not found: `make system-deps` installs it (apt-get install prometheus)")
    return exe


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=RULES.parent)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_rules_are_valid(promtool: str) -> None:
    _run(promtool, "check", "rules", str(RULES))


def test_rule_unit_tests_pass(promtool: str) -> None:
    _run(promtool, "test", "rules", str(RULE_TESTS))


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    evals = [e for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for e in t.get("alert_rule_test", [])]
    firing = {e["alertname"] for e in evals if e.get("exp_alerts")}
    silent = {e["alertname"] for e in evals if not e.get("exp_alerts")}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"
    assert firing | silent <= alerts, f"tests of alerts that do not exist: {(firing | silent) - alerts}"


def test_a_broken_rule_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    """The unit tests bite: with the rollback alert's threshold moved out of reach, promtool reports failure."""
    text = RULES.read_text()
    needle = 'increase(gaelp_canary_events_total{kind="rolled_back"}[1h])) > 0'
    assert needle in text
    (tmp_path / "alerts.yml").write_text(text.replace(needle, needle[:-1] + "5"))
    (tmp_path / "alerts_test.yml").write_text(RULE_TESTS.read_text())
    proc = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "GaelpCanaryRolledBack" in proc.stdout + proc.stderr
