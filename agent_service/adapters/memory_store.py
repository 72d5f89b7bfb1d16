"""In-process state store: the embedded ``ports.store.StateStore``.

Each method runs without awaiting anything in between its reads and writes, so on one asyncio
loop every operation is atomic, like the Redis adapter's Lua scripts. Expiry is not modelled
(a simulation's memory is bounded by its length); windows and ``since_ms`` filters do the
event-time work.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import msgspec

from agent_service.adapters.memory_parts import DueIndex, Profile
from agent_service.contracts.events import Decision, Touch, state_values
from agent_service.errors import BudgetError
from agent_service.ports.store import (
    Activity,
    BudgetState,
    ClickEffect,
    ContextQuery,
    DecideContext,
    DecisionDraft,
    DeviceShare,
    Identity,
    IdentityAssignment,
    JoinContext,
    JoinEffect,
    JoinQuery,
    PersonProfile,
    ResultEffect,
    check_drafts,
)

__all__ = ["MemoryStore"]

_E = TypeVar("_E", ResultEffect, ClickEffect, JoinEffect)


class MemoryStore:
    """All state in dicts; see the port for the contract."""

    def __init__(self) -> None:
        self._device_person: dict[str, tuple[str, float]] = {}
        self._person_devices: dict[str, set[str]] = defaultdict(set)
        self._journeys: dict[str, dict[str, Touch]] = defaultdict(dict)
        self._clicks: dict[str, set[str]] = defaultdict(set)
        self._decisions: dict[str, Decision] = {}
        self._profiles: dict[str, Profile] = {}  # person -> context counts and activity
        self._shares: dict[tuple[str, str], Profile] = {}  # (person, device) -> the device's part
        self._budgets: dict[tuple[str, int], list[int]] = {}  # [budget, spent, reserved]
        self._reservations: dict[tuple[str, int, str], int] = {}
        self._settled: set[tuple[str, int, str]] = set()
        self._windows = DueIndex()
        self._credits: dict[str, dict[str, int]] = defaultdict(dict)
        self._claims: dict[str, bytes] = {}
        self._parked = DueIndex()
        self._parked_data: dict[str, bytes] = {}
        self._watermarks: dict[str, dict[int, int]] = defaultdict(dict)
        self._ip_devices: dict[str, dict[str, None]] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # --- identity ------------------------------------------------------------------------
    async def identity_peers(self, device_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
        out = []
        for d in device_ids:
            person = self._person(d)
            out.append((person, sorted(self._person_devices.get(person, ())) if d in self._device_person else [d]))
        return out

    async def person_devices(self, person_ids: Sequence[str]) -> list[list[str]]:
        return [sorted(self._person_devices.get(p, ())) for p in person_ids]

    async def assign_identities(self, assignments: Sequence[IdentityAssignment], ttl_s: int) -> int:
        changed = 0
        for device, person, confidence in assignments:
            alone = f"d:{device}"
            linked = self._device_person.get(device)
            old = linked[0] if linked else alone
            new = person or alone
            if old != new:
                changed += 1
                self._move_touches(device, old, new)
                self._move_profile(device, old, new)
            if linked and linked[0] != person:
                self._person_devices[linked[0]].discard(device)
                if not self._person_devices[linked[0]]:
                    del self._person_devices[linked[0]]
            if person is None:
                self._device_person.pop(device, None)
            else:
                self._device_person[device] = (person, confidence)
                self._person_devices[person].add(device)
        return changed

    def _move_touches(self, device: str, old: str, new: str) -> None:
        journey = self._journeys.get(old)
        if not journey:
            return
        moved = [d for d, t in journey.items() if t.device_id == device]
        if not moved:
            return
        clicks = self._clicks.get(old, set())
        target, target_clicks = self._journeys[new], self._clicks[new]
        for d in moved:
            target[d] = journey.pop(d)
            if d in clicks:
                clicks.discard(d)
                target_clicks.add(d)

    def _move_profile(self, device: str, old: str, new: str) -> None:
        share = self._shares.pop((old, device), None)
        if share is None:
            return
        self._profiles.setdefault(new, Profile()).add(share)
        self._shares.setdefault((new, device), Profile()).add(share)
        left = self._profiles.get(old)
        if left is not None and not left.remove(share):
            del self._profiles[old]

    async def ip_devices(self, items: Sequence[tuple[str, Sequence[str]]], cap: int) -> list[list[str]]:
        out = []
        for ip, devices in items:
            seen = self._ip_devices.setdefault(ip, {})
            for d in devices:
                if len(seen) >= cap:
                    break
                seen.setdefault(d, None)
            out.append(list(seen))
        return out

    # --- decision path ---------------------------------------------------------------------
    async def decide_contexts(self, queries: Sequence[ContextQuery], max_touches: int) -> list[DecideContext]:
        out = []
        for q in queries:
            identity = self._identity(q.device_id)
            prof = self._profiles.get(identity.person_id, Profile())
            out.append(DecideContext(identity, self._journey(identity.person_id, 0)[-max_touches:],
                                     await self.budget(q.campaign, q.period), self._decisions.get(q.decision_id),
                                     tuple(sorted(prof.counts.items())), prof.activity))
        return out

    async def replace_decisions(self, decisions: Sequence[Decision], ttl_s: int) -> None:
        for d in decisions:
            self._decisions[d.id] = d

    async def get_decisions(self, ids: Sequence[str], state_encoded: bool = False) -> dict[str, Decision]:
        found = {i: self._decisions[i] for i in ids if i in self._decisions}
        if state_encoded:
            return found
        return {i: d if isinstance(d.state, list) else msgspec.structs.replace(d, state=state_values(d))
                for i, d in found.items()}

    async def stored_decisions(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self._decisions}

    # --- budget ----------------------------------------------------------------------------
    async def set_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        if budget_micros < 0:
            raise BudgetError(f"budget must be >= 0 micros, got {budget_micros}")
        self._budgets.setdefault((campaign, period), [0, 0, 0])[0] = budget_micros

    async def init_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        if (campaign, period) not in self._budgets:
            await self.set_budget(campaign, period, budget_micros)

    async def budget(self, campaign: str, period: int) -> BudgetState:
        b, s, r = self._budgets.get((campaign, period), (0, 0, 0))
        return BudgetState(b, s, r)

    def _reserve(self, campaign: str, period: int, reservation_id: str, amount_micros: int) -> bool:
        """Reserve ``amount_micros`` (>= 0, ``check_drafts``) if it fits; True if reserved now or before."""
        key = (campaign, period, reservation_id)
        if key in self._reservations or key in self._settled:
            return True
        ledger = self._budgets.setdefault((campaign, period), [0, 0, 0])
        if ledger[1] + ledger[2] + amount_micros > ledger[0]:
            return False
        ledger[2] += amount_micros
        self._reservations[key] = amount_micros
        return True

    async def reserve_and_put(self, campaign: str, drafts: Sequence[DecisionDraft], ttl_s: int) -> list[Decision]:
        check_drafts(drafts)
        out = []
        for d in drafts:
            old = self._decisions.get(d.decision.id)
            if old is None:
                fits = d.reserve_micros == 0 or self._reserve(campaign, d.period, d.decision.id, d.reserve_micros)
                old = self._decisions[d.decision.id] = d.decision if fits else cast(Decision, d.if_short)
                if d.context >= 0:
                    person, t = d.decision.person_id, d.decision.event_time
                    self._profiles.setdefault(person, Profile()).count(d.context, t, d.search)
                    self._shares.setdefault((person, d.decision.device_id), Profile()).count(d.context, t, d.search)
            out.append(old)
        return out

    async def settle(self, campaign: str, period: int, reservation_id: str, cost_micros: int) -> bool:
        return self._settle(campaign, period, reservation_id, cost_micros)

    def _settle(self, campaign: str, period: int, reservation_id: str, cost_micros: int) -> bool:
        if cost_micros < 0:
            raise BudgetError(f"cost must be >= 0 micros, got {cost_micros}")
        key = (campaign, period, reservation_id)
        if key in self._settled or key not in self._reservations:
            return False
        ledger = self._budgets[(campaign, period)]
        ledger[2] -= self._reservations.pop(key)
        ledger[1] += cost_micros
        self._settled.add(key)
        return True

    # --- journeys --------------------------------------------------------------------------
    def _person(self, device_id: str) -> str:
        linked = self._device_person.get(device_id)
        return linked[0] if linked else f"d:{device_id}"

    def _identity(self, device_id: str) -> Identity:
        linked = self._device_person.get(device_id)
        if linked is None:
            return Identity(f"d:{device_id}", 1.0, 1)
        person, score = linked
        return Identity(person, score, max(1, len(self._person_devices[person])))

    def _journey(self, person_id: str, since_ms: int) -> list[Touch]:
        """Touches at or after ``since_ms``, oldest first, with their clicks marked."""
        clicks = self._clicks.get(person_id, set())
        touches = [msgspec.structs.replace(t, clicked=True) if t.decision_id in clicks and not t.clicked else t
                   for t in self._journeys.get(person_id, {}).values() if t.event_time >= since_ms]
        return sorted(touches, key=_touch_order)

    # --- batched effects (no await suspends inside: each item is atomic) ------------------------
    def _claim_each(self, effects: Sequence[_E], apply: Callable[[_E], bytes]) -> list[tuple[bool, bytes]]:
        """Each effect applied at most once, under its claim key: ``apply`` makes its writes and returns
        the payload to claim; a repeat returns (False, what the first claimed)."""
        out = []
        for e in effects:
            applied = e.claim_key not in self._claims
            if applied:
                self._claims[e.claim_key] = apply(e)
            out.append((applied, self._claims[e.claim_key]))
        return out

    async def record_results(self, effects: Sequence[ResultEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        def apply(e: ResultEffect) -> bytes:
            self._settle(e.campaign, e.period, e.decision_id, e.cost_micros)
            if e.touch is not None:
                self._journeys[self._person(e.device_id)][e.touch.decision_id] = e.touch
                self._windows.add(e.decision_id, e.window_close_ms)
            return e.payload
        return self._claim_each(effects, apply)

    async def record_clicks(self, effects: Sequence[ClickEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        def apply(e: ClickEffect) -> bytes:
            self._clicks[self._person(e.device_id)].add(e.decision_id)
            return e.payload
        return self._claim_each(effects, apply)

    async def join_contexts(self, queries: Sequence[JoinQuery]) -> list[JoinContext]:
        out = []
        for q in queries:
            stored = self._claims.get(q.claim_key)
            person = q.user_id or (self._person(q.device_id) if q.device_id else "")
            journey = [] if stored is not None or not person else self._journey(person, q.since_ms)
            out.append(JoinContext(stored, person, journey))
        return out

    async def record_joins(self, effects: Sequence[JoinEffect], ttl_s: int) -> list[tuple[bool, bytes]]:
        def apply(e: JoinEffect) -> bytes:
            if any(f"final:{d}" in self._claims for d, _ in e.credits):
                return e.late_payload  # a credited decision is already finalised: nothing credited
            for d, micros in e.credits:
                self._credits[d][e.conversion_id] = micros
            return e.payload
        return self._claim_each(effects, apply)

    async def peek_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._claims.get(k) for k in keys]

    async def credits_many(self, decision_ids: Sequence[str]) -> list[dict[str, int]]:
        return [dict(self._credits.get(d, {})) for d in decision_ids]

    async def claim_many(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> list[tuple[bool, bytes]]:
        out = []
        for key, payload in items:
            applied = key not in self._claims
            out.append((applied, self._claims.setdefault(key, payload)))
        return out

    # --- windows, parked conversions, watermarks ---------------------------------------------
    async def due_windows(self, until_ms: int, limit: int) -> list[str]:
        return self._windows.due(until_ms, limit)

    async def drop_windows(self, decision_ids: Sequence[str]) -> None:
        self._windows.remove(decision_ids)

    async def park_many(self, items: Sequence[tuple[str, int, bytes]]) -> None:
        for item_id, event_time, payload in items:
            if item_id not in self._parked_data:
                self._parked_data[item_id] = payload
                self._parked.add(item_id, event_time)

    async def due_parked(self, until_ms: int, limit: int) -> list[tuple[str, bytes]]:
        return [(i, self._parked_data[i]) for i in self._parked.due(until_ms, limit)]

    async def unpark(self, item_ids: Sequence[str]) -> None:
        self._parked.remove(item_ids)
        for i in item_ids:
            self._parked_data.pop(i, None)

    async def advance_watermarks(self, topic: str, marks: dict[int, int]) -> None:
        held = self._watermarks[topic]
        for partition, event_time in marks.items():
            if event_time > held.get(partition, -1):
                held[partition] = event_time

    async def watermarks_many(self, topics: Sequence[str]) -> list[dict[int, int]]:
        return [dict(self._watermarks.get(t, {})) for t in topics]

    # --- persons: the warehouse user DB ---------------------------------------------------------
    async def export_profiles(self, cursor: str, limit: int) -> tuple[list[PersonProfile], str]:
        # The cursor is the last person listed: persons in id order after it.
        persons = sorted({*self._person_devices, *self._profiles, *(p for p, j in self._journeys.items() if j),
                          *(p for p, c in self._clicks.items() if c)})
        start = bisect.bisect_right(persons, cursor) if cursor else 0
        batch = persons[start:start + max(1, limit)]
        out = [self._export(p) for p in batch]
        return out, (batch[-1] if start + len(batch) < len(persons) else "")

    def _export(self, person: str) -> PersonProfile:
        devices = sorted(self._person_devices.get(person, ()))
        prof = self._profiles.get(person, Profile())
        shares = [DeviceShare(d, tuple(sorted(s.counts.items())), s.activity)
                  for d in _share_devices(person, devices) if (s := self._shares.get((person, d))) is not None]
        return PersonProfile(person, tuple((d, self._device_person[d][1]) for d in devices),
                             tuple(sorted(prof.counts.items())), prof.activity, tuple(shares),
                             tuple(sorted(self._journeys.get(person, {}).values(), key=_touch_order)),
                             tuple(sorted(self._clicks.get(person, ()))))

    async def import_profiles(self, profiles: Sequence[PersonProfile], ttl_s: int) -> int:
        for row in profiles:
            person = row.person_id
            old = self._person_devices.pop(person, set())
            keep = {d for d, _ in row.devices}
            for d in _share_devices(person, sorted(old | keep | {s.device_id for s in row.shares})):
                self._shares.pop((person, d), None)
            for d in old - keep:
                self._device_person.pop(d, None)
            for d, confidence in row.devices:
                linked = self._device_person.get(d)
                if linked and linked[0] != person and linked[0] in self._person_devices:
                    self._person_devices[linked[0]].discard(d)
                    if not self._person_devices[linked[0]]:
                        del self._person_devices[linked[0]]
                self._device_person[d] = (person, confidence)
                self._person_devices[person].add(d)
            self._profiles.pop(person, None)
            if row.contexts:
                self._profiles[person] = _profile(row.contexts, row.activity)
            for share in row.shares:
                if share.contexts:
                    self._shares[(person, share.device_id)] = _profile(share.contexts, share.activity)
            self._journeys[person] = {t.decision_id: t for t in row.journey}
            self._clicks[person] = set(row.clicks)
        return len(profiles)


def _share_devices(person: str, devices: Sequence[str]) -> list[str]:
    """The devices whose share of ``person``'s profile is kept: its linked ones, and its own
    device for a ``d:<device>`` person."""
    own = [person[2:]] if person.startswith("d:") else []
    return sorted({*devices, *own})


def _profile(contexts: Sequence[tuple[int, int]], activity: Activity) -> Profile:
    prof = Profile()
    prof.counts = dict(contexts)
    prof.activity = activity
    return prof


def _touch_order(t: Touch) -> tuple[int, str]:
    return (t.event_time, t.decision_id)
