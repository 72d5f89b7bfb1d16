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


def test_compose_runs_the_candidate_role_like_the_bidder() -> None:
    """The candidate service: the bidder's image, settings and registry, its version from the environment."""
    import yaml

    from agent_service.config import load_config

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    cand, bidder = services["candidate"], services["bidder"]
    assert cand["command"] == ["serve", "--roles", "candidate", *bidder["command"][3:]]
    assert cand["build"] == bidder["build"]
    env = dict(cand["environment"])
    assert env.pop("GAELP_CANDIDATE_VERSION") == "${GAELP_CANDIDATE_VERSION:-0}" and env == bidder["environment"]
    assert load_config(env={"GAELP_CANDIDATE_VERSION": "12"}).serve.candidate_version == 12
    prometheus = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    scraped = {n for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert "candidate" in scraped
