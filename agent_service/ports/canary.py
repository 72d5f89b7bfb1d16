"""The canary port: the controller's plan, read by every bidder, and the per-arm live outcomes.

``gaelp promote`` (:mod:`agent_service.runtime.canary_controller`) writes a :class:`CanaryPlan`;
every bidder polls it off the bid path (:mod:`agent_service.runtime.canary_watch`) and routes the
plan's share of persons to the candidate version. Bidders and stream workers add per-person
outcomes (:class:`ArmTally`) of each arm; the controller reads them back as :class:`ArmTotals`.

Rules every adapter keeps (``tests/contract/test_canary_contract.py`` runs one suite on all):

- ``put_plan`` replaces the plan whole; ``plan`` returns the last one put (None before any).
- ``add`` applies each keyed batch of tallies exactly once: a batch whose key was applied before
  (a redelivered auction result, a retried flush) changes nothing and reports False.
- ``totals`` sums every applied tally of one experiment per arm and person.
- ``summary`` gives each arm's sums over its persons (what the controller reads at every step, so a
  step costs the same at a thousand persons or ten million); a person with any candidate tally
  counts in the candidate arm only (control before a ramp stage moved them over).

Adapters: :mod:`agent_service.adapters.memory_canary` (embedded default, tests) and
:mod:`agent_service.adapters.redis_canary` (every bidder and stream worker on every host).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np

from agent_service.experiments.guardrails import GuardrailStats
from agent_service.experiments.sequential import RatioStats

__all__ = ["ARMS", "FIELDS", "SCALE", "ArmSummary", "ArmTally", "ArmTotals", "CanaryPlan", "CanaryStore"]

ARMS: tuple[str, ...] = ("control", "candidate")
FIELDS: tuple[str, ...] = ("requests", "no_bids", "errors", "spend_micros", "value_micros")
"""What is tallied per person: decided requests, no-bids, failed requests, spend and credited value."""
SCALE: tuple[float, ...] = (1.0, 1.0, 1.0, 1e-6, 1e-6)
"""Per field, its unit in :class:`ArmSummary`: counts as they are, money in USD (the sums of products
stay small enough for a double's 53 bits)."""


class CanaryPlan(msgspec.Struct, frozen=True):
    """The canary as the controller last wrote it (what bidders route by, and where it stands)."""

    experiment_id: str
    """Salts the person hash (``canary:<id>``, as :class:`~agent_service.experiments.canary.Canary`)."""
    candidate_version: int
    """Registry version serving the candidate share."""
    share: float
    """Share of persons the bidders route to the candidate now (0 once ended)."""
    state: str
    """:class:`~agent_service.experiments.canary.CanaryState` value."""
    stage: int = 0
    seq: int = 0
    """Events of this canary so far."""
    started_ms: int = 0
    stage_start_persons: int = 0
    """Candidate persons observed when the current stage began."""
    control_version: int = 0
    """The live version when the canary started (what a rollback leaves serving)."""
    updated_ms: int = 0
    reason: str = ""
    """Why the last transition happened."""

    @property
    def routing(self) -> bool:
        """True while bidders route the share to the candidate and outcomes are tallied (running, or
        held with the share frozen)."""
        return self.state in ("running", "held") and self.share > 0


class ArmTally(msgspec.Struct, frozen=True):
    """One person's increments in one arm."""

    arm: str
    """``control`` or ``candidate``."""
    person_id: str
    requests: int = 0
    no_bids: int = 0
    errors: int = 0
    spend_micros: int = 0
    value_micros: int = 0


@dataclass(frozen=True)
class ArmTotals:
    """One arm's per-person totals, aligned arrays (one entry per person)."""

    persons: list[str]
    requests: np.ndarray
    no_bids: np.ndarray
    errors: np.ndarray
    spend_micros: np.ndarray
    value_micros: np.ndarray

    @classmethod
    def from_rows(cls, rows: dict[str, list[int]]) -> ArmTotals:
        """From person → [requests, no_bids, errors, spend_micros, value_micros]."""
        persons = sorted(rows)
        m = np.array([rows[p] for p in persons], dtype=np.int64).reshape(len(persons), len(FIELDS))
        return cls(persons, *(m[:, j] for j in range(len(FIELDS))))

    def without(self, drop: set[str]) -> ArmTotals:
        """These totals minus the persons in ``drop``."""
        keep = np.array([p not in drop for p in self.persons], dtype=bool)
        return ArmTotals([p for p in self.persons if p not in drop],
                         *(getattr(self, f)[keep] for f in FIELDS))


@dataclass(frozen=True)
class ArmSummary:
    """One arm's sums over its persons: everything the sequential test and the guardrails need.

    With ``f`` a person's totals in :data:`FIELDS` order, scaled by :data:`SCALE`: ``sums = Σ f``,
    ``products = Σ f fᵀ`` and ``positive`` the persons with each field above 0.
    """

    persons: int
    sums: np.ndarray
    products: np.ndarray
    positive: np.ndarray

    @classmethod
    def of(cls, t: ArmTotals) -> ArmSummary:
        """The summary of per-person totals (what every adapter's ``summary`` must equal)."""
        m = np.column_stack([getattr(t, f) for f in FIELDS]).astype(np.float64) * np.array(SCALE)
        return cls(len(t.persons), m.sum(0), m.T @ m, (m > 0).sum(0))

    def ratio(self, x: str, y: str) -> RatioStats:
        """Per-person sums of the ratio Σx / Σy (fields of :data:`FIELDS`)."""
        i, j = FIELDS.index(x), FIELDS.index(y)
        p = self.products
        return RatioStats(self.persons, float(self.sums[i]), float(self.sums[j]), float(p[i, i]), float(p[j, j]),
                          float(p[i, j]), int(self.positive[i]))

    def guardrails(self) -> GuardrailStats:
        """Spend, no-bids and errors per request."""
        return GuardrailStats(self.ratio("spend_micros", "requests"), self.ratio("no_bids", "requests"),
                              self.ratio("errors", "requests"))


class CanaryStore(Protocol):
    async def put_plan(self, plan: CanaryPlan) -> None:
        """Replace the plan (bidders pick it up at their next poll)."""
        ...

    async def plan(self) -> CanaryPlan | None:
        """The plan last put, or None."""
        ...

    async def add(self, experiment_id: str, batches: Sequence[tuple[str, Sequence[ArmTally]]]) -> list[bool]:
        """Apply each (key, tallies) batch once per key; True for each batch applied now."""
        ...

    async def totals(self, experiment_id: str) -> dict[str, ArmTotals]:
        """Per-person totals of each arm in :data:`ARMS` (empty arrays for an arm with none)."""
        ...

    async def summary(self, experiment_id: str) -> dict[str, ArmSummary]:
        """Each arm's sums over its persons, a person in both arms in the candidate's only."""
        ...
