"""The identity-links handler: wire links into the identity graph, its verdicts into the store.

Per batch of (pseudonymised) ``IdentityLink`` records, in a fixed number of round trips:

1. read, from the state store, the current person of every device the batch names and every
   device assigned to that person (and, for links citing an IP, the devices seen behind it),
   while step 2 runs (the graph's keys are not the store's);
2. apply the links to the :class:`~agent_service.identity.port.IdentityGraph` in order —
   logins merge at once; probabilistic links merge only at or above ``join.identity_min_score``;
   merges that would exceed ``identity.max_component_nodes`` are refused; an IP seen on more
   than ``identity.max_ip_devices`` devices is shared, its links are refused and those accepted
   before are undone; ``revoked`` records revoke their link (the person splits if that link
   was a bridge). The graph keeps every link in its edge log, idempotent by link id;
3. resolve every device those persons had or now have, and write each device's person and
   confidence into the store (``IdentityStore.assign_identities``).

Journeys follow the person: a device that changes person — merged in, split out by a
revocation or an IP found shared — takes its own touches (and their click marks) with it,
so new touches and conversions go to the right person and no stale device → person link is
left behind. Credit already given to a conversion stays where it was given (credits are
exactly-once effects and are not recomputed); only joins after the change see the new
journeys.

Wire links map onto the graph (whose nodes are devices ``d:`` and user keys ``u:``):
``login`` is a deterministic device → user key link; a device-to-device match is a scored
device → device link; a scored device → *person* match (what the simulator emits) goes through
the person's *anchor*, a stand-in device ``~person:<id>`` tied to the user key by a
deterministic link of its own, so the device joins the person with the match's score as
confidence. Every person named by a link gets its anchor (one graph node), which also tells
the handler which component holds which user key. Anchors are never assigned in the store.

Person ids in the store keep their convention: a component with a user key is named by its
smallest key's pseudonym (what conversions with a ``user_id`` join on — whatever node the
graph keeps as root, since its union by size may keep a device), one without is ``d:<its root
device>``; the device count is the number of devices assigned to the person. Redelivery changes nothing: the graph ignores links it has seen, and writing the
same verdicts again is a no-op. With several stream workers on the identity topic, two batches
touching the same person could interleave between steps 2 and 3 (one stale write until that
person's next link); ``gaelp serve`` runs one identity agent per process.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from agent_service.config import GaelpConfig
from agent_service.contracts.events import IdentityLink
from agent_service.identity import (
    GraphLink,
    IdentityConfig,
    IdentityGraph,
    InMemoryIdentityGraph,
    LinkStatus,
    Resolution,
)
from agent_service.ports.store import IdentityAssignment, IdentityStore
from agent_service.units import DAY_S

__all__ = ["ANCHOR_PREFIX", "IdentityLinks", "graph_config"]

ANCHOR_PREFIX = "~person:"
"""Device id prefix of person anchors (pseudonyms are hex, so no real device starts with it)."""
_ANCHOR_LINK = "~anchor:"


def graph_config(cfg: GaelpConfig) -> IdentityConfig:
    """The identity graph's settings from GAELP's configuration."""
    return IdentityConfig(merge_threshold=max(cfg.join.identity_min_score, 1e-9),
                          max_component_nodes=cfg.identity.max_component_nodes,
                          max_ip_devices=cfg.identity.max_ip_devices, key_prefix=cfg.identity.key_prefix)


def _names(keys: Sequence[str], resolved: Mapping[str, Resolution]) -> dict[str, str]:
    """Graph root → the store's name of its person: its smallest user key (found through the
    keys' anchors; the graph's root itself may be a device, as merges keep the larger side's)."""
    names: dict[str, str] = {}
    for key in sorted(keys):
        names.setdefault(resolved[ANCHOR_PREFIX + key].person_id, key)
    return names


def _person(device_id: str, res: Resolution, names: Mapping[str, str]) -> str | None:
    """The store's person id of a device (None: the device stands alone)."""
    root = res.person_id
    if root in names:
        return names[root]
    if root.startswith("u:"):
        return root[2:]
    if root.startswith("d:" + ANCHOR_PREFIX):
        return root[2 + len(ANCHOR_PREFIX):]
    if root == "d:" + device_id and res.device_count <= 1:
        return None
    return root


