"""The state store ports: one small Protocol per use case, and ``StateStore``, their union.

=================  ====================================================  ================================
port               what for                                              used by
=================  ====================================================  ================================
``DecideStore``    the decision path: read context, reserve and store    ``pipeline.decide.Decider``
``RecordReader``   stored decisions and handler outputs, read back       ``runtime.warehouse_sink``
``OutcomeStore``   auction results, clicks, conversion joins, windows'   ``pipeline.outcomes.Outcomes``
                   final records (with ``RecordReader``)
``IdentityStore``  the identity graph's device → person verdicts         ``pipeline.identity_links``,
                                                                         ``runtime.identity_eval``
``WindowStore``    event time: watermarks, parked conversions, windows   ``pipeline.flow.Flow``
``BudgetStore``    a period's ledger read and set (admin, reports)       ``runtime.serve``, ``.simulate``
``ProfileStore``   every person's profile, links and journey, exported   ``runtime.userdb`` (``gaelp
                   in batches and imported (the warehouse user DB)       users``)
=================  ====================================================  ================================

Consumers that hand the store on take a union: ``HandlerStore`` (outcomes and identity:
``Outcomes``, which builds the identity-links handler), ``StreamStore`` (and windows: ``Flow``)
and ``StateStore`` (every port, with ``start``/``stop``: ``runtime.assembly``, both adapters).

Every write is idempotent by the key it names, so a redelivered event changes nothing:
``reserve_and_put`` by decision id, ``settle`` by reservation id, ``record_*`` and
``claim_many`` are put-if-absent by their claim key and return what was stored first (the
outbox of a handler: on redelivery the same outputs are emitted again and deduplicated
downstream by their ids). Budget operations are atomic: concurrent reservations never let
``spent + reserved`` exceed the budget.

Adapters: ``adapters.memory_store.MemoryStore`` (embedded) and ``adapters.redis_store.RedisStore``
(production; key layout documented there) implement ``StateStore``.
``tests/contract/test_store_contract.py`` runs the same suite, port by port, against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from agent_service.contracts.events import Decision, Touch
from agent_service.errors import BudgetError
from agent_service.units import DAY_MS

__all__ = ["ACTIVITY_HALF_LIFE_MS", "Activity", "BudgetState", "BudgetStore", "ClickEffect", "ContextQuery", "DecideContext",
           "DecideStore", "DecisionDraft", "DeviceShare", "HandlerStore", "Identity", "IdentityAssignment", "IdentityStore",
           "JoinContext", "JoinEffect", "JoinQuery", "OutcomeStore", "PersonProfile", "ProfileStore", "RecordReader",
           "ResultEffect", "StateStore", "StreamStore", "WindowStore", "check_drafts"]


class BudgetState(NamedTuple):
    """A budget ledger for one campaign and period, in micros."""

    budget: int
    spent: int
    reserved: int

    @property
    def remaining(self) -> int:
        """What may still be reserved."""
        return self.budget - self.spent - self.reserved


ACTIVITY_HALF_LIFE_MS = 3 * DAY_MS
"""Half-life of a request in a person's recent activity (``Activity``)."""


