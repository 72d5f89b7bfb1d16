"""Model registry adapters: versions in memory (the embedded default) and files in a directory.

The port and its rules are in :mod:`agent_service.ports.registry`.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import torch

from agent_service.errors import ModelError
from agent_service.ports.registry import rollback

__all__ = ["FileRegistry", "MemoryRegistry"]


class MemoryRegistry:
    """Versions in a dict (embedded default); states are deep-copied through bytes."""

    def __init__(self) -> None:
        self._states: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def latest_version(self) -> int:
        return max(self._states, default=0)

    def publish(self, state: dict[str, Any]) -> int:
        buf = io.BytesIO()
        torch.save(state, buf)
        with self._lock:
            version = self.latest_version() + 1
            self._states[version] = buf.getvalue()
        return version

    def load(self, version: int) -> dict[str, Any]:
        try:
            data = self._states[version]
        except KeyError as exc:
            raise ModelError(f"no model version {version}") from exc
        return torch.load(io.BytesIO(data), weights_only=False)

    def versions(self) -> list[int]:
        return sorted(self._states)

    def rollback(self) -> int:
        return rollback(self)


class FileRegistry:
    """Versions as ``v000001.pt`` files in a directory, written atomically; ``LATEST`` names the newest.

    Several processes may share the directory (the learner writes, bidders read).
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, version: int) -> Path:
        return self.dir / f"v{version:06d}.pt"

    def latest_version(self) -> int:
        try:
            return int((self.dir / "LATEST").read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise ModelError(f"{self.dir / 'LATEST'} is corrupt") from exc

    def publish(self, state: dict[str, Any]) -> int:
        version = max(self.latest_version(), max(self.versions(), default=0)) + 1
        tmp = self.dir / f".v{version:06d}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self._path(version))
        latest_tmp = self.dir / ".LATEST.tmp"
        latest_tmp.write_text(str(version))
        os.replace(latest_tmp, self.dir / "LATEST")
        return version

    def load(self, version: int) -> dict[str, Any]:
        path = self._path(version)
        if not path.exists():
            raise ModelError(f"no model version {version} in {self.dir}")
        return torch.load(path, weights_only=False)

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.dir.glob("v*.pt"))

    def rollback(self) -> int:
        return rollback(self)
