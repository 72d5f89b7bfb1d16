"""Cross-device identity: links, link outcomes, resolutions, confidence and evaluation.

A link ties a device to a user key (deterministic: a login or a hashed user id) or to
another device (probabilistic: shared IP + user agent, co-occurrence) with a score. The
identity graph's nodes are devices (``d:<id>``) and user keys (``u:<key>``); a person is a
connected component over *accepted* links, named by its root node (a ``u:`` node when the
component has one). An unlinked device is the person ``d:<device id>``.

Confidence of a device → person: the largest product of link scores over paths from the
device to the person's root node (deterministic links score 1.0), so a device tied by
login is 1.0 and a device attached through one 0.9 IP match and one 0.8 co-occurrence is
0.72. An unlinked device stands for itself with confidence 1.0.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from agent_service.errors import DecodeError

__all__ = [
    "ACCEPTED",
    "DETERMINISTIC_KINDS",
    "KINDS",
    "PROBABILISTIC_KINDS",
    "GraphLink",
    "IdentityScore",
    "LinkStatus",
    "Resolution",
    "device_node",
    "evaluate_identity",
    "max_product_confidence",
    "root_preference",
    "user_node",
]

DETERMINISTIC_KINDS: tuple[str, ...] = ("login", "user_id")
"""Links that name the person for sure: they merge at once, score 1.0."""
PROBABILISTIC_KINDS: tuple[str, ...] = ("ip_ua", "co_occurrence")
"""Device-to-device links with a score; they merge only at or above the threshold."""
KINDS = DETERMINISTIC_KINDS + PROBABILISTIC_KINDS


class LinkStatus:
    """What happened to a link (strings, so that both adapters store the same values)."""

    MERGED = "merged"
    """Accepted and joined two persons."""
    LINKED = "linked"
    """Accepted; both ends were already the same person (adds a redundant path)."""
    BELOW_THRESHOLD = "below_threshold"
    """Probabilistic link scored under the merge threshold: logged, not merged."""
    CAPPED = "capped"
    """Merging would exceed the component size cap: logged, not merged."""
    IP_FANOUT = "ip_fanout"
    """The link's IP is shared by more devices than the fan-out cap (carrier NAT, office)."""
    REVOKED = "revoked"
    """Revoked (or revoked before it arrived): never merges again."""


ACCEPTED: frozenset[str] = frozenset({LinkStatus.MERGED, LinkStatus.LINKED})
"""Statuses of links that are edges of the identity graph."""


def device_node(device_id: str) -> str:
    """Graph node of a device."""
    return "d:" + device_id


def user_node(user_key: str) -> str:
    """Graph node of a user key (hashed user id / login)."""
    return "u:" + user_key


def root_preference(node: str) -> tuple[int, str]:
    """Sort key choosing a component's root: user keys first, then the smallest id."""
    return (0 if node.startswith("u:") else 1, node)


@dataclass(frozen=True, slots=True)
class GraphLink:
    """One identity observation as an edge of the identity graph (the pipeline builds it from the
    contract's :class:`agent_service.contracts.events.IdentityLink`).

    :param link_id: unique id of the link (idempotency key; revocation names it).
    :param device_id: the device observed.
    :param other: a user key for deterministic kinds, another device id for probabilistic ones.
    :param kind: one of :data:`KINDS`.
    :param score: match score in [0, 1] (forced to 1.0 for deterministic kinds).
    :param ip: the shared IP behind a probabilistic link ("" if none); counts toward fan-out.
    :param event_time: event time in ms (kept in the edge log).
    """

    link_id: str
    device_id: str
    other: str
    kind: str = "login"
    score: float = 1.0
    ip: str = ""
    event_time: int = 0

    def __post_init__(self) -> None:
        if not self.link_id:
            raise DecodeError("$.link_id", "must be a non-empty string")
        if not self.device_id:
            raise DecodeError("$.device_id", "must be a non-empty string")
        if not self.other:
            raise DecodeError("$.other", "must be a non-empty string")
        if self.kind not in KINDS:
            raise DecodeError("$.kind", f"unknown link kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not (isinstance(self.score, int | float) and math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise DecodeError("$.score", f"must be a number in [0, 1], got {self.score!r}")
        if self.deterministic:
            object.__setattr__(self, "score", 1.0)

    @property
    def deterministic(self) -> bool:
        """True for login / user-id links."""
        return self.kind in DETERMINISTIC_KINDS

    @property
    def nodes(self) -> tuple[str, str]:
        """The two graph nodes this link joins."""
        other = user_node(self.other) if self.deterministic else device_node(self.other)
        return device_node(self.device_id), other


class Resolution(NamedTuple):
    """The person a device resolves to (same fields as the state store's ``Identity``)."""

    person_id: str
    """Root node of the device's component (``u:...`` or ``d:...``); ``d:<device>`` when unlinked."""
    confidence: float
    """Best product of link scores from the device to the root; 1.0 for deterministic or unlinked."""
    device_count: int
    """Devices of this person (1 when unlinked)."""


def max_product_confidence(root: str, edges: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Best product of scores from ``root`` to every node reachable over ``edges`` (Dijkstra on -log).

    :param root: the component's root node.
    :param edges: undirected ``(node, node, score)`` with scores in (0, 1].
    """
    adj: dict[str, list[tuple[str, float]]] = {}
    for a, b, s in edges:
        if s <= 0:
            continue
        adj.setdefault(a, []).append((b, s))
        adj.setdefault(b, []).append((a, s))
    best = {root: 1.0}
    heap = [(-1.0, root)]
    while heap:
        neg, node = heapq.heappop(heap)
        conf = -neg
        if conf < best.get(node, 0.0):
            continue
        for other, s in adj.get(node, ()):
            c = conf * s
            if c > best.get(other, 0.0):
                best[other] = c
                heapq.heappush(heap, (-c, other))
    return best


class IdentityScore(NamedTuple):
    """Pairwise quality of a device → person assignment."""

    precision: float
    """Share of predicted same-person device pairs that are truly the same person."""
    recall: float
    """Share of true same-person device pairs that are predicted."""
    f1: float
    """Harmonic mean of precision and recall."""
    true_pairs: int
    """Same-person device pairs in the truth."""
    predicted_pairs: int
    """Same-person device pairs predicted."""
    correct_pairs: int
    """Pairs both predicted and true."""


def evaluate_identity(predicted: Mapping[str, str], truth: Mapping[str, str]) -> IdentityScore:
    """Pairwise precision, recall and F1 of a device → person mapping against the truth.

    A pair of devices is positive when both map to the same person. Devices of the truth
    missing from ``predicted`` count as predicted alone; devices not in the truth are
    ignored. With no pairs on a side the corresponding ratio is 1.0.

    :param predicted: device id → predicted person id.
    :param truth: device id → true person id (e.g. the simulator's ground truth).
    """
    cells: dict[tuple[str, str], int] = {}
    pred_sizes: dict[str, int] = {}
    true_sizes: dict[str, int] = {}
    for device, person in truth.items():
        guess = predicted.get(device, "\x00alone:" + device)
        cells[(guess, person)] = cells.get((guess, person), 0) + 1
        pred_sizes[guess] = pred_sizes.get(guess, 0) + 1
        true_sizes[person] = true_sizes.get(person, 0) + 1

    def pairs(n: int) -> int:
        return n * (n - 1) // 2

    tp = sum(pairs(n) for n in cells.values())
    pp = sum(pairs(n) for n in pred_sizes.values())
    tt = sum(pairs(n) for n in true_sizes.values())
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return IdentityScore(precision, recall, f1, tt, pp, tp)