class Activity(NamedTuple):
    """A person's recent requests, each weighted ``2^(-age / ACTIVITY_HALF_LIFE_MS)`` as of
    ``at_ms`` (the latest request counted)."""

    requests: float = 0.0
    search: float = 0.0
    """The same sum over the requests that offered paid search."""
    at_ms: int = 0

    def add(self, t_ms: int, search: bool) -> Activity:
        """With one more request at ``t_ms`` (an older one than ``at_ms`` counts at its age)."""
        if t_ms >= self.at_ms:
            fade = 2.0 ** (-(t_ms - self.at_ms) / ACTIVITY_HALF_LIFE_MS)
            return Activity(self.requests * fade + 1.0, self.search * fade + float(search), t_ms)
        w = 2.0 ** (-(self.at_ms - t_ms) / ACTIVITY_HALF_LIFE_MS)
        return Activity(self.requests + w, self.search + w * float(search), self.at_ms)

    def rebased(self, at_ms: int) -> Activity:
        """The same requests weighted as of a later ``at_ms`` (each faded by the extra age), so
        two activities can be added or subtracted term by term."""
        fade = 2.0 ** (-(at_ms - self.at_ms) / ACTIVITY_HALF_LIFE_MS)
        return Activity(self.requests * fade, self.search * fade, at_ms)

    def merged(self, other: Activity) -> Activity:
        """With ``other``'s requests too (a device's share joining a person), as of the later time."""
        t = max(self.at_ms, other.at_ms)
        a, b = self.rebased(t), other.rebased(t)
        return Activity(a.requests + b.requests, a.search + b.search, t)

    def without(self, share: Activity) -> Activity:
        """Without ``share``, a part of these requests (a device's share leaving its person), as
        of the later time; the float residue of removing everything is clamped to 0, never below."""
        t = max(self.at_ms, share.at_ms)
        a, b = self.rebased(t), share.rebased(t)
        return Activity(max(0.0, a.requests - b.requests), max(0.0, a.search - b.search), t)


class Identity(NamedTuple):
    """The person a device resolves to."""

    person_id: str
    confidence: float
    """1.0 for deterministic links and for an unlinked device standing for itself."""
    device_count: int
    """Devices known for this person (1 when unlinked)."""


class IdentityAssignment(NamedTuple):
    """Where the identity graph puts a device (see ``IdentityStore.assign_identities``)."""

    device_id: str
    person_id: str | None
    """The person (a user pseudonym, or ``d:<device>`` for a person known only by devices);
    None: the device stands alone again (unlinked)."""
    confidence: float
    """The graph's confidence of the assignment (1.0 for deterministic or unlinked)."""


class DecideContext(NamedTuple):
    """Everything the decision path reads, fetched in one round trip."""

    identity: Identity
    journey: list[Touch]
    budget: BudgetState
    existing: Decision | None = None
    """The decision already stored under the queried id (a redelivered request), if any; its
    state may be held encoded (``Decision.state``), so it is logged again byte for byte."""
    contexts: tuple[tuple[int, int], ...] = ()
    """The person's context profile: (context bucket, requests), sorted by bucket — how many
    earlier decisions of the devices now assigned to this person carried each page/app context
    (``DecisionDraft.context``; a device's requests follow it across identity merges and splits,
    see ``IdentityStore.assign_identities``); the agent's segment posterior is accumulated from it
    (``agent.segment_profile``)."""
    activity: Activity = Activity()
    """The person's recent activity (the same decisions, time-weighted)."""


class ContextQuery(NamedTuple):
    """One impression's read on the decision path (see ``DecideStore.decide_contexts``)."""

    device_id: str
    decision_id: str
    campaign: str
    period: int


class DecisionDraft(NamedTuple):
    """A decision to store with the reservation its bid needs (see ``DecideStore.reserve_and_put``)."""

    decision: Decision
    """Stored when its reservation succeeds (or it needs none)."""
    reserve_micros: int
    """Worst-case cost reserved under the decision id; 0: nothing to reserve (no bid, organic)."""
    period: int
    """Budget period of the reservation."""
    if_short: Decision | None = None
    """Stored instead when the budget cannot hold ``reserve_micros`` (required when it is > 0)."""
    context: int = -1
    """The request's context bucket, counted once on the profile of the decision's person when
    the decision is newly stored (a redelivery counts nothing) with its activity
    (``Activity.add`` at the decision's event time), and likewise on the decision's device's
    share of that profile (what moves with the device, ``IdentityStore.assign_identities``);
    -1: not counted."""
    search: bool = False
    """The request offered paid search (its activity counts in ``Activity.search``)."""