class IdentityLinks:
    """Applies identity-link batches (see the module docstring).

    :param cfg: configuration (threshold in ``join``, caps in ``identity``).
    :param store: the state store the verdicts are written to.
    :param graph: the identity graph (default: an in-process graph with ``cfg``'s settings).
    """

    def __init__(self, cfg: GaelpConfig, store: IdentityStore, graph: IdentityGraph | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.graph: IdentityGraph = graph or InMemoryIdentityGraph(graph_config(cfg))
        self._journey_ttl = int(cfg.join.window_days * DAY_S) + 2 * DAY_S
        self.statuses: Counter[str] = Counter()
        """Graph outcome of every link record handled (redeliveries included)."""
        self.reassigned = 0
        """Devices whose person changed in the store."""

    async def handle(self, links: Sequence[IdentityLink]) -> tuple[list[str], int]:
        """Apply one batch of pseudonymised links.

        :returns: the graph status of each record and the number of devices whose person changed.
        """
        if not links:
            return [], 0
        endpoints = _unique(d for link in links for d in (link.device_id, link.other_device_id) if d)
        by_ip: dict[str, list[str]] = {}
        for link in links:
            if link.ip and link.kind == "probabilistic":
                by_ip.setdefault(link.ip, []).extend(d for d in (link.device_id, link.other_device_id) if d)

        async def read() -> tuple[dict[str, list[str]], list[tuple[str, list[str]]]]:
            members = dict(zip(by_ip, await self.store.ip_devices(
                [(ip, _unique(devs)) for ip, devs in by_ip.items()], self.cfg.identity.max_ip_devices + 1),
                strict=True)) if by_ip else {}
            return members, await self.store.identity_peers(endpoints)
        # The store's reads and the graph's writes touch different keys: they overlap (the
        # worker's side of one runs while Redis runs the other).
        # Not a TaskGroup: its ExceptionGroup would hide the StoreError the stream's retry expects.
        reading = asyncio.ensure_future(read())
        try:
            statuses = await self._apply(links)
        except BaseException:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            raise
        ip_members, before = await reading
        self.statuses.update(statuses)
        known = set(endpoints)
        more = _unique(d for link, st in zip(links, statuses, strict=True) if st == LinkStatus.IP_FANOUT and link.ip
                       for d in ip_members.get(link.ip, ()) if d not in known)
        if more:
            before += await self.store.identity_peers(more)
        # Every device of every person the batch may have changed: the old persons' devices,
        # and the devices of every user key involved (batch's or old persons').
        keys = _unique([*(link.person_id for link in links if link.person_id),
                        *(person for person, _ in before if not person.startswith("d:"))])
        candidates = _unique([*endpoints, *more, *(d for _, devices in before for d in devices)])
        known = set(candidates)
        candidates += _unique(d for devices in await self.store.person_devices(keys) for d in devices
                              if d not in known)
        resolved = await self.graph.resolve_many([*candidates, *(ANCHOR_PREFIX + k for k in keys)])
        names = _names(keys, resolved)
        assignments = []
        for d in candidates:
            res = resolved[d]
            person = _person(d, res, names)
            assignments.append(IdentityAssignment(d, person, res.confidence if person is not None else 1.0))
        moved = await self.store.assign_identities(assignments, self._journey_ttl)
        self.reassigned += moved
        return statuses, moved

    async def _apply(self, links: Sequence[IdentityLink]) -> list[str]:
        """Links and revocations into the graph, in order; the graph status of each record."""
        out: list[str] = []
        pending: list[GraphLink] = []
        index: list[int] = []  # position in `pending` of each record's own graph link

        async def flush() -> None:
            if pending:
                got = await self.graph.add_links(pending)
                out.extend(got[i] for i in index)
                pending.clear()
                index.clear()

        for link in links:
            if link.revoked:
                await flush()
                await self.graph.revoke(link.id)
                out.append(LinkStatus.REVOKED)
                continue
            pending.extend(self._graph_links(link))
            index.append(len(pending) - 1)
        await flush()
        return out

    def _graph_links(self, link: IdentityLink) -> list[GraphLink]:
        """The record's graph link, after its person's anchor link (added once per person)."""
        kind = "ip_ua" if link.ip else "co_occurrence"
        ip = link.ip or ""
        if link.other_device_id:
            return [GraphLink(link.id, link.device_id, link.other_device_id, kind, link.score, ip, link.event_time)]
        person = link.person_id
        anchor = GraphLink(_ANCHOR_LINK + person, ANCHOR_PREFIX + person, person, "login", 1.0, "", link.event_time)
        if link.kind == "login":
            return [anchor, GraphLink(link.id, link.device_id, person, "login", 1.0, "", link.event_time)]
        own = GraphLink(link.id, link.device_id, ANCHOR_PREFIX + person, kind, link.score, ip, link.event_time)
        return [anchor, own]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
