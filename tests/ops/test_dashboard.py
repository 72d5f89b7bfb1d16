"""The dashboard and the alert rules use only metrics the code defines, so neither can drift.

The defined names are read from the source — every prometheus_client constructor in agent_service, its name
argument resolved (a literal or a ``NAMES`` entry) — and checked against what a live ``Metrics`` registry
exports, so the reader of the source cannot silently miss a constructor.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agent_service.metrics import NAMES, Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops/grafana/dashboards/gaelp.json"
RULES = ROOT / "ops/prometheus/alerts.yml"
_CONSTRUCTORS = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
# The series each metric type exposes (prometheus_client's text format).
_SUFFIXES = {"Counter": ("_total", "_created"), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count", "_created"),
             "Summary": ("", "_sum", "_count", "_created"), "Info": ("_info",), "Enum": ("",)}
_METRIC = re.compile(r"\bgaelp_[a-z0-9_]+")


def _name_of(node: ast.expr, where: str) -> str:
    """The metric name a constructor's first argument evaluates to: "literal", NAMES["k"] or n["k"][:-6]."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        sl = node.slice
        stop = ast.literal_eval(sl.upper) if sl.upper is not None else None
        if sl.lower is None and sl.step is None and isinstance(stop, int):
            return _name_of(node.value, where)[:stop]
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in {"n", "NAMES"}:
        key = ast.literal_eval(node.slice)
        return NAMES[key]
    raise AssertionError(f"{where}: cannot resolve the metric name {ast.unparse(node)}")


def defined_series() -> dict[str, str]:
    """Every series name the code's prometheus_client constructors define → the constructor type."""
    out: dict[str, str] = {}
    for f in sorted((ROOT / "agent_service").rglob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        imported = {a.asname or a.name: a.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client"
                    for a in node.names if a.name in _CONSTRUCTORS}
        imported |= {node.name: imported[b.id] for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                     for b in node.bases if isinstance(b, ast.Name) and b.id in imported}  # e.g. BatchHistogram
        wrapped = {id(c) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == "IntervalGauges"
                   for c in ast.walk(node)}  # its Gauges are named by the caller: read at the calls below
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "IntervalGauges":
                key = ast.literal_eval(node.args[1])  # IntervalGauges(n, "key", ...): key, key_lower, key_upper
                out.update({NAMES[key + s]: "Gauge" for s in ("", "_lower", "_upper")})
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported \
                    and id(node) not in wrapped:
                kind = imported[node.func.id]
                base = _name_of(node.args[0], f"{f.relative_to(ROOT)}:{node.lineno}")
                if kind == "Counter":
                    base = base.removesuffix("_total")
                out.update({base + s: kind for s in _SUFFIXES[kind]})
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # a collapsed row holds its panels


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_source_scan_matches_the_live_registry() -> None:
    """The scan finds exactly the series a live Metrics registry defines (names and types)."""
    kinds = {"counter": "Counter", "gauge": "Gauge", "histogram": "Histogram", "summary": "Summary"}
    expected = {f.name + s: kinds[f.type] for f in Metrics().registry.collect() for s in _SUFFIXES[kinds[f.type]]}
    assert defined_series() == expected


def test_dashboard_uses_only_defined_metrics() -> None:
    defined = defined_series()
    used = {m for e in dashboard_exprs() for m in _METRIC.findall(e)}
    assert used, "the dashboard has no gaelp_ query"
    assert used <= defined.keys(), f"undefined metrics in {DASHBOARD.name}: {sorted(used - defined.keys())}"


def test_alert_rules_use_only_defined_metrics() -> None:
    defined = defined_series()
    used = {m for e in rule_exprs() for m in _METRIC.findall(e)}
    assert used <= defined.keys(), f"undefined metrics in {RULES.name}: {sorted(used - defined.keys())}"


def test_the_check_catches_a_misspelt_metric() -> None:
    defined = defined_series()
    assert "gaelp_canary_share" in defined and "gaelp_canary_shares" not in defined
    assert "gaelp_bidder_request_duration_seconds_bucket" in defined
    assert "gaelp_bidder_requests" not in defined  # a counter is queried by its _total series


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(_panels(_dashboard()["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]


def test_shadow_canary_and_experiment_rows_exist() -> None:
    rows = [p["title"] for p in _dashboard()["panels"] if p["type"] == "row"]
    for word in ("Shadow vs live", "Canary", "Experiments"):
        assert any(r.startswith(word) for r in rows), (word, rows)