def check_drafts(drafts: Sequence[DecisionDraft]) -> None:
    """Refuse drafts ``reserve_and_put`` cannot honour (every adapter calls it first)."""
    for d in drafts:
        if d.reserve_micros < 0:
            raise BudgetError(f"reservation must be >= 0 micros, got {d.reserve_micros}")
        if d.reserve_micros > 0 and d.if_short is None:
            raise BudgetError(f"draft {d.decision.id} reserves without an if-short decision")
        if d.context < -1:
            raise ValueError(f"draft {d.decision.id}: context bucket must be >= -1, got {d.context}")


class ResultEffect(NamedTuple):
    """Every write of one auction result, applied atomically with its outbox claim.

    Settles the reservation ``decision_id`` at ``cost_micros``; when ``touch`` is set, stores it
    on the journey of the person ``device_id`` resolves to and opens the decision's window.
    """

    claim_key: str
    payload: bytes
    campaign: str
    period: int
    decision_id: str
    cost_micros: int
    device_id: str
    touch: Touch | None
    window_close_ms: int


class ClickEffect(NamedTuple):
    """A click marked on the journey of the person ``device_id`` resolves to, with its claim."""

    claim_key: str
    payload: bytes
    device_id: str
    decision_id: str


class JoinQuery(NamedTuple):
    """One conversion to join: its claim key, who converted and the window start."""

    claim_key: str
    user_id: str | None
    """The person directly (logged in), else None."""
    device_id: str | None
    """The device, resolved to its person when ``user_id`` is None."""
    since_ms: int


class JoinContext(NamedTuple):
    """What joining one conversion reads: its stored join (a redelivery) or the journey."""

    stored: bytes | None
    person_id: str
    journey: list[Touch]


class JoinEffect(NamedTuple):
    """The writes of one conversion's join, atomic with its claim.

    If any of ``credits``' decisions is already finalised (``final:<decision>`` claimed), the
    ``late`` payload is stored and no credit is written; otherwise ``payload`` and the credits.
    """

    claim_key: str
    payload: bytes
    late_payload: bytes
    conversion_id: str
    credits: list[tuple[str, int]]


