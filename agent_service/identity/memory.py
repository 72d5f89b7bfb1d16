"""The embedded identity graph: plain dicts, the reference semantics of the port.

Data: the edge log (``link_id -> _Edge``), adjacency of accepted links per node, the root
of every node in a multi-node component and the members of each root, and per IP the
devices seen and the accepted links that cite it. Merges relabel the smaller component
(union by size, components are capped so this is bounded); a revoked or undone link
triggers a breadth-first search that splits the component if the link was a bridge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent_service.identity.config import IdentityConfig
from agent_service.identity.model import (
    ACCEPTED,
    GraphLink,
    LinkStatus,
    Resolution,
    device_node,
    max_product_confidence,
    root_preference,
)

__all__ = ["InMemoryIdentityGraph"]


@dataclass(slots=True)
class _Edge:
    a: str
    b: str
    score: float
    ip: str
    deterministic: bool
    status: str


class InMemoryIdentityGraph:
    """Identity graph in process memory (tests, `gaelp simulate`, the bench baseline).

    :param config: threshold and caps.
    """

    def __init__(self, config: IdentityConfig | None = None) -> None:
        self.config = config or IdentityConfig()
        self._edges: dict[str, _Edge] = {}
        self._adj: dict[str, dict[str, tuple[str, float]]] = {}
        self._root: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}
        self._ip_devices: dict[str, set[str]] = {}
        self._ip_edges: dict[str, set[str]] = {}
        self._ip_shared: set[str] = set()
        self._devices: set[str] = set()

    # ------------------------------------------------------------------------------------
    # Port
    # ------------------------------------------------------------------------------------
    async def add_links(self, links: Sequence[GraphLink]) -> list[str]:
        """Apply ``links`` in order (see the port for the rules)."""
        return [self.add_link(link) for link in links]

    async def revoke(self, link_id: str) -> str | None:
        """Revoke ``link_id``; its previous status (None if it had not arrived yet)."""
        edge = self._edges.get(link_id)
        if edge is None:
            self._edges[link_id] = _Edge("", "", 0.0, "", False, LinkStatus.REVOKED)
            return None
        previous = edge.status
        self._detach(link_id, LinkStatus.REVOKED)
        return previous

    async def resolve(self, device_id: str) -> Resolution:
        """The person of ``device_id``."""
        return self.resolve_now(device_id)

    async def resolve_many(self, device_ids: Sequence[str]) -> dict[str, Resolution]:
        """:meth:`resolve` for each id."""
        return {d: self.resolve_now(d) for d in device_ids}

    async def assignments(self) -> dict[str, str]:
        """Device id → person id for every device seen."""
        return {node[2:]: self._root.get(node, node) for node in self._devices}

    async def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------------------------
    # Synchronous core (also used by the bench baseline)
    # ------------------------------------------------------------------------------------
    def add_link(self, link: GraphLink) -> str:
        """Apply one link; its status."""
        known = self._edges.get(link.link_id)
        if known is not None:
            return known.status
        a, b = link.nodes
        self._devices.add(a)
        if b.startswith("d:"):
            self._devices.add(b)
        status = None
        ip = "" if link.deterministic else link.ip
        if ip:
            if ip in self._ip_shared:
                status = LinkStatus.IP_FANOUT
            else:
                seen = self._ip_devices.setdefault(ip, set())
                seen.update((a, b))
                if len(seen) > self.config.max_ip_devices:
                    self._ip_shared.add(ip)
                    for eid in sorted(self._ip_edges.pop(ip, set())):
                        self._detach(eid, LinkStatus.IP_FANOUT)
                    del self._ip_devices[ip]
                    status = LinkStatus.IP_FANOUT
        if status is None and not link.deterministic and link.score < self.config.merge_threshold:
            status = LinkStatus.BELOW_THRESHOLD
        if status is None:
            status = self._attach(link.link_id, a, b, link.score)
        if ip and status in ACCEPTED:
            self._ip_edges.setdefault(ip, set()).add(link.link_id)
        self._edges[link.link_id] = _Edge(a, b, link.score, ip, link.deterministic, status)
        return status

    def resolve_now(self, device_id: str) -> Resolution:
        """The person of ``device_id`` (synchronous)."""
        node = device_node(device_id)
        root = self._root.get(node)
        if root is None:
            return Resolution(node, 1.0, 1)
        members = self._members[root]
        edges = [(m, other, s) for m in members for other, s in self._adj.get(m, {}).values()]
        conf = max_product_confidence(root, edges).get(node, 0.0)
        return Resolution(root, conf, sum(1 for m in members if m.startswith("d:")))

    # ------------------------------------------------------------------------------------
    # Union and split
    # ------------------------------------------------------------------------------------
    def _attach(self, link_id: str, a: str, b: str, score: float) -> str:
        ra, rb = self._root.get(a, a), self._root.get(b, b)
        if ra == rb:
            if a == b:
                return LinkStatus.LINKED  # a self-link: nothing to connect
            self._add_adj(link_id, a, b, score)
            return LinkStatus.LINKED
        ma = self._members.get(ra, {ra})
        mb = self._members.get(rb, {rb})
        if len(ma) + len(mb) > self.config.max_component_nodes:
            return LinkStatus.CAPPED
        win, lose = ra, rb
        if len(mb) > len(ma) or (len(mb) == len(ma) and root_preference(rb) < root_preference(ra)):
            win, lose = rb, ra
        moving = self._members.pop(lose, {lose})
        merged = self._members.setdefault(win, {win})
        self._root[win] = win
        for m in moving:
            self._root[m] = win
        merged |= moving
        self._add_adj(link_id, a, b, score)
        return LinkStatus.MERGED

    def _add_adj(self, link_id: str, a: str, b: str, score: float) -> None:
        self._adj.setdefault(a, {})[link_id] = (b, score)
        self._adj.setdefault(b, {})[link_id] = (a, score)

    def _detach(self, link_id: str, new_status: str) -> None:
        edge = self._edges[link_id]
        was = edge.status
        edge.status = new_status
        if was not in ACCEPTED or edge.a == edge.b:
            return
        for node in (edge.a, edge.b):
            self._adj.get(node, {}).pop(link_id, None)
            if not self._adj.get(node, True):
                del self._adj[node]
        if edge.ip:
            self._ip_edges.get(edge.ip, set()).discard(link_id)
        part_a = self._reach(edge.a)
        if edge.b in part_a:
            return
        part_b = self._reach(edge.b)
        root = self._root[edge.a]
        keep, split = (part_a, part_b) if root in part_a else (part_b, part_a)
        self._relabel(root, keep)
        self._relabel(min(split, key=root_preference), split)

    def _reach(self, start: str) -> set[str]:
        seen = {start}
        todo = [start]
        while todo:
            node = todo.pop()
            for other, _ in self._adj.get(node, {}).values():
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

    def _relabel(self, root: str, part: set[str]) -> None:
        old = self._members.get(root)
        if len(part) == 1:
            (node,) = part
            self._root.pop(node, None)
            if old is not None and root == node:
                del self._members[root]
            return
        for m in part:
            self._root[m] = root
        self._members[root] = set(part)
