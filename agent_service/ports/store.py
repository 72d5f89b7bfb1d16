"""The state store port: journeys, identity, budgets, decisions, windows, dedupe.

Every write is idempotent by the key it names, so a redelivered event changes nothing:
``reserve``/``settle`` by reservation id, ``upsert_touch`` by decision id, ``add_credit`` by
(decision, conversion), ``claim`` is put-if-absent and returns what was stored first (the
outbox of a handler: on redelivery the same outputs are emitted again and deduplicated
downstream by their ids). Budget operations are atomic: concurrent reservations never let
``spent + reserved`` exceed the budget.

Adapters: ``adapters.memory_store.MemoryStore`` (embedded) and ``adapters.redis_store.RedisStore``
(production; key layout documented there). ``tests/contract/test_store_contract.py`` runs the
same suite against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from agent_service.contracts.events import Decision, Touch

__all__ = ["BudgetState", "DecideContext", "Identity", "StateStore"]


class BudgetState(NamedTuple):
    """A budget ledger for one campaign and period, in micros."""

    budget: int
    spent: int
    reserved: int

    @property
    def remaining(self) -> int:
        """What may still be reserved."""
        return self.budget - self.spent - self.reserved


class Identity(NamedTuple):
    """The person a device resolves to."""

    person_id: str
    confidence: float
    """1.0 for deterministic links and for an unlinked device standing for itself."""
    device_count: int
    """Devices known for this person (1 when unlinked)."""


class DecideContext(NamedTuple):
    """Everything the decision path reads, fetched in one round trip."""

    identity: Identity
    journey: list[Touch]
    budget: BudgetState


class StateStore(Protocol):
    """Durable state of the streaming service (see module docstring for the guarantees)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    # --- identity ------------------------------------------------------------------------
    async def link_identity(self, device_id: str, person_id: str, score: float) -> None:
        """Link a device to a person and move the device's anonymous journey onto the person."""
        ...

    async def resolve(self, device_id: str) -> Identity:
        """The person of ``device_id`` (the device itself, prefixed ``d:``, when unlinked)."""
        ...

    # --- decision path ---------------------------------------------------------------------
    async def decide_context(self, device_id: str, campaign: str, period: int, max_touches: int) -> DecideContext:
        """Identity, the last ``max_touches`` touches and the budget, in one round trip."""
        ...

    async def put_decision(self, decision: Decision, ttl_s: int) -> Decision:
        """Store ``decision`` unless one with its id exists; return the stored one."""
        ...

    async def get_decisions(self, ids: Sequence[str]) -> dict[str, Decision]:
        """The stored decisions among ``ids``."""
        ...

    # --- budget ----------------------------------------------------------------------------
    async def set_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        """Set the budget of a period (keeps spend and reservations)."""
        ...

    async def init_budget(self, campaign: str, period: int, budget_micros: int) -> None:
        """Set the budget of a period only if none was set (an admin's change wins)."""
        ...

    async def budget(self, campaign: str, period: int) -> BudgetState: ...

    async def reserve(self, campaign: str, period: int, reservation_id: str, amount_micros: int) -> bool:
        """Atomically reserve ``amount_micros`` if it fits; True if reserved (now or before)."""
        ...

    async def settle(self, campaign: str, period: int, reservation_id: str, cost_micros: int) -> bool:
        """Turn a reservation into spend of ``cost_micros`` and release the rest.

        True the first time; a repeat (or an unknown reservation) changes nothing.
        """
        ...

    # --- journeys --------------------------------------------------------------------------
    async def upsert_touch(self, device_id: str, touch: Touch, ttl_s: int) -> None:
        """Insert or replace ``touch`` in the journey of the person ``device_id`` resolves to.

        Resolution and write are one atomic step, so a concurrent identity link can never
        strand the touch on the device's anonymous journey.
        """
        ...

    async def journey(self, person_id: str, since_ms: int) -> list[Touch]:
        """Touches at or after ``since_ms``, oldest first (``clicked`` set from ``mark_click``)."""
        ...

    async def mark_click(self, device_id: str, decision_id: str, ttl_s: int) -> None:
        """Record a click on a touch (before or after the touch itself is stored), atomically
        on the person ``device_id`` resolves to."""
        ...

    # --- windows, credits, outbox ----------------------------------------------------------
    async def open_window(self, decision_id: str, close_at_ms: int) -> None: ...

    async def due_windows(self, until_ms: int, limit: int) -> list[str]:
        """Decision ids whose window closes at or before ``until_ms``."""
        ...

    async def drop_windows(self, decision_ids: Sequence[str]) -> None: ...

    async def add_credit(self, decision_id: str, conversion_id: str, credit_micros: int) -> None: ...

    async def credits(self, decision_id: str) -> dict[str, int]:
        """Credit per conversion id received by a decision."""
        ...

    async def claim(self, key: str, payload: bytes, ttl_s: int) -> bytes:
        """Store ``payload`` under ``key`` unless present; return what is stored."""
        ...

    async def peek(self, key: str) -> bytes | None:
        """What ``claim`` stored under ``key``, if anything."""
        ...

    # --- conversions waiting for their touches, and watermarks -----------------------------
    async def park(self, item_id: str, event_time: int, payload: bytes) -> None: ...

    async def due_parked(self, until_ms: int, limit: int) -> list[tuple[str, bytes]]: ...

    async def unpark(self, item_ids: Sequence[str]) -> None: ...

    async def advance_watermark(self, topic: str, partition: int, event_time: int) -> None:
        """Raise the partition's watermark to ``event_time`` (never lowers it)."""
        ...

    async def watermarks(self, topic: str) -> dict[int, int]: ...