class IdentityStore(Protocol):
    """The identity graph's verdicts: who a device is with, and where it now belongs."""

    async def ip_devices(self, items: Sequence[tuple[str, Sequence[str]]], cap: int) -> list[list[str]]:
        """Remember the devices seen behind each (pseudonymised) IP, at most ``cap`` per IP,
        and return each IP's remembered devices (one round trip)."""
        ...

    async def identity_peers(self, device_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
        """For each device: its person and every device assigned to that person (``d:<device>``
        and the device alone when unlinked), in one round trip."""
        ...

    async def person_devices(self, person_ids: Sequence[str]) -> list[list[str]]:
        """Devices assigned to each person (empty for an unknown person), in one round trip."""
        ...

    async def assign_identities(self, assignments: Sequence[IdentityAssignment], ttl_s: int) -> int:
        """Write the identity graph's verdicts, in order, each device atomically.

        A device whose person changes takes its OWN touches (those with its ``device_id``, with
        their click marks) from the old person's journey to the new one — on a merge and on a
        split alike — so journeys always follow the current assignment; a device assigned
        None is unlinked (no stale device → person link stays) and takes them to
        ``d:<device>``. Its share of the old person's context profile and activity (the
        requests counted with its ``Decision.device_id``, ``DecisionDraft.context``) moves the
        same way: subtracted from the old person (buckets left at 0 removed; the activities
        rebased to the later of their times, ``Activity.without``) and added to the new one
        (``Activity.merged``). Assigning what is already stored changes nothing. The device
        count of a person is the number of devices assigned to it. Returns how many devices
        changed person.

        :param ttl_s: expiry of the journey and profile keys written (window + slack).
        """
        ...


class DecideStore(Protocol):
    """The decision path: one read and one write per batch of impressions."""

    async def init_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        """Set the budget of a period only if none was set (an admin's change wins)."""
        ...

    async def decide_contexts(self, queries: Sequence[ContextQuery], max_touches: int) -> list[DecideContext]:
        """Per query, in one round trip: the device's identity, the last ``max_touches``
        touches of its person's journey, the budget of the period, any stored decision under
        the query's id (so a redelivered request reuses its decision) and the person's context
        profile and activity (``DecideContext``)."""
        ...

    async def reserve_and_put(self, campaign: str, drafts: Sequence[DecisionDraft], ttl_s: int) -> list[Decision]:
        """The decision path's write, in one round trip: per draft, in order, atomically per
        budget period — if a decision with its id is stored, that one (nothing reserved: a
        redelivered or concurrent duplicate request); else reserve ``reserve_micros`` under the
        decision id if it fits after the drafts before it and store ``decision``, or store
        ``if_short`` when it does not fit; a newly stored draft with ``context >= 0`` adds one
        request of that context to its person's profile and to its device's share of it.
        Returns the stored decision per draft."""
        ...

    async def settle(self, campaign: str, period: int, reservation_id: str, cost_micros: int) -> bool:
        """Turn a reservation into spend of ``cost_micros`` and release the rest.

        True the first time; a repeat (or an unknown reservation) changes nothing.
        """
        ...

    async def replace_decisions(self, decisions: Sequence[Decision], ttl_s: int) -> None:
        """Overwrite stored decisions (a bid withdrawn after it was stored), in one round trip."""
        ...


class RecordReader(Protocol):
    """Stored decisions and handler outputs, read back."""

    async def get_decisions(self, ids: Sequence[str], state_encoded: bool = False) -> dict[str, Decision]:
        """The stored decisions among ``ids``.

        :param state_encoded: the caller only re-encodes the states (experience records), so an
            adapter may leave them encoded (``msgspec.Raw``; see ``Decision.state``): ``encode``
            gives the same bytes either way. False: every state is a list of floats."""
        ...

    async def stored_decisions(self, ids: Sequence[str]) -> set[str]:
        """The ids among ``ids`` that have a stored decision, checked without reading the
        decisions (an impression needs no more than that: a decision is KBs of logged state)."""
        ...

    async def peek_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """What the handlers claimed under each key, if anything, in one round trip."""
        ...


class OutcomeStore(RecordReader, Protocol):
    """What follows a decision: each batch of events applied atomically with its claims."""

    async def record_results(self, effects: Sequence[ResultEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        """Apply each auction result's writes and claim unless already claimed.

        :returns: per effect, (applied now, the stored payload) — False for a redelivery."""
        ...

    async def record_clicks(self, effects: Sequence[ClickEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        """Mark each click (before or after its touch is stored) and claim unless already
        claimed; (applied now, stored payload) each."""
        ...

    async def join_contexts(self, queries: Sequence[JoinQuery]) -> list[JoinContext]:
        """For each query: the stored join, else the person and their journey since ``since_ms``,
        oldest first with clicks marked (person ``""`` and no journey when the query names
        neither user nor device)."""
        ...

    async def record_joins(self, effects: Sequence[JoinEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        """Claim each join (joined or late, see ``JoinEffect``) with its credits; (applied now,
        stored payload) each."""
        ...

    async def credits_many(self, decision_ids: Sequence[str]) -> list[dict[str, int]]:
        """Credit per conversion id received by each decision, in one round trip."""
        ...

    async def claim_many(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> list[tuple[bool, bytes]]:
        """Store each (key, payload) unless the key is present; (claimed now, stored) each."""
        ...


class WindowStore(Protocol):
    """Event time: partition watermarks, conversions parked until their touches are in, and
    the decisions' attribution windows."""

    async def advance_watermarks(self, topic: str, marks: dict[int, int]) -> None:
        """Raise each partition's watermark to its event time (never lowers one), in one round trip."""
        ...

    async def watermarks_many(self, topics: Sequence[str]) -> list[dict[int, int]]:
        """Partition → watermark of each topic, in one round trip."""
        ...

    async def park_many(self, items: Sequence[tuple[str, int, bytes]]) -> None:
        """Park each (id, event time, payload) unless that id is parked already."""
        ...

    async def due_parked(self, until_ms: int, limit: int) -> list[tuple[str, bytes]]:
        """Parked (id, payload) with event time at or before ``until_ms``, oldest first."""
        ...

    async def unpark(self, item_ids: Sequence[str]) -> None: ...

    async def due_windows(self, until_ms: int, limit: int) -> list[str]:
        """Decision ids whose window (opened by ``OutcomeStore.record_results``) closes at or
        before ``until_ms``, earliest first."""
        ...

    async def drop_windows(self, decision_ids: Sequence[str]) -> None: ...


class BudgetStore(Protocol):
    """A period's budget ledger, read and set (the admin endpoint, run reports)."""

    async def budget(self, campaign: str, period: int) -> BudgetState: ...

    async def set_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        """Set the budget of a period (keeps spend and reservations)."""
        ...


class DeviceShare(NamedTuple):
    """One device's share of its person's context profile and activity (what moves with it)."""

    device_id: str
    contexts: tuple[tuple[int, int], ...]
    """(context bucket, requests), sorted by bucket."""
    activity: Activity


class PersonProfile(NamedTuple):
    """Everything the store keeps about one person that the decision path reads back: a row of
    the warehouse user DB (``ProfileStore``)."""

    person_id: str
    devices: tuple[tuple[str, float], ...]
    """Devices linked to the person, with the identity graph's confidence, sorted (empty for a
    ``d:<device>`` person known by its one unlinked device)."""
    contexts: tuple[tuple[int, int], ...]
    """The context profile (``DecideContext.contexts``)."""
    activity: Activity
    """Recent activity (``DecideContext.activity``)."""
    shares: tuple[DeviceShare, ...]
    """Its devices' shares of ``contexts`` and ``activity``, sorted by device."""
    journey: tuple[Touch, ...]
    """Touches still held (within the attribution window + slack), oldest first (time, decision id)."""
    clicks: tuple[str, ...]
    """Decision ids clicked, sorted (a click may be held before its touch arrives)."""


class ProfileStore(Protocol):
    """The persons the store holds, exported in batches and imported: the warehouse user DB
    (``runtime.userdb``) that lets a new campaign or a flushed store start warm."""

    async def export_profiles(self, cursor: str, limit: int) -> tuple[list[PersonProfile], str]:
        """About ``limit`` persons from ``cursor`` ("" : the start) and the cursor to go on from;
        "" when every person was listed. A batch may be empty before the end (keep going until
        the cursor is ""). Each batch is read atomically, the whole is not a point-in-time
        copy; a person may come twice (the rows are equal unless it changed in between)."""
        ...

    async def import_profiles(self, profiles: Sequence[PersonProfile], ttl_s: int) -> int:
        """Write each profile as its person's whole state, replacing what the store held for it:
        its links (devices linked to it but not in the profile are unlinked; a device linked to
        another person moves to this one), context profile and devices' shares, journey and
        clicks. Importing the same profiles again changes nothing. Returns how many were written.

        :param ttl_s: expiry of the journey and profile keys written (window + slack)."""
        ...


class HandlerStore(OutcomeStore, IdentityStore, Protocol):
    """What the handlers after the decision use (``Outcomes`` and its identity-links handler)."""


class StreamStore(HandlerStore, WindowStore, Protocol):
    """What the streaming flow uses (its handlers and the event-time gating)."""


class StateStore(StreamStore, DecideStore, BudgetStore, ProfileStore, Protocol):
    """Durable state of the streaming service: every port, with a lifecycle (both adapters)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
