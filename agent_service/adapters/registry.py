"""Model registry adapters: versions in memory (the embedded default) and files in a directory.

The port and its rules are in :mod:`agent_service.ports.registry`; the Redis adapter, for
bidders on several hosts, is :mod:`agent_service.adapters.redis_registry`.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import torch

from agent_service.errors import CorruptModelError, ModelError
from agent_service.ports.registry import checksum, rollback, verified

__all__ = ["FileRegistry", "MemoryRegistry", "from_blob", "to_blob"]


def to_blob(state: dict[str, Any]) -> bytes:
    """The bytes a registry stores for a state dict (``torch.save``)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def from_blob(blob: bytes, version: int) -> dict[str, Any]:
    """The state dict of a verified blob (a blob torch cannot read is corrupt)."""
    try:
        state = torch.load(io.BytesIO(blob), weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise CorruptModelError(f"model version {version}: unreadable blob ({exc})") from exc
    if not isinstance(state, dict):
        raise CorruptModelError(f"model version {version}: blob holds {type(state).__name__}, not a state dict")
    return state


class MemoryRegistry:
    """Versions in a dict (embedded default); states are deep-copied through bytes."""

    def __init__(self) -> None:
        self._blobs: dict[int, tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def latest_version(self) -> int:
        return max(self._blobs, default=0)

    def publish(self, state: dict[str, Any]) -> int:
        blob = to_blob(state)
        with self._lock:
            version = self.latest_version() + 1
            self._blobs[version] = (blob, checksum(blob))
        return version

    def load(self, version: int) -> dict[str, Any]:
        if version not in self._blobs:
            raise ModelError(f"no model version {version}")
        blob, sha = self._blobs[version]
        return from_blob(verified(blob, sha, version), version)

    def versions(self) -> list[int]:
        return sorted(self._blobs)

    def rollback(self) -> int:
        return rollback(self)


class FileRegistry:
    """Versions as ``v000001.pt`` files in a directory, each with its SHA-256 in ``v000001.sha256``,
    written atomically (blob, then checksum, then ``LATEST``); ``LATEST`` names the newest.

    Several processes on one host (or a shared volume) may share the directory: the learner
    writes, bidders read. A blob written before checksums existed (no ``.sha256``) still loads
    when torch can read it.
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
        blob = to_blob(state)
        version = max(self.latest_version(), max(self.versions(), default=0)) + 1
        for name, data in ((self._path(version).name, blob),
                           (self._path(version).with_suffix(".sha256").name, checksum(blob).encode()),
                           ("LATEST", str(version).encode())):
            tmp = self.dir / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / name)
        return version

    def load(self, version: int) -> dict[str, Any]:
        path = self._path(version)
        try:
            blob = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelError(f"no model version {version} in {self.dir}") from exc
        sha_path = path.with_suffix(".sha256")
        if sha_path.exists():
            blob = verified(blob, sha_path.read_text().strip(), version)
        return from_blob(blob, version)

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.dir.glob("v*.pt"))

    def rollback(self) -> int:
        return rollback(self)
