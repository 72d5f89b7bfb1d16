"""The wire contracts, the ports, the pipeline and the experiments type-check under ``mypy --strict``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRICT = ("agent_service/contracts", "agent_service/ports", "agent_service/pipeline", "agent_service/experiments")

pytestmark = pytest.mark.slow


def test_mypy_strict_on_contracts_ports_and_pipeline(tmp_path: Path) -> None:
    # follow-imports=silent: strict on these packages, not on everything they import
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                          "--cache-dir", str(tmp_path / "cache"), *STRICT],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
