"""The package layers hold: no import cycle between packages, the simulators import nothing of the
agent, and the domain imports no infrastructure (Kafka, Redis, Ray, BigQuery, DuckDB)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("agent_service", "stream_apps", "simulators")
DOMAIN = ("agent", "pipeline", "pacing", "attribution", "delay", "identity", "contracts", "ports", "experiments")
INFRA = ("kafka", "aiokafka", "faust", "redis", "ray", "google.cloud", "duckdb")


def _unit(module: str) -> str | None:
    """The layer unit of a module: ``agent_service.<sub>`` (a subpackage or top-level module), or
    ``stream_apps`` / ``simulators``; None outside the project."""
    parts = module.split(".")
    if parts[0] not in TOP:
        return None
    if parts[0] == "agent_service":
        return ".".join(parts[:2]) if len(parts) > 1 else "agent_service"
    return parts[0]


def _imports(root: Path = ROOT) -> dict[str, set[tuple[str, str]]]:
    """unit → {(imported module, file)} for every import in the project (function bodies included)."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for top in TOP:
        for f in (root / top).rglob("*.py"):
            module = ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            unit = _unit(module)
            assert unit is not None
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    out[unit].add((node.module, str(f.relative_to(root))))
                elif isinstance(node, ast.Import):
                    out[unit].update((a.name, str(f.relative_to(root))) for a in node.names)
    return out


def _graph(imports: dict[str, set[tuple[str, str]]]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = defaultdict(set)
    for unit, mods in imports.items():
        for mod, _ in mods:
            target = _unit(mod)
            if target is not None and target != unit:
                g[unit].add(target)
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(g) | {w for ws in g.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_no_package_import_cycle() -> None:
    assert _cycles(_graph(_imports())) == []


def test_the_simulators_import_nothing_of_the_agent() -> None:
    banned = ("agent_service.agent", "agent_service.lab", "agent_service.evaluation", "agent_service.pipeline",
              "agent_service.runtime", "agent_service.adapters")
    bad = sorted((mod, f) for mod, f in _imports()["simulators"] if mod.startswith(banned))
    assert bad == []


@pytest.mark.parametrize("package", DOMAIN)
def test_the_domain_imports_no_infrastructure(package: str) -> None:
    bad = sorted((mod, f) for mod, f in _imports()[f"agent_service.{package}"]
                 if mod.split(".")[0] in INFRA or mod.startswith(INFRA))
    assert bad == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    for top in TOP:
        (tmp_path / top).mkdir()
    (tmp_path / "agent_service" / "a").mkdir()
    (tmp_path / "agent_service" / "b").mkdir()
    (tmp_path / "agent_service" / "a" / "__init__.py").write_text("from agent_service.b import x\n")
    (tmp_path / "agent_service" / "b" / "__init__.py").write_text("from agent_service.a import y\n")
    (tmp_path / "simulators" / "w.py").write_text("from agent_service.agent.model import z\n")
    imports = _imports(tmp_path)
    assert _cycles(_graph(imports)) == [["agent_service.a", "agent_service.b"]]
    assert any(m.startswith("agent_service.agent") for m, _ in imports["simulators"])
