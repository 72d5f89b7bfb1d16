"""Ops files refer only to what exists: metric names follow the conventions, compose mounts files in the repo.
(The dashboard's and the alert rules' metric names are checked in tests/ops/test_dashboard.py.)"""

from __future__ import annotations

import re
from pathlib import Path

from agent_service.metrics import NAMES, Metrics

ROOT = Path(__file__).resolve().parents[2]


def test_metric_names_follow_prometheus_conventions() -> None:
    for key, name in NAMES.items():
        assert name.startswith("gaelp_") and re.fullmatch(r"[a-z_]+", name), name
        if key in {"decide_latency", "request_latency"}:
            assert name.endswith("_duration_seconds")
    # Counters and only counters end in _total (prometheus_client exports a counter "x" as "x_total").
    for family in Metrics().registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        assert name in NAMES.values(), name
        assert name.endswith("_total") == (family.type == "counter"), name


def test_compose_mounts_existing_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for path in re.findall(r"\./(ops/[\w/.-]+):", text):
        assert (ROOT / path).exists(), path
    assert (ROOT / "ops/Dockerfile").exists()
