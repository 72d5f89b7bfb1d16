"""Ops files refer only to what exists: metric names the service exports, files in the repo."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agent_service.metrics import NAMES

ROOT = Path(__file__).resolve().parents[2]
_METRIC = re.compile(r"\bgaelp_[a-z_]+")


def _base(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in NAMES.values():
            return name[: -len(suffix)]
    return name


def test_dashboard_queries_use_exported_metrics() -> None:
    dash = json.loads((ROOT / "ops/grafana/dashboards/gaelp.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {_base(m) for e in exprs for m in _METRIC.findall(e)}
    assert used and used <= set(NAMES.values()), used - set(NAMES.values())
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_alert_rules_use_exported_metrics() -> None:
    text = (ROOT / "ops/prometheus/alerts.yml").read_text()
    used = {_base(m) for m in _METRIC.findall(text)}
    assert used and used <= set(NAMES.values()), used - set(NAMES.values())


def test_metric_names_follow_prometheus_conventions() -> None:
    for key, name in NAMES.items():
        assert name.startswith("gaelp_") and re.fullmatch(r"[a-z_]+", name), name
        if key in {"decide_latency", "request_latency"}:
            assert name.endswith("_duration_seconds")


def test_compose_mounts_existing_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for path in re.findall(r"\./(ops/[\w/.-]+):", text):
        assert (ROOT / path).exists(), path
    assert (ROOT / "ops/Dockerfile").exists()
