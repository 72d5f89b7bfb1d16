"""The model registry port: versioned weights published by the learner, loaded by bidders.

Versions only go up. A bidder loads a version only when it is newer than the one it serves
(RLlib's weights sequence number), and ``rollback`` republishes an earlier version's weights
under a new, higher number so that every bidder moves to it the same way.

Adapters: :mod:`agent_service.adapters.registry` (in memory, and files in a directory).
"""

from __future__ import annotations

from typing import Any, Protocol

from agent_service.errors import ModelError

__all__ = ["ModelRegistry", "rollback"]


class ModelRegistry(Protocol):
    def latest_version(self) -> int:
        """Newest published version (0 when none)."""
        ...

    def publish(self, state: dict[str, Any]) -> int:
        """Store ``state`` as the next version and return its number."""
        ...

    def load(self, version: int) -> dict[str, Any]:
        """The state published as ``version``."""
        ...

    def versions(self) -> list[int]: ...

    def rollback(self) -> int:
        """Republish the version before the latest as a new version; return the new number."""
        ...


def rollback(registry: ModelRegistry) -> int:
    """Republish the version before ``registry``'s latest as a new version; return its number."""
    versions = registry.versions()
    if len(versions) < 2:
        raise ModelError("nothing to roll back to: fewer than two versions published")
    return registry.publish(registry.load(versions[-2]))
