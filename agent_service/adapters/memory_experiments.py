"""In-memory :class:`~agent_service.ports.experiments.ExperimentStore` (tests and simulations).

Same semantics as the Redis adapter; keys never expire here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from agent_service.experiments.guardrails import GuardrailStats
from agent_service.experiments.sequential import RatioStats
from agent_service.ports.experiments import ArmEffect, ArmRunning

__all__ = ["MemoryExperimentStore", "fold_effect"]


class _Person:
    __slots__ = ("arm", "errors", "exposed", "no_bids", "requests", "x", "y")

    def __init__(self, arm: str) -> None:
        self.arm, self.exposed, self.x, self.y = arm, False, 0.0, 0.0
        self.requests = self.no_bids = self.errors = 0


class _Arm:
    __slots__ = ("exposed", "guards", "stats")

    def __init__(self) -> None:
        self.exposed, self.stats, self.guards = 0, RatioStats(), GuardrailStats()


def fold_effect(stats: RatioStats, x: float, y: float, dx: float, dy: float, new_person: bool) -> None:
    """Move an arm's per-person sums as one person's totals go from (x, y) to (x + dx, y + dy)."""
    nx, ny = x + dx, y + dy
    stats.n += new_person
    stats.sum_x += dx
    stats.sum_y += dy
    stats.sum_xx += nx * nx - x * x
    stats.sum_yy += ny * ny - y * y
    stats.sum_xy += nx * ny - x * y
    stats.n_pos += x <= 0 < nx


class MemoryExperimentStore:
    """See the module docstring."""

    def __init__(self) -> None:
        self._applied: set[str] = set()
        self._persons: dict[tuple[str, str], _Person] = {}
        self._arms: dict[str, dict[str, _Arm]] = {}
        self._flush: dict[str, bytes] = {}

    async def record_arm_effects(self, effects: Sequence[ArmEffect], ttl_s: int) -> list[bool]:
        out = []
        for e in effects:
            if e.key in self._applied:
                out.append(False)
                continue
            self._applied.add(e.key)
            person = self._persons.get((e.experiment, e.person_id))
            new = person is None
            if person is None:
                person = self._persons[(e.experiment, e.person_id)] = _Person(e.arm)
            arm = self._arms.setdefault(e.experiment, {}).setdefault(person.arm, _Arm())
            if e.exposed and not person.exposed:
                person.exposed, arm.exposed = True, arm.exposed + 1
            fold_effect(arm.stats, person.x, person.y, e.value_usd, e.spend_usd, new)
            g, r = arm.guards, person.requests
            fold_effect(g.spend, person.y, r, e.spend_usd, e.requests, new)
            fold_effect(g.no_bids, person.no_bids, r, e.no_bids, e.requests, new)
            fold_effect(g.errors, person.errors, r, e.errors, e.requests, new)
            person.x += e.value_usd
            person.y += e.spend_usd
            person.requests += e.requests
            person.no_bids += e.no_bids
            person.errors += e.errors
            out.append(True)
        return out

    async def arm_totals(self, experiment: str) -> dict[str, ArmRunning]:
        return {name: ArmRunning(a.exposed, replace(a.stats),
                                 GuardrailStats(replace(a.guards.spend), replace(a.guards.no_bids), replace(a.guards.errors)))
                for name, a in self._arms.get(experiment, {}).items()}

    async def flush_state(self, experiment: str) -> bytes | None:
        return self._flush.get(experiment)

    async def set_flush_state(self, experiment: str, state: bytes) -> None:
        self._flush[experiment] = state
