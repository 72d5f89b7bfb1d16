"""Rollback with lineage: a second rollback goes further back, never back to the bad version.

The registry's own ``rollback`` republishes the version before the latest; after one rollback
the latest *is* that republished copy, so a second rollback would republish the bad version
again. ``Lineage`` records, per published version, the version whose weights it carries
(its origin) and the origins that were rolled back from. A rollback marks the served origin
bad and republishes the newest earlier origin that is not bad, under a new (higher) version
number so every bidder moves to it the ordinary way (versions only go up).

The lineage lives beside the model files (``LINEAGE.json``, written atomically) for a file
registry, or in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from agent_service.errors import ModelError
from agent_service.ports.registry import ModelRegistry

__all__ = ["Lineage", "RollbackResult"]


class RollbackResult(NamedTuple):
    rolled_back_from: int
    """Version served before (the bad one's republished number, if it was a copy)."""
    bad_origin: int
    """Version whose weights were marked bad."""
    restored_origin: int
    """Version whose weights are now served."""
    now_serving: int
    """The new version number carrying them."""


class Lineage:
    """Rollback bookkeeping over a registry (see the module docstring).

    :param registry: the model registry.
    :param path: where to keep the lineage (None: in memory only).
    """

    def __init__(self, registry: ModelRegistry, path: str | Path | None = None) -> None:
        self.registry = registry
        self.path = Path(path) if path is not None else None
        self._origin: dict[int, int] = {}
        self._bad: set[int] = set()
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self._origin = {int(k): int(v) for k, v in data["origin"].items()}
                self._bad = {int(v) for v in data["bad"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"{self.path} is corrupt: {exc}") from exc

    def origin(self, version: int) -> int:
        """The version whose weights ``version`` carries (itself unless it is a rollback copy)."""
        return self._origin.get(version, version)

    @property
    def bad(self) -> frozenset[int]:
        return frozenset(self._bad)

    def rollback(self) -> RollbackResult:
        """Mark the served weights bad and republish the newest earlier good ones."""
        latest = self.registry.latest_version()
        if latest == 0:
            raise ModelError("nothing to roll back: no model version published")
        bad = self.origin(latest)
        candidates = [v for v in self.registry.versions()
                      if v < bad and self.origin(v) == v and v not in self._bad]
        if not candidates:
            raise ModelError(f"nothing to roll back to: no good version older than {bad}")
        target = max(candidates)
        # Marked, so a learner in any process adopts these weights instead of training on from the bad ones.
        version = self.registry.publish({**self.registry.load(target), "rolled_back_from": bad})
        self._bad.add(bad)
        self._origin[version] = target
        self._save()
        return RollbackResult(latest, bad, target, version)

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"origin": {str(k): v for k, v in self._origin.items()},
                                   "bad": sorted(self._bad)}))
        os.replace(tmp, self.path)
