"""The identity port: an edge-logged graph of devices and user keys, resolved to persons.

Semantics every adapter honours (``tests/test_identity_contract.py`` runs one suite
against both, and they must give identical person ids):

- ``add_links`` is idempotent by ``link_id``: a repeated link returns its stored status and
  changes nothing; a link revoked before it arrives stays revoked;
- deterministic links (login, user id) merge at once; probabilistic ones merge only when
  ``score >= merge_threshold``; every link is kept in the edge log with its status;
- a merge that would make a person larger than ``max_component_nodes`` is refused (``capped``);
- when more than ``max_ip_devices`` devices are seen on one IP, the IP is shared: its
  probabilistic links are refused and those accepted earlier are undone (``ip_fanout``);
- ``revoke`` removes a link; if it was the last path between two parts, the person splits;
- union by size: the larger person keeps its id; ties and new parts take the root with
  :func:`~agent_service.identity.model.root_preference` (user keys first, then smallest id).

Adapters: :class:`~agent_service.identity.memory.InMemoryIdentityGraph` (embedded) and
:class:`~agent_service.adapters.redis_identity.RedisIdentityGraph` (production).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agent_service.identity.model import GraphLink, Resolution

__all__ = ["IdentityGraph"]


class IdentityGraph(Protocol):
    """Device → person resolution over an edge log."""

    async def add_links(self, links: Sequence[GraphLink]) -> list[str]:
        """Apply links in order; the :class:`LinkStatus` of each (stored status for repeats)."""
        ...

    async def revoke(self, link_id: str) -> str | None:
        """Revoke a link (splitting its person if needed); its previous status, None if unknown."""
        ...

    async def resolve(self, device_id: str) -> Resolution:
        """The person of ``device_id`` with the confidence of the assignment."""
        ...

    async def resolve_many(self, device_ids: Sequence[str]) -> dict[str, Resolution]:
        """:meth:`resolve` for many devices."""
        ...

    async def assignments(self) -> dict[str, str]:
        """Device id → person id for every device seen in a link (for evaluation)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
