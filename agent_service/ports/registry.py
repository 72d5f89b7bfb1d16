"""The model registry port: versioned weights published by the learner, loaded by bidders.

Rules every adapter keeps (``tests/contract/test_registry_contract.py`` runs one suite on all):

- Versions only go up. ``publish`` stores the blob and its SHA-256 first and only then makes
  the version visible as ``latest_version``, so a reader never sees a version whose blob is
  not complete. Two publishers never get the same number.
- ``load`` verifies the checksum: a corrupt, truncated or missing blob raises
  :class:`~agent_service.errors.CorruptModelError`; a bidder then keeps serving the last good
  version (``runtime.model_watch``).
- A bidder loads a version only when it is newer than the one it serves (RLlib's weights
  sequence number), and ``rollback`` republishes an earlier version's weights under a new,
  higher number, so every bidder — on every host — moves to it the same way.

Adapters (:mod:`agent_service.adapters.registry`): in memory (the embedded default), files in a
directory (one host, or a shared volume), and Redis (every bidder on every host; a publish
is also announced on a pub/sub channel, see :class:`VersionNotices`).

The blob is ``torch.save`` of the state dict: the checksum guards integrity (a torn write, a
bit flip, a half-copied file), not authenticity — the registry is trusted like the model
directory itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from agent_service.errors import CorruptModelError, ModelError

__all__ = ["ModelRegistry", "VersionNotices", "checksum", "promote", "rollback", "verified"]


class ModelRegistry(Protocol):
    def latest_version(self) -> int:
        """Newest published version (0 when none)."""
        ...

    def publish(self, state: dict[str, Any]) -> int:
        """Store ``state`` as the next version and return its number."""
        ...

    def load(self, version: int) -> dict[str, Any]:
        """The state published as ``version``, its checksum verified.

        :raises CorruptModelError: the blob is missing, truncated or does not match its checksum.
        """
        ...

    def versions(self) -> list[int]:
        """Versions still held, oldest first."""
        ...

    def rollback(self) -> int:
        """Republish the version before the latest as a new version; return the new number."""
        ...


@runtime_checkable
class VersionNotices(Protocol):
    """A registry that announces publishes (Redis pub/sub), so bidders need not poll fast."""

    def notices(self) -> AsyncIterator[int]:
        """Versions as they are published (best effort: a reader still polls now and then)."""
        ...


def checksum(blob: bytes) -> str:
    """The SHA-256 of a weights blob, hex."""
    return hashlib.sha256(blob).hexdigest()


def verified(blob: bytes | None, expected: str | None, version: int) -> bytes:
    """``blob`` if it matches ``expected``.

    :raises CorruptModelError: naming the version and what is wrong.
    """
    if blob is None or expected is None:
        raise CorruptModelError(f"model version {version}: blob or checksum missing (partial publish?)")
    if checksum(blob) != expected:
        raise CorruptModelError(f"model version {version}: blob of {len(blob)} bytes fails its SHA-256")
    return blob


def rollback(registry: ModelRegistry) -> int:
    """Republish the version before ``registry``'s latest as a new version; return its number."""
    versions = registry.versions()
    if len(versions) < 2:
        raise ModelError("nothing to roll back to: fewer than two versions published")
    # Marked, so a learner in any process adopts these weights (``OnlineLearner.follow_rollback``).
    return registry.publish({**registry.load(versions[-2]), "rolled_back_from": versions[-1]})


def promote(registry: ModelRegistry, version: int) -> int:
    """Make ``version``'s weights the live ones: republish them as a new, higher version (bidders
    serve the newest, so every bidder moves to it the way it follows a rollback); return its number.

    Marked like a rollback, so a learner in any process trains on from the promoted weights
    (``OnlineLearner.follow_rollback``) instead of publishing its own line over them.
    """
    latest = registry.latest_version()
    if version == latest:
        return latest
    return registry.publish({**registry.load(version), "rolled_back_from": latest, "promoted_from": version})
