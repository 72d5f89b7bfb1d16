"""How well the stream resolved identity, against a simulator's ground truth.

Scores what the service actually uses — the device → person assignments in the state store,
as written by the identity-links handler — with pairwise precision, recall and F1
(:func:`~agent_service.identity.evaluate_identity`), and, on the same run's links, the
"login links only" baseline (an identity graph fed only the deterministic links, revocations
honoured). Devices are every device the world showed in a bid request; the store holds
pseudonyms, so the truth's raw device ids are pseudonymised with the service's salt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from agent_service.contracts.events import IdentityLink
from agent_service.identity import GraphLink, IdentityScore, InMemoryIdentityGraph, evaluate_identity
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.ports.store import IdentityStore

__all__ = ["identity_report", "login_only_assignments", "score_dict", "store_assignments"]


async def store_assignments(store: IdentityStore, ids: Pseudonymizer, devices: Sequence[str]) -> dict[str, str]:
    """Raw device id → the person the store assigns its pseudonym to."""
    peers = await store.identity_peers([ids(d) for d in devices])
    return {d: person for d, (person, _) in zip(devices, peers, strict=True)}


async def login_only_assignments(links: Sequence[IdentityLink]) -> dict[str, str]:
    """Raw device id → person from the login links alone (in order; revocations honoured)."""
    graph = InMemoryIdentityGraph()
    for link in links:
        if link.kind != "login":
            continue
        if link.revoked:
            await graph.revoke(link.id)
        else:
            await graph.add_links([GraphLink(link.id, link.device_id, link.person_id, "login")])
    return await graph.assignments()


def score_dict(score: IdentityScore) -> dict[str, Any]:
    """An identity score as JSON-able, rounded figures."""
    return {"precision": round(score.precision, 6), "recall": round(score.recall, 6), "f1": round(score.f1, 6),
            "predicted_pairs": score.predicted_pairs, "correct_pairs": score.correct_pairs}


async def identity_report(store: IdentityStore, ids: Pseudonymizer, truth: Mapping[str, str],
                          links: Sequence[IdentityLink], statuses: Mapping[str, int]) -> dict[str, Any]:
    """The ``identity`` section of a simulation report.

    :param store: the run's state store.
    :param ids: the run's pseudonymizer.
    :param truth: raw device id → true person, for every device seen.
    :param links: the run's identity links as published (raw ids), in order.
    :param statuses: the identity graph's outcome counts (``IdentityLinks.statuses``).
    """
    devices = sorted(truth)
    graph = evaluate_identity(await store_assignments(store, ids, devices), truth)
    login = evaluate_identity(await login_only_assignments(links), truth)
    kinds = Counter("revoked" if link.revoked else
                    ("device_device" if link.other_device_id else link.kind) for link in links)
    return {"devices": len(devices), "true_pairs": graph.true_pairs, "graph": score_dict(graph),
            "login_only": score_dict(login), "links": dict(sorted(kinds.items())),
            "graph_statuses": dict(sorted(statuses.items()))}
